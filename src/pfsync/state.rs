//! carpio's flow state and its mapping onto OpenBSD's `pfsync_state` record.
//!
//! A carpio flow is a client connecting to a virtual service (VIP:port) that the data plane
//! sends to one backend, either rewriting the destination (NAT, relayd's `rdr-to`) or keeping
//! it and steering the packet to the backend (DSR or IPIP/GUE encapsulation, relayd's
//! `route-to`). pf describes the same thing with two state keys, a route-to address and two
//! TCP peers; this module is the one place where the two vocabularies meet.
//!
//! | `pfsync_state` field | carpio [`FlowState`] |
//! |---|---|
//! | `id`, `creatorid` | [`FlowId`]: the node that created the flow (its hostid) + its 64-bit counter |
//! | `key[0]` (`PF_SK_WIRE`) | the packet as the client sends it: `addr[0]:port[0]` = client, `addr[1]:port[1]` = VIP |
//! | `key[1]` (`PF_SK_STACK`) | after translation: client → backend for [`Forward::Nat`]; a copy of key[0] for [`Forward::Route`] |
//! | `rt_addr`, `rt` | backend address and `PF_ROUTETO` for [`Forward::Route`]; zero and 0 for NAT |
//! | `src`, `dst` peers | the client side and the server side: FSM `state` (pf's `TCPS_*` for TCP, `PFUDPS_*`/`PFOTHERS_*` otherwise), `seqlo`, `seqhi`, `max_win`, `seqdiff`, `mss`, `wscale` where the data plane tracks them, zero otherwise; scrub invalid |
//! | `timeout` | [`FlowState::timeout`], a `PFTM_*` index chosen from the protocol state ([`timeout_for`]) |
//! | `creation` | age in seconds (`now − created`) |
//! | `expire` | seconds left (`expire − now`), the receiver adds its own `now` |
//! | `packets`, `bytes` | `[client→server, server→client]` counters |
//! | `af`, `proto` | OpenBSD's `AF_INET` (2) / `AF_INET6` (24), the IP protocol |
//! | `direction` | `PF_IN` (carpio sees flows arriving at the VIP) |
//! | `ifname` | `"any"` (floating states: carpio does not bind flows to interfaces) |
//! | `rule`, `anchor`, `nat_rule` | −1 (none); pfsync imports use the default rule anyway |
//! | `rtableid` | 0, 0 |
//! | `state_flags` | `PFSTATE_ACK` when the sender defers the first packet |
//! | everything else | zero |
//!
//! Decoding is the inverse; a record whose `rt` is `PF_ROUTETO` becomes [`Forward::Route`]
//! with the backend port equal to the VIP port. Whether carpio then uses DSR or encapsulation
//! for a route-to flow is the local VIP's configuration, not replicated data.
//!
//! Times: the wire carries relative seconds so that clocks need not agree (spec §3.4); a
//! [`FlowState`] keeps absolute instants on the local clock ([`Duration`] since the caller's
//! epoch) and the conversions take `now`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::wire::pfsync::{
    AF_INET, AF_INET6, IFNAMSIZ, PF_IN, PF_ROUTETO, Reject, State, StateKey, StatePeer,
};

/// Identity of a replicated flow: `(creatorid, id)` as pfsync's (spec §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowId {
    /// Host id of the node that created the flow (never 0 on the wire).
    pub creatorid: u32,
    /// That node's counter.
    pub id: u64,
}

/// How the data plane forwards the flow to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forward {
    /// Destination rewritten to the backend (key[1] differs from key[0]).
    Nat,
    /// Destination kept, packet steered to the backend (DSR, IPIP/GUE): pf's route-to.
    Route,
}

/// pf's view of one side of a connection (`pf_state_peer`), as far as carpio tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Peer {
    /// `TCPS_*` (tcp_fsm.h) for TCP, [`udp`] / [`other`] states otherwise.
    pub state: u8,
    pub seqlo: u32,
    pub seqhi: u32,
    pub seqdiff: u32,
    pub max_win: u16,
    pub mss: u16,
    pub wscale: u8,
}

/// TCP FSM codes (netinet/tcp_fsm.h plus pf's syn-proxy pseudo-states), `PFUDPS_*` and
/// `PFOTHERS_*`: the data plane's state tracker defines them once for both.
pub use crate::dataplane::state::tcps;
pub use crate::dataplane::state::udps as udp;
pub use crate::dataplane::state::udps as other;

