//! Hostile traffic through the real pipeline (issue 11 item 2), no root needed: config text →
//! `Snapshot::build` → `Worker::process`, `carpio replay -f` for what only a capture can carry,
//! `carp::Interface` for spoofed advertisements and the pfsync shell's `check_ipv4`.
//!
//! Every case interleaves legitimate, established flows with the hostile frames and runs the
//! same legitimate frames, in the same order and at the same times, through a second worker
//! that sees no hostile traffic. The legitimate frames' verdicts and bytes must be identical in
//! both (the attack changed nothing for them), and each hostile frame must end in the exact
//! named counter the case names, no more and no less.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use carpio::config;
use carpio::dataplane::flow::{Event, FlowTableConfig};
use carpio::dataplane::snapshot::{Link, Snapshot, SnapshotCell};
use carpio::dataplane::worker::{Worker, WorkerConfig};
use carpio::phy::{Batch, Verdict};
use carpio::replay;
use carpio::synth::build_frame;
use carpio::wire::checksum;
use carpio::wire::classify::LinkType;
use crossbeam::queue::ArrayQueue;
use pnet_packet::ip::IpNextHeaderProtocols;

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xc1, 0x01];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const BACKENDS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 1, 1), Ipv4Addr::new(198, 18, 1, 2)];
const NAT_PORT: u16 = 8080;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

fn config_text() -> String {
    format!(
        "table <web> {{ {} lladdr \"02:00:00:00:01:01\", {} lladdr \"02:00:00:00:01:02\" }}\n\
         redirect www {{\n listen on {VIP} tcp port 80\n listen on {VIP} udp port 53\n \
         forward to <web> port {NAT_PORT} check icmp\n}}\n",
        BACKENDS[0], BACKENDS[1]
    )
}

fn snapshot() -> Arc<SnapshotCell> {
    let cfg = config::parse_str("hostile.conf", &config_text(), &[]).expect("config");
    let link = Link {
        mac: LB_MAC,
        gateway_mac: Some(GW_MAC),
        tunnel_src_v4: None,
        tunnel_src_v6: None,
        mtu: 1500,
    };
    let snap = Snapshot::build(&cfg, &replay::replay_host_states(&cfg), link, None).expect("snap");
    Arc::new(SnapshotCell::from_pointee(snap))
}

struct Lb {
    w: Worker,
    events: Arc<ArrayQueue<Event>>,
}

impl Lb {
    fn new(capacity: u32) -> Self {
        let events = Arc::new(ArrayQueue::new(1 << 12));
        let wc = WorkerConfig {
            flow: FlowTableConfig {
                capacity,
                ..FlowTableConfig::default()
            },
            ..WorkerConfig::default()
        };
        let w = Worker::new(wc, snapshot(), events.clone(), None).expect("worker");
        Lb { w, events }
    }

    /// Runs frames in batches of 64 at time `now`; returns each frame's verdict and bytes.
    fn run(&mut self, frames: &[Vec<u8>], now: u32) -> Vec<(Verdict, Vec<u8>)> {
        let mut out = Vec::with_capacity(frames.len());
        let mut batch = Batch::new(64);
        for chunk in frames.chunks(64) {
            batch.clear();
            for f in chunk {
                assert!(
                    batch.push(f, 0, LinkType::Ethernet),
                    "frame too long for a batch"
                );
            }
            self.w.process(&mut batch, now);
            out.extend(batch.iter().map(|p| (p.verdict, p.data().to_vec())));
            while self.events.pop().is_some() {}
        }
        out
    }

