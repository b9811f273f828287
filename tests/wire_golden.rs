//! Golden byte-array tests for the wire formats and for classification.
//!
//! The frames below were built by an independent Python generator (struct packing and its own
//! RFC 1071 checksum) and checked with tshark 4 (IP/TCP/UDP/ICMP/ICMPv6 checksum validation on,
//! no checksum warnings except the CARP header's own, which these tests do not use). Each
//! format is parsed against known field values, emitted back to the same bytes, and parsed at
//! every truncation length, which must give the named error and never panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carpio::wire::classify::{Af, Class, Drop, Frag, LinkType, Meta, classify};
use carpio::wire::{
    Addrs, Error, Options, arp, checksum, ethernet, icmp, icmpv6, ipv4, ipv6, proto, tcp, udp,
};

const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const D4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const S6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const D6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];

const ETH_UDP4: [u8; 64] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x32, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x9c, 0x5f, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x02, 0x9c, 0x40, 0x00, 0x35, 0x00, 0x1e, 0xd7, 0x9f, 0x63, 0x61, 0x72, 0x70, 0x69, 0x6f,
    0x20, 0x67, 0x6f, 0x6c, 0x64, 0x65, 0x6e, 0x20, 0x75, 0x64, 0x70, 0x20, 0x36, 0x34, 0x42, 0x21,
];

const ETH_UDP4_PADDED: [u8; 60] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x1f, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x9c, 0x72, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x02, 0x9c, 0x40, 0x00, 0x7b, 0x00, 0x0b, 0xf8, 0x7f, 0x6e, 0x74, 0x70, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

const ETH_TCP4_SYN_OPTS: [u8; 74] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x9c, 0x60, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x02, 0x9c, 0x41, 0x00, 0x19, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02,
    0xfa, 0xf0, 0x20, 0xa4, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x00,
    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
];

const ETH_IPV4_OPTS_UDP: [u8; 49] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x46, 0x00,
    0x00, 0x23, 0x12, 0x34, 0x40, 0x00, 0x01, 0x11, 0x46, 0x69, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x03, 0x94, 0x04, 0x00, 0x00, 0x13, 0x88, 0x13, 0x89, 0x00, 0x0b, 0x69, 0x2d, 0x6f, 0x70,
    0x74,
];

const ETH_ARP_REQ: [u8; 60] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x01,
    0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0xc6, 0x12, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc6, 0x12, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

const QINQ_UDP6: [u8; 74] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xa8, 0xa0, 0x64,
    0x81, 0x00, 0x00, 0xc8, 0x86, 0xdd, 0x60, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x11, 0x40, 0x20, 0x01,
    0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01,
    0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x42,
    0x00, 0x35, 0x00, 0x0c, 0x30, 0x3c, 0x64, 0x6e, 0x73, 0x3f,
];

const VLAN_TCP4: [u8; 63] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0x00, 0x05,
    0x08, 0x00, 0x45, 0x00, 0x00, 0x2d, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x9c, 0x6f, 0xc6, 0x12,
    0x00, 0x01, 0xc6, 0x12, 0x00, 0x02, 0x9c, 0x43, 0x00, 0x50, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00,
    0x00, 0x09, 0x50, 0x18, 0x02, 0x00, 0xba, 0x96, 0x00, 0x00, 0x47, 0x45, 0x54, 0x20, 0x2f,
];

const ETH_TCP6_EXT_FIRSTFRAG: [u8; 98] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x2c, 0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x3c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00,
    0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, 0x9c, 0x44,
    0x01, 0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x03, 0xe8, 0xb2, 0x85,
    0x00, 0x00,
];

const ETH_UDP6_LATERFRAG: [u8; 82] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x1c, 0x2c, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x11, 0x00, 0x05, 0xc8, 0xde, 0xad, 0xbe, 0xef, 0x6c, 0x61,
    0x74, 0x65, 0x72, 0x20, 0x66, 0x72, 0x61, 0x67, 0x6d, 0x65, 0x6e, 0x74, 0x20, 0x64, 0x61, 0x74,
    0x61, 0x21,
];

const ETH_UDP6_AH: [u8; 89] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x23, 0x33, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x11, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x01, 0xf4,
    0x01, 0xf4, 0x00, 0x0b, 0xd2, 0x0f, 0x69, 0x6b, 0x65,
];

const ETH_UDP4_FIRSTFRAG: [u8; 50] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x24, 0x00, 0x4d, 0x20, 0x00, 0x40, 0x11, 0xce, 0x54, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x02, 0x9c, 0x45, 0x00, 0x35, 0x00, 0x20, 0xc7, 0xfc, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41,
    0x41, 0x41,
];

const ETH_UDP4_LATERFRAG: [u8; 50] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x24, 0x00, 0x4d, 0x00, 0x02, 0x40, 0x11, 0xee, 0x52, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x02, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
    0x42, 0x42,
];

const ETH_ICMP4_ECHO: [u8; 50] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x24, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x9c, 0x7d, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x02, 0x08, 0x00, 0xf8, 0x0e, 0x42, 0x42, 0x00, 0x07, 0x70, 0x69, 0x6e, 0x67, 0x70, 0x6f,
    0x6e, 0x67,
];

const ETH_ICMP4_UNREACH: [u8; 70] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x38, 0x12, 0x34, 0x00, 0x00, 0x40, 0x01, 0xdb, 0x6d, 0xc6, 0x12, 0x00, 0xfe, 0xc6, 0x12,
    0x00, 0x01, 0x03, 0x04, 0x57, 0x41, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x00, 0x37, 0x12, 0x34,
    0x40, 0x00, 0x40, 0x06, 0x9c, 0x65, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12, 0x00, 0x02, 0x9c, 0x41,
    0x00, 0x19, 0x00, 0x00, 0x03, 0xe8,
];

const ETH_ICMP6_TOOBIG: [u8; 158] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x68, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0xc1, 0x53, 0x00, 0x00, 0x05, 0x00, 0x60, 0x00,
    0x00, 0x00, 0x05, 0x1c, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x42, 0x00, 0x35, 0x05, 0x1c, 0x1b, 0xe8, 0x78, 0x78,
    0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78,
    0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78,
    0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78,
];