/// pfvar.h `PFTM_*` indices (only those a flow uses).
pub mod pftm {
    pub const TCP_FIRST_PACKET: u8 = 0;
    pub const TCP_OPENING: u8 = 1;
    pub const TCP_ESTABLISHED: u8 = 2;
    pub const TCP_CLOSING: u8 = 3;
    pub const TCP_FIN_WAIT: u8 = 4;
    pub const TCP_CLOSED: u8 = 5;
    pub const UDP_FIRST_PACKET: u8 = 6;
    pub const UDP_SINGLE: u8 = 7;
    pub const UDP_MULTIPLE: u8 = 8;
    pub const ICMP_FIRST_PACKET: u8 = 9;
    pub const ICMP_ERROR_REPLY: u8 = 10;
    pub const OTHER_FIRST_PACKET: u8 = 11;
    pub const OTHER_SINGLE: u8 = 12;
    pub const OTHER_MULTIPLE: u8 = 13;
}

/// pf's default timeout in seconds for a `PFTM_*` index (pfvar.h `PFTM_*_VAL`); a receiver
/// uses it to refresh a state from a UPD_C, whose `expire` is zero on the wire.
pub fn timeout_secs(pftm: u8) -> u32 {
    match pftm {
        pftm::TCP_FIRST_PACKET => 120,
        pftm::TCP_OPENING => 30,
        pftm::TCP_ESTABLISHED => 24 * 60 * 60,
        pftm::TCP_CLOSING => 15 * 60,
        pftm::TCP_FIN_WAIT => 45,
        pftm::TCP_CLOSED => 90,
        pftm::UDP_FIRST_PACKET => 60,
        pftm::UDP_SINGLE => 30,
        pftm::UDP_MULTIPLE => 60,
        pftm::ICMP_FIRST_PACKET => 20,
        pftm::ICMP_ERROR_REPLY => 10,
        pftm::OTHER_FIRST_PACKET => 60,
        pftm::OTHER_SINGLE => 30,
        pftm::OTHER_MULTIPLE => 60,
        14 => 60, // PFTM_FRAG
        15 => 10, // PFTM_INTERVAL
        19 => 30, // PFTM_TS_DIFF
        _ => 0,
    }
}

/// The `PFTM_*` index pf would pick for a flow of `proto` whose peers are in these states
/// (pf.c `pf_tcp_track_full`'s timeout ladder; `pf_test_state` for UDP/ICMP/other).
pub fn timeout_for(proto: u8, src: u8, dst: u8) -> u8 {
    match proto {
        IPPROTO_TCP => {
            if src <= tcps::SYN_SENT && dst == tcps::CLOSED {
                // pf_create_state: a new TCP state starts at PFTM_TCP_FIRST_PACKET.
                pftm::TCP_FIRST_PACKET
            } else if src >= tcps::FIN_WAIT_2 && dst >= tcps::FIN_WAIT_2 {
                pftm::TCP_CLOSED
            } else if src >= tcps::CLOSING && dst >= tcps::CLOSING {
                pftm::TCP_FIN_WAIT
            } else if src < tcps::ESTABLISHED || dst < tcps::ESTABLISHED {
                pftm::TCP_OPENING
            } else if src >= tcps::CLOSING || dst >= tcps::CLOSING {
                pftm::TCP_CLOSING
            } else {
                pftm::TCP_ESTABLISHED
            }
        }
        IPPROTO_UDP => {
            if src == udp::MULTIPLE && dst == udp::MULTIPLE {
                pftm::UDP_MULTIPLE
            } else if dst == udp::NO_TRAFFIC && src == udp::SINGLE {
                pftm::UDP_FIRST_PACKET
            } else {
                pftm::UDP_SINGLE
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => pftm::ICMP_FIRST_PACKET,
        _ => {
            if src == other::MULTIPLE && dst == other::MULTIPLE {
                pftm::OTHER_MULTIPLE
            } else if dst == other::NO_TRAFFIC {
                pftm::OTHER_FIRST_PACKET
            } else {
                pftm::OTHER_SINGLE
            }
        }
    }
}

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// One replicated flow: plain data the data plane produces and consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowState {
    pub id: FlowId,
    pub proto: u8,
    pub client: (IpAddr, u16),
    pub vip: (IpAddr, u16),
    pub backend: (IpAddr, u16),
    pub forward: Forward,
    /// Client side.
    pub src: Peer,
    /// Server side.
    pub dst: Peer,
    /// `PFTM_*` index.
    pub timeout: u8,
    /// When the flow was created, on the local clock.
    pub created: Duration,
    /// When the flow expires, on the local clock.
    pub expire: Duration,
    /// `[client→server, server→client]`.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// `PFSTATE_*` flags carried on the wire (only `PFSTATE_ACK` matters to carpio).
    pub state_flags: u16,
}

/// Why a wire record cannot become a [`FlowState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The record failed [`State::check`] (`badval`).
    Invalid(Reject),
    /// Key address families disagree with the state's af (`badval` too).
    AfMismatch,
}

