//! Every health probe against a real server, and against each failure, in a two-namespace
//! lab (root only; skipped with a note otherwise, failed when a server binary is missing).
//!
//! ```text
//!   cio-<pid>-hc<n>-chk                      cio-<pid>-hc<n>-srv
//!   chk0 198.18.7.1/24  <── veth ──>  srv0 198.18.7.2/24
//!        2001:db8:7::1/64                   2001:db8:7::2/64
//!   engine thread (entered the ns)    nginx :80 http, :443 https (self-signed, openssl)
//!                                     unbound :53 (local zone example.test)
//!                                     chronyd :123 (local stratum 3, -x: never sets the clock)
//!                                     smtpd :25 (OpenSMTPD)
//!                                     test's own TCP listeners :7000 banner, :7001 binary
//!   198.18.7.99, 2001:db8:7::99: on the link, nobody home (ARP/ND fails): the blackholes
//! ```
//!
//! Servers run in the foreground (`-d`, `daemon off`, `master_process off`) so the PID the lab
//! holds is the server; the lab kills them and deletes the namespaces on drop, also when an
//! assertion fails. Tests share one lock (the machine's two cores are shared).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use carpio::config::model::{Check, Digest, HttpExpect};
use carpio::health::engine::{self, EngineConfig, HostSpec, HostUpdate, TableSpec};
use carpio::health::tracker::State;
use carpio::health::{Handle, Update};
use carpio::lab::{Lab, VethConfig};

static SERIAL: Mutex<()> = Mutex::new(());

const CHK: &str = "198.18.7.1";
const SRV: &str = "198.18.7.2";
const HOLE: &str = "198.18.7.99";
const SRV6: &str = "2001:db8:7::2";
const HOLE6: &str = "2001:db8:7::99";
/// printf 'hello\n' | sha1sum
const HELLO_SHA1: [u8; 20] = [
    0xf5, 0x72, 0xd3, 0x96, 0xfa, 0xe9, 0x20, 0x66, 0x28, 0x71, 0x4f, 0xb2, 0xce, 0x00, 0xf7, 0x2e,
    0x94, 0xf2, 0x25, 0x8f,
];

/// The absolute path of a tool; a missing tool fails the test (scripts/deps.sh installs it).
fn need(tool: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p.to_string_lossy().into_owned();
        }
    }
    panic!("{tool} is missing: run scripts/deps.sh");
}

