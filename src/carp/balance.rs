//! Load-balancing ownership as pure functions: OpenBSD's `carp_lsdrop` (IP balancing) and the
//! historical ARP balancing of ip_carp.c 1.263 (`carp_hash`, `carp_iamatch`).
//!
//! An [`Ownership`] is a small `Copy` snapshot (balancing mode, `lsmask`, `lscount`, virtual
//! MACs, hash key) that the control plane publishes and the data plane reads without locks; the
//! decisions here do no allocation and cannot panic.

use std::net::IpAddr;

use super::interface::Balancing;
use crate::wire::classify::Meta;

/// Maximum number of vhosts on one carp interface (`CARP_MAXNODES`).
pub const MAX_NODES: usize = 32;

/// What the accept decision needs to know about an inbound IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Layer-3 broadcast or multicast: always accepted (CARP ads must get through).
    Cast,
    /// Any other packet, hashed by (src, dst). ICMP echo/timestamp/mask replies are hashed
    /// this way too (`icmp_input`).
    Unicast { src: IpAddr, dst: IpAddr },
    /// An ICMP / ICMPv6 error or redirect: hashed by (quoted packet's dst, outer dst) so it
    /// reaches the node that owns the original flow.
    IcmpError {
        quoted_dst: IpAddr,
        outer_dst: IpAddr,
    },
}

impl Inbound {
    /// From a classified packet: an ICMP error (one that quotes a packet) is hashed by the
    /// quoted destination; `cast` says whether the destination is broadcast or multicast.
    pub fn from_meta(meta: &Meta, cast: bool) -> Self {
        if cast || meta.dst.is_multicast() {
            return Inbound::Cast;
        }
        match &meta.quoted {
            Some(q) => Inbound::IcmpError {
                quoted_dst: q.dst,
                outer_dst: meta.dst,
            },
            None => Inbound::Unicast {
                src: meta.src,
                dst: meta.dst,
            },
        }
    }
}

/// `fold` of `carp_lsdrop`: XOR of the source and destination 32-bit words as stored (network
/// order), all four words for IPv6, returned as `ntohl(fold)`. `None` for mixed families.
pub fn fold(src: IpAddr, dst: IpAddr) -> Option<u32> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(u32::from(s) ^ u32::from(d)),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            // XOR of the big-endian words then ntohl is the XOR of the host-order words.
            let x = u128::from(s) ^ u128::from(d);
            let w = |i: u32| (x >> (32 * i)) as u32;
            Some(w(0) ^ w(1) ^ w(2) ^ w(3))
        }
        _ => None,
    }
}

/// The index of the vhost that owns (src, dst): `ntohl(fold) % lscount`, or `None` when
/// `lscount` is 0 or the families differ.
pub fn owner_index(src: IpAddr, dst: IpAddr, lscount: u8) -> Option<u8> {
    let f = fold(src, dst)?;
    if lscount == 0 {
        return None;
    }
    u8::try_from(f % u32::from(lscount)).ok()
}

/// `carp_lsdrop` turned around: true when this node accepts. Balancing none/arp accepts
/// everything, broadcast/multicast is always accepted, `lscount == 0` drops.
pub fn ip_accept(balancing: Balancing, lsmask: u32, lscount: u8, pkt: &Inbound) -> bool {
    if !balancing.is_ip() {
        return true;
    }
    let (a, b) = match *pkt {
        Inbound::Cast => return true,
        Inbound::Unicast { src, dst } => (src, dst),
        Inbound::IcmpError {
            quoted_dst,
            outer_dst,
        } => (quoted_dst, outer_dst),
    };
    match owner_index(a, b, lscount) {
        Some(i) => lsmask.checked_shr(u32::from(i)).unwrap_or(0) & 1 == 1,
        None => false,
    }
}