impl FlowState {
    /// The wire record (INS/UPD) of this flow at `now`.
    pub fn to_wire(&self, now: Duration) -> State {
        let af = match self.client.0 {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        };
        let wire = StateKey {
            addr: [pf_addr(self.client.0), pf_addr(self.vip.0)],
            port: [self.client.1, self.vip.1],
            rdomain: 0,
            af,
        };
        let (stack, rt_addr, rt) = match self.forward {
            Forward::Nat => (
                StateKey {
                    addr: [pf_addr(self.client.0), pf_addr(self.backend.0)],
                    port: [self.client.1, self.backend.1],
                    ..wire
                },
                [0u8; 16],
                0,
            ),
            Forward::Route => (wire, pf_addr(self.backend.0), PF_ROUTETO),
        };
        let mut ifname = [0u8; IFNAMSIZ];
        ifname[..3].copy_from_slice(b"any");
        State {
            id: self.id.id,
            ifname,
            key: [wire, stack],
            src: peer_to_wire(&self.src),
            dst: peer_to_wire(&self.dst),
            rt_addr,
            rule: u32::MAX,
            anchor: u32::MAX,
            nat_rule: u32::MAX,
            creation: secs(now.saturating_sub(self.created)),
            expire: secs(self.expire.saturating_sub(now)),
            packets: self.packets,
            bytes: self.bytes,
            creatorid: self.id.creatorid,
            rtableid: [0, 0],
            max_mss: 0,
            af,
            proto: self.proto,
            direction: PF_IN,
            log: 0,
            rt,
            timeout: self.timeout,
            sync_flags: 0,
            updates: 0,
            min_ttl: 0,
            set_tos: 0,
            state_flags: self.state_flags,
            set_prio: [0, 0],
        }
    }

    /// The flow described by a received record, with times anchored at `now`.
    pub fn from_wire(now: Duration, s: &State) -> Result<Self, DecodeError> {
        s.check().map_err(DecodeError::Invalid)?;
        if s.key[0].af != s.af || s.key[1].af != s.af {
            return Err(DecodeError::AfMismatch);
        }
        let ip = |a: &[u8; 16]| ip_from(s.af, a);
        let client = (ip(&s.key[0].addr[0]), s.key[0].port[0]);
        let vip = (ip(&s.key[0].addr[1]), s.key[0].port[1]);
        let (forward, backend) = if s.rt == PF_ROUTETO {
            (Forward::Route, (ip(&s.rt_addr), vip.1))
        } else {
            (Forward::Nat, (ip(&s.key[1].addr[1]), s.key[1].port[1]))
        };
        // pf_state_import: an expire of 0 means "just refreshed", i.e. the full timeout.
        let left = if s.expire == 0 {
            timeout_secs(s.timeout)
        } else {
            s.expire
        };
        Ok(Self {
            id: FlowId {
                creatorid: s.creatorid,
                id: s.id,
            },
            proto: s.proto,
            client,
            vip,
            backend,
            forward,
            src: peer_from_wire(&s.src),
            dst: peer_from_wire(&s.dst),
            timeout: s.timeout,
            created: now.saturating_sub(Duration::from_secs(u64::from(s.creation))),
            expire: now.saturating_add(Duration::from_secs(u64::from(left))),
            packets: s.packets,
            bytes: s.bytes,
            state_flags: s.state_flags,
        })
    }

