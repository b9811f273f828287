//! The probes of the health-check engine: thin non-blocking I/O shells around pure verdict
//! functions (relayd's check_icmp.c, check_tcp.c, check_tls.c, check_script.c, plus carpio's
//! dns, ntp and smtp checks). A [`Probe`] is started for one host, registered with the
//! engine's `mio` registry under the host's token, driven by [`Probe::handle_ready`] on each
//! readiness event, and dropped (closing its socket or killing its script) when done or at its
//! deadline, where [`Probe::timeout_error`] names what it was waiting for.
//!
//! Nothing here panics on what a server sends: replies are read into buffers bounded by
//! [`MAX_REPLY`] and judged by the bounds-checked parsers in the submodules; every failure is
//! a named [`Error`] (relayd's `host_error()` strings where relayd has the same failure).

pub mod dns;
pub mod glob;
pub mod http;
pub mod icmp;
pub mod ntp;
mod stream;
pub mod tls;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use mio::{Registry, Token};

use crate::config::model::{Check, HttpExpect};

/// The most of a reply an http digest check hashes; the rest is cut (a health page is small).
pub const MAX_REPLY: usize = 1 << 20;
/// The most of a reply the other TCP checks read. A glob is matched against everything read
/// so far after every read (as check_tcp.c does), so the bound also bounds that work when a
/// server streams bytes that never match.
pub const MAX_EXPECT: usize = 16 << 10;

crate::named_counters! {
    /// Why a check found a host down: relayd's HCE_* codes with relayd's names
    /// (relayd.c `host_error`), then carpio's own checks.
    pub enum Error {
        IcmpReadTimeout = "icmp read timeout",
        IcmpWriteFail = "icmp write timeout",
        TcpSocketError = "tcp socket error",
        TcpConnectFail = "tcp connect failed",
        TcpConnectTimeout = "tcp connect timeout",
        TcpWriteTimeout = "tcp write timeout",
        TcpWriteFail = "tcp write failed",
        TcpReadTimeout = "tcp read timeout",
        TcpReadFail = "tcp read failed",
        ScriptFail = "script failed",
        TlsConnectError = "tls connect error",
        TlsConnectFail = "tls connect failed",
        TlsConnectTimeout = "tls connect timeout",
        TlsReadTimeout = "tls read timeout",
        TlsWriteTimeout = "tls write timeout",
        TlsReadError = "tls read error",
        TlsWriteError = "tls write error",
        SendExpectFail = "send/expect failed",
        HttpCodeError = "http code malformed",
        HttpCodeFail = "http code mismatch",
        HttpDigestError = "http digest malformed",
        HttpDigestFail = "http digest mismatch",
        // carpio only from here.
        /// The script was killed with SIGKILL at the timeout (relayd says "script failed").
        ScriptTimeout = "script timeout",
        /// The table has no port for a check that connects.
        NoPort = "no port",
        UdpSocketError = "udp socket error",
        /// ICMP port unreachable came back (ECONNREFUSED on the connected UDP socket).
        UdpRefused = "udp port unreachable",
        DnsReadTimeout = "dns read timeout",
        DnsMalformed = "dns reply malformed",
        DnsRcode = "dns rcode mismatch",
        DnsAnswer = "dns answer missing",
        NtpReadTimeout = "ntp read timeout",
        NtpBadReply = "ntp bad reply",
        NtpStratum = "ntp bad stratum",
        NtpUnsynchronized = "ntp unsynchronized",
        NtpOffset = "ntp time offset",
        SmtpBanner = "smtp banner failed",
        SmtpEhlo = "smtp ehlo failed",
    }
}

/// A failed check: the named error and a detail for humans (the status code seen, the OS
/// error, ...), possibly empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: Error,
    pub detail: String,
}

impl Failure {
    pub fn new(error: Error) -> Self {
        Failure {
            error,
            detail: String::new(),
        }
    }
    pub fn with(error: Error, detail: impl std::fmt::Display) -> Self {
        Failure {
            error,
            detail: detail.to_string(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            f.write_str(self.error.name())
        } else {
            write!(f, "{} ({})", self.error.name(), self.detail)
        }
    }
}

/// What a probe concluded.
pub type Outcome = Result<(), Failure>;

/// Where and how to check one host.
#[derive(Debug, Clone)]
pub struct Target {
    pub ip: IpAddr,
    /// The table's port (`None` for a router's table).
    pub port: Option<u16>,
    /// The host's name as written (the argument of `check script`).
    pub name: String,
    /// relayd `ip ttl N` for the check packets.
    pub ttl: Option<u8>,
    /// relayd's host id, carried in the ICMP payload.
    pub id: u32,
}

/// What the engine shares with every probe.
#[derive(Clone)]
pub struct Context {
    pub tls: Arc<rustls::ClientConfig>,
    /// relayd's ICMP id (`getpid() & 0xffff`) and the source of sequence numbers, DNS ids
    /// and NTP cookies.
    pub icmp_id: u16,
    /// The (uid, gid) `check script` runs as: relayd runs scripts as its unprivileged user
    /// (check_script.c `script_exec`); carpio uses the config's `user NAME` when given.
    pub script_user: Option<(u32, u32)>,
}

/// The (uid, gid) of `user` in a passwd(5) file's text, `None` when it is not listed.
pub fn passwd_lookup(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        (name == user).then_some((uid, gid))
    })
}

/// A running check.
pub enum Probe {
    Stream(Box<stream::Stream>),
    Udp(udp::Udp),
    Script(Child),
}

/// How [`Probe::start`] went: a probe to wait for, or a verdict without any waiting (no
/// check, a socket that could not be made, a refused connect seen at once).
pub enum Started {
    Running(Probe),
    Done(Outcome),
}

