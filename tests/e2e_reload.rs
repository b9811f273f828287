//! Reload under traffic (issue 7, "reload under replayed traffic"; root, network namespaces of
//! `lab::Lab`). Long-lived flows keep running through the VIP — 8 TCP connections (a line echo,
//! one answer per line) and 8 UDP flows (fixed source ports) — while the configuration is
//! reloaded several times: a host added to the table, a redirect added, a broken file (refused:
//! the running configuration stays), the same file again, the redirect removed. Every flow must
//! keep answering from the backend it started on (a moved TCP connection would be reset by the
//! new backend; a moved UDP flow would answer with another name), new flows must reach the new
//! host, and the added service must be served while it is configured and only then.
//! Runs over AF_PACKET and over AF_XDP (generic mode), one after the other. Bounded in time;
//! nothing asserts on timing; everything is removed on drop.

mod common;

use carpio::lab::Lab;
use common::lab_daemon::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FLOWS: usize = 8;
const EXTRA_PORT: u16 = 5355;

fn config(ingress: &str, sock: &Path, hosts: &str, extra: bool) -> String {
    let mut c = format!(
        r#"# e2e_reload
control socket "{sock}"
interface lb0 {{ {ingress} }}
table <echo> {{ {hosts} }}
redirect "echo" {{
    listen on {VIP} udp port {PORT}
    forward to <echo> port {PORT} check icmp
}}
redirect "lines" {{
    listen on {VIP} tcp port {LINE_PORT}
    forward to <echo> port {LINE_PORT} check icmp
}}
"#,
        sock = sock.display()
    );
    if extra {
        c.push_str(&format!(
            "redirect \"extra\" {{\n    listen on {VIP} udp port {EXTRA_PORT}\n    \
             forward to <echo> port {PORT} check icmp\n}}\n"
        ));
    }
    c
}

/// What the traffic thread saw.
#[derive(Default)]
struct Seen {
    /// The backend each flow answered from first (TCP then UDP).
    first: Vec<Option<String>>,
    errors: Vec<String>,
    udp_retries: u64,
}

