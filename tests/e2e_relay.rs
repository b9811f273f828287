//! End-to-end relay scenarios in network namespaces (root): a client namespace, the relay's
//! namespace (the relay runs in this test process, its sockets bound inside the namespace),
//! and two backend namespaces on a bridge behind it. Real servers (OpenSMTPD, nsd) are started
//! by the test with configs in a temp dir and killed by PID when the lab drops.
//!
//! ```text
//!  cl 198.18.1.2 ──veth── rl 198.18.1.1 (relay) ── br0 198.18.2.1 ─┬─ b1 198.18.2.11
//!                                                                   └─ b2 198.18.2.12
//! ```
//!
//! Network safety (DESIGN.md): `cio-` namespaces from `lab::Lab`, 198.18.0.0/15 only, every
//! loop bounded in count and time. Tests serialise on a file-local mutex. A missing tool
//! fails the test (run `bash scripts/deps.sh`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use carpio::config;
use carpio::lab::{Lab, VethConfig};
use carpio::relay::{self, Counter, Options, RelayHandle};
use sha2::{Digest, Sha256};

static SERIAL: Mutex<()> = Mutex::new(());

const RELAY_IP: &str = "198.18.1.1";
const CLIENT_IP: &str = "198.18.1.2";
const B1: &str = "198.18.2.11";
const B2: &str = "198.18.2.12";

fn need(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{tool} is missing: run `bash scripts/deps.sh`");
}

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("cio-relay-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lab(tag: &str) -> Lab {
    let mut lab = Lab::new(tag).unwrap();
    for ns in ["cl", "rl", "b1", "b2"] {
        lab.ns(ns).unwrap();
    }
    lab.veth(&VethConfig::new("cl", "cl0", "rl", "rl0"))
        .unwrap();
    lab.veth(&VethConfig::new("rl", "rb1", "b1", "e0")).unwrap();
    lab.veth(&VethConfig::new("rl", "rb2", "b2", "e0")).unwrap();
    lab.bridge("rl", "br0", &["rb1", "rb2"]).unwrap();
    lab.addr("cl", "cl0", &format!("{CLIENT_IP}/24")).unwrap();
    lab.addr("rl", "rl0", &format!("{RELAY_IP}/24")).unwrap();
    lab.addr("rl", "br0", "198.18.2.1/24").unwrap();
    lab.addr("b1", "e0", &format!("{B1}/24")).unwrap();
    lab.addr("b2", "e0", &format!("{B2}/24")).unwrap();
    lab
}

/// Starts the relays of `conf` inside the relay namespace.
fn start_relay(lab: &Lab, conf: &str) -> RelayHandle {
    let c = config::parse_str("e2e.conf", conf, &[]).unwrap();
    lab.run_in("rl", move || {
        relay::spawn(
            &c,
            Options {
                workers: Some(2),
                seed: 7,
            },
        )
    })
    .unwrap()
    .unwrap()
}

