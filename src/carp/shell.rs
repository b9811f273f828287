//! The carp I/O shell: one thread that puts a sans-IO [`Interface`] on the wire.
//!
//! ```text
//!            commands (mpsc)                     status (Mutex, read by ctl) / ownership (ArcSwap)
//!  ShellHandle ───────────────►  carp thread  ──────────────────────────────────────────────►
//!                                 │  raw IPv4 socket, proto 112, bound to carpdev (SO_BINDTODEVICE)
//!                                 │    TTL and multicast TTL 255, joined to 224.0.0.18: receives
//!                                 │    all ads, sends unicast carppeer ads
//!                                 │  raw IPv6 socket, proto 112, ff02::12, hop limit 255 (IPv6 VIPs)
//!                                 │  AF_PACKET sender on carpdev: IPv4 ads to 224.0.0.18 as whole
//!                                 │    frames from the carp lladdr, gratuitous ARP, unsolicited NA
//!                                 │  AF_PACKET ring on carpdev (balancing arp): ARP requests → replies
//!                                 └─ macvlan NAME on carpdev, MAC 00:00:5e:00:01:VHID: the VIPs
//! ```
//!
//! IPv4 ads to the group leave as frames built like `carp_send_ad` builds them (ip_carp.c:
//! TOS LOWDELAY, DF, TTL 255, source the parent's first address) with the carp lladdr as
//! Ethernet source (spec §1: "frames leave with the carp lladdr as source MAC"; the parent's
//! real MAC for balancing ip / ip-stealth, spec §2.2). A raw socket would send them from the
//! parent's MAC, and then switches would learn the virtual MAC only from gratuitous ARPs: a
//! backup that takes over for a moment (a demotion seen by two backups at once) would leave
//! the bridge pointing at it until the next GARP. With the lladdr as source, every ad corrects
//! the switch.
//!
//! The thread reads a monotonic clock ([`std::time::Instant`], as a [`Duration`] since the
//! thread started), feeds [`Interface::handle_advert`] / [`Interface::handle_timeout`], drains
//! `poll_transmit` / `poll_event` and sleeps on the socket until `poll_timeout()`; the protocol
//! logic itself never reads a clock.
//!
//! # Where the virtual address lives (balancing `none`)
//! A macvlan named as the carp interface (`carp0`), mode `bridge`, on the carpdev, with the
//! virtual MAC 00:00:5e:00:01:VHID (`carp_set_vhe_enaddr`). It holds the VIPs while the vhost is
//! MASTER and none while BACKUP or INIT, so kernel sockets (relays, health checks) can bind the
//! VIP and the kernel answers ARP for it with the virtual MAC, only on the master. This mirrors
//! OpenBSD, where the addresses sit on `carpN` whose lladdr is the virtual MAC. Both the
//! carpdev and the macvlan get `arp_ignore=1` (a per-namespace sysctl): without it Linux's weak
//! host model makes the carpdev answer ARP for the VIP with its real MAC and the macvlan answer
//! for the carpdev's own address with the virtual MAC. IPv6 address generation is off on the
//! macvlan (`addrgenmode none`) so a BACKUP never sends from the virtual MAC.
//!
//! Links and addresses change with the `ip` command (iproute2) rather than netlink: it happens
//! only on state changes (never per packet), iproute2 is already required by carpio's lab and
//! scripts, and it keeps the crate free of a netlink dependency. The macvlan is deleted when the
//! shell stops (also after [`Command::Crash`]); a leftover macvlan of the same name (a daemon
//! killed by SIGKILL) is deleted at start. A SIGKILLed process leaves its macvlan and VIP behind
//! until the next start, exactly like a crashed ucarp leaves its address: fail the box, not the
//! process, or restart the daemon.
//!
//! With balancing `ip`/`ip-stealth`/`ip-unicast`/`arp` (several carpnodes) no macvlan is
//! created: the frames go to every node (multicast or per-vhost virtual MACs) and the data plane
//! decides with [`Ownership::accept`], published lock-free through [`ShellHandle::ownership`].
//! With balancing `arp` the shell answers ARP requests for the VIPs itself, with the MAC that
//! [`Ownership::arp_reply`] chooses for the requester.
//!
//! IPv6: with an IPv6 VIP, a second raw socket (protocol 112, hop limit 255, joined to
//! ff02::12 on the carpdev, `IPV6_RECVHOPLIMIT` for the receive check) carries the IPv6 ads,
//! and takeover sends an unsolicited neighbour advertisement (Override) per IPv6 VIP to ff02::1
//! through the AF_PACKET sender (RFC 4861 §7.2.6).
//!
//! The parent's link is looked at every 100 ms (SIOCGIFFLAGS, `IFF_UP`+`IFF_RUNNING`): while it
//! is down every vhost is INIT (VIPs removed, no bow-out) and the interface's groups carry one
//! more demotion (`carp_carpdev_state`).
//!
//! Nothing here panics on network input: received packets are length-checked before any field
//! is read, and every reject is a named [`Reject`] or [`Dropped`] counter.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};

use super::{
    Balancing, Change, DemoteError, Event, Groups, Interface, InterfaceConfig, Ownership, Reject,
    Stat, State, Transmit,
};

/// The answer to a demotion command.
pub type ChangeResult = Result<Change, DemoteError>;
use crate::counters::Counters;
use crate::ctl::proto::CarpVhost;
use crate::sys::afpacket::{Ring, RingConfig, Sender as FrameSender};
use crate::sys::rawip;
use crate::wire::classify::Af;
use crate::wire::{arp, carp as wire_carp, ethernet, icmpv6, ipv6};

crate::named_counters! {
    /// Packets the shell itself drops before the protocol core sees them.
    pub enum Dropped {
        /// An IPv4 datagram shorter than its header, or not IPv4.
        DropShortIp = "drop_short_ip",
        /// recv(2) failed with something other than a timeout.
        DropRecvError = "drop_recv_error",
        /// An ARP frame that does not parse (balancing arp).
        DropBadArp = "drop_bad_arp",
        /// An ARP request for a VIP that another node answers (balancing arp).
        DropArpNotOurs = "drop_arp_not_ours",
    }
}

