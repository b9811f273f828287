//! Route health injection: carpio announces each virtual address it should receive to a local
//! routing daemon, which advertises it to the network (BGP toward the routers, which spread
//! flows over every node announcing it: ECMP, RFC 2992). This is how Katran and Maglev
//! deployments scale past one box, and the routing stays with an established daemon: carpio
//! never speaks BGP itself. It talks to BIRD 2 only through BIRD's documented interfaces
//! ([`bird`]): an include file of `protocol static` routes and `configure` on the control socket.
//!
//! # Death of the process
//!
//! The routes must not outlive carpio, however it dies (SIGKILL, the OOM killer, a panic), with
//! no supervisor's help. Each route therefore goes `via` a TUN device carpio creates without
//! `IFF_PERSIST` and holds for its lifetime ([`crate::sys::tun`]), and the static protocols have
//! `check link`: BIRD's static protocol announces a device route only while its interface is up
//! and, with `check link`, has carrier (BIRD 2 user's guide, "Static": `check link`, routes
//! `via "interface"`). When the process dies the kernel deletes the device, BIRD learns it by
//! netlink, drops the routes from its table and BGP withdraws them: within milliseconds, as
//! fast as a clean withdrawal (README "Scale-out" has the figures). The carrier is switched on
//! only once BIRD accepted carpio's first route set, and off at shutdown before the explicit
//! withdrawal, so a stale include file (a previous run's routes) is never announced by itself.
//!
//! The core here is sans-IO (time is a parameter):
//!
//! - [`desired`]: the set of addresses to announce, from the data plane's [`Snapshot`] and the
//!   node's carp demotion. A VIP is announced while at least one of its services is enabled and
//!   has an active table (`Service::active_table`: the main or the backup table has an up
//!   host): the route is per address, so one dead port must not take the healthy ones on the
//!   same address with it. Nothing is announced while the node is demoted (any carp group
//!   demotion > 0: the same signal that makes carp masters step down), nor while draining.
//! - [`Injector`]: what BIRD was last told versus what is wanted; hands out one [`Apply`] at a
//!   time and retries a failed one with a bounded backoff.
//! - [`Drain`]: when a draining node may stop (below).
//!
//! # Drain
//!
//! `stop` (SIGTERM, SIGINT, `carpioctl stop`) on a daemon with a `bird` block drains first:
//! the routes are withdrawn, and the daemon keeps forwarding whatever still arrives (routers
//! converge in milliseconds to seconds) until BIRD confirmed the withdrawal and then either no
//! flow is left or no packet reached a virtual address for [`DRAIN_QUIET`], or until the
//! `drain timeout` passed. With ECMP the routers move the node's established flows to the other
//! nodes at withdrawal; Maglev with the same table and seed on every node sends each of them to
//! the backend it had, so no connection is lost (DSR or tunnels need no state for that). A
//! second `stop` during a drain stops at once.

pub mod bird;

use crate::dataplane::snapshot::Snapshot;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

crate::named_counters! {
    /// What route injection did (shown by `carpioctl show counters`).
    pub enum Stat {
        /// A new route set was handed to BIRD and BIRD accepted it.
        Applied = "route_applied",
        /// Addresses added to / removed from the announced set (counted when BIRD accepted).
        Announced = "route_announced",
        Withdrawn = "route_withdrawn",
        /// The routes file could not be written.
        WriteFailed = "route_write_failed",
        /// BIRD's socket could not be reached or the exchange broke off.
        SocketFailed = "route_bird_socket_failed",
        /// BIRD answered `configure` with an error (8xxx/9xxx: e.g. a bird.conf error).
        ConfigureRejected = "route_bird_configure_rejected",
        /// A reply line that does not follow BIRD's CLI protocol, or a reply too long.
        BadReply = "route_bird_bad_reply",
        /// Drains started, and how they ended.
        DrainStarted = "route_drain_started",
        DrainQuiet = "route_drain_ended_quiet",
        DrainTimeout = "route_drain_ended_timeout",
    }
}

/// A drain ends this long after the last packet to a virtual address (once withdrawn).
pub const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// First retry delay after a failed apply; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(250);
pub const RETRY_MAX: Duration = Duration::from_secs(8);

