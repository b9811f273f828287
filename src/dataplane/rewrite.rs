//! In-place packet rewrites for the L4 data plane: NAT (destination to a backend, source back
//! to the VIP), DSR by MAC rewrite, and ICMP errors that follow a NAT'ed flow.
//!
//! ```text
//!  Ethernet (14 B + 4 per VLAN tag)         IPv4 (20..60 B)              IPv6 (40 B + ext)
//!  +--------+--------+----//---+------+     0  ver/ihl tos total_len     0  ver/tc/flow label
//!  | dst 6  | src 6  | tags    | type |     4  id  flags/frag           4  payload_len nh hlim
//!  +--------+--------+----//---+------+     8  ttl proto CHECKSUM        8  src (16)
//!  0        6        12       l3-2   l3     12 src   16 dst              24 dst (16)
//!
//!  TCP: 0 sport 2 dport ... 16 CHECKSUM     UDP: 0 sport 2 dport 4 len 6 CHECKSUM
//!  ICMP/ICMPv6: 0 type 1 code 2 CHECKSUM 4 rest 8 quoted IP header + >= 8 B of its payload
//! ```
//!
//! Checksums are updated incrementally (RFC 1624 eqn. 3, `wire::checksum`), never recomputed
//! over the payload: the IPv4 header checksum for address changes; the TCP/UDP checksum for
//! the pseudo-header (RFC 768, RFC 793, RFC 8200 §8.1) and port changes; an IPv4 UDP checksum
//! of 0 means "none" and stays 0, and a UDP result of 0 is sent as 0xffff; an IPv6 UDP
//! packet with checksum 0 is invalid (RFC 8200 §8.1) and refused. ICMPv6's checksum covers a
//! pseudo-header, ICMPv4's does not.
//!
//! ICMP errors about a flow are translated the way pf does (`pf.c` `pf_test_state_icmp`,
//! `pf_change_icmp`): the quoted packet's address and port are changed, its IPv4 header
//! checksum and its UDP checksum fixed, the outer address changed, and the ICMP checksum fixed
//! for every byte changed inside the message. Unlike pf, which copies only 8 bytes of a quoted
//! TCP header, the quoted TCP checksum is fixed too when the quote contains it.
//!
//! The frame is trusted only as far as the classifier validated it (`Meta`); every access
//! here is still a checked slice, so a wrong `Meta` yields [`Error::Truncated`], never a panic.

use std::net::IpAddr;

use crate::wire::checksum::{udp_nonzero, update_bytes};
use crate::wire::classify::{Af, Frag, Meta};

crate::named_counters! {
    /// Why a rewrite or encapsulation was refused; one per-core counter each.
    pub enum Error {
        Truncated = "drop_rewrite_truncated",
        NotIp = "drop_rewrite_not_ip",
        AfMismatch = "drop_rewrite_af_mismatch",
        NoQuoted = "drop_rewrite_no_quoted",
        Ipv6UdpZeroChecksum = "drop_rewrite_ipv6_udp_zero_checksum",
        NoEthernet = "drop_rewrite_no_ethernet",
        NoHeadroom = "drop_encap_no_headroom",
        TooBig = "drop_encap_too_big",
        NoRoom = "drop_icmp_reply_no_room",
        /// Never answer an ICMP error with an ICMP error (RFC 1122 §3.2.2, RFC 4443 §2.4(e)).
        AboutIcmpError = "drop_icmp_reply_about_icmp_error",
        /// Never send an ICMP error to a source that is not one host's address: multicast,
        /// broadcast, unspecified (RFC 1122 §3.2.2, RFC 4443 §2.4(e)).
        NotUnicastSource = "drop_icmp_reply_not_unicast_source",
        /// A TTL / hop limit of 0 or 1 cannot be decremented for forwarding.
        TtlExpired = "drop_rewrite_ttl_expired",
    }
}

pub const ETH_DST: usize = 0;
pub const ETH_SRC: usize = 6;
pub const ETH_HEADER: usize = 14;
pub const MAC_LEN: usize = 6;

pub const V4_VER_IHL: usize = 0;
pub const V4_TOS: usize = 1;
pub const V4_TOTAL_LEN: usize = 2;
pub const V4_FLAGS: usize = 6;
pub const V4_TTL: usize = 8;
pub const V4_PROTO: usize = 9;
pub const V4_CHECKSUM: usize = 10;
pub const V4_SRC: usize = 12;
pub const V4_DST: usize = 16;
pub const V4_HEADER: usize = 20;

