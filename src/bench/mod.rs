//! `carpio bench`: the benchmark harness (issue 10).
//!
//! - [`engine`]: the traffic engine (`carpio bench gen`): captures or synthetic profiles sent
//!   through carpio's own AF_PACKET/AF_XDP paths, rate control, response matching with HDR
//!   latency histograms and loss counting.
//! - [`suite`]: `carpio bench [--smoke]`: the network-namespace lab, every scenario against
//!   carpio and the peers a user would pick instead, with repetitions; results as JSON, a
//!   markdown table of medians and ratios, and SVG plots ([`report`]).
//! - [`failover`]: carp failover time, carpio vs ucarp (method of examples/failover.rs).
//! - [`health`]: health-check reaction time (method of examples/health_detect.rs).
//! - [`tools`]: small helpers the suite runs inside lab namespaces (UDP/TCP echo servers, a TCP
//!   connection-rate client), as hidden subcommands of the same binary.

pub mod engine;
pub mod failover;
pub mod health;
pub mod report;
pub mod suite;
pub mod tools;

use clap::{Args, Subcommand};
use engine::{GenConfig, Io, Profile, Rate, Rewrite};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// `carpio bench ...`
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub cmd: Option<BenchCmd>,
    /// A short run (about a second per scenario, one repetition): checks every scenario works.
    #[arg(long)]
    pub smoke: bool,
    /// Directory for results.json, results.md and the SVG plots.
    #[arg(short = 'o', long = "out", default_value = "target/bench")]
    pub out: PathBuf,
    /// Repetitions of every case (the table shows medians).
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Seconds per case.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Only these scenarios (comma-separated): gen, udp, dns, dnsperf, ntp, tcp_conn, tcp_bulk,
    /// failover, health.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// carpio binary for the balancer (default: this one).
    #[arg(long)]
    pub carpio: Option<PathBuf>,
    /// Offered rate of the UDP cases in packets per second (DNS gets half, NTP a quarter).
    #[arg(long, default_value_t = 50_000)]
    pub pps: u64,
    /// Ingress of carpio in the lab: afpacket (its default ring), afpacket-v2, afpacket-v3 or
    /// afxdp.
    #[arg(long, default_value = "afpacket")]
    pub ingress: String,
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Send a capture or a synthetic profile on an interface and match the answers.
    Gen(Box<GenArgs>),
    /// (lab helper) UDP echo server until killed or --secs.
    #[command(hide = true)]
    UdpEcho {
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 600)]
        secs: u64,
    },
    /// (lab helper) TCP echo/sink server until killed or --secs.
    #[command(hide = true)]
    TcpEcho {
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 600)]
        secs: u64,
    },
    /// (lab helper) TCP connections per second: connect, 1-byte echo, close; prints JSON.
    #[command(hide = true)]
    Connrate {
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        #[arg(long, default_value_t = 2)]
        threads: u32,
    },
    /// (lab helper) one carp node on eth0 (macvlan VIP) until killed or --secs.
    #[command(hide = true)]
    CarpNode {
        vip: Ipv4Addr,
        advbase: u8,
        skew: u8,
        #[arg(long, default_value_t = 600)]
        secs: u64,
    },
    /// (lab helper) TCP bulk throughput to a sink; prints JSON.
    #[command(hide = true)]
    Bulk {
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
}

