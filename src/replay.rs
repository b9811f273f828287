//! `carpio replay`: runs a capture file through carpio's receive path and reports what happened
//! to every frame. Each frame ends in exactly one class counter or one named drop counter, so
//! the totals add up to the number of frames read.

use crate::counters::Counters;
use crate::phy::pcap::{PcapSink, PcapSource};
use crate::phy::{BATCH, Batch, DevDrop, Device, Verdict};
use crate::wire::classify::{Class, Drop, LinkType, classify};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    /// How many times the file is read in all.
    pub loops: u64,
}

/// Counters of one replay.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub frames: u64,
    pub classes: Counters<{ Class::COUNT }>,
    pub drops: Counters<{ Drop::COUNT }>,
    pub dev_drops: Counters<{ DevDrop::COUNT }>,
    pub written: u64,
    /// Time spent in the pipeline (reading excluded is not possible for a file; this is the
    /// wall time of the whole run).
    pub elapsed: Duration,
}

impl Report {
    /// Frames accounted for: every class plus every drop.
    pub fn accounted(&self) -> u64 {
        self.classes.total() + self.drops.total() + self.dev_drops.total()
    }

    /// Human-readable counters, one `name value` line each (zero counters omitted), then totals.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("frames {}\n", self.frames));
        for c in Class::ALL {
            let v = self.classes.get(c.index());
            if v > 0 {
                s.push_str(&format!("  class {:<24} {v}\n", c.name()));
            }
        }
        for d in Drop::ALL {
            let v = self.drops.get(d.index());
            if v > 0 {
                s.push_str(&format!("  {:<30} {v}\n", d.name()));
            }
        }
        for d in DevDrop::ALL {
            let v = self.dev_drops.get(d.index());
            if v > 0 {
                s.push_str(&format!("  {:<30} {v}\n", d.name()));
            }
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
        if self.written > 0 {
            s.push_str(&format!("written {}\n", self.written));
        }
        s.push_str(&format!("elapsed {:.3} s, {:.0} frames/s\n", secs, rate));
        s
    }
}

/// Replays `cfg.input` and returns the counters.
pub fn run(cfg: &ReplayConfig) -> io::Result<Report> {
    let mut src = PcapSource::open(&cfg.input, cfg.loops)?;
    let mut sink = match &cfg.output {
        Some(p) => {
            let link = src
                .file_link()
                .and_then(crate::phy::pcap::link_type)
                .unwrap_or(LinkType::Ethernet);
            let mut s = PcapSink::create(p, link)?;
            s.include_pass = true;
            Some(s)
        }
        None => None,
    };
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
