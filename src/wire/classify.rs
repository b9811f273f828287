//! Classification of a received frame: one pass over the headers that yields a [`Meta`]
//! (offsets, addresses, ports, fragment state, the quoted flow of an ICMP error) or a named
//! [`Drop`] reason. Every frame ends in exactly one [`Class`] or one [`Drop`]; the replay and
//! the data plane count both, so the counters always add up to the number of frames.
//!
//! Validation happens here, once, at the boundary: code that holds a `Meta` may index the
//! frame at `l3`, `l4` and `end` without further bounds doubts (see `wire/mod.rs`).

use std::net::IpAddr;

/// How the bytes of a frame start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II, possibly with 802.1Q / 802.1ad tags.
    Ethernet,
    /// A bare IPv4 or IPv6 packet (pcap LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6).
    RawIp,
    /// Linux cooked capture v1 (LINKTYPE_LINUX_SLL, 16-byte header).
    LinuxSll,
}

crate::named_counters! {
    /// What a frame is, once classified.
    pub enum Class {
        Arp = "arp",
        Carp = "carp",
        Pfsync = "pfsync",
        Ipv4Tcp = "ipv4_tcp",
        Ipv4Udp = "ipv4_udp",
        Ipv4Icmp = "ipv4_icmp",
        Ipv4Other = "ipv4_other",
        Ipv6Tcp = "ipv6_tcp",
        Ipv6Udp = "ipv6_udp",
        Ipv6Icmp = "ipv6_icmp",
        Ipv6Other = "ipv6_other",
        /// A well-formed frame of another ethertype (LLDP, MPLS, ...): passed on, not ours.
        Other = "other",
    }
}

crate::named_counters! {
    /// Why a frame could not be classified. Each is a per-core counter shown by
    /// `carpioctl show counters` and printed by `carpio replay`.
    pub enum Drop {
        EthTruncated = "drop_eth_truncated",
        VlanTruncated = "drop_vlan_truncated",
        VlanTooDeep = "drop_vlan_too_deep",
        SllTruncated = "drop_sll_truncated",
        ArpTruncated = "drop_arp_truncated",
        ArpMalformed = "drop_arp_malformed",
        IpVersion = "drop_ip_version",
        Ipv4Truncated = "drop_ipv4_truncated",
        Ipv4BadIhl = "drop_ipv4_bad_ihl",
        Ipv4BadLength = "drop_ipv4_bad_length",
        Ipv4BadChecksum = "drop_ipv4_bad_checksum",
        Ipv4BadSource = "drop_ipv4_bad_source",
        Ipv6Truncated = "drop_ipv6_truncated",
        Ipv6BadLength = "drop_ipv6_bad_length",
        Ipv6ExtTruncated = "drop_ipv6_ext_truncated",
        Ipv6ExtTooMany = "drop_ipv6_ext_too_many",
        TcpTruncated = "drop_tcp_truncated",
        TcpBadOffset = "drop_tcp_bad_offset",
        UdpTruncated = "drop_udp_truncated",
        UdpBadLength = "drop_udp_bad_length",
        IcmpTruncated = "drop_icmp_truncated",
        CarpTruncated = "drop_carp_truncated",
        PfsyncTruncated = "drop_pfsync_truncated",
        FragmentBad = "drop_fragment_bad",
    }
}

/// Address family of the network header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Af {
    #[default]
    V4,
    V6,
}

/// Fragment state of the network packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frag {
    /// Not a fragment.
    #[default]
    None,
    /// First fragment (offset 0, more fragments): the transport header is present.
    First,
    /// A later fragment: no transport header, `sport`/`dport` are 0.
    Later,
}

/// The flow quoted inside an ICMP or ICMPv6 error (RFC 792, RFC 4443 §2.4): the header of the
/// packet that caused the error, as the original sender sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// Offset of the quoted IP header in the frame.
    pub l3: u16,
    /// Offset of the quoted transport header; its first 8 bytes are present (ports at least).
    pub l4: u16,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// What classification learned about a frame. Offsets are from the start of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub class: Class,
    /// Offset of the Ethernet header's ethertype field's payload, i.e. the ARP/IP header.
    pub l3: u16,
    /// Offset of the transport header (or of the CARP/pfsync header); equals `end` when absent.
    pub l4: u16,
    /// End of the network packet by its own length field (Ethernet padding excluded).
    pub end: u16,
    /// Up to two VLAN ids (outer first); 0 when untagged.
    pub vlan: [u16; 2],
    pub af: Af,
    /// Transport protocol (IPv4 protocol / IPv6 final next header); 0 for non-IP.
    pub proto: u8,
    /// Network source and destination; unspecified for non-IP.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Transport ports (TCP/UDP) or the ICMP echo identifier in both; 0 when absent.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...).
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type and code.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub frag: Frag,
    /// For ICMP errors: the flow the error is about.
    pub quoted: Option<Quoted>,
}

/// Classifies one frame (placeholder until the wire layer lands: everything is `Other`).
pub fn classify(frame: &[u8], _link: LinkType) -> Result<Meta, Drop> {
    if frame.len() < 14 {
        return Err(Drop::EthTruncated);
    }
    Ok(Meta {
        class: Class::Other,
        l3: 14,
        l4: frame.len() as u16,
        end: frame.len() as u16,
        vlan: [0; 2],
        af: Af::V4,
        proto: 0,
        src: IpAddr::from([0, 0, 0, 0]),
        dst: IpAddr::from([0, 0, 0, 0]),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        ttl: 0,
        frag: Frag::None,
        quoted: None,
    })
}
