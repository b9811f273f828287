//! Control plane → data plane: snapshots swapped under traffic, and identical choices on two
//! nodes with the same configuration.
//!
//! The swap test runs a worker on this thread while another thread rebuilds and swaps the
//! snapshot every few milliseconds, toggling one backend down and up. Whatever snapshot a
//! batch saw, an established flow must keep its backend unless that backend went down; a flow
//! that moves is counted (`flow_rescheduled`), moves once, and only away from the toggled host.
//! Loops are bounded in count; nothing here asserts on time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use carpio::config::{self, Config};
use carpio::dataplane::snapshot::{Link, Snapshot};
use carpio::phy::{Batch, Verdict};
use carpio::replay::{self, Pipeline};
use carpio::wire::classify::LinkType;

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xc1, 0x01];
const BACKENDS: usize = 4;

fn conf(mode: &str) -> Config {
    let hosts: Vec<String> = (1..=BACKENDS)
        .map(|i| format!("198.18.1.{i} lladdr \"02:00:00:00:01:{i:02x}\""))
        .collect();
    let text = format!(
        "table <w> {{ {} }}\n\
         redirect r {{\n listen on 198.18.0.10 udp port 53\n listen on 198.18.0.10 tcp port 80\n \
         forward to <w> mode {mode} check icmp\n}}\n",
        hosts.join(", ")
    );
    config::parse_str("snapshot.conf", &text, &[]).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Client `i` (198.19.x.y:port) → VIP:53, a UDP frame with valid checksums.
fn udp_frame(i: u32) -> Vec<u8> {
    let src = [198, 19, (i >> 8) as u8, i as u8];
    let sport = 1024 + (i % 60000) as u16;
    udp_between(src, sport, [198, 18, 0, 10], 53, CLIENT_MAC)
}

/// An Ethernet/IPv4/UDP frame to LB_MAC from `mac`, every checksum filled.
fn udp_between(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, mac: [u8; 6]) -> Vec<u8> {
    let payload = b"q";
    let ulen = 8 + payload.len();
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(ulen as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut ps = sum16(&src, 0);
    ps = sum16(&dst, ps) + 17 + ulen as u32;
    let c = fold(sum16(&udp, ps));
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + ulen) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

/// The backend a NAT'ed frame went to (its destination address's last octet, 1-based).
fn backend_of(out: &[u8]) -> u8 {
    // Ethernet 14 + IPv4 destination at 16.
    out[14 + 19]
}

fn host_id(c: &Config, last_octet: u8) -> u32 {
    let want = IpAddr::from([198, 18, 1, last_octet]);
    c.hosts()
        .find(|h| h.addr == config::Address::Ip(want))
        .map(|h| h.id)
        .unwrap_or_else(|| panic!("no host {want}"))
}

fn counter(p: &Pipeline, name: &str) -> u64 {
    p.workers
        .iter()
        .flat_map(|w| w.counter_values())
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn snapshots_swapped_under_traffic() {
    const FLOWS: u32 = 512;
    const MIN_SWAPS: u64 = 30;
    const MAX_ROUNDS: usize = 20_000;
    let c = conf("maglev");
    let mut pipe = replay::workers_for(&c, 1, Link::default()).unwrap_or_else(|e| panic!("{e}"));
    let toggled = BACKENDS as u8; // 198.18.1.4 goes down and up
    let toggled_id = host_id(&c, toggled);
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let mut t = Traffic {
        frames: (0..FLOWS).map(udp_frame).collect(),
        first: HashMap::new(),
        current: HashMap::new(),
        moves: 0,
        toggled,
    };
    // First placements with every host up (the cell's initial snapshot), before any swap.
    t.round(&mut pipe);
    let swapper = {
        let (cell, stop, swaps, c) = (pipe.cell.clone(), stop.clone(), swaps.clone(), c.clone());
        let base = replay::replay_host_states(&c);
        std::thread::spawn(move || {
            // Bounded: at most 10 000 swaps even if the worker never asks to stop.
            for n in 0..10_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut st = base.clone();
                if n % 2 == 0 {
                    st.down.push(toggled_id);
                }
                let prev = cell.load_full();
                match Snapshot::build(&c, &st, prev.link.clone(), Some(&prev)) {
                    Ok(s) => cell.store(Arc::new(s)),
                    Err(e) => panic!("{e}"),
                }
                swaps.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let mut rounds = 0;
    while rounds < MAX_ROUNDS && (swaps.load(Ordering::Relaxed) < MIN_SWAPS || rounds < 50) {
        t.round(&mut pipe);
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    swapper
        .join()
        .unwrap_or_else(|_| panic!("swapper panicked"));
    let swaps = swaps.load(Ordering::Relaxed);
    assert!(swaps >= MIN_SWAPS, "only {swaps} swaps in {rounds} rounds");
    // A last snapshot with the toggled host down: now every flow must be off it.
    let mut st = replay::replay_host_states(&c);
    st.down.push(toggled_id);
    let prev = pipe.cell.load_full();
    let s =
        Snapshot::build(&c, &st, prev.link.clone(), Some(&prev)).unwrap_or_else(|e| panic!("{e}"));
    pipe.cell.store(Arc::new(s));
    t.round(&mut pipe);
    let on_toggled = t.first.values().filter(|&&b| b == toggled).count();
    assert!(
        on_toggled > FLOWS as usize / BACKENDS / 2,
        "{on_toggled} flows first on the toggled host"
    );
    assert!(t.current.values().all(|&b| b != toggled));
    // Flows first placed on a host that never went down never moved; each other flow moved
    // exactly once (the first move took it to an up host, which stayed up), and every move
    // was counted.
    let mut moved = 0u64;
    for i in 0..FLOWS {
        if t.first[&i] == toggled {
            moved += 1;
        } else {
            assert_eq!(t.first[&i], t.current[&i], "flow {i} moved off an up host");
        }
    }
    assert_eq!(t.moves, moved, "a flow moved more than once");
    assert_eq!(counter(&pipe, "flow_rescheduled"), moved);
}

/// The traffic of the swap test: every flow once per round, its backend followed.
struct Traffic {
    frames: Vec<Vec<u8>>,
    first: HashMap<u32, u8>,
    current: HashMap<u32, u8>,
    moves: u64,
    toggled: u8,
}

impl Traffic {
    fn round(&mut self, pipe: &mut Pipeline) {
        let mut batch = Batch::new(64);
        let ids: Vec<u32> = (0..self.frames.len() as u32).collect();
        for chunk in ids.chunks(64) {
            batch.clear();
            for &i in chunk {
                assert!(batch.push(&self.frames[i as usize], 0, LinkType::Ethernet));
            }
            pipe.workers[0].process(&mut batch, 100);
            for (&i, p) in chunk.iter().zip(batch.iter()) {
                assert_eq!(p.verdict, Verdict::Tx, "flow {i}");
                let b = backend_of(p.data());
                let first = *self.first.entry(i).or_insert(b);
                if let Some(prev) = self.current.insert(i, b)
                    && prev != b
                {
                    // Only a flow whose backend went down may move, and only away from it.
                    assert_eq!(prev, self.toggled, "flow {i} moved from {prev} to {b}");
                    self.moves += 1;
                }
                assert!(
                    !(b == self.toggled && first != self.toggled),
                    "flow {i} came back to the toggled host"
                );
            }
        }
        while pipe.events.pop().is_some() {}
    }
}

/// Two nodes with the same configuration (independent pipelines, worker counts, cores)
/// choose the same backend for the same flow: active/active and failover need it.
#[test]
fn identical_config_identical_choices_on_two_nodes() {
    const FLOWS: u32 = 10_000;
    for mode in ["maglev", "source-hash"] {
        let c = conf(mode);
        let mut a = replay::workers_for(&c, 1, Link::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut b = replay::workers_for(&c, 3, Link::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut spread = [0u32; BACKENDS + 1];
        let mut ba = Batch::new(64);
        let mut bb = Batch::new(64);
        for i in 0..FLOWS {
            let f = udp_frame(i);
            ba.clear();
            bb.clear();
            assert!(ba.push(&f, 0, LinkType::Ethernet));
            assert!(bb.push(&f, 0, LinkType::Ethernet));
            a.workers[0].process(&mut ba, 100);
            let w = (i as usize) % b.workers.len();
            b.workers[w].process(&mut bb, 100);
            let (pa, pb) = (ba.iter().next(), bb.iter().next());
            let (Some(pa), Some(pb)) = (pa, pb) else {
                panic!("empty batch")
            };
            assert_eq!(pa.verdict, Verdict::Tx, "{mode} flow {i}");
            assert_eq!(
                pa.data(),
                pb.data(),
                "{mode} flow {i}: nodes chose differently"
            );
            spread[usize::from(backend_of(pa.data()))] += 1;
            while a.events.pop().is_some() {}
            while b.events.pop().is_some() {}
        }
        // Not trivially equal: every backend takes a fair share.
        for (h, n) in spread.iter().enumerate().skip(1) {
            assert!(
                *n > FLOWS / (BACKENDS as u32) / 2,
                "{mode}: backend {h} got {n} of {FLOWS}: {spread:?}"
            );
        }
        assert_eq!(counter(&a, "flow_new"), u64::from(FLOWS));
        assert_eq!(counter(&b, "flow_new"), u64::from(FLOWS));
    }
}

/// carp(4)'s `carp_ourether` in the worker: with balancing `none`, a BACKUP drops what a switch
/// floods to it (counted `drop_carp_not_owner`), a MASTER takes frames to its virtual MAC and
/// to the link's own MAC but not frames addressed to another station.
#[test]
fn carp_backup_drops_flooded_frames_and_master_takes_its_own() {
    use carpio::carp::Balancing;
    use carpio::carp::{Ownership, balance::MAX_NODES};
    const VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x07];
    let c = conf("roundrobin");
    let link = Link {
        mac: LB_MAC,
        ..Link::default()
    };
    let mut pipe = replay::workers_for(&c, 1, link).unwrap_or_else(|e| panic!("{e}"));
    let own = |master: bool| {
        let mut macs = [[0u8; 6]; MAX_NODES];
        macs[0] = VMAC;
        Ownership {
            balancing: Balancing::None,
            lsmask: u32::from(master),
            lscount: 1,
            leader_master: master,
            macs,
            lladdr: VMAC,
            hashkey: [0, 0],
            key_head: [0; 4],
        }
    };
    let run = |pipe: &mut Pipeline, master: bool, dst: [u8; 6], i: u32| -> Verdict {
        let prev = pipe.cell.load_full();
        let mut s = Snapshot::build(
            &c,
            &replay::replay_host_states(&c),
            prev.link.clone(),
            Some(&prev),
        )
        .unwrap();
        s.carp = Some(own(master));
        pipe.cell.store(Arc::new(s));
        let mut frame = udp_frame(i);
        frame[0..6].copy_from_slice(&dst);
        let mut batch = Batch::new(4);
        let slot = batch.slot().unwrap();
        slot.fill(&frame, 0, LinkType::Ethernet);
        batch.commit();
        pipe.workers[0].process(&mut batch, 10);
        batch.iter().next().unwrap().verdict
    };
    let other = [0x02, 0, 0, 0, 0x99, 0x99];
    assert_eq!(run(&mut pipe, false, VMAC, 1), Verdict::Drop);
    assert_eq!(run(&mut pipe, false, LB_MAC, 2), Verdict::Drop);
    assert_eq!(counter(&pipe, "drop_carp_not_owner"), 2);
    assert_eq!(counter(&pipe, "flow_new"), 0, "a backup creates no states");
    assert_eq!(run(&mut pipe, true, VMAC, 3), Verdict::Tx);
    assert_eq!(run(&mut pipe, true, LB_MAC, 4), Verdict::Tx);
    assert_eq!(run(&mut pipe, true, other, 5), Verdict::Drop);
    assert_eq!(counter(&pipe, "drop_carp_not_owner"), 3);
    assert_eq!(counter(&pipe, "flow_new"), 2);
}

/// carp IP balancing with NAT: every node receives the backends' replies (the carp address's
/// MAC is flooded), and every node holds the flows (pfsync). Each reply is un-NATed by exactly
/// one node, the one whose share its (src, dst) hash falls in, as `carp_lsdrop` decides for
/// every packet of an OpenBSD carp interface; the others drop it (`drop_carp_not_owner`).
/// Without the filter every node would answer the client with the same reply.
#[test]
fn ip_balancing_un_nats_each_reply_on_one_node_only() {
    use carpio::carp::Balancing;
    use carpio::carp::{Ownership, balance::MAX_NODES};
    const FLOWS: u32 = 64;
    let c = conf("roundrobin");
    let link = Link {
        mac: LB_MAC,
        ..Link::default()
    };
    let mut nodes = [
        replay::workers_for(&c, 1, link.clone()).unwrap_or_else(|e| panic!("{e}")),
        replay::workers_for(&c, 1, link).unwrap_or_else(|e| panic!("{e}")),
    ];
    let one = |pipe: &mut Pipeline, frame: &[u8]| -> (Verdict, Vec<u8>) {
        let mut batch = Batch::new(4);
        let slot = batch.slot().unwrap();
        slot.fill(frame, 0, LinkType::Ethernet);
        batch.commit();
        pipe.workers[0].process(&mut batch, 10);
        let p = batch.iter().next().unwrap();
        (p.verdict, p.data().to_vec())
    };
    // The same flows on both nodes (both pick alike: the same round-robin from the same start).
    let mut replies = Vec::new();
    for i in 0..FLOWS {
        // Even client addresses: with round-robin over backends .1-.4 the replies' hashes
        // spread over both nodes (consecutive clients would all hash to one with 2 nodes).
        let f = udp_frame(i * 2);
        let (va, out) = one(&mut nodes[0], &f);
        let (vb, out_b) = one(&mut nodes[1], &f);
        assert_eq!((va, vb), (Verdict::Tx, Verdict::Tx));
        assert_eq!(out, out_b, "both nodes picked alike");
        let ip = &out[14..34];
        let (client, backend) = (
            [ip[12], ip[13], ip[14], ip[15]],
            [ip[16], ip[17], ip[18], ip[19]],
        );
        let sport = u16::from_be_bytes([out[34], out[35]]);
        let bport = u16::from_be_bytes([out[36], out[37]]);
        let bmac = [out[0], out[1], out[2], out[3], out[4], out[5]];
        replies.push(udp_between(backend, bport, client, sport, bmac));
    }
    // Node 0 masters the first vhost, node 1 the second.
    for (n, pipe) in nodes.iter_mut().enumerate() {
        let prev = pipe.cell.load_full();
        let mut s = Snapshot::build(
            &c,
            &replay::replay_host_states(&c),
            prev.link.clone(),
            Some(&prev),
        )
        .unwrap();
        let mut macs = [[0u8; 6]; MAX_NODES];
        macs[0] = [0x01, 0x00, 0x5e, 0x00, 0x01, 0x07];
        macs[1] = macs[0];
        s.carp = Some(Ownership {
            balancing: Balancing::Ip,
            lsmask: 1 << n,
            lscount: 2,
            leader_master: n == 0,
            macs,
            lladdr: macs[0],
            hashkey: [0, 0],
            key_head: [0; 4],
        });
        pipe.cell.store(Arc::new(s));
    }
    // Sent to the carp address: its multicast MAC, flooded to both nodes.
    for r in replies.iter_mut() {
        r[0..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x01, 0x07]);
    }
    let mut per_node = [0u32; 2];
    for r in &replies {
        let (va, _) = one(&mut nodes[0], r);
        let (vb, _) = one(&mut nodes[1], r);
        match (va, vb) {
            (Verdict::Tx, Verdict::Drop) => per_node[0] += 1,
            (Verdict::Drop, Verdict::Tx) => per_node[1] += 1,
            other => panic!("reply handled by not exactly one node: {other:?}"),
        }
    }
    assert!(
        per_node.iter().all(|&n| n > 0),
        "both nodes take a share: {per_node:?}"
    );
    let dropped =
        counter(&nodes[0], "drop_carp_not_owner") + counter(&nodes[1], "drop_carp_not_owner");
    assert_eq!(dropped, u64::from(FLOWS));
    let out = counter(&nodes[0], "tx_nat_out") + counter(&nodes[1], "tx_nat_out");
    assert_eq!(out, u64::from(FLOWS));
    // A reply sent to one node's own MAC (the backend routes through that node) arrives on
    // its physical interface, not the carp one: that node un-NATs it whatever the hash.
    for r in replies.iter_mut() {
        r[0..6].copy_from_slice(&LB_MAC);
        assert_eq!(one(&mut nodes[0], r).0, Verdict::Tx);
    }
    assert_eq!(
        counter(&nodes[0], "tx_nat_out"),
        u64::from(per_node[0] + FLOWS)
    );
}
