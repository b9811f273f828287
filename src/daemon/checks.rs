//! The health-check role in the parent (relayd's hce → pfe path).
//!
//! The engine ([`crate::health`]) runs its probes on its own thread; the parent drains its
//! updates every loop turn ([`Daemon::health_tick`]) and applies them:
//!
//! - a host transition marks the host down or up in [`HostStates`] and rebuilds the snapshot,
//!   so the workers stop choosing a dead host for new flows within one parent turn of the
//!   deciding check (relayd: `hce_notify_done` → IMSG_HOST_STATUS → `pfe_dispatch_hce`), and
//!   tells the relays (`relay::RelayHandle::set_host_state`);
//! - a table marked `demote GROUP` going down (or back up) adjusts that carp group's demotion
//!   counter on every carp interface (relayd: `carp_demote_set`, spec §6);
//! - `carpioctl host|table disable|enable` and `poll` are forwarded to the engine, and
//!   `show hosts` takes its check counts and errors from it.
//!
//! A checked host is unknown until its first check decides, and unknown hosts are not used:
//! relayd's hosts start HOST_UNKNOWN (hce.c), and the pfe puts only HOST_UP hosts into a
//! redirect's pf table (pfe_filter.c `sync_table`) and relays pick only HOST_UP hosts
//! (relay.c `relay_from_table`). So a backend that is dead at start never gets a flow.
//!
//! A reload that changes the tables restarts the engine. Hosts keep the state they had (matched
//! by table name and address, since relayctl ids may be renumbered) until the new engine's first
//! check decides, so a reload never flaps a backend; hosts new to the configuration start
//! unknown.
//!
//! [`HostStates`]: crate::dataplane::snapshot::HostStates

use super::{Daemon, Parent, RoleEvent, log};
use crate::config::{self, Config};
use crate::ctl::proto::{HostState, Item};
use crate::health::engine::HostUpdate;
use crate::health::tracker::State;
use crate::health::{Command, Handle, Update};
use std::collections::{HashMap, HashSet};
use std::io;
use std::time::Duration;

/// How long `show hosts` waits for the engine's rows before showing the parent's view only.
const ITEMS_WAIT: Duration = Duration::from_millis(500);
/// Updates applied per parent turn at most (the rest wait for the next turn).
const UPDATES_PER_TURN: usize = 4096;

