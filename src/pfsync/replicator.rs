//! The sans-IO pfsync replicator (if_pfsync.c 1.332's queues, bulk update and deferral).
//!
//! Feed it with `handle_*(now, ...)`, drain it with `poll_*()`, wake it at `poll_timeout()`:
//!
//! - [`Replicator::handle_local`]: the data plane created, updated or deleted a flow, or
//!   cleared its table.
//! - [`Replicator::handle_packet`]: a pfsync payload (after the IP header) arrived; the
//!   transport has already checked TTL 255 and the ingress device (spec §3.1).
//! - [`Replicator::handle_up`], [`Replicator::handle_link`], [`Replicator::handle_down`]: the
//!   pfsync interface came up, its link changed, it went down.
//! - [`Replicator::handle_timeout`]: the time given by [`Replicator::poll_timeout`] has come.
//! - [`Replicator::poll_transmit`]: a pfsync payload to send (IP proto 240, TTL 255).
//! - [`Replicator::poll_event`]: a flow to insert, update or delete in the local table, a
//!   deferred first packet to release, or a carp demotion delta.
//!
//! **The table.** The replicator keeps a *mirror* of the replicated table (an ordered map from
//! [`FlowId`] to [`FlowState`]), not a view into the data plane's per-core tables. It needs the
//! full record to answer UPD_REQ, walk the table for a bulk update and apply pf's
//! keep-ours-if-ahead merge, all on the control-plane thread without reaching into the data
//! plane; and the data plane already ships every change as a [`LocalEvent`]. The mirror's
//! entries expire on their own (`expire`, purged every `purge_interval`), reported as
//! [`Event::Delete`], so a lost DEL_C does not leave a zombie forever (pf's purge thread).
//!
//! **Decisions where OpenBSD 1.332 is odd** (spec §3.6, §9 item 12): a BULK timeout with tries
//! left re-sends the request (back to SENT) and does *not* also run the DONE path; with no tries
//! left it gives up and gives back the +32. So a new node stays demoted at most
//! `link_wait + bulk_max_tries × (bulk_req_interval or bulk timeout)`. Deprecated actions are
//! skipped by `count × len*4` like unknown ones. The mirror keeps one set of queues, not pf's two
//! hash-chosen slices (there is one replicator thread, so there is nothing to spread).
//!
//! Nothing here panics on network input: the wire module validates, and every reject or odd
//! case is a named counter ([`Reject`], [`Stat`]). Allocation happens per pfsync packet and per
//! state change on the control-plane thread, never on the data plane's per-packet path.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::ops::Bound;
use std::time::Duration;

use super::state::{
    FlowId, FlowState, IPPROTO_TCP, Peer, peer_from_wire, peer_to_wire, timeout_secs,
};
use crate::counters::Counters;
use crate::wire::pfsync::{
    self as wire, BUS_END, BUS_START, Bus, Clr, HEADER_LEN, IdRecord, Message, PF_TCPS_PROXY_SRC,
    PFSTATE_ACK, Packet, Reject, STATE_LEN, UpdC, Writer, action,
};

/// Plain configuration of a [`Replicator`] (ifconfig pfsync's knobs plus if_pfsync.c's
/// constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatorConfig {
    /// Our `pf_status.hostid`: the creatorid of flows we create. Must not be 0.
    pub creatorid: u32,
    /// Room for pfsync bytes per packet: syncdev MTU less the IP header.
    pub mtu: usize,
    /// `maxupd`: a TCP state's queued update is pushed after this many coalesced updates.
    pub maxupd: u8,
    /// Flush delay for queued messages (OpenBSD: 1 s); clamped to at most 1 s.
    pub flush_delay: Duration,
    /// `defer`: hold a new flow's first packet until INS_ACK or `defer_timeout`.
    pub defer: bool,
    /// `PFSYNC_DEFER_NSEC`: 20 ms.
    pub defer_timeout: Duration,
    /// At most this many deferrals outstanding; the oldest is released first (128).
    pub max_deferred: usize,
    /// One bulk packet per tick (about 20 ms).
    pub bulk_tick: Duration,
    /// Resend interval of the bulk request (2 s).
    pub bulk_req_interval: Duration,
    /// `PFSYNC_MAX_BULKTRIES` (12).
    pub bulk_max_tries: u32,
    /// How long START waits for the sync link (30 s).
    pub link_wait: Duration,
    /// pf's state limit, for the bulk timeout formula (`PFSTATE_HIWAT`, 100000).
    pub state_limit: u32,
    /// How often the mirror purges expired flows.
    pub purge_interval: Duration,
}

impl ReplicatorConfig {
    /// OpenBSD's defaults with a 1500-byte syncdev.
    pub fn new(creatorid: u32) -> Self {
        Self {
            creatorid,
            mtu: 1500 - 20,
            maxupd: 128,
            flush_delay: Duration::from_secs(1),
            defer: false,
            defer_timeout: Duration::from_millis(20),
            max_deferred: 128,
            bulk_tick: Duration::from_millis(20),
            bulk_req_interval: Duration::from_secs(2),
            bulk_max_tries: 12,
            link_wait: Duration::from_secs(30),
            state_limit: 100_000,
            purge_interval: Duration::from_secs(1),
        }
    }

    /// The BULK timeout: `4 × max(1, (state_limit / ((mtu − PFSYNC_MINPKT) / 264)) / 50)` s.
    pub fn bulk_timeout(&self) -> Duration {
        // Our mtu already excludes the IP header, so mtu − PFSYNC_MINPKT = mtu − HEADER_LEN.
        let per_pkt = (self.mtu.saturating_sub(HEADER_LEN) / STATE_LEN).max(1) as u64;
        let ticks = u64::from(self.state_limit) / per_pkt;
        Duration::from_secs(4 * (ticks / 50).max(1))
    }
}

/// What the data plane tells the replicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalEvent {
    /// A new flow. With `defer`, the data plane holds its first packet until
    /// [`Event::Release`] (immediately if deferral is off in the config).
    Insert { flow: FlowState, defer: bool },
    /// The flow's protocol state, window or expiry moved.
    Update(FlowState),
    /// The flow is gone locally.
    Delete(FlowId),
    /// Every flow we created is gone (`pfctl -F states`): sends CLR.
    Clear,
}

