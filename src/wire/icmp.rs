//! ICMP for IPv4 (RFC 792, RFC 1191 for the next-hop MTU), with the packet quoted in errors.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+-------------------------------+
//! |     Type      |     Code      |           Checksum            |  0
//! +---------------+---------------+-------------------------------+
//! |  rest of header: echo: Identifier | Sequence Number           |  4
//! |                  unreachable: unused | Next-Hop MTU            |
//! |                  param problem: Pointer | unused               |
//! +---------------------------------------------------------------+
//! |  data: echo payload, or for errors the quoted packet:         |  8
//! |  original IP header + at least its first 8 payload bytes      |
//! +---------------------------------------------------------------+
//! ```
//!
//! Type, code and checksum go through `pnet_packet`'s `IcmpPacket` view; the rest-of-header
//! word is read at [`REST_OFFSET`] and split per type. Parsing never panics: each reject is a
//! named [`Error`].

use std::net::IpAddr;

use pnet_packet::icmp::{IcmpCode, IcmpPacket, IcmpType, MutableIcmpPacket};
use pnet_packet::udp::UdpPacket;

use super::{Error, checksum, ipv4, proto};

pub const HEADER_LEN: usize = 8;
/// Offset of the 32-bit rest-of-header word.
pub const REST_OFFSET: usize = 4;
/// Bytes of the quoted transport header an error must carry (RFC 792: "the first 64 bits of
/// the original data datagram"; OpenBSD `netinet/ip_icmp.c` `icmp_input` drops shorter ones as
/// `icps_badlen` via ICMP_ADVLENMIN).
pub const QUOTED_L4_LEN: usize = 8;

pub const ECHO_REPLY: u8 = 0;
pub const DST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAM_PROBLEM: u8 = 12;

/// An ICMP message by type, with the fields of its rest-of-header word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message {
    EchoRequest {
        ident: u16,
        seq: u16,
    },
    EchoReply {
        ident: u16,
        seq: u16,
    },
    /// RFC 792 type 3; `next_hop_mtu` is RFC 1191's for code 4 (fragmentation needed).
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
    },
    TimeExceeded {
        code: u8,
    },
    ParamProblem {
        code: u8,
        pointer: u8,
    },
    /// Any other type, kept whole.
    Other {
        icmp_type: u8,
        code: u8,
        rest: u32,
    },
}

impl Message {
    fn from_parts(t: u8, code: u8, rest: u32) -> Message {
        let hi = (rest >> 16) as u16;
        let lo = rest as u16;
        match t {
            ECHO_REQUEST if code == 0 => Message::EchoRequest { ident: hi, seq: lo },
            ECHO_REPLY if code == 0 => Message::EchoReply { ident: hi, seq: lo },
            DST_UNREACHABLE if hi == 0 => Message::DstUnreachable {
                code,
                next_hop_mtu: lo,
            },
            TIME_EXCEEDED if rest == 0 => Message::TimeExceeded { code },
            PARAM_PROBLEM if rest & 0x00ff_ffff == 0 => Message::ParamProblem {
                code,
                pointer: (rest >> 24) as u8,
            },
            _ => Message::Other {
                icmp_type: t,
                code,
                rest,
            },
        }
    }

    /// Type, code and rest-of-header word as on the wire.
    pub fn to_parts(&self) -> (u8, u8, u32) {
        let w = |hi: u16, lo: u16| (u32::from(hi) << 16) | u32::from(lo);
        match *self {
            Message::EchoRequest { ident, seq } => (ECHO_REQUEST, 0, w(ident, seq)),
            Message::EchoReply { ident, seq } => (ECHO_REPLY, 0, w(ident, seq)),
            Message::DstUnreachable { code, next_hop_mtu } => {
                (DST_UNREACHABLE, code, w(0, next_hop_mtu))
            }
            Message::TimeExceeded { code } => (TIME_EXCEEDED, code, 0),
            Message::ParamProblem { code, pointer } => {
                (PARAM_PROBLEM, code, u32::from(pointer) << 24)
            }
            Message::Other {
                icmp_type,
                code,
                rest,
            } => (icmp_type, code, rest),
        }
    }

    /// Whether the message is an error that quotes the packet that caused it.
    pub fn is_error(&self) -> bool {
        is_error(self.to_parts().0)
    }
}

/// Error types whose data is the offending packet (RFC 792).
#[inline]
pub fn is_error(icmp_type: u8) -> bool {
    matches!(icmp_type, DST_UNREACHABLE | TIME_EXCEEDED | PARAM_PROBLEM)
}

