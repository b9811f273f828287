//! Two pfsync shells exchanging real IP protocol 240 packets across a bridge (root only; a
//! note and no run otherwise). A missing tool (ip, tcpdump, tshark) fails the test.
//!
//! ```text
//!   cio-<pid>-<tag>-a                cio-<pid>-<tag>-sw               cio-<pid>-<tag>-b
//!   a0 198.18.0.1/24  <── veth ──> swa ─┐ br0 ┌─ swb <── veth ──>  b0 198.18.0.2/24
//!      198.18.0.3/24 (a stranger)       └─────┘
//! ```
//!
//! Node A's shell drains a flow event queue that a flow table in the test fills; node B's shell
//! turns what it hears into commands on its two worker queues. Every wait is bounded in time;
//! the Lab removes namespaces and the capture process (by PID) on drop, also on failure. The
//! tests in this file serialise on one lock.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carpio::dataplane::flow::{Event, FlowTable, FlowTableConfig, Key, NewFlow, Origin};
use carpio::dataplane::hash;
use carpio::dataplane::snapshot::{HostStates, Link, Snapshot, SnapshotCell};
use carpio::dataplane::state;
use carpio::dataplane::worker::Command;
use carpio::lab::{Lab, VethConfig};
use carpio::pfsync::shell::{self, Counter, Handles, ShellConfig, ShellHandle};
use carpio::pfsync::state::{FlowId, FlowState, Forward, Peer};
use carpio::pfsync::{LocalEvent, Replicator, ReplicatorConfig, Stat};
use carpio::wire::pfsync::Packet;
use crossbeam::queue::ArrayQueue;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

static SERIAL: Mutex<()> = Mutex::new(());

const A_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const STRANGER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const WAIT: Duration = Duration::from_secs(10);

const CONF_A: &str = "flow table size 1024\n\
    table <web> { 198.18.1.1 lladdr \"02:00:00:00:01:01\", 198.18.1.2 lladdr \"02:00:00:00:01:02\" }\n\
    redirect dns { listen on 198.18.0.10 udp port 53\n forward to <web> check icmp }\n\
    redirect smtp { listen on 198.18.0.11 tcp port 25\n forward to <web> port 2525 check icmp }\n";
// B numbers VIPs and hosts differently.
const CONF_B: &str = "flow table size 1024\n\
    table <web> { 198.18.1.2 lladdr \"02:00:00:00:01:02\", 198.18.1.1 lladdr \"02:00:00:00:01:01\" }\n\
    redirect smtp { listen on 198.18.0.11 tcp port 25\n forward to <web> port 2525 check icmp }\n\
    redirect dns { listen on 198.18.0.10 udp port 53\n forward to <web> check icmp }\n";

fn need_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is required by this test (scripts/deps.sh installs it)"
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn snapshot(text: &str) -> Arc<SnapshotCell> {
    let cfg = carpio::config::parse_str("t.conf", text, &[]).expect("config");
    let s = Snapshot::build(&cfg, &HostStates::default(), Link::default(), None).expect("snapshot");
    Arc::new(SnapshotCell::from_pointee(s))
}

fn lab(tag: &str) -> Lab {
    let mut lab = Lab::new(tag).expect("lab");
    for n in ["a", "sw", "b"] {
        lab.ns(n).expect("namespace");
    }
    lab.veth(&VethConfig::new("a", "a0", "sw", "swa")).unwrap();
    lab.veth(&VethConfig::new("b", "b0", "sw", "swb")).unwrap();
    lab.bridge("sw", "br0", &["swa", "swb"]).unwrap();
    lab.addr("a", "a0", "198.18.0.1/24").unwrap();
    lab.addr("a", "a0", "198.18.0.3/24").unwrap();
    lab.addr("b", "b0", "198.18.0.2/24").unwrap();
    lab
}

