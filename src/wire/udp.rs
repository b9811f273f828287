//! UDP header (RFC 768; over IPv6, RFC 8200 §8.1).
//!
//! ```text
//!  0               2               4               6               8
//! +---------------+---------------+---------------+---------------+
//! |  Source Port  |   Dest Port   |    Length     |   Checksum    |
//! +---------------+---------------+---------------+---------------+
//! |                        payload ...
//! ```
//!
//! Fields are read and written through `pnet_packet`'s `UdpPacket` view; the checksum with its
//! pseudo-header comes from [`checksum::transport`]. Parsing never panics: each reject is a
//! named [`Error`].

use pnet_packet::Packet;
use pnet_packet::udp::{MutableUdpPacket, UdpPacket};

use super::{Addrs, Error, checksum, proto};

pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 6;

/// A validated UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Payload bytes by the Length field.
    pub payload_len: u16,
}

impl Repr {
    /// Parses a datagram. With `addrs`, the checksum is verified: over IPv4 a zero checksum
    /// means "none" (RFC 768); over IPv6 it is mandatory (RFC 8200 §8.1), so zero is rejected.
    pub fn parse(buf: &[u8], addrs: Option<&Addrs>) -> Result<Repr, Error> {
        let udp = UdpPacket::new(buf).ok_or(Error::Truncated)?;
        let len = usize::from(udp.get_length());
        if len < HEADER_LEN {
            return Err(Error::BadLength);
        }
        let datagram = buf.get(..len).ok_or(Error::Truncated)?;
        if let Some(addrs) = addrs {
            let stored = udp.get_checksum();
            let skip = stored == 0 && matches!(addrs, Addrs::V4(..));
            if !skip && checksum::transport(addrs, proto::UDP, datagram) != 0 {
                return Err(Error::BadChecksum);
            }
        }
        Ok(Repr {
            src_port: udp.get_source(),
            dst_port: udp.get_destination(),
            payload_len: (len - HEADER_LEN) as u16,
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len)
    }

    /// Writes the header into `buf`, whose payload the caller has already placed after it,
    /// and computes the checksum over both (never transmitted as zero, RFC 768).
    pub fn emit(&self, buf: &mut [u8], addrs: &Addrs) -> Result<(), Error> {
        let len = u16::try_from(self.buffer_len()).map_err(|_| Error::BadLength)?;
        let datagram = buf
            .get_mut(..usize::from(len))
            .ok_or(Error::BufferTooSmall)?;
        let mut udp = MutableUdpPacket::new(datagram).ok_or(Error::BufferTooSmall)?;
        udp.set_source(self.src_port);
        udp.set_destination(self.dst_port);
        udp.set_length(len);
        udp.set_checksum(0);
        let c = checksum::udp_nonzero(checksum::transport(addrs, proto::UDP, udp.packet()));
        udp.set_checksum(c);
        Ok(())
    }
}
