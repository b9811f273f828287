//! CARP, sans-IO: OpenBSD carp(4) semantics (sys/netinet/ip_carp.c 1.370) as state machines
//! that never touch a socket or a clock.
//!
//! - [`Vhost`]: one virtual host's INIT/BACKUP/MASTER machine (`struct carp_vhost_entry`).
//! - [`Interface`]: a carp interface (`struct carp_softc`) with up to 32 vhosts (carpnodes)
//!   sorted by vhid, the receive-side validation of `carp_proto_input`, balancing ownership
//!   (`lsmask`/`lscount`) and the send-error demotion.
//! - [`Groups`]: interface-group demotion counters (`ifg_carp_demoted`).
//! - [`balance`]: the pure IP-balancing (`carp_lsdrop`) and historical ARP-balancing decisions.
//!
//! Time is a parameter: every `handle_*` takes `now`, a [`Duration`] since an epoch of the
//! caller's choosing (monotonic), and `poll_timeout()` says when to call `handle_timeout` next.
//! The I/O shell reads bytes and time, calls `handle_*`, drains `poll_transmit()` and
//! `poll_event()`, does the I/O and sleeps until `poll_timeout()`.
//!
//! Nothing here panics on input from the network: advertisements are length-checked once by
//! [`crate::wire::carp::Packet::new_checked`], and every rejected advertisement has a named
//! [`Reject`] counter (OpenBSD's carpstats names).
//!
//! # Where carpio differs from OpenBSD, on purpose
//! - Becoming MASTER drops the pending master-down timers (OpenBSD leaves them armed and
//!   ignores them in MASTER): same behaviour, honest `poll_timeout`.
//! - Any change of the advertised demotion makes masters advertise at once (OpenBSD does so
//!   when a group goes 0 → 1 or a demotion is set): peers also learn of an un-demotion
//!   without waiting an interval.
//! - An ad carrying our own cookie is counted as `loop`, not `badauth`.
//! - The unsolicited NA is queued at takeover, not when the carp link state next goes up.
//! - The ARP-balancing hash key reads SHA-1 words little-endian (OpenBSD: host order).
//!
//! [`Duration`]: std::time::Duration

pub mod balance;
pub mod from_config;
mod groups;
mod interface;
pub mod shell;
mod vhost;

pub use balance::{Inbound, Ownership};
pub use groups::{Change, DemoteError, Groups};
pub use interface::{
    Balancing, ConfigError, Event, Interface, InterfaceConfig, LinkState, NodeConfig, Received,
    Transmit, precheck, virtual_mac,
};
pub use vhost::{State, Vhost};

crate::named_counters! {
    /// Why an advertisement was rejected (OpenBSD `struct carpstats` names; `loop` is counted
    /// under `badauth` by OpenBSD on simplex parents, carpio names it on its own).
    pub enum Reject {
        /// IPv4 multicast ad not on the carp interface, unicast ad not on a carp parent, or an
        /// IPv6 ad not on the carp interface.
        BadIf = "badif",
        /// TTL / hop limit other than 255.
        BadTtl = "badttl",
        /// Shorter than the 36-byte CARP header.
        BadLen = "badlen",
        /// One's-complement checksum over the CARP header does not verify.
        BadSum = "badsum",
        /// No running vhost with this vhid (and matching peer type) here.
        BadVhid = "badvhid",
        /// Version other than 2.
        BadVer = "badver",
        /// HMAC matches neither the ORIG nor the NOV6LL context.
        BadAuth = "badauth",
        /// The counter equals our own replay cookie: our own ad looped back.
        Loop = "loop",
    }
}

crate::named_counters! {
    /// Non-reject carp statistics (the rest of `struct carpstats`).
    pub enum Stat {
        /// IPv4 advertisements received (before validation).
        IPackets = "ipackets",
        /// IPv6 advertisements received (before validation).
        IPackets6 = "ipackets6",
        /// IPv4 advertisements sent.
        OPackets = "opackets",
        /// IPv6 advertisements sent.
        OPackets6 = "opackets6",
        /// BACKUP → MASTER transitions (`carps_preempt`).
        Preempt = "preempt",
        /// Send failures reported by the shell.
        SendErrors = "send_errors",
    }
}