/// The addresses this node should announce (one host route each: /32, /128).
pub fn desired(snap: &Snapshot, demoted: bool) -> BTreeSet<IpAddr> {
    if demoted {
        return BTreeSet::new();
    }
    snap.services
        .iter()
        .filter(|s| !s.disabled && s.active_table(&snap.tables).is_some())
        .map(|s| s.vip)
        .collect()
}

/// Name of the BIRD static protocol that carries the IPv4 routes (bird.conf filters on it).
pub const PROTO_V4: &str = "carpio4";
/// The same for IPv6.
pub const PROTO_V6: &str = "carpio6";

/// The routes file: two BIRD `protocol static` blocks (one channel each, as BIRD's static
/// protocol takes one) with `check link`, every address a host route `via "DEVICE"`, carpio's
/// TUN device: the routes live only while the device exists and has carrier, i.e. while carpio
/// runs (module doc). The route only has to exist in BIRD's table for BGP to export it (eBGP
/// sets the next hop to the session's own address); it must not reach the node's kernel,
/// where it would send the node's own packets for the address into the TUN device, which
/// drops them — bird.conf exports only `proto = "carpio4"`/`"carpio6"` to BGP and nothing of
/// them to the kernel protocol. `device` is a valid interface name
/// ([`crate::sys::tun::valid_name`]: no quote can reach the BIRD string).
pub fn render(routes: &BTreeSet<IpAddr>, device: &str) -> String {
    let mut out = String::from(
        "# Written by carpio (route health injection); rewritten on every change.\n\
         # Include it from bird.conf; export these protocols to BGP, not to the kernel.\n\
         # The routes go via carpio's TUN device: they vanish with the process.\n",
    );
    for (name, channel, v6) in [(PROTO_V4, "ipv4", false), (PROTO_V6, "ipv6", true)] {
        out.push_str(&format!(
            "protocol static {name} {{\n\t{channel};\n\tcheck link;\n"
        ));
        for a in routes.iter().filter(|a| a.is_ipv6() == v6) {
            let len = if v6 { 128 } else { 32 };
            out.push_str(&format!("\troute {a}/{len} via \"{device}\";\n"));
        }
        out.push_str("}\n");
    }
    out
}

/// One change for the shell to make: write `text` to the routes file, then `configure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apply {
    pub routes: BTreeSet<IpAddr>,
    pub text: String,
}

/// Why an apply failed (the shell's report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    Write(String),
    Socket(String),
    Rejected(String),
    BadReply(String),
}

impl ApplyError {
    pub fn stat(&self) -> Stat {
        match self {
            ApplyError::Write(_) => Stat::WriteFailed,
            ApplyError::Socket(_) => Stat::SocketFailed,
            ApplyError::Rejected(_) => Stat::ConfigureRejected,
            ApplyError::BadReply(_) => Stat::BadReply,
        }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Write(e) => write!(f, "routes file: {e}"),
            ApplyError::Socket(e) => write!(f, "bird socket: {e}"),
            ApplyError::Rejected(e) => write!(f, "bird refused the configuration: {e}"),
            ApplyError::BadReply(e) => write!(f, "bird reply: {e}"),
        }
    }
}

/// The sans-IO state of route injection: wanted set, what BIRD accepted last, retries.
#[derive(Debug)]
pub struct Injector {
    /// The TUN device the routes go via.
    device: String,
    want: BTreeSet<IpAddr>,
    /// What BIRD accepted last; `None` until the first apply (the file on disk may hold
    /// anything, e.g. a previous run's routes, so the first set is always applied).
    applied: Option<BTreeSet<IpAddr>>,
    in_flight: Option<BTreeSet<IpAddr>>,
    retry_at: Option<Duration>,
    backoff: Duration,
    counters: crate::counters::Counters<{ Stat::COUNT }>,
}

impl Injector {
    /// Routes will go via `device` (see [`render`]).
    pub fn new(device: &str) -> Self {
        Self {
            device: device.to_string(),
            want: BTreeSet::new(),
            applied: None,
            in_flight: None,
            retry_at: None,
            backoff: RETRY_MIN,
            counters: Default::default(),
        }
    }

