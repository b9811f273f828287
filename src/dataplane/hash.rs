//! Flow hashes for the data plane.
//!
//! Two hashes, both cheap (a handful of multiply/xor/rotate steps per 64-bit word, then the
//! MurmurHash3 `fmix64` finaliser for avalanche) and both seeded, so an outsider who does not
//! know the per-node seed cannot aim many flows at one worker or one flow-table bucket. Neither
//! is SipHash: these run once or twice per packet and must cost nanoseconds.
//!
//! - [`symmetric`]: the same value for A→B and B→A. Used to spread frames across workers so that
//!   both directions of a NAT'ed flow (client→VIP and backend→client are *not* the same tuple,
//!   so NAT return traffic is steered by the flow table's owner, not by this hash) and an ICMP
//!   error about a flow (hashed on its quoted tuple, see [`symmetric_meta`]) reach the same core.
//!   Symmetry comes from ordering the two endpoints before hashing, not from XOR-ing them, so
//!   A→A does not collapse to a constant.
//! - [`directed`]: a different value for A→B and B→A. Used for Maglev lookups, for the flow
//!   table's index and for tunnel entropy (GUE source port, IPv6 flow label) as Katran does
//!   (`balancer.bpf.c` `get_packet_hash`), where direction matters and symmetry would only
//!   lose bits.
//!
//! Addresses are hashed in their 16-byte form ([`addr16`]: IPv4 as v4-mapped IPv6), so one
//! function serves both families and an IPv4 flow never equals an IPv6 one by accident of
//! zero padding.
//!
//! Pure arithmetic on fixed-size arrays: no input can make these functions panic.

use std::net::IpAddr;

use crate::wire::classify::Meta;

/// Odd 64-bit multiplier (2^64 / golden ratio), as in Fibonacci hashing.
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// One absorption step: FxHash's rotate-xor-multiply.
#[inline]
fn step(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(K)
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[inline]
fn words(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}

#[inline]
fn hash_ordered(seed: u64, proto: u8, a: &[u8; 16], ap: u16, b: &[u8; 16], bp: u16) -> u64 {
    let (a0, a1) = words(a);
    let (b0, b1) = words(b);
    let mut h = step(seed, a0);
    h = step(h, a1);
    h = step(h, b0);
    h = step(h, b1);
    h = step(
        h,
        (u64::from(ap) << 32) | (u64::from(bp) << 16) | u64::from(proto),
    );
    fmix64(h)
}

/// An address in 16-byte form: IPv6 as is, IPv4 as the v4-mapped `::ffff:a.b.c.d` (RFC 4291
/// §2.5.5.2), the form the flow table stores.
#[inline]
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Direction-sensitive hash of a 5-tuple: `directed(.., a, ap, b, bp) != directed(.., b, bp,
/// a, ap)` in general.
#[inline]
pub fn directed(
    seed: u64,
    proto: u8,
    src: &[u8; 16],
    sport: u16,
    dst: &[u8; 16],
    dport: u16,
) -> u32 {
    (hash_ordered(seed, proto, src, sport, dst, dport) >> 32) as u32
}

/// Symmetric hash of a 5-tuple: equal for both directions of a flow.
#[inline]
pub fn symmetric(seed: u64, proto: u8, a: &[u8; 16], ap: u16, b: &[u8; 16], bp: u16) -> u32 {
    // Big-endian u128 order is the bytes' lexicographic order, compared without a memcmp.
    let h = if (u128::from_be_bytes(*a), ap) <= (u128::from_be_bytes(*b), bp) {
        hash_ordered(seed, proto, a, ap, b, bp)
    } else {
        hash_ordered(seed, proto, b, bp, a, ap)
    };
    (h >> 32) as u32
}

/// Symmetric hash of a classified frame for worker steering. An ICMP error is hashed on the
/// flow it quotes, so it lands on the worker that owns that flow (the quoted tuple is the
/// reverse of the error's direction, and symmetry makes that irrelevant).
#[inline]
pub fn symmetric_meta(seed: u64, meta: &Meta) -> u32 {
    match &meta.quoted {
        Some(q) => symmetric(
            seed,
            q.proto,
            &addr16(q.src),
            q.sport,
            &addr16(q.dst),
            q.dport,
        ),
        None => symmetric(
            seed,
            meta.proto,
            &addr16(meta.src),
            meta.sport,
            &addr16(meta.dst),
            meta.dport,
        ),
    }
}

/// Directed hash of a classified frame's own 5-tuple (Maglev key, tunnel entropy).
#[inline]
pub fn directed_meta(seed: u64, meta: &Meta) -> u32 {
    directed(
        seed,
        meta.proto,
        &addr16(meta.src),
        meta.sport,
        &addr16(meta.dst),
        meta.dport,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn a4(x: u8) -> [u8; 16] {
        addr16(IpAddr::V4(Ipv4Addr::new(198, 18, 0, x)))
    }

    #[test]
    fn symmetric_is_symmetric_directed_is_not() {
        let (a, b) = (a4(1), a4(2));
        assert_eq!(
            symmetric(7, 6, &a, 1234, &b, 80),
            symmetric(7, 6, &b, 80, &a, 1234)
        );
        assert_ne!(
            directed(7, 6, &a, 1234, &b, 80),
            directed(7, 6, &b, 80, &a, 1234)
        );
    }

    #[test]
    fn seed_proto_and_ports_matter() {
        let (a, b) = (a4(1), a4(2));
        let base = directed(7, 17, &a, 1000, &b, 53);
        assert_ne!(base, directed(8, 17, &a, 1000, &b, 53));
        assert_ne!(base, directed(7, 6, &a, 1000, &b, 53));
        assert_ne!(base, directed(7, 17, &a, 1001, &b, 53));
        assert_ne!(base, directed(7, 17, &a, 1000, &b, 54));
        // A→A does not collapse (XOR-based symmetric hashes give 0 here).
        assert_ne!(
            symmetric(7, 17, &a, 5, &a, 5),
            symmetric(7, 17, &b, 5, &b, 5)
        );
    }

    #[test]
    fn v4_and_v6_differ() {
        let v4 = addr16(IpAddr::V4(Ipv4Addr::new(0, 0, 0, 1)));
        let v6 = addr16(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_ne!(v4, v6);
        assert_ne!(
            directed(1, 17, &v4, 1, &v4, 2),
            directed(1, 17, &v6, 1, &v6, 2)
        );
    }

    #[test]
    fn spreads_sequential_ports_evenly() {
        // 64k sequential client ports over 8 workers: each bucket within 5% of the mean.
        let (a, b) = (a4(1), a4(2));
        let mut buckets = [0u32; 8];
        for p in 0..65536u32 {
            let h = symmetric(42, 17, &a, p as u16, &b, 53);
            buckets[(h % 8) as usize] += 1;
        }
        for n in buckets {
            assert!((7782..=8602).contains(&n), "bucket {n}");
        }
    }
}
