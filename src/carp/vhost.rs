//! One virtual host's state machine (`struct carp_vhost_entry` and `carp_setrun`,
//! `carp_master_down`, `carp_send_ad`, `carp_proto_input_c` in OpenBSD's ip_carp.c).
//!
//! A [`Vhost`] reads the interface-wide parameters it shares with its siblings through
//! [`Shared`] and writes what it wants done into [`Out`]; [`super::Interface`] owns both and is
//! the API the I/O shell uses.

use std::collections::VecDeque;
use std::time::Duration;

use crate::wire::carp::{Auth, Repr};
use crate::wire::classify::Af;

use super::interface::{Event, Transmit};
use super::{Stat, interface::StatCounters};

/// CARP vhost state (ip_carp.c: INIT=0, BACKUP=1, MASTER=2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Init,
    Backup,
    Master,
}

/// Interface-wide values a vhost reads (fields of `struct carp_softc`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shared {
    pub advbase: u8,
    /// `carp_group_demote_count(sc)`: what we advertise and compare against.
    pub demote: u8,
    /// sysctl `net.inet.carp.preempt`.
    pub preempt: bool,
    pub has_v4: bool,
    pub has_v6: bool,
    /// IFF_UP, vhid > 0, at least one address, not suppressed (`carp_setrun`).
    pub running: bool,
    /// Sending the bow-out ads (advbase 255, advskew 255).
    pub bow_out: bool,
    /// Balancing `none`: the leader sends gratuitous ARP / NA on takeover.
    pub announce: bool,
}

/// Where vhosts queue their work; drained by the interface's `poll_*`.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub transmits: VecDeque<Transmit>,
    pub events: VecDeque<Event>,
    pub stats: StatCounters,
}

/// One virtual host: a vhid, its skew, its state, its timers and its HMAC contexts.
#[derive(Debug, Clone)]
pub struct Vhost {
    vhid: u8,
    advskew: u8,
    state: State,
    leader: bool,
    mac: [u8; 6],
    /// `vhe_replay_cookie`: a random constant chosen by the caller, never changed.
    cookie: [u8; 8],
    auth: Auth,
    ad_at: Option<Duration>,
    md4_at: Option<Duration>,
    md6_at: Option<Duration>,
    /// `sc_delayed_arp` (leader only): >0 counts ads until the repeat GARP, -1 is off.
    delayed_arp: i8,
}

/// Microseconds of `skew/256` s, as ip_carp.c computes `advskew * 1000000 / 256`.
fn skew_us(skew: u8) -> u32 {
    u32::from(skew) * 1_000_000 / 256
}

/// A timeval `(sec, usec)` that compares like `timercmp`.
type Tv = (u32, u32);

impl Vhost {
    pub(crate) fn new(
        vhid: u8,
        advskew: u8,
        leader: bool,
        mac: [u8; 6],
        cookie: [u8; 8],
        auth: Auth,
    ) -> Self {
        Self {
            vhid,
            advskew,
            state: State::Init,
            leader,
            mac,
            cookie,
            auth,
            ad_at: None,
            md4_at: None,
            md6_at: None,
            delayed_arp: -1,
        }
    }

    pub fn vhid(&self) -> u8 {
        self.vhid
    }
    pub fn advskew(&self) -> u8 {
        self.advskew
    }
    pub fn state(&self) -> State {
        self.state
    }
    /// The lowest vhid of its interface: owns the interface lladdr and the GARP.
    pub fn is_leader(&self) -> bool {
        self.leader
    }
    /// Virtual MAC 00:00:5e:00:01:VHID (01:... for the leader with balancing ip).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }
    pub fn cookie(&self) -> [u8; 8] {
        self.cookie
    }
    pub(crate) fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The advertisement interval: `advbase s + advskew/256 s`, and `1/256 s` if that is 0
    /// (`carp_setrun`).
    pub fn interval(&self, advbase: u8) -> Duration {
        let us = u64::from(advbase) * 1_000_000 + u64::from(skew_us(self.advskew));
        Duration::from_micros(if us == 0 { 1_000_000 / 256 } else { us })
    }

