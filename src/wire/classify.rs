//! Classification of a received frame: one pass over the headers that yields a [`Meta`]
//! (offsets, addresses, ports, fragment state, the quoted flow of an ICMP error) or a named
//! [`Drop`] reason. Every frame ends in exactly one [`Class`] or one [`Drop`]; the replay and
//! the data plane count both, so the counters always add up to the number of frames.
//!
//! Validation happens here, once, at the boundary: code that holds a `Meta` may index the
//! frame at `l3`, `l4` and `end` without further bounds doubts (see `wire/mod.rs`).
//! [`classify`] itself never panics on any input: every read goes through a `pnet_packet` view
//! whose constructor checked the length, or through `get`, and every reject is a [`Drop`].
//!
//! This is the per-packet hot path: one pass over the headers, no allocation, no logging. The
//! IPv4 header checksum is verified (RFC 1122 §3.2.1.2: a datagram whose header checksum fails
//! is silently discarded); transport checksums are not, since the NIC or the backend does.

use std::net::{IpAddr, Ipv4Addr};

use pnet_packet::arp::ArpPacket;
use pnet_packet::ethernet::EthernetPacket;
use pnet_packet::icmp::IcmpPacket;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::sll::SLLPacket;
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;
use pnet_packet::vlan::VlanPacket;

use super::{Error, arp, checksum, ethernet, icmp, icmpv6, ipv4, ipv6, proto, tcp, udp};

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
        /// The frame is longer than the 16-bit offsets of `Meta` can describe (GRO/TSO
        /// super-frames from AF_PACKET, a pcap of them).
        FrameTooLong = "drop_frame_too_long",
        /// An ICMP/ICMPv6 error whose quoted packet is not an IP header of the right family
        /// followed by 8 transport bytes (RFC 792; OpenBSD `netinet/ip_icmp.c` `icmp_input`
        /// drops these as `icps_badlen`, Linux `icmp_unreach` likewise).
        IcmpQuotedBad = "drop_icmp_quoted_bad",
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
    /// Network source and destination; for ARP the sender and target protocol addresses;
    /// unspecified for other non-IP frames.
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

/// Minimum CARP message: `struct carp_header` (OpenBSD `netinet/ip_carp.h`), 36 bytes.
pub const CARP_MIN_LEN: usize = 36;
/// Minimum pfsync message: `struct pfsync_header` (OpenBSD `net/if_pfsync.h`), 20 bytes.
pub const PFSYNC_MIN_LEN: usize = 20;
/// Linux cooked capture v1 header (pcap LINKTYPE_LINUX_SLL); the protocol is its last field.
pub const SLL_HEADER_LEN: usize = 16;
/// Largest IP datagram a fragment may belong to (RFC 791, RFC 8200 §4.5).
const MAX_DATAGRAM: usize = 65535;

