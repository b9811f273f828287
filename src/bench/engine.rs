//! The traffic engine of `carpio bench gen`: sends frames from a capture or a synthetic profile
//! through carpio's own batched devices (AF_PACKET `sendmmsg` with `PACKET_QDISC_BYPASS`, or
//! an AF_XDP socket), at the capture's recorded pace, a multiple of it, a fixed rate or flat
//! out, and matches the responses it receives on a TPACKET_V3 ring to the requests it sent.
//!
//! A small capture becomes many flows: each pass over the templates (a *variant*) moves the
//! source port (and, with a source network, the IPv4 source address), and the IP and L4
//! checksums are patched incrementally (RFC 1624) instead of being recomputed.
//!
//! Matching: a sent request leaves `(client address, client port, tag)` with its send time in
//! a fixed, preallocated table; a response to that address and port with the same tag (DNS id;
//! TCP SYN-ACK's ack - 1 = the SYN's sequence number; nothing for other UDP) takes the entry out
//! and records the latency in an HDR histogram. A request whose slot is reused before its
//! answer arrived, or that is still waiting at the end, is lost. Per-packet work allocates
//! nothing and takes no lock; the clock is read once per batch.

use crate::counters::Counters;
use crate::phy::{Batch, DevDrop, Device, Verdict};
use crate::sys::afpacket::{RingConfig, RingVersion};
use crate::sys::cbpf::{BPF_K, BPF_RET, Insn};
use crate::wire::checksum;
use crate::wire::classify::LinkType;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

crate::named_counters! {
    /// What the engine did with frames and responses it could not use.
    pub enum GenDrop {
        /// A capture frame that is not Ethernet or raw IP: never sent.
        LinkUnsupported = "gen_drop_link_unsupported",
        /// A frame the kernel did not take (full queue): sent again on the next round.
        TxBusy = "gen_tx_busy",
        /// A received frame that answers none of the outstanding requests.
        Unmatched = "gen_rx_unmatched",
        /// A received frame that is not IPv4/IPv6 UDP or TCP (ARP, ICMP, ...).
        NotL4 = "gen_rx_not_l4",
        /// A request whose table slot was taken by a newer one before its answer came.
        Evicted = "gen_req_evicted",
    }
}

/// Synthetic request profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Profile {
    /// 64-byte Ethernet frames: IPv4 UDP with an 18-byte payload, to port 7 (echo) by default.
    Udp64,
    /// DNS queries (`who.svc.test` TXT... A), port 53.
    Dns,
    /// NTPv4 client requests, port 123.
    Ntp,
    /// TCP SYNs, port 80 by default.
    Syn,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "udp64" | "udp" => Self::Udp64,
            "dns" => Self::Dns,
            "ntp" => Self::Ntp,
            "syn" | "tcp-syn" => Self::Syn,
            _ => return None,
        })
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp64 => 7,
            Self::Dns => 53,
            Self::Ntp => 123,
            Self::Syn => 80,
        }
    }
}

/// How fast to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// The capture's own timestamps, divided by `speed` (1.0 = recorded pace, 2.0 = twice as
    /// fast).
    Recorded { speed: f64 },
    /// A fixed number of packets per second.
    Pps(u64),
    /// As fast as the device takes them.
    Top,
}

/// One frame to send, with where its headers are.
#[derive(Debug, Clone)]
pub struct Template {
    pub frame: Vec<u8>,
    /// Capture time relative to the first frame.
    pub rel_ns: u64,
    l3: Option<L3>,
}

