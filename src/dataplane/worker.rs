//! The per-core worker: batch in → classify → match a virtual service → carp accept hook →
//! flow lookup → on a miss, pick a backend from the current snapshot and create the flow →
//! rewrite (NAT, DSR, IPIP/GUE) → verdicts for the batch. The NAT return path (backend →
//! client) is un-NATed through the same flow; ICMP errors about a flow follow it through
//! their quoted packet (pf does the same). ARP requests for a virtual address are answered here
//! (kernel-bypass ingress takes them away from the kernel); CARP and pfsync frames are handed
//! to the control plane through a bounded queue. Everything else is passed on or dropped by a
//! named reason.
//!
//! A worker owns its flow table and counters; it reads the [`Snapshot`] once per batch and never
//! blocks, locks, allocates, logs or makes a syscall per packet. Time is a parameter.

use super::encap::{self, IcmpError, Outer, Tunnel};
use super::flow::{self, FlowTable, FlowTableConfig, InsertError, Key, NewFlow, Origin, ReturnKey};
use super::hash;
use super::rewrite::{self, Macs};
use super::snapshot::{Forward, Service, Snapshot, SnapshotCell};
use super::state::Dir;
use crate::balance::{self, PickInput, PickState};
use crate::carp::balance::Inbound;
use crate::counters::Counters;
use crate::phy::{Batch, Packet, Verdict};
use crate::wire::classify::{Af, Class, Drop, Frag, LinkType, Meta, classify};
use crossbeam::queue::ArrayQueue;
use std::net::IpAddr;
use std::sync::Arc;

crate::named_counters! {
    /// What the worker did with packets, per core.
    pub enum Stat {
        TxNatIn = "tx_nat_in",
        TxNatOut = "tx_nat_out",
        TxDsr = "tx_dsr",
        TxEncap = "tx_encap",
        TxIcmpToBackend = "tx_icmp_error_to_backend",
        TxIcmpToClient = "tx_icmp_error_to_client",
        TxIcmpTooBig = "tx_icmp_too_big",
        /// A NAT'ed packet arrived with TTL/hop limit 0 or 1: answered with time exceeded.
        TxIcmpTimeExceeded = "tx_icmp_time_exceeded",
        TxArpReply = "tx_arp_reply",
        FlowNew = "flow_new",
        FlowHit = "flow_hit",
        FlowReturnHit = "flow_return_hit",
        /// The flow's backend went down or left its table: re-scheduled (relayd/pf would
        /// keep sending to a dead host until the state expires; carpio moves it).
        FlowRescheduled = "flow_rescheduled",
        /// The flow table was full: the packet was forwarded by a stateless pick.
        FlowStateless = "flow_stateless_table_full",
        PassNotOurs = "pass_not_ours",
        PassVipNoService = "pass_vip_no_service",
        PassVipIcmp = "pass_vip_icmp",
        PassArp = "pass_arp",
        PassServiceDisabled = "pass_service_disabled",
        ToControl = "to_control",
        DropToControlFull = "drop_control_queue_full",
        DropNoBackend = "drop_no_backend",
        DropBackendUnresolved = "drop_backend_unresolved",
        DropNoNeighbor = "drop_no_neighbor",
        DropCarpNotOwner = "drop_carp_not_owner",
        DropVipFragment = "drop_vip_fragment",
        DropReturnCollision = "drop_return_collision",
        DropRewrite = "drop_rewrite",
        DropNoTunnelSource = "drop_no_tunnel_source",
        /// TTL/hop limit 0 or 1 to a NAT service, not answered: over the per-second ICMP
        /// budget, or the packet may not be answered (an ICMP error, a multicast source).
        DropTtlExceeded = "drop_ttl_exceeded",
    }
}

/// A control-plane frame (CARP, pfsync) handed over by a worker: fixed size, so the hand-over
/// never allocates. Frames longer than [`CONTROL_FRAME_MAX`] are counted and dropped.
pub struct ControlFrame {
    pub class: Class,
    pub len: u16,
    pub ts_ns: u64,
    pub data: [u8; CONTROL_FRAME_MAX],
}

/// Largest control frame handed over (a 1500-byte IP packet plus Ethernet and two tags).
pub const CONTROL_FRAME_MAX: usize = 1522;

impl ControlFrame {
    pub fn bytes(&self) -> &[u8] {
        &self.data[..usize::from(self.len).min(CONTROL_FRAME_MAX)]
    }
}

/// A request from the control plane to one worker, applied at the start of its next batch
/// (the worker owns its flow table; nobody else writes it). pfsync uses these to insert the
/// states a peer announced and to remove the ones it deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Insert (or replace) a flow learned from a peer; `flow.origin` should be `Origin::Sync`
    /// so it is not announced back.
    Insert { key: Key, flow: NewFlow },
    /// Remove a flow a peer deleted (not announced back).
    Remove { key: Key },
}

/// Traffic figures of one virtual service or one backend host on one worker: packets and bytes
/// forwarded (both directions of NAT flows; bytes as received), flows created, and, in a
/// [`Worker::traffic`] report, the flows live now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    pub states: u64,
}

impl Traffic {
    /// Adds another worker's figures.
    pub fn merge(&mut self, o: &Traffic) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.flows += o.flows;
        self.states += o.states;
    }
}

/// What names a virtual service across snapshots (its index in `Snapshot::services` is
/// positional and moves when a reload adds a redirect before it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId {
    pub redirect: String,
    pub vip: IpAddr,
    pub proto: u8,
    pub port_lo: u16,
    pub port_hi: u16,
}

impl ServiceId {
    fn of(s: &Service) -> Self {
        Self {
            redirect: s.name.clone(),
            vip: s.vip,
            proto: s.proto,
            port_lo: s.port_lo,
            port_hi: s.port_hi,
        }
    }
}

/// One worker's traffic figures, keyed by identity so the parent can sum workers that read
/// different snapshot generations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficReport {
    pub services: Vec<(ServiceId, Traffic)>,
    pub hosts: Vec<(IpAddr, Traffic)>,
}

/// Commands applied per batch at most (the rest wait for the next batch).
pub const COMMANDS_PER_BATCH: usize = 256;

/// Worker configuration (plain data).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub core: u8,
    pub flow: FlowTableConfig,
    /// Seed of the Maglev/entropy flow hash: the same on every node (active/active nodes must
    /// pick the same backend for the same flow).
    pub hash_seed: u64,
    /// Flow table entries examined by the expiry sweep per batch.
    pub sweep_budget: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            core: 0,
            flow: FlowTableConfig::default(),
            hash_seed: 0x6361_7270_696f_6d67,
            sweep_budget: 64,
        }
    }
}

