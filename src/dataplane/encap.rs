//! Tunnel encapsulation toward backends (IPIP, GUE) and the ICMP "too big" reply for packets
//! that would not fit the path MTU once encapsulated.
//!
//! ```text
//!  before:  [ headroom ............ ][ link hdr | inner IP packet ............ ][pad]
//!                                   ^headroom  ^l3                            ^end
//!  after:   [ headroom ..][ link hdr | outer IP | (UDP) | inner IP packet .... ]
//!                        ^start     ^l3
//!
//!  outer IPv4 (20 B): 0x45 tos len | id=0 DF | ttl proto csum | src | dst
//!  outer IPv6 (40 B): 6 tc flow-label(entropy) | plen next hlim | src (16) | dst (16)
//!  GUE variant 1 (draft-ietf-intarea-gue §3.2): a UDP header then the inner IP packet itself
//!    (its first nibble, 4 or 6, is the "01" variant marker); UDP: sport(entropy) dport len csum
//! ```
//!
//! IPIP is IPv4 protocol 4 / IPv6 next header 4 for an IPv4 inner packet (RFC 2003, RFC 2473)
//! and 41 for an IPv6 inner packet (RFC 2473, RFC 4213). The packet grows at the front: the
//! caller hands in a buffer with headroom (AF_XDP frames have it) and gets back where the new
//! frame starts and how long it is; the inner packet is never moved, only the link header is
//! copied forward. Entropy for ECMP and RSS in front of the backends comes from the caller's
//! flow hash (`hash::directed`), as Katran does: in the GUE source port (ephemeral range
//! 49152-65535, RFC 6335) and in the outer IPv6 flow label (RFC 6438).
//!
//! The outer UDP checksum is 0 over IPv4 (allowed for tunnels, RFC 768, as Katran and the
//! Linux FOU driver send) and computed in full over IPv6, where 0 is invalid (RFC 8200 §8.1).
//!
//! Nothing here panics: every access is a checked slice; bad lengths are named errors.

use std::net::IpAddr;

use super::rewrite::{
    ETH_DST, ETH_HEADER, ETH_SRC, Error, ICMP_CHECKSUM, ICMP_CODE, ICMP_HEADER, ICMP_TYPE,
    L4_DPORT, L4_SPORT, MAC_LEN, Macs, PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP, UDP_CHECKSUM,
    UDP_HEADER, UDP_LEN, V4_CHECKSUM, V4_DST, V4_FLAGS, V4_HEADER, V4_PROTO, V4_SRC, V4_TOS,
    V4_TOTAL_LEN, V4_TTL, V4_VER_IHL, V6_DST, V6_HEADER, V6_HOP_LIMIT, V6_NEXT, V6_PAYLOAD_LEN,
    V6_SRC, V6_VER_TC_FLOW, bytes, bytes_mut, set_macs, write16,
};
use crate::wire::checksum::{checksum, fold, pseudo_v6, sum, udp_nonzero};
use crate::wire::classify::{Af, Meta};

/// IP protocol number for an IPv4 payload (IP-in-IP, RFC 2003).
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number for an IPv6 payload (RFC 2473).
pub const PROTO_IPV6: u8 = 41;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IPv4 "don't fragment" flag in the flags/fragment-offset word.
const V4_DF: u16 = 0x4000;
/// RFC 1812 §4.3.2.3: an ICMPv4 error should not exceed 576 bytes.
const V4_ICMP_ERROR_MAX: usize = 576;
/// RFC 4443 §2.4(c): an ICMPv6 error must not exceed the minimum IPv6 MTU.
const V6_ICMP_ERROR_MAX: usize = 1280;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMP time exceeded, code 0 "time to live exceeded in transit" (RFC 792).
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMPv6 time exceeded, code 0 "hop limit exceeded in transit" (RFC 4443 §3.3).
const ICMPV6_TIME_EXCEEDED: u8 = 3;
/// Offset of the next-hop MTU in an ICMP frag-needed (RFC 1191 §4: 16 bits at 6) and in an
/// ICMPv6 packet-too-big (RFC 4443 §3.2: 32 bits at 4).
const ICMP_MTU_V4: usize = 6;
const ICMP_MTU_V6: usize = 4;
const HOP_LIMIT: u8 = 64;

/// The kind of tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// IPv4/IPv6 in IP (protocol 4 or 41).
    Ipip,
    /// Generic UDP Encapsulation, variant 1, to this UDP port.
    Gue { port: u16 },
}

