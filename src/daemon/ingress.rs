//! The data-plane side of the daemon: which packets carpio takes from each interface
//! ([`Steering`], computed from the snapshot), the devices that take them ([`Dev`]: AF_PACKET,
//! AF_XDP, pnet), the kernel-side helpers that go with them (the XDP program and its maps, the
//! cBPF filter, the nftables ingress drop), and the worker threads ([`spawn_worker`]).
//!
//! A worker thread loops: receive a batch → [`Worker::process`] → transmit; when a receive
//! comes back empty it handles its command queue and waits on the device for at most
//! [`IDLE_WAIT`]. The time it spends on non-empty batches is its busy time (the benchmark's
//! on-CPU figure). No lock, log or allocation in the loop; the command queue is a crossbeam
//! channel polled with `try_recv` (no syscall).

use crate::counters::Counters;
use crate::dataplane::flow::Event;
use crate::dataplane::snapshot::{Forward, Snapshot, SnapshotCell};
use crate::dataplane::worker::{Command, ControlFrame, TrafficReport, Worker, WorkerConfig};
use crate::phy::{self, BATCH, Batch, DevDrop, Device};
use crate::sys::afpacket::PacketDrop;
use crate::sys::afxdp::XskDrop;
use crate::sys::bpf::{self, SvcKey};
use crate::sys::cbpf::{self, Insn, Service};
use crate::sys::{nft, xdp};
use crossbeam::channel::{Receiver, Sender};
use crossbeam::queue::ArrayQueue;
use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest an idle worker sleeps in the device before looking at its commands and the stop
/// flag again (bounds shutdown and command latency).
pub const IDLE_WAIT: Duration = Duration::from_millis(50);

/// What carpio takes from the wire: virtual services (by destination), NAT return paths (by
/// source: the backend's address and the port it answers from) and VIP addresses (ARP/ND,
/// fragments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Steering {
    pub services: Vec<Service>,
    pub sources: Vec<Service>,
    pub vips: Vec<IpAddr>,
}

fn push_unique(v: &mut Vec<Service>, s: Service) {
    if !v.contains(&s) {
        v.push(s);
    }
}

impl Steering {
    /// The steering of a snapshot: every enabled service's VIP/protocol/ports; for NAT
    /// services, every host of its tables (main and backup) as a source with the backend port
    /// (or the service's port range when the port is kept).
    pub fn of(snap: &Snapshot) -> Self {
        let mut st = Steering::default();
        for s in &snap.services {
            push_unique(
                &mut st.services,
                Service {
                    addr: s.vip,
                    proto: s.proto,
                    ports: Some((s.port_lo, s.port_hi)),
                },
            );
            if s.forward != Forward::Nat {
                continue;
            }
            let ports = s.backend_port.map_or((s.port_lo, s.port_hi), |p| (p, p));
            for t in std::iter::once(s.table).chain(s.backup) {
                let Some(table) = snap.tables.get(t) else {
                    continue;
                };
                for &h in &table.hosts {
                    if let Some(host) = snap.host(h) {
                        push_unique(
                            &mut st.sources,
                            Service {
                                addr: host.addr,
                                proto: s.proto,
                                ports: Some(ports),
                            },
                        );
                    }
                }
            }
        }
        st.vips = snap.vips.iter().flatten().copied().collect();
        st
    }

    /// The cBPF filter of this steering. CARP and pfsync are left out: AF_PACKET does not
    /// steal, so the carp shell's and the pfsync shell's raw sockets already receive every
    /// such packet (see `carp::shell`, `daemon::sync`), and a worker copy would only be
    /// counted unclaimed.
    pub fn filter(&self) -> Result<Vec<Insn>, cbpf::Error> {
        cbpf::compile(&cbpf::FilterConfig {
            services: self.services.clone(),
            sources: self.sources.clone(),
            vips: self.vips.clone(),
            carp: false,
            pfsync: false,
        })
    }

