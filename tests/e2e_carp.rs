//! carp on the wire (root): carpio's shell in network namespaces joined by a bridge namespace,
//! against tshark, ucarp and itself; IP and ARP balancing applied to real client traffic.
//!
//! Topology (lab::Lab, addresses in 198.18.0.0/15):
//! ```text
//!   n1 eth0 198.18.5.1 ─┐
//!   n2 eth0 198.18.5.2 ─┼── br0 (namespace br) ──── c eth0 198.18.5.100 (client)
//!   n3 eth0 198.18.5.3 ─┘            VIP 198.18.5.10
//! ```
//! Tests serialise on a file-local mutex; every wait is bounded; the lab removes namespaces and
//! processes on drop, also on failure. Tools (tshark, ucarp, ping) missing is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use carpio::carp::shell::{self, ShellConfig, ShellHandle, VipMode};
use carpio::carp::{Balancing, Inbound, InterfaceConfig, NodeConfig, State};
use carpio::lab::{Lab, VethConfig};
use carpio::sys::afpacket::{Ring, RingConfig, Sender};
use carpio::sys::cbpf;
use carpio::wire::{arp, ethernet};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 100);

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn need(tool: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "{tool} is not installed: run scripts/deps.sh");
}

/// Bridge namespace `br`, nodes n1..=n{nodes}, client `c`.
fn topology(tag: &str, nodes: usize) -> Lab {
    let mut lab = Lab::new(tag).unwrap();
    lab.ns("br").unwrap();
    lab.ns("c").unwrap();
    let mut ports = vec!["pc".to_owned()];
    lab.veth(&VethConfig::new("c", "eth0", "br", "pc")).unwrap();
    for i in 1..=nodes {
        let n = format!("n{i}");
        let p = format!("p{i}");
        lab.ns(&n).unwrap();
        lab.veth(&VethConfig::new(&n, "eth0", "br", &p)).unwrap();
        lab.addr(&n, "eth0", &format!("198.18.5.{i}/24")).unwrap();
        ports.push(p);
    }
    let refs: Vec<&str> = ports.iter().map(String::as_str).collect();
    lab.bridge("br", "br0", &refs).unwrap();
    // Flood unregistered multicast (balancing ip's 01:00:5e:00:01:VHID) without a querier.
    lab.ip(
        "br",
        &[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    )
    .unwrap();
    lab.addr("c", "eth0", &format!("{CLIENT}/24")).unwrap();
    lab
}

fn node_cfg(lab: &Lab, n: &str, nodes: &[(u8, u8)], advbase: u8, preempt: bool) -> ShellConfig {
    ShellConfig {
        name: "carp0".into(),
        carpdev: "eth0".into(),
        netns: Some(lab.ns_name(n)),
        iface: InterfaceConfig {
            nodes: nodes
                .iter()
                .map(|&(vhid, advskew)| NodeConfig { vhid, advskew })
                .collect(),
            advbase,
            passphrase: b"secret".to_vec(),
            v4: vec![VIP],
            preempt,
            ..Default::default()
        },
        prefix_len: vec![24],
        vip_mode: VipMode::Macvlan,
        group_demote: Vec::new(),
    }
}

/// Polls `f` every 10 ms until true or `limit`; returns the time it took.
fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

fn ping_vip(lab: &Lab) -> bool {
    lab.exec("c", &["ping", "-c", "1", "-W", "1", &VIP.to_string()])
        .is_ok()
}

fn has_vip(lab: &Lab, n: &str, dev: &str) -> bool {
    lab.ip(n, &["-o", "-4", "addr", "show", "dev", dev])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/")))
        .unwrap_or(false)
}

fn states(hs: &[&ShellHandle], vhid: u8) -> Vec<Option<State>> {
    hs.iter().map(|h| h.state(vhid)).collect()
}

fn counter(h: &ShellHandle, name: &str) -> u64 {
    h.status()
        .counters
        .iter()
        .find(|(n, _)| n == name)
        .map_or(u64::MAX, |(_, v)| *v)
}

/// tshark decodes carpio's advertisements captured on the bridge: every field as configured,
/// checksum good, no expert info, TTL 255 to 224.0.0.18.
#[test]
fn tshark_decodes_adverts_on_the_wire() {
    let _g = lock();
    need("tshark");
    let lab = topology("ctsh", 1);
    let mut cfg = node_cfg(&lab, "n1", &[(42, 7)], 1, false);
    cfg.iface.passphrase = b"tshark".to_vec();
    let h = shell::spawn(cfg).unwrap();
    wait_for(Duration::from_secs(6), "n1 master", || {
        h.state(42) == Some(State::Master)
    });
    let path = std::env::temp_dir().join(format!("carpio-e2e-carp-{}.pcap", std::process::id()));
    let p = path.to_string_lossy().into_owned();
    lab.exec(
        "br",
        &[
            "tshark",
            "-q",
            "-i",
            "br0",
            "-f",
            "ip proto 112",
            "-a",
            "duration:3",
            "-F",
            "pcap",
            "-w",
            &p,
        ],
    )
    .unwrap();
    let fields = lab
        .exec(
            "br",
            &[
                "tshark",
                "-r",
                &p,
                "-o",
                "ip.try_heuristic_first:TRUE",
                "-Y",
                "carp",
                "-T",
                "fields",
                "-e",
                "eth.src",
                "-e",
                "ip.src",
                "-e",
                "ip.dsfield",
                "-e",
                "ip.flags.df",
                "-e",
                "ip.ttl",
                "-e",
                "ip.dst",
                "-e",
                "carp.version",
                "-e",
                "carp.type",
                "-e",
                "carp.vhid",
                "-e",
                "carp.advskew",
                "-e",
                "carp.authlen",
                "-e",
                "carp.demotion",
                "-e",
                "carp.adver_int",
                "-e",
                "carp.checksum.status",
            ],
        )
        .unwrap();
    let verbose = lab
        .exec(
            "br",
            &["tshark", "-r", &p, "-V", "-d", "ip.proto==112,carp"],
        )
        .unwrap();
    let _ = std::fs::remove_file(&path);
    h.shutdown().unwrap();
    let text = String::from_utf8_lossy(&fields.stdout);
    let lines: Vec<&str> = text.lines().collect();
    // advbase 1, skew 7: an ad every 1.027 s, so 2..=4 in 3 s.
    assert!((2..=4).contains(&lines.len()), "{text}");
    for l in &lines {
        assert_eq!(
            *l, "00:00:5e:00:01:2a\t198.18.5.1\t0x10\t1\t255\t224.0.0.18\t2\t1\t42\t7\t7\t0\t1\t1",
            "{text}"
        );
    }
    let v = String::from_utf8_lossy(&verbose.stdout);
    assert!(!v.contains("Expert Info"), "{v}");
    assert!(!v.contains("Malformed"), "{v}");
}

/// Two and three carpio nodes: election, a crashed master (no bow-out) taken over within the
/// master-down window, preemption when it returns, and demotion moving mastership.
#[test]
fn three_nodes_elect_fail_over_preempt_and_demote() {
    let _g = lock();
    need("ping");
    let lab = topology("c3n", 3);
    // advbase 0: intervals of skew/256 s; master down = 3 intervals.
    let skews = [50u8, 100, 150];
    let spawn = |i: usize| {
        let n = format!("n{}", i + 1);
        shell::spawn(node_cfg(&lab, &n, &[(1, skews[i])], 0, true)).unwrap()
    };
    let mut h1 = Some(spawn(0));
    let h2 = spawn(1);
    let h3 = spawn(2);
    let m = Some(State::Master);
    let b = Some(State::Backup);
    wait_for(Duration::from_secs(5), "n1 master", || {
        states(&[h1.as_ref().unwrap(), &h2, &h3], 1) == [m, b, b]
    });
    assert!(has_vip(&lab, "n1", "carp0") && !has_vip(&lab, "n2", "carp0"));
    assert!(ping_vip(&lab), "VIP answers with n1 master");

    // Crash n1: n2 (skew 100) must take over after 3 × 100/256 s ≈ 1.17 s, well before n3.
    h1.take().unwrap().crash().unwrap();
    let t = wait_for(Duration::from_secs(5), "n2 takes over", || {
        states(&[&h2, &h3], 1) == [m, b]
    });
    assert!(t < Duration::from_millis(3000), "takeover took {t:?}");
    assert!(ping_vip(&lab), "VIP answers with n2 master");
    assert_eq!(states(&[&h3], 1), [b], "n3 (slower) stayed backup");

    // n1 comes back; preempt lets the faster node take over again.
    let h1 = spawn(0);
    wait_for(Duration::from_secs(5), "n1 preempts", || {
        states(&[&h1, &h2, &h3], 1) == [m, b, b]
    });
    assert!(ping_vip(&lab), "VIP answers after preemption");

    // Demote n1's carp group: n2 (less demoted) takes over; undo it and n1 is back.
    let ch = h1.demote("carp", 1).unwrap().unwrap();
    assert_eq!((ch.old, ch.new), (0, 1));
    wait_for(Duration::from_secs(5), "demotion moves mastership", || {
        states(&[&h1, &h2, &h3], 1) == [b, m, b]
    });
    // n3 also saw a more demoted master and took over for a moment before yielding to n2;
    // its gratuitous ARP may have pointed the bridge at it until n2's next ad (sourced from
    // the virtual MAC) corrects it, one interval later. Hence a retry rather than one ping.
    wait_for(Duration::from_secs(3), "VIP answers after demotion", || {
        ping_vip(&lab)
    });
    assert!(
        h1.demote("carp", -2).unwrap().is_err(),
        "below 0 is refused"
    );
    h1.demote("carp", -1).unwrap().unwrap();
    wait_for(Duration::from_secs(5), "undemoted n1 preempts", || {
        states(&[&h1, &h2, &h3], 1) == [m, b, b]
    });
    assert_eq!(h1.status().vhosts[0].demote, 0);
    // Nothing was rejected on a clean link.
    for h in [&h1, &h2, &h3] {
        for r in ["badttl", "badsum", "badauth", "badver", "badlen"] {
            assert_eq!(counter(h, r), 0, "{r}");
        }
        assert!(counter(h, "opackets") > 0 || counter(h, "ipackets") > 0);
    }
    // `show carp` rows.
    match h1.show() {
        carpio::ctl::proto::Response::Carp { vhosts, counters } => {
            assert_eq!(vhosts.len(), 1);
            assert_eq!(vhosts[0].state, "MASTER");
            assert_eq!(vhosts[0].advskew, 50);
            assert!(counters.iter().any(|(n, _)| n == "preempt"));
        }
        other => panic!("{other:?}"),
    }
    // A clean shutdown bows out: n2 takes over at once (advbase 255 is "slower").
    let t0 = Instant::now();
    h1.shutdown().unwrap();
    wait_for(Duration::from_secs(5), "n2 after bow-out", || {
        states(&[&h2], 1) == [m]
    });
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        lab.ip("n1", &["link", "show", "carp0"]).is_err(),
        "the macvlan is removed on shutdown"
    );
    assert!(lab.ip("n2", &["link", "show", "carp0"]).is_ok());
    drop((h2, h3));
}

