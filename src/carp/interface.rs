//! A carp interface (`struct carp_softc`): up to 32 vhosts sorted by vhid (the first is the
//! leader), shared advbase, key and addresses, the receive-side checks of `carp_proto_input` /
//! `carp6_proto_input` / `carp_proto_input_c` in OpenBSD's order, balancing ownership
//! (`carp_update_lsmask`), bow-out, forced states and send-error demotion.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::counters::Counters;
use crate::wire::carp::{self as wire, Auth, AuthInput, Packet, Repr};
use crate::wire::classify::Af;

use super::balance::{MAX_NODES, Ownership};
use super::groups::CARP_GROUP;
use super::vhost::{Out, Shared, State, Vhost};
use super::{Reject, Stat};

pub(crate) type StatCounters = Counters<{ Stat::COUNT }>;
type RejectCounters = Counters<{ Reject::COUNT }>;

/// Balancing mode (`balancing none|ip|ip-stealth|ip-unicast`, plus the 2015 `arp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Balancing {
    #[default]
    None,
    /// Historical ARP balancing (ip_carp.c 1.263): each requester is answered by one vhost.
    Arp,
    /// The leader's MAC is multicast 01:00:5e:00:01:VHID so switches flood to every node.
    Ip,
    /// Unicast virtual MAC never used as a source address.
    IpStealth,
    /// Unicast virtual MAC; the operator floods it.
    IpUnicast,
}

impl Balancing {
    /// `sc_balancing >= CARP_BAL_IP`.
    pub fn is_ip(self) -> bool {
        matches!(
            self,
            Balancing::Ip | Balancing::IpStealth | Balancing::IpUnicast
        )
    }
}

/// One carpnode: `vhid:advskew`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    pub vhid: u8,
    pub advskew: u8,
}

/// Plain configuration of one carp interface (what ifconfig sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// `vhid N advskew M`, or `carpnodes vhid:advskew,...` (at most 32, any order).
    pub nodes: Vec<NodeConfig>,
    /// Seconds, 0..=255 (default 1).
    pub advbase: u8,
    /// `pass STR`; empty means no passphrase (a key of 20 zero bytes).
    pub passphrase: Vec<u8>,
    /// The virtual addresses; every node must carry the same set or HMACs differ.
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    /// `carppeer`: a unicast IPv4 peer; `None` is the 224.0.0.18 group.
    pub peer: Option<Ipv4Addr>,
    pub balancing: Balancing,
    /// sysctl `net.inet.carp.preempt` (default 0).
    pub preempt: bool,
    /// The parent's real MAC (`sc_realmac` detection).
    pub parent_mac: [u8; 6],
    /// A hand-set `lladdr`; `None` follows the leader's virtual MAC.
    pub lladdr: Option<[u8; 6]>,
    /// Interface groups besides `carp`, for demotion.
    pub groups: Vec<String>,
    /// Replay cookies, one per node in `nodes` order; the shell draws them at random once.
    /// Missing entries are derived from the vhid (fine for tests, not for production).
    pub cookies: Vec<[u8; 8]>,
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            advbase: 1,
            passphrase: Vec::new(),
            v4: Vec::new(),
            v6: Vec::new(),
            peer: None,
            balancing: Balancing::None,
            preempt: false,
            parent_mac: [0; 6],
            lladdr: None,
            groups: Vec::new(),
            cookies: Vec::new(),
        }
    }
}

/// Why a configuration is refused (the EINVALs of `carp_vhids_ioctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    NoNodes,
    TooManyNodes(usize),
    /// vhid 0 is reserved.
    VhidZero,
    DuplicateVhid(u8),
    /// advskew 255 is reserved for bow-out.
    AdvskewReserved(u8),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::NoNodes => f.write_str("no vhid configured"),
            ConfigError::TooManyNodes(n) => write!(f, "{n} carpnodes, at most {MAX_NODES}"),
            ConfigError::VhidZero => f.write_str("vhid 0 is reserved"),
            ConfigError::DuplicateVhid(v) => write!(f, "vhid {v} repeated"),
            ConfigError::AdvskewReserved(v) => write!(f, "vhid {v}: advskew 255 is reserved"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Something the shell must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// An advertisement, signed, to emit with [`Repr::emit`] behind an IP header with TTL /
    /// hop limit 255: IPv4 to the peer or 224.0.0.18, IPv6 to ff02::12. Source: the parent's
    /// first address of that family. Report the outcome with
    /// [`Interface::handle_send_result`].
    Advert { af: Af, repr: Repr },
    /// A gratuitous ARP request (sender IP = target IP = the VIP, sender MAC = `mac`, to
    /// broadcast) for every IPv4 address of the interface.
    GratuitousArp { mac: [u8; 6] },
    /// An unsolicited neighbour advertisement (Override) to ff02::1 for every IPv6 address.
    NeighborAdvert { mac: [u8; 6] },
}

/// The interface link state (`carp_set_state`'s `if_link_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Some vhost is MASTER.
    Up,
    /// None MASTER, some BACKUP.
    Down,
    /// All INIT.
    Invalid,
}

