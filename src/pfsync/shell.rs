//! The pfsync I/O shell: one control-plane thread around the sans-IO [`Replicator`].
//!
//! ```text
//!  workers ──flow::Event──► ArrayQueue ──► Glue::drain_local ──► Replicator::handle_local
//!                                             └─► Handles::tap (a copy: `show states`)
//!                                                                  │ poll_transmit
//!  raw IPv4 socket, proto 240 ◄──────────── send (TTL 255) ◄───────┘
//!        │ recv: IPv4 header checked (TTL 255, syncpeer source), payload
//!        └──────────────► Replicator::handle_packet ──► poll_event ──► Glue::apply_events
//!                                   Insert/Update/Delete/Clear ──► worker Command queues (ALL)
//!                                                              └─► Handles::tap (`show states`)
//!                                   Demote(n) ──► channel to the carp groups
//! ```
//!
//! **Transport** (spec §3.1, if_pfsync.c `pfsync_sendout`, `pfsync_input`): a raw IPv4 socket
//! for protocol 240. Sends go to 224.0.0.240 or the unicast `syncpeer` with TTL 255 (both
//! `IP_TTL` and `IP_MULTICAST_TTL`) and TOS LOWDELAY; multicast loopback is off so a node never
//! hears itself. Receives are accepted only with TTL 255 (else `badttl`), only from the
//! `syncpeer` when one is configured (else `drop_not_peer`), and only from `syncdev`: the socket
//! is bound to it with `SO_BINDTODEVICE`, and Linux's raw-socket demultiplexer
//! (`raw_v4_match`) then never delivers a packet that arrived on another interface, which is
//! pf's ifindex check done by the kernel. The group is joined on `syncdev` (by index). OpenBSD
//! has no authentication on pfsync; use a dedicated link (pfsync.4).
//!
//! **Authentication (carpio extension, off by default)**: with [`ShellConfig::auth_key`] set,
//! every packet carries a 32-byte HMAC-SHA256 (RFC 2104, FIPS 180-4) of the pfsync bytes after
//! them, outside the pfsync header's `len`; a packet whose trailer is missing or wrong is
//! dropped (`drop_bad_auth`) before the replicator sees it, and the trailer is stripped
//! otherwise. Both nodes must share the key; an OpenBSD peer cannot take part.
//!
//! **Fan-out of synced flows to every worker**: which worker sees a flow's packets is decided
//! by the ingress fanout (RSS queue, AF_PACKET fanout hash), not by carpio, and a flow
//! replicated from a peer has not been seen here yet; so every Insert/Update is pushed to
//! *every* worker's command queue and each worker holds a copy. Copies that never see a packet
//! are refreshed by the owner's periodic updates and expire like any flow; when one worker
//! deletes a synced flow (its connection closed here), the shell removes the other workers'
//! copies too, without announcing anything. A worker whose queue is full (a bulk update brings
//! thousands of states at once) gets the rest from an ordered per-worker backlog on later turns.
//!
//! **Link and MTU**: the thread reads syncdev's MTU once (the pfsync packet size is the MTU less
//! the IP header) and checks its link every 500 ms, telling the replicator of changes (a down
//! link demotes carp by 1 while a bulk update is wanted, if_pfsync.c `pfsync_syncdev_state`).
//!
//! **Time**: the thread reads `Instant::now()` against [`ShellConfig::epoch`], which must be the
//! epoch of the workers' `now_secs`; the replicator and [`Glue`] only see that `Duration`.
//!
//! Nothing here panics on network input: the IPv4 header is read with checked slicing, the
//! payload is validated by `wire::pfsync`, and every reject is a named counter ([`Counter`],
//! [`convert::Reject`], `wire::pfsync::Reject`).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

use super::convert::{self, Creators};
use super::replicator::{Event, LocalEvent, Replicator, ReplicatorConfig, Stat};
use super::state::FlowId;
use crate::config::model::PfsyncConfig;
use crate::counters::Counters;
use crate::dataplane::flow::{self, EventKind, Key};
use crate::dataplane::snapshot::SnapshotCell;
use crate::dataplane::worker::Command;
use crate::wire::pfsync::Reject as WireReject;

/// `IPPROTO_PFSYNC`.
pub const IPPROTO_PFSYNC: u8 = 240;
/// `INADDR_PFSYNC_GROUP`.
pub const PFSYNC_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 240);
/// `PFSYNC_DFLTTL`: sent with, and required on receive.
pub const PFSYNC_TTL: u8 = 255;
/// `IPTOS_LOWDELAY`, as `pfsync_sendout` sets.
const IPTOS_LOWDELAY: u32 = 0x10;

