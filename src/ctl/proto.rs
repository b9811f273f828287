//! The control protocol between `carpioctl` and the daemon: one JSON request per line on a unix
//! stream socket, answered by JSON response lines. A show request is answered with one
//! [`Response`]; `monitor` streams [`Response::Event`]s until the client goes away.
//!
//! Requests are bounded ([`MAX_REQUEST`] bytes); anything that does not parse is answered with
//! [`Response::Error`] and the connection stays usable, so a bad client never hurts the daemon.

use serde::{Deserialize, Serialize};

/// Largest request line the daemon reads; longer ones are rejected with an error reply.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Default control socket (relayd's is /var/run/relayd.sock).
pub const DEFAULT_SOCKET: &str = "/var/run/carpio.sock";

/// What `show` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Show {
    Summary,
    Hosts,
    Redirects,
    Relays,
    Routers,
    Sessions,
    Carp,
    States,
    Counters,
    /// carpio's per-service and per-host traffic figures.
    Traffic,
}

/// The object of an enable/disable command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Object {
    Host,
    Table,
    Redirect,
}

/// A request from carpioctl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Show {
        what: Show,
    },
    /// Enable or disable a host, table or redirect by name or numeric id.
    Set {
        object: Object,
        target: String,
        enable: bool,
    },
    Reload,
    Load {
        path: String,
    },
    Monitor,
    Poll,
    Log {
        verbose: bool,
    },
    Stop,
}

/// Check and session statistics, as relayd's `ctl_stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub interval: u32,
    pub cnt: u64,
    pub last: u32,
    pub avg: u32,
    pub last_hour: u32,
    pub avg_hour: u32,
    pub last_day: u32,
    pub avg_day: u32,
}

/// A host's check state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Up,
    Down,
    Unknown,
}

/// One element of a summary, in the order relayd sends them: each redirect (its stats, its
/// tables and their hosts, its backup table), each relay, each router (its routes, its gateway
/// table). The client filters by what was asked, as relayctl does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    Redirect {
        id: u32,
        name: String,
        disabled: bool,
        down: bool,
        backup: bool,
    },
    RedirectStats(Stats),
    Table {
        id: u32,
        name: String,
        up: u32,
        disabled: bool,
    },
    Host {
        id: u32,
        name: String,
        parent: u32,
        state: HostState,
        disabled: bool,
        check_cnt: u64,
        up_cnt: u64,
        retry_cnt: u32,
        /// The last check's error, shown while the host is down.
        error: Option<String>,
    },
    Relay {
        id: u32,
        name: String,
        disabled: bool,
    },
    RelayStats(Stats),
    Router {
        id: u32,
        name: String,
        disabled: bool,
        rtable: u32,
        label: String,
    },
    Route {
        addr: String,
        prefixlen: u8,
    },
}

/// An active relay session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub worker: u32,
    pub id: u32,
    pub client: String,
    pub client_port: u16,
    pub backend: String,
    pub backend_port: u16,
    pub done: bool,
    pub age_secs: u64,
    pub idle_secs: u64,
    pub relay: u32,
}

/// A carp vhost as `show carp` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarpVhost {
    pub interface: String,
    pub vhid: u8,
    pub state: String,
    pub advbase: u8,
    pub advskew: u8,
    pub demote: u8,
    pub balancing: String,
}

/// Traffic of one virtual service (a redirect's `listen on`), summed over the workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTraffic {
    pub redirect: String,
    pub address: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// `53` or `8000:8010`.
    pub port: String,
    pub packets: u64,
    pub bytes: u64,
    /// Flows created since the daemon started.
    pub flows: u64,
    /// Flows live now.
    pub states: u64,
}

/// Traffic to and from one backend host (by address), summed over the workers and services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTraffic {
    pub address: String,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    pub states: u64,
}

/// A flow state as `show states` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub proto: String,
    pub client: String,
    pub vip: String,
    pub backend: String,
    pub state: String,
    pub age_secs: u32,
    pub expires_in: u32,
    pub creator: u32,
    pub id: u64,
    /// Who created the flow: `local` (this node's workers) or `pfsync` (a peer, learned over
    /// pfsync). Absent from older daemons' replies (empty).
    #[serde(default)]
    pub origin: String,
}

/// A reply from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// relayctl's "command succeeded".
    Ok,
    /// relayctl's "command failed", with carpio's reason.
    Failed {
        reason: String,
    },
    /// The request itself was bad (unparsable, too long, unknown command).
    Error {
        message: String,
    },
    Summary {
        items: Vec<Item>,
    },
    Sessions {
        sessions: Vec<Session>,
    },
    Carp {
        vhosts: Vec<CarpVhost>,
        counters: Vec<(String, u64)>,
    },
    States {
        states: Vec<State>,
    },
    Counters {
        counters: Vec<(String, u64)>,
    },
    Traffic {
        services: Vec<ServiceTraffic>,
        hosts: Vec<HostTraffic>,
    },
    /// A `monitor` event: what changed, an object id and name, and a unix timestamp.
    Event {
        kind: String,
        id: u32,
        name: String,
        detail: String,
        timestamp: u64,
    },
}

/// Parses one request line; the error text is what the daemon sends back.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!(
            "request too long ({} bytes, at most {MAX_REQUEST})",
            line.len()
        ));
    }
    serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))
}

/// Serialises a message as one line (with the trailing newline).
pub fn to_line<T: Serialize>(msg: &T) -> String {
    let mut s = serde_json::to_string(msg)
        .unwrap_or_else(|e| format!("{{\"reply\":\"error\",\"message\":\"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Show { what: Show::Hosts },
            Request::Set {
                object: Object::Host,
                target: "www1".into(),
                enable: false,
            },
            Request::Reload,
            Request::Load {
                path: "/etc/x.conf".into(),
            },
            Request::Log { verbose: true },
        ] {
            let line = to_line(&r);
            assert!(line.ends_with('\n'));
            assert_eq!(parse_request(line.trim_end().as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_and_oversize_requests_are_errors() {
        assert!(
            parse_request(b"\xff\xfe")
                .unwrap_err()
                .starts_with("bad request")
        );
        assert!(
            parse_request(br#"{"cmd":"format_disk"}"#)
                .unwrap_err()
                .starts_with("bad request")
        );
        let big = vec![b' '; MAX_REQUEST + 1];
        assert!(
            parse_request(&big)
                .unwrap_err()
                .starts_with("request too long")
        );
    }
}