/// Something that happened, for the shell to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    StateChanged {
        vhid: u8,
        from: State,
        to: State,
    },
    /// Send errors crossed the threshold (+1) or recovered (−1): apply `delta` to every group
    /// of this interface with [`super::Groups::adjust_saturating`] and call
    /// [`Interface::set_group_demote`]. The private count is already adjusted.
    DemoteRequest {
        delta: i32,
    },
}

/// What the shell knows about a received IP protocol 112 packet.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub af: Af,
    /// TTL or hop limit of the IP header.
    pub ttl: u8,
    /// The IP destination was multicast.
    pub multicast: bool,
    /// Received on the carp interface itself (true) or on its parent (false): unicast
    /// carppeer ads arrive on the parent.
    pub on_carp_interface: bool,
    /// The IP payload (the CARP header and anything after it).
    pub payload: &'a [u8],
}

/// The interface-independent checks of `carp_proto_input` / `carp6_proto_input`, in order:
/// interface, TTL, length, checksum.
pub fn precheck(rx: &Received<'_>) -> Result<Repr, Reject> {
    let if_ok = match rx.af {
        Af::V4 => {
            (rx.on_carp_interface && rx.multicast) || (!rx.on_carp_interface && !rx.multicast)
        }
        Af::V6 => rx.on_carp_interface,
    };
    if !if_ok {
        return Err(Reject::BadIf);
    }
    if rx.ttl != wire::TTL {
        return Err(Reject::BadTtl);
    }
    let p = Packet::new_checked(rx.payload).map_err(|_| Reject::BadLen)?;
    if !p.verify_checksum() {
        return Err(Reject::BadSum);
    }
    Ok(Repr::parse(&p))
}

/// The virtual MAC of a vhost: 00:00:5e:00:01:VHID, with first octet 0x01 (multicast) for the
/// leader under balancing ip (`carp_set_vhe_enaddr`).
pub fn virtual_mac(vhid: u8, leader: bool, balancing: Balancing) -> [u8; 6] {
    let first = if leader && balancing == Balancing::Ip {
        1
    } else {
        0
    };
    [first, 0, 0x5e, 0, 1, vhid]
}

/// A carp interface and its vhosts.
#[derive(Debug)]
pub struct Interface {
    vhosts: Vec<Vhost>,
    advbase: u8,
    balancing: Balancing,
    preempt: bool,
    peer: Option<Ipv4Addr>,
    has_v4: bool,
    has_v6: bool,
    up: bool,
    bow_out: bool,
    lladdr: [u8; 6],
    groups: Vec<String>,
    group_demote: u8,
    /// `sc_demote_cnt`.
    private_demote: u8,
    sendad_errors: u32,
    sendad_success: u32,
    lsmask: u32,
    hashkey: [u32; 2],
    key_head: [u8; 4],
    out: Out,
    rejects: RejectCounters,
}

