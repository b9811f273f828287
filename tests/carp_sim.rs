//! Seeded simulations of carp hosts on a lossy simulated link with a virtual clock.
//!
//! Every advertisement goes through the wire format (`Repr::emit`, then `handle_advert` parses,
//! checks the checksum and the HMAC), with a random delay of 1–3 ms and a configurable loss
//! rate. Seeds are fixed, so every run is the same run.

use std::net::Ipv4Addr;
use std::time::Duration;

use carpio::carp::{
    Balancing, Event, Groups, Interface, InterfaceConfig, NodeConfig, Received, Reject, State,
    Transmit,
};
use carpio::wire::classify::Af;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// xorshift64* (Vigna): enough randomness for loss and jitter, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `per_mille`/1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

struct Host {
    cfg: InterfaceConfig,
    iface: Interface,
    groups: Groups,
    alive: bool,
}

struct Packet {
    at: Duration,
    to: usize,
    af: Af,
    bytes: [u8; 36],
}

struct Sim {
    now: Duration,
    hosts: Vec<Host>,
    inflight: Vec<Packet>,
    rng: Rng,
    loss_per_mille: u64,
    /// link[i][j]: i's packets reach j.
    link: Vec<Vec<bool>>,
    sent: Vec<u64>,
    events: Vec<(Duration, usize, Event)>,
}

fn config(nodes: &[(u8, u8)], preempt: bool) -> InterfaceConfig {
    InterfaceConfig {
        nodes: nodes
            .iter()
            .map(|&(vhid, advskew)| NodeConfig { vhid, advskew })
            .collect(),
        passphrase: b"simulated".to_vec(),
        v4: vec![Ipv4Addr::new(198, 18, 0, 100)],
        preempt,
        ..Default::default()
    }
}

