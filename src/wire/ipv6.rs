//! IPv6 header (RFC 8200) and a walk of its extension headers to the transport header.
//!
//! ```text
//!  0               1               2               3
//! +-------+---------------+---------------------------------------+
//! |Version| Traffic Class |              Flow Label               |  0
//! +-------+---------------+---------------+-----------------------+
//! |        Payload Length         |  Next Header  |   Hop Limit   |  4
//! +-------------------------------+---------------+---------------+
//! |                   Source Address (16 bytes)                   |  8
//! +---------------------------------------------------------------+
//! |                Destination Address (16 bytes)                 | 24
//! +---------------------------------------------------------------+
//!
//! extension headers (hop-by-hop 0, routing 43, destination options 60):
//! | Next Header | Hdr Ext Len (8-octet units, not counting the first 8) | data ...
//! fragment (44), 8 bytes:
//! | Next Header | reserved | Fragment Offset (13 bits) | res | M | Identification (32) |
//! authentication header (51, RFC 4302):
//! | Next Header | Payload Len (4-octet units, minus 2) | reserved | SPI | seq | ICV ...
//! ```
//!
//! Fields are read through `pnet_packet`'s `Ipv6Packet`, `ExtensionPacket` and
//! `FragmentPacket` views. Parsing never panics: each reject is a named [`Error`].

use std::net::Ipv6Addr;

use pnet_packet::ip::IpNextHeaderProtocol;
use pnet_packet::ipv6::{
    ExtensionPacket, FragmentPacket, Ipv6Packet, MutableFragmentPacket, MutableIpv6Packet,
};

use super::{Error, proto};

/// Fixed header length.
pub const HEADER_LEN: usize = 40;
/// Offset of the source address; the destination follows it.
pub const SRC_OFFSET: usize = 8;
pub const DST_OFFSET: usize = 24;
/// Length of the fragment extension header.
pub const FRAGMENT_LEN: usize = 8;
/// Extension headers walked before giving up: generous for real traffic (RFC 8200 §4.1
/// recommends an order with at most one of each, two destination options), and a bound
/// against a chain built to burn cycles.
pub const MAX_EXTENSIONS: usize = 8;
/// Fragment offset field mask (in bytes, the low 3 bits are flags) and the M flag.
const FRAG_OFFSET_MASK: u16 = 0xfff8;
const FRAG_MORE: u16 = 0x0001;

/// A validated IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// Next header of the fixed header (an extension header or the transport).
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
    /// Bytes after the fixed header, extension headers included.
    pub payload_len: u16,
}

impl Repr {
    /// Parses the fixed header; the payload length must fit in `buf`.
    pub fn parse(buf: &[u8]) -> Result<Repr, Error> {
        let repr = Self::parse_header(buf)?;
        if buf.len() < repr.buffer_len() {
            return Err(Error::Truncated);
        }
        Ok(repr)
    }

    /// Parses the fixed header alone, for the packet quoted in an ICMPv6 error (RFC 4443 §2.4
    /// (c): "as much of invoking packet as possible"), which may be cut short.
    pub fn parse_header(buf: &[u8]) -> Result<Repr, Error> {
        let ip = Ipv6Packet::new(buf).ok_or(Error::Truncated)?;
        if ip.get_version() != 6 {
            return Err(Error::BadVersion);
        }
        Ok(Repr {
            src: ip.get_source(),
            dst: ip.get_destination(),
            next_header: ip.get_next_header().0,
            hop_limit: ip.get_hop_limit(),
            traffic_class: ip.get_traffic_class(),
            flow_label: ip.get_flow_label(),
            payload_len: ip.get_payload_length(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len)
    }

    /// Writes the fixed header to the start of `buf`; the payload is the caller's.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let mut ip = MutableIpv6Packet::new(buf).ok_or(Error::BufferTooSmall)?;
        ip.set_version(6);
        ip.set_traffic_class(self.traffic_class);
        ip.set_flow_label(self.flow_label & 0x000f_ffff);
        ip.set_payload_length(self.payload_len);
        ip.set_next_header(IpNextHeaderProtocol(self.next_header));
        ip.set_hop_limit(self.hop_limit);
        ip.set_source(self.src);
        ip.set_destination(self.dst);
        Ok(())
    }
}

/// The fragment extension header (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    pub next_header: u8,
    /// Offset in 8-byte units.
    pub offset: u16,
    pub more_frags: bool,
    pub ident: u32,
}

