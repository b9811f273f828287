//! A small network-namespace harness shared by the root-only tests, the demo and benchmarks.
//!
//! Network safety (DESIGN.md): every namespace a [`Lab`] creates is named
//! `cio-<pid>-<tag>-<name>`, every IPv4 address and neighbour it configures must be in
//! 198.18.0.0/15 (RFC 2544's benchmarking range; anything else is refused), nothing is ever
//! created in or moved through the root namespace (veth pairs are created inside their first
//! namespace), and on `Drop` the lab kills the processes it spawned (by PID) and deletes exactly
//! the namespaces it created, even when a test fails. It never runs `ip -all netns delete`.
//!
//! Commands go through `ip` (iproute2); [`Lab::run_in`] runs a closure on a dedicated thread
//! inside a namespace (see [`crate::sys::netns`]).

use std::io;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};

/// Options for a veth pair.
#[derive(Debug, Clone)]
pub struct VethConfig {
    /// Short namespace name (as given to [`Lab::ns`]) and interface name of each end.
    pub a: (String, String),
    pub b: (String, String),
    /// RX/TX queues on each end (veth defaults to 1). AF_XDP binds one socket per RX queue.
    pub queues: u32,
}

impl VethConfig {
    pub fn new(a_ns: &str, a_if: &str, b_ns: &str, b_if: &str) -> Self {
        Self {
            a: (a_ns.into(), a_if.into()),
            b: (b_ns.into(), b_if.into()),
            queues: 1,
        }
    }
}

/// A set of namespaces, links and processes that disappears on `Drop`.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

/// True if `a` is in 198.18.0.0/15, the only IPv4 range a lab may use.
pub fn is_lab_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 198 && (o[1] & 0xfe) == 18
}

fn check_cidr(cidr: &str) -> io::Result<Ipv4Addr> {
    let addr = cidr.split('/').next().unwrap_or("");
    match addr.parse::<Ipv4Addr>() {
        Ok(a) if is_lab_v4(a) => Ok(a),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("lab address {cidr:?} is not in 198.18.0.0/15"),
        )),
    }
}

fn check_name(s: &str) -> io::Result<()> {
    if !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad lab name {s:?}"),
        ))
    }
}

