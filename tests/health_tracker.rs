//! health::Tracker: scheduling on a virtual clock, relayd's retry hysteresis, parents,
//! disabled hosts and tables, timeouts, deterministic jitter.

use carpio::health::tracker::{
    CheckResult, ConfigError, Counter, Event, HostConfig, Reject, State, TableConfig, Tracker,
    TrackerConfig,
};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn table(interval: Duration) -> TableConfig {
    TableConfig {
        interval,
        timeout: 200 * MS,
        disabled: false,
    }
}

fn host(table: usize, retry: u32) -> HostConfig {
    HostConfig {
        table,
        retry,
        parent: None,
        disabled: false,
    }
}

/// Runs the shell loop on a virtual clock until `end`, answering every launch at once with
/// `answer(host, round)`; returns (time, host) of every launch.
fn run(
    t: &mut Tracker,
    end: Duration,
    mut answer: impl FnMut(usize, usize) -> Option<CheckResult>,
) -> Vec<(Duration, usize)> {
    let mut launches = Vec::new();
    let mut rounds = std::collections::HashMap::<usize, usize>::new();
    let mut now = Duration::ZERO;
    while now <= end {
        t.handle_timeout(now);
        while let Some(l) = t.poll_due(now) {
            launches.push((now, l.host));
            let r = rounds.entry(l.host).or_default();
            if let Some(res) = answer(l.host, *r) {
                t.handle_result(now, l.host, res).unwrap();
            }
            *r += 1;
        }
        match t.poll_timeout() {
            Some(next) if next > now => now = next,
            _ => break,
        }
    }
    launches
}

fn drain(t: &mut Tracker) -> Vec<Event> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

