//! The failover scenario of `carpio bench`: how long a virtual address is unreachable when its
//! master dies, carpio's carp against ucarp, by the method of `examples/failover.rs`.
//!
//! Own lab (`cio-<pid>-fo-*`, 198.18.6.0/24): nodes n1 and n2 and a client on a bridge. Each
//! node is a process (carpio: `carpio bench carp-node`, a macvlan holds the VIP while master;
//! ucarp with up/down scripts). The client pings the VIP every 10 ms; the master is SIGKILLed
//! and its bridge port set down at the same instant (a dead box: a killed process leaves its
//! address behind). The outage is the longest gap between two echo replies after the kill.

use super::report::Sample;
use crate::lab::{Lab, VethConfig};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VIP: &str = "198.18.6.10";

/// A setting under test: subject name, carpio or ucarp, advbase, skews of n1 and n2.
#[derive(Clone, Copy)]
pub struct Setting {
    pub subject: &'static str,
    pub carpio: bool,
    pub advbase: u8,
    pub skews: [u8; 2],
}

/// ucarp and carpio with the same timers (advbase 1: master down after 3 s + skew/256), then
/// carpio with a sub-second advertisement interval (advbase 0, skews 5/20: 234 ms), which
/// ucarp cannot express.
pub const SETTINGS: [Setting; 3] = [
    Setting {
        subject: "ucarp",
        carpio: false,
        advbase: 1,
        skews: [0, 50],
    },
    Setting {
        subject: "carpio",
        carpio: true,
        advbase: 1,
        skews: [0, 50],
    },
    Setting {
        subject: "carpio-advbase0",
        carpio: true,
        advbase: 0,
        skews: [5, 20],
    },
];

fn io_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn topology() -> Result<Lab, String> {
    let mut lab = Lab::new("fo").map_err(io_err)?;
    for n in ["br", "c", "n1", "n2"] {
        lab.ns(n).map_err(io_err)?;
    }
    lab.veth(&VethConfig::new("c", "eth0", "br", "pc"))
        .map_err(io_err)?;
    lab.veth(&VethConfig::new("n1", "eth0", "br", "p1"))
        .map_err(io_err)?;
    lab.veth(&VethConfig::new("n2", "eth0", "br", "p2"))
        .map_err(io_err)?;
    lab.bridge("br", "br0", &["pc", "p1", "p2"])
        .map_err(io_err)?;
    lab.addr("c", "eth0", "198.18.6.100/24").map_err(io_err)?;
    lab.addr("n1", "eth0", "198.18.6.1/24").map_err(io_err)?;
    lab.addr("n2", "eth0", "198.18.6.2/24").map_err(io_err)?;
    Ok(lab)
}