    /// The master-down interval: 3 × [`Self::interval`], with our own skew.
    pub fn master_down_interval(&self, advbase: u8) -> Duration {
        self.interval(advbase) * 3
    }

    /// The earliest armed timer.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [self.ad_at, self.md4_at, self.md6_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn set_state(&mut self, to: State, out: &mut Out) {
        if self.state != to {
            out.events.push_back(Event::StateChanged {
                vhid: self.vhid,
                from: self.state,
                to,
            });
            self.state = to;
        }
    }

    pub(crate) fn cancel_timers(&mut self) {
        self.ad_at = None;
        self.md4_at = None;
        self.md6_at = None;
    }

    /// `carp_set_state(vhe, INIT)` with timers cancelled (bow-out, config change, carpdev
    /// down).
    pub(crate) fn reset(&mut self, out: &mut Out) {
        self.cancel_timers();
        self.set_state(State::Init, out);
    }

    /// `carp_setrun(vhe, af)`: arm the timers the state needs. `af` None re-arms the
    /// master-down timer of every family that has addresses.
    pub(crate) fn setrun(&mut self, now: Duration, af: Option<Af>, sh: &Shared, out: &mut Out) {
        if !sh.running {
            self.cancel_timers();
            return;
        }
        match self.state {
            State::Init => {
                self.set_state(State::Backup, out);
                self.setrun(now, None, sh, out);
            }
            State::Backup => {
                self.ad_at = None;
                if self.leader {
                    self.delayed_arp = -1;
                }
                let at = now + self.master_down_interval(sh.advbase);
                match af {
                    Some(Af::V4) => self.md4_at = Some(at),
                    Some(Af::V6) => self.md6_at = Some(at),
                    None => {
                        if sh.has_v4 {
                            self.md4_at = Some(at);
                        }
                        if sh.has_v6 {
                            self.md6_at = Some(at);
                        }
                    }
                }
            }
            State::Master => {
                // OpenBSD leaves the master-down timeouts armed and ignores them in MASTER;
                // dropping them is equivalent and keeps poll_timeout honest.
                self.md4_at = None;
                self.md6_at = None;
                self.ad_at = Some(now + self.interval(sh.advbase));
            }
        }
    }

    /// `carp_master_down`: BACKUP becomes MASTER, advertises at once and (leader, balancing
    /// none) announces the addresses. Ignored in INIT and MASTER.
    pub(crate) fn master_down(&mut self, now: Duration, sh: &Shared, out: &mut Out) {
        if self.state != State::Backup {
            return;
        }
        self.set_state(State::Master, out);
        self.send_ad(now, sh, out);
        if sh.announce && self.leader {
            out.transmits
                .push_back(Transmit::GratuitousArp { mac: self.mac });
            // A repeat after two more ads, for L3 switches that miss the first.
            self.delayed_arp = 2;
            if sh.has_v6 {
                out.transmits
                    .push_back(Transmit::NeighborAdvert { mac: self.mac });
            }
        }
        self.setrun(now, None, sh, out);
        out.stats.add(Stat::Preempt.index(), 1);
    }

    /// `carp_send_ad`: one advertisement per address family present, then re-arm the ad
    /// timer (not during a bow-out).
    pub(crate) fn send_ad(&mut self, now: Duration, sh: &Shared, out: &mut Out) {
        let (advbase, advskew) = if sh.bow_out {
            (255, 255)
        } else {
            (sh.advbase, self.advskew)
        };
        let mut repr = Repr::advertisement(self.vhid, advbase, advskew, sh.demote, self.cookie);
        self.auth.sign(&mut repr);
        if sh.has_v4 {
            out.transmits
                .push_back(Transmit::Advert { af: Af::V4, repr });
            out.stats.add(Stat::OPackets.index(), 1);
        }
        if sh.has_v6 {
            out.transmits
                .push_back(Transmit::Advert { af: Af::V6, repr });
            out.stats.add(Stat::OPackets6.index(), 1);
        }
        if self.leader && !sh.bow_out {
            if self.delayed_arp > 0 {
                self.delayed_arp -= 1;
            }
            if self.delayed_arp == 0 {
                out.transmits
                    .push_back(Transmit::GratuitousArp { mac: self.mac });
                self.delayed_arp = -1;
            }
        }
        if !sh.bow_out {
            self.ad_at = Some(now + self.interval(sh.advbase));
        }
    }

    /// Forces MASTER now (`ifconfig carpN state master`).
    pub(crate) fn force_master(&mut self, now: Duration, sh: &Shared, out: &mut Out) {
        if self.state == State::Init {
            return;
        }
        self.master_down(now, sh, out);
    }

    /// Forces BACKUP now (`ifconfig carpN state backup`).
    pub(crate) fn force_backup(&mut self, now: Duration, sh: &Shared, out: &mut Out) {
        if self.state == State::Init {
            return;
        }
        self.ad_at = None;
        self.set_state(State::Backup, out);
        self.setrun(now, None, sh, out);
    }

    /// The state-machine half of `carp_proto_input_c`, for an advertisement that passed every
    /// check (length, checksum, vhid, version, HMAC, loop).
    pub(crate) fn handle_advert(
        &mut self,
        now: Duration,
        repr: &Repr,
        af: Af,
        sh: &Shared,
        out: &mut Out,
    ) {
        let ours: Tv = (u32::from(sh.advbase), skew_us(self.advskew));
        let theirs: Tv = (u32::from(repr.advbase), skew_us(repr.advskew));
        let od = sh.demote;
        let td = repr.demote;
        match self.state {
            State::Init => {}
            State::Master => {
                // Yield to a master that advertises more often (or as often: a tie yields)
                // unless it is more demoted; always yield to a less demoted one.
                if (ours >= theirs && td <= od) || td < od {
                    self.ad_at = None;
                    self.set_state(State::Backup, out);
                    self.setrun(now, None, sh, out);
                }
            }
            State::Backup => {
                if sh.preempt && ours < theirs && td >= od {
                    self.master_down(now, sh, out);
                } else if td > od {
                    // A more demoted master is taken over, preempt or not.
                    self.master_down(now, sh, out);
                } else if sh.advbase != 0
                    && (3 * u32::from(sh.advbase), skew_us(self.advskew)) < theirs
                {
                    // It will advertise too slowly to keep us down (this is what makes a
                    // bow-out with advbase 255 hand over at once).
                    self.master_down(now, sh, out);
                } else {
                    self.setrun(now, Some(af), sh, out);
                }
            }
        }
    }

    /// Fires every due timer (`carp_master_down` for md/md6, `carp_send_ad` for the ad timer).
    pub(crate) fn handle_timeout(&mut self, now: Duration, sh: &Shared, out: &mut Out) {
        let due = |t: Option<Duration>| t.is_some_and(|t| t <= now);
        if due(self.md4_at) {
            self.md4_at = None;
            self.master_down(now, sh, out);
        }
        if due(self.md6_at) {
            self.md6_at = None;
            self.master_down(now, sh, out);
        }
        if due(self.ad_at) {
            self.ad_at = None;
            if self.state == State::Master {
                self.send_ad(now, sh, out);
            }
        }
    }

    /// Sends an advertisement now if MASTER (`carp_send_ad_all` after a demotion change).
    pub(crate) fn advertise_now(&mut self, now: Duration, sh: &Shared, out: &mut Out) {
        if self.state == State::Master {
            self.send_ad(now, sh, out);
        }
    }

    #[cfg(test)]
    pub(crate) fn timers(&self) -> [Option<Duration>; 3] {
        [self.ad_at, self.md4_at, self.md6_at]
    }
}
