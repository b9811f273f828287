//! Figures for operators: relayd's per-redirect session statistics ([`RdrStats`], the
//! avg/last/hour/day columns of `carpioctl show redirects`) and the optional Prometheus text
//! endpoint ([`serve`], `metrics listen on ADDR port P`).
//!
//! The endpoint is its own thread with a tiny_http server. It holds no daemon state: every
//! scrape asks the parent for `show counters`, `show traffic`, `show carp` and `show hosts`
//! through the same [`Call`] channel the control socket uses, and renders the replies
//! ([`render`]). Whatever those replies carry is exposed, so a counter another role adds (the
//! health engine, pfsync) appears without a change here. Naming follows the Prometheus
//! conventions (<https://prometheus.io/docs/practices/naming/>): a `carpio_` prefix, `_total`
//! on counters, labels for dimensions; every `drop_*` counter becomes one sample of
//! `carpio_drops_total{reason="..."}`.

use crate::ctl::proto::{CarpVhost, HostState, HostTraffic, Item, Request, Response, Show};
use crate::ctl::proto::{ServiceTraffic, Stats};
use crate::ctl::server::Call;
use crossbeam::channel::Sender;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// relayd's `RELAYD_STATINTERVAL` (relayd.h): how often `pfe_statistics` samples.
pub const STAT_INTERVAL_SECS: u32 = 60;

/// relayd's `ctl_stats` bookkeeping for one redirect (pfe.c `pfe_statistics`): every
/// interval, `last` is the number of new sessions since the previous sample, `avg` a running
/// average of `last`, and the hour and day figures accumulate `last` and average once per hour
/// and per day. Sans-IO: the caller samples once per interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdrStats {
    pub cnt: u64,
    pub tick: u64,
    pub last: u64,
    pub avg: u64,
    pub last_hour: u64,
    pub avg_hour: u64,
    pub last_day: u64,
    pub avg_day: u64,
    pub interval: u32,
}

impl RdrStats {
    /// One sample: `cnt` is the redirect's total of sessions (flows created) so far.
    pub fn sample(&mut self, cnt: u64, interval: u32) {
        let interval = interval.max(1);
        // A counter that went backwards (a worker restarted) counts as no new sessions, as
        // relayd's `cnt > cur->cnt ? ... : 0`.
        self.last = cnt.saturating_sub(self.cnt);
        self.cnt = cnt;
        self.tick += 1;
        self.avg = (self.last + self.avg) / 2;
        self.last_hour += self.last;
        let mut reset_hour = false;
        let mut reset_day = false;
        if self
            .tick
            .is_multiple_of(u64::from((3600 / interval).max(1)))
        {
            self.avg_hour = (self.last_hour + self.avg_hour) / 2;
            reset_hour = true;
        }
        self.last_day += self.last;
        if self
            .tick
            .is_multiple_of(u64::from((86400 / interval).max(1)))
        {
            self.avg_day = (self.last_day + self.avg_day) / 2;
            // relayd sets `resethour` here too, so its `last_day` never resets (pfe.c); carpio
            // resets the day, which is what the column means.
            reset_day = true;
        }
        if reset_hour {
            self.last_hour = 0;
        }
        if reset_day {
            self.last_day = 0;
        }
        self.interval = interval;
    }

    /// The wire form, with `cnt` taken live (the running total, not the last sample's).
    pub fn stats(&self, live_cnt: u64) -> Stats {
        let c = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Stats {
            interval: self.interval,
            cnt: live_cnt.max(self.cnt),
            last: c(self.last),
            avg: c(self.avg),
            last_hour: c(self.last_hour),
            avg_hour: c(self.avg_hour),
            last_day: c(self.last_day),
            avg_day: c(self.avg_day),
        }
    }
}

/// The parent's statistics of every redirect, sampled every [`STAT_INTERVAL_SECS`].
#[derive(Debug, Default)]
pub struct Book {
    rdrs: BTreeMap<String, RdrStats>,
    next: u64,
}

