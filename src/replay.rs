//! `carpio replay`: runs a capture file through carpio's receive path and reports what happened
//! to every frame. Each frame ends in exactly one class counter or one named drop counter, so
//! the totals add up to the number of frames read.
//!
//! Without a configuration, frames are only classified. With one (`-f carpio.conf`, the same
//! language as the daemon's), they go through the full pipeline: the redirects' virtual
//! services, tables and schedulers, the per-core flow tables, and the rewrites; `-o` then
//! writes the frames the balancer sends. Frames are spread across workers by their client
//! endpoint (the client's address and port, wherever it stands in the packet), so a NAT
//! flow's both directions and its ICMP errors land on the same worker and each worker's flow
//! table stays disjoint, as in the daemon.
//!
//! Replay has no ARP: hosts without a `lladdr` get a locally administered MAC derived from
//! their address (02:xx:xx:xx:xx:xx), and return traffic goes to the MAC the client's frames
//! came from.

use crate::config::{self, Config};
use crate::counters::Counters;
use crate::dataplane::flow::{self, Event};
use crate::dataplane::snapshot::{HostStates, Link, Snapshot, SnapshotCell};
use crate::dataplane::worker::{Stat, Worker, WorkerConfig};
use crate::dataplane::{FlowTableConfig, hash, rewrite};
use crate::phy::pcap::{PcapSink, PcapSource};
use crate::phy::{BATCH, Batch, DevDrop, Device, Verdict};
use crate::wire::classify::{Class, Drop, LinkType, classify};
use crossbeam::queue::ArrayQueue;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayConfig {
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    /// How many times the file is read in all.
    pub loops: u64,
    /// carpio configuration: run the full pipeline.
    pub config: Option<PathBuf>,
    pub defines: Vec<(String, String)>,
    /// Workers (default: the configuration's `workers`, else 1).
    pub workers: Option<usize>,
    /// Also write the frames the pipeline passes to the kernel (not only those it sends).
    pub include_pass: bool,
    /// Preload the capture and time only the workers (reading and writing excluded).
    pub bench: bool,
}

/// Counters of one replay.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub frames: u64,
    pub classes: Counters<{ Class::COUNT }>,
    pub drops: Counters<{ Drop::COUNT }>,
    pub dev_drops: Counters<{ DevDrop::COUNT }>,
    pub stats: Counters<{ Stat::COUNT }>,
    pub rewrite_errors: Counters<{ rewrite::Error::COUNT }>,
    pub flow: Counters<{ flow::Counter::COUNT }>,
    /// Frames processed by each worker.
    pub per_worker: Vec<u64>,
    /// Flows in the tables at the end.
    pub flows: u64,
    pub written: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Time spent inside the workers' `process` (the data plane's own cost).
    pub busy: Duration,
    /// With `--bench`: on-CPU time of the replay thread over the timed loop, workers plus
    /// batch refills (Linux `/proc/thread-self/schedstat`). On a shared machine wall time
    /// (`busy`) also counts the time other processes held the core; this does not.
    pub busy_cpu: Option<Duration>,
    /// Frames processed in the timed `--bench` loop.
    pub bench_frames: u64,
    /// Verdicts.
    pub tx: u64,
    pub passed: u64,
    pub dropped: u64,
}

impl Report {
    /// Frames accounted for: every class plus every drop.
    pub fn accounted(&self) -> u64 {
        self.classes.total() + self.drops.total() + self.dev_drops.total()
    }

