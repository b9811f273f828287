//! pfsync(4) packets in OpenBSD's wire format (sys/net/if_pfsync.h 1.65, if_pfsync.c 1.332).
//!
//! ```text
//! IP (proto 240, TTL 255) ─┬─ pfsync_header (20 B)
//!                          │    0      1      2             4                         20
//!                          │    +------+------+-------------+-------------------------+
//!                          │    | ver  | pad  | len (BE)    | pfcksum[16] (zero)      |
//!                          │    +------+------+-------------+-------------------------+
//!                          ├─ pfsync_subheader (4 B)
//!                          │    +--------+----------------+---------------+
//!                          │    | action | len (32-bit w.)| count (BE)    |
//!                          │    +--------+----------------+---------------+
//!                          ├─ count × message of len*4 bytes
//!                          ├─ pfsync_subheader, messages, ... until header.len
//!
//! pfsync_state (264 B)                       pfsync_state_key (40 B)
//!   0 id u64            8 ifname[16]           0 addr[0] 16   16 addr[1] 16
//!  24 key[0] wire      64 key[1] stack        32 port[0] 2    34 port[1] 2
//! 104 src peer        136 dst peer            36 rdomain 2    38 af 1   39 pad 1
//! 168 rt_addr 16      184 rule  188 anchor   pfsync_state_peer (32 B)
//! 192 nat_rule        196 creation             0 scrub 8 (flags 2, ttl 1, valid 1, ts_mod 4)
//! 200 expire          204 packets[2] 16        8 seqlo  12 seqhi  16 seqdiff
//! 220 bytes[2] 16     236 creatorid            20 max_win 2  22 mss 2  24 state 1  25 wscale 1
//! 240 rtableid[2]     248 max_mss  250 af     26 pad[6]
//! 251 proto 252 direction 253 log 254 rt 255 timeout 256 sync_flags 257 updates
//! 258 min_ttl 259 set_tos 260 state_flags 262 set_prio[2]
//!
//! pfsync_upd_c (84 B): 0 id, 8 src peer, 40 dst peer, 72 creatorid, 76 expire, 80 timeout,
//!                      81 state_flags, 82 pad[2]
//! INS_ACK / UPD_REQ / DEL_C (12 B, packed): 0 id u64, 8 creatorid u32
//! CLR (20 B): 0 ifname[16], 16 creatorid     BUS (12 B): 0 creatorid, 4 endtime, 8 status, pad[3]
//! TDB (52 B): 0 spi, 4 dst sockaddr_union (28 B, BSD layout), 32 rpl u64, 40 cur_bytes u64,
//!             48 sproto, 49 updates, 50 rdomain
//! ```
//!
//! All multi-byte fields are big-endian. The structs are packed byte layouts built by hand
//! (spec §9 item 9): no `repr(C)`, no transmute.
//!
//! Validation happens once, at the boundary: [`Packet::parse`] checks the header and every
//! [`Messages`] item checks its subheader and lengths before any field is read; each record's
//! `parse` takes a slice whose length it checks first, and after that the accessors read fixed
//! offsets inside that checked length. Nothing here panics on input from the network: every
//! reject is a named [`Reject`] (OpenBSD's `pfsyncstats` names: `badver`, `badlen`, `badact`,
//! `badval`, `hdrops`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// `PFSYNC_VERSION`.
pub const VERSION: u8 = 6;
/// `sizeof(struct pfsync_header)`.
pub const HEADER_LEN: usize = 20;
/// `sizeof(struct pfsync_subheader)`.
pub const SUBHEADER_LEN: usize = 4;
/// `sizeof(struct pfsync_state)`.
pub const STATE_LEN: usize = 264;
/// `sizeof(struct pfsync_state_key)`.
pub const KEY_LEN: usize = 40;
/// `sizeof(struct pfsync_state_peer)`.
pub const PEER_LEN: usize = 32;
/// `sizeof(struct pfsync_state_scrub)`.
pub const SCRUB_LEN: usize = 8;
/// `sizeof(struct pfsync_upd_c)`.
pub const UPD_C_LEN: usize = 84;
/// `sizeof(struct pfsync_ins_ack)` = `pfsync_upd_req` = `pfsync_del_c` (packed).
pub const ID_LEN: usize = 12;
/// `sizeof(struct pfsync_clr)`.
pub const CLR_LEN: usize = 20;
/// `sizeof(struct pfsync_bus)`.
pub const BUS_LEN: usize = 12;
/// `sizeof(struct pfsync_tdb)`.
pub const TDB_LEN: usize = 52;
/// `IFNAMSIZ`.
pub const IFNAMSIZ: usize = 16;
/// `sizeof(union sockaddr_union)` on OpenBSD (the `sockaddr_in6` member).
pub const SOCKADDR_LEN: usize = 28;

/// OpenBSD's `AF_INET`.
pub const AF_INET: u8 = 2;
/// OpenBSD's `AF_INET6` (24, not Linux's 10).
pub const AF_INET6: u8 = 24;
/// pfvar.h `PF_IN`.
pub const PF_IN: u8 = 1;
/// pfvar.h `PF_OUT`.
pub const PF_OUT: u8 = 2;
/// pfvar.h `PF_ROUTETO` (`enum { PF_NOPFROUTE, PF_ROUTETO, PF_DUPTO, PF_REPLYTO }`).
pub const PF_ROUTETO: u8 = 1;
/// pfvar.h `PFTM_MAX`: timeouts at or above are invalid on the wire.
pub const PFTM_MAX: u8 = 20;
/// pfvar.h `PF_TCPS_PROXY_DST` (`TCP_NSTATES + 1`): the highest valid peer state.
pub const PF_TCPS_PROXY_DST: u8 = 12;
/// pfvar.h `PF_TCPS_PROXY_SRC` (`TCP_NSTATES`).
pub const PF_TCPS_PROXY_SRC: u8 = 11;
/// pfvar.h `PFSTATE_ACK`: the sender defers the first packet until INS_ACK.
pub const PFSTATE_ACK: u16 = 0x0010;
/// if_pfsync.h `PFSYNC_SCRUB_FLAG_VALID`.
pub const SCRUB_FLAG_VALID: u8 = 0x01;
/// if_pfsync.h `PFSYNC_BUS_START`.
pub const BUS_START: u8 = 1;
/// if_pfsync.h `PFSYNC_BUS_END`.
pub const BUS_END: u8 = 2;

/// `PFSYNC_ACT_*` numbers (if_pfsync.h).
pub mod action {
    pub const CLR: u8 = 0;
    pub const OINS: u8 = 1;
    pub const INS_ACK: u8 = 2;
    pub const OUPD: u8 = 3;
    pub const UPD_C: u8 = 4;
    pub const UPD_REQ: u8 = 5;
    pub const DEL: u8 = 6;
    pub const DEL_C: u8 = 7;
    pub const INS_F: u8 = 8;
    pub const DEL_F: u8 = 9;
    pub const BUS: u8 = 10;
    pub const OTDB: u8 = 11;
    pub const EOF: u8 = 12;
    pub const INS: u8 = 13;
    pub const UPD: u8 = 14;
    pub const TDB: u8 = 15;
    pub const MAX: u8 = 16;
}

/// The size of one message of `action`, or `None` for deprecated and unknown actions (which
/// the receiver skips by `count × len*4`).
pub const fn message_len(act: u8) -> Option<usize> {
    match act {
        action::CLR => Some(CLR_LEN),
        action::INS_ACK | action::UPD_REQ | action::DEL_C => Some(ID_LEN),
        action::UPD_C => Some(UPD_C_LEN),
        action::DEL | action::INS | action::UPD => Some(STATE_LEN),
        action::BUS => Some(BUS_LEN),
        action::TDB => Some(TDB_LEN),
        _ => None,
    }
}