    /// Whether the replicated content (everything but times and counters) is the same.
    pub fn same_flow(&self, o: &Self) -> bool {
        self.id == o.id
            && self.proto == o.proto
            && self.client == o.client
            && self.vip == o.vip
            && self.backend == o.backend
            && self.forward == o.forward
            && self.src == o.src
            && self.dst == o.dst
            && self.timeout == o.timeout
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn pf_addr(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => crate::wire::pfsync::pf_addr_v4(v4),
        IpAddr::V6(v6) => crate::wire::pfsync::pf_addr_v6(v6),
    }
}

fn ip_from(af: u8, a: &[u8; 16]) -> IpAddr {
    if af == AF_INET {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

/// Peer to wire; scrub is left invalid (carpio does not scrub).
pub fn peer_to_wire(p: &Peer) -> StatePeer {
    StatePeer {
        scrub: Default::default(),
        seqlo: p.seqlo,
        seqhi: p.seqhi,
        seqdiff: p.seqdiff,
        max_win: p.max_win,
        mss: p.mss,
        state: p.state,
        wscale: p.wscale,
    }
}

/// Wire peer to carpio's (scrub dropped).
pub fn peer_from_wire(p: &StatePeer) -> Peer {
    Peer {
        state: p.state,
        seqlo: p.seqlo,
        seqhi: p.seqhi,
        seqdiff: p.seqdiff,
        max_win: p.max_win,
        mss: p.mss,
        wscale: p.wscale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pfsync::{PFTM_MAX, STATE_LEN};

    fn nat_flow() -> FlowState {
        FlowState {
            id: FlowId {
                creatorid: 0x0102_0304,
                id: 42,
            },
            proto: IPPROTO_TCP,
            client: ("198.18.0.10".parse().unwrap(), 40001),
            vip: ("198.18.1.1".parse().unwrap(), 25),
            backend: ("198.18.2.5".parse().unwrap(), 2525),
            forward: Forward::Nat,
            src: Peer {
                state: tcps::ESTABLISHED,
                seqlo: 1000,
                seqhi: 66000,
                max_win: 65535,
                ..Default::default()
            },
            dst: Peer {
                state: tcps::ESTABLISHED,
                seqlo: 5000,
                seqhi: 70000,
                max_win: 29200,
                ..Default::default()
            },
            timeout: pftm::TCP_ESTABLISHED,
            created: Duration::from_secs(100),
            expire: Duration::from_secs(100 + 86400),
            packets: [10, 9],
            bytes: [1000, 900],
            state_flags: 0,
        }
    }

    #[test]
    fn nat_flow_maps_keys_as_documented() {
        let f = nat_flow();
        let now = Duration::from_secs(130);
        let s = f.to_wire(now);
        assert_eq!(&s.key[0].addr[0][..4], &[198, 18, 0, 10]);
        assert_eq!(&s.key[0].addr[1][..4], &[198, 18, 1, 1]);
        assert_eq!(s.key[0].port, [40001, 25]);
        assert_eq!(&s.key[1].addr[0][..4], &[198, 18, 0, 10]);
        assert_eq!(&s.key[1].addr[1][..4], &[198, 18, 2, 5]);
        assert_eq!(s.key[1].port, [40001, 2525]);
        assert_eq!(s.rt, 0);
        assert_eq!(s.rt_addr, [0; 16]);
        assert_eq!(&s.ifname[..4], b"any\0");
        assert_eq!(s.direction, PF_IN);
        assert_eq!(
            (s.rule, s.anchor, s.nat_rule),
            (u32::MAX, u32::MAX, u32::MAX)
        );
        assert_eq!(s.creation, 30);
        assert_eq!(s.expire, 86400 - 30);
        assert_eq!(s.af, AF_INET);
        assert_eq!((s.src.state, s.dst.state), (4, 4));
        assert_eq!(s.creatorid, 0x0102_0304);
        // Byte-level: the emitted record carries the id and creatorid at their offsets.
        let mut b = [0u8; STATE_LEN];
        s.emit(&mut b).unwrap();
        assert_eq!(&b[0..8], &42u64.to_be_bytes());
        assert_eq!(&b[236..240], &[1, 2, 3, 4]);
        // Round trip on another clock (now' = 1000): same flow, times shifted.
        let back = FlowState::from_wire(Duration::from_secs(1000), &s).unwrap();
        assert!(back.same_flow(&f));
        assert_eq!(back.created, Duration::from_secs(970));
        assert_eq!(back.expire, Duration::from_secs(1000 + 86400 - 30));
    }

    #[test]
    fn route_flow_uses_rt_addr_and_equal_keys() {
        let f = FlowState {
            forward: Forward::Route,
            backend: ("2001:db8::5".parse().unwrap(), 53),
            client: ("2001:db8::10".parse().unwrap(), 5353),
            vip: ("2001:db8::1".parse().unwrap(), 53),
            proto: IPPROTO_UDP,
            src: Peer {
                state: udp::MULTIPLE,
                ..Default::default()
            },
            dst: Peer {
                state: udp::SINGLE,
                ..Default::default()
            },
            timeout: pftm::UDP_SINGLE,
            ..nat_flow()
        };
        let s = f.to_wire(Duration::from_secs(100));
        assert_eq!(s.af, AF_INET6);
        assert_eq!(s.key[0], s.key[1]);
        assert_eq!(s.rt, PF_ROUTETO);
        assert_eq!(s.rt_addr[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(s.rt_addr[15], 5);
        let back = FlowState::from_wire(Duration::from_secs(100), &s).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn from_wire_rejects_bad_values() {
        let mut s = nat_flow().to_wire(Duration::from_secs(100));
        s.timeout = PFTM_MAX;
        assert_eq!(
            FlowState::from_wire(Duration::ZERO, &s),
            Err(DecodeError::Invalid(Reject::BadVal))
        );
        let mut s = nat_flow().to_wire(Duration::from_secs(100));
        s.key[1].af = AF_INET6;
        assert_eq!(
            FlowState::from_wire(Duration::ZERO, &s),
            Err(DecodeError::AfMismatch)
        );
    }

    #[test]
    fn zero_expire_means_full_timeout() {
        let mut s = nat_flow().to_wire(Duration::from_secs(100));
        s.expire = 0;
        s.timeout = pftm::TCP_OPENING;
        let f = FlowState::from_wire(Duration::from_secs(5), &s).unwrap();
        assert_eq!(f.expire, Duration::from_secs(35));
    }

    #[test]
    fn timeouts_follow_protocol_state() {
        use tcps::*;
        let t = |a, b| timeout_for(IPPROTO_TCP, a, b);
        assert_eq!(t(SYN_SENT, CLOSED), pftm::TCP_FIRST_PACKET);
        assert_eq!(t(SYN_SENT, SYN_RECEIVED), pftm::TCP_OPENING);
        assert_eq!(t(ESTABLISHED, ESTABLISHED), pftm::TCP_ESTABLISHED);
        assert_eq!(t(CLOSING, ESTABLISHED), pftm::TCP_CLOSING);
        assert_eq!(t(FIN_WAIT_1, SYN_SENT), pftm::TCP_OPENING);
        assert_eq!(t(FIN_WAIT_2, CLOSING), pftm::TCP_FIN_WAIT);
        assert_eq!(t(TIME_WAIT, TIME_WAIT), pftm::TCP_CLOSED);
        assert_eq!(
            timeout_for(IPPROTO_UDP, udp::SINGLE, udp::NO_TRAFFIC),
            pftm::UDP_FIRST_PACKET
        );
        assert_eq!(
            timeout_for(IPPROTO_UDP, udp::MULTIPLE, udp::MULTIPLE),
            pftm::UDP_MULTIPLE
        );
        assert_eq!(
            timeout_for(IPPROTO_UDP, udp::MULTIPLE, udp::SINGLE),
            pftm::UDP_SINGLE
        );
        assert_eq!(timeout_for(IPPROTO_ICMP, 0, 0), pftm::ICMP_FIRST_PACKET);
        assert_eq!(timeout_for(47, 1, 0), pftm::OTHER_FIRST_PACKET);
        assert_eq!(timeout_for(47, 2, 2), pftm::OTHER_MULTIPLE);
        assert_eq!(timeout_secs(pftm::TCP_ESTABLISHED), 86400);
        assert_eq!(timeout_secs(pftm::UDP_MULTIPLE), 60);
    }
}
