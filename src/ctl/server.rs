//! The daemon side of the control socket: a unix stream socket (mode 0660, relayd's
//! `control.c` uses the same), one accept thread, and one short-lived thread per connection (at
//! most [`MAX_CLIENTS`] at a time; more are answered with an error and closed). Each request
//! line is bounded ([`proto::MAX_REQUEST`]); a line that does not parse is answered with
//! [`Response::Error`] and the connection stays usable. Parsed requests go to the daemon's
//! parent thread over a channel with a reply channel; the server never touches daemon state.
//! `monitor` keeps the reply channel open: the parent sends [`Response::Event`]s into it (a
//! bounded queue of [`MONITOR_QUEUE`]; a client too slow to read them loses events, never
//! stalls the parent) and the connection forwards them until the client goes away.
//!
//! Nothing a client sends can crash the daemon: no unwrap on client input, and no client can
//! hold a slot forever. Two clocks, as HAProxy's `timeout http-request` and `timeout
//! http-keep-alive`: a request must arrive whole within [`REQUEST_TIMEOUT`] (the first one
//! counted from the accept, later ones from their first byte), so a client trickling one byte
//! at a time (slow-loris) is answered with an error and closed; between requests a connection
//! may stay silent for [`CLIENT_IDLE`]. A reply must be taken by the client within
//! [`CLIENT_IDLE`] as a whole. `monitor` connections, once subscribed, only write. Each close
//! and refusal is counted ([`CtlCounter`], shown by `show counters`).

use super::proto::{self, Request, Response};
use crossbeam::channel::{Sender, bounded};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Concurrent connections served; more are refused with an error reply.
pub const MAX_CLIENTS: usize = 16;
/// A connection idle this long between requests is closed; a reply not taken by the client
/// within this long is abandoned and the connection closed.
pub const CLIENT_IDLE: Duration = Duration::from_secs(30);
/// A request (one line of at most [`proto::MAX_REQUEST`] bytes) must arrive whole this long
/// after the connection was accepted (the first request) or after its first byte (later
/// ones). A local client writes a line in microseconds; this only bounds hostile ones.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection waits for the parent's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Events queued for one `monitor` client.
pub const MONITOR_QUEUE: usize = 256;
/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(100);
/// How long the refusal of a connection beyond the limit may take to write.
const REFUSE_WRITE: Duration = Duration::from_millis(100);

crate::named_counters! {
    /// What the control socket refused or closed (shown by `show counters`).
    pub enum CtlCounter {
        /// A request not complete within [`REQUEST_TIMEOUT`] (slow-loris): answered and closed.
        RequestTimeouts = "daemon_ctl_request_timeouts",
        /// A connection silent for [`CLIENT_IDLE`] between requests: closed.
        IdleCloses = "daemon_ctl_idle_closes",
        /// A reply the client did not take within [`CLIENT_IDLE`]: connection closed.
        WriteTimeouts = "daemon_ctl_write_timeouts",
        /// A connection beyond [`MAX_CLIENTS`]: answered with an error and closed.
        Refused = "daemon_ctl_refused",
    }
}

/// The control socket's counters, shared by the accept thread and the connection threads.
#[derive(Debug, Default)]
pub struct Stats([AtomicU64; CtlCounter::COUNT]);