/// Size of the per-worker neighbour cache (client address → the MAC its frames came from),
/// direct-mapped.
const NEIGH_SLOTS: usize = 4096;

/// One core's worker.
pub struct Worker {
    cfg: WorkerConfig,
    snap: Arc<SnapshotCell>,
    table: FlowTable,
    /// Per-table scheduler state (round-robin index, PRNG), indexed like `Snapshot::tables`.
    pick: Vec<PickState>,
    generation: u64,
    /// Scratch for least-states counts in a table's host order (reused, never shrunk).
    states: Vec<u32>,
    neigh: Box<[(IpAddr, [u8; 6])]>,
    control: Option<Arc<ArrayQueue<Box<ControlFrame>>>>,
    commands: Option<Arc<ArrayQueue<Command>>>,
    too_big: Box<[u8]>,
    /// Time-exceeded replies left in the second `icmp_second` (Linux's icmp_ratelimit idea:
    /// a flood of TTL-1 packets is not reflected at line rate).
    icmp_left: u32,
    icmp_second: u32,
    /// Traffic per service, indexed like the current snapshot's `services`; `svc_ids` says
    /// which service each slot belongs to, so a new snapshot carries the figures over by
    /// identity (plain per-worker arrays: no lock or atomic on the hot path).
    svc_traffic: Vec<Traffic>,
    svc_ids: Vec<ServiceId>,
    /// Traffic per backend host, indexed by the snapshot's stable host index; `host_addrs`
    /// resets a slot a later snapshot gives to another address.
    host_traffic: Vec<Traffic>,
    host_addrs: Vec<Option<IpAddr>>,
    pub classes: Counters<{ Class::COUNT }>,
    pub drops: Counters<{ Drop::COUNT }>,
    pub stats: Counters<{ Stat::COUNT }>,
    pub rewrite_errors: Counters<{ rewrite::Error::COUNT }>,
}

#[inline]
fn ip_af(a: IpAddr) -> Af {
    if a.is_ipv4() { Af::V4 } else { Af::V6 }
}

#[inline]
fn neigh_slot(a: IpAddr) -> usize {
    let h = match a {
        IpAddr::V4(v) => u64::from(u32::from(v)),
        IpAddr::V6(v) => {
            let x = u128::from(v);
            (x as u64) ^ ((x >> 64) as u64)
        }
    };
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize % NEIGH_SLOTS
}

impl Worker {
    /// A worker reading snapshots from `snap` and announcing flow events into `events`.
    /// `control` receives CARP and pfsync frames (none: they are passed on).
    pub fn new(
        cfg: WorkerConfig,
        snap: Arc<SnapshotCell>,
        events: Arc<ArrayQueue<flow::Event>>,
        control: Option<Arc<ArrayQueue<Box<ControlFrame>>>>,
    ) -> Result<Self, flow::ConfigError> {
        let mut fcfg = cfg.flow.clone();
        fcfg.core = cfg.core;
        let table = FlowTable::new(&fcfg, events)?;
        Ok(Self {
            pick: Vec::new(),
            generation: u64::MAX,
            states: Vec::with_capacity(64),
            neigh: vec![(IpAddr::from([0u8; 4]), [0u8; 6]); NEIGH_SLOTS].into_boxed_slice(),
            control,
            commands: None,
            too_big: vec![0u8; 1600].into_boxed_slice(),
            icmp_left: 0,
            icmp_second: u32::MAX,
            svc_traffic: Vec::new(),
            svc_ids: Vec::new(),
            host_traffic: Vec::new(),
            host_addrs: Vec::new(),
            table,
            snap,
            cfg,
            classes: Counters::default(),
            drops: Counters::default(),
            stats: Counters::default(),
            rewrite_errors: Counters::default(),
        })
    }

    /// Sets the queue this worker takes control-plane [`Command`]s from.
    pub fn set_commands(&mut self, q: Arc<ArrayQueue<Command>>) {
        self.commands = Some(q);
    }

    /// Applies pending commands (also called at the start of every batch).
    pub fn apply_commands(&mut self, now: u32) {
        let Some(q) = self.commands.clone() else {
            return;
        };
        for _ in 0..COMMANDS_PER_BATCH {
            let Some(c) = q.pop() else { break };
            match c {
                Command::Insert { key, flow } => {
                    self.table.remove(&key, false);
                    let _ = self.table.insert(now, &key, &flow);
                }
                Command::Remove { key } => {
                    self.table.remove(&key, false);
                }
            }
        }
    }

    pub fn core(&self) -> u8 {
        self.cfg.core
    }

    pub fn flows(&self) -> &FlowTable {
        &self.table
    }

    pub fn flows_mut(&mut self) -> &mut FlowTable {
        &mut self.table
    }

    #[inline]
    fn count(&mut self, s: Stat) {
        self.stats.add(s.index(), 1);
    }

    /// Every counter of this worker as `(name, value)`, flow-table counters included.
    pub fn counter_values(&self) -> Vec<(&'static str, u64)> {
        let mut v = Vec::new();
        v.extend(
            Class::ALL
                .iter()
                .map(|c| (c.name(), self.classes.get(c.index()))),
        );
        v.extend(
            Drop::ALL
                .iter()
                .map(|c| (c.name(), self.drops.get(c.index()))),
        );
        v.extend(
            Stat::ALL
                .iter()
                .map(|c| (c.name(), self.stats.get(c.index()))),
        );
        v.extend(
            rewrite::Error::ALL
                .iter()
                .map(|c| (c.name(), self.rewrite_errors.get(c.index()))),
        );
        v.extend(
            flow::Counter::ALL
                .iter()
                .map(|c| (c.name(), self.table.counters().get(c.index()))),
        );
        v
    }

    /// Processes a received batch in place: rewrites frames and sets every packet's verdict.
    /// `now` is seconds on the caller's clock (the flow table's time base).
    pub fn process(&mut self, batch: &mut Batch, now: u32) {
        let snap = self.snap.load_full();
        if snap.generation != self.generation {
            self.on_new_snapshot(&snap);
        }
        self.apply_commands(now);
        for p in batch.as_mut_slice() {
            p.verdict = self.packet(&snap, p, now);
        }
        self.table.sweep(now, self.cfg.sweep_budget);
    }