/// Bob Jenkins' 96-bit mix (lookup2), as `bridge_hash` and ip_carp.c 1.263 use it.
fn mix(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 13);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 8);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 13);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 12);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 16);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 5);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 3);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 10);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 15);
    (a, b, c)
}

/// `carp_hash` of ip_carp.c 1.263: the requester's MAC mixed with `hashkey`
/// ([`crate::wire::carp::arp_hash_key`]) and the first four key bytes.
pub fn arp_hash(hashkey: [u32; 2], key_head: [u8; 4], mac: [u8; 6]) -> u32 {
    let a = 0x9e37_79b9u32.wrapping_add(u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
    let b = hashkey[0].wrapping_add(u32::from_le_bytes([mac[4], mac[5], 0, 0]));
    let c = hashkey[1].wrapping_add(u32::from_le_bytes(key_head));
    mix(a, b, c).2
}

/// A lock-free-readable snapshot of who owns what on one carp interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub balancing: Balancing,
    /// Bit i set: the i-th vhost (vhid order) is MASTER here.
    pub lsmask: u32,
    /// Number of vhosts.
    pub lscount: u8,
    /// Whether the leader (first) vhost is MASTER.
    pub leader_master: bool,
    /// Virtual MAC of each vhost, vhid order (first `lscount` valid).
    pub macs: [[u8; 6]; MAX_NODES],
    /// The interface lladdr (the leader's virtual MAC unless set by hand).
    pub lladdr: [u8; 6],
    /// ARP-balancing hash key.
    pub hashkey: [u32; 2],
    pub key_head: [u8; 4],
}

impl Ownership {
    /// IP balancing accept decision (`carp_lsdrop`).
    pub fn accept(&self, pkt: &Inbound) -> bool {
        ip_accept(self.balancing, self.lsmask, self.lscount, pkt)
    }

    /// `carp_ourether`: whether a frame to `dst` is for this carp interface. Balancing `arp`:
    /// the virtual MAC of any vhost that is MASTER here. Otherwise the interface lladdr, when
    /// the leader is MASTER or balancing is ip/ip-stealth/ip-unicast (every node takes the
    /// frame and `accept` decides per packet).
    pub fn accepts_frame(&self, dst: [u8; 6]) -> bool {
        if self.balancing == Balancing::Arp {
            return self
                .macs
                .iter()
                .take(usize::from(self.lscount))
                .enumerate()
                .any(|(i, m)| {
                    *m == dst && self.lsmask.checked_shr(i as u32).unwrap_or(0) & 1 == 1
                });
        }
        dst == self.lladdr && (self.leader_master || self.balancing.is_ip())
    }

