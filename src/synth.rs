//! Synthetic captures for benchmarks and demos: many client flows of DNS (UDP 53), NTP (UDP 123,
//! client mode) and SMTP (TCP 25: handshake, EHLO, QUIT, FIN) toward one or more virtual
//! addresses, as a client-side capture (what reaches the balancer's interface).
//!
//! Deterministic for a given seed, so benchmark inputs are reproducible. Frames are built with
//! `pnet_packet`'s mutable views; checksums are filled with RFC 1071 sums.

use crate::phy::pcap::PcapSink;
use crate::wire::checksum;
use crate::wire::classify::LinkType;
use pnet_base::MacAddr;
use pnet_packet::Packet as _;
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet_packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet_packet::ipv4::MutableIpv4Packet;
use pnet_packet::ipv6::MutableIpv6Packet;
use pnet_packet::tcp::MutableTcpPacket;
use pnet_packet::udp::MutableUdpPacket;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// Which services the generated flows use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Dns,
    Ntp,
    Smtp,
}

/// Generator parameters.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub flows: u64,
    /// Services, chosen round-robin per flow.
    pub services: Vec<Service>,
    /// Virtual addresses of the services (IPv4 and/or IPv6); a flow's family follows its VIP.
    pub vips: Vec<IpAddr>,
    /// Share of flows, in percent, that use an IPv6 VIP when both families are given.
    pub v6_percent: u8,
    pub client_mac: [u8; 6],
    pub lb_mac: [u8; 6],
    pub seed: u64,
    /// Packets per second of capture time (timestamps are spaced evenly).
    pub pps: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            flows: 1000,
            services: vec![Service::Dns, Service::Ntp, Service::Smtp],
            vips: vec![
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)),
                IpAddr::V6("2001:db8::10".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
            ],
            v6_percent: 20,
            client_mac: [0x02, 0, 0, 0, 0, 0x01],
            lb_mac: [0x02, 0, 0, 0, 0, 0x02],
            seed: 1,
            pps: 1_000_000,
        }
    }
}

/// xorshift64*: small, deterministic, good enough to spread ports and addresses.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Client address of flow `i`: IPv4 from 198.19.0.0/16 (then 198.18.128.0/17), IPv6 from
/// 2001:db8:c::/64, both inside the benchmarking ranges.
fn client_addr(i: u64, v6: bool) -> IpAddr {
    if v6 {
        let mut o = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        o[8..].copy_from_slice(&(i + 1).to_be_bytes());
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        let n = (i % (65536 + 32768)) as u32;
        let base = if n < 65536 {
            u32::from(Ipv4Addr::new(198, 19, 0, 0)) + n
        } else {
            u32::from(Ipv4Addr::new(198, 18, 128, 0)) + (n - 65536)
        };
        IpAddr::V4(Ipv4Addr::from(base))
    }
}

