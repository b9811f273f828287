//! Packet views and `Repr`s with symmetric parse/emit.
//!
//! Standard headers are read and written through `pnet_packet` views; each protocol module adds
//! a validated `Repr` (plain data) with `parse` and `emit`, in the style of smoltcp's
//! `src/wire/ipv4.rs` and `udp.rs`: `Repr::parse(bytes) -> Result<Repr, Error>`,
//! `Repr::emit(&self, buf) -> Result<(), Error>`, `Repr::buffer_len()`.
//!
//! Parsing validates lengths once, at the boundary; after that nothing in carpio indexes a frame
//! out of bounds or panics on input from the network. Every parser here returns a named
//! [`Error`] (a [`named_counters!`](crate::named_counters) enum) instead of panicking, and every
//! `emit` checks the length of the buffer it writes into. The golden tests in
//! `tests/wire_golden.rs` parse every prefix of every sample packet to hold this promise.

pub mod arp;
pub mod carp;
pub mod checksum;
pub mod classify;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod pfsync;
pub mod tcp;
pub mod udp;

crate::named_counters! {
    /// Why a `Repr::parse` rejected its input or a `Repr::emit` refused its buffer.
    pub enum Error {
        /// The bytes end before a header (or the length its own fields claim) does.
        Truncated = "wire_truncated",
        /// IP version nibble is not the one expected.
        BadVersion = "wire_bad_version",
        /// A header length field is below the minimum (IPv4 IHL < 5, TCP data offset < 5).
        BadHeaderLen = "wire_bad_header_len",
        /// A total/payload length field is inconsistent (shorter than the header).
        BadLength = "wire_bad_length",
        /// A checksum does not verify.
        BadChecksum = "wire_bad_checksum",
        /// Fields hold values this format does not allow (ARP not Ethernet/IPv4, option
        /// block not a multiple of 4 or longer than 40 bytes).
        Malformed = "wire_malformed",
        /// More VLAN tags than carpio accepts (two: 802.1ad outer + 802.1Q inner).
        TooManyTags = "wire_too_many_tags",
        /// More IPv6 extension headers than carpio walks.
        TooManyExtensions = "wire_too_many_extensions",
        /// `emit` was given a buffer shorter than `buffer_len()`.
        BufferTooSmall = "wire_buffer_too_small",
    }
}

impl std::error::Error for Error {}

/// Largest option block of an IPv4 header (IHL 15) or a TCP header (data offset 15).
pub const MAX_OPTIONS_LEN: usize = 40;

/// Header options kept verbatim (IPv4 options, TCP options), padded to a multiple of 4 by the
/// sender as the header length fields count 32-bit words. Plain data, `Copy`, no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Options {
    bytes: [u8; MAX_OPTIONS_LEN],
    len: u8,
}

impl Options {
    /// No options.
    pub const EMPTY: Options = Options {
        bytes: [0; MAX_OPTIONS_LEN],
        len: 0,
    };

    /// Keeps `raw` as options; it must be at most 40 bytes and a multiple of 4.
    pub fn new(raw: &[u8]) -> Result<Options, Error> {
        if raw.len() > MAX_OPTIONS_LEN || !raw.len().is_multiple_of(4) {
            return Err(Error::Malformed);
        }
        let mut bytes = [0; MAX_OPTIONS_LEN];
        if let Some(dst) = bytes.get_mut(..raw.len()) {
            dst.copy_from_slice(raw);
        }
        Ok(Options {
            bytes,
            len: raw.len() as u8,
        })
    }

    /// The option bytes as received.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Length in bytes (a multiple of 4).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::EMPTY
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Options").field(&self.as_slice()).finish()
    }
}

/// The addresses a transport checksum's pseudo-header covers (RFC 768, RFC 793, RFC 8200 §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addrs {
    V4(std::net::Ipv4Addr, std::net::Ipv4Addr),
    V6(std::net::Ipv6Addr, std::net::Ipv6Addr),
}

impl Addrs {
    /// Source and destination as `IpAddr`s.
    pub fn ips(&self) -> (std::net::IpAddr, std::net::IpAddr) {
        match *self {
            Addrs::V4(s, d) => (s.into(), d.into()),
            Addrs::V6(s, d) => (s.into(), d.into()),
        }
    }
}

/// IP protocol numbers carpio dispatches on (IANA "Assigned Internet Protocol Numbers").
pub mod proto {
    pub const HOPOPT: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DSTOPTS: u8 = 60;
    /// CARP (OpenBSD `netinet/in.h` IPPROTO_CARP, shared with VRRP).
    pub const CARP: u8 = 112;
    /// pfsync (OpenBSD `netinet/in.h` IPPROTO_PFSYNC).
    pub const PFSYNC: u8 = 240;
}

/// Copies `src` into the start of `dst`, or reports that `dst` is too small.
#[inline]
pub(crate) fn put(dst: &mut [u8], src: &[u8]) -> Result<(), Error> {
    dst.get_mut(..src.len())
        .ok_or(Error::BufferTooSmall)?
        .copy_from_slice(src);
    Ok(())
}
