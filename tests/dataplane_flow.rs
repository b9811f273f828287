//! Flow table: insert, lookup, return lookup, TCP/UDP state and timeouts, expiry by sweep and
//! by lookup, the full-table policy, pfsync events, and a seeded simulation against a model.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use carpio::dataplane::flow::{
    Counter, Event, EventKind, FlowId, FlowTable, FlowTableConfig, InsertError, Key, NewFlow,
    Origin, ReturnKey,
};
use carpio::dataplane::hash::addr16;
use carpio::dataplane::state::{Dir, Pftm, Track, flags::*, tcps};
use crossbeam::queue::ArrayQueue;

const TCP: u8 = 6;
const UDP: u8 = 17;

fn table(capacity: u32, queue: usize) -> (FlowTable, Arc<ArrayQueue<Event>>) {
    let q = Arc::new(ArrayQueue::new(queue));
    let c = FlowTableConfig {
        capacity,
        core: 3,
        first_id: 100,
        ..Default::default()
    };
    (FlowTable::new(&c, q.clone()).unwrap(), q)
}

fn key(proto: u8, client: u32, port: u16) -> Key {
    Key {
        proto,
        client: addr16(IpAddr::V4(Ipv4Addr::from(0xc612_0000 | client))),
        client_port: port,
        vip: 1,
        vip_port: 53,
    }
}

fn new(backend: u16, tcp_flags: u8) -> NewFlow {
    NewFlow {
        service: 7,
        backend,
        backend_port: 5353,
        tcp_flags,
        one_sided: false,
        session_timeout: None,
        origin: Origin::Local,
    }
}

fn ret(k: &Key, backend: u16) -> ReturnKey {
    ReturnKey {
        proto: k.proto,
        backend,
        backend_port: 5353,
        client: k.client,
        client_port: k.client_port,
    }
}

fn drain(q: &ArrayQueue<Event>) -> Vec<EventKind> {
    std::iter::from_fn(|| q.pop()).map(|e| e.kind).collect()
}

#[test]
fn insert_lookup_and_return_lookup() {
    let (mut t, q) = table(64, 64);
    let k = key(UDP, 1, 40000);
    let h = t.insert(10, &k, &new(2, 0)).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(11, &k), Some(h));
    assert_eq!(t.lookup_return(11, &ret(&k, 2)), Some(h));
    assert_eq!(t.lookup_return(11, &ret(&k, 3)), None, "other backend");
    assert_eq!(t.lookup(11, &key(UDP, 1, 40001)), None, "other port");
    assert_eq!(t.lookup(11, &key(TCP, 1, 40000)), None, "other protocol");
    let f = t.get(h).unwrap();
    assert_eq!((f.service(), f.backend(), f.backend_port()), (7, 2, 5353));
    assert_eq!(f.client_addr(), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
    assert_eq!(
        f.id(),
        FlowId {
            creator: 0,
            id: (3u64 << 56) | 100
        }
    );
    assert_eq!(
        (f.class(), f.last_seen(), f.expire()),
        (Pftm::UdpFirst, 10, 70)
    );
    assert_eq!(t.insert(12, &k, &new(2, 0)), Err(InsertError::Exists(h)));
    // Same client endpoint to the same backend through another VIP: return path ambiguous.
    let mut k2 = k;
    k2.vip = 9;
    assert_eq!(
        t.insert(12, &k2, &new(2, 0)),
        Err(InsertError::ReturnCollision)
    );
    assert_eq!(drain(&q), vec![EventKind::Insert]);
    assert!(t.remove(&k, true));
    assert!(!t.remove(&k, true));
    assert_eq!(t.lookup(13, &k), None);
    assert_eq!(t.lookup_return(13, &ret(&k, 2)), None);
    assert_eq!(drain(&q), vec![EventKind::Delete]);
    assert!(t.is_empty());
}

