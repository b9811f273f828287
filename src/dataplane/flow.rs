//! The per-core flow table: which backend each client flow of a VIP goes to, and the
//! protocol state and idle timeout pf would keep for it.
//!
//! # Layout, and why
//!
//! ```text
//!  entries: [Flow; capacity]      48 B each, allocated once; free entries form an intrusive
//!                                 free list (no side array)
//!  fwd:     [u32; 2^k ≥ 2·cap]    open-addressed index by Key        (client → VIP)
//!  rev:     [u32; 2^k ≥ 2·cap]    open-addressed index by ReturnKey  (backend → client)
//!  index slot: tag:4 | dist:4 | entry+1:24  (0 = empty)
//! ```
//!
//! Linear probing on two small `u32` index arrays, kept at most half full, with the entries in
//! a separate dense array: a probe walks 4-byte slots that share cache lines, the 4-bit tag
//! (top bits of the hash) skips 15 of 16 non-matching entries without touching them, and
//! deletion is a backward shift (no tombstones, so probe lengths do not grow with churn).
//! `dist` is the slot's distance from its home position (15 = "15 or more"): the backward
//! shift needs each following slot's home, and reading it from the slot instead of hashing the
//! entry's key saves a random memory access per moved slot (the entries are where the cache
//! misses are; a delete used to spend most of its time there). A slot 15 or more places from
//! home is rare at load ≤ 0.5 and falls back to hashing its entry. A
//! cuckoo table would bound the probe count but needs two hash computations per lookup and
//! relocation chains on insert; at load ≤ 0.5 linear probing averages 1.5 probes per hit.
//! Both index arrays and the entries are allocated in [`FlowTable::new`]; nothing on the
//! per-packet path allocates, locks or logs.
//!
//! Cost per tracked flow, both directions' index included: 48 B entry + 2 × 2 slots × 4 B =
//! **64 B** when `capacity` is a power of two (see [`FlowTable::bytes_per_flow`]).
//!
//! # Keys
//!
//! The inbound key is the 5-tuple (protocol, client address and port, VIP address and port),
//! with the VIP *address* given as its index in the snapshot (`vip`): the worker has already
//! looked the destination up to know the packet is for a VIP, and a 2-byte index instead of a
//! 16-byte address is what keeps a flow at 64 bytes. The VIP index also fixes the address
//! family; client addresses are stored in 16-byte form (IPv4 v4-mapped). The return key
//! (backend → client, for NAT) uses the backend's index in the snapshot's host list likewise.
//! Two flows whose return keys collide (the same client address and port reaching the same
//! backend address and port through two VIPs) cannot both be NAT'ed; the second insert fails
//! with [`InsertError::ReturnCollision`].
//!
//! # Time, expiry, eviction
//!
//! Time is a `u32` count of seconds from an epoch the caller chooses, passed into every call;
//! nothing here reads a clock. Each flow stores its last-seen time and its absolute expiry
//! (last seen + the timeout of its pf class, relayd's `session timeout` replacing
//! tcp.established). [`FlowTable::sweep`] visits a bounded number of entries per call and
//! removes expired ones; a lookup that meets an expired flow removes it too.
//!
//! When every entry is in use, an insert looks at up to `evict_scan` entries from the sweep
//! cursor: an expired one is reused; otherwise the one closest to expiry among those whose
//! class is *not* established (tcp.established, udp.multiple, other.multiple) is evicted
//! early (counted `flow_evict_early`, announced as a delete). If all of them are established,
//! the insert fails with [`InsertError::Full`] (counted `flow_table_full`) and the caller
//! falls back to stateless selection (Maglev keeps most such flows on the same backend).
//!
//! # Events
//!
//! Every insert, state change and removal of a flow pushes an [`Event`] into a bounded
//! lock-free `crossbeam::queue::ArrayQueue` that the pfsync thread drains. A full queue never
//! blocks the worker: the event is dropped and counted `drop_sync_event_queue_full` (pfsync's
//! bulk update repairs the peer). Refreshes without a state change are announced at most
//! about four times per timeout period (when the last-seen time enters a new window of a
//! quarter of the timeout), so a peer's copy never goes stale and idle traffic costs little.
//! Flows inserted from pfsync ([`Origin::Sync`]) are not announced back, as pf does
//! (`pfsync_in_ins`: imported states are not re-sent).
//!
//! Nothing here panics on any input: every array access is bounds-checked with `get`, and
//! probe loops are bounded by the index length.

