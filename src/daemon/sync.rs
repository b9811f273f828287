//! The daemon's pfsync role: the [`crate::pfsync::shell`] thread started from the `pfsync`
//! block, wired to the workers and to carp.
//!
//! ```text
//!  workers ──flow::Event──► events ──► pfsync shell ──► Replicator ──► proto 240 socket
//!                                           │ tap (a copy of every event, and of every
//!                                           ▼  flow a peer sent or removed)
//!                              Daemon::tick ─► `show states` mirror
//!  pfsync shell ──Command──► each worker's command queue (synced flows, every worker)
//!  pfsync shell ──Demote(n)──► Sync::forward_demotions ──► every carp shell: groups carp, pfsync
//! ```
//!
//! **One consumer for the flow events**: the shell drains the workers' event queue (every
//! 10 ms, so replication does not wait for the parent's 200 ms tick) and copies each event
//! into a tap queue that the parent drains for `show states` instead of the workers' queue. A
//! full tap is counted (`pfsync_drop_tap_full`) and costs only the mirror; a full event queue
//! is counted by the workers (`drop_sync_event_queue_full`). The workers never announce the
//! flows pfsync installs in them, so the shell also puts each flow a peer sends, and each
//! removal a peer causes, on the tap (core `SYNCED_CORE`, the peer's creator index): `show
//! states` lists them with `origin pfsync` and the peer's creator id, beside this node's own
//! (`origin local`). The mirror is keyed by (creator, id), since every creator numbers its
//! flows on its own.
//!
//! **Creator id**: pf draws its `hostid` at random when none is set (pf_ioctl.c
//! `pf_status.hostid = arc4random()`, never 0); carpio reads four bytes of the kernel's
//! random pool and redraws 0. A restarted node gets a new id, as a rebooted OpenBSD does, so
//! its peers never confuse its new flows with the ones they still hold from its last life.
//!
//! **Demotion**: OpenBSD puts `pfsync0` in the interface group `carp` (if_pfsync.c
//! `pfsync_clone_create`: `if_addgroup(ifp, "carp")`, beside its own group `pfsync`), and
//! `carp_group_demote_adj(&sc->sc_if, ...)` adjusts every group of pfsync0. Every carp
//! interface is in `carp`, so a node whose bulk update has not come in (+32) or whose sync link
//! is down (+1) advertises demoted and neither wins an election nor preempts until it holds
//! the states. carpio does the same: each delta goes to groups `carp` and `pfsync` of every
//! carp shell ([`crate::carp::shell::ShellHandle::demote`]). The first delta (+32, sent when
//! the shell starts) is applied before [`start`] returns, so a preempting node cannot take
//! over between carp's start and its first demotion.
//!
//! **Transport with AF_XDP**: the XDP program passes IP protocol 240 to the kernel
//! (`xdp_pass_pfsync`) and the cBPF filter of AF_PACKET workers leaves it out, so the shell's
//! raw socket is the only receiver of pfsync packets on every ingress, and its checks (TTL 255,
//! syncdev, syncpeer) apply to all of them.
//!
//! Nothing here panics on network input; lost demotions and full queues are counted.

use crate::carp::shell::ShellHandle as CarpHandle;
use crate::config::Config;
use crate::dataplane::flow::Event;
use crate::dataplane::snapshot::SnapshotCell;
use crate::dataplane::worker::Command;
use crate::pfsync::shell::{self, Handles, ShellConfig, ShellHandle};
use crossbeam::channel::Receiver;
use crossbeam::queue::ArrayQueue;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The carp groups pfsync's demotion goes to (OpenBSD: the groups of `pfsync0`).
pub const DEMOTE_GROUPS: [&str; 2] = ["carp", "pfsync"];
/// Capacity of the `show states` tap (the same as the workers' event queue).
pub const TAP_QUEUE: usize = super::EVENT_QUEUE;
/// Capacity of each worker's command queue (synced inserts and removes; the shell keeps an
/// ordered backlog behind a full one).
pub const COMMAND_QUEUE: usize = 16_384;
/// How long [`start`] waits for the shell's first demotion.
const FIRST_DEMOTE_WAIT: Duration = Duration::from_secs(2);

crate::named_counters! {
    /// The daemon side of pfsync.
    pub enum Counter {
        /// Demotion deltas applied to a carp shell's group.
        Demotions = "pfsync_carp_demotions",
        /// A carp shell refused or did not answer a demotion (out of range, stopped).
        DemoteFailed = "pfsync_carp_demote_failed",
    }
}

/// The running pfsync role.
pub struct Sync {
    shell: ShellHandle,
    tap: Arc<ArrayQueue<Event>>,
    demote: Receiver<i32>,
    creatorid: u32,
    counters: crate::counters::Counters<{ Counter::COUNT }>,
}

/// One command queue per worker, indexed by core.
pub fn command_queues(workers: usize) -> Vec<Arc<ArrayQueue<Command>>> {
    (0..workers)
        .map(|_| Arc::new(ArrayQueue::new(COMMAND_QUEUE)))
        .collect()
}