impl Sim {
    fn new(seed: u64, loss_per_mille: u64, cfgs: Vec<InterfaceConfig>) -> Self {
        let n = cfgs.len();
        let hosts = cfgs
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                // Distinct random-looking cookies per host and node.
                c.cookies = (0..c.nodes.len())
                    .map(|k| {
                        let mut ck = seed.wrapping_mul(31).wrapping_add((i * 64 + k) as u64);
                        ck ^= 0x5bd1_e995_1234_5678;
                        ck.to_be_bytes()
                    })
                    .collect();
                Host {
                    iface: Interface::new(&c).expect("valid config"),
                    cfg: c,
                    groups: Groups::new(),
                    alive: true,
                }
            })
            .collect();
        Sim {
            now: Duration::ZERO,
            hosts,
            inflight: Vec::new(),
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            loss_per_mille,
            link: vec![vec![true; n]; n],
            sent: vec![0; n],
            events: Vec::new(),
        }
    }

    fn start(&mut self, i: usize) {
        self.hosts[i].alive = true;
        let now = self.now;
        self.hosts[i].iface.set_up(now, true);
        self.drain(i);
    }

    fn start_all(&mut self) {
        for i in 0..self.hosts.len() {
            self.start(i);
        }
    }

    /// Power off: nothing is sent or processed any more, no bow-out.
    fn crash(&mut self, i: usize) {
        self.hosts[i].alive = false;
        self.inflight.retain(|p| p.to != i);
    }

    /// Boots a crashed host afresh (same config and cookies, all state lost).
    fn reboot(&mut self, i: usize) {
        self.hosts[i].iface = Interface::new(&self.hosts[i].cfg).expect("valid config");
        self.hosts[i].groups = Groups::new();
        self.start(i);
    }

    /// `ifconfig carpN down`: the bow-out.
    fn bow_out(&mut self, i: usize) {
        let now = self.now;
        self.hosts[i].iface.set_up(now, false);
        self.drain(i);
    }

    fn demote(&mut self, i: usize, group: &str, delta: i32) {
        let now = self.now;
        let h = &mut self.hosts[i];
        h.groups.adjust(group, delta).expect("in range");
        let sum = h.groups.sum(h.iface.groups());
        h.iface.set_group_demote(now, sum);
        self.drain(i);
    }

    fn partition(&mut self, a: &[usize], b: &[usize], connected: bool) {
        for &i in a {
            for &j in b {
                self.link[i][j] = connected;
                self.link[j][i] = connected;
            }
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(ev) = self.hosts[i].iface.poll_event() {
            if let Event::DemoteRequest { delta } = ev {
                let h = &mut self.hosts[i];
                let groups: Vec<String> = h.iface.groups().map(str::to_owned).collect();
                for g in &groups {
                    h.groups.adjust_saturating(g, delta);
                }
            }
            self.events.push((self.now, i, ev));
        }
        while let Some(t) = self.hosts[i].iface.poll_transmit() {
            let Transmit::Advert { af, repr } = t else {
                continue;
            };
            let mut bytes = [0u8; 36];
            repr.emit(&mut bytes).expect("36 bytes");
            self.sent[i] += 1;
            for j in 0..self.hosts.len() {
                if j == i || !self.link[i][j] || !self.hosts[j].alive {
                    continue;
                }
                if self.rng.chance(self.loss_per_mille) {
                    continue;
                }
                let delay = MS + Duration::from_micros(self.rng.next() % 2000);
                self.inflight.push(Packet {
                    at: self.now + delay,
                    to: j,
                    af,
                    bytes,
                });
            }
        }
    }

    /// Processes everything due up to `until`, in time order.
    fn run_until(&mut self, until: Duration) {
        loop {
            let next_timer = self
                .hosts
                .iter()
                .filter(|h| h.alive)
                .filter_map(|h| h.iface.poll_timeout())
                .min();
            let next_pkt = self.inflight.iter().map(|p| p.at).min();
            let next = match (next_timer, next_pkt) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            let (due, rest): (Vec<Packet>, Vec<Packet>) =
                self.inflight.drain(..).partition(|p| p.at <= now);
            self.inflight = rest;
            for p in due {
                if !self.hosts[p.to].alive {
                    continue;
                }
                let rx = Received {
                    af: p.af,
                    ttl: 255,
                    multicast: true,
                    on_carp_interface: true,
                    payload: &p.bytes,
                };
                // Rejects are counted; the tests check the counters.
                let _ = self.hosts[p.to].iface.handle_advert(now, &rx);
                self.drain(p.to);
            }
            for i in 0..self.hosts.len() {
                if self.hosts[i].alive
                    && self.hosts[i].iface.poll_timeout().is_some_and(|t| t <= now)
                {
                    self.hosts[i].iface.handle_timeout(now);
                    self.drain(i);
                }
            }
        }
        self.now = self.now.max(until);
    }

    fn masters(&self, vhid: u8) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| {
                self.hosts[i].alive && self.hosts[i].iface.state(vhid) == Some(State::Master)
            })
            .collect()
    }

    /// Runs to `until` sampling every 10 ms; returns the longest stretch with a master count
    /// other than one for `vhid`.
    fn longest_bad_stretch(&mut self, vhid: u8, until: Duration) -> Duration {
        let (mut longest, mut start) = (Duration::ZERO, None);
        while self.now < until {
            let t = self.now + 10 * MS;
            self.run_until(t);
            if self.masters(vhid).len() == 1 {
                start = None;
            } else {
                let s = *start.get_or_insert(self.now);
                longest = longest.max(self.now - s);
            }
        }
        longest
    }

    fn rejects(&self) -> u64 {
        self.hosts.iter().map(|h| h.iface.rejects().total()).sum()
    }
}

#[test]
fn election_lowest_skew_wins_without_preempt() {
    for seed in 1..=5 {
        let mut sim = Sim::new(
            seed,
            0,
            vec![
                config(&[(1, 100)], false),
                config(&[(1, 0)], false),
                config(&[(1, 50)], false),
            ],
        );
        sim.start_all();
        sim.run_until(2 * S);
        assert!(sim.masters(1).is_empty(), "nobody before 3 intervals");
        sim.run_until(30 * S);
        assert_eq!(sim.masters(1), [1], "seed {seed}");
        assert_eq!(sim.hosts[0].iface.state(1), Some(State::Backup));
        // About one ad per second from the master only.
        assert!((28..=29).contains(&sim.sent[1]), "sent {}", sim.sent[1]);
        assert_eq!(sim.sent[0] + sim.sent[2], 0);
        assert_eq!(sim.rejects(), 0);
    }
}