// IPv4 header offsets (RFC 791) of the fields the receive check reads.
const IP_VER_IHL: usize = 0;
const IP_TOTAL_LEN: usize = 2;
const IP_TTL: usize = 8;
const IP_PROTO: usize = 9;
const IP_SRC: usize = 12;
const IP_MIN_HEADER: usize = 20;

crate::named_counters! {
    /// The shell's own counters (the replicator's are [`Stat`]).
    pub enum Counter {
        /// Packets received on the raw socket (before any check).
        Received = "shell_received",
        /// Packets passed to the replicator.
        Accepted = "shell_accepted",
        /// Packets sent.
        Sent = "shell_sent",
        /// TTL not 255 (pfsyncstats `badttl`).
        BadTtl = "badttl",
        /// Source is not the configured `syncpeer`.
        NotPeer = "drop_not_peer",
        /// Not a well-formed IPv4 header (short, bad version or IHL, total length past the
        /// bytes read, not protocol 240).
        BadIpHeader = "drop_bad_ip_header",
        /// sendto failed.
        SendError = "send_errors",
        /// recv failed with something other than a timeout.
        RecvError = "recv_errors",
        /// A worker's command queue and the shell's backlog for it were both full; the command
        /// was dropped (the next update or bulk update repairs it).
        CommandQueueFull = "drop_command_queue_full",
        /// Commands parked in the backlog because a worker's queue was full.
        CommandBacklogged = "command_backlogged",
        /// Commands pushed to worker queues.
        Commands = "commands",
        /// Flow events taken from the data plane.
        LocalEvents = "local_events",
        /// A Release for a deferred packet: the data plane does not defer yet.
        ReleaseIgnored = "release_ignored",
        /// Demotion deltas that could not be delivered (no receiver).
        DemoteLost = "demote_lost",
        /// Authentication on and the HMAC trailer missing or wrong.
        BadAuth = "drop_bad_auth",
        /// The sync link came up / went down (`IFF_UP | IFF_RUNNING` on syncdev).
        LinkUp = "link_up",
        LinkDown = "link_down",
        /// Bytes of pfsync packets sent (IP payload, HMAC trailer included).
        SentBytes = "shell_sent_bytes",
        /// A flow event could not be copied to [`Handles::tap`] (full): the daemon's
        /// `show states` mirror misses it; replication does not.
        TapFull = "drop_tap_full",
    }
}

/// Plain configuration of the shell.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// The replicator's configuration; `creatorid` is this node's pfsync host id.
    pub replicator: ReplicatorConfig,
    /// Interface the sockets are bound to (sends and receives); the group is joined on it.
    pub syncdev: Option<String>,
    /// Unicast peer instead of the multicast group; packets from other sources are dropped.
    pub syncpeer: Option<Ipv4Addr>,
    /// Network namespace (`/run/netns/NAME`) the thread enters first (tests, labs).
    pub netns: Option<String>,
    /// The workers' time epoch (their `now_secs` are whole seconds since it).
    pub epoch: Instant,
    /// Longest sleep: how often the data plane's event queue is drained when nothing else
    /// wakes the thread.
    pub poll_interval: Duration,
    /// carpio extension: HMAC-SHA256 key authenticating every packet (see the module doc).
    /// `None` (the default) is OpenBSD's unauthenticated pfsync.
    pub auth_key: Option<Vec<u8>>,
}

impl ShellConfig {
    /// The shell configuration of a config file's `pfsync` block, with this node's creator id
    /// (pf's hostid: non-zero, distinct per node) and the workers' epoch.
    pub fn from_config(cfg: &PfsyncConfig, creatorid: u32, epoch: Instant) -> io::Result<Self> {
        let syncpeer = match cfg.syncpeer {
            None => None,
            Some(IpAddr::V4(a)) if !a.is_broadcast() => Some(a),
            Some(a) => {
                // pfsync's syncpeer is IPv4 only and never broadcast (if_pfsync.c
                // pfsync_ioctl SIOCSETPFSYNC).
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("pfsync syncpeer {a} must be an IPv4 unicast or group address"),
                ));
            }
        };
        let mut replicator = ReplicatorConfig::new(creatorid);
        replicator.maxupd = cfg.maxupd;
        replicator.defer = cfg.defer;
        Ok(Self {
            replicator,
            syncdev: cfg.syncdev.clone(),
            syncpeer,
            netns: None,
            epoch,
            poll_interval: Duration::from_millis(10),
            auth_key: None,
        })
    }

    /// Where packets go: the peer, or the group.
    pub fn destination(&self) -> Ipv4Addr {
        match self.syncpeer {
            Some(a) if !a.is_unspecified() => a,
            _ => PFSYNC_GROUP,
        }
    }
}