const UNSPECIFIED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Classifies one frame: which [`Class`] it is and where its headers are, or why it is dropped.
///
/// - ARP (Ethernet/IPv4 only) is [`Class::Arp`], `src`/`dst` the sender/target addresses.
/// - IP protocol 112 is [`Class::Carp`] (at least a 36-byte header), 240 [`Class::Pfsync`]
///   (at least 20 bytes), over IPv4 and IPv6; fragmented ones are `Ipv4Other`/`Ipv6Other`.
/// - TCP, UDP and ICMP/ICMPv6 per family; other protocols `Ipv4Other`/`Ipv6Other` with `l4`
///   at their header; other ethertypes [`Class::Other`].
/// - `end` is the end of the IP packet by its length field (Ethernet padding excluded); a
///   later fragment has `l4 == end` and no ports.
/// - ICMP echo request/reply: `sport == dport ==` identifier. ICMP errors (unreachable, time
///   exceeded, parameter problem, packet too big) fill `quoted` with the inner flow as the
///   original packet was sent.
/// - The IPv4 header checksum is verified; a multicast or broadcast IPv4 source is dropped.
pub fn classify(frame: &[u8], link: LinkType) -> Result<Meta, Drop> {
    if frame.len() > usize::from(u16::MAX) {
        return Err(Drop::FrameTooLong);
    }
    let mut vlan = [0u16; 2];
    let (ethertype, l3) = match link {
        LinkType::Ethernet => {
            let eth = EthernetPacket::new(frame).ok_or(Drop::EthTruncated)?;
            let mut et = eth.get_ethertype().0;
            let mut off = ethernet::HEADER_LEN;
            let mut n = 0;
            while ethernet::is_tag(et) {
                let slot = vlan.get_mut(n).ok_or(Drop::VlanTooDeep)?;
                let tag = frame
                    .get(off..)
                    .and_then(VlanPacket::new)
                    .ok_or(Drop::VlanTruncated)?;
                *slot = tag.get_vlan_identifier();
                et = tag.get_ethertype().0;
                off += ethernet::TAG_LEN;
                n += 1;
            }
            (et, off)
        }
        LinkType::LinuxSll => {
            // pnet 0.35's SLLPacket::new accepts 8 bytes (its minimum size forgets the
            // 8-byte address field) and get_protocol then indexes past the end: check the
            // whole header length first.
            let sll = frame
                .get(..SLL_HEADER_LEN)
                .and_then(SLLPacket::new)
                .ok_or(Drop::SllTruncated)?;
            (sll.get_protocol().0, SLL_HEADER_LEN)
        }
        LinkType::RawIp => match frame.first().map(|b| b >> 4) {
            Some(4) => (ethernet::ETHERTYPE_IPV4, 0),
            Some(6) => (ethernet::ETHERTYPE_IPV6, 0),
            _ => return Err(Drop::IpVersion),
        },
    };
    // Every offset below is at most frame.len(), checked above to fit in u16.
    let len = frame.len() as u16;
    let mut m = Meta {
        class: Class::Other,
        l3: l3 as u16,
        l4: len,
        end: len,
        vlan,
        af: Af::V4,
        proto: 0,
        src: UNSPECIFIED,
        dst: UNSPECIFIED,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        ttl: 0,
        frag: Frag::None,
        quoted: None,
    };
    let pkt = frame.get(l3..).unwrap_or(&[]);
    // The helpers fill `m` in place: Meta is ~100 bytes, not worth moving through each call.
    match ethertype {
        ethernet::ETHERTYPE_IPV4 => classify_v4(pkt, &mut m)?,
        ethernet::ETHERTYPE_IPV6 => classify_v6(pkt, &mut m)?,
        ethernet::ETHERTYPE_ARP => classify_arp(pkt, &mut m)?,
        _ => {}
    }
    Ok(m)
}

#[inline]
fn classify_arp(pkt: &[u8], m: &mut Meta) -> Result<(), Drop> {
    let a = ArpPacket::new(pkt).ok_or(Drop::ArpTruncated)?;
    if a.get_hardware_type().0 != arp::HTYPE_ETHERNET
        || a.get_protocol_type().0 != arp::PTYPE_IPV4
        || a.get_hw_addr_len() != arp::HLEN_ETHERNET
        || a.get_proto_addr_len() != arp::PLEN_IPV4
    {
        return Err(Drop::ArpMalformed);
    }
    m.class = Class::Arp;
    m.src = IpAddr::V4(a.get_sender_proto_addr());
    m.dst = IpAddr::V4(a.get_target_proto_addr());
    m.end = m.l3 + arp::PACKET_LEN as u16;
    m.l4 = m.end;
    Ok(())
}

