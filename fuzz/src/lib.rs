//! Bodies of carpio's fuzz targets, one public function per target. The cargo-fuzz binaries in
//! `fuzz/fuzz_targets/` call them under libFuzzer; `tests/fuzz_smoke.rs` compiles this file by
//! path and runs the same bodies over the seed corpus and deterministic mutations of it, so
//! `make test` exercises the real harness without the fuzz toolchain.
//!
//! A body returns normally for every input. It panics only when carpio breaks one of its own
//! promises, which libFuzzer then reports as a crash:
//! - nothing panics on bytes from the network, a file or a control client (DESIGN.md);
//! - every frame ends in exactly one class or one named drop counter, and every frame the
//!   worker drops has moved a named drop counter (DESIGN.md style rule 6);
//! - what carpio sends classifies again (the rewrite emits well-formed headers);
//! - a control request that parses survives its own serialisation unchanged.
//!
//! Multi-step targets (worker, carp, pfsync) read the input as a sequence of records, so one
//! input drives a whole conversation and the state machines are explored past their first
//! packet. Everything is rebuilt per input: a crash reproduces from its input alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use carpio::carp::{Balancing, Interface, InterfaceConfig, NodeConfig, Received};
use carpio::config::{self, Config};
use carpio::ctl::proto;
use carpio::dataplane::flow::FlowTableConfig;
use carpio::dataplane::snapshot::{Link, Snapshot, SnapshotCell};
use carpio::dataplane::worker::{Stat, Worker, WorkerConfig};
use carpio::pfsync::replicator::{Replicator, ReplicatorConfig};
use carpio::pfsync::shell as pfsync_shell;
use carpio::phy::{Batch, Verdict};
use carpio::replay;
use carpio::wire::carp as wire_carp;
use carpio::wire::classify::{Af, Class, LinkType, classify as wire_classify};
use carpio::wire::pfsync as wire_pfsync;
use crossbeam::queue::ArrayQueue;

/// Link types a frame is tried as.
const LINKS: [LinkType; 3] = [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll];

/// Splits `data` into records of `[len, body...]` (a `len` past the end takes what is left),
/// at most `max` of them.
fn records(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && out.len() < max {
        let n = usize::from(rest[0]);
        rest = &rest[1..];
        let take = n.min(rest.len());
        out.push(&rest[..take]);
        rest = &rest[take..];
    }
    out
}

/// Splits `data` into frames of `[len_hi, len_lo, frame...]`, at most `max` of them (frames up
/// to 64 KiB, so oversized ones are tried too).
fn frames(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && out.len() < max {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        let take = n.min(rest.len());
        out.push(&rest[..take]);
        rest = &rest[take..];
    }
    out
}

// ---- classify -------------------------------------------------------------------------------

/// cargo-fuzz target `classify`: any bytes as a frame of each link type. `classify` returns a
/// class or a named drop, and the offsets it returns lie inside the frame.
pub fn classify(data: &[u8]) {
    for link in LINKS {
        if let Ok(m) = wire_classify(data, link) {
            let (l3, l4, end) = (usize::from(m.l3), usize::from(m.l4), usize::from(m.end));
            assert!(
                l3 <= l4 && l4 <= end && end <= data.len(),
                "offsets out of order or past the frame: l3 {l3} l4 {l4} end {end} len {} ({m:?})",
                data.len()
            );
            if let Some(q) = m.quoted {
                assert!(
                    usize::from(q.l3) <= usize::from(q.l4) && usize::from(q.l4) + 8 <= end,
                    "quoted header past the packet: {m:?}"
                );
            }
            assert!(Class::ALL.contains(&m.class));
        }
    }
}

// ---- worker ---------------------------------------------------------------------------------

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x01];

