//! The carpio daemon: relayd's parent and pfe roles on real interfaces.
//!
//! `carpio -n -f FILE` checks the configuration ([`check`]); `carpio -d -f FILE` runs
//! ([`run`]): load the configuration, learn the interface (MAC, addresses, default router) and
//! the backends' MACs from the kernel ([`link`]), build the [`Snapshot`], open the ingress of
//! each `interface` block (AF_XDP with the XDP program, AF_PACKET with a cBPF filter and the
//! nftables ingress drop, or pnet), drop privileges if `user` is set, then start one pinned
//! worker thread per queue ([`ingress`]), the control socket ([`crate::ctl::server`]) and a
//! signal thread. The parent thread then owns all control state: it answers control requests,
//! reloads on SIGHUP or `reload`, resolves missing MACs once a second and rebuilds the snapshot
//! when one appears, and drains the workers' flow events (a bounded mirror for `show states`;
//! the pfsync hook). SIGTERM/SIGINT or `stop` shut down: workers stop and are joined, the XDP
//! program is detached and the nftables table deleted (by their owners' `Drop`).
//!
//! # Topology (one-armed NAT)
//!
//! ```text
//!   client ── (router) ──┐                 ┌── backend 1   default route via the balancer
//!                        ├── one L2 link ──┼── backend 2
//!              balancer ─┘   (VIP answered └── ...
//!              (carpio)       by carpio's ARP)
//! ```
//!
//! NAT (`forward to`) rewrites the destination only (pf `rdr-to`): backends see the client's
//! address and must answer through the balancer, so the balancer is their gateway (or the
//! route to the clients' networks). carpio steers those answers by their source (the backend's
//! address and port: XDP `CARPIO_SVC_F_SRC`, cBPF `sources`, nft `saddr`/`sport` drops) and
//! un-NATs them. Clients reach the VIP directly on the link or through a router. DSR and
//! tunnels need no return path.
//!
//! With several workers, a NAT flow's two directions must reach the same worker: use one queue
//! per interface for NAT services until RSS/fanout steering by client endpoint lands.
//!
//! Checksums: AF_PACKET and pnet see frames as the sender handed them; a veth peer in the same
//! host sends TCP/UDP with CHECKSUM_PARTIAL (only the pseudo-header sum in the field), and the
//! rewrite's incremental update keeps that wrong. Senders on veth need `ethtool -K IF tx off`
//! with those ingresses (generic XDP completes the checksum, so AF_XDP is not affected; real
//! NICs deliver complete checksums). Honouring TP_STATUS_CSUMNOTREADY in `sys::afpacket` would
//! remove the need.
//!
//! # Hooks for the other roles
//!
//! Health checks, carp, relays and pfsync run as threads started from the configuration with a
//! small handle and crossbeam channels (see [`Roles`]): they send [`RoleEvent`]s (host up/down)
//! to the parent, which rebuilds the snapshot and tells `carpioctl monitor` subscribers; CARP
//! and pfsync frames arrive from the workers on the control queue. The health engine ([`checks`])
//! marks hosts down and up; until its first check a host is unknown and not used, as in relayd.
//!
//! Nothing here panics on input from the network, a file or a control client: errors are
//! returned, logged, or answered with `Response::Error`/`Failed`; counters name every reject.

mod checks;
pub mod ingress;
pub mod link;
mod route;
pub mod sync;

use crate::config::{self, Config, Ingress, XdpMode};
use crate::ctl::proto::{self, HostState, Item, Object, Request, Response, Show};
use crate::ctl::server::{self, Call};
use crate::dataplane::flow::{Event, EventKind, Flow};
use crate::dataplane::snapshot::{HostStates, Link, Snapshot, SnapshotCell};
use crate::dataplane::worker::{ControlFrame, WorkerConfig};
use crate::dataplane::{FlowTableConfig, state::Timeouts};
use crate::sys::{afpacket, afxdp, cpu, nft, privdrop, rlimit, xdp};
use crossbeam::channel::{Receiver, Sender};
use crossbeam::queue::ArrayQueue;
use ingress::{Cmd, Dev, Shared, Steering, WorkerHandle, XdpSteering};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

crate::named_counters! {
    /// What the parent did (control-plane counters, shown with the workers' by `show counters`).
    pub enum Parent {
        SnapshotBuilds = "daemon_snapshot_builds",
        /// carp ownership changes published to the workers (IP balancing).
        CarpOwnership = "daemon_carp_ownership_changes",
        SnapshotBuildFailed = "daemon_snapshot_build_failed",
        Reloads = "daemon_reloads",
        ReloadFailed = "daemon_reload_failed",
        NeighResolved = "daemon_neigh_resolved",
        NeighUnresolved = "daemon_neigh_unresolved",
        SteeringFailed = "daemon_steering_failed",
        StatesMirrorFull = "daemon_states_mirror_full",
        CtlRequests = "daemon_ctl_requests",
        CtlBadTarget = "daemon_ctl_bad_target",
        HostTransitions = "daemon_host_transitions",
        /// CARP/pfsync frames drained from the workers with no role to take them yet.
        ControlUnclaimed = "daemon_control_frames_unclaimed",
        /// carp group demotions asked by the health engine (`demote GROUP` tables).
        Demotions = "daemon_carp_demotions",
        /// A demotion for a group no carp interface of this node has.
        DemoteNoGroup = "daemon_demote_no_group",
    }
}

/// Command-line options of the daemon.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    pub defines: Vec<(String, String)>,
    pub verbose: u8,
}

/// Largest number of flows mirrored for `show states`.
pub const STATES_MIRROR: usize = 65536;
/// Capacity of the workers' CARP/pfsync hand-over queue.
pub const CONTROL_QUEUE: usize = 1024;
/// Capacity of the workers' flow event queue.
pub const EVENT_QUEUE: usize = 65536;
/// How often the parent drains events and retries neighbour resolution.
pub const TICK: Duration = Duration::from_millis(200);
/// How often an unresolved backend is provoked again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// `carpio -n`: the exit status and what to print on stderr (every error as
/// `file:line:col: message`; on success the warnings then "configuration OK").
pub fn check(opts: &Options) -> (i32, String) {
    match config::load(&opts.file, &opts.defines) {
        Err(errs) => (1, format!("{errs}\n")),
        Ok(cfg) => {
            let mut out = String::new();
            for w in &cfg.warnings {
                out.push_str(&format!("{w}\n"));
            }
            out.push_str("configuration OK\n");
            (0, out)
        }
    }
}

/// The daemon's log line (INFO; see [`crate::logging`]).
fn log(msg: impl AsRef<str>) {
    tracing::info!("{}", msg.as_ref());
}

/// Something wrong that the daemon survives (WARN).
#[allow(dead_code)]
fn log_warn(msg: impl AsRef<str>) {
    tracing::warn!("{}", msg.as_ref());
}

/// Detail shown with `carpio -v` or after `carpioctl log verbose` (DEBUG).
fn log_debug(msg: impl AsRef<str>) {
    tracing::debug!("{}", msg.as_ref());
}

/// What the other roles (health engine, carp shell, pfsync, relays) tell the parent. They are
/// started from the configuration as threads with a small handle and get a clone of
/// [`Roles::events`]; the parent applies each event and rebuilds the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleEvent {
    /// Health engine: host `id` (relayd's id) changed state.
    Host { id: u32, up: bool },
}

/// Hook points for the roles other branches build: each is a thread with a handle; events come
/// back over [`Roles::events`]. The health engine's updates are drained by the parent itself
/// ([`checks`]).
pub struct Roles {
    /// Cloned into each role's thread.
    pub events: Sender<RoleEvent>,
    // carp: Option<carp::shell handle> — ownership into `Snapshot::with_carp`; takes the CARP
    //       frames the workers hand over (`Daemon::control`).
    // relays: Vec<relay::spawn handle>.
    // pfsync: Option<handle> — fed by the flow events drained in `Daemon::tick`.
}

/// One interface's kernel-side state, dropped at shutdown (XDP detached, nft table deleted).
enum IfaceGuard {
    Xdp(Box<XdpSteering>),
    Nft(Option<nft::IngressDrop>),
}