    /// The set that should be announced now.
    pub fn handle_desired(&mut self, routes: BTreeSet<IpAddr>) {
        if routes != self.want {
            self.want = routes;
            // A new wish is worth trying at once, even during a backoff.
            self.retry_at = None;
        }
    }

    /// The next change to make, if any (one at a time: the previous must be reported first).
    pub fn poll_apply(&mut self, now: Duration) -> Option<Apply> {
        if self.in_flight.is_some() || self.settled() {
            return None;
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        self.in_flight = Some(self.want.clone());
        Some(Apply {
            routes: self.want.clone(),
            text: render(&self.want, &self.device),
        })
    }

    /// The shell's report on the last [`Apply`].
    pub fn handle_applied(&mut self, now: Duration, result: Result<(), ApplyError>) {
        let Some(sent) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(()) => {
                let before = self.applied.take().unwrap_or_default();
                let added = sent.difference(&before).count() as u64;
                let removed = before.difference(&sent).count() as u64;
                self.counters.add(Stat::Applied.index(), 1);
                self.counters.add(Stat::Announced.index(), added);
                self.counters.add(Stat::Withdrawn.index(), removed);
                self.applied = Some(sent);
                self.retry_at = None;
                self.backoff = RETRY_MIN;
            }
            Err(e) => {
                self.counters.add(e.stat().index(), 1);
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }

    /// When to call [`Injector::poll_apply`] again (a retry), if something is pending.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.settled() || self.in_flight.is_some() {
            None
        } else {
            Some(self.retry_at.unwrap_or_default())
        }
    }

    /// True when BIRD holds exactly the wanted set.
    pub fn settled(&self) -> bool {
        self.applied.as_ref() == Some(&self.want)
    }

    /// What BIRD accepted last (empty before the first apply).
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.applied.clone().unwrap_or_default()
    }

    pub fn counter(&self, s: Stat) -> u64 {
        self.counters.get(s.index())
    }

    /// Counts a drain start or end (the drain logic lives in [`Drain`]).
    pub fn count(&mut self, s: Stat) {
        self.counters.add(s.index(), 1);
    }

    pub fn counter_values(&self) -> Vec<(&'static str, u64)> {
        Stat::ALL
            .iter()
            .map(|s| (s.name(), self.counters.get(s.index())))
            .collect()
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Withdrawn, and no flow left or no packet for [`DRAIN_QUIET`].
    Quiet,
    /// The drain timeout passed first.
    Timeout,
}

/// A drain in progress: withdraw first, stop when the traffic has gone (sans-IO).
#[derive(Debug, Clone)]
pub struct Drain {
    deadline: Duration,
    /// The last value of the node's VIP packet count, and when it last moved.
    packets: Option<u64>,
    last_traffic: Duration,
}

impl Drain {
    /// Starts at `now`; `timeout` bounds it.
    pub fn new(now: Duration, timeout: Duration) -> Self {
        Self {
            deadline: now + timeout,
            packets: None,
            last_traffic: now,
        }
    }

    /// The node's running count of packets to virtual addresses (flow hits and new flows).
    pub fn handle_traffic(&mut self, now: Duration, packets: u64) {
        if self.packets.is_some_and(|p| p != packets) {
            self.last_traffic = now;
        }
        self.packets = Some(packets);
    }

    /// Whether the drain is over: `withdrawn` says BIRD accepted the empty set, `flows` is the
    /// number of flows the node still holds.
    pub fn poll_done(&self, now: Duration, withdrawn: bool, flows: usize) -> Option<DrainEnd> {
        if withdrawn && (flows == 0 || now >= self.last_traffic + DRAIN_QUIET) {
            Some(DrainEnd::Quiet)
        } else if now >= self.deadline {
            Some(DrainEnd::Timeout)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::dataplane::snapshot::{HostStates, Link};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| ip(s)).collect()
    }

    const CONF: &str = "table <a> { 198.18.2.11, 198.18.2.12 }\n\
        table <b> { 198.18.2.21 }\n\
        table <c> { 198.18.2.31 }\n\
        redirect web {\n listen on 198.18.1.100 tcp port 80\n forward to <a> check tcp\n}\n\
        redirect dns {\n listen on 198.18.1.101 udp port 53\n listen on 2001:db8::53 udp port 53\n forward to <b> check icmp\n}\n\
        redirect mx {\n listen on 198.18.1.101 tcp port 25\n forward to <c> check tcp\n}\n";