/// The data plane's side of the shell.
#[derive(Clone)]
pub struct Handles {
    /// The queue every worker's flow table pushes its events into.
    pub events: Arc<ArrayQueue<flow::Event>>,
    /// Each worker's command queue, indexed by core.
    pub commands: Vec<Arc<ArrayQueue<Command>>>,
    /// The current snapshot (VIP and host addresses ↔ indices).
    pub snapshot: Arc<SnapshotCell>,
    /// Where carp demotion deltas go (the carp groups' owner adds them to the pfsync group).
    pub demote: Option<crossbeam::channel::Sender<i32>>,
    /// Where a copy of every flow event taken from `events` goes (the daemon's `show states`
    /// mirror), so the data plane's queue has a single consumer; a full tap counts
    /// `drop_tap_full` and never holds replication back.
    pub tap: Option<Arc<ArrayQueue<flow::Event>>>,
}

/// The sans-IO glue between the data plane's queues and the [`Replicator`]: everything the
/// shell thread does except the socket and the clock, so two nodes can be tested without root.
pub struct Glue {
    pub replicator: Replicator,
    handles: Handles,
    creators: Creators,
    /// Flow-table key of every flow the data plane or a peer told us about, for deletes, and
    /// whether it was pushed to every worker (synced) rather than living in one (local).
    keys: HashMap<FlowId, (Key, bool)>,
    /// Per worker, commands its full queue could not take yet (a bulk update brings thousands
    /// of states at once; a worker applies `COMMANDS_PER_BATCH` per batch). Kept in order and
    /// retried first, so a Remove never overtakes its Insert.
    backlog: Vec<VecDeque<Command>>,
    counters: Counters<{ Counter::COUNT }>,
    rejects: Counters<{ convert::Reject::COUNT }>,
}

impl Glue {
    pub fn new(cfg: ReplicatorConfig, handles: Handles) -> Self {
        Self {
            creators: Creators::new(cfg.creatorid),
            replicator: Replicator::new(cfg),
            backlog: handles.commands.iter().map(|_| VecDeque::new()).collect(),
            handles,
            keys: HashMap::new(),
            counters: Counters::default(),
            rejects: Counters::default(),
        }
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.counters.get(c.index())
    }

    pub fn reject(&self, r: convert::Reject) -> u64 {
        self.rejects.get(r.index())
    }

    pub fn creators(&self) -> &Creators {
        &self.creators
    }

    fn count(&mut self, c: Counter) {
        self.counters.add(c.index(), 1);
    }

    fn count_reject(&mut self, r: convert::Reject) {
        self.rejects.add(r.index(), 1);
    }

    /// Takes up to `budget` flow events from the data plane into the replicator; returns how
    /// many were taken.
    pub fn drain_local(&mut self, now: Duration, budget: usize) -> usize {
        let snap = self.handles.snapshot.load_full();
        let mut n = 0;
        while n < budget {
            let Some(ev) = self.handles.events.pop() else {
                break;
            };
            n += 1;
            self.count(Counter::LocalEvents);
            if let Some(tap) = &self.handles.tap
                && tap.push(ev).is_err()
            {
                self.counters.add(Counter::TapFull.index(), 1);
            }
            let Some(creatorid) = self.creators.id_of(ev.flow.id().creator) else {
                self.count_reject(convert::Reject::UnknownCreator);
                continue;
            };
            let id = FlowId {
                creatorid,
                id: ev.flow.id().id,
            };
            if ev.kind == EventKind::Delete {
                self.replicator.handle_local(now, LocalEvent::Delete(id));
                if let Some((key, true)) = self.keys.remove(&id) {
                    // A synced flow's copies live in every worker: drop the others.
                    self.push_all(Command::Remove { key }, Some(ev.core));
                }
                continue;
            }
            let state = match convert::to_state(&ev.flow, &snap, &self.creators) {
                Ok(s) => s,
                Err(r) => {
                    self.count_reject(r);
                    continue;
                }
            };
            // A synced flow keeps its mark: its copies are still in every worker.
            self.keys.entry(id).or_insert((ev.flow.key(), false));
            let le = match ev.kind {
                EventKind::Insert => LocalEvent::Insert {
                    flow: state,
                    defer: false,
                },
                _ => LocalEvent::Update(state),
            };
            self.replicator.handle_local(now, le);
        }
        n
    }

    /// A pfsync payload (after the IPv4 header) that passed the transport checks.
    pub fn handle_packet(&mut self, now: Duration, payload: &[u8], from: IpAddr) {
        self.count(Counter::Accepted);
        self.replicator.handle_packet(now, payload, from);
    }