/// Starts the engine when the configuration has tables (every relayd table is checked).
pub(super) fn start(cfg: &Config) -> io::Result<Option<Handle>> {
    if cfg.tables.is_empty() {
        return Ok(None);
    }
    crate::health::spawn(cfg)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

fn host_name(h: &config::HostConfig) -> String {
    match &h.addr {
        config::Address::Ip(ip) => ip.to_string(),
        config::Address::Name(n) => n.clone(),
    }
}

/// (table, address) of every host id of `cfg`.
fn host_keys(cfg: &Config) -> HashMap<u32, (String, String)> {
    let mut out = HashMap::new();
    for t in &cfg.tables {
        for h in &t.hosts {
            out.insert(h.id, (t.name.clone(), host_name(h)));
        }
    }
    out
}

/// relayd's log line for a transition (hce_notify_done): "host H, check C (Nms,ERR), state
/// A -> B, availability P%".
fn describe(u: &HostUpdate, name: &str) -> String {
    let state = |s: State| match s {
        State::Up => "up",
        State::Down => "down",
        State::Unknown => "unknown",
    };
    let avail = if u.check_cnt == 0 {
        0.0
    } else {
        u.up_cnt as f64 * 100.0 / u.check_cnt as f64
    };
    let took = u
        .took
        .map_or(String::new(), |t| format!("{}ms,", t.as_millis()));
    let why = u
        .error
        .as_ref()
        .map_or_else(|| "ok".to_string(), ToString::to_string);
    format!(
        "host {name}, check ({took}{why}), state {} -> {}, availability {avail:.2}%",
        state(u.old),
        state(u.new)
    )
}

/// Every host the engine checks (all hosts of all tables, when there are tables): unknown
/// until their first check.
pub(super) fn unchecked(cfg: &Config) -> Vec<u32> {
    let mut ids: Vec<u32> = cfg
        .tables
        .iter()
        .flat_map(|t| t.hosts.iter().map(|h| h.id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The ids in `new` of the hosts still unknown after a reload: those unknown in `old` and
/// those `old` did not have (matched by table and address).
fn carry_unknown(old: &Config, new: &Config, unknown: &[u32]) -> Vec<u32> {
    let old_keys = host_keys(old);
    let known: HashSet<(String, String)> = old_keys
        .iter()
        .filter(|(id, _)| !unknown.contains(id))
        .map(|(_, k)| k.clone())
        .collect();
    let mut out: Vec<u32> = host_keys(new)
        .into_iter()
        .filter(|(_, k)| !known.contains(k))
        .map(|(id, _)| id)
        .collect();
    out.sort_unstable();
    out
}

/// The ids in `new` of the hosts that were down in `old` (matched by table and address).
fn carry_down(old: &Config, new: &Config, down: &[u32]) -> Vec<u32> {
    let old_keys = host_keys(old);
    let down: HashSet<(String, String)> = down
        .iter()
        .filter_map(|id| old_keys.get(id).cloned())
        .collect();
    let mut out: Vec<u32> = host_keys(new)
        .into_iter()
        .filter(|(_, k)| down.contains(k))
        .map(|(id, _)| id)
        .collect();
    out.sort_unstable();
    out
}

impl Daemon {
    /// Applies the engine's pending updates.
    pub(super) fn health_tick(&mut self) {
        let mut pending = Vec::new();
        if let Some(h) = &self.health {
            while pending.len() < UPDATES_PER_TURN {
                match h.try_recv() {
                    Some(u) => pending.push(u),
                    None => break,
                }
            }
        }
        for u in pending {
            match u {
                Update::Host(hu) => {
                    let name = self
                        .cfg
                        .hosts()
                        .find(|h| h.id == hu.id)
                        .map(host_name)
                        .unwrap_or_default();
                    if self.verbose || hu.new == State::Down || hu.old == State::Down {
                        log(describe(&hu, &name));
                    }
                    // Relays pick their backends themselves (relayd's relay processes get
                    // the same IMSG_HOST_STATUS as the pfe).
                    if let (Some(r), State::Up | State::Down) = (&self.relays, hu.new) {
                        r.set_host_state(hu.id, hu.new == State::Up);
                    }
                    match hu.new {
                        State::Up => self.role_event(RoleEvent::Host {
                            id: hu.id,
                            up: true,
                        }),
                        State::Down => self.role_event(RoleEvent::Host {
                            id: hu.id,
                            up: false,
                        }),
                        // Disabled or not checked yet: the parent keeps what it knew; a disabled
                        // host is out of the snapshot through `disabled_hosts`.
                        State::Unknown => {}
                    }
                }
                Update::TableUp { table, up } => {
                    let name = self
                        .cfg
                        .tables
                        .get((table as usize).wrapping_sub(1))
                        .map(|t| t.name.clone())
                        .unwrap_or_default();
                    let detail = format!("{up} up");
                    self.notify("table_status", table, &name, &detail);
                }
                Update::Demote { group, delta } => self.demote(&group, i32::from(delta)),
            }
        }
    }

    /// Adjusts carp group `group` on every carp interface that has it (relayd demotes the
    /// group through the kernel, which covers every carp interface of the group).
    fn demote(&mut self, group: &str, delta: i32) {
        self.counters.add(Parent::Demotions.index(), 1);
        let mut applied = 0;
        for h in &self.carp {
            if h.demote(group, delta).is_ok() {
                applied += 1;
            }
        }
        if applied == 0 {
            self.counters.add(Parent::DemoteNoGroup.index(), 1);
        }
        log(format!(
            "carp group {group}: demote {delta:+} ({applied} carp interface(s))"
        ));
        self.notify("demote", 0, group, &format!("{delta:+}"));
    }

    /// Forwards `host|table disable|enable` to the engine (relayd's pfe tells the hce).
    pub(super) fn health_disable(&self, host_ids: &[u32], table_ids: &[u32], disabled: bool) {
        let Some(h) = &self.health else { return };
        for &id in host_ids {
            h.send(Command::HostDisabled(id, disabled));
        }
        for &id in table_ids {
            h.send(Command::TableDisabled(id, disabled));
        }
    }

    /// relayctl `poll`: check every table now.
    pub(super) fn health_poll(&self) {
        if let Some(h) = &self.health {
            h.send(Command::PollNow);
        }
    }

    /// The engine's check counts, state and last error per host, for `show hosts`.
    pub(super) fn health_items(&self) -> HashMap<u32, Item> {
        let mut out = HashMap::new();
        if let Some(items) = self.health.as_ref().and_then(|h| h.items(ITEMS_WAIT)) {
            for it in items {
                if let Item::Host { id, .. } = &it {
                    out.insert(*id, it);
                }
            }
        }
        out
    }

    /// Fills a host row of the summary from the engine's row (state, counts, error).
    pub(super) fn merge_health(row: &mut Item, engine: &HashMap<u32, Item>) {
        let id = match row {
            Item::Host { id, .. } => *id,
            _ => return,
        };
        let Some(Item::Host {
            state: es,
            check_cnt: ec,
            up_cnt: eu,
            retry_cnt: er,
            error: ee,
            ..
        }) = engine.get(&id)
        else {
            return;
        };
        if let Item::Host {
            state,
            check_cnt,
            up_cnt,
            retry_cnt,
            error,
            ..
        } = row
        {
            // The parent's own view wins for down (it is what the snapshot uses); unknown is the
            // engine's word until the first check decides.
            if *state == HostState::Up && *es == HostState::Unknown {
                *state = HostState::Unknown;
            }
            *check_cnt = *ec;
            *up_cnt = *eu;
            *retry_cnt = *er;
            error.clone_from(ee);
        }
    }

    /// The engine's counters for `show counters`.
    pub(super) fn health_counters(&self) -> Vec<(String, u64)> {
        self.health
            .as_ref()
            .and_then(|h| h.counters(ITEMS_WAIT))
            .unwrap_or_default()
    }

    /// After a reload: restart the engine if the tables changed, carrying host states over by
    /// (table, address).
    pub(super) fn health_reload(&mut self, old: &Config) -> Result<(), String> {
        if !self.checking || (old.tables == self.cfg.tables && self.health.is_some()) {
            return Ok(());
        }
        self.states.down = carry_down(old, &self.cfg, &self.states.down);
        self.states.unknown = carry_unknown(old, &self.cfg, &self.states.unknown);
        // Stop the old engine before the new one starts (scripts killed, sockets closed).
        self.health = None;
        self.health = start(&self.cfg).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::probe::Failure;

    fn parse(text: &str) -> Config {
        let dir = std::env::temp_dir().join(format!("carpio-checks-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let f = dir.join(format!("{}.conf", text.len()));
        std::fs::write(&f, text).unwrap();
        let c = config::load(&f, &[]).unwrap();
        let _ = std::fs::remove_file(&f);
        c
    }

    const OLD: &str = "table <a> { 198.18.2.1, 198.18.2.2 }\ntable <b> { 198.18.2.3 }\n\
        redirect r { listen on 198.18.1.1 port 53\n forward to <a> check icmp\n \
        forward to <b> check icmp }\n";
    // A host is added in front of <a>: relayctl ids shift by one.
    const NEW: &str = "table <a> { 198.18.2.9, 198.18.2.1, 198.18.2.2 }\ntable <b> { 198.18.2.3 }\n\
        redirect r { listen on 198.18.1.1 port 53\n forward to <a> check icmp\n \
        forward to <b> check icmp }\n";

    fn id_of(c: &Config, table: &str, addr: &str) -> u32 {
        c.tables
            .iter()
            .find(|t| t.base == table)
            .and_then(|t| t.hosts.iter().find(|h| host_name(h) == addr))
            .map(|h| h.id)
            .unwrap()
    }

    #[test]
    fn down_hosts_keep_their_state_across_renumbering() {
        let (old, new) = (parse(OLD), parse(NEW));
        let down = vec![
            id_of(&old, "a", "198.18.2.2"),
            id_of(&old, "b", "198.18.2.3"),
        ];
        let carried = carry_down(&old, &new, &down);
        let mut want = vec![
            id_of(&new, "a", "198.18.2.2"),
            id_of(&new, "b", "198.18.2.3"),
        ];
        want.sort_unstable();
        assert_eq!(carried, want);
        assert_ne!(down, carried, "the ids did shift, so the mapping mattered");
        // A host that left the configuration is forgotten.
        assert!(carry_down(&new, &old, &[id_of(&new, "a", "198.18.2.9")]).is_empty());
    }

    #[test]
    fn unknown_hosts_stay_unknown_across_a_reload_and_new_ones_start_unknown() {
        let (old, new) = (parse(OLD), parse(NEW));
        assert_eq!(unchecked(&old).len(), 3);
        let a1 = id_of(&old, "a", "198.18.2.1");
        // 198.18.2.1 was checked (up), the others not yet.
        let unknown: Vec<u32> = unchecked(&old).into_iter().filter(|&i| i != a1).collect();
        let mut want = vec![
            id_of(&new, "a", "198.18.2.9"),
            id_of(&new, "a", "198.18.2.2"),
            id_of(&new, "b", "198.18.2.3"),
        ];
        want.sort_unstable();
        assert_eq!(carry_unknown(&old, &new, &unknown), want);
        // Everything decided: only the new host is unknown.
        assert_eq!(
            carry_unknown(&old, &new, &[]),
            vec![id_of(&new, "a", "198.18.2.9")]
        );
    }

    /// relayd's pfe uses a host only once its first check says up: unknown hosts are out of
    /// the snapshot, shown as unknown, and the first verdict either way is a transition.
    #[test]
    fn unknown_hosts_are_not_used_until_their_first_check() {
        let p = std::env::temp_dir().join(format!("carpio-checks-unk-{}", std::process::id()));
        std::fs::write(&p, OLD).unwrap();
        let mut d = super::super::tests::daemon(&p);
        let _ = std::fs::remove_file(&p);
        d.states.unknown = unchecked(&d.cfg);
        d.rebuild().unwrap();
        let snap = d.cell.load();
        assert!(snap.tables.iter().all(|t| t.up_count() == 0));
        assert!(
            snap.services[0].active_table(&snap.tables).is_none(),
            "a redirect with only unknown hosts has no table to forward to"
        );
        let state_of = |d: &Daemon, id: u32| {
            d.summary().into_iter().find_map(|i| match i {
                Item::Host { id: h, state, .. } if h == id => Some(state),
                _ => None,
            })
        };
        let (a1, a2) = (
            id_of(&d.cfg, "a", "198.18.2.1"),
            id_of(&d.cfg, "a", "198.18.2.2"),
        );
        assert_eq!(state_of(&d, a1), Some(HostState::Unknown));
        d.role_event(RoleEvent::Host { id: a1, up: true });
        d.role_event(RoleEvent::Host { id: a2, up: false });
        assert_eq!(state_of(&d, a1), Some(HostState::Up));
        assert_eq!(state_of(&d, a2), Some(HostState::Down));
        assert_eq!(d.counters.get(Parent::HostTransitions.index()), 2);
        let snap = d.cell.load();
        assert_eq!(snap.tables[0].up_count(), 1);
        assert!(snap.services[0].active_table(&snap.tables).is_some());
        assert_eq!(d.states.unknown, vec![id_of(&d.cfg, "b", "198.18.2.3")]);
    }

    #[test]
    fn transitions_are_logged_as_relayd_does() {
        let u = HostUpdate {
            id: 1,
            table: 1,
            old: State::Up,
            new: State::Down,
            check_cnt: 4,
            up_cnt: 3,
            retry_cnt: 0,
            error: Some(Failure::with(
                crate::health::probe::Error::TcpConnectFail,
                format_args!(""),
            )),
            at: Duration::from_secs(3),
            took: Some(Duration::from_millis(2)),
        };
        let line = describe(&u, "198.18.2.1");
        assert!(line.starts_with("host 198.18.2.1, check (2ms,"), "{line}");
        assert!(
            line.ends_with("state up -> down, availability 75.00%"),
            "{line}"
        );
    }

    #[test]
    fn engine_rows_fill_the_summary() {
        let mut row = Item::Host {
            id: 7,
            name: "198.18.2.1".into(),
            parent: 0,
            state: HostState::Up,
            disabled: false,
            check_cnt: 0,
            up_cnt: 0,
            retry_cnt: 0,
            error: None,
        };
        let mut engine = HashMap::new();
        engine.insert(
            7,
            Item::Host {
                id: 7,
                name: "198.18.2.1".into(),
                parent: 0,
                state: HostState::Unknown,
                disabled: false,
                check_cnt: 5,
                up_cnt: 4,
                retry_cnt: 1,
                error: Some("tcp connect refused".into()),
            },
        );
        Daemon::merge_health(&mut row, &engine);
        match &row {
            Item::Host {
                state,
                check_cnt,
                up_cnt,
                retry_cnt,
                error,
                ..
            } => {
                assert_eq!(*state, HostState::Unknown);
                assert_eq!((*check_cnt, *up_cnt, *retry_cnt), (5, 4, 1));
                assert_eq!(error.as_deref(), Some("tcp connect refused"));
            }
            _ => unreachable!(),
        }
        // A host the engine does not know keeps the parent's row.
        let mut other = row.clone();
        if let Item::Host { id, .. } = &mut other {
            *id = 8;
        }
        let before = other.clone();
        Daemon::merge_health(&mut other, &engine);
        assert_eq!(other, before);
    }
}
