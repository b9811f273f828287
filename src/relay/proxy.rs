//! PROXY protocol headers (HAProxy's proxy-protocol.txt, versions 1 and 2), written to a
//! backend before any client data when a relay has `proxy-protocol v1|v2` (relayd.conf(5)), so
//! the backend (OpenSMTPD `listen on ... proxy-v2`, nginx `proxy_protocol`) sees the real
//! client address.
//!
//! ```text
//! v1 (text, at most 107 bytes):
//!   "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" | "PROXY TCP6 ..." | "PROXY UNKNOWN\r\n"
//!
//! v2 (binary):
//!   0                   1                   2                   3
//!   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |     signature  \r\n\r\n\0\r\nQUIT\n  (12 bytes)                |
//!  +---------------+---------------+-------------------------------+
//!  | ver 2 | cmd 1 | fam   | proto |  length of what follows (BE)  |
//!  +---------------+---------------+-------------------------------+
//!  | src addr (4 | 16) | dst addr (4 | 16) | src port | dst port   |
//!  +---------------------------------------------------------------+
//! ```
//!
//! Encoding only: carpio writes these headers, it never parses one from the network, so there
//! is no untrusted input here. Headers live in a fixed array: no allocation per session.

use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::config::model::ProxyProtocol;

/// The v2 signature (proxy-protocol.txt section 2.2).
pub const V2_SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];
/// Version 2 (high nibble) and command PROXY (low nibble 1).
pub const V2_VER_CMD_PROXY: u8 = 0x21;
/// AF_INET (high nibble 1) with STREAM (low nibble 1).
pub const V2_FAM_TCP4: u8 = 0x11;
/// AF_INET6 (high nibble 2) with STREAM.
pub const V2_FAM_TCP6: u8 = 0x21;
/// AF_INET with DGRAM.
pub const V2_FAM_UDP4: u8 = 0x12;
/// AF_INET6 with DGRAM.
pub const V2_FAM_UDP6: u8 = 0x22;
/// Address block length for IPv4: two addresses and two ports.
pub const V2_LEN_INET: u16 = 12;
/// Address block length for IPv6.
pub const V2_LEN_INET6: u16 = 36;
/// Offset of the version/command byte.
pub const V2_OFF_VER_CMD: usize = 12;
/// Offset of the family/protocol byte.
pub const V2_OFF_FAM: usize = 13;
/// Offset of the 16-bit address length.
pub const V2_OFF_LEN: usize = 14;
/// Offset of the address block.
pub const V2_OFF_ADDR: usize = 16;
/// Longest header this module writes (v1 TCP6 is 104 bytes; the spec's bound is 107).
pub const MAX_LEN: usize = 108;

/// Transport the header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stream,
    Datagram,
}

/// A ready-to-send header in a fixed buffer.
#[derive(Clone, Copy)]
pub struct Header {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("bytes", &self.as_bytes())
            .finish()
    }
}

impl Header {
    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Builds the header of `version` for a connection from `src` (the client) to `dst` (the
    /// relay's listen address). Mixed families are written as IPv6 with the IPv4 side mapped
    /// (`::ffff:a.b.c.d`), as HAProxy does.
    pub fn new(
        version: ProxyProtocol,
        transport: Transport,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Header {
        match version {
            ProxyProtocol::V1 => Self::v1(src, dst),
            ProxyProtocol::V2 => Self::v2(transport, src, dst),
        }
    }

    /// Version 1 text header. v1 describes only TCP; callers use it for streams.
    pub fn v1(src: SocketAddr, dst: SocketAddr) -> Header {
        let mut h = Header {
            buf: [0; MAX_LEN],
            len: 0,
        };
        let mut cur = std::io::Cursor::new(&mut h.buf[..]);
        // The buffer holds the longest possible line, so these writes cannot fail; if one
        // did, the header degrades to what was written, which the length below reflects.
        let _ = match same_family(src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                write!(cur, "PROXY TCP4 {s} {d} {} {}\r\n", src.port(), dst.port())
            }
            (s, d) => write!(cur, "PROXY TCP6 {s} {d} {} {}\r\n", src.port(), dst.port()),
        };
        h.len = usize::try_from(cur.position()).unwrap_or(0);
        h
    }

    /// Version 2 binary header with command PROXY.
    pub fn v2(transport: Transport, src: SocketAddr, dst: SocketAddr) -> Header {
        let mut h = Header {
            buf: [0; MAX_LEN],
            len: 0,
        };
        let (s, d) = same_family(src.ip(), dst.ip());
        let v4 = matches!(s, IpAddr::V4(_));
        let fam = match (v4, transport) {
            (true, Transport::Stream) => V2_FAM_TCP4,
            (true, Transport::Datagram) => V2_FAM_UDP4,
            (false, Transport::Stream) => V2_FAM_TCP6,
            (false, Transport::Datagram) => V2_FAM_UDP6,
        };
        let alen = if v4 { V2_LEN_INET } else { V2_LEN_INET6 };
        let mut w = Writer {
            buf: &mut h.buf,
            at: 0,
        };
        w.put(&V2_SIGNATURE);
        debug_assert_eq!(w.at, V2_OFF_VER_CMD);
        w.put(&[V2_VER_CMD_PROXY]);
        debug_assert_eq!(w.at, V2_OFF_FAM);
        w.put(&[fam]);
        debug_assert_eq!(w.at, V2_OFF_LEN);
        w.put(&alen.to_be_bytes());
        debug_assert_eq!(w.at, V2_OFF_ADDR);
        put_ip(&mut w, s);
        put_ip(&mut w, d);
        w.put(&src.port().to_be_bytes());
        w.put(&dst.port().to_be_bytes());
        h.len = w.at;
        h
    }
}

struct Writer<'a> {
    buf: &'a mut [u8; MAX_LEN],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.at += bytes.len();
        }
    }
}

