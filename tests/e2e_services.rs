//! End-to-end: REAL servers behind the carpio daemon, REAL clients in front of it (root only).
//!
//! ```text
//!  cio-<pid>-svc-br   bridge br0 ─┬─ p-cl ── eth0 cl  198.18.0.100/24            dig dnsperf sntp swaks curl
//!                                 ├─ p-lb ── lb0  lb  198.18.0.2/24 198.18.1.254/24, forwarding off:
//!                                 │                   carpio -d (VIPs .10 NAT, .11 DSR, .12 IPIP on
//!                                 │                   no interface: carpio answers ARP for them)
//!                                 ├─ p-b1 ── eth0 b1  198.18.1.1/24 via 198.18.1.254 ┐ unbound chronyd
//!                                 ├─ p-b2 ── eth0 b2  198.18.1.2/24 via 198.18.1.254 ├ OpenSMTPD nginx
//!                                 └─ p-b3 ── eth0 b3  198.18.1.3/24 via 198.18.1.254 ┘ (each names itself)
//! ```
//!
//! One-armed NAT (what the daemon expects): the backends' default route is the balancer, so
//! their answers to the client come back through carpio, which un-NATs them. DSR and IPIP
//! answers leave from the VIP (on the backends' `lo`, ARP-silenced by `arp_ignore`) and go
//! straight to the client segment by a source-based rule. Kernels without ipip support (this
//! project's VMs: `ip link add type ipip` fails) cannot decapsulate, so the IPIP case checks
//! what reaches the backends (the encapsulated query, by tcpdump), not an answer.
//!
//! Every backend names itself: TXT `who.svc.test` = "bN" (unbound), NTP stratum 2+N
//! (chronyd `local stratum`), SMTP banner `bN.svc.test` (OpenSMTPD), page "bN" (nginx). The
//! server configurations are the templates in `scripts/lab/` the demo and the benchmark use.
//!
//! The lab and the servers are built once; the cases run over AF_PACKET, then over AF_XDP
//! (generic mode), each with its own carpio. Every failure of a case is collected and reported
//! at the end. A missing tool is a failure, never a skip. Network safety as DESIGN.md: our own
//! namespaces only, 198.18.0.0/15 only, every process killed by PID (and every process left in
//! our namespaces, for the servers that fork), namespaces deleted, also on failure.

mod common;

use carpio::lab::{Lab, VethConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Root tests of this file share namespaces' prefix and the machine: one at a time.
static LOCK: Mutex<()> = Mutex::new(());

const VIP: &str = "198.18.0.10";
const VIP_DSR: &str = "198.18.0.11";
const VIP_IPIP: &str = "198.18.0.12";
const CLIENT: &str = "198.18.0.100";
const BACKENDS: [&str; 3] = ["b1", "b2", "b3"];

const UNBOUND_TPL: &str = include_str!("../scripts/lab/unbound.conf.in");
const CHRONY_TPL: &str = include_str!("../scripts/lab/chrony.conf.in");
const SMTPD_TPL: &str = include_str!("../scripts/lab/smtpd.conf.in");
const NGINX_TPL: &str = include_str!("../scripts/lab/nginx.conf.in");
const CARPIO_TPL: &str = include_str!("../scripts/lab/carpio.conf.in");

/// Absolute path of `tool`; panics when it is missing (a missing tool fails the test).
fn need(tool: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p.to_string_lossy().into_owned();
        }
    }
    panic!("{tool} is missing: run `bash scripts/deps.sh` (as root)");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The lab, the servers and a scratch directory; `Drop` stops everything.
struct Env {
    lab: Lab,
    dir: PathBuf,
    /// Server and daemon PIDs this test started (stopped with SIGTERM first: some fork).
    pids: Vec<u32>,
}

impl Env {
    fn ns(&self, short: &str) -> String {
        self.lab.ns_name(short)
    }

    /// Runs `ARGS` in namespace `short` to completion, whatever its exit status.
    fn run(&self, short: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(short)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {args:?}: {e}"))
    }