#[derive(Debug, Clone, Copy)]
struct L3 {
    off: usize,
    v4: bool,
    proto: u8,
    l4: usize,
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_VLAN: [u16; 2] = [0x8100, 0x88a8];
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Finds the IP and L4 headers of an Ethernet frame (one or two VLAN tags allowed).
fn locate(frame: &[u8]) -> Option<L3> {
    let mut et_at = 12;
    let mut et = be16(frame, et_at)?;
    for _ in 0..2 {
        if ETH_P_VLAN.contains(&et) {
            et_at += 4;
            et = be16(frame, et_at)?;
        }
    }
    let off = et_at + 2;
    let (v4, proto, l4) = match et {
        ETH_P_IPV4 => {
            let ihl = usize::from(*frame.get(off)? & 0x0f) * 4;
            // Fragments other than the first have no L4 header to rewrite.
            let frag = be16(frame, off + 6)? & 0x1fff;
            if ihl < 20 || frag != 0 {
                return None;
            }
            (true, *frame.get(off + 9)?, off + ihl)
        }
        // Extension headers are left alone: the frame is sent, but not rewritten.
        ETH_P_IPV6 => (false, *frame.get(off + 6)?, off + 40),
        _ => return None,
    };
    let need = if proto == PROTO_TCP { 20 } else { 8 };
    if (proto == PROTO_TCP || proto == PROTO_UDP) && frame.len() >= l4 + need {
        Some(L3 { off, v4, proto, l4 })
    } else {
        None
    }
}

impl Template {
    /// A template from an Ethernet frame.
    pub fn new(frame: Vec<u8>, rel_ns: u64) -> Self {
        let l3 = locate(&frame);
        Self { frame, rel_ns, l3 }
    }

    /// True when the engine can rewrite (and match) this frame.
    pub fn rewritable(&self) -> bool {
        self.l3.is_some()
    }
}

/// Loads a capture's frames as templates. Raw-IP frames get an Ethernet header; frames of other
/// link types are counted in `drops` and skipped.
pub fn load_capture(
    path: &Path,
    drops: &mut Counters<{ GenDrop::COUNT }>,
) -> io::Result<Vec<Template>> {
    let frames = crate::phy::pcap::read_all(path)?;
    let t0 = frames.first().map(|f| f.ts_ns).unwrap_or(0);
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        let rel = f.ts_ns.saturating_sub(t0);
        let frame = match f.link {
            Some(LinkType::Ethernet) => f.data,
            Some(LinkType::RawIp) => {
                let et = match f.data.first().map(|b| b >> 4) {
                    Some(4) => ETH_P_IPV4,
                    Some(6) => ETH_P_IPV6,
                    _ => {
                        drops.add(GenDrop::LinkUnsupported.index(), 1);
                        continue;
                    }
                };
                let mut e = vec![0u8; 14];
                e[12..14].copy_from_slice(&et.to_be_bytes());
                e.extend_from_slice(&f.data);
                e
            }
            _ => {
                drops.add(GenDrop::LinkUnsupported.index(), 1);
                continue;
            }
        };
        out.push(Template::new(frame, rel));
    }
    Ok(out)
}

/// Builds `flows` requests of `profile` from `src` (ports from 10000 up) to `dport` of `dsts`
/// (flow `i` to `dsts[i % len]`).
pub fn synth_templates(
    profile: Profile,
    flows: u32,
    src: Ipv4Addr,
    dsts: &[Ipv4Addr],
    dport: u16,
) -> Vec<Template> {
    let Some(&first) = dsts.first() else {
        return Vec::new();
    };
    use pnet_packet::ip::IpNextHeaderProtocols as P;
    let mut out = Vec::with_capacity(flows as usize);
    for i in 0..flows.max(1) {
        let sport = 10000u16.wrapping_add((i % 50000) as u16);
        let (proto, tcp, payload) = match profile {
            Profile::Udp64 => (P::Udp, None, vec![0x55u8; 18]),
            Profile::Dns => (
                P::Udp,
                None,
                crate::synth::dns_query((i as u16).wrapping_mul(7919), "www.svc.test"),
            ),
            Profile::Ntp => (P::Udp, None, crate::synth::ntp_request(u64::from(i) << 32)),
            Profile::Syn => (
                P::Tcp,
                Some((
                    0x1000_0000u32.wrapping_add(i.wrapping_mul(104_729)),
                    0,
                    0x02,
                )),
                Vec::new(),
            ),
        };
        let f = crate::synth::build_frame(
            [0; 6],
            [0; 6],
            IpAddr::V4(src),
            IpAddr::V4(dsts.get(i as usize % dsts.len()).copied().unwrap_or(first)),
            proto,
            sport,
            dport,
            tcp,
            &payload,
        );
        out.push(Template::new(f, u64::from(i) * 1000));
    }
    out
}