    /// Runs the replicator's timers if due.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.replicator.poll_timeout().is_some_and(|t| t <= now) {
            self.replicator.handle_timeout(now);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.replicator.poll_transmit()
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        self.replicator.poll_timeout()
    }

    /// Turns every pending replicator event into worker commands and demotion deltas.
    pub fn apply_events(&mut self) {
        let snap = self.handles.snapshot.load_full();
        while let Some(ev) = self.replicator.poll_event() {
            match ev {
                Event::Insert(s) | Event::Update(s) => {
                    match convert::to_flow(&s, &snap, &mut self.creators) {
                        Ok((key, flow)) => {
                            if let Some((old, _)) = self.keys.insert(s.id, (key, true))
                                && old != key
                            {
                                self.push_all(Command::Remove { key: old }, None);
                                self.tap_removed(s.id, old);
                            }
                            self.push_all(Command::Insert { key, flow }, None);
                            let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
                            self.tap(
                                EventKind::Insert,
                                flow::Flow::detached(&key, &flow, secs(s.created), secs(s.expire)),
                            );
                        }
                        Err(r) => self.count_reject(r),
                    }
                }
                Event::Delete(id) => {
                    if let Some((key, _)) = self.keys.remove(&id) {
                        self.push_all(Command::Remove { key }, None);
                        self.tap_removed(id, key);
                    }
                }
                Event::Clear { creatorid } => {
                    let gone: Vec<FlowId> = self
                        .keys
                        .keys()
                        .filter(|id| id.creatorid == creatorid)
                        .copied()
                        .collect();
                    for id in gone {
                        if let Some((key, _)) = self.keys.remove(&id) {
                            self.push_all(Command::Remove { key }, None);
                            self.tap_removed(id, key);
                        }
                    }
                }
                Event::Release(_) => self.count(Counter::ReleaseIgnored),
                Event::Demote(n) => {
                    let sent = self
                        .handles
                        .demote
                        .as_ref()
                        .is_some_and(|tx| tx.send(n).is_ok());
                    if !sent {
                        self.count(Counter::DemoteLost);
                    }
                }
            }
        }
    }

    /// Copies a flow learned from (or removed by) a peer to [`Handles::tap`], so the daemon's
    /// `show states` lists it beside the workers' own (the workers do not announce synced
    /// flows). The event's `core` is [`SYNCED_CORE`]; its flow's creator index says whose it is.
    fn tap(&mut self, kind: EventKind, flow: flow::Flow) {
        if let Some(tap) = &self.handles.tap
            && tap
                .push(flow::Event {
                    kind,
                    core: SYNCED_CORE,
                    flow,
                })
                .is_err()
        {
            self.counters.add(Counter::TapFull.index(), 1);
        }
    }

    /// A Delete on the tap for the synced flow `id` stored under `key`: only its key and
    /// identity matter to the mirror.
    fn tap_removed(&mut self, id: FlowId, key: Key) {
        let Some(creator) = self.creators.index_of(id.creatorid) else {
            return;
        };
        let gone = flow::NewFlow {
            service: 0,
            backend: 0,
            backend_port: 0,
            tcp_flags: 0,
            one_sided: false,
            session_timeout: None,
            origin: flow::Origin::Sync(
                flow::FlowId { creator, id: id.id },
                crate::dataplane::state::create(key.proto, 0),
            ),
        };
        self.tap(EventKind::Delete, flow::Flow::detached(&key, &gone, 0, 0));
    }

    /// Pushes `cmd` to every worker's queue except `skip`'s, behind that worker's backlog.
    fn push_all(&mut self, cmd: Command, skip: Option<u8>) {
        self.flush_backlog();
        for (core, q) in self.handles.commands.iter().enumerate() {
            if skip.is_some_and(|s| usize::from(s) == core) {
                continue;
            }
            let Some(b) = self.backlog.get_mut(core) else {
                continue;
            };
            if b.is_empty() && q.push(cmd).is_ok() {
                self.counters.add(Counter::Commands.index(), 1);
            } else if b.len() < BACKLOG_MAX {
                b.push_back(cmd);
                self.counters.add(Counter::CommandBacklogged.index(), 1);
            } else {
                self.counters.add(Counter::CommandQueueFull.index(), 1);
            }
        }
    }

    /// Moves backlogged commands into worker queues that have room again; returns how many
    /// are still waiting.
    pub fn flush_backlog(&mut self) -> usize {
        let mut left = 0;
        for (q, b) in self.handles.commands.iter().zip(self.backlog.iter_mut()) {
            while let Some(cmd) = b.front().copied() {
                if q.push(cmd).is_err() {
                    break;
                }
                b.pop_front();
                self.counters.add(Counter::Commands.index(), 1);
            }
            left += b.len();
        }
        left
    }
}

