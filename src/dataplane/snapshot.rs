//! The immutable view of the configuration that workers read: virtual services, backend hosts,
//! schedulers (Maglev tables included), host up/down states and carp ownership. The control
//! plane builds a new [`Snapshot`] on every change (reload, health transition, carp state
//! change) and swaps it in atomically ([`SnapshotCell`], arc-swap); a worker loads the current
//! one once per batch, so a change never stalls it and never tears a batch (Katran's split:
//! the data plane looks things up, the control plane computes).
//!
//! # Stable indices
//!
//! Flow entries hold a VIP index and a backend host index instead of addresses (that is what
//! keeps a flow at 64 bytes, see `flow.rs`). Those indices must mean the same thing across
//! snapshots, or a reload would silently re-point live flows. [`Snapshot::build`] therefore
//! takes the previous snapshot and keeps every VIP address and every host address at the
//! index it had; new ones take free indices, removed ones leave a hole (`None`) that a later
//! build may reuse once flows referencing it have had time to expire (the hole is kept for
//! [`HOLE_GENERATIONS`] builds).
//!
//! # Service lookup
//!
//! A packet's destination address is looked up in a hash map with a cheap multiplicative
//! hasher (`FastHash`; SipHash would dominate the per-packet cost), then its protocol and port
//! are matched against the few services of that address.

use crate::balance::{self, Scheduler};
use crate::carp::Ownership;
use crate::config::{Address, Config, ForwardMode, Proto};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

/// How many builds a freed index stays reserved before it may be reused.
pub const HOLE_GENERATIONS: u64 = 4;

/// The maximum number of VIP addresses or hosts a snapshot indexes (indices are `u16`).
pub const MAX_INDEX: usize = u16::MAX as usize;

/// A multiplicative hasher for addresses: the per-packet map lookups hash 4 or 16 bytes, for
/// which SipHash's setup cost dominates. Not DoS-resistant, which is fine: the keys are the
/// configuration's own addresses, not attacker-chosen.
#[derive(Default, Clone, Copy)]
pub struct FastHash(u64);

impl Hasher for FastHash {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Map type with [`FastHash`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHash>>;

/// How a service reaches its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Destination NAT in, source NAT out (relayd `forward to`, pf rdr-to).
    Nat,
    /// Direct server return by MAC rewrite (relayd `route to`): backends hold the VIP.
    Dsr,
    /// IP-in-IP to the backend.
    Ipip,
    /// Generic UDP Encapsulation to the backend's `port`.
    Gue { port: u16 },
}

impl Forward {
    /// Only the client → VIP direction passes through the balancer.
    pub fn one_sided(self) -> bool {
        !matches!(self, Forward::Nat)
    }
}

/// A backend host, shared by every table that lists its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// relayd host id of its first appearance (what `carpioctl host disable ID` names).
    pub id: u32,
    pub name: String,
    pub addr: IpAddr,
    /// Link-layer address of the host (or of the next hop toward it); `None` until resolved.
    pub mac: Option<[u8; 6]>,
}

/// A table as a service uses it: its hosts (indices into [`Snapshot::hosts`]) and its
/// scheduler, whose host order is the same.
#[derive(Debug)]
pub struct Table {
    pub name: String,
    pub hosts: Vec<u16>,
    pub scheduler: Scheduler,
    pub disabled: bool,
    /// Hosts up, counted once at build: the scheduler's view cannot change inside a snapshot,
    /// and counting per packet cost O(hosts) on every established-flow packet.
    up: usize,
    /// By stable host index: is that host a member of this table and up? Makes the
    /// established-flow liveness check O(1) instead of a linear search of `hosts`.
    member_up: Vec<bool>,
    /// By stable host index: a member not known to be down or disabled, i.e. up or not yet
    /// checked (`unknown`). An unknown host takes no new flow (relayd's sync_table takes only
    /// HOST_UP hosts), but a flow already on it (a state a peer synced, a flow from before a
    /// reload that re-checks the host) stays: nothing says its backend is gone.
    member_live: Vec<bool>,
}

