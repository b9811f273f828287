//! BIRD 2's side of route injection: its control socket's text protocol (sans-IO reply
//! parsing) and the thread that writes the routes file and asks BIRD to reconfigure.
//!
//! The protocol is the one `birdc` speaks (BIRD's doc/reply_codes and the user's guide,
//! "Remote control"): the client sends one command per line; BIRD answers with lines
//! `NNNN-text` (more follow), `NNNN text` (the last one) or ` text` (continuation of the
//! previous code). `0xxx` is success, `1xxx`/`2xxx` table rows and headings, `8xxx` run-time
//! and `9xxx` parse-time errors; a `+` line is a spontaneous printout. On connect BIRD greets
//! with `0001 BIRD x.y ready.`. `configure` answers `0002-Reading configuration from FILE`, then
//! `0003 Reconfigured`, `0004 Reconfiguration in progress` (protocols still restarting),
//! `0005`/`0017` (queued behind a running reconfiguration: our file is already read), or an
//! error such as `8002 FILE:LINE:COL message` — BIRD then keeps its running configuration.
//!
//! The file is written to a temporary name and renamed over the old one, so BIRD never reads a
//! half-written file (it may reread it at any time: its own restart, an operator's
//! `birdc configure`). Nothing here panics on what BIRD sends; replies are bounded.
//!
//! The thread owns the TUN device the routes go via (module doc of [`super`]): it turns the
//! carrier on after BIRD accepted the first route set, and off first thing at shutdown, so the
//! routes leave BIRD at once even when its socket does not answer; the device itself goes when
//! the thread ends or the process dies.

use super::{Apply, ApplyError, Injector};
use crate::sys::tun::Tun;
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest reply accepted (lines and bytes); BIRD's answer to `configure` is a few lines.
pub const MAX_REPLY_LINES: usize = 256;
pub const MAX_LINE: usize = 4096;
/// Bound on one exchange with BIRD (connect, greeting, reply).
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// One line of a BIRD reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// `NNNN-text` (`last` false) or `NNNN text` (`last` true).
    Code {
        code: u16,
        last: bool,
        text: &'a str,
    },
    /// ` text`: continues the previous code.
    Continuation(&'a str),
    /// `+text`: a spontaneous printout (not part of the reply).
    Spontaneous(&'a str),
}

/// Parses one line (without its newline); `None` when it follows no rule of the protocol.
pub fn parse_line(line: &str) -> Option<Line<'_>> {
    if let Some(t) = line.strip_prefix(' ') {
        return Some(Line::Continuation(t));
    }
    if let Some(t) = line.strip_prefix('+') {
        return Some(Line::Spontaneous(t));
    }
    let digits = line.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code = digits.parse().ok()?;
    let (last, text) = match line.as_bytes().get(4) {
        Some(b' ') => (true, line.get(5..)?),
        Some(b'-') => (false, line.get(5..)?),
        None => (true, ""),
        Some(_) => return None,
    };
    Some(Line::Code { code, last, text })
}

/// What a finished `configure` reply means.
pub fn configure_outcome(code: u16, text: &str) -> Result<(), ApplyError> {
    match code {
        // Reconfigured; in progress; queued (already read); queued replacing an older one.
        3 | 4 | 5 | 17 => Ok(()),
        8000..=9999 => Err(ApplyError::Rejected(format!("{code:04} {text}"))),
        _ => Err(ApplyError::BadReply(format!("unexpected {code:04} {text}"))),
    }
}