/// Builds one Ethernet frame carrying `payload` over UDP or TCP from `src:sport` to `dst:dport`.
#[allow(clippy::too_many_arguments)]
pub fn build_frame(
    cfg_src_mac: [u8; 6],
    cfg_dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    proto: IpNextHeaderProtocol,
    sport: u16,
    dport: u16,
    tcp: Option<(u32, u32, u8)>,
    payload: &[u8],
) -> Vec<u8> {
    let l4_len = if tcp.is_some() { 20 } else { 8 } + payload.len();
    let l3_len = match dst {
        IpAddr::V4(_) => 20,
        IpAddr::V6(_) => 40,
    };
    let mut buf = vec![0u8; 14 + l3_len + l4_len];
    {
        let Some(mut eth) = MutableEthernetPacket::new(&mut buf) else {
            return Vec::new();
        };
        eth.set_destination(MacAddr::from(cfg_dst_mac));
        eth.set_source(MacAddr::from(cfg_src_mac));
        eth.set_ethertype(if l3_len == 20 {
            EtherTypes::Ipv4
        } else {
            EtherTypes::Ipv6
        });
    }
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let Some(mut ip) = MutableIpv4Packet::new(&mut buf[14..]) else {
                return Vec::new();
            };
            ip.set_version(4);
            ip.set_header_length(5);
            ip.set_total_length((20 + l4_len) as u16);
            ip.set_ttl(64);
            ip.set_flags(2);
            ip.set_next_level_protocol(proto);
            ip.set_source(s);
            ip.set_destination(d);
            let c = checksum::checksum(&ip.packet()[..20]);
            ip.set_checksum(c);
            checksum::pseudo_v4(s, d, proto.0, l4_len as u16)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let Some(mut ip) = MutableIpv6Packet::new(&mut buf[14..]) else {
                return Vec::new();
            };
            ip.set_version(6);
            ip.set_payload_length(l4_len as u16);
            ip.set_next_header(proto);
            ip.set_hop_limit(64);
            ip.set_source(s);
            ip.set_destination(d);
            checksum::pseudo_v6(s, d, proto.0, l4_len as u32)
        }
        _ => return Vec::new(),
    };
    let l4 = 14 + l3_len;
    if let Some((seq, ack, flags)) = tcp {
        let Some(mut t) = MutableTcpPacket::new(&mut buf[l4..]) else {
            return Vec::new();
        };
        t.set_source(sport);
        t.set_destination(dport);
        t.set_sequence(seq);
        t.set_acknowledgement(ack);
        t.set_data_offset(5);
        t.set_flags(flags);
        t.set_window(64240);
        t.set_payload(payload);
    } else {
        let Some(mut u) = MutableUdpPacket::new(&mut buf[l4..]) else {
            return Vec::new();
        };
        u.set_source(sport);
        u.set_destination(dport);
        u.set_length(l4_len as u16);
        u.set_payload(payload);
    }
    let c = checksum::fold(checksum::sum(&buf[l4..], pseudo));
    let off = if tcp.is_some() { l4 + 16 } else { l4 + 6 };
    let c = if tcp.is_some() {
        c
    } else {
        checksum::udp_nonzero(c)
    };
    buf[off..off + 2].copy_from_slice(&c.to_be_bytes());
    buf
}

/// A DNS query for `name` type A, with id `id` (RFC 1035 §4.1).
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; QDCOUNT 1
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]); // QTYPE A, QCLASS IN
    q
}

/// An NTPv4 client request (RFC 5905 §7.3): LI 0, VN 4, mode 3, transmit timestamp set.
pub fn ntp_request(xmt: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23;
    p[40..48].copy_from_slice(&xmt.to_be_bytes());
    p
}