/// Where and how to encapsulate (plain data from the configuration and the snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub tunnel: Tunnel,
    /// Our tunnel source address (configuration).
    pub src: IpAddr,
    /// The backend's address.
    pub dst: IpAddr,
    /// Largest outer IP packet the link to the backend carries.
    pub mtu: u16,
    /// Next hop and our Ethernet addresses, written when the frame has an Ethernet header.
    pub macs: Option<Macs>,
}

/// Bytes the tunnel adds in front of the inner IP packet.
pub const fn overhead(tunnel: Tunnel, outer: Af) -> usize {
    let ip = match outer {
        Af::V4 => V4_HEADER,
        Af::V6 => V6_HEADER,
    };
    match tunnel {
        Tunnel::Ipip => ip,
        Tunnel::Gue { .. } => ip + UDP_HEADER,
    }
}

fn af_of(a: IpAddr) -> Af {
    match a {
        IpAddr::V4(_) => Af::V4,
        IpAddr::V6(_) => Af::V6,
    }
}

/// The largest inner packet that fits `outer` (for the frag-needed / too-big reply).
pub fn inner_mtu(outer: &Outer) -> u16 {
    let o = overhead(outer.tunnel, af_of(outer.src));
    (usize::from(outer.mtu).saturating_sub(o)) as u16
}

/// Encapsulates the frame at `buf[headroom..headroom + len]` (classified as `meta`, offsets
/// from the frame's start) into the tunnel `outer`. Returns `(start, len)` of the new frame
/// in `buf`. [`Error::TooBig`] means the outer packet would exceed `outer.mtu`: answer the
/// client with [`icmp_too_big`] for [`inner_mtu`].
pub fn encap(
    buf: &mut [u8],
    headroom: usize,
    len: usize,
    meta: &Meta,
    outer: &Outer,
    entropy: u32,
) -> Result<(usize, usize), Error> {
    let oaf = af_of(outer.src);
    if af_of(outer.dst) != oaf {
        return Err(Error::AfMismatch);
    }
    let l3 = usize::from(meta.l3);
    let end = usize::from(meta.end);
    if end > len || l3 >= end {
        return Err(Error::Truncated);
    }
    bytes(buf, headroom, len)?;
    let first = *bytes(buf, headroom + l3, 1)?
        .first()
        .ok_or(Error::Truncated)?;
    let (inner_proto, tos) = match first >> 4 {
        4 => (
            PROTO_IPIP,
            *bytes(buf, headroom + l3 + 1, 1)?
                .first()
                .ok_or(Error::Truncated)?,
        ),
        6 => {
            let b = bytes(buf, headroom + l3, 2)?;
            (PROTO_IPV6, (b[0] << 4) | (b[1] >> 4))
        }
        _ => return Err(Error::NotIp),
    };
    let inner_len = end - l3;
    let hdr = overhead(outer.tunnel, oaf);
    let outer_len = hdr + inner_len;
    if outer_len > usize::from(outer.mtu) || outer_len > usize::from(u16::MAX) {
        return Err(Error::TooBig);
    }
    let start = headroom.checked_sub(hdr).ok_or(Error::NoHeadroom)?;
    // Move the link header forward by `hdr` bytes; the inner packet stays where it is.
    buf.copy_within(headroom..headroom + l3, start);
    let frame = bytes_mut(buf, start, l3 + outer_len)?;
    if l3 >= 2 {
        let et = match oaf {
            Af::V4 => ETHERTYPE_IPV4,
            Af::V6 => ETHERTYPE_IPV6,
        };
        write16(frame, l3 - 2, et)?;
    }
    if let Some(m) = &outer.macs {
        set_macs(frame, meta, m)?;
    }
    let proto = match outer.tunnel {
        Tunnel::Ipip => inner_proto,
        Tunnel::Gue { .. } => PROTO_UDP,
    };
    let ip_len = match oaf {
        Af::V4 => {
            // DF on the outer header: a tunnel must not fragment (the caller answers with
            // icmp_too_big instead), as Katran's encap does.
            write_v4(
                frame,
                l3,
                tos,
                true,
                outer_len as u16,
                proto,
                outer.src,
                outer.dst,
            )?;
            V4_HEADER
        }
        Af::V6 => {
            let plen = (outer_len - V6_HEADER) as u16;
            write_v6(frame, l3, tos, entropy, plen, proto, outer.src, outer.dst)?;
            V6_HEADER
        }
    };
    if let Tunnel::Gue { port } = outer.tunnel {
        let u = l3 + ip_len;
        let ulen = (UDP_HEADER + inner_len) as u16;
        let sport = 0xc000 | (entropy as u16 & 0x3fff);
        let h = bytes_mut(frame, u, UDP_HEADER)?;
        h[L4_SPORT..L4_SPORT + 2].copy_from_slice(&sport.to_be_bytes());
        h[L4_DPORT..L4_DPORT + 2].copy_from_slice(&port.to_be_bytes());
        h[UDP_LEN..UDP_LEN + 2].copy_from_slice(&ulen.to_be_bytes());
        h[UDP_CHECKSUM..UDP_CHECKSUM + 2].copy_from_slice(&[0, 0]);
        if let (IpAddr::V6(s), IpAddr::V6(d)) = (outer.src, outer.dst) {
            let acc = pseudo_v6(s, d, PROTO_UDP, u32::from(ulen));
            let acc = sum(bytes(frame, u, usize::from(ulen))?, acc);
            write16(frame, u + UDP_CHECKSUM, udp_nonzero(fold(acc)))?;
        }
    }
    Ok((start, l3 + outer_len))
}

