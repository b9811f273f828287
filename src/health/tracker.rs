//! `health::Tracker`: the pure core of relayd's health-check engine (usr.sbin/relayd/hce.c),
//! sans-IO. It decides when each host is checked, keeps each host's state with relayd's retry
//! hysteresis and availability counters, and reports state transitions. The probes (icmp, tcp,
//! http, ...) are thin shells around it: they launch what [`Tracker::poll_due`] returns and
//! feed back [`Tracker::handle_result`].
//!
//! Shell loop:
//! ```text
//! loop {
//!     let now = clock();                       // the tracker never reads a clock
//!     tracker.handle_timeout(now);             // overdue checks count as down
//!     while let Some(l) = tracker.poll_due(now) { launch(l) }
//!     while let Some(e) = tracker.poll_event() { publish(e) }
//!     sleep_until(tracker.poll_timeout());     // plus wake on probe results
//! }
//! ```
//!
//! Semantics, with where they come from:
//! - Result handling is `hce_notify_done()`: when a check says DOWN and `retry_cnt > 0`, the
//!   host keeps its previous state and `retry_cnt` is decremented; any other result resets
//!   `retry_cnt` to the configured `retry`. A known (not UNKNOWN) state after the result bumps
//!   `check_cnt`, and `up_cnt` if up (availability = up_cnt / check_cnt). Hosts start UNKNOWN
//!   with `retry_cnt` 0 (relayd's hosts are calloc'd; nothing sets it before the first
//!   result), so the first failure of a fresh host is reported at once.
//! - Parent hosts (`parent N`): not checked; every result of the parent is passed on *raw*
//!   (before the parent's own retry handling: relayd passes `hostup`, the value on entry) and
//!   the child applies its own retry hysteresis, as relayd's recursive `hce_notify_done` does.
//!   Chains are followed iteratively; cycles are a configuration error.
//! - Disabled hosts and tables are not checked; a result for a disabled host is ignored.
//!   Disabling or enabling a host or table sets its hosts to UNKNOWN (hce.c IMSG_HOST_DISABLE
//!   and friends).
//! - Scheduling: relayd runs one global round every `interval` and a table with `interval N`
//!   every N/G + 1 rounds (spec §9 item 18, an off-by-one in `skip_cnt`). carpio schedules each
//!   table on its own: a table with interval N is checked every N, the first round at the
//!   tracker's start (relayd fires its first round immediately too). Each round start is
//!   delayed by a jitter in `[0, jitter)` that is a pure function of (seed, table, round), so
//!   runs are reproducible; the jitter never accumulates (rounds stay on the `start + k*N`
//!   grid). After a stall, missed rounds are skipped, not replayed.
//! - Timeouts: each launched check has a deadline (`now + table timeout`); a check with no
//!   result by then counts as DOWN (what relayd's probes report on their own timeout). A late
//!   result is ignored. A check still running when its host's next round starts is abandoned
//!   without a result, like relayd's HCE_INTERVAL_TIMEOUT marking.
//!
//! Nothing here panics: configuration mistakes are a named [`ConfigError`], ignored results a
//! named [`Reject`] with a counter ([`Counter`]).

use std::collections::VecDeque;
use std::time::Duration;

/// A host's health, relayd's HOST_UNKNOWN / HOST_DOWN / HOST_UP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Unknown,
    Down,
    Up,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckResult {
    Up,
    Down,
}

/// Plain configuration of one table's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// Time between two checks of the table (relayd `interval`, default 10 s).
    pub interval: Duration,
    /// Time a check may take (relayd `timeout`, default 200 ms); below `interval`.
    pub timeout: Duration,
    pub disabled: bool,
}

/// Plain configuration of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostConfig {
    /// Index of the host's table in [`TrackerConfig::tables`].
    pub table: usize,
    /// Failed checks tolerated before going down (relayd `retry N`).
    pub retry: u32,
    /// Index of the host whose state this one copies (relayd `parent N`); not checked itself.
    pub parent: Option<usize>,
    pub disabled: bool,
}

/// Plain configuration of the tracker. Hosts and tables are identified by their index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackerConfig {
    pub tables: Vec<TableConfig>,
    pub hosts: Vec<HostConfig>,
    /// Upper bound (exclusive) of the delay added to each round start; zero for none.
    pub jitter: Duration,
    /// Seed of the jitter; the same seed gives the same schedule.
    pub seed: u64,
}

