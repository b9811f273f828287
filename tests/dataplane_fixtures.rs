//! Packet fixture tables through the real L4 pipeline (Katran's `KatranBaseTestFixtures.h`
//! shape): each fixture is `{description, input frame, expected output frame, verdict,
//! counters that must move}`, run through config text → `config::parse_str` →
//! `Snapshot::build` → `Worker::process` on a `phy::Batch`.
//!
//! Expected frames are built here, independently of carpio's rewrite code: a small frame
//! builder with its own RFC 1071 sum fills every checksum, and every frame the pipeline sends
//! is also verified by full recomputation (IPv4 header, TCP/UDP/ICMP/ICMPv6, quoted headers,
//! inner packets of tunnels). Covered: NAT, DSR, IPIP and GUE × IPv4/IPv6 × TCP/UDP (+ ICMP
//! errors quoting each) for a new flow, an established flow, the NAT reply path, ICMP errors
//! both ways, a backend going down (re-scheduled), a full flow table (stateless pick), traffic
//! that is not ours and malformed frames (and every truncation of every input). Then pcap in /
//! pcap out through `carpio replay` against committed files in `tests/fixtures/replay/` (regenerate them with
//! `CARPIO_BLESS=1 cargo test --test dataplane_fixtures`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use carpio::config::{self, Config};
use carpio::dataplane::flow::{Event, FlowTableConfig};
use carpio::dataplane::hash;
use carpio::dataplane::snapshot::{HostStates, Link, Snapshot, SnapshotCell};
use carpio::dataplane::worker::{Worker, WorkerConfig};
use carpio::phy::{Batch, Verdict};
use carpio::wire::classify::LinkType;
use crossbeam::queue::ArrayQueue;

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xc1, 0x01];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x01];
const B4_MAC: [[u8; 6]; 2] = [[0x02, 0, 0, 0, 0x01, 0x01], [0x02, 0, 0, 0, 0x01, 0x02]];
const B6_MAC: [[u8; 6]; 2] = [[0x02, 0, 0, 0, 0x06, 0x01], [0x02, 0, 0, 0, 0x06, 0x02]];
const GUE_PORT: u16 = 6080;
const NAT_PORT: u16 = 8080;
const CLIENT_PORT: u16 = 40000;
const SEED: u64 = 0x6361_7270_696f_6d67;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Nat,
    Dsr,
    Ipip,
    Gue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

/// Addresses of one family.
struct Addrs {
    vip: IpAddr,
    client: IpAddr,
    other_client: IpAddr,
    router: IpAddr,
    backends: [IpAddr; 2],
    macs: [[u8; 6]; 2],
    tunnel_src: IpAddr,
    not_ours: IpAddr,
}

fn addrs(f: Fam) -> Addrs {
    match f {
        Fam::V4 => Addrs {
            vip: ip("198.18.0.10"),
            client: ip("198.19.0.5"),
            other_client: ip("198.19.0.6"),
            router: ip("198.18.2.1"),
            backends: [ip("198.18.1.1"), ip("198.18.1.2")],
            macs: B4_MAC,
            tunnel_src: ip("198.18.0.1"),
            not_ours: ip("198.18.9.9"),
        },
        Fam::V6 => Addrs {
            vip: ip("2001:db8::10"),
            client: ip("2001:db8:c::5"),
            other_client: ip("2001:db8:c::6"),
            router: ip("2001:db8:2::1"),
            backends: [ip("2001:db8:1::1"), ip("2001:db8:1::2")],
            macs: B6_MAC,
            tunnel_src: ip("2001:db8::1"),
            not_ours: ip("2001:db8:9::9"),
        },
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The configuration of one forwarding mode: a v4 and a v6 redirect, TCP 80 and UDP 53 each.
fn config_text(mode: Mode) -> String {
    let fwd = |t: &str| match mode {
        Mode::Nat => format!("forward to <{t}> port {NAT_PORT} check icmp"),
        Mode::Dsr => format!("route to <{t}> check icmp interface eth1"),
        Mode::Ipip => format!("forward to <{t}> check icmp encap ipip"),
        Mode::Gue => format!("forward to <{t}> check icmp encap gue port {GUE_PORT}"),
    };
    let (a4, a6) = (addrs(Fam::V4), addrs(Fam::V6));
    format!(
        "table <w4> {{ {} lladdr \"{}\", {} lladdr \"{}\" }}\n\
         table <w6> {{ {} lladdr \"{}\", {} lladdr \"{}\" }}\n\
         redirect r4 {{\n listen on {} tcp port 80\n listen on {} udp port 53\n {}\n}}\n\
         redirect r6 {{\n listen on {} tcp port 80\n listen on {} udp port 53\n {}\n}}\n",
        a4.backends[0],
        mac_str(B4_MAC[0]),
        a4.backends[1],
        mac_str(B4_MAC[1]),
        a6.backends[0],
        mac_str(B6_MAC[0]),
        a6.backends[1],
        mac_str(B6_MAC[1]),
        a4.vip,
        a4.vip,
        fwd("w4"),
        a6.vip,
        a6.vip,
        fwd("w6"),
    )
}

fn link() -> Link {
    Link {
        mac: LB_MAC,
        gateway_mac: Some(GW_MAC),
        tunnel_src_v4: Some(addrs(Fam::V4).tunnel_src),
        tunnel_src_v6: Some(addrs(Fam::V6).tunnel_src),
        mtu: 1500,
    }
}

// ---------------------------------------------------------------------------------------
// Frame builder with its own checksums (independent of carpio::wire::checksum).

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

fn finish16(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
            acc += u32::from(proto) + len as u32;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
            acc += (len as u32 >> 16) + (len as u32 & 0xffff) + u32::from(proto);
        }
        _ => panic!("mixed families"),
    }
    acc
}

