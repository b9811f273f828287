//! Fuzz smoke run inside `make test`: the real fuzz target bodies (fuzz/src/lib.rs, compiled
//! here by path) over the seed corpus, every committed crash regression (fuzz/regressions/),
//! and a bounded number of deterministic mutations of each seed (bit flips, byte overwrites,
//! truncations, insertions, splices with another seed). The coverage-guided runs are
//! `make fuzz` (scripts/fuzz.sh, cargo-fuzz/libFuzzer); this keeps the harness compiling and
//! catches regressions of everything the fuzzers found, without the fuzz toolchain.
//!
//! Seeds: every frame of tests/fixtures/replay/*.pcap and ../shared/corpus/tcpdump/*.pcap*,
//! the worker target's NAT/DSR conversations built from them, signed and unsigned CARP
//! advertisements, pfsync packets a real replicator sent, every configuration under
//! tests/fixtures/config/ and examples/, and control requests. `scripts/fuzz.sh` writes the same
//! seeds to disk for libFuzzer with
//! `CARPIO_FUZZ_SEEDS=dir cargo test --test fuzz_smoke -- --ignored write_seed_corpus`.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carpio::counters::Counters;
use carpio::ctl::proto::{self, Object, Request, Show};
use carpio::pfsync::state::{IPPROTO_TCP, tcps};
use carpio::pfsync::{FlowId, FlowState, Forward, LocalEvent, Peer, Replicator, ReplicatorConfig};
use carpio::phy::pcap::PcapSource;
use carpio::phy::{Batch, DevDrop, Device};
use carpio::wire::carp as wire_carp;
use carpio::wire::classify::LinkType;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Frames of a capture (empty if it cannot be read).
fn pcap_frames(path: &Path) -> Vec<(Vec<u8>, LinkType)> {
    let Ok(mut src) = PcapSource::open(path, 1) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut batch = Batch::new(64);
    let mut drops: Counters<{ DevDrop::COUNT }> = Counters::default();
    for _ in 0..10_000 {
        batch.clear();
        let Ok(n) = src.recv(&mut batch, &mut drops) else {
            break;
        };
        out.extend(batch.iter().map(|p| (p.data().to_vec(), p.link)));
        if n == 0 && src.exhausted() {
            break;
        }
    }
    out
}

fn files_in(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| exts.contains(&e))
        })
        .collect();
    v.sort();
    v
}

fn captures() -> Vec<PathBuf> {
    let mut v = files_in(&root().join("tests/fixtures/replay"), &["pcap", "pcapng"]);
    v.extend(files_in(
        &root().join("../shared/corpus/tcpdump"),
        &["pcap", "pcapng"],
    ));
    v
}

fn framed(mode: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut s = vec![mode];
    for f in frames {
        s.extend_from_slice(&(f.len() as u16).to_be_bytes());
        s.extend_from_slice(f);
    }
    s
}

fn carp_record(out: &mut Vec<u8>, flags: u8, dt: u8, payload: &[u8]) {
    out.push((payload.len() + 2) as u8);
    out.extend_from_slice(&[flags, dt]);
    out.extend_from_slice(payload);
}

fn pfsync_flow(id: u64, now: Duration) -> FlowState {
    FlowState {
        id: FlowId {
            creatorid: 0x0102_0304,
            id,
        },
        proto: IPPROTO_TCP,
        client: (IpAddr::V4(Ipv4Addr::new(198, 19, 0, 5)), 40000 + id as u16),
        vip: (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)), 80),
        backend: (IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)), 8080),
        forward: Forward::Nat,
        src: Peer {
            state: tcps::ESTABLISHED,
            seqlo: 1000,
            ..Default::default()
        },
        dst: Peer {
            state: tcps::ESTABLISHED,
            ..Default::default()
        },
        timeout: 0,
        created: now,
        expire: now + Duration::from_secs(60),
        packets: [3, 2],
        bytes: [300, 200],
        state_flags: 0,
    }
}