/// `carpio bench gen`.
#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// Interface to send on (and receive answers from).
    #[arg(short = 'i', long = "iface")]
    pub iface: String,
    /// Replay this capture (pcap/pcapng) instead of a synthetic profile.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Synthetic profile: udp64, dns, ntp, syn.
    #[arg(long, default_value = "udp64")]
    pub profile: String,
    /// Destination (synthetic: required, repeat to spread flows over several; capture: the
    /// first rewrites every IPv4 destination).
    #[arg(long)]
    pub dst: Vec<Ipv4Addr>,
    /// Destination port of the synthetic profile (default: the profile's: 7, 53, 123, 80).
    #[arg(long)]
    pub dport: Option<u16>,
    /// Source address of the synthetic profile (and of ARP requests).
    #[arg(long)]
    pub src: Option<Ipv4Addr>,
    /// Spread sources over this IPv4 network (CIDR), one host per pass.
    #[arg(long)]
    pub src_net: Option<String>,
    /// Destination MAC (default: ARP for --gw or --dst).
    #[arg(long)]
    pub dst_mac: Option<String>,
    /// Source MAC (default: the interface's).
    #[arg(long)]
    pub src_mac: Option<String>,
    /// Next hop to ARP for when it is not --dst.
    #[arg(long)]
    pub gw: Option<Ipv4Addr>,
    /// Synthetic flows per pass.
    #[arg(long, default_value_t = 256)]
    pub flows: u32,
    /// Passes with distinct source ports before they repeat (0 = never repeat).
    #[arg(long, default_value_t = 0)]
    pub variants: u32,
    /// Fixed rate in packets per second.
    #[arg(long, conflicts_with_all = ["speed", "topspeed"])]
    pub pps: Option<u64>,
    /// Capture pace multiplier (1 = as recorded).
    #[arg(long, conflicts_with = "topspeed")]
    pub speed: Option<f64>,
    /// Flat out.
    #[arg(long)]
    pub topspeed: bool,
    /// Frames to send in all (0 = until --duration).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Do not match answers (send only).
    #[arg(long)]
    pub no_match: bool,
    /// Milliseconds to wait for answers after the last frame.
    #[arg(long, default_value_t = 300)]
    pub grace_ms: u64,
    /// afpacket or afxdp.
    #[arg(long, default_value = "afpacket")]
    pub io: String,
    /// Frames per send call.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    crate::lab::parse_mac(s).ok_or_else(|| format!("bad MAC address {s:?}"))
}

fn iface_mac(ifname: &str) -> Result<[u8; 6], String> {
    // sysfs shows the namespace it was mounted in: right under `ip netns exec`.
    let p = format!("/sys/class/net/{ifname}/address");
    let s = std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"))?;
    parse_mac(s.trim())
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let a: Ipv4Addr = a.parse().map_err(|_| format!("bad network {s:?}"))?;
    let l: u8 = l
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or(format!("bad prefix in {s:?}"))?;
    Ok((a, l))
}