#[test]
fn table_interval_n_runs_every_n_seconds() {
    // Global 10 s, a table at 30 s: relayd would run it every 30/10 + 1 = 4 rounds (40 s).
    let cfg = TrackerConfig {
        tables: vec![table(10 * S), table(30 * S)],
        hosts: vec![host(0, 0), host(1, 0)],
        ..Default::default()
    };
    let mut t = Tracker::new(cfg, Duration::ZERO).unwrap();
    let l = run(&mut t, 100 * S, |_, _| Some(CheckResult::Up));
    let times = |h: usize| -> Vec<u64> {
        l.iter()
            .filter(|x| x.1 == h)
            .map(|x| x.0.as_secs())
            .collect()
    };
    assert_eq!(times(0), [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    assert_eq!(times(1), [0, 30, 60, 90]);
}

#[test]
fn jitter_is_deterministic_bounded_and_does_not_drift() {
    let mk = |seed| {
        let cfg = TrackerConfig {
            tables: vec![table(10 * S)],
            hosts: vec![host(0, 0)],
            jitter: 3 * S,
            seed,
        };
        let mut t = Tracker::new(cfg, Duration::ZERO).unwrap();
        run(&mut t, 1000 * S, |_, _| Some(CheckResult::Up))
    };
    let a = mk(1);
    assert_eq!(a, mk(1));
    assert_ne!(a, mk(2));
    assert_eq!(a.len(), 100);
    let mut distinct = std::collections::HashSet::new();
    for (k, (at, _)) in a.iter().enumerate() {
        let grid = 10 * S * k as u32;
        assert!(*at >= grid && *at < grid + 3 * S, "round {k} at {at:?}");
        distinct.insert(*at - grid);
    }
    assert!(distinct.len() > 50, "jitter barely varies");
}

/// Reference rule, formulated independently of relayd's counter: before any UP result a host
/// is UNKNOWN until its first DOWN (retry_cnt starts at 0); after an UP it stays UP through
/// `retry` consecutive DOWNs and goes DOWN on the next; an UP result is UP at once.
#[test]
fn seeded_retry_hysteresis_matches_reference() {
    for retry in 0..4u32 {
        let cfg = TrackerConfig {
            tables: vec![table(10 * S)],
            hosts: vec![host(0, retry)],
            ..Default::default()
        };
        let mut t = Tracker::new(cfg, Duration::ZERO).unwrap();
        let mut rng = 0x9e37_79b9u64 + u64::from(retry);
        let mut seen_up = false;
        let mut seen_down = false;
        let mut downs = 0u32;
        let mut want_state = State::Unknown;
        let mut want_checks = 0u64;
        let mut want_ups = 0u64;
        for k in 0..500u32 {
            let now = 10 * S * k;
            let l = t.poll_due(now).unwrap();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let up = rng.is_multiple_of(3);
            let res = if up {
                CheckResult::Up
            } else {
                CheckResult::Down
            };
            t.handle_result(now, l.host, res).unwrap();
            if up {
                seen_up = true;
                downs = 0;
            } else {
                downs += 1;
                seen_down = true;
            }
            let prev = want_state;
            want_state = if up {
                State::Up
            } else if !seen_up {
                if seen_down {
                    State::Down
                } else {
                    State::Unknown
                }
            } else if downs > retry {
                State::Down
            } else {
                State::Up
            };
            // From UNKNOWN the first DOWN is immediate only because retry_cnt starts at 0;
            // a fresh host (never up) keeps DOWN.
            if want_state != State::Unknown {
                want_checks += 1;
                if want_state == State::Up {
                    want_ups += 1;
                }
            }
            let s = t.host(0).unwrap();
            assert_eq!(s.state, want_state, "retry {retry} step {k}");
            assert_eq!((s.check_cnt, s.up_cnt), (want_checks, want_ups));
            let ev = drain(&mut t);
            if prev != want_state {
                assert_eq!(ev.len(), 1);
                assert_eq!((ev[0].old, ev[0].new), (prev, want_state));
            } else {
                assert!(ev.is_empty());
            }
        }
    }
}

#[test]
fn children_copy_the_raw_parent_result_with_their_own_retry() {
    let cfg = TrackerConfig {
        tables: vec![table(10 * S), table(10 * S)],
        hosts: vec![
            host(0, 2),
            HostConfig {
                parent: Some(0),
                ..host(1, 0)
            },
            HostConfig {
                parent: Some(1),
                ..host(1, 0)
            },
        ],
        ..Default::default()
    };
    let mut t = Tracker::new(cfg, Duration::ZERO).unwrap();
    let l = run(&mut t, 30 * S, |_, round| {
        Some(if round == 0 {
            CheckResult::Up
        } else {
            CheckResult::Down
        })
    });
    // Only the parent is ever launched.
    assert!(l.iter().all(|&(_, h)| h == 0));
    // Parent (retry 2): UP at 0 s, DOWNs at 10 s and 20 s absorbed, DOWN at 30 s. The
    // children (retry 0) get the raw DOWN at 10 s and go DOWN then, not at 30 s.
    let ev = drain(&mut t);
    let summary: Vec<(usize, State)> = ev.iter().map(|e| (e.host, e.new)).collect();
    assert_eq!(
        summary,
        [
            (0, State::Up),
            (1, State::Up),
            (2, State::Up),
            (1, State::Down),
            (2, State::Down),
            (0, State::Down),
        ]
    );
    assert_eq!(t.up_count(0), 0);
    assert_eq!(t.up_count(1), 0);
}

#[test]
fn disabled_hosts_and_tables_are_not_checked() {
    let cfg = TrackerConfig {
        tables: vec![
            table(10 * S),
            TableConfig {
                disabled: true,
                ..table(10 * S)
            },
        ],
        hosts: vec![
            host(0, 0),
            HostConfig {
                disabled: true,
                ..host(0, 0)
            },
            host(1, 0),
        ],
        ..Default::default()
    };
    let mut t = Tracker::new(cfg, Duration::ZERO).unwrap();
    let l = run(&mut t, 20 * S, |_, _| Some(CheckResult::Up));
    assert!(l.iter().all(|&(_, h)| h == 0));
    assert_eq!(
        t.handle_result(21 * S, 1, CheckResult::Up),
        Err(Reject::HostDisabled)
    );
    assert_eq!(
        t.handle_result(21 * S, 2, CheckResult::Up),
        Err(Reject::HostDisabled)
    );
    assert_eq!(
        t.handle_result(21 * S, 9, CheckResult::Up),
        Err(Reject::UnknownHost)
    );
    assert_eq!(t.counters().get(Counter::IgnoreHostDisabled.index()), 2);
    drain(&mut t);
    // Disabling an UP host reports UNKNOWN; its next round launches nothing.
    t.set_host_disabled(0, true).unwrap();
    let ev = drain(&mut t);
    assert_eq!((ev[0].old, ev[0].new), (State::Up, State::Unknown));
    assert_eq!(t.poll_due(30 * S), None);
    // Enabling the table makes its host checked from the next round on.
    t.set_table_disabled(1, false).unwrap();
    assert_eq!(t.set_table_disabled(7, false), Err(Reject::UnknownTable));
    assert_eq!(t.poll_due(40 * S).map(|l| l.host), Some(2));
}

#[test]
fn timeouts_overruns_and_stalls() {
    let cfg = TrackerConfig {
        tables: vec![TableConfig {
            interval: 10 * S,
            timeout: 8 * S,
            disabled: false,
        }],
        hosts: vec![host(0, 0)],
        ..Default::default()
    };
    let mut t = Tracker::new(cfg, Duration::ZERO).unwrap();
    let l = t.poll_due(Duration::ZERO).unwrap();
    assert_eq!(l.deadline, 8 * S);
    assert_eq!(t.poll_timeout(), Some(8 * S));
    t.handle_timeout(8 * S - MS);
    assert!(t.host(0).unwrap().in_flight);
    t.handle_timeout(8 * S);
    assert_eq!(t.host(0).unwrap().state, State::Down);
    assert_eq!(t.counters().get(Counter::CheckTimeout.index()), 1);
    // A result at the deadline loses to the timeout.
    assert!(t.poll_due(10 * S).is_some());
    assert_eq!(
        t.handle_result(18 * S, 0, CheckResult::Up),
        Err(Reject::NotInFlight)
    );
    // A stall: nothing polled from 18 s to 55 s; one round fires, the next is on the grid.
    assert!(t.poll_due(55 * S).is_some());
    assert_eq!(t.poll_due(55 * S), None);
    t.handle_result(55 * S, 0, CheckResult::Up).unwrap();
    assert_eq!(t.poll_timeout(), Some(60 * S));
}

#[test]
fn overrun_is_counted_when_jitter_and_timeout_overlap_rounds() {
    let cfg = TrackerConfig {
        tables: vec![TableConfig {
            interval: 10 * S,
            timeout: 9 * S,
            disabled: false,
        }],
        hosts: vec![host(0, 0)],
        jitter: 9 * S,
        seed: 5,
    };
    let mut t = Tracker::new(cfg, Duration::ZERO).unwrap();
    // Never answer: each check either times out or is overrun by the next round.
    let l = run(&mut t, 2000 * S, |_, _| None);
    let c = t.counters();
    assert_eq!(
        c.get(Counter::CheckTimeout.index()) + c.get(Counter::CheckOverrun.index()),
        l.len() as u64 - u64::from(t.host(0).unwrap().in_flight)
    );
    assert!(c.get(Counter::CheckOverrun.index()) > 0);
}

#[test]
fn config_errors_are_named() {
    let base = TrackerConfig {
        tables: vec![table(10 * S)],
        hosts: vec![host(0, 0), host(0, 0)],
        ..Default::default()
    };
    let err = |f: &dyn Fn(&mut TrackerConfig)| {
        let mut c = base.clone();
        f(&mut c);
        Tracker::new(c, Duration::ZERO).err()
    };
    assert_eq!(err(&|_| {}), None);
    assert_eq!(
        err(&|c| c.tables[0].interval = Duration::ZERO),
        Some(ConfigError::ZeroInterval { table: 0 })
    );
    assert_eq!(
        err(&|c| c.tables[0].timeout = 10 * S),
        Some(ConfigError::TimeoutNotBelowInterval { table: 0 })
    );
    assert_eq!(
        err(&|c| c.jitter = 10 * S),
        Some(ConfigError::JitterNotBelowInterval { table: 0 })
    );
    assert_eq!(
        err(&|c| c.hosts[1].table = 1),
        Some(ConfigError::NoSuchTable { host: 1 })
    );
    assert_eq!(
        err(&|c| c.hosts[1].parent = Some(1)),
        Some(ConfigError::NoSuchParent { host: 1 })
    );
    assert_eq!(
        err(&|c| {
            c.hosts[0].parent = Some(1);
            c.hosts[1].parent = Some(0);
        }),
        Some(ConfigError::ParentCycle { host: 0 })
    );
}