/// Offsets in the IPv4 header (RFC 791) the shell reads from a raw-socket datagram.
mod ipv4 {
    /// Version (high nibble) and IHL (low nibble, 32-bit words).
    pub const VER_IHL: usize = 0;
    pub const TTL: usize = 8;
    pub const DST: core::ops::Range<usize> = 16..20;
    pub const MIN_HEADER_LEN: usize = 20;
}

/// Shortest Ethernet frame without FCS; ARP frames are padded to it.
const MIN_FRAME: usize = 60;
/// Datagrams read per readable socket before looking at timers again.
const RECV_BATCH: usize = 64;
/// ICMPv6 type of a neighbour advertisement (RFC 4861 §4.4).
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// The Override flag in the NA's first word.
const NA_FLAG_OVERRIDE: u32 = 0x2000_0000;
/// Option type "target link-layer address" (RFC 4861 §4.6.1).
const ND_OPT_TARGET_LL: u8 = 2;
/// NA length: 8-byte header, 16-byte target, 8-byte link-layer option.
const NA_LEN: usize = 32;
const NA_FRAME: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + NA_LEN;
/// `IPTOS_LOWDELAY` (RFC 791 TOS byte), as `carp_send_ad` sets it.
const IPTOS_LOWDELAY: u8 = 0x10;
const AD_FRAME: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + wire_carp::HEADER_LEN;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Counters are published at most this often (state changes at once).
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// Bound on transmit/event rounds in one drain (each demotion event can queue ads once).
const DRAIN_ROUNDS: usize = 4;
/// How often the parent's link state is looked at (one ioctl).
const LINK_CHECK_EVERY: Duration = Duration::from_millis(100);
/// Longest sleep between two looks at the command channel.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// How the shell puts the VIPs on the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipMode {
    /// A macvlan named as the carp interface holds them while MASTER (balancing none only).
    Macvlan,
    /// The shell touches no link or address (the data plane or the operator does).
    None,
}

/// Plain configuration of one shell.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// The carp interface name (`carp0`): the macvlan's name.
    pub name: String,
    /// The parent interface.
    pub carpdev: String,
    /// A namespace (as `ip netns` names it) the thread enters first; `None` stays.
    pub netns: Option<String>,
    /// The protocol configuration; `v4`/`v6` are the VIPs.
    pub iface: InterfaceConfig,
    /// Prefix length of each VIP, same order as `iface.v4` then `iface.v6` (default 32/128).
    pub prefix_len: Vec<u8>,
    pub vip_mode: VipMode,
    /// Initial demotion of the interface's groups (`group NAME demote N`).
    pub group_demote: Vec<(String, u8)>,
}

/// A command for the shell thread.
#[derive(Debug)]
pub enum Command {
    /// `carpdemote`: add `delta` to `group`'s counter; the reply says the old and new value.
    Demote {
        group: String,
        delta: i32,
        reply: Sender<ChangeResult>,
    },
    /// `ifconfig carpN state master|backup|init`.
    Force(State),
    /// Bow out (ads with advbase/advskew 255), remove the macvlan, end the thread.
    Shutdown,
    /// End the thread without a bow-out, as if the node died (tests and benchmarks): the
    /// macvlan is removed so the VIP leaves with the node.
    Crash,
}

/// What `carpioctl show carp` reads.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub vhosts: Vec<CarpVhost>,
    /// `Reject`, `Stat` and `Dropped` counters as (name, value).
    pub counters: Vec<(String, u64)>,
    /// State changes since start.
    pub transitions: u64,
}

/// The running shell: commands in, status out. Dropping it shuts the shell down (bow-out).
pub struct ShellHandle {
    tx: Sender<Command>,
    status: Arc<Mutex<Status>>,
    ownership: Arc<ArcSwap<Ownership>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ShellHandle {
    /// Sends a command; fails when the thread has ended.
    pub fn command(&self, c: Command) -> io::Result<()> {
        self.tx
            .send(c)
            .map_err(|_| io::Error::other("carp shell has stopped"))
    }

    /// Adds `delta` to group `group`'s demotion counter and waits for the answer.
    pub fn demote(&self, group: &str, delta: i32) -> io::Result<ChangeResult> {
        let (reply, rx) = mpsc::channel();
        self.command(Command::Demote {
            group: group.to_owned(),
            delta,
            reply,
        })?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::other("carp shell did not answer"))
    }

    /// Forces every vhost into `state`.
    pub fn force(&self, state: State) -> io::Result<()> {
        self.command(Command::Force(state))
    }

    /// A copy of the current status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// State of `vhid` as last published (`None` before the first publication).
    pub fn state(&self, vhid: u8) -> Option<State> {
        let s = self.status();
        s.vhosts
            .iter()
            .find(|v| v.vhid == vhid)
            .and_then(|v| parse_state(&v.state))
    }

    /// The `ctl` reply for `show carp`.
    pub fn show(&self) -> crate::ctl::proto::Response {
        let s = self.status();
        crate::ctl::proto::Response::Carp {
            vhosts: s.vhosts,
            counters: s.counters,
        }
    }

    /// The ownership snapshot the data plane reads (lock-free).
    pub fn ownership(&self) -> Arc<ArcSwap<Ownership>> {
        Arc::clone(&self.ownership)
    }

    /// Bows out, cleans up and waits for the thread.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop(Command::Shutdown)
    }

    /// Stops without a bow-out (the node "dies"), removes the macvlan, waits for the thread.
    pub fn crash(mut self) -> io::Result<()> {
        self.stop(Command::Crash)
    }

    fn stop(&mut self, c: Command) -> io::Result<()> {
        let _ = self.tx.send(c);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("carp shell panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for ShellHandle {
    fn drop(&mut self) {
        let _ = self.stop(Command::Shutdown);
    }
}

fn parse_state(s: &str) -> Option<State> {
    match s {
        "MASTER" => Some(State::Master),
        "BACKUP" => Some(State::Backup),
        "INIT" => Some(State::Init),
        _ => None,
    }
}

/// ifconfig's spelling of a state.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Init => "INIT",
        State::Backup => "BACKUP",
        State::Master => "MASTER",
    }
}

