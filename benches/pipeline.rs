//! Per-packet cost of the whole L4 pipeline (`Worker::process` on a 64-frame `phy::Batch`,
//! built from configuration text exactly as the daemon and `carpio replay` build it):
//!
//! - `pipeline/established_udp_nat`: 64-byte UDP frames of 64 established flows (a small
//!   working set that stays in cache), NAT'ed to their backend;
//! - `pipeline/new_flow_udp_nat`: every frame from a new client (lookup miss, Maglev pick,
//!   insert, NAT); the clock advances one second per batch so flows expire and the sweep
//!   reclaims them, the steady state of a flood of short flows;
//! - `pipeline/nat_return`: the backend's replies, un-NATed toward the clients.
//!
//! Baselines measured in the same run, because the machine is shared and noisy (read the
//! ratios, not the absolute figures): `baseline/refill` (copying 64 frames into the batch,
//! which every pipeline bench also does since the rewrite works in place) and
//! `baseline/refill_classify` (refill plus the classifier alone). Per-packet figures are the
//! per-iteration time divided by 64 (criterion prints them as throughput in elements/s).
//!
//! Times are on-CPU time of the benchmark thread (`/proc/thread-self/schedstat`, as
//! `benches/balance.rs` does for the Maglev build), with flat sampling so every sample is
//! long compared with the scheduler tick that updates it: on a shared, loaded machine wall
//! time also counts the time other processes held the core.
//!
//! Related benches elsewhere: flow-table operations and a std `HashMap` baseline in
//! `benches/dataplane.rs` (`flow/lookup_hit`, `baseline/std_hashmap_lookup_hit`,
//! `flow/insert_remove`), the Maglev build for 1000 backends in `benches/balance.rs`
//! (`maglev_build_1000x65537`), and `carpio replay --bench` for Mpps on a synthetic capture.

use carpio::config;
use carpio::dataplane::snapshot::Link;
use carpio::phy::{Batch, Verdict};
use carpio::replay::{self, Pipeline};
use carpio::wire::classify::{LinkType, classify};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// On-CPU time of this thread in ns (schedstat's first field); `None` if the kernel hides it.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Runs `f` `iters` times and returns the thread's on-CPU time (wall time if unavailable).
fn on_cpu(iters: u64, mut f: impl FnMut()) -> Duration {
    let (c0, w0) = (thread_cpu_ns(), Instant::now());
    for _ in 0..iters {
        f();
    }
    match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
        _ => w0.elapsed(),
    }
}

const N: usize = 64;
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xc1, 0x01];
/// Ethernet 14 + IPv4 20 + UDP 8 + 18 bytes of payload = 60 (64 on the wire with the FCS).
const PAYLOAD: usize = 18;
const IP: usize = 14;
const IP_ID: usize = IP + 4;
const IP_SRC_LO: usize = IP + 14;
const UDP: usize = IP + 20;
const UDP_CHECKSUM: usize = UDP + 6;

const CONF: &str = "table <dns> { 198.18.1.1 lladdr \"02:00:00:00:01:01\", \
    198.18.1.2 lladdr \"02:00:00:00:01:02\", 198.18.1.3 lladdr \"02:00:00:00:01:03\", \
    198.18.1.4 lladdr \"02:00:00:00:01:04\" }\n\
    redirect dns { listen on 198.18.0.10 udp port 53\n forward to <dns> mode maglev check icmp }\n\
    flow table size 65536\n";

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
    acc as u16
}

/// A 60-byte Ethernet + IPv4 + UDP frame with valid checksums.
fn udp(
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    id: u16,
) -> Vec<u8> {
    let ulen = 8 + PAYLOAD;
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&macs.0);
    f.extend_from_slice(&macs.1);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&((20 + ulen) as u16).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    let c = !fold(sum16(&f[IP..IP + 20], 0));
    f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(ulen as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x5a; PAYLOAD]);
    let ps = sum16(&src, sum16(&dst, 17 + ulen as u32));
    let c = !fold(sum16(&f[UDP..], ps));
    let c = if c == 0 { 0xffff } else { c };
    f[UDP_CHECKSUM..UDP_CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    f
}

fn client(i: usize) -> ([u8; 4], u16) {
    ([198, 19, 0, i as u8], 10_000 + i as u16)
}

/// The same redirect over 1000 backends (MACs derived as `carpio replay` does): shows which
/// per-packet costs grow with the table.
fn conf_1000() -> String {
    let hosts: Vec<String> = (0..1000)
        .map(|i| format!("198.18.{}.{}", 4 + i / 250, 1 + i % 250))
        .collect();
    format!(
        "table <dns> {{ {} }}\n\
         redirect dns {{ listen on 198.18.0.10 udp port 53\n forward to <dns> mode maglev check icmp }}\n\
         flow table size 65536\n",
        hosts.join(", ")
    )
}

fn pipeline(conf: &str) -> Pipeline {
    let c = config::parse_str("bench.conf", conf, &[]).expect("bench config");
    let link = Link {
        mac: LB_MAC,
        ..Link::default()
    };
    replay::workers_for(&c, 1, link).expect("pipeline")
}

fn refill(b: &mut Batch, frames: &[Vec<u8>]) {
    b.clear();
    for f in frames {
        b.push(f, 0, LinkType::Ethernet);
    }
}

