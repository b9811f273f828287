//! What the daemon learns from the kernel about the interface it serves, in the network
//! namespace it runs in: the interface's MAC and addresses, the default router's MAC, and the
//! backends' MACs from the neighbour table.
//!
//! carpio sends frames itself (kernel bypass), so it needs the link-layer address of each
//! backend. Rather than speak ARP/ND itself, the daemon lets the kernel do it: it sends one
//! UDP datagram to the backend's discard port (RFC 863, port 9) with an ordinary socket, which
//! makes the kernel resolve the neighbour, then reads the neighbour table (`/proc/net/arp` for
//! IPv4, `ip -6 neigh` for IPv6). Unresolved backends are retried by the parent every second and
//! the snapshot is rebuilt when a MAC appears.
//!
//! Everything read here comes from the kernel or from `ip`'s output; parse failures are skipped
//! (never a panic), an unreadable file is an `io::Error`.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;

/// The discard port (RFC 863): a datagram sent there only provokes neighbour resolution.
pub const DISCARD_PORT: u16 = 9;

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for o in out.iter_mut() {
        *o = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() || out == [0; 6] {
        return None;
    }
    Some(out)
}

/// The MAC of `ifname` (`/sys/class/net/IF/address`, read in the caller's namespace: sysfs
/// shows the namespace of the process that mounted it, so `ip netns exec` remounts it).
pub fn interface_mac(ifname: &str) -> io::Result<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    parse_mac(&s).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{ifname}: no Ethernet address"),
        )
    })
}

/// The MTU of `ifname`.
pub fn interface_mtu(ifname: &str) -> io::Result<u16> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))?;
    s.trim()
        .parse::<u32>()
        .map(|m| m.min(u32::from(u16::MAX)) as u16)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad mtu"))
}

fn ip_cmd(args: &[&str]) -> io::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Addresses of `ifname` from `ip -o addr show dev IF` (`... inet 198.18.0.1/24 ...`).
pub fn interface_addrs(ifname: &str) -> io::Result<Vec<IpAddr>> {
    Ok(parse_addr_lines(&ip_cmd(&[
        "-o", "addr", "show", "dev", ifname,
    ])?))
}

/// The address words after `inet`/`inet6` in `ip -o addr` output.
pub fn parse_addr_lines(text: &str) -> Vec<IpAddr> {
    let mut v = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        while let Some(word) = w.next() {
            if word == "inet" || word == "inet6" {
                if let Some(a) = w
                    .next()
                    .and_then(|c| c.split('/').next())
                    .and_then(|a| a.parse::<IpAddr>().ok())
                {
                    v.push(a);
                }
                break;
            }
        }
    }
    v
}

/// The IPv4 default router (`ip -4 route show default` → `default via A dev IF`), if any.
pub fn default_gateway() -> Option<IpAddr> {
    let text = ip_cmd(&["-4", "route", "show", "default"]).ok()?;
    parse_default_via(&text)
}

/// The address after `via` on the first `default` line.
pub fn parse_default_via(text: &str) -> Option<IpAddr> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if w.next() != Some("default") {
            return None;
        }
        while let Some(word) = w.next() {
            if word == "via" {
                return w.next()?.parse().ok();
            }
        }
        None
    })
}

/// The gateway toward `addr` when it is not on-link (`ip route get A` → `A via G dev IF`):
/// backends behind a router are reached through the router's MAC.
pub fn next_hop(addr: IpAddr) -> Option<IpAddr> {
    let text = ip_cmd(&["route", "get", &addr.to_string()]).ok()?;
    parse_route_get_via(&text)
}

/// The address after `via` on the first line of `ip route get` output.
pub fn parse_route_get_via(text: &str) -> Option<IpAddr> {
    let line = text.lines().next()?;
    let mut w = line.split_whitespace();
    while let Some(word) = w.next() {
        if word == "via" {
            // `via inet6 ADDR` for an IPv6 next hop of an IPv4 route (RFC 5549).
            let next = w.next()?;
            let a = if next == "inet6" || next == "inet" {
                w.next()?
            } else {
                next
            };
            return a.parse().ok();
        }
    }
    None
}

/// IPv4 neighbours from `/proc/net/arp` with a complete entry (flags 0x2) on `ifname`.
pub fn arp_table(ifname: &str) -> Vec<(IpAddr, [u8; 6])> {
    std::fs::read_to_string("/proc/net/arp")
        .map(|t| parse_proc_arp(&t, ifname))
        .unwrap_or_default()
}

/// Parses `/proc/net/arp`: `IP address  HW type  Flags  HW address  Mask  Device`.
pub fn parse_proc_arp(text: &str, ifname: &str) -> Vec<(IpAddr, [u8; 6])> {
    const ATF_COM: u32 = 0x2;
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ip, flags, mac, dev) = (f.first()?, f.get(2)?, f.get(3)?, f.get(5)?);
            let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
            if flags & ATF_COM == 0 || *dev != ifname {
                return None;
            }
            Some((ip.parse().ok()?, parse_mac(mac)?))
        })
        .collect()
}