impl Stats {
    fn add(&self, c: CtlCounter) {
        if let Some(a) = self.0.get(c.index()) {
            // Relaxed: plain statistics, ordered with nothing else.
            a.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One counter's value.
    pub fn get(&self, c: CtlCounter) -> u64 {
        self.0
            .get(c.index())
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Every counter by name, in [`CtlCounter::ALL`] order.
    pub fn values(&self) -> Vec<(String, u64)> {
        CtlCounter::ALL
            .iter()
            .map(|&c| (c.name().to_string(), self.get(c)))
            .collect()
    }
}

/// A request from a client with the channel its one reply goes back on.
pub struct Call {
    pub request: Request,
    pub reply: Sender<Response>,
}

/// The running server; [`Server::stop`] (or drop) ends it and removes the socket file.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

/// Binds `path` (an existing socket file is replaced only if nobody answers on it), sets mode
/// 0660 and optionally the owner, and serves requests into `calls`.
pub fn start(path: &Path, owner: Option<(u32, u32)>, calls: Sender<Call>) -> io::Result<Server> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another daemon is listening", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let active = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(Stats::default());
    let st = stats.clone();
    let thread = std::thread::Builder::new()
        .name("carpio-ctl".into())
        .spawn(move || accept_loop(listener, flag, active, calls, st))?;
    Ok(Server {
        path: path.to_path_buf(),
        stop,
        stats,
        thread: Some(thread),
    })
}

impl Server {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket's counters (they outlive [`Server::stop`]).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops accepting, waits for the accept thread, removes the socket file.
    pub fn stop(&mut self) {
        // Relaxed: a flag with no data behind it; the thread is joined right after.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    calls: Sender<Call>,
    stats: Arc<Stats>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let accepted = Instant::now();
                let _ = stream.set_nonblocking(false);
                // AcqRel pairs with the decrement when a connection thread ends.
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    stats.add(CtlCounter::Refused);
                    // A client that does not read must not stall the accept loop.
                    let _ = stream.set_write_timeout(Some(REFUSE_WRITE));
                    let _ = stream.write_all(
                        proto::to_line(&Response::Error {
                            message: "too many control connections".into(),
                        })
                        .as_bytes(),
                    );
                    continue;
                }
                let calls = calls.clone();
                let active2 = active.clone();
                let stop2 = stop.clone();
                let stats2 = stats.clone();
                let spawned = std::thread::Builder::new()
                    .name("carpio-ctl-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, &calls, &stop2, accepted, &stats2);
                        active2.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Reads one line of at most `MAX_REQUEST` bytes; `Ok(None)` at end of stream. A longer line
/// is consumed up to its newline and reported as `Err(len)`.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<Result<(), usize>>> {
    buf.clear();
    let limit = proto::MAX_REQUEST as u64 + 1;
    let n = r.by_ref().take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(Ok(())));
    }
    if buf.len() as u64 >= limit {
        // Too long: skip the rest of the line.
        let mut total = buf.len();
        loop {
            buf.clear();
            let n = r.by_ref().take(limit).read_until(b'\n', buf)?;
            total += n;
            if n == 0 || buf.last() == Some(&b'\n') {
                return Ok(Some(Err(total)));
            }
        }
    }
    // Last line without a newline.
    Ok(Some(Ok(())))
}

/// The connection's read side: each read waits at most until the current request's
/// deadline, or [`CLIENT_IDLE`] when no request is under way.
struct Conn {
    stream: UnixStream,
    deadline: Option<Instant>,
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wait = match self.deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                left.min(CLIENT_IDLE)
            }
            None => CLIENT_IDLE,
        };
        self.stream.set_read_timeout(Some(wait))?;
        self.stream.read(buf)
    }
}

