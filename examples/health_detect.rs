//! Harness figure (issue 8 item 5): time from a backend's death to the health engine's down
//! event, with `interval 1` and `retry 0` / `retry 2`, `check tcp`, timeout 300 ms.
//!
//! Two deaths: the backend *process* is killed by PID (the kernel then answers SYNs with
//! RST: "tcp connect failed" at the next round), and the backend *host* vanishes (its link
//! goes down: SYNs go unanswered, "tcp connect timeout" at the round's deadline). The kill
//! happens at a pseudo-random phase of the check interval, so the figures spread over it.
//! Target: detection ≤ interval × retry + one interval (+ the timeout for a silent host).
//!
//! Root only; all inside a `lab::Lab` (cio-* namespaces, 198.18.7.0/24), the backend is this
//! program re-executed with `serve` inside the server namespace, killed by PID; bounded:
//! a fixed number of trials, each with a deadline.
//!
//! usage: cargo run --example health_detect [TRIALS]     (default 5 per configuration)

use std::net::TcpListener;
use std::time::{Duration, Instant};

use carpio::config::model::Check;
use carpio::health::engine::{self, EngineConfig, HostSpec, TableSpec};
use carpio::health::tracker::State;
use carpio::health::{Handle, Update};
use carpio::lab::{Lab, VethConfig};

const SRV: &str = "198.18.7.2";
const PORT: u16 = 8080;
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(300);
/// The backend exits on its own after this long, whatever happens to the harness.
const SERVE_LIMIT: Duration = Duration::from_secs(600);

fn serve() {
    std::thread::spawn(|| {
        std::thread::sleep(SERVE_LIMIT);
        std::process::exit(0);
    });
    let Ok(l) = TcpListener::bind((SRV, PORT)) else {
        std::process::exit(1)
    };
    // Accepted connections are dropped (closed) at once: a connect is all `check tcp` needs.
    for s in l.incoming() {
        drop(s);
    }
}

fn wait(h: &Handle, want: State, within: Duration) -> Option<Instant> {
    let end = Instant::now() + within;
    loop {
        match h.recv_timeout(end.saturating_duration_since(Instant::now()))? {
            Update::Host(u) if u.new == want => return Some(Instant::now()),
            _ => continue,
        }
    }
}

fn start_backend(lab: &mut Lab) -> u32 {
    let exe = std::env::current_exe().expect("current_exe");
    let exe = exe.to_string_lossy().into_owned();
    let pid = lab.spawn("srv", &[&exe, "serve"]).expect("spawn backend");
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let out = lab.exec("srv", &["ss", "-Hltn"]).expect("ss");
        if String::from_utf8_lossy(&out.stdout).contains(&format!("{SRV}:{PORT} ")) {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("backend did not listen");
}

fn stats(name: &str, retry: u32, silent: bool, v: &mut [Duration]) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let target = INTERVAL * retry + INTERVAL + if silent { TIMEOUT } else { Duration::ZERO };
    let over = v.iter().filter(|d| **d > target).count();
    println!(
        "{name:<13} retry {retry}: n={} min {:>6.0} ms  median {:>6.0} ms  max {:>6.0} ms  target <= {:>5.0} ms  over target: {over}",
        v.len(),
        v.first().map_or(0.0, |d| ms(*d)),
        v.get(v.len() / 2).map_or(0.0, |d| ms(*d)),
        v.last().map_or(0.0, |d| ms(*d)),
        ms(target),
    );
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        serve();
        return;
    }
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let mut lab = Lab::new("hdet").expect("lab (root needed)");
    lab.ns("chk").unwrap();
    lab.ns("srv").unwrap();
    lab.veth(&VethConfig::new("chk", "chk0", "srv", "srv0"))
        .unwrap();
    lab.addr("chk", "chk0", "198.18.7.1/24").unwrap();
    lab.addr("srv", "srv0", &format!("{SRV}/24")).unwrap();
    // Pseudo-random kill phases, reproducible (splitmix64 of the trial number).
    let phase = |i: u64| {
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Duration::from_millis((z ^ (z >> 31)) % 1000)
    };
    let mut trial = 0u64;
    for silent in [false, true] {
        for retry in [0u32, 2] {
            let mut pid = start_backend(&mut lab);
            let cfg = EngineConfig {
                tables: vec![TableSpec {
                    id: 1,
                    name: format!("b:{PORT}"),
                    check: Check::Tcp,
                    port: Some(PORT),
                    interval: INTERVAL,
                    timeout: TIMEOUT,
                    demote: None,
                    disabled: false,
                }],
                hosts: vec![HostSpec {
                    id: 1,
                    table: 0,
                    name: SRV.into(),
                    ip: SRV.parse().unwrap(),
                    retry,
                    parent: None,
                    ttl: None,
                }],
                ..Default::default()
            };
            let h = lab
                .run_in("chk", move || engine::spawn_with(cfg))
                .unwrap()
                .expect("engine");
            wait(&h, State::Up, Duration::from_secs(5)).expect("first up");
            let mut v = Vec::new();
            for _ in 0..trials {
                trial += 1;
                std::thread::sleep(phase(trial));
                let t0 = Instant::now();
                if silent {
                    lab.ip("srv", &["link", "set", "srv0", "down"]).unwrap();
                } else {
                    lab.kill(pid);
                }
                let bound = INTERVAL * (retry + 2) + TIMEOUT * 2;
                let t1 = wait(&h, State::Down, bound).expect("down event");
                v.push(t1 - t0);
                if silent {
                    lab.ip("srv", &["link", "set", "srv0", "up"]).unwrap();
                } else {
                    pid = start_backend(&mut lab);
                }
                wait(&h, State::Up, Duration::from_secs(5)).expect("back up");
            }
            stats(
                if silent {
                    "host silent"
                } else {
                    "process kill"
                },
                retry,
                silent,
                &mut v,
            );
            drop(h);
            lab.kill(pid);
        }
    }
}