/// ifconfig's spelling of a balancing mode.
pub fn balancing_name(b: Balancing) -> &'static str {
    match b {
        Balancing::None => "none",
        Balancing::Arp => "arp",
        Balancing::Ip => "ip",
        Balancing::IpStealth => "ip-stealth",
        Balancing::IpUnicast => "ip-unicast",
    }
}

/// Starts the shell thread. Setup errors (namespace, sockets, macvlan) are returned here, not
/// later: the call waits until the thread is running.
pub fn spawn(mut cfg: ShellConfig) -> io::Result<ShellHandle> {
    if cfg.iface.cookies.is_empty() {
        cfg.iface.cookies = random_cookies(cfg.iface.nodes.len())?;
    }
    let iface =
        Interface::new(&cfg.iface).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let status = Arc::new(Mutex::new(Status::default()));
    let ownership = Arc::new(ArcSwap::from_pointee(iface.ownership()));
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let st = Arc::clone(&status);
    let own = Arc::clone(&ownership);
    let thread = std::thread::Builder::new()
        .name(format!("carp-{}", cfg.name))
        .spawn(move || {
            if let Some(ns) = &cfg.netns {
                crate::sys::netns::enter(ns).inspect_err(|e| {
                    let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                })?;
            }
            let mut shell = match Shell::new(cfg, iface, st, own) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            let _ = ready_tx.send(Ok(()));
            let r = shell.run(&rx);
            shell.cleanup();
            r
        })?;
    let mut handle = ShellHandle {
        tx,
        status,
        ownership,
        thread: Some(thread),
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.thread.take().map(JoinHandle::join);
            Err(e)
        }
        Err(_) => Err(handle
            .thread
            .take()
            .map(JoinHandle::join)
            .and_then(|r| r.err().map(|_| io::Error::other("carp shell panicked")))
            .unwrap_or_else(|| io::Error::other("carp shell ended during setup"))),
    }
}

/// Every carp interface of `config`, each on its own shell thread in the current namespace.
/// The daemon keeps the handles; dropping them bows out.
pub fn run_from_config(config: &crate::config::Config) -> io::Result<Vec<ShellHandle>> {
    let cfgs = super::from_config::shell_configs(config)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    cfgs.into_iter().map(spawn).collect()
}

struct Shell {
    cfg: ShellConfig,
    iface: Interface,
    groups: Groups,
    epoch: Instant,
    sock: Socket,
    sock6: Option<Socket>,
    /// Source of IPv4 ads (`carp_send_ad`: the parent's first address); `None` leaves the
    /// choice to the kernel through the raw socket.
    parent_v4: Option<Ipv4Addr>,
    /// Ethernet source of ads sent as frames.
    ad_src_mac: [u8; 6],
    /// IPv4 identification of the next ad.
    ip_id: u16,
    ifindex: u32,
    frames: FrameSender,
    arp_ring: Option<Ring>,
    macvlan: bool,
    vips_installed: bool,
    drops: Counters<{ Dropped::COUNT }>,
    transitions: u64,
    last_publish: Duration,
    /// Parent link as last seen, and when it was last looked at.
    link_up: bool,
    /// Times the parent link went down (`link_down` in the status counters).
    link_downs: u64,
    last_link_check: Duration,
    status: Arc<Mutex<Status>>,
    ownership: Arc<ArcSwap<Ownership>>,
    buf: Vec<u8>,
}

