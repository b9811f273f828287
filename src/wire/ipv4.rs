//! IPv4 header (RFC 791), options kept, fragments recognised.
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +-------+-------+-----------+---+-------------------------------+
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |  0
//! +-------+-------+-----------+---+-----+-------------------------+
//! |         Identification        |Flags|     Fragment Offset     |  4
//! +---------------+---------------+-----+-------------------------+
//! |      TTL      |   Protocol    |        Header Checksum        |  8
//! +---------------+---------------+-------------------------------+
//! |                        Source Address                         | 12
//! +---------------------------------------------------------------+
//! |                      Destination Address                      | 16
//! +---------------------------------------------------------------+
//! |                Options (0..40 bytes, IHL*4 - 20)              | 20
//! +---------------------------------------------------------------+
//! ```
//!
//! Fields are read and written through `pnet_packet`'s `Ipv4Packet` view. Parsing never panics:
//! each reject is a named [`Error`].

use std::net::Ipv4Addr;

use pnet_packet::ip::IpNextHeaderProtocol;
use pnet_packet::ipv4::{Ipv4Packet, MutableIpv4Packet};

use super::{Error, Options, checksum};

/// Header length without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Offset of the header checksum (zeroed while computing it, RFC 791).
pub const CHECKSUM_OFFSET: usize = 10;
/// Offset of the source address; the destination follows it.
pub const SRC_OFFSET: usize = 12;
pub const DST_OFFSET: usize = 16;
/// Flags (3 bits of the 16-bit word at offset 6).
pub const FLAG_DF: u8 = 0b010;
pub const FLAG_MF: u8 = 0b001;
/// Largest fragment offset plus payload: an IPv4 datagram is at most 65535 bytes.
pub const MAX_DATAGRAM: usize = 65535;

/// Fragment fields of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fragment {
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// Offset in 8-byte units.
    pub offset: u16,
}

impl Fragment {
    /// A fragment at all: not the whole datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.offset != 0
    }
}

/// A validated IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub dscp: u8,
    pub ecn: u8,
    pub frag: Fragment,
    pub options: Options,
    /// Bytes after the header, by the Total Length field.
    pub payload_len: u16,
}

impl Repr {
    /// Parses and validates a header: version, IHL, total length within `buf`, checksum.
    pub fn parse(buf: &[u8]) -> Result<Repr, Error> {
        let repr = Self::parse_header(buf)?;
        let hlen = repr.header_len();
        let total = hlen + usize::from(repr.payload_len);
        if buf.len() < total {
            return Err(Error::Truncated);
        }
        if checksum::checksum(buf.get(..hlen).ok_or(Error::Truncated)?) != 0 {
            return Err(Error::BadChecksum);
        }
        Ok(repr)
    }

    /// Parses a header without requiring its payload nor checking its checksum: for the
    /// packet quoted in an ICMP error (RFC 792), which holds only the header and 8 bytes.
    pub fn parse_header(buf: &[u8]) -> Result<Repr, Error> {
        let ip = Ipv4Packet::new(buf).ok_or(Error::Truncated)?;
        if ip.get_version() != 4 {
            return Err(Error::BadVersion);
        }
        let hlen = usize::from(ip.get_header_length()) * 4;
        if hlen < MIN_HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        let opts = buf.get(MIN_HEADER_LEN..hlen).ok_or(Error::Truncated)?;
        let total = usize::from(ip.get_total_length());
        if total < hlen {
            return Err(Error::BadLength);
        }
        let flags = ip.get_flags();
        Ok(Repr {
            src: ip.get_source(),
            dst: ip.get_destination(),
            proto: ip.get_next_level_protocol().0,
            ttl: ip.get_ttl(),
            dscp: ip.get_dscp(),
            ecn: ip.get_ecn(),
            frag: Fragment {
                ident: ip.get_identification(),
                dont_frag: flags & FLAG_DF != 0,
                more_frags: flags & FLAG_MF != 0,
                offset: ip.get_fragment_offset(),
            },
            options: Options::new(opts)?,
            payload_len: (total - hlen) as u16,
        })
    }

    /// Header length including options.
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.len()
    }

    /// Header plus payload: the Total Length field.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + usize::from(self.payload_len)
    }

    /// Writes the header (options included, checksum computed) to the start of `buf`. The
    /// payload is the caller's: it may already be in place after the header.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let hlen = self.header_len();
        let total = u16::try_from(self.buffer_len()).map_err(|_| Error::BadLength)?;
        let hdr = buf.get_mut(..hlen).ok_or(Error::BufferTooSmall)?;
        {
            let mut ip = MutableIpv4Packet::new(hdr).ok_or(Error::BufferTooSmall)?;
            ip.set_version(4);
            ip.set_header_length((hlen / 4) as u8);
            ip.set_dscp(self.dscp & 0x3f);
            ip.set_ecn(self.ecn & 0x3);
            ip.set_total_length(total);
            ip.set_identification(self.frag.ident);
            let flags = if self.frag.dont_frag { FLAG_DF } else { 0 }
                | if self.frag.more_frags { FLAG_MF } else { 0 };
            ip.set_flags(flags);
            ip.set_fragment_offset(self.frag.offset & 0x1fff);
            ip.set_ttl(self.ttl);
            ip.set_next_level_protocol(IpNextHeaderProtocol(self.proto));
            ip.set_checksum(0);
            ip.set_source(self.src);
            ip.set_destination(self.dst);
        }
        let opts = hdr.get_mut(MIN_HEADER_LEN..).ok_or(Error::BufferTooSmall)?;
        super::put(opts, self.options.as_slice())?;
        let c = checksum::checksum(hdr);
        super::put(
            hdr.get_mut(CHECKSUM_OFFSET..)
                .ok_or(Error::BufferTooSmall)?,
            &c.to_be_bytes(),
        )
    }
}
