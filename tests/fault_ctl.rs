//! Faults at the control plane of a running daemon (issue 11 item 4), in network namespaces
//! (root; `lab::Lab`, `cio-` names, 198.18.0.0/15 only, everything removed on drop, also on
//! failure; the daemon is SIGKILLed by PID on drop).
//!
//! ```text
//!  cl 198.18.1.2 ──veth── lb 198.18.1.1 (carpio, relay :7000) 198.18.2.1 ──veth── b1 198.18.2.11
//!                                                                              (TCP echo :7000)
//! ```
//!
//! - garbage, oversized and half-written control requests get an error reply or a close, and
//!   the daemon keeps answering (control socket and relay);
//! - 15 slow-loris clients and a `monitor` fill every control slot; the trickled requests
//!   are closed at the whole-request deadline and carpioctl works again (monitor unharmed);
//! - 100 rapid reloads, one in three of a broken file, keep serving, and each is counted;
//! - the relay running out of file descriptors (RLIMIT_NOFILE lowered for the daemon alone,
//!   with prlimit(1)) refuses connections it cannot take and serves again once they go;
//! - the same limit with a connection flood already running when the daemon starts: it
//!   finishes starting (relays accept only then), refuses and counts, and serves afterwards.
//!
//! Tests serialise on a file-local mutex; every wait is bounded by a deadline.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use carpio::ctl::client::Client;
use carpio::ctl::proto::{self, Request, Response, Show};
use carpio::lab::{Lab, VethConfig};

static SERIAL: Mutex<()> = Mutex::new(());

const RELAY: &str = "198.18.1.1:7000";
const PYTHON: &str = "/usr/bin/python3";

/// A threaded line echo server: answers each line with `echo <line>`.
const ECHO: &str = r#"
import socket, threading
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("198.18.2.11", 7000))
t.listen(256)
def serve(c):
    f = c.makefile("rb")
    try:
        for line in f:
            c.sendall(b"echo " + line)
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = t.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("cio-fault-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon; SIGKILLed and reaped on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// What the daemon's descriptors point at (for failure messages).
    fn fd_targets(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every test here starts from, one at a time (the returned guard): root and the tools
/// checked, a temporary directory, the lab, and a valid configuration written.
fn setup(
    dir_tag: &str,
    lab_tag: &str,
) -> (
    std::sync::MutexGuard<'static, ()>,
    TempDir,
    Lab,
    PathBuf,
    PathBuf,
) {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::require_root_and("fault_ctl", &["ip", "prlimit", PYTHON]);
    let dir = TempDir::new(dir_tag);
    let lab = topology(lab_tag, &dir);
    let sock = dir.path("carpio.sock");
    let conf = dir.path("carpio.conf");
    std::fs::write(&conf, config(&sock, false, 60)).expect("conf");
    (g, dir, lab, sock, conf)
}

fn config(sock: &Path, broken: bool, timeout: u32) -> String {
    format!(
        "# fault_ctl\ncontrol socket \"{}\"\ninterface l0 {{ ingress afpacket }}\n\
         relay echo {{\n listen on 198.18.1.1 port 7000\n forward to 198.18.2.11 port 7000\n \
         session timeout {timeout}\n}}\n{}",
        sock.display(),
        if broken {
            "relay {{ this is not a relay\n"
        } else {
            ""
        }
    )
}

fn topology(tag: &str, dir: &TempDir) -> Lab {
    let mut lab = Lab::new(tag).expect("lab");
    for ns in ["cl", "lb", "b1"] {
        lab.ns(ns).expect("netns");
    }
    lab.veth(&VethConfig::new("cl", "c0", "lb", "l0"))
        .expect("veth");
    lab.veth(&VethConfig::new("lb", "l1", "b1", "e0"))
        .expect("veth");
    lab.addr("cl", "c0", "198.18.1.2/24").expect("addr");
    lab.addr("lb", "l0", "198.18.1.1/24").expect("addr");
    lab.addr("lb", "l1", "198.18.2.1/24").expect("addr");
    lab.addr("b1", "e0", "198.18.2.11/24").expect("addr");
    let script = dir.path("echo.py");
    std::fs::write(&script, ECHO).expect("echo.py");
    lab.spawn("b1", &[PYTHON, &script.to_string_lossy()])
        .expect("echo server");
    lab
}

/// Starts carpio in the `lb` namespace, optionally with RLIMIT_NOFILE lowered to `nofile`.
fn start(lab: &Lab, conf: &Path, dir: &TempDir, nofile: Option<u64>) -> Daemon {
    let log = dir.path("carpio.log");
    let f = std::fs::File::create(&log).expect("log");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns_name("lb")]);
    if let Some(n) = nofile {
        // prlimit execs the daemon: the limit is the daemon's alone, not this test's.
        cmd.args(["prlimit", &format!("--nofile={n}:{n}")]);
    }
    let child = cmd
        .arg(env!("CARGO_BIN_EXE_carpio"))
        .args(["-d", "-f"])
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("carpio");
    Daemon { child, log }
}