#[test]
fn preemption_off_keeps_the_incumbent() {
    let mut sim = Sim::new(
        7,
        0,
        vec![config(&[(1, 100)], false), config(&[(1, 0)], false)],
    );
    sim.start(0);
    sim.hosts[1].alive = false;
    sim.run_until(10 * S);
    assert_eq!(sim.masters(1), [0]);
    sim.start(1);
    sim.run_until(60 * S);
    assert_eq!(
        sim.masters(1),
        [0],
        "a better skew does not take over without preempt"
    );
    assert_eq!(sim.hosts[1].iface.state(1), Some(State::Backup));
}

#[test]
fn preemption_on_hands_over_to_the_better_skew() {
    let mut sim = Sim::new(
        8,
        0,
        vec![config(&[(1, 100)], true), config(&[(1, 0)], true)],
    );
    sim.start(0);
    sim.hosts[1].alive = false;
    sim.run_until(10 * S);
    assert_eq!(sim.masters(1), [0]);
    sim.start(1);
    // The first ad from the incumbent makes host 1 preempt; its ad makes host 0 yield.
    sim.run_until(10 * S + 1500 * MS);
    assert_eq!(sim.masters(1), [1]);
    assert_eq!(sim.hosts[0].iface.state(1), Some(State::Backup));
    let bad = sim.longest_bad_stretch(1, 60 * S);
    assert!(bad.is_zero(), "{bad:?}");
}

#[test]
fn master_crash_is_taken_over_within_master_down() {
    for seed in 10..15 {
        let mut sim = Sim::new(
            seed,
            0,
            vec![config(&[(1, 0)], false), config(&[(1, 100)], false)],
        );
        sim.start_all();
        sim.run_until(10 * S);
        assert_eq!(sim.masters(1), [0]);
        // run_until(10 s) fired the ad timer due at 10 s: the master's last ad left at the
        // crash instant and reaches host 1 1–3 ms later, which re-arms its master-down timer
        // to 3 × (1 + 100/256) s = 4.171875 s from then.
        let crash_at = sim.now;
        sim.crash(0);
        let md = Duration::from_micros(4_171_875);
        sim.run_until(crash_at + md);
        assert_eq!(
            sim.hosts[1].iface.state(1),
            Some(State::Backup),
            "seed {seed}"
        );
        sim.run_until(crash_at + md + 3 * MS);
        assert_eq!(sim.masters(1), [1], "seed {seed}");
        let took = sim
            .events
            .iter()
            .find(|(_, h, e)| {
                *h == 1
                    && matches!(
                        e,
                        Event::StateChanged {
                            to: State::Master,
                            ..
                        }
                    )
            })
            .map(|(t, _, _)| *t - crash_at)
            .unwrap();
        assert!(took >= md + MS && took < md + 3 * MS, "{took:?}");
    }
}

#[test]
fn bow_out_hands_over_at_once() {
    let mut sim = Sim::new(
        21,
        0,
        vec![config(&[(1, 0)], false), config(&[(1, 200)], false)],
    );
    sim.start_all();
    sim.run_until(10 * S);
    assert_eq!(sim.masters(1), [0]);
    // Between two ads, so no regular ad is still in flight behind the bow-out.
    sim.run_until(10 * S + 500 * MS);
    let t = sim.now;
    sim.bow_out(0);
    assert_eq!(sim.hosts[0].iface.state(1), Some(State::Init));
    sim.run_until(t + 5 * MS);
    assert_eq!(
        sim.masters(1),
        [1],
        "255/255 is slower than 3 × advbase: immediate takeover"
    );
    sim.run_until(t + 20 * S);
    assert_eq!(sim.masters(1), [1]);
    assert_eq!(sim.hosts[0].iface.poll_timeout(), None);
}