/// A refused tracker configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// A table interval of zero.
    ZeroInterval { table: usize },
    /// relayd: "timeout must be less than interval" (hce would overlap rounds).
    TimeoutNotBelowInterval { table: usize },
    /// The jitter must be below every table's interval, or rounds could swap order.
    JitterNotBelowInterval { table: usize },
    /// A host names a table that does not exist.
    NoSuchTable { host: usize },
    /// A host names a parent that does not exist (or itself).
    NoSuchParent { host: usize },
    /// Following parents from this host comes back to it.
    ParentCycle { host: usize },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::ZeroInterval { table } => write!(f, "table {table}: interval is zero"),
            ConfigError::TimeoutNotBelowInterval { table } => {
                write!(f, "table {table}: timeout must be less than interval")
            }
            ConfigError::JitterNotBelowInterval { table } => {
                write!(f, "table {table}: jitter must be less than interval")
            }
            ConfigError::NoSuchTable { host } => write!(f, "host {host}: no such table"),
            ConfigError::NoSuchParent { host } => write!(f, "host {host}: no such parent"),
            ConfigError::ParentCycle { host } => write!(f, "host {host}: parent cycle"),
        }
    }
}

impl std::error::Error for ConfigError {}

crate::named_counters! {
    /// Things the tracker ignored or decided on its own.
    pub enum Counter {
        IgnoreUnknownHost = "ignore_unknown_host",
        IgnoreHostDisabled = "ignore_host_disabled",
        IgnoreNotInFlight = "ignore_not_in_flight",
        CheckTimeout = "check_timeout",
        CheckOverrun = "check_overrun",
    }
}

/// Why [`Tracker::handle_result`] ignored a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No host with that index.
    UnknownHost,
    /// The host is disabled (or its table is): relayd logs "ignoring result, host disabled".
    HostDisabled,
    /// No check of that host is running: late (after its deadline) or never launched.
    NotInFlight,
    /// No table with that index (enable/disable).
    UnknownTable,
}

/// A check to start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub host: usize,
    pub table: usize,
    /// When the tracker will count the check as down if no result came.
    pub deadline: Duration,
}

/// A state transition (relayd's IMSG_HOST_STATUS when `up` changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub host: usize,
    pub old: State,
    pub new: State,
    pub check_cnt: u64,
    pub up_cnt: u64,
    pub retry_cnt: u32,
}

/// Runtime view of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStatus {
    pub state: State,
    pub check_cnt: u64,
    pub up_cnt: u64,
    pub retry_cnt: u32,
    pub in_flight: bool,
}

impl HostStatus {
    /// relayctl's availability in percent (`up_cnt * 100 / check_cnt`), `None` before any check.
    pub fn availability(&self) -> Option<f64> {
        (self.check_cnt > 0).then(|| self.up_cnt as f64 * 100.0 / self.check_cnt as f64)
    }
}

#[derive(Debug, Clone)]
struct HostRt {
    config: HostConfig,
    state: State,
    check_cnt: u64,
    up_cnt: u64,
    retry_cnt: u32,
    deadline: Option<Duration>,
    children: Vec<usize>,
}

#[derive(Debug, Clone)]
struct TableRt {
    config: TableConfig,
    /// Unjittered start of the next round (`start + k * interval`).
    base: Duration,
    round: u64,
    /// Jittered time the next round fires.
    due: Duration,
}