/// One line through the relay; `None` if it is not answered within 2 s.
fn echo(lab: &Lab, msg: &str) -> Option<String> {
    let msg = msg.to_string();
    lab.run_in("cl", move || {
        let addr: SocketAddr = RELAY.parse().ok()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{msg}\n").as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    })
    .ok()
    .flatten()
}

fn wait_echo(lab: &Lab, d: &Daemon, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if echo(lab, "ping").as_deref() == Some("echo ping") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("relay not serving {what}; log:\n{}", d.log());
}

/// Waits (bounded) until the daemon has finished starting (its log says so).
fn wait_started(d: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !d.log().contains("started") {
        assert!(d.alive(), "daemon exited at start; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        d.log().contains("started"),
        "daemon never started; log:\n{}",
        d.log()
    );
}

fn call(sock: &Path, req: &Request) -> Response {
    let mut c = Client::connect(sock, Some(Duration::from_secs(10))).expect("control socket");
    c.call(req).expect("control reply")
}

fn counter(sock: &Path, name: &str) -> u64 {
    match call(
        sock,
        &Request::Show {
            what: Show::Counters,
        },
    ) {
        Response::Counters { counters } => counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|c| c.1)
            .unwrap_or_else(|| panic!("no counter {name}")),
        other => panic!("show counters: {other:?}"),
    }
}

/// Reads reply lines from a raw control connection until `n` arrive, EOF, or 10 s.
fn replies(s: &mut UnixStream, n: usize) -> Vec<Response> {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut out = Vec::new();
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => out.push(serde_json::from_str(line.trim_end()).expect("reply is JSON")),
        }
    }
    out
}

fn is_error(r: &Response) -> bool {
    matches!(r, Response::Error { .. })
}

