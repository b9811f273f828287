//! Property: an RFC 1624 incremental update of a checksum after a NAT rewrite (addresses,
//! which the TCP/UDP pseudo-header covers, and ports) always equals a full RFC 1071
//! recomputation, for IPv4 and IPv6, TCP and UDP, any payload (odd lengths included).

use std::net::{Ipv4Addr, Ipv6Addr};

use carpio::wire::checksum::{self, udp_nonzero, update_bytes, update16};
use carpio::wire::{Addrs, ipv4, proto};
use proptest::prelude::*;

/// Builds `[ports][len][csum][payload]` (UDP) or a 20-byte TCP header + payload with the
/// checksum computed in full, and returns it with the checksum's offset.
fn segment(p: u8, addrs: &Addrs, sport: u16, dport: u16, payload: &[u8]) -> (Vec<u8>, usize) {
    let (mut seg, off) = if p == proto::UDP {
        let mut s = vec![0u8; 8];
        let len = (8 + payload.len()) as u16;
        s[4..6].copy_from_slice(&len.to_be_bytes());
        (s, 6)
    } else {
        let mut s = vec![0u8; 20];
        s[12] = 0x50;
        s[13] = 0x10;
        (s, 16)
    };
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    seg.extend_from_slice(payload);
    let mut c = checksum::transport(addrs, p, &seg);
    if p == proto::UDP {
        c = udp_nonzero(c);
    }
    seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
    (seg, off)
}

fn stored(seg: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([seg[off], seg[off + 1]])
}

/// Rewrites the destination port of `seg` and returns the incrementally updated checksum
/// after an address change `old_addr` -> `new_addr` as well.
fn rewrite(seg: &mut [u8], off: usize, old_addr: &[u8], new_addr: &[u8], new_dport: u16) -> u16 {
    let old_dport = u16::from_be_bytes([seg[2], seg[3]]);
    let c = stored(seg, off);
    let c = update_bytes(c, old_addr, new_addr);
    let c = update16(c, old_dport, new_dport);
    seg[2..4].copy_from_slice(&new_dport.to_be_bytes());
    c
}

fn check(p: u8, old: Addrs, new: Addrs, sport: u16, dport: u16, ndport: u16, payload: &[u8]) {
    let (mut seg, off) = segment(p, &old, sport, dport, payload);
    let (oa, na): (Vec<u8>, Vec<u8>) = match (old, new) {
        (Addrs::V4(_, o), Addrs::V4(_, n)) => (o.octets().to_vec(), n.octets().to_vec()),
        (Addrs::V6(_, o), Addrs::V6(_, n)) => (o.octets().to_vec(), n.octets().to_vec()),
        _ => unreachable!(),
    };
    let incremental = rewrite(&mut seg, off, &oa, &na, ndport);
    seg[off..off + 2].fill(0);
    let full = checksum::transport(&new, p, &seg);
    if p == proto::UDP {
        assert_eq!(udp_nonzero(incremental), udp_nonzero(full));
    } else {
        assert_eq!(incremental, full);
    }
    // And the rewritten segment verifies.
    seg[off..off + 2].copy_from_slice(&incremental.to_be_bytes());
    assert_eq!(checksum::transport(&new, p, &seg), 0);
}

fn v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ipv4_nat_rewrite(
        src in v4(), dst in v4(), ndst in v4(),
        sport: u16, dport: u16, ndport: u16,
        tcp: bool, payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let p = if tcp { proto::TCP } else { proto::UDP };
        check(p, Addrs::V4(src, dst), Addrs::V4(src, ndst), sport, dport, ndport, &payload);
    }

    #[test]
    fn ipv6_nat_rewrite(
        src in v6(), dst in v6(), ndst in v6(),
        sport: u16, dport: u16, ndport: u16,
        tcp: bool, payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let p = if tcp { proto::TCP } else { proto::UDP };
        check(p, Addrs::V6(src, dst), Addrs::V6(src, ndst), sport, dport, ndport, &payload);
    }

    #[test]
    fn wide_sum_equals_rfc1071_sum(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert_eq!(checksum::checksum_wide(&data), checksum::checksum(&data));
    }

    #[test]
    fn ipv4_header_address_rewrite(
        src in v4(), dst in v4(), nsrc in v4(), ttl: u8, ident: u16, len in 0u16..1400,
    ) {
        let mut r = ipv4::Repr::parse_header(&[0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        r.src = src;
        r.dst = dst;
        r.ttl = ttl;
        r.frag.ident = ident;
        r.payload_len = len;
        let mut hdr = [0u8; 20];
        r.emit(&mut hdr).unwrap();
        let old = u16::from_be_bytes([hdr[10], hdr[11]]);
        let inc = update_bytes(old, &src.octets(), &nsrc.octets());
        r.src = nsrc;
        r.emit(&mut hdr).unwrap();
        prop_assert_eq!(inc, u16::from_be_bytes([hdr[10], hdr[11]]));
        prop_assert_eq!(checksum::checksum(&hdr), 0);
    }
}