    /// Per-table scheduler state follows the snapshot's tables (allocates only here, on a
    /// snapshot change).
    fn on_new_snapshot(&mut self, snap: &Snapshot) {
        let seed = u64::from(self.cfg.core) << 32 ^ snap.generation;
        self.pick = (0..snap.tables.len())
            .map(|i| PickState::new(seed ^ i as u64))
            .collect();
        let most = snap.tables.iter().map(|t| t.hosts.len()).max().unwrap_or(0);
        if self.states.capacity() < most {
            self.states.reserve(most);
        }
        self.remap_traffic(snap);
        self.generation = snap.generation;
    }

    /// Carries the traffic figures over to a new snapshot's indices: services by identity
    /// (a removed service's figures go), hosts by address at their stable index.
    fn remap_traffic(&mut self, snap: &Snapshot) {
        let ids: Vec<ServiceId> = snap.services.iter().map(ServiceId::of).collect();
        let traffic = ids
            .iter()
            .map(|id| {
                self.svc_ids
                    .iter()
                    .position(|o| o == id)
                    .and_then(|i| self.svc_traffic.get(i).copied())
                    .unwrap_or_default()
            })
            .collect();
        self.svc_traffic = traffic;
        self.svc_ids = ids;
        let addrs: Vec<Option<IpAddr>> = snap
            .hosts
            .iter()
            .map(|h| h.as_ref().map(|h| h.addr))
            .collect();
        self.host_traffic.resize(addrs.len(), Traffic::default());
        for (i, a) in addrs.iter().enumerate() {
            if self.host_addrs.get(i).copied().flatten() != *a {
                self.host_traffic[i] = Traffic::default();
            }
        }
        self.host_addrs = addrs;
    }

    /// Counts a forwarded packet of service `si` to or from host `hi` (`new`: it created a
    /// flow). Indices out of range (a snapshot not yet seen) are not counted.
    #[inline]
    fn account(&mut self, si: u16, hi: u16, bytes: usize, new: bool) {
        let n = u64::from(new);
        if let Some(t) = self.svc_traffic.get_mut(usize::from(si)) {
            t.packets += 1;
            t.bytes += bytes as u64;
            t.flows += n;
        }
        if let Some(t) = self.host_traffic.get_mut(usize::from(hi)) {
            t.packets += 1;
            t.bytes += bytes as u64;
            t.flows += n;
        }
    }

    /// This worker's traffic figures; with `states`, also the flows live now per service (a
    /// scan of the whole flow table: for `show traffic` and metrics, never per packet). Hosts'
    /// live flows are always there (the flow table keeps them per host).
    pub fn traffic(&mut self, states: bool) -> TrafficReport {
        let snap = self.snap.load_full();
        if snap.generation != self.generation {
            self.on_new_snapshot(&snap);
        }
        let mut services: Vec<(ServiceId, Traffic)> = self
            .svc_ids
            .iter()
            .cloned()
            .zip(self.svc_traffic.iter().copied())
            .collect();
        // By VIP, protocol and port in the snapshot the figures are indexed by (a flow's own
        // service index is positional in the snapshot that created it).
        if states {
            for f in self.table.iter() {
                let k = f.key();
                let si = snap
                    .vips
                    .get(usize::from(k.vip))
                    .copied()
                    .flatten()
                    .and_then(|vip| snap.service_for(vip, k.proto, k.vip_port));
                if let Some(s) = si.and_then(|(si, _)| services.get_mut(usize::from(si))) {
                    s.1.states += 1;
                }
            }
        }
        let live = self.table.backend_states();
        let hosts = self
            .host_addrs
            .iter()
            .zip(self.host_traffic.iter())
            .enumerate()
            .filter_map(|(i, (a, t))| {
                let mut t = *t;
                t.states = u64::from(live.get(i).copied().unwrap_or(0));
                a.map(|a| (a, t))
            })
            .collect();
        TrafficReport { services, hosts }
    }

    fn packet(&mut self, snap: &Snapshot, p: &mut Packet, now: u32) -> Verdict {
        let meta = match classify(p.data(), p.link) {
            Ok(m) => m,
            Err(d) => {
                self.drops.add(d.index(), 1);
                return Verdict::Drop;
            }
        };
        self.classes.add(meta.class.index(), 1);
        match meta.class {
            Class::Arp => self.arp(snap, p, &meta),
            Class::Carp | Class::Pfsync => self.punt(p, &meta),
            Class::Ipv4Tcp
            | Class::Ipv4Udp
            | Class::Ipv6Tcp
            | Class::Ipv6Udp
            | Class::Ipv4Icmp
            | Class::Ipv6Icmp => self.ip(snap, p, &meta, now),
            Class::Ipv4Other | Class::Ipv6Other => {
                if meta.frag == Frag::Later && snap.is_vip(meta.dst) {
                    self.count(Stat::DropVipFragment);
                    Verdict::Drop
                } else {
                    self.count(Stat::PassNotOurs);
                    Verdict::Pass
                }
            }
            Class::Other => {
                self.count(Stat::PassNotOurs);
                Verdict::Pass
            }
        }
    }

    fn punt(&mut self, p: &Packet, meta: &Meta) -> Verdict {
        let Some(q) = &self.control else {
            self.count(Stat::ToControl);
            return Verdict::Pass;
        };
        let d = p.data();
        if d.len() > CONTROL_FRAME_MAX {
            self.count(Stat::DropToControlFull);
            return Verdict::Drop;
        }
        let mut f = Box::new(ControlFrame {
            class: meta.class,
            len: d.len() as u16,
            ts_ns: p.ts_ns,
            data: [0; CONTROL_FRAME_MAX],
        });
        f.data[..d.len()].copy_from_slice(d);
        if q.push(f).is_err() {
            self.count(Stat::DropToControlFull);
            return Verdict::Drop;
        }
        self.count(Stat::ToControl);
        Verdict::Drop
    }

    /// With carp IP balancing every node receives the backends' replies sent to the carp
    /// address (its MAC is flooded): like `carp_lsdrop`, which OpenBSD applies to every
    /// packet that arrives on the carp interface, only the node whose share the reply's own
    /// (src, dst) hash falls in un-NATs it (pfsync gave every node the state). A reply sent
    /// to this node's own MAC (a backend routed through this node) arrives on the physical
    /// interface, where OpenBSD does not filter: it is ours. Without IP balancing: true.
    #[inline]
    fn carp_ip_share(snap: &Snapshot, p: &Packet, meta: &Meta) -> bool {
        match &snap.carp {
            Some(o) if o.balancing.is_ip() => {
                let to_us =
                    p.link == LinkType::Ethernet && p.data().get(0..6) == Some(&snap.link.mac[..]);
                to_us || o.accept(&Inbound::from_meta(meta, false))
            }
            _ => true,
        }
    }