    fn counter(&self, name: &str) -> u64 {
        self.w
            .counter_values()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// Every counter that is not zero.
    fn nonzero(&self) -> Vec<(&'static str, u64)> {
        self.w
            .counter_values()
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .collect()
    }
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32, flags: u8) -> Vec<u8> {
    build_frame(
        CLIENT_MAC,
        LB_MAC,
        IpAddr::V4(src),
        IpAddr::V4(dst),
        IpNextHeaderProtocols::Tcp,
        sport,
        dport,
        Some((seq, 0, flags)),
        if flags & PSH != 0 {
            b"GET / HTTP/1.0\r\n\r\n"
        } else {
            b""
        },
    )
}

/// Recomputes the IPv4 header checksum of an Ethernet frame after a test edited the header.
fn fix_ipv4_sum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    f[24] = 0;
    f[25] = 0;
    let end = (14 + ihl).min(f.len());
    let c = checksum::checksum(&f[14..end]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Legitimate clients: `n` TCP connections to the VIP with their handshake completed through
/// the NAT (the backend's SYN-ACK comes back through the worker), so the flow table holds them
/// as established (`tcp.established`, which eviction spares).
struct Legit {
    clients: Vec<(Ipv4Addr, u16)>,
}

impl Legit {
    fn new(n: usize) -> Self {
        Legit {
            clients: (0..n)
                .map(|i| (Ipv4Addr::new(198, 19, 1, 1 + i as u8), 50_000 + i as u16))
                .collect(),
        }
    }

    /// Opens every connection on `lbs` (same frames, same time) and checks it was NAT'ed.
    fn open(&self, lbs: &mut [&mut Lb], now: u32) {
        for &(c, p) in &self.clients {
            let syn = tcp(c, p, VIP, 80, 1000, SYN);
            let mut backend = None;
            for lb in lbs.iter_mut() {
                let out = lb.run(std::slice::from_ref(&syn), now);
                assert_eq!(out[0].0, Verdict::Tx);
                let dst = Ipv4Addr::new(out[0].1[30], out[0].1[31], out[0].1[32], out[0].1[33]);
                assert!(BACKENDS.contains(&dst), "SYN went to {dst}");
                assert!(backend.is_none_or(|b| b == dst), "both workers pick alike");
                backend = Some(dst);
            }
            let b = backend.expect("a backend");
            let synack = build_frame(
                [0x02, 0, 0, 0, 0x01, 0x01],
                LB_MAC,
                IpAddr::V4(b),
                IpAddr::V4(c),
                IpNextHeaderProtocols::Tcp,
                NAT_PORT,
                p,
                Some((5000, 1001, SYN | ACK)),
                b"",
            );
            let ack = build_frame(
                CLIENT_MAC,
                LB_MAC,
                IpAddr::V4(c),
                IpAddr::V4(VIP),
                IpNextHeaderProtocols::Tcp,
                p,
                80,
                Some((1001, 5001, ACK)),
                b"",
            );
            for lb in lbs.iter_mut() {
                let out = lb.run(&[synack.clone(), ack.clone()], now);
                assert_eq!(out[0].0, Verdict::Tx, "SYN-ACK un-NATed to the client");
                assert_eq!(out[1].0, Verdict::Tx, "ACK forwarded");
            }
        }
    }

    /// The `i`-th data frame of the legitimate traffic.
    fn frame(&self, i: usize) -> Vec<u8> {
        let (c, p) = self.clients[i % self.clients.len()];
        tcp(c, p, VIP, 80, 1001 + i as u32, ACK | PSH)
    }
}

/// Runs `hostile` interleaved with legitimate data through one worker and the legitimate
/// data alone through another; checks the legitimate frames came out identical in both, that
/// every hostile frame got `verdict`, and returns the hostile worker for counter checks.
fn interleaved(hostile: &[Vec<u8>], verdict: Verdict, capacity: u32) -> Lb {
    let (mut attacked, mut calm) = (Lb::new(capacity), Lb::new(capacity));
    let legit = Legit::new(4);
    legit.open(&mut [&mut attacked, &mut calm], 1);
    let before = attacked.nonzero();
    let mut mixed = Vec::new();
    let mut alone = Vec::new();
    for (i, h) in hostile.iter().enumerate() {
        mixed.push(h.clone());
        mixed.push(legit.frame(i));
        alone.push(legit.frame(i));
    }
    let got = attacked.run(&mixed, 2);
    let want = calm.run(&alone, 2);
    for (i, (h, l)) in got.chunks(2).map(|c| (&c[0], &c[1])).enumerate() {
        assert_eq!(h.0, verdict, "hostile frame {i}: {:02x?}", hostile[i]);
        assert_eq!(l.0, Verdict::Tx, "legitimate frame {i} not forwarded");
        assert_eq!(l.1, want[i].1, "legitimate frame {i} changed by the attack");
    }
    // The legitimate flows are all still there, as hits.
    assert_eq!(
        attacked.counter("flow_hit") - before.iter().find(|c| c.0 == "flow_hit").map_or(0, |c| c.1),
        hostile.len() as u64
    );
    attacked
}

/// The counters that moved between two snapshots of `nonzero()`, without the ones legitimate
/// traffic moves (`ipv4_tcp`, `flow_hit`, `tx_nat_in`).
fn moved(lb: &Lb, n: usize) -> Vec<(&'static str, u64)> {
    let mut calm = Lb::new(1024);
    Legit::new(4).open(&mut [&mut calm], 1);
    let base = calm.nonzero();
    let legit_names = ["ipv4_tcp", "flow_hit", "tx_nat_in"];
    lb.nonzero()
        .into_iter()
        .map(|(name, v)| {
            let b = base.iter().find(|c| c.0 == name).map_or(0, |c| c.1);
            let legit = if legit_names.contains(&name) {
                n as u64
            } else {
                0
            };
            (name, v - b - legit)
        })
        .filter(|(_, v)| *v != 0)
        .collect()
}

fn syn_to_vip() -> Vec<u8> {
    tcp(Ipv4Addr::new(198, 19, 9, 9), 40_000, VIP, 80, 1, SYN)
}

#[test]
fn truncated_frames_each_end_in_their_drop_counter() {
    let full = syn_to_vip();
    let frames: Vec<Vec<u8>> = (0..full.len()).map(|n| full[..n].to_vec()).collect();
    let lb = interleaved(&frames, Verdict::Drop, 1024);
    // < 14: no Ethernet header; 14..34: no whole IPv4 header, 34..54: the IP total length
    // says more than the frame holds (both "truncated IPv4").
    assert_eq!(
        moved(&lb, frames.len()),
        vec![("drop_eth_truncated", 14), ("drop_ipv4_truncated", 40)]
    );
}

#[test]
fn oversized_and_lying_lengths() {
    let mut frames = Vec::new();
    // IP total length past the frame, and shorter than its own header.
    for len in [60u16, 1500, 65535, 19, 0] {
        let mut f = syn_to_vip();
        f[16..18].copy_from_slice(&len.to_be_bytes());
        fix_ipv4_sum(&mut f);
        frames.push(f);
    }
    // A TCP data offset past the segment, and below 5 words.
    for off in [15u8, 4, 0] {
        let mut f = syn_to_vip();
        f[46] = off << 4;
        frames.push(f);
    }
    let lb = interleaved(&frames, Verdict::Drop, 1024);
    // Lengths past the frame are truncated packets; lengths below the header are bad; a data
    // offset past the segment is a truncated TCP header.
    assert_eq!(
        moved(&lb, frames.len()),
        vec![
            ("drop_ipv4_truncated", 3),
            ("drop_ipv4_bad_length", 2),
            ("drop_tcp_truncated", 1),
            ("drop_tcp_bad_offset", 2),
        ]
    );
}

#[test]
fn oversized_frames_in_a_capture_are_counted_by_the_device() {
    let dir = std::env::temp_dir().join(format!("cio-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let pcap = dir.join("oversize.pcap");
    let conf = dir.join("hostile.conf");
    std::fs::write(&conf, config_text()).expect("conf");
    {
        let mut sink =
            carpio::phy::pcap::PcapSink::create(&pcap, LinkType::Ethernet).expect("pcap");
        let good = syn_to_vip();
        for (i, n) in [9217usize, 16_000, 65_535].into_iter().enumerate() {
            let mut f = good.clone();
            f.resize(n, 0xa5);
            sink.write(&f, i as u64).expect("write");
            sink.write(&good, i as u64).expect("write");
        }
        sink.finish().expect("finish");
    }
    let report = replay::run(&replay::ReplayConfig {
        input: pcap.clone(),
        loops: 1,
        config: Some(conf),
        ..Default::default()
    })
    .expect("replay");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(report.frames, 6);
    assert_eq!(report.counter("drop_oversize"), 3, "{}", report.render());
    // The legitimate SYN (the same flow thrice) went through every time.
    assert_eq!(report.counter("tx_nat_in"), 3, "{}", report.render());
    assert_eq!(report.accounted(), report.frames);
}

#[test]
fn ipv4_options_are_bounded_by_ihl() {
    let mut frames = Vec::new();
    // IHL below 5, and IHL 15 (40 bytes of options) on a packet with no room for them.
    for ihl in [0u8, 1, 4] {
        let mut f = syn_to_vip();
        f[14] = 0x40 | ihl;
        frames.push(f);
    }
    let lb = interleaved(&frames, Verdict::Drop, 1024);
    assert_eq!(moved(&lb, frames.len()), vec![("drop_ipv4_bad_ihl", 3)]);
}

#[test]
fn ipv4_options_chain_to_a_vip_is_forwarded_intact() {
    // 40 bytes of options (NOP … EOL): legal (RFC 791), so the flow is served.
    let base = syn_to_vip();
    let mut f = base[..34].to_vec();
    f.extend_from_slice(&[1u8; 39]);
    f.push(0);
    f.extend_from_slice(&base[34..]);
    f[14] = 0x4f;
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_sum(&mut f);
    let lb = interleaved(&[f], Verdict::Tx, 1024);
    assert_eq!(
        moved(&lb, 1),
        vec![
            ("ipv4_tcp", 1),
            ("tx_nat_in", 1),
            ("flow_new", 1),
            ("flow_insert", 1)
        ]
    );
}

/// An IPv6 frame (to an address the classifier never gets to look up) with `n` hop-by-hop/destination-options headers before TCP.
fn v6_ext_chain(n: usize, truncate_last: bool) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
    ip.extend_from_slice(
        &"2001:db8:c::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    ip.extend_from_slice(
        &"2001:db8::10"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    let mut body = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n { 6 } else { 60 };
        body.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    if truncate_last {
        body.truncate(body.len() - 4);
    } else {
        // A TCP SYN (checksum left 0: the classifier does not verify it).
        body.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, SYN, 0xff, 0xff,
        ]);
        body.extend_from_slice(&[0, 0, 0, 0]);
    }
    ip[6] = if n == 0 { 6 } else { 0 };
    ip[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    let mut f = LB_MAC.to_vec();
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&body);
    f
}

#[test]
fn ipv6_extension_header_chains() {
    let frames: Vec<Vec<u8>> = [40usize, 100, 300]
        .iter()
        .map(|&n| v6_ext_chain(n, false))
        .chain([1usize, 3].iter().map(|&n| v6_ext_chain(n, true)))
        .collect();
    let lb = interleaved(&frames, Verdict::Drop, 1024);
    assert_eq!(
        moved(&lb, frames.len()),
        vec![
            ("drop_ipv6_ext_truncated", 2),
            ("drop_ipv6_ext_too_many", 3)
        ]
    );
}

/// A fragment of a UDP datagram to the VIP: `offset` in 8-byte units, `more` fragments.
fn fragment(id: u16, offset: u16, more: bool, payload: usize) -> Vec<u8> {
    let mut f = build_frame(
        CLIENT_MAC,
        LB_MAC,
        IpAddr::V4(Ipv4Addr::new(198, 19, 7, 7)),
        IpAddr::V4(VIP),
        IpNextHeaderProtocols::Udp,
        40_000,
        53,
        None,
        &vec![0u8; payload],
    );
    f[18..20].copy_from_slice(&id.to_be_bytes());
    let word = (u16::from(more) << 13) | offset;
    f[20..22].copy_from_slice(&word.to_be_bytes());
    fix_ipv4_sum(&mut f);
    f
}

#[test]
fn fragment_flood_at_a_vip() {
    // 2000 later fragments (no ports: they cannot be balanced) and fragments that would end
    // past 65535 bytes (RFC 791 limit: the classic teardrop/ping-of-death shapes).
    let mut frames: Vec<Vec<u8>> = (0..2000u16)
        .map(|i| fragment(i, 1 + i % 100, true, 64))
        .collect();
    frames.extend((0..50u16).map(|i| fragment(i, 8189, false, 100)));
    let lb = interleaved(&frames, Verdict::Drop, 1024);
    assert_eq!(
        moved(&lb, frames.len()),
        vec![
            ("ipv4_udp", 2000),
            ("drop_fragment_bad", 50),
            ("drop_vip_fragment", 2000)
        ]
    );
}

#[test]
fn ttl_expired_and_time_exceeded() {
    // TTL 0 and 1 to the VIP's NAT service. NAT forwards like a router (pf's rdr goes through
    // ip_forward): each is answered with ICMP time exceeded from the VIP, never forwarded and
    // never made a flow. (DSR and tunnels deliver untouched, like LVS-DR and Katran: the
    // fixtures in dataplane_fixtures cover that.)
    let mut frames = Vec::new();
    for ttl in [0u8, 1] {
        let mut f = tcp(Ipv4Addr::new(198, 19, 8, ttl + 1), 41_000, VIP, 80, 1, SYN);
        f[22] = ttl;
        fix_ipv4_sum(&mut f);
        frames.push(f);
    }
    let lb = interleaved(&frames, Verdict::Tx, 1024);
    assert_eq!(
        moved(&lb, frames.len()),
        vec![("ipv4_tcp", 2), ("tx_icmp_time_exceeded", 2)]
    );
    for (i, f) in frames.iter().enumerate() {
        let mut one = Lb::new(1024);
        let out = one.run(std::slice::from_ref(f), 3);
        let (v, r) = &out[0];
        assert_eq!(*v, Verdict::Tx);
        assert_eq!((r[14 + 9], r[34], r[35]), (1, 11, 0), "ICMP time exceeded");
        assert_eq!(&r[26..30], &VIP.octets(), "from the VIP");
        assert_eq!(&r[30..34], &[198, 19, 8, i as u8 + 1], "to the sender");
        assert_eq!(&r[42..], &f[14..], "quoting the packet");
    }

    // Spoofed ICMP time-exceeded errors at the VIP quoting flows nobody has: passed to the
    // kernel (which owns the VIP's ICMP), never matched to a legitimate flow.
    let mut errs = Vec::new();
    for i in 0..100u8 {
        let quoted = tcp(
            VIP,
            80,
            Ipv4Addr::new(198, 19, 50, i),
            4000 + u16::from(i),
            1,
            SYN,
        );
        let mut icmp = vec![11u8, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted[14..14 + 28]);
        let c = checksum::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = build_frame(
            CLIENT_MAC,
            LB_MAC,
            IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1)),
            IpAddr::V4(VIP),
            IpNextHeaderProtocols::Udp,
            0,
            0,
            None,
            &[],
        );
        f.truncate(34);
        f[23] = 1;
        f.extend_from_slice(&icmp);
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        fix_ipv4_sum(&mut f);
        errs.push(f);
    }
    let lb = interleaved(&errs, Verdict::Pass, 1024);
    assert_eq!(
        moved(&lb, errs.len()),
        vec![("ipv4_icmp", 100), ("pass_vip_icmp", 100)]
    );
}