    /// The XDP map entries: `(key, range, flags)`. A key that is both a service and a
    /// source matches both ways (`SVC_F_SRC` without `SVC_F_NODST`).
    pub fn xdp_entries(&self) -> Vec<XdpEntry> {
        // (key, range, is a destination, is a source)
        let mut out: Vec<(XdpEntry, bool, bool)> = Vec::new();
        let tagged = self
            .services
            .iter()
            .map(|s| (s, true))
            .chain(self.sources.iter().map(|s| (s, false)));
        for (s, dst) in tagged {
            let (key, range) = match s.ports {
                Some((lo, hi)) if lo == hi => (SvcKey::new(s.addr, s.proto, lo), None),
                Some((lo, hi)) => (SvcKey::new(s.addr, s.proto, 0), Some((lo, hi))),
                None => (SvcKey::new(s.addr, s.proto, 0), None),
            };
            match out.iter_mut().find(|e| e.0.0 == key) {
                Some(e) => {
                    e.1 |= dst;
                    e.2 |= !dst;
                }
                None => out.push(((key, range, 0), dst, !dst)),
            }
        }
        out.into_iter()
            .map(|((k, r, _), dst, src)| {
                let mut flags = 0;
                if src {
                    flags |= bpf::SVC_F_SRC;
                }
                if !dst {
                    flags |= bpf::SVC_F_NODST;
                }
                (k, r, flags)
            })
            .collect()
    }
}

/// An XDP service-map entry: key, optional port range, flags.
pub type XdpEntry = (SvcKey, Option<(u16, u16)>, u32);

/// The XDP program of one interface and the map entries it holds.
pub struct XdpSteering {
    pub prog: xdp::Program,
    keys: BTreeSet<[u8; 20]>,
    vips: BTreeSet<[u8; 16]>,
}

fn key_bytes(k: &SvcKey) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..16].copy_from_slice(&k.addr);
    b[16] = k.proto;
    b[18..20].copy_from_slice(&k.port_be.to_ne_bytes());
    b
}

impl XdpSteering {
    pub fn new(prog: xdp::Program) -> Self {
        Self {
            prog,
            keys: BTreeSet::new(),
            vips: BTreeSet::new(),
        }
    }

    /// Brings the maps to `st`: new entries first, then stale ones removed, so an entry present
    /// in both never disappears in between.
    pub fn apply(&mut self, st: &Steering) -> Result<(), xdp::Error> {
        let mut keys = BTreeSet::new();
        for (k, range, flags) in st.xdp_entries() {
            self.prog.insert_entry(k, range, flags)?;
            keys.insert(key_bytes(&k));
        }
        let mut vips = BTreeSet::new();
        for v in &st.vips {
            let k = bpf::VipKey::new(*v);
            self.prog.insert_vip(k)?;
            vips.insert(k.addr);
        }
        for old in self.keys.difference(&keys) {
            let k = SvcKey {
                addr: old[..16].try_into().unwrap_or([0; 16]),
                proto: old[16],
                pad: 0,
                port_be: u16::from_ne_bytes([old[18], old[19]]),
            };
            let _ = self.prog.remove_service(&k);
        }
        for old in self.vips.difference(&vips) {
            let _ = self.prog.remove_vip(&bpf::VipKey { addr: *old });
        }
        self.keys = keys;
        self.vips = vips;
        Ok(())
    }
}

/// The kernel-side companions of an AF_PACKET interface: the nftables ingress drop.
pub fn install_drop(table: &str, ifname: &str, st: &Steering) -> io::Result<nft::IngressDrop> {
    // The interface's own addresses are spared by the return-path drops (see sys::nft).
    let locals = super::link::interface_addrs(ifname).unwrap_or_default();
    nft::IngressDrop::install_with_sources(
        None,
        table,
        ifname,
        &st.services,
        &st.sources,
        &st.vips,
        &locals,
    )
}