    /// The value of a named counter (class, drop or pipeline counter), 0 if unknown.
    pub fn counter(&self, name: &str) -> u64 {
        Class::ALL
            .iter()
            .find(|c| c.name() == name)
            .map(|c| self.classes.get(c.index()))
            .or_else(|| {
                Drop::ALL
                    .iter()
                    .find(|c| c.name() == name)
                    .map(|c| self.drops.get(c.index()))
            })
            .or_else(|| {
                DevDrop::ALL
                    .iter()
                    .find(|c| c.name() == name)
                    .map(|c| self.dev_drops.get(c.index()))
            })
            .or_else(|| {
                Stat::ALL
                    .iter()
                    .find(|c| c.name() == name)
                    .map(|c| self.stats.get(c.index()))
            })
            .or_else(|| {
                rewrite::Error::ALL
                    .iter()
                    .find(|c| c.name() == name)
                    .map(|c| self.rewrite_errors.get(c.index()))
            })
            .or_else(|| {
                flow::Counter::ALL
                    .iter()
                    .find(|c| c.name() == name)
                    .map(|c| self.flow.get(c.index()))
            })
            .unwrap_or(0)
    }

    /// Human-readable counters, one `name value` line each (zero counters omitted), then totals.
    pub fn render(&self) -> String {
        let mut s = format!("frames {}\n", self.frames);
        let mut line = |name: &str, v: u64| {
            if v > 0 {
                s.push_str(&format!("  {name:<34} {v}\n"));
            }
        };
        for c in Class::ALL {
            line(&format!("class {}", c.name()), self.classes.get(c.index()));
        }
        for d in Drop::ALL {
            line(d.name(), self.drops.get(d.index()));
        }
        for d in DevDrop::ALL {
            line(d.name(), self.dev_drops.get(d.index()));
        }
        for d in Stat::ALL {
            line(d.name(), self.stats.get(d.index()));
        }
        for d in rewrite::Error::ALL {
            line(d.name(), self.rewrite_errors.get(d.index()));
        }
        for d in flow::Counter::ALL {
            line(d.name(), self.flow.get(d.index()));
        }
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.frames as f64 / secs
        } else {
            0.0
        };
        s.push_str(&format!(
            "accounted {} of {} frames\n",
            self.accounted(),
            self.frames
        ));
        if !self.per_worker.is_empty() {
            s.push_str(&format!(
                "verdicts tx {} pass {} drop {}; flows in tables {}\n",
                self.tx, self.passed, self.dropped, self.flows
            ));
            let per: Vec<String> = self.per_worker.iter().map(u64::to_string).collect();
            s.push_str(&format!("frames per worker {}\n", per.join(" ")));
            let processed: u64 = self.per_worker.iter().sum();
            if processed > 0 && !self.busy.is_zero() {
                let ns = self.busy.as_nanos() as f64 / processed as f64;
                s.push_str(&format!(
                    "worker time {:.1} ns/frame ({:.2} Mpps per core)\n",
                    ns,
                    1000.0 / ns
                ));
            }
            if let Some(cpu) = self.busy_cpu
                && self.bench_frames > 0
                && !cpu.is_zero()
            {
                let ns = cpu.as_nanos() as f64 / self.bench_frames as f64;
                s.push_str(&format!(
                    "worker on-CPU time {:.1} ns/frame ({:.2} Mpps per core)\n",
                    ns,
                    1000.0 / ns
                ));
            }
        }
        if self.written > 0 {
            s.push_str(&format!("written {}\n", self.written));
        }
        s.push_str(&format!("elapsed {:.3} s, {:.0} frames/s\n", secs, rate));
        s
    }
}

