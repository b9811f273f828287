//! The nftables `netdev` ingress drop that goes with the AF_PACKET path: AF_PACKET taps a copy
//! of each frame before the ingress hook (net/core/dev.c, `__netif_receive_skb_core`: ptype_all
//! taps, then `nf_ingress`), so dropping the virtual services' traffic at netdev ingress keeps
//! the host stack from answering it (port unreachable, RST) while carpio still sees it
//! (feasibility.md §3).
//!
//! Only virtual-service traffic (and non-first fragments to VIP addresses) is dropped; ARP,
//! CARP and pfsync still reach the kernel. With NAT, the backends' answers (matched on their
//! source address and port, the `sources` of [`ruleset_with_sources`]) are dropped too: the
//! balancer is the backends' gateway, and a forwarding kernel would otherwise route them to the
//! client un-NATed, beside the copy carpio rewrites. Installed through the `nft` command, optionally
//! inside a named network namespace (`ip netns exec`).

use super::cbpf::Service;
use std::io::{self, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// Table names: letters, digits, `_` (nft identifiers; keeps the ruleset unambiguous).
fn check_ident(s: &str) -> io::Result<()> {
    if !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad nft identifier {s:?}"),
        ))
    }
}

fn check_ifname(s: &str) -> io::Result<()> {
    if !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {s:?}"),
        ))
    }
}

/// The ruleset text: table `netdev <table>` with one ingress chain on `ifname`.
pub fn ruleset(
    table: &str,
    ifname: &str,
    services: &[Service],
    vips: &[IpAddr],
) -> io::Result<String> {
    ruleset_with_sources(table, ifname, services, &[], vips, &[])
}

/// [`ruleset`] plus drops of the NAT return path: packets *from* each of `sources` (address,
/// protocol, source port range).
pub fn ruleset_with_sources(
    table: &str,
    ifname: &str,
    services: &[Service],
    sources: &[Service],
    vips: &[IpAddr],
    locals: &[IpAddr],
) -> io::Result<String> {
    check_ident(table)?;
    check_ifname(ifname)?;
    let mut s = format!(
        "table netdev {table} {{\n  chain ingress {{\n    type filter hook ingress device \"{ifname}\" priority -500; policy accept;\n"
    );
    for v in vips {
        match v {
            IpAddr::V4(a) => s.push_str(&format!(
                "    ip daddr {a} ip frag-off & 0x1fff != 0 drop\n"
            )),
            IpAddr::V6(a) => s.push_str(&format!("    ip6 daddr {a} exthdr frag exists drop\n")),
        }
    }
    for (list, dir) in [(services, "d"), (sources, "s")] {
        for svc in list {
            let (fam, nh) = match svc.addr {
                IpAddr::V4(_) => ("ip", "ip protocol"),
                // meta l4proto: the transport protocol after any extension headers.
                IpAddr::V6(_) => ("ip6", "meta l4proto"),
            };
            let l4 = match svc.proto {
                6 => Some("tcp"),
                17 => Some("udp"),
                132 => Some("sctp"),
                _ => None,
            };
            let ports = match (l4, svc.ports) {
                (Some(l4), Some((lo, hi))) if lo == hi => format!(" {l4} {dir}port {lo}"),
                (Some(l4), Some((lo, hi))) => format!(" {l4} {dir}port {lo}-{hi}"),
                _ => String::new(),
            };
            // A return-path drop spares packets to the balancer's own addresses (`locals`):
            // those answer the balancer's own connections (relays, health checks) to the same
            // backend ports, and belong to the kernel.
            let own: Vec<String> = locals
                .iter()
                .filter(|a| a.is_ipv4() == svc.addr.is_ipv4())
                .map(IpAddr::to_string)
                .collect();
            let except = if dir == "s" && !own.is_empty() {
                format!(" {fam} daddr != {{ {} }}", own.join(", "))
            } else {
                String::new()
            };
            s.push_str(&format!(
                "    {fam} {dir}addr {}{except} {nh} {}{ports} drop\n",
                svc.addr, svc.proto
            ));
        }
    }
    s.push_str("  }\n}\n");
    Ok(s)
}

fn nft(netns: Option<&str>, args: &[&str], stdin: Option<&str>) -> io::Result<()> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => Command::new("nft"),
    };
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// An installed `netdev` table, deleted on drop.
pub struct IngressDrop {
    netns: Option<String>,
    table: String,
}