#[test]
fn syn_flood_at_a_small_flow_table_spares_established_flows() {
    // 64 entries, 4 of them established legitimate connections, then 5000 SYNs from distinct
    // spoofed sources. The table's policy (dataplane/flow.rs "Time, expiry, eviction"): when
    // full, an insert evicts the embryonic entry closest to expiry among `evict_scan` entries,
    // never an established one; only if all of those are established does it fall back to a
    // stateless pick. So every SYN is served, 5000 − 60 of them by evicting an earlier SYN, and
    // the legitimate connections are untouched.
    const CAP: u32 = 64;
    const FLOOD: usize = 5000;
    let frames: Vec<Vec<u8>> = (0..FLOOD)
        .map(|i| {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 100, 0)) + i as u32);
            tcp(src, 1024 + (i % 60_000) as u16, VIP, 80, i as u32, SYN)
        })
        .collect();
    let lb = interleaved(&frames, Verdict::Tx, CAP);
    let evicted = (FLOOD - (CAP as usize - 4)) as u64;
    assert_eq!(
        moved(&lb, frames.len()),
        vec![
            ("ipv4_tcp", FLOOD as u64),
            ("tx_nat_in", FLOOD as u64),
            ("flow_new", FLOOD as u64),
            ("flow_insert", FLOOD as u64),
            ("flow_evict_early", evicted),
        ]
    );
    assert_eq!(lb.w.flows().len(), CAP as usize);
}

