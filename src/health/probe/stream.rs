//! TCP-based probes: connect, TLS handshake, http(s), send/expect, binary, smtp
//! (usr.sbin/relayd/check_tcp.c and check_tls.c: a non-blocking connect, then write the
//! request, then read until the reply validates, the server closes, or the deadline).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Error, Failure, MAX_EXPECT, MAX_REPLY, Outcome, Probe, Started, glob, http};
use crate::config::model::HttpExpect;

/// The EHLO argument: RFC 5321 wants a domain; `.invalid` (RFC 2606) says it is no real one.
const EHLO: &[u8] = b"EHLO carpio.invalid\r\n";
const QUIT: &[u8] = b"QUIT\r\n";
const SMTP_READY: u16 = 220;
const SMTP_OK: u16 = 250;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smtp {
    Banner,
    Ehlo,
    Quit,
}

/// What runs on top of the connection.
#[derive(Debug, Clone)]
pub enum App {
    /// `check tcp`: up once connected.
    Connect,
    /// `check tls`: up once the handshake completed.
    Handshake,
    /// `check http|https`: the request, and the code or digest expected.
    Http(Vec<u8>, HttpExpect),
    /// `check send DATA expect GLOB`.
    Expect(Vec<u8>, Vec<u8>),
    /// `check binary send HEX expect HEX`.
    Binary(Vec<u8>, Vec<u8>),
    Smtp(Smtp),
}

impl App {
    pub fn smtp() -> App {
        App::Smtp(Smtp::Banner)
    }
}

pub struct Stream {
    sock: mio::net::TcpStream,
    tls: Option<rustls::ClientConnection>,
    app: App,
    connected: bool,
    out: Vec<u8>,
    sent: usize,
    inbuf: Vec<u8>,
    eof: bool,
}

fn io_fail(error: Error, e: &io::Error) -> Option<Outcome> {
    Some(Err(Failure::with(error, e)))
}

