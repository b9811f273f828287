//! `health::Engine`: relayd's hce process as one thread. It runs the pure [`Tracker`] with a
//! monotonic clock and every probe non-blocking on one `mio` event loop, and talks to the
//! rest of carpio through channels:
//!
//! - out, [`Update`]: each host state transition (relayd's IMSG_HOST_STATUS: id, up/down,
//!   check and up counts, retries, the error), each change of a table's up count (pfe's
//!   `table->up`, what the data plane snapshot and relayctl show) and carp demotion requests
//!   for tables with `demote GROUP` (pfe.c `pfe_sync`: +1 when the table has no up host and
//!   is not demoted yet, −1 when it has one again and was demoted). relayd evaluates demotion
//!   at the next round's IMSG_SYNC, and so demotes every `demote` table at startup until it
//!   has seen a host up; carpio evaluates it when a transition happens, which is at most one
//!   round sooner and never demotes a table that comes up in its first round.
//! - in, [`Command`]: relayctl's `host disable|enable`, `table disable|enable`, `poll`, and
//!   the rows of `show hosts` (`ctl::proto::Item::{Table, Host}`).
//!
//! The thread is the I/O shell of the tracker (DESIGN.md, sans-IO): it reads the clock once
//! per loop turn, feeds results and timeouts in, launches what the tracker says is due and
//! sleeps until the earliest of the tracker's timeout and the probes' deadlines. A probe that
//! reaches its deadline is closed (a script killed) and reported down with an error naming
//! what it waited for. Nothing on this thread panics on network input; hosts named by DNS
//! name are refused at [`spawn`] ([`SpawnError::HostName`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::probe::{self, Context, Failure, Outcome, Probe, Started, Target};
use super::tracker::{self, CheckResult, State, Tracker, TrackerConfig};
use crate::config::model::{Address, Check, Config};
use crate::ctl::proto::{HostState, Item};

const WAKER: Token = Token(usize::MAX);
/// How often a running script is polled for its exit (scripts have no readiness event).
const SCRIPT_POLL: Duration = Duration::from_millis(10);

/// One table as the engine checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// relayctl's table id (1-based position in the config's used tables).
    pub id: u32,
    pub name: String,
    pub check: Check,
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub demote: Option<String>,
    pub disabled: bool,
}

/// One host as the engine checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// relayd's host id (config `HostConfig::id`).
    pub id: u32,
    /// Index of its table in [`EngineConfig::tables`].
    pub table: usize,
    pub name: String,
    pub ip: IpAddr,
    pub retry: u32,
    /// Host id of the parent (`parent N`).
    pub parent: Option<u32>,
    pub ttl: Option<u8>,
}

/// Plain configuration of the engine.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineConfig {
    pub tables: Vec<TableSpec>,
    pub hosts: Vec<HostSpec>,
    /// (uid, gid) for `check script` (from the config's `user NAME`); `None`: ours.
    pub script_user: Option<(u32, u32)>,
    /// Delay spread of round starts (see [`TrackerConfig::jitter`]).
    pub jitter: Duration,
    pub seed: u64,
}