struct Iface {
    name: String,
    ingress: Ingress,
    guard: IfaceGuard,
    workers: Vec<usize>,
}

struct Daemon {
    opts: Options,
    cfg: Config,
    states: HostStates,
    link: Link,
    cell: Arc<SnapshotCell>,
    steering: Steering,
    ifaces: Vec<Iface>,
    workers: Vec<WorkerHandle>,
    events: Arc<ArrayQueue<Event>>,
    /// Hook: CARP frames go to the carp shell, pfsync frames to the replicator, when they land.
    control: Arc<ArrayQueue<Box<ControlFrame>>>,
    /// Keyed by (creator index, id): ids are per creator, and peers' flows are mirrored too.
    mirror: HashMap<(u8, u64), Flow>,
    /// `carpioctl monitor` subscribers.
    monitors: Vec<Sender<Response>>,
    counters: crate::counters::Counters<{ Parent::COUNT }>,
    epoch: Instant,
    last_resolve: Option<Instant>,
    verbose: bool,
    stop: bool,
    /// carp shells, one per `carp` block (they bow out when dropped).
    carp: Vec<crate::carp::shell::ShellHandle>,
    /// The carp ownership the current snapshot carries (IP balancing accept hook of the
    /// workers); follows the first carp interface's shell.
    carp_own: Option<crate::carp::Ownership>,
    /// The layer-7 relays of the configuration (relayd's `relay` blocks).
    relays: Option<crate::relay::RelayHandle>,
    /// The health-check engine (its own thread; see [`checks`]).
    health: Option<crate::health::Handle>,
    /// Whether this parent runs health checks at all (false only in unit tests, which must not
    /// send probes).
    checking: bool,
    /// Route health injection through BIRD (`bird` block; [`route`]).
    route: Option<route::RouteRole>,
    /// The pfsync role (`pfsync` block): replicates the workers' flows ([`sync`]).
    sync: Option<sync::Sync>,
    /// relayd's per-redirect session statistics, sampled from the workers' traffic figures.
    stats: crate::metrics::Book,
    /// The control socket's counters (slow or idle clients closed, connections refused).
    ctl_stats: Option<Arc<server::Stats>>,
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT or `stop`.
pub fn run(opts: &Options) -> io::Result<()> {
    crate::logging::init(opts.verbose);
    let cfg = config::load(&opts.file, &opts.defines)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    for w in &cfg.warnings {
        log(w.to_string());
    }
    let first = cfg.interfaces.first().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "no `interface` block: nothing to serve",
        )
    })?;
    let link = learn_link(&first.name)?;
    let mut states = HostStates::default();
    resolve_macs(&cfg, &first.name, &mut states, true);
    // Checked hosts are not used until their first check says up (relayd's HOST_UNKNOWN).
    states.unknown = checks::unchecked(&cfg);
    let snap = Snapshot::build(&cfg, &states, link.clone(), None)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let steering = Steering::of(&snap);
    let cell = Arc::new(SnapshotCell::from_pointee(snap));
    let events = Arc::new(ArrayQueue::new(EVENT_QUEUE));
    let control = Arc::new(ArrayQueue::new(CONTROL_QUEUE));
    let stop_flag = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let shared = Shared {
        snap: cell.clone(),
        events: events.clone(),
        stop: stop_flag.clone(),
        epoch,
        control: control.clone(),
    };

    // Pinned memory for UMEMs and BPF maps, while still privileged.
    let _ = rlimit::raise_memlock(u64::MAX);
    let mut ifaces = Vec::new();
    let mut devs: Vec<(usize, Dev)> = Vec::new();
    for (i, ic) in cfg.interfaces.iter().enumerate() {
        let (guard, d) = open_interface(ic, &steering, i)?;
        let base = devs.len();
        ifaces.push(Iface {
            name: ic.name.clone(),
            ingress: ic.ingress,
            guard,
            workers: (base..base + d.len()).collect(),
        });
        devs.extend(d.into_iter().map(|d| (i, d)));
    }

    // Privilege drop: after sockets and XDP, before any thread starts (capabilities are
    // per thread).
    let mut owner = None;
    if let Some(user) = &cfg.global.user {
        let ids = privdrop::lookup(user)?;
        owner = Some((ids.uid, ids.gid));
    }
    // carp needs raw sockets and the `ip` command for its macvlan: start it before dropping
    // privileges. It uses kernel raw sockets, so its advertisements reach it with AF_PACKET and
    // pnet ingress (AF_PACKET does not steal) and with AF_XDP (the XDP program passes IP
    // protocol 112 to the kernel, `xdp_pass_carp`).
    let carp = if cfg.carp.is_empty() {
        Vec::new()
    } else {
        crate::carp::shell::run_from_config(&cfg)?
    };
    // Relays bind their listeners here, before privileges are dropped (IP_FREEBIND lets them
    // bind a carp address this node does not hold yet); they accept only once the daemon has
    // opened everything else (`relay::bind`).
    let mut relays = if cfg.relays.is_empty() {
        None
    } else {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let opts = crate::relay::Options {
            workers: None,
            seed,
        };
        Some(
            crate::relay::bind(&cfg, opts)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
        )
    };
    if let Some(r) = &relays {
        // relayd's relays too pick only HOST_UP hosts (relay.c `relay_from_table`).
        for &id in &states.unknown {
            r.set_host_state(id, false);
        }
    }
    // The health engine opens raw ICMP sockets per check: CAP_NET_RAW survives the drop, and
    // its thread must exist before privileges change (capabilities are per thread).
    let health = checks::start(&cfg)?;
    let route = route::start(&cfg)?;
    // pfsync's raw socket before privileges are dropped; it drains the workers' events (the
    // `show states` mirror then reads its tap) and feeds their command queues ([`sync`]).
    let commands = sync::command_queues(devs.len());
    let sync = sync::start(&cfg, &events, &commands, &cell, epoch, &carp)?;
    let (calls_tx, calls_rx) = crossbeam::channel::unbounded::<Call>();
    let mut metrics = match &cfg.global.metrics {
        Some(l) => match &l.addr {
            config::Address::Ip(ip) => {
                let m = crate::metrics::serve((*ip, l.port.lo).into(), calls_tx.clone())?;
                log(format!("metrics on http://{}/metrics", m.addr));
                Some(m)
            }
            config::Address::Name(_) => None,
        },
        None => None,
    };
    let mut ctl = server::start(
        std::path::Path::new(&cfg.global.control_socket),
        owner,
        calls_tx.clone(),
    )?;
    if let Some((uid, gid)) = owner {
        privdrop::drop_to(privdrop::Ids { uid, gid })?;
        log(format!("dropped privileges to uid {uid} gid {gid}"));
    }

    let ncpu = cpu::available().max(1);
    let mut workers = Vec::new();
    for (core, (_, dev)) in devs.into_iter().enumerate() {
        let wcfg = worker_config(&cfg, core as u8);
        workers.push(ingress::spawn_worker(
            wcfg,
            dev,
            Some(core % ncpu),
            &shared,
            sync.as_ref().and_then(|_| commands.get(core).cloned()),
        )?);
    }

    let signals = spawn_signals(calls_tx)?;
    if let Some(r) = relays.as_mut() {
        r.start().map_err(|e| io::Error::other(e.to_string()))?;
    }
    let (roles_tx, roles_rx) = crossbeam::channel::unbounded::<RoleEvent>();
    // Hook: start the health engine, carp, relays and pfsync here with `roles.events`.
    let roles = Roles { events: roles_tx };
    let mut d = Daemon {
        opts: opts.clone(),
        cfg,
        states,
        link,
        cell,
        steering,
        ifaces,
        workers,
        events: sync.as_ref().map_or(events, sync::Sync::tap),
        control,
        mirror: HashMap::new(),
        monitors: Vec::new(),
        counters: Default::default(),
        epoch,
        last_resolve: Some(Instant::now()),
        verbose: opts.verbose > 0,
        stop: false,
        carp,
        carp_own: None,
        relays,
        health,
        checking: true,
        route,
        sync,
        stats: Default::default(),
        ctl_stats: Some(ctl.stats()),
    };
    d.counters.add(Parent::SnapshotBuilds.index(), 1);
    log(format!(
        "started: {} worker(s) on {}",
        d.workers.len(),
        d.ifaces
            .iter()
            .map(|i| format!("{} ({:?})", i.name, i.ingress))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    d.main_loop(&calls_rx, &roles_rx);
    drop(roles);
    // Routes are withdrawn first, so the routers stop sending here before anything stops.
    d.route_shutdown();

    // Shutdown: carp bows out first (a backup takes over at once), then the workers (they hold
    // the sockets), then the XDP programs and nft tables.
    // pfsync first: it gives back its carp demotion before carp bows out.
    if let Some(s) = d.sync.take() {
        s.stop(&d.carp);
    }
    for h in d.carp.drain(..) {
        let _ = h.shutdown();
    }
    if let Some(r) = d.relays.take() {
        r.stop();
    }
    d.health = None;
    stop_flag.store(true, Ordering::Relaxed);
    for w in d.workers.drain(..) {
        let _ = w.thread.join();
    }
    for i in d.ifaces.drain(..) {
        match i.guard {
            IfaceGuard::Xdp(mut x) => {
                let _ = x.prog.detach();
            }
            IfaceGuard::Nft(Some(n)) => {
                let _ = n.remove();
            }
            IfaceGuard::Nft(None) => {}
        }
    }
    ctl.stop();
    if let Some(m) = metrics.as_mut() {
        m.stop();
    }
    signals.close();
    log("stopped");
    Ok(())
}

fn worker_config(cfg: &Config, core: u8) -> WorkerConfig {
    let cap = cfg.global.flow_table_size.clamp(1, 1 << 24);
    WorkerConfig {
        core,
        flow: FlowTableConfig {
            capacity: cap,
            core,
            first_id: (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                << 24)
                & ((1 << 56) - 1),
            timeouts: Timeouts::default(),
            ..FlowTableConfig::default()
        },
        ..WorkerConfig::default()
    }
}

/// The interface's MAC, MTU, default router MAC and tunnel sources.
fn learn_link(ifname: &str) -> io::Result<Link> {
    let mac = link::interface_mac(ifname)?;
    let mtu = link::interface_mtu(ifname).unwrap_or(1500);
    let addrs = link::interface_addrs(ifname).unwrap_or_default();
    let gateway_mac = link::default_gateway().and_then(|gw| {
        link::provoke(gw);
        std::thread::sleep(Duration::from_millis(50));
        link::neighbours(ifname)
            .into_iter()
            .find(|(a, _)| *a == gw)
            .map(|n| n.1)
    });
    Ok(Link {
        mac,
        gateway_mac,
        tunnel_src_v4: addrs.iter().copied().find(IpAddr::is_ipv4),
        tunnel_src_v6: addrs.iter().copied().find(|a| match a {
            IpAddr::V6(v) => (v.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => false,
        }),
        mtu,
    })
}

/// Fills `states.macs` for every host without `lladdr` from the kernel's neighbour table;
/// provokes resolution of the missing ones. With `wait`, retries for up to two seconds.
/// Returns true if something new was learned.
fn resolve_macs(cfg: &Config, ifname: &str, states: &mut HostStates, wait: bool) -> bool {
    let wanted: Vec<IpAddr> = cfg
        .hosts()
        .filter(|h| h.lladdr.is_none())
        .filter_map(|h| match h.addr {
            config::Address::Ip(ip) => Some(ip),
            config::Address::Name(_) => None,
        })
        .collect();
    if ifname.is_empty() {
        return false;
    }
    let mut learned = false;
    let deadline = Instant::now()
        + if wait {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        };
    loop {
        let neigh = link::neighbours(ifname);
        let mut missing = Vec::new();
        for a in &wanted {
            // On-link hosts are their own next hop; others are reached through their router.
            let hop = if neigh.iter().any(|n| n.0 == *a) {
                *a
            } else {
                link::next_hop(*a).unwrap_or(*a)
            };
            match neigh.iter().find(|n| n.0 == hop) {
                Some(&(_, mac)) => match states.macs.iter_mut().find(|m| m.0 == *a) {
                    Some(m) if m.1 == mac => {}
                    Some(m) => {
                        m.1 = mac;
                        learned = true;
                    }
                    None => {
                        states.macs.push((*a, mac));
                        learned = true;
                    }
                },
                // Provoke only hosts with no MAC at all; a known one stays until the kernel
                // shows a different one.
                None if states.macs.iter().any(|m| m.0 == *a) => {}
                None => missing.push(*a),
            }
        }
        if missing.is_empty() || Instant::now() >= deadline {
            for a in &missing {
                link::provoke(*a);
            }
            return learned;
        }
        for a in &missing {
            link::provoke(*a);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens an interface's ingress: the devices (one per queue) and the kernel-side guard.
fn open_interface(
    ic: &config::InterfaceConfig,
    st: &Steering,
    index: usize,
) -> io::Result<(IfaceGuard, Vec<Dev>)> {
    let queues = ic.queues.unwrap_or(1).clamp(1, crate::sys::bpf::MAX_QUEUES);
    let ifname = ic.name.as_str();
    if queues > 1 && !st.sources.is_empty() {
        // RSS and PACKET_FANOUT spread a NAT flow's two directions (client → VIP and
        // backend → client are different tuples) over different workers, whose flow tables
        // are separate: the return path would miss. See the module doc.
        log(format!(
            "{ifname}: warning: {queues} queues with NAT services; answers may reach a worker \
             that does not know the flow (use queues 1 for NAT)"
        ));
    }
    match ic.ingress {
        Ingress::Afpacket => {
            let filter = st
                .filter()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            // V3: a block is handed over when full or after `retire_ms`: at a balancer's rates
            // the timer decides, so it bounds the latency carpio adds (1 ms is the kernel's
            // floor, counted in jiffies: 4 ms at HZ=250). V2 hands over each frame as it lands
            // (README "Performance": 10x lower latency at moderate rates, the same throughput
            // under overload in `carpio bench`); its 8192 slots of 2 KiB take the same 16 MiB
            // as V3's blocks. V3 stays the default for now: AF_PACKET sees frames after GRO,
            // which carpio does not turn off, and a merged TCP burst overflows a 2 KiB slot
            // (README "AF_PACKET ring layout"; the failover race once seen with V2 was the
            // test's, fixed).
            let rcfg = match ic.ring.unwrap_or(config::PacketRing::V3) {
                config::PacketRing::V3 => afpacket::RingConfig {
                    fanout_group: (queues > 1).then_some(0x4300 + index as u16),
                    retire_ms: 1,
                    ..Default::default()
                },
                // A slot must hold the link's largest frame (a longer one is cut by the kernel
                // and counted as drop_packet_truncated): 2 KiB up to MTU 1898, bigger for
                // jumbo frames (then fewer slots in the same 16 MiB).
                config::PacketRing::V2 => afpacket::RingConfig {
                    fanout_group: (queues > 1).then_some(0x4300 + index as u16),
                    version: afpacket::RingVersion::V2,
                    frame_size: afpacket::v2_frame_size(
                        crate::sys::ifinfo::mtu(ifname).unwrap_or(1500),
                    ),
                    ..Default::default()
                },
            };
            let mut devs = Vec::new();
            for _ in 0..queues {
                devs.push(Dev::Afpacket(crate::phy::afpacket::Port::new(
                    ifname, &filter, &rcfg,
                )?));
            }
            let drop = ingress::install_drop(&ingress::nft_table(ifname), ifname, st)?;
            Ok((IfaceGuard::Nft(Some(drop)), devs))
        }
        Ingress::Afxdp => {
            let obj = xdp::find_object(None).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} not found (set ${} or install it next to the binary)",
                        xdp::OBJECT_NAME,
                        xdp::OBJECT_ENV
                    ),
                )
            })?;
            let mode = match ic.mode {
                Some(XdpMode::Native) => xdp::AttachMode::Native,
                Some(XdpMode::Generic) => xdp::AttachMode::Generic,
                None => xdp::AttachMode::Auto,
            };
            let prog = xdp::Program::load(&obj, ifname, mode)
                .map_err(|e| io::Error::other(format!("{ifname}: {e}")))?;
            let mut steer = XdpSteering::new(prog);
            steer
                .apply(st)
                .map_err(|e| io::Error::other(format!("{ifname}: {e}")))?;
            let mut devs = Vec::new();
            for q in 0..queues {
                let port =
                    crate::phy::afxdp::Port::new(ifname, q, &afxdp::SocketConfig::default())?;
                steer
                    .prog
                    .register_xsk(q, &port)
                    .map_err(|e| io::Error::other(format!("{ifname}: {e}")))?;
                devs.push(Dev::Afxdp(port));
            }
            Ok((IfaceGuard::Xdp(Box::new(steer)), devs))
        }
        Ingress::Pnet => {
            // pnet taps like AF_PACKET (before netdev ingress), so the same nft drop keeps the
            // host stack out of carpio's traffic.
            let port = crate::phy::pnet::Port::new(ifname, ingress::IDLE_WAIT)?;
            let drop = ingress::install_drop(&ingress::nft_table(ifname), ifname, st)?;
            Ok((IfaceGuard::Nft(Some(drop)), vec![Dev::Pnet(port)]))
        }
    }
}