#[test]
fn garbage_oversized_and_half_written_requests() {
    let (_g, dir, lab, sock, conf) = setup("garbage", "fctl-g");
    let mut d = start(&lab, &conf, &dir, None);
    wait_echo(&lab, &d, "at start");
    let requests_before = counter(&sock, "daemon_ctl_requests");

    // Garbage lines on one connection: one error reply each, the connection stays usable.
    let garbage: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        b"{".to_vec(),
        b"{\"cmd\":\"no_such_command\"}".to_vec(),
        b"{\"cmd\":\"show\",\"what\":\"everything\"}".to_vec(),
        b"{\"cmd\":\"set\",\"object\":\"host\",\"target\":1,\"enable\":\"yes\"}".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        b"[1,2,3]".to_vec(),
        b"null".to_vec(),
        b"\"\\ud800\"".to_vec(),
        vec![b'['; 5000],
    ];
    let mut s = UnixStream::connect(&sock).expect("connect");
    for g in &garbage {
        s.write_all(g).expect("write");
        s.write_all(b"\n").expect("write");
    }
    s.write_all(b"{\"cmd\":\"show\",\"what\":\"summary\"}\n")
        .expect("write");
    let got = replies(&mut s, garbage.len() + 1);
    assert_eq!(got.len(), garbage.len() + 1, "{got:?}");
    assert!(got[..garbage.len()].iter().all(is_error), "{got:?}");
    assert!(
        matches!(got[garbage.len()], Response::Summary { .. }),
        "the same connection still answers: {:?}",
        got[garbage.len()]
    );
    drop(s);

    // Oversized: 1 MiB without a newline, then the newline: an error, then still usable.
    let mut s = UnixStream::connect(&sock).expect("connect");
    let big = vec![b'x'; 1 << 20];
    s.write_all(&big).expect("write");
    s.write_all(b"\n{\"cmd\":\"poll\"}\n").expect("write");
    let got = replies(&mut s, 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(is_error(&got[0]), "{got:?}");
    assert!(
        matches!(&got[0], Response::Error { message } if message.contains("too long")),
        "{got:?}"
    );
    drop(s);

    // Half-written: a request cut before its newline, then the client closes its side. The
    // daemon answers what it got (an error for the cut JSON) and closes.
    let mut s = UnixStream::connect(&sock).expect("connect");
    s.write_all(b"{\"cmd\":\"sh").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let got = replies(&mut s, 2);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(is_error(&got[0]), "{got:?}");
    drop(s);

    // Clients that connect, write half a request and vanish (reset), 200 of them.
    for i in 0..200 {
        let mut s = UnixStream::connect(&sock).expect("connect");
        let _ = s.write_all(&b"{\"cmd\":\"show\",\"what\":\"hosts\"}"[..(i % 29) + 1]);
    }

    // Connections held open with half a request fill the 16 slots: the 17th is refused by
    // name (an error reply, then close), and once they go the socket answers again.
    // The vanished clients' threads above may still hold slots for a moment, and a held
    // connection that arrives then is itself refused: such ones are replaced until all 16
    // hold a slot. The probe sends a garbage line, so a probe that gets a slot is answered
    // at once (a parse error, never reaching the parent) instead of waiting for a timeout.
    let hold = || {
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.write_all(b"{\"cmd\":").expect("write");
        s
    };
    let mut held: Vec<UnixStream> = (0..carpio::ctl::server::MAX_CLIENTS)
        .map(|_| hold())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = None;
    let mut probes_served = 0;
    while Instant::now() < deadline {
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.write_all(b"probe\n").expect("write");
        match replies(&mut s, 1).first() {
            Some(Response::Error { message }) if message.contains("too many") => {
                refused = Some(message.clone());
                break;
            }
            _ => probes_served += 1,
        }
        drop(s);
        // A held connection that was refused has an error line (or EOF) to read; one that
        // holds a slot has nothing. Replace the refused ones.
        for h in held.iter_mut() {
            h.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            let mut b = [0u8; 1];
            if !matches!(std::io::Read::read(h, &mut b), Err(ref e)
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
            {
                *h = hold();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        refused.is_some(),
        "the 17th connection was not refused ({probes_served} probes were served)"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut back = false;
    while Instant::now() < deadline && !back {
        let mut c = Client::connect(&sock, Some(Duration::from_secs(1))).expect("connect");
        back = matches!(c.call(&Request::Poll), Ok(Response::Ok));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        back,
        "the control socket did not come back after the held clients left"
    );

    // carpioctl and the relay still work; only well-formed requests reached the parent.
    let o = Command::new(env!("CARGO_BIN_EXE_carpioctl"))
        .arg("-s")
        .arg(&sock)
        .args(["show", "summary"])
        .output()
        .expect("carpioctl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(echo(&lab, "after").as_deref(), Some("echo after"));
    assert!(d.alive(), "daemon died; log:\n{}", d.log());
    // The relay's own counters are in `show counters` too: the echoes above went through it
    // ("after\n" in, "echo after\n" out, at least).
    assert!(counter(&sock, "relay_session_accepted") >= 2);
    assert!(counter(&sock, "relay_bytes_in") >= 6);
    assert!(counter(&sock, "relay_bytes_out") >= 11);
    let requests = counter(&sock, "daemon_ctl_requests") - requests_before;
    // summary, poll, the recovery polls, show summary, this show counters: a handful, never
    // one per garbage line.
    assert!(
        requests < 40,
        "{requests} requests reached the parent from garbage"
    );
}

#[test]
fn rapid_reload_loop_keeps_serving() {
    let (_g, dir, lab, sock, conf) = setup("reload", "fctl-r");
    let mut d = start(&lab, &conf, &dir, None);
    wait_echo(&lab, &d, "at start");
    // A connection opened before the loop must survive it.
    let mut long = lab
        .run_in("cl", || {
            TcpStream::connect_timeout(&RELAY.parse().expect("addr"), Duration::from_secs(2))
        })
        .expect("netns")
        .expect("connect");
    long.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let ok0 = counter(&sock, "daemon_reloads");
    let bad0 = counter(&sock, "daemon_reload_failed");
    let (mut good, mut bad) = (0u64, 0u64);
    let started = Instant::now();
    for i in 0..100u32 {
        let broken = i % 3 == 2;
        std::fs::write(&conf, config(&sock, broken, 60 + i)).expect("conf");
        let r = call(&sock, &Request::Reload);
        if broken {
            assert!(matches!(r, Response::Failed { .. }), "reload {i}: {r:?}");
            bad += 1;
        } else {
            assert_eq!(r, Response::Ok, "reload {i}");
            good += 1;
        }
        if i % 10 == 9 {
            let m = format!("during-{i}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut ok = false;
            while !ok && Instant::now() < deadline {
                ok = echo(&lab, &m).as_deref() == Some(format!("echo {m}").as_str());
            }
            assert!(ok, "not serving after reload {i}; log:\n{}", d.log());
        }
    }
    let took = started.elapsed();
    assert_eq!(counter(&sock, "daemon_reloads") - ok0, good);
    assert_eq!(counter(&sock, "daemon_reload_failed") - bad0, bad);
    long.write_all(b"still here\n").expect("write");
    let mut line = String::new();
    BufReader::new(&mut long)
        .read_line(&mut line)
        .expect("read");
    assert_eq!(
        line, "echo still here\n",
        "a session did not survive 100 reloads"
    );
    assert!(d.alive(), "daemon died; log:\n{}", d.log());
    eprintln!("fault_ctl: 100 reloads ({good} good, {bad} refused) in {took:?}");
}

/// The descriptors a daemon started without a limit holds at rest.
fn fds_at_rest(lab: &Lab, conf: &Path, dir: &TempDir) -> usize {
    let mut d = start(lab, conf, dir, None);
    wait_echo(lab, &d, "unlimited");
    wait_started(&mut d);
    // Idle again (the probe session closed): count after the relay let go of it.
    std::thread::sleep(Duration::from_millis(300));
    let n = d.open_fds();
    assert!(n > 3, "could not count the daemon's descriptors");
    n
}

#[test]
fn relay_out_of_file_descriptors_refuses_and_recovers() {
    let (_g, dir, lab, sock, conf) = setup("nofile", "fctl-f");
    // Measure what the daemon needs at rest, then run it again with only a few to spare.
    let base = fds_at_rest(&lab, &conf, &dir);
    // Room for a handful of sessions (two sockets and up to two splice pipes each); 60
    // clients need far more.
    let limit = base as u64 + 16;
    let mut d = start(&lab, &conf, &dir, Some(limit));
    wait_echo(&lab, &d, "with a low RLIMIT_NOFILE");
    wait_started(&mut d);

    // 60 clients connect and each sends a line; only a few can be relayed at once. The
    // rest are refused: their connect times out once the listen backlog is full, or they are
    // connected by the kernel but never relayed.
    const CLIENTS: usize = 60;
    let mut clients: Vec<TcpStream> = lab
        .run_in("cl", || {
            (0..CLIENTS)
                .filter_map(|_| {
                    TcpStream::connect_timeout(
                        &RELAY.parse().expect("addr"),
                        Duration::from_millis(300),
                    )
                    .ok()
                })
                .collect()
        })
        .expect("netns");
    let connected = clients.len();
    let mut served = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        if c.write_all(format!("c{i}\n").as_bytes()).is_err() {
            continue;
        }
        let mut buf = [0u8; 64];
        if let Ok(n) = c.read(&mut buf)
            && n > 0
        {
            served += 1;
        }
    }
    eprintln!(
        "fault_ctl: RLIMIT_NOFILE {limit} (idle daemon {base}): {connected}/{CLIENTS} connected, \
         {served} relayed while held"
    );
    assert!(
        served < CLIENTS,
        "all {CLIENTS} clients served under a limit of {limit} descriptors"
    );
    assert!(
        d.alive(),
        "daemon died out of descriptors; log:\n{}",
        d.log()
    );
    assert!(
        d.open_fds() <= limit as usize,
        "more descriptors than the limit?"
    );

    // The clients go; the relay accepts again (relayd-style one-second accept pause). The
    // listen backlog still holds the connections the relay never took: it accepts and closes
    // those first, and while they drain a new client may be refused too. Recovered means 20
    // clients in a row served.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut in_a_row, mut refused_after) = (0, 0);
    let mut i = 0;
    while in_a_row < 20 && Instant::now() < deadline {
        let m = format!("after-{i}");
        i += 1;
        if echo(&lab, &m) == Some(format!("echo {m}")) {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            refused_after += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!("fault_ctl: recovered after {refused_after} refused while the backlog drained");
    assert_eq!(
        in_a_row,
        20,
        "relay did not recover; {} descriptors open: {:?}; log:\n{}",
        d.open_fds(),
        d.fd_targets(),
        d.log()
    );
    assert!(d.alive());
    // The control socket answers too (it shares the descriptor limit).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ctl_ok = false;
    while !ctl_ok && Instant::now() < deadline {
        ctl_ok = UnixStream::connect(&sock).is_ok_and(|mut s| {
            s.write_all(proto::to_line(&Request::Poll).as_bytes())
                .is_ok()
                && replies(&mut s, 1).first() == Some(&Response::Ok)
        });
    }
    assert!(ctl_ok, "control socket not answering after the exhaustion");
}

/// Slow-loris on the control socket: a `monitor` client and 15 clients trickling a request
/// one byte a second fill all 16 slots (a 17th connection is refused by name). Each trickled
/// request has REQUEST_TIMEOUT to arrive whole, so the tricklers are answered with an error and
/// closed, and carpioctl works again within that deadline plus a margin (polled). Without the
/// whole-request deadline every single read resets the idle limit and the tricklers hold the
/// slots for as long as they trickle (25 s here). The monitor client keeps its subscription.
#[test]
fn slow_loris_clients_cannot_lock_carpioctl_out() {
    use carpio::ctl::server::{MAX_CLIENTS, REQUEST_TIMEOUT};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (_g, dir, lab, sock, conf) = setup("loris", "fctl-s");
    let mut d = start(&lab, &conf, &dir, None);
    wait_echo(&lab, &d, "at start");
    wait_started(&mut d);
    let timeouts0 = counter(&sock, "daemon_ctl_request_timeouts");
    let refused0 = counter(&sock, "daemon_ctl_refused");

    let mut monitor = UnixStream::connect(&sock).expect("connect");
    monitor
        .write_all(proto::to_line(&Request::Monitor).as_bytes())
        .expect("write");
    // Let the monitor subscribe before the tricklers arrive (it is then reading nothing).
    std::thread::sleep(Duration::from_millis(300));

    const TRICKLE_FOR: Duration = Duration::from_secs(25);
    let tricklers: Vec<UnixStream> = (0..MAX_CLIENTS - 1)
        .map(|_| UnixStream::connect(&sock).expect("connect"))
        .collect();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicUsize::new(0));
    let trickler = {
        let (stop, closed) = (stop.clone(), closed.clone());
        std::thread::spawn(move || {
            let req = b"{\"cmd\":\"show\",\"what\":\"summary\"}";
            let mut open: Vec<UnixStream> = tricklers;
            let mut i = 0;
            while !open.is_empty() && t0.elapsed() < TRICKLE_FOR && !stop.load(Ordering::Relaxed) {
                let b = req[i % req.len()];
                i += 1;
                let before = open.len();
                open.retain_mut(|s| s.write_all(&[b]).is_ok());
                closed.fetch_add(before - open.len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    // All slots are taken: a 17th connection is refused by name.
    std::thread::sleep(Duration::from_millis(500));
    let mut probe = UnixStream::connect(&sock).expect("connect");
    probe.write_all(b"probe\n").expect("write");
    let got = replies(&mut probe, 1);
    assert!(
        matches!(got.first(), Some(Response::Error { message }) if message.contains("too many")),
        "the 17th connection was not refused: {got:?}"
    );
    drop(probe);

    // carpioctl works again once the trickled requests run out of time.
    let limit = REQUEST_TIMEOUT + Duration::from_secs(10);
    let mut back = None;
    while back.is_none() && t0.elapsed() < limit {
        let o = Command::new(env!("CARGO_BIN_EXE_carpioctl"))
            .arg("-s")
            .arg(&sock)
            .args(["show", "summary"])
            .output()
            .expect("carpioctl");
        if o.status.success() {
            back = Some(t0.elapsed());
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let Some(back) = back else {
        stop.store(true, Ordering::Relaxed);
        panic!(
            "carpioctl locked out for {limit:?} by {} trickling clients",
            MAX_CLIENTS - 1
        );
    };
    // The trickler ends once every write fails (the daemon closed them all) or at its bound.
    let _ = trickler.join();
    eprintln!("fault_ctl: carpioctl back {back:?} after the slow-loris began");
    assert_eq!(
        closed.load(Ordering::Relaxed),
        MAX_CLIENTS - 1,
        "every trickler was closed by the daemon"
    );
    assert!(counter(&sock, "daemon_ctl_request_timeouts") - timeouts0 >= (MAX_CLIENTS - 1) as u64);
    assert!(counter(&sock, "daemon_ctl_refused") > refused0);

    // The monitor client was not closed: a reload reaches it as an event.
    assert_eq!(call(&sock, &Request::Reload), Response::Ok);
    let got = replies(&mut monitor, 1);
    assert!(
        matches!(got.first(), Some(Response::Event { kind, .. }) if kind == "reload"),
        "monitor did not get the reload event: {got:?}"
    );
    assert!(d.alive(), "daemon died; log:\n{}", d.log());
}

/// A connection flood at the relay while the daemon starts with a low RLIMIT_NOFILE: the
/// relay may take only what the limit leaves, and refuses (counts) the rest, and the daemon
/// must finish starting and serve once the flood goes. Relays that accepted before the rest of
/// the daemon had opened its descriptors (control socket, signal pipe) made start-up fail with
/// EMFILE, and an error while starting is fatal.
#[test]
fn start_up_under_a_connection_flood_with_few_descriptors() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (_g, dir, lab, sock, conf) = setup("flood", "fctl-u");
    let base = fds_at_rest(&lab, &conf, &dir);
    let limit = base as u64 + 16;

    // Four threads in the client namespace connect as fast as they can (a refused connect is
    // retried at once) and hold what they get, from before the daemon starts until told to
    // stop or 20 s pass.
    let stop = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicUsize::new(0));
    let mut d = std::thread::scope(|s| {
        let flood = {
            let (stop, held, lab) = (stop.clone(), held.clone(), &lab);
            s.spawn(move || {
                lab.run_in("cl", || {
                    std::thread::scope(|s2| {
                        for _ in 0..4 {
                            let (stop, held) = (stop.clone(), held.clone());
                            s2.spawn(move || {
                                let t0 = Instant::now();
                                let mut conns = Vec::new();
                                let addr: SocketAddr = RELAY.parse().expect("addr");
                                while !stop.load(Ordering::Relaxed)
                                    && t0.elapsed() < Duration::from_secs(20)
                                    && conns.len() < 100
                                {
                                    match TcpStream::connect_timeout(
                                        &addr,
                                        Duration::from_millis(200),
                                    ) {
                                        Ok(mut c) => {
                                            let _ = c.write_all(b"flood\n");
                                            conns.push(c);
                                            held.fetch_add(1, Ordering::Relaxed);
                                        }
                                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                                    }
                                }
                                // Hold them until told to stop (bounded).
                                while !stop.load(Ordering::Relaxed)
                                    && t0.elapsed() < Duration::from_secs(20)
                                {
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                            });
                        }
                    });
                })
                .expect("netns")
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let mut d = start(&lab, &conf, &dir, Some(limit));
        // Started, or exited: bounded.
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && d.alive() && !d.log().contains("started") {
            std::thread::sleep(Duration::from_millis(20));
        }
        let alive = d.alive();
        // Keep flooding a little after the start, then let go.
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        let _ = flood.join();
        assert!(
            alive && d.log().contains("started"),
            "daemon did not start under the flood (RLIMIT_NOFILE {limit}, {} connections \
             held); log:\n{}",
            held.load(Ordering::Relaxed),
            d.log()
        );
        d
    });
    eprintln!(
        "fault_ctl: started under a flood of {} connections with RLIMIT_NOFILE {limit} (idle {base})",
        held.load(Ordering::Relaxed)
    );
    assert!(
        held.load(Ordering::Relaxed) > 16,
        "the flood never got through"
    );
    // The relay refused what it could not take (accept errors counted), and serves again.
    wait_echo(&lab, &d, "after the flood");
    assert!(counter(&sock, "drop_relay_accept_error") > 0);
    assert!(d.alive(), "daemon died; log:\n{}", d.log());
}