crate::named_counters! {
    /// Why (part of) a pfsync packet was rejected. Names follow OpenBSD's `pfsyncstats`
    /// (`netstat -s -p pfsync`) where one exists.
    pub enum Reject {
        /// Shorter than the pfsync header.
        HdrTruncated = "hdrops",
        /// Header version is not 6.
        BadVer = "badver",
        /// Header len shorter than the header or longer than the bytes received; a subheader or
        /// its messages run past the end.
        BadLen = "badlen",
        /// A known action with a message length below its size and a zero count or len.
        BadAct = "badact",
        /// A field out of range (timeout, peer state, direction, af, creatorid 0).
        BadVal = "badval",
        /// Emit: the output buffer is too small (never a network input).
        BufferTooSmall = "emit_buffer_too_small",
    }
}

// ---- byte helpers over slices whose length the caller has already checked -------------------

fn rd16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}
fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn rd64(b: &[u8], off: usize) -> u64 {
    (u64::from(rd32(b, off)) << 32) | u64::from(rd32(b, off + 4))
}
fn rd_arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}
fn wr16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
fn wr32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
fn wr64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// Checks `buf` holds at least `len` bytes and returns exactly those.
fn need(buf: &[u8], len: usize, err: Reject) -> Result<&[u8], Reject> {
    buf.get(..len).ok_or(err)
}
fn need_mut(buf: &mut [u8], len: usize) -> Result<&mut [u8], Reject> {
    buf.get_mut(..len).ok_or(Reject::BufferTooSmall)
}

// ---- header ---------------------------------------------------------------------------------

mod hdr {
    pub const VERSION: usize = 0;
    pub const PAD: usize = 1;
    pub const LEN: usize = 2;
    pub const PFCKSUM: usize = 4;
}

/// A view over a received pfsync packet (after the IP header), validated by [`Packet::parse`].
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// The packet trimmed to the header's `len` (as `pfsync_input` trims the mbuf).
    bytes: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Checks the header: length, version 6, `len` within the bytes received.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Reject> {
        let h = need(buf, HEADER_LEN, Reject::HdrTruncated)?;
        if h[hdr::VERSION] != VERSION {
            return Err(Reject::BadVer);
        }
        let len = usize::from(rd16(h, hdr::LEN));
        if len < HEADER_LEN {
            return Err(Reject::BadLen);
        }
        let bytes = need(buf, len, Reject::BadLen)?;
        Ok(Self { bytes })
    }

    /// The header's `len`: total pfsync bytes, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true for a parsed packet (the header is always there); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The messages after the header.
    pub fn messages(&self) -> Messages<'a> {
        Messages {
            rest: self.bytes.get(HEADER_LEN..).unwrap_or(&[]),
            cur: None,
            skipped: 0,
            done: false,
        }
    }
}

/// Writes a pfsync header with `len` into `buf[..HEADER_LEN]` (pad and pfcksum zero).
pub fn emit_header(buf: &mut [u8], len: u16) -> Result<(), Reject> {
    let h = need_mut(buf, HEADER_LEN)?;
    h.fill(0);
    h[hdr::VERSION] = VERSION;
    h[hdr::PAD] = 0;
    wr16(h, hdr::LEN, len);
    debug_assert_eq!(hdr::PFCKSUM + 16, HEADER_LEN);
    Ok(())
}

// ---- subheader ------------------------------------------------------------------------------

mod sub {
    pub const ACTION: usize = 0;
    pub const LEN: usize = 1;
    pub const COUNT: usize = 2;
}

/// `struct pfsync_subheader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subheader {
    pub action: u8,
    /// Size of one message in 32-bit words.
    pub len: u8,
    pub count: u16,
}

impl Subheader {
    pub fn parse(buf: &[u8]) -> Result<Self, Reject> {
        let b = need(buf, SUBHEADER_LEN, Reject::BadLen)?;
        Ok(Self {
            action: b[sub::ACTION],
            len: b[sub::LEN],
            count: rd16(b, sub::COUNT),
        })
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        let b = need_mut(buf, SUBHEADER_LEN)?;
        b[sub::ACTION] = self.action;
        b[sub::LEN] = self.len;
        wr16(b, sub::COUNT, self.count);
        Ok(())
    }
}

// ---- state key, scrub, peer -----------------------------------------------------------------

mod key {
    pub const ADDR0: usize = 0;
    pub const ADDR1: usize = 16;
    pub const PORT0: usize = 32;
    pub const PORT1: usize = 34;
    pub const RDOMAIN: usize = 36;
    pub const AF: usize = 38;
}

/// `struct pfsync_state_key`: raw `pf_addr`s (IPv4 in the first 4 bytes), ports in host order
/// here (network order on the wire). Index 0 is the source side for a `PF_IN` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateKey {
    pub addr: [[u8; 16]; 2],
    pub port: [u16; 2],
    pub rdomain: u16,
    pub af: u8,
}

impl StateKey {
    pub fn parse(buf: &[u8]) -> Result<Self, Reject> {
        let b = need(buf, KEY_LEN, Reject::BadLen)?;
        Ok(Self {
            addr: [rd_arr(b, key::ADDR0), rd_arr(b, key::ADDR1)],
            port: [rd16(b, key::PORT0), rd16(b, key::PORT1)],
            rdomain: rd16(b, key::RDOMAIN),
            af: b[key::AF],
        })
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        let b = need_mut(buf, KEY_LEN)?;
        b.fill(0);
        b[key::ADDR0..key::ADDR0 + 16].copy_from_slice(&self.addr[0]);
        b[key::ADDR1..key::ADDR1 + 16].copy_from_slice(&self.addr[1]);
        wr16(b, key::PORT0, self.port[0]);
        wr16(b, key::PORT1, self.port[1]);
        wr16(b, key::RDOMAIN, self.rdomain);
        b[key::AF] = self.af;
        Ok(())
    }
}

/// Encodes an IPv4 address as a `pf_addr` (first 4 bytes, rest zero).
pub fn pf_addr_v4(a: Ipv4Addr) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a.octets());
    out
}
/// Encodes an IPv6 address as a `pf_addr`.
pub fn pf_addr_v6(a: Ipv6Addr) -> [u8; 16] {
    a.octets()
}

mod scrub {
    pub const FLAGS: usize = 0;
    pub const TTL: usize = 2;
    pub const SCRUB_FLAG: usize = 3;
    pub const TS_MOD: usize = 4;
}

/// `struct pfsync_state_scrub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scrub {
    pub pfss_flags: u16,
    pub pfss_ttl: u8,
    /// `PFSYNC_SCRUB_FLAG_VALID` when the sender had scrub memory.
    pub scrub_flag: u8,
    pub pfss_ts_mod: u32,
}

mod peer {
    pub const SCRUB: usize = 0;
    pub const SEQLO: usize = 8;
    pub const SEQHI: usize = 12;
    pub const SEQDIFF: usize = 16;
    pub const MAX_WIN: usize = 20;
    pub const MSS: usize = 22;
    pub const STATE: usize = 24;
    pub const WSCALE: usize = 25;
}

/// `struct pfsync_state_peer` (the 6 pad bytes are written as zero, ignored on read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatePeer {
    pub scrub: Scrub,
    pub seqlo: u32,
    pub seqhi: u32,
    pub seqdiff: u32,
    pub max_win: u16,
    pub mss: u16,
    /// TCP FSM state (`TCPS_*`, `PF_TCPS_PROXY_*`) or `PFUDPS_*` / `PFOTHERS_*`.
    pub state: u8,
    pub wscale: u8,
}