/// The signal thread: SIGTERM/SIGINT become `stop`, SIGHUP becomes `reload`.
fn spawn_signals(calls: Sender<Call>) -> io::Result<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("carpio-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let request = if sig == SIGHUP {
                    Request::Reload
                } else {
                    Request::Stop
                };
                // The reply goes nowhere: nobody waits for it.
                let (tx, _rx) = crossbeam::channel::bounded(1);
                if calls.send(Call { request, reply: tx }).is_err() {
                    return;
                }
            }
        })?;
    Ok(handle)
}

impl Daemon {
    fn main_loop(&mut self, calls: &Receiver<Call>, roles: &Receiver<RoleEvent>) {
        while !self.stop {
            crossbeam::channel::select! {
                recv(calls) -> call => match call {
                    Ok(call) if call.request == Request::Monitor => {
                        self.counters.add(Parent::CtlRequests.index(), 1);
                        self.monitors.push(call.reply);
                    }
                    Ok(call) => {
                        self.counters.add(Parent::CtlRequests.index(), 1);
                        let resp = self.handle(call.request);
                        let _ = call.reply.send(resp);
                    }
                    Err(_) => break,
                },
                recv(roles) -> ev => {
                    if let Ok(ev) = ev {
                        self.role_event(ev);
                    }
                }
                default(TICK) => {}
            }
            self.tick();
        }
    }