/// The virtual services the worker target runs against (the shapes of
/// tests/dataplane_fixtures.rs): TCP 80 and UDP 53 on an IPv4 and an IPv6 address, and one
/// service with a small table, round-robin scheduling and a sticky address.
pub fn worker_config_text(dsr: bool) -> String {
    let fwd = |t: &str| {
        if dsr {
            format!("route to <{t}> check icmp interface eth1")
        } else {
            format!("forward to <{t}> port 8080 check icmp")
        }
    };
    format!(
        "flow table size 1024\n\
         table <w4> {{ 198.18.1.1 lladdr \"02:00:00:00:01:01\", 198.18.1.2 lladdr \"02:00:00:00:01:02\" }}\n\
         table <w6> {{ 2001:db8:1::1 lladdr \"02:00:00:00:06:01\", 2001:db8:1::2 lladdr \"02:00:00:00:06:02\" }}\n\
         table <rr> {{ 198.18.1.3, 198.18.1.4 }}\n\
         redirect r4 {{\n listen on 198.18.0.10 tcp port 80\n listen on 198.18.0.10 udp port 53\n {}\n}}\n\
         redirect r6 {{\n listen on 2001:db8::10 tcp port 80\n listen on 2001:db8::10 udp port 53\n {}\n}}\n\
         redirect rr {{\n listen on 198.18.0.11 tcp port 25\n {} mode roundrobin\n sticky-address\n}}\n",
        fwd("w4"),
        fwd("w6"),
        fwd("rr"),
    )
}

/// Link of the worker target: a gateway and tunnel sources, as the daemon has them.
pub fn worker_link() -> Link {
    Link {
        mac: LB_MAC,
        gateway_mac: Some(GW_MAC),
        tunnel_src_v4: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))),
        tunnel_src_v6: Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
        mtu: 1500,
    }
}

/// The snapshot of a configuration, built once per process (Maglev tables are the costly part).
pub fn worker_snapshot(dsr: bool) -> Arc<SnapshotCell> {
    static CELLS: OnceLock<[Arc<SnapshotCell>; 2]> = OnceLock::new();
    let cells = CELLS.get_or_init(|| {
        [false, true].map(|dsr| {
            let cfg: Config = config::parse_str("fuzz-worker.conf", &worker_config_text(dsr), &[])
                .unwrap_or_else(|e| panic!("worker fuzz config: {e}"));
            let snap =
                Snapshot::build(&cfg, &replay::replay_host_states(&cfg), worker_link(), None)
                    .unwrap_or_else(|e| panic!("worker fuzz snapshot: {e}"));
            Arc::new(SnapshotCell::from_pointee(snap))
        })
    });
    cells[usize::from(dsr)].clone()
}

/// Sum of the counters whose name says a frame was dropped.
fn drop_total(w: &Worker) -> u64 {
    let named_drop = Stat::ALL
        .iter()
        .filter(|s| s.name().starts_with("drop_"))
        .map(|s| w.stats.get(s.index()))
        .sum::<u64>();
    w.drops.total() + named_drop + w.rewrite_errors.total()
}

