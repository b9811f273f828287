//! Internet checksum: full computation (RFC 1071) and incremental update (RFC 1624).
//!
//! The sums here work on a 32-bit accumulator of 16-bit big-endian words so a caller can add a
//! pseudo-header, a header and a payload separately, then [`fold`] once. The incremental
//! updates implement RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, which is correct for every
//! input including the 0x0000/0xFFFF corner RFC 1141's form gets wrong.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` as big-endian 16-bit words (a trailing odd byte is padded with zero) to `acc`.
#[inline]
pub fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Keep the accumulator from overflowing on long buffers by folding early.
        if acc & 0x8000_0000 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a 32-bit accumulator to 16 bits with end-around carry and complements it.
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// RFC 1071 checksum of `data` alone.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(data, 0))
}

/// Accumulator for the IPv4 pseudo-header (RFC 768, RFC 793): src, dst, zero, protocol, length.
#[inline]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let acc = sum(&src.octets(), 0);
    let acc = sum(&dst.octets(), acc);
    acc + u32::from(proto) + u32::from(len)
}

/// Accumulator for the IPv6 pseudo-header (RFC 8200 §8.1): src, dst, upper-layer length,
/// zeros, next header.
#[inline]
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: u32) -> u32 {
    let acc = sum(&src.octets(), 0);
    let acc = sum(&dst.octets(), acc);
    acc + (len >> 16) + (len & 0xffff) + u32::from(proto)
}

/// RFC 1624 eqn. 3 for one 16-bit field: returns the new checksum after `old` became `new`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!csum) + u32::from(!old) + u32::from(new);
    fold(acc)
}

/// RFC 1624 for a field of any even length (an address, a port pair): `old` and `new` must have
/// the same length. Used for NAT rewrites of IPv4 (4 bytes) and IPv6 (16 bytes) addresses.
#[inline]
pub fn update_bytes(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let mut acc = u32::from(!csum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    fold(acc)
}

/// RFC 1624 for a 32-bit field.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    update_bytes(csum, &old.to_be_bytes(), &new.to_be_bytes())
}

/// UDP's rule (RFC 768): a computed checksum of zero is transmitted as all ones, because zero
/// on the wire means "no checksum" over IPv4.
#[inline]
pub fn udp_nonzero(csum: u16) -> u16 {
    if csum == 0 { 0xffff } else { csum }
}

/// Adds `data` to a 64-bit accumulator four bytes at a time (a trailing 1-3 bytes padded with
/// zeros). Summing 32-bit big-endian words and folding later gives the same one's complement
/// sum as 16-bit words, because 2^16 = 1 modulo 0xffff (RFC 1071 §2 (B), "parallel
/// summation"); it halves the additions of [`sum`] on the hot path. A u64 cannot overflow
/// below 2^32 words.
#[inline]
pub fn sum_wide(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rem = chunks.remainder();
    let mut tail = [0u8; 4];
    if let Some(t) = tail.get_mut(..rem.len()) {
        t.copy_from_slice(rem);
    }
    acc + u64::from(u32::from_be_bytes(tail))
}

/// Folds a 64-bit accumulator of [`sum_wide`] to 16 bits and complements it.
#[inline]
pub fn fold_wide(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// RFC 1071 checksum of `data` by [`sum_wide`]; equal to [`checksum`] for every input.
#[inline]
pub fn checksum_wide(data: &[u8]) -> u16 {
    fold_wide(sum_wide(data, 0))
}

/// Pseudo-header accumulator for either family (RFC 768, RFC 793, RFC 8200 §8.1).
#[inline]
pub fn pseudo(addrs: &super::Addrs, proto: u8, len: u32) -> u32 {
    match *addrs {
        // An IPv4 segment is at most 65535 bytes, so the 16-bit length cannot be cut.
        super::Addrs::V4(s, d) => pseudo_v4(s, d, proto, len as u16),
        super::Addrs::V6(s, d) => pseudo_v6(s, d, proto, len),
    }
}

/// Full checksum of a transport segment (UDP, TCP, ICMPv6) with its pseudo-header. Over a
/// segment whose checksum field is zero it computes the value to store; over a received
/// segment it yields 0 when the stored checksum verifies.
#[inline]
pub fn transport(addrs: &super::Addrs, proto: u8, segment: &[u8]) -> u16 {
    fold_wide(sum_wide(
        segment,
        u64::from(pseudo(addrs, proto, segment.len() as u32)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes: 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x12]), !0x1200);
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), !(0x1234u16 + 0x5600));
    }

    #[test]
    fn verifying_a_checksummed_buffer_gives_zero() {
        let mut data = vec![
            0x45, 0, 0, 0x54, 0xab, 0xcd, 0x40, 0, 0x40, 1, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&data), 0);
    }

    #[test]
    fn incremental_matches_full_on_fixed_case() {
        let mut data = [
            0x45u8, 0, 0, 0x54, 0xab, 0xcd, 0x40, 0, 0x40, 1, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        let c = checksum(&data);
        let old = [198, 18, 0, 2];
        let new = [198, 19, 7, 9];
        data[16..20].copy_from_slice(&new);
        assert_eq!(update_bytes(c, &old, &new), checksum(&data));
    }
}
