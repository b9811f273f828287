//! The health engine thread without a network: `check script` (relayd's inverted exit codes,
//! SIGKILL at the timeout) and no-check tables drive the real engine, its update channel,
//! demotion, commands and the `show hosts` rows rendered as relayctl does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carpio::config::model::Check;
use carpio::ctl::proto::{Item, Show};
use carpio::ctl::render;
use carpio::health::engine::{self, EngineConfig, HostSpec, HostUpdate, TableSpec};
use carpio::health::tracker::State;
use carpio::health::{Command, Handle, Update};

const WAIT: Duration = Duration::from_secs(10);

/// The tests of this file run one at a time. Each writes a check script and its engine forks to
/// run it: a test writing its script while another test's engine forks lets the child inherit
/// the still-open file for a moment, and exec of that script then fails with ETXTBSY ("Text
/// file busy"), a host down that no check caused (seen once in CI).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("carpio-health-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn script(dir: &Path, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("check.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.to_string_lossy().into_owned()
}

fn table(check: Check, demote: Option<&str>) -> TableSpec {
    TableSpec {
        id: 1,
        name: "t:1".into(),
        check,
        port: Some(1),
        // One round during the test unless a command asks for more.
        interval: Duration::from_secs(30),
        timeout: Duration::from_millis(300),
        demote: demote.map(str::to_string),
        disabled: false,
    }
}

fn host(id: u32, ip: &str) -> HostSpec {
    HostSpec {
        id,
        table: 0,
        name: ip.into(),
        ip: ip.parse().unwrap(),
        retry: 0,
        parent: None,
        ttl: None,
    }
}

/// Updates until `want` matches one (returned with everything seen before it).
fn until(h: &Handle, what: &str, want: impl Fn(&Update) -> bool) -> Vec<Update> {
    let end = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(u) = h.recv_timeout(end.saturating_duration_since(Instant::now())) {
        let hit = want(&u);
        seen.push(u);
        if hit {
            return seen;
        }
    }
    panic!("no {what} within {WAIT:?}; saw {seen:?}");
}

fn host_update(u: &Update, id: u32, new: State) -> Option<HostUpdate> {
    match u {
        Update::Host(h) if h.id == id && h.new == new => Some(h.clone()),
        _ => None,
    }
}