#[derive(Clone, Copy)]
enum L4<'a> {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// An ICMP error (type, code) quoting `quote` (an IP packet).
    IcmpError {
        ty: u8,
        code: u8,
        quote: &'a [u8],
    },
}

/// An IP packet with every checksum filled.
fn ip_packet(src: IpAddr, dst: IpAddr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let (proto, mut seg) = match l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
        } => {
            let mut s = Vec::new();
            s.extend_from_slice(&sport.to_be_bytes());
            s.extend_from_slice(&dport.to_be_bytes());
            s.extend_from_slice(&0x0101_0101u32.to_be_bytes()); // seq
            s.extend_from_slice(&0u32.to_be_bytes()); // ack
            s.extend_from_slice(&[5 << 4, flags]);
            s.extend_from_slice(&8192u16.to_be_bytes()); // window
            s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
            s.extend_from_slice(payload);
            (6u8, s)
        }
        L4::Udp { sport, dport } => {
            let mut s = Vec::new();
            s.extend_from_slice(&sport.to_be_bytes());
            s.extend_from_slice(&dport.to_be_bytes());
            s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            s.extend_from_slice(&[0, 0]);
            s.extend_from_slice(payload);
            (17u8, s)
        }
        L4::IcmpError { ty, code, quote } => {
            let mut s = vec![ty, code, 0, 0, 0, 0, 0, 0];
            s.extend_from_slice(quote);
            (if v6 { 58u8 } else { 1u8 }, s)
        }
    };
    let c = match proto {
        1 => finish16(sum16(&seg, 0)),
        _ => finish16(sum16(&seg, pseudo(src, dst, proto, seg.len()))),
    };
    let at = match proto {
        6 => 16,
        17 => 6,
        _ => 2,
    };
    let c = if proto == 17 && c == 0 { 0xffff } else { c };
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[0x12, 0x34, 0, 0, 64, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let c = finish16(sum16(&p, 0));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            p.extend_from_slice(&[proto, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    p.extend_from_slice(&seg);
    p
}

/// `ip` as a router forwards it: TTL / hop limit one less, the IPv4 header checksum
/// recomputed from scratch (NAT forwards like pf's rdr through `ip_forward`).
fn forwarded(mut ip: Vec<u8>) -> Vec<u8> {
    if ip[0] >> 4 == 4 {
        ip[8] -= 1;
        ip[10..12].fill(0);
        let c = finish16(sum16(&ip[..20], 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        ip[7] -= 1;
    }
    ip
}

/// `ip` with its TTL / hop limit set to `ttl` (IPv4 header checksum recomputed).
fn with_ttl(mut ip: Vec<u8>, ttl: u8) -> Vec<u8> {
    if ip[0] >> 4 == 4 {
        ip[8] = ttl;
        ip[10..12].fill(0);
        let c = finish16(sum16(&ip[..20], 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        ip[7] = ttl;
    }
    ip
}

fn ethertype(ip: &[u8]) -> [u8; 2] {
    if ip[0] >> 4 == 6 {
        [0x86, 0xdd]
    } else {
        [0x08, 0x00]
    }
}

fn eth(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype(ip));
    f.extend_from_slice(ip);
    f
}

/// The tunnel packet the balancer must send: outer IP (and UDP for GUE) around `inner`.
fn encapsulated(mode: Mode, src: IpAddr, dst: IpAddr, inner: &[u8], entropy: u32) -> Vec<u8> {
    let inner_v6 = inner[0] >> 4 == 6;
    let tos = if inner_v6 {
        (inner[0] << 4) | (inner[1] >> 4)
    } else {
        inner[1]
    };
    let mut body = Vec::new();
    let proto = match mode {
        Mode::Gue => {
            let sport = 0xc000 | (entropy as u16 & 0x3fff);
            body.extend_from_slice(&sport.to_be_bytes());
            body.extend_from_slice(&GUE_PORT.to_be_bytes());
            body.extend_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(inner);
            if src.is_ipv6() {
                // RFC 8200 §8.1: a UDP checksum is mandatory over IPv6.
                let c = finish16(sum16(&body, pseudo(src, dst, 17, body.len())));
                body[6..8].copy_from_slice(&c.to_be_bytes());
            }
            17
        }
        _ => {
            body.extend_from_slice(inner);
            if inner_v6 { 41 } else { 4 }
        }
    };
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&[0x45, tos]);
            p.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]); // id 0, DF
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let c = finish16(sum16(&p, 0));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let word = (6u32 << 28) | (u32::from(tos) << 20) | (entropy & 0x000f_ffff);
            p.extend_from_slice(&word.to_be_bytes());
            p.extend_from_slice(&(body.len() as u16).to_be_bytes());
            p.extend_from_slice(&[proto, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    p.extend_from_slice(&body);
    p
}

// ---------------------------------------------------------------------------------------
// Full recomputation of every checksum of a frame.

fn verify_frame(f: &[u8]) {
    assert!(f.len() >= 14, "frame shorter than Ethernet");
    verify_ip(&f[14..], false);
}

/// Recomputes every checksum of an IP packet; `quoted` packets (inside ICMP errors) are
/// checked the same way (our quotes are complete packets).
fn verify_ip(p: &[u8], quoted: bool) {
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match p[0] >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0xf) * 4;
            assert_eq!(finish16(sum16(&p[..ihl], 0)), 0, "IPv4 header checksum");
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            assert_eq!(total, p.len(), "IPv4 total length");
            let s: [u8; 4] = p[12..16].try_into().unwrap();
            let d: [u8; 4] = p[16..20].try_into().unwrap();
            (s.into(), d.into(), p[9], &p[ihl..])
        }
        6 => {
            let plen = usize::from(u16::from_be_bytes([p[4], p[5]]));
            assert_eq!(plen + 40, p.len(), "IPv6 payload length");
            let s: [u8; 16] = p[8..24].try_into().unwrap();
            let d: [u8; 16] = p[24..40].try_into().unwrap();
            (s.into(), d.into(), p[6], &p[40..])
        }
        v => panic!("IP version {v}"),
    };
    match proto {
        4 | 41 => verify_ip(l4, quoted),
        1 => {
            assert_eq!(finish16(sum16(l4, 0)), 0, "ICMP checksum");
            if l4[0] == 3 || l4[0] == 11 {
                verify_ip(&l4[8..], true);
            }
        }
        58 => {
            assert_eq!(
                finish16(sum16(l4, pseudo(src, dst, 58, l4.len()))),
                0,
                "ICMPv6 checksum"
            );
            if l4[0] < 128 {
                verify_ip(&l4[8..], true);
            }
        }
        6 => assert_eq!(
            finish16(sum16(l4, pseudo(src, dst, 6, l4.len()))),
            0,
            "TCP checksum"
        ),
        17 => {
            if src.is_ipv4() && l4[6..8] == [0, 0] {
                // RFC 768: no checksum (GUE over IPv4); the inner packet still is checked.
            } else {
                assert_eq!(
                    finish16(sum16(l4, pseudo(src, dst, 17, l4.len()))),
                    0,
                    "UDP checksum"
                );
            }
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            if dport == GUE_PORT && !quoted {
                verify_ip(&l4[8..], quoted);
            }
        }
        p => panic!("protocol {p}"),
    }
}

// ---------------------------------------------------------------------------------------
// The pipeline under test.

struct Rig {
    cfg: Config,
    cell: Arc<SnapshotCell>,
    worker: Worker,
    _events: Arc<ArrayQueue<Event>>,
    now: u32,
}

fn host_ids(cfg: &Config, addr: IpAddr) -> Vec<u32> {
    cfg.hosts()
        .filter(|h| h.addr == config::Address::Ip(addr))
        .map(|h| h.id)
        .collect()
}

impl Rig {
    /// The pipeline of `mode` with the second backend of each family down, so new flows go
    /// to the first one (deterministic expected frames for every scheduler).
    fn new(mode: Mode, capacity: u32) -> Rig {
        let text = config_text(mode);
        let cfg = config::parse_str("fixtures.conf", &text, &[])
            .unwrap_or_else(|e| panic!("{text}\n{e}"));
        let snap = Snapshot::build(&cfg, &HostStates::default(), link(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let cell = Arc::new(SnapshotCell::from_pointee(snap));
        let events = Arc::new(ArrayQueue::new(1 << 12));
        let wc = WorkerConfig {
            flow: FlowTableConfig {
                capacity,
                ..FlowTableConfig::default()
            },
            ..WorkerConfig::default()
        };
        assert_eq!(wc.hash_seed, SEED);
        let worker =
            Worker::new(wc, cell.clone(), events.clone(), None).unwrap_or_else(|e| panic!("{e:?}"));
        let mut rig = Rig {
            cfg,
            cell,
            worker,
            _events: events,
            now: 100,
        };
        rig.set_up(0);
        rig
    }

    /// Rebuilds the snapshot (keeping indices) with only backend `up` of each family up.
    fn set_up(&mut self, up: usize) {
        let down_addr = |f: Fam| addrs(f).backends[1 - up];
        let mut down = host_ids(&self.cfg, down_addr(Fam::V4));
        down.extend(host_ids(&self.cfg, down_addr(Fam::V6)));
        assert!(!down.is_empty());
        let st = HostStates {
            down,
            ..Default::default()
        };
        let prev = self.cell.load_full();
        let snap =
            Snapshot::build(&self.cfg, &st, link(), Some(&prev)).unwrap_or_else(|e| panic!("{e}"));
        self.cell.store(Arc::new(snap));
    }

    /// Runs one frame through the worker: verdict, the frame as it leaves, and every
    /// counter that moved (name, delta).
    fn run(&mut self, frame: &[u8]) -> (Verdict, Vec<u8>, Vec<(&'static str, u64)>) {
        let before = self.worker.counter_values();
        let mut batch = Batch::new(4);
        assert!(batch.push(
            frame,
            u64::from(self.now) * 1_000_000_000,
            LinkType::Ethernet
        ));
        self.worker.process(&mut batch, self.now);
        self.now += 1;
        let after = self.worker.counter_values();
        let moved = before
            .iter()
            .zip(after.iter())
            .filter(|(b, a)| a.1 != b.1)
            .map(|(_, a)| {
                (
                    a.0,
                    a.1 - before.iter().find(|b| b.0 == a.0).map_or(0, |b| b.1),
                )
            })
            .collect();
        let p = batch.iter().next().unwrap_or_else(|| panic!("empty batch"));
        (p.verdict, p.data().to_vec(), moved)
    }
}

/// One fixture: what goes in, what must come out, the verdict and the counters that must move
/// by exactly one.
struct Fixture {
    desc: String,
    input: Vec<u8>,
    /// `None`: the frame must leave unchanged.
    expected: Option<Vec<u8>>,
    verdict: Verdict,
    counters: Vec<&'static str>,
}

enum Step {
    Run(Fixture),
    /// Rebuild the snapshot with only this backend (0 or 1) of each family up.
    Up(usize),
}

fn check(rig: &mut Rig, fx: &Fixture) {
    let (verdict, out, moved) = rig.run(&fx.input);
    assert_eq!(
        verdict, fx.verdict,
        "{}: verdict (moved {moved:?})",
        fx.desc
    );
    let expected = fx.expected.as_ref().unwrap_or(&fx.input);
    assert_eq!(
        out,
        *expected,
        "{}: output frame (moved {moved:?})\n got {}\nwant {}",
        fx.desc,
        hex(&out),
        hex(expected)
    );
    for c in &fx.counters {
        let d = moved.iter().find(|m| m.0 == *c).map_or(0, |m| m.1);
        assert_eq!(d, 1, "{}: counter {c} (moved {moved:?})", fx.desc);
    }
    if verdict == Verdict::Tx {
        verify_frame(&out);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

fn tx_counter(mode: Mode) -> &'static str {
    match mode {
        Mode::Nat => "tx_nat_in",
        Mode::Dsr => "tx_dsr",
        Mode::Ipip | Mode::Gue => "tx_encap",
    }
}

/// Builds the fixture sequence of one (mode, family, protocol).
fn sequence(mode: Mode, fam: Fam, proto: Proto) -> Vec<Step> {
    let a = addrs(fam);
    let vport = match proto {
        Proto::Tcp => 80,
        Proto::Udp => 53,
    };
    let bport = if mode == Mode::Nat { NAT_PORT } else { vport };
    let l4 = |sport, dport, flags| match proto {
        Proto::Tcp => L4::Tcp {
            sport,
            dport,
            flags,
        },
        Proto::Udp => L4::Udp { sport, dport },
    };
    let payload = b"fixture";
    let tag = format!("{mode:?}/{fam:?}/{proto:?}");
    let pnum = if proto == Proto::Tcp { 6 } else { 17 };
    // Client → VIP and what the balancer must make of it for backend `b`.
    let to_vip = |client: IpAddr, flags: u8| {
        ip_packet(client, a.vip, l4(CLIENT_PORT, vport, flags), payload)
    };
    let to_backend = |client: IpAddr, flags: u8, b: usize| -> Vec<u8> {
        let inner = to_vip(client, flags);
        match mode {
            Mode::Nat => eth(
                a.macs[b],
                LB_MAC,
                &forwarded(ip_packet(
                    client,
                    a.backends[b],
                    l4(CLIENT_PORT, bport, flags),
                    payload,
                )),
            ),
            Mode::Dsr => eth(a.macs[b], LB_MAC, &inner),
            Mode::Ipip | Mode::Gue => {
                let entropy = hash::directed(
                    SEED,
                    pnum,
                    &hash::addr16(client),
                    CLIENT_PORT,
                    &hash::addr16(a.vip),
                    vport,
                );
                eth(
                    a.macs[b],
                    LB_MAC,
                    &encapsulated(mode, a.tunnel_src, a.backends[b], &inner, entropy),
                )
            }
        }
    };
    let fx = |desc: &str, input: Vec<u8>, expected: Option<Vec<u8>>, verdict, counters| {
        Step::Run(Fixture {
            desc: format!("{tag}: {desc}"),
            input,
            expected,
            verdict,
            counters,
        })
    };
    let (syn, ack, synack) = (0x02, 0x10, 0x12);
    let tx = tx_counter(mode);
    let mut steps = vec![
        fx(
            "new flow goes to the up backend",
            eth(LB_MAC, CLIENT_MAC, &to_vip(a.client, syn)),
            Some(to_backend(a.client, syn, 0)),
            Verdict::Tx,
            vec!["flow_new", tx],
        ),
        fx(
            "established flow keeps its backend",
            eth(LB_MAC, CLIENT_MAC, &to_vip(a.client, ack)),
            Some(to_backend(a.client, ack, 0)),
            Verdict::Tx,
            vec!["flow_hit", tx],
        ),
    ];
    // ICMP v4 "port unreachable" (3/3) or ICMPv6 "port unreachable" (1/4).
    let (unreach_ty, unreach_code) = match fam {
        Fam::V4 => (3, 3),
        Fam::V6 => (1, 4),
    };
    if mode == Mode::Nat {
        let reply = |b: usize| {
            ip_packet(
                a.backends[b],
                a.client,
                l4(bport, CLIENT_PORT, synack),
                payload,
            )
        };
        let unnat = forwarded(ip_packet(
            a.vip,
            a.client,
            l4(vport, CLIENT_PORT, synack),
            payload,
        ));
        steps.push(fx(
            "reply path: backend → client is un-NATed",
            eth(LB_MAC, a.macs[0], &reply(0)),
            Some(eth(CLIENT_MAC, LB_MAC, &unnat)),
            Verdict::Tx,
            vec!["flow_return_hit", "tx_nat_out"],
        ));
        // An ICMP error from the backend about the client's packet: the client sees it come
        // from the VIP, about its packet to the VIP.
        let q_in = ip_packet(
            a.client,
            a.backends[0],
            l4(CLIENT_PORT, bport, ack),
            payload,
        );
        let q_out = to_vip(a.client, ack);
        steps.push(fx(
            "ICMP error from the backend goes to the client as from the VIP",
            eth(
                LB_MAC,
                a.macs[0],
                &ip_packet(
                    a.backends[0],
                    a.client,
                    L4::IcmpError {
                        ty: unreach_ty,
                        code: unreach_code,
                        quote: &q_in,
                    },
                    b"",
                ),
            ),
            Some(eth(
                CLIENT_MAC,
                LB_MAC,
                &forwarded(ip_packet(
                    a.vip,
                    a.client,
                    L4::IcmpError {
                        ty: unreach_ty,
                        code: unreach_code,
                        quote: &q_out,
                    },
                    b"",
                )),
            )),
            Verdict::Tx,
            vec!["tx_icmp_error_to_client"],
        ));
    }
    // An ICMP error from a router about a packet the VIP sent to the client: it follows the
    // flow to its backend (NAT: translated as pf does; other modes: MAC rewrite only, the
    // backends hold the VIP).
    let q_vip = ip_packet(a.vip, a.client, l4(vport, CLIENT_PORT, ack), payload);
    let icmp_in = ip_packet(
        a.router,
        a.vip,
        L4::IcmpError {
            ty: unreach_ty,
            code: unreach_code,
            quote: &q_vip,
        },
        b"",
    );
    let icmp_out = match mode {
        Mode::Nat => {
            let q = ip_packet(
                a.backends[0],
                a.client,
                l4(bport, CLIENT_PORT, ack),
                payload,
            );
            forwarded(ip_packet(
                a.router,
                a.backends[0],
                L4::IcmpError {
                    ty: unreach_ty,
                    code: unreach_code,
                    quote: &q,
                },
                b"",
            ))
        }
        _ => icmp_in.clone(),
    };
    steps.push(fx(
        "ICMP error about the VIP's packet follows the flow to its backend",
        eth(LB_MAC, GW_MAC, &icmp_in),
        Some(eth(a.macs[0], LB_MAC, &icmp_out)),
        Verdict::Tx,
        vec!["tx_icmp_error_to_backend"],
    ));
    // Backend 0 goes down, backend 1 comes up: the established flow moves and is counted.
    steps.push(Step::Up(1));
    steps.push(fx(
        "backend down: the established flow is re-scheduled",
        eth(LB_MAC, CLIENT_MAC, &to_vip(a.client, ack)),
        Some(to_backend(a.client, ack, 1)),
        Verdict::Tx,
        vec!["flow_rescheduled", "flow_new", tx],
    ));
    steps.push(fx(
        "after re-scheduling the flow stays on the new backend",
        eth(LB_MAC, CLIENT_MAC, &to_vip(a.client, ack)),
        Some(to_backend(a.client, ack, 1)),
        Verdict::Tx,
        vec!["flow_hit", tx],
    ));
    if mode == Mode::Nat {
        let reply = ip_packet(
            a.backends[1],
            a.client,
            l4(bport, CLIENT_PORT, ack),
            payload,
        );
        let unnat = forwarded(ip_packet(
            a.vip,
            a.client,
            l4(vport, CLIENT_PORT, ack),
            payload,
        ));
        steps.push(fx(
            "reply path from the new backend",
            eth(LB_MAC, a.macs[1], &reply),
            Some(eth(CLIENT_MAC, LB_MAC, &unnat)),
            Verdict::Tx,
            vec!["flow_return_hit", "tx_nat_out"],
        ));
        let stale = ip_packet(
            a.backends[0],
            a.client,
            l4(bport, CLIENT_PORT, ack),
            payload,
        );
        steps.push(fx(
            "reply from the old backend no longer matches a flow",
            eth(LB_MAC, a.macs[0], &stale),
            None,
            Verdict::Pass,
            vec!["pass_not_ours"],
        ));
    }
    // TTL / hop limit. NAT forwards like a router: a packet arriving with 1 left is
    // answered with time exceeded from the VIP (type 11 / ICMPv6 type 3, code 0, quoting the
    // packet) and creates no flow; the backend's reply with 1 left is dropped by name. DSR
    // and tunnels deliver to a host owning the VIP: TTL 1 goes through unchanged.
    let last_hop = with_ttl(to_vip(a.other_client, syn), 1);
    if mode == Mode::Nat {
        let (te_ty, te_code) = match fam {
            Fam::V4 => (11, 0),
            Fam::V6 => (3, 0),
        };
        // The reply's IP header is carpio's own (id 0, TTL 64, no DF): build it here by the
        // same rules and compare; its checksums are verified independently below.
        let mut reply = ip_packet(
            a.vip,
            a.other_client,
            L4::IcmpError {
                ty: te_ty,
                code: te_code,
                quote: &last_hop,
            },
            b"",
        );
        if fam == Fam::V4 {
            reply[4..6].fill(0);
            reply = with_ttl(reply, 64);
        }
        steps.push(fx(
            "TTL 1 to a NAT service is answered with time exceeded, no flow",
            eth(LB_MAC, CLIENT_MAC, &last_hop),
            Some(eth(CLIENT_MAC, LB_MAC, &reply)),
            Verdict::Tx,
            vec!["tx_icmp_time_exceeded"],
        ));
        let reply_ttl1 = with_ttl(
            ip_packet(
                a.backends[1],
                a.client,
                l4(bport, CLIENT_PORT, ack),
                payload,
            ),
            1,
        );
        steps.push(fx(
            "a backend's reply with TTL 1 is dropped by name",
            eth(LB_MAC, a.macs[1], &reply_ttl1),
            None,
            Verdict::Drop,
            vec!["flow_return_hit", "drop_rewrite"],
        ));
    } else if mode == Mode::Dsr {
        steps.push(fx(
            "TTL 1 is delivered to the backend unchanged (the backend owns the VIP)",
            eth(LB_MAC, CLIENT_MAC, &last_hop),
            Some(eth(a.macs[1], LB_MAC, &last_hop)),
            Verdict::Tx,
            vec!["flow_new", tx],
        ));
    }
    steps.push(fx(
        "not ours: another destination passes untouched",
        eth(
            LB_MAC,
            CLIENT_MAC,
            &ip_packet(a.client, a.not_ours, l4(CLIENT_PORT, vport, syn), payload),
        ),
        None,
        Verdict::Pass,
        vec!["pass_not_ours"],
    ));
    steps.push(fx(
        "VIP port without a service passes",
        eth(
            LB_MAC,
            CLIENT_MAC,
            &ip_packet(a.client, a.vip, l4(CLIENT_PORT, 9999, syn), payload),
        ),
        None,
        Verdict::Pass,
        vec!["pass_vip_no_service"],
    ));
    // Malformed: the IP header cut short (a named classifier drop).
    let full = eth(LB_MAC, CLIENT_MAC, &to_vip(a.other_client, syn));
    let (cut, drop) = match fam {
        Fam::V4 => (14 + 12, "drop_ipv4_truncated"),
        Fam::V6 => (14 + 30, "drop_ipv6_truncated"),
    };
    steps.push(fx(
        "malformed: truncated IP header is dropped by name",
        full[..cut].to_vec(),
        None,
        Verdict::Drop,
        vec![drop],
    ));
    // Malformed: a bad L4 length (UDP length beyond the packet, TCP data offset < 5).
    let mut bad = to_vip(a.other_client, syn);
    let l4_at = if fam == Fam::V4 { 20 } else { 40 };
    let bad_name = match proto {
        Proto::Udp => {
            bad[l4_at + 4..l4_at + 6].copy_from_slice(&0x0400u16.to_be_bytes());
            "drop_udp_bad_length"
        }
        Proto::Tcp => {
            bad[l4_at + 12] = 2 << 4;
            "drop_tcp_bad_offset"
        }
    };
    steps.push(fx(
        "malformed: bad L4 header is dropped by name",
        eth(LB_MAC, CLIENT_MAC, &bad),
        None,
        Verdict::Drop,
        vec![bad_name],
    ));
    steps
}

const MODES: [Mode; 4] = [Mode::Nat, Mode::Dsr, Mode::Ipip, Mode::Gue];

#[test]
fn every_mode_family_and_protocol() {
    let mut fixtures = 0;
    for mode in MODES {
        for fam in [Fam::V4, Fam::V6] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let mut rig = Rig::new(mode, 1 << 10);
                for step in sequence(mode, fam, proto) {
                    match step {
                        Step::Run(fx) => {
                            check(&mut rig, &fx);
                            fixtures += 1;
                        }
                        Step::Up(b) => rig.set_up(b),
                    }
                }
            }
        }
    }
    // 4 modes × 2 families × 2 protocols, NAT with four more fixtures each; the TTL ones:
    // two for NAT, one for DSR.
    assert_eq!(fixtures, 4 * 2 * 2 * 9 + 2 * 2 * 4 + 2 * 2 * 2 + 2 * 2);
}

/// Every truncation of every fixture input (a parser fed a short frame) is dropped by a named
/// classifier counter: never a panic, never a rewrite, never a pass.
#[test]
fn every_truncation_of_every_input_is_a_named_drop() {
    let mut runs = 0;
    for mode in MODES {
        for fam in [Fam::V4, Fam::V6] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let mut rig = Rig::new(mode, 1 << 10);
                for step in sequence(mode, fam, proto) {
                    let Step::Run(fx) = step else { continue };
                    for len in 0..fx.input.len() {
                        let (v, out, moved) = rig.run(&fx.input[..len]);
                        assert_eq!(v, Verdict::Drop, "{} cut to {len}: {moved:?}", fx.desc);
                        assert_eq!(out, fx.input[..len], "{} cut to {len}", fx.desc);
                        let named: u64 = moved
                            .iter()
                            .filter(|m| m.0.starts_with("drop_"))
                            .map(|m| m.1)
                            .sum();
                        assert_eq!(named, 1, "{} cut to {len}: {moved:?}", fx.desc);
                        runs += 1;
                    }
                }
            }
        }
    }
    assert!(runs > 10_000, "{runs}");
}

#[test]
fn table_full_forwards_statelessly() {
    for mode in MODES {
        for fam in [Fam::V4, Fam::V6] {
            let a = addrs(fam);
            let mut rig = Rig::new(mode, 1);
            let tcp = |sport, dport, flags| L4::Tcp {
                sport,
                dport,
                flags,
            };
            let first = |flags| {
                eth(
                    LB_MAC,
                    CLIENT_MAC,
                    &ip_packet(a.client, a.vip, tcp(CLIENT_PORT, 80, flags), b"a"),
                )
            };
            // A completed handshake makes the first flow established (tcp.established, the
            // one-sided variant for DSR/encap), so the full table cannot evict it early.
            let (v, _, m) = rig.run(&first(0x02));
            assert_eq!(v, Verdict::Tx, "{mode:?}/{fam:?} {m:?}");
            if mode == Mode::Nat {
                let r = eth(
                    LB_MAC,
                    a.macs[0],
                    &ip_packet(
                        a.backends[0],
                        a.client,
                        tcp(NAT_PORT, CLIENT_PORT, 0x12),
                        b"r",
                    ),
                );
                let (v, _, _) = rig.run(&r);
                assert_eq!(v, Verdict::Tx);
            }
            let (v, _, _) = rig.run(&first(0x10));
            assert_eq!(v, Verdict::Tx);
            let second = Sequence {
                mode,
                fam,
                client: a.other_client,
            };
            let desc = format!("{mode:?}/{fam:?}: table full");
            check(
                &mut rig,
                &Fixture {
                    desc,
                    input: second.input(),
                    expected: Some(second.expected()),
                    verdict: Verdict::Tx,
                    counters: vec!["flow_stateless_table_full", "flow_table_full"],
                },
            );
            assert_eq!(rig.worker.flows().len(), 1);
        }
    }
}

/// A UDP 53 packet of `client` and what the balancer sends for it to backend 0.
struct Sequence {
    mode: Mode,
    fam: Fam,
    client: IpAddr,
}

impl Sequence {
    fn inner(&self) -> Vec<u8> {
        let a = addrs(self.fam);
        let l4 = L4::Udp {
            sport: CLIENT_PORT,
            dport: 53,
        };
        ip_packet(self.client, a.vip, l4, b"q")
    }
    fn input(&self) -> Vec<u8> {
        eth(LB_MAC, CLIENT_MAC, &self.inner())
    }
    fn expected(&self) -> Vec<u8> {
        let a = addrs(self.fam);
        match self.mode {
            Mode::Nat => {
                let l4 = L4::Udp {
                    sport: CLIENT_PORT,
                    dport: NAT_PORT,
                };
                eth(
                    a.macs[0],
                    LB_MAC,
                    &forwarded(ip_packet(self.client, a.backends[0], l4, b"q")),
                )
            }
            Mode::Dsr => eth(a.macs[0], LB_MAC, &self.inner()),
            Mode::Ipip | Mode::Gue => {
                let e = hash::directed(
                    SEED,
                    17,
                    &hash::addr16(self.client),
                    CLIENT_PORT,
                    &hash::addr16(a.vip),
                    53,
                );
                eth(
                    a.macs[0],
                    LB_MAC,
                    &encapsulated(self.mode, a.tunnel_src, a.backends[0], &self.inner(), e),
                )
            }
        }
    }
}

#[test]
fn all_backends_down_is_a_named_drop() {
    let mut rig = Rig::new(Mode::Nat, 1 << 10);
    let ids: Vec<u32> = rig.cfg.hosts().map(|h| h.id).collect();
    let st = HostStates {
        down: ids,
        ..Default::default()
    };
    let prev = rig.cell.load_full();
    let snap = Snapshot::build(&rig.cfg, &st, link(), Some(&prev)).unwrap();
    rig.cell.store(Arc::new(snap));
    let s = Sequence {
        mode: Mode::Nat,
        fam: Fam::V4,
        client: addrs(Fam::V4).client,
    };
    check(
        &mut rig,
        &Fixture {
            desc: "no backend up".into(),
            input: s.input(),
            expected: None,
            verdict: Verdict::Drop,
            counters: vec!["drop_no_backend"],
        },
    );
}

// ---------------------------------------------------------------------------------------
// pcap in, pcap out through `carpio replay`.

fn replay_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay")
}