/// Frames through a fresh worker with a tiny flow table. Input: one mode byte (bit 0: DSR,
/// else NAT; bits 1-2: link type), then frames as `[len_hi, len_lo, frame]`, processed in
/// batches of up to 8 with the clock moving a second per batch.
pub fn worker(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dsr = mode & 1 == 1;
    let link = LINKS[usize::from((mode >> 1) & 3) % LINKS.len()];
    let cell = worker_snapshot(dsr);
    let events = Arc::new(ArrayQueue::new(64));
    let wc = WorkerConfig {
        flow: FlowTableConfig {
            capacity: 1024,
            ..FlowTableConfig::default()
        },
        ..WorkerConfig::default()
    };
    let Ok(mut w) = Worker::new(wc, cell, events.clone(), None) else {
        panic!("worker fuzz: flow table config refused");
    };
    let mut batch = Batch::new(8);
    for (now, chunk) in (1u32..).zip(frames(rest, 64).chunks(8)) {
        batch.clear();
        for f in chunk {
            batch.push(f, u64::from(now) * 1_000_000_000, link);
        }
        let seen = w.classes.total() + w.drops.total();
        let dropped_before = drop_total(&w);
        w.process(&mut batch, now);
        assert_eq!(
            w.classes.total() + w.drops.total() - seen,
            batch.len() as u64,
            "every frame ends in exactly one class or one drop counter"
        );
        let drops = batch.iter().filter(|p| p.verdict == Verdict::Drop).count() as u64;
        assert!(
            drop_total(&w) - dropped_before >= drops,
            "{drops} frames dropped but only {} drop counters moved",
            drop_total(&w) - dropped_before
        );
        for p in batch.iter().filter(|p| p.verdict == Verdict::Tx) {
            if let Err(d) = wire_classify(p.data(), p.link) {
                panic!(
                    "the worker sent a frame that does not classify ({}): {:02x?}",
                    d.name(),
                    p.data()
                );
            }
        }
        while events.pop().is_some() {}
    }
    // A flood never grows the table past its capacity.
    assert!(w.flows().len() <= w.flows().capacity());
}

// ---- carp -----------------------------------------------------------------------------------

/// The carp passphrase of the target's interface.
pub const CARP_PASS: &[u8] = b"fuzz-carp";

/// The target's carp interface: vhids 1 and 2, an IPv4 and an IPv6 address.
pub fn carp_config(balancing: Balancing) -> InterfaceConfig {
    InterfaceConfig {
        nodes: vec![
            NodeConfig {
                vhid: 1,
                advskew: 0,
            },
            NodeConfig {
                vhid: 2,
                advskew: 100,
            },
        ],
        passphrase: CARP_PASS.to_vec(),
        v4: vec![Ipv4Addr::new(198, 18, 0, 100)],
        v6: vec![Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100)],
        balancing,
        parent_mac: [0x02, 0, 0, 0, 0, 1],
        cookies: vec![[1; 8], [2; 8]],
        ..Default::default()
    }
}

/// Signs a 36-byte (or longer) CARP payload in place with the target's key for its vhid and
/// fills its checksum, so the fuzzer reaches the state machine behind the HMAC.
pub fn carp_sign(cfg: &InterfaceConfig, payload: &mut [u8]) {
    let Ok(p) = wire_carp::Packet::new_checked(&payload[..]) else {
        return;
    };
    let mut repr = wire_carp::Repr::parse(&p);
    let auth = wire_carp::Auth::new(&wire_carp::AuthInput {
        key: wire_carp::key_from_passphrase(&cfg.passphrase),
        lladdr: None,
        vhid: repr.vhid,
        v4: &cfg.v4,
        v6: &cfg.v6,
    });
    auth.sign(&mut repr);
    if repr.emit(payload).is_ok()
        && let Ok(mut p) = wire_carp::Packet::new_checked(&mut payload[..])
    {
        p.fill_checksum();
    }
}