/// Runs `frames` through and returns what left, asserting every frame was sent.
fn run_once(p: &mut Pipeline, frames: &[Vec<u8>], now: u32) -> Vec<Vec<u8>> {
    let mut b = Batch::new(N);
    refill(&mut b, frames);
    p.workers[0].process(&mut b, now);
    b.iter()
        .map(|x| {
            assert_eq!(x.verdict, Verdict::Tx, "bench frame not forwarded");
            x.data().to_vec()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    paths(c, "pipeline", CONF);
    paths(c, "pipeline_1000_backends", &conf_1000());
}

fn paths(c: &mut Criterion, group: &str, conf: &str) {
    let inbound: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let (a, p) = client(i);
            udp((LB_MAC, CLIENT_MAC), a, p, [198, 18, 0, 10], 53, 1)
        })
        .collect();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(N as u64));
    g.sampling_mode(SamplingMode::Flat);

    let mut batch = Batch::new(N);
    let baselines = group == "pipeline";
    if baselines {
        g.bench_function("baseline/refill", |b| {
            b.iter_custom(|iters| {
                on_cpu(iters, || {
                    refill(&mut batch, black_box(&inbound));
                    black_box(batch.len());
                })
            })
        });
        g.bench_function("baseline/refill_classify", |b| {
            b.iter_custom(|iters| {
                on_cpu(iters, || {
                    refill(&mut batch, black_box(&inbound));
                    let mut n = 0u32;
                    for p in batch.iter() {
                        if let Ok(m) = classify(p.data(), p.link) {
                            n += u32::from(m.dport);
                        }
                    }
                    black_box(n);
                })
            })
        });
    }

    // Established flows: create them once, then the timed loop only hits.
    let mut p = pipeline(conf);
    let to_backends = run_once(&mut p, &inbound, 1);
    g.bench_function("established_udp_nat", |b| {
        b.iter_custom(|iters| {
            on_cpu(iters, || {
                refill(&mut batch, black_box(&inbound));
                p.workers[0].process(&mut batch, 2);
                black_box(batch.len());
            })
        })
    });

    // The backends' replies to those flows.
    let replies: Vec<Vec<u8>> = to_backends
        .iter()
        .map(|f| {
            let mut src = [0u8; 4];
            src.copy_from_slice(&f[IP + 16..IP + 20]);
            let mut dst = [0u8; 4];
            dst.copy_from_slice(&f[IP + 12..IP + 16]);
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&f[0..6]);
            let sport = u16::from_be_bytes([f[UDP + 2], f[UDP + 3]]);
            let dport = u16::from_be_bytes([f[UDP], f[UDP + 1]]);
            udp((LB_MAC, mac), src, sport, dst, dport, 2)
        })
        .collect();
    let back = run_once(&mut p, &replies, 2);
    assert!(back.iter().all(|f| f[IP + 12..IP + 16] == [198, 18, 0, 10]));
    g.bench_function("nat_return", |b| {
        b.iter_custom(|iters| {
            on_cpu(iters, || {
                refill(&mut batch, black_box(&replies));
                p.workers[0].process(&mut batch, 3);
                black_box(batch.len());
            })
        })
    });

    // New flows: each frame gets a fresh (source address low 16 bits, source port). The IP
    // id moves opposite to the address so the header checksum stays valid (RFC 1071 sums
    // commute), and the UDP checksum is 0 ("none", RFC 768), so patching costs two stores.
    let mut base = udp(
        (LB_MAC, CLIENT_MAC),
        [198, 19, 0, 0],
        1024,
        [198, 18, 0, 10],
        53,
        0x8000,
    );
    base[UDP_CHECKSUM..UDP_CHECKSUM + 2].copy_from_slice(&[0, 0]);
    let id0 = u16::from_be_bytes([base[IP_ID], base[IP_ID + 1]]);
    let mut p = pipeline(conf);
    let mut seq = 0u64;
    let mut now = 10u32;
    let next_batch = |batch: &mut Batch, seq: &mut u64| {
        batch.clear();
        for _ in 0..N {
            if let Some(slot) = batch.slot() {
                let k = (*seq % 0xfffe) as u16 + 1;
                let port = 1024 + ((*seq / 0xfffe) % 60_000) as u16;
                *seq += 1;
                let id = fold(u32::from(id0) + u32::from(!k));
                slot.fill(&base, 0, LinkType::Ethernet);
                let d = slot.data_mut();
                d[IP_SRC_LO..IP_SRC_LO + 2].copy_from_slice(&k.to_be_bytes());
                d[IP_ID..IP_ID + 2].copy_from_slice(&id.to_be_bytes());
                d[UDP..UDP + 2].copy_from_slice(&port.to_be_bytes());
                batch.commit();
            }
        }
    };
    // Check once that the patched frames are valid new flows.
    next_batch(&mut batch, &mut seq);
    p.workers[0].process(&mut batch, now);
    assert!(
        batch.iter().all(|x| x.verdict == Verdict::Tx),
        "patched frames refused"
    );
    g.bench_function("new_flow_udp_nat", |b| {
        b.iter_custom(|iters| {
            on_cpu(iters, || {
                next_batch(&mut batch, &mut seq);
                now += 1;
                p.workers[0].process(&mut batch, now);
                black_box(batch.len());
            })
        })
    });
    g.finish();
    let new = p.workers[0]
        .counter_values()
        .into_iter()
        .find(|(n, _)| *n == "flow_new")
        .map_or(0, |x| x.1);
    assert_eq!(new, seq, "every new-flow frame created a flow");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