/// Why the engine could not start.
#[derive(Debug)]
pub enum SpawnError {
    /// The config's `user NAME` is not in /etc/passwd.
    NoSuchUser(String),
    /// A host given by name: resolving names is the parent's job before the engine starts.
    HostName {
        id: u32,
        name: String,
    },
    /// `parent N` names no host.
    NoSuchParent {
        id: u32,
        parent: u32,
    },
    Tracker(tracker::ConfigError),
    Tls(rustls::Error),
    Io(std::io::Error),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::HostName { id, name } => {
                write!(f, "host {id} ({name}): health checks need an IP address")
            }
            SpawnError::NoSuchUser(u) => write!(f, "user {u}: not in /etc/passwd"),
            SpawnError::NoSuchParent { id, parent } => {
                write!(f, "host {id}: parent {parent} does not exist")
            }
            SpawnError::Tracker(e) => write!(f, "health tracker: {e}"),
            SpawnError::Tls(e) => write!(f, "tls client: {e}"),
            SpawnError::Io(e) => write!(f, "health engine: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {}

impl EngineConfig {
    /// The engine's view of a validated configuration: every used table (`name:port`) and
    /// its hosts, which must be IP addresses.
    pub fn from_config(cfg: &Config) -> Result<EngineConfig, SpawnError> {
        let mut out = EngineConfig {
            seed: u64::from(std::process::id()),
            ..Default::default()
        };
        if let Some(user) = &cfg.global.user {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            out.script_user = Some(
                probe::passwd_lookup(&passwd, user)
                    .ok_or_else(|| SpawnError::NoSuchUser(user.clone()))?,
            );
        }
        for (ti, t) in cfg.tables.iter().enumerate() {
            out.tables.push(TableSpec {
                id: u32::try_from(ti + 1).unwrap_or(u32::MAX),
                name: t.name.clone(),
                check: t.check.clone(),
                port: t.port,
                interval: t.interval,
                timeout: t.timeout,
                demote: t.demote.clone(),
                disabled: t.disabled,
            });
            for h in &t.hosts {
                let ip = match &h.addr {
                    Address::Ip(ip) => *ip,
                    Address::Name(n) => {
                        return Err(SpawnError::HostName {
                            id: h.id,
                            name: n.clone(),
                        });
                    }
                };
                out.hosts.push(HostSpec {
                    id: h.id,
                    table: ti,
                    name: ip.to_string(),
                    ip,
                    retry: h.retry,
                    parent: h.parent,
                    ttl: h.ip_ttl,
                });
            }
        }
        Ok(out)
    }

    fn tracker(&self) -> Result<TrackerConfig, SpawnError> {
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for h in &self.hosts {
            let parent = match h.parent {
                None => None,
                Some(p) => Some(self.hosts.iter().position(|x| x.id == p).ok_or(
                    SpawnError::NoSuchParent {
                        id: h.id,
                        parent: p,
                    },
                )?),
            };
            hosts.push(tracker::HostConfig {
                table: h.table,
                retry: h.retry,
                parent,
                disabled: false,
            });
        }
        Ok(TrackerConfig {
            tables: self
                .tables
                .iter()
                .map(|t| tracker::TableConfig {
                    interval: t.interval,
                    timeout: t.timeout,
                    disabled: t.disabled,
                })
                .collect(),
            hosts,
            jitter: self.jitter,
            seed: self.seed,
        })
    }
}

/// A host state transition (relayd IMSG_HOST_STATUS).
#[derive(Debug, Clone, PartialEq)]
pub struct HostUpdate {
    pub id: u32,
    /// relayctl id of the host's table.
    pub table: u32,
    pub old: State,
    pub new: State,
    pub check_cnt: u64,
    pub up_cnt: u64,
    pub retry_cnt: u32,
    /// The failure of the check that made the host down (`None` when up or unknown).
    pub error: Option<Failure>,
    /// When the deciding check finished, on the engine's monotonic clock (since spawn).
    pub at: Duration,
    /// How long the deciding check took (relayd logs it as `(Nms,ERR)`); `None` for a
    /// transition no check made (disable, a parent's result).
    pub took: Option<Duration>,
}

/// What the engine tells the rest of carpio.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Host(HostUpdate),
    /// A table's number of up hosts changed.
    TableUp {
        table: u32,
        up: u32,
    },
    /// Adjust carp group `group`'s demotion counter by `delta` (+1 or −1).
    Demote {
        group: String,
        delta: i8,
    },
}

/// What the rest of carpio asks of the engine.
#[derive(Debug)]
pub enum Command {
    /// relayctl `host disable ID` (true) / `host enable ID` (false).
    HostDisabled(u32, bool),
    /// relayctl `table disable ID` / `table enable ID`.
    TableDisabled(u32, bool),
    /// relayctl `poll`: check every table now.
    PollNow,
    /// The rows of `show hosts`: each table, then its hosts.
    Items(Sender<Vec<Item>>),
    /// `show counters`: failed checks by error name (`check_<error>`), then the tracker's
    /// counters, every name listed even at zero.
    Counters(Sender<Vec<(String, u64)>>),
    Shutdown,
}

/// The running engine. Dropping it stops the thread (running scripts are killed).
pub struct Handle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    updates: Receiver<Update>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Sends a command; false when the engine thread is gone.
    pub fn send(&self, c: Command) -> bool {
        self.commands.send(c).is_ok() && self.waker.wake().is_ok()
    }

    /// The next update, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Update> {
        self.updates.recv_timeout(timeout).ok()
    }

    /// The next update if one is waiting.
    pub fn try_recv(&self) -> Option<Update> {
        self.updates.try_recv().ok()
    }

    /// The `show counters` lines of the engine, or `None` when it did not answer in time.
    pub fn counters(&self, timeout: Duration) -> Option<Vec<(String, u64)>> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Command::Counters(tx)) {
            return None;
        }
        rx.recv_timeout(timeout).ok()
    }

    /// The `show hosts` rows, or `None` when the engine did not answer within `timeout`.
    pub fn items(&self, timeout: Duration) -> Option<Vec<Item>> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Command::Items(tx)) {
            return None;
        }
        rx.recv_timeout(timeout).ok()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the engine for a validated configuration.