/// Runs `f` on a new thread inside namespace `ns` of `lab` (so client and server can run at
/// the same time).
fn in_ns<R: Send + 'static>(
    lab: &Lab,
    ns: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> thread::JoinHandle<R> {
    let full = lab.ns_name(ns);
    thread::spawn(move || carpio::sys::netns::run_in(&full, f).unwrap())
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

fn file_contains(p: &Path, needle: &str) -> bool {
    std::fs::read_to_string(p)
        .map(|s| s.contains(needle))
        .unwrap_or(false)
}

#[test]
fn swaks_through_proxy_v2_relay_reaches_opensmtpd_with_the_client_address() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    need("swaks");
    need("smtpd");
    need("unshare");
    let dir = TempDir::new("smtp");
    let maildir = dir.path("maildir");
    let conf = dir.write(
        "smtpd.conf",
        &format!(
            "listen on {B1} port 25 proxy-v2\n\
             action \"deliver\" maildir \"{}\" user \"nobody\"\n\
             match from any for any action \"deliver\"\n",
            maildir.display()
        ),
    );
    let log = dir.path("smtpd.log");
    // OpenSMTPD never delivers as root: the maildir is written as `nobody`.
    std::fs::create_dir_all(&maildir).unwrap();
    for p in [&dir.0, &maildir] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    let mut lab = lab("smtp");
    // OpenSMTPD's control socket and queue are fixed paths (/run/smtpd.sock,
    // /var/spool/smtpd): give this instance private tmpfs copies in its own mount namespace
    // so it neither meets another instance nor leaves files behind.
    let script = format!(
        "mount -t tmpfs -o mode=0755 tmpfs /run && \
         mount -t tmpfs -o mode=0711 tmpfs /var/spool/smtpd && \
         exec smtpd -d -v -f {} > {} 2>&1",
        conf.display(),
        log.display()
    );
    lab.spawn("b1", &["unshare", "-m", "sh", "-c", &script])
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || file_contains(
            &log,
            "setup done"
        )),
        "smtpd did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let h = start_relay(
        &lab,
        &format!(
            "table <mx> {{ {B1} }}\n\
             relay smtp {{\n listen on {RELAY_IP} port 25\n forward to <mx> port 25\n \
             proxy-protocol v2\n session timeout 30\n}}\n"
        ),
    );
    let out = lab
        .exec(
            "cl",
            &[
                "swaks",
                "--server",
                RELAY_IP,
                "--port",
                "25",
                "--from",
                "sender@example.test",
                "--to",
                "root@example.test",
                "--helo",
                "client.example.test",
                "--timeout",
                "10",
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // OpenSMTPD greets the address it got from the PROXY header, not the relay's.
    assert!(
        text.contains(&format!("[{CLIENT_IP}]")),
        "swaks output: {text}"
    );
    assert!(text.contains("250 2.0.0"), "message not accepted: {text}");
    assert!(wait_for(Duration::from_secs(5), || file_contains(
        &log,
        &format!("connected address={CLIENT_IP}")
    )));
    assert!(!file_contains(&log, "connected address=198.18.2.1 "));
    // The delivered message's Received header names the real client.
    let received = wait_for(Duration::from_secs(10), || {
        std::fs::read_dir(maildir.join("new"))
            .map(|d| {
                d.flatten()
                    .any(|e| file_contains(&e.path(), &format!("[{CLIENT_IP}]")))
            })
            .unwrap_or(false)
    });
    assert!(
        received,
        "no delivered message names {CLIENT_IP}; smtpd log:\n{}",
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("smtp") || l.contains("deliver") || l.contains("mda"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(h.counter("smtp", Counter::SessionAccepted), 1);
    assert!(wait_for(Duration::from_secs(5), || h
        .counter("smtp", Counter::SessionClosed)
        == 1));
}

fn nsd_conf(dir: &TempDir, name: &str, ip: &str) -> PathBuf {
    let zone = format!(
        "$ORIGIN example.test.\n$TTL 60\n\
         @ IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60\n\
         @ IN NS ns.example.test.\nns IN A {ip}\nwho IN TXT \"{name}\"\n"
    );
    dir.write(&format!("{name}.zone"), &zone);
    let d = dir.0.display();
    dir.write(
        &format!("{name}.conf"),
        &format!(
            "server:\n ip-address: {ip}\n port: 53\n username: \"\"\n chroot: \"\"\n \
             zonesdir: \"{d}\"\n database: \"\"\n zonelistfile: \"{d}/{name}.zl\"\n \
             xfrdfile: \"{d}/{name}.xfrd\"\n xfrdir: \"{d}\"\n pidfile: \"{d}/{name}.pid\"\n \
             logfile: \"{d}/{name}.log\"\n server-count: 1\n\
             remote-control:\n control-enable: no\n\
             zone:\n name: \"example.test\"\n zonefile: \"{name}.zone\"\n"
        ),
    )
}

#[test]
fn dig_through_the_dns_relay_reaches_both_nsd_backends() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    need("nsd");
    need("dig");
    let dir = TempDir::new("dns");
    let mut lab = lab("dns");
    for (ns, name, ip) in [("b1", "b1", B1), ("b2", "b2", B2)] {
        let c = nsd_conf(&dir, name, ip);
        lab.spawn(ns, &["nsd", "-d", "-c", &c.display().to_string()])
            .unwrap();
    }
    for name in ["b1", "b2"] {
        let log = dir.path(&format!("{name}.log"));
        assert!(
            wait_for(Duration::from_secs(10), || file_contains(
                &log,
                "nsd started"
            )),
            "nsd {name} did not start"
        );
    }
    let h = start_relay(
        &lab,
        &format!(
            "dns protocol d {{ }}\n\
             table <ns> {{ {B1} {B2} }}\n\
             relay dns {{\n listen on {RELAY_IP} port 53\n protocol d\n \
             forward to <ns> port 53 mode roundrobin\n session timeout 2\n}}\n"
        ),
    );
    let mut seen = Vec::new();
    for _ in 0..8 {
        let out = lab
            .exec(
                "cl",
                &[
                    "dig",
                    "+short",
                    "+time=2",
                    "+tries=1",
                    &format!("@{RELAY_IP}"),
                    "who.example.test",
                    "TXT",
                ],
            )
            .unwrap();
        seen.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    // Round robin per worker (two workers share the port with SO_REUSEPORT; one of them
    // gets at least two of the eight queries, so it alternates): both backends answer, and
    // every answer names its server.
    let b1 = seen.iter().filter(|s| *s == "\"b1\"").count();
    let b2 = seen.iter().filter(|s| *s == "\"b2\"").count();
    assert!(b1 >= 1 && b2 >= 1 && b1 + b2 == 8, "{seen:?}");
    // Counted by the relay thread around its sendto: settle (bounded) before comparing.
    wait_for(Duration::from_secs(5), || {
        h.counter("dns", Counter::DnsAnswer) == 8
    });
    assert_eq!(h.counter("dns", Counter::DnsQuery), 8);
    assert_eq!(h.counter("dns", Counter::DnsAnswer), 8);
    assert_eq!(h.counter("dns", Counter::DnsTimeout), 0);
    // A backend marked down by the health engine gets no more queries.
    let hosts: Vec<u32> = h.view("dns").unwrap().load().forwards[0]
        .backends
        .iter()
        .map(|b| b.host_id)
        .collect();
    assert!(h.set_host_state(hosts[0], false));
    for _ in 0..3 {
        let out = lab
            .exec(
                "cl",
                &[
                    "dig",
                    "+short",
                    "+time=2",
                    "+tries=1",
                    &format!("@{RELAY_IP}"),
                    "who.example.test",
                    "TXT",
                ],
            )
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"b2\"");
    }
}

/// 1 MiB of pseudo-random bytes; chunk `i` is this block with `i` stamped in front, so the
/// stream never repeats with a period the relay could get away with.
fn block() -> Vec<u8> {
    let mut x: u64 = 0x243f_6a88_85a3_08d3;
    let mut v = vec![0u8; 1 << 20];
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    v
}

#[test]
fn large_transfer_is_byte_exact_through_splice_and_copy() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const MIB: usize = 200;
    let lab = lab("bulk");
    let h = start_relay(
        &lab,
        &format!(
            "protocol copy {{ tcp {{ no splice }} }}\n\
             relay sp {{\n listen on {RELAY_IP} port 9000\n forward to {B1} port 9000\n}}\n\
             relay cp {{\n listen on {RELAY_IP} port 9001\n protocol copy\n \
             forward to {B1} port 9000\n}}\n"
        ),
    );
    // The sink: reads each connection to EOF, answers with the SHA-256 of what it got.
    let sink = in_ns(&lab, "b1", || {
        let l = TcpListener::bind((B1, 9000)).unwrap();
        for _ in 0..2 {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 18];
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            s.write_all(&hasher.finalize()).unwrap();
        }
    });
    thread::sleep(Duration::from_millis(200));
    let client = in_ns(&lab, "cl", || {
        let mut results = Vec::new();
        let base = block();
        for port in [9000u16, 9001] {
            let t0 = Instant::now();
            let mut s = TcpStream::connect((RELAY_IP, port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut hasher = Sha256::new();
            let mut chunk = base.clone();
            for i in 0..MIB {
                chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
                hasher.update(&chunk);
                s.write_all(&chunk).unwrap();
            }
            s.shutdown(Shutdown::Write).unwrap();
            let mut got = [0u8; 32];
            s.read_exact(&mut got).unwrap();
            let want: [u8; 32] = hasher.finalize().into();
            results.push((port, want == got, t0.elapsed()));
        }
        results
    });
    let results = client.join().unwrap();
    sink.join().unwrap();
    for (port, same, took) in &results {
        eprintln!(
            "port {port}: {MIB} MiB in {took:?} ({:.2} Gbit/s, debug build, hashing on both ends)",
            (MIB as f64 * 8.0 * 1.048_576) / 1000.0 / took.as_secs_f64()
        );
        assert!(same, "SHA-256 differs through port {port}");
    }
    let bytes = (MIB as u64) << 20;
    // The relay thread adds a direction's bytes after its splice/write returns, which can be
    // just after the client has read them: wait (bounded) for the counters to settle.
    let want = [
        ("sp", Counter::BytesIn, bytes),
        ("cp", Counter::BytesIn, bytes),
        ("sp", Counter::BytesOut, 32),
        ("cp", Counter::BytesOut, 32),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && want.iter().any(|(r, c, v)| h.counter(r, *c) != *v) {
        thread::sleep(Duration::from_millis(20));
    }
    for (r, c, v) in want {
        assert_eq!(h.counter(r, c), v, "{r} {c:?}");
    }
}

/// A child process of this test binary, killed (by PID) and reaped on drop.
struct Child {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Child {
    /// Runs this test binary's `helper_process` in namespace `ns` with `env`.
    fn start(lab: &Lab, ns: &str, env: &[(&str, String)]) -> Child {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.ns_name(ns)])
            .arg(exe)
            .args(["--exact", "helper_process", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Child { child, out }
    }

    /// The next line the helper printed with the `CIO ` prefix (None at EOF).
    fn line(&mut self) -> Option<String> {
        use std::io::BufRead;
        loop {
            let mut l = String::new();
            if self.out.read_line(&mut l).ok()? == 0 {
                return None;
            }
            // libtest prints "test helper_process ... " without a newline before the body.
            if let Some(at) = l.find("CIO ") {
                return Some(l.trim_end()[at + 4..].to_string());
            }
        }
    }

    /// Closes the helper's stdin (its signal to finish) and collects `counter NAME VALUE`
    /// lines until it exits.
    fn finish(&mut self) -> Vec<(String, u64)> {
        drop(self.child.stdin.take());
        let mut v = Vec::new();
        while let Some(l) = self.line() {
            let w: Vec<&str> = l.split(' ').collect();
            if let ["counter", name, value] = w[..] {
                v.push((name.to_string(), value.parse().unwrap_or(0)));
            }
        }
        v
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a scenario of its own: the body of the helper processes that
/// `ten_thousand_concurrent_connections_each_relay_a_byte` starts (selected by
/// CIO_RELAY_HELPER). This container's hard RLIMIT_NOFILE is 20,000 without CAP_SYS_RESOURCE,
/// and 10,000 sessions need 10,000 client, 10,000 backend and 20,000 relay descriptors, so
/// they live in separate processes, the relay in two (relayd's prefork model) sharing the
/// port with SO_REUSEPORT.
#[test]
#[ignore = "helper process, started by ten_thousand_concurrent_connections_each_relay_a_byte"]
fn helper_process() {
    let role = std::env::var("CIO_RELAY_HELPER").unwrap_or_default();
    let limit = carpio::sys::splice::raise_nofile(1 << 20).unwrap();
    match role.as_str() {
        "relay" => {
            let conf = std::env::var("CIO_RELAY_CONF").unwrap();
            let c = config::parse_str("helper.conf", &conf, &[]).unwrap();
            let h = relay::spawn(
                &c,
                Options {
                    workers: Some(1),
                    seed: u64::from(std::process::id()),
                },
            )
            .unwrap();
            println!("CIO ready {limit}");
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            for (c, v) in h.counters("many") {
                println!("CIO counter {} {v}", c.name());
            }
        }
        "backend" => {
            let n: usize = std::env::var("CIO_N").unwrap().parse().unwrap();
            let l = TcpListener::bind((B1, 7000)).unwrap();
            l.set_nonblocking(true).unwrap();
            println!("CIO listening {limit}");
            let mut conns = Vec::with_capacity(n);
            let end = Instant::now() + Duration::from_secs(60);
            while conns.len() < n && Instant::now() < end {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        conns.push(s);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
            // Every connection is open at once here; now echo one byte on each.
            let mut echoed = 0;
            for mut s in conns.iter() {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {
                    echoed += 1;
                }
            }
            println!("CIO echoed {echoed} of {}", conns.len());
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        _ => {}
    }
}

#[test]
fn ten_thousand_concurrent_connections_each_relay_a_byte() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 10_000;
    let limit = carpio::sys::splice::raise_nofile(N as u64 + 1024).unwrap();
    assert!(limit >= N as u64 + 64, "RLIMIT_NOFILE {limit}");
    let lab = lab("conc");
    let mut backend = Child::start(
        &lab,
        "b1",
        &[
            ("CIO_RELAY_HELPER", "backend".into()),
            ("CIO_N", N.to_string()),
        ],
    );
    assert!(backend.line().is_some_and(|l| l.starts_with("listening")));
    let conf = format!(
        "protocol p {{ tcp {{ backlog 512 }} }}\n\
         relay many {{\n listen on {RELAY_IP} port 7000\n protocol p\n \
         forward to {B1} port 7000\n}}\n"
    );
    let mut relays: Vec<Child> = (0..2)
        .map(|_| {
            Child::start(
                &lab,
                "rl",
                &[
                    ("CIO_RELAY_HELPER", "relay".into()),
                    ("CIO_RELAY_CONF", conf.clone()),
                ],
            )
        })
        .collect();
    for r in &mut relays {
        let l = r.line().unwrap_or_default();
        assert!(l.starts_with("ready"), "relay helper: {l:?}");
    }
    let client = in_ns(&lab, "cl", || {
        let addr: SocketAddr = format!("{RELAY_IP}:7000").parse().unwrap();
        let mut conns = Vec::with_capacity(N);
        for _ in 0..N {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            conns.push(s);
        }
        for (i, mut s) in conns.iter().enumerate() {
            s.write_all(&[i as u8]).unwrap();
        }
        let mut ok = 0;
        for (i, mut s) in conns.iter().enumerate() {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() && b[0] == i as u8 {
                ok += 1;
            }
        }
        ok
    });
    let ok = client.join().unwrap();
    assert_eq!(backend.line(), Some(format!("echoed {N} of {N}")));
    assert_eq!(ok, N);
    drop(backend);
    let mut sum = std::collections::HashMap::new();
    let mut per_relay = Vec::new();
    for r in &mut relays {
        let c = r.finish();
        per_relay.push(
            c.iter()
                .find(|(n, _)| n == "session_accepted")
                .map(|x| x.1)
                .unwrap_or(0),
        );
        for (name, v) in c {
            *sum.entry(name).or_insert(0u64) += v;
        }
    }
    eprintln!("sessions per relay process: {per_relay:?}");
    assert_eq!(sum.get("session_accepted"), Some(&(N as u64)));
    assert_eq!(sum.get("bytes_in"), Some(&(N as u64)));
    assert_eq!(sum.get("bytes_out"), Some(&(N as u64)));
    assert_eq!(sum.get("session_error"), Some(&0));
    assert_eq!(sum.get("drop_connect_failed"), Some(&0));
}

#[test]
fn idle_clients_are_closed_by_the_session_timeout() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 50;
    let lab = lab("idle");
    let h = start_relay(
        &lab,
        &format!(
            "relay idle {{\n listen on {RELAY_IP} port 7100\n forward to {B1} port 7100\n \
             session timeout 1\n}}\n"
        ),
    );
    let backend = in_ns(&lab, "b1", || {
        let l = TcpListener::bind((B1, 7100)).unwrap();
        l.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while held.len() < N && Instant::now() < end {
            match l.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        // Hold them (silently) until the relay has closed everything.
        thread::sleep(Duration::from_secs(3));
        held.len()
    });
    thread::sleep(Duration::from_millis(200));
    let client = in_ns(&lab, "cl", || {
        let conns: Vec<TcpStream> = (0..N)
            .map(|_| {
                let s = TcpStream::connect((RELAY_IP, 7100)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s
            })
            .collect();
        let t0 = Instant::now();
        let closed = conns
            .iter()
            .filter(|s| {
                let mut b = [0u8; 1];
                let mut r: &TcpStream = s;
                matches!(r.read(&mut b), Ok(0) | Err(_))
            })
            .count();
        (closed, t0.elapsed())
    });
    let (closed, took) = client.join().unwrap();
    assert_eq!(backend.join().unwrap(), N);
    assert_eq!(closed, N);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(h.counter("idle", Counter::SessionTimeout), N as u64);
}