#[test]
fn demotion_moves_mastership_and_back_with_preempt() {
    let mut sim = Sim::new(
        33,
        0,
        vec![config(&[(1, 0)], true), config(&[(1, 50)], true)],
    );
    sim.start_all();
    sim.run_until(10 * S);
    assert_eq!(sim.masters(1), [0]);
    // Half-way between two ads, so the regular ad cannot overtake the demoted one (with
    // jitter, reordering them makes both yield: a real CARP race, not a bug).
    sim.run_until(10 * S + 500 * MS);
    // relayd `demote carp` or pfsync +1: the master advertises demote 1 at once.
    let t = sim.now;
    sim.demote(0, "carp", 1);
    sim.run_until(t + 10 * MS);
    assert_eq!(sim.masters(1), [1], "no interval wait");
    sim.run_until(t + 20 * S);
    assert_eq!(sim.masters(1), [1]);
    // pfsync bulk: +32 on top, then done.
    sim.demote(0, "carp", 32);
    sim.run_until(sim.now + 5 * S);
    assert_eq!(sim.masters(1), [1]);
    sim.demote(0, "carp", -33);
    // With preempt the better skew takes back on the next ad from host 1.
    sim.run_until(sim.now + 1500 * MS);
    assert_eq!(sim.masters(1), [0]);
}

#[test]
fn demotion_wins_without_preempt_too() {
    let mut sim = Sim::new(
        34,
        0,
        vec![config(&[(1, 0)], false), config(&[(1, 50)], false)],
    );
    sim.start_all();
    sim.run_until(10 * S + 500 * MS);
    sim.demote(0, "carp", 1);
    sim.run_until(sim.now + 10 * MS);
    assert_eq!(sim.masters(1), [1]);
    sim.demote(0, "carp", -1);
    sim.run_until(sim.now + 30 * S);
    assert_eq!(sim.masters(1), [1], "no preempt: the new master stays");
}

#[test]
fn send_errors_demote() {
    let mut sim = Sim::new(
        35,
        0,
        vec![config(&[(1, 0)], false), config(&[(1, 50)], false)],
    );
    sim.start_all();
    sim.run_until(10 * S);
    assert_eq!(sim.masters(1), [0]);
    sim.run_until(10 * S + 500 * MS);
    for _ in 0..3 {
        let now = sim.now;
        sim.hosts[0].iface.handle_send_result(now, false);
    }
    sim.drain(0);
    assert_eq!(sim.hosts[0].groups.get("carp"), 1);
    sim.run_until(sim.now + 10 * MS);
    assert_eq!(sim.masters(1), [1]);
}

#[test]
fn partition_and_heal_leaves_no_lasting_split_brain() {
    for seed in 40..45 {
        let mut sim = Sim::new(
            seed,
            50, // 5 % loss
            vec![
                config(&[(1, 0)], false),
                config(&[(1, 20)], false),
                config(&[(1, 40)], false),
            ],
        );
        sim.start_all();
        sim.run_until(10 * S);
        assert_eq!(sim.masters(1).len(), 1);
        sim.partition(&[0], &[1, 2], false);
        sim.run_until(20 * S);
        assert_eq!(
            sim.masters(1),
            [0, 1],
            "split brain while partitioned, seed {seed}"
        );
        sim.partition(&[0], &[1, 2], true);
        sim.run_until(25 * S);
        assert_eq!(sim.masters(1).len(), 1, "healed, seed {seed}");
        let bad = sim.longest_bad_stretch(1, 120 * S);
        assert!(bad < 100 * MS, "seed {seed}: {bad:?}");
        assert_eq!(sim.masters(1).len(), 1);
        assert_eq!(sim.rejects(), 0);
    }
}

