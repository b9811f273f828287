//! relayd's layer-7 relays (relayd relay.c, relay_udp.c): TCP relays that move bytes with
//! splice(2) and a DNS relay over UDP.
//!
//! ```text
//!  config::Config ──spawn()──► RelayHandle ── set_host_state(host id, up) ──► ArcSwap<View>
//!                                 │                                              ▲ (per relay)
//!                 worker thread × N (mio epoll loop, SO_REUSEPORT listeners)      │ load()
//!     client ──accept──► Session ── pick (balance::Scheduler on the current View) ┘
//!                           │ connect (retry N, loop guard) → PROXY v1/v2 header →
//!                           │ client→backend and backend→client: splice(2) through a 1 MiB
//!                           │ pipe each (or a copy buffer with `no splice`), half-close,
//!                           ▼ idle timeout = `session timeout`
//!     dns: listener → dns::Table (ID shuffle, pending, timeout) → connected upstream socket
//! ```
//!
//! - One thread per worker; each binds its own listening sockets with SO_REUSEPORT so the
//!   kernel spreads connections, IP_FREEBIND so a carp VIP that is not (yet) on this box can be
//!   bound, and IP_TRANSPARENT for `transparent forward` where the kernel allows it.
//! - The backend view per relay is an immutable [`View`] behind an `ArcSwap`: workers load it
//!   per new session (no lock), the daemon's health engine swaps it with
//!   [`RelayHandle::set_host_state`].
//! - Statistics are per-worker counter blocks ([`Counter`]), summed when read; the session list
//!   is collected from the workers on request ([`RelayHandle::sessions`]).
//! - Not implemented: TLS (`listen ... tls`, `forward with tls`), HTTP filtering (an `http
//!   protocol` relay is relayed as plain TCP), `forward to destination` and `nat lookup`
//!   ([`Error::Unsupported`] at spawn), the `inet`/`inet6 PREFIX` mapping of forward addresses,
//!   SACK (a sysctl on Linux, spec §9 item 13).
//!
//! Nothing here panics on input from the network or the configuration: every reject has a
//! named [`Counter`], every setup failure a named [`Error`]. Per-packet paths take no lock,
//! log nothing and allocate nothing (sessions allocate once, when accepted).

pub mod dns;
pub mod proxy;
mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::balance::{self, Scheduler, SchedulerConfig};
use crate::config::model::{
    Address, Config, ProtocolKind, ProxyProtocol, RelayConfig, RelayTarget, TcpOptions,
};
use crate::ctl::proto::{Item, Session, Stats};

crate::named_counters! {
    /// Per-relay counters (sessions, rejects, bytes, DNS).
    pub enum Counter {
        /// A client connection accepted.
        SessionAccepted = "session_accepted",
        /// A session finished (both directions done, or aborted).
        SessionClosed = "session_closed",
        /// A session closed by the idle `session timeout`.
        SessionTimeout = "session_timeout",
        /// A session aborted by a socket error (reset, broken pipe) while relaying.
        SessionError = "session_error",
        /// A backend connect retried (`retry N`).
        ConnectRetry = "connect_retry",
        /// No table had an up host.
        DropNoBackend = "drop_no_backend",
        /// The chosen backend is the relay's own listen address and port (relayd's loop guard).
        DropLoop = "drop_loop",
        /// The backend refused or never answered, retries used up.
        DropConnectFailed = "drop_connect_failed",
        /// accept(2) failed (EMFILE/ENFILE pause accepting for one second, as relayd).
        DropAcceptError = "drop_accept_error",
        /// `transparent`: binding the upstream socket to the client address failed.
        DropTransparentBind = "drop_transparent_bind",
        /// A pipe or copy buffer could not be set up for the session.
        DropResource = "drop_resource",
        /// Bytes client → backend.
        BytesIn = "bytes_in",
        /// Bytes backend → client.
        BytesOut = "bytes_out",
        /// DNS queries forwarded.
        DnsQuery = "dns_query",
        /// DNS answers returned to clients.
        DnsAnswer = "dns_answer",
        /// DNS datagrams shorter than the 12-byte header.
        DnsDropShort = "dns_drop_short",
        /// A DNS response (QR set) on the listener.
        DnsDropNotQuery = "dns_drop_not_query",
        /// A DNS answer with no pending query of that ID.
        DnsDropUnmatched = "dns_drop_unmatched",
        /// A DNS answer for a pending ID from another backend.
        DnsDropWrongSource = "dns_drop_wrong_source",
        /// A DNS query whose drawn ID was still pending.
        DnsDropIdBusy = "dns_drop_id_busy",
        /// A DNS query unanswered within the session timeout.
        DnsTimeout = "dns_timeout",
        /// sendto/send failed for a DNS query or answer.
        DnsDropSend = "dns_drop_send",
    }
}