const ETH_ICMP6_ECHO: [u8; 64] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x0a, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0xbb, 0x42, 0x00, 0x99, 0x00, 0x01, 0x68, 0x69,
];

const ETH_CARP4: [u8; 70] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x38, 0x12, 0x34, 0x00, 0x00, 0xff, 0x70, 0x02, 0xfc, 0xc6, 0x12, 0x00, 0x01, 0xe0, 0x00,
    0x00, 0x12, 0x21, 0x01, 0x64, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
];

const ETH_PFSYNC4: [u8; 54] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x28, 0x12, 0x34, 0x00, 0x00, 0xff, 0xf0, 0x01, 0xae, 0xc6, 0x12, 0x00, 0x01, 0xe0, 0x00,
    0x00, 0xf0, 0x06, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

const ETH_CARP6: [u8; 90] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x24, 0x70, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x21, 0x01, 0x64, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
];

const ETH_GRE4: [u8; 38] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x2f, 0x9c, 0x5b, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
    0x00, 0x02, 0x00, 0x00, 0x08, 0x00,
];

const ETH_LLDP: [u8; 63] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xcc, 0x02, 0x07,
    0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

const ALL_FRAMES: &[&[u8]] = &[
    &ETH_UDP4,
    &ETH_UDP4_PADDED,
    &ETH_TCP4_SYN_OPTS,
    &ETH_IPV4_OPTS_UDP,
    &ETH_ARP_REQ,
    &QINQ_UDP6,
    &VLAN_TCP4,
    &ETH_TCP6_EXT_FIRSTFRAG,
    &ETH_UDP6_LATERFRAG,
    &ETH_UDP6_AH,
    &ETH_UDP4_FIRSTFRAG,
    &ETH_UDP4_LATERFRAG,
    &ETH_ICMP4_ECHO,
    &ETH_ICMP4_UNREACH,
    &ETH_ICMP6_TOOBIG,
    &ETH_ICMP6_ECHO,
    &ETH_CARP4,
    &ETH_PFSYNC4,
    &ETH_CARP6,
    &ETH_GRE4,
    &ETH_LLDP,
];

const A4: Addrs = Addrs::V4(S4, D4);
const A6: Addrs = Addrs::V6(S6, D6);

// ---------------------------------------------------------------- ethernet

#[test]
fn ethernet_parse_emit_untagged() {
    let r = ethernet::Repr::parse(&ETH_UDP4).unwrap();
    assert_eq!(r.dst, M2);
    assert_eq!(r.src, M1);
    assert_eq!(r.tags, [None, None]);
    assert_eq!(r.ethertype, ethernet::ETHERTYPE_IPV4);
    assert_eq!(r.buffer_len(), 14);
    let mut out = [0u8; 14];
    r.emit(&mut out).unwrap();
    assert_eq!(out[..], ETH_UDP4[..14]);
    assert_eq!(r.emit(&mut [0u8; 13]), Err(Error::BufferTooSmall));
}

#[test]
fn ethernet_parse_emit_qinq() {
    let r = ethernet::Repr::parse(&QINQ_UDP6).unwrap();
    let outer = r.tags[0].unwrap();
    let inner = r.tags[1].unwrap();
    assert_eq!(
        (outer.tpid, outer.pcp, outer.dei, outer.vid),
        (0x88a8, 5, false, 100)
    );
    assert_eq!(
        (inner.tpid, inner.pcp, inner.dei, inner.vid),
        (0x8100, 0, false, 200)
    );
    assert_eq!(r.ethertype, ethernet::ETHERTYPE_IPV6);
    assert_eq!(r.buffer_len(), 22);
    let mut out = [0u8; 22];
    r.emit(&mut out).unwrap();
    assert_eq!(out[..], QINQ_UDP6[..22]);
    assert_eq!(r.emit(&mut [0u8; 21]), Err(Error::BufferTooSmall));
}

#[test]
fn ethernet_every_truncation() {
    for n in 0..=QINQ_UDP6.len() {
        let got = ethernet::Repr::parse(&QINQ_UDP6[..n]);
        if n < 22 {
            assert_eq!(got, Err(Error::Truncated), "prefix {n}");
        } else {
            assert!(got.is_ok(), "prefix {n}");
        }
    }
}

#[test]
fn ethernet_three_tags_rejected() {
    let mut f = QINQ_UDP6[..16].to_vec();
    f.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
    f.extend_from_slice(&QINQ_UDP6[16..]);
    assert_eq!(ethernet::Repr::parse(&f), Err(Error::TooManyTags));
}

// ---------------------------------------------------------------- arp

#[test]
fn arp_parse_emit() {
    let bytes = &ETH_ARP_REQ[14..42];
    let r = arp::Repr::parse(bytes).unwrap();
    assert_eq!(
        r,
        arp::Repr {
            op: arp::OP_REQUEST,
            sender_mac: M1,
            sender_ip: S4,
            target_mac: [0; 6],
            target_ip: D4,
        }
    );
    let mut out = [0u8; 28];
    r.emit(&mut out).unwrap();
    assert_eq!(&out[..], bytes);
    assert_eq!(r.emit(&mut [0u8; 27]), Err(Error::BufferTooSmall));
}