#[test]
fn ipv6_clients_and_ids_increase() {
    let (mut t, _q) = table(16, 16);
    let k = Key {
        proto: TCP,
        client: addr16(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
        client_port: 1,
        vip: 2,
        vip_port: 25,
    };
    let h = t.insert(0, &k, &new(1, SYN)).unwrap();
    let h2 = t.insert(0, &key(TCP, 1, 1), &new(1, SYN)).unwrap();
    assert!(t.get(h).unwrap().client_addr().is_ipv6());
    assert_eq!(t.get(h2).unwrap().id().id, t.get(h).unwrap().id().id + 1);
}

#[test]
fn tcp_lifecycle_timeouts_and_session_override() {
    let (mut t, q) = table(16, 64);
    let k = key(TCP, 5, 1234);
    let mut nf = new(1, SYN);
    nf.session_timeout = Some(600);
    let h = t.insert(100, &k, &nf).unwrap();
    let f = *t.get(h).unwrap();
    assert_eq!((f.class(), f.expire()), (Pftm::TcpFirst, 220));
    let step = |t: &mut FlowTable, now, dir, fl| {
        t.touch(now, h, dir, fl, Some(600));
        let f = t.get(h).unwrap();
        (f.class(), f.expire() - now)
    };
    assert_eq!(
        step(&mut t, 101, Dir::Reply, SYN | ACK),
        (Pftm::TcpOpening, 30)
    );
    assert_eq!(
        step(&mut t, 102, Dir::Orig, ACK),
        (Pftm::TcpEstablished, 600)
    );
    assert_eq!(
        step(&mut t, 103, Dir::Orig, FIN | ACK),
        (Pftm::TcpClosing, 900)
    );
    assert_eq!(
        step(&mut t, 104, Dir::Reply, FIN | ACK),
        (Pftm::TcpFinWait, 45)
    );
    assert_eq!(step(&mut t, 105, Dir::Orig, ACK), (Pftm::TcpClosed, 90));
    let tr = t.get(h).unwrap().track();
    assert_eq!((tr.src, tr.dst), (tcps::FIN_WAIT_2, tcps::FIN_WAIT_2));
    // Every touch above changed the state, so each was announced.
    let ev = drain(&q);
    assert_eq!(ev.len(), 6);
    assert_eq!(ev[0], EventKind::Insert);
    assert!(ev[1..].iter().all(|e| *e == EventKind::Update));
    // Without the override, established is pf's 86400 s.
    let k2 = key(TCP, 6, 1);
    let h2 = t.insert(0, &k2, &new(1, ACK)).unwrap();
    assert_eq!(t.get(h2).unwrap().expire(), 86400);
}

#[test]
fn one_sided_flow_becomes_established() {
    let (mut t, _q) = table(16, 64);
    let k = key(TCP, 5, 1234);
    let mut nf = new(1, SYN);
    nf.one_sided = true;
    let h = t.insert(0, &k, &nf).unwrap();
    t.touch(1, h, Dir::Orig, ACK, None);
    assert_eq!(t.get(h).unwrap().class(), Pftm::TcpEstablished);
    assert!(t.get(h).unwrap().one_sided());
}

#[test]
fn updates_only_on_change_or_refresh_window() {
    let (mut t, q) = table(16, 64);
    let k = key(UDP, 1, 1);
    let h = t.insert(0, &k, &new(1, 0)).unwrap();
    t.touch(1, h, Dir::Orig, 0, None); // first → single: change
    t.touch(2, h, Dir::Orig, 0, None); // single, same window (30/4 = 7 s)
    t.touch(3, h, Dir::Orig, 0, None);
    assert_eq!(drain(&q), vec![EventKind::Insert, EventKind::Update]);
    t.touch(8, h, Dir::Orig, 0, None); // crosses into window [7, 14): refresh
    t.touch(9, h, Dir::Orig, 0, None);
    assert_eq!(drain(&q), vec![EventKind::Update]);
    t.touch(10, h, Dir::Reply, 0, None); // reply: client MULTIPLE, still udp.single
    t.touch(11, h, Dir::Orig, 0, None); // both MULTIPLE: udp.multiple
    assert_eq!(t.get(h).unwrap().class(), Pftm::UdpMultiple);
    assert_eq!(drain(&q), vec![EventKind::Update, EventKind::Update]);
}

#[test]
fn expiry_by_sweep_and_by_lookup() {
    let (mut t, q) = table(8, 64);
    let a = key(UDP, 1, 1);
    let b = key(UDP, 2, 2);
    let ha = t.insert(0, &a, &new(1, 0)).unwrap(); // expires at 60
    t.insert(30, &b, &new(1, 0)).unwrap(); // expires at 90
    drain(&q);
    assert_eq!(t.sweep(59, 8), 0);
    assert_eq!(t.lookup(59, &a), Some(ha));
    // Budget 0 visits nothing; a full pass removes a only.
    assert_eq!(t.sweep(60, 0), 0);
    assert_eq!(t.sweep(60, 8), 1);
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(60, &a), None);
    // b is found expired by a lookup before any sweep reaches it.
    assert_eq!(t.lookup(90, &b), None);
    assert_eq!(t.lookup_return(90, &ret(&b, 1)), None);
    assert!(t.is_empty());
    assert_eq!(drain(&q), vec![EventKind::Delete, EventKind::Delete]);
    assert_eq!(t.counters().get(Counter::Expired.index()), 2);
}