#[allow(clippy::too_many_arguments)]
fn write_v4(
    frame: &mut [u8],
    at: usize,
    tos: u8,
    df: bool,
    total: u16,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
) -> Result<(), Error> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        return Err(Error::AfMismatch);
    };
    let h = bytes_mut(frame, at, V4_HEADER)?;
    h.fill(0);
    h[V4_VER_IHL] = 0x45; // version 4, 5 words: no options
    h[V4_TOS] = tos;
    h[V4_TOTAL_LEN..V4_TOTAL_LEN + 2].copy_from_slice(&total.to_be_bytes());
    h[V4_FLAGS..V4_FLAGS + 2].copy_from_slice(&(if df { V4_DF } else { 0 }).to_be_bytes());
    h[V4_TTL] = HOP_LIMIT;
    h[V4_PROTO] = proto;
    h[V4_SRC..V4_SRC + 4].copy_from_slice(&s.octets());
    h[V4_DST..V4_DST + 4].copy_from_slice(&d.octets());
    let c = checksum(h);
    write16(frame, at + V4_CHECKSUM, c)
}

#[allow(clippy::too_many_arguments)]
fn write_v6(
    frame: &mut [u8],
    at: usize,
    tc: u8,
    flow: u32,
    plen: u16,
    next: u8,
    src: IpAddr,
    dst: IpAddr,
) -> Result<(), Error> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
        return Err(Error::AfMismatch);
    };
    let word = (6u32 << 28) | (u32::from(tc) << 20) | (flow & 0x000f_ffff);
    let h = bytes_mut(frame, at, V6_HEADER)?;
    h[V6_VER_TC_FLOW..V6_VER_TC_FLOW + 4].copy_from_slice(&word.to_be_bytes());
    h[V6_PAYLOAD_LEN..V6_PAYLOAD_LEN + 2].copy_from_slice(&plen.to_be_bytes());
    h[V6_NEXT] = next;
    h[V6_HOP_LIMIT] = HOP_LIMIT;
    h[V6_SRC..V6_SRC + 16].copy_from_slice(&s.octets());
    h[V6_DST..V6_DST + 16].copy_from_slice(&d.octets());
    Ok(())
}

/// Builds into `out` the ICMP "fragmentation needed" (IPv4, RFC 1191) or ICMPv6 "packet too
/// big" (RFC 4443 §3.2) reply to the frame `orig` (classified as `meta`), announcing `mtu`.
/// The reply comes from the address the client sent to (the VIP), goes back over the same
/// link with the MAC addresses swapped, and quotes as much of the packet as the error size
/// limits allow. Returns the reply frame's length.
pub fn icmp_too_big(orig: &[u8], meta: &Meta, mtu: u16, out: &mut [u8]) -> Result<usize, Error> {
    icmp_error(orig, meta, IcmpError::TooBig { mtu }, out)
}

/// An ICMP/ICMPv6 error the data plane answers with itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Fragmentation needed / packet too big, announcing the MTU.
    TooBig { mtu: u16 },
    /// TTL / hop limit exceeded in transit: a NAT'ed packet that arrived with TTL 1 or 0
    /// (RFC 1812 §5.3.1: a router never forwards it; pf's rdr goes through `ip_forward`,
    /// which answers this way).
    TimeExceeded,
}