use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::hash;
use super::state::{self, Dir, Pftm, Timeouts, Track};
use crate::counters::Counters;

crate::named_counters! {
    /// Flow table events and rejects, per core.
    pub enum Counter {
        Insert = "flow_insert",
        InsertSync = "flow_insert_sync",
        Removed = "flow_removed",
        Expired = "flow_expired",
        EvictEarly = "flow_evict_early",
        Full = "flow_table_full",
        Exists = "flow_insert_exists",
        ReturnCollision = "flow_return_collision",
        SyncEventQueueFull = "drop_sync_event_queue_full",
    }
}

/// Largest supported capacity: entry numbers are 24 bits in an index slot.
pub const MAX_CAPACITY: u32 = (1 << 24) - 2;

const SLOT_IDX_MASK: u32 = 0x00ff_ffff;
const SLOT_TAG_MASK: u32 = 0xf000_0000;
const SLOT_DIST_SHIFT: u32 = 24;
const SLOT_DIST_MASK: u32 = 0x0f00_0000;
/// `dist` value meaning "this far or farther": the home must be recomputed from the entry.
const DIST_FAR: u32 = 15;
/// The `flags` byte: bits 0-4 the pf timeout class, bit 5 one-sided tracking, bit 7 free.
const FLAG_CLASS_MASK: u8 = 0x1f;
const FLAG_ONE_SIDED: u8 = 0x20;
const FLAG_FREE: u8 = 0x80;
/// `Flow::next_free` sentinel.
const NO_FREE: u32 = u32::MAX;
/// Top byte of locally generated ids is the core number, so per-core tables sharing this
/// node's pfsync creator id never hand out the same id.
const ID_CORE_SHIFT: u32 = 56;
const ID_SEQ_MASK: u64 = (1 << ID_CORE_SHIFT) - 1;

/// Flow table configuration (plain data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTableConfig {
    /// Number of flows this core can track (1 ..= [`MAX_CAPACITY`]); a power of two uses
    /// the index memory best.
    pub capacity: u32,
    /// This worker's core number, the top byte of the flow ids it creates.
    pub core: u8,
    /// Secret per-node seed of the index hash.
    pub seed: u64,
    /// First sequence number for local flow ids (pf starts from boot time << 32 so ids are
    /// not reused across restarts; the caller does the same).
    pub first_id: u64,
    pub timeouts: Timeouts,
    /// Entries examined per insert when the table is full (see the module doc).
    pub evict_scan: u32,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        FlowTableConfig {
            capacity: 1 << 16,
            core: 0,
            seed: 0x6361_7270_696f_0001,
            first_id: 1,
            timeouts: Timeouts::default(),
            evict_scan: 8,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Capacity 0 or above [`MAX_CAPACITY`].
    Capacity,
}

/// Inbound key: a packet from a client to a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub proto: u8,
    /// Client address in 16-byte form ([`hash::addr16`]).
    pub client: [u8; 16],
    pub client_port: u16,
    /// The VIP address's index in the snapshot.
    pub vip: u16,
    pub vip_port: u16,
}

/// Return key: a NAT'ed packet from a backend back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReturnKey {
    pub proto: u8,
    /// The backend host's index in the snapshot.
    pub backend: u16,
    pub backend_port: u16,
    pub client: [u8; 16],
    pub client_port: u16,
}

/// pfsync identity of a flow: pf's (creatorid, id), with the creator stored as a small index
/// (0 = this node; the pfsync module maps other indices to peers' 32-bit creator ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId {
    pub creator: u8,
    pub id: u64,
}

/// Where a flow comes from: local traffic, or a peer through pfsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    /// Imported from pfsync with this identity and this state (`Track`); not announced back.
    Sync(FlowId, Track),
}

/// What to store for a new flow, besides its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFlow {
    pub service: u16,
    pub backend: u16,
    pub backend_port: u16,
    /// TCP flags of the first packet (0 for other protocols).
    pub tcp_flags: u8,
    /// Only the client → VIP direction passes through here (DSR, IPIP, GUE).
    pub one_sided: bool,
    /// relayd's `session timeout` of the service, replacing tcp.established.
    pub session_timeout: Option<u32>,
    pub origin: Origin,
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// No free entry and nothing evictable within `evict_scan` entries.
    Full,
    /// A flow with this key exists (look up first).
    Exists(Handle),
    /// Another flow already owns this return key.
    ReturnCollision,
}