/// What the replicator asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Insert a flow learned from a peer.
    Insert(FlowState),
    /// Replace a flow's peers, timeout and expiry with these (merge already applied).
    Update(FlowState),
    /// Remove a flow.
    Delete(FlowId),
    /// Remove every flow of this creator (already removed from the mirror).
    Clear { creatorid: u32 },
    /// Release the held first packet of this deferred flow.
    Release(FlowId),
    /// Add this to the carp demotion counter of the pfsync group (+32 during the bulk, +1
    /// while the sync link is down; negative to give it back).
    Demote(i32),
}

crate::named_counters! {
    /// Replicator statistics (OpenBSD `pfsyncstats` where one exists).
    pub enum Stat {
        IPackets = "ipackets",
        OPackets = "opackets",
        /// Our copy was ahead of a received update; ours was queued back.
        Stale = "stale",
        /// Unknown and deprecated messages skipped by their declared length.
        Skipped = "skipped",
        /// INS for a flow we already have.
        InsExists = "ins_exists",
        /// UPD for an unknown flow, imported.
        UpdImport = "upd_import",
        /// UPD_C for an unknown flow: its id went into an UPD_REQ.
        UpdCUnknown = "updc_unknown",
        /// UPD_REQ for a flow we do not have.
        UpdReqUnknown = "updreq_unknown",
        /// DEL / DEL_C for a flow we do not have.
        DelUnknown = "del_unknown",
        /// INS_ACK for no outstanding deferral.
        IackUnknown = "iack_unknown",
        /// TDB messages (no IPsec in carpio).
        TdbIgnored = "tdb_ignored",
        /// CLR messages applied.
        Clr = "clr",
        /// Bulk updates we served.
        BulkServed = "bulk_served",
        /// Bulk requests we sent (including resends).
        BulkRequests = "bulk_requests",
        /// Bulk updates we completed (BUS END received).
        BulkDone = "bulk_done",
        /// Bulk updates we gave up on.
        BulkGiveUp = "bulk_give_up",
        /// First packets deferred.
        Deferred = "deferred",
        /// Deferrals released by the 20 ms timeout or the limit rather than INS_ACK.
        DeferTimeout = "defer_timeout",
        /// Mirror entries expired.
        Expired = "expired",
    }
}

/// The requester's bulk-update state (if_pfsync.c `PFSYNC_BULK_REQ_S_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkReq {
    None,
    Start,
    Sent,
    Bulk,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    None,
    Ins,
    UpdC,
    Upd,
}

#[derive(Debug, Clone)]
struct Entry {
    flow: FlowState,
    queued: Queued,
    /// Coalesced updates since the last send (`sync_updates`).
    updates: u8,
    /// Last time a pfsync message touched this flow (`pfsync_time`).
    pfsync_time: Option<Duration>,
}

/// The pfsync replicator: runtime state. See the module doc.
#[derive(Debug)]
pub struct Replicator {
    cfg: ReplicatorConfig,
    table: BTreeMap<FlowId, Entry>,
    q_iack: Vec<IdRecord>,
    q_updc: Vec<FlowId>,
    q_delc: Vec<FlowId>,
    q_ins: Vec<FlowId>,
    q_upd: Vec<FlowId>,
    flush_at: Option<Duration>,
    deferred: VecDeque<(FlowId, Duration)>,
    // Bulk sender.
    bulk_cursor: Option<Bound<FlowId>>,
    bulk_next: Option<Duration>,
    // Bulk requester.
    req: BulkReq,
    req_tries: u32,
    req_timer: Option<Duration>,
    link_up: bool,
    demoted_link: bool,
    demoted_bulk: bool,
    next_purge: Option<Duration>,
    tx: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    stats: Counters<{ Stat::COUNT }>,
    rejects: Counters<{ Reject::COUNT }>,
}

/// Seconds of `pfsync_time` within which a local update is pushed at once (spec §3.5).
const PFSYNC_TIME_PUSH: Duration = Duration::from_secs(2);

fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Replicator {
    pub fn new(mut cfg: ReplicatorConfig) -> Self {
        cfg.flush_delay = cfg.flush_delay.min(Duration::from_secs(1));
        cfg.mtu = cfg
            .mtu
            .clamp(HEADER_LEN + 4 + STATE_LEN, usize::from(u16::MAX));
        Self {
            cfg,
            table: BTreeMap::new(),
            q_iack: Vec::new(),
            q_updc: Vec::new(),
            q_delc: Vec::new(),
            q_ins: Vec::new(),
            q_upd: Vec::new(),
            flush_at: None,
            deferred: VecDeque::new(),
            bulk_cursor: None,
            bulk_next: None,
            req: BulkReq::None,
            req_tries: 0,
            req_timer: None,
            link_up: false,
            demoted_link: false,
            demoted_bulk: false,
            next_purge: None,
            tx: VecDeque::new(),
            events: VecDeque::new(),
            stats: Counters::default(),
            rejects: Counters::default(),
        }
    }

    pub fn config(&self) -> &ReplicatorConfig {
        &self.cfg
    }

    /// The requester's bulk state.
    pub fn bulk_state(&self) -> BulkReq {
        self.req
    }

    pub fn stat(&self, s: Stat) -> u64 {
        self.stats.get(s.index())
    }

    pub fn rejects(&self, r: Reject) -> u64 {
        self.rejects.get(r.index())
    }

    /// The mirror: every replicated flow this node knows.
    pub fn flows(&self) -> impl Iterator<Item = &FlowState> {
        self.table.values().map(|e| &e.flow)
    }

    pub fn flow(&self, id: &FlowId) -> Option<&FlowState> {
        self.table.get(id).map(|e| &e.flow)
    }

    // ---- up / down / link --------------------------------------------------------------------

    /// The pfsync interface is up: demote +32 until the bulk update is in (+1 while the link is
    /// down), then request the bulk (`pfsync_up`, `pfsync_bulk_req_evt(UP)`).
    pub fn handle_up(&mut self, now: Duration, link_up: bool) {
        if !self.demoted_bulk {
            self.demoted_bulk = true;
            self.events.push_back(Event::Demote(32));
        }
        self.link_up = link_up;
        if !link_up && !self.demoted_link {
            self.demoted_link = true;
            self.events.push_back(Event::Demote(1));
        }
        self.req_tries = 0;
        self.next_purge = Some(now + self.cfg.purge_interval);
        if link_up {
            self.send_bulk_request(now);
        } else {
            self.req = BulkReq::Start;
            self.req_timer = Some(now + self.cfg.link_wait);
        }
    }

    /// The sync link went up or down.
    pub fn handle_link(&mut self, now: Duration, up: bool) {
        self.link_up = up;
        if up {
            if self.demoted_link {
                self.demoted_link = false;
                self.events.push_back(Event::Demote(-1));
            }
            if self.req == BulkReq::Start {
                self.send_bulk_request(now);
            }
        } else if !self.demoted_link && self.req != BulkReq::None {
            self.demoted_link = true;
            self.events.push_back(Event::Demote(1));
        }
    }

    /// The pfsync interface is going down: give back any demotion, drop queued messages.
    pub fn handle_down(&mut self, _now: Duration) {
        if self.demoted_bulk {
            self.demoted_bulk = false;
            self.events.push_back(Event::Demote(-32));
        }
        if self.demoted_link {
            self.demoted_link = false;
            self.events.push_back(Event::Demote(-1));
        }
        self.req = BulkReq::None;
        self.req_timer = None;
        self.bulk_cursor = None;
        self.bulk_next = None;
        self.q_iack.clear();
        self.q_updc.clear();
        self.q_delc.clear();
        self.q_ins.clear();
        self.q_upd.clear();
        for e in self.table.values_mut() {
            e.queued = Queued::None;
        }
        self.flush_at = None;
        while let Some((id, _)) = self.deferred.pop_front() {
            self.events.push_back(Event::Release(id));
        }
    }

    fn send_bulk_request(&mut self, now: Duration) {
        let mut w = Writer::new(self.cfg.mtu);
        let _ = w.push(&Message::UpdReq(IdRecord::default()));
        self.emit(w);
        self.stats.add(Stat::BulkRequests.index(), 1);
        self.req = BulkReq::Sent;
        self.req_tries += 1;
        self.req_timer = Some(now + self.cfg.bulk_req_interval);
    }

    fn bulk_finished(&mut self, gave_up: bool) {
        self.req = BulkReq::Done;
        self.req_timer = None;
        let s = if gave_up {
            Stat::BulkGiveUp
        } else {
            Stat::BulkDone
        };
        self.stats.add(s.index(), 1);
        if self.demoted_bulk {
            self.demoted_bulk = false;
            self.events.push_back(Event::Demote(-32));
        }
    }

    // ---- local events ------------------------------------------------------------------------

    pub fn handle_local(&mut self, now: Duration, ev: LocalEvent) {
        match ev {
            LocalEvent::Insert { mut flow, defer } => {
                let id = flow.id;
                let deferring = defer && self.cfg.defer;
                if deferring {
                    flow.state_flags |= PFSTATE_ACK;
                } else {
                    flow.state_flags &= !PFSTATE_ACK;
                }
                if let Some(old) = self.table.get(&id).map(|e| e.queued) {
                    // Re-insert of a known id: treat as an update of the record.
                    self.dequeue(id, old);
                }
                self.table.insert(
                    id,
                    Entry {
                        flow,
                        queued: Queued::None,
                        updates: 0,
                        pfsync_time: None,
                    },
                );
                self.enqueue(now, id, Queued::Ins);
                if deferring {
                    if self.deferred.len() >= self.cfg.max_deferred.max(1)
                        && let Some((old, _)) = self.deferred.pop_front()
                    {
                        self.release(old, true);
                    }
                    self.deferred.push_back((id, now + self.cfg.defer_timeout));
                    self.stats.add(Stat::Deferred.index(), 1);
                    // pfsync_defer pushes the packet out at once.
                    self.flush(now);
                } else if defer {
                    self.events.push_back(Event::Release(id));
                }
            }
            LocalEvent::Update(flow) => {
                let id = flow.id;
                let Some(e) = self.table.get_mut(&id) else {
                    // Unknown to the mirror: announce it as new (e.g. after a restart).
                    self.handle_local(now, LocalEvent::Insert { flow, defer: false });
                    return;
                };
                let keep_ack = e.flow.state_flags & PFSTATE_ACK;
                e.flow = flow;
                e.flow.state_flags = (flow.state_flags & !PFSTATE_ACK) | keep_ack;
                e.updates = e.updates.saturating_add(1);
                let push = (flow.proto == IPPROTO_TCP && e.updates >= self.cfg.maxupd)
                    || e.pfsync_time
                        .is_some_and(|t| now.saturating_sub(t) < PFSYNC_TIME_PUSH);
                match e.queued {
                    Queued::Ins | Queued::Upd | Queued::UpdC => {}
                    Queued::None => self.enqueue(now, id, Queued::UpdC),
                }
                if push {
                    self.flush(now);
                }
            }
            LocalEvent::Delete(id) => {
                if let Some(e) = self.table.remove(&id) {
                    self.dequeue(id, e.queued);
                    if self.deferred.iter().any(|(d, _)| *d == id) {
                        self.release(id, false);
                    }
                    if e.queued != Queued::Ins {
                        self.enqueue(now, id, Queued::None);
                    }
                }
            }
            LocalEvent::Clear => {
                let me = self.cfg.creatorid;
                self.table.retain(|id, _| id.creatorid != me);
                let mut w = Writer::new(self.cfg.mtu);
                let _ = w.push(&Message::Clr(Clr {
                    ifname: [0; wire::IFNAMSIZ],
                    creatorid: me,
                }));
                self.emit(w);
            }
        }
    }

    fn release(&mut self, id: FlowId, by_timeout: bool) {
        self.deferred.retain(|(d, _)| *d != id);
        if let Some(e) = self.table.get_mut(&id) {
            e.flow.state_flags &= !PFSTATE_ACK;
        }
        if by_timeout {
            self.stats.add(Stat::DeferTimeout.index(), 1);
        }
        self.events.push_back(Event::Release(id));
    }

    // ---- queues ------------------------------------------------------------------------------

    fn queue_len(&self) -> usize {
        let part = |n: usize, len: usize| if n == 0 { 0 } else { 4 + n * len };
        HEADER_LEN
            + part(self.q_iack.len(), wire::ID_LEN)
            + part(self.q_updc.len(), wire::UPD_C_LEN)
            + part(self.q_delc.len(), wire::ID_LEN)
            + part(self.q_ins.len(), STATE_LEN)
            + part(self.q_upd.len(), STATE_LEN)
    }

    fn queues_empty(&self) -> bool {
        self.queue_len() == HEADER_LEN
    }

    /// Makes room for one more message of `act`, flushing the queues if it would not fit.
    fn make_room(&mut self, now: Duration, act: u8, n_now: usize) {
        let body = wire::message_len(act).unwrap_or(0);
        let extra = if n_now == 0 { 4 + body } else { body };
        if self.queue_len() + extra > self.cfg.mtu {
            self.flush(now);
        }
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.cfg.flush_delay);
        }
    }

    /// Queues `id` as `what`; `Queued::None` means DEL_C.
    fn enqueue(&mut self, now: Duration, id: FlowId, what: Queued) {
        match what {
            Queued::None => {
                self.make_room(now, action::DEL_C, self.q_delc.len());
                self.q_delc.push(id);
                return;
            }
            Queued::Ins => {
                self.make_room(now, action::INS, self.q_ins.len());
                self.q_ins.push(id);
            }
            Queued::UpdC => {
                self.make_room(now, action::UPD_C, self.q_updc.len());
                self.q_updc.push(id);
            }
            Queued::Upd => {
                self.make_room(now, action::UPD, self.q_upd.len());
                self.q_upd.push(id);
            }
        }
        if let Some(e) = self.table.get_mut(&id) {
            e.queued = what;
        }
    }

    fn dequeue(&mut self, id: FlowId, what: Queued) {
        match what {
            Queued::None => {}
            Queued::Ins => self.q_ins.retain(|x| *x != id),
            Queued::UpdC => self.q_updc.retain(|x| *x != id),
            Queued::Upd => self.q_upd.retain(|x| *x != id),
        }
        if let Some(e) = self.table.get_mut(&id) {
            e.queued = Queued::None;
        }
    }

    fn queue_iack(&mut self, now: Duration, r: IdRecord) {
        self.make_room(now, action::INS_ACK, self.q_iack.len());
        self.q_iack.push(r);
    }

    /// Builds one packet from the queues, in OpenBSD's order: IACK, UPD_C, DEL_C, INS, UPD.
    fn flush(&mut self, now: Duration) {
        self.flush_at = None;
        if self.queues_empty() {
            return;
        }
        let mut w = Writer::new(self.cfg.mtu);
        for r in std::mem::take(&mut self.q_iack) {
            let _ = w.push(&Message::InsAck(r));
        }
        for id in std::mem::take(&mut self.q_updc) {
            if let Some(e) = self.table.get_mut(&id) {
                e.queued = Queued::None;
                e.updates = 0;
                let _ = w.push(&Message::UpdC(UpdC {
                    id: id.id,
                    src: peer_to_wire(&e.flow.src),
                    dst: peer_to_wire(&e.flow.dst),
                    creatorid: id.creatorid,
                    expire: 0,
                    timeout: e.flow.timeout,
                    state_flags: 0,
                }));
            }
        }
        for id in std::mem::take(&mut self.q_delc) {
            let _ = w.push(&Message::DelC(IdRecord {
                id: id.id,
                creatorid: id.creatorid,
            }));
        }
        for (q, full) in [
            (std::mem::take(&mut self.q_ins), true),
            (std::mem::take(&mut self.q_upd), false),
        ] {
            for id in q {
                if let Some(e) = self.table.get_mut(&id) {
                    e.queued = Queued::None;
                    e.updates = 0;
                    let s = e.flow.to_wire(now);
                    let _ = w.push(&if full {
                        Message::Ins(s)
                    } else {
                        Message::Upd(s)
                    });
                }
            }
        }
        self.emit(w);
    }

    fn emit(&mut self, w: Writer) {
        if !w.is_empty() {
            self.stats.add(Stat::OPackets.index(), 1);
            self.tx.push_back(w.finish());
        }
    }

    // ---- receive -----------------------------------------------------------------------------

    /// A received pfsync payload. `_from` is the sender's address (the transport has checked
    /// TTL and ingress device; pfsync has no authentication, spec §3.1).
    pub fn handle_packet(&mut self, now: Duration, bytes: &[u8], _from: IpAddr) {
        self.stats.add(Stat::IPackets.index(), 1);
        let pkt = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.rejects.add(e.index(), 1);
                return;
            }
        };
        let mut unknown: Vec<IdRecord> = Vec::new();
        let mut msgs = pkt.messages();
        for m in msgs.by_ref() {
            match m {
                Ok(m) => self.handle_message(now, m, &mut unknown),
                Err(e) => {
                    self.rejects.add(e.index(), 1);
                    break;
                }
            }
        }
        self.stats.add(Stat::Skipped.index(), msgs.skipped() as u64);
        if !unknown.is_empty() {
            // pfsync_in_upd_c: the ids of unknown states go out in UPD_REQs at once.
            let mut w = Writer::new(self.cfg.mtu);
            for r in unknown {
                if !w.fits(action::UPD_REQ) {
                    self.emit(std::mem::replace(&mut w, Writer::new(self.cfg.mtu)));
                }
                let _ = w.push(&Message::UpdReq(r));
            }
            self.emit(w);
        }
    }

    fn handle_message(&mut self, now: Duration, m: Message, unknown: &mut Vec<IdRecord>) {
        match m {
            Message::Ins(s) => {
                let flow = match FlowState::from_wire(now, &s) {
                    Ok(f) => f,
                    Err(_) => return self.rejects.add(Reject::BadVal.index(), 1),
                };
                if s.state_flags & PFSTATE_ACK != 0 {
                    self.queue_iack(
                        now,
                        IdRecord {
                            id: s.id,
                            creatorid: s.creatorid,
                        },
                    );
                    self.flush(now);
                }
                if self.table.contains_key(&flow.id) {
                    self.stats.add(Stat::InsExists.index(), 1);
                    return;
                }
                self.import(now, flow);
            }
            Message::Upd(s) => {
                let flow = match FlowState::from_wire(now, &s) {
                    Ok(f) => f,
                    Err(_) => return self.rejects.add(Reject::BadVal.index(), 1),
                };
                if self.table.contains_key(&flow.id) {
                    self.merge(now, flow.id, flow.src, flow.dst, flow.timeout);
                } else {
                    self.stats.add(Stat::UpdImport.index(), 1);
                    self.import(now, flow);
                }
            }
            Message::UpdC(u) => {
                if u.check().is_err() {
                    return self.rejects.add(Reject::BadVal.index(), 1);
                }
                let id = FlowId {
                    creatorid: u.creatorid,
                    id: u.id,
                };
                if self.table.contains_key(&id) {
                    self.merge(
                        now,
                        id,
                        peer_from_wire(&u.src),
                        peer_from_wire(&u.dst),
                        u.timeout,
                    );
                } else {
                    self.stats.add(Stat::UpdCUnknown.index(), 1);
                    unknown.push(IdRecord {
                        id: u.id,
                        creatorid: u.creatorid,
                    });
                }
            }
            Message::UpdReq(r) => {
                if r.id == 0 && r.creatorid == 0 {
                    self.start_bulk_send(now);
                    return;
                }
                let id = FlowId {
                    creatorid: r.creatorid,
                    id: r.id,
                };
                match self.table.get(&id).map(|e| e.queued) {
                    Some(Queued::Ins) | Some(Queued::Upd) => {}
                    Some(q) => {
                        self.dequeue(id, q);
                        self.enqueue(now, id, Queued::Upd);
                    }
                    None => self.stats.add(Stat::UpdReqUnknown.index(), 1),
                }
            }
            Message::Del(s) => self.remote_delete(FlowId {
                creatorid: s.creatorid,
                id: s.id,
            }),
            Message::DelC(r) => self.remote_delete(FlowId {
                creatorid: r.creatorid,
                id: r.id,
            }),
            Message::InsAck(r) => {
                let id = FlowId {
                    creatorid: r.creatorid,
                    id: r.id,
                };
                if self.deferred.iter().any(|(d, _)| *d == id) {
                    self.release(id, false);
                } else {
                    self.stats.add(Stat::IackUnknown.index(), 1);
                }
            }
            Message::Clr(c) => {
                let name_end = c
                    .ifname
                    .iter()
                    .position(|b| *b == 0)
                    .unwrap_or(c.ifname.len());
                let name = c.ifname.get(..name_end).unwrap_or(&[]);
                // Our flows are all floating ("any"): a CLR for another interface matches none.
                if name.is_empty() || name == b"any" {
                    let cid = c.creatorid;
                    let gone: Vec<FlowId> = self
                        .table
                        .keys()
                        .filter(|k| k.creatorid == cid)
                        .copied()
                        .collect();
                    for id in gone {
                        if let Some(e) = self.table.remove(&id) {
                            self.dequeue(id, e.queued);
                        }
                    }
                    self.events.push_back(Event::Clear { creatorid: cid });
                }
                self.stats.add(Stat::Clr.index(), 1);
            }
            Message::Bus(b) => self.handle_bus(now, b),
            Message::Tdb(_) => self.stats.add(Stat::TdbIgnored.index(), 1),
        }
    }

    fn import(&mut self, now: Duration, mut flow: FlowState) {
        flow.state_flags &= !PFSTATE_ACK;
        self.table.insert(
            flow.id,
            Entry {
                flow,
                queued: Queued::None,
                updates: 0,
                pfsync_time: Some(now),
            },
        );
        // An imported state is not announced back (spec §3.5).
        self.events.push_back(Event::Insert(flow));
    }

    fn remote_delete(&mut self, id: FlowId) {
        match self.table.remove(&id) {
            Some(e) => {
                self.dequeue(id, e.queued);
                self.deferred.retain(|(d, _)| *d != id);
                self.events.push_back(Event::Delete(id));
            }
            None => self.stats.add(Stat::DelUnknown.index(), 1),
        }
    }

    /// `pfsync_in_updates`: per peer, keep ours if ours is ahead, else take theirs. If we kept
    /// anything, count `stale` and send ours back at once.
    fn merge(&mut self, now: Duration, id: FlowId, src: Peer, dst: Peer, timeout: u8) {
        let Some(e) = self.table.get_mut(&id) else {
            return;
        };
        let tcp = e.flow.proto == IPPROTO_TCP;
        // pfsync_upd_tcp: a TCP peer never goes backwards (syn-proxy excepted, src only), nor
        // does its window slide back; other protocols only compare the state.
        let ahead = |ours: &Peer, theirs: &Peer, proxy_exception: bool| {
            if tcp {
                (ours.state > theirs.state
                    && (!proxy_exception
                        || ours.state < PF_TCPS_PROXY_SRC
                        || theirs.state >= PF_TCPS_PROXY_SRC))
                    || (ours.state == theirs.state && seq_gt(ours.seqlo, theirs.seqlo))
            } else {
                ours.state > theirs.state
            }
        };
        let mut sync = 0;
        let before = e.flow;
        if ahead(&e.flow.src, &src, true) {
            sync += 1;
        } else {
            e.flow.src = src;
        }
        if ahead(&e.flow.dst, &dst, false) {
            sync += 1;
        } else {
            e.flow.dst = dst;
        }
        if sync < 2 {
            e.flow.timeout = timeout;
            e.flow.expire =
                now.saturating_add(Duration::from_secs(u64::from(timeout_secs(timeout))));
        }
        e.pfsync_time = Some(now);
        let after = e.flow;
        let queued = e.queued;
        if after != before {
            self.events.push_back(Event::Update(after));
        }
        if sync > 0 {
            self.stats.add(Stat::Stale.index(), 1);
            if queued == Queued::None {
                self.enqueue(now, id, Queued::UpdC);
            }
            self.flush(now);
        }
    }

    fn handle_bus(&mut self, now: Duration, b: Bus) {
        // 1.332 matches BUS by status only, not creatorid.
        match (b.status, self.req) {
            (BUS_START, BulkReq::Start | BulkReq::Sent) => {
                self.req = BulkReq::Bulk;
                self.req_timer = Some(now + self.cfg.bulk_timeout());
            }
            (BUS_END, BulkReq::Bulk) => self.bulk_finished(false),
            _ => {}
        }
    }

    // ---- bulk sender -------------------------------------------------------------------------

    fn start_bulk_send(&mut self, now: Duration) {
        self.stats.add(Stat::BulkServed.index(), 1);
        let mut w = Writer::new(self.cfg.mtu);
        let _ = w.push(&Message::Bus(Bus {
            creatorid: self.cfg.creatorid,
            endtime: 0,
            status: BUS_START,
        }));
        self.emit(w);
        self.bulk_cursor = Some(Bound::Unbounded);
        self.bulk_next = Some(now);
        self.bulk_tick(now);
    }

    /// One MTU of full UPDs, then BUS END when the walk is done.
    fn bulk_tick(&mut self, now: Duration) {
        let Some(from) = self.bulk_cursor else {
            self.bulk_next = None;
            return;
        };
        let mut w = Writer::new(self.cfg.mtu);
        let mut last = None;
        let mut more = false;
        for (id, e) in self.table.range((from, Bound::Unbounded)) {
            if !w.fits(action::UPD) {
                more = true;
                break;
            }
            let _ = w.push(&Message::Upd(e.flow.to_wire(now)));
            last = Some(*id);
        }
        self.emit(w);
        match (more, last) {
            (true, Some(id)) => {
                self.bulk_cursor = Some(Bound::Excluded(id));
                self.bulk_next = Some(now + self.cfg.bulk_tick);
            }
            _ => {
                self.bulk_cursor = None;
                self.bulk_next = None;
                let mut w = Writer::new(self.cfg.mtu);
                let _ = w.push(&Message::Bus(Bus {
                    creatorid: self.cfg.creatorid,
                    endtime: 0,
                    status: BUS_END,
                }));
                self.emit(w);
            }
        }
    }

    // ---- time --------------------------------------------------------------------------------

    /// When [`Replicator::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [
            self.flush_at,
            self.deferred.front().map(|(_, t)| *t),
            self.bulk_next,
            self.req_timer,
            self.next_purge,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Duration) {
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush(now);
        }
        while let Some(&(id, t)) = self.deferred.front() {
            if t > now {
                break;
            }
            self.release(id, true);
        }
        if self.bulk_next.is_some_and(|t| t <= now) {
            self.bulk_tick(now);
        }
        if self.req_timer.is_some_and(|t| t <= now) {
            self.req_timer = None;
            match self.req {
                BulkReq::Start => self.bulk_finished(true),
                BulkReq::Sent | BulkReq::Bulk => {
                    if self.req_tries < self.cfg.bulk_max_tries {
                        self.send_bulk_request(now);
                    } else {
                        self.bulk_finished(true);
                    }
                }
                BulkReq::None | BulkReq::Done => {}
            }
        }
        if self.next_purge.is_some_and(|t| t <= now) {
            self.next_purge = Some(now + self.cfg.purge_interval);
            let gone: Vec<FlowId> = self
                .table
                .iter()
                .filter(|(_, e)| e.flow.expire <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                if let Some(e) = self.table.remove(&id) {
                    self.dequeue(id, e.queued);
                    self.stats.add(Stat::Expired.index(), 1);
                    self.events.push_back(Event::Delete(id));
                }
            }
        }
    }

    // ---- output ------------------------------------------------------------------------------

    /// The next pfsync payload to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// The next thing for the caller to do.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pfsync::state::{Forward, pftm, tcps};
    use std::net::Ipv4Addr;

    const FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn flow(creatorid: u32, id: u64, now: Duration) -> FlowState {
        FlowState {
            id: FlowId { creatorid, id },
            proto: IPPROTO_TCP,
            client: (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)), 40000 + id as u16),
            vip: (IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)), 25),
            backend: (IpAddr::V4(Ipv4Addr::new(198, 18, 2, 5)), 25),
            forward: Forward::Nat,
            src: Peer {
                state: tcps::ESTABLISHED,
                seqlo: 100,
                ..Default::default()
            },
            dst: Peer {
                state: tcps::ESTABLISHED,
                seqlo: 200,
                ..Default::default()
            },
            timeout: pftm::TCP_ESTABLISHED,
            created: now,
            expire: now + Duration::from_secs(86400),
            packets: [0; 2],
            bytes: [0; 2],
            state_flags: 0,
        }
    }

    fn actions(pkt: &[u8]) -> Vec<Message> {
        Packet::parse(pkt)
            .unwrap()
            .messages()
            .map(|m| m.unwrap())
            .collect()
    }

    fn drain_tx(r: &mut Replicator) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| r.poll_transmit()).collect()
    }

    fn drain_ev(r: &mut Replicator) -> Vec<Event> {
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    #[test]
    fn insert_waits_for_flush_delay_then_one_packet() {
        let mut r = Replicator::new(ReplicatorConfig::new(7));
        r.handle_local(
            ms(0),
            LocalEvent::Insert {
                flow: flow(7, 1, ms(0)),
                defer: false,
            },
        );
        r.handle_local(
            ms(10),
            LocalEvent::Insert {
                flow: flow(7, 2, ms(10)),
                defer: false,
            },
        );
        assert!(r.poll_transmit().is_none());
        assert_eq!(r.poll_timeout(), Some(ms(1000)));
        r.handle_timeout(ms(1000));
        let tx = drain_tx(&mut r);
        assert_eq!(tx.len(), 1);
        let m = actions(&tx[0]);
        assert_eq!(m.len(), 2);
        assert!(matches!(m[0], Message::Ins(s) if s.id == 1 && s.creatorid == 7));
        // One subheader for both.
        assert_eq!(&tx[0][20..24], &[action::INS, 66, 0, 2]);
    }

    #[test]
    fn delete_cancels_queued_insert() {
        let mut r = Replicator::new(ReplicatorConfig::new(7));
        r.handle_local(
            ms(0),
            LocalEvent::Insert {
                flow: flow(7, 1, ms(0)),
                defer: false,
            },
        );
        r.handle_local(
            ms(5),
            LocalEvent::Delete(FlowId {
                creatorid: 7,
                id: 1,
            }),
        );
        r.handle_timeout(ms(1000));
        assert!(drain_tx(&mut r).is_empty());
        // After the INS went out, a delete is a DEL_C.
        r.handle_local(
            ms(1000),
            LocalEvent::Insert {
                flow: flow(7, 2, ms(0)),
                defer: false,
            },
        );
        r.handle_timeout(ms(2000));
        assert_eq!(drain_tx(&mut r).len(), 1);
        r.handle_local(
            ms(2000),
            LocalEvent::Delete(FlowId {
                creatorid: 7,
                id: 2,
            }),
        );
        r.handle_timeout(ms(3000));
        let tx = drain_tx(&mut r);
        assert_eq!(
            actions(&tx[0]),
            vec![Message::DelC(IdRecord {
                id: 2,
                creatorid: 7
            })]
        );
    }

    #[test]
    fn batches_up_to_mtu() {
        let mut r = Replicator::new(ReplicatorConfig::new(7));
        // 1480 bytes: 20 + 4 + 5 × 264 = 1344 fits, the 6th does not.
        for i in 1..=6 {
            r.handle_local(
                ms(0),
                LocalEvent::Insert {
                    flow: flow(7, i, ms(0)),
                    defer: false,
                },
            );
        }
        let tx = drain_tx(&mut r);
        assert_eq!(tx.len(), 1);
        assert_eq!(actions(&tx[0]).len(), 5);
        assert!(tx[0].len() <= 1480);
        r.handle_timeout(ms(1000));
        assert_eq!(actions(&drain_tx(&mut r)[0]).len(), 1);
    }

    #[test]
    fn updates_coalesce_until_maxupd_for_tcp() {
        let mut cfg = ReplicatorConfig::new(7);
        cfg.maxupd = 3;
        let mut r = Replicator::new(cfg);
        let f = flow(7, 1, ms(0));
        r.handle_local(
            ms(0),
            LocalEvent::Insert {
                flow: f,
                defer: false,
            },
        );
        r.handle_timeout(ms(1000));
        drain_tx(&mut r);
        let mut g = f;
        for i in 0..2 {
            g.src.seqlo += 10;
            r.handle_local(ms(1001 + i), LocalEvent::Update(g));
        }
        assert!(r.poll_transmit().is_none(), "coalesced below maxupd");
        g.src.seqlo += 10;
        r.handle_local(ms(1003), LocalEvent::Update(g));
        let tx = drain_tx(&mut r);
        assert_eq!(tx.len(), 1, "pushed at maxupd");
        let m = actions(&tx[0]);
        assert_eq!(m.len(), 1, "one UPD_C for three updates");
        assert!(matches!(m[0], Message::UpdC(u) if u.src.seqlo == 130 && u.expire == 0));
    }

    #[test]
    fn update_request_answered_with_full_update() {
        let mut r = Replicator::new(ReplicatorConfig::new(7));
        r.handle_local(
            ms(0),
            LocalEvent::Insert {
                flow: flow(7, 1, ms(0)),
                defer: false,
            },
        );
        r.handle_timeout(ms(1000));
        drain_tx(&mut r);
        let mut w = Writer::new(1480);
        w.push(&Message::UpdReq(IdRecord {
            id: 1,
            creatorid: 7,
        }))
        .unwrap();
        w.push(&Message::UpdReq(IdRecord {
            id: 99,
            creatorid: 7,
        }))
        .unwrap();
        r.handle_packet(ms(1100), &w.finish(), FROM);
        assert_eq!(r.stat(Stat::UpdReqUnknown), 1);
        r.handle_timeout(ms(2100));
        let m = actions(&drain_tx(&mut r)[0]);
        assert!(matches!(m[..], [Message::Upd(s)] if s.id == 1));
    }

    #[test]
    fn unknown_upd_c_triggers_update_request() {
        let mut r = Replicator::new(ReplicatorConfig::new(7));
        let mut w = Writer::new(1480);
        w.push(&Message::UpdC(UpdC {
            id: 5,
            creatorid: 9,
            timeout: 2,
            ..Default::default()
        }))
        .unwrap();
        r.handle_packet(ms(0), &w.finish(), FROM);
        let tx = drain_tx(&mut r);
        assert_eq!(
            actions(&tx[0]),
            vec![Message::UpdReq(IdRecord {
                id: 5,
                creatorid: 9
            })]
        );
    }

    #[test]
    fn merge_keeps_ours_if_ahead_and_sends_it_back() {
        let mut r = Replicator::new(ReplicatorConfig::new(7));
        let f = flow(9, 1, ms(0));
        let mut w = Writer::new(1480);
        w.push(&Message::Ins(f.to_wire(ms(0)))).unwrap();
        r.handle_packet(ms(0), &w.finish(), FROM);
        assert_eq!(drain_ev(&mut r), vec![Event::Insert(f)]);
        // Theirs is behind on src (older seqlo) and ahead on dst.
        let mut old = f.to_wire(ms(0));
        old.src.seqlo = 50;
        old.dst.seqlo = 300;
        let mut w = Writer::new(1480);
        w.push(&Message::Upd(old)).unwrap();
        r.handle_packet(ms(10), &w.finish(), FROM);
        assert_eq!(r.stat(Stat::Stale), 1);
        let got = r.flow(&f.id).unwrap();
        assert_eq!(got.src.seqlo, 100, "ours kept");
        assert_eq!(got.dst.seqlo, 300, "theirs taken");
        let tx = drain_tx(&mut r);
        assert!(matches!(actions(&tx[0])[..], [Message::UpdC(u)] if u.src.seqlo == 100));
        assert!(matches!(drain_ev(&mut r)[..], [Event::Update(g)] if g.dst.seqlo == 300));
        // An older FSM state is also behind.
        let mut older = f.to_wire(ms(0));
        older.src.state = tcps::SYN_SENT;
        older.src.seqlo = 1000;
        older.dst.seqlo = 300;
        let mut w = Writer::new(1480);
        w.push(&Message::Upd(older)).unwrap();
        r.handle_packet(ms(20), &w.finish(), FROM);
        assert_eq!(r.stat(Stat::Stale), 2);
        assert_eq!(r.flow(&f.id).unwrap().src.state, tcps::ESTABLISHED);
    }

    #[test]
    fn syn_proxy_exception_applies_to_src_only() {
        let mut r = Replicator::new(ReplicatorConfig::new(7));
        let mut f = flow(9, 1, ms(0));
        f.src.state = tcps::PROXY_DST;
        f.dst.state = tcps::PROXY_DST;
        let mut w = Writer::new(1480);
        w.push(&Message::Ins(f.to_wire(ms(0)))).unwrap();
        r.handle_packet(ms(0), &w.finish(), FROM);
        // Theirs: both peers ESTABLISHED (a lower number than the proxy states).
        let mut upd = f.to_wire(ms(0));
        upd.src.state = tcps::ESTABLISHED;
        upd.dst.state = tcps::ESTABLISHED;
        let mut w = Writer::new(1480);
        w.push(&Message::Upd(upd)).unwrap();
        r.handle_packet(ms(1), &w.finish(), FROM);
        let got = r.flow(&f.id).unwrap();
        assert_eq!(got.src.state, tcps::ESTABLISHED, "src leaves syn-proxy");
        assert_eq!(
            got.dst.state,
            tcps::PROXY_DST,
            "dst has no syn-proxy exception"
        );
        assert_eq!(r.stat(Stat::Stale), 1);
    }

    #[test]
    fn bulk_request_state_machine_and_demotion() {
        let mut cfg = ReplicatorConfig::new(7);
        cfg.bulk_max_tries = 3;
        let mut r = Replicator::new(cfg);
        r.handle_up(ms(0), false);
        assert_eq!(drain_ev(&mut r), vec![Event::Demote(32), Event::Demote(1)]);
        assert_eq!(r.bulk_state(), BulkReq::Start);
        assert!(r.poll_transmit().is_none());
        r.handle_link(ms(100), true);
        assert_eq!(drain_ev(&mut r), vec![Event::Demote(-1)]);
        assert_eq!(r.bulk_state(), BulkReq::Sent);
        let tx = drain_tx(&mut r);
        assert_eq!(actions(&tx[0]), vec![Message::UpdReq(IdRecord::default())]);
        // Resends every 2 s, up to 3 tries, then gives up and undoes the +32.
        r.handle_timeout(ms(2100));
        r.handle_timeout(ms(4100));
        assert_eq!(drain_tx(&mut r).len(), 2);
        assert_eq!(r.stat(Stat::BulkRequests), 3);
        r.handle_timeout(ms(6100));
        assert_eq!(r.bulk_state(), BulkReq::Done);
        assert_eq!(drain_ev(&mut r), vec![Event::Demote(-32)]);
        assert_eq!(r.stat(Stat::BulkGiveUp), 1);
    }

    #[test]
    fn bulk_send_one_mtu_per_tick_then_bus_end() {
        let mut srv = Replicator::new(ReplicatorConfig::new(7));
        for i in 1..=12 {
            srv.handle_local(
                ms(0),
                LocalEvent::Insert {
                    flow: flow(7, i, ms(0)),
                    defer: false,
                },
            );
        }
        srv.handle_timeout(ms(1000));
        drain_tx(&mut srv);
        let mut cli = Replicator::new(ReplicatorConfig::new(8));
        cli.handle_up(ms(1000), true);
        drain_ev(&mut cli);
        let req = drain_tx(&mut cli);
        srv.handle_packet(ms(1001), &req[0], FROM);
        // BUS START + first 5 UPDs now; 5 more at +20 ms; 2 + BUS END at +40 ms.
        let mut t = ms(1001);
        let mut packets = drain_tx(&mut srv);
        assert_eq!(packets.len(), 2);
        while let Some(next) = srv.poll_timeout().filter(|n| *n < ms(1900)) {
            assert_eq!(next, t + ms(20));
            t = next;
            srv.handle_timeout(t);
            packets.extend(drain_tx(&mut srv));
        }
        assert_eq!(packets.len(), 5);
        let first = actions(&packets[0]);
        assert!(
            matches!(first[..], [Message::Bus(b)] if b.status == BUS_START && b.creatorid == 7)
        );
        let last = actions(&packets[4]);
        assert!(matches!(last[..], [Message::Bus(b)] if b.status == BUS_END));
        for p in &packets {
            cli.handle_packet(t, p, FROM);
        }
        assert_eq!(cli.bulk_state(), BulkReq::Done);
        assert_eq!(cli.flows().count(), 12);
        let ev = drain_ev(&mut cli);
        assert_eq!(
            ev.iter().filter(|e| matches!(e, Event::Insert(_))).count(),
            12
        );
        assert_eq!(ev.last(), Some(&Event::Demote(-32)));
    }

    #[test]
    fn deferral_released_by_ack_or_timeout() {
        let mut cfg = ReplicatorConfig::new(7);
        cfg.defer = true;
        let mut a = Replicator::new(cfg);
        let mut b = Replicator::new(ReplicatorConfig::new(8));
        a.handle_local(
            ms(0),
            LocalEvent::Insert {
                flow: flow(7, 1, ms(0)),
                defer: true,
            },
        );
        assert!(drain_ev(&mut a).is_empty(), "held");
        let tx = drain_tx(&mut a);
        assert!(
            matches!(actions(&tx[0])[..], [Message::Ins(s)] if s.state_flags & PFSTATE_ACK != 0)
        );
        b.handle_packet(ms(1), &tx[0], FROM);
        let ack = drain_tx(&mut b);
        assert_eq!(
            actions(&ack[0]),
            vec![Message::InsAck(IdRecord {
                id: 1,
                creatorid: 7
            })]
        );
        a.handle_packet(ms(2), &ack[0], FROM);
        assert_eq!(
            drain_ev(&mut a),
            vec![Event::Release(FlowId {
                creatorid: 7,
                id: 1
            })]
        );
        // No ack: released at 20 ms.
        a.handle_local(
            ms(10),
            LocalEvent::Insert {
                flow: flow(7, 2, ms(10)),
                defer: true,
            },
        );
        assert_eq!(a.poll_timeout(), Some(ms(30)));
        a.handle_timeout(ms(30));
        assert_eq!(
            drain_ev(&mut a),
            vec![Event::Release(FlowId {
                creatorid: 7,
                id: 2
            })]
        );
        assert_eq!(a.stat(Stat::DeferTimeout), 1);
        // Deferral off in the config: released at once.
        let mut c = Replicator::new(ReplicatorConfig::new(9));
        c.handle_local(
            ms(0),
            LocalEvent::Insert {
                flow: flow(9, 1, ms(0)),
                defer: true,
            },
        );
        assert_eq!(
            drain_ev(&mut c),
            vec![Event::Release(FlowId {
                creatorid: 9,
                id: 1
            })]
        );
    }

    #[test]
    fn rejects_are_counted_by_name() {
        let mut r = Replicator::new(ReplicatorConfig::new(7));
        r.handle_packet(ms(0), &[6, 0, 0], FROM);
        r.handle_packet(ms(0), &[5; 20], FROM);
        let mut bad = flow(9, 1, ms(0)).to_wire(ms(0));
        bad.timeout = 20;
        let mut w = Writer::new(1480);
        w.push(&Message::Ins(bad)).unwrap();
        r.handle_packet(ms(0), &w.finish(), FROM);
        assert_eq!(r.rejects(Reject::HdrTruncated), 1);
        assert_eq!(r.rejects(Reject::BadVer), 1);
        assert_eq!(r.rejects(Reject::BadVal), 1);
        assert_eq!(r.flows().count(), 0);
    }

    #[test]
    fn clear_removes_creator_states() {
        let mut r = Replicator::new(ReplicatorConfig::new(7));
        for (c, i) in [(9, 1), (9, 2), (5, 3)] {
            let mut w = Writer::new(1480);
            w.push(&Message::Ins(flow(c, i, ms(0)).to_wire(ms(0))))
                .unwrap();
            r.handle_packet(ms(0), &w.finish(), FROM);
        }
        drain_ev(&mut r);
        let mut w = Writer::new(1480);
        w.push(&Message::Clr(Clr {
            ifname: [0; 16],
            creatorid: 9,
        }))
        .unwrap();
        r.handle_packet(ms(1), &w.finish(), FROM);
        assert_eq!(drain_ev(&mut r), vec![Event::Clear { creatorid: 9 }]);
        assert_eq!(r.flows().map(|f| f.id.id).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn bulk_timeout_formula() {
        let c = ReplicatorConfig::new(1);
        // (1480 − 20) / 264 = 5 per packet; 100000 / 5 / 50 = 400; × 4.
        assert_eq!(c.bulk_timeout(), Duration::from_secs(1600));
        let small = ReplicatorConfig {
            state_limit: 10,
            ..c
        };
        assert_eq!(small.bulk_timeout(), Duration::from_secs(4));
    }
}