/// Where and how to rewrite every frame before sending it.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    pub src_mac: Option<[u8; 6]>,
    pub dst_mac: Option<[u8; 6]>,
    /// New IPv4 destination (a capture pointed at a VIP).
    pub dst_v4: Option<Ipv4Addr>,
    /// IPv4 source network (base, prefix length): variant `v` uses host `v mod size`. `None`
    /// keeps the captured source addresses.
    pub src_net: Option<(Ipv4Addr, u8)>,
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// L4 checksum field offset, and whether a zero there means "none" (UDP over IPv4).
fn csum_at(l: &L3) -> (usize, bool) {
    if l.proto == PROTO_TCP {
        (l.l4 + 16, false)
    } else {
        (l.l4 + 6, l.v4)
    }
}

/// Patches an L4 checksum for a 16-bit change (RFC 1624), keeping UDP's "no checksum".
fn patch_l4(b: &mut [u8], l: &L3, old: &[u8], new: &[u8]) {
    let (at, zero_is_none) = csum_at(l);
    let Some(c) = be16(b, at) else { return };
    if zero_is_none && c == 0 {
        return;
    }
    let mut n = checksum::update_bytes(c, old, new);
    if l.proto == PROTO_UDP {
        n = checksum::udp_nonzero(n);
    }
    put16(b, at, n);
}

/// Applies `rw` and variant `v` to a copy of the template in `buf`.
fn rewrite(buf: &mut [u8], l3: Option<L3>, rw: &Rewrite, v: u32) {
    if let Some(m) = rw.dst_mac
        && let Some(s) = buf.get_mut(0..6)
    {
        s.copy_from_slice(&m);
    }
    if let Some(m) = rw.src_mac
        && let Some(s) = buf.get_mut(6..12)
    {
        s.copy_from_slice(&m);
    }
    let Some(l) = l3 else { return };
    if l.v4 {
        let addr_change = |buf: &mut [u8], at: usize, new: [u8; 4]| {
            let Some(old) = buf.get(at..at + 4).map(|s| [s[0], s[1], s[2], s[3]]) else {
                return;
            };
            if old == new {
                return;
            }
            if let Some(c) = be16(buf, l.off + 10) {
                put16(buf, l.off + 10, checksum::update_bytes(c, &old, &new));
            }
            patch_l4(buf, &l, &old, &new);
            if let Some(s) = buf.get_mut(at..at + 4) {
                s.copy_from_slice(&new);
            }
        };
        if let Some(d) = rw.dst_v4 {
            addr_change(buf, l.off + 16, d.octets());
        }
        if let Some((base, len)) = rw.src_net {
            let size = if len >= 32 { 1 } else { 1u64 << (32 - len) };
            let host = u64::from(v) % size;
            let a = u32::from(base).wrapping_add(host as u32);
            addr_change(buf, l.off + 12, a.to_be_bytes());
        }
    }
    if v != 0 {
        // Source port: variant v moves it by v * 4099 (a prime, so successive variants spread
        // over the whole range), skipping the privileged ports.
        let Some(old) = be16(buf, l.l4) else { return };
        let mut p = old.wrapping_add((v.wrapping_mul(4099) & 0xffff) as u16);
        if p < 1024 {
            p = p.wrapping_add(1024);
        }
        patch_l4(buf, &l, &old.to_be_bytes(), &p.to_be_bytes());
        put16(buf, l.l4, p);
    }
}