impl StatePeer {
    pub fn parse(buf: &[u8]) -> Result<Self, Reject> {
        let b = need(buf, PEER_LEN, Reject::BadLen)?;
        let s = peer::SCRUB;
        Ok(Self {
            scrub: Scrub {
                pfss_flags: rd16(b, s + scrub::FLAGS),
                pfss_ttl: b[s + scrub::TTL],
                scrub_flag: b[s + scrub::SCRUB_FLAG],
                pfss_ts_mod: rd32(b, s + scrub::TS_MOD),
            },
            seqlo: rd32(b, peer::SEQLO),
            seqhi: rd32(b, peer::SEQHI),
            seqdiff: rd32(b, peer::SEQDIFF),
            max_win: rd16(b, peer::MAX_WIN),
            mss: rd16(b, peer::MSS),
            state: b[peer::STATE],
            wscale: b[peer::WSCALE],
        })
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        let b = need_mut(buf, PEER_LEN)?;
        b.fill(0);
        let s = peer::SCRUB;
        wr16(b, s + scrub::FLAGS, self.scrub.pfss_flags);
        b[s + scrub::TTL] = self.scrub.pfss_ttl;
        b[s + scrub::SCRUB_FLAG] = self.scrub.scrub_flag;
        wr32(b, s + scrub::TS_MOD, self.scrub.pfss_ts_mod);
        debug_assert_eq!(s + SCRUB_LEN, peer::SEQLO);
        wr32(b, peer::SEQLO, self.seqlo);
        wr32(b, peer::SEQHI, self.seqhi);
        wr32(b, peer::SEQDIFF, self.seqdiff);
        wr16(b, peer::MAX_WIN, self.max_win);
        wr16(b, peer::MSS, self.mss);
        b[peer::STATE] = self.state;
        b[peer::WSCALE] = self.wscale;
        Ok(())
    }
}

// ---- pfsync_state ---------------------------------------------------------------------------

/// Byte offsets in `struct pfsync_state`.
pub mod st {
    pub const ID: usize = 0;
    pub const IFNAME: usize = 8;
    pub const KEY_WIRE: usize = 24;
    pub const KEY_STACK: usize = 64;
    pub const SRC: usize = 104;
    pub const DST: usize = 136;
    pub const RT_ADDR: usize = 168;
    pub const RULE: usize = 184;
    pub const ANCHOR: usize = 188;
    pub const NAT_RULE: usize = 192;
    pub const CREATION: usize = 196;
    pub const EXPIRE: usize = 200;
    pub const PACKETS: usize = 204;
    pub const BYTES: usize = 220;
    pub const CREATORID: usize = 236;
    pub const RTABLEID: usize = 240;
    pub const MAX_MSS: usize = 248;
    pub const AF: usize = 250;
    pub const PROTO: usize = 251;
    pub const DIRECTION: usize = 252;
    pub const LOG: usize = 253;
    pub const RT: usize = 254;
    pub const TIMEOUT: usize = 255;
    pub const SYNC_FLAGS: usize = 256;
    pub const UPDATES: usize = 257;
    pub const MIN_TTL: usize = 258;
    pub const SET_TOS: usize = 259;
    pub const STATE_FLAGS: usize = 260;
    pub const SET_PRIO: usize = 262;
}

/// `struct pfsync_state` (264 B), the full state of INS, UPD and DEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct State {
    /// Opaque on the wire; read as big-endian (OpenBSD stores `htobe64(stateid)`).
    pub id: u64,
    pub ifname: [u8; IFNAMSIZ],
    /// `[PF_SK_WIRE, PF_SK_STACK]`.
    pub key: [StateKey; 2],
    pub src: StatePeer,
    pub dst: StatePeer,
    pub rt_addr: [u8; 16],
    pub rule: u32,
    pub anchor: u32,
    pub nat_rule: u32,
    /// Age in seconds.
    pub creation: u32,
    /// Seconds until expiry.
    pub expire: u32,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub creatorid: u32,
    pub rtableid: [i32; 2],
    pub max_mss: u16,
    pub af: u8,
    pub proto: u8,
    pub direction: u8,
    pub log: u8,
    pub rt: u8,
    pub timeout: u8,
    pub sync_flags: u8,
    pub updates: u8,
    pub min_ttl: u8,
    pub set_tos: u8,
    pub state_flags: u16,
    pub set_prio: [u8; 2],
}

fn rd_u64_pair(b: &[u8], off: usize) -> [u64; 2] {
    // pf_state_counter_hton: each u64 as hi u32 BE then lo u32 BE, i.e. a BE u64.
    [rd64(b, off), rd64(b, off + 8)]
}

impl State {
    pub fn parse(buf: &[u8]) -> Result<Self, Reject> {
        let b = need(buf, STATE_LEN, Reject::BadLen)?;
        Ok(Self {
            id: rd64(b, st::ID),
            ifname: rd_arr(b, st::IFNAME),
            key: [
                StateKey::parse(&b[st::KEY_WIRE..])?,
                StateKey::parse(&b[st::KEY_STACK..])?,
            ],
            src: StatePeer::parse(&b[st::SRC..])?,
            dst: StatePeer::parse(&b[st::DST..])?,
            rt_addr: rd_arr(b, st::RT_ADDR),
            rule: rd32(b, st::RULE),
            anchor: rd32(b, st::ANCHOR),
            nat_rule: rd32(b, st::NAT_RULE),
            creation: rd32(b, st::CREATION),
            expire: rd32(b, st::EXPIRE),
            packets: rd_u64_pair(b, st::PACKETS),
            bytes: rd_u64_pair(b, st::BYTES),
            creatorid: rd32(b, st::CREATORID),
            rtableid: [
                rd32(b, st::RTABLEID) as i32,
                rd32(b, st::RTABLEID + 4) as i32,
            ],
            max_mss: rd16(b, st::MAX_MSS),
            af: b[st::AF],
            proto: b[st::PROTO],
            direction: b[st::DIRECTION],
            log: b[st::LOG],
            rt: b[st::RT],
            timeout: b[st::TIMEOUT],
            sync_flags: b[st::SYNC_FLAGS],
            updates: b[st::UPDATES],
            min_ttl: b[st::MIN_TTL],
            set_tos: b[st::SET_TOS],
            state_flags: rd16(b, st::STATE_FLAGS),
            set_prio: rd_arr(b, st::SET_PRIO),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        let b = need_mut(buf, STATE_LEN)?;
        b.fill(0);
        wr64(b, st::ID, self.id);
        b[st::IFNAME..st::IFNAME + IFNAMSIZ].copy_from_slice(&self.ifname);
        self.key[0].emit(&mut b[st::KEY_WIRE..])?;
        self.key[1].emit(&mut b[st::KEY_STACK..])?;
        self.src.emit(&mut b[st::SRC..])?;
        self.dst.emit(&mut b[st::DST..])?;
        b[st::RT_ADDR..st::RT_ADDR + 16].copy_from_slice(&self.rt_addr);
        wr32(b, st::RULE, self.rule);
        wr32(b, st::ANCHOR, self.anchor);
        wr32(b, st::NAT_RULE, self.nat_rule);
        wr32(b, st::CREATION, self.creation);
        wr32(b, st::EXPIRE, self.expire);
        wr64(b, st::PACKETS, self.packets[0]);
        wr64(b, st::PACKETS + 8, self.packets[1]);
        wr64(b, st::BYTES, self.bytes[0]);
        wr64(b, st::BYTES + 8, self.bytes[1]);
        wr32(b, st::CREATORID, self.creatorid);
        wr32(b, st::RTABLEID, self.rtableid[0] as u32);
        wr32(b, st::RTABLEID + 4, self.rtableid[1] as u32);
        wr16(b, st::MAX_MSS, self.max_mss);
        b[st::AF] = self.af;
        b[st::PROTO] = self.proto;
        b[st::DIRECTION] = self.direction;
        b[st::LOG] = self.log;
        b[st::RT] = self.rt;
        b[st::TIMEOUT] = self.timeout;
        b[st::SYNC_FLAGS] = self.sync_flags;
        b[st::UPDATES] = self.updates;
        b[st::MIN_TTL] = self.min_ttl;
        b[st::SET_TOS] = self.set_tos;
        wr16(b, st::STATE_FLAGS, self.state_flags);
        b[st::SET_PRIO..st::SET_PRIO + 2].copy_from_slice(&self.set_prio);
        Ok(())
    }

    /// The receive-side checks of `pfsync_in_ins` / `pfsync_in_upd` plus `pf_state_import`'s
    /// creatorid check: timeout < PFTM_MAX, peer states ≤ PF_TCPS_PROXY_DST, direction ≤
    /// PF_OUT, af inet or inet6, creatorid non-zero.
    pub fn check(&self) -> Result<(), Reject> {
        let ok = self.timeout < PFTM_MAX
            && self.src.state <= PF_TCPS_PROXY_DST
            && self.dst.state <= PF_TCPS_PROXY_DST
            && self.direction <= PF_OUT
            && (self.af == AF_INET || self.af == AF_INET6)
            && self.creatorid != 0;
        if ok { Ok(()) } else { Err(Reject::BadVal) }
    }
}

// ---- compressed update ----------------------------------------------------------------------

mod updc {
    pub const ID: usize = 0;
    pub const SRC: usize = 8;
    pub const DST: usize = 40;
    pub const CREATORID: usize = 72;
    pub const EXPIRE: usize = 76;
    pub const TIMEOUT: usize = 80;
    pub const STATE_FLAGS: usize = 81;
}

/// `struct pfsync_upd_c` (84 B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UpdC {
    pub id: u64,
    pub src: StatePeer,
    pub dst: StatePeer,
    pub creatorid: u32,
    /// Zero from 1.332 senders; receivers refresh instead (spec §9 item 18).
    pub expire: u32,
    pub timeout: u8,
    pub state_flags: u8,
}

impl UpdC {
    pub fn parse(buf: &[u8]) -> Result<Self, Reject> {
        let b = need(buf, UPD_C_LEN, Reject::BadLen)?;
        Ok(Self {
            id: rd64(b, updc::ID),
            src: StatePeer::parse(&b[updc::SRC..])?,
            dst: StatePeer::parse(&b[updc::DST..])?,
            creatorid: rd32(b, updc::CREATORID),
            expire: rd32(b, updc::EXPIRE),
            timeout: b[updc::TIMEOUT],
            state_flags: b[updc::STATE_FLAGS],
        })
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        let b = need_mut(buf, UPD_C_LEN)?;
        b.fill(0);
        wr64(b, updc::ID, self.id);
        self.src.emit(&mut b[updc::SRC..])?;
        self.dst.emit(&mut b[updc::DST..])?;
        wr32(b, updc::CREATORID, self.creatorid);
        wr32(b, updc::EXPIRE, self.expire);
        b[updc::TIMEOUT] = self.timeout;
        b[updc::STATE_FLAGS] = self.state_flags;
        Ok(())
    }
    /// `pfsync_in_upd_c`'s checks: timeout < PFTM_MAX, peer states ≤ PF_TCPS_PROXY_DST.
    pub fn check(&self) -> Result<(), Reject> {
        let ok = self.timeout < PFTM_MAX
            && self.src.state <= PF_TCPS_PROXY_DST
            && self.dst.state <= PF_TCPS_PROXY_DST;
        if ok { Ok(()) } else { Err(Reject::BadVal) }
    }
}

// ---- id + creatorid records -----------------------------------------------------------------

mod idrec {
    pub const ID: usize = 0;
    pub const CREATORID: usize = 8;
}

/// The packed 12-byte `{ u64 id; u32 creatorid; }` of INS_ACK, UPD_REQ and DEL_C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct IdRecord {
    pub id: u64,
    pub creatorid: u32,
}