    /// Sends a `monitor` event to every subscriber; full queues lose the event, closed ones
    /// are forgotten.
    fn notify(&mut self, kind: &str, id: u32, name: &str, detail: &str) {
        tracing::debug!(kind, id, name, detail, "event");
        if self.monitors.is_empty() {
            return;
        }
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ev = Response::Event {
            kind: kind.to_string(),
            id,
            name: name.to_string(),
            detail: detail.to_string(),
            timestamp,
        };
        self.monitors.retain(|m| {
            !matches!(
                m.try_send(ev.clone()),
                Err(crossbeam::channel::TrySendError::Disconnected(_))
            )
        });
    }

    /// Applies an event from another role and rebuilds the snapshot if something changed.
    fn role_event(&mut self, ev: RoleEvent) {
        match ev {
            RoleEvent::Host { id, up } => {
                let was_down = self.states.down.contains(&id);
                // A host's first verdict always counts: unknown -> up or down.
                let was_unknown = self.states.unknown.contains(&id);
                self.states.unknown.retain(|&u| u != id);
                if up == was_down || was_unknown {
                    self.states.down.retain(|&d| d != id);
                    if !up {
                        self.states.down.push(id);
                    }
                    self.counters.add(Parent::HostTransitions.index(), 1);
                    let name = self
                        .cfg
                        .hosts()
                        .find(|h| h.id == id)
                        .map(|h| match &h.addr {
                            config::Address::Ip(ip) => ip.to_string(),
                            config::Address::Name(n) => n.clone(),
                        })
                        .unwrap_or_default();
                    self.notify("host_status", id, &name, if up { "up" } else { "down" });
                    if let Err(e) = self.rebuild() {
                        log(format!("snapshot: {e}"));
                    }
                }
            }
        }
    }

    /// Periodic work: drain flow events (pfsync hook) and control frames (carp/pfsync hook),
    /// retry unresolved neighbours.
    fn tick(&mut self) {
        self.health_tick();
        // carp state changes move IP-balancing ownership: publish it to the workers.
        let own = self.carp.first().map(|h| **h.ownership().load());
        if own != self.carp_own {
            self.carp_own = own;
            self.counters.add(Parent::CarpOwnership.index(), 1);
            if let Err(e) = self.rebuild() {
                log(format!("snapshot: {e}"));
            }
        }
        if let Some(s) = &mut self.sync {
            s.forward_demotions(&self.carp);
        }
        while let Some(_frame) = self.control.pop() {
            // Hook: `carp::shell` / pfsync take these once they land.
            self.counters.add(Parent::ControlUnclaimed.index(), 1);
        }
        while let Some(ev) = self.events.pop() {
            let id = (ev.flow.id().creator, ev.flow.id().id);
            match ev.kind {
                EventKind::Delete => {
                    self.mirror.remove(&id);
                }
                EventKind::Insert | EventKind::Update => {
                    if self.mirror.len() >= STATES_MIRROR && !self.mirror.contains_key(&id) {
                        self.counters.add(Parent::StatesMirrorFull.index(), 1);
                    } else {
                        self.mirror.insert(id, ev.flow);
                    }
                }
            }
        }
        let now = self.epoch.elapsed().as_secs();
        if self.stats.due(now) && !self.workers.is_empty() {
            let flows = crate::metrics::flows_per_redirect(&self.traffic(false).0);
            self.stats.sample(now, &flows);
            log_debug(format!("statistics: sampled {} redirect(s)", flows.len()));
        }
        let due = self
            .last_resolve
            .is_none_or(|t| t.elapsed() >= RESOLVE_EVERY);
        if due && self.unresolved() > 0 {
            self.last_resolve = Some(Instant::now());
            let ifname = self
                .ifaces
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_default();
            if resolve_macs(&self.cfg, &ifname, &mut self.states, false) {
                self.counters.add(Parent::NeighResolved.index(), 1);
                if let Err(e) = self.rebuild() {
                    log(format!("snapshot: {e}"));
                }
            }
        }
        self.route_tick();
    }

    fn unresolved(&self) -> usize {
        let snap = self.cell.load();
        snap.hosts
            .iter()
            .flatten()
            .filter(|h| h.mac.is_none())
            .count()
    }

    /// Builds a new snapshot from the current configuration and states, keeping indices.
    fn rebuild(&mut self) -> Result<(), String> {
        let prev = self.cell.load_full();
        match Snapshot::build(&self.cfg, &self.states, self.link.clone(), Some(&prev)) {
            Ok(mut s) => {
                s.carp = self.carp_own;
                let st = Steering::of(&s);
                self.cell.store(Arc::new(s));
                self.counters.add(Parent::SnapshotBuilds.index(), 1);
                if st != self.steering {
                    self.apply_steering(&st);
                    self.steering = st;
                }
                Ok(())
            }
            Err(e) => {
                self.counters.add(Parent::SnapshotBuildFailed.index(), 1);
                Err(e.to_string())
            }
        }
    }

