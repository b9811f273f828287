//! ICMPv6 (RFC 4443), with the packet quoted in error messages.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+-------------------------------+
//! |     Type      |     Code      |           Checksum            |  0
//! +---------------+---------------+-------------------------------+
//! |  rest of header: echo: Identifier | Sequence Number           |  4
//! |                  packet too big: MTU                          |
//! |                  param problem: Pointer                       |
//! +---------------------------------------------------------------+
//! |  data: echo payload, or for errors as much of the invoking    |  8
//! |  packet as fits in the minimum MTU (RFC 4443 §2.4 (c))        |
//! +---------------------------------------------------------------+
//! ```
//!
//! The checksum covers the IPv6 pseudo-header (RFC 4443 §2.3). Type, code and checksum go
//! through `pnet_packet`'s `Icmpv6Packet` view; the rest-of-header word is read at
//! [`REST_OFFSET`]. Parsing never panics: each reject is a named [`Error`].

use std::net::Ipv6Addr;

use pnet_packet::icmpv6::{Icmpv6Code, Icmpv6Packet, Icmpv6Type, MutableIcmpv6Packet};

use super::icmp::{QUOTED_L4_LEN, Quote, flow_ports};
use super::{Addrs, Error, checksum, ipv6, proto};

pub const HEADER_LEN: usize = 8;
/// Offset of the 32-bit rest-of-header word.
pub const REST_OFFSET: usize = 4;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 2;

pub const DST_UNREACHABLE: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const PARAM_PROBLEM: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;

/// An ICMPv6 message by type, with the fields of its rest-of-header word.
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
    DstUnreachable {
        code: u8,
    },
    PacketTooBig {
        mtu: u32,
    },
    TimeExceeded {
        code: u8,
    },
    ParamProblem {
        code: u8,
        pointer: u32,
    },
    /// Any other type (neighbour discovery, MLD, ...), kept whole.
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
            DST_UNREACHABLE if rest == 0 => Message::DstUnreachable { code },
            PACKET_TOO_BIG if code == 0 => Message::PacketTooBig { mtu: rest },
            TIME_EXCEEDED if rest == 0 => Message::TimeExceeded { code },
            PARAM_PROBLEM => Message::ParamProblem {
                code,
                pointer: rest,
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
            Message::DstUnreachable { code } => (DST_UNREACHABLE, code, 0),
            Message::PacketTooBig { mtu } => (PACKET_TOO_BIG, 0, mtu),
            Message::TimeExceeded { code } => (TIME_EXCEEDED, code, 0),
            Message::ParamProblem { code, pointer } => (PARAM_PROBLEM, code, pointer),
            Message::Other {
                icmp_type,
                code,
                rest,
            } => (icmp_type, code, rest),
        }
    }

    pub fn is_error(&self) -> bool {
        is_error(self.to_parts().0)
    }
}

/// Error types whose data is the invoking packet (RFC 4443 §3).
#[inline]
pub fn is_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        DST_UNREACHABLE | PACKET_TOO_BIG | TIME_EXCEEDED | PARAM_PROBLEM
    )
}

/// A validated ICMPv6 message over the data it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr<'a> {
    pub message: Message,
    pub data: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parses `buf`, the whole message (the upper-layer payload, exactly), and verifies its
    /// checksum with the pseudo-header of `src` and `dst`.
    pub fn parse(buf: &'a [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<Repr<'a>, Error> {
        let icmp = Icmpv6Packet::new(buf).ok_or(Error::Truncated)?;
        let rest = buf
            .get(REST_OFFSET..HEADER_LEN)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or(Error::Truncated)?;
        if checksum::transport(&Addrs::V6(src, dst), proto::ICMPV6, buf) != 0 {
            return Err(Error::BadChecksum);
        }
        Ok(Repr {
            message: Message::from_parts(
                icmp.get_icmpv6_type().0,
                icmp.get_icmpv6_code().0,
                u32::from_be_bytes(rest),
            ),
            data: buf.get(HEADER_LEN..).unwrap_or(&[]),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// Writes header and data into `buf` and computes the checksum with the pseudo-header.
    pub fn emit(&self, buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<(), Error> {
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
        let mut icmp = MutableIcmpv6Packet::new(msg).ok_or(Error::BufferTooSmall)?;
        icmp.set_icmpv6_type(Icmpv6Type(t));
        icmp.set_icmpv6_code(Icmpv6Code(code));
        icmp.set_checksum(0);
        let c = checksum::transport(&Addrs::V6(src, dst), proto::ICMPV6, msg);
        let mut icmp = MutableIcmpv6Packet::new(msg).ok_or(Error::BufferTooSmall)?;
        icmp.set_checksum(c);
        Ok(())
    }

    /// For an error, the flow of the quoted packet.
    pub fn quoted(&self) -> Option<Result<Quote, Error>> {
        self.message.is_error().then(|| quoted(self.data))
    }
}

/// Parses the IPv6 packet quoted in an ICMPv6 error: its fixed header, the extension headers
/// present in the quote, and 8 bytes of the transport header.
pub fn quoted(data: &[u8]) -> Result<Quote, Error> {
    let ip = ipv6::Repr::parse_header(data)?;
    let after = data.get(ipv6::HEADER_LEN..).ok_or(Error::Truncated)?;
    let walk = ipv6::walk(ip.next_header, after)?;
    let l4 = ipv6::HEADER_LEN + walk.offset;
    let l4_bytes = data.get(l4..).ok_or(Error::Truncated)?;
    if l4_bytes.len() < QUOTED_L4_LEN {
        return Err(Error::Truncated);
    }
    let later = walk.fragment.is_some_and(|f| f.offset != 0);
    let (sport, dport) = if later {
        (0, 0)
    } else {
        flow_ports(walk.proto, l4_bytes, ECHO_REQUEST, ECHO_REPLY)
    };
    Ok(Quote {
        proto: walk.proto,
        src: ip.src.into(),
        dst: ip.dst.into(),
        l4,
        sport,
        dport,
    })
}