impl Shell {
    fn new(
        mut cfg: ShellConfig,
        iface: Interface,
        status: Arc<Mutex<Status>>,
        ownership: Arc<ArcSwap<Ownership>>,
    ) -> io::Result<Self> {
        // Now inside the namespace: learn the parent's MAC and first IPv4 address, and rebuild
        // the core with the real MAC (it matters to the lladdr HMAC quirk).
        let (parent_mac, parent_v4) = parent_info(&cfg.carpdev)?;
        let iface = if cfg.iface.parent_mac == parent_mac {
            iface
        } else {
            cfg.iface.parent_mac = parent_mac;
            Interface::new(&cfg.iface)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        };
        let ad_src_mac = match iface.balancing() {
            // carp.4's intent for ip / ip-stealth (spec §2.2): never the virtual MAC as source.
            Balancing::Ip | Balancing::IpStealth => parent_mac,
            _ => iface.lladdr(),
        };
        let sock = open_socket(&cfg)?;
        let sock6 = if cfg.iface.v6.is_empty() {
            None
        } else {
            Some(open_socket6(&cfg)?)
        };
        let ifindex = crate::sys::afxdp::ifindex(&cfg.carpdev)?;
        let frames = FrameSender::new(&cfg.carpdev)?;
        let arp_ring = if iface.balancing() == Balancing::Arp && !cfg.iface.v4.is_empty() {
            let vips = cfg.iface.v4.iter().map(|a| IpAddr::V4(*a)).collect();
            let filter = crate::sys::cbpf::compile(&crate::sys::cbpf::FilterConfig {
                vips,
                ..Default::default()
            })
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
            let ring_cfg = RingConfig {
                block_size: 1 << 16,
                block_nr: 4,
                retire_ms: 1,
                ..Default::default()
            };
            Some(Ring::new(&cfg.carpdev, &filter, &ring_cfg)?)
        } else {
            None
        };
        let mut groups = Groups::new();
        for (g, n) in &cfg.group_demote {
            groups.adjust_saturating(g, i32::from(*n));
        }
        let mut s = Self {
            macvlan: cfg.vip_mode == VipMode::Macvlan && iface.balancing() == Balancing::None,
            cfg,
            iface,
            groups,
            epoch: Instant::now(),
            sock,
            sock6,
            parent_v4,
            ad_src_mac,
            ip_id: random_u16()?,
            ifindex,
            frames,
            arp_ring,
            vips_installed: false,
            drops: Counters::default(),
            transitions: 0,
            last_publish: Duration::ZERO,
            link_up: true,
            link_downs: 0,
            last_link_check: Duration::ZERO,
            status,
            ownership,
            buf: vec![0; 2048],
        };
        if s.macvlan
            && let Err(e) = s.create_macvlan()
        {
            s.cleanup();
            return Err(e);
        }
        let now = s.now();
        let sum = s.groups.sum(s.iface.groups());
        s.iface.set_group_demote(now, sum);
        s.iface.set_up(now, true);
        s.drain(now);
        s.publish(now);
        Ok(s)
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn run(&mut self, rx: &Receiver<Command>) -> io::Result<()> {
        loop {
            loop {
                match rx.try_recv() {
                    Ok(c) => {
                        if let Some(r) = self.command(c) {
                            return r;
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    // The handle is gone without a word: bow out.
                    Err(mpsc::TryRecvError::Disconnected) => {
                        return self.command(Command::Shutdown).unwrap_or(Ok(()));
                    }
                }
            }
            let now = self.now();
            // poll(2) counts milliseconds: round up so a timer is never polled early in a loop.
            let wait = self
                .iface
                .poll_timeout()
                .map_or(MAX_WAIT, |t| {
                    t.saturating_sub(now) + Duration::from_micros(999)
                })
                .min(MAX_WAIT);
            let mut fds = [self.sock.as_raw_fd(), -1, -1];
            let mut n = 1;
            if let Some(s) = &self.sock6 {
                fds[n] = s.as_raw_fd();
                n += 1;
            }
            if let Some(r) = &self.arp_ring {
                fds[n] = r.as_raw_fd();
                n += 1;
            }
            let ready = rawip::readable(fds.get(..n).unwrap_or(&[]), wait)?;
            if ready & 1 != 0 {
                self.receive_v4();
            }
            if self.sock6.is_some() && ready & 2 != 0 {
                self.receive_v6();
            }
            let now = self.now();
            self.check_link(now);
            if self.iface.poll_timeout().is_some_and(|t| t <= now) {
                self.iface.handle_timeout(now);
            }
            self.answer_arp();
            self.drain(now);
        }
    }

    /// `carp_carpdev_state`: the parent lost its link (or was set down): every vhost to INIT
    /// without a bow-out and +1 "carpdev" demotion on the interface's groups; back up: -1 and
    /// the vhosts start again as BACKUP. Looked at every [`LINK_CHECK_EVERY`].
    fn check_link(&mut self, now: Duration) {
        if now.saturating_sub(self.last_link_check) < LINK_CHECK_EVERY {
            return;
        }
        self.last_link_check = now;
        let Ok(up) = rawip::link_running(self.sock.as_raw_fd(), &self.cfg.carpdev) else {
            return;
        };
        if up == self.link_up {
            return;
        }
        self.link_up = up;
        let delta = if up { -1 } else { 1 };
        let groups: Vec<String> = self.iface.groups().map(str::to_owned).collect();
        for g in &groups {
            self.groups.adjust_saturating(g, delta);
        }
        if !up {
            self.link_downs += 1;
        }
        self.iface.set_carpdev(now, up);
        let sum = self.groups.sum(self.iface.groups());
        self.iface.set_group_demote(now, sum);
    }

    /// Handles a command; `Some` ends the thread with that result.
    fn command(&mut self, c: Command) -> Option<io::Result<()>> {
        let now = self.now();
        match c {
            Command::Demote {
                group,
                delta,
                reply,
            } => {
                let r = self.groups.adjust(&group, delta);
                let sum = self.groups.sum(self.iface.groups());
                self.iface.set_group_demote(now, sum);
                let _ = reply.send(r);
            }
            Command::Force(s) => self.iface.force_state(now, s),
            Command::Shutdown => {
                self.iface.set_up(now, false);
                self.drain(now);
                return Some(Ok(()));
            }
            Command::Crash => return Some(Ok(())),
        }
        self.drain(now);
        self.publish(now);
        None
    }

    /// Reads the queued IPv4 datagrams (at most a batch) into the core.
    fn receive_v4(&mut self) {
        for _ in 0..RECV_BATCH {
            let n = match (&self.sock).read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if is_transient(&e) => return,
                Err(_) => {
                    self.drops.add(Dropped::DropRecvError.index(), 1);
                    return;
                }
            };
            self.handle_v4(n);
        }
    }

    /// Reads the queued IPv6 datagrams (payload only, hop limit from ancillary data).
    fn receive_v6(&mut self) {
        let Some(fd) = self.sock6.as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        for _ in 0..RECV_BATCH {
            let (n, hops) = match rawip::recv_hoplimit(fd, &mut self.buf) {
                Ok(r) => r,
                Err(e) if is_transient(&e) => return,
                Err(_) => {
                    self.drops.add(Dropped::DropRecvError.index(), 1);
                    return;
                }
            };
            let now = self.now();
            let rx = super::Received {
                af: Af::V6,
                // No control message: treat as a wrong hop limit rather than trust it.
                ttl: hops.unwrap_or(0),
                multicast: true,
                on_carp_interface: true,
                payload: self.buf.get(..n).unwrap_or(&[]),
            };
            let _ = self.iface.handle_advert(now, &rx);
        }
    }

    fn handle_v4(&mut self, n: usize) {
        let now = self.now();
        let dgram = self.buf.get(..n).unwrap_or(&[]);
        match parse_ipv4(dgram) {
            Some((ttl, multicast, payload)) => {
                let rx = super::Received {
                    af: Af::V4,
                    ttl,
                    multicast,
                    // One socket on the parent serves both: multicast ads count as "on the
                    // carp interface", unicast carppeer ads as "on the parent" (precheck).
                    on_carp_interface: multicast,
                    payload,
                };
                // Rejects are counted by the core.
                let _ = self.iface.handle_advert(now, &rx);
            }
            None => self.drops.add(Dropped::DropShortIp.index(), 1),
        }
    }

    /// Balancing arp: answer pending ARP requests for the VIPs (`carp_iamatch`).
    fn answer_arp(&mut self) {
        let Some(ring) = self.arp_ring.as_mut() else {
            return;
        };
        let own = self.iface.ownership();
        let vips = &self.cfg.iface.v4;
        let mut replies: Vec<[u8; MIN_FRAME]> = Vec::new();
        let mut bad = 0u64;
        let mut not_ours = 0u64;
        ring.recv_with(64, |frame, _| {
            let Some(req) = ethernet::Repr::parse(frame)
                .ok()
                .filter(|e| e.ethertype == ethernet::ETHERTYPE_ARP)
                .and_then(|e| frame.get(e.buffer_len()..))
                .and_then(|p| arp::Repr::parse(p).ok())
            else {
                bad += 1;
                return true;
            };
            if req.op != arp::OP_REQUEST || !vips.contains(&req.target_ip) {
                return true;
            }
            match own.arp_reply(req.sender_mac) {
                Some(mac) => {
                    let reply = arp::Repr {
                        op: arp::OP_REPLY,
                        sender_mac: mac,
                        sender_ip: req.target_ip,
                        target_mac: req.sender_mac,
                        target_ip: req.sender_ip,
                    };
                    if let Some(f) = arp_frame(req.sender_mac, mac, &reply) {
                        replies.push(f);
                    }
                }
                None => not_ours += 1,
            }
            true
        });
        self.drops.add(Dropped::DropBadArp.index(), bad);
        self.drops.add(Dropped::DropArpNotOurs.index(), not_ours);
        if !replies.is_empty() {
            let _ = self.frames.send(replies.iter().map(|f| &f[..]));
        }
    }

    /// Drains transmits and events, then publishes status and ownership.
    fn drain(&mut self, now: Duration) {
        let mut changed = false;
        // A demotion event makes masters advertise again: go round until both queues are empty.
        for _ in 0..DRAIN_ROUNDS {
            self.transmit_all(now);
            let mut demoted = false;
            while let Some(e) = self.iface.poll_event() {
                match e {
                    Event::StateChanged { .. } => {
                        self.transitions += 1;
                        changed = true;
                    }
                    Event::DemoteRequest { delta } => {
                        let groups: Vec<String> = self.iface.groups().map(str::to_owned).collect();
                        for g in &groups {
                            self.groups.adjust_saturating(g, delta);
                        }
                        let sum = self.groups.sum(self.iface.groups());
                        self.iface.set_group_demote(now, sum);
                        demoted = true;
                    }
                }
            }
            if !demoted {
                break;
            }
        }
        if changed {
            self.sync_vips();
            self.ownership.store(Arc::new(self.iface.ownership()));
            self.publish(now);
        } else if now.saturating_sub(self.last_publish) >= PUBLISH_EVERY {
            self.publish(now);
        }
    }

    fn transmit_all(&mut self, now: Duration) {
        while let Some(t) = self.iface.poll_transmit() {
            match t {
                Transmit::Advert { af: Af::V4, repr } if self.peer_is_group() => {
                    let ok = match self.parent_v4 {
                        Some(src) => {
                            self.ip_id = self.ip_id.wrapping_add(1);
                            advert_frame(self.ad_src_mac, src, self.ip_id, &repr)
                                .is_some_and(|f| self.frames.send([&f[..]]).is_ok_and(|n| n == 1))
                        }
                        None => self.send_raw_v4(&repr),
                    };
                    self.iface.handle_send_result(now, ok);
                }
                Transmit::Advert { af: Af::V4, repr } => {
                    let bytes = repr.to_bytes();
                    let dst = SocketAddrV4::new(self.iface.destination_v4(), 0);
                    let ok = self
                        .sock
                        .send_to(&bytes, &SocketAddr::V4(dst).into())
                        .is_ok();
                    self.iface.handle_send_result(now, ok);
                }
                // IPv6 advertisements are not sent yet (module doc); not an error of the link.
                Transmit::Advert { af: Af::V6, repr } => {
                    let ok = match &self.sock6 {
                        Some(s) => {
                            let dst = SocketAddrV6::new(wire_carp::GROUP_V6, 0, 0, self.ifindex);
                            s.send_to(&repr.to_bytes(), &SocketAddr::V6(dst).into())
                                .is_ok()
                        }
                        None => false,
                    };
                    self.iface.handle_send_result(now, ok);
                }
                Transmit::GratuitousArp { mac } => self.send_garp(mac),
                Transmit::NeighborAdvert { mac } => self.send_na(mac),
            }
        }
    }

    fn send_garp(&mut self, mac: [u8; 6]) {
        for vip in &self.cfg.iface.v4 {
            let req = arp::Repr {
                op: arp::OP_REQUEST,
                sender_mac: mac,
                sender_ip: *vip,
                target_mac: [0; 6],
                target_ip: *vip,
            };
            if let Some(f) = arp_frame([0xff; 6], mac, &req) {
                let _ = self.frames.send([&f[..]]);
            }
        }
    }

    fn peer_is_group(&self) -> bool {
        self.cfg.iface.peer.is_none()
    }

    fn send_raw_v4(&self, repr: &wire_carp::Repr) -> bool {
        let dst = SocketAddrV4::new(self.iface.destination_v4(), 0);
        self.sock
            .send_to(&repr.to_bytes(), &SocketAddr::V4(dst).into())
            .is_ok()
    }

    /// Unsolicited neighbour advertisements (RFC 4861 §7.2.6: Override set, Solicited clear,
    /// to all-nodes ff02::1, hop limit 255, target link-layer address option).
    fn send_na(&mut self, mac: [u8; 6]) {
        for vip in &self.cfg.iface.v6 {
            if let Some(f) = na_frame(mac, *vip) {
                let _ = self.frames.send([&f[..]]);
            }
        }
    }

    fn publish(&mut self, now: Duration) {
        self.last_publish = now;
        let name = &self.cfg.name;
        let demote = self.iface.demote();
        let advbase = self.iface.advbase();
        let bal = balancing_name(self.iface.balancing());
        let vhosts = self
            .iface
            .vhosts()
            .iter()
            .map(|v| CarpVhost {
                interface: name.clone(),
                vhid: v.vhid(),
                state: state_name(v.state()).to_owned(),
                advbase,
                advskew: v.advskew(),
                demote,
                balancing: bal.to_owned(),
            })
            .collect();
        let mut counters: Vec<(String, u64)> = Vec::new();
        for r in Reject::ALL {
            counters.push((r.name().to_owned(), self.iface.rejects().get(r.index())));
        }
        for s in Stat::ALL {
            counters.push((s.name().to_owned(), self.iface.stats().get(s.index())));
        }
        for d in Dropped::ALL {
            counters.push((d.name().to_owned(), self.drops.get(d.index())));
        }
        counters.push(("transitions".to_owned(), self.transitions));
        counters.push(("link_down".to_owned(), self.link_downs));
        if let Ok(mut s) = self.status.lock() {
            s.vhosts = vhosts;
            s.counters = counters;
            s.transitions = self.transitions;
        }
    }

    /// Puts the VIPs on the macvlan when MASTER, removes them otherwise.
    fn sync_vips(&mut self) {
        if !self.macvlan {
            return;
        }
        let master = self
            .iface
            .vhosts()
            .first()
            .is_some_and(|v| v.state() == State::Master);
        if master == self.vips_installed {
            return;
        }
        let verb = if master { "add" } else { "del" };
        let addrs: Vec<String> = self.vip_cidrs();
        for a in &addrs {
            let mut args = vec!["addr", verb, a.as_str(), "dev", self.cfg.name.as_str()];
            if master && a.contains(':') {
                args.push("nodad");
            }
            let _ = ip(&args);
        }
        self.vips_installed = master;
        if master {
            // The GARP the core queued went out before the address was there; repeat it now
            // that the kernel will answer for the VIP (the core's delayed GARP follows).
            let mac = self.iface.lladdr();
            self.send_garp(mac);
            self.send_na(mac);
        }
    }

    fn vip_cidrs(&self) -> Vec<String> {
        let v4 = self.cfg.iface.v4.iter().map(|a| IpAddr::V4(*a));
        let v6 = self.cfg.iface.v6.iter().map(|a| IpAddr::V6(*a));
        v4.chain(v6)
            .enumerate()
            .map(|(i, a)| {
                let def = if a.is_ipv4() { 32 } else { 128 };
                let len = self.cfg.prefix_len.get(i).copied().unwrap_or(def);
                format!("{a}/{len}")
            })
            .collect()
    }

    fn create_macvlan(&mut self) -> io::Result<()> {
        let name = self.cfg.name.clone();
        // A leftover from a killed daemon: remove it.
        let _ = ip(&["link", "del", &name]);
        ip(&[
            "link",
            "add",
            &name,
            "link",
            &self.cfg.carpdev,
            "type",
            "macvlan",
            "mode",
            "bridge",
        ])?;
        let mac = crate::lab::mac_string(self.iface.lladdr());
        ip(&["link", "set", &name, "address", &mac])?;
        ip(&["link", "set", &name, "addrgenmode", "none"])?;
        for dev in [self.cfg.carpdev.as_str(), name.as_str()] {
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/arp_ignore"), "1")?;
        }
        ip(&["link", "set", &name, "up"])?;
        Ok(())
    }

    fn cleanup(&mut self) {
        if self.macvlan {
            let _ = ip(&["link", "del", &self.cfg.name]);
        }
        self.vips_installed = false;
    }
}

/// One random replay cookie per vhost (ip_carp.c draws `vhe_replay_cookie` with arc4random).
fn random_cookies(n: usize) -> io::Result<Vec<[u8; 8]>> {
    let mut f = std::fs::File::open("/dev/urandom")?;
    (0..n)
        .map(|_| {
            let mut c = [0u8; 8];
            f.read_exact(&mut c).map(|()| c)
        })
        .collect()
}

fn random_u16() -> io::Result<u16> {
    let mut b = [0u8; 2];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u16::from_ne_bytes(b))
}

/// The parent's MAC and first IPv4 address, from `ip -o link` / `ip -o -4 addr` (the thread's
/// namespace; sysfs would show the wrong one, sys::netns).
fn parent_info(dev: &str) -> io::Result<([u8; 6], Option<Ipv4Addr>)> {
    let link = ip_output(&["-o", "link", "show", "dev", dev])?;
    let mac = word_after(&link, "link/ether")
        .and_then(crate::lab::parse_mac)
        .ok_or_else(|| io::Error::other(format!("{dev}: not an Ethernet interface")))?;
    let addr = ip_output(&["-o", "-4", "addr", "show", "dev", dev])?;
    let v4 = word_after(&addr, "inet")
        .and_then(|w| w.split('/').next())
        .and_then(|a| a.parse().ok());
    Ok((mac, v4))
}

fn word_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut w = text.split_whitespace();
    w.by_ref().find(|x| *x == key)?;
    w.next()
}