/// The payloads a replicator sends: bulk request, inserts, updates, deletes, clear, bulk
/// update and its end marker.
fn pfsync_payloads() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut a = Replicator::new(ReplicatorConfig::new(0x0102_0304));
    let mut b = Replicator::new(ReplicatorConfig::new(0x0506_0708));
    let mut now = Duration::from_secs(1);
    a.handle_up(now, true);
    b.handle_up(now, true);
    let from = IpAddr::V4(harness::PFSYNC_PEER);
    for step in 0..6u64 {
        for id in 0..4 {
            let f = pfsync_flow(id + 1, now);
            let ev = match step {
                0 => LocalEvent::Insert {
                    flow: f,
                    defer: false,
                },
                1 | 2 => LocalEvent::Update(FlowState {
                    packets: [3 + step, 2 + step],
                    ..f
                }),
                3 => LocalEvent::Delete(f.id),
                _ => LocalEvent::Clear,
            };
            a.handle_local(now, ev);
        }
        now += Duration::from_secs(2);
        for r in [&mut a, &mut b] {
            r.handle_timeout(now);
        }
        // Exchange until quiet (bulk requests and updates answered), bounded.
        for _ in 0..16 {
            let mut moved = false;
            while let Some(p) = a.poll_transmit() {
                b.handle_packet(now, &p, from);
                out.push(p);
                moved = true;
            }
            while let Some(p) = b.poll_transmit() {
                a.handle_packet(now, &p, from);
                out.push(p);
                moved = true;
            }
            while a.poll_event().is_some() || b.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// An IPv4 datagram around a pfsync payload (TTL 255, protocol 240), as the shell receives it.
fn pfsync_ip(payload: &[u8], src: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 255, 240, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&[224, 0, 0, 240]);
    p.extend_from_slice(payload);
    p
}

/// The seed inputs of one target.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    match target {
        "classify" => {
            for c in captures() {
                out.extend(pcap_frames(&c).into_iter().map(|(f, _)| f));
            }
        }
        "worker" => {
            for c in captures() {
                let frames: Vec<Vec<u8>> = pcap_frames(&c)
                    .into_iter()
                    .filter(|(_, l)| *l == LinkType::Ethernet)
                    .map(|(f, _)| f)
                    .collect();
                for group in frames.chunks(16) {
                    out.push(framed(0, group));
                    out.push(framed(1, group));
                }
            }
        }
        "carp" => {
            let cfg = harness::carp_config(carpio::carp::Balancing::None);
            for vhid in [1u8, 2, 3] {
                for (skew, demote) in [(0u8, 0u8), (200, 0), (0, 10), (255, 0)] {
                    let repr = wire_carp::Repr::advertisement(vhid, 1, skew, demote, [9; 8]);
                    let mut p = repr.to_bytes();
                    harness::carp_sign(&cfg, &mut p);
                    for mode in 0u8..4 {
                        let mut s = vec![mode];
                        // Multicast on the carp interface, right TTL: accepted; then the same
                        // with a wrong TTL, unsigned, and as IPv6.
                        carp_record(&mut s, 0b0000_0110, 5, &p);
                        carp_record(&mut s, 0b0000_1110, 5, &p);
                        carp_record(&mut s, 0b0001_0110, 5, &repr.to_bytes());
                        carp_record(&mut s, 0b0000_0111, 250, &p);
                        out.push(s);
                    }
                }
            }
        }
        "pfsync" => {
            let payloads = pfsync_payloads();
            for p in &payloads {
                out.push(framed(0, std::slice::from_ref(p)));
                out.push(framed(1, &[pfsync_ip(p, harness::PFSYNC_PEER)]));
                out.push(framed(3, &[pfsync_ip(p, Ipv4Addr::new(198, 18, 0, 66))]));
                out.push(framed(12, std::slice::from_ref(p)));
            }
            out.push(framed(0, &payloads));
        }
        "config" => {
            let mut dirs = vec![root().join("examples")];
            for sub in ["ok", "err", "manpage"] {
                dirs.push(root().join("tests/fixtures/config").join(sub));
            }
            dirs.push(root().join("tests/fixtures/replay"));
            for d in dirs {
                for f in files_in(&d, &["conf"]) {
                    if let Ok(b) = std::fs::read(&f) {
                        out.push(b);
                    }
                }
            }
            out.push(harness::worker_config_text(false).into_bytes());
            out.push(harness::worker_config_text(true).into_bytes());
        }
        "ctl" => {
            let reqs = [
                Request::Show { what: Show::Hosts },
                Request::Show {
                    what: Show::Counters,
                },
                Request::Set {
                    object: Object::Host,
                    target: "www1".into(),
                    enable: false,
                },
                Request::Reload,
                Request::Load {
                    path: "/etc/carpio.conf".into(),
                },
                Request::Monitor,
                Request::Poll,
                Request::Log { verbose: true },
                Request::Stop,
            ];
            for r in reqs {
                out.push(proto::to_line(&r).trim_end().as_bytes().to_vec());
            }
            out.push(br#"{"reply":"ok"}"#.to_vec());
            out.push(br#"{"cmd":"show","what":"\ud800"}"#.to_vec());
        }
        _ => {}
    }
    let dir = root().join("fuzz/regressions").join(target);
    for f in files_in(&dir, &["bin", "txt", "conf", "json"]) {
        if let Ok(b) = std::fs::read(f) {
            out.push(b);
        }
    }
    out
}

/// xorshift64* (Vigna): deterministic mutations, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, 0x40, 0x10, 0x05];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let n = rng.below(v.len() + 1);
                v.truncate(n);
            }
            3 => {
                let i = rng.below(v.len() + 1);
                let b = INTERESTING[rng.below(INTERESTING.len())];
                for _ in 0..1 + rng.below(16) {
                    v.insert(i, b);
                }
            }
            4 if !other.is_empty() => {
                let i = rng.below(v.len() + 1);
                let j = rng.below(other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            _ if v.len() >= 2 => {
                let i = rng.below(v.len() - 1);
                let w = u16::from_be_bytes([v[i], v[i + 1]]).wrapping_add(1 + rng.below(64) as u16);
                v[i..i + 2].copy_from_slice(&w.to_be_bytes());
            }
            _ => {}
        }
    }
    v
}