/// A reference to a live entry, valid until the next call that removes flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle(u32);

/// One tracked flow: 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Flow {
    client: [u8; 16],
    client_port: u16,
    vip_port: u16,
    backend_port: u16,
    vip: u16,
    service: u16,
    backend: u16,
    proto: u8,
    /// pf peer states, `src << 4 | dst` (TCPS_* and PFUDPS_* codes all fit in 4 bits).
    peers: u8,
    creator: u8,
    flags: u8,
    last_seen: u32,
    /// Absolute expiry time; for a free entry, the next free entry (or `NO_FREE`).
    expire: u32,
    id: u64,
}

const EMPTY_FLOW: Flow = Flow {
    client: [0; 16],
    client_port: 0,
    vip_port: 0,
    backend_port: 0,
    vip: 0,
    service: 0,
    backend: 0,
    proto: 0,
    peers: 0,
    creator: 0,
    flags: FLAG_FREE,
    last_seen: 0,
    expire: NO_FREE,
    id: 0,
};

impl Flow {
    pub fn key(&self) -> Key {
        Key {
            proto: self.proto,
            client: self.client,
            client_port: self.client_port,
            vip: self.vip,
            vip_port: self.vip_port,
        }
    }
    pub fn return_key(&self) -> ReturnKey {
        ReturnKey {
            proto: self.proto,
            backend: self.backend,
            backend_port: self.backend_port,
            client: self.client,
            client_port: self.client_port,
        }
    }
    pub fn service(&self) -> u16 {
        self.service
    }
    pub fn backend(&self) -> u16 {
        self.backend
    }
    pub fn backend_port(&self) -> u16 {
        self.backend_port
    }
    pub fn id(&self) -> FlowId {
        FlowId {
            creator: self.creator,
            id: self.id,
        }
    }
    /// pf peer states and timeout class.
    pub fn track(&self) -> Track {
        Track {
            src: self.peers >> 4,
            dst: self.peers & 0x0f,
            class: self.class(),
        }
    }
    pub fn class(&self) -> Pftm {
        Pftm::from_index(self.flags & FLAG_CLASS_MASK).unwrap_or(Pftm::OtherFirst)
    }
    pub fn one_sided(&self) -> bool {
        self.flags & FLAG_ONE_SIDED != 0
    }
    pub fn last_seen(&self) -> u32 {
        self.last_seen
    }
    pub fn expire(&self) -> u32 {
        self.expire
    }
    /// The client address; IPv4 when stored v4-mapped.
    pub fn client_addr(&self) -> std::net::IpAddr {
        let a = std::net::Ipv6Addr::from(self.client);
        match a.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(a),
        }
    }
    /// The flow `key` + `new` describe, outside any table, seen at `last_seen` and expiring at
    /// `expire`: what the pfsync shell hands the daemon's `show states` mirror for a state a
    /// peer sent, and what [`FlowTable::insert`] stores once it has decided the identity and
    /// state of a local flow. The identity and pf state come from an `Origin::Sync`; a `Local`
    /// origin gives creator 0, id 0 and the first state of `key.proto`.
    #[inline]
    pub fn detached(key: &Key, new: &NewFlow, last_seen: u32, expire: u32) -> Flow {
        let (id, track) = match new.origin {
            Origin::Sync(id, track) => (id, track),
            Origin::Local => (
                FlowId { creator: 0, id: 0 },
                state::create(key.proto, new.tcp_flags),
            ),
        };
        let mut f = Flow {
            client: key.client,
            client_port: key.client_port,
            vip_port: key.vip_port,
            backend_port: new.backend_port,
            vip: key.vip,
            service: new.service,
            backend: new.backend,
            proto: key.proto,
            peers: 0,
            creator: id.creator,
            flags: if new.one_sided { FLAG_ONE_SIDED } else { 0 },
            last_seen,
            expire,
            id: id.id,
        };
        f.set_track(track);
        f
    }
    fn is_free(&self) -> bool {
        self.flags & FLAG_FREE != 0
    }
    fn set_track(&mut self, t: Track) {
        self.peers = (t.src.min(0x0f) << 4) | t.dst.min(0x0f);
        self.flags = (self.flags & !FLAG_CLASS_MASK) | (t.class as u8);
    }
}

/// What happened to a flow, for pfsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Insert,
    Update,
    Delete,
}

/// A flow table event: the kind, the core whose table it is, and a copy of the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub core: u8,
    pub flow: Flow,
}