    /// Whether this node handles a packet to a virtual address, as carp(4) decides. IP
    /// balancing: every node takes the frame and `carp_lsdrop` picks by the address hash.
    /// Otherwise (`none`, `arp`) only a MASTER takes it (`carp_ourether`): a frame to one of its
    /// virtual MACs, or to the link's own MAC while it is MASTER. A BACKUP drops what a switch
    /// floods to it, so two nodes never forward the same packet and a backup creates no
    /// states of its own.
    #[inline]
    fn carp_owns(o: &crate::carp::Ownership, snap: &Snapshot, p: &Packet, meta: &Meta) -> bool {
        if o.balancing.is_ip() {
            return o.accept(&Inbound::from_meta(meta, false));
        }
        let master = o.lsmask != 0;
        match p.data().get(0..6) {
            Some(d) if p.link == LinkType::Ethernet => {
                let mut dst = [0u8; 6];
                dst.copy_from_slice(d);
                o.accepts_frame(dst) || (master && dst == snap.link.mac)
            }
            // Captures without an Ethernet header (replay): the vhost state decides.
            _ => master,
        }
    }

    /// Answers an ARP request for a virtual address we own, in place (RFC 826: swap sender
    /// and target, our MAC as sender). carp ARP balancing picks which vhost answers.
    fn arp(&mut self, snap: &Snapshot, p: &mut Packet, meta: &Meta) -> Verdict {
        const OP: usize = 6;
        const SHA: usize = 8;
        const SPA: usize = 14;
        const THA: usize = 18;
        const TPA: usize = 24;
        if p.link != LinkType::Ethernet || !snap.is_vip(meta.dst) {
            self.count(Stat::PassArp);
            return Verdict::Pass;
        }
        let l3 = usize::from(meta.l3);
        let frame = p.data_mut();
        let Some(arp) = frame.get_mut(l3..l3 + 28) else {
            self.count(Stat::PassArp);
            return Verdict::Pass;
        };
        if arp[OP..OP + 2] != [0, 1] {
            self.count(Stat::PassArp);
            return Verdict::Pass;
        }
        let mut requester = [0u8; 6];
        requester.copy_from_slice(&arp[SHA..SHA + 6]);
        let our_mac = match &snap.carp {
            Some(o) => match o.arp_reply(requester) {
                Some(m) => m,
                None => {
                    self.count(Stat::PassArp);
                    return Verdict::Drop;
                }
            },
            None => snap.link.mac,
        };
        let mut spa = [0u8; 4];
        spa.copy_from_slice(&arp[SPA..SPA + 4]);
        let mut tpa = [0u8; 4];
        tpa.copy_from_slice(&arp[TPA..TPA + 4]);
        arp[OP..OP + 2].copy_from_slice(&[0, 2]);
        arp[THA..THA + 6].copy_from_slice(&requester);
        arp[TPA..TPA + 4].copy_from_slice(&spa);
        arp[SHA..SHA + 6].copy_from_slice(&our_mac);
        arp[SPA..SPA + 4].copy_from_slice(&tpa);
        frame[0..6].copy_from_slice(&requester);
        frame[6..12].copy_from_slice(&our_mac);
        self.count(Stat::TxArpReply);
        Verdict::Tx
    }

    #[inline]
    fn learn(&mut self, p: &Packet, addr: IpAddr) {
        if p.link == LinkType::Ethernet
            && let Some(src) = p.data().get(6..12)
        {
            let slot = neigh_slot(addr);
            let e = &mut self.neigh[slot];
            e.0 = addr;
            e.1.copy_from_slice(src);
        }
    }

    /// The MAC to send to `addr`: learned from its frames, else the gateway.
    #[inline]
    fn neighbor(&self, snap: &Snapshot, addr: IpAddr) -> Option<[u8; 6]> {
        let e = &self.neigh[neigh_slot(addr)];
        if e.0 == addr {
            Some(e.1)
        } else {
            snap.link.gateway_mac
        }
    }

    fn ip(&mut self, snap: &Snapshot, p: &mut Packet, meta: &Meta, now: u32) -> Verdict {
        if let Some(entry) = snap.by_vip.get(&meta.dst) {
            let vip_index = entry.index;
            if meta.proto == 1 || meta.proto == 58 {
                return match meta.quoted {
                    // An error about a packet the VIP sent (VIP:port → client): the client
                    // side speaks to the backend that owns the flow.
                    Some(q) if q.src == meta.dst => {
                        self.icmp_to_backend(snap, p, meta, vip_index, now)
                    }
                    _ => {
                        self.count(Stat::PassVipIcmp);
                        Verdict::Pass
                    }
                };
            }
            if meta.frag == Frag::Later {
                self.count(Stat::DropVipFragment);
                return Verdict::Drop;
            }
            let Some((si, svc)) = snap.service_in(entry, meta.proto, meta.dport) else {
                self.count(Stat::PassVipNoService);
                return Verdict::Pass;
            };
            if svc.disabled {
                self.count(Stat::PassServiceDisabled);
                return Verdict::Pass;
            }
            if let Some(o) = &snap.carp
                && !Self::carp_owns(o, snap, p, meta)
            {
                self.count(Stat::DropCarpNotOwner);
                return Verdict::Drop;
            }
            // NAT forwards like a router (pf's rdr goes through ip_forward): a packet whose
            // TTL runs out here is answered, never forwarded. DSR and tunnels deliver the
            // packet to a host that owns the VIP, as Katran and IPVS-DR do, untouched.
            if svc.forward == Forward::Nat && meta.ttl <= 1 {
                return self.time_exceeded(p, meta, now);
            }
            return self.inbound(snap, p, meta, si, svc, vip_index, now);
        }
        if snap.any_nat {
            if let Some(q) = meta.quoted {
                if let Some(&bi) = snap.by_host.get(&q.dst) {
                    if !Self::carp_ip_share(snap, p, meta) {
                        self.count(Stat::DropCarpNotOwner);
                        return Verdict::Drop;
                    }
                    return self.icmp_to_client(snap, p, meta, bi, now);
                }
            } else if let Some(&bi) = snap.by_host.get(&meta.src) {
                if !Self::carp_ip_share(snap, p, meta) {
                    self.count(Stat::DropCarpNotOwner);
                    return Verdict::Drop;
                }
                return self.outbound(snap, p, meta, bi, now);
            }
        }
        self.count(Stat::PassNotOurs);
        Verdict::Pass
    }

