//! Backend schedulers: what the data plane asks on a flow-table miss (and relays on a new
//! session) to choose a backend of a table.
//!
//! Two families:
//! - [`maglev`]: weighted Maglev consistent hashing over the flow hash, the default for
//!   carpio's packet-level redirects (minimal disruption when the backend set changes, and the
//!   same choice on every node of an active/active pair).
//! - [`relayd`]: relayd's modes exactly as relay.c `relay_from_table()` (and pf's
//!   `least-states`) define them: `roundrobin`, `random`, `source-hash [key]`, `least-states`,
//!   `loadbalance [key]`, `hash [key]`, with relayd's skipping of down hosts.
//!
//! A [`Scheduler`] is plain immutable data the control plane builds and puts in the data
//! plane's snapshot; each worker keeps one [`PickState`] per scheduler (round-robin index,
//! least-states counter and a cheap PRNG), so picking takes no lock and allocates nothing.
//!
//! `sticky-address` (pf's `PF_POOL_STICKYADDR`, relayd's redirect option): pf remembers a
//! source node per client address so later connections reuse the first choice while it lives.
//! A per-core, per-node source-node table would disagree across cores and across active/active
//! nodes, so carpio makes stickiness stateless instead: with `sticky` set, the choice is
//! SipHash-2-4 of the client address alone (keyed like `source-hash`), so one client maps to
//! one backend on every core and node for as long as that backend is up; when it goes down the
//! client moves (as pf's source node would be dropped with the host), and when it comes back
//! the client returns to it (pf would keep the replacement until the source node expired).
//! Per mode: `roundrobin`, `random` and `least-states` become `source-hash` selection; Maglev
//! looks the client-address hash up instead of the flow hash (so the choice still has Maglev's
//! minimal disruption); `source-hash` and `loadbalance` are already per client and ignore the
//! flag; `hash` (not client dependent at all) also ignores it.
//!
//! Nothing here panics: configuration errors are named [`Error`]s and picks return `None`
//! when no backend is up, counted by the caller as [`Counter::DropNoBackend`].

pub mod key;
pub mod maglev;
pub mod relayd;

pub use key::{Key, KeyError};
pub use maglev::{Maglev, MaglevError, Member};

use std::net::IpAddr;

crate::named_counters! {
    /// Outcomes of a pick that the data plane counts.
    pub enum Counter {
        /// The table had no up backend.
        DropNoBackend = "drop_no_backend",
    }
}

/// A table's scheduling mode (relayd.conf `mode`, plus carpio's `maglev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    RoundRobin,
    Random,
    SourceHash,
    LeastStates,
    LoadBalance,
    Hash,
    Maglev,
}

/// Plain configuration of a table's scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub mode: Mode,
    /// SipHash key of the hash modes and of `sticky`; see [`Key::derived`] for the default.
    pub key: Key,
    /// `sticky-address`; see the module doc for how it combines with each mode.
    pub sticky: bool,
    /// Maglev table size (prime); ignored by the other modes.
    pub maglev_size: u32,
}

impl SchedulerConfig {
    /// relayd's default mode (`roundrobin`) with a key derived from `context`.
    pub fn new(mode: Mode, context: &str) -> SchedulerConfig {
        SchedulerConfig {
            mode,
            key: Key::derived(context),
            sticky: false,
            maglev_size: maglev::DEFAULT_TABLE_SIZE,
        }
    }
}

/// The scheduler configuration of a table's `mode` in carpio's configuration (relayd's modes
/// plus `maglev`). A `0x...` or string key is used as relayd uses it: the four words of parse.y's
/// `hashkey` as SIPHASH_KEY memory on a little-endian host; without a key, one derived from
/// `context` (the same on every node, see [`Key::derived`]).
pub fn scheduler_config(mode: crate::config::Mode, context: &str) -> SchedulerConfig {
    use crate::config::{HashKey, Mode as C};
    let (m, key) = match mode {
        C::RoundRobin => (Mode::RoundRobin, None),
        C::Random => (Mode::Random, None),
        C::LeastStates => (Mode::LeastStates, None),
        C::SourceHash(k) => (Mode::SourceHash, Some(k)),
        C::Loadbalance(k) => (Mode::LoadBalance, Some(k)),
        C::Hash(k) => (Mode::Hash, Some(k)),
        C::Maglev => (Mode::Maglev, None),
    };
    let mut sc = SchedulerConfig::new(m, context);
    if let Some(HashKey::Key(words)) = key {
        let mut b = [0u8; 16];
        for (dst, w) in b.chunks_exact_mut(4).zip(words.iter()) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
        sc.key = Key(b);
    }
    sc
}

/// A host of a table as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Stable name shared by all nodes (Maglev permutation and order).
    pub name: String,
    /// Maglev weight (relayd modes ignore it).
    pub weight: u32,
    pub up: bool,
}

/// A refused scheduler configuration or update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Maglev(MaglevError),
    /// `set_up` named a host index the table does not have.
    NoSuchHost,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Maglev(e) => e.fmt(f),
            Error::NoSuchHost => f.write_str("no such host in table"),
        }
    }
}