#[test]
fn arp_every_truncation_and_malformed() {
    let bytes = &ETH_ARP_REQ[14..42];
    for n in 0..28 {
        assert_eq!(arp::Repr::parse(&bytes[..n]), Err(Error::Truncated), "{n}");
    }
    for (i, v) in [(0, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
        let mut b = bytes.to_vec();
        b[i] = v;
        assert_eq!(arp::Repr::parse(&b), Err(Error::Malformed), "byte {i}");
    }
}

// ---------------------------------------------------------------- ipv4

#[test]
fn ipv4_parse_emit_with_options() {
    let bytes = &ETH_IPV4_OPTS_UDP[14..];
    let r = ipv4::Repr::parse(bytes).unwrap();
    assert_eq!(r.src, S4);
    assert_eq!(r.dst, Ipv4Addr::new(198, 18, 0, 3));
    assert_eq!(r.proto, proto::UDP);
    assert_eq!(r.ttl, 1);
    assert_eq!(r.options.as_slice(), &[0x94, 4, 0, 0]);
    assert_eq!(r.header_len(), 24);
    assert_eq!(r.payload_len, 11);
    assert_eq!(r.buffer_len(), bytes.len());
    assert!(r.frag.dont_frag && !r.frag.is_fragment());
    assert_eq!(r.frag.ident, 0x1234);
    let mut out = bytes.to_vec();
    out[..24].fill(0);
    r.emit(&mut out).unwrap();
    assert_eq!(&out[..], bytes);
    assert_eq!(r.emit(&mut [0u8; 23]), Err(Error::BufferTooSmall));
}

#[test]
fn ipv4_build_from_repr_matches_golden() {
    let r = ipv4::Repr {
        src: S4,
        dst: D4,
        proto: proto::UDP,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        frag: ipv4::Fragment {
            ident: 0x1234,
            dont_frag: true,
            more_frags: false,
            offset: 0,
        },
        options: Options::EMPTY,
        payload_len: 30,
    };
    let mut out = [0u8; 20];
    r.emit(&mut out).unwrap();
    assert_eq!(out[..], ETH_UDP4[14..34]);
}

#[test]
fn ipv4_every_truncation() {
    let bytes = &ETH_IPV4_OPTS_UDP[14..];
    for n in 0..bytes.len() {
        assert_eq!(ipv4::Repr::parse(&bytes[..n]), Err(Error::Truncated), "{n}");
    }
    assert!(ipv4::Repr::parse(bytes).is_ok());
}

#[test]
fn ipv4_rejects() {
    let good = &ETH_UDP4[14..];
    let mut b = good.to_vec();
    b[0] = 0x65;
    assert_eq!(ipv4::Repr::parse(&b), Err(Error::BadVersion));
    let mut b = good.to_vec();
    b[0] = 0x44;
    assert_eq!(ipv4::Repr::parse(&b), Err(Error::BadHeaderLen));
    let mut b = good.to_vec();
    b[2..4].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(ipv4::Repr::parse(&b), Err(Error::BadLength));
    let mut b = good.to_vec();
    b[11] ^= 1;
    assert_eq!(ipv4::Repr::parse(&b), Err(Error::BadChecksum));
    assert!(Options::new(&[1, 1, 1]).is_err());
    assert!(Options::new(&[1; 44]).is_err());
}

#[test]
fn ipv4_fragments_recognised() {
    let first = ipv4::Repr::parse(&ETH_UDP4_FIRSTFRAG[14..]).unwrap();
    assert!(first.frag.more_frags && first.frag.offset == 0 && first.frag.is_fragment());
    let later = ipv4::Repr::parse(&ETH_UDP4_LATERFRAG[14..]).unwrap();
    assert!(!later.frag.more_frags && later.frag.offset == 2 && later.frag.is_fragment());
    assert_eq!(later.frag.ident, 77);
    let mut out = ETH_UDP4_LATERFRAG[14..].to_vec();
    out[..20].fill(0);
    later.emit(&mut out).unwrap();
    assert_eq!(out[..], ETH_UDP4_LATERFRAG[14..]);
}

// ---------------------------------------------------------------- ipv6

#[test]
fn ipv6_parse_emit_and_walk() {
    let bytes = &ETH_TCP6_EXT_FIRSTFRAG[14..];
    let r = ipv6::Repr::parse(bytes).unwrap();
    assert_eq!((r.src, r.dst), (S6, D6));
    assert_eq!(r.next_header, proto::HOPOPT);
    assert_eq!(r.hop_limit, 64);
    assert_eq!(r.payload_len, 44);
    assert_eq!(r.buffer_len(), bytes.len());
    let mut out = [0u8; 40];
    r.emit(&mut out).unwrap();
    assert_eq!(out[..], bytes[..40]);
    let w = ipv6::walk(r.next_header, &bytes[40..]).unwrap();
    assert_eq!(w.proto, proto::TCP);
    assert_eq!(w.offset, 24);
    let f = w.fragment.unwrap();
    assert_eq!((f.offset, f.more_frags, f.ident), (0, true, 0xdead_beef));
    let mut fo = [0u8; 8];
    f.emit(&mut fo).unwrap();
    assert_eq!(fo[..], bytes[56..64]);
}

#[test]
fn ipv6_walk_later_fragment_and_ah() {
    let bytes = &ETH_UDP6_LATERFRAG[14..];
    let r = ipv6::Repr::parse(bytes).unwrap();
    let w = ipv6::walk(r.next_header, &bytes[40..]).unwrap();
    assert_eq!((w.proto, w.offset), (proto::UDP, 8));
    assert_eq!(w.fragment.unwrap().offset, 185);
    let bytes = &ETH_UDP6_AH[14..];
    let r = ipv6::Repr::parse(bytes).unwrap();
    let w = ipv6::walk(r.next_header, &bytes[40..]).unwrap();
    assert_eq!((w.proto, w.offset, w.fragment), (proto::UDP, 24, None));
}

#[test]
fn ipv6_every_truncation() {
    for frame in [&ETH_TCP6_EXT_FIRSTFRAG[..], &ETH_UDP6_AH[..]] {
        let bytes = &frame[14..];
        for n in 0..bytes.len() {
            assert_eq!(ipv6::Repr::parse(&bytes[..n]), Err(Error::Truncated), "{n}");
        }
        let r = ipv6::Repr::parse(bytes).unwrap();
        let ext = &bytes[40..];
        let full = ipv6::walk(r.next_header, ext).unwrap();
        for n in 0..ext.len() {
            let got = ipv6::walk(r.next_header, &ext[..n]);
            if n < full.offset {
                assert_eq!(got, Err(Error::Truncated), "{n}");
            } else {
                assert_eq!(got, Ok(full), "{n}");
            }
        }
    }
}

#[test]
fn ipv6_rejects() {
    let mut b = ETH_UDP6_AH[14..].to_vec();
    b[0] = 0x45;
    assert_eq!(ipv6::Repr::parse(&b), Err(Error::BadVersion));
    let chain: Vec<u8> = (0..9)
        .flat_map(|i| [if i == 8 { 59 } else { 60 }, 0, 1, 4, 0, 0, 0, 0])
        .collect();
    assert_eq!(ipv6::walk(60, &chain), Err(Error::TooManyExtensions));
    assert_eq!(ipv6::walk(60, &chain[8..]).map(|w| w.proto), Ok(59));
}

// ---------------------------------------------------------------- udp

#[test]
fn udp_parse_emit() {
    let bytes = &ETH_UDP4[34..];
    let r = udp::Repr::parse(bytes, Some(&A4)).unwrap();
    assert_eq!((r.src_port, r.dst_port, r.payload_len), (40000, 53, 22));
    let mut out = bytes.to_vec();
    out[..8].fill(0);
    r.emit(&mut out, &A4).unwrap();
    assert_eq!(&out[..], bytes);
    let bytes6 = &QINQ_UDP6[62..];
    let r6 = udp::Repr::parse(bytes6, Some(&A6)).unwrap();
    assert_eq!((r6.src_port, r6.dst_port, r6.payload_len), (40002, 53, 4));
    let mut out = bytes6.to_vec();
    out[..8].fill(0xee);
    r6.emit(&mut out, &A6).unwrap();
    assert_eq!(&out[..], bytes6);
    assert_eq!(r6.emit(&mut [0u8; 11], &A6), Err(Error::BufferTooSmall));
}

#[test]
fn udp_every_truncation_and_checksum_rules() {
    let bytes = &ETH_UDP4[34..];
    for n in 0..bytes.len() {
        assert_eq!(
            udp::Repr::parse(&bytes[..n], None),
            Err(Error::Truncated),
            "{n}"
        );
    }
    let mut b = bytes.to_vec();
    b[9] ^= 0x20;
    assert_eq!(udp::Repr::parse(&b, Some(&A4)), Err(Error::BadChecksum));
    assert!(udp::Repr::parse(&b, None).is_ok());
    // Zero checksum: "none" over IPv4 (RFC 768), invalid over IPv6 (RFC 8200 §8.1).
    b[6..8].fill(0);
    assert!(udp::Repr::parse(&b, Some(&A4)).is_ok());
    assert_eq!(udp::Repr::parse(&b, Some(&A6)), Err(Error::BadChecksum));
    b[4..6].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(udp::Repr::parse(&b, None), Err(Error::BadLength));
}

// ---------------------------------------------------------------- tcp

#[test]
fn tcp_parse_emit_with_options() {
    let bytes = &ETH_TCP4_SYN_OPTS[34..];
    let r = tcp::Repr::parse(bytes, Some(&A4)).unwrap();
    assert_eq!((r.src_port, r.dst_port), (40001, 25));
    assert_eq!(
        (r.seq, r.ack, r.flags, r.window),
        (1000, 0, tcp::SYN, 64240)
    );
    assert_eq!(r.options.len(), 20);
    assert_eq!(&r.options.as_slice()[..4], &[2, 4, 0x05, 0xb4]);
    assert_eq!(r.payload_len, 0);
    let mut out = vec![0u8; 40];
    r.emit(&mut out, &A4).unwrap();
    assert_eq!(&out[..], bytes);
    assert_eq!(r.emit(&mut [0u8; 39], &A4), Err(Error::BufferTooSmall));
    let with_data = &VLAN_TCP4[38..];
    let r = tcp::Repr::parse(with_data, Some(&A4)).unwrap();
    assert_eq!((r.flags, r.payload_len), (tcp::PSH | tcp::ACK, 5));
    let mut out = with_data.to_vec();
    out[..20].fill(0);
    r.emit(&mut out, &A4).unwrap();
    assert_eq!(&out[..], with_data);
}

#[test]
fn tcp_every_truncation_and_rejects() {
    let bytes = &ETH_TCP4_SYN_OPTS[34..];
    for n in 0..bytes.len() {
        assert_eq!(
            tcp::Repr::parse(&bytes[..n], None),
            Err(Error::Truncated),
            "{n}"
        );
    }
    let mut b = bytes.to_vec();
    b[12] = 0x40;
    assert_eq!(tcp::Repr::parse(&b, None), Err(Error::BadHeaderLen));
    let mut b = bytes.to_vec();
    b[4] ^= 1;
    assert_eq!(tcp::Repr::parse(&b, Some(&A4)), Err(Error::BadChecksum));
}

// ---------------------------------------------------------------- icmp

#[test]
fn icmp_echo_parse_emit() {
    let bytes = &ETH_ICMP4_ECHO[34..];
    let r = icmp::Repr::parse(bytes).unwrap();
    assert_eq!(
        r.message,
        icmp::Message::EchoRequest {
            ident: 0x4242,
            seq: 7
        }
    );
    assert_eq!(r.data, b"pingpong");
    assert!(r.quoted().is_none());
    let mut out = vec![0u8; r.buffer_len()];
    r.emit(&mut out).unwrap();
    assert_eq!(&out[..], bytes);
}

#[test]
fn icmp_unreachable_quotes_the_original_flow() {
    let bytes = &ETH_ICMP4_UNREACH[34..];
    let r = icmp::Repr::parse(bytes).unwrap();
    assert_eq!(
        r.message,
        icmp::Message::DstUnreachable {
            code: 4,
            next_hop_mtu: 1400
        }
    );
    let q = r.quoted().unwrap().unwrap();
    assert_eq!(q.proto, proto::TCP);
    assert_eq!((q.src, q.dst), (IpAddr::V4(S4), IpAddr::V4(D4)));
    assert_eq!((q.sport, q.dport, q.l4), (40001, 25, 20));
    let mut out = vec![0u8; r.buffer_len()];
    r.emit(&mut out).unwrap();
    assert_eq!(&out[..], bytes);
    for n in 0..28 {
        assert_eq!(icmp::quoted(&r.data[..n]), Err(Error::Truncated), "{n}");
    }
}

#[test]
fn icmp_other_messages_round_trip() {
    let data = [0u8; 28];
    for m in [
        icmp::Message::TimeExceeded { code: 1 },
        icmp::Message::ParamProblem {
            code: 0,
            pointer: 9,
        },
        icmp::Message::EchoReply { ident: 1, seq: 2 },
        icmp::Message::Other {
            icmp_type: 5,
            code: 1,
            rest: 0xc612_00fe,
        },
    ] {
        let r = icmp::Repr {
            message: m,
            data: &data,
        };
        let mut out = [0u8; 36];
        r.emit(&mut out).unwrap();
        assert_eq!(icmp::Repr::parse(&out), Ok(r));
    }
}

#[test]
fn icmp_every_truncation() {
    let bytes = &ETH_ICMP4_UNREACH[34..];
    for n in 0..bytes.len() {
        let got = icmp::Repr::parse(&bytes[..n]);
        if n < 8 {
            assert_eq!(got, Err(Error::Truncated), "{n}");
        } else {
            // Cutting a message changes its sum; a prefix either fails the checksum or
            // (when the cut bytes summed to zero) parses with less data.
            assert!(matches!(got, Err(Error::BadChecksum) | Ok(_)), "{n}");
        }
    }
}

// ---------------------------------------------------------------- icmpv6

#[test]
fn icmpv6_too_big_quotes_the_original_flow() {
    let src: Ipv6Addr = "2001:db8::fe".parse().unwrap();
    let bytes = &ETH_ICMP6_TOOBIG[54..];
    let r = icmpv6::Repr::parse(bytes, src, S6).unwrap();
    assert_eq!(r.message, icmpv6::Message::PacketTooBig { mtu: 1280 });
    assert_eq!(r.data.len(), 96);
    let q = r.quoted().unwrap().unwrap();
    assert_eq!(
        (q.proto, q.sport, q.dport, q.l4),
        (proto::UDP, 40002, 53, 40)
    );
    assert_eq!((q.src, q.dst), (IpAddr::V6(S6), IpAddr::V6(D6)));
    let mut out = vec![0u8; r.buffer_len()];
    r.emit(&mut out, src, S6).unwrap();
    assert_eq!(&out[..], bytes);
    assert_eq!(
        icmpv6::Repr::parse(bytes, S6, S6).map(|_| ()),
        Err(Error::BadChecksum)
    );
    for n in 0..48 {
        assert_eq!(icmpv6::quoted(&r.data[..n]), Err(Error::Truncated), "{n}");
    }
}

#[test]
fn icmpv6_echo_parse_emit_and_truncation() {
    let bytes = &ETH_ICMP6_ECHO[54..];
    let r = icmpv6::Repr::parse(bytes, S6, D6).unwrap();
    assert_eq!(
        r.message,
        icmpv6::Message::EchoRequest {
            ident: 0x99,
            seq: 1
        }
    );
    assert_eq!(r.data, b"hi");
    let mut out = vec![0u8; r.buffer_len()];
    r.emit(&mut out, S6, D6).unwrap();
    assert_eq!(&out[..], bytes);
    for n in 0..8 {
        assert_eq!(
            icmpv6::Repr::parse(&bytes[..n], S6, D6).map(|_| ()),
            Err(Error::Truncated)
        );
    }
}

// ---------------------------------------------------------------- classify

fn c(frame: &[u8]) -> Meta {
    classify(frame, LinkType::Ethernet).unwrap_or_else(|d| panic!("dropped: {d}"))
}

fn drop_of(frame: &[u8]) -> Drop {
    classify(frame, LinkType::Ethernet).unwrap_err()
}

#[test]
fn classify_udp4() {
    let m = c(&ETH_UDP4);
    assert_eq!(m.class, Class::Ipv4Udp);
    assert_eq!((m.l3, m.l4, m.end), (14, 34, 64));
    assert_eq!((m.af, m.proto, m.ttl), (Af::V4, proto::UDP, 64));
    assert_eq!((m.src, m.dst), (IpAddr::V4(S4), IpAddr::V4(D4)));
    assert_eq!((m.sport, m.dport), (40000, 53));
    assert_eq!((m.frag, m.quoted, m.vlan), (Frag::None, None, [0, 0]));
}

#[test]
fn classify_end_excludes_ethernet_padding() {
    let m = c(&ETH_UDP4_PADDED);
    assert_eq!((m.class, m.end, m.dport), (Class::Ipv4Udp, 45, 123));
    assert_eq!(ETH_UDP4_PADDED.len(), 60);
    let m = c(&ETH_ARP_REQ);
    assert_eq!((m.class, m.l3, m.l4, m.end), (Class::Arp, 14, 42, 42));
    assert_eq!((m.src, m.dst), (IpAddr::V4(S4), IpAddr::V4(D4)));
}

#[test]
fn classify_tcp_with_tags_and_options() {
    let m = c(&ETH_TCP4_SYN_OPTS);
    assert_eq!((m.class, m.l4, m.end), (Class::Ipv4Tcp, 34, 74));
    assert_eq!((m.sport, m.dport, m.tcp_flags), (40001, 25, tcp::SYN));
    let m = c(&VLAN_TCP4);
    assert_eq!((m.class, m.l3, m.l4, m.end), (Class::Ipv4Tcp, 18, 38, 63));
    assert_eq!(m.vlan, [5, 0]);
    assert_eq!(m.tcp_flags, tcp::PSH | tcp::ACK);
    let m = c(&ETH_IPV4_OPTS_UDP);
    assert_eq!((m.class, m.l4, m.end, m.ttl), (Class::Ipv4Udp, 38, 49, 1));
}

#[test]
fn classify_ipv6_qinq_and_extensions() {
    let m = c(&QINQ_UDP6);
    assert_eq!((m.class, m.l3, m.l4, m.end), (Class::Ipv6Udp, 22, 62, 74));
    assert_eq!(m.vlan, [100, 200]);
    assert_eq!(
        (m.af, m.src, m.dst),
        (Af::V6, IpAddr::V6(S6), IpAddr::V6(D6))
    );
    let m = c(&ETH_TCP6_EXT_FIRSTFRAG);
    assert_eq!(
        (m.class, m.l4, m.end, m.frag),
        (Class::Ipv6Tcp, 78, 98, Frag::First)
    );
    assert_eq!((m.sport, m.dport, m.tcp_flags), (40004, 443, tcp::SYN));
    let m = c(&ETH_UDP6_AH);
    assert_eq!((m.class, m.l4, m.end), (Class::Ipv6Udp, 78, 89));
    assert_eq!((m.sport, m.dport), (500, 500));
}

#[test]
fn classify_fragments() {
    let m = c(&ETH_UDP6_LATERFRAG);
    assert_eq!(
        (m.class, m.frag, m.l4, m.end),
        (Class::Ipv6Udp, Frag::Later, 82, 82)
    );
    assert_eq!((m.sport, m.dport, m.proto), (0, 0, proto::UDP));
    let m = c(&ETH_UDP4_FIRSTFRAG);
    assert_eq!(
        (m.class, m.frag, m.l4, m.end),
        (Class::Ipv4Udp, Frag::First, 34, 50)
    );
    assert_eq!((m.sport, m.dport), (40005, 53));
    let m = c(&ETH_UDP4_LATERFRAG);
    assert_eq!(
        (m.class, m.frag, m.l4, m.end),
        (Class::Ipv4Udp, Frag::Later, 50, 50)
    );
    assert_eq!((m.sport, m.dport), (0, 0));
}

#[test]
fn classify_icmp() {
    let m = c(&ETH_ICMP4_ECHO);
    assert_eq!((m.class, m.icmp_type, m.icmp_code), (Class::Ipv4Icmp, 8, 0));
    assert_eq!((m.sport, m.dport, m.quoted), (0x4242, 0x4242, None));
    let m = c(&ETH_ICMP4_UNREACH);
    assert_eq!(
        (m.class, m.icmp_type, m.icmp_code, m.end),
        (Class::Ipv4Icmp, 3, 4, 70)
    );
    assert_eq!(m.src, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 254)));
    let q = m.quoted.unwrap();
    assert_eq!((q.l3, q.l4, q.proto), (42, 62, proto::TCP));
    assert_eq!(
        (q.src, q.dst, q.sport, q.dport),
        (IpAddr::V4(S4), IpAddr::V4(D4), 40001, 25)
    );
    let m = c(&ETH_ICMP6_TOOBIG);
    assert_eq!((m.class, m.icmp_type, m.end), (Class::Ipv6Icmp, 2, 158));
    let q = m.quoted.unwrap();
    assert_eq!((q.l3, q.l4, q.proto), (62, 102, proto::UDP));
    assert_eq!(
        (q.src, q.dst, q.sport, q.dport),
        (IpAddr::V6(S6), IpAddr::V6(D6), 40002, 53)
    );
    let m = c(&ETH_ICMP6_ECHO);
    assert_eq!(
        (m.class, m.icmp_type, m.sport, m.dport),
        (Class::Ipv6Icmp, 128, 0x99, 0x99)
    );
}