fn ip_output(args: &[&str]) -> io::Result<String> {
    let out = Process::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `ip ARGS` in the calling thread's namespace (a forked child inherits it).
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Process::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The raw IPv6 socket for protocol 112: bound to the carpdev, hop limit 255 both ways, joined
/// to ff02::12 there, hop limit of received ads as ancillary data, non-blocking.
fn open_socket6(cfg: &ShellConfig) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(i32::from(wire_carp::IPPROTO_CARP))),
    )?;
    s.bind_device(Some(cfg.carpdev.as_bytes()))?;
    s.set_unicast_hops_v6(u32::from(wire_carp::TTL))?;
    s.set_multicast_hops_v6(u32::from(wire_carp::TTL))?;
    s.set_multicast_loop_v6(false)?;
    s.set_recv_hoplimit_v6(true)?;
    let ifindex = crate::sys::afxdp::ifindex(&cfg.carpdev)?;
    s.set_multicast_if_v6(ifindex)?;
    s.join_multicast_v6(&wire_carp::GROUP_V6, ifindex)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The raw IPv4 socket for protocol 112 (feasibility.md §5): bound to the carpdev, TTL and
/// multicast TTL 255 (the multicast TTL defaults to 1), no multicast loop (our own ads would
/// only count as `loop`), joined to 224.0.0.18 unless a unicast carppeer is set.
fn open_socket(cfg: &ShellConfig) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(wire_carp::IPPROTO_CARP))),
    )?;
    s.bind_device(Some(cfg.carpdev.as_bytes()))?;
    s.set_ttl_v4(u32::from(wire_carp::TTL))?;
    s.set_multicast_ttl_v4(u32::from(wire_carp::TTL))?;
    s.set_multicast_loop_v4(false)?;
    // SO_BINDTODEVICE also picks the output interface of multicast ads.
    let ifindex = crate::sys::afxdp::ifindex(&cfg.carpdev)?;
    if cfg.iface.peer.is_none_or(|p| p.is_multicast()) {
        let group = cfg.iface.peer.unwrap_or(wire_carp::GROUP_V4);
        s.join_multicast_v4_n(&group, &socket2::InterfaceIndexOrAddress::Index(ifindex))?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// TTL, multicast destination and payload of a raw-socket IPv4 datagram (header included).
fn parse_ipv4(d: &[u8]) -> Option<(u8, bool, &[u8])> {
    if d.len() < ipv4::MIN_HEADER_LEN {
        return None;
    }
    let vi = *d.get(ipv4::VER_IHL)?;
    if vi >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(vi & 0x0f) * 4;
    let ttl = *d.get(ipv4::TTL)?;
    let dst: [u8; 4] = d.get(ipv4::DST)?.try_into().ok()?;
    let payload = d.get(ihl.max(ipv4::MIN_HEADER_LEN)..)?;
    Some((ttl, Ipv4Addr::from(dst).is_multicast(), payload))
}

/// An Ethernet + ARP frame, padded to the Ethernet minimum.
fn arp_frame(dst: [u8; 6], src: [u8; 6], a: &arp::Repr) -> Option<[u8; MIN_FRAME]> {
    let mut f = [0u8; MIN_FRAME];
    let eth = ethernet::Repr {
        dst,
        src,
        tags: [None; ethernet::MAX_TAGS],
        ethertype: ethernet::ETHERTYPE_ARP,
    };
    eth.emit(&mut f).ok()?;
    a.emit(f.get_mut(ethernet::HEADER_LEN..)?).ok()?;
    Some(f)
}

/// An IPv4 advertisement to 224.0.0.18 as one Ethernet frame, built as `carp_send_ad` builds
/// it: TOS IPTOS_LOWDELAY, DF, TTL 255, protocol 112, source the parent's address, Ethernet
/// source the carp lladdr so switches learn where the master is from every ad.
fn advert_frame(
    src_mac: [u8; 6],
    src: Ipv4Addr,
    ident: u16,
    repr: &wire_carp::Repr,
) -> Option<[u8; AD_FRAME]> {
    let mut f = [0u8; AD_FRAME];
    let g = wire_carp::GROUP_V4.octets();
    let eth = ethernet::Repr {
        // RFC 1112 §6.4: 01:00:5e + the low 23 bits of the group.
        dst: [0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]],
        src: src_mac,
        tags: [None; ethernet::MAX_TAGS],
        ethertype: ethernet::ETHERTYPE_IPV4,
    };
    eth.emit(&mut f).ok()?;
    let ip = crate::wire::ipv4::Repr {
        src,
        dst: wire_carp::GROUP_V4,
        proto: wire_carp::IPPROTO_CARP,
        ttl: wire_carp::TTL,
        dscp: IPTOS_LOWDELAY >> 2,
        ecn: 0,
        frag: crate::wire::ipv4::Fragment {
            ident,
            dont_frag: true,
            more_frags: false,
            offset: 0,
        },
        options: crate::wire::Options::EMPTY,
        payload_len: u16::try_from(wire_carp::HEADER_LEN).ok()?,
    };
    let ip_buf = f.get_mut(ethernet::HEADER_LEN..)?;
    ip.emit(ip_buf).ok()?;
    repr.emit(ip_buf.get_mut(ipv4::MIN_HEADER_LEN..)?).ok()?;
    Some(f)
}