/// nft table name for an interface: `carpio_` + the name with non-identifier bytes as `_`.
pub fn nft_table(ifname: &str) -> String {
    let mut s = String::from("carpio_");
    s.extend(
        ifname
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    s
}

/// A receive/transmit device of one worker (moved into its thread once; the size difference
/// between variants does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Dev {
    Afpacket(phy::afpacket::Port),
    Afxdp(phy::afxdp::Port),
    Pnet(phy::pnet::Port),
}

impl Dev {
    fn dev(&mut self) -> &mut dyn Device {
        match self {
            Dev::Afpacket(p) => p,
            Dev::Afxdp(p) => p,
            Dev::Pnet(p) => p,
        }
    }

    /// Waits for frames up to `timeout` (pnet's receive already waits).
    fn wait(&mut self, timeout: Duration) {
        let _ = match self {
            Dev::Afpacket(p) => p.wait(timeout),
            Dev::Afxdp(p) => p.socket_mut().wait_rx(timeout),
            Dev::Pnet(_) => Ok(false),
        };
    }

    /// Replaces the AF_PACKET socket filter (other devices are steered elsewhere).
    fn set_filter(&self, prog: &[Insn]) -> io::Result<()> {
        match self {
            Dev::Afpacket(p) => crate::sys::afpacket::attach_filter(p.ring(), prog),
            _ => Ok(()),
        }
    }

    fn counters(&self, out: &mut Vec<(String, u64)>) {
        match self {
            Dev::Afpacket(p) => out.extend(
                PacketDrop::ALL
                    .iter()
                    .map(|d| (d.name().to_string(), p.ring().drops.get(d.index()))),
            ),
            Dev::Afxdp(p) => out.extend(
                XskDrop::ALL
                    .iter()
                    .map(|d| (d.name().to_string(), p.socket().drops.get(d.index()))),
            ),
            Dev::Pnet(_) => {}
        }
    }
}

/// A command to a worker thread, handled between batches.
pub enum Cmd {
    /// Reply with every counter of the worker (named), its device's and its busy time.
    Counters(Sender<Vec<(String, u64)>>),
    /// Install a new AF_PACKET filter (after a reload changed the services).
    Filter(Vec<Insn>),
    /// Reply with the worker's per-service and per-host traffic figures (with live states
    /// per service when `true`: a scan of the flow table).
    Traffic(bool, Sender<TrafficReport>),
}

/// A running worker thread.
pub struct WorkerHandle {
    pub core: u8,
    pub cmds: Sender<Cmd>,
    pub thread: JoinHandle<()>,
}

/// Shared inputs of the worker threads.
pub struct Shared {
    pub snap: Arc<SnapshotCell>,
    pub events: Arc<ArrayQueue<Event>>,
    pub stop: Arc<AtomicBool>,
    /// Time 0 of the workers' `now` (seconds since the daemon started, plus one).
    pub epoch: Instant,
    /// CARP and pfsync frames the workers hand to the control plane (the XDP program and
    /// the cBPF filter steer them to carpio, so the kernel never sees them).
    pub control: Arc<ArrayQueue<Box<ControlFrame>>>,
}

/// A worker thread's own figures.
#[derive(Default)]
struct LoopStats {
    busy: Duration,
    batches: u64,
    packets: u64,
    tx_errors: u64,
    rx_errors: u64,
}

fn handle_cmd(
    cmd: Cmd,
    core: u8,
    worker: &mut Worker,
    dev: &Dev,
    devdrops: &Counters<{ DevDrop::COUNT }>,
    st: &LoopStats,
) {
    match cmd {
        Cmd::Counters(reply) => {
            let mut v: Vec<(String, u64)> = worker
                .counter_values()
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect();
            v.extend(
                DevDrop::ALL
                    .iter()
                    .map(|d| (d.name().to_string(), devdrops.get(d.index()))),
            );
            dev.counters(&mut v);
            let busy = st.busy.as_nanos() as u64;
            // Per-worker figures too (the benchmark's on-CPU time per core).
            v.push((format!("worker{core}_busy_ns"), busy));
            v.push((format!("worker{core}_packets"), st.packets));
            v.push(("worker_batches".into(), st.batches));
            v.push(("worker_packets".into(), st.packets));
            v.push(("worker_busy_ns".into(), busy));
            v.push(("worker_tx_errors".into(), st.tx_errors));
            v.push(("worker_rx_errors".into(), st.rx_errors));
            v.push(("flows".into(), worker.flows().len() as u64));
            let _ = reply.send(v);
        }
        Cmd::Filter(prog) => {
            let _ = dev.set_filter(&prog);
        }
        Cmd::Traffic(states, reply) => {
            let _ = reply.send(worker.traffic(states));
        }
    }
}