/// One core's flow table.
#[derive(Debug)]
pub struct FlowTable {
    entries: Box<[Flow]>,
    fwd: Box<[u32]>,
    rev: Box<[u32]>,
    mask: usize,
    free_head: u32,
    len: u32,
    cursor: u32,
    seed: u64,
    core: u8,
    next_seq: u64,
    timeouts: Timeouts,
    evict_scan: u32,
    events: Arc<ArrayQueue<Event>>,
    counters: Counters<{ Counter::COUNT }>,
    /// Live flows per backend host index (pf's per-address state count, for least-states).
    /// 65536 × 4 bytes per core, allocated once.
    backend_states: Box<[u32]>,
}

#[inline]
fn key_hash(seed: u64, k: &Key) -> u32 {
    hash::directed(
        seed,
        k.proto,
        &k.client,
        k.client_port,
        &vip_word(k.vip),
        k.vip_port,
    )
}

#[inline]
fn return_hash(seed: u64, k: &ReturnKey) -> u32 {
    // A different seed keeps the two indices' collisions independent.
    hash::directed(
        seed ^ 0x5bd1_e995_5bd1_e995,
        k.proto,
        &vip_word(k.backend),
        k.backend_port,
        &k.client,
        k.client_port,
    )
}

#[inline]
fn vip_word(i: u16) -> [u8; 16] {
    let mut w = [0u8; 16];
    w[..2].copy_from_slice(&i.to_be_bytes());
    w
}

#[inline]
fn slot_entry(slot: u32) -> Option<u32> {
    (slot & SLOT_IDX_MASK).checked_sub(1)
}

#[inline]
fn make_slot(hash: u32, entry: u32, dist: usize) -> u32 {
    let d = (dist as u32).min(DIST_FAR);
    (hash & SLOT_TAG_MASK) | (d << SLOT_DIST_SHIFT) | (entry + 1)
}

#[inline]
fn tag_matches(slot: u32, hash: u32) -> bool {
    slot & SLOT_TAG_MASK == hash & SLOT_TAG_MASK
}

/// The slot's recorded distance from home, `None` when it is [`DIST_FAR`] (unknown).
#[inline]
fn slot_dist(slot: u32) -> Option<usize> {
    let d = (slot & SLOT_DIST_MASK) >> SLOT_DIST_SHIFT;
    (d < DIST_FAR).then_some(d as usize)
}

/// `slot` with its distance field set to `dist` (clamped to [`DIST_FAR`]).
#[inline]
fn with_dist(slot: u32, dist: usize) -> u32 {
    let d = (dist as u32).min(DIST_FAR);
    (slot & !SLOT_DIST_MASK) | (d << SLOT_DIST_SHIFT)
}

impl FlowTable {
    /// Allocates the table (the only allocation it ever makes).
    pub fn new(
        config: &FlowTableConfig,
        events: Arc<ArrayQueue<Event>>,
    ) -> Result<Self, ConfigError> {
        if config.capacity == 0 || config.capacity > MAX_CAPACITY {
            return Err(ConfigError::Capacity);
        }
        let cap = config.capacity as usize;
        let index_len = (cap * 2).next_power_of_two();
        let mut entries = vec![EMPTY_FLOW; cap].into_boxed_slice();
        for (i, e) in entries.iter_mut().enumerate() {
            e.expire = if i + 1 < cap { (i + 1) as u32 } else { NO_FREE };
        }
        Ok(FlowTable {
            entries,
            fwd: vec![0; index_len].into_boxed_slice(),
            rev: vec![0; index_len].into_boxed_slice(),
            mask: index_len - 1,
            free_head: 0,
            len: 0,
            cursor: 0,
            seed: config.seed,
            core: config.core,
            next_seq: config.first_id,
            timeouts: config.timeouts,
            evict_scan: config.evict_scan.max(1),
            events,
            counters: Counters::default(),
            backend_states: vec![0; usize::from(u16::MAX) + 1].into_boxed_slice(),
        })
    }

    /// Live flows of this core per backend host index.
    #[inline]
    pub fn backend_states(&self) -> &[u32] {
        &self.backend_states
    }