impl IdRecord {
    pub fn parse(buf: &[u8]) -> Result<Self, Reject> {
        let b = need(buf, ID_LEN, Reject::BadLen)?;
        Ok(Self {
            id: rd64(b, idrec::ID),
            creatorid: rd32(b, idrec::CREATORID),
        })
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        let b = need_mut(buf, ID_LEN)?;
        wr64(b, idrec::ID, self.id);
        wr32(b, idrec::CREATORID, self.creatorid);
        Ok(())
    }
}

// ---- CLR, BUS -------------------------------------------------------------------------------

mod clr {
    pub const IFNAME: usize = 0;
    pub const CREATORID: usize = 16;
}

/// `struct pfsync_clr`: delete all states of `creatorid` (only those on `ifname` if non-empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Clr {
    pub ifname: [u8; IFNAMSIZ],
    pub creatorid: u32,
}

impl Clr {
    pub fn parse(buf: &[u8]) -> Result<Self, Reject> {
        let b = need(buf, CLR_LEN, Reject::BadLen)?;
        Ok(Self {
            ifname: rd_arr(b, clr::IFNAME),
            creatorid: rd32(b, clr::CREATORID),
        })
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        let b = need_mut(buf, CLR_LEN)?;
        b[clr::IFNAME..clr::IFNAME + IFNAMSIZ].copy_from_slice(&self.ifname);
        wr32(b, clr::CREATORID, self.creatorid);
        Ok(())
    }
}

mod bus {
    pub const CREATORID: usize = 0;
    pub const ENDTIME: usize = 4;
    pub const STATUS: usize = 8;
}

/// `struct pfsync_bus`: bulk update start / end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Bus {
    pub creatorid: u32,
    pub endtime: u32,
    /// [`BUS_START`] or [`BUS_END`].
    pub status: u8,
}

impl Bus {
    pub fn parse(buf: &[u8]) -> Result<Self, Reject> {
        let b = need(buf, BUS_LEN, Reject::BadLen)?;
        Ok(Self {
            creatorid: rd32(b, bus::CREATORID),
            endtime: rd32(b, bus::ENDTIME),
            status: b[bus::STATUS],
        })
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        let b = need_mut(buf, BUS_LEN)?;
        b.fill(0);
        wr32(b, bus::CREATORID, self.creatorid);
        wr32(b, bus::ENDTIME, self.endtime);
        b[bus::STATUS] = self.status;
        Ok(())
    }
}

// ---- TDB ------------------------------------------------------------------------------------

mod tdb {
    pub const SPI: usize = 0;
    pub const DST: usize = 4;
    pub const RPL: usize = 32;
    pub const CUR_BYTES: usize = 40;
    pub const SPROTO: usize = 48;
    pub const UPDATES: usize = 49;
    pub const RDOMAIN: usize = 50;
}

/// BSD `struct sockaddr_in` / `sockaddr_in6` offsets (with the `sa_len` byte Linux lacks).
mod sa {
    pub const LEN: usize = 0;
    pub const FAMILY: usize = 1;
    pub const PORT: usize = 2;
    pub const IN_ADDR: usize = 4;
    pub const IN6_FLOWINFO: usize = 4;
    pub const IN6_ADDR: usize = 8;
    pub const IN6_SCOPE_ID: usize = 24;
    pub const SIN_LEN: u8 = 16;
    pub const SIN6_LEN: u8 = 28;
}

/// The `sockaddr_union` of a TDB message, serialised by hand in BSD layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SockAddr {
    V4 {
        addr: Ipv4Addr,
        port: u16,
    },
    V6 {
        addr: Ipv6Addr,
        port: u16,
        flowinfo: u32,
        scope_id: u32,
    },
    /// Any other family, kept as bytes so parse/emit round-trips.
    Other([u8; SOCKADDR_LEN]),
}