#[test]
fn equal_skew_tie_converges_to_one_master() {
    for seed in 50..60 {
        let mut sim = Sim::new(
            seed,
            0,
            vec![config(&[(1, 0)], false), config(&[(1, 0)], false)],
        );
        sim.start_all();
        // Both master-down timers fire at 3 s exactly: both become master, then both hear an
        // equal ad and step down (spec §9 item 8), until jitter separates them.
        sim.run_until(3 * S);
        assert_eq!(sim.masters(1), [0, 1]);
        sim.run_until(3 * S + 5 * MS);
        assert!(
            sim.masters(1).is_empty(),
            "equal ads make both masters yield"
        );
        // Each round both yield and re-arm 3 s timers that differ only by the link jitter;
        // it converges once one side's ad arrives before the other's timer fires, which
        // can take many rounds (the reason spec §9 item 8 says to use distinct skews).
        sim.run_until(300 * S);
        assert_eq!(sim.masters(1).len(), 1, "seed {seed}");
        let takeovers = sim
            .events
            .iter()
            .filter(|(_, _, e)| {
                matches!(
                    e,
                    Event::StateChanged {
                        to: State::Master,
                        ..
                    }
                )
            })
            .count();
        assert!(takeovers >= 3, "seed {seed}: {takeovers}");
        let bad = sim.longest_bad_stretch(1, 360 * S);
        assert!(bad.is_zero());
    }
}

#[test]
fn advbase_zero_runs_at_256_per_second() {
    let mut a = config(&[(1, 0)], false);
    a.advbase = 0;
    let mut b = config(&[(1, 10)], false);
    b.advbase = 0;
    let mut sim = Sim::new(61, 0, vec![a, b]);
    sim.start_all();
    sim.run_until(S);
    assert_eq!(sim.masters(1), [0]);
    let before = sim.sent[0];
    sim.run_until(2 * S);
    assert!(
        (255..=257).contains(&(sim.sent[0] - before)),
        "{}",
        sim.sent[0] - before
    );
    let t = sim.now;
    sim.crash(0);
    // 3 × 10/256 s = 117 ms.
    sim.run_until(t + 125 * MS);
    assert_eq!(sim.masters(1), [1]);
}

#[test]
fn carpnodes_elect_one_master_per_vhid_and_complement() {
    let mut a = config(&[(1, 0), (2, 100)], false);
    a.balancing = Balancing::Ip;
    let mut b = config(&[(1, 100), (2, 0)], false);
    b.balancing = Balancing::Ip;
    let mut sim = Sim::new(70, 20, vec![a, b]);
    sim.start_all();
    sim.run_until(20 * S);
    assert_eq!(sim.masters(1), [0]);
    assert_eq!(sim.masters(2), [1]);
    assert_eq!(sim.hosts[0].iface.lsmask(), 0b01);
    assert_eq!(sim.hosts[1].iface.lsmask(), 0b10);
    assert_eq!(sim.hosts[0].iface.lladdr(), [1, 0, 0x5e, 0, 1, 1]);
    // Every flow accepted by exactly one node.
    let (oa, ob) = (
        sim.hosts[0].iface.ownership(),
        sim.hosts[1].iface.ownership(),
    );
    for i in 0..500u32 {
        let pkt = carpio::carp::Inbound::Unicast {
            src: Ipv4Addr::from(i.wrapping_mul(0x9e37_79b9)).into(),
            dst: Ipv4Addr::new(198, 18, 0, 100).into(),
        };
        assert_ne!(oa.accept(&pkt), ob.accept(&pkt));
    }
    let t = sim.now;
    sim.crash(1);
    sim.run_until(t + Duration::from_micros(4_171_875) + 5 * MS);
    assert_eq!(sim.masters(2), [0]);
    assert_eq!(sim.hosts[0].iface.lsmask(), 0b11);
}

#[test]
fn arp_balancing_splits_requesters_and_never_both_answer() {
    let mut a = config(&[(1, 0), (2, 100)], false);
    a.balancing = Balancing::Arp;
    let mut b = config(&[(1, 100), (2, 0)], false);
    b.balancing = Balancing::Arp;
    let mut sim = Sim::new(80, 0, vec![a, b]);
    sim.start_all();
    sim.run_until(20 * S);
    let (oa, ob) = (
        sim.hosts[0].iface.ownership(),
        sim.hosts[1].iface.ownership(),
    );
    let (mut by_a, mut by_b) = (0, 0);
    for i in 0..256u32 {
        let mac = [2, 0, 0x11, (i >> 8) as u8, i as u8, 0x42];
        match (oa.arp_reply(mac), ob.arp_reply(mac)) {
            (Some(m), None) => {
                assert_eq!(m, [0, 0, 0x5e, 0, 1, 1]);
                by_a += 1;
            }
            (None, Some(m)) => {
                assert_eq!(m, [0, 0, 0x5e, 0, 1, 2]);
                by_b += 1;
            }
            other => panic!("requester {i}: {other:?}"),
        }
    }
    assert!(by_a > 64 && by_b > 64, "{by_a} / {by_b}");
    // A takes over vhid 2 when B dies, and then answers everyone.
    let t = sim.now;
    sim.crash(1);
    sim.run_until(t + 5 * S);
    let oa = sim.hosts[0].iface.ownership();
    assert!((0..256u32).all(|i| oa.arp_reply([2, 0, 0x11, 0, i as u8, 0x42]).is_some()));
}