/// Commands an idle worker applies per turn at most, in
/// [`crate::dataplane::worker::COMMANDS_PER_BATCH`] steps: a bulk
/// update lands in an idle backup's tables at once rather than with its first packets.
pub const IDLE_COMMAND_ROUNDS: usize = 64;

/// Starts a worker on `dev`, pinned to `cpu` if given, taking the pfsync role's commands
/// (synced flows) from `commands` if given.
pub fn spawn_worker(
    cfg: WorkerConfig,
    mut dev: Dev,
    cpu: Option<usize>,
    shared: &Shared,
    commands: Option<Arc<ArrayQueue<Command>>>,
) -> io::Result<WorkerHandle> {
    let core = cfg.core;
    let mut worker = Worker::new(
        cfg,
        shared.snap.clone(),
        shared.events.clone(),
        Some(shared.control.clone()),
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?;
    if let Some(q) = &commands {
        worker.set_commands(q.clone());
    }
    let (tx, rx): (Sender<Cmd>, Receiver<Cmd>) = crossbeam::channel::bounded(16);
    let stop = shared.stop.clone();
    let epoch = shared.epoch;
    let thread = std::thread::Builder::new()
        .name(format!("carpio-w{core}"))
        .spawn(move || {
            if let Some(c) = cpu {
                let _ = crate::sys::cpu::pin_current_thread(c);
            }
            let mut batch = Batch::new(BATCH);
            let mut devdrops = Counters::<{ DevDrop::COUNT }>::default();
            let mut st = LoopStats::default();
            // Relaxed: the flag carries no data; the parent joins the thread afterwards.
            while !stop.load(Ordering::Relaxed) {
                let n = match dev.dev().recv(&mut batch, &mut devdrops) {
                    Ok(n) => n,
                    Err(_) => {
                        // A broken device must not spin: count and back off.
                        st.rx_errors += 1;
                        std::thread::sleep(IDLE_WAIT);
                        0
                    }
                };
                if n > 0 {
                    let t0 = Instant::now();
                    let now = (t0.saturating_duration_since(epoch).as_secs() + 1) as u32;
                    worker.process(&mut batch, now);
                    if dev.dev().send(&batch).is_err() {
                        st.tx_errors += 1;
                    }
                    st.busy += t0.elapsed();
                    st.batches += 1;
                    st.packets += n as u64;
                }
                // One non-blocking look per iteration (atomic loads, no syscall), so a worker
                // under sustained load still answers `show counters`.
                while let Ok(cmd) = rx.try_recv() {
                    handle_cmd(cmd, core, &mut worker, &dev, &devdrops, &st);
                }
                if n == 0 {
                    // An idle worker (a carp backup) applies synced flows now, so they are in
                    // its table before the first packet after a takeover.
                    if let Some(q) = &commands {
                        let now = (epoch.elapsed().as_secs() + 1) as u32;
                        for _ in 0..IDLE_COMMAND_ROUNDS {
                            if q.is_empty() {
                                break;
                            }
                            worker.apply_commands(now);
                        }
                    }
                    dev.wait(IDLE_WAIT);
                }
            }
        })?;
    Ok(WorkerHandle {
        core,
        cmds: tx,
        thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::snapshot::{HostStates, Link};

    const CONF: &str = r#"
table <dns> { 198.18.2.11, 198.18.2.12 }
table <web> { 198.18.2.11 }
redirect "dns" {
    listen on 198.18.1.100 udp port 53
    forward to <dns> port 5353 check icmp
}
redirect "web" {
    listen on 198.18.1.100 tcp port 8000:8010
    forward to <web> check icmp
}
redirect "dsr" {
    listen on 198.18.1.101 tcp port 80
    route to <web> interface lb0 check icmp
}
"#;

    fn snap() -> Snapshot {
        let cfg = crate::config::parse_str("t.conf", CONF, &[]).unwrap();
        Snapshot::build(&cfg, &HostStates::default(), Link::default(), None).unwrap()
    }

    #[test]
    fn steering_of_a_snapshot() {
        let st = Steering::of(&snap());
        let svc = |a: &str, p, lo, hi| Service {
            addr: a.parse().unwrap(),
            proto: p,
            ports: Some((lo, hi)),
        };
        assert_eq!(
            st.services,
            vec![
                svc("198.18.1.100", 17, 53, 53),
                svc("198.18.1.100", 6, 8000, 8010),
                svc("198.18.1.101", 6, 80, 80),
            ]
        );
        // NAT backends only; DSR answers never come back through the balancer.
        assert_eq!(
            st.sources,
            vec![
                svc("198.18.2.11", 17, 5353, 5353),
                svc("198.18.2.12", 17, 5353, 5353),
                // The table copy's port is the first listen port (relayd `table_inherit`).
                svc("198.18.2.11", 6, 8000, 8000),
            ]
        );
        let mut vips = st.vips.clone();
        vips.sort();
        assert_eq!(
            vips,
            vec![
                "198.18.1.100".parse::<IpAddr>().unwrap(),
                "198.18.1.101".parse().unwrap()
            ]
        );
    }

    #[test]
    fn xdp_entries_flags_and_ranges() {
        let st = Steering::of(&snap());
        let e = st.xdp_entries();
        let find = |a: &str, p: u8, port: u16| {
            e.iter()
                .find(|x| x.0 == SvcKey::new(a.parse().unwrap(), p, port))
                .map(|x| (x.1, x.2))
        };
        assert_eq!(find("198.18.1.100", 17, 53), Some((None, 0)));
        assert_eq!(find("198.18.1.100", 6, 0), Some((Some((8000, 8010)), 0)));
        assert_eq!(
            find("198.18.2.12", 17, 5353),
            Some((None, bpf::SVC_F_SRC | bpf::SVC_F_NODST))
        );
        assert_eq!(
            find("198.18.2.11", 6, 8000),
            Some((None, bpf::SVC_F_SRC | bpf::SVC_F_NODST))
        );
        // An address/port that is both a service and a backend matches both ways.
        let both = Steering {
            services: vec![Service {
                addr: "198.18.2.11".parse().unwrap(),
                proto: 17,
                ports: Some((5353, 5353)),
            }],
            ..st.clone()
        };
        let e2 = both.xdp_entries();
        let k = SvcKey::new("198.18.2.11".parse().unwrap(), 17, 5353);
        assert_eq!(
            e2.iter().find(|x| x.0 == k).map(|x| x.2),
            Some(bpf::SVC_F_SRC)
        );
        assert_eq!(e.len(), 6);
    }

    #[test]
    fn filter_accepts_services_and_return_path() {
        let st = Steering::of(&snap());
        let prog = st.filter().unwrap();
        // UDP 198.18.2.12:5353 -> client: the return path.
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 18, 2, 12]);
        f[30..34].copy_from_slice(&[198, 18, 1, 50]);
        f[34..36].copy_from_slice(&5353u16.to_be_bytes());
        f[36..38].copy_from_slice(&40000u16.to_be_bytes());
        assert_ne!(cbpf::run(&prog, &f), 0);
        f[34..36].copy_from_slice(&5354u16.to_be_bytes());
        assert_eq!(cbpf::run(&prog, &f), 0);
    }

    #[test]
    fn nft_table_names() {
        assert_eq!(nft_table("lb0"), "carpio_lb0");
        assert_eq!(nft_table("veth-a.1"), "carpio_veth_a_1");
    }
}
