//! Failover measurement (a harness, not a test; root): carpio vs ucarp in the same lab.
//!
//! ```text
//! cargo run --example failover            # full run: 5 failovers per setting, 60 s soaks
//! cargo run --example failover -- --quick # 1 failover per setting, 10 s soaks
//! ```
//!
//! Lab (lab::Lab, 198.18.0.0/15): nodes n1, n2 and a client c on a bridge namespace. Each node
//! runs as its own process (carpio: this example re-executed as `node ...`; ucarp 1.5). The
//! client pings the VIP every 10 ms (`ping -D -i 0.01`). The master is killed with SIGKILL and,
//! at the same instant, its bridge port is set down: a dead box, since a SIGKILLed process
//! leaves its address behind (ucarp's down script and carpio's macvlan removal do not run).
//! The outage is the longest gap between two echo replies around the kill.
//!
//! The soak runs two carpio nodes (threads) on a clean link and counts state changes past
//! the initial election (expected: 0).

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carpio::bench::failover::{has_vip, wait};
use carpio::carp::shell::{self, ShellConfig, VipMode};
use carpio::carp::{InterfaceConfig, NodeConfig, State};
use carpio::lab::{Lab, VethConfig};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 10);

fn cfg(netns: Option<String>, advbase: u8, skew: u8) -> ShellConfig {
    ShellConfig {
        name: "carp0".into(),
        carpdev: "eth0".into(),
        netns,
        iface: InterfaceConfig {
            nodes: vec![NodeConfig {
                vhid: 1,
                advskew: skew,
            }],
            advbase,
            passphrase: b"secret".to_vec(),
            v4: vec![VIP],
            ..Default::default()
        },
        prefix_len: vec![24],
        vip_mode: VipMode::Macvlan,
        group_demote: Vec::new(),
    }
}

/// `failover node ADVBASE SKEW`: one carpio node in the current namespace until killed.
fn node(advbase: u8, skew: u8) -> ! {
    let h = match shell::spawn(cfg(None, advbase, skew)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("carp shell: {e}");
            std::process::exit(1)
        }
    };
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        let _ = h.status();
    }
}

fn topology(tag: &str) -> std::io::Result<Lab> {
    let mut lab = Lab::new(tag)?;
    for n in ["br", "c", "n1", "n2"] {
        lab.ns(n)?;
    }
    lab.veth(&VethConfig::new("c", "eth0", "br", "pc"))?;
    lab.veth(&VethConfig::new("n1", "eth0", "br", "p1"))?;
    lab.veth(&VethConfig::new("n2", "eth0", "br", "p2"))?;
    lab.bridge("br", "br0", &["pc", "p1", "p2"])?;
    lab.addr("c", "eth0", "198.18.6.100/24")?;
    lab.addr("n1", "eth0", "198.18.6.1/24")?;
    lab.addr("n2", "eth0", "198.18.6.2/24")?;
    Ok(lab)
}

/// Setting under test: how to start node `i` (1 = preferred master).
enum Peer {
    Carpio { advbase: u8, skews: [u8; 2] },
    Ucarp { advbase: u8, skews: [u8; 2] },
}

impl Peer {
    fn name(&self) -> String {
        match self {
            Peer::Carpio { advbase, skews } => {
                format!("carpio advbase {advbase} advskew {}/{}", skews[0], skews[1])
            }
            Peer::Ucarp { advbase, skews } => {
                format!("ucarp  advbase {advbase} advskew {}/{}", skews[0], skews[1])
            }
        }
    }

    fn start(&self, lab: &mut Lab, i: usize, dir: &std::path::Path) -> std::io::Result<u32> {
        let n = format!("n{}", i + 1);
        match self {
            Peer::Carpio { advbase, skews } => {
                let exe = std::env::current_exe()?;
                let exe = exe.to_string_lossy().into_owned();
                lab.spawn(
                    &n,
                    &[&exe, "node", &advbase.to_string(), &skews[i].to_string()],
                )
            }
            Peer::Ucarp { advbase, skews } => {
                let up = dir.join("up.sh");
                let down = dir.join("down.sh");
                let src = format!("198.18.6.{}", i + 1);
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
                        &VIP.to_string(),
                        "-b",
                        &advbase.to_string(),
                        "-k",
                        &skews[i].to_string(),
                        "-u",
                        &up.to_string_lossy(),
                        "-d",
                        &down.to_string_lossy(),
                        "-z",
                    ],
                )
            }
        }
    }
}