/// A setup failure of [`spawn`].
#[derive(Debug)]
pub enum Error {
    /// A socket, pipe, poller or thread could not be created; the string says which.
    Io(String, io::Error),
    /// A listen or forward name did not resolve.
    Resolve(String),
    /// A relay has no usable forward target.
    NoTarget(String),
    /// The relay uses something carpio's relay does not implement (see the module doc).
    Unsupported(String, &'static str),
    /// A table's scheduler refused its configuration.
    Scheduler(String, balance::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(what, e) => write!(f, "{what}: {e}"),
            Error::Resolve(name) => write!(f, "cannot resolve {name}"),
            Error::NoTarget(r) => write!(f, "relay {r}: no forward target"),
            Error::Unsupported(r, what) => write!(f, "relay {r}: {what} is not supported"),
            Error::Scheduler(t, e) => write!(f, "table {t}: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// One backend address of a forward target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The host's config id (relayd `host id`), 0 for a plain `forward to ADDRESS`.
    pub host_id: u32,
    pub name: String,
    pub addr: SocketAddr,
    /// Connect retries.
    pub retry: u32,
    /// The host's `ip ttl`, else the protocol's.
    pub ip_ttl: Option<u8>,
}

/// One `forward to` line: its backends and their scheduler.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The table name (`name:port`), or `None` for a plain address.
    pub table: Option<String>,
    pub backends: Vec<Backend>,
    pub scheduler: Scheduler,
}

/// A relay's backend view: immutable, swapped as a whole.
#[derive(Debug, Clone)]
pub struct View {
    pub forwards: Vec<Forward>,
}

impl View {
    /// relayd `relay_from_table`: the first forward with an up host picks.
    pub fn pick(
        &self,
        input: &balance::PickInput<'_>,
        states: &mut [balance::PickState],
    ) -> Option<(usize, usize)> {
        for (f, (fw, st)) in self.forwards.iter().zip(states.iter_mut()).enumerate() {
            if let Some(i) = fw.scheduler.pick(input, st) {
                return Some((f, i));
            }
        }
        None
    }

    pub fn backend(&self, f: usize, i: usize) -> Option<&Backend> {
        self.forwards.get(f)?.backends.get(i)
    }

    /// Marks every backend with `host_id` up or down; returns whether one was found.
    pub fn set_host_state(&mut self, host_id: u32, up: bool) -> bool {
        let mut found = false;
        for fw in &mut self.forwards {
            for (i, b) in fw.backends.iter().enumerate() {
                if b.host_id == host_id && host_id != 0 {
                    found |= fw.scheduler.set_up(i, up).is_ok();
                }
            }
        }
        found
    }
}

/// Everything a worker needs to run one relay (plain data derived from the config).
#[derive(Debug, Clone)]
pub struct Plan {
    /// 1-based, in config order (relayd `rl_conf.id`).
    pub id: u32,
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub dns: bool,
    pub tcp: TcpOptions,
    pub transparent: bool,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub session_timeout: Duration,
}

/// Options of [`spawn`] that are not in the configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads (each has its own listeners and sessions). Default: the config's
    /// `workers`, else `prefork`.
    pub workers: Option<usize>,
    /// Seeds the workers' PRNGs (random mode, DNS ID shuffle). The daemon passes time-based
    /// entropy; tests pass a constant.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: None,
            seed: 0x6361_7270_696f,
        }
    }
}

/// State shared between the handle and the workers of one relay.
pub(crate) struct Shared {
    pub(crate) plan: Plan,
    pub(crate) view: Arc<ArcSwap<View>>,
    /// One counter block per worker, each written by that worker only (Relaxed: plain
    /// statistics, no ordering with anything else).
    pub(crate) counters: Box<[[AtomicU64; Counter::COUNT]]>,
    /// Local addresses actually bound (port 0 resolved), filled by worker 0.
    pub(crate) bound: std::sync::Mutex<Vec<SocketAddr>>,
}

