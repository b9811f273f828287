//! Data-plane flows ↔ pfsync states, across two nodes whose snapshots number VIPs and hosts
//! differently; the sans-IO shell glue of two nodes wired back to back; and a flow replicated
//! from one node's worker to the other's, which then forwards it to the same backend.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use carpio::dataplane::flow::{
    self, Event, EventKind, FlowTable, FlowTableConfig, Key, NewFlow, Origin,
};
use carpio::dataplane::hash;
use carpio::dataplane::snapshot::{HostStates, Link, Snapshot, SnapshotCell};
use carpio::dataplane::state::{self, Pftm};
use carpio::dataplane::worker::{Command, Worker, WorkerConfig};
use carpio::pfsync::ReplicatorConfig;
use carpio::pfsync::convert::{self, Creators, Reject};
use carpio::pfsync::shell::{Counter, Glue, Handles};
use carpio::pfsync::state::{FlowState, Forward};
use carpio::phy::{Batch, Verdict};
use carpio::wire::classify::LinkType;
use carpio::wire::pfsync::{PF_ROUTETO, STATE_LEN, State};
use crossbeam::queue::ArrayQueue;
use pnet_packet::ip::IpNextHeaderProtocols;

const LINK: &str = "flow table size 1024\n";
const HOSTS_A: &str = "table <web> { 198.18.1.1 lladdr \"02:00:00:00:01:01\", \
     198.18.1.2 lladdr \"02:00:00:00:01:02\", 198.18.1.3 lladdr \"02:00:00:00:01:03\" }\n";
// Node B lists the hosts in another order and has an extra VIP and host first, so every index
// differs from node A's.
const HOSTS_B: &str = "table <x> { 198.18.1.9 lladdr \"02:00:00:00:01:09\" }\n\
     table <web> { 198.18.1.3 lladdr \"02:00:00:00:01:03\", \
     198.18.1.2 lladdr \"02:00:00:00:01:02\", 198.18.1.1 lladdr \"02:00:00:00:01:01\" }\n";
const DNS: &str = "redirect dns { listen on 198.18.0.10 udp port 53\n \
     forward to <web> mode roundrobin check icmp }\n";
const SMTP: &str = "redirect smtp { listen on 198.18.0.11 tcp port 25\n \
     forward to <web> port 2525 check icmp }\n";
const OTHER: &str = "redirect other { listen on 198.18.0.99 udp port 7\n \
     forward to <x> check icmp }\n";

fn conf_a() -> String {
    format!("{LINK}{HOSTS_A}{DNS}{SMTP}")
}
fn conf_b() -> String {
    format!("{LINK}{HOSTS_B}{OTHER}{DNS}{SMTP}")
}