impl Table {
    /// Number of hosts currently up.
    #[inline]
    pub fn up_count(&self) -> usize {
        self.up
    }

    /// Is the host at stable index `i` a member of this table and up?
    #[inline]
    pub fn member_up(&self, i: u16) -> bool {
        self.member_up.get(usize::from(i)).copied().unwrap_or(false)
    }

    /// Is the host at stable index `i` a member of this table and not known down or disabled?
    #[inline]
    pub fn member_live(&self, i: u16) -> bool {
        self.member_live
            .get(usize::from(i))
            .copied()
            .unwrap_or(false)
    }
}

/// A virtual service: one `listen on` line of a redirect.
#[derive(Debug)]
pub struct Service {
    /// Redirect name (relayctl shows it) and its position among redirects (its id - 1).
    pub name: String,
    pub redirect_id: u32,
    pub vip: IpAddr,
    pub vip_index: u16,
    /// IP protocol (6 or 17).
    pub proto: u8,
    pub port_lo: u16,
    pub port_hi: u16,
    /// `forward to <t> port P`: the backend port; `None` keeps the destination port.
    pub backend_port: Option<u16>,
    pub forward: Forward,
    /// relayd `session timeout`, seconds.
    pub session_timeout: u32,
    /// Index into [`Snapshot::tables`] of the main table, and of the backup table if any.
    pub table: usize,
    pub backup: Option<usize>,
    pub disabled: bool,
}

impl Service {
    #[inline]
    fn matches(&self, proto: u8, port: u16) -> bool {
        self.proto == proto && port >= self.port_lo && port <= self.port_hi
    }

    /// The table in use: the main one while it has an up host, else the backup (relayd
    /// marks the redirect "active (using backup table)"), else `None` (redirect down).
    pub fn active_table<'a>(&self, tables: &'a [Table]) -> Option<(usize, &'a Table)> {
        let main = tables.get(self.table)?;
        if !main.disabled && main.up_count() > 0 {
            return Some((self.table, main));
        }
        let b = self.backup?;
        let backup = tables.get(b)?;
        (!backup.disabled && backup.up_count() > 0).then_some((b, backup))
    }
}

/// Per-VIP-address entry of the lookup map.
#[derive(Debug, Clone)]
pub struct VipEntry {
    pub index: u16,
    /// Indices into [`Snapshot::services`].
    pub services: Vec<u16>,
}

/// Link-layer and tunnel parameters of the interface the workers serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Our interface's MAC (source of everything we send).
    pub mac: [u8; 6],
    /// Where traffic to addresses we have no neighbour for goes (the default router).
    pub gateway_mac: Option<[u8; 6]>,
    /// Outer source addresses for IPIP/GUE.
    pub tunnel_src_v4: Option<IpAddr>,
    pub tunnel_src_v6: Option<IpAddr>,
    /// MTU of the link toward backends (outer packets).
    pub mtu: u16,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            mac: [0x02, 0, 0, 0, 0, 0xfe],
            gateway_mac: None,
            tunnel_src_v4: None,
            tunnel_src_v6: None,
            mtu: 1500,
        }
    }
}

/// Up/down and admin state of hosts and tables, kept by the control plane between builds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostStates {
    /// Host ids (relayd's) that are down; hosts not listed are up (or unchecked).
    pub down: Vec<u32>,
    /// Host ids whose first health check has not decided yet (relayd's HOST_UNKNOWN): not
    /// eligible, as relayd's pfe puts only HOST_UP hosts into a redirect's table
    /// (pfe_filter.c `sync_table`).
    pub unknown: Vec<u32>,
    /// Host ids disabled with `carpioctl host disable`.
    pub disabled_hosts: Vec<u32>,
    /// Table names (`name:port`) disabled with `carpioctl table disable`.
    pub disabled_tables: Vec<String>,
    /// Redirect names disabled with `carpioctl redirect disable`.
    pub disabled_redirects: Vec<String>,
    /// Resolved link-layer addresses by host address.
    pub macs: Vec<(IpAddr, [u8; 6])>,
}