impl Fragment {
    pub fn parse(buf: &[u8]) -> Result<Fragment, Error> {
        let f = FragmentPacket::new(buf).ok_or(Error::Truncated)?;
        let word = f.get_fragment_offset_with_flags();
        Ok(Fragment {
            next_header: f.get_next_header().0,
            offset: (word & FRAG_OFFSET_MASK) >> 3,
            more_frags: word & FRAG_MORE != 0,
            ident: f.get_id(),
        })
    }

    /// An atomic fragment (offset 0, no more fragments, RFC 6946) is a whole packet.
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.offset != 0
    }

    pub fn buffer_len(&self) -> usize {
        FRAGMENT_LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let word = ((self.offset << 3) & FRAG_OFFSET_MASK) | u16::from(self.more_frags);
        let mut f = MutableFragmentPacket::new(buf).ok_or(Error::BufferTooSmall)?;
        f.set_next_header(IpNextHeaderProtocol(self.next_header));
        f.set_reserved(0);
        f.set_fragment_offset_with_flags(word);
        f.set_id(self.ident);
        Ok(())
    }
}

/// Where the extension header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Walk {
    /// The upper-layer protocol (or ESP / no-next-header, where the walk stops).
    pub proto: u8,
    /// Offset of the upper-layer header from the start of the walked bytes (the payload).
    pub offset: usize,
    /// The fragment header, when there is one that is not atomic.
    pub fragment: Option<Fragment>,
}

/// Whether `next` is an extension header this walk steps over.
#[inline]
pub fn is_extension(next: u8) -> bool {
    matches!(
        next,
        proto::HOPOPT | proto::ROUTING | proto::FRAGMENT | proto::DSTOPTS | proto::AH
    )
}

/// Walks the extension headers in `payload` (the bytes after the fixed header), starting with
/// next header `first`, to the upper-layer header. A non-first fragment stops the walk at the
/// fragment header: what follows is not a header but the middle of a datagram (RFC 8200 §4.5).
/// ESP (50) stops it too: what follows is encrypted.
pub fn walk(first: u8, payload: &[u8]) -> Result<Walk, Error> {
    let mut next = first;
    let mut off = 0usize;
    let mut fragment = None;
    let mut count = 0;
    while is_extension(next) {
        if count == MAX_EXTENSIONS {
            return Err(Error::TooManyExtensions);
        }
        count += 1;
        let rest = payload.get(off..).ok_or(Error::Truncated)?;
        if next == proto::FRAGMENT {
            let f = Fragment::parse(rest)?;
            off += FRAGMENT_LEN;
            next = f.next_header;
            if f.is_fragment() {
                fragment = Some(f);
                if f.offset != 0 {
                    break;
                }
            }
            continue;
        }
        let ext = ExtensionPacket::new(rest).ok_or(Error::Truncated)?;
        let units = usize::from(ext.get_hdr_ext_len());
        let len = if next == proto::AH {
            // RFC 4302 §2.2: Payload Len is in 32-bit words, minus 2.
            (units + 2) * 4
        } else {
            // RFC 8200 §4.3: Hdr Ext Len is in 8-octet units, not counting the first 8.
            (units + 1) * 8
        };
        if rest.len() < len {
            return Err(Error::Truncated);
        }
        next = ext.get_next_header().0;
        off += len;
    }
    Ok(Walk {
        proto: next,
        offset: off,
        fragment,
    })
}
