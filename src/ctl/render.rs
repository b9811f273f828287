//! relayctl(8)'s text output, byte for byte (relayctl.c `show_summary_msg`,
//! `show_session_msg`, `print_statistics`, `print_*_status`), plus carpio's own `show carp`,
//! `show states` and `show counters`.

use super::proto::{
    CarpVhost, HostState, HostTraffic, Item, ServiceTraffic, Session, Show, State, Stats,
};
use std::fmt::Write;

/// relayctl's header line for every `show` except `sessions`.
pub fn header() -> String {
    format!(
        "{:<4}\t{:<8}\t{:<24}\t{:<7}\tStatus\n",
        "Id", "Type", "Name", "Avlblty"
    )
}

fn row(out: &mut String, id: u32, ty: &str, name: &str, avail: &str, status: &str) {
    let _ = writeln!(out, "{id:<4}\t{ty:<8}\t{name:<24}\t{avail:<7}\t{status}");
}

/// `%.2f%%` of up/check, or empty when the host was never checked.
pub fn availability(check_cnt: u64, up_cnt: u64) -> String {
    if check_cnt == 0 {
        String::new()
    } else {
        format!("{:.2}%", up_cnt as f64 * 100.0 / check_cnt as f64)
    }
}

fn redirect_status(disabled: bool, down: bool, backup: bool) -> &'static str {
    if disabled {
        "disabled"
    } else if down {
        "down"
    } else if backup {
        "active (using backup table)"
    } else {
        "active"
    }
}

fn table_status(up: u32, disabled: bool) -> String {
    if disabled {
        "disabled".into()
    } else if up == 0 {
        "empty".into()
    } else {
        format!("active ({up} hosts)")
    }
}

fn host_status(state: HostState, disabled: bool) -> &'static str {
    if disabled {
        return "disabled";
    }
    match state {
        HostState::Down => "down",
        HostState::Unknown => "unknown",
        HostState::Up => "up",
    }
}

fn statistics(out: &mut String, s: &Stats) {
    if s.cnt == 0 {
        return;
    }
    let _ = write!(
        out,
        "\t{e:>8}\ttotal: {} sessions\n\t{e:>8}\tlast: {}/{}s {}/h {}/d sessions\n\t{e:>8}\taverage: {}/{}s {}/h {}/d sessions\n",
        s.cnt,
        s.last,
        s.interval,
        s.last_hour,
        s.last_day,
        s.avg,
        s.interval,
        s.avg_hour,
        s.avg_day,
        e = ""
    );
}

/// Renders a summary for `show summary|hosts|redirects|relays|routers`, header included.
pub fn summary(items: &[Item], what: Show) -> String {
    let mut out = header();
    let sum = what == Show::Summary;
    for it in items {
        match it {
            Item::Redirect {
                id,
                name,
                disabled,
                down,
                backup,
            } if sum || what == Show::Redirects => row(
                &mut out,
                *id,
                "redirect",
                name,
                "",
                redirect_status(*disabled, *down, *backup),
            ),
            Item::RedirectStats(s) if what == Show::Redirects => statistics(&mut out, s),
            Item::Table {
                id,
                name,
                up,
                disabled,
            } if sum || what == Show::Hosts => row(
                &mut out,
                *id,
                "table",
                name,
                "",
                &table_status(*up, *disabled),
            ),
            Item::Host {
                id,
                name,
                parent,
                state,
                disabled,
                check_cnt,
                up_cnt,
                retry_cnt,
                error,
            } if sum || what == Show::Hosts => {
                let shown = if *parent != 0 {
                    format!("{name} parent {parent}")
                } else {
                    name.clone()
                };
                row(
                    &mut out,
                    *id,
                    "host",
                    &shown,
                    &availability(*check_cnt, *up_cnt),
                    host_status(*state, *disabled),
                );
                if what == Show::Hosts && *check_cnt > 0 {
                    let _ = write!(out, "\t{:>8}\ttotal: {up_cnt}/{check_cnt} checks", "");
                    if *retry_cnt > 0 {
                        let _ = write!(out, ", {retry_cnt} retries");
                    }
                    if let (Some(e), HostState::Down) = (error, state) {
                        let _ = write!(out, ", error: {e}");
                    }
                    out.push('\n');
                }
            }
            Item::Relay { id, name, disabled } if sum || what == Show::Relays => row(
                &mut out,
                *id,
                "relay",
                name,
                "",
                if *disabled { "disabled" } else { "active" },
            ),
            Item::RelayStats(s) if what == Show::Relays => statistics(&mut out, s),
            Item::Router {
                id,
                name,
                disabled,
                rtable,
                label,
            } if sum || what == Show::Routers => {
                row(
                    &mut out,
                    *id,
                    "router",
                    name,
                    "",
                    if *disabled { "disabled" } else { "active" },
                );
                if what == Show::Routers {
                    if *rtable != 0 {
                        let _ = writeln!(out, "\t{:>8}\trtable: {rtable}", "");
                    }
                    if !label.is_empty() {
                        let _ = writeln!(out, "\t{:>8}\trtlabel: {label}", "");
                    }
                }
            }
            Item::Route { addr, prefixlen } if what == Show::Routers => {
                let _ = writeln!(out, "\t{:>8}\troute: {addr}/{prefixlen}", "");
            }
            _ => {}
        }
    }
    out
}