#[inline]
fn classify_v4(pkt: &[u8], m: &mut Meta) -> Result<(), Drop> {
    let ip = Ipv4Packet::new(pkt).ok_or(Drop::Ipv4Truncated)?;
    if ip.get_version() != 4 {
        return Err(Drop::IpVersion);
    }
    let ihl = usize::from(ip.get_header_length()) * 4;
    if ihl < ipv4::MIN_HEADER_LEN {
        return Err(Drop::Ipv4BadIhl);
    }
    let total = usize::from(ip.get_total_length());
    if total < ihl {
        return Err(Drop::Ipv4BadLength);
    }
    let pkt = pkt.get(..total).ok_or(Drop::Ipv4Truncated)?;
    let (hdr, seg) = pkt.split_at_checked(ihl).ok_or(Drop::Ipv4Truncated)?;
    if checksum::checksum_wide(hdr) != 0 {
        return Err(Drop::Ipv4BadChecksum);
    }
    let src = ip.get_source();
    // RFC 1812 §5.3.7 / RFC 1122 §3.2.1.3: a multicast or limited-broadcast source is never
    // legitimate (OpenBSD `netinet/ip_input.c` drops such sources before delivery).
    if src.is_multicast() || src.is_broadcast() {
        return Err(Drop::Ipv4BadSource);
    }
    let offset = usize::from(ip.get_fragment_offset());
    let more = ip.get_flags() & ipv4::FLAG_MF != 0;
    let p = ip.get_next_level_protocol().0;
    m.frag = frag_state(offset, more, seg.len(), p)?;
    m.af = Af::V4;
    m.proto = p;
    m.src = IpAddr::V4(src);
    m.dst = IpAddr::V4(ip.get_destination());
    m.ttl = ip.get_ttl();
    m.end = m.l3 + total as u16;
    m.l4 = m.l3 + ihl as u16;
    transport(seg, m)
}

#[inline]
fn classify_v6(pkt: &[u8], m: &mut Meta) -> Result<(), Drop> {
    let ip = Ipv6Packet::new(pkt).ok_or(Drop::Ipv6Truncated)?;
    if ip.get_version() != 6 {
        return Err(Drop::IpVersion);
    }
    let plen = usize::from(ip.get_payload_length());
    let next = ip.get_next_header().0;
    // A zero payload length with a hop-by-hop header announces a jumbogram (RFC 2675), which
    // no link carpio runs on can carry.
    if plen == 0 && next == proto::HOPOPT {
        return Err(Drop::Ipv6BadLength);
    }
    let total = ipv6::HEADER_LEN + plen;
    let payload = pkt
        .get(ipv6::HEADER_LEN..total)
        .ok_or(Drop::Ipv6Truncated)?;
    let walk = ipv6::walk(next, payload).map_err(|e| match e {
        Error::TooManyExtensions => Drop::Ipv6ExtTooMany,
        _ => Drop::Ipv6ExtTruncated,
    })?;
    let seg = payload.get(walk.offset..).unwrap_or(&[]);
    m.frag = match walk.fragment {
        Some(f) => frag_state(usize::from(f.offset), f.more_frags, seg.len(), walk.proto)?,
        None => Frag::None,
    };
    m.af = Af::V6;
    m.proto = walk.proto;
    m.src = IpAddr::V6(ip.get_source());
    m.dst = IpAddr::V6(ip.get_destination());
    m.ttl = ip.get_hop_limit();
    m.end = m.l3 + total as u16;
    m.l4 = m.l3 + (ipv6::HEADER_LEN + walk.offset) as u16;
    transport(seg, m)
}

/// Fragment state, rejecting fragments no reassembly may accept: one that would end past the
/// largest datagram (the "ping of death", RFC 791's 16-bit length), and a TCP fragment at
/// offset 8 bytes, which can only serve to overwrite the TCP flags of the first one (RFC 1858
/// §4, OpenBSD pf's `pf_normalize_ip` "fragment overlaps the TCP header").
#[inline]
fn frag_state(offset: usize, more: bool, data_len: usize, p: u8) -> Result<Frag, Drop> {
    if offset == 0 {
        return Ok(if more { Frag::First } else { Frag::None });
    }
    if offset * 8 + data_len > MAX_DATAGRAM || (p == proto::TCP && offset == 1) {
        return Err(Drop::FragmentBad);
    }
    Ok(Frag::Later)
}