#[test]
fn classify_carp_pfsync_other() {
    let m = c(&ETH_CARP4);
    assert_eq!((m.class, m.l4, m.end, m.ttl), (Class::Carp, 34, 70, 255));
    let m = c(&ETH_CARP6);
    assert_eq!((m.class, m.af, m.l4, m.end), (Class::Carp, Af::V6, 54, 90));
    let m = c(&ETH_PFSYNC4);
    assert_eq!((m.class, m.l4, m.end), (Class::Pfsync, 34, 54));
    let m = c(&ETH_GRE4);
    assert_eq!(
        (m.class, m.proto, m.l4, m.end),
        (Class::Ipv4Other, 47, 34, 38)
    );
    let m = c(&ETH_LLDP);
    assert_eq!((m.class, m.l3, m.l4, m.end), (Class::Other, 14, 63, 63));
}

#[test]
fn classify_other_link_types() {
    let m = classify(&ETH_UDP6_AH[14..], LinkType::RawIp).unwrap();
    assert_eq!((m.class, m.l3, m.l4, m.end), (Class::Ipv6Udp, 0, 64, 75));
    let m = classify(&ETH_UDP4[14..], LinkType::RawIp).unwrap();
    assert_eq!((m.class, m.l3, m.l4), (Class::Ipv4Udp, 0, 20));
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ETH_UDP4[14..]);
    let m = classify(&sll, LinkType::LinuxSll).unwrap();
    assert_eq!((m.class, m.l3, m.l4, m.dport), (Class::Ipv4Udp, 16, 36, 53));
    assert_eq!(
        classify(&sll[..15], LinkType::LinuxSll),
        Err(Drop::SllTruncated)
    );
    assert_eq!(classify(&[0x50; 30], LinkType::RawIp), Err(Drop::IpVersion));
    assert_eq!(classify(&[], LinkType::RawIp), Err(Drop::IpVersion));
}