/// Advertisements into a fresh carp interface. Input: one byte choosing the balancing mode,
/// then records `[len, flags, dt, payload...]`: flags bit 0 IPv6, bit 1 multicast, bit 2
/// received on the carp interface, bit 3 a wrong TTL (254), bit 4 fix the checksum, bit 5 sign
/// with the right key; `dt` tens of milliseconds pass before the advert, and the interface's
/// timers run.
pub fn carp(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let balancing = match mode % 4 {
        0 => Balancing::None,
        1 => Balancing::Ip,
        2 => Balancing::Arp,
        _ => Balancing::IpUnicast,
    };
    let cfg = carp_config(balancing);
    let Ok(mut iface) = Interface::new(&cfg) else {
        panic!("carp fuzz: interface config refused");
    };
    let mut now = Duration::from_secs(1);
    iface.set_up(now, true);
    let mut buf = [0u8; 256];
    for rec in records(rest, 32) {
        let [flags, dt, payload @ ..] = rec else {
            continue;
        };
        now += Duration::from_millis(10 * u64::from(*dt));
        let n = payload.len().min(buf.len());
        buf[..n].copy_from_slice(&payload[..n]);
        if flags & 0x20 != 0 {
            carp_sign(&cfg, &mut buf[..n]);
        } else if flags & 0x10 != 0
            && let Ok(mut p) = wire_carp::Packet::new_checked(&mut buf[..n])
        {
            p.fill_checksum();
        }
        let rx = Received {
            af: if flags & 1 != 0 { Af::V6 } else { Af::V4 },
            ttl: if flags & 8 != 0 { 254 } else { wire_carp::TTL },
            multicast: flags & 2 != 0,
            on_carp_interface: flags & 4 != 0,
            payload: &buf[..n],
        };
        let before = iface.rejects().total();
        if iface.handle_advert(now, &rx).is_err() {
            assert_eq!(
                iface.rejects().total(),
                before + 1,
                "a reject is counted once"
            );
        }
        drain_carp(&mut iface, now);
    }
    // Let every timer fire a few times (master down, advertisement) with the clock moving.
    for _ in 0..8 {
        match iface.poll_timeout() {
            Some(t) if t <= now + Duration::from_secs(600) => {
                now = now.max(t);
                iface.handle_timeout(now);
                drain_carp(&mut iface, now);
            }
            _ => break,
        }
    }
    let _ = iface.ownership();
}

fn drain_carp(iface: &mut Interface, now: Duration) {
    for _ in 0..64 {
        let t = iface.poll_transmit();
        let e = iface.poll_event();
        if t.is_none() && e.is_none() {
            return;
        }
        if t.is_some() {
            iface.handle_send_result(now, true);
        }
    }
}

// ---- pfsync ---------------------------------------------------------------------------------

/// Key of the optional pfsync authentication trailer in the target.
pub const PFSYNC_KEY: &[u8] = b"fuzz-pfsync";
/// The configured pfsync peer in the target.
pub const PFSYNC_PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// pfsync input as the shell and the replicator see it. Input: one mode byte, then records
/// `[len_hi, len_lo, packet...]` fed one after another with time passing. Mode bit 0: each
/// record is an IPv4 datagram through the shell's `check_ipv4` (bit 1: with a configured
/// peer); bit 2: the payload carries the HMAC trailer (bit 3: the target seals it first, so
/// it verifies).
pub fn pfsync(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut r = Replicator::new(ReplicatorConfig::new(0x0a0b_0c0d));
    let mut now = Duration::from_secs(1);
    r.handle_up(now, true);
    drain_pfsync(&mut r);
    let mut sealed = Vec::new();
    for rec in frames(rest, 16) {
        now += Duration::from_millis(300);
        let (mut payload, from) = if mode & 1 != 0 {
            let peer = (mode & 2 != 0).then_some(PFSYNC_PEER);
            match pfsync_shell::check_ipv4(rec, peer) {
                Ok((p, src)) => (p, IpAddr::V4(src)),
                Err(_) => continue,
            }
        } else {
            (rec, IpAddr::V4(PFSYNC_PEER))
        };
        if mode & 4 != 0 {
            if mode & 8 != 0 {
                sealed.clear();
                sealed.extend_from_slice(payload);
                pfsync_shell::auth_seal(PFSYNC_KEY, &mut sealed);
                payload = &sealed;
            }
            match pfsync_shell::auth_open(PFSYNC_KEY, payload) {
                Ok(p) => payload = p,
                Err(_) => continue,
            }
        }
        pfsync_wire(payload);
        r.handle_packet(now, payload, from);
        drain_pfsync(&mut r);
        r.handle_timeout(now);
        drain_pfsync(&mut r);
    }
    // Timers: flushes, bulk sends, purges.
    for _ in 0..8 {
        match r.poll_timeout() {
            Some(t) if t <= now + Duration::from_secs(600) => {
                now = now.max(t);
                r.handle_timeout(now);
                drain_pfsync(&mut r);
            }
            _ => break,
        }
    }
}

