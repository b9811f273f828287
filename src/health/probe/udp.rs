//! Datagram probes: ICMP echo (check_icmp.c), DNS and NTP (carpio). One socket per check, so
//! a reply is matched against one request only; a datagram that is not ours (wrong source,
//! id, sequence or cookie) is ignored and the probe keeps waiting until its deadline.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Error, Failure, Outcome, Probe, Started, Target, dns, icmp, ntp};

/// Larger than any reply we judge (an Ethernet MTU); longer datagrams are cut by the kernel.
const RECV_BUF: usize = 2048;

enum Kind {
    Icmp {
        sent: [u8; icmp::ECHO_LEN],
        peer: IpAddr,
        /// Raw IPv4 sockets hand the IP header too.
        ip_header: bool,
        /// Raw sockets keep our id; ping sockets rewrite it.
        check_id: bool,
    },
    Dns {
        id: u16,
        rcode: u8,
        answer: Option<IpAddr>,
    },
    Ntp {
        cookie: u64,
    },
}

pub struct Udp {
    sock: mio::net::UdpSocket,
    kind: Kind,
}

fn done(error: Error, e: impl std::fmt::Display) -> Started {
    Started::Done(Err(Failure::with(error, e)))
}

impl Udp {
    pub fn icmp(t: &Target, id: u16, nonce: u64, registry: &Registry, token: Token) -> Started {
        let v6 = t.ip.is_ipv6();
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        // A ping socket needs no privilege when net.ipv4.ping_group_range allows our group;
        // otherwise a raw socket (CAP_NET_RAW), as relayd uses.
        let (sock, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
            Ok(s) => (s, false),
            Err(_) => match Socket::new(domain, Type::RAW, Some(proto)) {
                Ok(s) => (s, true),
                Err(e) => return done(Error::IcmpWriteFail, e),
            },
        };
        let peer = SocketAddr::new(t.ip, 0);
        if let Err(e) = sock
            .set_nonblocking(true)
            .and_then(|()| super::stream::set_ttl(&sock, peer, t.ttl))
        {
            return done(Error::IcmpWriteFail, e);
        }
        let seq = u16::try_from(nonce & 0xffff).unwrap_or(0);
        let sent = icmp::request(v6, id, seq, t.id);
        if let Err(e) = sock.send_to(&sent, &SockAddr::from(peer)) {
            return done(Error::IcmpWriteFail, e);
        }
        let kind = Kind::Icmp {
            sent,
            peer: t.ip,
            ip_header: raw && !v6,
            check_id: raw,
        };
        Self::register(sock, kind, registry, token)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn dns(
        addr: SocketAddr,
        ttl: Option<u8>,
        name: &str,
        qtype: u16,
        rcode: u8,
        answer: Option<IpAddr>,
        nonce: u64,
        registry: &Registry,
        token: Token,
    ) -> Started {
        let id = u16::try_from(nonce & 0xffff).unwrap_or(0);
        let Some(q) = dns::query(id, name, qtype) else {
            return done(Error::DnsMalformed, "bad query name");
        };
        Self::connected(
            addr,
            ttl,
            &q,
            Kind::Dns { id, rcode, answer },
            registry,
            token,
        )
    }

    pub fn ntp(
        addr: SocketAddr,
        ttl: Option<u8>,
        nonce: u64,
        registry: &Registry,
        token: Token,
    ) -> Started {
        let req = ntp::request(nonce);
        Self::connected(
            addr,
            ttl,
            &req,
            Kind::Ntp { cookie: nonce },
            registry,
            token,
        )
    }

    fn connected(
        addr: SocketAddr,
        ttl: Option<u8>,
        payload: &[u8],
        kind: Kind,
        registry: &Registry,
        token: Token,
    ) -> Started {
        let setup = || -> io::Result<Socket> {
            let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            sock.set_nonblocking(true)?;
            super::stream::set_ttl(&sock, addr, ttl)?;
            // Connected, so the kernel filters other sources and reports ICMP unreachable.
            sock.connect(&SockAddr::from(addr))?;
            sock.send(payload)?;
            Ok(sock)
        };
        match setup() {
            Ok(sock) => Self::register(sock, kind, registry, token),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => done(Error::UdpRefused, e),
            Err(e) => done(Error::UdpSocketError, e),
        }
    }

    fn register(sock: Socket, kind: Kind, registry: &Registry, token: Token) -> Started {
        let mut sock = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock));
        match registry.register(&mut sock, token, Interest::READABLE) {
            Ok(()) => Started::Running(Probe::Udp(Udp { sock, kind })),
            Err(e) => done(Error::UdpSocketError, e),
        }
    }

    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
    }

    pub fn timeout_error(&self) -> Error {
        match self.kind {
            Kind::Icmp { .. } => Error::IcmpReadTimeout,
            Kind::Dns { .. } => Error::DnsReadTimeout,
            Kind::Ntp { .. } => Error::NtpReadTimeout,
        }
    }

    pub fn handle_ready(&mut self) -> Option<Outcome> {
        let mut buf = [0u8; RECV_BUF];
        loop {
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Some(Err(Failure::with(Error::UdpRefused, e)));
                }
                Err(e) => return Some(Err(Failure::with(Error::UdpSocketError, e))),
            };
            let pkt = buf.get(..n).unwrap_or_default();
            if let Some(v) = self.judge(pkt, from.ip()) {
                return Some(v);
            }
        }
    }

    fn judge(&self, pkt: &[u8], from: IpAddr) -> Option<Outcome> {
        match &self.kind {
            Kind::Icmp {
                sent,
                peer,
                ip_header,
                check_id,
            } => (from == *peer && icmp::is_reply(pkt, sent, *ip_header, *check_id))
                .then_some(Ok(())),
            Kind::Dns { id, rcode, answer } => {
                if !dns::is_for(pkt, *id) {
                    return None;
                }
                Some(dns::check(pkt, *rcode, *answer).map_err(|e| match e {
                    dns::Error::Rcode(r) => Failure::with(Error::DnsRcode, format_args!("got {r}")),
                    dns::Error::NoAnswer => Failure::new(Error::DnsAnswer),
                    dns::Error::Malformed | dns::Error::NotReply => {
                        Failure::new(Error::DnsMalformed)
                    }
                }))
            }
            Kind::Ntp { cookie } => {
                if !ntp::is_for(pkt, *cookie) {
                    return None;
                }
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO);
                Some(ntp::check(pkt, now).map_err(|e| match e {
                    ntp::Error::Stratum(s) => {
                        Failure::with(Error::NtpStratum, format_args!("stratum {s}"))
                    }
                    ntp::Error::Unsynchronized => Failure::new(Error::NtpUnsynchronized),
                    ntp::Error::Offset => Failure::new(Error::NtpOffset),
                    ntp::Error::Malformed | ntp::Error::Mode(_) => Failure::new(Error::NtpBadReply),
                }))
            }
        }
    }
}