fn ucarp_scripts(dir: &std::path::Path) -> (String, String) {
    let up = dir.join("up.sh");
    let down = dir.join("down.sh");
    std::fs::write(&up, "#!/bin/sh\nip addr add 198.18.5.10/24 dev \"$1\"\n").unwrap();
    std::fs::write(&down, "#!/bin/sh\nip addr del 198.18.5.10/24 dev \"$1\"\n").unwrap();
    for f in [&up, &down] {
        std::process::Command::new("chmod")
            .args(["+x"])
            .arg(f)
            .status()
            .unwrap();
    }
    (
        up.to_string_lossy().into_owned(),
        down.to_string_lossy().into_owned(),
    )
}

/// ucarp 1.5 (n1) and carpio (n2), one IPv4 address: ucarp is elected, carpio accepts its ads
/// (stays BACKUP, no badauth); ucarp killed → carpio takes over; ucarp back with a higher skew
/// stays BACKUP behind carpio; carpio crashed → ucarp takes over. The VIP answers in each phase.
#[test]
fn ucarp_and_carpio_fail_over_both_ways() {
    let _g = lock();
    need("ucarp");
    need("ping");
    let mut lab = topology("cuc", 2);
    let dir = std::env::temp_dir().join(format!("carpio-e2e-ucarp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (up, down) = ucarp_scripts(&dir);
    let ucarp = |lab: &mut Lab, skew: &str| {
        lab.spawn(
            "n1",
            &[
                "ucarp",
                "-i",
                "eth0",
                "-s",
                "198.18.5.1",
                "-v",
                "1",
                "-p",
                "secret",
                "-a",
                "198.18.5.10",
                "-b",
                "1",
                "-k",
                skew,
                "-u",
                &up,
                "-d",
                &down,
                "-z",
                "-P",
            ],
        )
        .unwrap()
    };
    let pid = ucarp(&mut lab, "0");
    let h2 = shell::spawn(node_cfg(&lab, "n2", &[(1, 100)], 1, false)).unwrap();
    wait_for(Duration::from_secs(8), "ucarp master", || {
        has_vip(&lab, "n1", "eth0")
    });
    // carpio (skew 100) waits 3.4 s: past that it must still be BACKUP, i.e. it accepted
    // ucarp's ads (HMAC, checksum, TTL) as those of a faster master.
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(h2.state(1), Some(State::Backup), "{:?}", h2.status());
    assert_eq!(counter(&h2, "badauth"), 0);
    assert!(counter(&h2, "ipackets") >= 3);
    assert!(ping_vip(&lab), "VIP answers with ucarp master");

    // Kill ucarp (SIGKILL: its down script does not run, so drop the address as a dead box).
    assert!(lab.kill(pid));
    lab.ip("n1", &["addr", "del", "198.18.5.10/24", "dev", "eth0"])
        .unwrap();
    wait_for(Duration::from_secs(6), "carpio takes over", || {
        h2.state(1) == Some(State::Master)
    });
    assert!(ping_vip(&lab), "VIP answers with carpio master");

    // ucarp back, slower: it must see carpio's ads and stay backup (no VIP) past 3 × 1 s.
    let pid = ucarp(&mut lab, "200");
    std::thread::sleep(Duration::from_millis(5000));
    assert!(!has_vip(&lab, "n1", "eth0"), "ucarp accepted carpio's ads");
    assert_eq!(h2.state(1), Some(State::Master));

    // carpio dies: ucarp takes over (about 1 s granularity, peers.md).
    h2.crash().unwrap();
    wait_for(Duration::from_secs(8), "ucarp takes over", || {
        has_vip(&lab, "n1", "eth0")
    });
    wait_for(Duration::from_secs(3), "VIP answers with ucarp", || {
        ping_vip(&lab)
    });
    lab.kill(pid);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Counts UDP datagrams to the VIP seen on `ns`'s eth0 by source, split by the shell's
/// `Ownership::accept` decision, until `stop`.
fn count_accepts(
    lab: &Lab,
    ns: &str,
    h: &ShellHandle,
    stop: &AtomicBool,
) -> BTreeMap<Ipv4Addr, (u32, u32)> {
    let own = h.ownership();
    let filter = cbpf::compile(&cbpf::FilterConfig {
        services: vec![cbpf::Service {
            addr: IpAddr::V4(VIP),
            proto: 17,
            ports: None,
        }],
        ..Default::default()
    })
    .unwrap();
    lab.run_in(ns, || {
        let mut ring = Ring::new("eth0", &filter, &RingConfig::default()).unwrap();
        let mut seen: BTreeMap<Ipv4Addr, (u32, u32)> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
            let _ = ring.wait(Duration::from_millis(20));
            let o = own.load();
            ring.recv_with(256, |f, _| {
                let ip = &f[ethernet::HEADER_LEN..];
                let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
                let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
                let e = seen.entry(src).or_default();
                if o.accept(&Inbound::Unicast {
                    src: src.into(),
                    dst: dst.into(),
                }) {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
                true
            });
        }
        seen
    })
    .unwrap()
}

/// `balancing ip`: two nodes, each MASTER for one vhid; 32 client addresses send UDP to the
/// VIP through the multicast virtual MAC (flooded to both); every datagram is accepted by
/// exactly one node and both nodes get a share.
#[test]
fn balancing_ip_splits_client_traffic() {
    let _g = lock();
    let lab = topology("cbip", 2);
    let mk = |n: &str, nodes: &[(u8, u8)]| {
        let mut c = node_cfg(&lab, n, nodes, 0, true);
        c.iface.balancing = Balancing::Ip;
        c.vip_mode = VipMode::None;
        shell::spawn(c).unwrap()
    };
    let h1 = mk("n1", &[(1, 20), (2, 120)]);
    let h2 = mk("n2", &[(1, 120), (2, 20)]);
    let m = Some(State::Master);
    let b = Some(State::Backup);
    wait_for(Duration::from_secs(5), "one vhid each", || {
        states(&[&h1, &h2], 1) == [m, b] && states(&[&h2, &h1], 2) == [m, b]
    });
    let o1 = **h1.ownership().load();
    assert_eq!(o1.lladdr, [1, 0, 0x5e, 0, 1, 1], "multicast leader MAC");
    assert_eq!((o1.lsmask, h2.ownership().load().lsmask), (0b01, 0b10));
    lab.neigh("c", "eth0", VIP, o1.lladdr).unwrap();
    let sources: Vec<Ipv4Addr> = (0..32u8)
        .map(|i| Ipv4Addr::new(198, 18, 5, 160 + i))
        .collect();
    for s in &sources {
        lab.addr("c", "eth0", &format!("{s}/24")).unwrap();
    }
    let stop = AtomicBool::new(false);
    let (c1, c2) = std::thread::scope(|sc| {
        let a = sc.spawn(|| count_accepts(&lab, "n1", &h1, &stop));
        let bb = sc.spawn(|| count_accepts(&lab, "n2", &h2, &stop));
        std::thread::sleep(Duration::from_millis(300));
        lab.run_in("c", || {
            for s in &sources {
                let u = UdpSocket::bind(SocketAddrV4::new(*s, 0)).unwrap();
                for _ in 0..3 {
                    u.send_to(b"carpio", SocketAddrV4::new(VIP, 9)).unwrap();
                }
            }
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Release);
        (a.join().unwrap(), bb.join().unwrap())
    });
    let mut n1 = 0;
    let mut n2 = 0;
    for s in &sources {
        let a = c1.get(s).copied().unwrap_or_default();
        let bb = c2.get(s).copied().unwrap_or_default();
        assert_eq!(a.0 + a.1, 3, "n1 saw every datagram from {s}: {a:?}");
        assert_eq!(bb.0 + bb.1, 3, "n2 saw every datagram from {s}: {bb:?}");
        assert_eq!(
            a.0 + bb.0,
            3,
            "{s}: accepted by exactly one node ({a:?} {bb:?})"
        );
        assert!(a.0 == 0 || bb.0 == 0, "{s} split across nodes");
        n1 += a.0;
        n2 += bb.0;
    }
    // fold = src ^ dst, % 2: the parity of the last octet splits 32 sources 16/16.
    assert_eq!((n1, n2), (48, 48));
}

/// `balancing arp`: two nodes answer ARP requests for the VIP for disjoint requester sets,
/// each with the virtual MAC of the vhost it is MASTER for.
#[test]
fn balancing_arp_answers_disjoint_requesters() {
    let _g = lock();
    let lab = topology("cbarp", 2);
    let mk = |n: &str, nodes: &[(u8, u8)]| {
        let mut c = node_cfg(&lab, n, nodes, 0, true);
        c.iface.balancing = Balancing::Arp;
        c.vip_mode = VipMode::None;
        shell::spawn(c).unwrap()
    };
    let h1 = mk("n1", &[(1, 20), (2, 120)]);
    let h2 = mk("n2", &[(1, 120), (2, 20)]);
    let m = Some(State::Master);
    let b = Some(State::Backup);
    wait_for(Duration::from_secs(5), "one vhid each", || {
        states(&[&h1, &h2], 1) == [m, b] && states(&[&h2, &h1], 2) == [m, b]
    });
    let asker = Ipv4Addr::new(198, 18, 5, 200);
    let macs: Vec<[u8; 6]> = (0..24u8).map(|i| [2, 0, 0, 0, 0x10, i]).collect();
    let filter = cbpf::compile(&cbpf::FilterConfig {
        vips: vec![IpAddr::V4(asker)],
        ..Default::default()
    })
    .unwrap();
    let replies: Vec<arp::Repr> = lab
        .run_in("c", || {
            let mut ring = Ring::new("eth0", &filter, &RingConfig::default()).unwrap();
            let tx = Sender::new("eth0").unwrap();
            for mac in &macs {
                let mut f = [0u8; 60];
                ethernet::Repr {
                    dst: [0xff; 6],
                    src: *mac,
                    tags: [None; ethernet::MAX_TAGS],
                    ethertype: ethernet::ETHERTYPE_ARP,
                }
                .emit(&mut f)
                .unwrap();
                arp::Repr {
                    op: arp::OP_REQUEST,
                    sender_mac: *mac,
                    sender_ip: asker,
                    target_mac: [0; 6],
                    target_ip: VIP,
                }
                .emit(&mut f[ethernet::HEADER_LEN..])
                .unwrap();
                assert_eq!(tx.send([&f[..]]).unwrap(), 1);
            }
            let mut out = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let _ = ring.wait(Duration::from_millis(20));
                ring.recv_with(256, |f, _| {
                    if let Ok(a) = arp::Repr::parse(&f[ethernet::HEADER_LEN..])
                        && a.op == arp::OP_REPLY
                    {
                        out.push(a);
                    }
                    true
                });
            }
            out
        })
        .unwrap();
    let o1 = **h1.ownership().load();
    let o2 = **h2.ownership().load();
    let mut per_requester: BTreeMap<[u8; 6], Vec<[u8; 6]>> = BTreeMap::new();
    for r in &replies {
        assert_eq!(r.sender_ip, VIP);
        per_requester
            .entry(r.target_mac)
            .or_default()
            .push(r.sender_mac);
    }
    let mut used = BTreeSet::new();
    for mac in &macs {
        let got = per_requester.get(mac).cloned().unwrap_or_default();
        assert_eq!(got.len(), 1, "exactly one reply for {mac:?}: {got:?}");
        let want: Vec<[u8; 6]> = [o1.arp_reply(*mac), o2.arp_reply(*mac)]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(want, got, "the owner answered with its vhost's MAC");
        used.insert(got[0]);
    }
    assert_eq!(
        used,
        BTreeSet::from([[0, 0, 0x5e, 0, 1, 1], [0, 0, 0x5e, 0, 1, 2]]),
        "both nodes answered someone"
    );
    assert!(counter(&h1, "drop_arp_not_ours") > 0);
}

/// IPv6 only (VIP 2001:db8::10): ads to ff02::12 with hop limit 255 (checked by tshark), an
/// election, a crashed master taken over, the VIP answering ping6 in each phase (the new
/// master's unsolicited NA moves the client's neighbour entry).
#[test]
fn ipv6_election_takeover_and_na() {
    let _g = lock();
    need("tshark");
    need("ping");
    let lab = topology("cv6", 2);
    let vip6 = "2001:db8::10";
    for (n, a) in [
        ("c", "2001:db8::100/64"),
        ("n1", "2001:db8::1/64"),
        ("n2", "2001:db8::2/64"),
    ] {
        lab.ip(n, &["addr", "add", a, "dev", "eth0", "nodad"])
            .unwrap();
    }
    let mk = |n: &str, skew: u8| {
        let mut c = node_cfg(&lab, n, &[(6, skew)], 0, false);
        c.iface.v4.clear();
        c.iface.v6 = vec![vip6.parse().unwrap()];
        c.prefix_len = vec![64];
        shell::spawn(c).unwrap()
    };
    let h1 = mk("n1", 30);
    let h2 = mk("n2", 90);
    let m = Some(State::Master);
    let b = Some(State::Backup);
    wait_for(Duration::from_secs(5), "n1 master over IPv6", || {
        states(&[&h1, &h2], 6) == [m, b]
    });
    let ping6 = || {
        lab.exec("c", &["ping", "-6", "-c", "1", "-W", "1", vip6])
            .is_ok()
    };
    wait_for(Duration::from_secs(3), "VIP answers ping6 (n1)", ping6);
    let path = std::env::temp_dir().join(format!("carpio-e2e-carp6-{}.pcap", std::process::id()));
    let p = path.to_string_lossy().into_owned();
    lab.exec(
        "br",
        &[
            "tshark",
            "-q",
            "-i",
            "br0",
            "-f",
            "ip6 proto 112",
            "-a",
            "duration:1",
            "-F",
            "pcap",
            "-w",
            &p,
        ],
    )
    .unwrap();
    let fields = lab
        .exec(
            "br",
            &[
                "tshark",
                "-r",
                &p,
                "-o",
                "ip.try_heuristic_first:TRUE",
                "-d",
                "ip.proto==112,carp",
                "-T",
                "fields",
                "-e",
                "ipv6.hlim",
                "-e",
                "ipv6.dst",
                "-e",
                "carp.vhid",
                "-e",
                "carp.advskew",
                "-e",
                "carp.checksum.status",
            ],
        )
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&fields.stdout);
    // advbase 0, skew 30: an ad every 117 ms, so several in 1 s, all from the master.
    assert!(text.lines().count() >= 3, "{text}");
    for l in text.lines() {
        assert_eq!(l, "255\tff02::12\t6\t30\t1", "{text}");
    }
    assert_eq!(counter(&h2, "badttl"), 0);
    assert!(counter(&h2, "ipackets6") >= 3);
    h1.crash().unwrap();
    wait_for(Duration::from_secs(5), "n2 takes over over IPv6", || {
        states(&[&h2], 6) == [m]
    });
    wait_for(Duration::from_secs(3), "VIP answers ping6 (n2)", ping6);
    assert!(counter(&h2, "opackets6") > 0);
}

/// `carp` blocks of a carpio.conf run through `run_from_config` (the daemon's entry), each
/// started inside its node's namespace: the less skewed node is elected, the VIP answers, and
/// the configured group demotion (`group lb demote 2`) is what the node advertises.
#[test]
fn config_blocks_run_through_run_from_config() {
    let _g = lock();
    need("ping");
    let lab = topology("ccfg", 2);
    let conf = |skew: u8, demote: u8| {
        let text = format!(
            "group lb demote {demote}\n\
             carp carp0 {{ carpdev eth0, vhid 3, advskew {skew}, pass \"conf\", group lb,\n\
               address {VIP}/24 }}\n"
        );
        carpio::config::parse_str("e2e.conf", &text, &[]).unwrap()
    };
    // n1 is faster but demoted by its group: n2 must win.
    let c1 = conf(0, 2);
    let c2 = conf(100, 0);
    let mut h1 = lab
        .run_in("n1", || shell::run_from_config(&c1))
        .unwrap()
        .unwrap();
    let mut h2 = lab
        .run_in("n2", || shell::run_from_config(&c2))
        .unwrap()
        .unwrap();
    assert_eq!((h1.len(), h2.len()), (1, 1));
    let (h1, h2) = (h1.remove(0), h2.remove(0));
    wait_for(
        Duration::from_secs(8),
        "n2 master, demoted n1 backup",
        || states(&[&h1, &h2], 3) == [Some(State::Backup), Some(State::Master)],
    );
    assert_eq!(h1.status().vhosts[0].demote, 2);
    assert_eq!(h1.status().vhosts[0].interface, "carp0");
    wait_for(Duration::from_secs(3), "VIP answers", || ping_vip(&lab));
    assert!(has_vip(&lab, "n2", "carp0") && !has_vip(&lab, "n1", "carp0"));
}

/// The parent link goes away under the master (its switch port is set down): the master goes
/// to INIT and drops the VIP, its groups are demoted by one, the backup takes over; when the
/// link returns the node comes back as BACKUP and, with preempt, takes over again once the
/// demotion is gone.
#[test]
fn parent_link_down_demotes_and_recovers() {
    let _g = lock();
    need("ping");
    let lab = topology("clnk", 2);
    let h1 = shell::spawn(node_cfg(&lab, "n1", &[(4, 30)], 0, true)).unwrap();
    let h2 = shell::spawn(node_cfg(&lab, "n2", &[(4, 90)], 0, true)).unwrap();
    let (m, b, i) = (Some(State::Master), Some(State::Backup), Some(State::Init));
    wait_for(Duration::from_secs(5), "n1 master", || {
        states(&[&h1, &h2], 4) == [m, b]
    });
    lab.ip("br", &["link", "set", "p1", "down"]).unwrap();
    wait_for(Duration::from_secs(5), "n1 INIT, n2 master", || {
        states(&[&h1, &h2], 4) == [i, m]
    });
    assert!(!has_vip(&lab, "n1", "carp0"), "INIT drops the VIP");
    assert_eq!(h1.status().vhosts[0].demote, 1, "carpdev demotion");
    assert_eq!(counter(&h1, "link_down"), 1);
    wait_for(Duration::from_secs(3), "VIP answers (n2)", || {
        ping_vip(&lab)
    });
    lab.ip("br", &["link", "set", "p1", "up"]).unwrap();
    wait_for(Duration::from_secs(5), "n1 back and preempting", || {
        states(&[&h1, &h2], 4) == [m, b]
    });
    assert_eq!(h1.status().vhosts[0].demote, 0);
    wait_for(Duration::from_secs(3), "VIP answers (n1)", || {
        ping_vip(&lab)
    });
}