/// The wire parser alone: every message that parses emits again into its own length, and the
/// emitted bytes parse to the same message.
fn pfsync_wire(payload: &[u8]) {
    let Ok(pkt) = wire_pfsync::Packet::parse(payload) else {
        return;
    };
    let mut buf = [0u8; 512];
    for m in pkt.messages().take(4096) {
        let Ok(m) = m else { break };
        let n = m.len();
        assert!(
            n <= buf.len(),
            "message longer than any pfsync message: {n}"
        );
        if let Err(e) = m.emit(&mut buf[..n]) {
            panic!("a parsed message does not emit: {} ({m:?})", e.name());
        }
        let mut w = wire_pfsync::Writer::new(1480);
        if w.push(&m).is_ok() {
            let bytes = w.finish();
            let again = wire_pfsync::Packet::parse(&bytes)
                .unwrap_or_else(|e| panic!("our own packet does not parse: {}", e.name()));
            let back: Vec<_> = again.messages().collect();
            assert_eq!(back.len(), 1, "one message in, one out: {back:?}");
            assert_eq!(back[0].as_ref().ok(), Some(&m), "message round trip");
        }
    }
}

fn drain_pfsync(r: &mut Replicator) {
    for _ in 0..4096 {
        let t = r.poll_transmit();
        let e = r.poll_event();
        if t.is_none() && e.is_none() {
            return;
        }
    }
}

// ---- config ---------------------------------------------------------------------------------

/// Configuration text (invalid UTF-8 replaced) through lexer, parser and checks; a valid
/// configuration also builds a data-plane snapshot and carp shell configurations. Inputs that
/// say `include` are skipped: they would read arbitrary files of the fuzzing host (the include
/// path itself is covered by tests/config_err.rs).
pub fn config(data: &[u8]) {
    if data.len() > 64 * 1024 {
        return;
    }
    let text = String::from_utf8_lossy(data);
    if text.contains("include") {
        return;
    }
    match config::parse_str("fuzz.conf", &text, &[]) {
        Err(e) => {
            assert!(
                e.errors().next().is_some(),
                "a refused configuration names at least one error"
            );
            let _ = e.to_string();
        }
        Ok(cfg) => {
            // Keep the snapshot cost bounded: huge tables would make the target slow, not
            // find bugs.
            if cfg.hosts().count() <= 64 {
                let _ = Snapshot::build(
                    &cfg,
                    &replay::replay_host_states(&cfg),
                    Link::default(),
                    None,
                );
            }
            let _ = carpio::carp::from_config::shell_configs(&cfg);
        }
    }
}

// ---- ctl ------------------------------------------------------------------------------------

/// A control request line: it parses or gets an error text, and a request that parses
/// serialises to a line that parses to the same request. Responses (what carpioctl decodes)
/// are tried too.
pub fn ctl(data: &[u8]) {
    match proto::parse_request(data) {
        Ok(req) => {
            let line = proto::to_line(&req);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let again = proto::parse_request(line.trim_end().as_bytes())
                .unwrap_or_else(|e| panic!("our own request line does not parse: {e}: {line}"));
            assert_eq!(again, req, "request round trip through {line}");
        }
        Err(e) => assert!(!e.is_empty()),
    }
    if let Ok(resp) = serde_json::from_slice::<proto::Response>(data) {
        let _ = proto::to_line(&resp);
    }
}

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target by name (the smoke test and the seed writer iterate over it).
pub const TARGETS: [(&str, Body); 6] = [
    ("classify", classify),
    ("worker", worker),
    ("carp", carp),
    ("pfsync", pfsync),
    ("config", config),
    ("ctl", ctl),
];
