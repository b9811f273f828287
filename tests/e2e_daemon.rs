//! End-to-end tests of the carpio daemon on real interfaces (root; network namespaces made by
//! `lab::Lab`, addresses in 198.18.0.0/15 only, everything removed on drop, also on failure).
//!
//! Topology (one-armed NAT, see `carpio::daemon`'s doc; `common::lab_daemon::topology`): the
//! client (198.18.1.10/24) reaches the VIP 198.18.1.100 directly on the link (carpio answers
//! its ARP); the backends (198.18.2.11, .12/24; .13 is there but not configured here) have the
//! balancer (198.18.2.1) as their default router, so their answers come back through carpio,
//! which un-NATs them. Each backend runs a tiny UDP/TCP echo server (python3) answering with
//! its own name.
//!
//! The same scenario runs over AF_PACKET, pnet and AF_XDP (generic mode, veth queue 0). Tests
//! in this file run one at a time (`common::serial`); each scenario is bounded in time.

mod common;

use carpio::lab::Lab;
use common::carpio;
use common::lab_daemon::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config(ingress: &str, sock: &Path) -> String {
    format!(
        r#"# e2e_daemon
control socket "{sock}"
interface lb0 {{ {ingress} }}
table <echo> {{ 198.18.2.11, 198.18.2.12 }}
redirect "echo" {{
    listen on {VIP} udp port {PORT}
    listen on {VIP} tcp port {PORT}
    forward to <echo> port {PORT} check icmp
}}
"#,
        sock = sock.display()
    )
}

/// One UDP query from the client namespace; `sport` 0 = a fresh port each time.
fn udp_query(lab: &Lab, sport: u16) -> Option<String> {
    udp_query_to(lab, sport, PORT)
}

fn tcp_query(lab: &Lab) -> Option<String> {
    lab.run_in("client", || {
        let vip: SocketAddr = format!("{VIP}:{PORT}").parse().ok()?;
        let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"hello\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out.trim().to_string())
    })
    .ok()
    .flatten()
}