impl SockAddr {
    fn parse(b: &[u8; SOCKADDR_LEN]) -> Self {
        match (b[sa::LEN], b[sa::FAMILY]) {
            (sa::SIN_LEN, AF_INET) => SockAddr::V4 {
                addr: Ipv4Addr::from(rd_arr::<4>(b, sa::IN_ADDR)),
                port: rd16(b, sa::PORT),
            },
            (sa::SIN6_LEN, AF_INET6) => SockAddr::V6 {
                addr: Ipv6Addr::from(rd_arr::<16>(b, sa::IN6_ADDR)),
                port: rd16(b, sa::PORT),
                flowinfo: rd32(b, sa::IN6_FLOWINFO),
                scope_id: rd32(b, sa::IN6_SCOPE_ID),
            },
            _ => SockAddr::Other(*b),
        }
    }
    fn emit(&self) -> [u8; SOCKADDR_LEN] {
        let mut b = [0u8; SOCKADDR_LEN];
        match *self {
            SockAddr::V4 { addr, port } => {
                b[sa::LEN] = sa::SIN_LEN;
                b[sa::FAMILY] = AF_INET;
                wr16(&mut b, sa::PORT, port);
                b[sa::IN_ADDR..sa::IN_ADDR + 4].copy_from_slice(&addr.octets());
            }
            SockAddr::V6 {
                addr,
                port,
                flowinfo,
                scope_id,
            } => {
                b[sa::LEN] = sa::SIN6_LEN;
                b[sa::FAMILY] = AF_INET6;
                wr16(&mut b, sa::PORT, port);
                wr32(&mut b, sa::IN6_FLOWINFO, flowinfo);
                b[sa::IN6_ADDR..sa::IN6_ADDR + 16].copy_from_slice(&addr.octets());
                wr32(&mut b, sa::IN6_SCOPE_ID, scope_id);
            }
            SockAddr::Other(raw) => b = raw,
        }
        b
    }
}

/// `struct pfsync_tdb` (52 B): an IPsec SA replay-counter update. carpio has no IPsec; it
/// parses and counts these so the stream stays in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tdb {
    pub spi: u32,
    pub dst: SockAddr,
    pub rpl: u64,
    pub cur_bytes: u64,
    pub sproto: u8,
    pub updates: u8,
    pub rdomain: u16,
}

impl Tdb {
    pub fn parse(buf: &[u8]) -> Result<Self, Reject> {
        let b = need(buf, TDB_LEN, Reject::BadLen)?;
        Ok(Self {
            spi: rd32(b, tdb::SPI),
            dst: SockAddr::parse(&rd_arr(b, tdb::DST)),
            rpl: rd64(b, tdb::RPL),
            cur_bytes: rd64(b, tdb::CUR_BYTES),
            sproto: b[tdb::SPROTO],
            updates: b[tdb::UPDATES],
            rdomain: rd16(b, tdb::RDOMAIN),
        })
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        let b = need_mut(buf, TDB_LEN)?;
        wr32(b, tdb::SPI, self.spi);
        b[tdb::DST..tdb::DST + SOCKADDR_LEN].copy_from_slice(&self.dst.emit());
        wr64(b, tdb::RPL, self.rpl);
        wr64(b, tdb::CUR_BYTES, self.cur_bytes);
        b[tdb::SPROTO] = self.sproto;
        b[tdb::UPDATES] = self.updates;
        wr16(b, tdb::RDOMAIN, self.rdomain);
        Ok(())
    }
}

// ---- messages -------------------------------------------------------------------------------

/// One message of a known action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Clr(Clr),
    InsAck(IdRecord),
    UpdC(UpdC),
    UpdReq(IdRecord),
    Del(State),
    DelC(IdRecord),
    Bus(Bus),
    Ins(State),
    Upd(State),
    Tdb(Tdb),
}

impl Message {
    /// The `PFSYNC_ACT_*` number.
    pub fn action(&self) -> u8 {
        match self {
            Message::Clr(_) => action::CLR,
            Message::InsAck(_) => action::INS_ACK,
            Message::UpdC(_) => action::UPD_C,
            Message::UpdReq(_) => action::UPD_REQ,
            Message::Del(_) => action::DEL,
            Message::DelC(_) => action::DEL_C,
            Message::Bus(_) => action::BUS,
            Message::Ins(_) => action::INS,
            Message::Upd(_) => action::UPD,
            Message::Tdb(_) => action::TDB,
        }
    }

    /// Size of this message on the wire.
    pub fn len(&self) -> usize {
        message_len(self.action()).unwrap_or(0)
    }

    /// Always false; for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn parse(act: u8, b: &[u8]) -> Result<Self, Reject> {
        Ok(match act {
            action::CLR => Message::Clr(Clr::parse(b)?),
            action::INS_ACK => Message::InsAck(IdRecord::parse(b)?),
            action::UPD_C => Message::UpdC(UpdC::parse(b)?),
            action::UPD_REQ => Message::UpdReq(IdRecord::parse(b)?),
            action::DEL => Message::Del(State::parse(b)?),
            action::DEL_C => Message::DelC(IdRecord::parse(b)?),
            action::BUS => Message::Bus(Bus::parse(b)?),
            action::INS => Message::Ins(State::parse(b)?),
            action::UPD => Message::Upd(State::parse(b)?),
            action::TDB => Message::Tdb(Tdb::parse(b)?),
            _ => return Err(Reject::BadAct),
        })
    }

    /// Writes the message body into `buf[..self.len()]`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Reject> {
        match self {
            Message::Clr(m) => m.emit(buf),
            Message::InsAck(m) | Message::UpdReq(m) | Message::DelC(m) => m.emit(buf),
            Message::UpdC(m) => m.emit(buf),
            Message::Del(m) | Message::Ins(m) | Message::Upd(m) => m.emit(buf),
            Message::Bus(m) => m.emit(buf),
            Message::Tdb(m) => m.emit(buf),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Group {
    action: u8,
    stride: usize,
    left: u16,
}

/// Iterator over the messages of a [`Packet`], following `pfsync_input`: unknown and deprecated
/// actions are skipped by `count × len*4`; larger-than-known messages are read at their own
/// stride with the extra bytes skipped. The first reject ends the iteration (the rest of the
/// packet is dropped, as OpenBSD does).
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    cur: Option<Group>,
    skipped: usize,
    done: bool,
}

impl Messages<'_> {
    /// How many messages of unknown or deprecated actions were skipped so far.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn next_group(&mut self) -> Result<Option<Group>, Reject> {
        loop {
            // pfsync_input loops while a whole subheader fits: 1-3 trailing bytes are ignored.
            if self.rest.len() < SUBHEADER_LEN {
                return Ok(None);
            }
            let sh = Subheader::parse(self.rest)?;
            let after = self.rest.get(SUBHEADER_LEN..).ok_or(Reject::BadLen)?;
            let stride = usize::from(sh.len) * 4;
            let total = stride * usize::from(sh.count);
            match message_len(sh.action) {
                Some(known) if stride >= known => {
                    if total > after.len() {
                        return Err(Reject::BadLen);
                    }
                    self.rest = after;
                    if sh.count == 0 {
                        continue;
                    }
                    return Ok(Some(Group {
                        action: sh.action,
                        stride,
                        left: sh.count,
                    }));
                }
                _ => {
                    // Unknown, deprecated, or shorter than known: skip if the sender told us
                    // how far, else the rest of the packet is unusable.
                    if sh.count == 0 || sh.len == 0 {
                        return Err(Reject::BadAct);
                    }
                    self.rest = after.get(total..).ok_or(Reject::BadLen)?;
                    self.skipped += usize::from(sh.count);
                }
            }
        }
    }
}

impl Iterator for Messages<'_> {
    type Item = Result<Message, Reject>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let g = match self.cur {
            Some(g) if g.left > 0 => g,
            _ => match self.next_group() {
                Ok(Some(g)) => g,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            },
        };
        let (body, rest) = match (self.rest.get(..g.stride), self.rest.get(g.stride..)) {
            (Some(b), Some(r)) => (b, r),
            _ => {
                self.done = true;
                return Some(Err(Reject::BadLen));
            }
        };
        self.rest = rest;
        self.cur = Some(Group {
            left: g.left - 1,
            ..g
        });
        let m = Message::parse(g.action, body);
        if m.is_err() {
            self.done = true;
        }
        Some(m)
    }
}