/// Reads lines until the last one of a reply; returns its code and the reply's text (the
/// error lines, for the log).
fn read_reply<R: BufRead>(r: &mut R) -> Result<(u16, String), ApplyError> {
    let mut text = String::new();
    let mut buf = Vec::new();
    for _ in 0..MAX_REPLY_LINES {
        buf.clear();
        let n = <&mut R as Read>::take(&mut *r, MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .map_err(|e| ApplyError::Socket(e.to_string()))?;
        if n == 0 {
            return Err(ApplyError::Socket("connection closed mid-reply".into()));
        }
        if buf.last() != Some(&b'\n') {
            return Err(ApplyError::BadReply("line too long".into()));
        }
        let s = String::from_utf8_lossy(&buf[..buf.len() - 1]);
        match parse_line(&s) {
            Some(Line::Code {
                code,
                last,
                text: t,
            }) => {
                if !text.is_empty() {
                    text.push_str("; ");
                }
                text.push_str(t);
                if last {
                    return Ok((code, text));
                }
            }
            Some(Line::Continuation(t)) => {
                text.push(' ');
                text.push_str(t.trim());
            }
            Some(Line::Spontaneous(_)) => {}
            None => return Err(ApplyError::BadReply(format!("bad line {s:?}"))),
        }
    }
    Err(ApplyError::BadReply("reply too long".into()))
}

/// Sends `configure` to BIRD's control socket and waits for the outcome.
pub fn configure(socket: &Path) -> Result<(), ApplyError> {
    let sock = |e: std::io::Error| ApplyError::Socket(format!("{}: {e}", socket.display()));
    let s = UnixStream::connect(socket).map_err(sock)?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(sock)?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(sock)?;
    let mut r = BufReader::new(s.try_clone().map_err(sock)?);
    let (code, text) = read_reply(&mut r)?;
    if code != 1 {
        return Err(ApplyError::BadReply(format!("greeting {code:04} {text}")));
    }
    (&s).write_all(b"configure\n").map_err(sock)?;
    let (code, text) = read_reply(&mut r)?;
    configure_outcome(code, &text)
}

/// Writes `text` to `path` through a temporary file renamed over it.
pub fn write_routes(path: &Path, text: &str) -> Result<(), ApplyError> {
    let err = |e: std::io::Error| ApplyError::Write(format!("{}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".carpio-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// What the parent reads of the injector thread.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// What BIRD accepted last.
    pub announced: BTreeSet<IpAddr>,
    /// BIRD holds exactly the last wanted set.
    pub settled: bool,
    pub counters: Vec<(&'static str, u64)>,
    pub last_error: Option<String>,
    /// The TUN device has carrier: BIRD may announce what it was given.
    pub carrier: bool,
}

enum Msg {
    Want(BTreeSet<IpAddr>),
    /// Withdraw everything (best effort until the deadline) and end.
    Shutdown(Instant),
}

/// The injector thread: applies the wanted set, retries failures, withdraws on shutdown.
pub struct Handle {
    tx: Sender<Msg>,
    status: Arc<Mutex<Status>>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Starts the thread for `socket` and `routes`, with routes via `tun` (created without
    /// carrier); nothing is applied before the first [`Handle::want`].
    pub fn spawn(socket: PathBuf, routes: PathBuf, tun: Tun) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam::channel::unbounded();
        let status = Arc::new(Mutex::new(Status::default()));
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name("carpio-route".into())
            .spawn(move || run(&socket, &routes, &tun, &rx, &st))?;
        Ok(Self {
            tx,
            status,
            thread: Some(thread),
        })
    }

    /// The set to announce now (the thread applies the latest it has seen).
    pub fn want(&self, routes: BTreeSet<IpAddr>) {
        let _ = self.tx.send(Msg::Want(routes));
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Withdraws every route (retrying until `timeout`) and waits for the thread.
    pub fn shutdown(mut self, timeout: Duration) {
        self.stop(timeout);
    }

    fn stop(&mut self, timeout: Duration) {
        let _ = self.tx.send(Msg::Shutdown(Instant::now() + timeout));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop(IO_TIMEOUT);
    }
}

/// Logs `msg` unless it repeats the last one; keeps it for the status.
fn note(last_error: &mut Option<String>, msg: String) {
    if last_error.as_ref() != Some(&msg) {
        eprintln!("carpio: route: {msg}");
    }
    *last_error = Some(msg);
}

fn run(socket: &Path, routes: &Path, tun: &Tun, rx: &Receiver<Msg>, status: &Mutex<Status>) {
    let epoch = Instant::now();
    let mut inj = Injector::new(tun.name());
    let mut started = false;
    let mut shutdown: Option<Instant> = None;
    let mut last_error = None;
    let mut carrier = false;
    loop {
        let now = epoch.elapsed();
        if started {
            if let Some(Apply { text, .. }) = inj.poll_apply(now) {
                let res = write_routes(routes, &text).and_then(|()| configure(socket));
                let ok = res.is_ok();
                if let Err(e) = &res {
                    note(&mut last_error, e.to_string());
                } else {
                    last_error = None;
                }
                inj.handle_applied(epoch.elapsed(), res);
                // BIRD holds our set now: it may announce it (never during shutdown).
                if ok && !carrier && shutdown.is_none() {
                    match tun.set_carrier(true) {
                        Ok(()) => carrier = true,
                        Err(e) => note(&mut last_error, e.to_string()),
                    }
                }
            }
            if let Ok(mut s) = status.lock() {
                s.announced = inj.announced();
                s.settled = inj.settled();
                s.counters = inj.counter_values();
                s.last_error = last_error.clone();
                s.carrier = carrier;
            }
        }
        if let Some(deadline) = shutdown
            && (inj.settled() || Instant::now() >= deadline)
        {
            return;
        }
        // Wake for the next retry, or at least once a second.
        let wait = inj
            .poll_timeout()
            .map_or(Duration::from_secs(1), |t| {
                t.saturating_sub(epoch.elapsed())
            })
            .min(Duration::from_secs(1));
        let msg = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            // The parent is gone without a shutdown: withdraw anyway.
            Err(RecvTimeoutError::Disconnected) => Some(Msg::Shutdown(Instant::now() + IO_TIMEOUT)),
        };
        match msg {
            Some(Msg::Want(w)) if shutdown.is_none() => {
                inj.handle_desired(w);
                started = true;
            }
            Some(Msg::Shutdown(deadline)) if shutdown.is_none() => {
                shutdown = Some(deadline);
                // Out of BIRD's table at once (check link), whether or not BIRD then answers
                // the `configure` that empties the file.
                if carrier {
                    match tun.set_carrier(false) {
                        Ok(()) => carrier = false,
                        Err(e) => note(&mut last_error, e.to_string()),
                    }
                }
                inj.handle_desired(BTreeSet::new());
                started = true;
            }
            Some(_) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn lines_follow_the_cli_protocol() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready."),
            Some(Line::Code {
                code: 1,
                last: true,
                text: "BIRD 2.0.12 ready."
            })
        );
        assert_eq!(
            parse_line("0002-Reading configuration from /etc/bird/bird.conf"),
            Some(Line::Code {
                code: 2,
                last: false,
                text: "Reading configuration from /etc/bird/bird.conf"
            })
        );
        assert_eq!(
            parse_line(" Hostname is vm"),
            Some(Line::Continuation("Hostname is vm"))
        );
        assert_eq!(parse_line("+x"), Some(Line::Spontaneous("x")));
        assert_eq!(
            parse_line("0013"),
            Some(Line::Code {
                code: 13,
                last: true,
                text: ""
            })
        );
        for bad in ["", "abc", "12a4 x", "0003x", "00", "\u{e9}\u{e9}\u{e9}"] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn configure_outcomes() {
        for ok in [3, 4, 5, 17] {
            assert_eq!(configure_outcome(ok, ""), Ok(()), "{ok}");
        }
        assert!(matches!(
            configure_outcome(8002, "/etc/bird/carpio.conf:1:32 syntax error"),
            Err(ApplyError::Rejected(m)) if m.starts_with("8002 /etc/bird/carpio.conf:1:32")
        ));
        assert!(matches!(
            configure_outcome(9001, "Parse error"),
            Err(ApplyError::Rejected(_))
        ));
        // Shutting down, or a reply to something else.
        assert!(matches!(
            configure_outcome(6, "ignored"),
            Err(ApplyError::BadReply(_))
        ));
        assert!(matches!(
            configure_outcome(1000, "BIRD"),
            Err(ApplyError::BadReply(_))
        ));
    }

    #[test]
    fn replies_are_read_to_their_last_line_and_bounded() {
        let mut r =
            "0002-Reading configuration from x\n+spont\n 1\n0003 Reconfigured\nrest\n".as_bytes();
        let (code, text) = read_reply(&mut r).unwrap();
        assert_eq!(code, 3);
        assert_eq!(text, "Reading configuration from x 1; Reconfigured");
        let mut r = "0002-Reading\n".as_bytes();
        assert!(matches!(read_reply(&mut r), Err(ApplyError::Socket(_))));
        let mut r = "garbage\n".as_bytes();
        assert!(matches!(read_reply(&mut r), Err(ApplyError::BadReply(_))));
        let long = format!("0002-{}\n", "x".repeat(MAX_LINE));
        assert!(matches!(
            read_reply(&mut long.as_bytes()),
            Err(ApplyError::BadReply(_))
        ));
        let many = "0002-x\n".repeat(MAX_REPLY_LINES + 1);
        assert!(matches!(
            read_reply(&mut many.as_bytes()),
            Err(ApplyError::BadReply(_))
        ));
    }

    /// A lab namespace with the TUN device in it (never in the root namespace).
    fn lab_tun(tag: &str) -> (crate::lab::Lab, Tun) {
        let mut lab = crate::lab::Lab::new(tag).unwrap();
        lab.ns("n").unwrap();
        let tun = lab.run_in("n", || Tun::create("cio-rt")).unwrap().unwrap();
        (lab, tun)
    }

    /// `ip addr show` of the device, or None once it is gone.
    fn link(lab: &crate::lab::Lab) -> Option<String> {
        lab.ip("n", &["addr", "show", "dev", "cio-rt"])
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("carpio-route-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A fake BIRD on a unix socket: greets, reads one command, answers with `answers[i]`
    /// for the i-th connection and records what the routes file held at that moment.
    fn fake_bird(
        sock: &Path,
        routes: PathBuf,
        answers: Vec<&'static str>,
    ) -> JoinHandle<Vec<(String, String)>> {
        let l = UnixListener::bind(sock).unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for a in answers {
                let (mut c, _) = l.accept().unwrap();
                c.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
                let mut cmd = [0u8; 10];
                c.read_exact(&mut cmd).unwrap();
                let file = std::fs::read_to_string(&routes).unwrap_or_default();
                seen.push((String::from_utf8_lossy(&cmd).into_owned(), file));
                c.write_all(a.as_bytes()).unwrap();
            }
            seen
        })
    }

    #[test]
    fn handle_writes_configures_retries_and_withdraws() {
        let d = tmpdir("handle");
        let sock = d.join("bird.ctl");
        let routes = d.join("routes.conf");
        let fake = fake_bird(
            &sock,
            routes.clone(),
            vec![
                "0002-Reading configuration from /x\n0003 Reconfigured\n",
                // A bird.conf error: retried after the backoff.
                "0002-Reading configuration from /x\n8002 /x:3:1 syntax error\n",
                "0002-Reading configuration from /x\n0003 Reconfigured\n",
                "0002-Reading configuration from /x\n0003 Reconfigured\n",
            ],
        );
        let (lab, tun) = lab_tun("birdh");
        let h = Handle::spawn(sock.clone(), routes.clone(), tun).unwrap();
        let vip: IpAddr = "198.18.1.100".parse().unwrap();
        h.want([vip].into_iter().collect());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !h.status().settled || h.status().announced.len() != 1 {
            assert!(Instant::now() < deadline, "not applied: {:?}", h.status());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(h.status().last_error.is_none());
        // BIRD has the set: the carrier is on (it was off until then: `unreachable_socket...`).
        assert!(h.status().carrier);
        let l = link(&lab).unwrap();
        assert!(l.contains("LOWER_UP") && !l.contains("NO-CARRIER"), "{l}");
        // A change that BIRD first refuses, then accepts.
        let vip2: IpAddr = "198.18.1.101".parse().unwrap();
        h.want([vip, vip2].into_iter().collect());
        while !(h.status().settled && h.status().announced.len() == 2) {
            assert!(Instant::now() < deadline, "not applied: {:?}", h.status());
            std::thread::sleep(Duration::from_millis(20));
        }
        let st = h.status();
        let get = |n: &str| st.counters.iter().find(|c| c.0 == n).unwrap().1;
        assert_eq!(get("route_bird_configure_rejected"), 1);
        assert_eq!(get("route_applied"), 2);
        assert_eq!(get("route_announced"), 2);
        // Shutdown withdraws.
        h.shutdown(Duration::from_secs(5));
        let seen = fake.join().unwrap();
        assert_eq!(seen.len(), 4);
        for (cmd, _) in &seen {
            assert_eq!(cmd, "configure\n");
        }
        assert!(seen[0].1.contains("route 198.18.1.100/32 via \"cio-rt\";"));
        assert!(!seen[0].1.contains("198.18.1.101"));
        assert!(seen[2].1.contains("route 198.18.1.101/32 via \"cio-rt\";"));
        assert!(!seen[3].1.contains("\troute "), "{}", seen[3].1);
        assert_eq!(std::fs::read_to_string(&routes).unwrap(), seen[3].1);
        assert_eq!(get("route_withdrawn"), 0);
        // The thread has ended: the device went with its descriptor.
        let deadline = Instant::now() + Duration::from_secs(10);
        while link(&lab).is_some() {
            assert!(Instant::now() < deadline, "the device outlived the thread");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn unreachable_socket_is_counted_and_shutdown_is_bounded() {
        let d = tmpdir("nosock");
        let (lab, tun) = lab_tun("birdn");
        let h = Handle::spawn(d.join("none.ctl"), d.join("routes.conf"), tun).unwrap();
        h.want(["198.18.1.100".parse().unwrap()].into_iter().collect());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = h.status();
            if st
                .counters
                .iter()
                .any(|c| c.0 == "route_bird_socket_failed" && c.1 > 0)
            {
                assert!(!st.settled);
                assert!(st.last_error.is_some());
                // BIRD never took the set: no carrier, nothing it may announce.
                assert!(!st.carrier);
                assert!(link(&lab).unwrap().contains("NO-CARRIER"));
                break;
            }
            assert!(Instant::now() < deadline, "{st:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Bounded by its deadline although BIRD never answers.
        h.shutdown(Duration::from_millis(300));
        // The file was written (BIRD reads it when it comes back).
        assert!(d.join("routes.conf").exists());
        let _ = std::fs::remove_dir_all(d);
    }

    /// At shutdown the carrier goes first: BIRD drops the routes although it does not answer
    /// the `configure` that empties the file (here it stalls), while the device still exists.
    #[test]
    fn shutdown_drops_the_carrier_before_bird_answers() {
        let d = tmpdir("stall");
        let sock = d.join("bird.ctl");
        let l = UnixListener::bind(&sock).unwrap();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let fake = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
            let mut cmd = [0u8; 10];
            c.read_exact(&mut cmd).unwrap();
            c.write_all(b"0003 Reconfigured\n").unwrap();
            // The withdrawal: greeted, then answered only once the test has looked.
            let (mut c, _) = l.accept().unwrap();
            c.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
            let _ = c.read_exact(&mut cmd);
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
            let _ = c.write_all(b"0003 Reconfigured\n");
        });
        let (lab, tun) = lab_tun("birds");
        let h = Handle::spawn(sock, d.join("routes.conf"), tun).unwrap();
        h.want(["198.18.1.100".parse().unwrap()].into_iter().collect());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !h.status().carrier {
            assert!(Instant::now() < deadline, "{:?}", h.status());
            std::thread::sleep(Duration::from_millis(20));
        }
        let stopper = std::thread::spawn(move || h.shutdown(Duration::from_secs(20)));
        loop {
            let l = link(&lab).expect("the device exists until the thread ends");
            if l.contains("NO-CARRIER") {
                break;
            }
            assert!(Instant::now() < deadline, "carrier still on: {l}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = release_tx.send(());
        fake.join().unwrap();
        stopper.join().unwrap();
        let _ = std::fs::remove_dir_all(d);
    }
}