impl Book {
    /// Is a sample due at `now` (seconds on the daemon's clock)?
    pub fn due(&self, now: u64) -> bool {
        now >= self.next
    }

    /// Samples every redirect of `totals` (name, flows created so far); redirects no longer
    /// configured are forgotten.
    pub fn sample(&mut self, now: u64, totals: &BTreeMap<String, u64>) {
        self.rdrs.retain(|name, _| totals.contains_key(name));
        for (name, &cnt) in totals {
            self.rdrs
                .entry(name.clone())
                .or_default()
                .sample(cnt, STAT_INTERVAL_SECS);
        }
        self.next = now + u64::from(STAT_INTERVAL_SECS);
    }

    /// The statistics of redirect `name` with its live total.
    pub fn stats(&self, name: &str, live_cnt: u64) -> Stats {
        let mut s = self
            .rdrs
            .get(name)
            .map_or_else(Stats::default, |r| r.stats(live_cnt));
        s.cnt = s.cnt.max(live_cnt);
        s.interval = STAT_INTERVAL_SECS;
        s
    }
}

/// Flows created per redirect (summed over its services).
pub fn flows_per_redirect(services: &[ServiceTraffic]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in services {
        *m.entry(s.redirect.clone()).or_insert(0) += s.flows;
    }
    m
}

crate::named_counters! {
    /// What the metrics endpoint did (exposed in its own scrape).
    pub enum Scrape {
        Scrapes = "metrics_scrapes",
        /// A path other than `/metrics` or `/`.
        NotFound = "metrics_not_found",
        /// A method other than GET or HEAD.
        BadMethod = "metrics_bad_method",
        /// The parent did not answer in time (the scrape gets a 503).
        ParentTimeout = "metrics_parent_timeout",
        /// Writing the response failed (the scraper went away).
        WriteFailed = "metrics_write_failed",
    }
}

/// How long a scrape waits for each of the parent's answers.
pub const PARENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the server thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// The parent's answers a scrape renders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub counters: Vec<(String, u64)>,
    pub services: Vec<ServiceTraffic>,
    pub hosts: Vec<HostTraffic>,
    pub vhosts: Vec<CarpVhost>,
    pub carp_counters: Vec<(String, u64)>,
    pub summary: Vec<Item>,
}

/// Asks the parent for everything a scrape shows (None: it did not answer in time).
pub fn ask(calls: &Sender<Call>) -> Option<Figures> {
    let call = |what: Show| -> Option<Response> {
        let (tx, rx) = crossbeam::channel::bounded(1);
        calls
            .send(Call {
                request: Request::Show { what },
                reply: tx,
            })
            .ok()?;
        rx.recv_timeout(PARENT_TIMEOUT).ok()
    };
    let mut f = Figures::default();
    match call(Show::Counters)? {
        Response::Counters { counters } => f.counters = counters,
        _ => return None,
    }
    match call(Show::Traffic)? {
        Response::Traffic { services, hosts } => {
            f.services = services;
            f.hosts = hosts;
        }
        _ => return None,
    }
    match call(Show::Carp)? {
        Response::Carp { vhosts, counters } => {
            f.vhosts = vhosts;
            f.carp_counters = counters;
        }
        _ => return None,
    }
    match call(Show::Hosts)? {
        Response::Summary { items } => f.summary = items,
        _ => return None,
    }
    Some(f)
}

/// Counters that are levels, not totals (exposed as gauges without `_total`).
const GAUGES: &[&str] = &["flows", "daemon_states_mirrored", "daemon_hosts_unresolved"];