struct Node {
    shell: ShellHandle,
    demote: crossbeam::channel::Receiver<i32>,
    events: Arc<ArrayQueue<Event>>,
    commands: Vec<Arc<ArrayQueue<Command>>>,
    cell: Arc<SnapshotCell>,
}

fn start(
    lab: &Lab,
    ns: &str,
    conf: &str,
    creatorid: u32,
    peer: Option<Ipv4Addr>,
    epoch: Instant,
    auth_key: Option<&[u8]>,
) -> Node {
    let events = Arc::new(ArrayQueue::new(1024));
    let commands: Vec<_> = (0..2).map(|_| Arc::new(ArrayQueue::new(1024))).collect();
    let cell = snapshot(conf);
    let (demote_tx, demote) = crossbeam::channel::unbounded();
    let mut replicator = ReplicatorConfig::new(creatorid);
    replicator.flush_delay = Duration::from_millis(20);
    let cfg = ShellConfig {
        replicator,
        // The lab names each node's link `<ns>0`.
        syncdev: Some(format!("{ns}0")),
        syncpeer: peer,
        netns: Some(lab.ns_name(ns)),
        epoch,
        poll_interval: Duration::from_millis(5),
        auth_key: auth_key.map(<[u8]>::to_vec),
    };
    let shell = shell::spawn(
        cfg,
        Handles {
            events: events.clone(),
            commands: commands.clone(),
            snapshot: cell.clone(),
            demote: Some(demote_tx),
            tap: None,
        },
    )
    .expect("spawn pfsync shell");
    Node {
        shell,
        demote,
        events,
        commands,
        cell,
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pops every command of one queue.
fn drain(q: &ArrayQueue<Command>) -> Vec<Command> {
    std::iter::from_fn(|| q.pop()).collect()
}

fn new_flow(
    cell: &SnapshotCell,
    client: &str,
    vip: &str,
    proto: u8,
    port: u16,
    backend: &str,
    bport: u16,
) -> (Key, NewFlow) {
    let snap = cell.load_full();
    let (si, _) = snap.service_for(ip(vip), proto, port).unwrap();
    (
        Key {
            proto,
            client: hash::addr16(ip(client)),
            client_port: 40000,
            vip: snap.by_vip[&ip(vip)].index,
            vip_port: port,
        },
        NewFlow {
            service: si,
            backend: snap.by_host[&ip(backend)],
            backend_port: bport,
            tcp_flags: if proto == 6 { state::flags::SYN } else { 0 },
            one_sided: false,
            session_timeout: None,
            origin: Origin::Local,
        },
    )
}

/// (ip.proto, ip.ttl, ip.src, ip.dst, payload hex) per captured packet, by tshark.
fn tshark_fields(pcap: &Path) -> Vec<(String, String, String, String, String)> {
    let out = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args(["-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "ip.proto",
            "-e",
            "ip.ttl",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "data.data",
        ])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f.len() == 5).then(|| {
                (
                    f[0].into(),
                    f[1].into(),
                    f[2].into(),
                    f[3].into(),
                    f[4].into(),
                )
            })
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[test]
fn multicast_sync_carries_inserts_and_deletes_with_ttl_255() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_root("e2e_pfsync");
    for t in ["ip", "tcpdump", "tshark"] {
        need_tool(t);
    }
    let mut lab = lab("psync-mc");
    let dir = std::env::temp_dir().join(format!("carpio-e2e-pfsync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    /// Removes the capture directory also when an assertion fails.
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    let pcap = dir.join("b0.pcap");
    let pcap_s = pcap.to_string_lossy().into_owned();
    let cap = lab
        .spawn(
            "b",
            &[
                "tcpdump",
                "-U",
                "--immediate-mode",
                "-n",
                "-Z",
                "root",
                "-i",
                "b0",
                "-c",
                "200",
                "-w",
                &pcap_s,
                "ip proto 240",
            ],
        )
        .unwrap();
    wait_for("tcpdump to start", || {
        pcap.metadata().is_ok_and(|m| m.len() > 0)
    });
    let epoch = Instant::now();
    let a = start(&lab, "a", CONF_A, 0xa0a0_0001, None, epoch, None);
    let b = start(&lab, "b", CONF_B, 0xb0b0_0002, None, epoch, None);
    // Let both bulk updates finish first, so that no bulk UPD repeats the inserts below.
    wait_for("both bulk updates", || {
        a.shell.stat(Stat::BulkDone) >= 1 && b.shell.stat(Stat::BulkDone) >= 1
    });

    let mut table = FlowTable::new(
        &FlowTableConfig {
            capacity: 64,
            ..Default::default()
        },
        a.events.clone(),
    )
    .unwrap();
    let f1 = new_flow(
        &a.cell,
        "198.19.0.1",
        "198.18.0.10",
        17,
        53,
        "198.18.1.2",
        53,
    );
    let f2 = new_flow(
        &a.cell,
        "198.19.0.2",
        "198.18.0.11",
        6,
        25,
        "198.18.1.1",
        2525,
    );
    let now = epoch.elapsed().as_secs() as u32;
    table.insert(now, &f1.0, &f1.1).unwrap();
    table.insert(now, &f2.0, &f2.1).unwrap();

    let snap_b = b.cell.load_full();
    let mut got: Vec<Vec<Command>> = vec![Vec::new(), Vec::new()];
    wait_for("B's workers to get both flows", || {
        for (g, q) in got.iter_mut().zip(&b.commands) {
            g.extend(drain(q));
        }
        got.iter().all(|g| g.len() >= 2)
    });
    for g in &got {
        assert_eq!(g.len(), 2, "{g:?}");
        let mut seen: Vec<_> = g
            .iter()
            .map(|c| match c {
                Command::Insert { key, flow } => (
                    snap_b.vips[usize::from(key.vip)].unwrap(),
                    key.vip_port,
                    key.client_port,
                    snap_b.host(flow.backend).unwrap().addr,
                    flow.backend_port,
                ),
                other => panic!("expected an insert, got {other:?}"),
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (ip("198.18.0.10"), 53, 40000, ip("198.18.1.2"), 53),
                (ip("198.18.0.11"), 25, 40000, ip("198.18.1.1"), 2525),
            ]
        );
    }
    // Delete one at A: both of B's workers are told to remove it, by B's own key.
    assert!(table.remove(&f1.0, true));
    let want = Key {
        vip: snap_b.by_vip[&ip("198.18.0.10")].index,
        ..f1.0
    };
    let mut removed: Vec<Vec<Command>> = vec![Vec::new(), Vec::new()];
    wait_for("B's workers to remove the flow", || {
        for (g, q) in removed.iter_mut().zip(&b.commands) {
            g.extend(drain(q));
        }
        removed.iter().all(|g| !g.is_empty())
    });
    for g in &removed {
        assert_eq!(g, &vec![Command::Remove { key: want }]);
    }
    assert_eq!(b.shell.counter(Counter::BadTtl), 0);
    assert!(b.shell.counter(Counter::Accepted) >= 2);
    assert!(a.shell.counter(Counter::Sent) >= 2);
    assert_eq!(a.shell.counter(Counter::SendError), 0);

    // The wire: tshark sees IP protocol 240, TTL 255, to the group, from A and B; the payloads
    // parse as pfsync, and one carries an INS of the first flow's id.
    // The capture has the pfsync header (24 B pcap header + at least three packets).
    wait_for("the capture", || {
        pcap.metadata().is_ok_and(|m| m.len() > 24 + 3 * 100)
    });
    std::thread::sleep(Duration::from_millis(100));
    lab.kill(cap);
    let pkts = tshark_fields(&pcap);
    assert!(pkts.len() >= 3, "captured {pkts:?}");
    let mut ids = Vec::new();
    for (proto, ttl, src, dst, data) in &pkts {
        assert_eq!(proto, "240");
        assert_eq!(ttl, "255");
        assert_eq!(dst, "224.0.0.240");
        assert!(src == "198.18.0.1" || src == "198.18.0.2", "source {src}");
        let bytes = unhex(data);
        let p = Packet::parse(&bytes).expect("our own parse of the captured payload");
        if src == "198.18.0.1" {
            for m in p.messages() {
                if let Ok(carpio::wire::pfsync::Message::Ins(s)) = m {
                    ids.push((s.creatorid, s.key[0].port));
                }
            }
        }
    }
    assert!(
        ids.contains(&(0xa0a0_0001, [40000, 53])),
        "INS seen: {ids:?}"
    );
    drop(a);
    drop(b);
}

/// A pfsync INS packet of one flow, from a sans-IO replicator of creator `creatorid`.
fn ins_packet(creatorid: u32, client_port: u16) -> Vec<u8> {
    let mut r = Replicator::new(ReplicatorConfig::new(creatorid));
    let now = Duration::from_secs(10);
    let flow = FlowState {
        id: FlowId { creatorid, id: 77 },
        proto: 17,
        client: (ip("198.19.0.9"), client_port),
        vip: (ip("198.18.0.10"), 53),
        backend: (ip("198.18.1.1"), 53),
        forward: Forward::Nat,
        src: Peer {
            state: 1,
            ..Default::default()
        },
        dst: Peer::default(),
        timeout: 6,
        created: now,
        expire: now + Duration::from_secs(60),
        packets: [0, 0],
        bytes: [0, 0],
        state_flags: 0,
    };
    r.handle_local(now, LocalEvent::Insert { flow, defer: false });
    r.handle_timeout(now + Duration::from_secs(2));
    r.poll_transmit().expect("an INS packet")
}

/// Sends `payload` as IP protocol 240 from `src` to `dst` with `ttl`, inside namespace `ns`.
fn send_raw(lab: &Lab, ns: &str, src: Ipv4Addr, dst: Ipv4Addr, ttl: u32, payload: Vec<u8>) {
    lab.run_in(ns, move || -> std::io::Result<()> {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(240)))?;
        s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
        s.set_ttl_v4(ttl)?;
        s.send_to(&payload, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
        Ok(())
    })
    .expect("enter namespace")
    .expect("send raw pfsync packet");
}

#[test]
fn syncpeer_rejects_bad_ttl_and_strangers() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_root("e2e_pfsync");
    need_tool("ip");
    let lab = lab("psync-peer");
    let epoch = Instant::now();
    let b = start(&lab, "b", CONF_B, 0xb0b0_0002, Some(A_IP), epoch, None);
    // TTL 64 from the peer: badttl, nothing inserted.
    send_raw(&lab, "a", A_IP, B_IP, 64, ins_packet(0xc, 1001));
    wait_for("badttl", || b.shell.counter(Counter::BadTtl) == 1);
    // TTL 255 from another address than the syncpeer: drop_not_peer.
    send_raw(&lab, "a", STRANGER_IP, B_IP, 255, ins_packet(0xc, 1002));
    wait_for("drop_not_peer", || b.shell.counter(Counter::NotPeer) == 1);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        b.commands.iter().all(|q| q.is_empty()),
        "rejected packets insert nothing"
    );
    assert_eq!(b.shell.counter(Counter::Accepted), 0);
    // The same packet from the peer with TTL 255 is taken.
    send_raw(&lab, "a", A_IP, B_IP, 255, ins_packet(0xc, 1003));
    let mut got = Vec::new();
    wait_for("the peer's insert", || {
        got.extend(drain(&b.commands[0]));
        !got.is_empty()
    });
    match got[0] {
        Command::Insert { key, flow } => {
            assert_eq!(key.client_port, 1003);
            assert_eq!(flow.backend_port, 53);
        }
        other => panic!("expected an insert, got {other:?}"),
    }
    assert_eq!(b.shell.counter(Counter::Accepted), 1);
    assert_eq!(b.shell.counter(Counter::BadTtl), 1);
    assert_eq!(b.shell.counter(Counter::NotPeer), 1);
    assert_eq!(b.shell.counter(Counter::BadIpHeader), 0);
    drop(b);
}