pub const V6_VER_TC_FLOW: usize = 0;
pub const V6_PAYLOAD_LEN: usize = 4;
pub const V6_NEXT: usize = 6;
pub const V6_HOP_LIMIT: usize = 7;
pub const V6_SRC: usize = 8;
pub const V6_DST: usize = 24;
pub const V6_HEADER: usize = 40;

pub const L4_SPORT: usize = 0;
pub const L4_DPORT: usize = 2;
pub const TCP_CHECKSUM: usize = 16;
pub const UDP_LEN: usize = 4;
pub const UDP_CHECKSUM: usize = 6;
pub const UDP_HEADER: usize = 8;
pub const ICMP_TYPE: usize = 0;
pub const ICMP_CODE: usize = 1;
pub const ICMP_CHECKSUM: usize = 2;
/// ICMP/ICMPv6 error header: type, code, checksum, 4 bytes (unused / MTU / pointer).
pub const ICMP_HEADER: usize = 8;

/// Bytes of the quoted transport header an ICMP error carries at least (RFC 792: "the
/// internet header plus the first 64 bits of the original datagram's data").
pub const QUOTED_L4_MIN: usize = 8;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Ethernet addresses to write: `dst` (backend or next hop) and `src` (our interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Macs {
    pub dst: [u8; 6],
    pub src: [u8; 6],
}

/// Which end of a packet or of its quoted packet is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SumKind {
    Plain,
    /// UDP: 0 means "no checksum" (IPv4) and a result of 0 is sent as 0xffff.
    Udp,
}

/// A checksum field at an offset in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sum {
    at: usize,
    kind: SumKind,
}

#[inline]
pub(crate) fn bytes(frame: &[u8], off: usize, len: usize) -> Result<&[u8], Error> {
    frame
        .get(off..off.checked_add(len).ok_or(Error::Truncated)?)
        .ok_or(Error::Truncated)
}

#[inline]
pub(crate) fn bytes_mut(frame: &mut [u8], off: usize, len: usize) -> Result<&mut [u8], Error> {
    frame
        .get_mut(off..off.checked_add(len).ok_or(Error::Truncated)?)
        .ok_or(Error::Truncated)
}