/// Ethernet + IPv4 (valid header checksum) around `payload`.
fn v4_frame(p: u8, src: Ipv4Addr, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let eth = ethernet::Repr::parse(&ETH_UDP4).unwrap();
    let ip = ipv4::Repr {
        src,
        dst: D4,
        proto: p,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        frag: ipv4::Fragment {
            ident: 1,
            dont_frag: false,
            more_frags: more,
            offset,
        },
        options: Options::EMPTY,
        payload_len: payload.len() as u16,
    };
    let mut f = vec![0u8; 14 + ip.buffer_len()];
    eth.emit(&mut f).unwrap();
    ip.emit(&mut f[14..]).unwrap();
    f[34..].copy_from_slice(payload);
    f
}

fn v4(p: u8, payload: &[u8]) -> Vec<u8> {
    v4_frame(p, S4, 0, false, payload)
}

#[test]
fn classify_link_and_arp_drops() {
    assert_eq!(drop_of(&ETH_UDP4[..13]), Drop::EthTruncated);
    assert_eq!(drop_of(&QINQ_UDP6[..16]), Drop::VlanTruncated);
    assert_eq!(drop_of(&QINQ_UDP6[..21]), Drop::VlanTruncated);
    let mut f = QINQ_UDP6[..16].to_vec();
    f.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
    f.extend_from_slice(&QINQ_UDP6[16..]);
    assert_eq!(drop_of(&f), Drop::VlanTooDeep);
    assert_eq!(drop_of(&ETH_ARP_REQ[..41]), Drop::ArpTruncated);
    let mut f = ETH_ARP_REQ.to_vec();
    f[18] = 8;
    assert_eq!(drop_of(&f), Drop::ArpMalformed);
    assert_eq!(
        classify(&vec![0u8; 65536], LinkType::Ethernet),
        Err(Drop::FrameTooLong)
    );
}