impl std::error::Error for Error {}

impl From<MaglevError> for Error {
    fn from(e: MaglevError) -> Self {
        Error::Maglev(e)
    }
}

/// What a pick may look at, all from the first packet of a flow (or a relay session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickInput<'a> {
    pub client: IpAddr,
    pub client_port: u16,
    /// The VIP / relay listen address and port (host byte order; hashed in network order).
    pub listen: IpAddr,
    pub listen_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// The data plane's flow hash (Maglev's lookup key).
    pub flow_hash: u64,
    /// Per-host state counts for `least-states` (index = host); missing entries count as 0.
    pub states: &'a [u32],
}

/// Per-core, per-scheduler mutable state: relayd's `rlt_index`, pf's pool counter and a PRNG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickState {
    /// Round-robin index (relayd `rlt_index`).
    pub rr_index: usize,
    /// least-states pool counter (pf `rpool->counter`).
    pub ls_counter: usize,
    rng: u64,
}

impl PickState {
    /// A fresh state; `seed` feeds the PRNG of `mode random` (e.g. core id mixed with time by
    /// the caller: protocol logic never reads a clock itself).
    pub fn new(seed: u64) -> PickState {
        PickState {
            rr_index: 0,
            ls_counter: 0,
            rng: seed,
        }
    }

    /// SplitMix64 (Steele, Lea, Flood, OOPSLA 2014): one add and three multiply-xorshifts.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` without bias (Lemire, "Fast Random Integer Generation in an
    /// Interval", 2019), like `arc4random_uniform`. Returns 0 for `n == 0`.
    #[inline]
    pub fn uniform(&mut self, n: usize) -> usize {
        let n = n as u64;
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }
}

/// A table's scheduler: configuration, host up flags and (for Maglev) the lookup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduler {
    config: SchedulerConfig,
    hosts: Vec<Host>,
    up: Box<[bool]>,
    maglev: Option<Maglev>,
}

impl Scheduler {
    /// Builds the scheduler (and the Maglev table when the mode is Maglev).
    pub fn new(config: SchedulerConfig, hosts: Vec<Host>) -> Result<Scheduler, Error> {
        let up = hosts.iter().map(|h| h.up).collect();
        let maglev = match config.mode {
            Mode::Maglev => Some(Maglev::build(config.maglev_size, &members(&hosts))?),
            _ => {
                // Validate the size anyway so a later switch to Maglev cannot fail on it.
                Maglev::empty(config.maglev_size)?;
                None
            }
        };
        Ok(Scheduler {
            config,
            hosts,
            up,
            maglev,
        })
    }

    /// Marks a host up or down (a health transition, or relayctl host enable/disable).
    /// Returns the Maglev slots that changed (empty for the relayd modes).
    pub fn set_up(&mut self, host: usize, up: bool) -> Result<Vec<u32>, Error> {
        let h = self.hosts.get_mut(host).ok_or(Error::NoSuchHost)?;
        h.up = up;
        if let Some(slot) = self.up.get_mut(host) {
            *slot = up;
        }
        match self.maglev.as_mut() {
            Some(m) => Ok(m.rebuild(&members(&self.hosts))?),
            None => Ok(Vec::new()),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn maglev(&self) -> Option<&Maglev> {
        self.maglev.as_ref()
    }

    /// Chooses a host index for a new flow, or `None` if no host is up. No allocation.
    #[inline]
    pub fn pick(&self, input: &PickInput<'_>, state: &mut PickState) -> Option<usize> {
        let up = &self.up[..];
        let key = &self.config.key;
        let sticky = self.config.sticky;
        match self.config.mode {
            Mode::Maglev => {
                let hash = if sticky {
                    relayd::source_hash_value(key, input.client)
                } else {
                    input.flow_hash
                };
                self.maglev.as_ref()?.lookup(hash)
            }
            Mode::RoundRobin | Mode::Random | Mode::LeastStates if sticky => {
                relayd::from_hash(up, relayd::source_hash_value(key, input.client))
            }
            Mode::RoundRobin => relayd::roundrobin(up, &mut state.rr_index),
            Mode::Random => relayd::random(up, |n| state.uniform(n)),
            Mode::LeastStates => relayd::least_states(up, input.states, &mut state.ls_counter),
            Mode::SourceHash => relayd::from_hash(up, relayd::source_hash_value(key, input.client)),
            Mode::LoadBalance => relayd::from_hash(
                up,
                relayd::loadbalance_value(key, input.client, input.listen, input.listen_port),
            ),
            Mode::Hash => {
                relayd::from_hash(up, relayd::hash_value(key, input.listen, input.listen_port))
            }
        }
    }
}

fn members(hosts: &[Host]) -> Vec<Member<'_>> {
    hosts
        .iter()
        .map(|h| Member {
            name: &h.name,
            weight: h.weight,
            up: h.up,
        })
        .collect()
}
