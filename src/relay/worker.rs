//! One relay worker: a mio (epoll, edge-triggered) loop over this worker's listening sockets,
//! its TCP sessions and its DNS upstream sockets. This is the I/O shell around the decisions
//! (balance::Scheduler picks, dns::Table): it reads the clock once per loop turn and passes it
//! down.
//!
//! A TCP direction is pumped until the kernel says EAGAIN (edge-triggered readiness needs the
//! drain), at most [`BUDGET`] rounds per event so one bulk session cannot starve the others; a
//! direction that used its budget is queued and pumped again after the next (zero-timeout)
//! poll.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::dns;
use super::proxy::{self, Header};
use super::{Backend, Command, Counter, Error, Plan, Shared, is_self};
use crate::balance::{PickInput, PickState};
use crate::ctl::proto::Session as SessionRow;
use crate::sys::splice::{self, Pipe};

const WAKER: Token = Token(0);
/// Token = index << KIND_BITS | kind. Listener index 0 is the waker.
const KIND_BITS: usize = 2;
const KIND_MASK: usize = 0b11;
const KIND_LISTENER: usize = 0;
const KIND_CLIENT: usize = 1;
const KIND_SERVER: usize = 2;
const KIND_UPSTREAM: usize = 3;

/// Pump rounds per event and direction before yielding to other sessions.
const BUDGET: usize = 16;
/// Copy buffer per direction with `no splice`.
const COPY_BUF: usize = 64 * 1024;
/// Largest UDP datagram read (DNS over UDP with EDNS fits easily).
const UDP_BUF: usize = 65536;
/// How often idle sessions are looked for.
const TICK: Duration = Duration::from_millis(100);
/// relayd pauses accepting for a second on EMFILE/ENFILE (relay.c `relay_accept`).
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// Empty pipes kept for reuse, so a new session does not pay pipe2 + fcntl.
const PIPE_POOL: usize = 256;
/// Events per poll.
const EVENTS: usize = 1024;

enum ListenSock {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct Listener {
    relay: usize,
    local: SocketAddr,
    sock: ListenSock,
}

struct Upstream {
    relay: usize,
    sock: UdpSocket,
}

struct DnsRelay {
    table: dns::Table,
    /// Index into `Worker::upstreams` of the first backend of each forward.
    offsets: Vec<usize>,
}

/// One direction of a session.
#[derive(Default)]
struct Dir {
    pipe: Option<Pipe>,
    buf: Option<Box<[u8]>>,
    /// Bytes read and not yet written (in the pipe, or in `buf` from `off`).
    pending: usize,
    off: usize,
    /// The source reached end of file.
    eof: bool,
    /// The destination was shut down for writing (this direction is done).
    shut: bool,
    /// A PROXY header still to be written before any data.
    prefix: Option<Header>,
    prefix_off: usize,
}

struct Session {
    relay: usize,
    id: u32,
    client: TcpStream,
    server: Option<TcpStream>,
    client_addr: SocketAddr,
    backend: Backend,
    connected: bool,
    retries: u32,
    /// client → backend.
    up: Dir,
    /// backend → client.
    down: Dir,
    started: Instant,
    last: Instant,
}

/// How a pump ended.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// Waiting for readiness.
    Blocked,
    /// Budget used: pump again soon.
    Again,
}

pub(crate) struct Worker {
    index: usize,
    relays: Vec<Arc<Shared>>,
    stop: Arc<AtomicBool>,
    poll: Poll,
    waker: Arc<Waker>,
    listeners: Vec<Listener>,
    upstreams: Vec<Upstream>,
    dns: Vec<Option<DnsRelay>>,
    picks: Vec<Vec<PickState>>,
    sessions: Vec<Option<Session>>,
    free: Vec<usize>,
    pool: Vec<Pipe>,
    next_id: u32,
    again: Vec<(usize, u32, bool)>,
    start: Instant,
    udp_buf: Box<[u8]>,
    accept_paused_until: Option<Instant>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |e| Error::Io(what, e)
}