    /// Picks a backend host index for a new flow of `svc`, or `None` (no up host).
    fn pick(&mut self, snap: &Snapshot, meta: &Meta, svc: &Service) -> Option<u16> {
        let (ti, tab) = svc.active_table(&snap.tables)?;
        self.states.clear();
        // Only least-states reads the counts: gathering them is O(hosts) per new flow.
        if tab.scheduler.config().mode == balance::Mode::LeastStates {
            let counts = self.table.backend_states();
            self.states.extend(
                tab.hosts
                    .iter()
                    .map(|&h| counts.get(usize::from(h)).copied().unwrap_or(0)),
            );
        }
        let input = PickInput {
            client: meta.src,
            client_port: meta.sport,
            listen: meta.dst,
            listen_port: meta.dport,
            proto: meta.proto,
            flow_hash: u64::from(hash::directed_meta(self.cfg.hash_seed, meta)),
            states: &self.states,
        };
        let state = self.pick.get_mut(ti)?;
        let pos = tab.scheduler.pick(&input, state)?;
        tab.hosts.get(pos).copied()
    }

    #[allow(clippy::too_many_arguments)]
    fn inbound(
        &mut self,
        snap: &Snapshot,
        p: &mut Packet,
        meta: &Meta,
        si: u16,
        svc: &Service,
        vip_index: u16,
        now: u32,
    ) -> Verdict {
        let key = Key {
            proto: meta.proto,
            client: hash::addr16(meta.src),
            client_port: meta.sport,
            vip: vip_index,
            vip_port: meta.dport,
        };
        let session = Some(svc.session_timeout);
        let bytes = p.data().len();
        let mut created = false;
        let mut backend = None;
        if let Some(h) = self.table.lookup(now, &key) {
            let (b, bport) = match self.table.get(h) {
                Some(f) => (f.backend(), f.backend_port()),
                None => (u16::MAX, 0),
            };
            let alive = snap.flow_backend_live(svc, b);
            if alive {
                self.table.touch(now, h, Dir::Orig, meta.tcp_flags, session);
                self.count(Stat::FlowHit);
                backend = Some((b, bport));
            } else {
                self.table.remove(&key, true);
                self.count(Stat::FlowRescheduled);
            }
        }
        let (hi, bport) = match backend {
            Some(b) => b,
            None => {
                let Some(hi) = self.pick(snap, meta, svc) else {
                    self.count(Stat::DropNoBackend);
                    return Verdict::Drop;
                };
                let bport = svc.backend_port.unwrap_or(meta.dport);
                let new = NewFlow {
                    service: si,
                    backend: hi,
                    backend_port: bport,
                    tcp_flags: meta.tcp_flags,
                    one_sided: svc.forward.one_sided(),
                    session_timeout: session,
                    origin: Origin::Local,
                };
                match self.table.insert(now, &key, &new) {
                    Ok(_) => {
                        self.count(Stat::FlowNew);
                        created = true;
                    }
                    Err(InsertError::Full) => self.count(Stat::FlowStateless),
                    Err(InsertError::ReturnCollision) => {
                        self.count(Stat::DropReturnCollision);
                        return Verdict::Drop;
                    }
                    Err(InsertError::Exists(_)) => self.count(Stat::FlowHit),
                }
                (hi, bport)
            }
        };
        let Some(host) = snap.host(hi) else {
            self.count(Stat::DropNoBackend);
            return Verdict::Drop;
        };
        let Some(bmac) = host.mac else {
            self.count(Stat::DropBackendUnresolved);
            return Verdict::Drop;
        };
        if svc.forward == Forward::Nat {
            self.learn(p, meta.src);
        }
        let macs = Macs {
            dst: bmac,
            src: snap.link.mac,
        };
        let addr = host.addr;
        let v = match svc.forward {
            Forward::Nat => self.finish(
                rewrite::decrement_ttl(p.data_mut(), meta)
                    .and_then(|()| {
                        rewrite::nat_to_backend(p.data_mut(), meta, addr, bport, Some(&macs))
                    })
                    .map(|_| Stat::TxNatIn),
            ),
            Forward::Dsr => {
                self.finish(rewrite::dsr(p.data_mut(), meta, &macs).map(|_| Stat::TxDsr))
            }
            Forward::Ipip | Forward::Gue { .. } => {
                self.encap(snap, p, meta, svc.forward, addr, macs)
            }
        };
        if v == Verdict::Tx {
            self.account(si, hi, bytes, created);
        }
        v
    }

    fn finish(&mut self, res: Result<Stat, rewrite::Error>) -> Verdict {
        match res {
            Ok(s) => {
                self.count(s);
                Verdict::Tx
            }
            Err(e) => {
                self.rewrite_errors.add(e.index(), 1);
                self.count(Stat::DropRewrite);
                Verdict::Drop
            }
        }
    }

    fn encap(
        &mut self,
        snap: &Snapshot,
        p: &mut Packet,
        meta: &Meta,
        fwd: Forward,
        backend: IpAddr,
        macs: Macs,
    ) -> Verdict {
        let tunnel = match fwd {
            Forward::Gue { port } => Tunnel::Gue { port },
            _ => Tunnel::Ipip,
        };
        let src = match ip_af(backend) {
            Af::V4 => snap.link.tunnel_src_v4,
            Af::V6 => snap.link.tunnel_src_v6,
        };
        let Some(src) = src else {
            self.count(Stat::DropNoTunnelSource);
            return Verdict::Drop;
        };
        let outer = Outer {
            tunnel,
            src,
            dst: backend,
            mtu: snap.link.mtu,
            macs: Some(macs),
        };
        let entropy = hash::directed_meta(self.cfg.hash_seed, meta);
        let (buf, start, len) = p.raw_mut();
        match encap::encap(buf, start, len, meta, &outer, entropy) {
            Ok((s, l)) => {
                if p.set_bounds(s, l) {
                    self.count(Stat::TxEncap);
                    Verdict::Tx
                } else {
                    self.count(Stat::DropRewrite);
                    Verdict::Drop
                }
            }
            Err(rewrite::Error::TooBig) => {
                let mtu = encap::inner_mtu(&outer);
                let kind = IcmpError::TooBig { mtu };
                self.icmp_reply(p, meta, kind, Stat::TxIcmpTooBig, Stat::DropRewrite)
            }
            Err(e) => {
                self.rewrite_errors.add(e.index(), 1);
                self.count(Stat::DropRewrite);
                Verdict::Drop
            }
        }
    }