/// Builds into `out` the error `kind` in reply to the frame `orig` (classified as `meta`),
/// like [`icmp_too_big`]: from the packet's destination to its source, back over the same
/// link, quoting as much as the error size limits allow. Returns the reply frame's length.
pub fn icmp_error(
    orig: &[u8],
    meta: &Meta,
    kind: IcmpError,
    out: &mut [u8],
) -> Result<usize, Error> {
    if meta.quoted.is_some() {
        return Err(Error::AboutIcmpError);
    }
    let unicast = match meta.src {
        IpAddr::V4(a) => !(a.is_multicast() || a.is_broadcast() || a.is_unspecified()),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified()),
    };
    if !unicast {
        return Err(Error::NotUnicastSource);
    }
    let l3 = usize::from(meta.l3);
    let end = usize::from(meta.end);
    if l3 >= end {
        return Err(Error::Truncated);
    }
    let link = bytes(orig, 0, l3)?;
    let (ip_len, limit) = match meta.af {
        Af::V4 => (V4_HEADER, V4_ICMP_ERROR_MAX),
        Af::V6 => (V6_HEADER, V6_ICMP_ERROR_MAX),
    };
    let quote = (end - l3).min(limit - ip_len - ICMP_HEADER);
    let total = ip_len + ICMP_HEADER + quote;
    let quoted = bytes(orig, l3, quote)?;
    let frame = out.get_mut(..l3 + total).ok_or(Error::NoRoom)?;
    frame[..l3].copy_from_slice(link);
    if l3 >= ETH_HEADER {
        let (d, s) = (ETH_DST, ETH_SRC);
        let mut tmp = [0u8; MAC_LEN];
        tmp.copy_from_slice(bytes(link, d, MAC_LEN)?);
        bytes_mut(frame, d, MAC_LEN)?.copy_from_slice(bytes(link, s, MAC_LEN)?);
        bytes_mut(frame, s, MAC_LEN)?.copy_from_slice(&tmp);
    }
    let icmp = l3 + ip_len;
    bytes_mut(frame, icmp + ICMP_HEADER, quote)?.copy_from_slice(quoted);
    // Reply from the packet's destination to its source.
    let (src, dst) = (meta.dst, meta.src);
    match meta.af {
        Af::V4 => {
            // The reply may be fragmented like any ICMP message: no DF.
            write_v4(frame, l3, 0, false, total as u16, PROTO_ICMP, src, dst)?;
            let h = bytes_mut(frame, icmp, ICMP_HEADER)?;
            h.fill(0);
            match kind {
                IcmpError::TooBig { mtu } => {
                    h[ICMP_TYPE] = ICMP_DEST_UNREACH;
                    h[ICMP_CODE] = ICMP_FRAG_NEEDED;
                    write16(frame, icmp + ICMP_MTU_V4, mtu)?;
                }
                IcmpError::TimeExceeded => h[ICMP_TYPE] = ICMP_TIME_EXCEEDED,
            }
            let c = checksum(bytes(frame, icmp, ICMP_HEADER + quote)?);
            write16(frame, icmp + ICMP_CHECKSUM, c)?;
        }
        Af::V6 => {
            let plen = (ICMP_HEADER + quote) as u16;
            write_v6(frame, l3, 0, 0, plen, PROTO_ICMPV6, src, dst)?;
            let h = bytes_mut(frame, icmp, ICMP_HEADER)?;
            h.fill(0);
            match kind {
                IcmpError::TooBig { mtu } => {
                    h[ICMP_TYPE] = ICMPV6_PACKET_TOO_BIG;
                    h[ICMP_MTU_V6..].copy_from_slice(&u32::from(mtu).to_be_bytes());
                }
                IcmpError::TimeExceeded => h[ICMP_TYPE] = ICMPV6_TIME_EXCEEDED,
            }
            let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
                return Err(Error::AfMismatch);
            };
            let acc = pseudo_v6(s, d, PROTO_ICMPV6, u32::from(plen));
            let c = fold(sum(bytes(frame, icmp, ICMP_HEADER + quote)?, acc));
            write16(frame, icmp + ICMP_CHECKSUM, c)?;
        }
    }
    Ok(l3 + total)
}
