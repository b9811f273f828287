//! Seeded simulations of pfsync replicators on a lossy, reordering, duplicating link with a
//! virtual clock (DESIGN.md test layer 3). Each node keeps its own "data plane" table driven
//! only by the replicator's events and its own local changes; the tests assert that the tables
//! converge to the same set of flows, equal field by field (times and counters aside).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use carpio::pfsync::state::{IPPROTO_TCP, IPPROTO_UDP, pftm, tcps, timeout_for, timeout_secs, udp};
use carpio::pfsync::{
    BulkReq, Event, FlowId, FlowState, Forward, LocalEvent, Peer, Replicator, ReplicatorConfig,
    Stat,
};

/// splitmix64: a tiny seeded generator so the simulation needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

struct Node {
    r: Replicator,
    table: BTreeMap<FlowId, FlowState>,
    own_live: BTreeSet<FlowId>,
    next_id: u64,
    demote: i32,
    up: bool,
    released: u64,
}

struct Link {
    loss: u64,
    dup: u64,
    jitter_ms: u64,
}

struct Sim {
    now: Duration,
    rng: Rng,
    nodes: Vec<Node>,
    link: Link,
    /// (deliver_at, seq) → (to, bytes)
    wire: BTreeMap<(Duration, u64), (usize, Vec<u8>)>,
    seq: u64,
    delivered: u64,
}

fn cfg(creatorid: u32) -> ReplicatorConfig {
    let mut c = ReplicatorConfig::new(creatorid);
    c.state_limit = 1000; // bulk timeout 16 s
    c.purge_interval = Duration::from_secs(10); // PFTM_INTERVAL
    c
}

fn addr(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, a, b))
}

impl Sim {
    fn new(seed: u64, n: usize, link: Link) -> Self {
        let nodes = (0..n)
            .map(|i| Node {
                r: Replicator::new(cfg(100 + i as u32)),
                table: BTreeMap::new(),
                own_live: BTreeSet::new(),
                next_id: 1,
                demote: 0,
                up: false,
                released: 0,
            })
            .collect();
        Self {
            now: Duration::ZERO,
            rng: Rng(seed),
            nodes,
            link,
            wire: BTreeMap::new(),
            seq: 0,
            delivered: 0,
        }
    }