    /// The live flow owning a return key, with its VIP address (None: not one of ours).
    #[inline]
    fn return_flow(
        &mut self,
        snap: &Snapshot,
        rk: &ReturnKey,
        now: u32,
    ) -> Option<(flow::Handle, flow::Flow, IpAddr)> {
        let h = self.table.lookup_return(now, rk)?;
        let f = self.table.get(h).copied()?;
        let vip = snap.vips.get(usize::from(f.key().vip)).copied().flatten()?;
        Some((h, f, vip))
    }

    /// NAT return path: backend:port → client becomes VIP:port → client.
    fn outbound(
        &mut self,
        snap: &Snapshot,
        p: &mut Packet,
        meta: &Meta,
        bi: u16,
        now: u32,
    ) -> Verdict {
        if meta.frag == Frag::Later {
            self.count(Stat::PassNotOurs);
            return Verdict::Pass;
        }
        let rk = ReturnKey {
            proto: meta.proto,
            backend: bi,
            backend_port: meta.sport,
            client: hash::addr16(meta.dst),
            client_port: meta.dport,
        };
        let Some((h, f, vip)) = self.return_flow(snap, &rk, now) else {
            self.count(Stat::PassNotOurs);
            return Verdict::Pass;
        };
        let found = snap.flow_service(&f);
        let session = found.map(|(_, s)| s.session_timeout);
        self.table
            .touch(now, h, Dir::Reply, meta.tcp_flags, session);
        self.count(Stat::FlowReturnHit);
        let Some(dst) = self.neighbor(snap, meta.dst) else {
            self.count(Stat::DropNoNeighbor);
            return Verdict::Drop;
        };
        let macs = Macs {
            dst,
            src: snap.link.mac,
        };
        let bytes = p.data().len();
        // Forwarded like a router: a backend's reply with TTL 1 is dropped and counted
        // (drop_rewrite_ttl_expired), never answered from the client's address.
        let res = rewrite::decrement_ttl(p.data_mut(), meta)
            .and_then(|()| {
                rewrite::nat_to_client(p.data_mut(), meta, vip, f.key().vip_port, Some(&macs))
            })
            .map(|_| Stat::TxNatOut);
        let v = self.finish(res);
        if v == Verdict::Tx {
            // The flow's service index is the one of the snapshot that created it; a reload
            // may have moved it, so the service is found again by VIP, protocol and port.
            let si = found.map_or(u16::MAX, |(si, _)| si);
            self.account(si, bi, bytes, false);
        }
        v
    }

    /// An ICMP error sent to the VIP about a packet the VIP sent to a client (quoted: VIP:port
    /// → client:port): forwarded to the flow's backend.
    fn icmp_to_backend(
        &mut self,
        snap: &Snapshot,
        p: &mut Packet,
        meta: &Meta,
        vip_index: u16,
        now: u32,
    ) -> Verdict {
        let Some(q) = meta.quoted else {
            self.count(Stat::PassVipIcmp);
            return Verdict::Pass;
        };
        let key = Key {
            proto: q.proto,
            client: hash::addr16(q.dst),
            client_port: q.dport,
            vip: vip_index,
            vip_port: q.sport,
        };
        let Some(h) = self.table.lookup(now, &key) else {
            self.count(Stat::PassVipIcmp);
            return Verdict::Pass;
        };
        let Some(f) = self.table.get(h).copied() else {
            self.count(Stat::PassVipIcmp);
            return Verdict::Pass;
        };
        let Some(host) = snap.host(f.backend()) else {
            self.count(Stat::DropNoBackend);
            return Verdict::Drop;
        };
        let Some(bmac) = host.mac else {
            self.count(Stat::DropBackendUnresolved);
            return Verdict::Drop;
        };
        let macs = Macs {
            dst: bmac,
            src: snap.link.mac,
        };
        let svc_nat = snap
            .flow_service(&f)
            .is_some_and(|(_, s)| s.forward == Forward::Nat);
        let res = if svc_nat {
            rewrite::decrement_ttl(p.data_mut(), meta)
                .and_then(|()| {
                    rewrite::nat_icmp_to_backend(
                        p.data_mut(),
                        meta,
                        host.addr,
                        f.backend_port(),
                        Some(&macs),
                    )
                })
                .map(|_| Stat::TxIcmpToBackend)
        } else {
            rewrite::dsr(p.data_mut(), meta, &macs).map(|_| Stat::TxIcmpToBackend)
        };
        self.finish(res)
    }

    /// An ICMP error about a packet a client sent to a backend (quoted: client → backend:port),
    /// from the backend or a router on the way: sent to the client as if about the VIP.
    fn icmp_to_client(
        &mut self,
        snap: &Snapshot,
        p: &mut Packet,
        meta: &Meta,
        bi: u16,
        now: u32,
    ) -> Verdict {
        let Some(q) = meta.quoted else {
            self.count(Stat::PassNotOurs);
            return Verdict::Pass;
        };
        let rk = ReturnKey {
            proto: q.proto,
            backend: bi,
            backend_port: q.dport,
            client: hash::addr16(q.src),
            client_port: q.sport,
        };
        let Some((_, f, vip)) = self.return_flow(snap, &rk, now) else {
            self.count(Stat::PassNotOurs);
            return Verdict::Pass;
        };
        let Some(dst) = self.neighbor(snap, meta.dst) else {
            self.count(Stat::DropNoNeighbor);
            return Verdict::Drop;
        };
        let macs = Macs {
            dst,
            src: snap.link.mac,
        };
        let res = rewrite::decrement_ttl(p.data_mut(), meta)
            .and_then(|()| {
                rewrite::nat_icmp_to_client(p.data_mut(), meta, vip, f.key().vip_port, Some(&macs))
            })
            .map(|_| Stat::TxIcmpToClient);
        self.finish(res)
    }

