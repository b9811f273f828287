//! splice(2) through a pipe, for the TCP relay's zero-copy path (relay/), and the one socket
//! option socket2 lacks (IP_MINTTL).
//!
//! OpenBSD's relayd moves bytes with SO_SPLICE (socket to socket inside the kernel). Linux has
//! no socket-to-socket splice; the equivalent is two splice(2) calls through a pipe per
//! direction: socket → pipe, pipe → socket. feasibility.md §4 measured this at 7.0 Gbit/s
//! against 5.8 for a read/write copy on this machine, with 1 MiB pipes (`F_SETPIPE_SZ`) and
//! `SPLICE_F_MOVE | SPLICE_F_MORE` (this module drops `SPLICE_F_MORE`: see [`splice`]). Everything here is non-blocking (`O_NONBLOCK` pipe ends,
//! `SPLICE_F_NONBLOCK`), so an event loop can drive it.
//!
//! Every `unsafe` block has a `SAFETY:` comment; the API is safe: descriptors are borrowed
//! (`BorrowedFd`) for the duration of a call and owned pipe ends are closed by `Drop`
//! (`OwnedFd`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The pipe size the relay asks for (feasibility.md §4). Unprivileged processes are capped by
/// /proc/sys/fs/pipe-max-size (1 MiB by default), so this never needs CAP_SYS_RESOURCE.
pub const PIPE_SIZE: usize = 1 << 20;

/// A non-blocking pipe used as the splice(2) buffer of one relay direction.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// Creates a pipe (`O_NONBLOCK | O_CLOEXEC`) and asks for `size` bytes of capacity. If the
    /// kernel refuses the size (EPERM above pipe-max-size, or ENOMEM/EBUSY under the per-user
    /// pipe quota), the pipe keeps the size it has and [`Pipe::capacity`] says which.
    pub fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid, writable array of two ints, as pipe2(2) requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let [r, w] = fds;
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else; each
        // is wrapped exactly once.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) };
        let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a descriptor we own, with an integer argument as F_SETPIPE_SZ takes.
        let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        let capacity = if set > 0 {
            set as usize
        } else {
            // SAFETY: as above; F_GETPIPE_SZ takes no argument.
            let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            if got > 0 { got as usize } else { 1 << 16 }
        };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// The pipe's capacity in bytes as the kernel granted it.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `len` bytes from socket `from` into the pipe. `Ok(0)` is end of file on
    /// `from`; `WouldBlock` means the socket has nothing or the pipe is full.
    pub fn fill(&self, from: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        splice(from, self.write.as_fd(), len)
    }

    /// Moves up to `len` bytes from the pipe to socket `to`. `WouldBlock` means the socket's
    /// send buffer is full (or the pipe empty).
    pub fn drain(&self, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        splice(self.read.as_fd(), to, len)
    }
}

/// One non-blocking splice(2) of up to `len` bytes from `from` to `to` (one of them a pipe),
/// with `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`. EINTR is retried.
///
/// No `SPLICE_F_MORE`, although feasibility.md §4 measured bulk throughput with it: towards a
/// TCP socket it acts as MSG_MORE, and the kernel then holds a short final segment until the
/// 200 ms cork timer fires (measured here: a 1-byte request/response through the relay took
/// 200 ms, 5 connections/s). The kernel already sets MSG_MORE itself for every pipe buffer but
/// the last of one splice call (fs/splice.c `splice_to_socket`), which is all bulk needs.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: both descriptors are open for the duration of the call (borrowed); null
        // offsets are what splice(2) requires for pipes and sockets.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sets IP_MINTTL (GTSM, RFC 5082: drop packets whose TTL is below `ttl`) on an IPv4 socket;
/// relayd's `tcp { ip minttl N }`. socket2 has no wrapper for it.
pub fn set_ip_minttl(sock: BorrowedFd<'_>, ttl: u8) -> io::Result<()> {
    let v = libc::c_int::from(ttl);
    // SAFETY: `v` lives across the call and its size is passed as the option length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MINTTL,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads IP_MINTTL back (for tests).
pub fn ip_minttl(sock: BorrowedFd<'_>) -> io::Result<u8> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid and writable for the call; `len` holds v's size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MINTTL,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(u8::try_from(v).unwrap_or(u8::MAX))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the soft RLIMIT_NOFILE towards `n`: up to `n` when the hard limit allows it or can be
/// raised (CAP_SYS_RESOURCE), else up to the hard limit. Returns the soft limit now in force. A
/// relay holding N sessions needs two sockets each, plus pipes while data is in flight.
pub fn raise_nofile(n: u64) -> io::Result<u64> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let want = n as libc::rlim_t;
    if cur.rlim_cur >= want {
        return Ok(cur.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: cur.rlim_max.max(want),
    };
    // SAFETY: `raised` is a valid rlimit read by the kernel during the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    // Not allowed to raise the hard limit (no CAP_SYS_RESOURCE): take all of it.
    let capped = libc::rlimit {
        rlim_cur: cur.rlim_max,
        rlim_max: cur.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cur.rlim_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn pipe_gets_a_large_capacity() {
        let p = Pipe::new(PIPE_SIZE).unwrap();
        // Root or not, 1 MiB is within the default pipe-max-size.
        assert_eq!(p.capacity(), PIPE_SIZE);
    }

    #[test]
    fn splices_socket_to_socket_through_the_pipe() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        // splice(2) blocks on a blocking socket whatever SPLICE_F_NONBLOCK says (that flag is
        // about the pipe): the relay's sockets are non-blocking, and so is this one.
        b.set_nonblocking(true).unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l2.local_addr().unwrap()).unwrap();
        let (mut d, _) = l2.accept().unwrap();
        let p = Pipe::new(PIPE_SIZE).unwrap();
        // Nothing sent yet: the non-blocking splice must say WouldBlock, not block.
        let e = p.fill(b.as_fd(), 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"hello, splice").unwrap();
        let mut got = 0;
        for _ in 0..1000 {
            match p.fill(b.as_fd(), 4096) {
                Ok(n) => {
                    got = n;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, 13);
        assert_eq!(p.drain(c.as_fd(), got).unwrap(), 13);
        let mut buf = [0u8; 13];
        d.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello, splice");
        // EOF on the source is Ok(0).
        drop(a);
        let mut eof = None;
        for _ in 0..1000 {
            match p.fill(b.as_fd(), 4096) {
                Ok(n) => {
                    eof = Some(n);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        assert_eq!(eof, Some(0));
    }

    #[test]
    fn minttl_round_trips() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_ip_minttl(s.as_fd(), 255).unwrap();
        assert_eq!(ip_minttl(s.as_fd()).unwrap(), 255);
    }
}