/// The health tracker. See the module documentation.
#[derive(Debug, Clone)]
pub struct Tracker {
    hosts: Vec<HostRt>,
    tables: Vec<TableRt>,
    jitter: Duration,
    seed: u64,
    launches: VecDeque<Launch>,
    events: VecDeque<Event>,
    counters: crate::counters::Counters<{ Counter::COUNT }>,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Tracker {
    /// Validates the configuration and schedules every table's first round at `now`
    /// (plus jitter).
    pub fn new(config: TrackerConfig, now: Duration) -> Result<Tracker, ConfigError> {
        for (i, t) in config.tables.iter().enumerate() {
            if t.interval.is_zero() {
                return Err(ConfigError::ZeroInterval { table: i });
            }
            if t.timeout >= t.interval {
                return Err(ConfigError::TimeoutNotBelowInterval { table: i });
            }
            if config.jitter >= t.interval {
                return Err(ConfigError::JitterNotBelowInterval { table: i });
            }
        }
        let n = config.hosts.len();
        let mut hosts: Vec<HostRt> = Vec::with_capacity(n);
        for (i, h) in config.hosts.iter().enumerate() {
            if h.table >= config.tables.len() {
                return Err(ConfigError::NoSuchTable { host: i });
            }
            if let Some(p) = h.parent
                && (p >= n || p == i)
            {
                return Err(ConfigError::NoSuchParent { host: i });
            }
            hosts.push(HostRt {
                config: *h,
                state: State::Unknown,
                check_cnt: 0,
                up_cnt: 0,
                retry_cnt: 0,
                deadline: None,
                children: Vec::new(),
            });
        }
        // A parent chain longer than the number of hosts must loop.
        for i in 0..n {
            let mut cur = i;
            for _ in 0..=n {
                match config.hosts.get(cur).and_then(|h| h.parent) {
                    Some(p) if p == i => return Err(ConfigError::ParentCycle { host: i }),
                    Some(p) => cur = p,
                    None => break,
                }
            }
        }
        for (i, h) in config.hosts.iter().enumerate() {
            if let Some(parent) = h.parent.and_then(|p| hosts.get_mut(p)) {
                parent.children.push(i);
            }
        }
        let mut tracker = Tracker {
            hosts,
            tables: Vec::with_capacity(config.tables.len()),
            jitter: config.jitter,
            seed: config.seed,
            launches: VecDeque::new(),
            events: VecDeque::new(),
            counters: Default::default(),
        };
        for (i, t) in config.tables.iter().enumerate() {
            let due = now + tracker.jitter_for(i, 0);
            tracker.tables.push(TableRt {
                config: *t,
                base: now,
                round: 0,
                due,
            });
        }
        Ok(tracker)
    }

    fn jitter_for(&self, table: usize, round: u64) -> Duration {
        let span = self.jitter.as_nanos();
        if span == 0 {
            return Duration::ZERO;
        }
        let r = splitmix(self.seed ^ splitmix(table as u64) ^ splitmix(round.rotate_left(32)));
        let nanos = u128::from(r) % span;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Counts checks whose deadline passed without a result as DOWN.
    pub fn handle_timeout(&mut self, now: Duration) {
        for i in 0..self.hosts.len() {
            let expired = matches!(self.hosts.get(i).and_then(|h| h.deadline), Some(d) if d <= now);
            if expired {
                if let Some(h) = self.hosts.get_mut(i) {
                    h.deadline = None;
                }
                self.counters.add(Counter::CheckTimeout.index(), 1);
                self.apply(i, State::Down);
            }
        }
    }

    /// Feeds the result of a launched check.
    pub fn handle_result(
        &mut self,
        now: Duration,
        host: usize,
        result: CheckResult,
    ) -> Result<(), Reject> {
        // A result arriving at or after the deadline loses to the timeout, whichever the
        // shell happened to look at first.
        self.handle_timeout(now);
        let Some(h) = self.hosts.get_mut(host) else {
            self.counters.add(Counter::IgnoreUnknownHost.index(), 1);
            return Err(Reject::UnknownHost);
        };
        let table_disabled = self
            .tables
            .get(h.config.table)
            .is_none_or(|t| t.config.disabled);
        if h.config.disabled || table_disabled {
            h.deadline = None;
            self.counters.add(Counter::IgnoreHostDisabled.index(), 1);
            return Err(Reject::HostDisabled);
        }
        if h.deadline.take().is_none() {
            self.counters.add(Counter::IgnoreNotInFlight.index(), 1);
            return Err(Reject::NotInFlight);
        }
        let raw = match result {
            CheckResult::Up => State::Up,
            CheckResult::Down => State::Down,
        };
        self.apply(host, raw);
        Ok(())
    }

    /// hce_notify_done() for `host` and, with the same raw result, its children.
    fn apply(&mut self, host: usize, raw: State) {
        let mut work = vec![host];
        while let Some(i) = work.pop() {
            let Some(h) = self.hosts.get_mut(i) else {
                continue;
            };
            if h.config.disabled {
                continue;
            }
            let old = h.state;
            let mut new = raw;
            if raw == State::Down && h.retry_cnt > 0 {
                new = old;
                h.retry_cnt -= 1;
            } else {
                h.retry_cnt = h.config.retry;
            }
            if new != State::Unknown {
                h.check_cnt += 1;
                if new == State::Up {
                    h.up_cnt += 1;
                }
            }
            h.state = new;
            if new != old {
                self.events.push_back(Event {
                    host: i,
                    old,
                    new,
                    check_cnt: h.check_cnt,
                    up_cnt: h.up_cnt,
                    retry_cnt: h.retry_cnt,
                });
            }
            work.extend(h.children.iter().rev());
        }
    }

    /// The next check to launch at `now`, if any; call until `None`.
    pub fn poll_due(&mut self, now: Duration) -> Option<Launch> {
        if self.launches.is_empty() {
            self.fire_due_tables(now);
        }
        self.launches.pop_front()
    }

    fn fire_due_tables(&mut self, now: Duration) {
        for t in 0..self.tables.len() {
            let Some(table) = self.tables.get(t) else {
                continue;
            };
            if table.due > now {
                continue;
            }
            let cfg = table.config;
            // Advance to the first grid point after now; missed rounds are skipped.
            let interval = cfg.interval.as_nanos().max(1);
            let behind = now.saturating_sub(table.base).as_nanos();
            let steps = behind / interval + 1;
            let base = table.base
                + Duration::from_nanos(u64::try_from(interval * steps).unwrap_or(u64::MAX));
            let round = table.round.wrapping_add(1);
            let due = base + self.jitter_for(t, round);
            if let Some(table) = self.tables.get_mut(t) {
                table.base = base;
                table.round = round;
                table.due = due;
            }
            if cfg.disabled {
                continue;
            }
            let deadline = now + cfg.timeout;
            for (i, h) in self.hosts.iter_mut().enumerate() {
                if h.config.table != t || h.config.disabled || h.config.parent.is_some() {
                    continue;
                }
                if h.deadline.is_some() {
                    self.counters.add(Counter::CheckOverrun.index(), 1);
                }
                h.deadline = Some(deadline);
                self.launches.push_back(Launch {
                    host: i,
                    table: t,
                    deadline,
                });
            }
        }
    }

    /// Starts a round of every table at `now` (relayctl `poll`): each table's grid restarts
    /// at `now`, so its next round follows one interval later. Checks still running are
    /// abandoned as at any round start.
    pub fn handle_poll_now(&mut self, now: Duration) {
        for t in self.tables.iter_mut() {
            // One interval before now, so fire_due_tables lands the grid on `now` exactly.
            t.base = now.saturating_sub(t.config.interval);
            t.due = now;
        }
    }

    /// The next state transition, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the tracker next needs [`Tracker::handle_timeout`] or [`Tracker::poll_due`].
    pub fn poll_timeout(&self) -> Option<Duration> {
        if !self.launches.is_empty() {
            return Some(Duration::ZERO);
        }
        let tables = self.tables.iter().map(|t| t.due);
        let deadlines = self.hosts.iter().filter_map(|h| h.deadline);
        tables.chain(deadlines).min()
    }

    /// Enables or disables a host (relayctl `host disable|enable`): its state becomes UNKNOWN
    /// and a running check is abandoned.
    pub fn set_host_disabled(&mut self, host: usize, disabled: bool) -> Result<(), Reject> {
        let h = self.hosts.get_mut(host).ok_or(Reject::UnknownHost)?;
        h.config.disabled = disabled;
        h.deadline = None;
        self.set_unknown(host);
        Ok(())
    }

    /// Enables or disables a table (relayctl `table disable|enable`): all its hosts become
    /// UNKNOWN and running checks are abandoned.
    pub fn set_table_disabled(&mut self, table: usize, disabled: bool) -> Result<(), Reject> {
        let t = self.tables.get_mut(table).ok_or(Reject::UnknownTable)?;
        t.config.disabled = disabled;
        for i in 0..self.hosts.len() {
            if self.hosts.get(i).is_some_and(|h| h.config.table == table) {
                if let Some(h) = self.hosts.get_mut(i) {
                    h.deadline = None;
                }
                self.set_unknown(i);
            }
        }
        Ok(())
    }

    fn set_unknown(&mut self, host: usize) {
        if let Some(h) = self.hosts.get_mut(host)
            && h.state != State::Unknown
        {
            let old = h.state;
            h.state = State::Unknown;
            self.events.push_back(Event {
                host,
                old,
                new: State::Unknown,
                check_cnt: h.check_cnt,
                up_cnt: h.up_cnt,
                retry_cnt: h.retry_cnt,
            });
        }
    }

    /// A host's current status.
    pub fn host(&self, host: usize) -> Option<HostStatus> {
        self.hosts.get(host).map(|h| HostStatus {
            state: h.state,
            check_cnt: h.check_cnt,
            up_cnt: h.up_cnt,
            retry_cnt: h.retry_cnt,
            in_flight: h.deadline.is_some(),
        })
    }

    /// Number of up hosts in a table (pfe's `table->up`, which drives carp demotion).
    pub fn up_count(&self, table: usize) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.config.table == table && h.state == State::Up)
            .count()
    }

