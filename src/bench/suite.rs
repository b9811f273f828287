//! `carpio bench [--smoke]`: every scenario against carpio and the peers in one network-namespace
//! lab, in one run, with repetitions interleaved (rep 1 of every subject, then rep 2, ...), so
//! the noise of a shared machine hits all subjects alike.
//!
//! ```text
//!  cl  198.18.0.100, .101 (peers' NAT client), 198.18.1.100 (ceiling client)   ─┐
//!  lb  198.18.0.2, 198.18.1.254: carpio (VIP 198.18.0.10, relay :7001)          ─┤
//!  lb2 198.18.0.3, 198.18.1.253: nftables DNAT (VIP .20), dnsdist (.30),         ─┼─ br0 (ns br)
//!      HAProxy (198.18.0.3:6001)                                                 │
//!  b1..b3 198.18.1.1-3: udp-echo :7, unbound :53, chronyd :123, tcp-echo :9000   ─┘
//!  cl g0 ──veth── gs g1: the engine vs tcpreplay send-rate link
//! ```
//!
//! carpio and the peers run side by side in two balancer namespaces, so no case waits for a
//! daemon to start or inherits another's state. Backends route replies to 198.18.0.101 through
//! lb2 (nftables' return path) and everything else through lb (carpio's).
//!
//! Network safety: a [`Lab`] (`cio-<pid>-bench-*` namespaces, 198.18.0.0/15 only); every
//! process is spawned through the lab and killed by PID on drop, also on error or panic; every
//! client run is bounded by `timeout(1)`.