/// The `core` of the flow events [`Glue`] puts on the tap for flows a peer sent (no worker
/// created them; every worker holds a copy).
pub const SYNCED_CORE: u8 = u8::MAX;

/// Commands the backlog holds per worker at most (a few MB; a full table's bulk update).
pub const BACKLOG_MAX: usize = 1 << 20;

/// Checks a received IPv4 packet as `pfsync_input` does and returns the pfsync payload and
/// source, or the counter that rejects it. `peer`: only this source is accepted.
pub fn check_ipv4(pkt: &[u8], peer: Option<Ipv4Addr>) -> Result<(&[u8], Ipv4Addr), Counter> {
    let hdr = pkt.get(..IP_MIN_HEADER).ok_or(Counter::BadIpHeader)?;
    let vi = hdr.get(IP_VER_IHL).copied().unwrap_or(0);
    let ihl = usize::from(vi & 0x0f) * 4;
    if vi >> 4 != 4 || ihl < IP_MIN_HEADER {
        return Err(Counter::BadIpHeader);
    }
    let total = hdr
        .get(IP_TOTAL_LEN..IP_TOTAL_LEN + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or(Counter::BadIpHeader)?;
    if hdr.get(IP_PROTO) != Some(&IPPROTO_PFSYNC) {
        return Err(Counter::BadIpHeader);
    }
    let payload = pkt.get(ihl..total).ok_or(Counter::BadIpHeader)?;
    if hdr.get(IP_TTL) != Some(&PFSYNC_TTL) {
        return Err(Counter::BadTtl);
    }
    let src = hdr
        .get(IP_SRC..IP_SRC + 4)
        .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        .ok_or(Counter::BadIpHeader)?;
    if peer.is_some_and(|p| !p.is_multicast() && !p.is_unspecified() && p != src) {
        return Err(Counter::NotPeer);
    }
    Ok((payload, src))
}

/// Length of the authentication trailer (HMAC-SHA256).
pub const AUTH_LEN: usize = 32;

fn auth_mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (RFC 2104 §2: longer keys are hashed), so this never fails.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()))
}

/// Appends the HMAC-SHA256 of `payload` under `key`.
pub fn auth_seal(key: &[u8], payload: &mut Vec<u8>) {
    let mut m = auth_mac(key);
    m.update(payload);
    payload.extend_from_slice(&m.finalize().into_bytes());
}

/// Checks and strips the trailer that [`auth_seal`] added (constant-time comparison).
pub fn auth_open<'a>(key: &[u8], pkt: &'a [u8]) -> Result<&'a [u8], Counter> {
    let split = pkt.len().checked_sub(AUTH_LEN).ok_or(Counter::BadAuth)?;
    let (payload, tag) = pkt.split_at_checked(split).ok_or(Counter::BadAuth)?;
    let mut m = auth_mac(key);
    m.update(payload);
    m.verify_slice(tag).map_err(|_| Counter::BadAuth)?;
    Ok(payload)
}

/// Counters the thread publishes after every loop iteration, readable from any thread.
struct Shared {
    shell: Vec<AtomicU64>,
    stats: Vec<AtomicU64>,
    wire: Vec<AtomicU64>,
    convert: Vec<AtomicU64>,
    /// Creator id of each creator index (0: not given out yet; pf never uses 0).
    creators: Vec<AtomicU64>,
}

fn atomics(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn load(v: &[AtomicU64], i: usize) -> u64 {
    // Relaxed: monotonic statistics, no other memory is published through them.
    v.get(i).map_or(0, |a| a.load(Ordering::Relaxed))
}

fn store(v: &[AtomicU64], i: usize, x: u64) {
    if let Some(a) = v.get(i) {
        a.store(x, Ordering::Relaxed);
    }
}

impl Shared {
    fn publish(&self, g: &Glue) {
        for c in Counter::ALL {
            store(&self.shell, c.index(), g.counter(*c));
        }
        for s in Stat::ALL {
            store(&self.stats, s.index(), g.replicator.stat(*s));
        }
        for r in WireReject::ALL {
            store(&self.wire, r.index(), g.replicator.rejects(*r));
        }
        for r in convert::Reject::ALL {
            store(&self.convert, r.index(), g.reject(*r));
        }
        for i in 0..g.creators.len() {
            let id = u8::try_from(i).ok().and_then(|i| g.creators.id_of(i));
            store(&self.creators, i, u64::from(id.unwrap_or(0)));
        }
    }
}

/// The running shell thread. Dropping it stops the thread and waits for it.
pub struct ShellHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
    shared: Arc<Shared>,
}