fn snapshot(text: &str, st: &HostStates) -> Snapshot {
    let cfg = carpio::config::parse_str("t.conf", text, &[]).expect("config parses");
    Snapshot::build(&cfg, st, Link::default(), None).expect("snapshot builds")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(snap: &Snapshot, proto: u8, client: &str, cport: u16, vip: &str, vport: u16) -> Key {
    Key {
        proto,
        client: hash::addr16(ip(client)),
        client_port: cport,
        vip: snap.by_vip[&ip(vip)].index,
        vip_port: vport,
    }
}

fn table(events: Arc<ArrayQueue<Event>>) -> FlowTable {
    FlowTable::new(
        &FlowTableConfig {
            capacity: 256,
            ..Default::default()
        },
        events,
    )
    .unwrap()
}

/// A locally created flow on node A, as its table announces it.
fn local_flow(
    snap: &Snapshot,
    proto: u8,
    client: (&str, u16),
    vip: (&str, u16),
    backend: &str,
    bport: u16,
    tcp_flags: u8,
) -> flow::Flow {
    let q = Arc::new(ArrayQueue::new(8));
    let mut t = table(q.clone());
    let (si, svc) = snap.service_for(ip(vip.0), proto, vip.1).unwrap();
    let k = key(snap, proto, client.0, client.1, vip.0, vip.1);
    let new = NewFlow {
        service: si,
        backend: snap.by_host[&ip(backend)],
        backend_port: bport,
        tcp_flags,
        one_sided: svc.forward.one_sided(),
        session_timeout: Some(svc.session_timeout),
        origin: Origin::Local,
    };
    t.insert(100, &k, &new).unwrap();
    let ev = q.pop().unwrap();
    assert_eq!(ev.kind, EventKind::Insert);
    ev.flow
}

fn wire_round_trip(s: &FlowState, now: Duration, later: Duration) -> FlowState {
    let mut b = [0u8; STATE_LEN];
    s.to_wire(now).emit(&mut b).unwrap();
    FlowState::from_wire(later, &State::parse(&b).unwrap()).unwrap()
}

#[test]
fn nat_flow_round_trips_by_address_across_different_indices() {
    let (a, b) = (
        snapshot(&conf_a(), &HostStates::default()),
        snapshot(&conf_b(), &HostStates::default()),
    );
    let f = local_flow(
        &a,
        6,
        ("198.19.0.7", 40000),
        ("198.18.0.11", 25),
        "198.18.1.3",
        2525,
        state::flags::SYN,
    );
    let ca = Creators::new(0xa0a0_0001);
    let s = convert::to_state(&f, &a, &ca).unwrap();
    assert_eq!(s.id.creatorid, 0xa0a0_0001);
    assert_eq!(s.id.id, f.id().id);
    assert_eq!(s.client, (ip("198.19.0.7"), 40000));
    assert_eq!(s.vip, (ip("198.18.0.11"), 25));
    assert_eq!(s.backend, (ip("198.18.1.3"), 2525));
    assert_eq!(s.forward, Forward::Nat);
    assert_eq!(s.timeout, Pftm::TcpFirst as u8);
    assert_eq!(
        (s.src.state, s.dst.state),
        (state::tcps::SYN_SENT, state::tcps::CLOSED)
    );
    assert_eq!(s.expire, Duration::from_secs(100 + 120));

    // Node B's clock is elsewhere; the state crosses the wire as relative times.
    let r = wire_round_trip(&s, Duration::from_secs(100), Duration::from_secs(5000));
    assert!(r.same_flow(&s));
    let mut cb = Creators::new(0xb0b0_0002);
    let (k, new) = convert::to_flow(&r, &b, &mut cb).unwrap();
    // Indices differ between the nodes, addresses agree.
    assert_ne!(k.vip, f.key().vip);
    assert_ne!(new.backend, f.backend());
    assert_eq!(b.vips[usize::from(k.vip)], Some(ip("198.18.0.11")));
    assert_eq!(b.host(new.backend).unwrap().addr, ip("198.18.1.3"));
    assert_eq!(k.client, hash::addr16(ip("198.19.0.7")));
    assert_eq!((k.proto, k.client_port, k.vip_port), (6, 40000, 25));
    assert_eq!(new.backend_port, 2525);
    let (si, _) = b.service_for(ip("198.18.0.11"), 6, 25).unwrap();
    assert_eq!(new.service, si);
    assert!(!new.one_sided);
    // The peer's creator id got index 1 on B; id and protocol state are carried over.
    assert_eq!(cb.index_of(0xa0a0_0001), Some(1));
    match new.origin {
        Origin::Sync(id, track) => {
            assert_eq!(
                id,
                flow::FlowId {
                    creator: 1,
                    id: f.id().id
                }
            );
            assert_eq!(track, f.track());
        }
        Origin::Local => panic!("a synced flow must be Origin::Sync"),
    }
    // And back: B's flow table copy converts to the same replicated flow.
    let qb = Arc::new(ArrayQueue::new(8));
    let mut tb = table(qb.clone());
    let h = tb.insert(5000, &k, &new).unwrap();
    assert!(qb.is_empty(), "synced inserts are not announced");
    tb.touch(
        5001,
        h,
        state::Dir::Reply,
        state::flags::SYN | state::flags::ACK,
        None,
    );
    let ev = qb.pop().expect("a state change is announced");
    let back = convert::to_state(&ev.flow, &b, &cb).unwrap();
    assert_eq!(back.id, s.id, "updates keep the creator's identity");
    assert_eq!(
        (back.client, back.vip, back.backend),
        (s.client, s.vip, s.backend)
    );
}

#[test]
fn route_to_flow_uses_rt_addr() {
    let text = format!(
        "{LINK}{HOSTS_A}redirect ntp {{ listen on 198.18.0.12 udp port 123\n \
         route to <web> check icmp interface eth1 }}\n"
    );
    let a = snapshot(&text, &HostStates::default());
    let f = local_flow(
        &a,
        17,
        ("198.19.0.8", 123),
        ("198.18.0.12", 123),
        "198.18.1.3",
        123,
        0,
    );
    assert!(f.one_sided());
    let s = convert::to_state(&f, &a, &Creators::new(1)).unwrap();
    assert_eq!(s.forward, Forward::Route);
    let w = s.to_wire(Duration::from_secs(100));
    assert_eq!(w.rt, PF_ROUTETO);
    assert_eq!(&w.rt_addr[..4], &[198, 18, 1, 3]);
    let r = wire_round_trip(&s, Duration::from_secs(100), Duration::from_secs(100));
    let (k, new) = convert::to_flow(&r, &a, &mut Creators::new(2)).unwrap();
    assert_eq!(k, f.key());
    assert_eq!((new.backend, new.backend_port), (f.backend(), 123));
    assert!(new.one_sided);
}

#[test]
fn states_the_receiver_cannot_place_are_rejected_by_name() {
    let a = snapshot(&conf_a(), &HostStates::default());
    let f = local_flow(
        &a,
        17,
        ("198.19.0.9", 999),
        ("198.18.0.10", 53),
        "198.18.1.1",
        53,
        0,
    );
    let s = convert::to_state(&f, &a, &Creators::new(1)).unwrap();
    let mut c = Creators::new(2);
    // A node without the dns redirect does not know the VIP.
    let only_smtp = snapshot(&format!("{LINK}{HOSTS_A}{SMTP}"), &HostStates::default());
    assert_eq!(
        convert::to_flow(&s, &only_smtp, &mut c),
        Err(Reject::UnknownVip)
    );
    // Same VIP, no service on that port.
    let mut t = s;
    t.vip.1 = 54;
    assert_eq!(
        convert::to_flow(&t, &a, &mut c),
        Err(Reject::UnknownService)
    );
    // A backend the receiver does not have.
    let mut t = s;
    t.backend.0 = ip("198.18.1.77");
    assert_eq!(
        convert::to_flow(&t, &a, &mut c),
        Err(Reject::UnknownBackend)
    );
    let mut t = s;
    t.timeout = 14; // PFTM_FRAG: valid on the wire, not a flow class
    assert_eq!(convert::to_flow(&t, &a, &mut c), Err(Reject::BadTimeout));
    let mut t = s;
    t.src.state = 0x10;
    assert_eq!(convert::to_flow(&t, &a, &mut c), Err(Reject::BadPeerState));
    let mut t = s;
    t.client.0 = ip("2001:db8::1");
    assert_eq!(convert::to_flow(&t, &a, &mut c), Err(Reject::AfMismatch));
    // None of the rejects interned the creator.
    assert_eq!(c.len(), 1);
    // A flow whose creator index was never given out cannot be sent.
    let q = Arc::new(ArrayQueue::new(8));
    let mut tb = table(q.clone());
    let mut new = NewFlow {
        service: 0,
        backend: f.backend(),
        backend_port: 53,
        tcp_flags: 0,
        one_sided: false,
        session_timeout: None,
        origin: Origin::Sync(flow::FlowId { creator: 9, id: 1 }, f.track()),
    };
    let h = tb.insert(100, &f.key(), &new).unwrap();
    tb.touch(101, h, state::Dir::Reply, 0, None);
    let ev = q.pop().unwrap();
    assert_eq!(
        convert::to_state(&ev.flow, &a, &Creators::new(1)),
        Err(Reject::UnknownCreator)
    );
    // A flow whose VIP index is not in the snapshot.
    new.origin = Origin::Local;
    let mut k = f.key();
    k.vip = 500;
    k.client_port = 1000;
    tb.insert(100, &k, &new).unwrap();
    let ev = q.pop().unwrap();
    assert_eq!(
        convert::to_state(&ev.flow, &a, &Creators::new(1)),
        Err(Reject::UnknownVip)
    );
}

struct Node {
    glue: Glue,
    events: Arc<ArrayQueue<Event>>,
    commands: Vec<Arc<ArrayQueue<Command>>>,
    demote: crossbeam::channel::Receiver<i32>,
    cell: Arc<SnapshotCell>,
}

fn node(text: &str, st: &HostStates, creatorid: u32, workers: usize) -> Node {
    let events = Arc::new(ArrayQueue::new(1024));
    let commands: Vec<_> = (0..workers)
        .map(|_| Arc::new(ArrayQueue::new(1024)))
        .collect();
    let cell = Arc::new(SnapshotCell::from_pointee(snapshot(text, st)));
    let (tx, rx) = crossbeam::channel::unbounded();
    let mut rc = ReplicatorConfig::new(creatorid);
    rc.flush_delay = Duration::from_millis(10);
    let glue = Glue::new(
        rc,
        Handles {
            events: events.clone(),
            commands: commands.clone(),
            snapshot: cell.clone(),
            demote: Some(tx),
            tap: None,
        },
    );
    Node {
        glue,
        events,
        commands,
        demote: rx,
        cell,
    }
}

/// One step of both nodes at `now`: local events in, timers, packets across (both ways),
/// replicator events out.
fn step(a: &mut Node, b: &mut Node, now: Duration) {
    for n in [&mut *a, &mut *b] {
        n.glue.drain_local(now, 1000);
        n.glue.handle_timeout(now);
    }
    while let Some(p) = a.glue.poll_transmit() {
        b.glue.handle_packet(now, &p, ip("198.18.9.1"));
    }
    while let Some(p) = b.glue.poll_transmit() {
        a.glue.handle_packet(now, &p, ip("198.18.9.2"));
    }
    a.glue.apply_events();
    b.glue.apply_events();
}

fn run(a: &mut Node, b: &mut Node, from_ms: u64, to_ms: u64) {
    for ms in (from_ms..to_ms).step_by(5) {
        step(a, b, Duration::from_millis(ms));
    }
}

#[test]
fn glue_replicates_inserts_and_deletes_to_every_worker() {
    let mut a = node(&conf_a(), &HostStates::default(), 0xa, 1);
    let mut b = node(&conf_b(), &HostStates::default(), 0xb, 2);
    a.glue.replicator.handle_up(Duration::ZERO, true);
    b.glue.replicator.handle_up(Duration::ZERO, true);
    run(&mut a, &mut b, 0, 100);
    // Both asked for a bulk update and were demoted by 32 until it came in.
    assert_eq!(a.demote.try_iter().collect::<Vec<_>>(), vec![32, -32]);
    assert_eq!(b.demote.try_iter().collect::<Vec<_>>(), vec![32, -32]);
    for q in &b.commands {
        assert!(q.is_empty());
    }
    // Node A's worker (core 0) creates two flows.
    let snap_a = a.cell.load_full();
    let mut ta = table(a.events.clone());
    let mk = |client: &str, vip: &str, port: u16, proto: u8, backend: &str, bport: u16| {
        let (si, _) = snap_a.service_for(ip(vip), proto, port).unwrap();
        (
            key(&snap_a, proto, client, 1234, vip, port),
            NewFlow {
                service: si,
                backend: snap_a.by_host[&ip(backend)],
                backend_port: bport,
                tcp_flags: if proto == 6 { state::flags::SYN } else { 0 },
                one_sided: false,
                session_timeout: None,
                origin: Origin::Local,
            },
        )
    };
    let f1 = mk("198.19.0.1", "198.18.0.10", 53, 17, "198.18.1.3", 53);
    let f2 = mk("198.19.0.2", "198.18.0.11", 25, 6, "198.18.1.1", 2525);
    ta.insert(0, &f1.0, &f1.1).unwrap();
    ta.insert(0, &f2.0, &f2.1).unwrap();
    run(&mut a, &mut b, 100, 200);
    assert_eq!(a.glue.counter(Counter::LocalEvents), 2);
    let snap_b = b.cell.load_full();
    let mut seen = Vec::new();
    for q in &b.commands {
        let mut got = Vec::new();
        while let Some(c) = q.pop() {
            got.push(c);
        }
        assert_eq!(got.len(), 2, "every worker gets every synced flow: {got:?}");
        for c in &got {
            let Command::Insert { key, flow } = c else {
                panic!("expected inserts, got {c:?}");
            };
            let vip = snap_b.vips[usize::from(key.vip)].unwrap();
            let be = snap_b.host(flow.backend).unwrap().addr;
            seen.push((vip, key.vip_port, be, flow.backend_port));
            assert!(matches!(flow.origin, Origin::Sync(id, _) if id.creator == 1));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (ip("198.18.0.10"), 53, ip("198.18.1.3"), 53),
            (ip("198.18.0.10"), 53, ip("198.18.1.3"), 53),
            (ip("198.18.0.11"), 25, ip("198.18.1.1"), 2525),
            (ip("198.18.0.11"), 25, ip("198.18.1.1"), 2525),
        ]
    );
    // A deletes the first: both of B's workers are told to remove it, by B's key.
    assert!(ta.remove(&f1.0, true));
    run(&mut a, &mut b, 200, 300);
    let want = key(&snap_b, 17, "198.19.0.1", 1234, "198.18.0.10", 53);
    for q in &b.commands {
        assert_eq!(q.pop(), Some(Command::Remove { key: want }));
        assert_eq!(q.pop(), None);
    }
    // A synced flow deleted locally by B's worker 1 is removed from worker 0 too, and the delete
    // goes back to A's replicator mirror.
    let snap_b2 = b.cell.load_full();
    let k2 = key(&snap_b2, 6, "198.19.0.2", 1234, "198.18.0.11", 25);
    let mut tb1 = FlowTable::new(
        &FlowTableConfig {
            capacity: 64,
            core: 1,
            ..Default::default()
        },
        b.events.clone(),
    )
    .unwrap();
    let (_, new2) = convert::to_flow(
        b.glue.replicator.flows().next().unwrap(),
        &snap_b2,
        &mut Creators::new(0xb),
    )
    .unwrap();
    // Creators::new(0xb) then 0xa gives index 1, as in B's own table.
    tb1.insert(300, &k2, &new2).unwrap();
    assert!(tb1.remove(&k2, true));
    let before = a.glue.replicator.flows().count();
    assert_eq!(before, 1);
    run(&mut a, &mut b, 300, 400);
    assert_eq!(b.commands[0].pop(), Some(Command::Remove { key: k2 }));
    assert!(
        b.commands[1].is_empty(),
        "the deleting worker is not told again"
    );
    assert_eq!(
        a.glue.replicator.flows().count(),
        0,
        "A's mirror saw the delete"
    );
    assert_eq!(b.glue.counter(Counter::CommandQueueFull), 0);
}

fn frame(client: &str, cport: u16, vip: &str, port: u16) -> Vec<u8> {
    carpio::synth::build_frame(
        [2, 0, 0, 0, 0, 0x99],
        Link::default().mac,
        ip(client),
        ip(vip),
        IpNextHeaderProtocols::Udp,
        cport,
        port,
        None,
        b"query",
    )
}

/// The destination address of a forwarded IPv4 frame.
fn forwarded_to(b: &Batch) -> Option<IpAddr> {
    let p = b.iter().next()?;
    if p.verdict != Verdict::Tx {
        return None;
    }
    let d = p.data().get(14 + 16..14 + 20)?;
    Some(IpAddr::from([d[0], d[1], d[2], d[3]]))
}

fn worker(
    cell: Arc<SnapshotCell>,
    events: Arc<ArrayQueue<Event>>,
    commands: Option<Arc<ArrayQueue<Command>>>,
) -> Worker {
    let mut w = Worker::new(
        WorkerConfig {
            flow: FlowTableConfig {
                capacity: 1024,
                ..Default::default()
            },
            ..Default::default()
        },
        cell,
        events,
        None,
    )
    .unwrap();
    if let Some(q) = commands {
        w.set_commands(q);
    }
    w
}

#[test]
fn replicated_flow_is_forwarded_to_the_same_backend_by_the_peer() {
    // Node A's table changed: 198.18.1.1 is down there, so roundrobin picks among the others.
    let cfg_a = carpio::config::parse_str("a.conf", &conf_a(), &[]).unwrap();
    let st_a = HostStates {
        down: cfg_a
            .hosts()
            .filter(|h| format!("{:?}", h.addr).contains("198.18.1.1"))
            .map(|h| h.id)
            .collect(),
        ..Default::default()
    };
    assert!(!st_a.down.is_empty());
    let mut a = node(&conf_a(), &st_a, 0xa, 1);
    let mut b = node(&conf_b(), &HostStates::default(), 0xb, 1);
    a.glue.replicator.handle_up(Duration::ZERO, true);
    b.glue.replicator.handle_up(Duration::ZERO, true);
    run(&mut a, &mut b, 0, 50);
    let mut wa = worker(a.cell.clone(), a.events.clone(), None);
    let mut wb = worker(
        b.cell.clone(),
        b.events.clone(),
        Some(b.commands[0].clone()),
    );
    // A node C with B's config and no pfsync shows what B would pick on its own.
    let qc = Arc::new(ArrayQueue::new(1024));
    let cell_c = Arc::new(SnapshotCell::from_pointee(snapshot(
        &conf_b(),
        &HostStates::default(),
    )));
    let mut wc = worker(cell_c, qc, None);
    let mut batch = Batch::new(1);
    let mut differ = 0;
    for i in 0..8u16 {
        let f = frame("198.19.0.50", 20000 + i, "198.18.0.10", 53);
        batch.clear();
        batch.push(&f, 0, LinkType::Ethernet);
        wa.process(&mut batch, 1);
        let at_a = forwarded_to(&batch).expect("A forwards the first packet");
        assert_ne!(at_a, ip("198.18.1.1"), "A's down host is not picked");
        // Replicate A → B.
        run(
            &mut a,
            &mut b,
            50 + u64::from(i) * 50,
            100 + u64::from(i) * 50,
        );
        // B gets the flow's next packet directly (as after a failover).
        batch.clear();
        batch.push(&f, 0, LinkType::Ethernet);
        wb.process(&mut batch, 2);
        let at_b = forwarded_to(&batch).expect("B forwards the packet");
        assert_eq!(at_b, at_a, "flow {i}: B must use A's backend");
        batch.clear();
        batch.push(&f, 0, LinkType::Ethernet);
        wc.process(&mut batch, 2);
        if forwarded_to(&batch) != Some(at_a) {
            differ += 1;
        }
    }
    assert!(differ > 0, "without pfsync some flows would have moved");
    assert_eq!(wb.flows().len(), 8);
    assert_eq!(b.glue.counter(Counter::CommandQueueFull), 0);
}

#[test]
fn peer_clear_removes_every_flow_of_that_creator_from_every_worker() {
    let mut a = node(&conf_a(), &HostStates::default(), 0xa, 1);
    let mut b = node(&conf_b(), &HostStates::default(), 0xb, 2);
    a.glue.replicator.handle_up(Duration::ZERO, true);
    b.glue.replicator.handle_up(Duration::ZERO, true);
    run(&mut a, &mut b, 0, 100);
    let snap_a = a.cell.load_full();
    let mut ta = table(a.events.clone());
    let (si, _) = snap_a.service_for(ip("198.18.0.10"), 17, 53).unwrap();
    for port in [1000u16, 1001, 1002] {
        let k = key(&snap_a, 17, "198.19.0.3", port, "198.18.0.10", 53);
        let new = NewFlow {
            service: si,
            backend: snap_a.by_host[&ip("198.18.1.2")],
            backend_port: 53,
            tcp_flags: 0,
            one_sided: false,
            session_timeout: None,
            origin: Origin::Local,
        };
        ta.insert(0, &k, &new).unwrap();
    }
    run(&mut a, &mut b, 100, 200);
    for q in &b.commands {
        assert_eq!(std::iter::from_fn(|| q.pop()).count(), 3);
    }
    // `pfctl -F states` on A: a CLR for A's creator id.
    a.glue.replicator.handle_local(
        Duration::from_millis(200),
        carpio::pfsync::LocalEvent::Clear,
    );
    run(&mut a, &mut b, 200, 300);
    let snap_b = b.cell.load_full();
    for q in &b.commands {
        let mut ports: Vec<u16> = std::iter::from_fn(|| q.pop())
            .map(|c| match c {
                Command::Remove { key } => {
                    assert_eq!(snap_b.vips[usize::from(key.vip)], Some(ip("198.18.0.10")));
                    key.client_port
                }
                other => panic!("expected a remove, got {other:?}"),
            })
            .collect();
        ports.sort();
        assert_eq!(ports, vec![1000, 1001, 1002]);
    }
}

/// The daemon's `show states` mirror reads the shell's tap: every event the shell takes from
/// the data plane is copied there; a full tap is counted and replication goes on.
#[test]
fn glue_copies_every_event_to_the_tap_and_counts_a_full_one() {
    let a = node(&conf_a(), &HostStates::default(), 0xa, 1);
    let tap = Arc::new(ArrayQueue::new(2));
    let (tx, _rx) = crossbeam::channel::unbounded();
    let mut glue = Glue::new(
        ReplicatorConfig::new(0xa),
        Handles {
            events: a.events.clone(),
            commands: a.commands.clone(),
            snapshot: a.cell.clone(),
            demote: Some(tx),
            tap: Some(tap.clone()),
        },
    );
    let snap = a.cell.load_full();
    let mut t = table(a.events.clone());
    let (si, _) = snap.service_for(ip("198.18.0.10"), 17, 53).unwrap();
    for port in [1000, 1001, 1002] {
        let k = key(&snap, 17, "198.19.0.1", port, "198.18.0.10", 53);
        let f = NewFlow {
            service: si,
            backend: snap.by_host[&ip("198.18.1.3")],
            backend_port: 53,
            tcp_flags: 0,
            one_sided: false,
            session_timeout: None,
            origin: Origin::Local,
        };
        t.insert(0, &k, &f).unwrap();
    }
    assert_eq!(glue.drain_local(Duration::ZERO, 100), 3);
    assert_eq!(glue.counter(Counter::LocalEvents), 3);
    assert_eq!(glue.counter(Counter::TapFull), 1);
    let ports: Vec<u16> = std::iter::from_fn(|| tap.pop())
        .map(|e| e.flow.key().client_port)
        .collect();
    assert_eq!(ports, vec![1000, 1001]);
    // All three reached the replicator all the same.
    assert_eq!(glue.replicator.flows().count(), 3);
    // The unused node's glue stays quiet.
    assert_eq!(a.glue.counter(Counter::LocalEvents), 0);
}

/// `show states` lists what a node learned from its peers: the shell copies every flow a peer
/// sends (and every removal a peer causes) to the tap, on B's key and indices, with the peer's
/// creator index and the peer's id, marked as no worker's (`SYNCED_CORE`).
#[test]
fn glue_taps_flows_learned_from_peers_and_their_removal() {
    let mut a = node(&conf_a(), &HostStates::default(), 0xa, 1);
    let mut b = node(&conf_b(), &HostStates::default(), 0xb, 2);
    let tap = Arc::new(ArrayQueue::new(64));
    let (tx, _rx) = crossbeam::channel::unbounded();
    let mut rc = ReplicatorConfig::new(0xb);
    rc.flush_delay = Duration::from_millis(10);
    b.glue = Glue::new(
        rc,
        Handles {
            events: b.events.clone(),
            commands: b.commands.clone(),
            snapshot: b.cell.clone(),
            demote: Some(tx),
            tap: Some(tap.clone()),
        },
    );
    a.glue.replicator.handle_up(Duration::ZERO, true);
    b.glue.replicator.handle_up(Duration::ZERO, true);
    run(&mut a, &mut b, 0, 100);
    assert!(tap.is_empty(), "nothing learned yet");
    let snap_a = a.cell.load_full();
    let snap_b = b.cell.load_full();
    let mut ta = table(a.events.clone());
    let (si, _) = snap_a.service_for(ip("198.18.0.10"), 17, 53).unwrap();
    let mut ids = Vec::new();
    for port in [1000u16, 1001] {
        let k = key(&snap_a, 17, "198.19.0.7", port, "198.18.0.10", 53);
        let new = NewFlow {
            service: si,
            backend: snap_a.by_host[&ip("198.18.1.2")],
            backend_port: 53,
            tcp_flags: 0,
            one_sided: false,
            session_timeout: None,
            origin: Origin::Local,
        };
        let h = ta.insert(0, &k, &new).unwrap();
        ids.push(ta.get(h).unwrap().id().id);
    }
    run(&mut a, &mut b, 100, 200);
    let peer = b
        .glue
        .creators()
        .index_of(0xa)
        .expect("A's creator id interned");
    assert_ne!(peer, 0);
    let got: Vec<Event> = std::iter::from_fn(|| tap.pop()).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    for (ev, (port, id)) in got.iter().zip([1000u16, 1001].into_iter().zip(&ids)) {
        assert_eq!(ev.kind, EventKind::Insert);
        assert_eq!(ev.core, carpio::pfsync::shell::SYNCED_CORE);
        assert_eq!(ev.flow.id().creator, peer);
        assert_eq!(ev.flow.id().id, *id);
        assert_eq!(
            ev.flow.key(),
            key(&snap_b, 17, "198.19.0.7", port, "198.18.0.10", 53)
        );
        assert_eq!(
            snap_b.host(ev.flow.backend()).unwrap().addr,
            ip("198.18.1.2")
        );
        assert!(ev.flow.expire() > 0);
    }
    // A deletes the first flow: B's tap gets the delete of that identity.
    let k0 = key(&snap_a, 17, "198.19.0.7", 1000, "198.18.0.10", 53);
    assert!(ta.remove(&k0, true));
    run(&mut a, &mut b, 200, 300);
    let got: Vec<Event> = std::iter::from_fn(|| tap.pop()).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, EventKind::Delete);
    assert_eq!(
        (got[0].flow.id().creator, got[0].flow.id().id),
        (peer, ids[0])
    );
    // A clears its states: the other one goes too.
    a.glue.replicator.handle_local(
        Duration::from_millis(300),
        carpio::pfsync::LocalEvent::Clear,
    );
    run(&mut a, &mut b, 300, 400);
    let got: Vec<Event> = std::iter::from_fn(|| tap.pop()).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, EventKind::Delete);
    assert_eq!(got[0].flow.id().id, ids[1]);
    assert_eq!(b.glue.counter(Counter::TapFull), 0);
}
