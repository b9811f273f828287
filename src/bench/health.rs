//! The health-reaction scenario of `carpio bench`: time from a backend's death to carpio's
//! health engine marking it down, by the method of `examples/health_detect.rs` (`check tcp`,
//! `interval 1`, `timeout 300 ms`, `retry 0`), for the two ways a backend dies: its process is
//! killed (the kernel answers the next SYN with a RST) and its host goes silent (its link goes
//! down: the next check times out).
//!
//! Own lab (`cio-<pid>-hd-*`, 198.18.7.0/24); the backend is `carpio bench tcp-echo`, killed by
//! PID; the engine runs on a thread inside the checker's namespace. Bounded: every wait has a
//! deadline.

use super::report::Sample;
use crate::config::model::Check;
use crate::health::engine::{self, EngineConfig, HostSpec, TableSpec};
use crate::health::tracker::State;
use crate::health::{Handle, Update};
use crate::lab::{Lab, VethConfig};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SRV: &str = "198.18.7.2";
const PORT: &str = "8080";
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(300);

fn wait(h: &Handle, want: State, within: Duration) -> Option<Instant> {
    let end = Instant::now() + within;
    loop {
        match h.recv_timeout(end.saturating_duration_since(Instant::now()))? {
            Update::Host(u) if u.new == want => return Some(Instant::now()),
            _ => continue,
        }
    }
}

fn start_backend(lab: &mut Lab, carpio: &str) -> Result<u32, String> {
    let pid = lab
        .spawn(
            "srv",
            &[
                carpio,
                "bench",
                "tcp-echo",
                &format!("{SRV}:{PORT}"),
                "--secs",
                "300",
            ],
        )
        .map_err(|e| e.to_string())?;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let out = lab
            .exec("srv", &["ss", "-Hltn"])
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&out.stdout).contains(&format!("{SRV}:{PORT} ")) {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("backend did not listen".into())
}

fn trials(carpio: &str, reps: u32) -> Result<Vec<Sample>, String> {
    let e = |x: std::io::Error| x.to_string();
    let mut lab = Lab::new("hd").map_err(e)?;
    lab.ns("chk").map_err(e)?;
    lab.ns("srv").map_err(e)?;
    lab.veth(&VethConfig::new("chk", "chk0", "srv", "srv0"))
        .map_err(e)?;
    lab.addr("chk", "chk0", "198.18.7.1/24").map_err(e)?;
    lab.addr("srv", "srv0", &format!("{SRV}/24")).map_err(e)?;
    let mut pid = start_backend(&mut lab, carpio)?;
    let cfg = EngineConfig {
        tables: vec![TableSpec {
            id: 1,
            name: format!("b:{PORT}"),
            check: Check::Tcp,
            port: PORT.parse().ok(),
            interval: INTERVAL,
            timeout: TIMEOUT,
            demote: None,
            disabled: false,
        }],
        hosts: vec![HostSpec {
            id: 1,
            table: 0,
            name: SRV.into(),
            ip: SRV.parse().map_err(|_| "address")?,
            retry: 0,
            parent: None,
            ttl: None,
        }],
        ..Default::default()
    };
    let h = lab
        .run_in("chk", move || engine::spawn_with(cfg))
        .map_err(e)?
        .map_err(|x| format!("health engine: {x:?}"))?;
    wait(&h, State::Up, Duration::from_secs(5)).ok_or("backend never up")?;
    let mut out = Vec::new();
    for rep in 1..=reps {
        for silent in [false, true] {
            // A phase against the check interval that differs from trial to trial.
            let phase = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64 % 1000)
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(phase));
            let t0 = Instant::now();
            if silent {
                lab.ip("srv", &["link", "set", "srv0", "down"]).map_err(e)?;
            } else {
                lab.kill(pid);
            }
            let t1 = wait(&h, State::Down, INTERVAL * 2 + TIMEOUT * 2).ok_or("no down event")?;
            let subject = if silent {
                "carpio-host-silent"
            } else {
                "carpio-process-killed"
            };
            eprintln!(
                "bench: health {subject} rep {rep}: detect_ms={:.0}",
                (t1 - t0).as_secs_f64() * 1000.0
            );
            out.push(Sample {
                scenario: "health".into(),
                subject: subject.into(),
                rep,
                metrics: BTreeMap::from([(
                    "detect_ms".to_string(),
                    (t1 - t0).as_secs_f64() * 1000.0,
                )]),
            });
            if silent {
                lab.ip("srv", &["link", "set", "srv0", "up"]).map_err(e)?;
            } else {
                pid = start_backend(&mut lab, carpio)?;
            }
            wait(&h, State::Up, Duration::from_secs(5)).ok_or("backend not back up")?;
        }
    }
    drop(h);
    Ok(out)
}

/// `reps` trials of each death; samples and error messages.
pub fn run(carpio: &str, reps: u32) -> (Vec<Sample>, Vec<String>) {
    match trials(carpio, reps) {
        Ok(s) => (s, Vec::new()),
        Err(e) => (Vec::new(), vec![format!("health: {e}")]),
    }
}