/// One failover: returns the outage in ms.
fn failover(peer: &Peer, round: usize, dir: &std::path::Path) -> std::io::Result<f64> {
    let mut lab = topology(&format!("fo{round}"))?;
    let p1 = peer.start(&mut lab, 0, dir)?;
    std::thread::sleep(Duration::from_millis(200));
    let _p2 = peer.start(&mut lab, 1, dir)?;
    if !wait(Duration::from_secs(10), || has_vip(&lab, "n1")) {
        return Err(std::io::Error::other("n1 never became master"));
    }
    // Let the backup settle as BACKUP (ucarp's backup may claim the VIP for a moment at
    // start, feasibility.md §5): n1 alone must hold the VIP for 1.5 s in a row.
    let mut since = Instant::now();
    let settled = wait(Duration::from_secs(15), || {
        if !has_vip(&lab, "n1") || has_vip(&lab, "n2") {
            since = Instant::now();
        }
        since.elapsed() >= Duration::from_millis(1500)
    });
    if !settled {
        return Err(std::io::Error::other("no stable master/backup pair"));
    }
    let count = "900"; // 9 s of probes
    let mut ping = Command::new("ip")
        .args(["netns", "exec", &lab.ns_name("c")])
        .args(["ping", "-D", "-n", "-i", "0.01", "-W", "0.01", "-c", count])
        .arg(VIP.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
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
    // A random phase against the advertisement timer, so the rounds sample the whole range.
    std::thread::sleep(Duration::from_millis(1000 + jitter_ms(1000)));
    let kill_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    if has_vip(&lab, "n2") {
        return Err(std::io::Error::other("n2 held the VIP before the kill"));
    }
    lab.kill(p1);
    lab.ip("br", &["link", "set", "p1", "down"])?;
    let _ = ping.wait();
    let ts = reader.join().map_err(|_| std::io::Error::other("reader"))?;
    // Longest gap between consecutive replies after the kill (the port goes down a few ms
    // after kill_at, so the gap may start a little later).
    let mut outage = f64::NAN;
    for w in ts.windows(2) {
        if w[1] >= kill_at {
            let g = w[1] - w[0];
            if outage.is_nan() || g > outage {
                outage = g;
            }
        }
    }
    if ts.last().is_none_or(|l| *l < kill_at) {
        return Err(std::io::Error::other("no answer after the kill"));
    }
    if !has_vip(&lab, "n2") {
        return Err(std::io::Error::other("n2 does not hold the VIP"));
    }
    Ok(outage * 1000.0)
}

/// Two carpio nodes (threads) for `secs`: state changes after the initial election.
fn soak(advbase: u8, skews: [u8; 2], secs: u64) -> std::io::Result<(u64, u64)> {
    let mut lab = topology(&format!("soak{advbase}"))?;
    let h1 = shell::spawn(cfg(Some(lab.ns_name("n1")), advbase, skews[0]))?;
    let h2 = shell::spawn(cfg(Some(lab.ns_name("n2")), advbase, skews[1]))?;
    let ok = wait(Duration::from_secs(10), || {
        h1.state(1) == Some(State::Master) && h2.state(1) == Some(State::Backup)
    });
    if !ok {
        return Err(std::io::Error::other("no election"));
    }
    let base = (h1.status().transitions, h2.status().transitions);
    std::thread::sleep(Duration::from_secs(secs));
    let after = (h1.status().transitions, h2.status().transitions);
    drop((h1, h2));
    let _ = &mut lab;
    Ok((after.0 - base.0, after.1 - base.1))
}

/// 0..max milliseconds from /dev/urandom.
fn jitter_ms(max: u64) -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u64::from_ne_bytes(b) % max.max(1)
}

fn stats(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let med = s.get(s.len() / 2).copied().unwrap_or(f64::NAN);
    let min = s.first().copied().unwrap_or(f64::NAN);
    let max = s.last().copied().unwrap_or(f64::NAN);
    format!(
        "median {med:7.0} ms  (min {min:.0}, max {max:.0}, n={})",
        s.len()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("node") {
        let a = |i: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(1);
        node(a(2), a(3));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = if quick { 1 } else { 5 };
    let soak_secs = if quick { 10 } else { 60 };
    let dir = std::env::temp_dir().join(format!("carpio-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("up.sh"),
        "#!/bin/sh\nip addr add 198.18.6.10/24 dev \"$1\"\n",
    )
    .expect("up.sh");
    std::fs::write(
        dir.join("down.sh"),
        "#!/bin/sh\nip addr del 198.18.6.10/24 dev \"$1\"\n",
    )
    .expect("down.sh");
    let _ = Command::new("chmod")
        .arg("+x")
        .arg(dir.join("up.sh"))
        .arg(dir.join("down.sh"))
        .status();
    let peers = [
        // advbase 0 with small skews: the backup's master-down is 3 × 20/256 s = 234 ms.
        Peer::Carpio {
            advbase: 0,
            skews: [5, 20],
        },
        Peer::Carpio {
            advbase: 0,
            skews: [20, 60],
        },
        Peer::Carpio {
            advbase: 1,
            skews: [0, 50],
        },
        Peer::Ucarp {
            advbase: 1,
            skews: [0, 50],
        },
    ];
    println!("failover: SIGKILL + switch port down of the master, ping every 10 ms");
    let mut round = 0;
    for p in &peers {
        let mut v = Vec::new();
        for _ in 0..rounds {
            round += 1;
            match failover(p, round, &dir) {
                Ok(ms) => v.push(ms),
                Err(e) => println!("  {}: round failed: {e}", p.name()),
            }
        }
        println!("  {:36} outage {}", p.name(), stats(&v));
    }
    println!("soak: {soak_secs} s, two carpio nodes, state changes after the election");
    for (advbase, skews) in [(0u8, [5u8, 20u8]), (0, [20, 60]), (1, [0, 50])] {
        match soak(advbase, skews, soak_secs) {
            Ok((a, b)) => println!(
                "  carpio advbase {advbase} advskew {}/{}: master {a}, backup {b}",
                skews[0], skews[1]
            ),
            Err(e) => println!("  carpio advbase {advbase}: soak failed: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