/// Why a snapshot could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A host is named, not an address (names are resolved before building).
    UnresolvedHost(String),
    UnresolvedVip(String),
    TooManyIndices,
    Scheduler(String, String),
    UnknownTable(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::UnresolvedHost(h) => write!(
                f,
                "host {h} is not an address (names must be resolved first)"
            ),
            BuildError::UnresolvedVip(h) => write!(f, "listen address {h} is not an address"),
            BuildError::TooManyIndices => {
                write!(f, "more than {MAX_INDEX} virtual addresses or hosts")
            }
            BuildError::Scheduler(t, e) => write!(f, "table {t}: {e}"),
            BuildError::UnknownTable(t) => write!(f, "unknown table {t}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Everything a worker needs to decide for a packet.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub services: Vec<Service>,
    pub tables: Vec<Table>,
    /// Hosts by stable index; `None` is a hole left by a removed host.
    pub hosts: Vec<Option<Host>>,
    /// VIP addresses by stable index.
    pub vips: Vec<Option<IpAddr>>,
    /// Generation at which each hole appeared (same length as `hosts` / `vips`).
    host_holes: Vec<u64>,
    vip_holes: Vec<u64>,
    pub by_vip: FastMap<IpAddr, VipEntry>,
    pub by_host: FastMap<IpAddr, u16>,
    /// True when any service uses NAT (the return path needs the host map).
    pub any_nat: bool,
    pub link: Link,
    /// carp IP-balancing ownership; `None` accepts everything (no carp, or balancing none).
    pub carp: Option<Ownership>,
}

/// The cell the control plane swaps and the workers read.
pub type SnapshotCell = arc_swap::ArcSwap<Snapshot>;

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// Finds the index `addr` had in `prev`, or a free one.
fn assign<T: PartialEq + Clone>(
    slots: &mut Vec<Option<T>>,
    holes: &mut Vec<u64>,
    generation: u64,
    want: &T,
    taken: &mut Vec<bool>,
) -> Result<u16, BuildError> {
    if let Some(i) = slots.iter().position(|s| s.as_ref() == Some(want)) {
        taken[i] = true;
        return Ok(i as u16);
    }
    // Reuse a hole old enough, else append.
    let reuse = (0..slots.len()).find(|&i| {
        slots[i].is_none() && !taken[i] && generation.saturating_sub(holes[i]) >= HOLE_GENERATIONS
    });
    let i = match reuse {
        Some(i) => i,
        None => {
            if slots.len() >= MAX_INDEX {
                return Err(BuildError::TooManyIndices);
            }
            slots.push(None);
            holes.push(0);
            taken.push(false);
            slots.len() - 1
        }
    };
    slots[i] = Some(want.clone());
    taken[i] = true;
    Ok(i as u16)
}

/// Clears the slots not used by this build, remembering when they became holes.
fn release<T>(slots: &mut [Option<T>], holes: &mut [u64], taken: &[bool], generation: u64) {
    for i in 0..slots.len() {
        if !taken[i] && slots[i].is_some() {
            slots[i] = None;
            holes[i] = generation;
        }
    }
}

fn ip_of(a: &Address) -> Option<IpAddr> {
    match a {
        Address::Ip(ip) => Some(*ip),
        Address::Name(_) => None,
    }
}

impl Snapshot {
    /// An empty snapshot (no services): every packet is "not ours".
    pub fn empty() -> Self {
        Self {
            generation: 0,
            services: Vec::new(),
            tables: Vec::new(),
            hosts: Vec::new(),
            vips: Vec::new(),
            host_holes: Vec::new(),
            vip_holes: Vec::new(),
            by_vip: FastMap::default(),
            by_host: FastMap::default(),
            any_nat: false,
            link: Link::default(),
            carp: None,
        }
    }

    /// Builds the snapshot of `cfg`'s redirects with host states `st`, keeping the indices of
    /// `prev` (see the module doc). `maglev_size` comes from the configuration.
    pub fn build(
        cfg: &Config,
        st: &HostStates,
        link: Link,
        prev: Option<&Snapshot>,
    ) -> Result<Snapshot, BuildError> {
        let generation = prev.map_or(1, |p| p.generation + 1);
        let (mut hosts, mut host_holes) = prev.map_or((Vec::new(), Vec::new()), |p| {
            (p.hosts.clone(), p.host_holes.clone())
        });
        let (mut vips, mut vip_holes) = prev.map_or((Vec::new(), Vec::new()), |p| {
            (p.vips.clone(), p.vip_holes.clone())
        });
        // Hosts are matched by address: identity for flows is where packets go.
        let mut host_addrs: Vec<Option<IpAddr>> = hosts
            .iter()
            .map(|h| h.as_ref().map(|h: &Host| h.addr))
            .collect();
        let mut host_taken = vec![false; hosts.len()];
        let mut vip_taken = vec![false; vips.len()];

        let mut tables: Vec<Table> = Vec::new();
        let mut table_index: HashMap<String, usize> = HashMap::new();
        let mut services = Vec::new();
        let mut any_nat = false;
        let macs: HashMap<IpAddr, [u8; 6]> = st.macs.iter().copied().collect();

        for (ri, r) in cfg.redirects.iter().enumerate() {
            let forward = match &r.forward {
                ForwardMode::Nat => Forward::Nat,
                ForwardMode::Dsr { .. } => Forward::Dsr,
                ForwardMode::Ipip => Forward::Ipip,
                ForwardMode::Gue { port } => Forward::Gue { port: *port },
            };
            any_nat |= forward == Forward::Nat;
            let mut tidx = Vec::new();
            for tname in &r.tables {
                if let Some(&i) = table_index.get(tname) {
                    tidx.push(i);
                    continue;
                }
                let tc = cfg
                    .table(tname)
                    .ok_or_else(|| BuildError::UnknownTable(tname.clone()))?;
                let mut members = Vec::new();
                let mut sched_hosts = Vec::new();
                let mut lives = Vec::new();
                for h in &tc.hosts {
                    let addr = ip_of(&h.addr)
                        .ok_or_else(|| BuildError::UnresolvedHost(format!("{:?}", h.addr)))?;
                    let idx = assign(
                        &mut host_addrs,
                        &mut host_holes,
                        generation,
                        &addr,
                        &mut host_taken,
                    )?;
                    let i = usize::from(idx);
                    if hosts.len() <= i {
                        hosts.resize(i + 1, None);
                    }
                    let mac = h.lladdr.or_else(|| macs.get(&addr).copied());
                    match &mut hosts[i] {
                        // Keep a MAC resolved earlier unless a new one is known.
                        Some(existing) if existing.addr == addr => {
                            existing.mac = mac.or(existing.mac)
                        }
                        slot => {
                            *slot = Some(Host {
                                id: h.id,
                                name: addr.to_string(),
                                addr,
                                mac,
                            })
                        }
                    }
                    let live = !st.down.contains(&h.id) && !st.disabled_hosts.contains(&h.id);
                    let up = live && !st.unknown.contains(&h.id);
                    members.push(idx);
                    lives.push(live);
                    sched_hosts.push(balance::Host {
                        name: addr.to_string(),
                        weight: h.weight.max(1),
                        up,
                    });
                }
                let mut sc = balance::scheduler_config(tc.mode, &format!("{}/{}", r.name, tc.name));
                sc.sticky = r.sticky;
                sc.maglev_size = cfg.global.maglev_table_size;
                let scheduler = Scheduler::new(sc, sched_hosts)
                    .map_err(|e| BuildError::Scheduler(tc.name.clone(), format!("{e:?}")))?;
                let disabled = tc.disabled || st.disabled_tables.contains(&tc.name);
                let up = scheduler.hosts().iter().filter(|h| h.up).count();
                let most = members.iter().max().map_or(0, |&m| usize::from(m) + 1);
                let mut member_up = vec![false; most];
                let mut member_live = vec![false; most];
                for ((&m, h), &live) in members.iter().zip(scheduler.hosts()).zip(&lives) {
                    if let Some(slot) = member_up.get_mut(usize::from(m)) {
                        *slot |= h.up;
                    }
                    if let Some(slot) = member_live.get_mut(usize::from(m)) {
                        *slot |= live;
                    }
                }
                table_index.insert(tname.clone(), tables.len());
                tidx.push(tables.len());
                tables.push(Table {
                    name: tc.name.clone(),
                    hosts: members,
                    scheduler,
                    disabled,
                    up,
                    member_up,
                    member_live,
                });
            }
            let Some(&main) = tidx.first() else { continue };
            let backup = tidx.get(1).copied();
            let backend_port = cfg.table(&r.tables[0]).and_then(|t| t.port);
            let disabled = r.disabled || st.disabled_redirects.contains(&r.name);
            for l in &r.listen {
                let vip = ip_of(&l.addr)
                    .ok_or_else(|| BuildError::UnresolvedVip(format!("{:?}", l.addr)))?;
                let vip_index =
                    assign(&mut vips, &mut vip_holes, generation, &vip, &mut vip_taken)?;
                services.push(Service {
                    name: r.name.clone(),
                    redirect_id: ri as u32 + 1,
                    vip,
                    vip_index,
                    proto: proto_number(l.proto),
                    port_lo: l.port.lo,
                    port_hi: l.port.hi,
                    backend_port,
                    forward,
                    session_timeout: r.session_timeout.as_secs().min(u64::from(u32::MAX)) as u32,
                    table: main,
                    backup,
                    disabled,
                });
            }
        }
        release(&mut host_addrs, &mut host_holes, &host_taken, generation);
        for (i, h) in hosts.iter_mut().enumerate() {
            if host_addrs.get(i).is_none_or(|a| a.is_none()) {
                *h = None;
            }
        }
        release(&mut vips, &mut vip_holes, &vip_taken, generation);

        let mut by_vip: FastMap<IpAddr, VipEntry> = FastMap::default();
        for (si, s) in services.iter().enumerate() {
            by_vip
                .entry(s.vip)
                .or_insert_with(|| VipEntry {
                    index: s.vip_index,
                    services: Vec::new(),
                })
                .services
                .push(si as u16);
        }
        let mut by_host: FastMap<IpAddr, u16> = FastMap::default();
        for (i, h) in hosts.iter().enumerate() {
            if let Some(h) = h {
                by_host.insert(h.addr, i as u16);
            }
        }
        Ok(Snapshot {
            generation,
            services,
            tables,
            hosts,
            vips,
            host_holes,
            vip_holes,
            by_vip,
            by_host,
            any_nat,
            link,
            carp: prev.and_then(|p| p.carp),
        })
    }

    /// The service for a packet to `dst` with `proto` and destination `port`.
    #[inline]
    pub fn service_for(&self, dst: IpAddr, proto: u8, port: u16) -> Option<(u16, &Service)> {
        self.service_in(self.by_vip.get(&dst)?, proto, port)
    }

    /// The service of VIP entry `e` for `proto` and destination `port` (for a caller that
    /// already looked the address up: one map lookup per packet, not two).
    #[inline]
    pub fn service_in(&self, e: &VipEntry, proto: u8, port: u16) -> Option<(u16, &Service)> {
        for &si in &e.services {
            if let Some(s) = self.services.get(usize::from(si))
                && s.matches(proto, port)
            {
                return Some((si, s));
            }
        }
        None
    }

    /// The service a flow belongs to now, found by its VIP (a stable index), protocol and VIP
    /// port. `Flow::service()` is the index in the snapshot that created the flow, and a
    /// reload that adds a redirect before others moves the services' positions.
    #[inline]
    pub fn flow_service(&self, f: &crate::dataplane::flow::Flow) -> Option<(u16, &Service)> {
        let k = f.key();
        let vip = self.vips.get(usize::from(k.vip)).copied().flatten()?;
        self.service_for(vip, k.proto, k.vip_port)
    }

    /// Is `dst` a virtual address (of any service)?
    #[inline]
    pub fn is_vip(&self, dst: IpAddr) -> bool {
        self.by_vip.contains_key(&dst)
    }

    /// The host at a stable index.
    #[inline]
    pub fn host(&self, i: u16) -> Option<&Host> {
        self.hosts.get(usize::from(i)).and_then(Option::as_ref)
    }

    /// Is host index `i` up in table `t` (by the table's scheduler view)? O(1).
    #[inline]
    pub fn host_up_in(&self, t: usize, i: u16) -> bool {
        self.tables.get(t).is_some_and(|tab| tab.member_up(i))
    }

    /// Whether a flow of `svc` on host index `i` stays there: `i` is a member, up or not yet
    /// checked, of the service's active table, or, while no table is active (every host down
    /// or unknown, as right after a start), of its main or backup table when not disabled.
    pub fn flow_backend_live(&self, svc: &Service, i: u16) -> bool {
        let live = |t: usize| {
            self.tables
                .get(t)
                .is_some_and(|tab| !tab.disabled && tab.member_live(i))
        };
        match svc.active_table(&self.tables) {
            Some((t, _)) => live(t),
            None => live(svc.table) || svc.backup.is_some_and(live),
        }
    }

    /// A copy of this snapshot's index state with a new carp ownership (the carp thread
    /// publishes ownership changes this way without a full rebuild).
    pub fn with_carp(
        self: &Arc<Self>,
        cfg: &Config,
        st: &HostStates,
        carp: Option<Ownership>,
    ) -> Result<Snapshot, BuildError> {
        let mut s = Snapshot::build(cfg, st, self.link.clone(), Some(self))?;
        s.carp = carp;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        crate::config::parse_str("t.conf", text, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    const TWO: &str = "table <web> { 198.18.1.1, 198.18.1.2 }\n\
        redirect www { listen on 198.18.0.10 tcp port 80\n forward to <web> check tcp }\n";

    #[test]
    fn services_and_indices() {
        let c = cfg(TWO);
        let s = Snapshot::build(&c, &HostStates::default(), Link::default(), None).unwrap();
        let (_, svc) = s
            .service_for("198.18.0.10".parse().unwrap(), 6, 80)
            .unwrap();
        assert_eq!(svc.name, "www");
        assert!(
            s.service_for("198.18.0.10".parse().unwrap(), 17, 80)
                .is_none()
        );
        assert!(
            s.service_for("198.18.0.10".parse().unwrap(), 6, 81)
                .is_none()
        );
        assert_eq!(s.by_host.len(), 2);
        assert!(s.any_nat);
    }

    #[test]
    fn indices_stay_stable_across_rebuilds() {
        let c1 = cfg(TWO);
        let s1 = Snapshot::build(&c1, &HostStates::default(), Link::default(), None).unwrap();
        let i2 = s1.by_host[&"198.18.1.2".parse::<IpAddr>().unwrap()];
        // Host .1 removed, .3 added: .2 keeps its index, .3 does not take .1's fresh hole.
        let c2 = cfg("table <web> { 198.18.1.2, 198.18.1.3 }\n\
            redirect www { listen on 198.18.0.10 tcp port 80\n forward to <web> check tcp }\n");
        let s2 = Snapshot::build(&c2, &HostStates::default(), Link::default(), Some(&s1)).unwrap();
        assert_eq!(s2.by_host[&"198.18.1.2".parse::<IpAddr>().unwrap()], i2);
        let i1 = s1.by_host[&"198.18.1.1".parse::<IpAddr>().unwrap()];
        assert!(s2.host(i1).is_none(), "a removed host leaves a hole");
        assert_ne!(s2.by_host[&"198.18.1.3".parse::<IpAddr>().unwrap()], i1);
        assert_eq!(s2.vips, s1.vips);
    }

    #[test]
    fn host_up_in_is_per_table_membership_and_state() {
        let c = cfg(
            "table <a> { 198.18.1.1, 198.18.1.2 }\ntable <b> { 198.18.1.3 }\n\
            redirect r { listen on 198.18.0.10 udp port 53\n forward to <a> check icmp\n forward to <b> check icmp }\n",
        );
        let id2 = c.table("a:53").unwrap().hosts[1].id;
        let st = HostStates {
            down: vec![id2],
            ..Default::default()
        };
        let s = Snapshot::build(&c, &st, Link::default(), None).unwrap();
        let ix = |a: &str| s.by_host[&a.parse::<IpAddr>().unwrap()];
        let (_, svc) = s
            .service_for("198.18.0.10".parse().unwrap(), 17, 53)
            .unwrap();
        let (a, b) = (svc.table, svc.backup.unwrap());
        assert!(s.host_up_in(a, ix("198.18.1.1")));
        assert!(!s.host_up_in(a, ix("198.18.1.2")), "down");
        assert!(!s.host_up_in(a, ix("198.18.1.3")), "not a member");
        assert!(s.host_up_in(b, ix("198.18.1.3")));
        assert!(!s.host_up_in(a, u16::MAX), "out of range");
        assert!(!s.host_up_in(99, 0), "no such table");
        assert_eq!(s.tables[a].up_count(), 1);
        assert_eq!(s.tables[b].up_count(), 1);
    }

    /// Unknown (never checked) hosts take no new flow but keep the flows they have; known down
    /// or disabled ones lose them. With every host unknown (a fresh start) no table is active,
    /// and a synced flow on an unknown host of the main or backup table still stays.
    #[test]
    fn unknown_hosts_keep_their_flows_but_take_no_new_ones() {
        let c = cfg("table <a> { 198.18.1.1, 198.18.1.2, 198.18.1.4 }
table <b> { 198.18.1.3 }
            redirect r { listen on 198.18.0.10 udp port 53
 forward to <a> check icmp
 forward to <b> check icmp }
");
        let id = |t: &str, n: usize| c.table(t).unwrap().hosts[n].id;
        let st = HostStates {
            unknown: vec![id("a:53", 1)],
            down: vec![id("a:53", 2)],
            ..Default::default()
        };
        let s = Snapshot::build(&c, &st, Link::default(), None).unwrap();
        let ix = |a: &str| s.by_host[&a.parse::<IpAddr>().unwrap()];
        let (_, svc) = s
            .service_for("198.18.0.10".parse().unwrap(), 17, 53)
            .unwrap();
        let a = svc.table;
        assert!(
            !s.host_up_in(a, ix("198.18.1.2")),
            "unknown takes no new flow"
        );
        assert_eq!(s.tables[a].up_count(), 1);
        assert!(s.flow_backend_live(svc, ix("198.18.1.1")));
        assert!(
            s.flow_backend_live(svc, ix("198.18.1.2")),
            "unknown keeps its flows"
        );
        assert!(
            !s.flow_backend_live(svc, ix("198.18.1.4")),
            "down loses them"
        );
        assert!(
            !s.flow_backend_live(svc, ix("198.18.1.3")),
            "backup while main is active"
        );
        // Everything unknown: no active table, flows on either table's hosts stay.
        let all = HostStates {
            unknown: vec![id("a:53", 0), id("a:53", 1), id("a:53", 2), id("b:53", 0)],
            ..Default::default()
        };
        let s = Snapshot::build(&c, &all, Link::default(), None).unwrap();
        let (_, svc) = s
            .service_for("198.18.0.10".parse().unwrap(), 17, 53)
            .unwrap();
        assert!(svc.active_table(&s.tables).is_none());
        assert!(s.flow_backend_live(svc, ix("198.18.1.2")));
        assert!(s.flow_backend_live(svc, ix("198.18.1.3")));
        assert!(!s.flow_backend_live(svc, u16::MAX));
    }

    #[test]
    fn down_hosts_and_backup_tables() {
        let c = cfg("table <a> { 198.18.1.1 }\ntable <b> { 198.18.1.2 }\n\
            redirect r { listen on 198.18.0.10 udp port 53\n forward to <a> check icmp\n forward to <b> check icmp }\n");
        let a_id = c.table("a:53").unwrap().hosts[0].id;
        let st = HostStates {
            down: vec![a_id],
            ..Default::default()
        };
        let s = Snapshot::build(&c, &st, Link::default(), None).unwrap();
        let (_, svc) = s
            .service_for("198.18.0.10".parse().unwrap(), 17, 53)
            .unwrap();
        let (ti, t) = svc.active_table(&s.tables).unwrap();
        assert_eq!(Some(ti), svc.backup);
        assert_eq!(t.name, "b:53");
        let st = HostStates {
            down: c.hosts().map(|h| h.id).collect(),
            ..Default::default()
        };
        let s = Snapshot::build(&c, &st, Link::default(), None).unwrap();
        let (_, svc) = s
            .service_for("198.18.0.10".parse().unwrap(), 17, 53)
            .unwrap();
        assert!(svc.active_table(&s.tables).is_none());
    }

    /// A reload that adds a redirect before the others moves the services' positions; a flow
    /// created before it still finds its own service (by VIP, protocol and port).
    #[test]
    fn flows_find_their_service_after_positions_move() {
        use crate::dataplane::flow::{FlowTable, FlowTableConfig, Key, NewFlow, Origin};
        let a = cfg("table <web> { 198.18.1.1 }\n\
            redirect dns { listen on 198.18.0.10 udp port 53\n forward to <web> check icmp }\n");
        let b = cfg("table <web> { 198.18.1.1 }\n\
            redirect ntp { listen on 198.18.0.20 udp port 123\n forward to <web> check icmp }\n\
            redirect dns { listen on 198.18.0.10 udp port 53\n forward to <web> check icmp }\n");
        let sa = Snapshot::build(&a, &HostStates::default(), Link::default(), None).unwrap();
        let (si, svc) = sa
            .service_for("198.18.0.10".parse().unwrap(), 17, 53)
            .unwrap();
        let q = std::sync::Arc::new(crossbeam::queue::ArrayQueue::new(8));
        let mut t = FlowTable::new(
            &FlowTableConfig {
                capacity: 16,
                ..Default::default()
            },
            q,
        )
        .unwrap();
        let key = Key {
            proto: 17,
            client: crate::dataplane::hash::addr16("198.19.0.1".parse().unwrap()),
            client_port: 4000,
            vip: svc.vip_index,
            vip_port: 53,
        };
        let new = NewFlow {
            service: si,
            backend: 0,
            backend_port: 53,
            tcp_flags: 0,
            one_sided: false,
            session_timeout: None,
            origin: Origin::Local,
        };
        let h = t.insert(1, &key, &new).unwrap();
        let f = *t.get(h).unwrap();
        let sb = Snapshot::build(&b, &HostStates::default(), Link::default(), Some(&sa)).unwrap();
        // The stored index now names the other redirect...
        assert_eq!(sb.services[usize::from(f.service())].name, "ntp");
        // ...but the flow's service is found again.
        let (_, found) = sb.flow_service(&f).unwrap();
        assert_eq!(found.name, "dns");
        assert_eq!(sa.flow_service(&f).unwrap().1.name, "dns");
    }
}