#[test]
fn script_exit_codes_timeout_and_show_hosts() {
    let _g = serial();
    let dir = tmpdir("codes");
    // check_script.c: positive exit = up, 0 = down; the slow one is killed at the timeout.
    let path = script(
        &dir,
        "case \"$1\" in 198.18.0.2) exit 1;; 198.18.0.3) exit 0;; *) exec sleep 30;; esac",
    );
    let cfg = EngineConfig {
        tables: vec![table(Check::Script { path }, None)],
        hosts: vec![
            host(1, "198.18.0.2"),
            host(2, "198.18.0.3"),
            host(3, "198.18.0.4"),
        ],
        ..Default::default()
    };
    let h = engine::spawn_with(cfg).unwrap();
    let mut seen = Vec::new();
    for (id, new) in [(1, State::Up), (2, State::Down), (3, State::Down)] {
        if !seen.iter().any(|u| host_update(u, id, new).is_some()) {
            seen.extend(until(&h, "host update", |u| {
                host_update(u, id, new).is_some()
            }));
        }
    }
    let get = |id, new| seen.iter().find_map(|u| host_update(u, id, new)).unwrap();
    let up = get(1, State::Up);
    assert_eq!(
        (up.old, up.check_cnt, up.up_cnt, up.error),
        (State::Unknown, 1, 1, None)
    );
    assert!(up.took.is_some());
    let down = get(2, State::Down);
    assert_eq!(down.error.unwrap().to_string(), "script failed (exit 0)");
    let killed = get(3, State::Down);
    assert_eq!(
        killed.error.unwrap().to_string(),
        "script timeout (after 300 ms)"
    );
    // Table up-count change seen once the first host came up.
    assert!(
        seen.contains(&Update::TableUp { table: 1, up: 1 }),
        "{seen:?}"
    );

    let items = h.items(WAIT).expect("rows");
    assert_eq!(items.len(), 4);
    assert!(matches!(
        &items[0],
        Item::Table {
            id: 1,
            up: 1,
            disabled: false,
            ..
        }
    ));
    let text = render::summary(&items, Show::Hosts);
    let row = |id: &str, ty: &str, name: &str, av: &str, st: &str| {
        format!("{id:<4}\t{ty:<8}\t{name:<24}\t{av:<7}\t{st}\n")
    };
    let detail = |s: &str| format!("\t{:>8}\ttotal: {s}\n", "");
    let want = [
        render::header(),
        row("1", "table", "t:1", "", "active (1 hosts)"),
        row("1", "host", "198.18.0.2", "100.00%", "up"),
        detail("1/1 checks"),
        row("2", "host", "198.18.0.3", "0.00%", "down"),
        detail("0/1 checks, error: script failed (exit 0)"),
        row("3", "host", "198.18.0.4", "0.00%", "down"),
        detail("0/1 checks, error: script timeout (after 300 ms)"),
    ]
    .concat();
    assert_eq!(text, want);
    let counters = h.counters(WAIT).expect("counters");
    let get = |n: &str| counters.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    assert_eq!(get("check_script_failed"), Some(1));
    assert_eq!(get("check_script_timeout"), Some(1));
    assert_eq!(get("check_tcp_connect_failed"), Some(0));
    assert!(
        get("check_timeout").is_some(),
        "tracker counters follow: {counters:?}"
    );
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demotion_commands_and_poll_now() {
    let _g = serial();
    let dir = tmpdir("demote");
    let flag = dir.join("up");
    std::fs::write(&flag, "").unwrap();
    let path = script(
        &dir,
        &format!("test -e {} && exit 1; exit 0", flag.display()),
    );
    let cfg = EngineConfig {
        tables: vec![table(Check::Script { path }, Some("lb"))],
        hosts: vec![host(7, "198.18.0.7")],
        ..Default::default()
    };
    let h = engine::spawn_with(cfg).unwrap();
    let demote = |d: i8| move |u: &Update| matches!(u, Update::Demote { group, delta } if group == "lb" && *delta == d);

    let seen = until(&h, "up", |u| host_update(u, 7, State::Up).is_some());
    assert!(
        !seen.iter().any(|u| matches!(u, Update::Demote { .. })),
        "{seen:?}"
    );
    // The table's up count follows in the same batch.
    until(&h, "table up 1", |u| {
        *u == Update::TableUp { table: 1, up: 1 }
    });

    // Backend fails: relayctl `poll` instead of waiting out the 30 s interval.
    std::fs::remove_file(&flag).unwrap();
    assert!(h.send(Command::PollNow));
    let seen = until(&h, "demote +1", demote(1));
    assert!(
        seen.iter()
            .any(|u| host_update(u, 7, State::Down).is_some()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&Update::TableUp { table: 1, up: 0 }),
        "{seen:?}"
    );

    std::fs::write(&flag, "").unwrap();
    assert!(h.send(Command::PollNow));
    let seen = until(&h, "demote -1", demote(-1));
    let back = seen
        .iter()
        .find_map(|u| host_update(u, 7, State::Up))
        .expect("up again");
    assert_eq!((back.old, back.check_cnt, back.up_cnt), (State::Down, 3, 2));

    // relayctl `host disable`: unknown, the table is empty again, so the group is demoted.
    assert!(h.send(Command::HostDisabled(7, true)));
    let seen = until(&h, "demote +1 on disable", demote(1));
    assert!(
        seen.iter()
            .any(|u| host_update(u, 7, State::Unknown).is_some()),
        "{seen:?}"
    );
    let items = h.items(WAIT).unwrap();
    assert!(
        matches!(
            &items[1],
            Item::Host {
                id: 7,
                disabled: true,
                ..
            }
        ),
        "{items:?}"
    );
    assert!(render::summary(&items, Show::Hosts).contains("\tdisabled\n"));

    assert!(h.send(Command::HostDisabled(7, false)));
    assert!(h.send(Command::PollNow));
    until(&h, "demote -1 on enable", demote(-1));
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_check_hosts_are_up() {
    let _g = serial();
    let cfg = EngineConfig {
        tables: vec![table(Check::None, None)],
        hosts: vec![host(1, "198.18.0.2"), host(2, "198.18.0.3")],
        ..Default::default()
    };
    let h = engine::spawn_with(cfg).unwrap();
    until(&h, "both up", |u| *u == Update::TableUp { table: 1, up: 2 });
}

#[test]
fn parent_children_follow_and_table_disable() {
    let _g = serial();
    let dir = tmpdir("parent");
    let flag = dir.join("up");
    std::fs::write(&flag, "").unwrap();
    let path = script(
        &dir,
        &format!("test -e {} && exit 1; exit 0", flag.display()),
    );
    let mut child = host(2, "198.18.0.9");
    child.parent = Some(1);
    child.retry = 1;
    let cfg = EngineConfig {
        tables: vec![table(Check::Script { path }, None)],
        hosts: vec![host(1, "198.18.0.8"), child],
        ..Default::default()
    };
    let h = engine::spawn_with(cfg).unwrap();
    until(&h, "both up", |u| *u == Update::TableUp { table: 1, up: 2 });
    std::fs::remove_file(&flag).unwrap();
    assert!(h.send(Command::PollNow));
    // The parent goes down at once; the child has retry 1 and holds one round.
    let seen = until(&h, "parent down", |u| {
        host_update(u, 1, State::Down).is_some()
    });
    assert!(
        !seen
            .iter()
            .any(|u| host_update(u, 2, State::Down).is_some()),
        "{seen:?}"
    );
    assert!(h.send(Command::PollNow));
    let seen = until(&h, "child down", |u| {
        host_update(u, 2, State::Down).is_some()
    });
    let down = seen
        .iter()
        .find_map(|u| host_update(u, 2, State::Down))
        .unwrap();
    assert_eq!(
        down.error.map(|e| e.to_string()).as_deref(),
        Some("script failed (exit 0)"),
        "the child shows its parent's check error"
    );
    let items = h.items(WAIT).unwrap();
    assert!(
        matches!(
            &items[2],
            Item::Host {
                id: 2,
                parent: 1,
                ..
            }
        ),
        "{items:?}"
    );
    assert!(render::summary(&items, Show::Hosts).contains("198.18.0.9 parent 1"));

    assert!(h.send(Command::TableDisabled(1, true)));
    until(&h, "parent unknown", |u| {
        host_update(u, 1, State::Unknown).is_some()
    });
    let items = h.items(WAIT).unwrap();
    assert!(
        matches!(
            &items[0],
            Item::Table {
                disabled: true,
                up: 0,
                ..
            }
        ),
        "{items:?}"
    );
    assert!(render::summary(&items, Show::Hosts).contains("\tdisabled\n"));
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}

/// relayd runs check scripts as its unprivileged user; carpio as the config's `user`.
#[test]
fn script_runs_as_the_configured_user() {
    let _g = serial();
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        .unwrap_or(false);
    if !root {
        eprintln!("health_engine: not root, script user test skipped");
        return;
    }
    let dir = tmpdir("user");
    let path = script(
        &dir,
        "test \"$(id -u):$(id -g)\" = 65534:65534 && exit 1; exit 0",
    );
    let cfg = EngineConfig {
        tables: vec![table(Check::Script { path }, None)],
        hosts: vec![host(1, "198.18.0.2")],
        script_user: Some((65534, 65534)),
        ..Default::default()
    };
    let h = engine::spawn_with(cfg).unwrap();
    let seen = until(&h, "a result", |u| matches!(u, Update::Host(_)));
    assert!(
        seen.iter().any(|u| host_update(u, 1, State::Up).is_some()),
        "{seen:?}"
    );
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}