#[test]
fn flood_of_established_flows_falls_back_to_stateless() {
    // A table full of established connections: new flows cannot evict any, so they are
    // forwarded by a stateless Maglev pick and counted.
    const CAP: u32 = 8;
    let (mut a, mut b) = (Lb::new(CAP), Lb::new(CAP));
    let legit = Legit::new(CAP as usize);
    legit.open(&mut [&mut a, &mut b], 1);
    let frames: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            tcp(
                Ipv4Addr::new(198, 19, 200, i as u8),
                2000 + i as u16,
                VIP,
                80,
                i,
                SYN,
            )
        })
        .collect();
    let before = a.counter("flow_stateless_table_full");
    let out = a.run(&frames, 2);
    assert!(out.iter().all(|(v, _)| *v == Verdict::Tx));
    assert_eq!(a.counter("flow_stateless_table_full") - before, 200);
    assert_eq!(a.counter("flow_table_full"), 200);
    assert_eq!(a.counter("flow_evict_early"), 0);
    // The established ones still hit, byte-identical to the worker that saw no flood.
    let data: Vec<Vec<u8>> = (0..CAP as usize).map(|i| legit.frame(i)).collect();
    assert_eq!(a.run(&data, 3), b.run(&data, 3));
}

// ---- spoofed CARP ------------------------------------------------------------------------------