    /// Starts `ARGS` in `short` in the background with stdout+stderr in `log`; returns the PID.
    fn spawn(&mut self, short: &str, log: &Path, args: &[&str]) -> u32 {
        let mut sh = vec!["sh", "-c", "exec \"$@\" >\"$0\" 2>&1"];
        let log = log.to_string_lossy().into_owned();
        sh.push(&log);
        sh.extend_from_slice(args);
        let pid = self.lab.spawn(short, &sh).expect("spawn");
        self.pids.push(pid);
        pid
    }

    /// SIGTERM, wait (bounded) for the exit, then SIGKILL and reap.
    fn stop(&mut self, pid: u32) {
        signal(pid, "TERM");
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end && alive(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.lab.kill(pid);
        self.pids.retain(|&p| p != pid);
    }

    fn write(&self, rel: &str, body: &str) -> PathBuf {
        let p = self.dir.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, body).unwrap();
        p
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// True while `pid` runs (a zombie awaiting our reap has exited).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for pid in std::mem::take(&mut self.pids) {
            signal(pid, "TERM");
        }
        std::thread::sleep(Duration::from_millis(300));
        // Servers fork (smtpd's privsep children, ...): kill by PID whatever is still inside
        // one of our namespaces, then Lab's Drop reaps its children and deletes the namespaces.
        for short in ["br", "cl", "lb", "b1", "b2", "b3"] {
            if let Ok(o) = Command::new("ip")
                .args(["netns", "pids", &self.ns(short)])
                .stderr(Stdio::null())
                .output()
            {
                for pid in text(&o.stdout).split_whitespace() {
                    match pid.parse::<u32>() {
                        Ok(p) if p > 1 && p != std::process::id() => signal(p, "KILL"),
                        _ => {}
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fill(tpl: &str, name: &str, addr: &str, dir: &Path, stratum: u32) -> String {
    tpl.replace("@NAME@", name)
        .replace("@ADDR@", addr)
        .replace("@DIR@", &dir.to_string_lossy())
        .replace("@STRATUM@", &stratum.to_string())
}

/// A 1 MiB page naming its backend on every line: a transfer of many full-size segments.
fn big_page(b: &str) -> String {
    let line = format!("{b} {}\n", "x".repeat(60));
    line.repeat((1 << 20) / line.len())
}

/// Waits (bounded) until something listens on `proto`/`port` in `short`.
fn wait_listen(env: &Env, short: &str, proto: char, port: u16) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let o = env.run(
            short,
            &["ss", &format!("-Hln{proto}"), &format!("sport = :{port}")],
        );
        if !text(&o.stdout).trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "nothing listens on {proto}/{port} in {short}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds the topology of the module doc.
fn topology(env: &mut Env) {
    let lab = &mut env.lab;
    for n in ["br", "cl", "lb", "b1", "b2", "b3"] {
        lab.ns(n).unwrap();
    }
    let ports = [
        ("cl", "eth0"),
        ("lb", "lb0"),
        ("b1", "eth0"),
        ("b2", "eth0"),
        ("b3", "eth0"),
    ];
    for (n, ifname) in ports {
        lab.veth(&VethConfig::new("br", &format!("p-{n}"), n, ifname))
            .unwrap();
    }
    lab.bridge("br", "br0", &["p-cl", "p-lb", "p-b1", "p-b2", "p-b3"])
        .unwrap();
    // veth's TX checksum offload leaves half-done checksums (CHECKSUM_PARTIAL) that a
    // bypassing balancer would pass on as they are; a real NIC delivers full checksums.
    for (n, ifname) in ports {
        lab.exec(n, &["ethtool", "-K", ifname, "tx", "off"])
            .unwrap();
    }
    lab.addr("cl", "eth0", &format!("{CLIENT}/24")).unwrap();
    lab.addr("lb", "lb0", "198.18.0.2/24").unwrap();
    lab.addr("lb", "lb0", "198.18.1.254/24").unwrap();
    lab.exec("lb", &["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        .unwrap();
    for (i, b) in BACKENDS.iter().enumerate() {
        lab.addr(b, "eth0", &format!("198.18.1.{}/24", i + 1))
            .unwrap();
        lab.ip(b, &["route", "add", "default", "via", "198.18.1.254"])
            .unwrap();
        for vip in [VIP_DSR, VIP_IPIP] {
            lab.addr(b, "lo", &format!("{vip}/32")).unwrap();
            lab.ip(b, &["rule", "add", "from", vip, "table", "100"])
                .unwrap();
        }
        lab.ip(
            b,
            &[
                "route",
                "add",
                "198.18.0.0/24",
                "dev",
                "eth0",
                "table",
                "100",
            ],
        )
        .unwrap();
        lab.exec(
            b,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
            ],
        )
        .unwrap();
    }
}

/// unbound, chronyd, OpenSMTPD and nginx on every backend, from scripts/lab/ templates.
fn servers(env: &mut Env) {
    let unbound = need("unbound");
    let chronyd = need("chronyd");
    need("smtpd");
    let nginx = need("nginx");
    let smtpd_ns = format!("{}/scripts/lab/smtpd-ns.sh", env!("CARGO_MANIFEST_DIR"));
    for (i, b) in BACKENDS.iter().enumerate() {
        let addr = format!("198.18.1.{}", i + 1);
        let d = env.dir.join(b);
        let stratum = 3 + i as u32;
        std::fs::create_dir_all(d.join("www")).unwrap();
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        env.write(&format!("{b}/www/index.html"), &format!("{b}\n"));
        env.write(&format!("{b}/www/big.txt"), &big_page(b));
        let ub = env.write(
            &format!("{b}/unbound.conf"),
            &fill(UNBOUND_TPL, b, &addr, &d, stratum),
        );
        let ch = env.write(
            &format!("{b}/chrony.conf"),
            &fill(CHRONY_TPL, b, &addr, &d, stratum),
        );
        let sm = env.write(
            &format!("{b}/smtpd.conf"),
            &fill(SMTPD_TPL, b, &addr, &d, stratum),
        );
        // smtpd refuses a configuration others may write.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sm, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ng = env.write(
            &format!("{b}/nginx.conf"),
            &fill(NGINX_TPL, b, &addr, &d, stratum),
        );
        let ds = d.to_string_lossy().into_owned();
        env.spawn(
            b,
            &d.join("unbound.out"),
            &[&unbound, "-d", "-c", &ub.to_string_lossy()],
        );
        env.spawn(
            b,
            &d.join("chrony.out"),
            &[
                &chronyd,
                "-x",
                "-d",
                "-u",
                "root",
                "-f",
                &ch.to_string_lossy(),
            ],
        );
        env.spawn(b, &d.join("smtpd.out"), &["sh", &smtpd_ns, &ds]);
        env.spawn(
            b,
            &d.join("nginx.out"),
            &[
                &nginx,
                "-p",
                &ds,
                "-e",
                &format!("{ds}/nginx.err"),
                "-c",
                &ng.to_string_lossy(),
            ],
        );
    }
    for b in BACKENDS {
        wait_listen(env, b, 'u', 53);
        wait_listen(env, b, 'u', 123);
        wait_listen(env, b, 't', 25);
        wait_listen(env, b, 't', 80);
    }
}

/// The carpio configuration of one run (scripts/lab/carpio.conf.in, as the demo's).
fn carpio_conf(ingress: &str, sock: &Path) -> String {
    CARPIO_TPL
        .replace("@INGRESS@", ingress)
        .replace("@SOCK@", &sock.to_string_lossy())
}

/// `dig` TXT who.svc.test at `vip` from source port `port`; the backend's name or None.
fn dig(env: &Env, vip: &str, port: u16) -> Option<String> {
    let o = env.run(
        "cl",
        &[
            "dig",
            "+short",
            "+time=1",
            "+tries=2",
            "-b",
            &format!("{CLIENT}#{port}"),
            "TXT",
            "who.svc.test",
            &format!("@{vip}"),
        ],
    );
    let out = text(&o.stdout);
    let name = out.trim().trim_matches('"').to_string();
    (o.status.success() && BACKENDS.contains(&name.as_str())).then_some(name)
}

/// `sntp` against the VIP: the backend named by the stratum it reports (`s3` = b1).
fn sntp(env: &Env) -> Option<String> {
    let o = env.run("cl", &["sntp", "-t", "2", VIP]);
    let out = text(&o.stdout);
    let s = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix('s').and_then(|n| n.parse::<usize>().ok()))?;
    BACKENDS.get(s.checked_sub(3)?).map(|b| b.to_string())
}

/// `swaks` to the VIP, quitting after EHLO: the backend named by the 220 banner.
fn swaks(env: &Env) -> Option<String> {
    let o = env.run(
        "cl",
        &[
            "swaks",
            "--server",
            VIP,
            "--to",
            "postmaster@svc.test",
            "--from",
            "e2e@svc.test",
            "--quit-after",
            "EHLO",
            "--timeout",
            "5",
        ],
    );
    let out = text(&o.stdout);
    out.lines()
        .find(|l| l.contains("<-  220 "))
        .and_then(|l| {
            BACKENDS
                .iter()
                .find(|b| l.contains(&format!(" {b}.svc.test ")))
        })
        .map(|b| b.to_string())
}

/// `curl` of `n` pages over ONE connection (keep-alive): the pages' backend names.
fn curl(env: &Env, n: usize) -> Vec<String> {
    let url = format!("http://{VIP}/");
    let mut args = vec!["curl", "-s", "--max-time", "5"];
    args.extend(std::iter::repeat_n(url.as_str(), n));
    let o = env.run("cl", &args);
    text(&o.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| BACKENDS.contains(&l.as_str()))
        .collect()
}

/// carpioctl against the running daemon.
fn ctl(env: &Env, sock: &Path, args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_carpioctl");
    let mut a = vec![bin, "-s"];
    let s = sock.to_string_lossy().into_owned();
    a.push(&s);
    a.extend_from_slice(args);
    env.run("lb", &a)
}

/// `name value` lines of `carpioctl show counters`.
fn counters(env: &Env, sock: &Path) -> BTreeMap<String, u64> {
    let o = ctl(env, sock, &["show", "counters"]);
    text(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// Collected failures of one run (every case runs, all failures are reported).
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.0.push(what);
        }
    }
}

fn run_cases(env: &mut Env, ingress_name: &str, ingress: &str, f: &mut Failures) {
    let sock = env.dir.join(format!("carpio-{ingress_name}.sock"));
    let conf = env.write(
        &format!("carpio-{ingress_name}.conf"),
        &carpio_conf(ingress, &sock),
    );
    let log = env.dir.join(format!("carpio-{ingress_name}.log"));
    // The client must ask for the VIP's MAC again: carpio answers ARP for it.
    env.lab
        .ip("cl", &["neigh", "flush", "dev", "eth0"])
        .expect("neigh flush");
    let carpio = env!("CARGO_BIN_EXE_carpio");
    let pid = env.spawn("lb", &log, &[carpio, "-d", "-f", &conf.to_string_lossy()]);
    let tag = |s: &str| format!("[{ingress_name}] {s}");

    // Ready: the control socket answers and a first DNS query comes back (backend MACs are
    // resolved by the daemon; bounded wait).
    let end = Instant::now() + Duration::from_secs(20);
    let mut ready = false;
    while Instant::now() < end && alive(pid) {
        if ctl(env, &sock, &["show", "summary"]).status.success() && dig(env, VIP, 39999).is_some()
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !ready {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        f.0.push(tag(&format!(
            "carpio never answered DNS through the VIP (alive: {}); log:\n{l}",
            alive(pid)
        )));
        env.stop(pid);
        return;
    }

    // carpioctl show summary: relayctl's header and our redirects.
    let sum = text(&ctl(env, &sock, &["show", "summary"]).stdout);
    f.check(
        sum.starts_with(&carpio::ctl::render::header())
            && sum.contains("dns")
            && sum.contains("smtp"),
        tag(&format!("show summary:\n{sum}")),
    );

    // DNS NAT: 12 new flows (distinct source ports) reach all three backends; each flow
    // stays on its backend for 3 more queries.
    let mut seen = BTreeSet::new();
    for port in 40001..40013u16 {
        match dig(env, VIP, port) {
            Some(b) => {
                for _ in 0..3 {
                    let again = dig(env, VIP, port);
                    f.check(
                        again.as_deref() == Some(b.as_str()),
                        tag(&format!(
                            "dns flow from port {port} moved: {b} then {again:?}"
                        )),
                    );
                }
                seen.insert(b);
            }
            None => f.0.push(tag(&format!("dns from port {port}: no answer"))),
        }
    }
    f.check(
        seen.len() == 3,
        tag(&format!("dns NAT reached {seen:?}, want all of b1 b2 b3")),
    );

    // dnsperf: 2 s at 300 qps from 4 sockets, loss below 2%.
    let qf = env.write("queries.txt", "who.svc.test TXT\nwww.svc.test A\n");
    let o = env.run(
        "cl",
        &[
            "dnsperf",
            "-s",
            VIP,
            "-d",
            &qf.to_string_lossy(),
            "-l",
            "2",
            "-Q",
            "300",
            "-c",
            "4",
            "-t",
            "1",
        ],
    );
    let out = text(&o.stdout);
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (sent, done) = (field("Queries sent:"), field("Queries completed:"));
    f.check(
        sent >= 400 && done * 100 >= sent * 98,
        tag(&format!("dnsperf sent {sent} completed {done}:\n{out}")),
    );

    // NTP: sntp's answers name each backend within 6 new flows (round-robin).
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        match sntp(env) {
            Some(b) => {
                seen.insert(b);
            }
            None => f.0.push(tag("sntp: no answer through the VIP")),
        }
    }
    f.check(
        seen.len() == 3,
        tag(&format!("ntp reached {seen:?}, want all three")),
    );

    // SMTP: swaks' banners name each backend within 6 connections.
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        match swaks(env) {
            Some(b) => {
                seen.insert(b);
            }
            None => f.0.push(tag("swaks: no 220 banner naming a backend")),
        }
    }
    f.check(
        seen.len() == 3,
        tag(&format!("smtp reached {seen:?}, want all three")),
    );

    // HTTP (Maglev): 3 pages over one connection come from one backend; 24 connections (new
    // source ports) reach every backend.
    let pages = curl(env, 3);
    f.check(
        pages.len() == 3 && pages.iter().all(|p| *p == pages[0]),
        tag(&format!("http keep-alive pages {pages:?}")),
    );
    let mut seen = BTreeSet::new();
    // Random source ports: a backend missed by 24 is a (2/3)^24 * 3 = 2e-4 chance.
    for _ in 0..24 {
        seen.extend(curl(env, 1));
    }
    f.check(
        seen.len() == 3,
        tag(&format!("http reached {seen:?}, want all three")),
    );

    // A 1 MiB page (hundreds of full-size segments both ways through the NAT) arrives whole.
    let o = env.run(
        "cl",
        &[
            "curl",
            "-s",
            "--max-time",
            "20",
            &format!("http://{VIP}/big.txt"),
        ],
    );
    let body = text(&o.stdout);
    let whole = BACKENDS.iter().any(|b| body == big_page(b));
    f.check(
        whole,
        tag(&format!(
            "http 1 MiB page: got {} bytes (exit {:?}), want {}",
            body.len(),
            o.status.code(),
            big_page("b1").len()
        )),
    );

    // DSR: the backends answer from the VIP straight to the client.
    let mut seen = BTreeSet::new();
    for port in 41001..41007u16 {
        match dig(env, VIP_DSR, port) {
            Some(b) => {
                let again = dig(env, VIP_DSR, port);
                f.check(
                    again.as_deref() == Some(b.as_str()),
                    tag(&format!(
                        "dsr flow from port {port} moved: {b} then {again:?}"
                    )),
                );
                seen.insert(b);
            }
            None => {
                f.0.push(tag(&format!("dns DSR from port {port}: no answer")))
            }
        }
    }
    f.check(
        seen.len() == 3,
        tag(&format!("dns DSR reached {seen:?}, want all three")),
    );

    ipip_case(env, &tag, f);

    // Counters: NAT both ways, DSR, encapsulation, ARP replies, new flows.
    let c = counters(env, &sock);
    for name in [
        "tx_nat_in",
        "tx_nat_out",
        "tx_dsr",
        "tx_encap",
        "tx_arp_reply",
        "flow_new",
    ] {
        f.check(
            c.get(name).copied().unwrap_or(0) > 0,
            tag(&format!("counter {name} is 0 or missing: {c:?}")),
        );
    }
    env.stop(pid);
    let xdp = env.lab.link_show("lb", "lb0").unwrap_or_default();
    f.check(
        !xdp.contains(" xdp"),
        tag(&format!("XDP still attached after SIGTERM: {xdp}")),
    );
}

/// IPIP: without the kernel's ipip support the backends cannot answer, so check what carpio
/// sent them: tcpdump on each backend captures the encapsulated query (outer 198.18.1.254 →
/// backend, inner client → VIP .12 port 53), and the three backends each get some.
fn ipip_case(env: &mut Env, tag: &dyn Fn(&str) -> String, f: &mut Failures) {
    let tcpdump = need("tcpdump");
    let mut caps = Vec::new();
    for b in BACKENDS {
        let pcap = env.dir.join(format!("{b}-ipip.pcap"));
        let _ = std::fs::remove_file(&pcap);
        let pid = env.spawn(
            b,
            &env.dir.join(format!("{b}-tcpdump.out")),
            &[
                "timeout",
                "15",
                &tcpdump,
                "-U",
                "-nn",
                "-i",
                "eth0",
                "-w",
                &pcap.to_string_lossy(),
                "ip proto 4",
            ],
        );
        caps.push((b, pid, pcap));
    }
    // tcpdump writes its file header once the capture is open.
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && caps.iter().any(|(_, _, p)| !p.exists()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    for port in 42001..42007u16 {
        // No answer can come back: one try, short timeout.
        env.run(
            "cl",
            &[
                "dig",
                "+time=1",
                "+tries=1",
                "-b",
                &format!("{CLIENT}#{port}"),
                "TXT",
                "who.svc.test",
                &format!("@{VIP_IPIP}"),
            ],
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    for (b, pid, pcap) in caps {
        env.stop(pid);
        let o = Command::new(&tcpdump)
            .args(["-nn", "-r", &pcap.to_string_lossy()])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let out = text(&o.stdout);
        let i = BACKENDS.iter().position(|x| *x == b).unwrap_or(0) + 1;
        // The outer source is one of the balancer's addresses.
        let want = format!(" > 198.18.1.{i}: IP {CLIENT}.");
        f.check(
            out.lines()
                .any(|l| l.contains(&want) && l.contains(&format!("> {VIP_IPIP}.53: "))),
            tag(&format!("ipip: {b} captured no encapsulated query:\n{out}")),
        );
    }
}

#[test]
fn real_services_through_carpio() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        common::euid() == 0,
        "tests/e2e_services.rs needs root (network namespaces)"
    );
    for t in [
        "ip", "ethtool", "sysctl", "ss", "dig", "dnsperf", "sntp", "swaks", "curl", "tcpdump",
        "timeout",
    ] {
        need(t);
    }
    let dir = std::env::temp_dir().join(format!("carpio-e2e-services-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = Env {
        lab: Lab::new("svc").unwrap(),
        dir,
        pids: Vec::new(),
    };
    topology(&mut env);
    servers(&mut env);

    // The servers answer directly (sanity, so a failure below is carpio's).
    for (i, b) in BACKENDS.iter().enumerate() {
        let o = env.run(
            b,
            &[
                "dig",
                "+short",
                "+time=1",
                "TXT",
                "who.svc.test",
                &format!("@198.18.1.{}", i + 1),
            ],
        );
        assert_eq!(text(&o.stdout).trim(), format!("\"{b}\""), "unbound on {b}");
    }

    let mut f = Failures(Vec::new());
    run_cases(&mut env, "afpacket", "ingress afpacket", &mut f);
    run_cases(&mut env, "afxdp", "ingress afxdp mode generic", &mut f);
    assert!(
        f.0.is_empty(),
        "{} failure(s):\n{}",
        f.0.len(),
        f.0.join("\n")
    );
}