    /// Answers a packet to a NAT service whose TTL ran out with ICMP time exceeded from the
    /// VIP, within [`ICMP_PER_SECOND`] replies a second; the rest are dropped and counted.
    #[cold]
    fn time_exceeded(&mut self, p: &mut Packet, meta: &Meta, now: u32) -> Verdict {
        if now != self.icmp_second {
            self.icmp_second = now;
            self.icmp_left = ICMP_PER_SECOND;
        }
        if self.icmp_left == 0 {
            self.count(Stat::DropTtlExceeded);
            return Verdict::Drop;
        }
        self.icmp_left -= 1;
        let (sent, refused) = (Stat::TxIcmpTimeExceeded, Stat::DropTtlExceeded);
        self.icmp_reply(p, meta, IcmpError::TimeExceeded, sent, refused)
    }

    /// Replaces the packet by the ICMP error `kind` about it (from its destination, back to
    /// its source), counted as `sent`; a packet that may not be answered is dropped, counted
    /// by the reason and as `refused`.
    fn icmp_reply(
        &mut self,
        p: &mut Packet,
        meta: &Meta,
        kind: IcmpError,
        sent: Stat,
        refused: Stat,
    ) -> Verdict {
        match encap::icmp_error(p.data(), meta, kind, &mut self.too_big) {
            Ok(n) => {
                let (ts, link) = (p.ts_ns, p.link);
                if p.fill(&self.too_big[..n], ts, link) {
                    self.count(sent);
                    Verdict::Tx
                } else {
                    self.count(Stat::DropRewrite);
                    Verdict::Drop
                }
            }
            Err(e) => {
                self.rewrite_errors.add(e.index(), 1);
                self.count(refused);
                Verdict::Drop
            }
        }
    }
}