/// relayctl's `print_time`: `H:MM:SS` with at least two hour digits.
pub fn duration(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// `show sessions`.
pub fn sessions(list: &[Session]) -> String {
    let mut out = String::new();
    for s in list {
        let _ = writeln!(
            out,
            "session {}:{} {}:{} -> {}:{}\t{}",
            s.worker,
            s.id,
            s.client,
            s.client_port,
            s.backend,
            s.backend_port,
            if s.done { "DONE" } else { "RUNNING" }
        );
        let _ = writeln!(
            out,
            "\tage {}, idle {}, relay {}",
            duration(s.age_secs),
            duration(s.idle_secs),
            s.relay
        );
    }
    out
}

/// `show carp`: one line per vhost, then the carp counters.
pub fn carp(vhosts: &[CarpVhost], counters: &[(String, u64)]) -> String {
    let mut out = format!(
        "{:<10}\t{:<4}\t{:<7}\t{:<7}\t{:<7}\t{:<6}\t{}\n",
        "Interface", "Vhid", "State", "Advbase", "Advskew", "Demote", "Balancing"
    );
    for v in vhosts {
        let _ = writeln!(
            out,
            "{:<10}\t{:<4}\t{:<7}\t{:<7}\t{:<7}\t{:<6}\t{}",
            v.interface, v.vhid, v.state, v.advbase, v.advskew, v.demote, v.balancing
        );
    }
    out.push_str(&counter_lines(counters));
    out
}

/// `show states`.
pub fn states(list: &[State]) -> String {
    let mut out = String::new();
    for s in list {
        let _ = writeln!(
            out,
            "{} {} -> {} -> {}\t{}\tage {}, expires in {}, id {:016x}/{:08x}",
            s.proto,
            s.client,
            s.vip,
            s.backend,
            s.state,
            duration(u64::from(s.age_secs)),
            duration(u64::from(s.expires_in)),
            s.id,
            s.creator
        );
        // A last field, so the columns before it parse as they did (relayctl has none).
        if !s.origin.is_empty() {
            out.pop();
            let _ = writeln!(out, ", origin {}", s.origin);
        }
    }
    out
}

/// `show traffic`: one line per virtual service, then one per backend host.
pub fn traffic(services: &[ServiceTraffic], hosts: &[HostTraffic]) -> String {
    let mut out = format!(
        "{:<16}\t{:<24}\t{:>12}\t{:>14}\t{:>10}\t{:>8}\n",
        "Redirect", "Listen", "Packets", "Bytes", "Flows", "States"
    );
    for s in services {
        let listen = format!("{} {} {}", s.address, s.proto, s.port);
        let _ = writeln!(
            out,
            "{:<16}\t{:<24}\t{:>12}\t{:>14}\t{:>10}\t{:>8}",
            s.redirect, listen, s.packets, s.bytes, s.flows, s.states
        );
    }
    let _ = writeln!(
        out,
        "{:<16}\t{:<24}\t{:>12}\t{:>14}\t{:>10}\t{:>8}",
        "Host", "", "Packets", "Bytes", "Flows", "States"
    );
    for h in hosts {
        let _ = writeln!(
            out,
            "{:<16}\t{:<24}\t{:>12}\t{:>14}\t{:>10}\t{:>8}",
            h.address, "", h.packets, h.bytes, h.flows, h.states
        );
    }
    out
}

/// `show counters`: `name value` per line, every counter (zeros included).
pub fn counter_lines(counters: &[(String, u64)]) -> String {
    let width = counters.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (n, v) in counters {
        let _ = writeln!(out, "{n:<width$} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: u32, name: &str, state: HostState, checks: (u64, u64)) -> Item {
        Item::Host {
            id,
            name: name.into(),
            parent: 0,
            state,
            disabled: false,
            check_cnt: checks.0,
            up_cnt: checks.1,
            retry_cnt: 0,
            error: if state == HostState::Down {
                Some("connection refused".into())
            } else {
                None
            },
        }
    }

    /// The sample of the spec (§7), byte for byte.
    #[test]
    fn summary_matches_relayctl_sample() {
        let items = vec![
            Item::Redirect {
                id: 1,
                name: "www".into(),
                disabled: false,
                down: false,
                backup: false,
            },
            Item::RedirectStats(Stats::default()),
            Item::Table {
                id: 1,
                name: "phphosts:8080".into(),
                up: 2,
                disabled: false,
            },
            host(1, "front-www1.private.example.com", HostState::Up, (4, 4)),
            host(2, "front-www2.private.example.com", HostState::Down, (4, 0)),
            Item::Relay {
                id: 1,
                name: "tlsaccel".into(),
                disabled: false,
            },
            Item::Router {
                id: 1,
                name: "uplinks".into(),
                disabled: false,
                rtable: 0,
                label: String::new(),
            },
        ];
        let expected = "Id  \tType    \tName                    \tAvlblty\tStatus\n\
1   \tredirect\twww                     \t       \tactive\n\
1   \ttable   \tphphosts:8080           \t       \tactive (2 hosts)\n\
1   \thost    \tfront-www1.private.example.com\t100.00%\tup\n\
2   \thost    \tfront-www2.private.example.com\t0.00%  \tdown\n\
1   \trelay   \ttlsaccel                \t       \tactive\n\
1   \trouter  \tuplinks                 \t       \tactive\n";
        assert_eq!(summary(&items, Show::Summary), expected);
    }

    #[test]
    fn show_hosts_adds_check_totals_and_errors() {
        let items = vec![
            Item::Table {
                id: 1,
                name: "t".into(),
                up: 0,
                disabled: false,
            },
            host(3, "h", HostState::Down, (10, 7)),
        ];
        let out = summary(&items, Show::Hosts);
        assert!(out.ends_with("3   \thost    \th                       \t70.00% \tdown\n\t        \ttotal: 7/10 checks, error: connection refused\n"), "{out}");
    }

    #[test]
    fn traffic_table() {
        let s = traffic(
            &[ServiceTraffic {
                redirect: "dns".into(),
                address: "198.18.0.10".into(),
                proto: "udp".into(),
                port: "53".into(),
                packets: 6,
                bytes: 384,
                flows: 3,
                states: 2,
            }],
            &[HostTraffic {
                address: "198.18.1.1".into(),
                packets: 6,
                bytes: 384,
                flows: 3,
                states: 2,
            }],
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4, "{s}");
        assert_eq!(
            lines[1],
            "dns             \t198.18.0.10 udp 53      \t           6\t           384\t         3\t       2"
        );
        assert!(lines[2].starts_with("Host            \t"), "{s}");
        assert!(lines[3].starts_with("198.18.1.1      \t"), "{s}");
        assert!(lines[3].ends_with("\t         3\t       2"), "{s}");
    }

    #[test]
    fn redirect_stats_only_in_show_redirects() {
        let st = Stats {
            interval: 60,
            cnt: 5,
            last: 1,
            avg: 2,
            last_hour: 3,
            avg_hour: 4,
            last_day: 5,
            avg_day: 6,
        };
        let items = vec![
            Item::Redirect {
                id: 2,
                name: "dns".into(),
                disabled: false,
                down: true,
                backup: false,
            },
            Item::RedirectStats(st),
        ];
        let out = summary(&items, Show::Redirects);
        assert!(out.contains("down\n\t        \ttotal: 5 sessions\n\t        \tlast: 1/60s 3/h 5/d sessions\n\t        \taverage: 2/60s 4/h 6/d sessions\n"), "{out}");
        assert!(!summary(&items, Show::Summary).contains("total"));
    }

    #[test]
    fn durations_have_two_digit_hours_at_least() {
        assert_eq!(duration(0), "00:00:00");
        assert_eq!(duration(3 * 3600 + 62), "03:01:02");
        assert_eq!(duration(123 * 3600), "123:00:00");
    }
}