// ---- building packets -----------------------------------------------------------------------

/// Builds one pfsync packet of at most `mtu` bytes (header included): appends messages,
/// opening a new subheader whenever the action changes, and patches the header `len` and the
/// open subheader's count on [`Writer::finish`].
#[derive(Debug, Clone)]
pub struct Writer {
    buf: Vec<u8>,
    mtu: usize,
    open: Option<(usize, u8, u16)>,
}

impl Writer {
    /// `mtu` is the room for pfsync bytes (the interface MTU less the IP header); it is clamped
    /// to the header's 16-bit `len`.
    pub fn new(mtu: usize) -> Self {
        let mut buf = Vec::with_capacity(mtu.min(usize::from(u16::MAX)));
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            mtu: mtu.min(usize::from(u16::MAX)),
            open: None,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no message has been added.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_LEN
    }

    /// The bytes one more message of `act` would add (subheader included if needed).
    pub fn cost(&self, act: u8) -> usize {
        let body = message_len(act).unwrap_or(0);
        match self.open {
            Some((_, a, n)) if a == act && n < u16::MAX => body,
            _ => SUBHEADER_LEN + body,
        }
    }

    /// Whether one more message of `act` fits in the MTU.
    pub fn fits(&self, act: u8) -> bool {
        self.buf.len() + self.cost(act) <= self.mtu
    }

    /// Appends `m`; `BufferTooSmall` if it does not fit in the MTU.
    pub fn push(&mut self, m: &Message) -> Result<(), Reject> {
        let act = m.action();
        if !self.fits(act) {
            return Err(Reject::BufferTooSmall);
        }
        let len = m.len();
        let same = matches!(self.open, Some((_, a, n)) if a == act && n < u16::MAX);
        if !same {
            self.close();
            let at = self.buf.len();
            self.buf.resize(at + SUBHEADER_LEN, 0);
            self.open = Some((at, act, 0));
        }
        let at = self.buf.len();
        self.buf.resize(at + len, 0);
        m.emit(&mut self.buf[at..])?;
        if let Some((_, _, n)) = self.open.as_mut() {
            *n += 1;
        }
        Ok(())
    }

    fn close(&mut self) {
        if let Some((at, act, n)) = self.open.take() {
            let words = (message_len(act).unwrap_or(0) / 4) as u8;
            let sh = Subheader {
                action: act,
                len: words,
                count: n,
            };
            let _ = sh.emit(&mut self.buf[at..]);
        }
    }