/// Fills the transport part of `m` from `seg` (from `l4` to `end`).
#[inline]
fn transport(seg: &[u8], m: &mut Meta) -> Result<(), Drop> {
    let v6 = m.af == Af::V6;
    let icmp_proto = if v6 { proto::ICMPV6 } else { proto::ICMP };
    let (c_tcp, c_udp, c_icmp, c_other) = if v6 {
        (
            Class::Ipv6Tcp,
            Class::Ipv6Udp,
            Class::Ipv6Icmp,
            Class::Ipv6Other,
        )
    } else {
        (
            Class::Ipv4Tcp,
            Class::Ipv4Udp,
            Class::Ipv4Icmp,
            Class::Ipv4Other,
        )
    };
    let p = m.proto;
    if m.frag == Frag::Later {
        // No transport header here: the middle of a datagram.
        m.class = match p {
            proto::TCP => c_tcp,
            proto::UDP => c_udp,
            _ if p == icmp_proto => c_icmp,
            _ => c_other,
        };
        m.l4 = m.end;
        return Ok(());
    }
    match p {
        proto::TCP => {
            let t = TcpPacket::new(seg).ok_or(Drop::TcpTruncated)?;
            let hlen = usize::from(t.get_data_offset()) * 4;
            if hlen < tcp::MIN_HEADER_LEN {
                return Err(Drop::TcpBadOffset);
            }
            if seg.len() < hlen {
                return Err(Drop::TcpTruncated);
            }
            m.class = c_tcp;
            m.sport = t.get_source();
            m.dport = t.get_destination();
            m.tcp_flags = t.get_flags();
        }
        proto::UDP => {
            let u = UdpPacket::new(seg).ok_or(Drop::UdpTruncated)?;
            let ulen = usize::from(u.get_length());
            // A first fragment holds only part of the datagram the length counts.
            if m.frag == Frag::None && (ulen < udp::HEADER_LEN || ulen > seg.len()) {
                return Err(Drop::UdpBadLength);
            }
            m.class = c_udp;
            m.sport = u.get_source();
            m.dport = u.get_destination();
        }
        proto::CARP | proto::PFSYNC if m.frag != Frag::None => {
            // carpio does not reassemble; a CARP or pfsync handler needs the whole message
            // (OpenBSD's carp_input and pfsync_input run after ip reassembly). A fragmented
            // one goes on as an ordinary packet.
            m.class = c_other;
        }
        proto::CARP => {
            if seg.len() < CARP_MIN_LEN {
                return Err(Drop::CarpTruncated);
            }
            m.class = Class::Carp;
        }
        proto::PFSYNC => {
            if seg.len() < PFSYNC_MIN_LEN {
                return Err(Drop::PfsyncTruncated);
            }
            m.class = Class::Pfsync;
        }
        _ if p == icmp_proto => {
            let i = IcmpPacket::new(seg)
                .filter(|_| seg.len() >= icmp::HEADER_LEN)
                .ok_or(Drop::IcmpTruncated)?;
            let (t, code) = (i.get_icmp_type().0, i.get_icmp_code().0);
            m.class = c_icmp;
            m.icmp_type = t;
            m.icmp_code = code;
            let (echo_req, echo_rep, is_err) = if v6 {
                (
                    icmpv6::ECHO_REQUEST,
                    icmpv6::ECHO_REPLY,
                    icmpv6::is_error(t),
                )
            } else {
                (icmp::ECHO_REQUEST, icmp::ECHO_REPLY, icmp::is_error(t))
            };
            if t == echo_req || t == echo_rep {
                let id = icmp::echo_ident(seg);
                m.sport = id;
                m.dport = id;
            } else if is_err {
                let data = seg.get(icmp::HEADER_LEN..).unwrap_or(&[]);
                let q = if v6 {
                    icmpv6::quoted(data)
                } else {
                    icmp::quoted(data)
                }
                .map_err(|_| Drop::IcmpQuotedBad)?;
                let ql3 = m.l4 + icmp::HEADER_LEN as u16;
                m.quoted = Some(Quoted {
                    l3: ql3,
                    l4: ql3 + q.l4 as u16,
                    proto: q.proto,
                    src: q.src,
                    dst: q.dst,
                    sport: q.sport,
                    dport: q.dport,
                });
            }
        }
        _ => m.class = c_other,
    }
    Ok(())
}