#[test]
fn sweep_is_incremental() {
    let (mut t, _q) = table(100, 256);
    for i in 0..100 {
        t.insert(0, &key(UDP, i, 1), &new(1, 0)).unwrap();
    }
    let mut total = 0;
    for _ in 0..10 {
        let n = t.sweep(1000, 10);
        assert!(n <= 10);
        total += n;
    }
    assert_eq!(total, 100);
    assert!(t.is_empty());
}

#[test]
fn full_table_evicts_non_established_first_then_reports_full() {
    let (mut t, q) = table(4, 64);
    // Three established TCP flows (picked up mid-stream) and one half-open.
    for i in 0..3 {
        t.insert(0, &key(TCP, i, 1), &new(1, ACK)).unwrap();
    }
    let half = key(TCP, 9, 1);
    t.insert(0, &half, &new(1, SYN)).unwrap();
    drain(&q);
    // The fifth flow evicts the half-open one, never an established one.
    let h = t.insert(1, &key(TCP, 10, 1), &new(1, ACK)).unwrap();
    assert!(t.get(h).is_some());
    assert_eq!(t.lookup(1, &half), None);
    for i in 0..3 {
        assert!(t.lookup(1, &key(TCP, i, 1)).is_some());
    }
    assert_eq!(drain(&q), vec![EventKind::Delete, EventKind::Insert]);
    assert_eq!(t.counters().get(Counter::EvictEarly.index()), 1);
    // Now all four are established: full.
    assert_eq!(
        t.insert(2, &key(TCP, 11, 1), &new(1, SYN)),
        Err(InsertError::Full)
    );
    assert_eq!(t.counters().get(Counter::Full.index()), 1);
    assert_eq!(t.len(), 4);
    // Once one has expired, an insert reuses it even before a sweep.
    let later = 86400 + 10;
    assert!(t.insert(later, &key(TCP, 12, 1), &new(1, SYN)).is_ok());
}

#[test]
fn sync_inserts_are_not_announced_and_keep_identity() {
    let (mut t, q) = table(8, 8);
    let id = FlowId {
        creator: 5,
        id: 0xdead_beef_0000_0001,
    };
    let track = Track {
        src: tcps::ESTABLISHED,
        dst: tcps::ESTABLISHED,
        class: Pftm::TcpEstablished,
    };
    let mut nf = new(1, 0);
    nf.origin = Origin::Sync(id, track);
    let k = key(TCP, 1, 1);
    let h = t.insert(0, &k, &nf).unwrap();
    assert_eq!(t.get(h).unwrap().id(), id);
    assert_eq!(t.get(h).unwrap().track(), track);
    assert!(q.is_empty());
    assert!(t.remove(&k, false));
    assert!(q.is_empty(), "removal asked by pfsync is not echoed");
    assert_eq!(t.counters().get(Counter::InsertSync.index()), 1);
}