mod carp_spoof {
    use super::*;
    use carpio::carp::{Interface, InterfaceConfig, NodeConfig, Received, Reject, State};
    use carpio::wire::carp::{self as wire_carp, Auth, AuthInput, Repr};
    use carpio::wire::classify::Af;

    const PASS: &[u8] = b"hostile";
    const COOKIE: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

    fn cfg() -> InterfaceConfig {
        InterfaceConfig {
            nodes: vec![NodeConfig {
                vhid: 7,
                advskew: 0,
            }],
            passphrase: PASS.to_vec(),
            v4: vec![Ipv4Addr::new(198, 18, 0, 100)],
            cookies: vec![COOKIE],
            ..Default::default()
        }
    }

    fn signed(vhid: u8, skew: u8, counter: [u8; 8], pass: &[u8]) -> [u8; 36] {
        let c = cfg();
        let mut r = Repr::advertisement(vhid, 1, skew, 0, counter);
        Auth::new(&AuthInput {
            key: wire_carp::key_from_passphrase(pass),
            lladdr: None,
            vhid,
            v4: &c.v4,
            v6: &c.v6,
        })
        .sign(&mut r);
        r.to_bytes()
    }

    fn rx(payload: &[u8], ttl: u8) -> Received<'_> {
        Received {
            af: Af::V4,
            ttl,
            multicast: true,
            on_carp_interface: true,
            payload,
        }
    }

    #[test]
    fn spoofed_adverts_are_rejected_by_name_and_change_nothing() {
        let mut iface = Interface::new(&cfg()).expect("carp");
        let s = Duration::from_secs(1);
        let mut now = s;
        iface.set_up(now, true);
        // Become master (no peer heard for 3 × advbase).
        for _ in 0..10 {
            now += s;
            iface.handle_timeout(now);
            while iface.poll_transmit().is_some() || iface.poll_event().is_some() {}
        }
        assert_eq!(iface.state(7), Some(State::Master));
        // Each forgery would otherwise win (skew 0 ties with ours and a master yields to an
        // equal advert); every one is rejected before the state machine sees it.
        let cases: Vec<(&str, Vec<u8>, u8, Reject)> = vec![
            (
                "bad hmac",
                signed(7, 0, [1; 8], b"wrong").to_vec(),
                255,
                Reject::BadAuth,
            ),
            (
                "wrong ttl",
                signed(7, 0, [1; 8], PASS).to_vec(),
                64,
                Reject::BadTtl,
            ),
            (
                "wrong vhid",
                signed(9, 0, [1; 8], PASS).to_vec(),
                255,
                Reject::BadVhid,
            ),
            (
                "our own cookie",
                signed(7, 0, COOKIE, PASS).to_vec(),
                255,
                Reject::Loop,
            ),
            (
                "truncated",
                signed(7, 0, [1; 8], PASS)[..30].to_vec(),
                255,
                Reject::BadLen,
            ),
            (
                "bad checksum",
                {
                    let mut p = signed(7, 0, [1; 8], PASS).to_vec();
                    p[6] ^= 0xff;
                    p
                },
                255,
                Reject::BadSum,
            ),
        ];
        for (what, payload, ttl, want) in &cases {
            let before = iface.rejects().get(want.index());
            for _ in 0..100 {
                now += Duration::from_millis(10);
                assert_eq!(
                    iface.handle_advert(now, &rx(payload, *ttl)),
                    Err(*want),
                    "{what}"
                );
            }
            assert_eq!(iface.rejects().get(want.index()) - before, 100, "{what}");
            assert_eq!(
                iface.state(7),
                Some(State::Master),
                "{what} moved the state"
            );
        }
        assert_eq!(iface.rejects().total(), 600);
        // The real peer, signed with the right key and its own cookie, is still heard.
        now += s;
        assert_eq!(
            iface.handle_advert(now, &rx(&signed(7, 0, [2; 8], PASS), 255)),
            Ok(())
        );
    }
}