impl ShellHandle {
    pub fn counter(&self, c: Counter) -> u64 {
        load(&self.shared.shell, c.index())
    }
    pub fn stat(&self, s: Stat) -> u64 {
        load(&self.shared.stats, s.index())
    }
    pub fn wire_reject(&self, r: WireReject) -> u64 {
        load(&self.shared.wire, r.index())
    }
    pub fn convert_reject(&self, r: convert::Reject) -> u64 {
        load(&self.shared.convert, r.index())
    }

    /// The pfsync creator id behind a flow's creator index (0 is this node), once the thread
    /// has published it.
    pub fn creator_id(&self, index: u8) -> Option<u32> {
        u32::try_from(load(&self.shared.creators, usize::from(index)))
            .ok()
            .filter(|&id| id != 0)
    }

    /// Every counter of the shell, the replicator, the wire parser and the conversion, named
    /// as in their enums (`show counters` prefixes them).
    pub fn counter_values(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<(&'static str, u64)> = Vec::new();
        v.extend(Counter::ALL.iter().map(|c| (c.name(), self.counter(*c))));
        v.extend(Stat::ALL.iter().map(|s| (s.name(), self.stat(*s))));
        v.extend(
            WireReject::ALL
                .iter()
                .map(|r| (r.name(), self.wire_reject(*r))),
        );
        v.extend(
            convert::Reject::ALL
                .iter()
                .map(|r| (r.name(), self.convert_reject(*r))),
        );
        v
    }

    /// Stops the thread and returns how it ended.
    pub fn stop(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        // Release pairs with the thread's Acquire load: it sees the request on its next turn.
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("pfsync thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for ShellHandle {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Opens the raw socket as the module doc describes.
fn open_socket(cfg: &ShellConfig) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_PFSYNC))),
    )?;
    s.set_ttl_v4(u32::from(PFSYNC_TTL))?;
    s.set_multicast_ttl_v4(u32::from(PFSYNC_TTL))?;
    s.set_multicast_loop_v4(false)?;
    s.set_tos_v4(IPTOS_LOWDELAY)?;
    if let Some(dev) = &cfg.syncdev {
        s.bind_device(Some(dev.as_bytes()))?;
        let index = crate::sys::afxdp::ifindex(dev)?;
        if cfg.destination().is_multicast() {
            s.join_multicast_v4_n(&PFSYNC_GROUP, &InterfaceIndexOrAddress::Index(index))?;
        }
    }
    Ok(s)
}