#[test]
fn full_event_queue_is_counted_never_blocks() {
    let (mut t, q) = table(16, 2);
    for i in 0..5 {
        t.insert(0, &key(UDP, i, 1), &new(1, 0)).unwrap();
    }
    assert_eq!(q.len(), 2);
    assert_eq!(t.counters().get(Counter::SyncEventQueueFull.index()), 3);
    assert_eq!(
        Counter::SyncEventQueueFull.name(),
        "drop_sync_event_queue_full"
    );
}

#[test]
fn seeded_simulation_matches_a_model() {
    // Random inserts, lookups, removals, touches and sweeps on a small, crowded table (many
    // probe collisions and backward shifts), checked against a HashMap model.
    let (mut t, q) = table(128, 1 << 16);
    let mut model: HashMap<Key, (u16, u32)> = HashMap::new(); // key -> (backend, expire)
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut now = 0u32;
    for step in 0..50_000 {
        let r = rnd();
        let k = key(UDP, (r >> 8) as u32 % 400, (r >> 40) as u16 % 4);
        let backend = (k.client[15] % 7) as u16;
        match r % 8 {
            0..=2 => {
                let res = t.insert(now, &k, &new(backend, 0));
                model.retain(|_, (_, e)| *e > now);
                match res {
                    Ok(_) => {
                        assert!(!model.contains_key(&k), "step {step}: duplicate insert");
                        model.insert(k, (backend, now + 60));
                    }
                    Err(InsertError::Exists(_)) => assert!(model.contains_key(&k)),
                    Err(InsertError::Full) => assert_eq!(t.len(), 128),
                    Err(InsertError::ReturnCollision) => panic!("no collisions possible here"),
                }
            }
            3 | 4 => {
                let got = t.lookup(now, &k).map(|h| t.get(h).unwrap().backend());
                let want = model.get(&k).filter(|(_, e)| *e > now).map(|(b, _)| *b);
                assert_eq!(got, want, "step {step}");
                let got_r = t
                    .lookup_return(now, &ret(&k, backend))
                    .map(|h| t.get(h).unwrap().key());
                assert_eq!(got_r, want.map(|_| k), "step {step} return");
            }
            5 => {
                let existed = t.remove(&k, true);
                let live = model.remove(&k).is_some_and(|(_, e)| e > now);
                // An expired-but-unswept flow may still be removed explicitly.
                assert!(existed || !live, "step {step}");
            }
            6 => {
                if let Some(h) = t.lookup(now, &k) {
                    t.touch(now, h, Dir::Orig, 0, None);
                    let e = t.get(h).unwrap().expire();
                    model.insert(k, (backend, e));
                }
            }
            _ => {
                now += (r >> 20) as u32 % 3;
                t.sweep(now, 16);
            }
        }
        // Drain events as pfsync would; an early eviction drops the flow from the model.
        while let Some(ev) = q.pop() {
            if ev.kind == EventKind::Delete {
                let k = ev.flow.key();
                if model.get(&k).is_some_and(|(_, e)| *e > now) {
                    model.remove(&k);
                }
            }
        }
        let live = model.values().filter(|(_, e)| *e > now).count();
        assert!(t.len() >= live, "step {step}: table lost flows");
    }
    assert!(
        t.counters().get(Counter::EvictEarly.index()) > 100,
        "the full path ran"
    );
    // Everything expires eventually and the index is empty again.
    now += 1000;
    t.sweep(now, 128);
    assert!(t.is_empty());
    for c in 0..400 {
        for p in 0..4 {
            assert_eq!(t.lookup(now, &key(UDP, c, p)), None);
        }
    }
}
