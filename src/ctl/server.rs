//! The daemon side of the control socket: a unix stream socket (mode 0660, relayd's
//! `control.c` uses the same), one accept thread, and one short-lived thread per connection (at
//! most [`MAX_CLIENTS`] at a time; more are answered with an error and closed). Each request
//! line is bounded ([`proto::MAX_REQUEST`]); a line that does not parse is answered with
//! [`Response::Error`] and the connection stays usable. Parsed requests go to the daemon's
//! parent thread over a channel with a reply channel; the server never touches daemon state.
//!
//! Nothing a client sends can crash the daemon: no unwrap on client input, reads time out
//! ([`CLIENT_IDLE`]) so an idle client cannot hold a slot forever.

use super::proto::{self, Request, Response};
use crossbeam::channel::{Sender, bounded};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Concurrent connections served; more are refused with an error reply.
pub const MAX_CLIENTS: usize = 16;
/// A connection idle this long is closed.
pub const CLIENT_IDLE: Duration = Duration::from_secs(30);
/// How long a connection waits for the parent's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// A request from a client with the channel its one reply goes back on.
pub struct Call {
    pub request: Request,
    pub reply: Sender<Response>,
}

/// The running server; [`Server::stop`] (or drop) ends it and removes the socket file.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
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
    let thread = std::thread::Builder::new()
        .name("carpio-ctl".into())
        .spawn(move || accept_loop(listener, flag, active, calls))?;
    Ok(Server {
        path: path.to_path_buf(),
        stop,
        thread: Some(thread),
    })
}

impl Server {
    pub fn path(&self) -> &Path {
        &self.path
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
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                // AcqRel pairs with the decrement when a connection thread ends.
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    active.fetch_sub(1, Ordering::AcqRel);
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
                let spawned = std::thread::Builder::new()
                    .name("carpio-ctl-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, &calls, &stop2);
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

fn serve(stream: UnixStream, calls: &Sender<Call>, stop: &AtomicBool) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_IDLE))?;
    stream.set_write_timeout(Some(CLIENT_IDLE))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let resp = match read_line(&mut reader, &mut line)? {
            None => return Ok(()),
            Some(Err(len)) => Response::Error {
                message: format!(
                    "request too long ({len} bytes, at most {})",
                    proto::MAX_REQUEST
                ),
            },
            Some(Ok(())) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Some(Ok(())) => match proto::parse_request(&line) {
                Err(message) => Response::Error { message },
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
        writer.write_all(proto::to_line(&resp).as_bytes())?;
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
        // Closing the held connections frees their slots.
        drop(held);
        std::thread::sleep(ACCEPT_POLL * 3);
        let mut c = Client::connect(&path, None).unwrap();
        c.send(&Request::Poll).unwrap();
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