    fn apply_steering(&mut self, st: &Steering) {
        let filter = st.filter();
        for i in &mut self.ifaces {
            let ok = match &mut i.guard {
                IfaceGuard::Xdp(x) => x.apply(st).is_ok(),
                IfaceGuard::Nft(n) => {
                    let mut ok = true;
                    if let Ok(f) = &filter {
                        for &w in &i.workers {
                            if let Some(h) = self.workers.get(w) {
                                ok &= h.cmds.send(Cmd::Filter(f.clone())).is_ok();
                            }
                        }
                    } else {
                        ok = false;
                    }
                    if let Some(old) = n.take() {
                        let _ = old.remove();
                    }
                    match ingress::install_drop(&ingress::nft_table(&i.name), &i.name, st) {
                        Ok(d) => *n = Some(d),
                        Err(_) => ok = false,
                    }
                    ok
                }
            };
            if !ok {
                self.counters.add(Parent::SteeringFailed.index(), 1);
                log(format!("{}: steering update failed", i.name));
            }
        }
    }

    fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Show { what } => self.show(what),
            Request::Set {
                object,
                target,
                enable,
            } => self.set(object, &target, enable),
            Request::Reload => self.reload(None),
            Request::Load { path } => self.reload(Some(PathBuf::from(path))),
            // Handled in `main_loop` (the reply channel becomes a subscription).
            Request::Monitor => Response::Failed {
                reason: "monitor needs a subscription".into(),
            },
            Request::Poll => {
                self.health_poll();
                Response::Ok
            }
            Request::Log { verbose } => {
                self.verbose = verbose;
                crate::logging::set_verbose(verbose);
                log(if verbose {
                    "log level verbose"
                } else {
                    "log level brief"
                });
                Response::Ok
            }
            Request::Stop => {
                // With route injection, the first `stop` drains (route.rs).
                if !self.route_drain() {
                    self.stop = true;
                }
                Response::Ok
            }
        }
    }

    fn reload(&mut self, path: Option<PathBuf>) -> Response {
        let file = path.unwrap_or_else(|| self.opts.file.clone());
        match config::load(&file, &self.opts.defines) {
            Err(errs) => {
                self.counters.add(Parent::ReloadFailed.index(), 1);
                log(format!(
                    "reload failed, keeping the running configuration:\n{errs}"
                ));
                Response::Failed {
                    reason: errs.to_string(),
                }
            }
            Ok(cfg) => {
                let old = std::mem::replace(&mut self.cfg, cfg);
                if let Err(e) = self.health_reload(&old) {
                    let new = std::mem::replace(&mut self.cfg, old);
                    let _ = self.health_reload(&new);
                    self.counters.add(Parent::ReloadFailed.index(), 1);
                    log(format!(
                        "reload failed, keeping the running configuration: {e}"
                    ));
                    return Response::Failed { reason: e };
                }
                let ifname = self
                    .ifaces
                    .first()
                    .map(|i| i.name.clone())
                    .unwrap_or_default();
                resolve_macs(&self.cfg, &ifname, &mut self.states, false);
                match self.rebuild() {
                    Ok(()) => {
                        self.counters.add(Parent::Reloads.index(), 1);
                        if self.cfg.interfaces != old.interfaces {
                            log("reload: interface changes need a restart; kept the old ingress");
                        }
                        log(format!("reloaded {}", file.display()));
                        let f = file.display().to_string();
                        self.notify("reload", 0, &f, "ok");
                        Response::Ok
                    }
                    Err(e) => {
                        let new = std::mem::replace(&mut self.cfg, old);
                        let _ = self.health_reload(&new);
                        self.counters.add(Parent::ReloadFailed.index(), 1);
                        Response::Failed { reason: e }
                    }
                }
            }
        }
    }

    fn set(&mut self, object: Object, target: &str, enable: bool) -> Response {
        fn toggle<T: PartialEq + Clone>(v: &mut Vec<T>, x: &T, on: bool) {
            v.retain(|y| y != x);
            if on {
                v.push(x.clone());
            }
        }
        let id: Option<u32> = target.parse().ok();
        let mut display = target.to_string();
        match object {
            Object::Host => {
                let ids: Vec<u32> = self
                    .cfg
                    .hosts()
                    .filter(|h| {
                        Some(h.id) == id
                            || match &h.addr {
                                config::Address::Ip(ip) => ip.to_string() == target,
                                config::Address::Name(n) => n == target,
                            }
                    })
                    .map(|h| h.id)
                    .collect();
                if ids.is_empty() {
                    return self.bad_target("host", target);
                }
                if let Some(h) = self.cfg.hosts().find(|h| ids.contains(&h.id)) {
                    display = match &h.addr {
                        config::Address::Ip(ip) => ip.to_string(),
                        config::Address::Name(n) => n.clone(),
                    };
                }
                self.health_disable(&ids, &[], !enable);
                for i in ids {
                    toggle(&mut self.states.disabled_hosts, &i, !enable);
                }
            }
            Object::Table => {
                let names: Vec<String> = self
                    .cfg
                    .tables
                    .iter()
                    .enumerate()
                    .filter(|(i, t)| {
                        Some(*i as u32 + 1) == id || t.name == target || t.base == target
                    })
                    .map(|(_, t)| t.name.clone())
                    .collect();
                if names.is_empty() {
                    return self.bad_target("table", target);
                }
                let tids: Vec<u32> = self
                    .cfg
                    .tables
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| names.contains(&t.name))
                    .map(|(i, _)| i as u32 + 1)
                    .collect();
                self.health_disable(&[], &tids, !enable);
                for n in names {
                    toggle(&mut self.states.disabled_tables, &n, !enable);
                }
            }
            Object::Redirect => {
                let names: Vec<String> = self
                    .cfg
                    .redirects
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| Some(*i as u32 + 1) == id || r.name == target)
                    .map(|(_, r)| r.name.clone())
                    .collect();
                if names.is_empty() {
                    return self.bad_target("redirect", target);
                }
                for n in names {
                    toggle(&mut self.states.disabled_redirects, &n, !enable);
                }
            }
        }
        let (kind, detail) = match object {
            Object::Host => ("host", if enable { "enable" } else { "disable" }),
            Object::Table => ("table", if enable { "enable" } else { "disable" }),
            Object::Redirect => ("redirect", if enable { "enable" } else { "disable" }),
        };
        self.notify(kind, id.unwrap_or(0), &display, detail);
        match self.rebuild() {
            Ok(()) => Response::Ok,
            Err(reason) => Response::Failed { reason },
        }
    }

    fn bad_target(&mut self, what: &str, target: &str) -> Response {
        self.counters.add(Parent::CtlBadTarget.index(), 1);
        Response::Failed {
            reason: format!("no {what} {target}"),
        }
    }

    fn show(&mut self, what: Show) -> Response {
        match what {
            Show::Summary | Show::Hosts | Show::Redirects | Show::Relays | Show::Routers => {
                Response::Summary {
                    items: self.summary(),
                }
            }
            Show::Sessions => Response::Sessions {
                sessions: self
                    .relays
                    .as_ref()
                    .map(|r| r.sessions())
                    .unwrap_or_default(),
            },
            Show::Carp => {
                let mut vhosts = Vec::new();
                let mut counters = Vec::new();
                for h in &self.carp {
                    let st = h.status();
                    vhosts.extend(st.vhosts);
                    counters.extend(st.counters);
                }
                Response::Carp { vhosts, counters }
            }
            Show::States => Response::States {
                states: self.states_list(),
            },
            Show::Counters => Response::Counters {
                counters: self.all_counters(),
            },
            Show::Traffic => {
                let (services, hosts) = self.traffic(true);
                Response::Traffic { services, hosts }
            }
        }
    }

    /// relayd's summary order: each redirect, its stats, its tables with their hosts.
    fn summary(&self) -> Vec<Item> {
        let snap = self.cell.load();
        let checked = self.health_items();
        let mut items = Vec::new();
        let flows = crate::metrics::flows_per_redirect(&self.traffic(false).0);
        for (ri, r) in self.cfg.redirects.iter().enumerate() {
            let svc = snap.services.iter().find(|s| s.name == r.name);
            let disabled = r.disabled || self.states.disabled_redirects.contains(&r.name);
            let active = svc.and_then(|s| s.active_table(&snap.tables));
            items.push(Item::Redirect {
                id: ri as u32 + 1,
                name: r.name.clone(),
                disabled,
                down: active.is_none(),
                backup: matches!((svc, active), (Some(s), Some((t, _))) if t != s.table),
            });
            let live = flows.get(&r.name).copied().unwrap_or(0);
            items.push(Item::RedirectStats(self.stats.stats(&r.name, live)));
            for tname in &r.tables {
                let Some((ti, tc)) = self
                    .cfg
                    .tables
                    .iter()
                    .enumerate()
                    .find(|(_, t)| &t.name == tname)
                else {
                    continue;
                };
                let up = snap
                    .tables
                    .iter()
                    .find(|t| &t.name == tname)
                    .map_or(0, |t| t.up_count() as u32);
                items.push(Item::Table {
                    id: ti as u32 + 1,
                    name: tc.name.clone(),
                    up,
                    disabled: tc.disabled || self.states.disabled_tables.contains(&tc.name),
                });
                for h in &tc.hosts {
                    let name = match &h.addr {
                        config::Address::Ip(ip) => ip.to_string(),
                        config::Address::Name(n) => n.clone(),
                    };
                    let mut row = Item::Host {
                        id: h.id,
                        name,
                        parent: h.parent.unwrap_or(0),
                        state: if self.states.unknown.contains(&h.id) {
                            HostState::Unknown
                        } else if self.states.down.contains(&h.id) {
                            HostState::Down
                        } else {
                            HostState::Up
                        },
                        disabled: self.states.disabled_hosts.contains(&h.id),
                        check_cnt: 0,
                        up_cnt: 0,
                        retry_cnt: 0,
                        error: None,
                    };
                    Self::merge_health(&mut row, &checked);
                    items.push(row);
                }
            }
        }
        // Then each relay with its statistics (relayd sends relays after redirects).
        if let Some(r) = &self.relays {
            items.extend(r.summary());
        }
        items
    }

    fn states_list(&self) -> Vec<proto::State> {
        let snap = self.cell.load();
        let now = (self.epoch.elapsed().as_secs() + 1) as u32;
        let mut v: Vec<proto::State> = self
            .mirror
            .values()
            .map(|f| {
                let k = f.key();
                let svc = snap.flow_service(f).map(|(_, s)| s);
                let vip = svc.map_or_else(|| "?".into(), |s| endpoint(s.vip, k.vip_port));
                let backend = snap
                    .host(f.backend())
                    .map_or_else(|| "?".into(), |h| endpoint(h.addr, f.backend_port()));
                let t = f.track();
                proto::State {
                    proto: match k.proto {
                        6 => "tcp".into(),
                        17 => "udp".into(),
                        1 => "icmp".into(),
                        58 => "icmp6".into(),
                        p => p.to_string(),
                    },
                    client: endpoint(f.client_addr(), k.client_port),
                    vip,
                    backend,
                    state: format!("{}:{} {}", t.src, t.dst, t.class.name()),
                    age_secs: now.saturating_sub(f.last_seen()),
                    expires_in: f.expire().saturating_sub(now),
                    // The pfsync creator id where pfsync knows it, else the index (0: here).
                    creator: self
                        .sync
                        .as_ref()
                        .and_then(|s| s.shell().creator_id(f.id().creator))
                        .unwrap_or(u32::from(f.id().creator)),
                    id: f.id().id,
                    origin: if f.id().creator == 0 {
                        "local"
                    } else {
                        "pfsync"
                    }
                    .into(),
                }
            })
            .collect();
        v.sort_by_key(|s| (s.id, s.creator));
        v
    }

    /// Every worker's traffic figures summed by service (in the snapshot's order) and by host;
    /// `states`: with each service's live flows (the workers scan their flow tables).
    fn traffic(&self, states: bool) -> (Vec<proto::ServiceTraffic>, Vec<proto::HostTraffic>) {
        use crate::dataplane::worker::{ServiceId, Traffic};
        let mut replies = Vec::new();
        for w in &self.workers {
            let (tx, rx) = crossbeam::channel::bounded(1);
            if w.cmds.send(Cmd::Traffic(states, tx)).is_ok() {
                replies.push(rx);
            }
        }
        let mut svcs: Vec<(ServiceId, Traffic)> = Vec::new();
        let mut hosts: Vec<(IpAddr, Traffic)> = Vec::new();
        for rx in replies {
            let Ok(r) = rx.recv_timeout(Duration::from_secs(2)) else {
                continue;
            };
            for (id, t) in r.services {
                match svcs.iter_mut().find(|s| s.0 == id) {
                    Some(s) => s.1.merge(&t),
                    None => svcs.push((id, t)),
                }
            }
            for (a, t) in r.hosts {
                match hosts.iter_mut().find(|h| h.0 == a) {
                    Some(h) => h.1.merge(&t),
                    None => hosts.push((a, t)),
                }
            }
        }
        // Every configured service and host is listed, with zeros before any worker saw it.
        let snap = self.cell.load();
        let services = snap
            .services
            .iter()
            .map(|s| {
                let t = svcs
                    .iter()
                    .find(|(id, _)| {
                        id.redirect == s.name
                            && id.vip == s.vip
                            && id.proto == s.proto
                            && (id.port_lo, id.port_hi) == (s.port_lo, s.port_hi)
                    })
                    .map(|x| x.1)
                    .unwrap_or_default();
                proto::ServiceTraffic {
                    redirect: s.name.clone(),
                    address: s.vip.to_string(),
                    proto: match s.proto {
                        6 => "tcp".into(),
                        17 => "udp".into(),
                        p => p.to_string(),
                    },
                    port: if s.port_lo == s.port_hi {
                        s.port_lo.to_string()
                    } else {
                        format!("{}:{}", s.port_lo, s.port_hi)
                    },
                    packets: t.packets,
                    bytes: t.bytes,
                    flows: t.flows,
                    states: t.states,
                }
            })
            .collect();
        let hosts = snap
            .hosts
            .iter()
            .flatten()
            .map(|h| {
                let t = hosts
                    .iter()
                    .find(|x| x.0 == h.addr)
                    .map(|x| x.1)
                    .unwrap_or_default();
                proto::HostTraffic {
                    address: h.addr.to_string(),
                    packets: t.packets,
                    bytes: t.bytes,
                    flows: t.flows,
                    states: t.states,
                }
            })
            .collect();
        (services, hosts)
    }

    /// Every worker's counters summed by name, in the first worker's order, then the parent's
    /// and the XDP programs'.
    fn all_counters(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        let mut replies = Vec::new();
        for w in &self.workers {
            let (tx, rx) = crossbeam::channel::bounded(1);
            if w.cmds.send(Cmd::Counters(tx)).is_ok() {
                replies.push(rx);
            }
        }
        for rx in replies {
            if let Ok(v) = rx.recv_timeout(Duration::from_secs(2)) {
                for (name, val) in v {
                    match out.iter_mut().find(|(n, _)| *n == name) {
                        Some(e) => e.1 += val,
                        None => out.push((name, val)),
                    }
                }
            }
        }
        for c in Parent::ALL {
            out.push((c.name().to_string(), self.counters.get(c.index())));
        }
        out.extend(self.health_counters());
        if let Some(s) = &self.ctl_stats {
            out.extend(s.values());
        }
        out.extend(self.relay_counters());
        out.push(("daemon_states_mirrored".into(), self.mirror.len() as u64));
        out.push(("daemon_hosts_unresolved".into(), self.unresolved() as u64));
        out.extend(self.route_counters());
        if let Some(s) = &self.sync {
            s.counters(&mut out);
        }
        for i in &self.ifaces {
            if let IfaceGuard::Xdp(x) = &i.guard
                && let Ok(s) = x.prog.stats()
            {
                for st in crate::sys::bpf::XdpStat::ALL {
                    let v = s.get(st.index()).copied().unwrap_or(0);
                    match out.iter_mut().find(|(n, _)| n == st.name()) {
                        Some(e) => e.1 += v,
                        None => out.push((st.name().to_string(), v)),
                    }
                }
            }
        }
        out
    }
}

