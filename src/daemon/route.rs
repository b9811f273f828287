//! The parent's side of route health injection ([`crate::route`]): on every tick it computes
//! the addresses this node should announce from the current snapshot and the carp demotion,
//! and hands a changed set to the injector thread ([`crate::route::bird::Handle`]), which writes
//! BIRD's include file and asks BIRD to reconfigure.
//!
//! `stop` (SIGTERM/SIGINT, `carpioctl stop`) drains when the `bird` block has a non-zero
//! `drain timeout`: the routes are withdrawn at once, the workers keep forwarding what still
//! arrives, and the daemon stops when [`crate::route::Drain`] says the traffic has gone (or the
//! timeout passed). A second `stop` during a drain stops at once. At shutdown the routes are
//! withdrawn (bounded wait) before carp bows out and the workers stop.
//!
//! The TUN device the routes go via ([`crate::sys::tun`]) is created here, in the daemon's
//! namespace and before the privilege drop (CAP_NET_ADMIN), and handed to the injector thread,
//! which holds it for the life of the process: when carpio dies, the device and with it the
//! routes disappear from BIRD without anyone's help.

use super::{Daemon, log};
use crate::config::{BirdConfig, Config};
use crate::route::{Drain, DrainEnd, Stat, bird};
use crate::sys::tun::Tun;
use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long shutdown waits for BIRD to accept the withdrawal.
const SHUTDOWN_WITHDRAW: Duration = Duration::from_secs(5);

/// Worker counters that count packets to a virtual address handled by a flow (a drain's
/// "traffic still arrives" signal).
const VIP_PACKETS: [&str; 3] = ["flow_hit", "flow_new", "flow_stateless_table_full"];

/// The route injection role of a running daemon.
pub(super) struct RouteRole {
    handle: bird::Handle,
    drain_timeout: Duration,
    drain: Option<Drain>,
    /// The set last handed to the thread.
    sent: Option<BTreeSet<IpAddr>>,
    /// Drain starts and ends (the thread counts the rest).
    counters: crate::counters::Counters<{ Stat::COUNT }>,
    /// The block the role runs with; a reload that changes it is logged once (restart needed).
    cfg: BirdConfig,
    change_logged: bool,
}

/// Starts the injector thread if the configuration has a `bird` block, with the TUN device
/// created in the calling thread's network namespace.
pub(super) fn start(cfg: &Config) -> io::Result<Option<RouteRole>> {
    let Some(b) = &cfg.bird else {
        return Ok(None);
    };
    let tun = Tun::create(&b.device)?;
    let handle = bird::Handle::spawn(PathBuf::from(&b.socket), PathBuf::from(&b.routes), tun)?;
    log(format!(
        "route injection through BIRD at {} (routes file {}, via device {})",
        b.socket, b.routes, b.device
    ));
    Ok(Some(RouteRole {
        handle,
        drain_timeout: b.drain_timeout,
        drain: None,
        sent: None,
        counters: Default::default(),
        cfg: b.clone(),
        change_logged: false,
    }))
}

/// Same block, wherever it is written (spans differ after a reload).
fn same_block(a: Option<&BirdConfig>, b: Option<&BirdConfig>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.socket == b.socket
                && a.routes == b.routes
                && a.drain_timeout == b.drain_timeout
                && a.device == b.device
        }
        (None, None) => true,
        _ => false,
    }
}

impl Daemon {
    /// True while a carp group of this node is demoted (what makes carp masters step down).
    fn demoted(&self) -> bool {
        self.carp
            .iter()
            .any(|h| h.status().vhosts.iter().any(|v| v.demote > 0))
    }