/// The replay configuration: NAT, one backend per family (replay has every host up, so a
/// single host makes the expected frames independent of the scheduler).
fn replay_config() -> String {
    let (a4, a6) = (addrs(Fam::V4), addrs(Fam::V6));
    format!(
        "table <w4> {{ {} lladdr \"{}\" }}\n\
         table <w6> {{ {} lladdr \"{}\" }}\n\
         redirect r4 {{\n listen on {} tcp port 80\n listen on {} udp port 53\n \
         forward to <w4> port {NAT_PORT} check icmp\n}}\n\
         redirect r6 {{\n listen on {} tcp port 80\n listen on {} udp port 53\n \
         forward to <w6> port {NAT_PORT} check icmp\n}}\n",
        a4.backends[0],
        mac_str(B4_MAC[0]),
        a6.backends[0],
        mac_str(B6_MAC[0]),
        a4.vip,
        a4.vip,
        a6.vip,
        a6.vip,
    )
}

/// The replay fixture: (input frames, expected output frames). NAT over IPv4 and IPv6, TCP and
/// UDP: a new flow, its established packet and the backend's reply, for two clients; then a
/// not-ours frame (passed, so not written) and a malformed one (dropped, not written).
fn replay_frames() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut input = Vec::new();
    let mut output = Vec::new();
    for fam in [Fam::V4, Fam::V6] {
        let a = addrs(fam);
        for (vport, tcp) in [(80u16, true), (53u16, false)] {
            let l4 = |s, d, flags| {
                if tcp {
                    L4::Tcp {
                        sport: s,
                        dport: d,
                        flags,
                    }
                } else {
                    L4::Udp { sport: s, dport: d }
                }
            };
            for client in [a.client, a.other_client] {
                for flags in [0x02, 0x10] {
                    input.push(eth(
                        LB_MAC,
                        CLIENT_MAC,
                        &ip_packet(client, a.vip, l4(CLIENT_PORT, vport, flags), b"in"),
                    ));
                    output.push(eth(
                        a.macs[0],
                        LB_MAC,
                        &forwarded(ip_packet(
                            client,
                            a.backends[0],
                            l4(CLIENT_PORT, NAT_PORT, flags),
                            b"in",
                        )),
                    ));
                }
                input.push(eth(
                    LB_MAC,
                    a.macs[0],
                    &ip_packet(
                        a.backends[0],
                        client,
                        l4(NAT_PORT, CLIENT_PORT, 0x12),
                        b"out",
                    ),
                ));
                output.push(eth(
                    CLIENT_MAC,
                    LB_MAC,
                    &forwarded(ip_packet(
                        a.vip,
                        client,
                        l4(vport, CLIENT_PORT, 0x12),
                        b"out",
                    )),
                ));
            }
        }
        let l4 = L4::Udp {
            sport: CLIENT_PORT,
            dport: 53,
        };
        input.push(eth(
            LB_MAC,
            CLIENT_MAC,
            &ip_packet(a.client, a.not_ours, l4, b"x"),
        ));
        let full = eth(LB_MAC, CLIENT_MAC, &ip_packet(a.client, a.vip, l4, b"x"));
        input.push(full[..full.len() - 12].to_vec());
    }
    (input, output)
}