/// The matching key of a request (`client=src`) or a response (`client=dst`).
#[inline]
fn key_of(b: &[u8], response: bool) -> Option<u64> {
    let l = locate(b)?;
    let (addr, port) = if l.v4 {
        let at = if response { l.off + 16 } else { l.off + 12 };
        let a = b.get(at..at + 4)?;
        let p = if response {
            be16(b, l.l4 + 2)?
        } else {
            be16(b, l.l4)?
        };
        (u32::from_be_bytes([a[0], a[1], a[2], a[3]]), p)
    } else {
        let at = if response { l.off + 24 } else { l.off + 8 };
        let a = b.get(at..at + 16)?;
        let mut h = 0u32;
        for c in a.chunks_exact(4) {
            h ^= u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        let p = if response {
            be16(b, l.l4 + 2)?
        } else {
            be16(b, l.l4)?
        };
        (h, p)
    };
    let tag = if l.proto == PROTO_TCP {
        // Request: the SYN's sequence number + 1; response: the SYN-ACK's ack number.
        let n = u32::from_be_bytes(
            b.get(l.l4 + 4 + 4 * usize::from(response)..)?
                .get(..4)?
                .try_into()
                .ok()?,
        );
        if response { n } else { n.wrapping_add(1) }
    } else {
        let server_port = if response {
            be16(b, l.l4)?
        } else {
            be16(b, l.l4 + 2)?
        };
        if server_port == 53 {
            u32::from(be16(b, l.l4 + 8)?)
        } else {
            0
        }
    };
    let proto_bit = u64::from(l.proto == PROTO_TCP) << 63;
    Some(
        proto_bit
            ^ (u64::from(addr) << 31)
            ^ (u64::from(port) << 15)
            ^ u64::from(tag).rotate_left(40),
    )
}

#[derive(Clone, Copy, Default)]
struct Pending {
    key: u64,
    /// Send time + 1 (0 = free).
    sent: u64,
}

/// Outstanding requests: open addressing without probing (a newer request evicts).
struct Table {
    slots: Vec<Pending>,
    mask: usize,
}

impl Table {
    fn new(bits: u32) -> Self {
        let n = 1usize << bits;
        Self {
            slots: vec![Pending::default(); n],
            mask: n - 1,
        }
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) as usize & self.mask
    }

    /// Returns true if it evicted a request sent less than a second ago (one that could still
    /// be answered; older ones are lost anyway).
    #[inline]
    fn insert(&mut self, key: u64, now: u64) -> bool {
        let i = self.slot(key);
        let s = &mut self.slots[i];
        let evicted = s.sent != 0 && now.saturating_sub(s.sent) < 1_000_000_000;
        *s = Pending { key, sent: now + 1 };
        evicted
    }

    #[inline]
    fn take(&mut self, key: u64) -> Option<u64> {
        let i = self.slot(key);
        let s = &mut self.slots[i];
        if s.sent != 0 && s.key == key {
            let t = s.sent - 1;
            s.sent = 0;
            Some(t)
        } else {
            None
        }
    }
}