impl Interface {
    /// Validates `cfg` and builds the interface, down (every vhost INIT). Call
    /// [`Self::set_up`] to start.
    pub fn new(cfg: &InterfaceConfig) -> Result<Self, ConfigError> {
        if cfg.nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        if cfg.nodes.len() > MAX_NODES {
            return Err(ConfigError::TooManyNodes(cfg.nodes.len()));
        }
        let mut nodes: Vec<(NodeConfig, [u8; 8])> = cfg
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let cookie = cfg
                    .cookies
                    .get(i)
                    .copied()
                    .unwrap_or([0xc0, 0x0c, 0x1e, n.vhid, 0, 0, 0, 1]);
                (*n, cookie)
            })
            .collect();
        nodes.sort_by_key(|(n, _)| n.vhid);
        for (i, (n, _)) in nodes.iter().enumerate() {
            if n.vhid == 0 {
                return Err(ConfigError::VhidZero);
            }
            if n.advskew == 255 {
                return Err(ConfigError::AdvskewReserved(n.vhid));
            }
            if i > 0 && nodes.get(i - 1).is_some_and(|(p, _)| p.vhid == n.vhid) {
                return Err(ConfigError::DuplicateVhid(n.vhid));
            }
        }
        // carp_vhids_ioctl: one node forces none; two or more with none fall back to ip.
        let balancing = match (nodes.len(), cfg.balancing) {
            (1, _) => Balancing::None,
            (_, Balancing::None) => Balancing::Ip,
            (_, b) => b,
        };
        let key = wire::key_from_passphrase(&cfg.passphrase);
        let leader_vhid = nodes.first().map_or(0, |(n, _)| n.vhid);
        let leader_mac = virtual_mac(leader_vhid, true, balancing);
        let lladdr = cfg.lladdr.unwrap_or(leader_mac);
        let vhosts = nodes
            .iter()
            .enumerate()
            .map(|(i, (n, cookie))| {
                let leader = i == 0;
                let mac = virtual_mac(n.vhid, leader, balancing);
                // ip_carp.c hashes the lladdr only for the leader when it is set by hand:
                // neither the parent's real MAC nor the vhost's virtual MAC.
                let hashed_ll =
                    (leader && lladdr != cfg.parent_mac && lladdr != mac).then_some(lladdr);
                let auth = Auth::new(&AuthInput {
                    key,
                    lladdr: hashed_ll,
                    vhid: n.vhid,
                    v4: &cfg.v4,
                    v6: &cfg.v6,
                });
                Vhost::new(n.vhid, n.advskew, leader, mac, *cookie, auth)
            })
            .collect();
        let mut groups = vec![CARP_GROUP.to_owned()];
        for g in &cfg.groups {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        Ok(Self {
            vhosts,
            advbase: cfg.advbase,
            balancing,
            preempt: cfg.preempt,
            peer: cfg.peer,
            has_v4: !cfg.v4.is_empty(),
            has_v6: !cfg.v6.is_empty(),
            up: false,
            bow_out: false,
            lladdr,
            groups,
            group_demote: 0,
            private_demote: 0,
            sendad_errors: 0,
            sendad_success: 0,
            lsmask: 0,
            hashkey: wire::arp_hash_key(&key),
            key_head: [key[0], key[1], key[2], key[3]],
            out: Out::default(),
            rejects: RejectCounters::default(),
        })
    }

    fn shared(&self) -> Shared {
        Shared {
            advbase: self.advbase,
            demote: self.demote(),
            preempt: self.preempt,
            has_v4: self.has_v4,
            has_v6: self.has_v6,
            running: self.up && (self.has_v4 || self.has_v6),
            bow_out: self.bow_out,
            announce: self.balancing == Balancing::None,
        }
    }

    /// `carp_update_lsmask`: bit i for the i-th vhost in vhid order that is MASTER.
    fn update_lsmask(&mut self) {
        self.lsmask = self
            .vhosts
            .iter()
            .enumerate()
            .filter(|(_, v)| v.state() == State::Master)
            .fold(0u32, |m, (i, _)| m | (1u32 << i));
    }

    /// Runs `f` on every vhost with the shared parameters, then recomputes the lsmask.
    fn each(&mut self, mut f: impl FnMut(&mut Vhost, &Shared, &mut Out)) {
        let sh = self.shared();
        for v in &mut self.vhosts {
            f(v, &sh, &mut self.out);
        }
        self.update_lsmask();
    }

    /// Brings the interface up (every vhost INIT → BACKUP, master-down timers armed) or down.
    /// Down from a running state bows out: one ad with advbase 255 / advskew 255 per MASTER
    /// vhost, then INIT (SIOCSIFFLAGS in `carp_ioctl`).
    pub fn set_up(&mut self, now: Duration, up: bool) {
        if up {
            self.up = true;
            self.each(|v, sh, out| v.setrun(now, None, sh, out));
            return;
        }
        if !self.up {
            return;
        }
        self.bow_out = true;
        self.each(|v, sh, out| {
            v.cancel_timers();
            v.advertise_now(now, sh, out);
        });
        self.bow_out = false;
        self.up = false;
        self.each(|v, _, out| v.reset(out));
    }

    /// Parent link lost (+1 "carpdev" demotion is the caller's) or regained: down puts every
    /// vhost in INIT without a bow-out; up starts them again.
    pub fn set_carpdev(&mut self, now: Duration, link_up: bool) {
        if link_up {
            self.set_up(now, true);
        } else {
            self.up = false;
            self.each(|v, _, out| v.reset(out));
        }
    }

    /// `ifconfig carpN state master|backup`: forces every vhost.
    pub fn force_state(&mut self, now: Duration, state: State) {
        match state {
            State::Master => self.each(|v, sh, out| v.force_master(now, sh, out)),
            State::Backup => self.each(|v, sh, out| v.force_backup(now, sh, out)),
            State::Init => self.each(|v, _, out| v.reset(out)),
        }
    }

    /// The demotion this interface advertises (`carp_group_demote_count`): the group sum, or
    /// the private send-error count when that sum is 0.
    pub fn demote(&self) -> u8 {
        if self.group_demote > 0 {
            self.group_demote
        } else {
            self.private_demote
        }
    }

    /// Groups this interface belongs to (always `carp` first).
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(String::as_str)
    }

    /// Sets the group-demotion sum (`Groups::sum(iface.groups())`). A change makes every
    /// MASTER vhost advertise at once (`carp_send_ad_all`).
    pub fn set_group_demote(&mut self, now: Duration, sum: u8) {
        let before = self.demote();
        self.group_demote = sum;
        if self.demote() != before {
            self.each(|v, sh, out| v.advertise_now(now, sh, out));
        }
    }

    /// The outcome of sending one [`Transmit::Advert`]. 3 × (number of vhosts) consecutive
    /// failures demote by 1; as many successes afterwards undo it (`carp_send_ad`).
    pub fn handle_send_result(&mut self, now: Duration, ok: bool) {
        let max = 3 * u32::try_from(self.vhosts.len()).unwrap_or(1);
        let mut delta = 0;
        if ok {
            if self.sendad_errors >= max {
                self.sendad_success += 1;
                if self.sendad_success >= max {
                    self.sendad_errors = 0;
                    self.sendad_success = 0;
                    delta = -1;
                }
            } else {
                self.sendad_errors = 0;
            }
        } else {
            self.out.stats.add(Stat::SendErrors.index(), 1);
            self.sendad_errors = self.sendad_errors.saturating_add(1);
            self.sendad_success = 0;
            if self.sendad_errors == max {
                delta = 1;
            }
        }
        if delta != 0 {
            let before = self.demote();
            self.private_demote = if delta > 0 {
                self.private_demote.saturating_add(1)
            } else {
                self.private_demote.saturating_sub(1)
            };
            self.out.events.push_back(Event::DemoteRequest { delta });
            if self.demote() != before {
                self.each(|v, sh, out| v.advertise_now(now, sh, out));
            }
        }
    }

    /// A received IP protocol 112 packet: every check of spec §1.1 in order, then the state
    /// machine. A reject is counted and returned.
    pub fn handle_advert(&mut self, now: Duration, rx: &Received<'_>) -> Result<(), Reject> {
        let stat = match rx.af {
            Af::V4 => Stat::IPackets,
            Af::V6 => Stat::IPackets6,
        };
        self.out.stats.add(stat.index(), 1);
        let r = precheck(rx).and_then(|repr| self.handle_repr(now, rx.af, rx.multicast, &repr));
        if let Err(e) = r {
            self.rejects.add(e.index(), 1);
        }
        r
    }

    /// The part of [`Self::handle_advert`] after [`precheck`], for a caller that already
    /// parsed and checked the header (e.g. one that tries several carp interfaces on the same
    /// parent with [`Self::has_vhid`]). Rejects are returned, not counted.
    pub fn handle_repr(
        &mut self,
        now: Duration,
        af: Af,
        multicast: bool,
        repr: &Repr,
    ) -> Result<(), Reject> {
        let i = self.validate(repr, af, multicast)?;
        let sh = self.shared();
        if let Some(v) = self.vhosts.get_mut(i) {
            v.handle_advert(now, repr, af, &sh, &mut self.out);
        }
        self.update_lsmask();
        Ok(())
    }

    /// Whether a vhost with `vhid` is configured here.
    pub fn has_vhid(&self, vhid: u8) -> bool {
        self.vhosts.iter().any(|v| v.vhid() == vhid)
    }

    /// IPv4 destination of advertisements: the unicast `carppeer` or 224.0.0.18.
    pub fn destination_v4(&self) -> Ipv4Addr {
        self.peer.unwrap_or(wire::GROUP_V4)
    }

    /// The per-interface checks after [`precheck`] (`carp_proto_input_c`): vhid (and peer
    /// type for IPv4), version, HMAC, loop. Returns the vhost index.
    fn validate(&self, repr: &Repr, af: Af, multicast: bool) -> Result<usize, Reject> {
        let peer_multicast = self.peer.is_none_or(|p| p.is_multicast());
        if af == Af::V4 && multicast != peer_multicast {
            return Err(Reject::BadVhid);
        }
        let i = self
            .vhosts
            .iter()
            .position(|v| v.vhid() == repr.vhid)
            .ok_or(Reject::BadVhid)?;
        if !self.shared().running {
            return Err(Reject::BadVhid);
        }
        let v = self.vhosts.get(i).ok_or(Reject::BadVhid)?;
        // OpenBSD checks neither the type nor authlen.
        if repr.version != wire::VERSION {
            return Err(Reject::BadVer);
        }
        if !v.auth().verify(repr) {
            return Err(Reject::BadAuth);
        }
        if repr.counter == v.cookie() {
            return Err(Reject::Loop);
        }
        Ok(i)
    }

    /// Fires every due timer.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.each(|v, sh, out| v.handle_timeout(now, sh, out));
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.vhosts.iter().filter_map(Vhost::poll_timeout).min()
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    pub fn vhosts(&self) -> &[Vhost] {
        &self.vhosts
    }

    /// State of `vhid`, if configured.
    pub fn state(&self, vhid: u8) -> Option<State> {
        self.vhosts
            .iter()
            .find(|v| v.vhid() == vhid)
            .map(Vhost::state)
    }

    pub fn balancing(&self) -> Balancing {
        self.balancing
    }
    pub fn advbase(&self) -> u8 {
        self.advbase
    }
    /// The interface lladdr (leader's virtual MAC unless set by hand).
    pub fn lladdr(&self) -> [u8; 6] {
        self.lladdr
    }
    pub fn lsmask(&self) -> u32 {
        self.lsmask
    }
    pub fn lscount(&self) -> u8 {
        u8::try_from(self.vhosts.len()).unwrap_or(u8::MAX)
    }

    pub fn link_state(&self) -> LinkState {
        if self.vhosts.iter().any(|v| v.state() == State::Master) {
            LinkState::Up
        } else if self.vhosts.iter().any(|v| v.state() == State::Backup) {
            LinkState::Down
        } else {
            LinkState::Invalid
        }
    }

    /// Reject counters by [`Reject`].
    pub fn rejects(&self) -> &Counters<{ Reject::COUNT }> {
        &self.rejects
    }
    /// Other statistics by [`Stat`].
    pub fn stats(&self) -> &Counters<{ Stat::COUNT }> {
        &self.out.stats
    }

    /// The ownership snapshot for the data plane.
    pub fn ownership(&self) -> Ownership {
        let mut macs = [[0u8; 6]; MAX_NODES];
        for (m, v) in macs.iter_mut().zip(&self.vhosts) {
            *m = v.mac();
        }
        Ownership {
            balancing: self.balancing,
            lsmask: self.lsmask,
            lscount: self.lscount(),
            leader_master: self
                .vhosts
                .first()
                .is_some_and(|v| v.state() == State::Master),
            macs,
            lladdr: self.lladdr,
            hashkey: self.hashkey,
            key_head: self.key_head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn cfg(nodes: &[(u8, u8)]) -> InterfaceConfig {
        InterfaceConfig {
            nodes: nodes
                .iter()
                .map(|&(vhid, advskew)| NodeConfig { vhid, advskew })
                .collect(),
            passphrase: b"secret".to_vec(),
            v4: vec![Ipv4Addr::new(198, 18, 0, 10)],
            ..Default::default()
        }
    }

    /// Bytes of an ad from a peer with the same config but another cookie.
    fn ad_from(c: &InterfaceConfig, vhid: u8, advbase: u8, advskew: u8, demote: u8) -> [u8; 36] {
        let mut c = c.clone();
        c.cookies = vec![[9; 8]; c.nodes.len()];
        let peer = Interface::new(&c).unwrap();
        let v = peer.vhosts().iter().find(|v| v.vhid() == vhid).unwrap();
        let mut r = Repr::advertisement(vhid, advbase, advskew, demote, v.cookie());
        v.auth().sign(&mut r);
        r.to_bytes()
    }

    fn rx(payload: &[u8]) -> Received<'_> {
        Received {
            af: Af::V4,
            ttl: 255,
            multicast: true,
            on_carp_interface: true,
            payload,
        }
    }

    fn drain(i: &mut Interface) -> (Vec<Transmit>, Vec<Event>) {
        let t = std::iter::from_fn(|| i.poll_transmit()).collect();
        let e = std::iter::from_fn(|| i.poll_event()).collect();
        (t, e)
    }

    #[test]
    fn config_errors() {
        assert_eq!(Interface::new(&cfg(&[])).err(), Some(ConfigError::NoNodes));
        assert_eq!(
            Interface::new(&cfg(&[(0, 0)])).err(),
            Some(ConfigError::VhidZero)
        );
        assert_eq!(
            Interface::new(&cfg(&[(3, 0), (3, 1)])).err(),
            Some(ConfigError::DuplicateVhid(3))
        );
        assert_eq!(
            Interface::new(&cfg(&[(3, 255)])).err(),
            Some(ConfigError::AdvskewReserved(3))
        );
        let many: Vec<(u8, u8)> = (1..=33).map(|v| (v, 0)).collect();
        assert_eq!(
            Interface::new(&cfg(&many)).err(),
            Some(ConfigError::TooManyNodes(33))
        );
        let ok: Vec<(u8, u8)> = (1..=32).map(|v| (v, 0)).collect();
        assert!(Interface::new(&cfg(&ok)).is_ok());
    }

    #[test]
    fn nodes_sorted_leader_macs_and_balancing_fallback() {
        let i = Interface::new(&cfg(&[(9, 0), (4, 100), (6, 0)])).unwrap();
        let vh: Vec<u8> = i.vhosts().iter().map(Vhost::vhid).collect();
        assert_eq!(vh, [4, 6, 9]);
        assert!(i.vhosts()[0].is_leader() && !i.vhosts()[1].is_leader());
        assert_eq!(
            i.balancing(),
            Balancing::Ip,
            "several nodes with none fall back to ip"
        );
        assert_eq!(i.lladdr(), [1, 0, 0x5e, 0, 1, 4]);
        assert_eq!(i.vhosts()[1].mac(), [0, 0, 0x5e, 0, 1, 6]);
        let mut c = cfg(&[(7, 0)]);
        c.balancing = Balancing::Ip;
        let one = Interface::new(&c).unwrap();
        assert_eq!(one.balancing(), Balancing::None, "one node forces none");
        assert_eq!(one.lladdr(), [0, 0, 0x5e, 0, 1, 7]);
        let mut c = cfg(&[(1, 0), (2, 0)]);
        c.balancing = Balancing::Arp;
        assert_eq!(Interface::new(&c).unwrap().lladdr(), [0, 0, 0x5e, 0, 1, 1]);
    }

    #[test]
    fn intervals() {
        let i = Interface::new(&cfg(&[(1, 100)])).unwrap();
        assert_eq!(i.vhosts()[0].interval(1), Duration::from_micros(1_390_625));
        assert_eq!(
            i.vhosts()[0].master_down_interval(1),
            Duration::from_micros(4_171_875)
        );
        let z = Interface::new(&cfg(&[(1, 0)])).unwrap();
        assert_eq!(z.vhosts()[0].interval(0), Duration::from_micros(3906));
        assert_eq!(
            z.vhosts()[0].master_down_interval(0),
            Duration::from_micros(11_718)
        );
    }

    #[test]
    fn lone_node_becomes_master_after_three_intervals_and_announces() {
        let c = cfg(&[(1, 100)]);
        let mut i = Interface::new(&c).unwrap();
        assert_eq!(i.link_state(), LinkState::Invalid);
        assert_eq!(i.poll_timeout(), None, "down: no timers");
        i.set_up(Duration::ZERO, true);
        assert_eq!(i.state(1), Some(State::Backup));
        assert_eq!(i.link_state(), LinkState::Down);
        let t = i.poll_timeout().unwrap();
        assert_eq!(t, Duration::from_micros(4_171_875));
        i.handle_timeout(t - Duration::from_micros(1));
        assert_eq!(i.state(1), Some(State::Backup));
        i.handle_timeout(t);
        assert_eq!(i.state(1), Some(State::Master));
        let (tx, ev) = drain(&mut i);
        assert_eq!(
            ev,
            [
                Event::StateChanged {
                    vhid: 1,
                    from: State::Init,
                    to: State::Backup
                },
                Event::StateChanged {
                    vhid: 1,
                    from: State::Backup,
                    to: State::Master
                },
            ]
        );
        assert!(
            matches!(tx[0], Transmit::Advert { af: Af::V4, repr } if repr.advskew == 100 && repr.advbase == 1)
        );
        assert_eq!(
            tx[1],
            Transmit::GratuitousArp {
                mac: [0, 0, 0x5e, 0, 1, 1]
            }
        );
        assert_eq!(tx.len(), 2);
        assert_eq!(i.stats().get(Stat::Preempt.index()), 1);
        // The repeat GARP goes out with the second ad after takeover.
        let mut garps = 0;
        let mut now = t;
        for _ in 0..4 {
            now = i.poll_timeout().unwrap();
            i.handle_timeout(now);
            let (tx, _) = drain(&mut i);
            garps += tx
                .iter()
                .filter(|t| matches!(t, Transmit::GratuitousArp { .. }))
                .count();
        }
        assert_eq!(garps, 1);
        assert_eq!(now, t + Duration::from_micros(4 * 1_390_625));
    }

    #[test]
    fn reject_order_and_names() {
        let c = cfg(&[(1, 0)]);
        let mut i = Interface::new(&c).unwrap();
        let good = ad_from(&c, 1, 1, 0, 0);
        // Down: the vhost is not running, so even a good ad is badvhid.
        assert_eq!(i.handle_advert(S, &rx(&good)), Err(Reject::BadVhid));
        i.set_up(Duration::ZERO, true);
        assert_eq!(i.handle_advert(S, &rx(&good)), Ok(()));
        let mut r = rx(&good);
        r.on_carp_interface = false;
        assert_eq!(i.handle_advert(S, &r), Err(Reject::BadIf));
        let mut r = rx(&good);
        r.af = Af::V6;
        r.on_carp_interface = false;
        assert_eq!(i.handle_advert(S, &r), Err(Reject::BadIf));
        let mut r = rx(&good);
        r.ttl = 254;
        assert_eq!(i.handle_advert(S, &r), Err(Reject::BadTtl));
        for n in 0..36 {
            assert_eq!(
                i.handle_advert(S, &rx(&good[..n])),
                Err(Reject::BadLen),
                "len {n}"
            );
        }
        let mut bad = good;
        bad[35] ^= 1;
        assert_eq!(i.handle_advert(S, &rx(&bad)), Err(Reject::BadSum));
        // Unicast ad on the parent while we use the multicast group: no vhost matches.
        let r = Received {
            multicast: false,
            on_carp_interface: false,
            ..rx(&good)
        };
        assert_eq!(i.handle_advert(S, &r), Err(Reject::BadVhid));
        let other = ad_from(&cfg(&[(2, 0)]), 2, 1, 0, 0);
        assert_eq!(i.handle_advert(S, &rx(&other)), Err(Reject::BadVhid));
        // Version 3, checksum refilled: badver (after the vhid lookup).
        let mut v3 = good;
        v3[0] = 0x31;
        Packet::new_checked(&mut v3[..]).unwrap().fill_checksum();
        assert_eq!(i.handle_advert(S, &rx(&v3)), Err(Reject::BadVer));
        let mut wrongkey = c.clone();
        wrongkey.passphrase = b"other".to_vec();
        let forged = ad_from(&wrongkey, 1, 1, 0, 0);
        assert_eq!(i.handle_advert(S, &rx(&forged)), Err(Reject::BadAuth));
        // Our own ad looped back.
        let mut own = Repr::advertisement(1, 1, 0, 0, i.vhosts()[0].cookie());
        i.vhosts()[0].auth().sign(&mut own);
        assert_eq!(i.handle_advert(S, &rx(&own.to_bytes())), Err(Reject::Loop));
        let n = |r: Reject| i.rejects().get(r.index());
        assert_eq!(
            [
                Reject::BadIf,
                Reject::BadTtl,
                Reject::BadLen,
                Reject::BadSum,
                Reject::BadVhid,
                Reject::BadVer,
                Reject::BadAuth,
                Reject::Loop
            ]
            .map(n),
            [2, 1, 36, 1, 3, 1, 1, 1]
        );
        assert_eq!(i.stats().get(Stat::IPackets.index()), 46);
        assert_eq!(i.stats().get(Stat::IPackets6.index()), 1);
    }

    #[test]
    fn unicast_peer_ads_arrive_on_the_parent() {
        let mut c = cfg(&[(1, 0)]);
        c.peer = Some(Ipv4Addr::new(198, 18, 0, 2));
        let mut i = Interface::new(&c).unwrap();
        i.set_up(Duration::ZERO, true);
        let good = ad_from(&c, 1, 1, 0, 0);
        let r = Received {
            multicast: false,
            on_carp_interface: false,
            ..rx(&good)
        };
        assert_eq!(i.handle_advert(S, &r), Ok(()));
        assert_eq!(
            i.handle_advert(S, &rx(&good)),
            Err(Reject::BadVhid),
            "multicast ad, unicast peer"
        );
    }

    fn master(c: &InterfaceConfig) -> Interface {
        let mut i = Interface::new(c).unwrap();
        i.set_up(Duration::ZERO, true);
        i.force_state(Duration::ZERO, State::Master);
        assert_eq!(i.state(c.nodes[0].vhid), Some(State::Master));
        drain(&mut i);
        i
    }

    #[test]
    fn master_rules() {
        let c = cfg(&[(1, 50)]);
        // Slower peer (higher skew): stay master.
        let mut i = master(&c);
        assert!(i.handle_advert(S, &rx(&ad_from(&c, 1, 1, 51, 0))).is_ok());
        assert_eq!(i.state(1), Some(State::Master));
        // Tie with equal demotion: yield.
        assert!(i.handle_advert(S, &rx(&ad_from(&c, 1, 1, 50, 0))).is_ok());
        assert_eq!(i.state(1), Some(State::Backup));
        assert_eq!(
            i.poll_timeout(),
            Some(S + Duration::from_micros(3 * 1_195_312))
        );
        // Faster but more demoted peer: stay.
        let mut i = master(&c);
        i.handle_advert(S, &rx(&ad_from(&c, 1, 1, 0, 1))).unwrap();
        assert_eq!(i.state(1), Some(State::Master));
        // Slower but less demoted peer: yield.
        i.set_group_demote(S, 2);
        i.handle_advert(S, &rx(&ad_from(&c, 1, 1, 200, 1))).unwrap();
        assert_eq!(i.state(1), Some(State::Backup));
    }

    fn backup(c: &InterfaceConfig) -> Interface {
        let mut i = Interface::new(c).unwrap();
        i.set_up(Duration::ZERO, true);
        drain(&mut i);
        i
    }

    #[test]
    fn backup_rules() {
        let mut c = cfg(&[(1, 50)]);
        // Without preempt, a slower master keeps its place: timer restarts.
        let mut i = backup(&c);
        i.handle_advert(2 * S, &rx(&ad_from(&c, 1, 1, 100, 0)))
            .unwrap();
        assert_eq!(i.state(1), Some(State::Backup));
        assert_eq!(
            i.poll_timeout(),
            Some(2 * S + Duration::from_micros(3 * 1_195_312))
        );
        // With preempt it is taken over at once.
        c.preempt = true;
        let mut i = backup(&c);
        i.handle_advert(S, &rx(&ad_from(&c, 1, 1, 100, 0))).unwrap();
        assert_eq!(i.state(1), Some(State::Master));
        // ...but not when we are more demoted.
        let mut i = backup(&c);
        i.set_group_demote(S, 1);
        i.handle_advert(S, &rx(&ad_from(&c, 1, 1, 100, 0))).unwrap();
        assert_eq!(i.state(1), Some(State::Backup));
        // A more demoted master is taken over, preempt or not, whatever its skew.
        c.preempt = false;
        let mut i = backup(&c);
        i.handle_advert(S, &rx(&ad_from(&c, 1, 1, 0, 1))).unwrap();
        assert_eq!(i.state(1), Some(State::Master));
        // Bow-out (255/255) is slower than 3 × advbase: taken over at once.
        let mut i = backup(&c);
        i.handle_advert(S, &rx(&ad_from(&c, 1, 255, 255, 0)))
            .unwrap();
        assert_eq!(i.state(1), Some(State::Master));
        // advbase 3 from the peer vs our 3 × 1 s + 50/256: not slow enough.
        let mut i = backup(&c);
        i.handle_advert(S, &rx(&ad_from(&c, 1, 3, 50, 0))).unwrap();
        assert_eq!(i.state(1), Some(State::Backup));
        let mut i = backup(&c);
        i.handle_advert(S, &rx(&ad_from(&c, 1, 3, 51, 0))).unwrap();
        assert_eq!(i.state(1), Some(State::Master));
        // Rule (c) is off with advbase 0.
        c.advbase = 0;
        let mut i = backup(&c);
        i.handle_advert(S, &rx(&ad_from(&c, 1, 200, 0, 0))).unwrap();
        assert_eq!(i.state(1), Some(State::Backup));
    }

    #[test]
    fn separate_v4_and_v6_master_down_timers() {
        let mut c = cfg(&[(1, 0)]);
        c.v6 = vec!["2001:db8::10".parse().unwrap()];
        let mut i = backup(&c);
        let md = Duration::from_secs(3);
        assert_eq!(i.vhosts()[0].timers(), [None, Some(md), Some(md)]);
        let ad = ad_from(&c, 1, 1, 0, 0);
        i.handle_advert(S, &rx(&ad)).unwrap();
        assert_eq!(i.vhosts()[0].timers(), [None, Some(S + md), Some(md)]);
        // No IPv6 ads: the v6 timer fires and we take over although v4 ads still come.
        i.handle_timeout(md);
        assert_eq!(i.state(1), Some(State::Master));
        let (tx, _) = drain(&mut i);
        let afs: Vec<Af> = tx
            .iter()
            .filter_map(|t| match t {
                Transmit::Advert { af, .. } => Some(*af),
                _ => None,
            })
            .collect();
        assert_eq!(afs, [Af::V4, Af::V6]);
        assert!(tx.contains(&Transmit::NeighborAdvert {
            mac: [0, 0, 0x5e, 0, 1, 1]
        }));
    }

    #[test]
    fn bow_out_sends_255_and_goes_init() {
        let c = cfg(&[(1, 0), (2, 100)]);
        let mut i = master(&c);
        i.force_state(Duration::ZERO, State::Backup);
        i.handle_timeout(Duration::from_secs(4));
        assert_eq!(
            i.lsmask(),
            0b01,
            "vhid 1 (skew 0) after 3 s, vhid 2 not yet"
        );
        i.handle_timeout(Duration::from_micros(4_171_875));
        assert_eq!(i.lsmask(), 0b11);
        drain(&mut i);
        i.set_up(5 * S, false);
        let (tx, ev) = drain(&mut i);
        let ads: Vec<Repr> = tx
            .iter()
            .filter_map(|t| match t {
                Transmit::Advert { repr, .. } => Some(*repr),
                _ => None,
            })
            .collect();
        assert_eq!(ads.len(), 2);
        assert!(ads.iter().all(|r| r.advbase == 255 && r.advskew == 255));
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(
                    e,
                    Event::StateChanged {
                        to: State::Init,
                        ..
                    }
                ))
                .count(),
            2
        );
        assert_eq!(i.poll_timeout(), None);
        assert_eq!(i.lsmask(), 0);
        assert_eq!(i.link_state(), LinkState::Invalid);
        // Down twice: no second bow-out.
        i.set_up(6 * S, false);
        assert_eq!(drain(&mut i).0.len(), 0);
    }

    #[test]
    fn send_errors_demote_by_one_and_recover() {
        let c = cfg(&[(1, 0), (2, 0)]);
        let mut i = master(&c);
        for _ in 0..5 {
            i.handle_send_result(S, false);
        }
        assert_eq!(i.demote(), 0);
        i.handle_send_result(S, false);
        assert_eq!(i.demote(), 1, "3 × 2 vhosts");
        let (tx, ev) = drain(&mut i);
        assert_eq!(ev, [Event::DemoteRequest { delta: 1 }]);
        assert_eq!(
            tx.iter()
                .filter(|t| matches!(t, Transmit::Advert { repr, .. } if repr.demote == 1))
                .count(),
            2,
            "masters advertise at once"
        );
        for _ in 0..5 {
            i.handle_send_result(S, true);
        }
        assert_eq!(i.demote(), 1);
        i.handle_send_result(S, true);
        assert_eq!(i.demote(), 0);
        assert_eq!(drain(&mut i).1, [Event::DemoteRequest { delta: -1 }]);
        // Group demotion wins over the private count.
        i.set_group_demote(S, 7);
        assert_eq!(i.demote(), 7);
        i.set_group_demote(S, 7);
        assert_eq!(drain(&mut i).0.len(), 2, "only a change advertises");
    }

    #[test]
    fn lladdr_quirk_changes_the_hmac_only_when_hand_set() {
        let c = cfg(&[(1, 0)]);
        let mut hand = c.clone();
        hand.lladdr = Some([2, 0, 0, 0, 0, 9]);
        let mut real = c.clone();
        real.parent_mac = [2, 0, 0, 0, 0, 9];
        real.lladdr = Some([2, 0, 0, 0, 0, 9]);
        let d = |c: &InterfaceConfig| {
            let i = Interface::new(c).unwrap();
            i.vhosts()[0].auth().digest(&[0; 8], wire::Context::NoV6Ll)
        };
        assert_ne!(d(&c), d(&hand));
        assert_eq!(d(&c), d(&real), "lladdr = parent's real MAC is not hashed");
        let mut same = c.clone();
        same.lladdr = Some([0, 0, 0x5e, 0, 1, 1]);
        assert_eq!(d(&c), d(&same));
    }
}