#[test]
fn classify_ipv4_drops() {
    let mut f = ETH_UDP4.to_vec();
    f[14] = 0x65;
    assert_eq!(drop_of(&f), Drop::IpVersion);
    assert_eq!(drop_of(&ETH_UDP4[..33]), Drop::Ipv4Truncated);
    assert_eq!(drop_of(&ETH_UDP4[..63]), Drop::Ipv4Truncated);
    let mut f = ETH_UDP4.to_vec();
    f[14] = 0x44;
    assert_eq!(drop_of(&f), Drop::Ipv4BadIhl);
    let mut f = ETH_UDP4.to_vec();
    f[17] = 19;
    assert_eq!(drop_of(&f), Drop::Ipv4BadLength);
    let mut f = ETH_UDP4.to_vec();
    f[25] ^= 0x80;
    assert_eq!(drop_of(&f), Drop::Ipv4BadChecksum);
    for src in [Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::BROADCAST] {
        let f = v4_frame(proto::UDP, src, 0, false, &ETH_UDP4[34..]);
        assert_eq!(drop_of(&f), Drop::Ipv4BadSource, "{src}");
    }
    let f = v4_frame(proto::UDP, S4, 8191, false, &[0; 16]);
    assert_eq!(drop_of(&f), Drop::FragmentBad);
    let f = v4_frame(proto::TCP, S4, 1, true, &[0; 16]);
    assert_eq!(drop_of(&f), Drop::FragmentBad);
    let f = v4_frame(proto::TCP, S4, 2, true, &[0; 16]);
    assert_eq!(c(&f).frag, Frag::Later);
}