/// The `show counters` name of a relay counter: rejects join the drop reasons
/// (`drop_no_backend` → `drop_relay_no_backend`, `dns_drop_short` → `drop_relay_dns_short`,
/// so the Prometheus endpoint files them under `carpio_drops_total{reason="relay_..."}`), the
/// rest get a `relay_` prefix (`relay_session_accepted`, `relay_bytes_in`).
fn relay_counter_name(c: crate::relay::Counter) -> String {
    let n = c.name();
    if let Some(r) = n.strip_prefix("drop_") {
        format!("drop_relay_{r}")
    } else if let Some(r) = n.strip_prefix("dns_drop_") {
        format!("drop_relay_dns_{r}")
    } else {
        format!("relay_{n}")
    }
}

impl Daemon {
    /// Every relay counter summed over the relays (relayd keeps them per relay: `show relays`
    /// has each relay's session count), listed even before the first session.
    fn relay_counters(&self) -> Vec<(String, u64)> {
        let Some(h) = &self.relays else {
            return Vec::new();
        };
        let mut sums = [0u64; crate::relay::Counter::COUNT];
        for (_, name) in h.relays() {
            for (c, v) in h.counters(&name) {
                if let Some(s) = sums.get_mut(c.index()) {
                    *s += v;
                }
            }
        }
        crate::relay::Counter::ALL
            .iter()
            .zip(sums)
            .map(|(&c, v)| (relay_counter_name(c), v))
            .collect()
    }
}