#[test]
fn wrong_passphrase_is_rejected_and_both_become_master() {
    let a = config(&[(1, 0)], false);
    let mut b = config(&[(1, 50)], false);
    b.passphrase = b"different".to_vec();
    let mut sim = Sim::new(90, 0, vec![a, b]);
    sim.start_all();
    sim.run_until(10 * S);
    assert_eq!(sim.masters(1), [0, 1]);
    assert!(sim.hosts[1].iface.rejects().get(Reject::BadAuth.index()) > 0);
    assert!(sim.hosts[0].iface.rejects().get(Reject::BadAuth.index()) > 0);
}

/// Seeded chaos: crashes, reboots, partitions, bow-outs and demotions at random; after every
/// disruption the network is healed and left quiet for 15 s, and then exactly one live host
/// must be MASTER.
#[test]
fn chaos_always_settles_to_one_master() {
    for seed in 100..108 {
        let preempt = seed % 2 == 0;
        let cfgs = [0u8, 30, 60, 90]
            .iter()
            .map(|&skew| config(&[(1, skew)], preempt))
            .collect();
        let mut sim = Sim::new(seed, 20, cfgs);
        sim.start_all();
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let mut up = [true; 4];
        let mut demoted = [false; 4];
        sim.run_until(10 * S);
        for round in 0..25 {
            let h = (rng.next() % 4) as usize;
            match rng.next() % 6 {
                0 if sim.hosts[h].alive && up.iter().filter(|u| **u).count() > 1 => {
                    sim.crash(h);
                    up[h] = false;
                }
                1 if !up[h] => {
                    sim.reboot(h);
                    up[h] = true;
                    demoted[h] = false;
                }
                2 => {
                    let (a, b): (Vec<usize>, Vec<usize>) = (0..4).partition(|&i| i <= h);
                    sim.partition(&a, &b, false);
                    sim.run_until(sim.now + 5 * S);
                    let alive_a = a.iter().any(|&i| up[i]);
                    let alive_b = b.iter().any(|&i| up[i]);
                    if alive_a && alive_b {
                        assert_eq!(
                            sim.masters(1).len(),
                            2,
                            "seed {seed} round {round}: one per side"
                        );
                    }
                }
                3 if up[h] && sim.hosts[h].alive && up.iter().filter(|u| **u).count() > 1 => {
                    sim.bow_out(h);
                    sim.run_until(sim.now + 2 * S);
                    sim.start(h);
                }
                4 if up[h] => {
                    sim.demote(h, "carp", if demoted[h] { -1 } else { 1 });
                    demoted[h] = !demoted[h];
                }
                _ => {}
            }
            sim.run_until(sim.now + S + Duration::from_micros(rng.next() % 1_000_000));
            sim.partition(&[0, 1, 2, 3], &[0, 1, 2, 3], true);
            sim.run_until(sim.now + 15 * S);
            let m = sim.masters(1);
            assert_eq!(m.len(), 1, "seed {seed} round {round}: masters {m:?}");
            assert!(up[m[0]]);
        }
        // The only rejects: ads heard while bowed out (down is not running: badvhid).
        let vhid_rejects: u64 = sim
            .hosts
            .iter()
            .map(|h| h.iface.rejects().get(Reject::BadVhid.index()))
            .sum();
        assert_eq!(sim.rejects(), vhid_rejects, "seed {seed}");
    }
}