impl Shared {
    #[inline]
    pub(crate) fn add(&self, worker: usize, c: Counter, n: u64) {
        if let Some(block) = self.counters.get(worker)
            && let Some(a) = block.get(c.index())
        {
            a.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn get(&self, c: Counter) -> u64 {
        self.counters
            .iter()
            .filter_map(|b| b.get(c.index()))
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

/// A message from the handle to a worker.
pub(crate) enum Command {
    Sessions(mpsc::Sender<Vec<Session>>),
}

pub(crate) struct WorkerCtl {
    pub(crate) waker: Arc<mio::Waker>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

/// The running relays; dropping it stops the workers and closes every socket.
pub struct RelayHandle {
    relays: Vec<Arc<Shared>>,
    workers: Vec<WorkerCtl>,
    stop: Arc<AtomicBool>,
    /// Workers bound by [`bind`] whose threads [`RelayHandle::start`] has not started yet.
    pending: Vec<worker::Worker>,
}

/// Resolves a config address with a port.
fn resolve(addr: &Address, port: u16) -> Result<Vec<SocketAddr>, Error> {
    match addr {
        Address::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Address::Name(n) => (n.as_str(), port)
            .to_socket_addrs()
            .map(|it| it.collect())
            .map_err(|_| Error::Resolve(n.clone())),
    }
}

/// Builds a relay's plan and initial view (every host up until the health engine says
/// otherwise, as relayd's unchecked hosts).
pub fn plan(config: &Config, index: usize, relay: &RelayConfig) -> Result<(Plan, View), Error> {
    let proto = relay.protocol.as_deref().and_then(|p| config.protocol(p));
    let tcp = proto.map(|p| p.tcp.clone()).unwrap_or_default();
    let dns = proto.is_some_and(|p| p.kind == ProtocolKind::Dns);
    if relay.listen.iter().any(|l| l.tls) || relay.forwards.iter().any(|f| f.tls) {
        return Err(Error::Unsupported(relay.name.clone(), "tls"));
    }
    let mut listen = Vec::new();
    for l in &relay.listen {
        for port in l.port.lo..=l.port.hi {
            listen.extend(resolve(&l.addr, port)?);
        }
    }
    let first_port = listen.first().map(|a| a.port()).unwrap_or(0);
    let mut forwards = Vec::new();
    for f in &relay.forwards {
        match &f.target {
            RelayTarget::Table(name) => {
                let t = config
                    .table(name)
                    .ok_or_else(|| Error::NoTarget(relay.name.clone()))?;
                let port = t.port.unwrap_or(first_port);
                let mut backends = Vec::new();
                let mut hosts = Vec::new();
                for h in &t.hosts {
                    for addr in resolve(&h.addr, port)? {
                        backends.push(Backend {
                            host_id: h.id,
                            name: format!("{}", addr.ip()),
                            addr,
                            retry: h.retry,
                            ip_ttl: h.ip_ttl.or(tcp.ip_ttl),
                        });
                        hosts.push(balance::Host {
                            name: format!("{}", addr.ip()),
                            weight: 1,
                            up: !t.disabled,
                        });
                    }
                }
                let sc = balance::scheduler_config(t.mode, &format!("{}\0{}", relay.name, t.name));
                let scheduler =
                    Scheduler::new(sc, hosts).map_err(|e| Error::Scheduler(t.name.clone(), e))?;
                forwards.push(Forward {
                    table: Some(t.name.clone()),
                    backends,
                    scheduler,
                });
            }
            RelayTarget::Address {
                addr, port, retry, ..
            } => {
                let port = port.unwrap_or(first_port);
                let addrs = resolve(addr, port)?;
                let a = addrs
                    .first()
                    .copied()
                    .ok_or_else(|| Error::Resolve(format!("{addr:?}")))?;
                let sc = SchedulerConfig::new(balance::Mode::RoundRobin, &relay.name);
                let scheduler = Scheduler::new(
                    sc,
                    vec![balance::Host {
                        name: a.ip().to_string(),
                        weight: 1,
                        up: true,
                    }],
                )
                .map_err(|e| Error::Scheduler(relay.name.clone(), e))?;
                forwards.push(Forward {
                    table: None,
                    backends: vec![Backend {
                        host_id: 0,
                        name: a.ip().to_string(),
                        addr: a,
                        retry: *retry,
                        ip_ttl: tcp.ip_ttl,
                    }],
                    scheduler,
                });
            }
            RelayTarget::Destination => {
                return Err(Error::Unsupported(
                    relay.name.clone(),
                    "forward to destination",
                ));
            }
            RelayTarget::NatLookup => {
                return Err(Error::Unsupported(
                    relay.name.clone(),
                    "forward to nat lookup",
                ));
            }
        }
    }
    if forwards.is_empty() {
        return Err(Error::NoTarget(relay.name.clone()));
    }
    let plan = Plan {
        id: u32::try_from(index + 1).unwrap_or(u32::MAX),
        name: relay.name.clone(),
        listen,
        dns,
        tcp,
        transparent: relay.transparent,
        proxy_protocol: relay.proxy_protocol,
        session_timeout: relay.session_timeout,
    };
    Ok((plan, View { forwards }))
}

/// Starts every enabled relay of `config` on worker threads. Listening sockets are bound
/// before this returns, so a connect right after it succeeds.
pub fn spawn(config: &Config, opts: Options) -> Result<RelayHandle, Error> {
    let mut h = bind(config, opts)?;
    h.start()?;
    Ok(h)
}

/// Binds every enabled relay's sockets and sets up every worker (poller, waker), without
/// accepting: connections wait in the kernel's listen backlog until [`RelayHandle::start`].
/// The daemon binds before it drops privileges and starts the workers once everything else is
/// open: a worker that accepts earlier takes descriptors under a connection flood, and with a
/// low RLIMIT_NOFILE the rest of the start-up (the next worker's waker, the control socket)
/// then failed with EMFILE, which is fatal while starting.
pub fn bind(config: &Config, opts: Options) -> Result<RelayHandle, Error> {
    let workers = opts
        .workers
        .or(config.global.workers.map(|w| w as usize))
        .unwrap_or(config.global.prefork as usize)
        .max(1);
    let mut relays = Vec::new();
    for (i, r) in config.relays.iter().enumerate() {
        if r.disabled {
            continue;
        }
        let (plan, view) = plan(config, i, r)?;
        let counters = (0..workers)
            .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            .collect();
        relays.push(Arc::new(Shared {
            plan,
            view: Arc::new(ArcSwap::from_pointee(view)),
            counters,
            bound: std::sync::Mutex::new(Vec::new()),
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut handle = RelayHandle {
        relays: relays.clone(),
        workers: Vec::new(),
        stop: stop.clone(),
        pending: Vec::new(),
    };
    for w in 0..workers {
        // Binding happens here, on the caller's thread (and so in its network namespace).
        let worker = worker::Worker::new(w, relays.clone(), stop.clone(), opts.seed ^ (w as u64))?;
        handle.pending.push(worker);
    }
    Ok(handle)
}

impl RelayHandle {
    /// Starts the threads of the workers [`bind`] set up (a second call does nothing). Needs
    /// no descriptor: what a worker needs was opened by [`bind`].
    pub fn start(&mut self) -> Result<(), Error> {
        for worker in std::mem::take(&mut self.pending) {
            let w = self.workers.len();
            let waker = worker.waker();
            let (tx, rx) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name(format!("relay-{w}"))
                .spawn(move || worker.run(rx))
                .map_err(|e| Error::Io("spawn relay worker".into(), e))?;
            self.workers.push(WorkerCtl {
                waker,
                commands: tx,
                thread: Some(thread),
            });
        }
        Ok(())
    }

    /// The names and ids of the running relays.
    pub fn relays(&self) -> Vec<(u32, String)> {
        self.relays
            .iter()
            .map(|r| (r.plan.id, r.plan.name.clone()))
            .collect()
    }

    /// The backend view of relay `name`, for the daemon to wire health results into.
    pub fn view(&self, name: &str) -> Option<Arc<ArcSwap<View>>> {
        self.find(name).map(|r| r.view.clone())
    }

    /// A health transition: marks config host `host_id` up or down in every relay that uses
    /// it. Returns whether any relay has that host.
    pub fn set_host_state(&self, host_id: u32, up: bool) -> bool {
        let mut any = false;
        for r in &self.relays {
            let cur = r.view.load();
            if !cur
                .forwards
                .iter()
                .any(|f| f.backends.iter().any(|b| b.host_id == host_id))
            {
                continue;
            }
            let mut next = View::clone(&cur);
            any |= next.set_host_state(host_id, up);
            r.view.store(Arc::new(next));
        }
        any
    }

    /// The addresses relay `name` listens on (ports resolved when the config said 0).
    pub fn local_addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.find(name)
            .and_then(|r| r.bound.lock().ok().map(|b| b.clone()))
            .unwrap_or_default()
    }

    /// Counter values of relay `name`, summed over the workers, in [`Counter::ALL`] order.
    pub fn counters(&self, name: &str) -> Vec<(Counter, u64)> {
        match self.find(name) {
            Some(r) => Counter::ALL.iter().map(|&c| (c, r.get(c))).collect(),
            None => Vec::new(),
        }
    }

    /// One counter of relay `name`.
    pub fn counter(&self, name: &str, c: Counter) -> u64 {
        self.find(name).map(|r| r.get(c)).unwrap_or(0)
    }

    /// `show relays` items: each relay followed by its statistics (relayd's `ctl_stats`:
    /// `cnt` = sessions accepted; the interval figures are not kept yet).
    pub fn summary(&self) -> Vec<Item> {
        let mut items = Vec::new();
        for r in &self.relays {
            items.push(Item::Relay {
                id: r.plan.id,
                name: r.plan.name.clone(),
                disabled: false,
            });
            let cnt = if r.plan.dns {
                r.get(Counter::DnsQuery)
            } else {
                r.get(Counter::SessionAccepted)
            };
            items.push(Item::RelayStats(Stats {
                cnt,
                ..Stats::default()
            }));
        }
        items
    }

    /// `show sessions`: every live TCP session of every worker (each answers within 1 s).
    pub fn sessions(&self) -> Vec<Session> {
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for w in &self.workers {
            let (tx, rx) = mpsc::channel();
            if w.commands.send(Command::Sessions(tx)).is_ok() && w.waker.wake().is_ok() {
                pending.push(rx);
            }
        }
        for rx in pending {
            if let Ok(mut v) = rx.recv_timeout(Duration::from_secs(1)) {
                out.append(&mut v);
            }
        }
        out
    }

    /// Stops the workers and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Release pairs with the workers' Acquire load after each wakeup.
        self.stop.store(true, Ordering::Release);
        for w in &self.workers {
            let _ = w.waker.wake();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn find(&self, name: &str) -> Option<&Arc<Shared>> {
        self.relays.iter().find(|r| r.plan.name == name)
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// True if `a` is `b` or an unspecified address with `b`'s port: relayd's loop guard compares
/// the backend with the relay's own listen address and port.
pub(crate) fn is_self(backend: SocketAddr, local: SocketAddr) -> bool {
    backend == local
        || (backend.port() == local.port()
            && match (backend.ip(), local.ip()) {
                (IpAddr::V4(b), IpAddr::V4(l)) => b == l || l.is_unspecified() && b.is_loopback(),
                (IpAddr::V6(b), IpAddr::V6(l)) => b == l || l.is_unspecified() && b.is_loopback(),
                _ => false,
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const CONF: &str = r#"
table <smtp> { 198.18.2.1 198.18.2.2 retry 2 }
protocol tcpp { tcp { nodelay, socket buffer 65536, backlog 512, ip minttl 200 } }
dns protocol dnsp { }
relay mx {
    listen on 198.18.0.1 port 25
    protocol tcpp
    forward to <smtp> port 2525 mode source-hash
    session timeout 30
    proxy-protocol v2
}
relay dns {
    listen on 198.18.0.1 port 53
    protocol dnsp
    forward to 198.18.3.1 port 5353 retry 3
}
"#;

    #[test]
    fn plans_follow_the_config() {
        let c = config::parse_str("t.conf", CONF, &[]).unwrap();
        let (p, v) = plan(&c, 0, &c.relays[0]).unwrap();
        assert_eq!(p.id, 1);
        assert_eq!(p.listen, vec!["198.18.0.1:25".parse().unwrap()]);
        assert!(!p.dns);
        assert!(p.tcp.nodelay);
        assert_eq!(p.tcp.backlog, 512);
        assert_eq!(p.tcp.ip_minttl, Some(200));
        assert_eq!(p.session_timeout, Duration::from_secs(30));
        assert_eq!(p.proxy_protocol, Some(ProxyProtocol::V2));
        assert_eq!(v.forwards.len(), 1);
        let addrs: Vec<_> = v.forwards[0].backends.iter().map(|b| b.addr).collect();
        assert_eq!(
            addrs,
            vec![
                "198.18.2.1:2525".parse().unwrap(),
                "198.18.2.2:2525".parse().unwrap()
            ]
        );
        assert_eq!(v.forwards[0].backends[1].retry, 2);
        assert_eq!(
            v.forwards[0].scheduler.config().mode,
            balance::Mode::SourceHash
        );
        let (p2, v2) = plan(&c, 1, &c.relays[1]).unwrap();
        assert!(p2.dns);
        assert_eq!(p2.id, 2);
        assert_eq!(v2.forwards[0].backends[0].retry, 3);
        assert_eq!(v2.forwards[0].backends[0].host_id, 0);
    }

    #[test]
    fn host_state_steers_picks() {
        let c = config::parse_str("t.conf", CONF, &[]).unwrap();
        let (_, mut v) = plan(&c, 0, &c.relays[0]).unwrap();
        let ids: Vec<u32> = v.forwards[0].backends.iter().map(|b| b.host_id).collect();
        let mut st = vec![balance::PickState::new(1)];
        let input = |client: &str| balance::PickInput {
            client: client.parse().unwrap(),
            client_port: 1000,
            listen: "198.18.0.1".parse().unwrap(),
            listen_port: 25,
            proto: 6,
            flow_hash: 0,
            states: &[],
        };
        // Source-hash: different clients reach both hosts while both are up.
        let mut seen = [false; 2];
        for i in 1..50 {
            let (_, b) = v.pick(&input(&format!("198.18.1.{i}")), &mut st).unwrap();
            seen[b] = true;
        }
        assert_eq!(seen, [true, true]);
        assert!(v.set_host_state(ids[0], false));
        for i in 1..50 {
            let (_, b) = v.pick(&input(&format!("198.18.1.{i}")), &mut st).unwrap();
            assert_eq!(b, 1);
        }
        assert!(v.set_host_state(ids[1], false));
        assert_eq!(v.pick(&input("198.18.1.1"), &mut st), None);
        assert!(!v.set_host_state(999, false));
    }

    #[test]
    fn unsupported_targets_are_named() {
        let c = config::parse_str(
            "t.conf",
            "relay x {\n listen on 198.18.0.1 port 80\n forward to destination\n}\n",
            &[],
        );
        if let Ok(c) = c {
            assert!(matches!(
                plan(&c, 0, &c.relays[0]),
                Err(Error::Unsupported(_, "forward to destination"))
            ));
        }
    }

    /// `bind` listens but does not accept: a connection waits in the backlog (no descriptor of
    /// ours) until `start`, then it is accepted as any other.
    #[test]
    fn bound_relays_accept_only_once_started() {
        let ip = "127.77.9.2";
        let free = || {
            std::net::TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, backend_port) = (free(), free());
        let c = config::parse_str(
            "t.conf",
            &format!(
                "relay r {{\n listen on {ip} port {port}\n forward to {ip} port {backend_port}\n}}\n"
            ),
            &[],
        )
        .unwrap();
        let mut h = bind(&c, Options::default()).unwrap();
        let client = std::net::TcpStream::connect((ip, port)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(h.counter("r", Counter::SessionAccepted), 0);
        assert!(h.sessions().is_empty());
        h.start().unwrap();
        h.start().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while h.counter("r", Counter::SessionAccepted) == 0 && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(h.counter("r", Counter::SessionAccepted), 1);
        drop(client);
        h.stop();
    }

    #[test]
    fn loop_guard_matches_own_address() {
        let l: SocketAddr = "198.18.0.1:25".parse().unwrap();
        assert!(is_self(l, l));
        assert!(!is_self("198.18.0.1:26".parse().unwrap(), l));
        assert!(!is_self("198.18.0.2:25".parse().unwrap(), l));
        assert!(is_self(
            "127.0.0.1:25".parse().unwrap(),
            "0.0.0.0:25".parse().unwrap()
        ));
    }
}