/// A metric name from a counter name: `[a-zA-Z0-9_]` kept, anything else `_`.
fn metric_name(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A label value escaped as the text format wants (backslash, double quote, newline).
fn label_value(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// Metric families in the order first seen, each with its samples (labels → value).
#[derive(Default)]
struct Families {
    order: Vec<String>,
    fams: BTreeMap<String, (&'static str, String, BTreeMap<String, f64>)>,
}

impl Families {
    fn add(&mut self, name: &str, kind: &'static str, help: &str, labels: &[(&str, &str)], v: f64) {
        let fam = self.fams.entry(name.to_string()).or_insert_with(|| {
            self.order.push(name.to_string());
            (kind, help.to_string(), BTreeMap::new())
        });
        let mut l = String::new();
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                l.push(',');
            }
            let _ = write!(l, "{k}=\"{}\"", label_value(val));
        }
        // The same name and labels from two sources (e.g. a counter two roles share) add up.
        *fam.2.entry(l).or_insert(0.0) += v;
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for name in &self.order {
            let Some((kind, help, samples)) = self.fams.get(name) else {
                continue;
            };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        out
    }
}

/// Splits `worker3_busy_ns` into (`3`, `busy_ns`).
fn per_worker(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("worker")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (n, tail) = rest.split_at(digits);
    Some((n, tail.strip_prefix('_')?))
}

fn counter(fams: &mut Families, name: &str, v: u64, extra: &[(&str, &str)]) {
    if let Some(reason) = name.strip_prefix("drop_") {
        let mut l = vec![("reason", reason)];
        l.extend_from_slice(extra);
        fams.add(
            "carpio_drops_total",
            "counter",
            "Packets or messages dropped, by named reason.",
            &l,
            v as f64,
        );
    } else if let Some((w, rest)) = per_worker(name) {
        let mut l = vec![("worker", w)];
        l.extend_from_slice(extra);
        fams.add(
            &format!("carpio_worker_{}_total", metric_name(rest)),
            "counter",
            &format!("Per-worker counter {rest}."),
            &l,
            v as f64,
        );
    } else if GAUGES.contains(&name) {
        fams.add(
            &format!("carpio_{}", metric_name(name)),
            "gauge",
            &format!("Current {name}."),
            extra,
            v as f64,
        );
    } else {
        fams.add(
            &format!("carpio_{}_total", metric_name(name)),
            "counter",
            &format!("Counter {name}."),
            extra,
            v as f64,
        );
    }
}

/// The Prometheus text exposition (format 0.0.4) of `f` and the endpoint's own counters.
pub fn render(f: &Figures, own: &crate::counters::Counters<{ Scrape::COUNT }>) -> String {
    let mut fams = Families::default();
    fams.add(
        "carpio_up",
        "gauge",
        "1 when the daemon answered this scrape.",
        &[],
        1.0,
    );
    for (n, v) in &f.counters {
        counter(&mut fams, n, *v, &[]);
    }
    for (n, v) in &f.carp_counters {
        // carp's counters have plain names (`drop_short_ip`): keep them apart from the
        // workers' by a `carp_` prefix (drops: `reason="carp_short_ip"`).
        let n = match n.strip_prefix("drop_") {
            Some(r) => format!("drop_carp_{r}"),
            None if n.starts_with("carp") => n.clone(),
            None => format!("carp_{n}"),
        };
        counter(&mut fams, &n, *v, &[]);
    }
    for s in Scrape::ALL {
        counter(&mut fams, s.name(), own.get(s.index()), &[]);
    }
    for s in &f.services {
        let l = [
            ("redirect", s.redirect.as_str()),
            ("address", s.address.as_str()),
            ("proto", s.proto.as_str()),
            ("port", s.port.as_str()),
        ];
        let help = "of a virtual service (a redirect's listen address), summed over workers.";
        let c = "counter";
        fams.add(
            "carpio_service_packets_total",
            c,
            &format!("Packets {help}"),
            &l,
            s.packets as f64,
        );
        fams.add(
            "carpio_service_bytes_total",
            c,
            &format!("Bytes {help}"),
            &l,
            s.bytes as f64,
        );
        fams.add(
            "carpio_service_flows_total",
            c,
            &format!("Flows created {help}"),
            &l,
            s.flows as f64,
        );
        fams.add(
            "carpio_service_states",
            "gauge",
            &format!("Live flows {help}"),
            &l,
            s.states as f64,
        );
    }
    for h in &f.hosts {
        let l = [("host", h.address.as_str())];
        let help = "to and from a backend host, summed over workers and services.";
        let c = "counter";
        fams.add(
            "carpio_backend_packets_total",
            c,
            &format!("Packets {help}"),
            &l,
            h.packets as f64,
        );
        fams.add(
            "carpio_backend_bytes_total",
            c,
            &format!("Bytes {help}"),
            &l,
            h.bytes as f64,
        );
        fams.add(
            "carpio_backend_flows_total",
            c,
            &format!("Flows created {help}"),
            &l,
            h.flows as f64,
        );
        fams.add(
            "carpio_backend_states",
            "gauge",
            &format!("Live flows {help}"),
            &l,
            h.states as f64,
        );
    }
    for v in &f.vhosts {
        let vhid = v.vhid.to_string();
        let base = [("interface", v.interface.as_str()), ("vhid", vhid.as_str())];
        let mut states = vec!["INIT", "BACKUP", "MASTER"];
        if !states.contains(&v.state.as_str()) {
            states.push(v.state.as_str());
        }
        for st in states {
            let mut l = base.to_vec();
            l.push(("state", st));
            fams.add(
                "carpio_carp_vhost_state",
                "gauge",
                "1 for the carp vhost's current state, 0 for the others.",
                &l,
                if st == v.state { 1.0 } else { 0.0 },
            );
        }
        let g = "gauge";
        fams.add(
            "carpio_carp_vhost_advbase",
            g,
            "carp advbase (seconds).",
            &base,
            f64::from(v.advbase),
        );
        fams.add(
            "carpio_carp_vhost_advskew",
            g,
            "carp advskew.",
            &base,
            f64::from(v.advskew),
        );
        fams.add(
            "carpio_carp_vhost_demote",
            g,
            "carp demotion counter.",
            &base,
            f64::from(v.demote),
        );
    }
    let mut table = String::new();
    for it in &f.summary {
        match it {
            Item::Table {
                name, up, disabled, ..
            } => {
                table = name.clone();
                let l = [("table", name.as_str())];
                fams.add(
                    "carpio_table_hosts_up",
                    "gauge",
                    "Hosts up in a table.",
                    &l,
                    f64::from(*up),
                );
                fams.add(
                    "carpio_table_disabled",
                    "gauge",
                    "1 when the table is disabled.",
                    &l,
                    if *disabled { 1.0 } else { 0.0 },
                );
            }
            Item::Host {
                id,
                name,
                state,
                disabled,
                check_cnt,
                up_cnt,
                retry_cnt,
                ..
            } => {
                let id = id.to_string();
                let l = [
                    ("table", table.as_str()),
                    ("host", name.as_str()),
                    ("id", id.as_str()),
                ];
                let up = match state {
                    HostState::Up => 1.0,
                    HostState::Down => 0.0,
                    HostState::Unknown => -1.0,
                };
                fams.add(
                    "carpio_host_up",
                    "gauge",
                    "Health-check state of a host: 1 up, 0 down, -1 unknown.",
                    &l,
                    up,
                );
                fams.add(
                    "carpio_host_disabled",
                    "gauge",
                    "1 when the host is disabled.",
                    &l,
                    if *disabled { 1.0 } else { 0.0 },
                );
                fams.add(
                    "carpio_host_checks_total",
                    "counter",
                    "Health checks run.",
                    &l,
                    *check_cnt as f64,
                );
                fams.add(
                    "carpio_host_checks_up_total",
                    "counter",
                    "Health checks that found the host up.",
                    &l,
                    *up_cnt as f64,
                );
                fams.add(
                    "carpio_host_retries",
                    "gauge",
                    "Current check retries.",
                    &l,
                    f64::from(*retry_cnt),
                );
            }
            _ => {}
        }
    }
    fams.text()
}

/// The running endpoint; [`Metrics::stop`] (or drop) ends the thread.
pub struct Metrics {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Metrics {
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr` and serves `GET /metrics` from the parent's answers on `calls`.
pub fn serve(addr: SocketAddr, calls: Sender<Call>) -> io::Result<Metrics> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| io::Error::new(io::ErrorKind::AddrNotAvailable, format!("{addr}: {e}")))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| io::Error::other("metrics: not an IP listener"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("carpio-metrics".into())
        .spawn(move || {
            let mut own = crate::counters::Counters::<{ Scrape::COUNT }>::default();
            // Relaxed: the flag carries no data; `stop` joins the thread afterwards.
            while !flag.load(Ordering::Relaxed) {
                let req = match server.recv_timeout(POLL) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(_) => break,
                };
                let (status, body, ctype) = answer(&req, &calls, &mut own);
                let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
                if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes())
                {
                    resp.add_header(h);
                }
                if req.respond(resp).is_err() {
                    own.add(Scrape::WriteFailed.index(), 1);
                }
            }
        })?;
    Ok(Metrics {
        stop,
        thread: Some(thread),
        addr: bound,
    })
}

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn answer(
    req: &tiny_http::Request,
    calls: &Sender<Call>,
    own: &mut crate::counters::Counters<{ Scrape::COUNT }>,
) -> (u16, String, &'static str) {
    if !matches!(
        req.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    ) {
        own.add(Scrape::BadMethod.index(), 1);
        return (405, "method not allowed\n".into(), "text/plain");
    }
    let path = req.url().split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            own.add(Scrape::Scrapes.index(), 1);
            match ask(calls) {
                Some(f) => (200, render(&f, own), CONTENT_TYPE),
                None => {
                    own.add(Scrape::ParentTimeout.index(), 1);
                    (
                        503,
                        "carpio: the daemon did not answer\n".into(),
                        "text/plain",
                    )
                }
            }
        }
        "/" => (
            200,
            "carpio metrics: see /metrics\n".into(),
            "text/plain; charset=utf-8",
        ),
        _ => {
            own.add(Scrape::NotFound.index(), 1);
            (404, "not found\n".into(), "text/plain")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;
    use std::collections::HashMap;

    #[test]
    fn rdr_stats_follow_pfe_statistics() {
        let mut r = RdrStats::default();
        // 60 s interval: an hour is 60 samples, a day 1440.
        r.sample(10, 60);
        assert_eq!(
            (r.cnt, r.last, r.avg, r.last_hour, r.tick),
            (10, 10, 5, 10, 1)
        );
        r.sample(30, 60);
        assert_eq!((r.last, r.avg, r.last_hour), (20, 12, 30));
        // A counter that went backwards: no new sessions, and cnt follows it.
        r.sample(25, 60);
        assert_eq!((r.cnt, r.last, r.avg, r.last_hour), (25, 0, 6, 30));
        // Up to the hour: 57 more samples with 1 new session each.
        for i in 0..57 {
            r.sample(26 + i, 60);
        }
        assert_eq!(r.tick, 60);
        // last_hour was 30 + 57 = 87 at the hour: avg_hour = (87 + 0) / 2, then reset.
        assert_eq!((r.avg_hour, r.last_hour), (43, 0));
        assert_eq!(r.last_day, 87);
        for i in 0..(1440 - 60) {
            r.sample(83 + i, 60);
        }
        assert_eq!(r.tick, 1440);
        assert_eq!(r.avg_day, (87 + 1380) / 2);
        assert_eq!(
            r.last_day, 0,
            "the day resets (relayd's pfe.c resets the hour instead)"
        );
        let s = r.stats(5000);
        assert_eq!((s.cnt, s.last, s.interval), (5000, 1, 60));
    }

    #[test]
    fn book_samples_once_per_interval_and_forgets_removed_redirects() {
        let mut b = Book::default();
        assert!(b.due(0));
        let mut t = BTreeMap::from([("dns".to_string(), 7u64), ("ntp".to_string(), 1)]);
        b.sample(0, &t);
        assert!(!b.due(59) && b.due(60));
        t.insert("dns".into(), 17);
        t.remove("ntp");
        b.sample(60, &t);
        let s = b.stats("dns", 20);
        assert_eq!((s.cnt, s.last, s.avg), (20, 10, 6));
        assert_eq!(
            b.stats("ntp", 0),
            Stats {
                interval: 60,
                ..Stats::default()
            }
        );
    }

    fn figures() -> Figures {
        Figures {
            counters: vec![
                ("ipv4_udp".into(), 12),
                ("drop_no_backend".into(), 3),
                ("drop_short".into(), 0),
                ("worker0_busy_ns".into(), 1234),
                ("worker1_busy_ns".into(), 10),
                ("flows".into(), 4),
                ("daemon_reloads".into(), 2),
                // The relays' counters as the daemon names them (daemon::relay_counter_name).
                ("relay_bytes_in".into(), 512),
                ("drop_relay_no_backend".into(), 5),
            ],
            services: vec![ServiceTraffic {
                redirect: "dns".into(),
                address: "198.18.0.10".into(),
                proto: "udp".into(),
                port: "53".into(),
                packets: 6,
                bytes: 384,
                flows: 3,
                states: 2,
            }],
            hosts: vec![HostTraffic {
                address: "198.18.1.1".into(),
                packets: 6,
                bytes: 384,
                flows: 3,
                states: 2,
            }],
            vhosts: vec![CarpVhost {
                interface: "lb0".into(),
                vhid: 7,
                state: "MASTER".into(),
                advbase: 1,
                advskew: 100,
                demote: 0,
                balancing: "none".into(),
            }],
            carp_counters: vec![("carp_adv_sent".into(), 9), ("drop_bad_hmac".into(), 1)],
            summary: vec![
                Item::Table {
                    id: 1,
                    name: "dns:53".into(),
                    up: 1,
                    disabled: false,
                },
                Item::Host {
                    id: 1,
                    name: "198.18.1.1".into(),
                    parent: 0,
                    state: HostState::Up,
                    disabled: false,
                    check_cnt: 10,
                    up_cnt: 9,
                    retry_cnt: 0,
                    error: None,
                },
                Item::Host {
                    id: 2,
                    name: "198.18.1.2".into(),
                    parent: 0,
                    state: HostState::Down,
                    disabled: true,
                    check_cnt: 10,
                    up_cnt: 0,
                    retry_cnt: 1,
                    error: Some("refused".into()),
                },
            ],
        }
    }

    /// A strict reading of text format 0.0.4: every family's HELP and TYPE once, before its
    /// samples, which are contiguous; names and labels well formed; values numbers.
    pub(crate) fn strict_check(text: &str) -> usize {
        let mut seen: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut samples = 0;
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(name_ok(name), "{line}");
                assert!(!seen.contains(&name.to_string()), "family twice: {name}");
                seen.push(name.to_string());
                current = name.to_string();
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(name, current, "TYPE right after HELP");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter without _total: {name}");
                }
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let (head, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = head.split('{').next().unwrap();
            assert_eq!(name, current, "sample outside its family: {line}");
            if let Some(labels) = head.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
                let mut rest = inner.unwrap_or_else(|| panic!("{line}"));
                while !rest.is_empty() {
                    let (k, v) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(name_ok(k), "{line}");
                    // The value ends at the first unescaped quote.
                    let mut end = None;
                    let mut esc = false;
                    for (i, c) in v.char_indices() {
                        match (esc, c) {
                            (true, '\\' | '"' | 'n') => esc = false,
                            (true, _) => panic!("bad escape: {line}"),
                            (false, '\\') => esc = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("{line}"));
                    rest = &v[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
            }
            samples += 1;
        }
        samples
    }

    #[test]
    fn exposition_parses_back() {
        let mut own = Counters::<{ Scrape::COUNT }>::default();
        own.add(Scrape::Scrapes.index(), 1);
        let text = render(&figures(), &own);
        let n = strict_check(&text);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        assert_eq!(scrape.samples.len(), n, "{text}");
        let get = |metric: &str, labels: &[(&str, &str)]| -> f64 {
            let hits: Vec<f64> = scrape
                .samples
                .iter()
                .filter(|s| s.metric == metric)
                .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
                .collect();
            assert_eq!(hits.len(), 1, "{metric} {labels:?}:\n{text}");
            hits[0]
        };
        assert_eq!(get("carpio_up", &[]), 1.0);
        assert_eq!(get("carpio_drops_total", &[("reason", "no_backend")]), 3.0);
        assert_eq!(get("carpio_drops_total", &[("reason", "short")]), 0.0);
        // carp's drop counters join the same family.
        assert_eq!(
            get("carpio_drops_total", &[("reason", "carp_bad_hmac")]),
            1.0
        );
        assert_eq!(get("carpio_ipv4_udp_total", &[]), 12.0);
        assert_eq!(get("carpio_relay_bytes_in_total", &[]), 512.0);
        assert_eq!(
            get("carpio_drops_total", &[("reason", "relay_no_backend")]),
            5.0
        );
        assert_eq!(get("carpio_worker_busy_ns_total", &[("worker", "1")]), 10.0);
        assert_eq!(get("carpio_flows", &[]), 4.0);
        assert_eq!(get("carpio_carp_adv_sent_total", &[]), 9.0);
        assert_eq!(get("carpio_metrics_scrapes_total", &[]), 1.0);
        let svc = [("redirect", "dns"), ("port", "53"), ("proto", "udp")];
        assert_eq!(get("carpio_service_packets_total", &svc), 6.0);
        assert_eq!(get("carpio_service_bytes_total", &svc), 384.0);
        assert_eq!(get("carpio_service_flows_total", &svc), 3.0);
        assert_eq!(get("carpio_service_states", &svc), 2.0);
        assert_eq!(get("carpio_backend_states", &[("host", "198.18.1.1")]), 2.0);
        let vh = [("interface", "lb0"), ("vhid", "7")];
        let master = [vh[0], vh[1], ("state", "MASTER")];
        let backup = [vh[0], vh[1], ("state", "BACKUP")];
        assert_eq!(get("carpio_carp_vhost_state", &master), 1.0);
        assert_eq!(get("carpio_carp_vhost_state", &backup), 0.0);
        assert_eq!(get("carpio_carp_vhost_advskew", &vh), 100.0);
        assert_eq!(
            get(
                "carpio_host_up",
                &[("host", "198.18.1.1"), ("table", "dns:53")]
            ),
            1.0
        );
        assert_eq!(get("carpio_host_up", &[("host", "198.18.1.2")]), 0.0);
        assert_eq!(get("carpio_host_disabled", &[("host", "198.18.1.2")]), 1.0);
        assert_eq!(get("carpio_host_checks_up_total", &[("id", "1")]), 9.0);
        assert_eq!(get("carpio_table_hosts_up", &[("table", "dns:53")]), 1.0);
        // HELP text is there for every family.
        let fams: HashMap<_, _> = scrape.docs.iter().collect();
        assert!(fams.contains_key(&"carpio_drops_total".to_string()));
    }

    #[test]
    fn odd_names_stay_well_formed() {
        let mut f = figures();
        f.services[0].redirect = "we\"ird\\name\n".into();
        f.counters.push(("drop_odd-name.x".into(), 1));
        let text = render(&f, &Counters::default());
        assert_eq!(
            strict_check(&text),
            strict_check(&render(&figures(), &Counters::default())) + 1
        );
        assert!(text.contains(r#"redirect="we\"ird\\name\n""#), "{text}");
        assert!(
            text.contains(r#"carpio_drops_total{reason="odd-name.x"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn names_and_labels_are_sanitised() {
        assert_eq!(metric_name("a-b.c"), "a_b_c");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(per_worker("worker12_packets"), Some(("12", "packets")));
        assert_eq!(per_worker("worker_packets"), None);
    }
}