/// Writes the synthetic capture to `path`; returns the number of frames.
pub fn generate(cfg: &GenConfig, path: &Path) -> io::Result<u64> {
    let mut sink = PcapSink::create(path, LinkType::Ethernet)?;
    let mut rng = Rng(cfg.seed | 1);
    let v4: Vec<IpAddr> = cfg.vips.iter().copied().filter(IpAddr::is_ipv4).collect();
    let v6: Vec<IpAddr> = cfg.vips.iter().copied().filter(IpAddr::is_ipv6).collect();
    if cfg.services.is_empty() || (v4.is_empty() && v6.is_empty()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "gen: need at least one service and one virtual address",
        ));
    }
    let gap_ns = 1_000_000_000 / cfg.pps.max(1);
    let mut ts = 1_700_000_000_000_000_000u64;
    let (cm, lm) = (cfg.client_mac, cfg.lb_mac);
    for i in 0..cfg.flows {
        let use_v6 =
            !v6.is_empty() && (v4.is_empty() || (rng.next() % 100) < u64::from(cfg.v6_percent));
        let vips = if use_v6 { &v6 } else { &v4 };
        let vip = vips[(i as usize) % vips.len()];
        let client = client_addr(i, use_v6);
        let sport = 1024 + (rng.next() % 64000) as u16;
        let mut frames = Vec::with_capacity(5);
        match cfg.services[(i as usize) % cfg.services.len()] {
            Service::Dns => {
                let q = dns_query(rng.next() as u16, &format!("host{}.example.com", i % 1000));
                frames.push(build_frame(
                    cm,
                    lm,
                    client,
                    vip,
                    IpNextHeaderProtocols::Udp,
                    sport,
                    53,
                    None,
                    &q,
                ));
            }
            Service::Ntp => {
                frames.push(build_frame(
                    cm,
                    lm,
                    client,
                    vip,
                    IpNextHeaderProtocols::Udp,
                    sport,
                    123,
                    None,
                    &ntp_request(rng.next()),
                ));
            }
            Service::Smtp => {
                let isn = rng.next() as u32;
                let (syn, ack, psh, fin) = (0x02, 0x10, 0x08, 0x01);
                let srv = 0x1000_0000u32;
                let tcp = IpNextHeaderProtocols::Tcp;
                frames.push(build_frame(
                    cm,
                    lm,
                    client,
                    vip,
                    tcp,
                    sport,
                    25,
                    Some((isn, 0, syn)),
                    &[],
                ));
                frames.push(build_frame(
                    cm,
                    lm,
                    client,
                    vip,
                    tcp,
                    sport,
                    25,
                    Some((isn + 1, srv + 1, ack)),
                    &[],
                ));
                let ehlo = b"EHLO client.example\r\n";
                frames.push(build_frame(
                    cm,
                    lm,
                    client,
                    vip,
                    tcp,
                    sport,
                    25,
                    Some((isn + 1, srv + 1, ack | psh)),
                    ehlo,
                ));
                let seq = isn + 1 + ehlo.len() as u32;
                frames.push(build_frame(
                    cm,
                    lm,
                    client,
                    vip,
                    tcp,
                    sport,
                    25,
                    Some((seq, srv + 1, ack | psh)),
                    b"QUIT\r\n",
                ));
                frames.push(build_frame(
                    cm,
                    lm,
                    client,
                    vip,
                    tcp,
                    sport,
                    25,
                    Some((seq + 6, srv + 1, ack | fin)),
                    &[],
                ));
            }
        }
        for f in frames {
            sink.write(&f, ts)?;
            ts += gap_ns;
        }
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_valid_checksums() {
        let c = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));
        let v = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10));
        let f = build_frame(
            [2; 6],
            [4; 6],
            c,
            v,
            IpNextHeaderProtocols::Udp,
            5000,
            53,
            None,
            &dns_query(7, "a.example"),
        );
        // IPv4 header sums to zero, UDP with its pseudo-header too.
        assert_eq!(checksum::checksum(&f[14..34]), 0);
        let p = checksum::pseudo_v4(
            Ipv4Addr::new(198, 19, 0, 1),
            Ipv4Addr::new(198, 18, 0, 10),
            17,
            (f.len() - 34) as u16,
        );
        assert_eq!(checksum::fold(checksum::sum(&f[34..], p)), 0);
        let c6: IpAddr = "2001:db8:c::1".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let f = build_frame(
            [2; 6],
            [4; 6],
            c6,
            v6,
            IpNextHeaderProtocols::Tcp,
            5000,
            25,
            Some((1, 0, 2)),
            &[],
        );
        let (IpAddr::V6(s), IpAddr::V6(d)) = (c6, v6) else {
            unreachable!()
        };
        let p = checksum::pseudo_v6(s, d, 6, 20);
        assert_eq!(checksum::fold(checksum::sum(&f[54..], p)), 0);
    }

    #[test]
    fn generation_is_deterministic_and_counts_frames() {
        let dir = std::env::temp_dir();
        let a = dir.join(format!("carpio-gen-a-{}.pcap", std::process::id()));
        let b = dir.join(format!("carpio-gen-b-{}.pcap", std::process::id()));
        let cfg = GenConfig {
            flows: 30,
            ..GenConfig::default()
        };
        let n = generate(&cfg, &a).unwrap();
        assert_eq!(generate(&cfg, &b).unwrap(), n);
        // 10 DNS + 10 NTP single packets, 10 SMTP flows of 5 packets.
        assert_eq!(n, 10 + 10 + 50);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        std::fs::remove_file(a).ok();
        std::fs::remove_file(b).ok();
    }
}