impl Stream {
    pub fn start(
        addr: SocketAddr,
        ttl: Option<u8>,
        app: App,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
        registry: &Registry,
        token: Token,
    ) -> Started {
        let sock = match socket(addr, ttl) {
            Ok(s) => s,
            Err(e) => return Started::Done(Err(Failure::with(Error::TcpSocketError, e))),
        };
        match sock.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Started::Done(Err(Failure::with(Error::TcpConnectFail, e))),
        }
        let mut sock = mio::net::TcpStream::from_std(std::net::TcpStream::from(sock));
        if let Err(e) = registry.register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
        {
            return Started::Done(Err(Failure::with(Error::TcpSocketError, e)));
        }
        let tls = match tls.map(|(cfg, name)| rustls::ClientConnection::new(cfg, name)) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                let _ = registry.deregister(&mut sock);
                return Started::Done(Err(Failure::with(Error::TlsConnectError, e)));
            }
        };
        let out = match &app {
            App::Http(req, _) => req.clone(),
            App::Expect(send, _) | App::Binary(send, _) => send.clone(),
            _ => Vec::new(),
        };
        Started::Running(Probe::Stream(Box::new(Stream {
            sock,
            tls,
            app,
            connected: false,
            out,
            sent: 0,
            inbuf: Vec::new(),
            eof: false,
        })))
    }

    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
    }

    pub fn timeout_error(&self) -> Error {
        let tls = self.tls.as_ref();
        match () {
            _ if !self.connected => Error::TcpConnectTimeout,
            _ if tls.is_some_and(|t| t.is_handshaking()) => Error::TlsConnectTimeout,
            _ if self.sent < self.out.len() && tls.is_some() => Error::TlsWriteTimeout,
            _ if self.sent < self.out.len() => Error::TcpWriteTimeout,
            _ if tls.is_some() => Error::TlsReadTimeout,
            _ => Error::TcpReadTimeout,
        }
    }

    pub fn handle_ready(&mut self) -> Option<Outcome> {
        if !self.connected {
            match self.sock.take_error() {
                Ok(Some(e)) | Err(e) => return io_fail(Error::TcpConnectFail, &e),
                Ok(None) => {}
            }
            // mio's documented way to learn that a non-blocking connect finished.
            match self.sock.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                Err(e) => return io_fail(Error::TcpConnectFail, &e),
            }
            if matches!(self.app, App::Connect) {
                return Some(Ok(()));
            }
        }
        loop {
            let mut progress = false;
            if let Some(v) = self.pump(&mut progress) {
                return Some(v);
            }
            if self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
                if self.eof {
                    return Some(Err(Failure::with(
                        Error::TlsConnectFail,
                        "closed in handshake",
                    )));
                }
            } else if let Some(v) = self.judge(&mut progress) {
                return Some(v);
            }
            if !progress {
                return None;
            }
        }
    }

    /// Moves bytes: application data out, TLS records both ways, application data in.
    fn pump(&mut self, progress: &mut bool) -> Option<Outcome> {
        let mut buf = [0u8; 4096];
        let pending = self.out.get(self.sent..).unwrap_or_default();
        if !pending.is_empty() {
            let r = match &mut self.tls {
                None => self.sock.write(pending),
                Some(t) => t.writer().write(pending),
            };
            match r {
                Ok(n) => {
                    self.sent += n;
                    *progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if self.tls.is_some() => return io_fail(Error::TlsWriteError, &e),
                Err(e) => return io_fail(Error::TcpWriteFail, &e),
            }
        }
        let Some(t) = &mut self.tls else {
            while !self.eof {
                match self.sock.read(&mut buf) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self
                        .inbuf
                        .extend_from_slice(buf.get(..n).unwrap_or_default()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return io_fail(Error::TcpReadFail, &e),
                }
                *progress = true;
                self.cap();
            }
            return None;
        };
        let limit = match self.app {
            App::Http(_, HttpExpect::Digest(_)) => MAX_REPLY,
            _ => MAX_EXPECT,
        };
        let handshaking = t.is_handshaking();
        while t.wants_write() {
            match t.write_tls(&mut self.sock) {
                Ok(_) => *progress = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if handshaking => return io_fail(Error::TlsConnectFail, &e),
                Err(e) => return io_fail(Error::TlsWriteError, &e),
            }
        }
        if !self.eof && t.wants_read() {
            match t.read_tls(&mut self.sock) {
                Ok(0) => {
                    self.eof = true;
                    *progress = true;
                }
                Ok(_) => {
                    *progress = true;
                    if let Err(e) = t.process_new_packets() {
                        // Flush the alert we owe the server; the verdict does not wait for it.
                        let _ = t.write_tls(&mut self.sock);
                        let error = if handshaking {
                            Error::TlsConnectFail
                        } else {
                            Error::TlsReadError
                        };
                        return Some(Err(Failure::with(error, e)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if handshaking => return io_fail(Error::TlsConnectFail, &e),
                Err(e) => return io_fail(Error::TlsReadError, &e),
            }
        }
        if t.is_handshaking() {
            return None;
        }
        loop {
            match t.reader().read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.inbuf
                        .extend_from_slice(buf.get(..n).unwrap_or_default());
                    *progress = true;
                    if self.inbuf.len() >= limit {
                        self.inbuf.truncate(limit);
                        self.eof = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // TCP closed without close_notify: an end of data for a check.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                    break;
                }
                Err(e) => return io_fail(Error::TlsReadError, &e),
            }
        }
        None
    }

    fn limit(&self) -> usize {
        match self.app {
            App::Http(_, HttpExpect::Digest(_)) => MAX_REPLY,
            _ => MAX_EXPECT,
        }
    }

    /// Past the limit, what was read is judged as if the server had closed.
    fn cap(&mut self) {
        let limit = self.limit();
        if self.inbuf.len() >= limit {
            self.inbuf.truncate(limit);
            self.eof = true;
        }
    }

    /// The verdict on what was read so far (`None`: read more).
    fn judge(&mut self, progress: &mut bool) -> Option<Outcome> {
        let eof = self.eof;
        let fail = |e: Error| Some(Err(Failure::new(e)));
        match &mut self.app {
            App::Connect | App::Handshake => Some(Ok(())),
            App::Http(_, HttpExpect::Code(want)) => match http::check_code(&self.inbuf, *want) {
                Ok(Some(())) => Some(Ok(())),
                Ok(None) if eof => fail(Error::HttpCodeError),
                Ok(None) => None,
                Err(http::Error::Code(c)) => Some(Err(Failure::with(
                    Error::HttpCodeFail,
                    format_args!("got {c}"),
                ))),
                Err(_) => fail(Error::HttpCodeError),
            },
            App::Http(_, HttpExpect::Digest(d)) if eof => {
                match http::check_digest(&self.inbuf, d) {
                    Ok(()) => Some(Ok(())),
                    Err(http::Error::Digest) => fail(Error::HttpDigestFail),
                    Err(_) => fail(Error::HttpDigestError),
                }
            }
            App::Http(..) => None,
            // check_tcp.c check_send_expect: fnmatch over everything read so far; keep
            // reading until it matches or the server closes.
            App::Expect(_, pattern) => {
                if glob::fnmatch(pattern, &self.inbuf) {
                    Some(Ok(()))
                } else if eof {
                    fail(Error::SendExpectFail)
                } else {
                    None
                }
            }
            App::Binary(_, want) => match self.inbuf.get(..want.len()) {
                Some(got) if got == want.as_slice() => Some(Ok(())),
                Some(_) => fail(Error::SendExpectFail),
                None if eof => fail(Error::SendExpectFail),
                None => None,
            },
            App::Smtp(stage) => {
                if *stage == Smtp::Quit {
                    return (self.sent >= self.out.len()).then_some(Ok(()));
                }
                let (want, error, next, send) = match stage {
                    Smtp::Banner => (SMTP_READY, Error::SmtpBanner, Smtp::Ehlo, EHLO),
                    _ => (SMTP_OK, Error::SmtpEhlo, Smtp::Quit, QUIT),
                };
                match smtp_reply(&self.inbuf) {
                    Some(code) if code == want => {
                        *stage = next;
                        self.inbuf.clear();
                        self.out = send.to_vec();
                        self.sent = 0;
                        *progress = true;
                        None
                    }
                    Some(code) => Some(Err(Failure::with(error, format_args!("got {code}")))),
                    None if eof => Some(Err(Failure::with(error, "closed"))),
                    None => None,
                }
            }
        }
    }
}

fn socket(addr: SocketAddr, ttl: Option<u8>) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    set_ttl(&sock, addr, ttl)?;
    Ok(sock)
}

/// relayd `ip ttl N` (hce.c sets IP_TTL / IPV6_UNICAST_HOPS on check sockets).
pub(super) fn set_ttl(sock: &Socket, addr: SocketAddr, ttl: Option<u8>) -> io::Result<()> {
    match (ttl, addr) {
        (None, _) => Ok(()),
        (Some(t), SocketAddr::V4(_)) => sock.set_ttl_v4(u32::from(t)),
        (Some(t), SocketAddr::V6(_)) => sock.set_unicast_hops_v6(u32::from(t)),
    }
}

/// The code of the last line of a complete SMTP reply (RFC 5321 4.2.1: `NNN-text` lines
/// continue, `NNN text` or `NNN` ends it); 0 for a line without a code; `None` while
/// incomplete.
fn smtp_reply(buf: &[u8]) -> Option<u16> {
    for line in buf.split_inclusive(|&b| b == b'\n') {
        if line.last() != Some(&b'\n') {
            return None;
        }
        if line.get(3) == Some(&b'-') {
            continue;
        }
        let code = line
            .get(..3)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<u16>().ok())
            .unwrap_or(0);
        return Some(code);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::smtp_reply;

    #[test]
    fn smtp_replies() {
        assert_eq!(smtp_reply(b"220 mx ESMTP\r\n"), Some(220));
        assert_eq!(smtp_reply(b"220 mx ESMTP"), None);
        assert_eq!(smtp_reply(b"250-mx\r\n250-PIPELINING\r\n"), None);
        assert_eq!(
            smtp_reply(b"250-mx\r\n250-PIPELINING\r\n250 HELP\r\n"),
            Some(250)
        );
        assert_eq!(smtp_reply(b"250\r\n"), Some(250));
        assert_eq!(smtp_reply(b"554 no\r\n"), Some(554));
        assert_eq!(smtp_reply(b"xx\r\n"), Some(0));
        assert_eq!(smtp_reply(b""), None);
    }
}
