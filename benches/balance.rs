//! Scheduler benchmarks: Maglev build (1000 backends, M = 65537; the Maglev paper reports
//! 1.8 ms), Maglev lookup, and one pick per relayd mode. Brief settings: these machines are
//! shared, so read the figures as orders of magnitude. The build is also reported as on-CPU
//! time of the benchmark thread (`/proc/thread-self/schedstat`), which a loaded machine
//! inflates far less than wall time.

use carpio::balance::maglev::{DEFAULT_TABLE_SIZE, Maglev, Member};
use carpio::balance::{Host, Key, Mode, PickInput, PickState, Scheduler, SchedulerConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// On-CPU time of this thread (first field of schedstat, in ns), if the kernel exposes it.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

fn maglev(c: &mut Criterion) {
    let ns = names(1000);
    let ms: Vec<Member<'_>> = ns
        .iter()
        .map(|n| Member {
            name: n,
            weight: 1,
            up: true,
        })
        .collect();
    c.bench_function("maglev_build_1000x65537", |b| {
        b.iter(|| Maglev::build(DEFAULT_TABLE_SIZE, black_box(&ms)))
    });
    c.bench_function("maglev_build_1000x65537_oncpu", |b| {
        b.iter_custom(|iters| {
            let (cpu0, wall0) = (thread_cpu(), Instant::now());
            for _ in 0..iters {
                let _ = black_box(Maglev::build(DEFAULT_TABLE_SIZE, black_box(&ms)));
            }
            match (cpu0, thread_cpu()) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => wall0.elapsed(),
            }
        })
    });
    let m = Maglev::build(DEFAULT_TABLE_SIZE, &ms).unwrap_or_else(|_| std::process::exit(1));
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    c.bench_function("maglev_lookup", |b| {
        b.iter(|| {
            h = h.wrapping_mul(0x5851_f42d_4c95_7f2d).wrapping_add(1);
            m.lookup(black_box(h))
        })
    });
}

fn picks(c: &mut Criterion) {
    let hosts: Vec<Host> = names(32)
        .into_iter()
        .map(|name| Host {
            name,
            weight: 1,
            up: true,
        })
        .collect();
    let states: Vec<u32> = (0..32).map(|i| 100 + (i * 7919) % 13).collect();
    let client: IpAddr = "198.18.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let listen: IpAddr = "198.18.1.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    for (label, mode, sticky) in [
        ("roundrobin", Mode::RoundRobin, false),
        ("random", Mode::Random, false),
        ("source_hash", Mode::SourceHash, false),
        ("least_states", Mode::LeastStates, false),
        ("loadbalance", Mode::LoadBalance, false),
        ("hash", Mode::Hash, false),
        ("maglev", Mode::Maglev, false),
        ("maglev_sticky", Mode::Maglev, true),
    ] {
        let cfg = SchedulerConfig {
            key: Key::parse("bench").unwrap_or(Key([0; 16])),
            sticky,
            ..SchedulerConfig::new(mode, "bench")
        };
        let Ok(mut s) = Scheduler::new(cfg, hosts.clone()) else {
            continue;
        };
        // One down host so the skip path is exercised.
        let _ = s.set_up(5, false);
        let mut st = PickState::new(1);
        let mut flow = 0u64;
        c.bench_function(&format!("pick_{label}"), |b| {
            b.iter(|| {
                flow = flow.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let input = PickInput {
                    client,
                    client_port: 40000,
                    listen,
                    listen_port: 53,
                    proto: 17,
                    flow_hash: flow,
                    states: &states,
                };
                s.pick(black_box(&input), &mut st)
            })
        });
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! { name = benches; config = config(); targets = maglev, picks }
criterion_main!(benches);