    fn up(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].up = true;
        self.nodes[i].r.handle_up(now, true);
        self.drain(i);
    }

    /// Moves node i's output onto the wire and applies its events to its table.
    fn drain(&mut self, i: usize) {
        while let Some(pkt) = self.nodes[i].r.poll_transmit() {
            for to in 0..self.nodes.len() {
                if to == i || !self.nodes[to].up {
                    continue;
                }
                let copies = if self.rng.chance(self.link.dup) { 2 } else { 1 };
                for _ in 0..copies {
                    if self.rng.chance(self.link.loss) {
                        continue;
                    }
                    let at = self.now
                        + Duration::from_millis(1 + self.rng.below(self.link.jitter_ms + 1));
                    self.seq += 1;
                    self.wire.insert((at, self.seq), (to, pkt.clone()));
                }
            }
        }
        let node = &mut self.nodes[i];
        while let Some(ev) = node.r.poll_event() {
            match ev {
                Event::Insert(f) | Event::Update(f) => {
                    node.table.insert(f.id, f);
                }
                Event::Delete(id) => {
                    node.table.remove(&id);
                }
                Event::Clear { creatorid } => node.table.retain(|k, _| k.creatorid != creatorid),
                Event::Release(_) => node.released += 1,
                Event::Demote(d) => node.demote += d,
            }
        }
    }

    fn new_flow(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let id = FlowId {
            creatorid: n.r.config().creatorid,
            id: n.next_id,
        };
        n.next_id += 1;
        let tcp = self.rng.chance(500);
        let (proto, src, dst) = if tcp {
            (IPPROTO_TCP, tcps::SYN_SENT, tcps::CLOSED)
        } else {
            (IPPROTO_UDP, udp::SINGLE, udp::NO_TRAFFIC)
        };
        let timeout = timeout_for(proto, src, dst);
        let f = FlowState {
            id,
            proto,
            client: (
                addr(0, (id.id % 250) as u8 + 1),
                1024 + (self.rng.below(60000) as u16),
            ),
            vip: (addr(1, 1), if tcp { 25 } else { 53 }),
            backend: (
                addr(2, 1 + self.rng.below(4) as u8),
                if tcp { 25 } else { 53 },
            ),
            forward: if self.rng.chance(500) {
                Forward::Nat
            } else {
                Forward::Route
            },
            src: Peer {
                state: src,
                seqlo: self.rng.next() as u32,
                ..Default::default()
            },
            dst: Peer {
                state: dst,
                ..Default::default()
            },
            timeout,
            created: now,
            expire: now + Duration::from_secs(u64::from(timeout_secs(timeout))),
            packets: [1, 0],
            bytes: [60, 0],
            state_flags: 0,
        };
        let n = &mut self.nodes[i];
        n.table.insert(id, f);
        n.own_live.insert(id);
        let defer = self.rng.chance(200);
        n.r.handle_local(now, LocalEvent::Insert { flow: f, defer });
        self.drain(i);
    }

    /// Advances a flow in node i's table (its own or, active/active, a peer's).
    fn touch(&mut self, i: usize, pick: u64) {
        let now = self.now;
        let n = &mut self.nodes[i];
        if n.table.is_empty() {
            return;
        }
        let k = (pick % n.table.len() as u64) as usize;
        let Some(mut f) = n.table.values().nth(k).copied() else {
            return;
        };
        if f.proto == IPPROTO_TCP {
            let step = |s: u8| match s {
                tcps::CLOSED => tcps::SYN_SENT,
                tcps::SYN_SENT => tcps::ESTABLISHED,
                s => s,
            };
            f.src.state = step(f.src.state);
            f.dst.state = step(f.dst.state);
            f.src.seqlo = f.src.seqlo.wrapping_add(1 + (pick % 1000) as u32);
            f.dst.seqlo = f.dst.seqlo.wrapping_add(1 + (pick % 777) as u32);
        } else {
            f.src.state = udp::MULTIPLE;
            f.dst.state = if f.dst.state == udp::NO_TRAFFIC {
                udp::SINGLE
            } else {
                udp::MULTIPLE
            };
        }
        f.timeout = timeout_for(f.proto, f.src.state, f.dst.state);
        f.expire = now + Duration::from_secs(u64::from(timeout_secs(f.timeout)));
        f.packets[0] += 1;
        n.table.insert(f.id, f);
        n.r.handle_local(now, LocalEvent::Update(f));
        self.drain(i);
    }

    fn delete_own(&mut self, i: usize, pick: u64) {
        let now = self.now;
        let n = &mut self.nodes[i];
        if n.own_live.is_empty() {
            return;
        }
        let k = (pick % n.own_live.len() as u64) as usize;
        let Some(id) = n.own_live.iter().nth(k).copied() else {
            return;
        };
        n.own_live.remove(&id);
        n.table.remove(&id);
        n.r.handle_local(now, LocalEvent::Delete(id));
        self.drain(i);
    }

    /// Random traffic on node i: new flows, updates (sometimes of peers' flows), deletes.
    fn traffic(&mut self, i: usize) {
        let r = self.rng.below(100);
        let pick = self.rng.next();
        match r {
            0..=29 => self.new_flow(i),
            30..=79 => self.touch(i, pick),
            _ => self.delete_own(i, pick),
        }
    }

    /// Refreshes every live flow node i created (keeps them from expiring anywhere).
    fn refresh_own(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let ids: Vec<FlowId> = n.own_live.iter().copied().collect();
        for id in ids {
            match n.table.get(&id).copied() {
                Some(mut f) => {
                    f.expire = now + Duration::from_secs(u64::from(timeout_secs(f.timeout)));
                    n.table.insert(id, f);
                    n.r.handle_local(now, LocalEvent::Update(f));
                }
                // Lost locally (a restart whose bulk did not bring it back): it is gone.
                None => {
                    n.own_live.remove(&id);
                }
            }
        }
        self.drain(i);
    }

    /// Runs until `end`, calling `tick(sim, node)` for every up node every `every`.
    fn run(&mut self, end: Duration, every: Option<Duration>, tick: fn(&mut Sim, usize)) {
        let mut next_tick = every.map(|e| self.now + e);
        loop {
            let mut next = end;
            if let Some((&(at, _), _)) = self.wire.iter().next() {
                next = next.min(at);
            }
            for n in &self.nodes {
                if n.up
                    && let Some(t) = n.r.poll_timeout()
                {
                    next = next.min(t.max(self.now));
                }
            }
            if let Some(t) = next_tick {
                next = next.min(t);
            }
            if next >= end && self.now >= end {
                break;
            }
            self.now = next.max(self.now);
            // Deliver everything due.
            while let Some((&(at, seq), _)) = self.wire.iter().next() {
                if at > self.now {
                    break;
                }
                let Some((to, bytes)) = self.wire.remove(&(at, seq)) else {
                    break;
                };
                if self.nodes[to].up {
                    self.delivered += 1;
                    let now = self.now;
                    self.nodes[to].r.handle_packet(now, &bytes, addr(0, 254));
                    self.drain(to);
                }
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].up
                    && self.nodes[i]
                        .r
                        .poll_timeout()
                        .is_some_and(|t| t <= self.now)
                {
                    let now = self.now;
                    self.nodes[i].r.handle_timeout(now);
                    self.drain(i);
                }
            }
            if let (Some(t), Some(e)) = (next_tick, every)
                && t <= self.now
            {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].up {
                        tick(self, i);
                    }
                }
                next_tick = Some(t + e);
            }
            if self.now >= end {
                break;
            }
        }
    }

    /// A clean link from now on, then long enough for zombies of lost DEL_Cs to expire while
    /// creators keep their live flows refreshed.
    fn settle(&mut self) {
        self.link = Link {
            loss: 0,
            dup: 0,
            jitter_ms: 2,
        };
        // Refresh a few times first so missed INS/UPD are pulled in by UPD_REQ.
        // Zombies of lost DEL_Cs can live a day (PFTM_TCP_ESTABLISHED): run in chunks and stop
        // early once the flow sets agree.
        let limit = self.now + Duration::from_secs(90_000);
        while self.now < limit {
            let end = self.now + Duration::from_secs(300);
            self.run(end, Some(Duration::from_secs(20)), Sim::refresh_own);
            if self.sets_agree() {
                break;
            }
        }
        // Let the last refresh flush.
        let end = self.now + Duration::from_secs(5);
        self.run(end, None, |_, _| {});
    }

    fn sets_agree(&self) -> bool {
        let expect: BTreeSet<FlowId> = self
            .nodes
            .iter()
            .flat_map(|n| n.own_live.iter().copied())
            .collect();
        self.nodes
            .iter()
            .all(|n| n.table.keys().copied().collect::<BTreeSet<_>>() == expect)
    }

    fn assert_converged(&self) {
        let expect: BTreeSet<FlowId> = self
            .nodes
            .iter()
            .flat_map(|n| n.own_live.iter().copied())
            .collect();
        assert!(!expect.is_empty(), "the simulation created no flows");
        let first = &self.nodes[0].table;
        for (i, n) in self.nodes.iter().enumerate() {
            let ids: BTreeSet<FlowId> = n.table.keys().copied().collect();
            assert_eq!(
                ids, expect,
                "node {i}: flow set differs from the live flows"
            );
            for (id, f) in &n.table {
                let g = &first[id];
                assert!(
                    f.same_flow(g),
                    "node {i} flow {id:?}: {f:?} != node 0's {g:?}"
                );
                let m = n.r.flow(id).expect("mirror has the flow");
                assert!(
                    m.same_flow(f),
                    "node {i}: mirror and table disagree on {id:?}"
                );
            }
            assert_eq!(n.r.flows().count(), n.table.len(), "node {i}: mirror size");
            assert_eq!(n.demote, 0, "node {i}: demotion given back");
            assert_eq!(n.r.bulk_state(), BulkReq::Done, "node {i}");
        }
    }
}