pub fn spawn(cfg: &Config) -> Result<Handle, SpawnError> {
    spawn_with(EngineConfig::from_config(cfg)?)
}

/// Starts the engine for an explicit [`EngineConfig`].
pub fn spawn_with(cfg: EngineConfig) -> Result<Handle, SpawnError> {
    let start = Instant::now();
    let tracker = Tracker::new(cfg.tracker()?, Duration::ZERO).map_err(SpawnError::Tracker)?;
    let poll = Poll::new().map_err(SpawnError::Io)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(SpawnError::Io)?);
    let ctx = Context {
        tls: probe::tls::client_config().map_err(SpawnError::Tls)?,
        icmp_id: u16::try_from(std::process::id() & 0xffff).unwrap_or(0),
        script_user: cfg.script_user,
    };
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (upd_tx, upd_rx) = mpsc::channel();
    let n = cfg.hosts.len();
    let ntables = cfg.tables.len();
    let mut engine = Engine {
        poll,
        tracker,
        ctx,
        start,
        nonce: cfg.seed ^ u64::from(start.elapsed().subsec_nanos()),
        probes: (0..n).map(|_| None).collect(),
        hosts: vec![HostRt::default(); n],
        table_up: vec![0; ntables],
        demoted: vec![false; ntables],
        commands: cmd_rx,
        updates: upd_tx,
        counters: Default::default(),
        cfg,
    };
    let thread = std::thread::Builder::new()
        .name("carpio-health".into())
        .spawn(move || engine.run())
        .map_err(SpawnError::Io)?;
    Ok(Handle {
        commands: cmd_tx,
        waker,
        updates: upd_rx,
        thread: Some(thread),
    })
}

struct Running {
    probe: Probe,
    started: Duration,
    deadline: Duration,
}

#[derive(Debug, Clone, Default)]
struct HostRt {
    disabled: bool,
    last_error: Option<Failure>,
    last_took: Option<Duration>,
    last_at: Duration,
    /// The last check's result was fed to the tracker since the last event: the next
    /// transition is this check's doing.
    fresh: bool,
}

struct Engine {
    poll: Poll,
    tracker: Tracker,
    ctx: Context,
    cfg: EngineConfig,
    start: Instant,
    nonce: u64,
    probes: Vec<Option<Running>>,
    hosts: Vec<HostRt>,
    table_up: Vec<u32>,
    demoted: Vec<bool>,
    commands: Receiver<Command>,
    updates: Sender<Update>,
    /// Failed checks by error (`show counters`, later).
    counters: crate::counters::Counters<{ probe::Error::COUNT }>,
}