struct Env {
    lab: Lab,
    dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lab(tag: &str) -> Env {
    let mut lab = Lab::new(tag).expect("lab");
    lab.ns("chk").unwrap();
    lab.ns("srv").unwrap();
    lab.veth(&VethConfig::new("chk", "chk0", "srv", "srv0"))
        .unwrap();
    lab.addr("chk", "chk0", &format!("{CHK}/24")).unwrap();
    lab.addr("srv", "srv0", &format!("{SRV}/24")).unwrap();
    // nodad: usable at once, no duplicate address detection delay.
    for (ns, ifname, a) in [
        ("chk", "chk0", "2001:db8:7::1/64"),
        ("srv", "srv0", "2001:db8:7::2/64"),
    ] {
        lab.ip(ns, &["addr", "add", a, "dev", ifname, "nodad"])
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("carpio-e2e-health-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "hello\n").unwrap();
    Env { lab, dir }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// nginx in one process (no master, so the lab's PID is the server) on :80 and :443.
fn start_nginx(env: &mut Env) -> u32 {
    let d = env.dir.display().to_string();
    if !env.dir.join("cert.pem").exists() {
        let ok = Proc::new(need("openssl"))
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=backend.test"])
            .args([
                "-keyout",
                &format!("{d}/key.pem"),
                "-out",
                &format!("{d}/cert.pem"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl req failed");
        std::fs::create_dir_all(env.dir.join("tmp")).unwrap();
    }
    let conf = write(
        &env.dir,
        "nginx.conf",
        &format!(
            "daemon off; master_process off; worker_processes 1;\n\
             pid {d}/nginx.pid; error_log {d}/nginx.err;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off;\n\
               client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               server {{ listen {SRV}:80; root {d}/www; }}\n\
               server {{ listen {SRV}:443 ssl; ssl_certificate {d}/cert.pem;\n\
                 ssl_certificate_key {d}/key.pem; root {d}/www; }}\n\
             }}\n"
        ),
    );
    let nginx = need("nginx");
    let pid = env
        .lab
        .spawn(
            "srv",
            &[
                &nginx,
                "-p",
                &d,
                "-e",
                &format!("{d}/nginx.err"),
                "-c",
                &conf,
            ],
        )
        .unwrap();
    wait_port(&env.lab, 80);
    wait_port(&env.lab, 443);
    pid
}

fn start_unbound(env: &mut Env) -> u32 {
    let d = env.dir.display().to_string();
    let conf = write(
        &env.dir,
        "unbound.conf",
        &format!(
            "server:\n  interface: {SRV}\n  port: 53\n  username: \"\"\n  chroot: \"\"\n\
             \x20 directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n\
             \x20 logfile: \"{d}/unbound.log\"\n  num-threads: 1\n  do-ip6: no\n\
             \x20 access-control: 198.18.0.0/15 allow\n\
             \x20 local-zone: \"example.test.\" static\n\
             \x20 local-data: \"www.example.test. A 198.18.7.80\"\n\
             remote-control:\n  control-enable: no\n"
        ),
    );
    let unbound = need("unbound");
    let pid = env
        .lab
        .spawn("srv", &[&unbound, "-d", "-c", &conf])
        .unwrap();
    wait_udp(&env.lab, 53);
    pid
}

fn start_chrony(env: &mut Env) -> u32 {
    let d = env.dir.display().to_string();
    let conf = write(
        &env.dir,
        "chrony.conf",
        &format!(
            "local stratum 3\nallow 198.18.0.0/15\nbindaddress {SRV}\nport 123\ncmdport 0\n\
             pidfile {d}/chronyd.pid\n"
        ),
    );
    let chronyd = need("chronyd");
    // -x: never touch the system clock; -d: foreground, one process.
    let pid = env
        .lab
        .spawn("srv", &[&chronyd, "-x", "-d", "-f", &conf])
        .unwrap();
    wait_udp(&env.lab, 123);
    pid
}

fn start_smtpd(env: &mut Env) -> u32 {
    let conf = write(
        &env.dir,
        "smtpd.conf",
        &format!(
            "listen on {SRV} port 25\naction \"none\" relay\nmatch from any for domain \"example.test\" action \"none\"\n"
        ),
    );
    // smtpd refuses a group/world-writable config.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let smtpd = need("smtpd");
    let pid = env.lab.spawn("srv", &[&smtpd, "-d", "-f", &conf]).unwrap();
    wait_port(&env.lab, 25);
    pid
}

/// The test's own plain TCP servers, bound inside the server namespace: :7000 writes an
/// SSH-like banner and closes; :7001 answers any 4 bytes with DE AD BE EF and closes.
fn start_listeners(env: &Env) {
    for (port, binary) in [(7000u16, false), (7001, true)] {
        let l = env
            .lab
            .run_in("srv", move || TcpListener::bind((SRV, port)))
            .unwrap()
            .unwrap();
        std::thread::spawn(move || {
            // Bounded: the test needs a handful of connections.
            for _ in 0..64 {
                let Ok((mut s, _)) = l.accept() else { return };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                if binary {
                    let mut b = [0u8; 4];
                    let _ = s.read_exact(&mut b);
                    let _ = s.write_all(&[0xde, 0xad, 0xbe, 0xef]);
                } else {
                    let _ = s.write_all(b"SSH-2.0-carpio_test\r\n");
                }
            }
        });
    }
}

fn ss(lab: &Lab, args: &str) -> String {
    lab.exec("srv", &["ss", "-Hln", args])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn wait_port(lab: &Lab, port: u16) {
    wait_for(|| ss(lab, "-t").contains(&format!("{SRV}:{port} ")), port);
}

fn wait_udp(lab: &Lab, port: u16) {
    wait_for(|| ss(lab, "-u").contains(&format!("{SRV}:{port} ")), port);
}

fn wait_for(f: impl Fn() -> bool, port: u16) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {SRV}:{port} after 10 s");
}

fn table(id: u32, check: Check, port: u16, interval: Duration, timeout: Duration) -> TableSpec {
    TableSpec {
        id,
        name: format!("t{id}:{port}"),
        check,
        port: Some(port),
        interval,
        timeout,
        demote: None,
        disabled: false,
    }
}

fn host(id: u32, table: usize, ip: &str, retry: u32) -> HostSpec {
    HostSpec {
        id,
        table,
        name: ip.into(),
        ip: ip.parse().unwrap(),
        retry,
        parent: None,
        ttl: None,
    }
}

fn spawn_in(env: &Env, cfg: EngineConfig) -> Handle {
    // The engine thread is created from a thread inside the namespace, so it lives there.
    env.lab
        .run_in("chk", move || engine::spawn_with(cfg))
        .unwrap()
        .unwrap()
}

/// The first transition out of UNKNOWN of every host id in `ids`.
fn first_results(h: &Handle, ids: &[u32], within: Duration) -> Vec<HostUpdate> {
    let end = Instant::now() + within;
    let mut got: Vec<HostUpdate> = Vec::new();
    while got.len() < ids.len() {
        let left = end.saturating_duration_since(Instant::now());
        let Some(u) = h.recv_timeout(left) else {
            let seen: Vec<u32> = got.iter().map(|u| u.id).collect();
            panic!("results for {ids:?} within {within:?}: only {seen:?}");
        };
        if let Update::Host(u) = u
            && u.old == State::Unknown
            && !got.iter().any(|g| g.id == u.id)
        {
            got.push(u);
        }
    }
    got
}

struct Case {
    what: &'static str,
    check: Check,
    ip: &'static str,
    port: u16,
    /// `None`: up; else the error text the host must show.
    want: Option<&'static str>,
}

fn http(path: &str, expect: HttpExpect, tls: bool) -> Check {
    Check::Http {
        tls,
        path: path.into(),
        host: None,
        expect,
    }
}

fn dns(name: &str, rcode: u8, answer: Option<&str>) -> Check {
    Check::Dns {
        name: name.into(),
        qtype: 1,
        rcode,
        answer: answer.map(|a| a.parse().unwrap()),
    }
}

#[test]
fn every_probe_against_real_servers_and_failures() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_root("e2e_health");
    let mut env = lab("hcm");
    start_nginx(&mut env);
    start_unbound(&mut env);
    start_chrony(&mut env);
    start_smtpd(&mut env);
    start_listeners(&env);

    let mut bad_sha = HELLO_SHA1;
    bad_sha[0] ^= 1;
    let cases = [
        Case {
            what: "icmp",
            check: Check::Icmp,
            ip: SRV,
            port: 0,
            want: None,
        },
        Case {
            what: "icmp blackhole",
            check: Check::Icmp,
            ip: HOLE,
            port: 0,
            want: Some("icmp read timeout (after 700 ms)"),
        },
        Case {
            what: "icmp6",
            check: Check::Icmp,
            ip: SRV6,
            port: 0,
            want: None,
        },
        Case {
            what: "icmp6 blackhole",
            check: Check::Icmp,
            ip: HOLE6,
            port: 0,
            want: Some("icmp read timeout (after 700 ms)"),
        },
        Case {
            what: "tcp6 refused",
            check: Check::Tcp,
            ip: SRV6,
            port: 80,
            want: Some("tcp connect failed (Connection refused (os error 111))"),
        },
        Case {
            what: "tcp",
            check: Check::Tcp,
            ip: SRV,
            port: 80,
            want: None,
        },
        Case {
            what: "tcp refused",
            check: Check::Tcp,
            ip: SRV,
            port: 81,
            want: Some("tcp connect failed (Connection refused (os error 111))"),
        },
        Case {
            what: "tcp blackhole",
            check: Check::Tcp,
            ip: HOLE,
            port: 80,
            want: Some("tcp connect timeout (after 700 ms)"),
        },
        Case {
            what: "http code",
            check: http("/", HttpExpect::Code(200), false),
            ip: SRV,
            port: 80,
            want: None,
        },
        Case {
            what: "http wrong code",
            check: http("/missing", HttpExpect::Code(200), false),
            ip: SRV,
            port: 80,
            want: Some("http code mismatch (got 404)"),
        },
        Case {
            what: "http digest",
            check: http(
                "/index.html",
                HttpExpect::Digest(Digest::Sha1(HELLO_SHA1)),
                false,
            ),
            ip: SRV,
            port: 80,
            want: None,
        },
        Case {
            what: "http bad digest",
            check: http(
                "/index.html",
                HttpExpect::Digest(Digest::Sha1(bad_sha)),
                false,
            ),
            ip: SRV,
            port: 80,
            want: Some("http digest mismatch"),
        },
        Case {
            what: "https code",
            check: http("/", HttpExpect::Code(200), true),
            ip: SRV,
            port: 443,
            want: None,
        },
        Case {
            what: "tls",
            check: Check::Tls,
            ip: SRV,
            port: 443,
            want: None,
        },
        Case {
            what: "tls on plain http",
            check: Check::Tls,
            ip: SRV,
            port: 80,
            want: Some("tls connect failed (received corrupt message of type InvalidContentType)"),
        },
        Case {
            what: "send/expect",
            check: Check::Send {
                send: vec![],
                expect: "SSH-2.0-*".into(),
                tls: false,
            },
            ip: SRV,
            port: 7000,
            want: None,
        },
        Case {
            what: "send/expect wrong",
            check: Check::Send {
                send: vec![],
                expect: "SSH-1.*".into(),
                tls: false,
            },
            ip: SRV,
            port: 7000,
            want: Some("send/expect failed"),
        },
        Case {
            what: "send/expect tls",
            check: Check::Send {
                send: b"HEAD / HTTP/1.0\\r\\n\\r\\n".to_vec(),
                expect: "HTTP/1.1 200 *".into(),
                tls: true,
            },
            ip: SRV,
            port: 443,
            want: None,
        },
        Case {
            what: "binary",
            check: Check::Binary {
                send: vec![1, 2, 3, 4],
                expect: vec![0xde, 0xad],
                tls: false,
            },
            ip: SRV,
            port: 7001,
            want: None,
        },
        Case {
            what: "binary wrong",
            check: Check::Binary {
                send: vec![1, 2, 3, 4],
                expect: vec![0xde, 0xaf],
                tls: false,
            },
            ip: SRV,
            port: 7001,
            want: Some("send/expect failed"),
        },
        Case {
            what: "dns",
            check: dns("www.example.test", 0, Some("198.18.7.80")),
            ip: SRV,
            port: 53,
            want: None,
        },
        Case {
            what: "dns nxdomain expected",
            check: dns("nosuch.example.test", 3, None),
            ip: SRV,
            port: 53,
            want: None,
        },
        Case {
            what: "dns wrong rcode",
            check: dns("nosuch.example.test", 0, None),
            ip: SRV,
            port: 53,
            want: Some("dns rcode mismatch (got 3)"),
        },
        Case {
            what: "dns wrong answer",
            check: dns("www.example.test", 0, Some("198.18.7.81")),
            ip: SRV,
            port: 53,
            want: Some("dns answer missing"),
        },
        Case {
            what: "dns refused",
            check: dns("www.example.test", 0, None),
            ip: SRV,
            port: 5353,
            want: Some("udp port unreachable (Connection refused (os error 111))"),
        },
        Case {
            what: "dns blackhole",
            check: dns("www.example.test", 0, None),
            ip: HOLE,
            port: 53,
            want: Some("dns read timeout (after 700 ms)"),
        },
        Case {
            what: "ntp",
            check: Check::Ntp,
            ip: SRV,
            port: 123,
            want: None,
        },
        Case {
            what: "ntp blackhole",
            check: Check::Ntp,
            ip: HOLE,
            port: 123,
            want: Some("ntp read timeout (after 700 ms)"),
        },
        Case {
            what: "smtp",
            check: Check::Smtp,
            ip: SRV,
            port: 25,
            want: None,
        },
        Case {
            what: "smtp refused",
            check: Check::Smtp,
            ip: SRV,
            port: 26,
            want: Some("tcp connect failed (Connection refused (os error 111))"),
        },
    ];
    let mut cfg = EngineConfig::default();
    for (i, c) in cases.iter().enumerate() {
        let id = u32::try_from(i + 1).unwrap();
        cfg.tables.push(table(
            id,
            c.check.clone(),
            c.port,
            Duration::from_secs(30),
            Duration::from_millis(700),
        ));
        cfg.hosts.push(host(id, i, c.ip, 0));
    }
    let h = spawn_in(&env, cfg);
    let ids: Vec<u32> = (1..=u32::try_from(cases.len()).unwrap()).collect();
    let results = first_results(&h, &ids, Duration::from_secs(10));
    let mut wrong = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let id = u32::try_from(i + 1).unwrap();
        let r = results.iter().find(|r| r.id == id).unwrap();
        let got = r.error.as_ref().map(|e| e.to_string());
        let ok = match c.want {
            None => r.new == State::Up,
            Some(w) => r.new == State::Down && got.as_deref() == Some(w),
        };
        eprintln!("{}: {:?} {:?} took {:?}", c.what, r.new, got, r.took);
        if !ok {
            wrong.push(format!(
                "{}: {:?} {:?}, want {:?}",
                c.what, r.new, got, c.want
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// Kill the backend by PID: the engine reports it down within interval × (retry + 1) +
/// timeout of the kill; restart it: up again within one interval + timeout.
#[test]
fn backend_death_and_return() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_root("e2e_health");
    let mut env = lab("hcd");
    let pid = start_nginx(&mut env);
    let interval = Duration::from_secs(1);
    let timeout = Duration::from_millis(300);
    let retry = 1;
    let cfg = EngineConfig {
        tables: vec![table(
            1,
            http("/", HttpExpect::Code(200), false),
            80,
            interval,
            timeout,
        )],
        hosts: vec![host(1, 0, SRV, retry)],
        ..Default::default()
    };
    let h = spawn_in(&env, cfg);
    let up = first_results(&h, &[1], Duration::from_secs(5));
    assert_eq!(up[0].new, State::Up);

    assert!(env.lab.kill(pid));
    let killed = Instant::now();
    let bound = interval * (retry + 1) + timeout;
    let down = loop {
        match h.recv_timeout(bound * 2) {
            Some(Update::Host(u)) if u.new == State::Down => break u,
            Some(_) => continue,
            None => panic!("no down transition within {:?}", bound * 2),
        }
    };
    let took = killed.elapsed();
    // Margin for the scheduling of the shared machine; the failure that counts is an
    // engine that waits an extra round.
    assert!(
        took <= bound + Duration::from_millis(250),
        "down after {took:?}, bound {bound:?}"
    );
    assert_eq!(
        down.error.map(|e| e.to_string()).as_deref(),
        Some("tcp connect failed (Connection refused (os error 111))")
    );
    assert_eq!(down.retry_cnt, retry);

    start_nginx(&mut env);
    let restarted = Instant::now();
    loop {
        match h.recv_timeout(Duration::from_secs(5)) {
            Some(Update::Host(u)) if u.new == State::Up => break,
            Some(_) => continue,
            None => panic!("no up transition after the restart"),
        }
    }
    let took = restarted.elapsed();
    assert!(
        took <= interval + timeout + Duration::from_millis(250),
        "up after {took:?}"
    );
}

/// With `net.ipv4.ping_group_range` open in the checker's namespace the ICMP probe uses a
/// ping socket (the kernel owns the echo id, spec §9 item 15) instead of a raw one.
#[test]
fn icmp_over_ping_socket() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_root("e2e_health");
    let env = lab("hcp");
    let sysctl = need("sysctl");
    env.lab
        .exec(
            "chk",
            &[&sysctl, "-qw", "net.ipv4.ping_group_range=0 2147483647"],
        )
        .unwrap();
    let dgram_ok = env
        .lab
        .run_in("chk", || {
            socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::ICMPV4),
            )
            .is_ok()
        })
        .unwrap();
    assert!(
        dgram_ok,
        "ping sockets must be allowed now, so the probe takes that path"
    );
    let mut cfg = EngineConfig::default();
    for (i, ip) in [SRV, HOLE].iter().enumerate() {
        let id = u32::try_from(i + 1).unwrap();
        let t = table(
            id,
            Check::Icmp,
            0,
            Duration::from_secs(30),
            Duration::from_millis(500),
        );
        cfg.tables.push(t);
        cfg.hosts.push(host(id, i, ip, 0));
    }
    let h = spawn_in(&env, cfg);
    let r = first_results(&h, &[1, 2], Duration::from_secs(5));
    let of = |id: u32| r.iter().find(|u| u.id == id).unwrap();
    assert_eq!(of(1).new, State::Up);
    assert_eq!(of(2).new, State::Down);
    assert_eq!(
        of(2).error.as_ref().map(|e| e.to_string()).as_deref(),
        Some("icmp read timeout (after 500 ms)")
    );
}

/// From configuration text to `show hosts`: carpio's `check dns|ntp|smtp` syntax parsed,
/// the engine spawned with `health::spawn(&Config)`, real servers checked, rows rendered.
#[test]
fn config_text_to_show_hosts() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_root("e2e_health");
    let mut env = lab("hcc");
    start_unbound(&mut env);
    start_chrony(&mut env);
    start_smtpd(&mut env);
    let text = format!(
        "interval 1\n\
         table <dns> {{ {SRV} }}\n\
         table <ntp> {{ {SRV} }}\n\
         table <mx> {{ {SRV}, {HOLE} retry 1 }}\n\
         redirect \"dns\" {{\n\
         \tlisten on 198.18.7.100 udp port 53\n\
         \tforward to <dns> port 53 check dns \"www.example.test\" answer 198.18.7.80 timeout 400\n\
         }}\n\
         redirect \"ntp\" {{\n\
         \tlisten on 198.18.7.100 udp port 123\n\
         \tforward to <ntp> port 123 check ntp timeout 400\n\
         }}\n\
         redirect \"mx\" {{\n\
         \tlisten on 198.18.7.100 port 25\n\
         \tforward to <mx> port 25 check smtp timeout 400\n\
         }}\n"
    );
    let cfg = carpio::config::parse_str("e2e.conf", &text, &[]).expect("config");
    let h = env
        .lab
        .run_in("chk", move || carpio::health::spawn(&cfg))
        .unwrap()
        .expect("engine");
    let ids: Vec<u32> = {
        let items = h.items(Duration::from_secs(5)).unwrap();
        items
            .iter()
            .filter_map(|i| match i {
                carpio::ctl::proto::Item::Host { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    };
    assert_eq!(ids.len(), 4);
    let r = first_results(&h, &ids, Duration::from_secs(5));
    let up = r.iter().filter(|u| u.new == State::Up).count();
    let down: Vec<String> = r
        .iter()
        .filter(|u| u.new == State::Down)
        .filter_map(|u| u.error.as_ref().map(|e| e.to_string()))
        .collect();
    assert_eq!(up, 3, "{r:?}");
    assert_eq!(down, ["tcp connect timeout (after 400 ms)"]);
    let items = h.items(Duration::from_secs(5)).unwrap();
    let text = carpio::ctl::render::summary(&items, carpio::ctl::proto::Show::Hosts);
    for want in [
        "\tdns:53                  \t       \tactive (1 hosts)\n",
        "\tntp:123                 \t       \tactive (1 hosts)\n",
        "\tmx:25                   \t       \tactive (1 hosts)\n",
        &format!("\t{HOLE:<24}\t0.00%  \tdown\n"),
        "total: 0/1 checks, 1 retries, error: tcp connect timeout (after 400 ms)\n",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}