    /// The tracker's counter block.
    pub fn counters(&self) -> &crate::counters::Counters<{ Counter::COUNT }> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn one(retry: u32) -> Tracker {
        let cfg = TrackerConfig {
            tables: vec![TableConfig {
                interval: 10 * S,
                timeout: S / 5,
                disabled: false,
            }],
            hosts: vec![HostConfig {
                table: 0,
                retry,
                parent: None,
                disabled: false,
            }],
            ..Default::default()
        };
        Tracker::new(cfg, Duration::ZERO).unwrap()
    }

    fn round(t: &mut Tracker, now: Duration, r: CheckResult) {
        let l = t.poll_due(now).expect("a launch");
        assert_eq!(t.poll_due(now), None);
        t.handle_result(now, l.host, r).unwrap();
    }

    #[test]
    fn poll_now_starts_a_round_and_restarts_the_grid() {
        let mut t = one(0);
        round(&mut t, Duration::ZERO, CheckResult::Up);
        assert_eq!(t.poll_timeout(), Some(10 * S));
        t.handle_poll_now(13 * S);
        assert_eq!(t.poll_timeout(), Some(13 * S));
        round(&mut t, 13 * S, CheckResult::Up);
        assert_eq!(t.poll_due(20 * S), None, "the old grid point is gone");
        assert_eq!(t.poll_timeout(), Some(23 * S));
        round(&mut t, 23 * S, CheckResult::Up);
        assert_eq!(t.host(0).unwrap().check_cnt, 3);
    }