/// A random non-zero creator id (pf's `hostid`).
pub fn random_creatorid() -> io::Result<u32> {
    let mut f = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut b = [0u8; 4];
        f.read_exact(&mut b)?;
        let id = u32::from_ne_bytes(b);
        if id != 0 {
            return Ok(id);
        }
    }
}

/// Starts the shell of `cfg`'s `pfsync` block (none: `Ok(None)`), draining `events` and
/// feeding `commands`, and applies its first demotion to `carp`. `epoch` is the workers'
/// epoch (their `now` is whole seconds since it, plus one).
pub fn start(
    cfg: &Config,
    events: &Arc<ArrayQueue<Event>>,
    commands: &[Arc<ArrayQueue<Command>>],
    snapshot: &Arc<SnapshotCell>,
    epoch: Instant,
    carp: &[CarpHandle],
) -> io::Result<Option<Sync>> {
    let Some(pc) = &cfg.pfsync else {
        return Ok(None);
    };
    let creatorid = random_creatorid()?;
    // The workers count `epoch.elapsed() + 1 s`; the shell's times are `Duration`s since its
    // epoch, so its epoch is one second earlier and both agree on every expiry.
    let shell_epoch = epoch.checked_sub(Duration::from_secs(1)).unwrap_or(epoch);
    let scfg = ShellConfig::from_config(pc, creatorid, shell_epoch)?;
    let tap = Arc::new(ArrayQueue::new(TAP_QUEUE));
    let (tx, rx) = crossbeam::channel::unbounded();
    let handles = Handles {
        events: events.clone(),
        commands: commands.to_vec(),
        snapshot: snapshot.clone(),
        demote: Some(tx),
        tap: Some(tap.clone()),
    };
    let shell = shell::spawn(scfg, handles)?;
    let mut s = Sync {
        shell,
        tap,
        demote: rx,
        creatorid,
        counters: Default::default(),
    };
    // The shell announces itself up at once (demote +32 until its bulk update is in).
    if let Ok(d) = s.demote.recv_timeout(FIRST_DEMOTE_WAIT) {
        demote_carp(carp, d, &mut s.counters);
    }
    s.forward_demotions(carp);
    Ok(Some(s))
}

impl Sync {
    /// The queue the parent drains for `show states` (a copy of every flow event).
    pub fn tap(&self) -> Arc<ArrayQueue<Event>> {
        self.tap.clone()
    }

    pub fn creatorid(&self) -> u32 {
        self.creatorid
    }

    pub fn shell(&self) -> &ShellHandle {
        &self.shell
    }

    /// Applies every demotion delta the shell has sent since the last call.
    pub fn forward_demotions(&mut self, carp: &[CarpHandle]) {
        while let Ok(d) = self.demote.try_recv() {
            demote_carp(carp, d, &mut self.counters);
        }
    }

    /// Every pfsync counter, prefixed `pfsync_`, and the creator id.
    pub fn counters(&self, out: &mut Vec<(String, u64)>) {
        for (n, v) in self.shell.counter_values() {
            out.push((format!("pfsync_{n}"), v));
        }
        for c in Counter::ALL {
            out.push((c.name().to_string(), self.counters.get(c.index())));
        }
        out.push(("pfsync_creatorid".into(), u64::from(self.creatorid)));
    }

    /// Stops the shell (it gives back its demotion) and forwards its last deltas to `carp`.
    pub fn stop(self, carp: &[CarpHandle]) {
        let Sync {
            shell,
            tap: _,
            demote,
            creatorid: _,
            mut counters,
        } = self;
        let _ = shell.stop();
        while let Ok(d) = demote.try_recv() {
            demote_carp(carp, d, &mut counters);
        }
    }
}

/// Adds `delta` to the [`DEMOTE_GROUPS`] of every carp shell.
fn demote_carp(
    carp: &[CarpHandle],
    delta: i32,
    counters: &mut crate::counters::Counters<{ Counter::COUNT }>,
) {
    for h in carp {
        for g in DEMOTE_GROUPS {
            let c = match h.demote(g, delta) {
                Ok(_) => Counter::Demotions,
                Err(_) => Counter::DemoteFailed,
            };
            counters.add(c.index(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_ids_are_random_and_non_zero() {
        let a = random_creatorid().unwrap();
        let b = random_creatorid().unwrap();
        assert_ne!(a, 0);
        assert_ne!(b, 0);
        // Two draws of 32 random bits agree with probability 2^-32.
        assert_ne!(a, b);
    }

    #[test]
    fn no_pfsync_block_starts_nothing() {
        let cfg = crate::config::parse_str(
            "t.conf",
            "table <t> { 198.18.1.1 }\n\
             redirect r { listen on 198.18.0.10 udp port 53\n forward to <t> check icmp }\n",
            &[],
        )
        .unwrap();
        let snap =
            crate::dataplane::Snapshot::build(&cfg, &Default::default(), Default::default(), None)
                .unwrap();
        let events = Arc::new(ArrayQueue::new(4));
        let s = start(
            &cfg,
            &events,
            &command_queues(2),
            &Arc::new(SnapshotCell::from_pointee(snap)),
            Instant::now(),
            &[],
        )
        .unwrap();
        assert!(s.is_none());
        assert_eq!(command_queues(3).len(), 3);
    }
}