/// A read or write that ran out of time (SO_RCVTIMEO/SO_SNDTIMEO give EAGAIN).
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes all of `buf` within [`CLIENT_IDLE`] in total, not per write: a client reading one
/// byte at a time cannot hold the connection thread longer.
fn write_reply(w: &mut UnixStream, buf: &[u8], stats: &Stats) -> io::Result<()> {
    let deadline = Instant::now() + CLIENT_IDLE;
    let mut rest = buf;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = if left.is_zero() {
            Err(io::ErrorKind::TimedOut.into())
        } else {
            w.set_write_timeout(Some(left)).and_then(|()| w.write(rest))
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if timed_out(&e) {
                    stats.add(CtlCounter::WriteTimeouts);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

fn serve(
    stream: UnixStream,
    calls: &Sender<Call>,
    stop: &AtomicBool,
    accepted: Instant,
    stats: &Stats,
) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    // The first request is due REQUEST_TIMEOUT after the accept: a client that connects and
    // says nothing holds its slot no longer than one that trickles.
    let mut reader = BufReader::new(Conn {
        stream,
        deadline: Some(accepted + REQUEST_TIMEOUT),
    });
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if reader.get_ref().deadline.is_none() {
            // Between requests: wait (up to CLIENT_IDLE) for the next one's first byte; its
            // deadline runs from there. Bytes already buffered start it at once.
            if reader.buffer().is_empty() {
                match reader.fill_buf() {
                    Ok([]) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if timed_out(&e) => {
                        stats.add(CtlCounter::IdleCloses);
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            reader.get_mut().deadline = Some(Instant::now() + REQUEST_TIMEOUT);
        }
        let got = match read_line(&mut reader, &mut line) {
            Ok(got) => got,
            Err(e) if timed_out(&e) => {
                stats.add(CtlCounter::RequestTimeouts);
                // Best effort, like HAProxy's 408: the client learns why it was closed.
                let _ = writer.set_write_timeout(Some(REFUSE_WRITE));
                let _ = writer.write_all(
                    proto::to_line(&Response::Error {
                        message: format!(
                            "request timeout (a request must arrive whole within {} s)",
                            REQUEST_TIMEOUT.as_secs()
                        ),
                    })
                    .as_bytes(),
                );
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let resp = match got {
            None => return Ok(()),
            Some(Err(len)) => Response::Error {
                message: format!(
                    "request too long ({len} bytes, at most {})",
                    proto::MAX_REQUEST
                ),
            },
            // Blank lines are not requests: the deadline of the one under way keeps running.
            Some(Ok(())) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Some(Ok(())) => match proto::parse_request(&line) {
                Err(message) => Response::Error { message },
                Ok(Request::Monitor) => {
                    let (tx, rx) = bounded(MONITOR_QUEUE);
                    let request = Request::Monitor;
                    if calls.send(Call { request, reply: tx }).is_err() {
                        return Ok(());
                    }
                    // Forward events until the parent drops the subscription, the client
                    // closes (the write fails) or the server stops. Nothing is read any more.
                    while !stop.load(Ordering::Relaxed) {
                        match rx.recv_timeout(ACCEPT_POLL) {
                            Ok(ev) => {
                                write_reply(&mut writer, proto::to_line(&ev).as_bytes(), stats)?;
                            }
                            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => {
                                return Ok(());
                            }
                        }
                    }
                    return Ok(());
                }
                Ok(request) => {
                    let (tx, rx) = bounded(1);
                    if calls.send(Call { request, reply: tx }).is_err() {
                        Response::Failed {
                            reason: "daemon is shutting down".into(),
                        }
                    } else {
                        rx.recv_timeout(REPLY_TIMEOUT)
                            .unwrap_or_else(|_| Response::Failed {
                                reason: "no answer from the daemon".into(),
                            })
                    }
                }
            },
        };
        write_reply(&mut writer, proto::to_line(&resp).as_bytes(), stats)?;
        // Answered: the connection is between requests again.
        reader.get_mut().deadline = None;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::client::Client;
    use crate::ctl::proto::Show;

    fn tmp_socket(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("carpio-ctl-{}-{tag}.sock", std::process::id()))
    }

    /// A parent that answers `show counters` with one counter and everything else with Ok.
    fn parent(rx: crossbeam::channel::Receiver<Call>) -> JoinHandle<()> {
        std::thread::spawn(move || {
            while let Ok(c) = rx.recv() {
                let r = match c.request {
                    Request::Show {
                        what: Show::Counters,
                    } => Response::Counters {
                        counters: vec![("flow_new".into(), 3)],
                    },
                    Request::Stop => {
                        let _ = c.reply.send(Response::Ok);
                        return;
                    }
                    _ => Response::Ok,
                };
                let _ = c.reply.send(r);
            }
        })
    }

    #[test]
    fn serves_requests_and_survives_garbage() {
        let path = tmp_socket("a");
        let (tx, rx) = crossbeam::channel::unbounded();
        let p = parent(rx);
        let mut server = start(&path, None, tx).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);

        let mut raw = UnixStream::connect(&path).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(raw.try_clone().unwrap());
        let mut reply = String::new();
        // Garbage, an unknown command, an oversize line: errors, and the connection lives on.
        raw.write_all(b"\xff\xfe garbage\n").unwrap();
        r.read_line(&mut reply).unwrap();
        assert!(reply.contains("\"reply\":\"error\""), "{reply}");
        reply.clear();
        raw.write_all(b"{\"cmd\":\"format_disk\"}\n").unwrap();
        r.read_line(&mut reply).unwrap();
        assert!(reply.contains("bad request"), "{reply}");
        reply.clear();
        let mut big = vec![b'x'; proto::MAX_REQUEST + 10];
        big.push(b'\n');
        raw.write_all(&big).unwrap();
        r.read_line(&mut reply).unwrap();
        assert!(reply.contains("request too long"), "{reply}");
        reply.clear();
        raw.write_all(b"{\"cmd\":\"poll\"}\n").unwrap();
        r.read_line(&mut reply).unwrap();
        assert_eq!(reply, "{\"reply\":\"ok\"}\n");

        let mut c = Client::connect(&path, None).unwrap();
        assert_eq!(
            c.call(&Request::Show {
                what: Show::Counters
            })
            .unwrap(),
            Response::Counters {
                counters: vec![("flow_new".into(), 3)]
            }
        );
        assert_eq!(c.call(&Request::Stop).unwrap(), Response::Ok);
        p.join().unwrap();
        // The parent is gone: requests fail cleanly.
        assert!(matches!(
            c.call(&Request::Poll).unwrap(),
            Response::Failed { .. }
        ));
        server.stop();
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_live_socket() {
        let path = tmp_socket("b");
        let (tx, _rx) = crossbeam::channel::unbounded();
        let _s = start(&path, None, tx.clone()).unwrap();
        assert_eq!(
            start(&path, None, tx).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
    }

    #[test]
    fn connections_beyond_the_limit_are_refused() {
        let path = tmp_socket("c");
        let (tx, _rx) = crossbeam::channel::unbounded();
        let mut server = start(&path, None, tx).unwrap();
        let mut held = Vec::new();
        for _ in 0..MAX_CLIENTS {
            held.push(UnixStream::connect(&path).unwrap());
        }
        // Let the accept loop take them all (it polls every ACCEPT_POLL).
        std::thread::sleep(ACCEPT_POLL * 3);
        let extra = UnixStream::connect(&path).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reply = String::new();
        BufReader::new(extra).read_line(&mut reply).unwrap();
        assert!(reply.contains("too many control connections"), "{reply}");
        assert_eq!(server.stats().get(CtlCounter::Refused), 1);
        // Closing the held connections frees their slots.
        drop(held);
        std::thread::sleep(ACCEPT_POLL * 3);
        let mut c = Client::connect(&path, None).unwrap();
        c.send(&Request::Poll).unwrap();
        server.stop();
    }

    /// Slow-loris: a silent client and one trickling a byte every 300 ms are answered with
    /// an error and closed at the request deadline; a client that finished a request may stay
    /// silent past it (only the idle limit applies between requests).
    #[test]
    fn slow_and_silent_requests_are_closed_at_the_deadline() {
        let path = tmp_socket("d");
        let (tx, rx) = crossbeam::channel::unbounded();
        let p = parent(rx);
        let mut server = start(&path, None, tx).unwrap();
        let stats = server.stats();
        let t0 = std::time::Instant::now();
        let silent = UnixStream::connect(&path).unwrap();
        let trickle = UnixStream::connect(&path).unwrap();
        let mut w = trickle.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            // Bounded: well past the deadline, stops at the first failed write.
            for b in b"{\"cmd\":\"show\",\"what\":\"summary\"}"
                .iter()
                .cycle()
                .take(60)
            {
                if w.write_all(&[*b]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            false
        });
        let mut c = Client::connect(&path, None).unwrap();
        assert_eq!(c.call(&Request::Poll).unwrap(), Response::Ok);
        for s in [silent, trickle] {
            s.set_read_timeout(Some(REQUEST_TIMEOUT * 3)).unwrap();
            let mut r = BufReader::new(s);
            let mut reply = String::new();
            r.read_line(&mut reply).unwrap();
            assert!(reply.contains("request timeout"), "{reply}");
            reply.clear();
            assert_eq!(
                r.read_line(&mut reply).unwrap(),
                0,
                "closed after the reply"
            );
        }
        let took = t0.elapsed();
        assert!(
            took >= REQUEST_TIMEOUT,
            "closed before the deadline: {took:?}"
        );
        assert!(
            writer.join().unwrap(),
            "the trickling client was never closed"
        );
        assert_eq!(stats.get(CtlCounter::RequestTimeouts), 2);
        // The client that was answered is between requests: still open past the deadline.
        std::thread::sleep(REQUEST_TIMEOUT.saturating_sub(t0.elapsed()) + Duration::from_secs(1));
        assert_eq!(c.call(&Request::Poll).unwrap(), Response::Ok);
        assert_eq!(stats.get(CtlCounter::IdleCloses), 0);
        assert_eq!(c.call(&Request::Stop).unwrap(), Response::Ok);
        p.join().unwrap();
        server.stop();
    }

    #[test]
    fn read_line_bounds() {
        let mut data: &[u8] = b"abc\ndef";
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut data, &mut buf).unwrap(), Some(Ok(())));
        assert_eq!(buf, b"abc");
        assert_eq!(read_line(&mut data, &mut buf).unwrap(), Some(Ok(())));
        assert_eq!(buf, b"def");
        assert_eq!(read_line(&mut data, &mut buf).unwrap(), None);
    }
}