    /// Finishes the packet: closes the subheader and writes the header.
    pub fn finish(mut self) -> Vec<u8> {
        self.close();
        let len = self.buf.len() as u16;
        let _ = emit_header(&mut self.buf, len);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puts `v` big-endian at `off` (test helper using the spec's literal offsets, not the
    /// module's consts, so a wrong const fails the golden tests).
    fn put(b: &mut [u8], off: usize, v: &[u8]) {
        b[off..off + v.len()].copy_from_slice(v);
    }

    fn sample_peer(base: u32) -> StatePeer {
        StatePeer {
            scrub: Scrub {
                pfss_flags: 0x0102,
                pfss_ttl: 0x03,
                scrub_flag: SCRUB_FLAG_VALID,
                pfss_ts_mod: 0x0405_0607,
            },
            seqlo: base,
            seqhi: base + 1,
            seqdiff: base + 2,
            max_win: 0x1112,
            mss: 0x1314,
            state: 4,
            wscale: 7,
        }
    }

    /// The golden bytes of `sample_peer(base)` from the spec's offsets (§3.4).
    fn golden_peer(base: u32) -> [u8; 32] {
        let mut b = [0u8; 32];
        put(&mut b, 0, &[0x01, 0x02, 0x03, 0x01, 0x04, 0x05, 0x06, 0x07]);
        put(&mut b, 8, &base.to_be_bytes());
        put(&mut b, 12, &(base + 1).to_be_bytes());
        put(&mut b, 16, &(base + 2).to_be_bytes());
        put(&mut b, 20, &[0x11, 0x12, 0x13, 0x14, 4, 7]);
        b
    }

    fn sample_state() -> State {
        let mut ifname = [0u8; 16];
        ifname[..3].copy_from_slice(b"any");
        State {
            id: 0x0102_0304_0506_0708,
            ifname,
            key: [
                StateKey {
                    addr: [
                        pf_addr_v4(Ipv4Addr::new(198, 18, 0, 1)),
                        pf_addr_v4(Ipv4Addr::new(198, 18, 1, 1)),
                    ],
                    port: [40000, 53],
                    rdomain: 0,
                    af: AF_INET,
                },
                StateKey {
                    addr: [
                        pf_addr_v4(Ipv4Addr::new(198, 18, 0, 1)),
                        pf_addr_v4(Ipv4Addr::new(198, 18, 2, 7)),
                    ],
                    port: [40000, 5353],
                    rdomain: 3,
                    af: AF_INET,
                },
            ],
            src: sample_peer(0x2000_0000),
            dst: sample_peer(0x3000_0000),
            rt_addr: pf_addr_v4(Ipv4Addr::new(198, 18, 2, 8)),
            rule: u32::MAX,
            anchor: u32::MAX,
            nat_rule: u32::MAX,
            creation: 0x0000_0102,
            expire: 0x0000_0304,
            packets: [0x1111_2222_3333_4444, 0x5555_6666_7777_8888],
            bytes: [0x9999_aaaa_bbbb_cccc, 0xdddd_eeee_ffff_0001],
            creatorid: 0xcafe_f00d,
            rtableid: [-1, 5],
            max_mss: 1460,
            af: AF_INET,
            proto: 6,
            direction: PF_IN,
            log: 0x41,
            rt: PF_ROUTETO,
            timeout: 2,
            sync_flags: 0x04,
            updates: 9,
            min_ttl: 10,
            set_tos: 0x10,
            state_flags: PFSTATE_ACK | 0x0100,
            set_prio: [3, 4],
        }
    }

    fn golden_state() -> [u8; 264] {
        let mut b = [0u8; 264];
        put(&mut b, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        put(&mut b, 8, b"any");
        // key[0] at 24: addr[0] 16, addr[1] 16, port[0], port[1], rdomain, af, pad
        put(&mut b, 24, &[198, 18, 0, 1]);
        put(&mut b, 40, &[198, 18, 1, 1]);
        put(&mut b, 56, &40000u16.to_be_bytes());
        put(&mut b, 58, &53u16.to_be_bytes());
        put(&mut b, 60, &[0, 0, 2, 0]);
        // key[1] at 64
        put(&mut b, 64, &[198, 18, 0, 1]);
        put(&mut b, 80, &[198, 18, 2, 7]);
        put(&mut b, 96, &40000u16.to_be_bytes());
        put(&mut b, 98, &5353u16.to_be_bytes());
        put(&mut b, 100, &[0, 3, 2, 0]);
        put(&mut b, 104, &golden_peer(0x2000_0000));
        put(&mut b, 136, &golden_peer(0x3000_0000));
        put(&mut b, 168, &[198, 18, 2, 8]);
        put(&mut b, 184, &[0xff; 12]);
        put(&mut b, 196, &[0, 0, 1, 2, 0, 0, 3, 4]);
        put(&mut b, 204, &0x1111_2222_3333_4444u64.to_be_bytes());
        put(&mut b, 212, &0x5555_6666_7777_8888u64.to_be_bytes());
        put(&mut b, 220, &0x9999_aaaa_bbbb_ccccu64.to_be_bytes());
        put(&mut b, 228, &0xdddd_eeee_ffff_0001u64.to_be_bytes());
        put(&mut b, 236, &[0xca, 0xfe, 0xf0, 0x0d]);
        put(&mut b, 240, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 5]);
        put(&mut b, 248, &1460u16.to_be_bytes());
        put(&mut b, 250, &[2, 6, 1, 0x41, 1, 2, 0x04, 9, 10, 0x10]);
        put(&mut b, 260, &[0x01, 0x10, 3, 4]);
        b
    }

    #[test]
    fn state_golden_parse_emit() {
        let g = golden_state();
        assert_eq!(State::parse(&g), Ok(sample_state()));
        let mut out = [0xeeu8; 264];
        sample_state().emit(&mut out).unwrap();
        assert_eq!(out, g);
    }

    #[test]
    fn state_every_truncation_rejected() {
        let g = golden_state();
        for n in 0..STATE_LEN {
            assert_eq!(State::parse(&g[..n]), Err(Reject::BadLen), "len {n}");
        }
        let mut small = [0u8; STATE_LEN - 1];
        assert_eq!(sample_state().emit(&mut small), Err(Reject::BufferTooSmall));
    }

    #[test]
    fn state_check_rejects_bad_values() {
        let ok = sample_state();
        assert_eq!(ok.check(), Ok(()));
        let mut v6 = ok;
        v6.af = AF_INET6;
        assert_eq!(v6.check(), Ok(()));
        let bad: [fn(&mut State); 7] = [
            |s| s.timeout = PFTM_MAX,
            |s| s.src.state = PF_TCPS_PROXY_DST + 1,
            |s| s.dst.state = 200,
            |s| s.direction = 3,
            |s| s.af = 10, // Linux AF_INET6 is not OpenBSD's
            |s| s.af = 0,
            |s| s.creatorid = 0,
        ];
        for (i, f) in bad.iter().enumerate() {
            let mut s = ok;
            f(&mut s);
            assert_eq!(s.check(), Err(Reject::BadVal), "case {i}");
        }
    }

    #[test]
    fn upd_c_golden() {
        let m = UpdC {
            id: 0xa1a2_a3a4_a5a6_a7a8,
            src: sample_peer(7),
            dst: sample_peer(900),
            creatorid: 0x0b0c_0d0e,
            expire: 0x0000_0011,
            timeout: 8,
            state_flags: 0x22,
        };
        let mut g = [0u8; 84];
        put(&mut g, 0, &[0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]);
        put(&mut g, 8, &golden_peer(7));
        put(&mut g, 40, &golden_peer(900));
        put(
            &mut g,
            72,
            &[0x0b, 0x0c, 0x0d, 0x0e, 0, 0, 0, 0x11, 8, 0x22],
        );
        assert_eq!(UpdC::parse(&g), Ok(m));
        let mut out = [0x55u8; 84];
        m.emit(&mut out).unwrap();
        assert_eq!(out, g);
        for n in 0..UPD_C_LEN {
            assert_eq!(UpdC::parse(&g[..n]), Err(Reject::BadLen));
        }
        assert_eq!(m.check(), Ok(()));
        assert_eq!(UpdC { timeout: 20, ..m }.check(), Err(Reject::BadVal));
        let mut p = m;
        p.src.state = 13;
        assert_eq!(p.check(), Err(Reject::BadVal));
    }

    #[test]
    fn id_record_golden_packed() {
        let m = IdRecord {
            id: 0x0102_0304_0506_0708,
            creatorid: 0x090a_0b0c,
        };
        let g = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(IdRecord::parse(&g), Ok(m));
        let mut out = [0u8; 12];
        m.emit(&mut out).unwrap();
        assert_eq!(out, g);
        for n in 0..ID_LEN {
            assert_eq!(IdRecord::parse(&g[..n]), Err(Reject::BadLen));
        }
    }

    #[test]
    fn clr_and_bus_golden() {
        let mut ifname = [0u8; 16];
        ifname[..4].copy_from_slice(b"em0\0");
        let c = Clr {
            ifname,
            creatorid: 0x1122_3344,
        };
        let mut g = [0u8; 20];
        put(&mut g, 0, b"em0");
        put(&mut g, 16, &[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(Clr::parse(&g), Ok(c));
        let mut out = [0u8; 20];
        c.emit(&mut out).unwrap();
        assert_eq!(out, g);
        for n in 0..CLR_LEN {
            assert_eq!(Clr::parse(&g[..n]), Err(Reject::BadLen));
        }

        let b = Bus {
            creatorid: 0xdead_beef,
            endtime: 0x0000_0102,
            status: BUS_END,
        };
        let g = [0xde, 0xad, 0xbe, 0xef, 0, 0, 1, 2, 2, 0, 0, 0];
        assert_eq!(Bus::parse(&g), Ok(b));
        let mut out = [0xffu8; 12];
        b.emit(&mut out).unwrap();
        assert_eq!(out, g);
        for n in 0..BUS_LEN {
            assert_eq!(Bus::parse(&g[..n]), Err(Reject::BadLen));
        }
    }

    #[test]
    fn tdb_golden_bsd_sockaddr() {
        let t = Tdb {
            spi: 0x0000_1234,
            dst: SockAddr::V4 {
                addr: Ipv4Addr::new(198, 18, 0, 9),
                port: 0,
            },
            rpl: 0x0102_0304_0506_0708,
            cur_bytes: 0x1112_1314_1516_1718,
            sproto: 50,
            updates: 3,
            rdomain: 7,
        };
        let mut g = [0u8; 52];
        put(&mut g, 0, &[0, 0, 0x12, 0x34]);
        put(&mut g, 4, &[16, 2, 0, 0, 198, 18, 0, 9]); // sin_len, sin_family, port, addr
        put(&mut g, 32, &[1, 2, 3, 4, 5, 6, 7, 8]);
        put(
            &mut g,
            40,
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18],
        );
        put(&mut g, 48, &[50, 3, 0, 7]);
        assert_eq!(Tdb::parse(&g), Ok(t));
        let mut out = [0u8; 52];
        t.emit(&mut out).unwrap();
        assert_eq!(out, g);
        for n in 0..TDB_LEN {
            assert_eq!(Tdb::parse(&g[..n]), Err(Reject::BadLen));
        }

        let t6 = Tdb {
            dst: SockAddr::V6 {
                addr: "2001:db8::1".parse().unwrap(),
                port: 0x0102,
                flowinfo: 0x0304_0506,
                scope_id: 9,
            },
            ..t
        };
        let mut out = [0u8; 52];
        t6.emit(&mut out).unwrap();
        assert_eq!(&out[4..12], &[28, 24, 1, 2, 3, 4, 5, 6]);
        assert_eq!(&out[12..16], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(&out[28..32], &[0, 0, 0, 9]);
        assert_eq!(Tdb::parse(&out), Ok(t6));

        let mut odd = g;
        odd[5] = 99;
        let p = Tdb::parse(&odd).unwrap();
        assert!(matches!(p.dst, SockAddr::Other(_)));
        let mut out = [0u8; 52];
        p.emit(&mut out).unwrap();
        assert_eq!(out, odd);
    }

    fn all_messages() -> Vec<Message> {
        let s = sample_state();
        let idr = IdRecord {
            id: 77,
            creatorid: 88,
        };
        vec![
            Message::InsAck(idr),
            Message::UpdC(UpdC {
                id: 5,
                src: sample_peer(1),
                dst: sample_peer(2),
                creatorid: 6,
                expire: 0,
                timeout: 2,
                state_flags: 0,
            }),
            Message::DelC(idr),
            Message::DelC(IdRecord { id: 78, ..idr }),
            Message::Ins(s),
            Message::Upd(s),
            Message::Del(s),
            Message::UpdReq(IdRecord::default()),
            Message::Clr(Clr {
                ifname: [0; 16],
                creatorid: 9,
            }),
            Message::Bus(Bus {
                creatorid: 1,
                endtime: 0,
                status: BUS_START,
            }),
            Message::Tdb(Tdb {
                spi: 0x1000,
                dst: SockAddr::V4 {
                    addr: Ipv4Addr::new(198, 18, 0, 1),
                    port: 0,
                },
                rpl: 1,
                cur_bytes: 2,
                sproto: 50,
                updates: 0,
                rdomain: 0,
            }),
        ]
    }

    fn build(msgs: &[Message]) -> Vec<u8> {
        let mut w = Writer::new(9000);
        for m in msgs {
            w.push(m).unwrap();
        }
        w.finish()
    }

    #[test]
    fn packet_round_trip_every_action() {
        let msgs = all_messages();
        let bytes = build(&msgs);
        let expect_len =
            HEADER_LEN + 10 * SUBHEADER_LEN + msgs.iter().map(|m| m.len()).sum::<usize>();
        assert_eq!(bytes.len(), expect_len);
        assert_eq!(
            &bytes[..4],
            &[6, 0, (expect_len >> 8) as u8, expect_len as u8]
        );
        assert_eq!(&bytes[4..20], &[0u8; 16]);
        // First subheader: INS_ACK, 3 words, count 1.
        assert_eq!(&bytes[20..24], &[2, 3, 0, 1]);
        let p = Packet::parse(&bytes).unwrap();
        let back: Result<Vec<_>, _> = p.messages().collect();
        assert_eq!(back.unwrap(), msgs);
        // The two DEL_C share one subheader with count 2.
        let delc_at = 20 + 4 + 12 + 4 + 84;
        assert_eq!(&bytes[delc_at..delc_at + 4], &[7, 3, 0, 2]);
    }

    #[test]
    fn packet_every_truncation_is_a_named_reject() {
        let bytes = build(&all_messages());
        for n in 0..bytes.len() {
            let cut = &bytes[..n];
            match Packet::parse(cut) {
                Err(e) => assert!(
                    if n < HEADER_LEN {
                        e == Reject::HdrTruncated
                    } else {
                        e == Reject::BadLen
                    },
                    "len {n}: {e:?}"
                ),
                Ok(_) => panic!("len {n} parsed"),
            }
            // Also with the header len patched to the cut length: messages must end in BadLen
            // (or parse fully if the cut lands on a message boundary).
            if n >= HEADER_LEN {
                let mut v = cut.to_vec();
                v[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                let p = Packet::parse(&v).unwrap();
                for m in p.messages() {
                    if let Err(e) = m {
                        assert!(e == Reject::BadLen || e == Reject::BadAct, "len {n}: {e:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn header_rejects() {
        let mut b = build(&[Message::UpdReq(IdRecord::default())]);
        assert_eq!(Packet::parse(&b).map(|p| p.len()), Ok(36));
        b[0] = 5;
        assert_eq!(Packet::parse(&b).err(), Some(Reject::BadVer));
        b[0] = 6;
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::parse(&b).err(), Some(Reject::BadLen));
        b[2..4].copy_from_slice(&37u16.to_be_bytes());
        assert_eq!(Packet::parse(&b).err(), Some(Reject::BadLen));
        // Trailing bytes beyond len are trimmed, not parsed.
        b[2..4].copy_from_slice(&36u16.to_be_bytes());
        b.extend_from_slice(&[0xff; 7]);
        let p = Packet::parse(&b).unwrap();
        assert_eq!(p.messages().count(), 1);
    }

    fn raw_packet(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_LEN];
        v.extend_from_slice(body);
        let n = v.len() as u16;
        emit_header(&mut v, n).unwrap();
        v
    }

    #[test]
    fn unknown_and_deprecated_actions_are_skipped() {
        let mut body = Vec::new();
        // OINS (deprecated), 2 messages of 2 words.
        body.extend_from_slice(&[action::OINS, 2, 0, 2]);
        body.extend_from_slice(&[0xaa; 16]);
        // Action 200 (unknown), 1 message of 1 word.
        body.extend_from_slice(&[200, 1, 0, 1, 0xbb, 0xbb, 0xbb, 0xbb]);
        // A DEL_C after them.
        body.extend_from_slice(&[action::DEL_C, 3, 0, 1]);
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1]);
        let v = raw_packet(&body);
        let p = Packet::parse(&v).unwrap();
        let mut it = p.messages();
        assert_eq!(
            it.next(),
            Some(Ok(Message::DelC(IdRecord {
                id: 9,
                creatorid: 1
            })))
        );
        assert_eq!(it.next(), None);
        assert_eq!(it.skipped(), 3);
    }

    #[test]
    fn short_known_message_without_count_is_badact() {
        // UPD_C declared 1 word long, count 0: cannot skip.
        let v = raw_packet(&[action::UPD_C, 1, 0, 0]);
        let p = Packet::parse(&v).unwrap();
        assert_eq!(p.messages().collect::<Vec<_>>(), vec![Err(Reject::BadAct)]);
        // UPD_C declared 1 word with count 1: skipped like an unknown action.
        let v = raw_packet(&[action::UPD_C, 1, 0, 1, 1, 2, 3, 4]);
        let p = Packet::parse(&v).unwrap();
        let mut it = p.messages();
        assert_eq!(it.next(), None);
        assert_eq!(it.skipped(), 1);
        // Skip length running past the end.
        let v = raw_packet(&[99, 2, 0, 1, 1, 2, 3, 4]);
        let p = Packet::parse(&v).unwrap();
        assert_eq!(p.messages().collect::<Vec<_>>(), vec![Err(Reject::BadLen)]);
    }

    #[test]
    fn trailing_bytes_shorter_than_a_subheader_are_ignored() {
        for extra in 1..SUBHEADER_LEN {
            let mut body = vec![action::DEL_C, 3, 0, 1];
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
            body.extend(std::iter::repeat_n(0xab, extra));
            let v = raw_packet(&body);
            let got: Vec<_> = Packet::parse(&v).unwrap().messages().collect();
            assert_eq!(
                got,
                vec![Ok(Message::DelC(IdRecord {
                    id: 1,
                    creatorid: 2
                }))],
                "{extra} trailing bytes"
            );
        }
    }

    #[test]
    fn larger_than_known_messages_are_accepted() {
        // DEL_C sent with 5 words (20 B) each: the trailing 8 bytes are skipped.
        let mut body = vec![action::DEL_C, 5, 0, 2];
        for i in 1..=2u8 {
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, i, 0, 0, 0, 7]);
            body.extend_from_slice(&[0xee; 8]);
        }
        let v = raw_packet(&body);
        let p = Packet::parse(&v).unwrap();
        let got: Vec<_> = p.messages().collect();
        assert_eq!(
            got,
            vec![
                Ok(Message::DelC(IdRecord {
                    id: 1,
                    creatorid: 7
                })),
                Ok(Message::DelC(IdRecord {
                    id: 2,
                    creatorid: 7
                })),
            ]
        );
    }

    #[test]
    fn writer_respects_mtu() {
        let s = sample_state();
        let mtu = HEADER_LEN + SUBHEADER_LEN + 2 * STATE_LEN + 10;
        let mut w = Writer::new(mtu);
        assert!(w.is_empty());
        w.push(&Message::Upd(s)).unwrap();
        w.push(&Message::Upd(s)).unwrap();
        assert!(!w.fits(action::UPD));
        assert_eq!(w.push(&Message::Upd(s)), Err(Reject::BufferTooSmall));
        // A different action needs a subheader too: 4 + 12 > 10.
        assert!(!w.fits(action::DEL_C));
        let v = w.finish();
        assert_eq!(v.len(), mtu - 10);
        assert_eq!(&v[20..24], &[action::UPD, 66, 0, 2]);
    }

    #[test]
    fn reject_names_match_pfsyncstats() {
        assert_eq!(Reject::BadVer.name(), "badver");
        assert_eq!(Reject::BadLen.name(), "badlen");
        assert_eq!(Reject::BadAct.name(), "badact");
        assert_eq!(Reject::BadVal.name(), "badval");
        assert_eq!(Reject::HdrTruncated.name(), "hdrops");
    }
}