fn domain(a: SocketAddr) -> Domain {
    if a.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// Options common to listeners and upstream sockets (relayd `relay_socket`).
fn apply_ip_options(s: &Socket, v4: bool, ttl: Option<u8>, minttl: Option<u8>) -> io::Result<()> {
    if let Some(t) = ttl {
        if v4 {
            s.set_ttl_v4(u32::from(t))?;
        } else {
            s.set_unicast_hops_v6(u32::from(t))?;
        }
    }
    if let Some(m) = minttl
        && v4
    {
        splice::set_ip_minttl(s.as_fd(), m)?;
    }
    Ok(())
}

fn listen_socket(plan: &Plan, addr: SocketAddr, stream: bool) -> io::Result<Socket> {
    let (ty, proto) = if stream {
        (Type::STREAM, Protocol::TCP)
    } else {
        (Type::DGRAM, Protocol::UDP)
    };
    let s = Socket::new(domain(addr), ty, Some(proto))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    let v4 = addr.is_ipv4();
    // A carp VIP may not be on this box yet (BACKUP): bind it anyway (IP_FREEBIND).
    if v4 {
        s.set_freebind_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    }
    if plan.transparent {
        // "where the kernel allows it": needs CAP_NET_ADMIN; without it the relay still
        // works, it just cannot accept connections for foreign addresses.
        let _ = if v4 {
            s.set_ip_transparent_v4(true)
        } else {
            s.set_ip_transparent_v6(true)
        };
    }
    if let Some(b) = plan.tcp.socket_buffer {
        s.set_recv_buffer_size(b as usize)?;
        s.set_send_buffer_size(b as usize)?;
    }
    apply_ip_options(&s, v4, plan.tcp.ip_ttl, plan.tcp.ip_minttl)?;
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(addr))?;
    if stream {
        s.listen(i32::try_from(plan.tcp.backlog).unwrap_or(i32::MAX))?;
    }
    Ok(s)
}

/// Why an upstream connect could not even start (errors are counted, not kept).
enum ConnectError {
    Transparent,
    Io,
}

