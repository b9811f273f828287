//! `common::lab_daemon`, used by tests/e2e_metrics.rs, tests/e2e_reload.rs and tests/e2e_daemon.rs: the one-armed NAT lab of
//! tests/e2e_daemon.rs (client 198.18.1.10, balancer 198.18.1.1/198.18.2.1 on `lb0`, backends
//! 198.18.2.11 and .12 routed through the balancer, all on one bridge), echo servers that name
//! themselves (UDP and one-shot TCP on 5353, a line-by-line TCP echo on 5354 for long-lived
//! connections), the daemon as a child process (SIGKILLed on drop) and carpioctl.
#![allow(dead_code)]

pub use super::{Daemon, TempDir, carpioctl, text};
use carpio::lab::{Lab, VethConfig};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

pub const VIP: &str = "198.18.1.100";
pub const PORT: u16 = 5353;
/// The line-echo port (long-lived TCP connections).
pub const LINE_PORT: u16 = 5354;
pub use super::PYTHON;

const ECHO: &str = r#"
import socket, sys, threading
name = sys.argv[1].encode()
def listener(port):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("0.0.0.0", port))
    t.listen(64)
    return t
one = listener(5353)
line = listener(5354)
def oneshot():
    while True:
        c, _ = one.accept()
        try:
            c.recv(100)
            c.sendall(name + b"\n")
        finally:
            c.close()
def serve_lines(c):
    f = c.makefile("rb")
    try:
        for _ in f:
            c.sendall(name + b"\n")
    except OSError:
        pass
    finally:
        c.close()
def lines():
    while True:
        c, _ = line.accept()
        threading.Thread(target=serve_lines, args=(c,), daemon=True).start()
threading.Thread(target=oneshot, daemon=True).start()
threading.Thread(target=lines, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("0.0.0.0", 5353))
while True:
    d, a = u.recvfrom(2048)
    u.sendto(name, a)
"#;

/// Fails (never skips) without root or one of the lab's tools.
pub fn require_root_and_tools(what: &str) {
    super::require_root_and(what, &["ip", "nft", "ethtool", PYTHON]);
}

/// Builds the topology and starts the echo servers.
pub fn topology(tag: &str, dir: &TempDir) -> Lab {
    let mut lab = Lab::new(tag).unwrap();
    for ns in ["sw", "client", "lb", "b1", "b2", "b3"] {
        lab.ns(ns).unwrap();
    }
    lab.veth(&VethConfig::new("client", "c0", "sw", "pc"))
        .unwrap();
    lab.veth(&VethConfig::new("lb", "lb0", "sw", "pl")).unwrap();
    lab.veth(&VethConfig::new("b1", "e0", "sw", "p1")).unwrap();
    lab.veth(&VethConfig::new("b2", "e0", "sw", "p2")).unwrap();
    lab.veth(&VethConfig::new("b3", "e0", "sw", "p3")).unwrap();
    lab.bridge("sw", "br0", &["pc", "pl", "p1", "p2", "p3"])
        .unwrap();
    lab.addr("client", "c0", "198.18.1.10/24").unwrap();
    lab.addr("lb", "lb0", "198.18.1.1/24").unwrap();
    lab.addr("lb", "lb0", "198.18.2.1/24").unwrap();
    lab.addr("b1", "e0", "198.18.2.11/24").unwrap();
    lab.addr("b2", "e0", "198.18.2.12/24").unwrap();
    lab.addr("b3", "e0", "198.18.2.13/24").unwrap();
    for b in ["b1", "b2", "b3"] {
        lab.ip(b, &["route", "add", "default", "via", "198.18.2.1"])
            .unwrap();
    }
    // Software checksums on the senders (see tests/e2e_daemon.rs: veth's CHECKSUM_PARTIAL).
    for (ns, ifname) in [("client", "c0"), ("b1", "e0"), ("b2", "e0"), ("b3", "e0")] {
        lab.exec(ns, &["ethtool", "-K", ifname, "tx", "off"])
            .unwrap();
    }
    lab.exec("lb", &["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        .unwrap();
    let script = dir.path("echo.py");
    std::fs::write(&script, ECHO).unwrap();
    let s = script.to_string_lossy().into_owned();
    for b in ["b1", "b2", "b3"] {
        lab.spawn(b, &[PYTHON, &s, b]).unwrap();
    }
    lab
}

pub fn start_daemon(lab: &Lab, conf: &Path, dir: &TempDir) -> Daemon {
    Daemon::start(&lab.ns_name("lb"), conf, dir.path("carpio.log"))
}

/// One UDP query from the client namespace to VIP:`port`; `sport` 0 = a fresh port.
pub fn udp_query_to(lab: &Lab, sport: u16, port: u16) -> Option<String> {
    lab.run_in("client", move || {
        let s = UdpSocket::bind(("198.18.1.10", sport)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        let vip: SocketAddr = format!("{VIP}:{port}").parse().ok()?;
        s.send_to(b"hello", vip).ok()?;
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).ok()?;
        (from == vip).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .ok()
    .flatten()
}

/// Waits (bounded) until the daemon has resolved every backend's MAC.
pub fn wait_resolved(d: &Daemon, sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let c = text(&carpioctl(sock, &["show", "counters"]));
        if c.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("daemon_hosts_unresolved") && w.next() == Some("0")
        }) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("backends never resolved; log:\n{}", d.log());
}

/// Waits (bounded) until a UDP query through the VIP is answered (some backends may still be
/// unresolved).
pub fn wait_answering(lab: &Lab, d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if udp_query_to(lab, 0, PORT).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("carpio never answered through the VIP; log:\n{}", d.log());
}

/// Waits (bounded) until a UDP query through the VIP is answered and every backend's MAC is
/// resolved (`daemon_hosts_unresolved 0`) and every host has had its first check (none is
/// `unknown`, which is not used, as in relayd), so later flows may go to any backend.
pub fn wait_serving(lab: &Lab, d: &Daemon, sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if udp_query_to(lab, 0, PORT).is_some() {
            let c = text(&carpioctl(sock, &["show", "counters"]));
            let checked = !text(&carpioctl(sock, &["show", "hosts"])).contains("unknown");
            if checked
                && c.lines().any(|l| {
                    let mut w = l.split_whitespace();
                    w.next() == Some("daemon_hosts_unresolved") && w.next() == Some("0")
                })
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let counters = text(&carpioctl(sock, &["show", "counters"]));
    panic!(
        "carpio never answered through the VIP; log:\n{}\ncounters:\n{counters}",
        d.log()
    );
}