#[test]
fn classify_transport_drops() {
    assert_eq!(drop_of(&v4(proto::TCP, &[0; 19])), Drop::TcpTruncated);
    let mut seg = [0u8; 20];
    seg[12] = 0x40;
    assert_eq!(drop_of(&v4(proto::TCP, &seg)), Drop::TcpBadOffset);
    seg[12] = 0x60;
    assert_eq!(drop_of(&v4(proto::TCP, &seg)), Drop::TcpTruncated);
    assert_eq!(drop_of(&v4(proto::UDP, &[0; 7])), Drop::UdpTruncated);
    let mut dg = [0u8; 8];
    dg[5] = 9;
    assert_eq!(drop_of(&v4(proto::UDP, &dg)), Drop::UdpBadLength);
    dg[5] = 7;
    assert_eq!(drop_of(&v4(proto::UDP, &dg)), Drop::UdpBadLength);
    assert_eq!(
        drop_of(&v4(proto::ICMP, &[8, 0, 0, 0, 0, 0, 0])),
        Drop::IcmpTruncated
    );
    assert_eq!(drop_of(&v4(proto::CARP, &[0; 35])), Drop::CarpTruncated);
    assert_eq!(c(&v4(proto::CARP, &[0; 36])).class, Class::Carp);
    assert_eq!(drop_of(&v4(proto::PFSYNC, &[0; 19])), Drop::PfsyncTruncated);
    assert_eq!(c(&v4(proto::PFSYNC, &[0; 20])).class, Class::Pfsync);
    // A fragmented CARP message is not handed to the CARP handler.
    let f = v4_frame(proto::CARP, S4, 0, true, &[0; 40]);
    assert_eq!(c(&f).class, Class::Ipv4Other);
    // An unreachable whose quote stops short of 8 transport bytes.
    let q = &ETH_ICMP4_UNREACH[34..34 + 8 + 20 + 4];
    assert_eq!(drop_of(&v4(proto::ICMP, q)), Drop::IcmpQuotedBad);
}

#[test]
fn classify_ipv6_drops() {
    let mut f = ETH_UDP6_AH.to_vec();
    f[14] = 0x45;
    assert_eq!(drop_of(&f), Drop::IpVersion);
    assert_eq!(drop_of(&ETH_UDP6_AH[..53]), Drop::Ipv6Truncated);
    assert_eq!(drop_of(&ETH_UDP6_AH[..88]), Drop::Ipv6Truncated);
    let mut f = ETH_CARP6.to_vec();
    f[18..20].fill(0);
    f[20] = proto::HOPOPT;
    assert_eq!(drop_of(&f[..54]), Drop::Ipv6BadLength);
    let mut f = ETH_TCP6_EXT_FIRSTFRAG.to_vec();
    f[55] = 10;
    assert_eq!(drop_of(&f), Drop::Ipv6ExtTruncated);
    let ip = ipv6::Repr::parse(&ETH_UDP6_AH[14..]).unwrap();
    let chain: Vec<u8> = (0..9)
        .flat_map(|i| [if i == 8 { 59 } else { 60 }, 0, 1, 4, 0, 0, 0, 0])
        .collect();
    let ip = ipv6::Repr {
        next_header: proto::DSTOPTS,
        payload_len: chain.len() as u16,
        ..ip
    };
    let mut f = ETH_UDP6_AH[..14].to_vec();
    f.resize(14 + ip.buffer_len(), 0);
    ip.emit(&mut f[14..]).unwrap();
    f[54..].copy_from_slice(&chain);
    assert_eq!(drop_of(&f), Drop::Ipv6ExtTooMany);
}

#[test]
fn classify_every_truncation_of_every_frame() {
    for frame in ALL_FRAMES {
        let full = classify(frame, LinkType::Ethernet);
        assert!(full.is_ok(), "{full:?}");
        for n in 0..frame.len() {
            // Must not panic; the frame's own length fields make almost every prefix a drop.
            let got = classify(&frame[..n], LinkType::Ethernet);
            if let Ok(m) = got {
                assert!(usize::from(m.end) <= n && m.l4 <= m.end && m.l3 <= m.l4);
            }
        }
        for link in [LinkType::RawIp, LinkType::LinuxSll] {
            for n in 0..=frame.len() {
                let _ = classify(&frame[..n], link);
            }
        }
    }
    // For a frame without padding, every proper prefix is a named truncation drop.
    for n in 0..ETH_UDP4.len() {
        let want = if n < 14 {
            Drop::EthTruncated
        } else {
            Drop::Ipv4Truncated
        };
        assert_eq!(drop_of(&ETH_UDP4[..n]), want, "{n}");
    }
}