fn port(t: &Target) -> Result<SocketAddr, Failure> {
    t.port
        .map(|p| SocketAddr::new(t.ip, p))
        .ok_or(Failure::new(Error::NoPort))
}

impl Probe {
    /// Starts `check` against `target`; `nonce` varies per launch (ICMP sequence, DNS id,
    /// NTP cookie).
    pub fn start(
        check: &Check,
        target: &Target,
        ctx: &Context,
        nonce: u64,
        registry: &Registry,
        token: Token,
    ) -> Started {
        use stream::App;
        let tls =
            |on: bool, sni: Option<&str>| on.then(|| (ctx.tls.clone(), sni.map(str::to_string)));
        let app = match check {
            Check::None => return Started::Done(Ok(())),
            Check::Icmp => return udp::Udp::icmp(target, ctx.icmp_id, nonce, registry, token),
            Check::Dns {
                name,
                qtype,
                rcode,
                answer,
            } => {
                let addr = SocketAddr::new(target.ip, target.port.unwrap_or(53));
                return udp::Udp::dns(
                    addr, target.ttl, name, *qtype, *rcode, *answer, nonce, registry, token,
                );
            }
            Check::Ntp => {
                let addr = SocketAddr::new(target.ip, target.port.unwrap_or(123));
                return udp::Udp::ntp(addr, target.ttl, nonce, registry, token);
            }
            Check::Script { path } => return script(path, &target.name, ctx.script_user),
            Check::Tcp => (App::Connect, None),
            Check::Tls => (App::Handshake, tls(true, None)),
            Check::Http {
                tls: on,
                path,
                host,
                expect,
            } => {
                let get = matches!(expect, HttpExpect::Digest(_));
                let req = http::request(get, path, host.as_deref());
                (App::Http(req, expect.clone()), tls(*on, host.as_deref()))
            }
            Check::Send {
                send,
                expect,
                tls: on,
            } => (
                App::Expect(http::translate(send), expect.clone().into_bytes()),
                tls(*on, None),
            ),
            Check::Binary {
                send,
                expect,
                tls: on,
            } => (App::Binary(send.clone(), expect.clone()), tls(*on, None)),
            Check::Smtp => {
                let addr = SocketAddr::new(target.ip, target.port.unwrap_or(25));
                return stream::Stream::start(addr, target.ttl, App::smtp(), None, registry, token);
            }
        };
        let addr = match port(target) {
            Ok(a) => a,
            Err(f) => return Started::Done(Err(f)),
        };
        let (app, tls) = app;
        let tls = tls.map(|(cfg, sni)| (cfg, tls::server_name(sni.as_deref(), target.ip)));
        stream::Stream::start(addr, target.ttl, app, tls, registry, token)
    }

    /// Advances the probe after a readiness event; `Some` when it has a verdict.
    pub fn handle_ready(&mut self) -> Option<Outcome> {
        match self {
            Probe::Stream(s) => s.handle_ready(),
            Probe::Udp(u) => u.handle_ready(),
            Probe::Script(_) => None,
        }
    }

    /// A script's verdict once it has exited (scripts have no readiness to wait on: the
    /// engine polls them).
    pub fn poll_script(&mut self) -> Option<Outcome> {
        let Probe::Script(child) = self else {
            return None;
        };
        match child.try_wait() {
            Ok(None) => None,
            // check_script.c: a positive exit status means up; 0 or death by signal, down.
            Ok(Some(st)) => Some(match st.code() {
                Some(c) if c > 0 => Ok(()),
                Some(c) => Err(Failure::with(Error::ScriptFail, format_args!("exit {c}"))),
                None => Err(Failure::with(Error::ScriptFail, "killed by a signal")),
            }),
            Err(e) => Some(Err(Failure::with(Error::ScriptFail, e))),
        }
    }

    pub fn is_script(&self) -> bool {
        matches!(self, Probe::Script(_))
    }

    /// The error of a probe that reached its deadline, named for what it was waiting for.
    pub fn timeout_error(&self) -> Error {
        match self {
            Probe::Stream(s) => s.timeout_error(),
            Probe::Udp(u) => u.timeout_error(),
            Probe::Script(_) => Error::ScriptTimeout,
        }
    }

    /// Releases the probe: deregisters its socket, or kills its script with SIGKILL and reaps
    /// it (relayd's check_script.c kills at the timeout).
    pub fn close(self, registry: &Registry) {
        match self {
            Probe::Stream(s) => s.close(registry),
            Probe::Udp(u) => u.close(registry),
            Probe::Script(mut child) => {
                // Child::kill sends SIGKILL; an error means it already exited.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn script(path: &str, host: &str, user: Option<(u32, u32)>) -> Started {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(path);
    cmd.arg(host)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = user {
        // std drops supplementary groups too when it changes the gid (setgroups(0)).
        cmd.uid(uid).gid(gid);
    }
    let spawned = cmd.spawn();
    match spawned {
        Ok(child) => Started::Running(Probe::Script(child)),
        Err(e) => Started::Done(Err(Failure::with(Error::ScriptFail, e))),
    }
}

#[cfg(test)]
mod tests {
    use super::passwd_lookup;

    #[test]
    fn passwd() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    _relayd:x:110:115::/var/empty:/usr/sbin/nologin\nbroken:x:nope:1::/:\n";
        assert_eq!(passwd_lookup(text, "_relayd"), Some((110, 115)));
        assert_eq!(passwd_lookup(text, "root"), Some((0, 0)));
        assert_eq!(passwd_lookup(text, "broken"), None);
        assert_eq!(passwd_lookup(text, "nobody"), None);
        assert_eq!(passwd_lookup("", "root"), None);
    }
}