#[test]
fn replay_pcap_in_pcap_out() {
    let dir = replay_dir();
    let conf = dir.join("fixtures.conf");
    let input_pcap = dir.join("fixtures-in.pcap");
    let expected_pcap = dir.join("fixtures-out.pcap");
    let (input, expected) = replay_frames();
    let bless = std::env::var_os("CARPIO_BLESS").is_some();
    if bless {
        std::fs::write(&conf, replay_config()).unwrap();
        let mut sink = carpio::phy::pcap::PcapSink::create(&input_pcap, LinkType::Ethernet)
            .unwrap_or_else(|e| panic!("{e}"));
        for (i, f) in input.iter().enumerate() {
            sink.write(f, 1_000_000_000 + i as u64 * 1000).unwrap();
        }
        sink.finish().unwrap();
    }
    let committed_in = carpio::phy::pcap::read_all(&input_pcap)
        .unwrap_or_else(|e| panic!("{}: {e}", input_pcap.display()));
    assert_eq!(
        committed_in
            .iter()
            .map(|f| f.data.clone())
            .collect::<Vec<_>>(),
        input,
        "the committed input capture is the one this test builds"
    );
    let out = std::env::temp_dir().join(format!("carpio-fixtures-{}.pcap", std::process::id()));
    let rc = carpio::replay::ReplayConfig {
        input: input_pcap.clone(),
        output: Some(out.clone()),
        loops: 1,
        config: Some(conf),
        workers: Some(1),
        ..Default::default()
    };
    let report = carpio::replay::run(&rc).unwrap_or_else(|e| panic!("{e}"));
    let got = carpio::phy::pcap::read_all(&out).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_file(&out);
    if bless {
        let mut sink = carpio::phy::pcap::PcapSink::create(&expected_pcap, LinkType::Ethernet)
            .unwrap_or_else(|e| panic!("{e}"));
        for (i, f) in expected.iter().enumerate() {
            sink.write(f, 1_000_000_000 + i as u64 * 1000).unwrap();
        }
        sink.finish().unwrap();
    }
    let want = carpio::phy::pcap::read_all(&expected_pcap)
        .unwrap_or_else(|e| panic!("{}: {e}", expected_pcap.display()));
    assert_eq!(report.frames, input.len() as u64);
    assert_eq!(
        report.counter("drop_ipv4_truncated"),
        1,
        "{}",
        report.render()
    );
    assert_eq!(
        report.counter("drop_ipv6_truncated"),
        1,
        "{}",
        report.render()
    );
    assert_eq!(report.counter("pass_not_ours"), 2, "{}", report.render());
    assert_eq!(report.counter("tx_nat_out"), 8, "{}", report.render());
    let want: Vec<Vec<u8>> = want.into_iter().map(|f| f.data).collect();
    assert_eq!(
        want, expected,
        "the committed expected capture is the one this test builds"
    );
    let got: Vec<Vec<u8>> = got.into_iter().map(|f| f.data).collect();
    assert_eq!(got.len(), expected.len(), "{}", report.render());
    for (i, (g, w)) in got.iter().zip(expected.iter()).enumerate() {
        assert_eq!(g, w, "replayed frame {i}\n got {}\nwant {}", hex(g), hex(w));
        verify_frame(g);
    }
}