/// Starts the shell thread: enters `cfg.netns` if set, opens the socket (errors are returned
/// here), announces the interface up to the replicator (which requests a bulk update and
/// demotes carp until it is in), then loops until the handle is stopped or dropped.
pub fn spawn(cfg: ShellConfig, handles: Handles) -> io::Result<ShellHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        shell: atomics(Counter::COUNT),
        stats: atomics(Stat::COUNT),
        wire: atomics(WireReject::COUNT),
        convert: atomics(convert::Reject::COUNT),
        creators: atomics(usize::from(u8::MAX) + 1),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let (stop2, shared2) = (stop.clone(), shared.clone());
    let thread = std::thread::Builder::new()
        .name("carpio-pfsync".into())
        .spawn(move || {
            let setup = (|| {
                if let Some(ns) = &cfg.netns {
                    crate::sys::netns::enter(ns)?;
                }
                open_socket(&cfg)
            })();
            let sock = match setup {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let kind = e.kind();
                    let _ = ready_tx.send(Err(e));
                    return Err(io::Error::new(kind, "pfsync shell setup failed"));
                }
            };
            run(&cfg, handles, sock, &stop2, &shared2)
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(ShellHandle {
            stop,
            thread: Some(thread),
            shared,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(io::Error::other("pfsync thread ended during setup")),
    }
}

/// How often the sync link's state is checked (pfsync reacts to link changes with carp
/// demotion, spec §3.6).
const LINK_POLL: Duration = Duration::from_millis(500);
/// Events taken from the data plane per loop iteration at most.
const DRAIN_BUDGET: usize = 65_536;
/// Largest IPv4 packet.
const RECV_BUF: usize = 65_535;

fn run(
    cfg: &ShellConfig,
    handles: Handles,
    mut sock: Socket,
    stop: &AtomicBool,
    shared: &Shared,
) -> io::Result<()> {
    let dest = SockAddr::from(SocketAddrV4::new(cfg.destination(), 0));
    let mut rc = cfg.replicator.clone();
    let dev = cfg.syncdev.as_deref();
    // The pfsync MTU is the syncdev MTU less the IP header (if_pfsync.c pfsync_sendout).
    if let Some(m) = dev.and_then(|d| crate::sys::ifinfo::mtu(d).ok()) {
        rc.mtu = usize::try_from(m)
            .unwrap_or(usize::MAX)
            .saturating_sub(IP_MIN_HEADER);
    }
    // Without a syncdev there is no link to watch: take it as up.
    let link_of = |d: &str| crate::sys::ifinfo::link_running(d).unwrap_or(false);
    let mut link = dev.is_none_or(link_of);
    let mut glue = Glue::new(rc, handles);
    let mut buf = vec![0u8; RECV_BUF];
    let now = || cfg.epoch.elapsed();
    glue.replicator.handle_up(now(), link);
    let mut next_link_check = now() + LINK_POLL;
    // Acquire pairs with ShellHandle::finish's Release store.
    while !stop.load(Ordering::Acquire) {
        let t = now();
        if let Some(d) = dev
            && t >= next_link_check
        {
            next_link_check = t + LINK_POLL;
            let up = link_of(d);
            if up != link {
                link = up;
                glue.count(if up {
                    Counter::LinkUp
                } else {
                    Counter::LinkDown
                });
                glue.replicator.handle_link(t, up);
            }
        }
        glue.drain_local(t, DRAIN_BUDGET);
        glue.handle_timeout(t);
        while let Some(mut p) = glue.poll_transmit() {
            if let Some(k) = &cfg.auth_key {
                auth_seal(k, &mut p);
            }
            match sock.send_to(&p, &dest) {
                Ok(n) => {
                    glue.count(Counter::Sent);
                    glue.counters.add(Counter::SentBytes.index(), n as u64);
                }
                Err(_) => glue.count(Counter::SendError),
            }
        }
        glue.apply_events();
        glue.flush_backlog();
        shared.publish(&glue);
        // Sleep in recv until a packet, the replicator's next timer or the poll interval.
        let wait = glue
            .poll_timeout()
            .map_or(cfg.poll_interval, |d| d.saturating_sub(now()))
            .clamp(Duration::from_millis(1), cfg.poll_interval);
        sock.set_read_timeout(Some(wait))?;
        match sock.read(&mut buf) {
            Ok(n) => {
                glue.count(Counter::Received);
                let pkt = buf.get(..n).unwrap_or(&[]);
                let checked =
                    check_ipv4(pkt, cfg.syncpeer).and_then(|(payload, src)| match &cfg.auth_key {
                        Some(k) => auth_open(k, payload).map(|p| (p, src)),
                        None => Ok((payload, src)),
                    });
                match checked {
                    Ok((payload, src)) => {
                        glue.handle_packet(now(), payload, IpAddr::V4(src));
                    }
                    Err(c) => glue.count(c),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => {
                glue.count(Counter::RecvError);
                // Do not spin on a persistent error.
                std::thread::sleep(cfg.poll_interval);
            }
        }
    }
    glue.replicator.handle_down(now());
    glue.apply_events();
    shared.publish(&glue);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip_packet(ttl: u8, proto: u8, src: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        let total = (20 + payload.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[8] = ttl;
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&[224, 0, 0, 240]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn ipv4_check_accepts_ttl_255_only() {
        let p = ip_packet(255, 240, [198, 18, 0, 1], b"abc");
        assert_eq!(
            check_ipv4(&p, None),
            Ok((&b"abc"[..], Ipv4Addr::new(198, 18, 0, 1)))
        );
        let p = ip_packet(64, 240, [198, 18, 0, 1], b"abc");
        assert_eq!(check_ipv4(&p, None), Err(Counter::BadTtl));
        let p = ip_packet(255, 17, [198, 18, 0, 1], b"abc");
        assert_eq!(check_ipv4(&p, None), Err(Counter::BadIpHeader));
    }

    #[test]
    fn auth_trailer_round_trips_and_rejects_tampering() {
        let key = b"sekrit";
        let mut p = b"pfsync payload".to_vec();
        auth_seal(key, &mut p);
        assert_eq!(p.len(), 14 + AUTH_LEN);
        assert_eq!(auth_open(key, &p), Ok(&b"pfsync payload"[..]));
        assert_eq!(auth_open(b"other", &p), Err(Counter::BadAuth));
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i] ^= 0x01;
            assert_eq!(
                auth_open(key, &q),
                Err(Counter::BadAuth),
                "flipped byte {i}"
            );
        }
        for n in 0..p.len() {
            assert_eq!(auth_open(key, &p[..n]), Err(Counter::BadAuth), "length {n}");
        }
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let mut v = b"what do ya want for nothing?".to_vec();
        auth_seal(b"Jefe", &mut v);
        assert_eq!(
            &v[28..],
            &[
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
                0x64, 0xec, 0x38, 0x43
            ]
        );
    }

    #[test]
    fn shell_config_from_the_pfsync_block() {
        let cfg = crate::config::parse_str(
            "t.conf",
            "pfsync { syncdev eth1, syncpeer 198.18.0.2, maxupd 64, defer }\n\
             table <t> { 198.18.1.1 }\n\
             redirect r { listen on 198.18.0.10 udp port 53\n forward to <t> check icmp }\n",
            &[],
        )
        .unwrap();
        let p = cfg.pfsync.unwrap();
        let s = ShellConfig::from_config(&p, 7, Instant::now()).unwrap();
        assert_eq!(s.syncdev.as_deref(), Some("eth1"));
        assert_eq!(s.destination(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(s.replicator.creatorid, 7);
        assert_eq!(s.replicator.maxupd, 64);
        assert!(s.replicator.defer);
        assert!(s.auth_key.is_none());
        let mut v6 = p.clone();
        v6.syncpeer = Some("2001:db8::1".parse().unwrap());
        assert!(ShellConfig::from_config(&v6, 7, Instant::now()).is_err());
        let mut group = p;
        group.syncpeer = None;
        let s = ShellConfig::from_config(&group, 7, Instant::now()).unwrap();
        assert_eq!(s.destination(), PFSYNC_GROUP);
    }

    #[test]
    fn full_worker_queues_backlog_commands_in_order() {
        let cfg = crate::config::parse_str(
            "t.conf",
            "table <t> { 198.18.1.1 }\n\
             redirect r { listen on 198.18.0.10 udp port 53\n forward to <t> check icmp }\n",
            &[],
        )
        .unwrap();
        let snap =
            crate::dataplane::Snapshot::build(&cfg, &Default::default(), Default::default(), None)
                .unwrap();
        let commands: Vec<_> = (0..2).map(|_| Arc::new(ArrayQueue::new(2))).collect();
        let mut g = Glue::new(
            ReplicatorConfig::new(1),
            Handles {
                events: Arc::new(ArrayQueue::new(4)),
                commands: commands.clone(),
                snapshot: Arc::new(SnapshotCell::from_pointee(snap)),
                demote: None,
                tap: None,
            },
        );
        let key = |port| Key {
            proto: 17,
            client: [0; 16],
            client_port: port,
            vip: 0,
            vip_port: 53,
        };
        for port in 0..5 {
            g.push_all(Command::Remove { key: key(port) }, None);
        }
        // Worker 1 is the one that deleted port 5 itself: it is skipped.
        g.push_all(Command::Remove { key: key(5) }, Some(1));
        assert_eq!(g.counter(Counter::Commands), 4);
        assert_eq!(g.counter(Counter::CommandBacklogged), 7);
        assert_eq!(g.counter(Counter::CommandQueueFull), 0);
        let mut seen = [Vec::new(), Vec::new()];
        for _ in 0..10 {
            for (s, q) in seen.iter_mut().zip(&commands) {
                if let Some(Command::Remove { key }) = q.pop() {
                    s.push(key.client_port);
                }
            }
            g.flush_backlog();
        }
        assert_eq!(seen[0], vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(seen[1], vec![0, 1, 2, 3, 4]);
        assert_eq!(g.flush_backlog(), 0);
    }

    #[test]
    fn ipv4_check_filters_on_syncpeer() {
        let p = ip_packet(255, 240, [198, 18, 0, 9], b"x");
        let peer = Some(Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(check_ipv4(&p, peer), Err(Counter::NotPeer));
        assert!(check_ipv4(&p, Some(Ipv4Addr::new(198, 18, 0, 9))).is_ok());
        // A group address as syncpeer means "the group": any source.
        assert!(check_ipv4(&p, Some(PFSYNC_GROUP)).is_ok());
    }

    #[test]
    fn ipv4_check_never_panics_on_any_truncation() {
        let p = ip_packet(255, 240, [198, 18, 0, 1], &[7u8; 40]);
        for n in 0..p.len() {
            let r = check_ipv4(&p[..n], None);
            assert_eq!(r, Err(Counter::BadIpHeader), "length {n}");
        }
        assert!(check_ipv4(&p, None).is_ok());
        // Bad version, short IHL, total length shorter than the header.
        let mut q = p.clone();
        q[0] = 0x65;
        assert_eq!(check_ipv4(&q, None), Err(Counter::BadIpHeader));
        let mut q = p.clone();
        q[0] = 0x44;
        assert_eq!(check_ipv4(&q, None), Err(Counter::BadIpHeader));
        let mut q = p.clone();
        q[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(check_ipv4(&q, None), Err(Counter::BadIpHeader));
    }
}