    /// `carp_iamatch`: the sender hardware address to answer an ARP request for one of our
    /// virtual IPv4 addresses with, or `None` to stay silent. Balancing `arp` hashes the
    /// requester's MAC to a vhost and answers only if that vhost is MASTER here, with its own
    /// virtual MAC; every other mode answers with the interface lladdr when the leader is
    /// MASTER.
    pub fn arp_reply(&self, requester: [u8; 6]) -> Option<[u8; 6]> {
        if self.balancing == Balancing::Arp {
            if self.lscount == 0 {
                return None;
            }
            let idx = arp_hash(self.hashkey, self.key_head, requester) % u32::from(self.lscount);
            if self.lsmask.checked_shr(idx).unwrap_or(0) & 1 == 1 {
                return usize::try_from(idx)
                    .ok()
                    .and_then(|i| self.macs.get(i))
                    .copied();
            }
            None
        } else if self.leader_master {
            Some(self.lladdr)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::classify::{Af, Class, Frag, Quoted};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    /// spec §2.4, every number.
    #[test]
    fn worked_example() {
        let src = v4([192, 0, 2, 10]);
        let dst = v4([198, 51, 100, 5]);
        assert_eq!(fold(src, dst), Some(0x0633_660F));
        assert_eq!(0x0633_660Fu32, 104_031_759);
        assert_eq!(owner_index(src, dst, 2), Some(1));
        let pkt = Inbound::Unicast { src, dst };
        // Host A: master of vhid 1 (idx 0), lsmask 0b01. Host B: vhid 2, lsmask 0b10.
        assert!(!ip_accept(Balancing::Ip, 0b01, 2, &pkt), "host A drops");
        assert!(ip_accept(Balancing::Ip, 0b10, 2, &pkt), "host B accepts");
        // Three nodes: idx 0.
        assert_eq!(owner_index(src, dst, 3), Some(0));
        assert!(ip_accept(Balancing::Ip, 0b001, 3, &pkt));
        assert!(!ip_accept(Balancing::Ip, 0b110, 3, &pkt));
        // IPv6: only the last word differs, 0x10 ^ 0x53 = 0x43 = 67, 67 % 2 = 1.
        let s6: IpAddr = "2001:db8::10".parse::<Ipv6Addr>().unwrap().into();
        let d6: IpAddr = "2001:db8::53".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(fold(s6, d6), Some(0x43));
        assert_eq!(owner_index(s6, d6, 2), Some(1));
        // After B fails, A is master of both: lsmask 0b11 accepts everything.
        assert!(ip_accept(Balancing::Ip, 0b11, 2, &pkt));
        assert!(ip_accept(
            Balancing::Ip,
            0b11,
            2,
            &Inbound::Unicast { src: s6, dst: d6 }
        ));
    }

    #[test]
    fn symmetric_and_icmp_errors_follow_the_flow() {
        let a = v4([198, 18, 0, 1]);
        let b = v4([198, 19, 7, 9]);
        for n in 1..=32u8 {
            assert_eq!(owner_index(a, b, n), owner_index(b, a, n));
        }
        // An ICMP error from router r about a packet a->b hashes (b, a): the reverse
        // direction of (a, b) as seen by the node owning the flow b->a... both are the fold.
        let err = Inbound::IcmpError {
            quoted_dst: b,
            outer_dst: a,
        };
        for mask in 0..4u32 {
            assert_eq!(
                ip_accept(Balancing::Ip, mask, 2, &err),
                ip_accept(Balancing::Ip, mask, 2, &Inbound::Unicast { src: a, dst: b })
            );
        }
    }

    #[test]
    fn modes_cast_and_empty() {
        let pkt = Inbound::Unicast {
            src: v4([1, 2, 3, 4]),
            dst: v4([1, 2, 3, 5]),
        };
        assert!(ip_accept(Balancing::None, 0, 0, &pkt));
        assert!(ip_accept(Balancing::Arp, 0, 0, &pkt));
        assert!(!ip_accept(Balancing::Ip, 0, 0, &pkt), "lscount 0 drops");
        assert!(
            !ip_accept(Balancing::IpStealth, 0, 2, &pkt),
            "no master here drops"
        );
        assert!(ip_accept(Balancing::IpUnicast, 0, 2, &Inbound::Cast));
        let mixed = Inbound::Unicast {
            src: v4([1, 2, 3, 4]),
            dst: "::1".parse().unwrap(),
        };
        assert!(!ip_accept(Balancing::Ip, u32::MAX, 2, &mixed));
        // Exactly one of two complementary nodes accepts each of many flows.
        for i in 0..1000u32 {
            let p = Inbound::Unicast {
                src: v4(i.wrapping_mul(2_654_435_761).to_be_bytes()),
                dst: v4([198, 18, 0, 1]),
            };
            assert_ne!(
                ip_accept(Balancing::Ip, 0b01, 2, &p),
                ip_accept(Balancing::Ip, 0b10, 2, &p)
            );
        }
    }

    fn meta(src: IpAddr, dst: IpAddr, quoted: Option<Quoted>) -> Meta {
        Meta {
            class: Class::Ipv4Icmp,
            l3: 14,
            l4: 34,
            end: 70,
            vlan: [0; 2],
            af: Af::V4,
            proto: 1,
            src,
            dst,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            icmp_type: 3,
            icmp_code: 4,
            ttl: 64,
            frag: Frag::None,
            quoted,
        }
    }

    #[test]
    fn inbound_from_meta() {
        let router = v4([203, 0, 113, 1]);
        let vip = v4([198, 18, 0, 100]);
        let client = v4([192, 0, 2, 10]);
        // Fragmentation-needed from a router about our reply vip -> client.
        let q = Quoted {
            l3: 42,
            l4: 62,
            proto: 6,
            src: vip,
            dst: client,
            sport: 25,
            dport: 4000,
        };
        assert_eq!(
            Inbound::from_meta(&meta(router, vip, Some(q)), false),
            Inbound::IcmpError {
                quoted_dst: client,
                outer_dst: vip
            }
        );
        // It is owned by the node that owns the flow client <-> vip.
        let e = Inbound::from_meta(&meta(router, vip, Some(q)), false);
        let f = Inbound::Unicast {
            src: client,
            dst: vip,
        };
        for mask in 0..8u32 {
            assert_eq!(
                ip_accept(Balancing::Ip, mask, 3, &e),
                ip_accept(Balancing::Ip, mask, 3, &f)
            );
        }
        assert_eq!(Inbound::from_meta(&meta(client, vip, None), false), f);
        assert_eq!(
            Inbound::from_meta(&meta(client, vip, None), true),
            Inbound::Cast
        );
        assert_eq!(
            Inbound::from_meta(&meta(client, v4([224, 0, 0, 18]), None), false),
            Inbound::Cast
        );
    }

    #[test]
    fn frame_acceptance() {
        let mut macs = [[0u8; 6]; MAX_NODES];
        macs[0] = [0, 0, 0x5e, 0, 1, 1];
        macs[1] = [0, 0, 0x5e, 0, 1, 2];
        let o = Ownership {
            balancing: Balancing::None,
            lsmask: 0,
            lscount: 1,
            leader_master: false,
            macs,
            lladdr: macs[0],
            hashkey: [0; 2],
            key_head: [0; 4],
        };
        assert!(!o.accepts_frame(macs[0]), "backup: not ours");
        assert!(o.arp_reply([2; 6]).is_none());
        let m = Ownership {
            leader_master: true,
            lsmask: 1,
            ..o
        };
        assert!(m.accepts_frame(macs[0]));
        assert_eq!(m.arp_reply([2; 6]), Some(macs[0]));
        assert!(!m.accepts_frame(macs[1]));
        let ip = Ownership {
            balancing: Balancing::Ip,
            lscount: 2,
            lladdr: [1, 0, 0x5e, 0, 1, 1],
            ..o
        };
        assert!(
            ip.accepts_frame([1, 0, 0x5e, 0, 1, 1]),
            "ip balancing: every node takes it"
        );
        let arp = Ownership {
            balancing: Balancing::Arp,
            lscount: 2,
            lsmask: 0b10,
            ..o
        };
        assert!(arp.accepts_frame(macs[1]));
        assert!(!arp.accepts_frame(macs[0]));
    }

    #[test]
    fn arp_hash_pinned() {
        // Pinned against a hand evaluation of lookup2's mix (python, same formulas): a change
        // in byte order or in the mix breaks it.
        assert_eq!(arp_hash([0, 0], [0; 4], [0; 6]), ARP_HASH_ZERO);
        assert_eq!(
            arp_hash(
                [0x0102_0304, 0x0506_0708],
                *b"pass",
                [0, 0x11, 0x22, 0x33, 0x44, 0x55]
            ),
            ARP_HASH_SAMPLE
        );
    }

    const ARP_HASH_ZERO: u32 = 0xc8b2_177e;
    const ARP_HASH_SAMPLE: u32 = 0x466d_055e;
}