    #[test]
    fn retry_keeps_state_then_goes_down() {
        let mut t = one(2);
        round(&mut t, Duration::ZERO, CheckResult::Up);
        let e = t.poll_event().unwrap();
        assert_eq!((e.old, e.new, e.retry_cnt), (State::Unknown, State::Up, 2));
        round(&mut t, 10 * S, CheckResult::Down);
        round(&mut t, 20 * S, CheckResult::Down);
        assert_eq!(t.poll_event(), None);
        assert_eq!(t.host(0).unwrap().retry_cnt, 0);
        round(&mut t, 30 * S, CheckResult::Down);
        let e = t.poll_event().unwrap();
        assert_eq!((e.old, e.new, e.retry_cnt), (State::Up, State::Down, 2));
        let s = t.host(0).unwrap();
        assert_eq!((s.check_cnt, s.up_cnt), (4, 3));
        assert_eq!(s.availability(), Some(75.0));
    }

    #[test]
    fn timeout_counts_as_down_and_late_result_is_ignored() {
        let mut t = one(0);
        let l = t.poll_due(Duration::ZERO).unwrap();
        assert_eq!(l.deadline, S / 5);
        assert_eq!(t.poll_timeout(), Some(S / 5));
        t.handle_timeout(S / 5);
        assert_eq!(t.poll_event().map(|e| e.new), Some(State::Down));
        assert_eq!(
            t.handle_result(S, 0, CheckResult::Up),
            Err(Reject::NotInFlight)
        );
        assert_eq!(t.counters().get(Counter::CheckTimeout.index()), 1);
        assert_eq!(t.poll_timeout(), Some(10 * S));
    }
}
