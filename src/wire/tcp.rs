//! TCP header (RFC 9293), options kept.
//!
//! ```text
//!  0               1               2               3
//! +-------------------------------+-------------------------------+
//! |          Source Port          |       Destination Port        |  0
//! +-------------------------------+-------------------------------+
//! |                        Sequence Number                        |  4
//! +---------------------------------------------------------------+
//! |                    Acknowledgment Number                      |  8
//! +-------+-------+---------------+-------------------------------+
//! | Offset| Rsrvd |     Flags     |            Window             | 12
//! +-------+-------+---------------+-------------------------------+
//! |           Checksum            |        Urgent Pointer         | 16
//! +-------------------------------+-------------------------------+
//! |                Options (0..40 bytes, Offset*4 - 20)           | 20
//! +---------------------------------------------------------------+
//! ```
//!
//! Fields are read and written through `pnet_packet`'s `TcpPacket` view. Parsing never panics:
//! each reject is a named [`Error`].

use pnet_packet::tcp::{MutableTcpPacket, TcpPacket};

use super::{Addrs, Error, Options, checksum, proto};

pub const MIN_HEADER_LEN: usize = 20;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 16;
/// Offset of the flags byte.
pub const FLAGS_OFFSET: usize = 13;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// A validated TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    pub options: Options,
    /// Bytes after the header in the segment handed to `parse`.
    pub payload_len: u16,
}

impl Repr {
    /// Parses `segment` (the IP payload, exactly). With `addrs`, the checksum is verified.
    pub fn parse(segment: &[u8], addrs: Option<&Addrs>) -> Result<Repr, Error> {
        let tcp = TcpPacket::new(segment).ok_or(Error::Truncated)?;
        let hlen = usize::from(tcp.get_data_offset()) * 4;
        if hlen < MIN_HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        let opts = segment.get(MIN_HEADER_LEN..hlen).ok_or(Error::Truncated)?;
        if let Some(addrs) = addrs
            && checksum::transport(addrs, proto::TCP, segment) != 0
        {
            return Err(Error::BadChecksum);
        }
        let payload_len = u16::try_from(segment.len() - hlen).map_err(|_| Error::BadLength)?;
        Ok(Repr {
            src_port: tcp.get_source(),
            dst_port: tcp.get_destination(),
            seq: tcp.get_sequence(),
            ack: tcp.get_acknowledgement(),
            flags: tcp.get_flags(),
            window: tcp.get_window(),
            urgent: tcp.get_urgent_ptr(),
            options: Options::new(opts)?,
            payload_len,
        })
    }

    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.len()
    }

    pub fn buffer_len(&self) -> usize {
        self.header_len() + usize::from(self.payload_len)
    }

    /// Writes the header into `buf`, whose payload the caller has already placed after it,
    /// and computes the checksum over header and payload.
    pub fn emit(&self, buf: &mut [u8], addrs: &Addrs) -> Result<(), Error> {
        let hlen = self.header_len();
        let segment = buf
            .get_mut(..self.buffer_len())
            .ok_or(Error::BufferTooSmall)?;
        {
            let mut tcp = MutableTcpPacket::new(segment).ok_or(Error::BufferTooSmall)?;
            tcp.set_source(self.src_port);
            tcp.set_destination(self.dst_port);
            tcp.set_sequence(self.seq);
            tcp.set_acknowledgement(self.ack);
            tcp.set_data_offset((hlen / 4) as u8);
            tcp.set_reserved(0);
            tcp.set_flags(self.flags);
            tcp.set_window(self.window);
            tcp.set_checksum(0);
            tcp.set_urgent_ptr(self.urgent);
        }
        let opts = segment
            .get_mut(MIN_HEADER_LEN..)
            .ok_or(Error::BufferTooSmall)?;
        super::put(opts, self.options.as_slice())?;
        let c = checksum::transport(addrs, proto::TCP, segment);
        let mut tcp = MutableTcpPacket::new(segment).ok_or(Error::BufferTooSmall)?;
        tcp.set_checksum(c);
        Ok(())
    }
}