impl IngressDrop {
    /// Installs the drop table in `netns` (or the current namespace with `None`).
    pub fn install(
        netns: Option<&str>,
        table: &str,
        ifname: &str,
        services: &[Service],
        vips: &[IpAddr],
    ) -> io::Result<Self> {
        Self::install_with_sources(netns, table, ifname, services, &[], vips, &[])
    }

    /// [`IngressDrop::install`] with NAT return-path drops (see [`ruleset_with_sources`]).
    pub fn install_with_sources(
        netns: Option<&str>,
        table: &str,
        ifname: &str,
        services: &[Service],
        sources: &[Service],
        vips: &[IpAddr],
        locals: &[IpAddr],
    ) -> io::Result<Self> {
        let text = ruleset_with_sources(table, ifname, services, sources, vips, locals)?;
        nft(netns, &["-f", "-"], Some(&text))?;
        Ok(Self {
            netns: netns.map(str::to_owned),
            table: table.to_owned(),
        })
    }

    /// Deletes the table now.
    pub fn remove(mut self) -> io::Result<()> {
        let r = self.delete();
        self.table.clear();
        r
    }

    fn delete(&self) -> io::Result<()> {
        if self.table.is_empty() {
            return Ok(());
        }
        nft(
            self.netns.as_deref(),
            &["delete", "table", "netdev", &self.table],
            None,
        )
    }
}

impl Drop for IngressDrop {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_ruleset() {
        let services = [
            Service {
                addr: "198.18.0.2".parse().unwrap(),
                proto: 17,
                ports: Some((9000, 9000)),
            },
            Service {
                addr: "2001:db8::1".parse().unwrap(),
                proto: 6,
                ports: Some((8000, 8099)),
            },
            Service {
                addr: "198.18.0.3".parse().unwrap(),
                proto: 47,
                ports: None,
            },
        ];
        let vips = ["198.18.0.2".parse().unwrap()];
        let got = ruleset("carpio_lb0", "lb0", &services, &vips).unwrap();
        assert_eq!(
            got,
            "table netdev carpio_lb0 {\n  chain ingress {\n    type filter hook ingress device \"lb0\" priority -500; policy accept;\n    ip daddr 198.18.0.2 ip frag-off & 0x1fff != 0 drop\n    ip daddr 198.18.0.2 ip protocol 17 udp dport 9000 drop\n    ip6 daddr 2001:db8::1 meta l4proto 6 tcp dport 8000-8099 drop\n    ip daddr 198.18.0.3 ip protocol 47 drop\n  }\n}\n"
        );
    }

    #[test]
    fn golden_ruleset_with_sources() {
        let svc = Service {
            addr: "198.18.1.100".parse().unwrap(),
            proto: 17,
            ports: Some((53, 53)),
        };
        let sources = [
            Service {
                addr: "198.18.2.11".parse().unwrap(),
                proto: 17,
                ports: Some((5353, 5353)),
            },
            Service {
                addr: "2001:db8:2::11".parse().unwrap(),
                proto: 6,
                ports: Some((25, 26)),
            },
        ];
        let got = ruleset_with_sources("carpio_lb0", "lb0", &[svc], &sources, &[], &[]).unwrap();
        assert_eq!(
            got,
            "table netdev carpio_lb0 {\n  chain ingress {\n    type filter hook ingress device \"lb0\" priority -500; policy accept;\n    ip daddr 198.18.1.100 ip protocol 17 udp dport 53 drop\n    ip saddr 198.18.2.11 ip protocol 17 udp sport 5353 drop\n    ip6 saddr 2001:db8:2::11 meta l4proto 6 tcp sport 25-26 drop\n  }\n}\n"
        );
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(ruleset("bad name", "lb0", &[], &[]).is_err());
        assert!(ruleset("t", "lb0\"; flush ruleset", &[], &[]).is_err());
        assert!(ruleset("t", "lb0", &[], &[]).is_ok());
    }

    #[test]
    fn return_path_drops_spare_the_balancers_own_addresses() {
        let src = Service {
            addr: "198.18.2.11".parse().unwrap(),
            proto: 6,
            ports: Some((5353, 5353)),
        };
        let locals: Vec<IpAddr> = vec![
            "198.18.2.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ];
        let got = ruleset_with_sources("carpio_lb0", "lb0", &[], &[src], &[], &locals).unwrap();
        assert!(
            got.contains("    ip saddr 198.18.2.11 ip daddr != { 198.18.2.1 } ip protocol 6 tcp sport 5353 drop\n"),
            "{got}"
        );
    }
}