/// Runs `carpio bench gen`; returns the report.
pub fn generate(a: &GenArgs) -> Result<engine::GenReport, String> {
    let mut drops = crate::counters::Counters::<{ engine::GenDrop::COUNT }>::default();
    let templates = match &a.pcap {
        Some(p) => {
            engine::load_capture(p, &mut drops).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => {
            let profile = Profile::parse(&a.profile).ok_or(format!(
                "unknown profile {:?} (udp64, dns, ntp, syn)",
                a.profile
            ))?;
            if a.dst.is_empty() {
                return Err("--dst is needed for a synthetic profile".into());
            }
            let src = a.src.ok_or("--src is needed for a synthetic profile")?;
            engine::synth_templates(
                profile,
                a.flows,
                src,
                &a.dst,
                a.dport.unwrap_or(profile.default_port()),
            )
        }
    };
    let mut templates = templates;
    let src_mac = match &a.src_mac {
        Some(m) => parse_mac(m)?,
        None => iface_mac(&a.iface)?,
    };
    let dst_mac = match (&a.dst_mac, a.gw) {
        (Some(m), _) => Some(parse_mac(m)?),
        (None, Some(gw)) => {
            let src = a.src.ok_or("--src is needed to ARP (or give --dst-mac)")?;
            Some(
                engine::resolve_arp(&a.iface, src_mac, src, gw, Duration::from_secs(3))
                    .map_err(|e| e.to_string())?,
            )
        }
        (None, None) if a.pcap.is_some() || a.dst.len() == 1 => {
            let target = *a.dst.first().ok_or("--dst-mac, --gw or --dst is needed")?;
            let src = a.src.ok_or("--src is needed to ARP (or give --dst-mac)")?;
            Some(
                engine::resolve_arp(&a.iface, src_mac, src, target, Duration::from_secs(3))
                    .map_err(|e| e.to_string())?,
            )
        }
        (None, None) => {
            // Several on-link destinations: each flow's frame gets its own destination's MAC.
            let src = a.src.ok_or("--src is needed to ARP (or give --dst-mac)")?;
            let mut macs = Vec::new();
            for d in &a.dst {
                macs.push(
                    engine::resolve_arp(&a.iface, src_mac, src, *d, Duration::from_secs(3))
                        .map_err(|e| e.to_string())?,
                );
            }
            for (i, t) in templates.iter_mut().enumerate() {
                t.frame[0..6].copy_from_slice(&macs[i % macs.len()]);
            }
            None
        }
    };
    let rate = match (a.pps, a.speed, a.topspeed) {
        (Some(p), _, _) => Rate::Pps(p.max(1)),
        (_, Some(s), _) => Rate::Recorded { speed: s },
        (_, _, true) => Rate::Top,
        // A capture plays at its pace; a profile at a modest fixed rate.
        _ if a.pcap.is_some() => Rate::Recorded { speed: 1.0 },
        _ => Rate::Pps(10_000),
    };
    let io = match a.io.as_str() {
        "afpacket" => Io::AfPacket,
        "afxdp" => Io::AfXdp,
        o => return Err(format!("unknown --io {o:?} (afpacket, afxdp)")),
    };
    let cfg = GenConfig {
        ifname: a.iface.clone(),
        io,
        rate,
        count: a.count,
        duration: Duration::from_secs_f64(a.duration.clamp(0.01, 86_400.0)),
        variants: a.variants,
        rewrite: Rewrite {
            src_mac: Some(src_mac),
            dst_mac,
            dst_v4: if a.pcap.is_some() {
                a.dst.first().copied()
            } else {
                None
            },
            src_net: a.src_net.as_deref().map(parse_cidr).transpose()?,
        },
        matching: !a.no_match,
        grace: Duration::from_millis(a.grace_ms.min(60_000)),
        batch: a.batch,
    };
    let mut r = engine::run(&cfg, &templates).map_err(|e| e.to_string())?;
    for (i, d) in engine::GenDrop::ALL.iter().enumerate() {
        if let Some(c) = r.counters.iter_mut().find(|c| c.0 == d.name()) {
            c.1 += drops.get(i);
        }
    }
    Ok(r)
}

/// Human-readable report.
pub fn render_gen(r: &engine::GenReport) -> String {
    let mut s = format!(
        "sent {} frames ({} bytes) in {:.3} s: {:.0} pps\n",
        r.sent, r.sent_bytes, r.elapsed_s, r.pps
    );
    if r.requests > 0 {
        s += &format!(
            "requests {} answered {} lost {} ({:.2} %), {:.0} answers/s\nlatency us p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}\n",
            r.requests,
            r.matched,
            r.lost,
            r.loss_pct,
            r.answered_per_s,
            r.latency_us_p50,
            r.latency_us_p90,
            r.latency_us_p99,
            r.latency_us_max
        );
    }
    for (k, v) in &r.counters {
        if *v > 0 {
            s += &format!("{k} {v}\n");
        }
    }
    s
}

/// Entry point of `carpio bench`; returns the process exit code.
pub fn main(args: BenchArgs) -> u8 {
    match args.cmd {
        Some(BenchCmd::Gen(a)) => match generate(&a) {
            Ok(r) => {
                if a.json {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                } else {
                    print!("{}", render_gen(&r));
                }
                0
            }
            Err(e) => {
                eprintln!("carpio: bench gen: {e}");
                1
            }
        },
        Some(BenchCmd::UdpEcho { addr, secs }) => tools::exit(tools::udp_echo(addr, secs)),
        Some(BenchCmd::TcpEcho { addr, secs }) => tools::exit(tools::tcp_echo(addr, secs)),
        Some(BenchCmd::Connrate {
            addr,
            secs,
            threads,
        }) => tools::exit(tools::connrate(addr, secs, threads)),
        Some(BenchCmd::Bulk { addr, secs }) => tools::exit(tools::bulk(addr, secs)),
        Some(BenchCmd::CarpNode {
            vip,
            advbase,
            skew,
            secs,
        }) => tools::exit(tools::carp_node(vip, advbase, skew, secs)),
        None => match suite::run(&args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("carpio: bench: {e}");
                1
            }
        },
    }
}