fn endpoint(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v) => format!("{v}:{port}"),
        IpAddr::V6(v) => format!("[{v}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("carpio-daemon-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn check_ok_prints_warnings_then_ok() {
        let p = write(
            "ok.conf",
            "table <a> { 198.18.2.1 }\ntable <unused> { 198.18.2.2 }\nredirect r {\n listen on 198.18.1.1 udp port 53\n forward to <a> check icmp\n}\n",
        );
        let (code, out) = check(&Options {
            file: p.clone(),
            defines: vec![],
            verbose: 0,
        });
        assert_eq!(code, 0, "{out}");
        assert!(out.ends_with("configuration OK\n"), "{out}");
        assert!(out.contains("warning"), "{out}");
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn check_errors_have_positions_and_exit_1() {
        let p = write(
            "bad.conf",
            "redirect r {\n listen on 198.18.1.1 udp port 99999\n forward to <nope>\n}\n",
        );
        let (code, out) = check(&Options {
            file: p.clone(),
            defines: vec![],
            verbose: 0,
        });
        assert_eq!(code, 1);
        let prefix = format!("{}:2:", p.display());
        assert!(out.lines().any(|l| l.starts_with(&prefix)), "{out}");
        assert!(!out.contains("configuration OK"));
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn check_missing_file_is_an_error() {
        let (code, out) = check(&Options {
            file: "/nonexistent/carpio.conf".into(),
            defines: vec![],
            verbose: 0,
        });
        assert_eq!(code, 1);
        assert!(out.contains("cannot read"), "{out}");
    }

    const CONF: &str = "table <a> { 198.18.2.11, 198.18.2.12 }\n\
        redirect web {\n listen on 198.18.1.100 tcp port 80\n forward to <a> check icmp\n}\n";

    /// A daemon without interfaces or workers: the parent's control logic alone.
    pub(super) fn daemon(file: &Path) -> Daemon {
        let cfg = config::load(file, &[]).unwrap();
        let mut states = HostStates::default();
        for h in cfg.hosts() {
            if let config::Address::Ip(ip) = h.addr {
                states.macs.push((ip, crate::replay::derived_mac(ip)));
            }
        }
        let snap = Snapshot::build(&cfg, &states, Link::default(), None).unwrap();
        Daemon {
            opts: Options {
                file: file.to_path_buf(),
                defines: vec![],
                verbose: 0,
            },
            steering: Steering::of(&snap),
            cell: Arc::new(SnapshotCell::from_pointee(snap)),
            cfg,
            states,
            link: Link::default(),
            ifaces: Vec::new(),
            workers: Vec::new(),
            events: Arc::new(ArrayQueue::new(16)),
            control: Arc::new(ArrayQueue::new(16)),
            mirror: HashMap::new(),
            monitors: Vec::new(),
            counters: Default::default(),
            epoch: Instant::now(),
            last_resolve: None,
            verbose: false,
            stop: false,
            carp: Vec::new(),
            carp_own: None,
            relays: None,
            health: None,
            checking: false,
            route: None,
            sync: None,
            stats: Default::default(),
            ctl_stats: None,
        }
    }

    fn host_item(items: &[Item], name: &str) -> (u32, bool) {
        items
            .iter()
            .find_map(|i| match i {
                Item::Host {
                    id,
                    name: n,
                    disabled,
                    ..
                } if n == name => Some((*id, *disabled)),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn host_table_redirect_enable_disable() {
        let p = write("ctl.conf", CONF);
        let mut d = daemon(&p);
        let items = d.summary();
        assert!(matches!(
            items.first(),
            Some(Item::Redirect {
                id: 1,
                down: false,
                ..
            })
        ));
        let (id, disabled) = host_item(&items, "198.18.2.11");
        assert!(!disabled);
        // By id: the host leaves its table's scheduler.
        let r = d.handle(Request::Set {
            object: Object::Host,
            target: id.to_string(),
            enable: false,
        });
        assert_eq!(r, Response::Ok);
        assert_eq!(host_item(&d.summary(), "198.18.2.11"), (id, true));
        assert_eq!(d.cell.load().tables[0].up_count(), 1);
        // By name, enabling again.
        let r = d.handle(Request::Set {
            object: Object::Host,
            target: "198.18.2.11".into(),
            enable: true,
        });
        assert_eq!(r, Response::Ok);
        assert_eq!(d.cell.load().tables[0].up_count(), 2);
        // Unknown targets fail and are counted.
        let r = d.handle(Request::Set {
            object: Object::Host,
            target: "198.18.9.9".into(),
            enable: false,
        });
        assert!(matches!(r, Response::Failed { .. }));
        assert_eq!(d.counters.get(Parent::CtlBadTarget.index()), 1);
        // Table by base name, redirect by id.
        for (object, target) in [(Object::Table, "a"), (Object::Redirect, "1")] {
            let r = d.handle(Request::Set {
                object,
                target: target.into(),
                enable: false,
            });
            assert_eq!(r, Response::Ok, "{object:?}");
        }
        let items = d.summary();
        assert!(
            items
                .iter()
                .any(|i| matches!(i, Item::Table { disabled: true, .. }))
        );
        assert!(
            items
                .iter()
                .any(|i| matches!(i, Item::Redirect { disabled: true, .. }))
        );
        let snap = d.cell.load();
        assert!(snap.services[0].active_table(&snap.tables).is_none());
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn reload_keeps_the_running_config_on_error() {
        let p = write("reload.conf", CONF);
        let mut d = daemon(&p);
        let gen0 = d.cell.load().generation;
        std::fs::write(&p, "redirect {\n").unwrap();
        let r = d.handle(Request::Reload);
        match r {
            Response::Failed { reason } => assert!(reason.contains(":1:"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(d.cell.load().generation, gen0);
        assert_eq!(d.cfg.redirects.len(), 1);
        assert_eq!(d.counters.get(Parent::ReloadFailed.index()), 1);
        // A good one (a second port) is applied as a new generation with the same indices.
        std::fs::write(
            &p,
            CONF.replace(
                "tcp port 80\n",
                "tcp port 80\n listen on 198.18.1.100 tcp port 81\n",
            ),
        )
        .unwrap();
        let idx_before = d.cell.load().by_host.clone();
        assert_eq!(d.handle(Request::Reload), Response::Ok);
        let snap = d.cell.load();
        assert_eq!(snap.generation, gen0 + 1);
        assert_eq!(snap.by_host, idx_before);
        assert_eq!(d.steering.services.len(), 2);
        assert_eq!(d.counters.get(Parent::Reloads.index()), 1);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn health_events_take_hosts_down_and_up() {
        let p = write("health.conf", CONF);
        let mut d = daemon(&p);
        let (id, _) = host_item(&d.summary(), "198.18.2.12");
        d.role_event(RoleEvent::Host { id, up: false });
        assert_eq!(d.cell.load().tables[0].up_count(), 1);
        let down = d
            .summary()
            .into_iter()
            .any(|i| matches!(i, Item::Host { id: h, state: HostState::Down, .. } if h == id));
        assert!(down);
        let g = d.cell.load().generation;
        // The same state again changes nothing.
        d.role_event(RoleEvent::Host { id, up: false });
        assert_eq!(d.cell.load().generation, g);
        d.role_event(RoleEvent::Host { id, up: true });
        assert_eq!(d.cell.load().tables[0].up_count(), 2);
        assert_eq!(d.counters.get(Parent::HostTransitions.index()), 2);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn monitor_subscribers_get_events() {
        let p = write("monitor.conf", CONF);
        let mut d = daemon(&p);
        let (tx, rx) = crossbeam::channel::bounded(4);
        d.monitors.push(tx);
        let (gone, gone_rx) = crossbeam::channel::bounded(4);
        d.monitors.push(gone);
        drop(gone_rx);
        let (id, _) = host_item(&d.summary(), "198.18.2.12");
        d.role_event(RoleEvent::Host { id, up: false });
        match rx.try_recv().unwrap() {
            Response::Event {
                kind, name, detail, ..
            } => {
                assert_eq!(
                    (kind.as_str(), name.as_str(), detail.as_str()),
                    ("host_status", "198.18.2.12", "down")
                );
            }
            other => panic!("{other:?}"),
        }
        // The closed subscriber was dropped.
        assert_eq!(d.monitors.len(), 1);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn other_requests() {
        let p = write("other.conf", CONF);
        let mut d = daemon(&p);
        assert_eq!(d.handle(Request::Poll), Response::Ok);
        assert_eq!(d.handle(Request::Log { verbose: true }), Response::Ok);
        assert!(d.verbose);
        assert!(matches!(
            d.handle(Request::Monitor),
            Response::Failed { .. }
        ));
        match d.handle(Request::Show {
            what: Show::Counters,
        }) {
            Response::Counters { counters } => {
                for c in Parent::ALL {
                    assert!(counters.iter().any(|(n, _)| n == c.name()), "{}", c.name());
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(!d.stop);
        assert_eq!(d.handle(Request::Stop), Response::Ok);
        assert!(d.stop);
        let _ = std::fs::remove_file(p);
    }

    /// `show states` mirrors flows a peer created (on the pfsync shell's tap, creator index not
    /// 0) beside local ones with the same id, marks their origin, and drops them on delete.
    #[test]
    fn states_list_mirrors_peers_flows_by_creator_and_id() {
        use crate::dataplane::flow::{FlowId, Key, NewFlow, Origin};
        let p = write("states.conf", CONF);
        let mut d = daemon(&p);
        let snap = d.cell.load_full();
        let vip: IpAddr = "198.18.1.100".parse().unwrap();
        let (si, _) = snap.service_for(vip, 6, 80).unwrap();
        let flow = |client: &str, creator: u8| {
            let key = Key {
                proto: 6,
                client: crate::dataplane::hash::addr16(client.parse().unwrap()),
                client_port: 4000,
                vip: snap.by_vip[&vip].index,
                vip_port: 80,
            };
            let new = NewFlow {
                service: si,
                backend: snap.by_host[&"198.18.2.12".parse().unwrap()],
                backend_port: 80,
                tcp_flags: 0,
                one_sided: false,
                session_timeout: None,
                origin: Origin::Sync(
                    FlowId { creator, id: 7 },
                    crate::dataplane::state::create(6, 0),
                ),
            };
            Flow::detached(&key, &new, 1, 100)
        };
        let ev = |kind, flow| Event {
            kind,
            core: 0,
            flow,
        };
        let local = flow("198.19.0.1", 0);
        let synced = flow("198.19.0.2", 1);
        d.events.push(ev(EventKind::Insert, local)).unwrap();
        d.events.push(ev(EventKind::Insert, synced)).unwrap();
        d.tick();
        let list = d.states_list();
        assert_eq!(list.len(), 2, "same id, two creators: {list:?}");
        let by = |c: &str| list.iter().find(|s| s.client.starts_with(c)).unwrap();
        assert_eq!(by("198.19.0.1").origin, "local");
        assert_eq!(by("198.19.0.2").origin, "pfsync");
        assert_eq!(by("198.19.0.2").backend, "198.18.2.12:80");
        let shown = crate::ctl::render::states(&list);
        assert!(shown.contains(", origin pfsync\n"), "{shown}");
        d.events.push(ev(EventKind::Delete, synced)).unwrap();
        d.tick();
        let list = d.states_list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].origin, "local");
    }

    /// Relay traffic shows up in `show counters`: sessions, bytes both ways, and rejects as
    /// drop reasons (a relay whose only backend is down).
    #[test]
    fn relay_counters_are_shown() {
        use std::io::{Read, Write};
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bport = backend.local_addr().unwrap().port();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = backend.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"hello, world").unwrap();
        });
        // Free ports on an address of its own (tests/relay_loopback.rs uses 127.77.0.N).
        let ip = "127.77.9.1";
        let port = || {
            std::net::TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (p_ok, p_none) = (port(), port());
        let p = write(
            "relay.conf",
            &format!(
                "{CONF}table <dead> {{ 127.0.0.1 }}\n\
                 relay ok {{\n listen on {ip} port {p_ok}\n forward to 127.0.0.1 port {bport}\n}}\n\
                 relay none {{\n listen on {ip} port {p_none}\n forward to <dead> port 9 check icmp\n}}\n"
            ),
        );
        let mut d = daemon(&p);
        let relays = crate::relay::spawn(&d.cfg, crate::relay::Options::default()).unwrap();
        let ok = relays.local_addrs("ok")[0];
        let none = relays.local_addrs("none")[0];
        let dead = d
            .cfg
            .tables
            .iter()
            .find(|t| t.base == "dead")
            .unwrap()
            .hosts[0]
            .id;
        assert!(relays.set_host_state(dead, false));
        d.relays = Some(relays);
        let shown = |d: &mut Daemon| match d.handle(Request::Show {
            what: Show::Counters,
        }) {
            Response::Counters { counters } => counters,
            other => panic!("{other:?}"),
        };
        let get = |c: &[(String, u64)], n: &str| {
            c.iter()
                .find(|(k, _)| k == n)
                .unwrap_or_else(|| panic!("no counter {n}"))
                .1
        };
        let c0 = shown(&mut d);
        assert_eq!(get(&c0, "relay_session_accepted"), 0);
        assert_eq!(get(&c0, "drop_relay_dns_short"), 0);

        let mut s = std::net::TcpStream::connect(ok).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"hello").unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello, world");
        echo.join().unwrap();
        drop(s);
        let mut s = std::net::TcpStream::connect(none).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read_to_end(&mut Vec::new());

        // The workers count as they go: poll until both sessions are closed.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = shown(&mut d);
        while get(&c, "relay_session_closed") < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            c = shown(&mut d);
        }
        assert_eq!(get(&c, "relay_session_accepted"), 2, "{c:?}");
        assert_eq!(get(&c, "relay_session_closed"), 2, "{c:?}");
        assert_eq!(get(&c, "relay_bytes_in"), 5, "{c:?}");
        assert_eq!(get(&c, "relay_bytes_out"), 12, "{c:?}");
        assert_eq!(get(&c, "drop_relay_no_backend"), 1, "{c:?}");
        for x in crate::relay::Counter::ALL {
            let n = relay_counter_name(*x);
            assert!(
                n.starts_with("relay_") || n.starts_with("drop_relay_"),
                "{n}"
            );
            assert_eq!(c.iter().filter(|(k, _)| *k == n).count(), 1, "{n}");
        }
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("198.18.0.1".parse().unwrap(), 53), "198.18.0.1:53");
        assert_eq!(
            endpoint("2001:db8::1".parse().unwrap(), 53),
            "[2001:db8::1]:53"
        );
    }
}