/// A locally administered MAC derived from an address (replay has no ARP).
pub fn derived_mac(a: IpAddr) -> [u8; 6] {
    let b = match a {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(v) => {
            let o = v.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x00, b[0], b[1], b[2], b[3]]
}

/// Host states for a replay: every host up, MACs derived where no `lladdr` is given.
pub fn replay_host_states(cfg: &Config) -> HostStates {
    let macs = cfg
        .hosts()
        .filter_map(|h| match h.addr {
            config::Address::Ip(ip) => Some((ip, h.lladdr.unwrap_or_else(|| derived_mac(ip)))),
            config::Address::Name(_) => None,
        })
        .collect();
    HostStates {
        macs,
        ..Default::default()
    }
}

/// The worker a frame belongs to: a hash of its client endpoint (see the module doc).
fn worker_for(snap: &Snapshot, frame: &[u8], link: LinkType, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let Ok(m) = classify(frame, link) else {
        return 0;
    };
    let (addr, port) = if snap.is_vip(m.dst) {
        match m.quoted {
            Some(q) => (q.dst, q.dport),
            None => (m.src, m.sport),
        }
    } else if snap.by_host.contains_key(&m.src)
        || m.quoted.is_some_and(|q| snap.by_host.contains_key(&q.dst))
    {
        match m.quoted {
            Some(q) => (q.src, q.sport),
            None => (m.dst, m.dport),
        }
    } else {
        return hash::symmetric_meta(0, &m) as usize % n;
    };
    let a = hash::addr16(addr);
    hash::directed(0x5eed, 0, &a, port, &[0; 16], 0) as usize % n
}

/// On-CPU time of the calling thread (first field of `/proc/thread-self/schedstat`), if the
/// kernel exposes it.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Replays `cfg.input` and returns the counters.
pub fn run(cfg: &ReplayConfig) -> io::Result<Report> {
    match &cfg.config {
        None => run_classify(cfg),
        Some(path) => {
            let conf = config::load(path, &cfg.defines)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            run_pipeline(cfg, &conf)
        }
    }
}

fn output_sink(
    cfg: &ReplayConfig,
    src: &PcapSource,
    include_pass: bool,
) -> io::Result<Option<PcapSink>> {
    match &cfg.output {
        Some(p) => {
            let link = src
                .file_link()
                .and_then(crate::phy::pcap::link_type)
                .unwrap_or(LinkType::Ethernet);
            let mut s = PcapSink::create(p, link)?;
            s.include_pass = include_pass;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

fn run_classify(cfg: &ReplayConfig) -> io::Result<Report> {
    let mut src = PcapSource::open(&cfg.input, cfg.loops)?;
    let mut sink = output_sink(cfg, &src, true)?;
    let mut report = Report::default();
    let mut batch = Batch::new(BATCH);
    let started = Instant::now();
    loop {
        let n = src.recv(&mut batch, &mut report.dev_drops)?;
        for p in batch.iter_mut() {
            match classify(p.data(), p.link) {
                Ok(meta) => {
                    report.classes.add(meta.class.index(), 1);
                    p.verdict = Verdict::Pass;
                }
                Err(d) => {
                    report.drops.add(d.index(), 1);
                    p.verdict = Verdict::Drop;
                }
            }
        }
        if let Some(s) = sink.as_mut() {
            s.send(&batch)?;
        }
        if n == 0 && src.exhausted() {
            break;
        }
    }
    report.elapsed = started.elapsed();
    report.frames = src.frames;
    if let Some(s) = sink {
        report.written = s.finish()?;
    }
    Ok(report)
}

/// Workers sharing one snapshot cell and one pfsync event queue.
pub struct Pipeline {
    pub workers: Vec<Worker>,
    pub cell: Arc<SnapshotCell>,
    pub events: Arc<ArrayQueue<Event>>,
}

/// Builds the workers of a replay (or of a test) for `conf`.
pub fn workers_for(conf: &Config, n: usize, link: Link) -> io::Result<Pipeline> {
    let snap = Snapshot::build(conf, &replay_host_states(conf), link, None)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let cell = Arc::new(SnapshotCell::from_pointee(snap));
    let events = Arc::new(ArrayQueue::new(1 << 16));
    // `flow table size` is per worker (docs/carpio.conf.md).
    let per_core = conf.global.flow_table_size.max(1024);
    let mut workers = Vec::new();
    for core in 0..n {
        let wc = WorkerConfig {
            core: core as u8,
            flow: FlowTableConfig {
                capacity: per_core.min(flow::MAX_CAPACITY),
                ..FlowTableConfig::default()
            },
            ..WorkerConfig::default()
        };
        workers.push(
            Worker::new(wc, cell.clone(), events.clone(), None).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("flow table: {e:?}"))
            })?,
        );
    }
    Ok(Pipeline {
        workers,
        cell,
        events,
    })
}

fn run_pipeline(cfg: &ReplayConfig, conf: &Config) -> io::Result<Report> {
    let n = cfg
        .workers
        .or(conf.global.workers.map(|w| w as usize))
        .unwrap_or(1)
        .clamp(1, 64);
    let Pipeline {
        mut workers,
        cell,
        events,
    } = workers_for(conf, n, Link::default())?;
    let mut src = PcapSource::open(&cfg.input, cfg.loops)?;
    let mut sink = output_sink(cfg, &src, cfg.include_pass)?;
    let mut report = Report {
        per_worker: vec![0; n],
        ..Report::default()
    };
    let mut input = Batch::new(BATCH);
    let mut per: Vec<Batch> = (0..n).map(|_| Batch::new(BATCH)).collect();
    let mut preload: Vec<Vec<(Vec<u8>, u64, LinkType)>> = vec![Vec::new(); n];
    let started = Instant::now();
    // Replay time: the capture's own clock, in seconds (flow timeouts follow the capture).
    let mut now = 0u32;
    let flush = |w: &mut Worker,
                 b: &mut Batch,
                 now: u32,
                 report: &mut Report,
                 sink: &mut Option<PcapSink>|
     -> io::Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        w.process(b, now);
        report.busy += t.elapsed();
        report.per_worker[usize::from(w.core())] += b.len() as u64;
        for p in b.iter() {
            match p.verdict {
                Verdict::Tx => report.tx += 1,
                Verdict::Pass | Verdict::None => report.passed += 1,
                Verdict::Drop => report.dropped += 1,
            }
        }
        if let Some(s) = sink.as_mut() {
            s.send(b)?;
        }
        b.clear();
        // Nobody drains pfsync events in a replay.
        while events.pop().is_some() {}
        Ok(())
    };
    loop {
        let got = src.recv(&mut input, &mut report.dev_drops)?;
        let snap = cell.load();
        for p in input.iter() {
            now = now.max((p.ts_ns / 1_000_000_000) as u32);
            let wi = worker_for(&snap, p.data(), p.link, n);
            if cfg.bench {
                preload[wi].push((p.data().to_vec(), p.ts_ns, p.link));
                continue;
            }
            per[wi].push(p.data(), p.ts_ns, p.link);
            if per[wi].len() == per[wi].capacity() {
                flush(&mut workers[wi], &mut per[wi], now, &mut report, &mut sink)?;
            }
        }
        if got == 0 && src.exhausted() {
            break;
        }
    }
    for (w, b) in workers.iter_mut().zip(per.iter_mut()) {
        flush(w, b, now, &mut report, &mut sink)?;
    }
    if cfg.bench {
        // Only the workers are timed: batches are refilled from memory between calls.
        let cpu0 = thread_cpu();
        for (wi, frames) in preload.iter().enumerate() {
            for chunk in frames.chunks(BATCH) {
                let b = &mut per[wi];
                for (d, ts, l) in chunk {
                    now = now.max((ts / 1_000_000_000) as u32);
                    b.push(d, *ts, *l);
                }
                flush(&mut workers[wi], b, now, &mut report, &mut None)?;
                report.bench_frames += chunk.len() as u64;
            }
        }
        // On-CPU time of the whole timed loop: the workers plus refilling batches from
        // memory (an upper bound of the workers' own cost, free of other processes' time).
        if let (Some(a), Some(b)) = (cpu0, thread_cpu()) {
            report.busy_cpu = Some(b.saturating_sub(a));
        }
    }
    report.elapsed = started.elapsed();
    report.frames = src.frames;
    for w in &workers {
        report.classes.merge(&w.classes);
        report.drops.merge(&w.drops);
        report.stats.merge(&w.stats);
        report.rewrite_errors.merge(&w.rewrite_errors);
        report.flow.merge(w.flows().counters());
        report.flows += w.flows().len() as u64;
    }
    if let Some(s) = sink {
        report.written = s.finish()?;
    }
    Ok(report)
}