fn put_ip(w: &mut Writer<'_>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => w.put(&a.octets()),
        IpAddr::V6(a) => w.put(&a.octets()),
    }
}

/// Both addresses in one family: unchanged if they agree, else both as IPv6.
fn same_family(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (a, b),
        _ => (IpAddr::V6(to_v6(a)), IpAddr::V6(to_v6(b))),
    }
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_worst_case_from_the_spec() {
        // proxy-protocol.txt 2.1: the longest TCP4 line is 56 bytes.
        let h = Header::v1(sa("255.255.255.255:65535"), sa("255.255.255.255:65535"));
        assert_eq!(
            h.as_bytes(),
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
        );
        assert_eq!(h.as_bytes().len(), 56);
    }

    #[test]
    fn v1_tcp6_worst_case_from_the_spec() {
        // The longest TCP6 line is 104 bytes.
        let a = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let h = Header::v1(sa(a), sa(a));
        assert_eq!(h.as_bytes().len(), 104);
        assert!(h.as_bytes().starts_with(b"PROXY TCP6 ffff:ffff:"));
        assert!(h.as_bytes().ends_with(b" 65535 65535\r\n"));
    }

    #[test]
    fn v1_ordinary() {
        let h = Header::new(
            ProxyProtocol::V1,
            Transport::Stream,
            sa("198.18.1.2:40000"),
            sa("198.18.0.1:25"),
        );
        assert_eq!(
            h.as_bytes(),
            b"PROXY TCP4 198.18.1.2 198.18.0.1 40000 25\r\n"
        );
    }

    #[test]
    fn v1_mixed_families_map_to_tcp6() {
        let h = Header::v1(sa("198.18.1.2:1"), sa("[2001:db8::1]:2"));
        assert_eq!(
            h.as_bytes(),
            b"PROXY TCP6 ::ffff:198.18.1.2 2001:db8::1 1 2\r\n"
        );
    }

    #[test]
    fn v2_tcp4_golden() {
        let h = Header::v2(
            Transport::Stream,
            sa("198.18.1.2:40000"),
            sa("198.18.0.1:25"),
        );
        let want: [u8; 28] = [
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // sig
            0x21, // v2, PROXY
            0x11, // TCP over IPv4
            0x00, 0x0c, // 12 bytes follow
            198, 18, 1, 2, // src
            198, 18, 0, 1, // dst
            0x9c, 0x40, // 40000
            0x00, 0x19, // 25
        ];
        assert_eq!(h.as_bytes(), &want);
    }

    #[test]
    fn v2_udp6_golden() {
        let h = Header::new(
            ProxyProtocol::V2,
            Transport::Datagram,
            sa("[2001:db8::2]:53000"),
            sa("[2001:db8::1]:53"),
        );
        let b = h.as_bytes();
        assert_eq!(b.len(), 16 + 36);
        assert_eq!(&b[..12], &V2_SIGNATURE);
        assert_eq!(b[V2_OFF_VER_CMD], 0x21);
        assert_eq!(b[V2_OFF_FAM], 0x22);
        assert_eq!(&b[V2_OFF_LEN..V2_OFF_ADDR], &[0, 36]);
        let mut src = [0u8; 16];
        src[0] = 0x20;
        src[1] = 0x01;
        src[2] = 0x0d;
        src[3] = 0xb8;
        src[15] = 2;
        assert_eq!(&b[16..32], &src);
        src[15] = 1;
        assert_eq!(&b[32..48], &src);
        assert_eq!(&b[48..52], &[0xcf, 0x08, 0x00, 0x35]);
    }

    #[test]
    fn v2_mixed_families_are_mapped() {
        let h = Header::v2(Transport::Stream, sa("198.18.1.2:1"), sa("[2001:db8::1]:2"));
        let b = h.as_bytes();
        assert_eq!(b[V2_OFF_FAM], V2_FAM_TCP6);
        assert_eq!(
            &b[16..32],
            &"::ffff:198.18.1.2".parse::<Ipv6Addr>().unwrap().octets()
        );
    }
}