/// Runs a command and turns a non-zero exit into an error carrying its stderr.
fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Lab {
    /// A new, empty lab. `tag` (letters, digits, `-`, `_`) makes the namespaces unique per test;
    /// the process id makes them unique per run.
    pub fn new(tag: &str) -> io::Result<Self> {
        check_name(tag)?;
        Ok(Self {
            prefix: format!("cio-{}-{tag}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
        })
    }

    /// Full namespace name of the short name `name`.
    pub fn ns_name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates namespace `name` with `lo` up; returns its full name.
    pub fn ns(&mut self, name: &str) -> io::Result<String> {
        check_name(name)?;
        let full = self.ns_name(name);
        run(Command::new("ip").args(["netns", "add", &full]))?;
        self.namespaces.push(full.clone());
        self.ip(name, &["link", "set", "lo", "up"])?;
        Ok(full)
    }

    /// Runs `ip -n <ns> ARGS`.
    pub fn ip(&self, ns: &str, args: &[&str]) -> io::Result<Output> {
        let full = self.owned(ns)?;
        run(Command::new("ip").arg("-n").arg(full).args(args))
    }

    fn owned(&self, ns: &str) -> io::Result<String> {
        let full = self.ns_name(ns);
        if self.namespaces.contains(&full) {
            Ok(full)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("namespace {ns:?} is not part of this lab"),
            ))
        }
    }

    /// Creates a veth pair between two of the lab's namespaces (created inside the first, its
    /// peer directly in the second) and sets both ends up.
    pub fn veth(&mut self, cfg: &VethConfig) -> io::Result<()> {
        check_name(&cfg.a.1)?;
        check_name(&cfg.b.1)?;
        let peer_ns = self.owned(&cfg.b.0)?;
        let q = cfg.queues.max(1).to_string();
        self.ip(
            &cfg.a.0,
            &[
                "link",
                "add",
                &cfg.a.1,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &cfg.b.1,
                "netns",
                &peer_ns,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
            ],
        )?;
        self.ip(&cfg.a.0, &["link", "set", &cfg.a.1, "up"])?;
        self.ip(&cfg.b.0, &["link", "set", &cfg.b.1, "up"])?;
        Ok(())
    }

    /// Creates bridge `br` in `ns` and enslaves the given interfaces of that namespace.
    pub fn bridge(&mut self, ns: &str, br: &str, members: &[&str]) -> io::Result<()> {
        check_name(br)?;
        self.ip(ns, &["link", "add", br, "type", "bridge"])?;
        for m in members {
            self.ip(ns, &["link", "set", m, "master", br])?;
        }
        self.ip(ns, &["link", "set", br, "up"])?;
        Ok(())
    }

    /// Adds an IPv4 address (`a.b.c.d/len`, inside 198.18.0.0/15) to `ifname` in `ns`.
    pub fn addr(&self, ns: &str, ifname: &str, cidr: &str) -> io::Result<()> {
        check_cidr(cidr)?;
        self.ip(ns, &["addr", "add", cidr, "dev", ifname])?;
        Ok(())
    }

    /// Adds a permanent neighbour entry (needed where XDP swallows ARP, feasibility.md §3).
    pub fn neigh(&self, ns: &str, ifname: &str, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
        check_cidr(&ip.to_string())?;
        let m = mac_string(mac);
        self.ip(
            ns,
            &[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &m,
                "dev",
                ifname,
                "nud",
                "permanent",
            ],
        )?;
        Ok(())
    }

    /// The MAC address of `ifname` in `ns` (parsed from `ip -o link show`).
    pub fn mac(&self, ns: &str, ifname: &str) -> io::Result<[u8; 6]> {
        let out = self.ip(ns, &["-o", "link", "show", "dev", ifname])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "link/ether"
                && let Some(m) = words.next().and_then(parse_mac)
            {
                return Ok(m);
            }
        }
        Err(io::Error::other(format!("no MAC for {ifname} in {ns}")))
    }

    /// `ip -o link show dev IFNAME` in `ns`, as text (tests look for `xdp` / `xdpgeneric`).
    pub fn link_show(&self, ns: &str, ifname: &str) -> io::Result<String> {
        let out = self.ip(ns, &["-d", "-o", "link", "show", "dev", ifname])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `ip netns exec <ns> ARGS...` to completion; a non-zero exit is an error.
    pub fn exec(&self, ns: &str, args: &[&str]) -> io::Result<Output> {
        let full = self.owned(ns)?;
        run(Command::new("ip").args(["netns", "exec", &full]).args(args))
    }

    /// Starts `ip netns exec <ns> ARGS...` in the background; returns its PID. The lab kills it
    /// on `Drop` (or earlier with [`Lab::kill`]). Output goes to null.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> io::Result<u32> {
        let full = self.owned(ns)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &full])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Kills (SIGKILL) and reaps the background process `pid` if this lab started it.
    pub fn kill(&mut self, pid: u32) -> bool {
        match self.children.iter().position(|c| c.id() == pid) {
            Some(i) => {
                let mut c = self.children.swap_remove(i);
                let _ = c.kill();
                let _ = c.wait();
                true
            }
            None => false,
        }
    }

    /// Runs `f` on a dedicated thread inside the namespace `ns` and returns its result.
    pub fn run_in<F, R>(&self, ns: &str, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let full = self.owned(ns)?;
        crate::sys::netns::run_in(&full, f)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip")
                .args(["netns", "delete", &ns])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_benchmark_range_is_accepted() {
        assert!(check_cidr("198.18.0.1/24").is_ok());
        assert!(check_cidr("198.19.255.254/24").is_ok());
        assert!(check_cidr("198.20.0.1/24").is_err());
        assert!(check_cidr("198.17.255.255").is_err());
        assert!(check_cidr("10.0.0.1/8").is_err());
        assert!(check_cidr("garbage").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(Lab::new("ok-tag_1").is_ok());
        assert!(Lab::new("bad tag").is_err());
        assert!(Lab::new("").is_err());
        assert!(Lab::new("a/b").is_err());
        let lab = Lab::new("t").unwrap();
        assert_eq!(
            lab.ns_name("lb"),
            format!("cio-{}-t-lb", std::process::id())
        );
        // Namespaces the lab did not create are refused.
        assert!(lab.ip("lb", &["link"]).is_err());
    }

    #[test]
    fn mac_round_trip() {
        let m = [0x02, 0, 0xab, 0x10, 0xff, 0x01];
        assert_eq!(parse_mac(&mac_string(m)), Some(m));
        assert_eq!(parse_mac("02:00:ab"), None);
        assert_eq!(parse_mac("02:00:ab:10:ff:01:00"), None);
        assert_eq!(parse_mac("zz:00:ab:10:ff:01"), None);
    }
}