// ---- pfsync from a non-peer ----------------------------------------------------------------------

#[test]
fn pfsync_from_a_non_peer_is_dropped_by_name() {
    use carpio::pfsync::shell::{Counter, check_ipv4};
    let peer = Ipv4Addr::new(198, 18, 0, 2);
    let ip = |src: Ipv4Addr, ttl: u8| {
        let payload = [
            6u8, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, ttl, 240, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&[224, 0, 0, 240]);
        p.extend_from_slice(&payload);
        p
    };
    let good = ip(peer, 255);
    assert_eq!(check_ipv4(&good, Some(peer)).map(|(_, s)| s), Ok(peer));
    for i in 0..100u8 {
        let spoof = ip(Ipv4Addr::new(198, 18, 66, i), 255);
        assert_eq!(check_ipv4(&spoof, Some(peer)), Err(Counter::NotPeer));
    }
    // From the peer but routed (TTL < 255): rejected too, by its own name.
    assert_eq!(check_ipv4(&ip(peer, 254), Some(peer)), Err(Counter::BadTtl));
    // Truncated headers, every length.
    for n in 0..20 {
        assert_eq!(
            check_ipv4(&good[..n], Some(peer)),
            Err(Counter::BadIpHeader)
        );
    }
}

#[test]
fn vlan_stacks_and_malformed_arp() {
    let syn = syn_to_vip();
    let tagged = |tags: usize| {
        let mut f = syn[..12].to_vec();
        for i in 0..tags {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 10 + i as u8]);
        }
        f.extend_from_slice(&syn[12..]);
        f
    };
    let arp = |hlen: u8, plen: u8, cut: usize| {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, hlen, plen, 0, 1]);
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&[198, 19, 0, 5, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&VIP.octets());
        f.truncate(f.len() - cut);
        f
    };
    let mut frames = vec![tagged(3), tagged(8)];
    // A tag cut short: the frame ends inside the second tag.
    frames.push(tagged(2)[..16].to_vec());
    frames.push(arp(6, 4, 10));
    frames.push(arp(8, 4, 0));
    frames.push(arp(6, 16, 0));
    let lb = interleaved(&frames, Verdict::Drop, 1024);
    assert_eq!(
        moved(&lb, frames.len()),
        vec![
            ("drop_vlan_truncated", 1),
            ("drop_vlan_too_deep", 2),
            ("drop_arp_truncated", 1),
            ("drop_arp_malformed", 2),
        ]
    );
}
