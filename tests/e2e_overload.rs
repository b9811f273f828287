//! Overload of the flow table in a running daemon (issue #11 item 3; root only).
//!
//! The daemon gets a small flow table (1024 entries), 40 long-lived TCP connections through the
//! VIP (established flows), then a flood of 8 × that many new UDP flows (one datagram from a
//! fresh source port each: pf's udp.single, not established). The documented policy
//! (src/dataplane/flow.rs, "Time, expiry, eviction") says: a full table evicts
//! non-established flows first (`flow_evict_early`); when every candidate is established the
//! packet is still forwarded by a stateless pick (`flow_stateless_table_full`); established
//! flows are never evicted early. Checked here:
//!
//! - the flood filled the table and was handled by eviction/stateless picks (counters);
//! - every established TCP connection still reaches the backend it started on;
//! - the daemon's memory stayed bounded (VmRSS growth under 16 MiB: the table is allocated once);
//! - service recovers: after the flood new flows are tracked and answered again.
//!
//! Topology: `common::echo_lab` (client, balancer, two echo backends).

mod common;

use common::{Daemon, PYTHON, TempDir, carpioctl, counter, text, wait_for};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

const VIP: &str = "198.18.1.100";
const PORT: u16 = 5353;
const TABLE: usize = 1024;
const CONNS: usize = 40;

fn config(sock: &Path) -> String {
    format!(
        r#"# e2e_overload
control socket "{sock}"
flow table size {TABLE}
interface lb0 {{ ingress afpacket }}
table <echo> {{ 198.18.2.11, 198.18.2.12 }}
redirect "echo" {{
    listen on {VIP} udp port {PORT}
    listen on {VIP} tcp port {PORT}
    forward to <echo> port {PORT} mode roundrobin check tcp
}}
"#,
        sock = sock.display()
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Sends `msg` on `s` and returns the backend's name from the echo ("bN:msg").
fn echo(s: &mut TcpStream, msg: &str) -> Option<String> {
    s.write_all(msg.as_bytes()).ok()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).ok()?;
    let got = String::from_utf8_lossy(buf.get(..n)?).into_owned();
    let (name, rest) = got.split_once(':')?;
    (rest == msg).then(|| name.to_string())
}

fn udp_answered(vip: SocketAddr) -> bool {
    let Ok(s) = UdpSocket::bind("198.18.1.10:0") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.send_to(b"q", vip).is_ok() && s.recv_from(&mut buf).is_ok()
}

#[test]
fn a_full_flow_table_spares_established_flows_and_recovers() {
    let _g = common::serial();
    common::require_root_and("e2e_overload", &["ip", "ethtool", PYTHON]);
    let dir = TempDir::new("overload");
    let sock = dir.path("carpio.sock");
    let conf = dir.path("carpio.conf");
    std::fs::write(&conf, config(&sock)).unwrap();
    let (mut lab, script) = common::echo_lab("ovl", &dir);
    lab.spawn("b1", &[PYTHON, &script, "b1"]).unwrap();
    lab.spawn("b2", &[PYTHON, &script, "b2"]).unwrap();
    let d = Daemon::start(&lab.ns_name("lb"), &conf, dir.path("carpio.log"));
    let ctx = |what: &str| {
        let c = text(&carpioctl(&sock, &["show", "counters"]));
        let nonzero: Vec<&str> = c.lines().filter(|l| !l.ends_with(" 0")).collect();
        format!(
            "{what}\nlog:\n{}\ncounters:\n{}",
            d.log(),
            nonzero.join("\n")
        )
    };
    let vip: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
    let serving = wait_for(Duration::from_secs(20), || {
        lab.run_in("client", || udp_answered(vip))
            .unwrap()
            .then_some(())
    });
    assert!(serving.is_some(), "{}", ctx("never served"));

    let pid = d.pid();
    let rss_after_start = rss_kib(pid);
    assert!(rss_after_start > 0, "VmRSS of {pid} readable");
    let (conns, flood_secs) = lab
        .run_in("client", || {
            // Established flows first.
            let mut conns = Vec::new();
            for i in 0..CONNS {
                let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(3))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let b = echo(&mut s, &format!("hello{i}"))
                    .unwrap_or_else(|| panic!("connection {i}: no echo"));
                conns.push((s, b));
            }
            // The flood: one datagram per fresh source port, bounded in count and time.
            let t0 = Instant::now();
            let mut socks = Vec::new();
            for _ in 0..TABLE * 8 {
                if t0.elapsed() > Duration::from_secs(20) {
                    break;
                }
                if let Ok(s) = UdpSocket::bind("198.18.1.10:0") {
                    let _ = s.send_to(b"flood", vip);
                    socks.push(s);
                    // Keep at most 512 sockets open: ports are reused only after a close.
                    if socks.len() >= 512 {
                        socks.clear();
                    }
                }
            }
            (conns, t0.elapsed())
        })
        .unwrap();

    // The table overflowed: non-established flows were evicted early (or forwarded statelessly).
    let shown = wait_for(Duration::from_secs(10), || {
        let c = text(&carpioctl(&sock, &["show", "counters"]));
        (counter(&c, "flow_evict_early") + counter(&c, "flow_stateless_table_full") > 0)
            .then_some(c)
    });
    let shown = shown.unwrap_or_else(|| panic!("{}", ctx("the flood never filled the table")));
    let evicted = counter(&shown, "flow_evict_early");
    let stateless = counter(&shown, "flow_stateless_table_full");
    let new = counter(&shown, "flow_new");
    assert!(
        new >= TABLE as u64,
        "the flood created at least a table's worth of flows: {new}\n{shown}"
    );

    // Every established connection still reaches its backend.
    let moved: Vec<usize> = lab
        .run_in("client", move || {
            let mut moved = Vec::new();
            for (i, (mut s, b)) in conns.into_iter().enumerate() {
                if echo(&mut s, &format!("again{i}")).as_deref() != Some(b.as_str()) {
                    moved.push(i);
                }
            }
            moved
        })
        .unwrap();
    assert!(
        moved.is_empty(),
        "established connections lost or moved by the flood: {moved:?}\n{}",
        ctx("")
    );

    // Memory bounded: the table and rings are allocated at start.
    let rss_end = rss_kib(pid);
    assert!(
        rss_end < rss_after_start + 16 * 1024,
        "VmRSS grew from {rss_after_start} KiB to {rss_end} KiB"
    );

    // Recovery: once the flood's flows expire or are evicted, new flows are answered again.
    let recovered = wait_for(Duration::from_secs(20), || {
        lab.run_in("client", || (0..5).all(|_| udp_answered(vip)))
            .unwrap()
            .then_some(())
    });
    assert!(
        recovered.is_some(),
        "{}",
        ctx("no recovery after the flood")
    );
    eprintln!(
        "e2e_overload: {} new flows in {flood_secs:?} into a {TABLE}-entry table: {evicted} \
         evicted early, {stateless} forwarded statelessly, {CONNS}/{CONNS} established kept; \
         VmRSS {rss_after_start} -> {rss_end} KiB",
        new
    );
}