/// Runs one target over its seeds and then mutated seeds, at most `mutations` of them or until
/// `budget` is spent (the bound keeps `make test` short on a loaded machine; what ran is
/// printed). Returns the number of inputs run.
fn smoke(target: &str, mutations: usize, budget: Duration) -> usize {
    let body = harness::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no target {target}"));
    let seeds = seeds(target);
    assert!(
        !seeds.is_empty(),
        "target {target} has no seeds: the seed sources moved?"
    );
    for s in &seeds {
        body(s);
    }
    let started = Instant::now();
    let mut rng = Rng(0x6361_7270_696f ^ target.len() as u64);
    let mut ran = 0;
    while ran < mutations && started.elapsed() < budget {
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, a, b);
        body(&m);
        ran += 1;
    }
    eprintln!(
        "fuzz smoke {target}: {} seeds, {ran} mutations in {:?}",
        seeds.len(),
        started.elapsed()
    );
    seeds.len() + ran
}

const MUTATIONS: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(5);

#[test]
fn smoke_classify() {
    assert!(smoke("classify", MUTATIONS, BUDGET) > 100);
}

#[test]
fn smoke_worker() {
    assert!(smoke("worker", MUTATIONS, BUDGET) > 10);
}

#[test]
fn smoke_carp() {
    assert!(smoke("carp", MUTATIONS, BUDGET) > 10);
}

#[test]
fn smoke_pfsync() {
    assert!(smoke("pfsync", MUTATIONS, BUDGET) > 10);
}

#[test]
fn smoke_config() {
    assert!(smoke("config", MUTATIONS, BUDGET) > 10);
}

#[test]
fn smoke_ctl() {
    assert!(smoke("ctl", MUTATIONS, BUDGET) > 5);
}

/// The seeds must reach past the first check of each target, or the fuzzers start blind.
#[test]
fn seeds_reach_the_protocol_cores() {
    // A signed advert on the carp interface is accepted (no reject counted).
    let cfg = harness::carp_config(carpio::carp::Balancing::None);
    let mut iface = carpio::carp::Interface::new(&cfg).expect("carp config");
    iface.set_up(Duration::from_secs(1), true);
    let mut p = wire_carp::Repr::advertisement(1, 1, 0, 0, [9; 8]).to_bytes();
    harness::carp_sign(&cfg, &mut p);
    let rx = carpio::carp::Received {
        af: carpio::wire::classify::Af::V4,
        ttl: wire_carp::TTL,
        multicast: true,
        on_carp_interface: true,
        payload: &p,
    };
    assert_eq!(iface.handle_advert(Duration::from_secs(2), &rx), Ok(()));
    // The replicator's own packets parse and carry messages.
    let payloads = pfsync_payloads();
    assert!(payloads.len() >= 3, "{} pfsync payloads", payloads.len());
    for p in &payloads {
        let pkt = carpio::wire::pfsync::Packet::parse(p).expect("own pfsync packet");
        assert!(pkt.messages().all(|m| m.is_ok()));
    }
    // The fixture captures are there and read.
    assert!(captures().len() >= 5);
    assert!(seeds("classify").len() > 100);
}

/// Writes every target's seeds to `$CARPIO_FUZZ_SEEDS/<target>/` (scripts/fuzz.sh).
#[test]
#[ignore]
fn write_seed_corpus() {
    let Some(dir) = std::env::var_os("CARPIO_FUZZ_SEEDS") else {
        return;
    };
    for (t, _) in harness::TARGETS {
        let d = Path::new(&dir).join(t);
        std::fs::create_dir_all(&d).expect("seed dir");
        for (i, s) in seeds(t).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i:05}")), s).expect("seed file");
        }
    }
}