/// Whether lab node `n` holds the failover VIP (198.18.6.10) on an interface.
pub fn has_vip(lab: &Lab, n: &str) -> bool {
    lab.ip(n, &["-o", "-4", "addr", "show"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/")))
        .unwrap_or(false)
}

/// Polls `f` every 10 ms until it holds or `limit` passes; whether it held.
pub fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn start(lab: &mut Lab, s: &Setting, i: usize, carpio: &str, dir: &Path) -> Result<u32, String> {
    let n = format!("n{}", i + 1);
    let skew = s.skews[i].to_string();
    let adv = s.advbase.to_string();
    if s.carpio {
        lab.spawn(
            &n,
            &[
                carpio,
                "bench",
                "carp-node",
                VIP,
                &adv,
                &skew,
                "--secs",
                "120",
            ],
        )
        .map_err(io_err)
    } else {
        let src = format!("198.18.6.{}", i + 1);
        let (up, down) = (dir.join("up.sh"), dir.join("down.sh"));
        lab.spawn(
            &n,
            &[
                "ucarp",
                "-i",
                "eth0",
                "-s",
                &src,
                "-v",
                "1",
                "-p",
                "secret",
                "-a",
                VIP,
                "-b",
                &adv,
                "-k",
                &skew,
                "-u",
                &up.to_string_lossy(),
                "-d",
                &down.to_string_lossy(),
                "-z",
            ],
        )
        .map_err(io_err)
    }
}

/// Removes what a killed node leaves behind (carpio's macvlan, ucarp's address) and brings the
/// ports back up.
fn reset(lab: &Lab) {
    for n in ["n1", "n2"] {
        let _ = lab.ip(n, &["link", "del", "carp0"]);
        let _ = lab.ip(n, &["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    }
    for p in ["p1", "p2"] {
        let _ = lab.ip("br", &["link", "set", p, "up"]);
    }
}

/// One failover of setting `s`: the outage in milliseconds.
fn once(
    lab: &mut Lab,
    s: &Setting,
    carpio: &str,
    dir: &Path,
    settle: Duration,
) -> Result<f64, String> {
    reset(lab);
    let p1 = start(lab, s, 0, carpio, dir)?;
    std::thread::sleep(Duration::from_millis(200));
    let p2 = start(lab, s, 1, carpio, dir)?;
    let r = (|| {
        if !wait(Duration::from_secs(12), || has_vip(lab, "n1")) {
            return Err("n1 never became master".to_string());
        }
        // n1 alone must hold the VIP for `settle` in a row (ucarp's backup may claim it for a
        // moment at start).
        let mut since = Instant::now();
        if !wait(Duration::from_secs(15), || {
            if !has_vip(lab, "n1") || has_vip(lab, "n2") {
                since = Instant::now();
            }
            since.elapsed() >= settle
        }) {
            return Err("no stable master/backup pair".to_string());
        }
        // Deadline: the kill comes after 0.5-1 s, the backup takes over within 3 × advbase +
        // skew/256 s (3.2 s at most here); 2 s to spare.
        let deadline = (3 * u64::from(s.advbase) + 4).to_string();
        let mut ping = Command::new("ip")
            .args(["netns", "exec", &lab.ns_name("c")])
            .args([
                "ping", "-D", "-n", "-i", "0.01", "-W", "0.01", "-w", &deadline, VIP,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err)?;
        let stdout = ping.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut ts: Vec<f64> = Vec::new();
            if let Some(out) = stdout {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    // "[1732761600.123456] 64 bytes from 198.18.6.10: icmp_seq=1 ..."
                    if line.contains("bytes from")
                        && let Some(t) = line
                            .strip_prefix('[')
                            .and_then(|l| l.split(']').next())
                            .and_then(|t| t.parse::<f64>().ok())
                    {
                        ts.push(t);
                    }
                }
            }
            ts
        });
        // A phase against the advertisement timer that differs from run to run.
        let phase = 500
            + (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0) as u64
                % 500);
        std::thread::sleep(Duration::from_millis(phase));
        let kill_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        lab.kill(p1);
        lab.ip("br", &["link", "set", "p1", "down"])
            .map_err(io_err)?;
        let _ = ping.wait();
        let ts = reader
            .join()
            .map_err(|_| "ping reader panicked".to_string())?;
        let mut outage = f64::NAN;
        for w in ts.windows(2) {
            if w[1] >= kill_at {
                let g = w[1] - w[0];
                if outage.is_nan() || g > outage {
                    outage = g;
                }
            }
        }
        if ts.last().is_none_or(|l| *l < kill_at) || outage.is_nan() {
            return Err("no answer after the kill".to_string());
        }
        if !has_vip(lab, "n2") {
            return Err("n2 does not hold the VIP".to_string());
        }
        Ok(outage * 1000.0)
    })();
    lab.kill(p1);
    lab.kill(p2);
    reset(lab);
    r
}

/// `reps` failovers of every setting, interleaved; samples and error messages.
pub fn run(carpio: &str, reps: u32, dir: &Path, smoke: bool) -> (Vec<Sample>, Vec<String>) {
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    let d = dir.join("failover");
    let prep = (|| -> Result<Lab, String> {
        if Command::new("sh")
            .args(["-c", "command -v ucarp"])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Err("ucarp missing (scripts/deps.sh)".into());
        }
        std::fs::create_dir_all(&d).map_err(io_err)?;
        std::fs::write(
            d.join("up.sh"),
            format!("#!/bin/sh\nip addr add {VIP}/24 dev \"$1\"\n"),
        )
        .map_err(io_err)?;
        std::fs::write(
            d.join("down.sh"),
            format!("#!/bin/sh\nip addr del {VIP}/24 dev \"$1\"\n"),
        )
        .map_err(io_err)?;
        use std::os::unix::fs::PermissionsExt;
        for f in ["up.sh", "down.sh"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o755))
                .map_err(io_err)?;
        }
        topology()
    })();
    let mut lab = match prep {
        Ok(l) => l,
        Err(e) => {
            errors.push(format!("failover: {e}"));
            return (samples, errors);
        }
    };
    let settle = Duration::from_millis(if smoke { 500 } else { 1500 });
    for rep in 1..=reps {
        for s in &SETTINGS {
            let t0 = Instant::now();
            match once(&mut lab, s, carpio, &d, settle) {
                Ok(ms) => {
                    eprintln!(
                        "bench: failover {} rep {rep}: outage_ms={ms:.0} ({:.1} s)",
                        s.subject,
                        t0.elapsed().as_secs_f64()
                    );
                    samples.push(Sample {
                        scenario: "failover".into(),
                        subject: s.subject.into(),
                        rep,
                        metrics: BTreeMap::from([
                            ("outage_ms".to_string(), ms),
                            ("advbase".to_string(), f64::from(s.advbase)),
                        ]),
                    });
                }
                Err(e) => errors.push(format!("failover {} rep {rep}: {e}", s.subject)),
            }
        }
    }
    (samples, errors)
}