/// A validated ICMP message over the data it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr<'a> {
    pub message: Message,
    /// Echo payload or quoted packet.
    pub data: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parses `buf`, the whole ICMP message (the IP payload, exactly), checksum included.
    pub fn parse(buf: &'a [u8]) -> Result<Repr<'a>, Error> {
        let icmp = IcmpPacket::new(buf).ok_or(Error::Truncated)?;
        let rest = buf
            .get(REST_OFFSET..HEADER_LEN)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or(Error::Truncated)?;
        if checksum::checksum(buf) != 0 {
            return Err(Error::BadChecksum);
        }
        Ok(Repr {
            message: Message::from_parts(
                icmp.get_icmp_type().0,
                icmp.get_icmp_code().0,
                u32::from_be_bytes(rest),
            ),
            data: buf.get(HEADER_LEN..).unwrap_or(&[]),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// Writes header and data into `buf` and computes the checksum over both.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let msg = buf
            .get_mut(..self.buffer_len())
            .ok_or(Error::BufferTooSmall)?;
        let (t, code, rest) = self.message.to_parts();
        super::put(
            msg.get_mut(REST_OFFSET..).ok_or(Error::BufferTooSmall)?,
            &rest.to_be_bytes(),
        )?;
        super::put(
            msg.get_mut(HEADER_LEN..).ok_or(Error::BufferTooSmall)?,
            self.data,
        )?;
        let mut icmp = MutableIcmpPacket::new(msg).ok_or(Error::BufferTooSmall)?;
        icmp.set_icmp_type(IcmpType(t));
        icmp.set_icmp_code(IcmpCode(code));
        icmp.set_checksum(0);
        let c = checksum::checksum(msg);
        let mut icmp = MutableIcmpPacket::new(msg).ok_or(Error::BufferTooSmall)?;
        icmp.set_checksum(c);
        Ok(())
    }

    /// For an error, the flow of the quoted packet.
    pub fn quoted(&self) -> Option<Result<Quote, Error>> {
        self.message.is_error().then(|| quoted(self.data))
    }
}

/// The flow of a packet quoted in an ICMP or ICMPv6 error, as its sender sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quote {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Offset of the quoted transport header within the quoted data.
    pub l4: usize,
    /// TCP/UDP ports, or an echo identifier in both; 0 when absent (a later fragment, other
    /// protocols).
    pub sport: u16,
    pub dport: u16,
}

/// Parses the IPv4 packet quoted in an ICMP error: its header (checksum and total length not
/// checked, the quote is a prefix) and the 8 transport bytes RFC 792 guarantees.
pub fn quoted(data: &[u8]) -> Result<Quote, Error> {
    let ip = ipv4::Repr::parse_header(data)?;
    let l4 = ip.header_len();
    let l4_bytes = data.get(l4..).ok_or(Error::Truncated)?;
    if l4_bytes.len() < QUOTED_L4_LEN {
        return Err(Error::Truncated);
    }
    let (sport, dport) = if ip.frag.offset != 0 {
        (0, 0)
    } else {
        flow_ports(ip.proto, l4_bytes, ECHO_REQUEST, ECHO_REPLY)
    };
    Ok(Quote {
        proto: ip.proto,
        src: ip.src.into(),
        dst: ip.dst.into(),
        l4,
        sport,
        dport,
    })
}

/// Ports of a TCP/UDP header, or the identifier of an echo of the given types, from at least
/// the first 8 bytes of a transport header; (0, 0) otherwise. TCP and UDP share the layout of
/// their first 4 bytes, so the 8-byte `UdpPacket` view reads both (a quote holds only 8).
#[inline]
pub(crate) fn flow_ports(p: u8, l4: &[u8], echo_req: u8, echo_rep: u8) -> (u16, u16) {
    match p {
        proto::TCP | proto::UDP => {
            UdpPacket::new(l4).map_or((0, 0), |u| (u.get_source(), u.get_destination()))
        }
        proto::ICMP | proto::ICMPV6 => match (l4.first(), IcmpPacket::new(l4)) {
            (Some(&t), Some(_)) if t == echo_req || t == echo_rep => {
                let id = echo_ident(l4);
                (id, id)
            }
            _ => (0, 0),
        },
        _ => (0, 0),
    }
}

/// Identifier of an echo request/reply (same place in ICMP and ICMPv6, RFC 792, RFC 4443 §4).
#[inline]
pub(crate) fn echo_ident(l4: &[u8]) -> u16 {
    l4.get(REST_OFFSET..REST_OFFSET + 2)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map_or(0, u16::from_be_bytes)
}