    /// Every live flow: a full scan of the table, for control-plane queries (per-service
    /// state counts), never per packet.
    pub fn iter(&self) -> impl Iterator<Item = &Flow> + '_ {
        self.entries.iter().filter(|f| !f.is_free())
    }

    /// Bytes of memory per tracked flow: the entry plus both index arrays' share.
    pub fn bytes_per_flow(&self) -> usize {
        let total = std::mem::size_of_val(&*self.entries)
            + std::mem::size_of_val(&*self.fwd)
            + std::mem::size_of_val(&*self.rev);
        total / self.entries.len().max(1)
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }
    pub fn counters(&self) -> &Counters<{ Counter::COUNT }> {
        &self.counters
    }
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The flow behind `h`, if it is still live.
    pub fn get(&self, h: Handle) -> Option<&Flow> {
        self.entries.get(h.0 as usize).filter(|f| !f.is_free())
    }

    /// Finds the flow of an inbound packet. An expired flow is removed and not returned.
    #[inline]
    pub fn lookup(&mut self, now: u32, key: &Key) -> Option<Handle> {
        let h = key_hash(self.seed, key);
        let (_, e) = self.find_fwd(h, key)?;
        self.live(now, e)
    }

    /// Finds the flow of a NAT return packet (backend → client).
    #[inline]
    pub fn lookup_return(&mut self, now: u32, key: &ReturnKey) -> Option<Handle> {
        let h = return_hash(self.seed, key);
        let (_, e) = self.find_rev(h, key)?;
        self.live(now, e)
    }

    fn live(&mut self, now: u32, e: u32) -> Option<Handle> {
        let f = self.entries.get(e as usize)?;
        if now >= f.expire {
            self.remove_entry(e, Counter::Expired, true);
            return None;
        }
        Some(Handle(e))
    }

    fn find_fwd(&self, h: u32, key: &Key) -> Option<(usize, u32)> {
        let mut i = h as usize & self.mask;
        for _ in 0..self.fwd.len() {
            let slot = *self.fwd.get(i)?;
            let e = slot_entry(slot)?;
            if tag_matches(slot, h)
                && self.entries.get(e as usize).map(Flow::key).as_ref() == Some(key)
            {
                return Some((i, e));
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    fn find_rev(&self, h: u32, key: &ReturnKey) -> Option<(usize, u32)> {
        let mut i = h as usize & self.mask;
        for _ in 0..self.rev.len() {
            let slot = *self.rev.get(i)?;
            let e = slot_entry(slot)?;
            if tag_matches(slot, h)
                && self.entries.get(e as usize).map(Flow::return_key).as_ref() == Some(key)
            {
                return Some((i, e));
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Inserts a new flow and announces it (local flows only).
    pub fn insert(&mut self, now: u32, key: &Key, new: &NewFlow) -> Result<Handle, InsertError> {
        let kh = key_hash(self.seed, key);
        if let Some((_, e)) = self.find_fwd(kh, key)
            && self.live(now, e).is_some()
        {
            self.counters.add(Counter::Exists.index(), 1);
            return Err(InsertError::Exists(Handle(e)));
        }
        let rkey = ReturnKey {
            proto: key.proto,
            backend: new.backend,
            backend_port: new.backend_port,
            client: key.client,
            client_port: key.client_port,
        };
        let rh = return_hash(self.seed, &rkey);
        if let Some((_, e)) = self.find_rev(rh, &rkey)
            && self.live(now, e).is_some()
        {
            self.counters.add(Counter::ReturnCollision.index(), 1);
            return Err(InsertError::ReturnCollision);
        }
        let e = match self.alloc(now) {
            Some(e) => e,
            None => {
                self.counters.add(Counter::Full.index(), 1);
                return Err(InsertError::Full);
            }
        };
        let (id, track, announce) = match new.origin {
            Origin::Local => {
                let id = (u64::from(self.core) << ID_CORE_SHIFT) | (self.next_seq & ID_SEQ_MASK);
                self.next_seq = self.next_seq.wrapping_add(1);
                (
                    FlowId { creator: 0, id },
                    state::create(key.proto, new.tcp_flags),
                    true,
                )
            }
            Origin::Sync(id, track) => (id, track, false),
        };
        let timeout = self.timeouts.get(track.class, new.session_timeout);
        // The identity and state just decided, as a synced flow carries them.
        let stamped = NewFlow {
            origin: Origin::Sync(id, track),
            ..*new
        };
        let f = Flow::detached(key, &stamped, now, now.saturating_add(timeout));
        if let Some(slot) = self.entries.get_mut(e as usize) {
            *slot = f;
        }
        self.len += 1;
        if let Some(n) = self.backend_states.get_mut(usize::from(new.backend)) {
            *n = n.saturating_add(1);
        }
        Self::index_insert(&mut self.fwd, self.mask, kh, e);
        Self::index_insert(&mut self.rev, self.mask, rh, e);
        if announce {
            self.counters.add(Counter::Insert.index(), 1);
            self.emit(EventKind::Insert, f);
        } else {
            self.counters.add(Counter::InsertSync.index(), 1);
        }
        Ok(Handle(e))
    }

    /// Records a packet of flow `h` travelling `dir` at `now`: advances the pf state, pushes
    /// the expiry out, and announces a state change (or a periodic refresh).
    #[inline]
    pub fn touch(
        &mut self,
        now: u32,
        h: Handle,
        dir: Dir,
        tcp_flags: u8,
        session_timeout: Option<u32>,
    ) {
        let Some(f) = self.entries.get_mut(h.0 as usize) else {
            return;
        };
        if f.is_free() {
            return;
        }
        let before = f.track();
        let after = state::advance(before, f.proto, dir, tcp_flags, f.one_sided());
        let timeout = self.timeouts.get(after.class, session_timeout);
        let window = (timeout / 4).max(1);
        let refresh = now / window != f.last_seen / window;
        f.set_track(after);
        f.last_seen = now;
        f.expire = now.saturating_add(timeout);
        let changed = f.track() != before;
        let copy = *f;
        if changed || refresh {
            self.emit(EventKind::Update, copy);
        }
    }

    /// Removes the flow with `key`, announcing the delete if `announce` (false when pfsync
    /// itself asks, as pf does not echo DEL_C). Returns whether it existed.
    pub fn remove(&mut self, key: &Key, announce: bool) -> bool {
        let kh = key_hash(self.seed, key);
        match self.find_fwd(kh, key) {
            Some((_, e)) => {
                self.remove_entry(e, Counter::Removed, announce);
                true
            }
            None => false,
        }
    }

    /// Visits up to `budget` entries from where the last sweep stopped and removes the
    /// expired ones. Returns how many were removed. Call it once per batch or timer tick.
    pub fn sweep(&mut self, now: u32, budget: usize) -> usize {
        let cap = self.entries.len() as u32;
        let mut removed = 0;
        for _ in 0..budget.min(cap as usize) {
            let e = self.cursor;
            self.cursor = if self.cursor + 1 >= cap {
                0
            } else {
                self.cursor + 1
            };
            if let Some(f) = self.entries.get(e as usize)
                && !f.is_free()
                && now >= f.expire
            {
                self.remove_entry(e, Counter::Expired, true);
                removed += 1;
            }
        }
        removed
    }

    /// Takes a free entry, or makes one by reclaiming an expired or evicting a
    /// non-established flow near the sweep cursor.
    fn alloc(&mut self, now: u32) -> Option<u32> {
        if self.free_head == NO_FREE {
            self.reclaim(now);
        }
        let e = self.free_head;
        let f = self.entries.get_mut(e as usize)?;
        self.free_head = f.expire;
        f.flags = 0;
        Some(e)
    }

    fn reclaim(&mut self, now: u32) {
        let cap = self.entries.len() as u32;
        let mut victim: Option<(u32, u32)> = None; // (expire, entry)
        for _ in 0..self.evict_scan.min(cap) {
            let e = self.cursor;
            self.cursor = if self.cursor + 1 >= cap {
                0
            } else {
                self.cursor + 1
            };
            let Some(f) = self.entries.get(e as usize) else {
                continue;
            };
            if f.is_free() {
                continue;
            }
            if now >= f.expire {
                self.remove_entry(e, Counter::Expired, true);
                return;
            }
            if !f.class().is_established() && victim.is_none_or(|(x, _)| f.expire < x) {
                victim = Some((f.expire, e));
            }
        }
        if let Some((_, e)) = victim {
            self.remove_entry(e, Counter::EvictEarly, true);
        }
    }

    fn remove_entry(&mut self, e: u32, why: Counter, announce: bool) {
        let Some(f) = self.entries.get(e as usize).copied() else {
            return;
        };
        if f.is_free() {
            return;
        }
        let kh = key_hash(self.seed, &f.key());
        if let Some((i, _)) = self.find_fwd(kh, &f.key()) {
            self.index_delete_fwd(i);
        }
        let rh = return_hash(self.seed, &f.return_key());
        if let Some((i, _)) = self.find_rev(rh, &f.return_key()) {
            self.index_delete_rev(i);
        }
        if let Some(slot) = self.entries.get_mut(e as usize) {
            *slot = EMPTY_FLOW;
            slot.expire = self.free_head;
        }
        self.free_head = e;
        self.len = self.len.saturating_sub(1);
        if let Some(n) = self.backend_states.get_mut(usize::from(f.backend)) {
            *n = n.saturating_sub(1);
        }
        self.counters.add(why.index(), 1);
        if announce {
            self.emit(EventKind::Delete, f);
        }
    }

    #[inline]
    fn emit(&mut self, kind: EventKind, flow: Flow) {
        let ev = Event {
            kind,
            core: self.core,
            flow,
        };
        if self.events.push(ev).is_err() {
            self.counters.add(Counter::SyncEventQueueFull.index(), 1);
        }
    }

    fn index_insert(index: &mut [u32], mask: usize, h: u32, e: u32) {
        let mut i = h as usize & mask;
        for dist in 0..index.len() {
            match index.get_mut(i) {
                Some(s) if *s == 0 => {
                    *s = make_slot(h, e, dist);
                    return;
                }
                Some(_) => i = (i + 1) & mask,
                None => return,
            }
        }
    }

    fn index_delete_fwd(&mut self, hole: usize) {
        let seed = self.seed;
        let entries = &self.entries;
        Self::backshift(&mut self.fwd, self.mask, hole, |e| {
            entries.get(e as usize).map(|f| key_hash(seed, &f.key()))
        });
    }

    fn index_delete_rev(&mut self, hole: usize) {
        let seed = self.seed;
        let entries = &self.entries;
        Self::backshift(&mut self.rev, self.mask, hole, |e| {
            entries
                .get(e as usize)
                .map(|f| return_hash(seed, &f.return_key()))
        });
    }

    /// Backward-shift deletion for linear probing (Knuth vol. 3, 6.4 Algorithm R): pull each
    /// following slot into the hole unless its home lies cyclically in (hole, j]. The home
    /// comes from the slot's `dist` field; only a [`DIST_FAR`] slot hashes its entry.
    fn backshift(
        index: &mut [u32],
        mask: usize,
        mut hole: usize,
        hash_of: impl Fn(u32) -> Option<u32>,
    ) {
        let mut j = hole;
        for _ in 0..index.len() {
            j = (j + 1) & mask;
            let slot = match index.get(j) {
                Some(&s) if s != 0 => s,
                _ => break,
            };
            let home = match slot_dist(slot) {
                Some(d) => j.wrapping_sub(d) & mask,
                None => match slot_entry(slot).and_then(&hash_of) {
                    Some(h) => h as usize & mask,
                    None => break,
                },
            };
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                if let Some(s) = index.get_mut(hole) {
                    *s = with_dist(slot, hole.wrapping_sub(home) & mask);
                }
                hole = j;
            }
        }
        if let Some(s) = index.get_mut(hole) {
            *s = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_is_48_bytes_and_64_with_index() {
        assert_eq!(std::mem::size_of::<Flow>(), 48);
        let q = Arc::new(ArrayQueue::new(4));
        let t = FlowTable::new(
            &FlowTableConfig {
                capacity: 1024,
                ..Default::default()
            },
            q,
        )
        .unwrap();
        assert_eq!(t.bytes_per_flow(), 64);
    }

    #[test]
    fn slot_encoding_round_trips() {
        for e in [0u32, 1, 12345, MAX_CAPACITY] {
            for dist in [0usize, 1, 14] {
                let s = make_slot(0xab00_0000 | 0x1234, e, dist);
                assert_eq!(slot_entry(s), Some(e));
                assert_eq!(slot_dist(s), Some(dist));
                assert!(tag_matches(s, 0xa999_9999));
                assert!(!tag_matches(s, 0xbb00_0000));
                let moved = with_dist(s, dist / 2);
                assert_eq!(slot_dist(moved), Some(dist / 2));
                assert_eq!(slot_entry(moved), Some(e));
                assert!(tag_matches(moved, 0xa000_0000));
            }
            // 15 and beyond are "far": the home is recomputed from the entry.
            assert_eq!(slot_dist(make_slot(0, e, 15)), None);
            assert_eq!(slot_dist(make_slot(0, e, 1000)), None);
            assert_eq!(slot_entry(make_slot(0xffff_ffff, e, 1000)), Some(e));
        }
        assert_eq!(slot_entry(0), None);
    }

    /// A tiny table hammered with inserts and removes keeps every flow findable in both
    /// indices: long clusters (slots 15+ from home, the far path) and wrap-around included.
    #[test]
    fn churn_in_a_crowded_index_keeps_both_indices_exact() {
        let q = Arc::new(ArrayQueue::new(1 << 16));
        let mut t = FlowTable::new(
            &FlowTableConfig {
                capacity: 64,
                ..Default::default()
            },
            q.clone(),
        )
        .unwrap();
        let key = |n: u32| Key {
            proto: 17,
            client: std::net::Ipv6Addr::from(u128::from(n)).octets(),
            client_port: (n % 7) as u16,
            vip: 0,
            vip_port: 53,
        };
        let new = |n: u32| NewFlow {
            service: 0,
            backend: (n % 3) as u16,
            backend_port: 53,
            origin: Origin::Local,
            tcp_flags: 0,
            session_timeout: None,
            one_sided: false,
        };
        let mut live: Vec<u32> = Vec::new();
        let mut x: u32 = 12345;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let n = x % 200;
            if live.contains(&n) {
                assert!(t.remove(&key(n), false), "step {step}: {n} was live");
                live.retain(|&m| m != n);
            } else if live.len() < 64 {
                t.insert(1, &key(n), &new(n)).unwrap();
                live.push(n);
            }
            if step % 97 == 0 {
                for &m in &live {
                    let h = t.lookup(1, &key(m)).expect("forward index");
                    let f = *t.get(h).unwrap();
                    assert_eq!(t.lookup_return(1, &f.return_key()), Some(h));
                }
                // Every recorded distance is the true one.
                for (i, &s) in t.fwd.iter().enumerate() {
                    if let (Some(e), Some(d)) = (slot_entry(s), slot_dist(s)) {
                        let k = t.entries[e as usize].key();
                        let home = key_hash(t.seed, &k) as usize & t.mask;
                        assert_eq!(i.wrapping_sub(home) & t.mask, d);
                    }
                }
            }
        }
        assert_eq!(t.len(), live.len());
    }

    /// Backward shift through one long cluster whose slots are 15 or more from home (the far
    /// path hashes the entry) and that wraps around the end of the index.
    #[test]
    fn backshift_through_far_slots_and_wraparound() {
        const LEN: usize = 32;
        let mask = LEN - 1;
        // Entry e's home is HOME for every entry but the last four (home 0): one cluster from
        // 28 wrapping to 27 (almost full).
        const HOME: usize = 28;
        let home_of = |e: u32| if e < 27 { HOME as u32 } else { 0 };
        for victim in [0usize, 1, 14, 15, 16, 20, 26, 30] {
            let mut index = [0u32; LEN];
            for e in 0..31u32 {
                BackshiftTest::insert(&mut index, mask, home_of(e), e);
            }
            let hole = (0..LEN)
                .find(|&i| slot_entry(index[i]) == Some(victim as u32))
                .unwrap();
            FlowTable::backshift(&mut index, mask, hole, |e| Some(home_of(e)));
            // Every remaining entry is found by probing from its home, and its distance field
            // is exact (or far).
            for e in (0..31u32).filter(|&e| e != victim as u32) {
                let h = home_of(e) as usize & mask;
                let at = (0..LEN)
                    .map(|k| (h + k) & mask)
                    .take_while(|&i| index[i] != 0)
                    .find(|&i| slot_entry(index[i]) == Some(e));
                let at = at.unwrap_or_else(|| panic!("victim {victim}: entry {e} lost"));
                let d = at.wrapping_sub(h) & mask;
                assert_eq!(slot_dist(index[at]), (d < 15).then_some(d), "entry {e}");
            }
            assert_eq!(index.iter().filter(|&&s| s != 0).count(), 30);
        }
    }

    struct BackshiftTest;
    impl BackshiftTest {
        fn insert(index: &mut [u32], mask: usize, h: u32, e: u32) {
            FlowTable::index_insert(index, mask, h, e);
        }
    }

    #[test]
    fn bad_capacity_is_refused() {
        let q = Arc::new(ArrayQueue::new(1));
        for capacity in [0, MAX_CAPACITY + 1] {
            let c = FlowTableConfig {
                capacity,
                ..Default::default()
            };
            assert_eq!(
                FlowTable::new(&c, q.clone()).err(),
                Some(ConfigError::Capacity)
            );
        }
    }
}