use super::BenchArgs;
use super::report::{self, Sample};
use crate::lab::{Lab, VethConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const VIP: &str = "198.18.0.10";
const NFT_VIP: &str = "198.18.0.20";
const DNSDIST_VIP: &str = "198.18.0.30";
const CLIENT: &str = "198.18.0.100";
const CLIENT_PEER: &str = "198.18.0.101";
const CLIENT_DIRECT: &str = "198.18.1.100";
const LB_RELAY: &str = "198.18.0.2";
const LB2: &str = "198.18.0.3";
const BACKENDS: [&str; 3] = ["b1", "b2", "b3"];
const UNBOUND_TPL: &str = include_str!("../../scripts/lab/unbound.conf.in");
const CHRONY_TPL: &str = include_str!("../../scripts/lab/chrony.conf.in");

/// Every scenario, in run order.
pub const SCENARIOS: [&str; 9] = [
    "gen", "udp", "dns", "dnsperf", "ntp", "tcp_conn", "tcp_bulk", "failover", "health",
];

fn which(tool: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// utime+stime of `pid` in clock ticks.
fn proc_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) start after ')'.
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// softirq ticks of all cores (/proc/stat): the kernel's forwarding and veth work.
fn softirq_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let l = s.lines().next()?.to_string();
            l.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// USER_HZ: /proc reports times in these ticks, fixed at 100 on Linux whatever the kernel's HZ
/// (the same figure as `getconf CLK_TCK`).
fn clk_tck() -> f64 {
    100.0
}

struct Env {
    lab: Lab,
    dir: PathBuf,
    carpio: String,
    secs: f64,
    pps: u64,
    macs: BTreeMap<&'static str, String>,
    carpio_pid: u32,
    dnsdist_pid: u32,
    haproxy_pid: u32,
    log: Vec<String>,
}

impl Env {
    /// Spawns `args` in `ns` with output to `dir/name.log`.
    fn spawn(&mut self, ns: &str, name: &str, args: &[&str]) -> Result<u32, String> {
        let log = self
            .dir
            .join(format!("{name}.log"))
            .to_string_lossy()
            .into_owned();
        let mut sh = vec!["sh", "-c", "exec \"$@\" >\"$0\" 2>&1", &log];
        sh.extend_from_slice(args);
        self.lab.spawn(ns, &sh).map_err(|e| format!("{name}: {e}"))
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        self.lab
            .exec(ns, args)
            .map(|o| text(&o.stdout))
            .map_err(|e| e.to_string())
    }

    /// Runs a client bounded by timeout(1); returns stdout even on failure exit.
    fn client(&self, ns: &str, limit_s: f64, args: &[&str]) -> Result<String, String> {
        let full = self.lab.ns_name(ns);
        let lim = format!("{:.0}", limit_s.ceil() + 10.0);
        let out = Command::new("ip")
            .args(["netns", "exec", &full, "timeout", &lim])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", args[0]))?;
        if !out.status.success() && out.stdout.is_empty() {
            return Err(format!(
                "{}: {}: {}",
                args.join(" "),
                out.status,
                text(&out.stderr).trim()
            ));
        }
        Ok(text(&out.stdout))
    }

    fn note(&mut self, s: String) {
        eprintln!("bench: {s}");
        self.log.push(s);
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn topology(env: &mut Env) -> Result<(), String> {
    let e = |x: std::io::Error| x.to_string();
    let lab = &mut env.lab;
    for n in ["br", "cl", "lb", "lb2", "b1", "b2", "b3", "gs"] {
        lab.ns(n).map_err(e)?;
    }
    let ports = [
        ("cl", "eth0"),
        ("lb", "lb0"),
        ("lb2", "lb0"),
        ("b1", "eth0"),
        ("b2", "eth0"),
        ("b3", "eth0"),
    ];
    for (n, ifname) in ports {
        lab.veth(&VethConfig::new("br", &format!("p-{n}"), n, ifname))
            .map_err(e)?;
    }
    lab.bridge(
        "br",
        "br0",
        &["p-cl", "p-lb", "p-lb2", "p-b1", "p-b2", "p-b3"],
    )
    .map_err(e)?;
    lab.veth(&VethConfig::new("cl", "g0", "gs", "g1"))
        .map_err(e)?;
    // Full checksums on the wire (veth's offload leaves them half done for a bypassing
    // balancer, tests/e2e_services.rs).
    for (n, ifname) in ports.iter().chain([("cl", "g0"), ("gs", "g1")].iter()) {
        lab.exec(n, &["ethtool", "-K", ifname, "tx", "off"])
            .map_err(e)?;
    }
    // The send-rate link's receiver drops every frame at its netdev ingress hook (nftables):
    // the `gen` scenario measures the senders, so the receiving side's per-frame work (the same
    // for both tools, on the same shared cores) is kept as small as the kernel allows.
    let rules = "table netdev cio_sink {\n chain in {\n  type filter hook ingress device g1 priority 0; policy drop;\n }\n}\n";
    let f = env.dir.join("gs-nft.conf");
    std::fs::write(&f, rules).map_err(|x| x.to_string())?;
    let lab = &mut env.lab;
    lab.exec("gs", &["nft", "-f", &f.to_string_lossy()])
        .map_err(e)?;
    for a in [CLIENT, CLIENT_PEER] {
        lab.addr("cl", "eth0", &format!("{a}/24")).map_err(e)?;
    }
    lab.addr("cl", "eth0", &format!("{CLIENT_DIRECT}/24"))
        .map_err(e)?;
    lab.addr("cl", "g0", "198.18.9.1/24").map_err(e)?;
    lab.addr("gs", "g1", "198.18.9.2/24").map_err(e)?;
    lab.addr("lb", "lb0", &format!("{LB_RELAY}/24"))
        .map_err(e)?;
    lab.addr("lb", "lb0", "198.18.1.254/24").map_err(e)?;
    lab.exec("lb", &["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        .map_err(e)?;
    lab.addr("lb2", "lb0", &format!("{LB2}/24")).map_err(e)?;
    lab.addr("lb2", "lb0", "198.18.1.253/24").map_err(e)?;
    for v in [NFT_VIP, DNSDIST_VIP] {
        lab.addr("lb2", "lb0", &format!("{v}/32")).map_err(e)?;
    }
    lab.exec(
        "lb2",
        &[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.lb0.send_redirects=0",
        ],
    )
    .map_err(e)?;
    for (i, b) in BACKENDS.iter().enumerate() {
        lab.addr(b, "eth0", &format!("198.18.1.{}/24", i + 1))
            .map_err(e)?;
        lab.ip(b, &["route", "add", "default", "via", "198.18.1.254"])
            .map_err(e)?;
        lab.ip(
            b,
            &[
                "route",
                "add",
                &format!("{CLIENT_PEER}/32"),
                "via",
                "198.18.1.253",
            ],
        )
        .map_err(e)?;
    }
    Ok(())
}

fn fill(tpl: &str, name: &str, addr: &str, dir: &Path, stratum: u32) -> String {
    tpl.replace("@NAME@", name)
        .replace("@ADDR@", addr)
        .replace("@DIR@", &dir.to_string_lossy())
        .replace("@STRATUM@", &stratum.to_string())
}

fn listening(env: &Env, ns: &str, proto: char, port: u16) -> bool {
    env.exec(
        ns,
        &["ss", &format!("-Hln{proto}"), &format!("sport = :{port}")],
    )
    .map(|o| !o.trim().is_empty())
    .unwrap_or(false)
}

fn servers(env: &mut Env) -> Result<(), String> {
    let unbound = which("unbound").ok_or("unbound missing (scripts/deps.sh)")?;
    let chronyd = which("chronyd").ok_or("chronyd missing (scripts/deps.sh)")?;
    let carpio = env.carpio.clone();
    for (i, b) in BACKENDS.iter().enumerate() {
        let d = env.dir.join(b);
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let addr = format!("198.18.1.{}", i + 1);
        let ub = d.join("unbound.conf");
        std::fs::write(&ub, fill(UNBOUND_TPL, b, &addr, &d, 3 + i as u32))
            .map_err(|e| e.to_string())?;
        let ch = d.join("chrony.conf");
        std::fs::write(&ch, fill(CHRONY_TPL, b, &addr, &d, 3 + i as u32))
            .map_err(|e| e.to_string())?;
        env.spawn(
            b,
            &format!("{b}-unbound"),
            &[&unbound, "-d", "-c", &ub.to_string_lossy()],
        )?;
        env.spawn(
            b,
            &format!("{b}-chronyd"),
            &[
                &chronyd,
                "-x",
                "-d",
                "-u",
                "root",
                "-f",
                &ch.to_string_lossy(),
            ],
        )?;
        env.spawn(
            b,
            &format!("{b}-udp-echo"),
            &[&carpio, "bench", "udp-echo", "0.0.0.0:7", "--secs", "3600"],
        )?;
        env.spawn(
            b,
            &format!("{b}-tcp-echo"),
            &[
                &carpio,
                "bench",
                "tcp-echo",
                "0.0.0.0:9000",
                "--secs",
                "3600",
            ],
        )?;
    }
    for b in BACKENDS {
        for (p, port) in [('u', 53), ('u', 123), ('u', 7), ('t', 9000)] {
            if !wait_until(Duration::from_secs(10), || listening(env, b, p, port)) {
                return Err(format!("nothing listens on {p}/{port} in {b}"));
            }
        }
    }
    Ok(())
}

fn carpio_conf(ingress: &str, sock: &Path) -> String {
    format!(
        "vip = {VIP}\n\
         interface lb0 {{ {ingress} }}\n\
         control socket \"{}\"\n\
         table <echo> {{ 198.18.1.1, 198.18.1.2, 198.18.1.3 }}\n\
         table <dns> {{ 198.18.1.1, 198.18.1.2, 198.18.1.3 }}\n\
         table <ntp> {{ 198.18.1.1, 198.18.1.2, 198.18.1.3 }}\n\
         redirect echo {{\n listen on $vip udp port 7\n forward to <echo> mode roundrobin check icmp\n}}\n\
         redirect dns {{\n listen on $vip udp port 53\n forward to <dns> mode roundrobin check icmp\n}}\n\
         redirect ntp {{\n listen on $vip udp port 123\n forward to <ntp> mode roundrobin check icmp\n}}\n\
         protocol bench {{ tcp {{ nodelay, backlog 512 }} }}\n\
         relay conn {{\n listen on {LB_RELAY} port 7001\n protocol bench\n forward to 198.18.1.1 port 9000\n}}\n",
        sock.display()
    )
}

/// The balancers: carpio in lb; nftables DNAT, dnsdist and HAProxy in lb2.
fn balancers(env: &mut Env, ingress: &str) -> Result<(), String> {
    // carpio
    let sock = env.dir.join("carpio.sock");
    let conf = env.dir.join("carpio.conf");
    std::fs::write(&conf, carpio_conf(ingress, &sock)).map_err(|e| e.to_string())?;
    let carpio = env.carpio.clone();
    env.carpio_pid = env.spawn(
        "lb",
        "carpio",
        &[&carpio, "-d", "-f", &conf.to_string_lossy()],
    )?;
    // nftables DNAT: round robin per new connection (conntrack keeps each flow on its backend),
    // like carpio's `mode roundrobin` with its flow table.
    let map = "{ 0 : 198.18.1.1, 1 : 198.18.1.2, 2 : 198.18.1.3 }";
    let rules = format!(
        "table ip cio_bench {{\n chain pre {{\n  type nat hook prerouting priority dstnat; policy accept;\n\
         \x20 ip daddr {NFT_VIP} udp dport {{ 7, 53, 123 }} dnat to numgen inc mod 3 map {map}\n }}\n}}\n"
    );
    let f = env.dir.join("nft.conf");
    std::fs::write(&f, rules).map_err(|e| e.to_string())?;
    env.exec("lb2", &["nft", "-f", &f.to_string_lossy()])?;
    // dnsdist
    if let Some(dnsdist) = which("dnsdist") {
        let c = env.dir.join("dnsdist.conf");
        std::fs::write(
            &c,
            format!(
                "-- No security polling (a query leaving the lab), no console, no carbon.\n\
                 setSecurityPollSuffix(\"\")\nsetLocal(\"{DNSDIST_VIP}:53\")\nsetACL({{\"198.18.0.0/15\"}})\n\
                 newServer({{address=\"198.18.1.1:53\"}})\nnewServer({{address=\"198.18.1.2:53\"}})\n\
                 newServer({{address=\"198.18.1.3:53\"}})\nsetServerPolicy(roundrobin)\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        env.dnsdist_pid = env.spawn(
            "lb2",
            "dnsdist",
            &[
                &dnsdist,
                "--supervised",
                "--disable-syslog",
                "-C",
                &c.to_string_lossy(),
            ],
        )?;
    }
    if let Some(haproxy) = which("haproxy") {
        let c = env.dir.join("haproxy.cfg");
        std::fs::write(
            &c,
            format!(
                "global\n  maxconn 4000\n  nbthread 2\ndefaults\n  mode tcp\n  timeout connect 5s\n\
                 \x20 timeout client 60s\n  timeout server 60s\n  option splice-request\n  option splice-response\n\
                 frontend conn\n  bind {LB2}:6001\n  default_backend conn\nbackend conn\n  server s1 198.18.1.1:9000\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        env.haproxy_pid = env.spawn(
            "lb2",
            "haproxy",
            &[&haproxy, "-db", "-f", &c.to_string_lossy()],
        )?;
    }
    // carpio answers through its VIP (bounded).
    let dig = which("dig").ok_or("dig missing (scripts/deps.sh)")?;
    let ok = wait_until(Duration::from_secs(20), || {
        env.client(
            "cl",
            2.0,
            &[
                &dig,
                "+short",
                "+time=1",
                "+tries=1",
                "TXT",
                "who.svc.test",
                &format!("@{VIP}"),
            ],
        )
        .map(|o| o.contains("\"b"))
        .unwrap_or(false)
    });
    if !ok {
        let log = std::fs::read_to_string(env.dir.join("carpio.log")).unwrap_or_default();
        return Err(format!(
            "carpio never answered through {VIP}; its log:\n{log}"
        ));
    }
    for (port, what) in [(7001u16, "carpio relay")] {
        if !wait_until(Duration::from_secs(10), || listening(env, "lb", 't', port)) {
            return Err(format!("{what} does not listen on {port}"));
        }
    }
    Ok(())
}

/// One engine run from the client namespace; returns its JSON report as metrics.
fn engine(env: &Env, iface: &str, extra: &[&str]) -> Result<BTreeMap<String, f64>, String> {
    let secs = format!("{}", env.secs);
    let mut args = vec![
        env.carpio.as_str(),
        "bench",
        "gen",
        "-i",
        iface,
        "--duration",
        &secs,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = env.client("cl", env.secs + 5.0, &args)?;
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("engine output {out:?}: {e}"))?;
    let mut m = BTreeMap::new();
    let matching = v.get("requests").and_then(|x| x.as_f64()).unwrap_or(0.0) > 0.0;
    let keys: &[&str] = if matching {
        &[
            "pps",
            "answered_per_s",
            "loss_pct",
            "latency_us_p50",
            "latency_us_p99",
            "sent",
            "matched",
        ]
    } else {
        &["pps", "sent"]
    };
    for &k in keys {
        if let Some(x) = v.get(k).and_then(|x| x.as_f64()) {
            m.insert(k.to_string(), x);
        }
    }
    Ok(m)
}

/// Runs `f` and adds the CPU per answered packet: `pid`'s utime+stime (0 = the kernel does the
/// work) plus the softirq time of all cores, in ns per `per` unit of the result.
fn with_cpu(
    pid: u32,
    per: &str,
    f: impl FnOnce() -> Result<BTreeMap<String, f64>, String>,
) -> Result<BTreeMap<String, f64>, String> {
    let (p0, s0) = (if pid > 0 { proc_ticks(pid) } else { 0 }, softirq_ticks());
    let mut m = f()?;
    let (p1, s1) = (if pid > 0 { proc_ticks(pid) } else { 0 }, softirq_ticks());
    let n = m.get(per).copied().unwrap_or(0.0);
    if n > 0.0 {
        let ticks = (p1 - p0 + s1.saturating_sub(s0)) as f64;
        m.insert("cpu_ns_per_answer".into(), ticks / clk_tck() * 1e9 / n);
    }
    Ok(m)
}

/// Drops, in the client's kernel, the answers the engine takes from its ring (else the kernel
/// answers each with an ICMP port unreachable the balancers would have to carry).
fn quiet_client(env: &Env, on: bool) -> Result<(), String> {
    if on {
        let f = env.dir.join("cl-nft.conf");
        std::fs::write(
            &f,
            "table ip cio_gen {\n chain in {\n  type filter hook input priority -10; policy accept;\n\
             \x20 udp sport { 7, 53, 123 } udp dport 1024-65535 drop\n }\n}\n",
        )
        .map_err(|e| e.to_string())?;
        env.exec("cl", &["nft", "-f", &f.to_string_lossy()])
            .map(|_| ())
    } else {
        env.exec("cl", &["nft", "delete", "table", "ip", "cio_gen"])
            .map(|_| ())
    }
}

type CaseFn<'a> = Box<dyn Fn(&mut Env) -> Result<BTreeMap<String, f64>, String> + 'a>;

/// The cases of `scenario`: (subject, run).
fn cases<'a>(env: &Env, scenario: &str) -> Vec<(&'static str, CaseFn<'a>)> {
    let pps = env.pps.to_string();
    let qps = (env.pps / 2).max(500).to_string();
    let ntp_pps = (env.pps / 4).max(500).to_string();
    let carpio_pid = env.carpio_pid;
    let udp = |src: &'static str,
               dsts: &'static [&'static str],
               port: &'static str,
               profile: &'static str,
               rate: String,
               pid: u32|
     -> CaseFn<'a> {
        Box::new(move |env: &mut Env| {
            let mut a: Vec<String> = vec![
                "--profile".into(),
                profile.into(),
                "--src".into(),
                src.into(),
                "--dport".into(),
                port.into(),
                "--pps".into(),
                rate.clone(),
                "--flows".into(),
                "256".into(),
                "--variants".into(),
                "4".into(),
            ];
            for d in dsts {
                a.push("--dst".into());
                a.push((*d).into());
            }
            let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
            quiet_client(env, true)?;
            let r = with_cpu(pid, "matched", || engine(env, "eth0", &a));
            let _ = quiet_client(env, false);
            r
        })
    };
    const DIRECT: &[&str] = &["198.18.1.1", "198.18.1.2", "198.18.1.3"];
    const CARPIO_VIP: &[&str] = &[VIP];
    const NFT: &[&str] = &[NFT_VIP];
    const DNSDIST: &[&str] = &[DNSDIST_VIP];
    match scenario {
        "gen" => {
            let pcap = env.dir.join("udp64.pcap");
            let p1 = pcap.clone();
            let mac = env.macs.get("g1").cloned().unwrap_or_default();
            let mac2 = mac.clone();
            vec![
                (
                    "tcpreplay",
                    Box::new(move |env: &mut Env| {
                        let tr = which("tcpreplay").ok_or("tcpreplay missing (scripts/deps.sh)")?;
                        let secs = format!("{:.0}", env.secs.ceil().max(1.0));
                        let out = env.client(
                            "cl",
                            env.secs + 5.0,
                            &[
                                &tr,
                                "-i",
                                "g0",
                                "--topspeed",
                                "-K",
                                "--loop",
                                "100000000",
                                "--duration",
                                &secs,
                                &p1.to_string_lossy(),
                            ],
                        )?;
                        // "Rated: 1234.5 Bps, 0.01 Mbps, 20.57 pps"
                        let pps = out
                            .lines()
                            .find(|l| l.trim_start().starts_with("Rated:"))
                            .and_then(|l| l.rsplit(',').next())
                            .and_then(|s| {
                                s.trim().trim_end_matches("pps").trim().parse::<f64>().ok()
                            })
                            .ok_or(format!("tcpreplay output without a rate: {out}"))?;
                        Ok(BTreeMap::from([("pps".to_string(), pps)]))
                    }) as CaseFn,
                ),
                (
                    "engine-afpacket",
                    Box::new(move |env: &mut Env| {
                        engine(
                            env,
                            "g0",
                            &[
                                "--pcap",
                                &pcap.to_string_lossy(),
                                "--topspeed",
                                "--no-match",
                                "--dst-mac",
                                &mac,
                            ],
                        )
                    }),
                ),
                (
                    "engine-afxdp",
                    Box::new(move |env: &mut Env| {
                        let p = env.dir.join("udp64.pcap");
                        engine(
                            env,
                            "g0",
                            &[
                                "--pcap",
                                &p.to_string_lossy(),
                                "--topspeed",
                                "--no-match",
                                "--dst-mac",
                                &mac2,
                                "--io",
                                "afxdp",
                            ],
                        )
                    }),
                ),
            ]
        }
        "udp" => vec![
            (
                "ceiling",
                udp(CLIENT_DIRECT, DIRECT, "7", "udp64", pps.clone(), 0),
            ),
            (
                "nft-dnat",
                udp(CLIENT_PEER, NFT, "7", "udp64", pps.clone(), 0),
            ),
            (
                "carpio",
                udp(CLIENT, CARPIO_VIP, "7", "udp64", pps, carpio_pid),
            ),
        ],
        "dns" => vec![
            (
                "ceiling",
                udp(CLIENT_DIRECT, DIRECT, "53", "dns", qps.clone(), 0),
            ),
            (
                "dnsdist",
                udp(CLIENT, DNSDIST, "53", "dns", qps.clone(), env.dnsdist_pid),
            ),
            (
                "carpio",
                udp(CLIENT, CARPIO_VIP, "53", "dns", qps, carpio_pid),
            ),
        ],
        "ntp" => vec![
            (
                "ceiling",
                udp(CLIENT_DIRECT, DIRECT, "123", "ntp", ntp_pps.clone(), 0),
            ),
            (
                "nft-dnat",
                udp(CLIENT_PEER, NFT, "123", "ntp", ntp_pps.clone(), 0),
            ),
            (
                "carpio",
                udp(CLIENT, CARPIO_VIP, "123", "ntp", ntp_pps, carpio_pid),
            ),
        ],
        "dnsperf" => {
            let dp = |vip: &'static str, pid_of: fn(&Env) -> u32| -> CaseFn<'a> {
                Box::new(move |env: &mut Env| {
                    let dnsperf = which("dnsperf").ok_or("dnsperf missing (scripts/deps.sh)")?;
                    let q = env.dir.join("queries.txt");
                    std::fs::write(&q, "who.svc.test TXT\nwww.svc.test A\n")
                        .map_err(|e| e.to_string())?;
                    let secs = format!("{:.0}", env.secs.ceil().max(1.0));
                    let qps = (env.pps / 2).max(500).to_string();
                    let pid = pid_of(env);
                    with_cpu(pid, "answered_per_s_total", || {
                        let out = env.client(
                            "cl",
                            env.secs + 5.0,
                            &[
                                &dnsperf,
                                "-s",
                                vip,
                                "-d",
                                &q.to_string_lossy(),
                                "-l",
                                &secs,
                                "-Q",
                                &qps,
                                "-c",
                                "8",
                                "-q",
                                "2000",
                                "-t",
                                "1",
                            ],
                        )?;
                        parse_dnsperf(&out)
                    })
                    .map(|mut m| {
                        m.remove("answered_per_s_total");
                        m
                    })
                })
            };
            vec![
                ("dnsdist", dp(DNSDIST_VIP, |e| e.dnsdist_pid)),
                ("carpio", dp(VIP, |e| e.carpio_pid)),
            ]
        }
        "tcp_conn" | "tcp_bulk" => {
            let bulk = scenario == "tcp_bulk";
            let t = move |addr: &'static str| -> CaseFn<'a> {
                Box::new(move |env: &mut Env| {
                    let secs = format!("{}", env.secs);
                    let carpio = env.carpio.clone();
                    let args: Vec<&str> = if bulk {
                        vec![&carpio, "bench", "bulk", addr, "--secs", &secs]
                    } else {
                        vec![
                            &carpio,
                            "bench",
                            "connrate",
                            addr,
                            "--secs",
                            &secs,
                            "--threads",
                            "2",
                        ]
                    };
                    let out = env.client("cl", env.secs + 5.0, &args)?;
                    let v: serde_json::Value =
                        serde_json::from_str(out.trim()).map_err(|e| format!("{out:?}: {e}"))?;
                    let mut m = BTreeMap::new();
                    for k in ["per_s", "errors", "gbit_per_s"] {
                        if let Some(x) = v.get(k).and_then(|x| x.as_f64()) {
                            m.insert(k.to_string(), x);
                        }
                    }
                    Ok(m)
                })
            };
            vec![
                ("ceiling", t("198.18.1.1:9000")),
                ("haproxy", t("198.18.0.3:6001")),
                ("carpio", t("198.18.0.2:7001")),
            ]
        }
        _ => Vec::new(),
    }
}

/// dnsperf's summary as metrics.
fn parse_dnsperf(out: &str) -> Result<BTreeMap<String, f64>, String> {
    let num = |key: &str| -> Option<f64> {
        let l = out.lines().find(|l| l.trim_start().starts_with(key))?;
        l.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
    };
    let sent = num("Queries sent").ok_or(format!("dnsperf output without results: {out}"))?;
    let done = num("Queries completed").unwrap_or(0.0);
    let qps = num("Queries per second").unwrap_or(0.0);
    let lat = num("Average Latency (s)").unwrap_or(0.0);
    Ok(BTreeMap::from([
        ("answered_per_s".to_string(), qps),
        ("answered_per_s_total".to_string(), done),
        (
            "loss_pct".to_string(),
            if sent > 0.0 {
                100.0 * (sent - done) / sent
            } else {
                0.0
            },
        ),
        ("latency_us_avg".to_string(), lat * 1e6),
    ]))
}

/// `carpio bench`.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    // Namespaces need root (effective uid 0, read from /proc, so no libc call is needed here).
    let euid0 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            Some(l.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false);
    if !euid0 {
        return Err("needs root (network namespaces)".into());
    }
    let started = Instant::now();
    let (secs, reps) = if args.smoke {
        (1.0f64.min(args.secs), 1)
    } else {
        (args.secs.clamp(0.5, 60.0), args.reps.clamp(1, 20))
    };
    let carpio = match &args.carpio {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let ingress = match args.ingress.as_str() {
        "afpacket" => "ingress afpacket",
        // The two TPACKET layouts, to compare them (`ring v2|v3`, src/sys/afpacket.rs).
        "afpacket-v2" => "ingress afpacket ring v2",
        "afpacket-v3" => "ingress afpacket ring v3",
        "afxdp" => "ingress afxdp mode generic",
        o => {
            return Err(format!(
                "unknown --ingress {o:?} (afpacket, afpacket-v2, afpacket-v3, afxdp)"
            ));
        }
    };
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let out = args.out.canonicalize().map_err(|e| e.to_string())?;
    let dir = out.join("work");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut env = Env {
        lab: Lab::new("bench").map_err(|e| e.to_string())?,
        dir,
        carpio: carpio.to_string_lossy().into_owned(),
        secs,
        pps: if args.smoke { 5_000 } else { args.pps },
        macs: BTreeMap::new(),
        carpio_pid: 0,
        dnsdist_pid: 0,
        haproxy_pid: 0,
        log: Vec::new(),
    };
    topology(&mut env)?;
    let g1 = env.lab.mac("gs", "g1").map_err(|e| e.to_string())?;
    env.macs.insert("g1", crate::lab::mac_string(g1));
    // The send-rate capture: 1000 64-byte UDP frames of distinct flows, g0 to g1 (MACs
    // included: tcpreplay sends the frames as they are, and the engine rewrites to the same
    // MACs, so the receiving side does the same work for both).
    let g0 = env.lab.mac("cl", "g0").map_err(|e| e.to_string())?;
    {
        let t = super::engine::synth_templates(
            super::engine::Profile::Udp64,
            1000,
            "198.18.9.1".parse().map_err(|_| "addr")?,
            &["198.18.9.2".parse().map_err(|_| "addr")?],
            9,
        );
        let mut sink = crate::phy::pcap::PcapSink::create(
            &env.dir.join("udp64.pcap"),
            crate::wire::classify::LinkType::Ethernet,
        )
        .map_err(|e| e.to_string())?;
        for x in &t {
            let mut f = x.frame.clone();
            f[0..6].copy_from_slice(&g1);
            f[6..12].copy_from_slice(&g0);
            sink.write(&f, x.rel_ns).map_err(|e| e.to_string())?;
        }
        sink.finish().map_err(|e| e.to_string())?;
    }
    servers(&mut env)?;
    balancers(&mut env, ingress)?;
    env.note(format!(
        "lab up in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let scenarios: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s))
        .collect();
    let mut samples: Vec<Sample> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    // Failover and health reaction have their own labs and measure time, not throughput: the
    // smoke run overlaps them with the other scenarios (whose numbers do not matter there); the
    // full run runs them last, alone.
    let fo_wanted = scenarios.contains(&"failover");
    let hd_wanted = scenarios.contains(&"health");
    let side = {
        let (c, d) = (env.carpio.clone(), env.dir.clone());
        let smoke = args.smoke;
        move || {
            let mut s = Vec::new();
            let mut e = Vec::new();
            if fo_wanted {
                let (a, b) = super::failover::run(&c, reps, &d, smoke);
                s.extend(a);
                e.extend(b);
            }
            if hd_wanted {
                let (a, b) = super::health::run(&c, reps);
                s.extend(a);
                e.extend(b);
            }
            (s, e)
        }
    };
    let mut side = Some(side);
    let side_thread = if args.smoke {
        side.take().map(std::thread::spawn)
    } else {
        None
    };
    for rep in 1..=reps {
        for sc in &scenarios {
            for (subject, f) in cases(&env, sc) {
                let t0 = Instant::now();
                match f(&mut env) {
                    Ok(metrics) => {
                        eprintln!(
                            "bench: {sc} {subject} rep {rep}: {} ({:.1} s)",
                            metrics
                                .iter()
                                .map(|(k, v)| format!("{k}={v:.1}"))
                                .collect::<Vec<_>>()
                                .join(" "),
                            t0.elapsed().as_secs_f64()
                        );
                        samples.push(Sample {
                            scenario: sc.to_string(),
                            subject: subject.to_string(),
                            rep,
                            metrics,
                        });
                    }
                    Err(e) => {
                        let s = format!("{sc} {subject} rep {rep}: {e}");
                        env.note(s.clone());
                        errors.push(s);
                    }
                }
            }
        }
    }
    let (s2, e2) = match (side_thread, side) {
        (Some(h), _) => h
            .join()
            .unwrap_or_else(|_| (Vec::new(), vec!["failover/health: thread panicked".into()])),
        (None, Some(f)) => f(),
        (None, None) => (Vec::new(), Vec::new()),
    };
    samples.extend(s2);
    errors.extend(e2);
    let meta = report::Meta {
        smoke: args.smoke,
        secs,
        reps,
        offered_pps: env.pps,
        ingress: args.ingress.clone(),
        machine: report::machine(),
        wall_s: started.elapsed().as_secs_f64(),
        errors,
    };
    report::write_all(&out, &meta, &samples).map_err(|e| e.to_string())?;
    eprintln!(
        "bench: results in {} ({:.1} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    drop(env);
    Ok(())
}