    /// Once per tick: hand a changed route set to the thread; end a finished drain.
    pub(super) fn route_tick(&mut self) {
        if self.route.is_none() {
            return;
        }
        let draining = self.route.as_ref().is_some_and(|r| r.drain.is_some());
        let want = if draining {
            BTreeSet::new()
        } else {
            crate::route::desired(&self.cell.load(), self.demoted())
        };
        let now = self.epoch.elapsed();
        let packets = if draining {
            let c = self.all_counters();
            c.iter()
                .filter(|(n, _)| VIP_PACKETS.contains(&n.as_str()))
                .map(|(_, v)| *v)
                .sum()
        } else {
            0
        };
        let flows = self.mirror.len();
        let changed = !same_block(self.cfg.bird.as_ref(), self.route.as_ref().map(|r| &r.cfg));
        let Some(r) = self.route.as_mut() else {
            return;
        };
        if changed && !r.change_logged {
            r.change_logged = true;
            log("reload: bird block changes need a restart; kept the running one");
        }
        if r.sent.as_ref() != Some(&want) {
            if self.verbose {
                log(format!("route: announcing {want:?}"));
            }
            r.handle.want(want.clone());
            r.sent = Some(want);
        }
        let Some(d) = r.drain.as_mut() else {
            return;
        };
        d.handle_traffic(now, packets);
        let st = r.handle.status();
        let withdrawn = st.settled && st.announced.is_empty();
        if let Some(end) = d.poll_done(now, withdrawn, flows) {
            let (stat, why) = match end {
                DrainEnd::Quiet => (Stat::DrainQuiet, "traffic has gone"),
                DrainEnd::Timeout => (Stat::DrainTimeout, "drain timeout"),
            };
            r.counters.add(stat.index(), 1);
            log(format!("drained ({why}): stopping"));
            self.stop = true;
        }
    }

    /// `stop`: starts a drain and returns true, or returns false when the daemon should stop
    /// now (no route injection, draining off, or already draining).
    pub(super) fn route_drain(&mut self) -> bool {
        let now = self.epoch.elapsed();
        let Some(r) = self.route.as_mut() else {
            return false;
        };
        if r.drain.is_some() || r.drain_timeout.is_zero() {
            return false;
        }
        r.drain = Some(Drain::new(now, r.drain_timeout));
        r.counters.add(Stat::DrainStarted.index(), 1);
        log(format!(
            "draining: routes withdrawn, serving until the traffic has gone (at most {} s)",
            r.drain_timeout.as_secs()
        ));
        self.route_tick();
        true
    }

    /// Shutdown: withdraw every route (bounded) and end the thread.
    pub(super) fn route_shutdown(&mut self) {
        if let Some(r) = self.route.take() {
            r.handle.shutdown(SHUTDOWN_WITHDRAW);
        }
    }

