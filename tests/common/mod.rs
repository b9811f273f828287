//! Helpers shared by the end-to-end tests that run the `carpio` daemon in network namespaces:
//! a temporary directory, the daemon process (SIGKILLed on drop), `carpioctl` and the root
//! check. Each test file includes this with `mod common;` and uses what it needs.
#![allow(dead_code)]

pub mod lab_daemon;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The effective uid, from /proc.
pub fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// Fails (never skips) when not root: every netns test needs it, and CI runs as root.
pub fn require_root(test: &str) {
    assert_eq!(euid(), 0, "{test} needs root (network namespaces)");
}

/// Fails (never skips) when not root or when a tool is missing.
pub fn require_root_and(test: &str, tools: &[&str]) {
    assert_eq!(euid(), 0, "{test} needs root (network namespaces)");
    for tool in tools {
        let ok = Command::new(tool)
            .arg(if *tool == "ethtool" {
                "--version"
            } else {
                "-V"
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(ok, "{tool} is required by {test}");
    }
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("carpio-e2e-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `carpio -d` process in a namespace; SIGKILLed on drop if still running.
pub struct Daemon {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `carpio -d -f conf` in namespace `ns` (full name), stderr to `log`.
    pub fn start(ns: &str, conf: &Path, log: PathBuf) -> Daemon {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, carpio(), "-d", "-f"])
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (at most 10 s) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn carpio() -> &'static str {
    env!("CARGO_BIN_EXE_carpio")
}

pub fn carpioctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_carpioctl"))
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The value of counter `name` in `carpioctl show counters` output (0 when absent).
pub fn counter(shown: &str, name: &str) -> u64 {
    shown
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` every 100 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The backends' server: UDP 5353 answers every datagram with the backend's name; TCP 5353
/// answers every chunk a client sends with the name, ':' and the chunk, until EOF (a health
/// check's connect-and-close ends at once).
pub const ECHO: &str = r#"
import socket, sys, threading
name = sys.argv[1].encode()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("0.0.0.0", 5353))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 5353))
t.listen(256)
def serve(c):
    try:
        while True:
            d = c.recv(2048)
            if not d:
                break
            c.sendall(name + b":" + d)
    except OSError:
        pass
    finally:
        c.close()
def tcp():
    while True:
        c, _ = t.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
while True:
    d, a = u.recvfrom(2048)
    u.sendto(name, a)
"#;

pub const PYTHON: &str = "/usr/bin/python3";

/// The one-armed NAT lab of the daemon tests, each node in its own namespace:
///
/// ```text
///   client 198.18.1.10 ─┐            ┌─ b1 198.18.2.11  (ECHO "b1", UDP+TCP 5353)
///                       ├─ br0 (sw) ─┼─ b2 198.18.2.12  (ECHO "b2")
///   lb (carpio) lb0 ────┘
///      198.18.1.1/24, 198.18.2.1/24  (forwarding off: carpio forwards)
/// ```
///
/// The backends route through the balancer; senders compute checksums in software (veth hands
/// locally sent packets over with CHECKSUM_PARTIAL, which a kernel-bypass receiver would see);
/// no ICMP rate limit on the backends. Returns the lab and the server script's path; the
/// servers are not started (`lab.spawn(b, &[PYTHON, &script, b])`).
pub fn echo_lab(tag: &str, dir: &TempDir) -> (carpio::lab::Lab, String) {
    use carpio::lab::{Lab, VethConfig};
    let mut lab = Lab::new(tag).unwrap();
    for ns in ["sw", "client", "lb", "b1", "b2"] {
        lab.ns(ns).unwrap();
    }
    lab.veth(&VethConfig::new("client", "c0", "sw", "pc"))
        .unwrap();
    lab.veth(&VethConfig::new("lb", "lb0", "sw", "pl")).unwrap();
    lab.veth(&VethConfig::new("b1", "e0", "sw", "p1")).unwrap();
    lab.veth(&VethConfig::new("b2", "e0", "sw", "p2")).unwrap();
    lab.bridge("sw", "br0", &["pc", "pl", "p1", "p2"]).unwrap();
    lab.addr("client", "c0", "198.18.1.10/24").unwrap();
    lab.addr("lb", "lb0", "198.18.1.1/24").unwrap();
    lab.addr("lb", "lb0", "198.18.2.1/24").unwrap();
    lab.addr("b1", "e0", "198.18.2.11/24").unwrap();
    lab.addr("b2", "e0", "198.18.2.12/24").unwrap();
    for b in ["b1", "b2"] {
        lab.ip(b, &["route", "add", "default", "via", "198.18.2.1"])
            .unwrap();
        lab.exec(b, &["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"])
            .unwrap();
    }
    for (ns, ifname) in [("client", "c0"), ("b1", "e0"), ("b2", "e0")] {
        lab.exec(ns, &["ethtool", "-K", ifname, "tx", "off"])
            .unwrap();
    }
    lab.exec("lb", &["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        .unwrap();
    let script = dir.path("echo.py");
    std::fs::write(&script, ECHO).unwrap();
    (lab, script.to_string_lossy().into_owned())
}

/// Serialises the network-namespace scenarios of one test binary (the harness runs tests in
/// parallel threads; the scenarios are run one at a time, as the project's rules ask).
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`SERIAL`] (a panicked holder does not poison the others).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `token-i\n` through connection i of `conns`, then reads every answer (all before
/// `limit`): the backend that answered each (the echo is `NAME{sep}token-i`), or `None`
/// (reset, timeout, wrong echo).
pub fn echo_all(
    conns: &mut [std::io::BufReader<std::net::TcpStream>],
    token: &str,
    limit: Duration,
    sep: char,
) -> Vec<Option<String>> {
    use std::io::{BufRead, Write};
    for (i, c) in conns.iter_mut().enumerate() {
        let _ = c.get_mut().write_all(format!("{token}-{i}\n").as_bytes());
    }
    let deadline = Instant::now() + limit;
    conns
        .iter_mut()
        .enumerate()
        .map(|(i, c)| {
            let left = deadline.saturating_duration_since(Instant::now());
            c.get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .ok()?;
            let mut line = String::new();
            c.read_line(&mut line).ok()?;
            let (name, rest) = line.trim_end().split_once(sep)?;
            (rest == format!("{token}-{i}")).then(|| name.to_owned())
        })
        .collect()
}

/// How many connections answered from the backend they started on.
pub fn kept(first: &[Option<String>], now: &[Option<String>]) -> usize {
    first
        .iter()
        .zip(now)
        .filter(|(a, b)| a.is_some() && a == b)
        .count()
}