/// An unsolicited neighbour advertisement for `target` from `mac`, as one Ethernet frame.
fn na_frame(mac: [u8; 6], target: Ipv6Addr) -> Option<[u8; NA_FRAME]> {
    let mut f = [0u8; NA_FRAME];
    let eth = ethernet::Repr {
        // RFC 2464 §7: 33:33 + the low 32 bits of ff02::1.
        dst: [0x33, 0x33, 0, 0, 0, 1],
        src: mac,
        tags: [None; ethernet::MAX_TAGS],
        ethertype: ethernet::ETHERTYPE_IPV6,
    };
    eth.emit(&mut f).ok()?;
    let ip = ipv6::Repr {
        src: target,
        dst: ALL_NODES,
        next_header: crate::wire::proto::ICMPV6,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
        payload_len: u16::try_from(NA_LEN).ok()?,
    };
    let ip_buf = f.get_mut(ethernet::HEADER_LEN..)?;
    ip.emit(ip_buf).ok()?;
    // Target address, then option 2 (target link-layer address), length 1 (8 bytes).
    let mut data = [0u8; NA_LEN - icmpv6::HEADER_LEN];
    let (t, opt) = data.split_at_mut(16);
    t.copy_from_slice(&target.octets());
    let (head, ll) = opt.split_at_mut(2);
    head.copy_from_slice(&[ND_OPT_TARGET_LL, 1]);
    ll.copy_from_slice(&mac);
    let icmp = icmpv6::Repr {
        message: icmpv6::Message::Other {
            icmp_type: ND_NEIGHBOR_ADVERT,
            code: 0,
            rest: NA_FLAG_OVERRIDE,
        },
        data: &data,
    };
    icmp.emit(ip_buf.get_mut(ipv6::HEADER_LEN..)?, target, ALL_NODES)
        .ok()?;
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_header(ttl: u8, dst: [u8; 4], ihl_words: u8) -> Vec<u8> {
        let mut h = vec![0u8; usize::from(ihl_words) * 4];
        h[0] = 0x40 | ihl_words;
        h[8] = ttl;
        h[16..20].copy_from_slice(&dst);
        h.extend_from_slice(&[0xaa; 36]);
        h
    }

    #[test]
    fn parse_ipv4_reads_ttl_dst_and_skips_options() {
        let d = v4_header(255, [224, 0, 0, 18], 5);
        let (ttl, mc, p) = parse_ipv4(&d).unwrap();
        assert_eq!((ttl, mc, p.len()), (255, true, 36));
        let d = v4_header(64, [198, 18, 0, 2], 6);
        let (ttl, mc, p) = parse_ipv4(&d).unwrap();
        assert_eq!((ttl, mc, p.len()), (64, false, 36));
        // IHL 15 words (60 bytes) but only 56 bytes present after truncation.
        let mut d = v4_header(255, [224, 0, 0, 18], 5);
        d[0] = 0x4f;
        assert!(parse_ipv4(&d[..56]).is_none());
        let mut v6 = v4_header(255, [224, 0, 0, 18], 5);
        v6[0] = 0x65;
        assert!(parse_ipv4(&v6).is_none());
    }

    #[test]
    fn parse_ipv4_every_truncation() {
        let d = v4_header(255, [224, 0, 0, 18], 5);
        for n in 0..ipv4::MIN_HEADER_LEN {
            assert!(parse_ipv4(&d[..n]).is_none(), "len {n}");
        }
        for n in ipv4::MIN_HEADER_LEN..=d.len() {
            let (_, _, p) = parse_ipv4(&d[..n]).unwrap();
            assert_eq!(p.len(), n - ipv4::MIN_HEADER_LEN);
        }
    }

    #[test]
    fn garp_frame_golden() {
        let mac = [0, 0, 0x5e, 0, 1, 7];
        let vip = Ipv4Addr::new(198, 18, 0, 10);
        let req = arp::Repr {
            op: arp::OP_REQUEST,
            sender_mac: mac,
            sender_ip: vip,
            target_mac: [0; 6],
            target_ip: vip,
        };
        let f = arp_frame([0xff; 6], mac, &req).unwrap();
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x5e, 0, 1, 7, 0x08, 0x06, // ethernet
            0, 1, 0x08, 0, 6, 4, 0, 1, // htype ptype hlen plen op=request
            0, 0, 0x5e, 0, 1, 7, 198, 18, 0, 10, // sender
            0, 0, 0, 0, 0, 0, 198, 18, 0, 10, // target
        ];
        assert_eq!(&f[..42], &want[..]);
        assert!(f[42..].iter().all(|b| *b == 0), "padding");
    }

    #[test]
    fn unsolicited_na_frame() {
        let mac = [0, 0, 0x5e, 0, 1, 3];
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let f = na_frame(mac, vip).unwrap();
        let eth = ethernet::Repr::parse(&f).unwrap();
        assert_eq!(eth.dst, [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(eth.src, mac);
        assert_eq!(eth.ethertype, ethernet::ETHERTYPE_IPV6);
        let ip = ipv6::Repr::parse(&f[14..]).unwrap();
        assert_eq!((ip.src, ip.dst, ip.hop_limit), (vip, ALL_NODES, 255));
        assert_eq!((ip.next_header, ip.payload_len), (58, 32));
        // Parsing verifies the ICMPv6 checksum with the pseudo-header.
        let icmp = icmpv6::Repr::parse(&f[54..], vip, ALL_NODES).unwrap();
        assert_eq!(
            icmp.message,
            icmpv6::Message::Other {
                icmp_type: 136,
                code: 0,
                rest: 0x2000_0000
            },
            "Override set, Router and Solicited clear"
        );
        assert_eq!(&icmp.data[..16], &vip.octets());
        assert_eq!(&icmp.data[16..], &[2, 1, 0, 0, 0x5e, 0, 1, 3]);
        assert_eq!(f.len(), 86);
    }

    #[test]
    fn advert_frame_golden() {
        let repr = wire_carp::Repr::advertisement(42, 1, 7, 0, [1, 2, 3, 4, 5, 6, 7, 8]);
        let src = Ipv4Addr::new(198, 18, 5, 1);
        let f = advert_frame([0, 0, 0x5e, 0, 1, 42], src, 0x1234, &repr).unwrap();
        let want_head: [u8; 34] = [
            1, 0, 0x5e, 0, 0, 18, 0, 0, 0x5e, 0, 1, 42, 0x08, 0x00, // ethernet
            0x45, 0x10, 0, 56, 0x12, 0x34, 0x40, 0, 255,
            112, // ver/ihl tos len id DF ttl proto
            0, 0, // checksum, checked below
            198, 18, 5, 1, 224, 0, 0, 18,
        ];
        assert_eq!(&f[..24], &want_head[..24]);
        assert_eq!(&f[26..34], &want_head[26..34]);
        assert_eq!(
            crate::wire::checksum::checksum(&f[14..34]),
            0,
            "IPv4 checksum"
        );
        assert_eq!(&f[34..], &repr.to_bytes()[..]);
        let (ttl, mc, payload) = parse_ipv4(&f[14..]).unwrap();
        assert_eq!((ttl, mc, payload.len()), (255, true, 36));
    }

    #[test]
    fn word_after_parses_ip_output() {
        let link = "2: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue \\    link/ether 02:11:22:33:44:55 brd ff:ff:ff:ff:ff:ff link-netns x";
        assert_eq!(word_after(link, "link/ether"), Some("02:11:22:33:44:55"));
        let addr = "2: eth0    inet 198.18.5.1/24 scope global eth0\\       valid_lft forever";
        assert_eq!(word_after(addr, "inet"), Some("198.18.5.1/24"));
        assert_eq!(word_after("", "inet"), None);
        assert_eq!(word_after("inet", "inet"), None);
    }

    #[test]
    fn names() {
        assert_eq!(state_name(State::Master), "MASTER");
        for s in [State::Init, State::Backup, State::Master] {
            assert_eq!(parse_state(state_name(s)), Some(s));
        }
        assert_eq!(balancing_name(Balancing::IpStealth), "ip-stealth");
        let names: Vec<&str> = Dropped::ALL.iter().map(|d| d.name()).collect();
        assert!(names.iter().all(|n| n.starts_with("drop_")));
    }
}