fn lossy() -> Link {
    Link {
        loss: 100,
        dup: 50,
        jitter_ms: 8,
    }
}

fn traffic_phase(sim: &mut Sim, secs: u64) {
    let end = sim.now + Duration::from_secs(secs);
    sim.run(end, Some(Duration::from_millis(40)), Sim::traffic);
}

#[test]
fn two_nodes_converge_through_loss_reorder_and_duplication() {
    for seed in 1..=3 {
        let mut sim = Sim::new(seed, 2, lossy());
        sim.up(0);
        sim.up(1);
        traffic_phase(&mut sim, 5);
        let sent: u64 = sim.nodes.iter().map(|n| n.r.stat(Stat::OPackets)).sum();
        assert!(sent > 10, "seed {seed}: traffic produced {sent} packets");
        sim.settle();
        sim.assert_converged();
    }
}

#[test]
fn three_nodes_active_active_converge() {
    let mut stale = 0;
    for seed in 100..103 {
        let mut sim = Sim::new(seed, 3, lossy());
        for i in 0..3 {
            sim.up(i);
        }
        traffic_phase(&mut sim, 5);
        stale += sim.nodes.iter().map(|n| n.r.stat(Stat::Stale)).sum::<u64>();
        sim.settle();
        sim.assert_converged();
    }
    // Nodes update each other's flows, so the keep-ours-if-ahead path must have run.
    assert!(
        stale > 0,
        "no stale updates: the merge path was not exercised"
    );
}