    fn snapshot(states: &HostStates) -> (config::Config, Snapshot) {
        let cfg = config::parse_str("t.conf", CONF, &[]).unwrap();
        let mut st = states.clone();
        for h in cfg.hosts() {
            if let config::Address::Ip(a) = h.addr {
                st.macs.push((a, crate::replay::derived_mac(a)));
            }
        }
        let snap = Snapshot::build(&cfg, &st, Link::default(), None).unwrap();
        (cfg, snap)
    }

    fn host_id(cfg: &config::Config, addr: &str) -> u32 {
        cfg.hosts()
            .find(|h| h.addr == config::Address::Ip(ip(addr)))
            .unwrap()
            .id
    }

    #[test]
    fn desired_follows_health_demotion_and_disable() {
        let (cfg, snap) = snapshot(&HostStates::default());
        let all = set(&["198.18.1.100", "198.18.1.101", "2001:db8::53"]);
        assert_eq!(desired(&snap, false), all);
        assert!(
            desired(&snap, true).is_empty(),
            "a demoted node announces nothing"
        );

        // One host of <a> down: web still has an up host.
        let mut st = HostStates::default();
        st.down.push(host_id(&cfg, "198.18.2.11"));
        assert_eq!(desired(&snapshot(&st).1, false), all);
        // Both down: web's VIP is withdrawn.
        st.down.push(host_id(&cfg, "198.18.2.12"));
        assert_eq!(
            desired(&snapshot(&st).1, false),
            set(&["198.18.1.101", "2001:db8::53"])
        );
        // <b> down: dns is down, but mx keeps 198.18.1.101 (shared address); the IPv6 VIP,
        // only dns's, goes.
        st.down.push(host_id(&cfg, "198.18.2.21"));
        assert_eq!(desired(&snapshot(&st).1, false), set(&["198.18.1.101"]));
        // A disabled redirect does not count as healthy.
        st.disabled_redirects.push("mx".into());
        assert!(desired(&snapshot(&st).1, false).is_empty());
        // A disabled table is down too.
        let st = HostStates {
            disabled_tables: vec![cfg.redirect("web").unwrap().tables[0].clone()],
            ..HostStates::default()
        };
        assert!(!desired(&snapshot(&st).1, false).contains(&ip("198.18.1.100")));
    }