/// Which transmit path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Io {
    /// AF_PACKET sendmmsg (qdisc bypass).
    AfPacket,
    /// AF_XDP socket on queue 0 (copy mode on veth).
    AfXdp,
}

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub ifname: String,
    pub io: Io,
    pub rate: Rate,
    /// Stop after this many frames (0 = no limit).
    pub count: u64,
    /// Stop after this long.
    pub duration: Duration,
    /// Variants (passes over the templates with different source ports/addresses) before the
    /// first one repeats; 0 = unbounded.
    pub variants: u32,
    pub rewrite: Rewrite,
    /// Match responses (for captures: every UDP datagram and TCP SYN is a request).
    pub matching: bool,
    /// How long to keep receiving after the last frame was sent.
    pub grace: Duration,
    pub batch: usize,
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenReport {
    pub sent: u64,
    pub sent_bytes: u64,
    pub elapsed_s: f64,
    pub pps: f64,
    /// Requests that expected an answer, answers matched, and the rest.
    pub requests: u64,
    pub matched: u64,
    pub lost: u64,
    pub loss_pct: f64,
    /// Matched answers per second over the sending time.
    pub answered_per_s: f64,
    pub latency_us_p50: f64,
    pub latency_us_p90: f64,
    pub latency_us_p99: f64,
    pub latency_us_max: f64,
    pub counters: Vec<(String, u64)>,
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A cBPF program that accepts every frame whole.
fn accept_all() -> [Insn; 1] {
    [Insn {
        code: BPF_RET | BPF_K,
        jt: 0,
        jf: 0,
        k: 0x0004_0000,
    }]
}

enum Tx {
    Packet(crate::phy::afpacket::Port),
    Xdp(Box<crate::phy::afxdp::Port>),
}

impl Tx {
    fn send(&mut self, b: &Batch) -> io::Result<usize> {
        match self {
            Tx::Packet(p) => p.send(b),
            Tx::Xdp(p) => p.send(b),
        }
    }
}

/// Receive side: an AF_PACKET ring that sees every frame arriving on the interface.
struct Rx {
    port: crate::phy::afpacket::Port,
    batch: Batch,
    drops: Counters<{ DevDrop::COUNT }>,
}

struct Matcher {
    table: Table,
    hist: Histogram<u64>,
    matched: u64,
}

impl Rx {
    /// Drains what has arrived; answers are matched against `m`.
    fn drain(&mut self, m: &mut Matcher, c: &mut Counters<{ GenDrop::COUNT }>) -> io::Result<()> {
        for _ in 0..64 {
            let n = self.port.recv(&mut self.batch, &mut self.drops)?;
            if n == 0 {
                return Ok(());
            }
            for p in self.batch.iter() {
                let Some(k) = key_of(p.data(), true) else {
                    c.add(GenDrop::NotL4.index(), 1);
                    continue;
                };
                match m.table.take(k) {
                    Some(t) => {
                        m.matched += 1;
                        m.hist.saturating_record(p.ts_ns.saturating_sub(t).max(1));
                    }
                    None => c.add(GenDrop::Unmatched.index(), 1),
                }
            }
        }
        Ok(())
    }
}

/// Length of one pass over `templates` at the recorded pace: the last frame's offset plus one
/// mean gap, so the first frame of the next pass keeps the rhythm.
fn pass_len(templates: &[Template]) -> u64 {
    let n = templates.len().max(1) as u64;
    let last = templates.last().map(|t| t.rel_ns).unwrap_or(0);
    last + last / n + 1
}

/// How many frames from global index `next` are due by recorded time `t` (ns since the start,
/// already multiplied by the speed), at most `max`. Pure: the pacing of `Rate::Recorded`.
fn recorded_due(templates: &[Template], pass_ns: u64, next: u64, t: u64, max: u64) -> u64 {
    let n = templates.len() as u64;
    if n == 0 {
        return 0;
    }
    let mut k = 0u64;
    while k < max {
        let g = next + k;
        let at = (g / n) * pass_ns + templates[(g % n) as usize].rel_ns;
        if at > t {
            break;
        }
        k += 1;
    }
    k
}

/// Sends `templates` as `cfg` says; blocks for the run (at most `duration` + `grace`).
pub fn run(cfg: &GenConfig, templates: &[Template]) -> io::Result<GenReport> {
    if templates.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "nothing to send",
        ));
    }
    let mut counters = Counters::<{ GenDrop::COUNT }>::default();
    let ring = RingConfig {
        block_size: 1 << 20,
        block_nr: 16,
        frame_size: 2048,
        // Short block timeout: answers are timestamped by the kernel, but a quick hand-over
        // keeps the matching table small.
        retire_ms: 1,
        version: RingVersion::V3,
        fanout_group: None,
    };
    let rx_port = crate::phy::afpacket::Port::new(&cfg.ifname, &accept_all(), &ring)?;
    let mut tx = match cfg.io {
        Io::AfPacket => Tx::Packet(crate::phy::afpacket::Port::new(
            &cfg.ifname,
            // Its own ring receives nothing: a filter that accepts no byte.
            &[Insn {
                code: BPF_RET | BPF_K,
                jt: 0,
                jf: 0,
                k: 0,
            }],
            &RingConfig {
                block_size: 4096,
                block_nr: 1,
                frame_size: 2048,
                retire_ms: 10,
                version: RingVersion::V3,
                fanout_group: None,
            },
        )?),
        Io::AfXdp => Tx::Xdp(Box::new(crate::phy::afxdp::Port::new(
            &cfg.ifname,
            0,
            &crate::sys::afxdp::SocketConfig::default(),
        )?)),
    };
    let mut rx = Rx {
        port: rx_port,
        batch: Batch::new(crate::phy::BATCH),
        drops: Counters::default(),
    };
    let mut m = Matcher {
        table: Table::new(18),
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| io::Error::other(e.to_string()))?,
        matched: 0,
    };
    let bsz = cfg.batch.clamp(1, 1024);
    let mut batch = Batch::new(bsz);
    let n = templates.len() as u64;
    // Length of one pass at the recorded pace: the last frame's offset plus one mean gap.
    let pass_ns = pass_len(templates);
    let start = Instant::now();
    let mut next: u64 = 0; // index of the next frame to send
    let mut requests = 0u64;
    let mut bytes = 0u64;
    loop {
        let el = start.elapsed();
        if el >= cfg.duration || (cfg.count > 0 && next >= cfg.count) {
            break;
        }
        let el_ns = el.as_nanos() as u64;
        let due = match cfg.rate {
            Rate::Top => bsz as u64,
            Rate::Pps(p) => {
                let should = (el_ns as u128 * u128::from(p) / 1_000_000_000) as u64 + 1;
                should.saturating_sub(next)
            }
            Rate::Recorded { speed } => recorded_due(
                templates,
                pass_ns,
                next,
                (el_ns as f64 * speed.max(1e-6)) as u64,
                bsz as u64,
            ),
        };
        let mut due = due.min(bsz as u64);
        if cfg.count > 0 {
            due = due.min(cfg.count - next);
        }
        if due == 0 {
            if cfg.matching {
                rx.drain(&mut m, &mut counters)?;
            }
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        batch.clear();
        for k in 0..due {
            let g = next + k;
            let t = &templates[(g % n) as usize];
            let pass = g / n;
            let v = if cfg.variants == 0 {
                pass as u32
            } else {
                (pass % u64::from(cfg.variants)) as u32
            };
            if let Some(slot) = batch.slot() {
                if !slot.fill(&t.frame, 0, LinkType::Ethernet) {
                    continue;
                }
                rewrite(slot.data_mut(), t.l3, &cfg.rewrite, v);
                slot.verdict = Verdict::Tx;
                batch.commit();
            }
        }
        let now = realtime_ns();
        let sent = tx.send(&batch)?;
        if sent < batch.len() {
            counters.add(GenDrop::TxBusy.index(), (batch.len() - sent) as u64);
        }
        for p in batch.iter().take(sent) {
            bytes += p.len() as u64;
            if cfg.matching
                && let Some(k) = key_of(p.data(), false)
            {
                requests += 1;
                if m.table.insert(k, now) {
                    counters.add(GenDrop::Evicted.index(), 1);
                }
            }
        }
        // Frames the kernel did not take are rebuilt from the same index next round.
        next += sent as u64;
        if cfg.matching {
            rx.drain(&mut m, &mut counters)?;
        }
        if sent == 0 {
            std::thread::yield_now();
        }
    }
    let send_time = start.elapsed();
    if cfg.matching {
        let end = Instant::now() + cfg.grace;
        while Instant::now() < end && m.matched < requests {
            rx.drain(&mut m, &mut counters)?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let secs = send_time.as_secs_f64().max(1e-9);
    let q = |x: f64| m.hist.value_at_quantile(x) as f64 / 1000.0;
    let lost = requests.saturating_sub(m.matched);
    let mut list: Vec<(String, u64)> = GenDrop::ALL
        .iter()
        .map(|d| (d.name().to_string(), counters.get(d.index())))
        .collect();
    list.extend(
        DevDrop::ALL
            .iter()
            .map(|d| (format!("gen_rx_{}", d.name()), rx.drops.get(d.index()))),
    );
    Ok(GenReport {
        sent: next,
        sent_bytes: bytes,
        elapsed_s: secs,
        pps: next as f64 / secs,
        requests,
        matched: m.matched,
        lost,
        loss_pct: if requests > 0 {
            100.0 * lost as f64 / requests as f64
        } else {
            0.0
        },
        answered_per_s: m.matched as f64 / secs,
        latency_us_p50: if m.matched > 0 { q(0.5) } else { 0.0 },
        latency_us_p90: if m.matched > 0 { q(0.9) } else { 0.0 },
        latency_us_p99: if m.matched > 0 { q(0.99) } else { 0.0 },
        latency_us_max: if m.matched > 0 {
            m.hist.max() as f64 / 1000.0
        } else {
            0.0
        },
        counters: list,
    })
}

/// Resolves `target`'s MAC address on `ifname` with ARP requests from `src_mac`/`src_ip`
/// (one a second, until `timeout`): the engine bypasses the host stack, so it asks itself.
pub fn resolve_arp(
    ifname: &str,
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    target: Ipv4Addr,
    timeout: Duration,
) -> io::Result<[u8; 6]> {
    use crate::wire::arp;
    let ring = RingConfig {
        block_size: 1 << 16,
        block_nr: 4,
        frame_size: 2048,
        retire_ms: 1,
        version: RingVersion::V3,
        fanout_group: None,
    };
    let mut port = crate::phy::afpacket::Port::new(ifname, &accept_all(), &ring)?;
    let req = arp::Repr {
        op: arp::OP_REQUEST,
        sender_mac: src_mac,
        sender_ip: src_ip,
        target_mac: [0; 6],
        target_ip: target,
    };
    let mut frame = vec![0u8; 14 + arp::PACKET_LEN];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&src_mac);
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    req.emit(&mut frame[14..])
        .map_err(|e| io::Error::other(format!("arp emit: {e}")))?;
    let mut out = Batch::new(1);
    out.push(&frame, 0, LinkType::Ethernet);
    if let Some(p) = out.iter_mut().next() {
        p.verdict = Verdict::Tx;
    }
    let mut inb = Batch::new(crate::phy::BATCH);
    let mut drops = Counters::<{ DevDrop::COUNT }>::default();
    let end = Instant::now() + timeout;
    let mut next_ask = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next_ask {
            port.send(&out)?;
            next_ask = Instant::now() + Duration::from_secs(1);
        }
        port.recv(&mut inb, &mut drops)?;
        for p in inb.iter() {
            let d = p.data();
            if be16(d, 12) == Some(0x0806)
                && let Ok(r) = arp::Repr::parse(&d[14..])
                && r.op == arp::OP_REPLY
                && r.sender_ip == target
            {
                return Ok(r.sender_mac);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no ARP reply from {target} on {ifname}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> Ipv4Addr {
        Ipv4Addr::from(a)
    }

    /// Full recomputation of the IPv4 header and L4 checksums of `f`.
    fn verify(f: &[u8]) {
        let l = locate(f).expect("l3");
        assert_eq!(checksum::checksum(&f[l.off..l.off + 20]), 0, "ip checksum");
        let src = v4(f[l.off + 12..l.off + 16].try_into().unwrap());
        let dst = v4(f[l.off + 16..l.off + 20].try_into().unwrap());
        let seg = &f[l.l4..];
        let acc = checksum::pseudo_v4(src, dst, l.proto, seg.len() as u16);
        assert_eq!(checksum::fold(checksum::sum(seg, acc)), 0, "l4 checksum");
    }

    #[test]
    fn rewrites_keep_checksums_valid() {
        for profile in [Profile::Udp64, Profile::Dns, Profile::Ntp, Profile::Syn] {
            let t = synth_templates(
                profile,
                3,
                v4([198, 18, 0, 100]),
                &[v4([198, 18, 0, 10])],
                profile.default_port(),
            );
            assert_eq!(t.len(), 3);
            if profile == Profile::Udp64 {
                assert_eq!(t[0].frame.len(), 60, "64 bytes on the wire with the FCS");
            }
            let rw = Rewrite {
                src_mac: Some([2, 0, 0, 0, 0, 1]),
                dst_mac: Some([2, 0, 0, 0, 0, 2]),
                dst_v4: Some(v4([198, 18, 0, 20])),
                src_net: Some((v4([198, 19, 0, 0]), 16)),
            };
            for v in [0u32, 1, 7, 65535, 1 << 20] {
                let mut f = t[1].frame.clone();
                rewrite(&mut f, t[1].l3, &rw, v);
                verify(&f);
                let l = locate(&f).unwrap();
                assert_eq!(&f[l.off + 16..l.off + 20], &[198, 18, 0, 20]);
                assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 2]);
                // Ports have 16 bits: variants 2^16 apart share one (the source network moves).
                if v & 0xffff != 0 {
                    assert_ne!(f[l.l4..l.l4 + 2], t[1].frame[l.l4..l.l4 + 2], "port moved");
                    assert!(be16(&f, l.l4).unwrap() >= 1024);
                }
            }
        }
    }

    /// A response built by swapping a request's addresses and ports matches it; another id
    /// or port does not.
    #[test]
    fn responses_match_their_requests() {
        for profile in [Profile::Udp64, Profile::Dns, Profile::Syn] {
            let t = synth_templates(
                profile,
                2,
                v4([198, 18, 0, 100]),
                &[v4([198, 18, 0, 10])],
                profile.default_port(),
            );
            let req = &t[1].frame;
            let l = locate(req).unwrap();
            let mut resp = req.clone();
            resp.copy_within(l.off + 12..l.off + 16, 0); // scratch
            let (s, d) = (
                req[l.off + 12..l.off + 16].to_vec(),
                req[l.off + 16..l.off + 20].to_vec(),
            );
            resp[l.off + 12..l.off + 16].copy_from_slice(&d);
            resp[l.off + 16..l.off + 20].copy_from_slice(&s);
            let (sp, dp) = (
                req[l.l4..l.l4 + 2].to_vec(),
                req[l.l4 + 2..l.l4 + 4].to_vec(),
            );
            resp[l.l4..l.l4 + 2].copy_from_slice(&dp);
            resp[l.l4 + 2..l.l4 + 4].copy_from_slice(&sp);
            if profile == Profile::Syn {
                let seq = u32::from_be_bytes(req[l.l4 + 4..l.l4 + 8].try_into().unwrap());
                resp[l.l4 + 8..l.l4 + 12].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
                resp[l.l4 + 4..l.l4 + 8].copy_from_slice(&[9, 9, 9, 9]);
            }
            let kq = key_of(req, false).unwrap();
            assert_eq!(key_of(&resp, true), Some(kq), "{profile:?}");
            let mut tbl = Table::new(10);
            assert!(!tbl.insert(kq, 5));
            assert_eq!(tbl.take(key_of(&resp, true).unwrap()), Some(5));
            assert_eq!(tbl.take(kq), None, "taken once");
            // Another request of the same profile differs.
            assert_ne!(key_of(&t[0].frame, false), Some(kq));
            if profile == Profile::Dns {
                let mut other = resp.clone();
                other[l.l4 + 8] ^= 1;
                assert_ne!(key_of(&other, true), Some(kq), "DNS id is part of the key");
            }
        }
    }

    /// Recorded pace: frames 0, 1 ms, 3 ms; a pass lasts 3 ms + 1 ms mean gap; twice the speed
    /// halves the wall time (the caller multiplies the elapsed time by the speed).
    #[test]
    fn recorded_pace_follows_the_capture() {
        let t: Vec<Template> = [0u64, 1_000_000, 3_000_000]
            .iter()
            .map(|&ts| Template::new(vec![0; 60], ts))
            .collect();
        let pass = pass_len(&t);
        assert_eq!(pass, 4_000_001);
        assert_eq!(
            recorded_due(&t, pass, 0, 0, 64),
            1,
            "the first frame at once"
        );
        assert_eq!(
            recorded_due(&t, pass, 1, 999_999, 64),
            0,
            "the second not before 1 ms"
        );
        assert_eq!(recorded_due(&t, pass, 1, 1_000_000, 64), 1);
        assert_eq!(recorded_due(&t, pass, 0, 3_500_000, 64), 3);
        // Second pass: its first frame at 4 ms, its second at 5 ms.
        assert_eq!(recorded_due(&t, pass, 3, 4_000_000, 64), 0);
        assert_eq!(recorded_due(&t, pass, 3, 4_000_001, 64), 1);
        assert_eq!(recorded_due(&t, pass, 3, 5_000_001, 64), 2);
        // Ten passes' worth of time is 30 frames, but never more than `max` at once.
        assert_eq!(recorded_due(&t, pass, 0, 10 * pass - 1, 64), 30);
        assert_eq!(recorded_due(&t, pass, 0, 10 * pass - 1, 8), 8);
        // Speed 2: 2 ms of wall time is 4 ms of capture time.
        let speed = 2.0f64;
        assert_eq!(
            recorded_due(&t, pass, 0, (2_000_000.0 * speed) as u64, 64),
            3
        );
        assert_eq!(recorded_due(&[], pass, 0, u64::MAX, 64), 0);
    }

    #[test]
    fn non_ip_frames_are_sent_unrewritten() {
        let arp = vec![0xffu8; 42];
        let t = Template::new(arp.clone(), 0);
        assert!(!t.rewritable());
        let mut f = arp.clone();
        rewrite(
            &mut f,
            t.l3,
            &Rewrite {
                src_mac: Some([2; 6]),
                ..Default::default()
            },
            3,
        );
        assert_eq!(&f[6..12], &[2; 6]);
        assert_eq!(&f[12..], &arp[12..]);
        assert_eq!(key_of(&arp, true), None);
        assert_eq!(key_of(&[], false), None);
    }
}