#[test]
fn every_drop_has_a_distinct_name() {
    let mut names: Vec<_> = Drop::ALL.iter().map(|d| d.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Drop::COUNT);
    assert!(names.iter().all(|n| n.starts_with("drop_")));
    let _ = checksum::checksum(&[]);
}

/// Checks the promises a `Meta` makes about its offsets.
fn assert_meta_sound(m: &Meta, len: usize) {
    assert!(
        m.l3 <= m.l4 && m.l4 <= m.end && usize::from(m.end) <= len,
        "{m:?}"
    );
    if let Some(q) = m.quoted {
        assert!(m.l4 < q.l3 && q.l3 < q.l4 && usize::from(q.l4) + 8 <= usize::from(m.end));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// Golden frames with random bytes overwritten: classify and every parser return a value
    /// or a named error, never panic, and a classified frame's offsets stay in bounds.
    #[test]
    fn mutated_frames_never_panic(
        which in 0..ALL_FRAMES.len(),
        edits in proptest::collection::vec((0usize..200, proptest::prelude::any::<u8>()), 1..6),
        cut in 0usize..200,
    ) {
        let mut f = ALL_FRAMES[which].to_vec();
        for (at, v) in edits {
            let n = f.len();
            f[at % n] = v;
        }
        let f = &f[..f.len() - cut % f.len()];
        for link in [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll] {
            if let Ok(m) = classify(f, link) {
                assert_meta_sound(&m, f.len());
            }
        }
        let ip = f.get(14..).unwrap_or(&[]);
        let _ = ethernet::Repr::parse(f);
        let _ = arp::Repr::parse(ip);
        let _ = ipv4::Repr::parse(ip);
        let _ = ipv6::Repr::parse(ip);
        let _ = ipv6::walk(f.first().copied().unwrap_or(0), ip);
        let _ = udp::Repr::parse(ip, Some(&A6));
        let _ = tcp::Repr::parse(ip, Some(&A4));
        let _ = icmp::Repr::parse(ip).map(|r| r.quoted());
        let _ = icmpv6::Repr::parse(ip, S6, D6).map(|r| r.quoted());
        let _ = icmp::quoted(ip);
        let _ = icmpv6::quoted(ip);
    }

    /// Random bytes of any length through classify.
    #[test]
    fn random_bytes_never_panic(f in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
        for link in [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll] {
            if let Ok(m) = classify(&f, link) {
                assert_meta_sound(&m, f.len());
            }
        }
    }
}

#[test]
fn golden_frames_have_sound_meta() {
    for frame in ALL_FRAMES {
        assert_meta_sound(&c(frame), frame.len());
    }
}

#[test]
fn ethernet_single_tag_round_trip() {
    let r = ethernet::Repr::parse(&VLAN_TCP4).unwrap();
    let t = r.tags[0].unwrap();
    assert_eq!((t.tpid, t.vid, r.tags[1]), (0x8100, 5, None));
    let mut out = [0u8; 18];
    r.emit(&mut out).unwrap();
    assert_eq!(out[..], VLAN_TCP4[..18]);
}

/// Ethernet + IPv6 around an ICMPv6 message built with `icmpv6::Repr::emit`.
fn v6_icmp(message: icmpv6::Message, data: &[u8]) -> Vec<u8> {
    let router: Ipv6Addr = "2001:db8::fe".parse().unwrap();
    let icmp = icmpv6::Repr { message, data };
    let ip = ipv6::Repr {
        src: router,
        dst: S6,
        next_header: proto::ICMPV6,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
        payload_len: icmp.buffer_len() as u16,
    };
    let mut f = ETH_ICMP6_ECHO[..14].to_vec();
    f.resize(14 + ip.buffer_len(), 0);
    ip.emit(&mut f[14..]).unwrap();
    icmp.emit(&mut f[54..], router, S6).unwrap();
    f
}

#[test]
fn classify_quotes_of_every_error_type() {
    // IPv4 time exceeded and parameter problem quote like unreachable does.
    let quote = &ETH_ICMP4_UNREACH[42..];
    for m in [
        icmp::Message::TimeExceeded { code: 0 },
        icmp::Message::ParamProblem {
            code: 0,
            pointer: 8,
        },
    ] {
        let r = icmp::Repr {
            message: m,
            data: quote,
        };
        let mut seg = vec![0u8; r.buffer_len()];
        r.emit(&mut seg).unwrap();
        let meta = c(&v4(proto::ICMP, &seg));
        let q = meta.quoted.unwrap();
        assert_eq!(
            (q.sport, q.dport, q.proto),
            (40001, 25, proto::TCP),
            "{m:?}"
        );
    }
    // An echo reply carries no quote.
    let r = icmp::Repr {
        message: icmp::Message::EchoReply { ident: 9, seq: 1 },
        data: b"x",
    };
    let mut seg = vec![0u8; r.buffer_len()];
    r.emit(&mut seg).unwrap();
    let meta = c(&v4(proto::ICMP, &seg));
    assert_eq!((meta.sport, meta.dport, meta.quoted), (9, 9, None));
    // ICMPv6 time exceeded quoting a TCP packet behind three extension headers.
    let f = v6_icmp(
        icmpv6::Message::TimeExceeded { code: 0 },
        &ETH_TCP6_EXT_FIRSTFRAG[14..],
    );
    let q = c(&f).quoted.unwrap();
    assert_eq!((q.proto, q.sport, q.dport), (proto::TCP, 40004, 443));
    assert_eq!((q.l3, q.l4), (62, 62 + 40 + 24));
    // ICMPv6 parameter problem quoting an echo request: the identifier in both ports.
    let f = v6_icmp(
        icmpv6::Message::ParamProblem {
            code: 1,
            pointer: 40,
        },
        &ETH_ICMP6_ECHO[14..],
    );
    let q = c(&f).quoted.unwrap();
    assert_eq!((q.proto, q.sport, q.dport), (proto::ICMPV6, 0x99, 0x99));
    // A quote of the wrong family is a bad quote.
    let f = v6_icmp(icmpv6::Message::DstUnreachable { code: 4 }, quote);
    assert_eq!(drop_of(&f), Drop::IcmpQuotedBad);
}