    #[test]
    fn render_is_two_static_protocols_of_host_routes_via_the_device() {
        let text = render(
            &set(&["198.18.1.101", "198.18.1.100", "2001:db8::53"]),
            "carpio-rt",
        );
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "protocol static carpio4 {",
                "\tipv4;",
                "\tcheck link;",
                "\troute 198.18.1.100/32 via \"carpio-rt\";",
                "\troute 198.18.1.101/32 via \"carpio-rt\";",
                "}",
                "protocol static carpio6 {",
                "\tipv6;",
                "\tcheck link;",
                "\troute 2001:db8::53/128 via \"carpio-rt\";",
                "}",
            ]
        );
        // Empty: both protocols stay (bird.conf may refer to them), with no route.
        let empty = render(&BTreeSet::new(), "carpio-rt");
        assert!(!empty.contains("\troute"), "{empty}");
        assert_eq!(empty.matches("protocol static").count(), 2);
        assert_eq!(empty.matches("\tcheck link;").count(), 2);
        // The configured device name is the one routed via.
        let other = render(&set(&["198.18.1.100"]), "cio-77-rt");
        assert!(
            other.contains("\troute 198.18.1.100/32 via \"cio-77-rt\";\n"),
            "{other}"
        );
        assert!(!other.contains("carpio-rt"), "{other}");
    }

    #[test]
    fn injector_applies_diffs_one_at_a_time_and_counts() {
        let mut inj = Injector::new("carpio-rt");
        let t = Duration::from_secs(1);
        // The first (empty) set is applied: the file may hold a previous run's routes.
        assert!(!inj.settled());
        let a = inj.poll_apply(t).unwrap();
        assert!(a.routes.is_empty());
        assert_eq!(inj.poll_apply(t), None, "one apply in flight at a time");
        inj.handle_applied(t, Ok(()));
        assert!(inj.settled());
        assert_eq!(inj.poll_apply(t), None);
        assert_eq!(inj.poll_timeout(), None);

        inj.handle_desired(set(&["198.18.1.100", "198.18.1.101"]));
        let a = inj.poll_apply(t).unwrap();
        assert_eq!(a.text, render(&a.routes, "carpio-rt"));
        // A change while in flight is applied after the report.
        inj.handle_desired(set(&["198.18.1.100"]));
        inj.handle_applied(t, Ok(()));
        assert_eq!(inj.announced(), set(&["198.18.1.100", "198.18.1.101"]));
        assert!(!inj.settled());
        let a = inj.poll_apply(t).unwrap();
        assert_eq!(a.routes, set(&["198.18.1.100"]));
        inj.handle_applied(t, Ok(()));
        assert!(inj.settled());
        assert_eq!(inj.counter(Stat::Applied), 3);
        assert_eq!(inj.counter(Stat::Announced), 2);
        assert_eq!(inj.counter(Stat::Withdrawn), 1);
    }

    #[test]
    fn injector_retries_with_backoff() {
        let mut inj = Injector::new("carpio-rt");
        let t0 = Duration::from_secs(10);
        inj.handle_desired(set(&["198.18.1.100"]));
        inj.poll_apply(t0).unwrap();
        inj.handle_applied(t0, Err(ApplyError::Socket("refused".into())));
        assert_eq!(inj.counter(Stat::SocketFailed), 1);
        assert_eq!(inj.poll_timeout(), Some(t0 + RETRY_MIN));
        assert_eq!(inj.poll_apply(t0 + RETRY_MIN / 2), None);
        let t1 = t0 + RETRY_MIN;
        inj.poll_apply(t1).unwrap();
        inj.handle_applied(t1, Err(ApplyError::Rejected("8002 bad".into())));
        assert_eq!(inj.counter(Stat::ConfigureRejected), 1);
        // Doubled.
        assert_eq!(inj.poll_timeout(), Some(t1 + RETRY_MIN * 2));
        // Backoff is bounded.
        let mut t = t1;
        for _ in 0..20 {
            t = inj.poll_timeout().unwrap();
            inj.poll_apply(t).unwrap();
            inj.handle_applied(t, Err(ApplyError::Write("ro".into())));
        }
        assert_eq!(inj.poll_timeout(), Some(t + RETRY_MAX));
        // A new wish is tried at once; success resets the backoff.
        inj.handle_desired(BTreeSet::new());
        assert!(inj.poll_apply(t).is_some());
        inj.handle_applied(t, Ok(()));
        assert!(inj.settled());
        assert!(inj.announced().is_empty());
        // A report with nothing in flight is ignored.
        inj.handle_applied(t, Err(ApplyError::Write("late".into())));
        assert_eq!(inj.counter(Stat::WriteFailed), 20);
    }

    #[test]
    fn drain_ends_when_quiet_empty_or_timed_out() {
        let s = Duration::from_secs;
        let d = Drain::new(s(100), s(30));
        // Not withdrawn yet: only the timeout ends it.
        assert_eq!(d.poll_done(s(105), false, 0), None);
        assert_eq!(d.poll_done(s(130), false, 5), Some(DrainEnd::Timeout));
        // Withdrawn and no flow left.
        assert_eq!(d.poll_done(s(100), true, 0), Some(DrainEnd::Quiet));

        let mut d = Drain::new(s(100), s(30));
        d.handle_traffic(s(100), 10);
        d.handle_traffic(s(101), 20); // still arriving (routers converging)
        assert_eq!(d.poll_done(s(102), true, 3), None);
        d.handle_traffic(s(102), 20);
        d.handle_traffic(s(103), 20);
        assert_eq!(
            d.poll_done(s(101) + DRAIN_QUIET, true, 3),
            Some(DrainEnd::Quiet)
        );
        // Traffic that never stops: the timeout.
        let mut d = Drain::new(s(0), s(5));
        for i in 0..10 {
            d.handle_traffic(s(i), i);
            let done = d.poll_done(s(i), true, 1);
            assert_eq!(done, (i >= 5).then_some(DrainEnd::Timeout), "{i}");
        }
    }
}