/// Time-exceeded replies a worker sends per second at most (Linux's default
/// `net.ipv4.icmp_msgs_per_sec` is 1000 for the whole host).
pub const ICMP_PER_SECOND: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::dataplane::snapshot::{HostStates, Link};
    use crate::dataplane::state;
    use std::collections::HashMap;

    /// An Ethernet/IPv4/UDP frame (valid IP checksum, no UDP checksum) with `payload` bytes.
    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
        let ulen = 8 + payload;
        let mut f = vec![2, 0, 0, 0, 0, 0xfe, 2, 0, 0, 0, 0xc1, 1, 8, 0];
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + ulen) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let mut acc: u32 = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        ip[10..12].copy_from_slice(&(!(acc as u16)).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&(ulen as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend(std::iter::repeat_n(b'x', payload));
        f
    }

    /// `f` with its IPv4 TTL set to `ttl` and the header checksum recomputed.
    fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
        f[14 + 8] = ttl;
        f[24..26].fill(0);
        let c = crate::wire::checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn time_exceeded_replies_are_limited_per_second() {
        let (mut w, _cell, _cfg) = traffic_worker(TRAFFIC_CONF);
        let last_hop = with_ttl(udp([198, 18, 9, 1], 4000, [198, 18, 0, 10], 53, 4), 1);
        let frames = vec![last_hop.clone(); ICMP_PER_SECOND as usize + 5];
        let out = run(&mut w, &frames, 7);
        let sent = out.iter().filter(|(v, _)| *v == Verdict::Tx).count();
        assert_eq!(sent, ICMP_PER_SECOND as usize);
        assert!(
            out.iter()
                .all(|(v, f)| *v == Verdict::Tx && f[14 + 9] == 1 || *v == Verdict::Drop)
        );
        assert_eq!(w.stats.get(Stat::DropTtlExceeded.index()), 5);
        assert_eq!(w.flows().len(), 0, "an expired packet creates no flow");
        // The next second has a new budget; TTL 2 is forwarded with TTL 1.
        let out = run(
            &mut w,
            &[
                last_hop,
                with_ttl(udp([198, 18, 9, 1], 4000, [198, 18, 0, 10], 53, 4), 2),
            ],
            8,
        );
        assert_eq!(out[0].0, Verdict::Tx);
        assert_eq!(out[1].0, Verdict::Tx);
        assert_eq!(out[1].1[14 + 8], 1);
        assert_eq!(
            w.stats.get(Stat::TxIcmpTimeExceeded.index()),
            ICMP_PER_SECOND as u64 + 1
        );
        assert_eq!(w.stats.get(Stat::TxNatIn.index()), 1);
    }

    const TRAFFIC_CONF: &str = "table <t> { 198.18.1.1 lladdr \"02:00:00:00:01:01\", \
         198.18.1.2 lladdr \"02:00:00:00:01:02\" }\n\
         redirect dns { listen on 198.18.0.10 udp port 53\n forward to <t> port 5353 check icmp }\n";

    fn traffic_worker(text: &str) -> (Worker, Arc<SnapshotCell>, Config) {
        let cfg = crate::config::parse_str("t.conf", text, &[]).unwrap();
        let snap = Snapshot::build(&cfg, &HostStates::default(), Link::default(), None).unwrap();
        let cell = Arc::new(SnapshotCell::from_pointee(snap));
        let w = Worker::new(
            WorkerConfig::default(),
            cell.clone(),
            Arc::new(ArrayQueue::new(1024)),
            None,
        )
        .unwrap();
        (w, cell, cfg)
    }

    fn run(w: &mut Worker, frames: &[Vec<u8>], now: u32) -> Vec<(Verdict, Vec<u8>)> {
        let mut b = Batch::new(frames.len().max(1));
        for f in frames {
            assert!(b.push(f, 0, LinkType::Ethernet));
        }
        w.process(&mut b, now);
        b.iter().map(|p| (p.verdict, p.data().to_vec())).collect()
    }

    #[test]
    fn traffic_per_service_and_host_exact() {
        let (mut w, cell, cfg) = traffic_worker(TRAFFIC_CONF);
        // 3 clients, 2 queries each (20- and 30-byte payloads): 3 flows, 6 packets.
        let mut frames = Vec::new();
        for c in 1..=3u8 {
            frames.push(udp([198, 19, 0, c], 4000, [198, 18, 0, 10], 53, 20));
            frames.push(udp([198, 19, 0, c], 4000, [198, 18, 0, 10], 53, 30));
        }
        // Not a service (other port) and not ours: never counted.
        frames.push(udp([198, 19, 0, 9], 4000, [198, 18, 0, 10], 54, 20));
        frames.push(udp([198, 19, 0, 9], 4000, [198, 18, 0, 99], 53, 20));
        let out = run(&mut w, &frames, 10);
        let tx: Vec<&(Verdict, Vec<u8>)> = out.iter().filter(|o| o.0 == Verdict::Tx).collect();
        assert_eq!(tx.len(), 6);
        let in_bytes: u64 = frames[..6].iter().map(|f| f.len() as u64).sum();
        let r = w.traffic(true);
        assert_eq!(r.services.len(), 1);
        let (id, t) = &r.services[0];
        assert_eq!(id.redirect, "dns");
        assert_eq!((id.proto, id.port_lo, id.port_hi), (17, 53, 53));
        assert_eq!(
            *t,
            Traffic {
                packets: 6,
                bytes: in_bytes,
                flows: 3,
                states: 3
            }
        );
        // The hosts' figures add up to the service's, and each matches the frames it got.
        let mut per_host: HashMap<IpAddr, Traffic> = HashMap::new();
        for (v, f) in &out {
            if *v == Verdict::Tx {
                let dst = IpAddr::from([f[30], f[31], f[32], f[33]]);
                let e = per_host.entry(dst).or_default();
                e.packets += 1;
                e.bytes += f.len() as u64;
            }
        }
        assert_eq!(r.hosts.len(), 2);
        let mut sum = Traffic::default();
        for (a, t) in &r.hosts {
            let want = per_host.get(a).copied().unwrap_or_default();
            assert_eq!((t.packets, t.bytes), (want.packets, want.bytes), "{a}");
            assert_eq!(t.flows, t.states, "{a}");
            sum.merge(t);
        }
        assert_eq!((sum.packets, sum.flows, sum.states), (6, 3, 3));
        // Without the scan: the same figures, no per-service live count; hosts keep theirs.
        let quick = w.traffic(false);
        assert_eq!(quick.services[0].1.states, 0);
        assert_eq!(quick.services[0].1.flows, 3);
        assert_eq!(quick.hosts, r.hosts);

        // An answer from the backend of client 1 (NAT return path): one more packet for the
        // service and that host, no new flow.
        let b1 = IpAddr::from([out[0].1[30], out[0].1[31], out[0].1[32], out[0].1[33]]);
        let IpAddr::V4(b1v4) = b1 else { unreachable!() };
        let answer = udp(b1v4.octets(), 5353, [198, 19, 0, 1], 4000, 40);
        let o = run(&mut w, std::slice::from_ref(&answer), 11);
        assert_eq!(o[0].0, Verdict::Tx);
        let r2 = w.traffic(true);
        assert_eq!(r2.services[0].1.packets, 7);
        assert_eq!(r2.services[0].1.bytes, in_bytes + answer.len() as u64);
        assert_eq!(r2.services[0].1.flows, 3);
        let h = r2.hosts.iter().find(|h| h.0 == b1).unwrap().1;
        let h0 = r.hosts.iter().find(|h| h.0 == b1).unwrap().1;
        assert_eq!(h.packets, h0.packets + 1);
        assert_eq!(h.bytes, h0.bytes + answer.len() as u64);

        // A reload adds a redirect before "dns": its index moves, its figures follow it; the
        // new service starts at zero; a host that left loses its slot.
        let text2 = "table <u> { 198.18.1.3 lladdr \"02:00:00:00:01:03\" }\n\
            redirect ntp { listen on 198.18.0.11 udp port 123\n forward to <u> check icmp }\n"
            .to_string()
            + TRAFFIC_CONF;
        let cfg2 = crate::config::parse_str("t.conf", &text2, &[]).unwrap();
        let prev = cell.load_full();
        let s2 = Snapshot::build(&cfg2, &HostStates::default(), Link::default(), Some(&prev));
        cell.store(Arc::new(s2.unwrap()));
        let o = run(
            &mut w,
            &[udp([198, 19, 0, 7], 4000, [198, 18, 0, 11], 123, 48)],
            12,
        );
        assert_eq!(o[0].0, Verdict::Tx);
        let r3 = w.traffic(true);
        let dns = r3
            .services
            .iter()
            .find(|s| s.0.redirect == "dns")
            .unwrap()
            .1;
        let ntp = r3
            .services
            .iter()
            .find(|s| s.0.redirect == "ntp")
            .unwrap()
            .1;
        assert_eq!((dns.packets, dns.flows), (7, 3));
        assert_eq!((ntp.packets, ntp.flows, ntp.states), (1, 1, 1));
        let h3 = r3
            .hosts
            .iter()
            .find(|h| h.0 == IpAddr::from([198, 18, 1, 3]))
            .unwrap()
            .1;
        assert_eq!((h3.packets, h3.flows, h3.states), (1, 1, 1));
        drop(cfg);
    }

    #[test]
    fn commands_insert_and_remove_synced_flows_without_announcing_them() {
        let cfg = crate::config::parse_str(
            "t.conf",
            "flow table size 1024\ntable <t> { 198.18.1.1 lladdr \"02:00:00:00:01:01\" }\n\
             redirect r { listen on 198.18.0.10 udp port 53\n forward to <t> check icmp }\n",
            &[],
        )
        .unwrap();
        let snap = Snapshot::build(&cfg, &HostStates::default(), Link::default(), None).unwrap();
        let cell = Arc::new(SnapshotCell::from_pointee(snap));
        let events = Arc::new(ArrayQueue::new(16));
        let mut w = Worker::new(
            WorkerConfig {
                flow: FlowTableConfig {
                    capacity: 1024,
                    ..Default::default()
                },
                ..Default::default()
            },
            cell,
            events.clone(),
            None,
        )
        .unwrap();
        let q = Arc::new(ArrayQueue::new(4));
        w.set_commands(q.clone());
        let key = Key {
            proto: 17,
            client: hash::addr16("198.19.0.1".parse().unwrap()),
            client_port: 5000,
            vip: 0,
            vip_port: 53,
        };
        let id = flow::FlowId { creator: 1, id: 42 };
        let flow = NewFlow {
            service: 0,
            backend: 0,
            backend_port: 53,
            tcp_flags: 0,
            one_sided: false,
            session_timeout: Some(600),
            origin: Origin::Sync(id, state::create(17, 0)),
        };
        q.push(Command::Insert { key, flow }).unwrap();
        w.apply_commands(10);
        assert_eq!(w.flows().len(), 1);
        assert!(events.is_empty(), "a synced flow is not announced back");
        q.push(Command::Remove { key }).unwrap();
        w.apply_commands(11);
        assert_eq!(w.flows().len(), 0);
        assert!(events.is_empty());
    }
}