    /// The role's counters for `show counters` (none without a `bird` block).
    pub(super) fn route_counters(&self) -> Vec<(String, u64)> {
        let Some(r) = &self.route else {
            return Vec::new();
        };
        let st = r.handle.status();
        Stat::ALL
            .iter()
            .map(|s| {
                let thread = st
                    .counters
                    .iter()
                    .find(|c| c.0 == s.name())
                    .map_or(0, |c| c.1);
                (s.name().to_string(), thread + r.counters.get(s.index()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::proto::{Object, Request, Response};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    /// A fake BIRD: greets, takes one command per connection and reconfigures, recording the
    /// routes file's content at each `configure`.
    fn fake_bird(sock: &std::path::Path, routes: PathBuf) -> std::sync::mpsc::Receiver<String> {
        let l = UnixListener::bind(sock).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                let _ = c.write_all(b"0001 BIRD 2.0.12 ready.\n");
                let mut cmd = [0u8; 10];
                if c.read_exact(&mut cmd).is_err() {
                    continue;
                }
                let file = std::fs::read_to_string(&routes).unwrap_or_default();
                let _ = c.write_all(b"0002-Reading configuration\n0003 Reconfigured\n");
                if tx.send(file).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Ticks the daemon until `done` holds (bounded).
    fn tick_until(d: &mut Daemon, what: &str, done: impl Fn(&Daemon) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(d) {
            assert!(Instant::now() < deadline, "{what}");
            d.tick();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn announced(d: &Daemon) -> BTreeSet<IpAddr> {
        d.route
            .as_ref()
            .map(|r| r.handle.status())
            .filter(|s| s.settled)
            .map(|s| s.announced)
            .unwrap_or_default()
    }

    fn counter(d: &Daemon, name: &str) -> u64 {
        d.route_counters()
            .into_iter()
            .find(|c| c.0 == name)
            .map_or(0, |c| c.1)
    }

    #[test]
    fn announces_withdraws_and_drains() {
        let dir = std::env::temp_dir().join(format!("carpio-daemon-route-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (sock, routes) = (dir.join("bird.ctl"), dir.join("routes.conf"));
        let seen = fake_bird(&sock, routes.clone());
        let conf = dir.join("carpio.conf");
        std::fs::write(
            &conf,
            format!(
                "bird {{ socket \"{}\", routes \"{}\", drain timeout 60 }}\n\
                 table <a> {{ 198.18.2.11 }}\n\
                 redirect web {{\n listen on 198.18.1.100 tcp port 80\n \
                 route to <a> check tcp interface e0\n}}\n",
                sock.display(),
                routes.display()
            ),
        )
        .unwrap();
        let mut d = super::super::tests::daemon(&conf);
        // The TUN device in a namespace of the test's own (never the root one).
        let mut lab = crate::lab::Lab::new("droute").unwrap();
        lab.ns("n").unwrap();
        let cfg = d.cfg.clone();
        d.route = lab.run_in("n", move || start(&cfg)).unwrap().unwrap();
        let link = || {
            lab.ip(
                "n",
                &["link", "show", "dev", crate::config::DEFAULT_BIRD_DEVICE],
            )
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let vip: IpAddr = "198.18.1.100".parse().unwrap();

        tick_until(&mut d, "announce", |d| announced(d).contains(&vip));
        let file = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            file.contains("route 198.18.1.100/32 via \"carpio-rt\";"),
            "{file}"
        );
        assert!(
            link().is_some_and(|l| l.contains("LOWER_UP")),
            "{:?}",
            link()
        );

        // The redirect goes down (disabled): withdrawn; back up: announced again.
        let off = Request::Set {
            object: Object::Redirect,
            target: "web".into(),
            enable: false,
        };
        assert_eq!(d.handle(off), Response::Ok);
        tick_until(&mut d, "withdraw", |d| {
            d.route.as_ref().is_some_and(|r| r.handle.status().settled) && announced(d).is_empty()
        });
        let on = Request::Set {
            object: Object::Redirect,
            target: "web".into(),
            enable: true,
        };
        assert_eq!(d.handle(on), Response::Ok);
        tick_until(&mut d, "announce again", |d| announced(d).contains(&vip));

        // `stop` drains: not stopped yet, routes withdrawn, then (no flows) stopped.
        assert_eq!(d.handle(Request::Stop), Response::Ok);
        assert!(!d.stop, "the first stop drains");
        assert_eq!(counter(&d, "route_drain_started"), 1);
        tick_until(&mut d, "drain ends", |d| d.stop);
        assert!(announced(&d).is_empty());
        assert_eq!(counter(&d, "route_drain_ended_quiet"), 1);
        assert_eq!(counter(&d, "route_withdrawn"), 2);
        // A second stop during a drain stops at once.
        d.stop = false;
        assert!(!d.route_drain(), "already draining");
        d.route_shutdown();
        assert!(d.route.is_none());
        assert!(d.route_counters().is_empty());
        // The device went with the role.
        let deadline = Instant::now() + Duration::from_secs(10);
        while link().is_some() {
            assert!(Instant::now() < deadline, "device left after shutdown");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn block_changes_ignore_positions() {
        const R: &str = "table <a> { 198.18.2.11 }\n\
            redirect w {\n listen on 198.18.1.100 tcp port 80\n forward to <a> check tcp\n}\n";
        let a = crate::config::parse_str("a.conf", &format!("bird {{ routes \"/r\" }}\n{R}"), &[])
            .unwrap()
            .bird
            .unwrap();
        let text = format!("\n\nbird {{\n routes \"/r\"\n}}\n{R}");
        let b = crate::config::parse_str("b.conf", &text, &[])
            .unwrap()
            .bird
            .unwrap();
        assert_ne!(a, b, "different spans");
        assert!(same_block(Some(&a), Some(&b)));
        assert!(same_block(None, None));
        assert!(!same_block(None, Some(&b)));
        let c = BirdConfig {
            drain_timeout: Duration::ZERO,
            ..b.clone()
        };
        assert!(!same_block(Some(&c), Some(&b)));
        let c = BirdConfig {
            device: "other".into(),
            ..b.clone()
        };
        assert!(!same_block(Some(&c), Some(&b)));
    }
}