#[inline]
pub(crate) fn read16(frame: &[u8], off: usize) -> Result<u16, Error> {
    let b = bytes(frame, off, 2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

#[inline]
pub(crate) fn write16(frame: &mut [u8], off: usize, v: u16) -> Result<(), Error> {
    bytes_mut(frame, off, 2)?.copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Folds the change `old` → `new` into the checksum `s`; returns (old, new) checksum values,
/// or None when the checksum is absent (IPv4 UDP 0) and was left alone.
#[inline]
fn fold_into(
    frame: &mut [u8],
    s: Sum,
    old: &[u8],
    new: &[u8],
) -> Result<Option<(u16, u16)>, Error> {
    let c = read16(frame, s.at)?;
    if s.kind == SumKind::Udp && c == 0 {
        return Ok(None);
    }
    let mut n = update_bytes(c, old, new);
    if s.kind == SumKind::Udp {
        n = udp_nonzero(n);
    }
    write16(frame, s.at, n)?;
    Ok(Some((c, n)))
}

/// Writes `new` (an even number of bytes) at `off` and updates every checksum in `direct`
/// for the change. If `outer` is given (an enclosing ICMP checksum whose region contains the
/// field and the `direct` checksums), it is updated for the field and for each changed
/// checksum as well. Generic over the field size so each use compiles to fixed-size loads,
/// stores and an unrolled RFC 1624 update (no memcpy/memcmp calls on the hot path).
#[inline]
fn patch<const N: usize>(
    frame: &mut [u8],
    off: usize,
    new: &[u8; N],
    direct: &[Sum],
    outer: Option<Sum>,
) -> Result<(), Error> {
    let field = bytes_mut(frame, off, N)?;
    let mut old = [0u8; N];
    old.copy_from_slice(field);
    if old == *new {
        return Ok(());
    }
    field.copy_from_slice(new);
    for &s in direct {
        if let Some((c, nc)) = fold_into(frame, s, &old, new)?
            && let Some(o) = outer
        {
            fold_into(frame, o, &c.to_be_bytes(), &nc.to_be_bytes())?;
        }
    }
    if let Some(o) = outer {
        fold_into(frame, o, &old, new)?;
    }
    Ok(())
}

/// [`patch`] for an address of either family.
#[inline]
fn patch_addr(
    frame: &mut [u8],
    off: usize,
    addr: IpAddr,
    direct: &[Sum],
    outer: Option<Sum>,
) -> Result<(), Error> {
    match addr {
        IpAddr::V4(a) => patch(frame, off, &a.octets(), direct, outer),
        IpAddr::V6(a) => patch(frame, off, &a.octets(), direct, outer),
    }
}

fn af_of(a: IpAddr) -> Af {
    match a {
        IpAddr::V4(_) => Af::V4,
        IpAddr::V6(_) => Af::V6,
    }
}

/// Offset of the address field of `side` in an IP header at `l3`.
#[inline]
fn addr_off(af: Af, l3: usize, side: Side) -> usize {
    match (af, side) {
        (Af::V4, Side::Src) => l3 + V4_SRC,
        (Af::V4, Side::Dst) => l3 + V4_DST,
        (Af::V6, Side::Src) => l3 + V6_SRC,
        (Af::V6, Side::Dst) => l3 + V6_DST,
    }
}

/// The transport checksum of a packet whose transport header is at `l4` and whose bytes end
/// at `end`, if it is present there. `Err` for an IPv6 UDP zero checksum.
fn l4_sum(frame: &[u8], af: Af, proto: u8, l4: usize, end: usize) -> Result<Option<Sum>, Error> {
    let (at, kind) = match proto {
        PROTO_TCP => (l4 + TCP_CHECKSUM, SumKind::Plain),
        PROTO_UDP => (l4 + UDP_CHECKSUM, SumKind::Udp),
        PROTO_ICMPV6 if af == Af::V6 => (l4 + ICMP_CHECKSUM, SumKind::Plain),
        _ => return Ok(None),
    };
    if at + 2 > end {
        return Ok(None);
    }
    if proto == PROTO_UDP && af == Af::V6 && read16(frame, at)? == 0 {
        return Err(Error::Ipv6UdpZeroChecksum);
    }
    Ok(Some(Sum { at, kind }))
}

/// Does the address change of a packet affect its transport checksum (pseudo-header)?
fn pseudo_covered(af: Af, proto: u8) -> bool {
    matches!(proto, PROTO_TCP | PROTO_UDP) || (af == Af::V6 && proto == PROTO_ICMPV6)
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, PROTO_TCP | PROTO_UDP)
}

/// Sets the Ethernet destination and source addresses (DSR's whole rewrite, and the last
/// step of the others). Frames without an Ethernet header (`l3 < 14`) are refused.
#[inline]
pub fn set_macs(frame: &mut [u8], meta: &Meta, macs: &Macs) -> Result<(), Error> {
    if usize::from(meta.l3) < ETH_HEADER {
        return Err(Error::NoEthernet);
    }
    bytes_mut(frame, ETH_DST, MAC_LEN)?.copy_from_slice(&macs.dst);
    bytes_mut(frame, ETH_SRC, MAC_LEN)?.copy_from_slice(&macs.src);
    Ok(())
}

/// Direct server return by MAC rewrite: the IP packet is untouched, the frame goes to the
/// backend's MAC (the backend owns the VIP on a loopback interface).
#[inline]
pub fn dsr(frame: &mut [u8], meta: &Meta, macs: &Macs) -> Result<(), Error> {
    set_macs(frame, meta, macs)
}

/// Decrements the IPv4 TTL (updating the header checksum: TTL and protocol form one 16-bit
/// word, RFC 1624) or the IPv6 hop limit of a packet the data plane forwards as a router
/// does (NAT: pf's rdr sends it through `ip_forward`, RFC 1812 §5.3.1). A TTL of 0 or 1 is
/// refused ([`Error::TtlExpired`]); the caller answers or drops such packets before this.
#[inline]
pub fn decrement_ttl(frame: &mut [u8], meta: &Meta) -> Result<(), Error> {
    let l3 = usize::from(meta.l3);
    match meta.af {
        Af::V4 => {
            let at = l3 + V4_TTL;
            let ttl = *bytes(frame, at, 1)?.first().ok_or(Error::Truncated)?;
            if ttl <= 1 {
                return Err(Error::TtlExpired);
            }
            let c = read16(frame, l3 + V4_CHECKSUM)?;
            // RFC 1624 eqn. 3 for the (TTL, protocol) word going down by 0x0100:
            // HC' = ~(~HC + ~m + m'), and ~m + m' is -0x0100, i.e. 0xfeff in one's complement.
            // (The generic `patch` path cost ~15 ns a packet more on the NAT return path.)
            let mut acc = u32::from(!c) + 0xfeff;
            acc = (acc & 0xffff) + (acc >> 16);
            acc = (acc & 0xffff) + (acc >> 16);
            write16(frame, l3 + V4_CHECKSUM, !(acc as u16))?;
            if let Some(b) = frame.get_mut(at) {
                *b = ttl - 1;
            }
            Ok(())
        }
        Af::V6 => {
            let b = bytes_mut(frame, l3 + V6_HOP_LIMIT, 1)?;
            if b[0] <= 1 {
                return Err(Error::TtlExpired);
            }
            b[0] -= 1;
            Ok(())
        }
    }
}

/// Rewrites one end (address and, for TCP/UDP, port) of a packet, with its checksums.
fn rewrite_end(
    frame: &mut [u8],
    meta: &Meta,
    side: Side,
    addr: IpAddr,
    port: u16,
) -> Result<(), Error> {
    if meta.proto == 0 {
        return Err(Error::NotIp);
    }
    if af_of(addr) != meta.af {
        return Err(Error::AfMismatch);
    }
    let l3 = usize::from(meta.l3);
    let l4 = usize::from(meta.l4);
    let end = usize::from(meta.end);
    // Check the extent once, so a refused frame is never half rewritten.
    if end > frame.len() || l3 >= l4 || l4 > end {
        return Err(Error::Truncated);
    }
    let transport = meta.frag != Frag::Later && l4 < end;
    let l4s = if transport {
        l4_sum(frame, meta.af, meta.proto, l4, end)?
    } else {
        None
    };
    let mut sums = [Sum {
        at: 0,
        kind: SumKind::Plain,
    }; 2];
    let mut k = 0;
    if meta.af == Af::V4 {
        sums[k] = Sum {
            at: l3 + V4_CHECKSUM,
            kind: SumKind::Plain,
        };
        k += 1;
    }
    if let Some(s) = l4s
        && pseudo_covered(meta.af, meta.proto)
    {
        sums[k] = s;
        k += 1;
    }
    patch_addr(frame, addr_off(meta.af, l3, side), addr, &sums[..k], None)?;
    if transport && has_ports(meta.proto) {
        let off = l4
            + if side == Side::Src {
                L4_SPORT
            } else {
                L4_DPORT
            };
        let direct: &[Sum] = match &l4s {
            Some(s) => std::slice::from_ref(s),
            None => &[],
        };
        patch(frame, off, &port.to_be_bytes(), direct, None)?;
    }
    Ok(())
}

/// NAT, inbound: client → VIP:port becomes client → `backend`:`backend_port`, and the frame
/// is addressed to `macs` if given. For ICMP (echo) the port is ignored.
pub fn nat_to_backend(
    frame: &mut [u8],
    meta: &Meta,
    backend: IpAddr,
    backend_port: u16,
    macs: Option<&Macs>,
) -> Result<(), Error> {
    rewrite_end(frame, meta, Side::Dst, backend, backend_port)?;
    match macs {
        Some(m) => set_macs(frame, meta, m),
        None => Ok(()),
    }
}

/// NAT, return path: backend:port → client becomes VIP:`vip_port` → client.
pub fn nat_to_client(
    frame: &mut [u8],
    meta: &Meta,
    vip: IpAddr,
    vip_port: u16,
    macs: Option<&Macs>,
) -> Result<(), Error> {
    rewrite_end(frame, meta, Side::Src, vip, vip_port)?;
    match macs {
        Some(m) => set_macs(frame, meta, m),
        None => Ok(()),
    }
}

/// Translates an ICMP error about a NAT'ed flow: the quoted packet's `inner` end becomes
/// `addr`:`port`, and the outer header's `outer` end becomes `addr` when `outer_too`.
fn icmp_error(
    frame: &mut [u8],
    meta: &Meta,
    inner: Side,
    outer: Side,
    outer_too: bool,
    addr: IpAddr,
    port: u16,
) -> Result<(), Error> {
    let q = meta.quoted.ok_or(Error::NoQuoted)?;
    if af_of(addr) != meta.af || af_of(q.src) != meta.af {
        return Err(Error::AfMismatch);
    }
    let l3 = usize::from(meta.l3);
    let l4 = usize::from(meta.l4);
    let end = usize::from(meta.end);
    let (ql3, ql4) = (usize::from(q.l3), usize::from(q.l4));
    // The quoted transport header's first 8 bytes (ports, UDP checksum) must be there.
    if end > frame.len()
        || l3 >= l4
        || l4 + ICMP_HEADER > ql3
        || ql3 >= ql4
        || ql4 + QUOTED_L4_MIN > end
    {
        return Err(Error::Truncated);
    }
    let icmp = Sum {
        at: l4 + ICMP_CHECKSUM,
        kind: SumKind::Plain,
    };
    // Quoted packet: everything changed here lies inside the ICMP message.
    let qsum = match q.proto {
        PROTO_TCP => Some(Sum {
            at: ql4 + TCP_CHECKSUM,
            kind: SumKind::Plain,
        }),
        // A quoted IPv6 UDP zero checksum is the sender's problem; leave it (Udp kind skips 0).
        PROTO_UDP => Some(Sum {
            at: ql4 + UDP_CHECKSUM,
            kind: SumKind::Udp,
        }),
        PROTO_ICMPV6 if meta.af == Af::V6 => Some(Sum {
            at: ql4 + ICMP_CHECKSUM,
            kind: SumKind::Plain,
        }),
        _ => None,
    }
    .filter(|s| s.at + 2 <= end);
    let mut sums = [icmp; 2];
    let mut k = 0;
    if meta.af == Af::V4 {
        sums[k] = Sum {
            at: ql3 + V4_CHECKSUM,
            kind: SumKind::Plain,
        };
        k += 1;
    }
    if let Some(s) = qsum
        && pseudo_covered(meta.af, q.proto)
    {
        sums[k] = s;
        k += 1;
    }
    patch_addr(
        frame,
        addr_off(meta.af, ql3, inner),
        addr,
        &sums[..k],
        Some(icmp),
    )?;
    if has_ports(q.proto) {
        let off = ql4
            + if inner == Side::Src {
                L4_SPORT
            } else {
                L4_DPORT
            };
        let direct: &[Sum] = match &qsum {
            Some(s) => std::slice::from_ref(s),
            None => &[],
        };
        patch(frame, off, &port.to_be_bytes(), direct, Some(icmp))?;
    }
    if outer_too {
        // The outer address is covered by the IPv4 header checksum, or by ICMPv6's
        // pseudo-header (RFC 4443 §2.3); ICMPv4's checksum does not cover it.
        let sum = match meta.af {
            Af::V4 => Sum {
                at: l3 + V4_CHECKSUM,
                kind: SumKind::Plain,
            },
            Af::V6 => icmp,
        };
        patch_addr(frame, addr_off(meta.af, l3, outer), addr, &[sum], None)?;
    }
    Ok(())
}

/// An ICMP error from the client's side about a packet the VIP sent (quoted: VIP:port →
/// client), e.g. "fragmentation needed" for a reply: the error goes to the backend, with the
/// quoted source and the outer destination rewritten to `backend`:`backend_port`.
pub fn nat_icmp_to_backend(
    frame: &mut [u8],
    meta: &Meta,
    backend: IpAddr,
    backend_port: u16,
    macs: Option<&Macs>,
) -> Result<(), Error> {
    icmp_error(
        frame,
        meta,
        Side::Src,
        Side::Dst,
        true,
        backend,
        backend_port,
    )?;
    match macs {
        Some(m) => set_macs(frame, meta, m),
        None => Ok(()),
    }
}

/// An ICMP error from the backend's side about a packet the client sent (quoted: client →
/// backend:port), e.g. "port unreachable": the quoted destination becomes `vip`:`vip_port`,
/// and the outer source too when the backend itself sent the error (a router between us and
/// the backend keeps its own address, as pf leaves it).
pub fn nat_icmp_to_client(
    frame: &mut [u8],
    meta: &Meta,
    vip: IpAddr,
    vip_port: u16,
    macs: Option<&Macs>,
) -> Result<(), Error> {
    let q = meta.quoted.ok_or(Error::NoQuoted)?;
    let from_backend = meta.src == q.dst;
    icmp_error(
        frame,
        meta,
        Side::Dst,
        Side::Src,
        from_backend,
        vip,
        vip_port,
    )?;
    match macs {
        Some(m) => set_macs(frame, meta, m),
        None => Ok(()),
    }
}