fn scenario(tag: &str, ingress: &str) {
    let _g = common::serial();
    require_root_and_tools("e2e_daemon");
    let started = Instant::now();
    let dir = TempDir::new(tag);
    let sock = dir.path("carpio.sock");
    let conf = dir.path("carpio.conf");
    std::fs::write(&conf, config(ingress, &sock)).unwrap();
    let lab = topology(tag, &dir);
    let mut d = start_daemon(&lab, &conf, &dir);
    assert!(d.pid() > 0);
    wait_serving(&lab, &d, &sock);

    // New flows (fresh source ports) reach both backends, round-robin.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..10 {
        if let Some(a) = udp_query(&lab, 0) {
            *seen.entry(a).or_insert(0u32) += 1;
        }
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        vec!["b1".to_string(), "b2".to_string()],
        "answers {seen:?}; log:\n{}",
        d.log()
    );
    assert!(seen.values().sum::<u32>() >= 9, "answers {seen:?}");

    // One flow (same source port) stays on one backend.
    let sticky: Vec<Option<String>> = (0..5).map(|_| udp_query(&lab, 40123)).collect();
    assert!(sticky[0].is_some(), "{sticky:?}");
    assert!(sticky.iter().all(|a| *a == sticky[0]), "{sticky:?}");

    // TCP through the same VIP.
    let t = tcp_query(&lab);
    assert!(
        matches!(t.as_deref(), Some("b1") | Some("b2")),
        "tcp answer {t:?}; log:\n{}",
        d.log()
    );

    // carpioctl against the running daemon: relayctl's exact header line.
    let o = carpioctl(&sock, &["show", "summary"]);
    let s = text(&o);
    assert!(o.status.success(), "{s}");
    assert_eq!(
        s.lines().next(),
        Some("Id  \tType    \tName                    \tAvlblty\tStatus"),
        "{s}"
    );
    assert!(s.contains("redirect\techo"), "{s}");
    assert!(s.contains("198.18.2.11"), "{s}");
    let o = carpioctl(&sock, &["show", "counters"]);
    let s = text(&o);
    assert!(o.status.success(), "{s}");
    let counter = |s: &str, name: &str| -> u64 {
        s.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name))
                    .then(|| w.next().and_then(|v| v.parse().ok()))
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no counter {name} in\n{s}"))
    };
    assert!(counter(&s, "tx_nat_in") >= 10, "{s}");
    assert!(counter(&s, "tx_nat_out") >= 10, "{s}");
    assert!(counter(&s, "flow_new") >= 10, "{s}");
    assert!(counter(&s, "tx_arp_reply") >= 1, "{s}");
    assert!(counter(&s, "worker_busy_ns") > 0, "{s}");
    let _ = counter(&s, "drop_no_backend");
    let o = carpioctl(&sock, &["show", "states"]);
    assert!(o.status.success());
    assert!(text(&o).contains(&format!("{VIP}:{PORT}")), "{}", text(&o));

    // Disabling a host (by the id relayctl shows) moves new flows away from it.
    let hosts = text(&carpioctl(&sock, &["show", "hosts"]));
    let id = hosts
        .lines()
        .find(|l| l.contains("host") && l.contains("198.18.2.11"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no host 198.18.2.11 in\n{hosts}"))
        .to_string();
    // `carpioctl monitor` sees the change.
    let mut monitor = Command::new(env!("CARGO_BIN_EXE_carpioctl"))
        .arg("-s")
        .arg(&sock)
        .arg("monitor")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let o = carpioctl(&sock, &["host", "disable", &id]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).trim(), "command succeeded");
    for _ in 0..6 {
        assert_eq!(udp_query(&lab, 0).as_deref(), Some("b2"));
    }
    let s = text(&carpioctl(&sock, &["show", "hosts"]));
    assert!(s.contains("disabled"), "{s}");
    let _ = monitor.kill();
    let out = monitor.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        seen.contains(&format!("host: id {id}, name 198.18.2.11, disable")),
        "monitor saw: {seen}"
    );
    let o = carpioctl(&sock, &["host", "enable", &id]);
    assert!(o.status.success(), "{}", text(&o));

    // A flow established before a reload keeps its backend after it (stable indices).
    let before = udp_query(&lab, 40124);
    assert!(before.is_some());

    // A broken configuration on reload is refused; the daemon keeps serving.
    std::fs::write(&conf, "redirect {\n").unwrap();
    let o = carpioctl(&sock, &["reload"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("command failed"), "{}", text(&o));
    assert!(
        udp_query(&lab, 0).is_some(),
        "not serving after a bad reload"
    );
    // A good one is applied: a new port is steered (XDP maps, cBPF filter, nft) and served,
    // the old one still is.
    assert_eq!(udp_query_to(&lab, 0, PORT + 1), None);
    let more = config(ingress, &sock).replace(
        "    forward to",
        &format!("    listen on {VIP} udp port {}\n    forward to", PORT + 1),
    );
    std::fs::write(&conf, more).unwrap();
    let o = carpioctl(&sock, &["reload"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(udp_query(&lab, 0).is_some(), "not serving after reload");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut new_port = None;
    while new_port.is_none() && Instant::now() < deadline {
        new_port = udp_query_to(&lab, 0, PORT + 1);
    }
    assert!(new_port.is_some(), "new port not served; log:\n{}", d.log());
    assert_eq!(udp_query(&lab, 40124), before, "flow moved across reload");
    // SIGHUP reloads too.
    let _ = Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.log().matches("reloaded").count() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.log().matches("reloaded").count(), 2, "{}", d.log());
    assert!(udp_query(&lab, 0).is_some(), "not serving after SIGHUP");

    // While running: the XDP program (afxdp) or the nft ingress drop (afpacket) is in place.
    let attached = |w: &str| w.starts_with("xdp") || w.starts_with("prog/xdp");
    let link = lab.link_show("lb", "lb0").unwrap();
    let tables = lab.exec("lb", &["nft", "list", "tables"]).unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
    if ingress.contains("afxdp") {
        assert!(link.split_whitespace().any(attached), "{link}");
    } else {
        assert!(tables.contains("netdev carpio_lb0"), "{tables}");
    }

    // SIGTERM: clean exit, no XDP left on the interface, no nft table, no socket file.
    let st = d.terminate();
    assert!(
        st.is_some_and(|s| s.success()),
        "exit {st:?}; log:\n{}",
        d.log()
    );
    let link = lab.link_show("lb", "lb0").unwrap();
    // `ip -d link` shows `xdpgeneric`/`xdp` and `prog/xdp id N` while a program is attached.
    assert!(!link.split_whitespace().any(attached), "{link}");
    let tables = lab.exec("lb", &["nft", "list", "tables"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("carpio"),
        "{}",
        String::from_utf8_lossy(&tables.stdout)
    );
    assert!(!sock.exists());
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn afpacket_nat_end_to_end() {
    scenario("dafp", "ingress afpacket");
}

/// The TPACKET_V2 ring (`ring v2`); the default above is V3.
#[test]
fn afpacket_v2_ring_nat_end_to_end() {
    scenario("daf2", "ingress afpacket ring v2");
}

#[test]
fn pnet_nat_end_to_end() {
    scenario("dpnt", "ingress pnet");
}

#[test]
fn afxdp_generic_nat_end_to_end() {
    scenario("dxsk", "ingress afxdp mode generic");
}

/// `user nobody`: the daemon serves after dropping to nobody with only CAP_NET_RAW and
/// CAP_NET_ADMIN, its control socket belongs to nobody with mode 0660, and SIGTERM still
/// removes the nft table (through the ambient CAP_NET_ADMIN of the `nft` child).
#[test]
fn privilege_drop_keeps_serving_and_cleans_up() {
    let _g = common::serial();
    require_root_and_tools("e2e_daemon");
    let dir = TempDir::new("priv");
    let sock = dir.path("carpio.sock");
    let conf = dir.path("carpio.conf");
    std::fs::write(
        &conf,
        format!("user nobody\n{}", config("ingress afpacket", &sock)),
    )
    .unwrap();
    let lab = topology("dpriv", &dir);
    let mut d = start_daemon(&lab, &conf, &dir);
    wait_serving(&lab, &d, &sock);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "65534 65534 65534 65534", "{status}");
    // CAP_NET_ADMIN (12) and CAP_NET_RAW (13) only.
    assert_eq!(field("CapEff:"), "0000000000003000", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000003000", "{status}");
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.uid(), 65534);
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let o = carpioctl(&sock, &["show", "summary"]);
    assert!(o.status.success(), "{}", text(&o));
    let st = d.terminate();
    assert!(st.is_some_and(|s| s.success()), "{st:?}: {}", d.log());
    let tables = lab.exec("lb", &["nft", "list", "tables"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("carpio"),
        "nft table left behind; log:\n{}",
        d.log()
    );
}

/// A backend whose MAC cannot be resolved at start (its link is down) is retried, and the
/// snapshot is rebuilt when its MAC appears: new flows then reach it.
#[test]
fn late_neighbour_is_resolved_and_used() {
    let _g = common::serial();
    require_root_and_tools("e2e_daemon");
    let dir = TempDir::new("late");
    let sock = dir.path("carpio.sock");
    let conf = dir.path("carpio.conf");
    std::fs::write(&conf, config("ingress afpacket", &sock)).unwrap();
    let lab = topology("dlate", &dir);
    lab.ip("b2", &["link", "set", "e0", "down"]).unwrap();
    let mut d = start_daemon(&lab, &conf, &dir);
    wait_answering(&lab, &d);
    let counters = text(&carpioctl(&sock, &["show", "counters"]));
    assert!(
        counters
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["daemon_hosts_unresolved", "1"]),
        "{counters}"
    );
    lab.ip("b2", &["link", "set", "e0", "up"]).unwrap();
    lab.ip("b2", &["route", "replace", "default", "via", "198.18.2.1"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_b2 = false;
    while !saw_b2 && Instant::now() < deadline {
        saw_b2 = udp_query(&lab, 0).as_deref() == Some("b2");
    }
    assert!(saw_b2, "b2 never answered; log:\n{}", d.log());
    let counters = text(&carpioctl(&sock, &["show", "counters"]));
    assert!(
        counters
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["daemon_hosts_unresolved", "0"]),
        "{counters}"
    );
    assert!(d.terminate().is_some_and(|s| s.success()));
}

#[test]
fn check_mode_exit_codes_and_messages() {
    let _g = common::serial();
    let dir = TempDir::new("chk");
    let good = dir.path("good.conf");
    std::fs::write(&good, config("ingress afpacket", &dir.path("s.sock"))).unwrap();
    let o = Command::new(carpio())
        .args(["-n", "-f"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("configuration OK"), "{}", text(&o));

    let bad = dir.path("bad.conf");
    std::fs::write(
        &bad,
        "table <t> { 198.18.2.11 }\nredirect r {\n  listen on 198.18.1.100 udp port 70000\n  forward to <nope> check icmp\n}\n",
    )
    .unwrap();
    let o = Command::new(carpio())
        .args(["-n", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = text(&o);
    let prefix = format!("{}:3:", bad.display());
    assert!(s.lines().any(|l| l.starts_with(&prefix)), "{s}");
    let prefix4 = format!("{}:4:", bad.display());
    assert!(s.lines().any(|l| l.starts_with(&prefix4)), "{s}");
    assert!(!s.contains("configuration OK"));

    // -D overrides a macro.
    let m = dir.path("macro.conf");
    std::fs::write(
        &m,
        "port = 70000\ntable <t> { 198.18.2.11 }\nredirect r {\n  listen on 198.18.1.100 udp port $port\n  forward to <t> check icmp\n}\n",
    )
    .unwrap();
    let o = Command::new(carpio())
        .args(["-n", "-D", "port=53", "-f"])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A `carp` block in the daemon's configuration starts a carp shell on the interface:
/// `carpioctl show carp` lists the vhost, which becomes MASTER alone on the segment (advbase 0:
/// within a fraction of a second), its virtual address answers ping from the client; a better
/// peer's advertisements reach it over the AF_XDP ingress and make it BACKUP; SIGTERM bows out
/// and removes the macvlan.
#[test]
fn carp_block_runs_a_vhost_shown_by_carpioctl() {
    let _g = common::serial();
    require_root_and_tools("e2e_daemon");
    let dir = TempDir::new("carp");
    let sock = dir.path("carpio.sock");
    let conf = dir.path("carpio.conf");
    std::fs::write(
        &conf,
        format!(
            "carp carp0 {{ carpdev lb0, vhid 7, advbase 0, advskew 20, pass \"e2e\", address 198.18.1.77/24 }}\n{}",
            config("ingress afxdp mode generic", &sock)
        ),
    )
    .unwrap();
    let lab = topology("dcarp", &dir);
    let mut d = start_daemon(&lab, &conf, &dir);
    wait_serving(&lab, &d, &sock);
    let mut shown = String::new();
    for _ in 0..50 {
        let o = carpioctl(&sock, &["show", "carp"]);
        assert!(o.status.success(), "{}", text(&o));
        shown = text(&o);
        if shown
            .lines()
            .any(|l| l.starts_with("carp0") && l.contains("MASTER"))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let row = shown
        .lines()
        .find(|l| l.starts_with("carp0"))
        .unwrap_or_default()
        .to_string();
    let cols: Vec<&str> = row.split('\t').map(str::trim).collect();
    assert_eq!(cols.get(1).copied(), Some("7"), "{shown}\n{}", d.log());
    assert_eq!(cols.get(2).copied(), Some("MASTER"), "{shown}\n{}", d.log());
    let ping = lab
        .exec("client", &["ping", "-c", "1", "-W", "2", "198.18.1.77"])
        .unwrap();
    assert!(
        ping.status.success(),
        "the virtual address answers: {}",
        d.log()
    );
    // The vhost's ownership reached the workers' snapshot (their IP-balancing accept hook).
    let counters = text(&carpioctl(&sock, &["show", "counters"]));
    let changes = counters
        .lines()
        .find(|l| l.starts_with("daemon_carp_ownership_changes"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(changes >= 1, "{counters}");
    // A second carp node on the segment (in the client namespace) with a better advskew: its
    // advertisements must reach the daemon's carp shell through the AF_XDP ingress (the XDP
    // program passes IP protocol 112 to the kernel), so the daemon's vhost turns BACKUP. Had
    // XDP stolen them, both nodes would stay MASTER.
    let peer = carpio::carp::shell::spawn(carpio::carp::shell::ShellConfig {
        name: "carp0".into(),
        carpdev: "c0".into(),
        netns: Some(lab.ns_name("client")),
        iface: carpio::carp::InterfaceConfig {
            nodes: vec![carpio::carp::NodeConfig {
                vhid: 7,
                advskew: 0,
            }],
            advbase: 0,
            passphrase: b"e2e".to_vec(),
            v4: vec![std::net::Ipv4Addr::new(198, 18, 1, 77)],
            preempt: true,
            ..Default::default()
        },
        prefix_len: vec![24],
        vip_mode: carpio::carp::shell::VipMode::Macvlan,
        group_demote: Vec::new(),
    })
    .expect("peer carp node");
    let mut row = String::new();
    for _ in 0..100 {
        let shown = text(&carpioctl(&sock, &["show", "carp"]));
        row = shown
            .lines()
            .find(|l| l.starts_with("carp0"))
            .unwrap_or_default()
            .to_string();
        if row.contains("BACKUP") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        row.contains("BACKUP"),
        "the peer's advertisements reach the daemon: {row}\n{}",
        text(&carpioctl(&sock, &["show", "counters"]))
    );
    let _ = peer.shutdown();
    let st = d.terminate();
    assert!(st.is_some_and(|s| s.success()), "{st:?}: {}", d.log());
    let links = lab.ip("lb", &["-o", "link", "show"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("carp0"),
        "macvlan removed at shutdown"
    );
}

/// One session through the relay on 198.18.1.1:7000: the backend's name, or `None`.
fn relay_session(lab: &Lab) -> Option<String> {
    lab.run_in("client", || {
        let a: SocketAddr = "198.18.1.1:7000".parse().ok()?;
        let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(b"hello\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out.trim().to_string())
    })
    .ok()
    .flatten()
}

/// A `relay` block in the daemon's configuration is served by the relay engine: TCP sessions to
/// the relay's listen address reach both backends through splice, and `carpioctl show relays`
/// lists the relay with its session count.
#[test]
fn relay_block_is_served_by_the_daemon() {
    let _g = common::serial();
    require_root_and_tools("e2e_daemon");
    let dir = TempDir::new("relay");
    let sock = dir.path("carpio.sock");
    let conf = dir.path("carpio.conf");
    std::fs::write(
        &conf,
        format!(
            "interval 1\n{}relay \"echorelay\" {{\n    listen on 198.18.1.1 port 7000\n    forward to <echo> port {PORT} check icmp\n}}\n",
            config("ingress afpacket", &sock)
        ),
    )
    .unwrap();
    let lab = topology("drelay", &dir);
    let mut d = start_daemon(&lab, &conf, &dir);
    wait_serving(&lab, &d, &sock);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let got = relay_session(&lab);
        seen.insert(got.unwrap_or_else(|| panic!("relay session failed; log:\n{}", d.log())));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["b1", "b2"],
        "roundrobin over both backends"
    );
    let o = carpioctl(&sock, &["show", "relays"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.lines().any(|l| l.contains("\trelay   \techorelay")),
        "{out}"
    );
    assert!(out.contains("total: 8 sessions"), "{out}");
    // b2 goes silent: once its check fails, the relay stops choosing it (the health engine's
    // transition reaches the relays as well as the workers).
    lab.ip("b2", &["link", "set", "e0", "down"]).unwrap();
    let down = common::wait_for(Duration::from_secs(20), || {
        let shown = text(&carpioctl(&sock, &["show", "hosts"]));
        shown
            .lines()
            .any(|l| l.contains("198.18.2.12") && l.trim_end().ends_with("down"))
            .then_some(())
    });
    assert!(down.is_some(), "b2 never marked down; log:\n{}", d.log());
    for i in 0..6 {
        let got = relay_session(&lab);
        assert_eq!(
            got.as_deref(),
            Some("b1"),
            "session {i} after b2 went down; log:\n{}",
            d.log()
        );
    }
    let st = d.terminate();
    assert!(st.is_some_and(|s| s.success()), "{st:?}: {}", d.log());
}