/// IPv6 neighbours of `ifname` (`ip -6 neigh show dev IF`: `ADDR lladdr MAC STATE`).
pub fn nd_table(ifname: &str) -> Vec<(IpAddr, [u8; 6])> {
    ip_cmd(&["-6", "neigh", "show", "dev", ifname])
        .map(|t| parse_neigh_lines(&t))
        .unwrap_or_default()
}

/// Parses `ip neigh show dev IF` lines; entries without `lladdr` (INCOMPLETE, FAILED) are skipped.
pub fn parse_neigh_lines(text: &str) -> Vec<(IpAddr, [u8; 6])> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let addr: IpAddr = w.next()?.parse().ok()?;
            let mut mac = None;
            while let Some(word) = w.next() {
                if word == "lladdr" {
                    mac = w.next().and_then(parse_mac);
                }
                if word == "FAILED" || word == "INCOMPLETE" {
                    return None;
                }
            }
            Some((addr, mac?))
        })
        .collect()
}

/// Makes the kernel resolve `addr`: one empty UDP datagram to its discard port. Errors (no
/// route yet, unreachable) are ignored: the next attempt retries.
pub fn provoke(addr: IpAddr) {
    let bind: SocketAddr = match addr {
        IpAddr::V4(_) => "0.0.0.0:0",
        IpAddr::V6(_) => "[::]:0",
    }
    .parse()
    .unwrap_or_else(|_| SocketAddr::from(([0u8; 4], 0)));
    if let Ok(s) = UdpSocket::bind(bind) {
        let _ = s.send_to(&[], SocketAddr::new(addr, DISCARD_PORT));
    }
}

/// The kernel's neighbours of `ifname`, both families.
pub fn neighbours(ifname: &str) -> Vec<(IpAddr, [u8; 6])> {
    let mut v = arp_table(ifname);
    v.extend(nd_table(ifname));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:c6:12:00:01\n"),
            Some([2, 0, 0xc6, 0x12, 0, 1])
        );
        assert_eq!(parse_mac("00:00:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:c6:12:00"), None);
        assert_eq!(parse_mac("02:00:c6:12:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:c6:12:00:01"), None);
        assert_eq!(parse_mac(""), None);
    }

    #[test]
    fn proc_arp() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 198.18.2.11      0x1         0x2         02:00:00:00:02:0b     *        lb0\n\
                 198.18.2.12      0x1         0x0         00:00:00:00:00:00     *        lb0\n\
                 198.18.2.13      0x1         0x2         02:00:00:00:02:0d     *        other\n\
                 garbage\n";
        assert_eq!(
            parse_proc_arp(t, "lb0"),
            vec![("198.18.2.11".parse().unwrap(), [2, 0, 0, 0, 2, 0x0b])]
        );
    }

    #[test]
    fn neigh_lines() {
        let t = "2001:db8::11 lladdr 02:00:00:00:02:0b REACHABLE\n\
                 2001:db8::12 INCOMPLETE\n\
                 2001:db8::13 lladdr 02:00:00:00:02:0d FAILED\n\
                 fe80::1 lladdr 02:00:00:00:02:01 router STALE\n";
        assert_eq!(
            parse_neigh_lines(t),
            vec![
                ("2001:db8::11".parse().unwrap(), [2, 0, 0, 0, 2, 0x0b]),
                ("fe80::1".parse().unwrap(), [2, 0, 0, 0, 2, 1]),
            ]
        );
    }

    #[test]
    fn addr_and_route_lines() {
        let t = "2: lb0    inet 198.18.1.1/24 brd 198.18.1.255 scope global lb0\\       valid_lft forever\n\
                 2: lb0    inet6 2001:db8::1/64 scope global \\       valid_lft forever\n\
                 2: lb0    inet bogus\n";
        assert_eq!(
            parse_addr_lines(t),
            vec![
                "198.18.1.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_default_via("default via 198.18.1.254 dev lb0 \n"),
            Some("198.18.1.254".parse().unwrap())
        );
        assert_eq!(parse_default_via("default dev lb0 scope link\n"), None);
        assert_eq!(
            parse_route_get_via(
                "198.18.5.7 via 198.18.2.254 dev lb0 src 198.18.2.1 uid 0 \n    cache \n"
            ),
            Some("198.18.2.254".parse().unwrap())
        );
        assert_eq!(
            parse_route_get_via("198.18.2.11 dev lb0 src 198.18.2.1 uid 0 \n    cache \n"),
            None
        );
        assert_eq!(
            parse_route_get_via("198.18.5.7 via inet6 fe80::1 dev lb0\n"),
            Some("fe80::1".parse().unwrap())
        );
        assert_eq!(parse_route_get_via(""), None);
        assert_eq!(parse_default_via(""), None);
    }
}