impl Engine {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = self.now();
            self.expire(now);
            self.tracker.handle_timeout(now);
            while let Some(l) = self.tracker.poll_due(now) {
                self.launch(l, now);
            }
            self.publish();
            let wait = self.next_wake().map(|t| t.saturating_sub(self.now()));
            if let Err(e) = self.poll.poll(&mut events, wait)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                // The poll instance itself failed: nothing can be checked any more.
                break;
            }
            let now = self.now();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let host = ev.token().0;
                let verdict = self
                    .probes
                    .get_mut(host)
                    .and_then(|p| p.as_mut())
                    .and_then(|r| r.probe.handle_ready());
                if let Some(v) = verdict {
                    self.finish(host, v, now);
                }
            }
            for host in 0..self.probes.len() {
                let verdict = match self.probes.get_mut(host) {
                    Some(Some(r)) if r.probe.is_script() => r.probe.poll_script(),
                    _ => None,
                };
                if let Some(v) = verdict {
                    self.finish(host, v, now);
                }
            }
            if !self.handle_commands(now) {
                break;
            }
        }
        for p in self.probes.iter_mut() {
            if let Some(r) = p.take() {
                r.probe.close(self.poll.registry());
            }
        }
    }

    fn next_wake(&self) -> Option<Duration> {
        let mut t = self.tracker.poll_timeout();
        for r in self.probes.iter().flatten() {
            let d = if r.probe.is_script() {
                r.deadline.min(self.now() + SCRIPT_POLL)
            } else {
                r.deadline
            };
            t = Some(t.map_or(d, |t| t.min(d)));
        }
        t
    }

    fn launch(&mut self, l: tracker::Launch, now: Duration) {
        if let Some(old) = self.probes.get_mut(l.host).and_then(Option::take) {
            // The previous round's check is still running: relayd's HCE_INTERVAL_TIMEOUT.
            old.probe.close(self.poll.registry());
        }
        let (Some(h), Some(t)) = (self.cfg.hosts.get(l.host), self.cfg.tables.get(l.table)) else {
            return;
        };
        let target = Target {
            ip: h.ip,
            port: t.port,
            name: h.name.clone(),
            ttl: h.ttl,
            id: h.id,
        };
        // splitmix-style sequence: distinct per launch, so a late reply to an earlier check
        // (ICMP seq, DNS id, NTP cookie) does not match this one.
        self.nonce = self.nonce.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let nonce = self.nonce ^ (self.nonce >> 29);
        let started = Probe::start(
            &t.check,
            &target,
            &self.ctx,
            nonce,
            self.poll.registry(),
            Token(l.host),
        );
        match started {
            Started::Running(probe) => {
                if let Some(slot) = self.probes.get_mut(l.host) {
                    *slot = Some(Running {
                        probe,
                        started: now,
                        deadline: l.deadline,
                    });
                }
            }
            Started::Done(v) => self.record(l.host, v, now, Duration::ZERO),
        }
    }

    /// Probes past their deadline are closed and reported down with what they waited for.
    fn expire(&mut self, now: Duration) {
        for host in 0..self.probes.len() {
            let due = matches!(self.probes.get(host), Some(Some(r)) if r.deadline <= now);
            if due && let Some(r) = self.probes.get_mut(host).and_then(Option::take) {
                let error = r.probe.timeout_error();
                let took = now.saturating_sub(r.started);
                r.probe.close(self.poll.registry());
                // The configured timeout, not the measured wait, so the text is stable.
                let limit = r.deadline.saturating_sub(r.started);
                let f = Failure::with(error, format_args!("after {} ms", limit.as_millis()));
                self.record(host, Err(f), now, took);
            }
        }
    }

    fn finish(&mut self, host: usize, v: Outcome, now: Duration) {
        let Some(r) = self.probes.get_mut(host).and_then(Option::take) else {
            return;
        };
        let took = now.saturating_sub(r.started);
        r.probe.close(self.poll.registry());
        self.record(host, v, now, took);
    }

    fn record(&mut self, host: usize, v: Outcome, now: Duration, took: Duration) {
        let result = if v.is_ok() {
            CheckResult::Up
        } else {
            CheckResult::Down
        };
        if let Err(f) = &v {
            self.counters.add(f.error.index(), 1);
        }
        if let Some(h) = self.hosts.get_mut(host) {
            h.last_error = v.err();
            h.last_took = Some(took);
            h.last_at = now;
            h.fresh = true;
        }
        // A result at or after the deadline is counted as a timeout by the tracker itself;
        // a result for a disabled host is ignored (both named in the tracker's counters).
        let _ = self.tracker.handle_result(now, host, result);
    }

    /// Sends the tracker's transitions, table up-count changes and demotions.
    fn publish(&mut self) {
        let mut touched = vec![false; self.cfg.tables.len()];
        while let Some(e) = self.tracker.poll_event() {
            let Some(spec) = self.cfg.hosts.get(e.host) else {
                continue;
            };
            if let Some(t) = touched.get_mut(spec.table) {
                *t = true;
            }
            let table = self.cfg.tables.get(spec.table).map_or(0, |t| t.id);
            // A child's transition comes from its parent's check.
            let source = spec
                .parent
                .and_then(|p| self.cfg.hosts.iter().position(|x| x.id == p))
                .unwrap_or(e.host);
            let rt = self.hosts.get(source).cloned().unwrap_or_default();
            let by_check = rt.fresh && e.new != State::Unknown;
            let _ = self.updates.send(Update::Host(HostUpdate {
                id: spec.id,
                table,
                old: e.old,
                new: e.new,
                check_cnt: e.check_cnt,
                up_cnt: e.up_cnt,
                retry_cnt: e.retry_cnt,
                error: if e.new == State::Down {
                    rt.last_error.clone()
                } else {
                    None
                },
                at: if by_check { rt.last_at } else { self.now() },
                took: if by_check { rt.last_took } else { None },
            }));
        }
        for h in self.hosts.iter_mut() {
            h.fresh = false;
        }
        for (ti, changed) in touched.iter().enumerate() {
            if !changed {
                continue;
            }
            let up = u32::try_from(self.tracker.up_count(ti)).unwrap_or(u32::MAX);
            let Some(spec) = self.cfg.tables.get(ti) else {
                continue;
            };
            if self.table_up.get(ti) != Some(&up) {
                if let Some(u) = self.table_up.get_mut(ti) {
                    *u = up;
                }
                let _ = self.updates.send(Update::TableUp { table: spec.id, up });
            }
            // pfe.c pfe_sync: demote once when empty, undo once when not.
            if let (Some(group), Some(demoted)) = (&spec.demote, self.demoted.get_mut(ti)) {
                let delta = match (up, *demoted) {
                    (0, false) => 1,
                    (1.., true) => -1,
                    _ => 0,
                };
                if delta != 0 {
                    *demoted = delta > 0;
                    let _ = self.updates.send(Update::Demote {
                        group: group.clone(),
                        delta,
                    });
                }
            }
        }
    }

    /// Drains the command channel; false on shutdown (or when the handle is gone).
    fn handle_commands(&mut self, now: Duration) -> bool {
        loop {
            let c = match self.commands.try_recv() {
                Ok(c) => c,
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            };
            match c {
                Command::Shutdown => return false,
                Command::PollNow => self.tracker.handle_poll_now(now),
                Command::HostDisabled(id, off) => {
                    if let Some(i) = self.cfg.hosts.iter().position(|h| h.id == id) {
                        self.stop_probe(i);
                        if let Some(h) = self.hosts.get_mut(i) {
                            h.disabled = off;
                        }
                        let _ = self.tracker.set_host_disabled(i, off);
                    }
                }
                Command::TableDisabled(id, off) => {
                    if let Some(ti) = self.cfg.tables.iter().position(|t| t.id == id) {
                        for i in 0..self.cfg.hosts.len() {
                            if self.cfg.hosts.get(i).is_some_and(|h| h.table == ti) {
                                self.stop_probe(i);
                            }
                        }
                        if let Some(t) = self.cfg.tables.get_mut(ti) {
                            t.disabled = off;
                        }
                        let _ = self.tracker.set_table_disabled(ti, off);
                    }
                }
                Command::Items(reply) => {
                    let _ = reply.send(self.items());
                }
                Command::Counters(reply) => {
                    let _ = reply.send(self.counter_list());
                }
            }
        }
    }

    fn stop_probe(&mut self, host: usize) {
        if let Some(r) = self.probes.get_mut(host).and_then(Option::take) {
            r.probe.close(self.poll.registry());
        }
    }

    fn counter_list(&self) -> Vec<(String, u64)> {
        let probes = probe::Error::ALL.iter().map(|e| {
            let name = format!("check_{}", e.name().replace([' ', '/'], "_"));
            (name, self.counters.get(e.index()))
        });
        let tracker = tracker::Counter::ALL
            .iter()
            .map(|c| (c.name().to_string(), self.tracker.counters().get(c.index())));
        probes.chain(tracker).collect()
    }

    /// relayctl `show hosts` rows: each table, then its hosts, in config order.
    fn items(&self) -> Vec<Item> {
        let mut out = Vec::with_capacity(self.cfg.tables.len() + self.cfg.hosts.len());
        for (ti, t) in self.cfg.tables.iter().enumerate() {
            out.push(Item::Table {
                id: t.id,
                name: t.name.clone(),
                up: u32::try_from(self.tracker.up_count(ti)).unwrap_or(u32::MAX),
                disabled: t.disabled,
            });
            for (i, h) in self.cfg.hosts.iter().enumerate() {
                if h.table != ti {
                    continue;
                }
                let Some(s) = self.tracker.host(i) else {
                    continue;
                };
                let rt = self.hosts.get(i).cloned().unwrap_or_default();
                out.push(Item::Host {
                    id: h.id,
                    name: h.name.clone(),
                    parent: h.parent.unwrap_or(0),
                    state: match s.state {
                        State::Up => HostState::Up,
                        State::Down => HostState::Down,
                        State::Unknown => HostState::Unknown,
                    },
                    disabled: rt.disabled,
                    check_cnt: s.check_cnt,
                    up_cnt: s.up_cnt,
                    retry_cnt: s.retry_cnt,
                    error: rt.last_error.map(|f| f.to_string()),
                });
            }
        }
        out
    }
}