fn connect(plan: &Plan, backend: &Backend, client: SocketAddr) -> Result<TcpStream, ConnectError> {
    let addr = backend.addr;
    let v4 = addr.is_ipv4();
    let s = Socket::new(domain(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|_| ConnectError::Io)?;
    let setup = || -> io::Result<()> {
        s.set_nonblocking(true)?;
        s.set_tcp_nodelay(plan.tcp.nodelay)?;
        if let Some(b) = plan.tcp.socket_buffer {
            s.set_recv_buffer_size(b as usize)?;
            s.set_send_buffer_size(b as usize)?;
        }
        apply_ip_options(&s, v4, backend.ip_ttl, plan.tcp.ip_minttl)
    };
    setup().map_err(|_| ConnectError::Io)?;
    if plan.transparent {
        // relayd `transparent`: connect from the client's address (SO_BINDANY there,
        // IP_TRANSPARENT here).
        let t = || -> io::Result<()> {
            if v4 {
                s.set_ip_transparent_v4(true)?;
            } else {
                s.set_ip_transparent_v6(true)?;
            }
            s.bind(&SockAddr::from(client))
        };
        t().map_err(|_| ConnectError::Transparent)?;
    }
    match s.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(_) => return Err(ConnectError::Io),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(s)))
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Moves what it can in one direction; returns bytes written to `to`.
fn pump(
    d: &mut Dir,
    from: &TcpStream,
    to: &TcpStream,
    use_splice: bool,
    pool: &mut Vec<Pipe>,
    moved: &mut u64,
) -> io::Result<Pumped> {
    if let Some(h) = d.prefix {
        let bytes = h.as_bytes();
        while let Some(rest) = bytes.get(d.prefix_off..).filter(|r| !r.is_empty()) {
            match (&*to).write(rest) {
                Ok(n) => d.prefix_off += n,
                Err(e) if would_block(&e) => return Ok(Pumped::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        d.prefix = None;
    }
    for _ in 0..BUDGET {
        let mut progress = false;
        if d.pending > 0 {
            let r = if use_splice {
                match d.pipe.as_ref() {
                    Some(p) => p.drain(to.as_fd(), d.pending),
                    None => Ok(0),
                }
            } else {
                match d.buf.as_ref().and_then(|b| b.get(d.off..d.off + d.pending)) {
                    Some(chunk) => (&*to).write(chunk),
                    None => Ok(0),
                }
            };
            match r {
                Ok(0) => {
                    // Nothing to move (lost buffer): treat as drained rather than spin.
                    d.pending = 0;
                }
                Ok(n) => {
                    d.pending -= n.min(d.pending);
                    d.off += n;
                    *moved += n as u64;
                    progress = true;
                }
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let room = if use_splice {
            if d.pipe.is_none() {
                d.pipe = Some(match pool.pop() {
                    Some(p) => p,
                    None => Pipe::new(splice::PIPE_SIZE)?,
                });
            }
            d.pipe
                .as_ref()
                .map(|p| p.capacity())
                .unwrap_or(0)
                .saturating_sub(d.pending)
        } else if d.pending == 0 {
            d.off = 0;
            if d.buf.is_none() {
                d.buf = Some(vec![0u8; COPY_BUF].into_boxed_slice());
            }
            COPY_BUF
        } else {
            0
        };
        if !d.eof && room > 0 {
            let r = if use_splice {
                match d.pipe.as_ref() {
                    Some(p) => p.fill(from.as_fd(), room),
                    None => Ok(0),
                }
            } else {
                match d.buf.as_mut() {
                    Some(b) => (&*from).read(b),
                    None => Ok(0),
                }
            };
            match r {
                Ok(0) => {
                    d.eof = true;
                    progress = true;
                }
                Ok(n) => {
                    d.pending += n;
                    progress = true;
                }
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if d.eof && d.pending == 0 && !d.shut {
            // Half-close: pass the EOF on and keep the other direction running.
            match to.shutdown(Shutdown::Write) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
            d.shut = true;
        }
        if !progress {
            return Ok(Pumped::Blocked);
        }
    }
    Ok(Pumped::Again)
}

impl Worker {
    /// Binds this worker's sockets (on the calling thread, so in its network namespace).
    pub(crate) fn new(
        index: usize,
        relays: Vec<Arc<Shared>>,
        stop: Arc<AtomicBool>,
        seed: u64,
    ) -> Result<Worker, Error> {
        let poll = Poll::new().map_err(io_err("epoll"))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(io_err("waker"))?);
        let mut w = Worker {
            index,
            relays: relays.clone(),
            stop,
            poll,
            waker,
            listeners: Vec::new(),
            upstreams: Vec::new(),
            dns: Vec::new(),
            picks: Vec::new(),
            sessions: Vec::new(),
            free: Vec::new(),
            pool: Vec::new(),
            next_id: 1,
            again: Vec::new(),
            start: Instant::now(),
            udp_buf: vec![0u8; UDP_BUF].into_boxed_slice(),
            accept_paused_until: None,
        };
        for (ri, r) in relays.iter().enumerate() {
            let plan = &r.plan;
            let view = r.view.load();
            w.picks.push(
                (0..view.forwards.len())
                    .map(|f| PickState::new(seed ^ ((ri as u64) << 32) ^ f as u64))
                    .collect(),
            );
            // Worker 0 binds what the config says; later workers bind what worker 0 got, so
            // a port 0 in the config (tests) resolves to one port shared with SO_REUSEPORT.
            let addrs = match r.bound.lock() {
                Ok(b) if index > 0 && !b.is_empty() => b.clone(),
                _ => plan.listen.clone(),
            };
            let mut bound = Vec::new();
            for addr in addrs {
                let what = format!("relay {} listen {addr}", plan.name);
                let s = listen_socket(plan, addr, !plan.dns).map_err(io_err(what.clone()))?;
                let local = s
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .unwrap_or(addr);
                bound.push(local);
                let li = w.listeners.len();
                let token = Token(((li + 1) << KIND_BITS) | KIND_LISTENER);
                let sock = if plan.dns {
                    let mut u = UdpSocket::from_std(std::net::UdpSocket::from(s));
                    w.poll
                        .registry()
                        .register(&mut u, token, Interest::READABLE)
                        .map_err(io_err(what))?;
                    ListenSock::Udp(u)
                } else {
                    let mut l = TcpListener::from_std(std::net::TcpListener::from(s));
                    w.poll
                        .registry()
                        .register(&mut l, token, Interest::READABLE)
                        .map_err(io_err(what))?;
                    ListenSock::Tcp(l)
                };
                w.listeners.push(Listener {
                    relay: ri,
                    local,
                    sock,
                });
            }
            if index == 0
                && let Ok(mut b) = r.bound.lock()
            {
                *b = bound;
            }
            if plan.dns {
                let mut offsets = Vec::new();
                for fw in &view.forwards {
                    offsets.push(w.upstreams.len());
                    for b in &fw.backends {
                        let what = format!("relay {} upstream {}", plan.name, b.addr);
                        let local: SocketAddr = if b.addr.is_ipv4() {
                            (IpAddr::from([0u8; 4]), 0).into()
                        } else {
                            (IpAddr::from([0u16; 8]), 0).into()
                        };
                        let s = Socket::new(domain(b.addr), Type::DGRAM, Some(Protocol::UDP))
                            .map_err(io_err(what.clone()))?;
                        let setup = || -> io::Result<()> {
                            s.set_nonblocking(true)?;
                            apply_ip_options(&s, b.addr.is_ipv4(), b.ip_ttl, plan.tcp.ip_minttl)?;
                            s.bind(&SockAddr::from(local))?;
                            // Connected (spec §9 item 16): the kernel drops datagrams from
                            // any other source, and ICMP errors surface.
                            s.connect(&SockAddr::from(b.addr))
                        };
                        setup().map_err(io_err(what.clone()))?;
                        let mut u = UdpSocket::from_std(std::net::UdpSocket::from(s));
                        let ui = w.upstreams.len();
                        w.poll
                            .registry()
                            .register(
                                &mut u,
                                Token((ui << KIND_BITS) | KIND_UPSTREAM),
                                Interest::READABLE,
                            )
                            .map_err(io_err(what))?;
                        w.upstreams.push(Upstream { relay: ri, sock: u });
                    }
                }
                w.dns.push(Some(DnsRelay {
                    table: dns::Table::new(plan.session_timeout, seed ^ 0xd45 ^ ri as u64),
                    offsets,
                }));
            } else {
                w.dns.push(None);
            }
        }
        Ok(w)
    }

    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    fn now_d(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }

    pub(crate) fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut events = Events::with_capacity(EVENTS);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let mut timeout = next_tick.saturating_duration_since(now);
            for d in self.dns.iter().flatten() {
                if let Some(t) = d.table.poll_timeout() {
                    timeout = timeout.min(t.saturating_sub(self.now_d(now)));
                }
            }
            if !self.again.is_empty() {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return;
            }
            // Acquire pairs with the Release store in RelayHandle::shutdown.
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let now = Instant::now();
            let again = std::mem::take(&mut self.again);
            for (slot, id, up) in again {
                if self
                    .sessions
                    .get(slot)
                    .and_then(|s| s.as_ref())
                    .map(|s| s.id)
                    == Some(id)
                {
                    self.pump_dir(slot, up, now);
                }
            }
            for ev in events.iter() {
                self.handle_event(ev, now);
            }
            while let Ok(cmd) = commands.try_recv() {
                match cmd {
                    Command::Sessions(tx) => {
                        let _ = tx.send(self.rows(now));
                    }
                }
            }
            if now >= next_tick {
                next_tick = now + TICK;
                self.expire(now);
            }
            let nd = self.now_d(now);
            for (ri, d) in self.dns.iter_mut().enumerate() {
                if let Some(d) = d {
                    let n = d.table.handle_timeout(nd);
                    if n > 0
                        && let Some(r) = self.relays.get(ri)
                    {
                        r.add(self.index, Counter::DnsTimeout, n as u64);
                    }
                }
            }
            if let Some(t) = self.accept_paused_until
                && now >= t
            {
                self.accept_paused_until = None;
                for li in 0..self.listeners.len() {
                    self.accept(li, now);
                }
            }
        }
    }

    fn handle_event(&mut self, ev: &Event, now: Instant) {
        let t = ev.token().0;
        if ev.token() == WAKER {
            return;
        }
        let idx = t >> KIND_BITS;
        match t & KIND_MASK {
            KIND_LISTENER => {
                let li = idx.wrapping_sub(1);
                match self
                    .listeners
                    .get(li)
                    .map(|l| matches!(l.sock, ListenSock::Udp(_)))
                {
                    Some(true) => self.dns_queries(li, now),
                    Some(false) => self.accept(li, now),
                    None => {}
                }
            }
            KIND_UPSTREAM => self.dns_answers(idx),
            KIND_CLIENT => {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                if readable {
                    self.pump_dir(idx, true, now);
                }
                if writable {
                    self.pump_dir(idx, false, now);
                }
            }
            KIND_SERVER => {
                let connected = self
                    .sessions
                    .get(idx)
                    .and_then(|s| s.as_ref())
                    .is_some_and(|s| s.connected);
                if !connected {
                    self.connect_done(idx, now);
                    return;
                }
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                if readable {
                    self.pump_dir(idx, false, now);
                }
                if writable {
                    self.pump_dir(idx, true, now);
                }
            }
            _ => {}
        }
    }

    fn count(&self, relay: usize, c: Counter, n: u64) {
        if let Some(r) = self.relays.get(relay) {
            r.add(self.index, c, n);
        }
    }

    // ---- TCP -------------------------------------------------------------------------------

    fn accept(&mut self, li: usize, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(l) = self.listeners.get(li) else {
                return;
            };
            let ListenSock::Tcp(ref sock) = l.sock else {
                return;
            };
            let relay = l.relay;
            let local = l.local;
            match sock.accept() {
                Ok((stream, peer)) => self.new_session(relay, stream, peer, local, now),
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.count(relay, Counter::DropAcceptError, 1);
                    if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                        return;
                    }
                    // ECONNABORTED and the like: the next connection may be fine.
                }
            }
        }
    }

    fn new_session(
        &mut self,
        relay: usize,
        client: TcpStream,
        peer: SocketAddr,
        listen_local: SocketAddr,
        now: Instant,
    ) {
        self.count(relay, Counter::SessionAccepted, 1);
        let Some(shared) = self.relays.get(relay).cloned() else {
            return;
        };
        let plan = &shared.plan;
        // The address the client reached (a wildcard listener knows it only per socket).
        let local = client.local_addr().unwrap_or(listen_local);
        let _ = client.set_nodelay(plan.tcp.nodelay);
        let view = shared.view.load();
        let input = PickInput {
            client: peer.ip(),
            client_port: peer.port(),
            listen: local.ip(),
            listen_port: local.port(),
            proto: 6,
            flow_hash: 0,
            states: &[],
        };
        let Some(states) = self.picks.get_mut(relay) else {
            return;
        };
        let Some(backend) = view
            .pick(&input, states)
            .and_then(|(f, i)| view.backend(f, i))
            .cloned()
        else {
            self.count(relay, Counter::DropNoBackend, 1);
            self.count(relay, Counter::SessionClosed, 1);
            return;
        };
        if is_self(backend.addr, local) {
            // relayd relay.c: "session aborted" when the relay would connect to itself.
            self.count(relay, Counter::DropLoop, 1);
            self.count(relay, Counter::SessionClosed, 1);
            return;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.sessions.push(None);
                self.sessions.len() - 1
            }
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let prefix = plan
            .proxy_protocol
            .map(|v| Header::new(v, proxy::Transport::Stream, peer, local));
        let mut s = Session {
            relay,
            id,
            client,
            server: None,
            client_addr: peer,
            retries: backend.retry,
            backend,
            connected: false,
            up: Dir {
                prefix,
                ..Dir::default()
            },
            down: Dir::default(),
            started: now,
            last: now,
        };
        if self
            .poll
            .registry()
            .register(
                &mut s.client,
                Token((slot << KIND_BITS) | KIND_CLIENT),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.count(relay, Counter::DropResource, 1);
            self.count(relay, Counter::SessionClosed, 1);
            self.free.push(slot);
            return;
        }
        if let Some(cell) = self.sessions.get_mut(slot) {
            *cell = Some(s);
        }
        self.start_connect(slot);
    }

    /// Opens the upstream connection of session `slot` (first try or a retry).
    fn start_connect(&mut self, slot: usize) {
        loop {
            let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
                return;
            };
            let Some(shared) = self.relays.get(s.relay) else {
                return;
            };
            match connect(&shared.plan, &s.backend, s.client_addr) {
                Ok(mut server) => {
                    let token = Token((slot << KIND_BITS) | KIND_SERVER);
                    if self
                        .poll
                        .registry()
                        .register(&mut server, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        s.server = Some(server);
                        return;
                    }
                    let relay = s.relay;
                    self.count(relay, Counter::DropResource, 1);
                    self.close(slot, None);
                    return;
                }
                Err(ConnectError::Transparent) => {
                    let relay = s.relay;
                    self.count(relay, Counter::DropTransparentBind, 1);
                    self.close(slot, None);
                    return;
                }
                Err(ConnectError::Io) => {
                    if !self.retry(slot) {
                        return;
                    }
                }
            }
        }
    }

    /// Uses one retry of session `slot`; false (and the session closed) when none is left.
    fn retry(&mut self, slot: usize) -> bool {
        let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return false;
        };
        let relay = s.relay;
        if let Some(mut old) = s.server.take() {
            let _ = self.poll.registry().deregister(&mut old);
        }
        if s.retries == 0 {
            self.count(relay, Counter::DropConnectFailed, 1);
            self.close(slot, None);
            return false;
        }
        s.retries -= 1;
        self.count(relay, Counter::ConnectRetry, 1);
        true
    }

    fn connect_done(&mut self, slot: usize, now: Instant) {
        let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        let Some(server) = s.server.as_ref() else {
            return;
        };
        let ok = match server.take_error() {
            Ok(Some(_)) | Err(_) => Some(false),
            Ok(None) => match server.peer_addr() {
                Ok(_) => Some(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
                Err(_) => Some(false),
            },
        };
        match ok {
            None => {}
            Some(true) => {
                s.connected = true;
                s.last = now;
                self.pump_dir(slot, true, now);
                self.pump_dir(slot, false, now);
            }
            Some(false) if self.retry(slot) => self.start_connect(slot),
            Some(false) => {}
        }
    }

    fn pump_dir(&mut self, slot: usize, up: bool, now: Instant) {
        let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        if !s.connected {
            return;
        }
        let Some(server) = s.server.as_ref() else {
            return;
        };
        let Some(shared) = self.relays.get(s.relay) else {
            return;
        };
        let use_splice = shared.plan.tcp.splice;
        let mut moved = 0u64;
        let r = if up {
            if s.up.shut {
                return;
            }
            pump(
                &mut s.up,
                &s.client,
                server,
                use_splice,
                &mut self.pool,
                &mut moved,
            )
        } else {
            if s.down.shut {
                return;
            }
            pump(
                &mut s.down,
                server,
                &s.client,
                use_splice,
                &mut self.pool,
                &mut moved,
            )
        };
        // An empty pipe goes back to the pool while the direction waits: an idle session
        // holds no pipe (two descriptors and up to 1 MiB of kernel buffer each).
        let d = if up { &mut s.up } else { &mut s.down };
        if d.pending == 0
            && matches!(r, Ok(Pumped::Blocked))
            && let Some(p) = d.pipe.take()
            && self.pool.len() < PIPE_POOL
        {
            self.pool.push(p);
        }
        let relay = s.relay;
        let id = s.id;
        let done = s.up.shut && s.down.shut;
        if moved > 0 {
            s.last = now;
            let c = if up {
                Counter::BytesIn
            } else {
                Counter::BytesOut
            };
            shared.add(self.index, c, moved);
        }
        match r {
            Err(_) => {
                self.count(relay, Counter::SessionError, 1);
                self.close(slot, None);
            }
            Ok(_) if done => self.close(slot, None),
            Ok(Pumped::Again) => self.again.push((slot, id, up)),
            Ok(Pumped::Blocked) => {}
        }
    }

    /// Ends session `slot`: sockets close on drop, empty pipes go back to the pool.
    fn close(&mut self, slot: usize, why: Option<Counter>) {
        let Some(s) = self.sessions.get_mut(slot).and_then(|s| s.take()) else {
            return;
        };
        if let Some(c) = why {
            self.count(s.relay, c, 1);
        }
        self.count(s.relay, Counter::SessionClosed, 1);
        for d in [s.up, s.down] {
            if let Some(p) = d.pipe
                && d.pending == 0
                && self.pool.len() < PIPE_POOL
            {
                self.pool.push(p);
            }
        }
        self.free.push(slot);
    }

    /// Closes sessions idle for longer than their relay's `session timeout`.
    fn expire(&mut self, now: Instant) {
        for slot in 0..self.sessions.len() {
            let idle = match self.sessions.get(slot).and_then(|s| s.as_ref()) {
                Some(s) => self.relays.get(s.relay).is_some_and(|r| {
                    now.saturating_duration_since(s.last) >= r.plan.session_timeout
                }),
                None => false,
            };
            if idle {
                self.close(slot, Some(Counter::SessionTimeout));
            }
        }
    }

    fn rows(&self, now: Instant) -> Vec<SessionRow> {
        self.sessions
            .iter()
            .flatten()
            .map(|s| SessionRow {
                worker: self.index as u32,
                id: s.id,
                client: s.client_addr.ip().to_string(),
                client_port: s.client_addr.port(),
                backend: s.backend.addr.ip().to_string(),
                backend_port: s.backend.addr.port(),
                done: s.up.eof || s.down.eof,
                age_secs: now.saturating_duration_since(s.started).as_secs(),
                idle_secs: now.saturating_duration_since(s.last).as_secs(),
                relay: self.relays.get(s.relay).map(|r| r.plan.id).unwrap_or(0),
            })
            .collect()
    }

    // ---- DNS -------------------------------------------------------------------------------

    fn dns_queries(&mut self, li: usize, now: Instant) {
        let nd = self.now_d(now);
        loop {
            let Some(l) = self.listeners.get(li) else {
                return;
            };
            let ListenSock::Udp(ref sock) = l.sock else {
                return;
            };
            let relay = l.relay;
            let local = l.local;
            let (n, client) = match sock.recv_from(&mut self.udp_buf) {
                Ok(x) => x,
                Err(e) if would_block(&e) => return,
                Err(_) => continue,
            };
            let Some(shared) = self.relays.get(relay) else {
                return;
            };
            let view = shared.view.load();
            let input = PickInput {
                client: client.ip(),
                client_port: client.port(),
                listen: local.ip(),
                listen_port: local.port(),
                proto: 17,
                flow_hash: 0,
                states: &[],
            };
            let (Some(states), Some(Some(d))) =
                (self.picks.get_mut(relay), self.dns.get_mut(relay))
            else {
                return;
            };
            let Some((f, i)) = view.pick(&input, states) else {
                shared.add(self.index, Counter::DropNoBackend, 1);
                continue;
            };
            let ui = d
                .offsets
                .get(f)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(i);
            let retry = view.backend(f, i).map(|b| b.retry).unwrap_or(0);
            let Some(pkt) = self.udp_buf.get_mut(..n) else {
                continue;
            };
            let id = match d.table.handle_query(nd, client, li, ui, pkt) {
                Ok(id) => id,
                Err(r) => {
                    shared.add(self.index, reject_counter(r), 1);
                    continue;
                }
            };
            let Some(up) = self.upstreams.get(ui) else {
                d.table.cancel(id);
                shared.add(self.index, Counter::DnsDropSend, 1);
                continue;
            };
            // relayd retries the send to the same destination up to `retry` times.
            let mut sent = false;
            for _ in 0..=retry {
                if up.sock.send(pkt).is_ok() {
                    sent = true;
                    break;
                }
            }
            if sent {
                shared.add(self.index, Counter::DnsQuery, 1);
            } else {
                d.table.cancel(id);
                shared.add(self.index, Counter::DnsDropSend, 1);
            }
        }
    }

    fn dns_answers(&mut self, ui: usize) {
        loop {
            let Some(up) = self.upstreams.get(ui) else {
                return;
            };
            let relay = up.relay;
            let n = match up.sock.recv(&mut self.udp_buf) {
                Ok(n) => n,
                Err(e) if would_block(&e) => return,
                // ECONNREFUSED from an ICMP port unreachable: the query will time out.
                Err(_) => continue,
            };
            let (Some(shared), Some(Some(d))) = (self.relays.get(relay), self.dns.get_mut(relay))
            else {
                return;
            };
            let Some(pkt) = self.udp_buf.get_mut(..n) else {
                continue;
            };
            match d.table.handle_answer(ui, pkt) {
                Ok(a) => {
                    let sent = match self.listeners.get(a.listener).map(|l| &l.sock) {
                        Some(ListenSock::Udp(s)) => s.send_to(pkt, a.client).is_ok(),
                        _ => false,
                    };
                    let c = if sent {
                        Counter::DnsAnswer
                    } else {
                        Counter::DnsDropSend
                    };
                    shared.add(self.index, c, 1);
                }
                Err(r) => shared.add(self.index, reject_counter(r), 1),
            }
        }
    }
}

fn reject_counter(r: dns::Reject) -> Counter {
    match r {
        dns::Reject::Short => Counter::DnsDropShort,
        dns::Reject::NotQuery => Counter::DnsDropNotQuery,
        dns::Reject::Unmatched => Counter::DnsDropUnmatched,
        dns::Reject::WrongSource => Counter::DnsDropWrongSource,
        dns::Reject::IdBusy => Counter::DnsDropIdBusy,
    }
}