#[test]
fn authenticated_sync_drops_unsigned_packets() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_root("e2e_pfsync");
    need_tool("ip");
    let lab = lab("psync-auth");
    let epoch = Instant::now();
    let key: &[u8] = b"carpio pfsync test key";
    let a = start(&lab, "a", CONF_A, 0xa0a0_0001, Some(B_IP), epoch, Some(key));
    let b = start(&lab, "b", CONF_B, 0xb0b0_0002, Some(A_IP), epoch, Some(key));
    // An unsigned packet from the peer address is dropped.
    send_raw(&lab, "a", A_IP, B_IP, 255, ins_packet(0xc, 2001));
    wait_for("drop_bad_auth", || b.shell.counter(Counter::BadAuth) == 1);
    // One signed with another key too.
    let mut forged = ins_packet(0xc, 2002);
    shell::auth_seal(b"wrong key", &mut forged);
    send_raw(&lab, "a", A_IP, B_IP, 255, forged);
    wait_for("drop_bad_auth", || b.shell.counter(Counter::BadAuth) == 2);
    assert!(b.commands.iter().all(|q| q.is_empty()));
    // The real shells, sharing the key, replicate a flow.
    let mut table = FlowTable::new(
        &FlowTableConfig {
            capacity: 64,
            ..Default::default()
        },
        a.events.clone(),
    )
    .unwrap();
    let f = new_flow(
        &a.cell,
        "198.19.0.5",
        "198.18.0.11",
        6,
        25,
        "198.18.1.2",
        2525,
    );
    table
        .insert(epoch.elapsed().as_secs() as u32, &f.0, &f.1)
        .unwrap();
    let mut got = Vec::new();
    wait_for("the signed insert", || {
        got.extend(drain(&b.commands[1]));
        !got.is_empty()
    });
    let snap_b = b.cell.load_full();
    match got[0] {
        Command::Insert { key, flow } => {
            assert_eq!(snap_b.vips[usize::from(key.vip)], Some(ip("198.18.0.11")));
            assert_eq!(
                snap_b.host(flow.backend).map(|h| h.addr),
                Some(ip("198.18.1.2"))
            );
        }
        other => panic!("expected an insert, got {other:?}"),
    }
    assert_eq!(b.shell.counter(Counter::BadAuth), 2);
    assert_eq!(a.shell.counter(Counter::BadAuth), 0);
    drop(a);
    drop(b);
}

#[test]
fn sync_link_down_demotes_carp_and_up_gives_it_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_root("e2e_pfsync");
    need_tool("ip");
    let lab = lab("psync-link");
    let b = start(&lab, "b", CONF_B, 0xb0b0_0002, None, Instant::now(), None);
    let mut seen = Vec::new();
    let mut collect = |want: &[i32]| {
        wait_for("demotion deltas", || {
            seen.extend(b.demote.try_iter());
            seen.ends_with(want)
        });
    };
    // Alone on the link, B's bulk request goes unanswered: +32 stays.
    collect(&[32]);
    lab.ip("b", &["link", "set", "b0", "down"]).unwrap();
    collect(&[32, 1]);
    lab.ip("b", &["link", "set", "b0", "up"]).unwrap();
    collect(&[32, 1, -1]);
    assert_eq!(b.shell.counter(Counter::LinkDown), 1);
    assert_eq!(b.shell.counter(Counter::LinkUp), 1);
    assert_eq!(seen, vec![32, 1, -1]);
    drop(b);
}