#[test]
fn node_joining_mid_traffic_gets_bulk_and_undemotes() {
    for seed in 200..202 {
        let mut sim = Sim::new(
            seed,
            3,
            Link {
                loss: 0,
                dup: 0,
                jitter_ms: 3,
            },
        );
        sim.up(0);
        sim.up(1);
        traffic_phase(&mut sim, 3);
        let before = sim.nodes[0].table.len();
        assert!(
            before > 10,
            "seed {seed}: only {before} flows before the join"
        );
        sim.up(2);
        assert_eq!(sim.nodes[2].demote, 32);
        traffic_phase(&mut sim, 2);
        // On a clean link the bulk completes with one request.
        assert_eq!(sim.nodes[2].r.stat(Stat::BulkDone), 1, "seed {seed}");
        assert_eq!(sim.nodes[2].r.stat(Stat::BulkRequests), 1);
        assert_eq!(sim.nodes[2].demote, 0);
        assert!(sim.nodes[0].r.stat(Stat::BulkServed) + sim.nodes[1].r.stat(Stat::BulkServed) >= 2);
        sim.settle();
        sim.assert_converged();
    }
}

#[test]
fn node_joining_through_loss_converges() {
    for seed in 300..302 {
        let mut sim = Sim::new(seed, 3, lossy());
        sim.up(0);
        sim.up(1);
        traffic_phase(&mut sim, 3);
        sim.up(2);
        traffic_phase(&mut sim, 3);
        sim.settle();
        sim.assert_converged();
    }
}

#[test]
fn restarted_node_relearns_the_table() {
    for seed in 400..402 {
        let mut sim = Sim::new(seed, 2, lossy());
        sim.up(0);
        sim.up(1);
        traffic_phase(&mut sim, 4);
        // Node 1 restarts: new replicator, empty table, same hostid; its own flows survive
        // only as node 0's copies and come back through the bulk update.
        let own_before = sim.nodes[1].own_live.len();
        sim.nodes[1] = Node {
            r: Replicator::new(cfg(101)),
            table: BTreeMap::new(),
            own_live: sim.nodes[1].own_live.clone(),
            next_id: sim.nodes[1].next_id,
            demote: 0,
            up: false,
            released: 0,
        };
        sim.link = Link {
            loss: 0,
            dup: 0,
            jitter_ms: 3,
        };
        sim.up(1);
        let end = sim.now + Duration::from_secs(2);
        sim.run(end, None, |_, _| {});
        assert_eq!(sim.nodes[1].r.bulk_state(), BulkReq::Done, "seed {seed}");
        assert_eq!(sim.nodes[1].demote, 0);
        let back = sim.nodes[1]
            .own_live
            .iter()
            .filter(|id| sim.nodes[1].table.contains_key(id))
            .count();
        assert!(
            back > 0 && back <= own_before,
            "seed {seed}: {back} of {own_before} came back"
        );
        assert_eq!(
            sim.nodes[1].table.keys().collect::<Vec<_>>(),
            sim.nodes[0].table.keys().collect::<Vec<_>>(),
            "seed {seed}: bulk brought node 0's whole table"
        );
        sim.link = lossy();
        traffic_phase(&mut sim, 3);
        sim.settle();
        sim.assert_converged();
    }
}

#[test]
fn deferred_first_packets_are_all_released() {
    let mut sim = Sim::new(7, 2, lossy());
    for n in &mut sim.nodes {
        n.r = Replicator::new(ReplicatorConfig {
            defer: true,
            ..cfg(n.r.config().creatorid)
        });
    }
    sim.up(0);
    sim.up(1);
    traffic_phase(&mut sim, 3);
    let end = sim.now + Duration::from_secs(1);
    sim.run(end, None, |_, _| {});
    for n in &sim.nodes {
        assert_eq!(
            n.released,
            n.r.stat(Stat::Deferred),
            "every deferral released once"
        );
        assert!(n.r.stat(Stat::Deferred) > 0);
    }
    // Some by INS_ACK, some by the 20 ms timeout (lost INS or lost ACK).
    let timeouts: u64 = sim.nodes.iter().map(|n| n.r.stat(Stat::DeferTimeout)).sum();
    let deferred: u64 = sim.nodes.iter().map(|n| n.r.stat(Stat::Deferred)).sum();
    assert!(
        timeouts > 0 && timeouts < deferred,
        "{timeouts} of {deferred}"
    );
    let _ = pftm::UDP_SINGLE;
}