struct Traffic {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(lab: &Lab) -> Traffic {
        let (tcp, udp) = lab
            .run_in("client", || {
                let vip: SocketAddr = format!("{VIP}:{LINE_PORT}").parse().unwrap();
                let tcp: Vec<TcpStream> = (0..FLOWS)
                    .map(|_| {
                        let s = TcpStream::connect_timeout(&vip, Duration::from_secs(5))
                            .expect("tcp connect through the VIP");
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        s
                    })
                    .collect();
                let udp: Vec<UdpSocket> = (0..FLOWS)
                    .map(|i| {
                        let s = UdpSocket::bind(("198.18.1.10", 42000 + i as u16)).unwrap();
                        s.connect(format!("{VIP}:{PORT}")).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(700)))
                            .unwrap();
                        s
                    })
                    .collect();
                (tcp, udp)
            })
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Seen {
            first: vec![None; 2 * FLOWS],
            ..Seen::default()
        }));
        let (st, rd, sn) = (stop.clone(), rounds.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut readers: Vec<BufReader<TcpStream>> = tcp
                .iter()
                .map(|s| BufReader::new(s.try_clone().unwrap()))
                .collect();
            let mut tcp = tcp;
            let mut dead = [false; 2 * FLOWS];
            // Bounded: the test stops it long before this many rounds.
            for _ in 0..100_000 {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let mut answers: Vec<Result<String, String>> = Vec::new();
                for (i, (w, r)) in tcp.iter_mut().zip(readers.iter_mut()).enumerate() {
                    if dead[i] {
                        answers.push(Err(String::new()));
                        continue;
                    }
                    let mut line = String::new();
                    let res = w
                        .write_all(b"x\n")
                        .and_then(|_| r.read_line(&mut line))
                        .map_err(|e| format!("tcp flow {i}: {e}"))
                        .and_then(|n| {
                            if n == 0 {
                                Err(format!("tcp flow {i}: closed"))
                            } else {
                                Ok(line.trim().to_string())
                            }
                        });
                    answers.push(res);
                }
                for (i, s) in udp.iter().enumerate() {
                    if dead[FLOWS + i] {
                        answers.push(Err(String::new()));
                        continue;
                    }
                    // A datagram may be lost on a loaded machine: three tries, then the flow
                    // counts as dropped.
                    let mut got = Err(format!("udp flow {i}: no answer in 3 tries"));
                    for attempt in 0..3 {
                        let mut buf = [0u8; 64];
                        if s.send(b"q").is_ok()
                            && let Ok(n) = s.recv(&mut buf)
                        {
                            got = Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
                            break;
                        }
                        if attempt < 2 {
                            sn.lock().unwrap().udp_retries += 1;
                        }
                    }
                    answers.push(got);
                }
                let mut g = sn.lock().unwrap();
                for (i, a) in answers.into_iter().enumerate() {
                    match a {
                        Err(e) if e.is_empty() => {}
                        Err(e) => {
                            dead[i] = true;
                            g.errors.push(e);
                        }
                        Ok(name) => match &g.first[i] {
                            None => g.first[i] = Some(name),
                            Some(f) if *f == name => {}
                            Some(f) => {
                                let e = format!("flow {i} moved from {f} to {name}");
                                g.errors.push(e);
                                dead[i] = true;
                            }
                        },
                    }
                }
                drop(g);
                rd.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Traffic {
            stop,
            rounds,
            seen,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) until `n` more rounds of traffic went through.
    fn wait_rounds(&self, n: u64) {
        let target = self.rounds.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.rounds.load(Ordering::Relaxed) < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.rounds.load(Ordering::Relaxed) >= target,
            "traffic stalled; errors {:?}",
            self.seen.lock().unwrap().errors
        );
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reload(sock: &Path, conf: &Path, body: &str, want_ok: bool, d: &Daemon) {
    std::fs::write(conf, body).unwrap();
    let o = carpioctl(sock, &["reload"]);
    let t = text(&o);
    assert_eq!(o.status.success(), want_ok, "{t}\nlog:\n{}", d.log());
}

/// Backends that answered `n` fresh UDP flows.
fn fresh_backends(lab: &Lab, port: u16, n: usize) -> BTreeSet<String> {
    (0..n).filter_map(|_| udp_query_to(lab, 0, port)).collect()
}

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn reload_under_traffic_keeps_flows_afpacket() {
    scenario("rl-p", "ingress afpacket");
}

#[test]
fn reload_under_traffic_keeps_flows_afxdp() {
    scenario("rl-x", "ingress afxdp mode generic");
}

fn scenario(tag: &str, ingress: &str) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root_and_tools("e2e_reload");
    let started = Instant::now();
    let dir = TempDir::new(tag);
    let sock = dir.path("carpio.sock");
    let conf = dir.path("carpio.conf");
    let two = "198.18.2.11, 198.18.2.12";
    let three = "198.18.2.11, 198.18.2.12, 198.18.2.13";
    std::fs::write(&conf, config(ingress, &sock, two, false)).unwrap();
    let lab = topology(tag, &dir);
    let d = start_daemon(&lab, &conf, &dir);
    wait_serving(&lab, &d, &sock);

    let traffic = Traffic::start(&lab);
    traffic.wait_rounds(5);
    {
        let g = traffic.seen.lock().unwrap();
        assert!(g.errors.is_empty(), "{:?}", g.errors);
        let first: BTreeSet<_> = g.first.iter().flatten().cloned().collect();
        assert_eq!(
            first,
            BTreeSet::from(["b1".to_string(), "b2".to_string()]),
            "flows spread over both backends"
        );
    }
    assert_eq!(udp_query_to(&lab, 0, EXTRA_PORT), None, "not a service yet");

    // 1. A host joins the table: new flows reach it, old ones stay.
    reload(
        &sock,
        &conf,
        &config(ingress, &sock, three, false),
        true,
        &d,
    );
    traffic.wait_rounds(5);
    wait_resolved(&d, &sock);
    let fresh = fresh_backends(&lab, PORT, 12);
    assert!(
        fresh.contains("b3"),
        "new flows never reached b3: {fresh:?}"
    );

    // 2. A redirect is added: served at once (bounded wait for the steering).
    reload(&sock, &conf, &config(ingress, &sock, three, true), true, &d);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut extra = None;
    while extra.is_none() && Instant::now() < deadline {
        extra = udp_query_to(&lab, 0, EXTRA_PORT);
    }
    assert!(
        extra.is_some(),
        "the added redirect is not served; log:\n{}",
        d.log()
    );
    traffic.wait_rounds(5);

    // 3. A broken file is refused and the running configuration (with "extra") stays.
    reload(
        &sock,
        &conf,
        "redirect \"extra\" {\n listen on\n",
        false,
        &d,
    );
    traffic.wait_rounds(5);
    assert!(
        udp_query_to(&lab, 0, EXTRA_PORT).is_some(),
        "bad reload lost a service"
    );
    let s = text(&carpioctl(&sock, &["show", "redirects"]));
    assert!(s.contains("\textra"), "{s}");

    // 4. The same configuration again (nothing changes), then "extra" removed.
    reload(&sock, &conf, &config(ingress, &sock, three, true), true, &d);
    traffic.wait_rounds(5);
    reload(
        &sock,
        &conf,
        &config(ingress, &sock, three, false),
        true,
        &d,
    );
    traffic.wait_rounds(5);
    let deadline = Instant::now() + Duration::from_secs(5);
    while udp_query_to(&lab, 0, EXTRA_PORT).is_some() && Instant::now() < deadline {}
    assert_eq!(
        udp_query_to(&lab, 0, EXTRA_PORT),
        None,
        "removed redirect still served"
    );

    let rounds = traffic.rounds.load(Ordering::Relaxed);
    let seen = traffic.finish();
    assert!(
        seen.errors.is_empty(),
        "flows dropped or moved across reloads: {:?}\nlog:\n{}",
        seen.errors,
        d.log()
    );
    assert!(seen.first.iter().all(Option::is_some), "{:?}", seen.first);
    assert!(
        seen.first.iter().all(|f| f.as_deref() != Some("b3")),
        "established flows started before b3 existed"
    );
    let counters = text(&carpioctl(&sock, &["show", "counters"]));
    let value = |name: &str| -> u64 {
        counters
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in\n{counters}"))
    };
    assert_eq!(value("daemon_reloads"), 4, "{counters}");
    assert_eq!(value("daemon_reload_failed"), 1, "{counters}");
    assert_eq!(value("flow_rescheduled"), 0, "{counters}");
    eprintln!(
        "e2e_reload {ingress}: {rounds} rounds of {} flows, {} UDP retries, {:?}",
        2 * FLOWS,
        seen.udp_retries,
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(90));
}
