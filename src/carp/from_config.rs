//! From the configuration model (`carp NAME { ... }` blocks, `config::CarpConfig`) to the
//! shell's [`ShellConfig`]: ifconfig(8)'s options mapped onto [`InterfaceConfig`].
//!
//! - `carpdev` is required (OpenBSD can attach later; carpio needs the parent at start).
//! - `carppeer` must be IPv4: OpenBSD's `carppeer` is `sc_peer` (IPv4) and `carppeer6` is not
//!   supported by carpio yet.
//! - `group G` lists the groups; the initial counters come from `group NAME demote N`.
//! - The parent's MAC is left zero: it matters only when an `lladdr` is set by hand, which the
//!   carpio language has no keyword for.
//! - Replay cookies are left empty here; [`super::shell::spawn`] draws them at random.
//!
//! Pure: no I/O, no panics; every refusal is a named [`Error`].

use std::net::IpAddr;

use super::shell::{ShellConfig, VipMode};
use super::{Balancing, InterfaceConfig, NodeConfig};
use crate::config::{self, CarpConfig, Config};

/// Why a carp block cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No `carpdev`.
    NoCarpdev { name: String },
    /// `carppeer` is an IPv6 address.
    Ipv6Peer { name: String },
    /// No `address`.
    NoAddress { name: String },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoCarpdev { name } => write!(f, "carp {name}: carpdev is required"),
            Error::Ipv6Peer { name } => {
                write!(f, "carp {name}: an IPv6 carppeer is not supported yet")
            }
            Error::NoAddress { name } => write!(f, "carp {name}: no address"),
        }
    }
}

impl std::error::Error for Error {}

fn balancing(b: config::Balancing) -> Balancing {
    match b {
        config::Balancing::None => Balancing::None,
        config::Balancing::Ip => Balancing::Ip,
        config::Balancing::IpStealth => Balancing::IpStealth,
        config::Balancing::IpUnicast => Balancing::IpUnicast,
        config::Balancing::Arp => Balancing::Arp,
    }
}

/// One carp block; `groups` are the declared interface groups (`group NAME demote N`).
pub fn shell_config(c: &CarpConfig, groups: &[config::GroupConfig]) -> Result<ShellConfig, Error> {
    let name = c.name.clone();
    let carpdev = c
        .carpdev
        .clone()
        .ok_or_else(|| Error::NoCarpdev { name: name.clone() })?;
    let peer = match c.carppeer {
        None => None,
        Some(IpAddr::V4(a)) => Some(a),
        Some(IpAddr::V6(_)) => return Err(Error::Ipv6Peer { name }),
    };
    if c.addresses.is_empty() {
        return Err(Error::NoAddress { name });
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut len4 = Vec::new();
    let mut len6 = Vec::new();
    for p in &c.addresses {
        match p.addr {
            IpAddr::V4(a) => {
                v4.push(a);
                len4.push(p.len);
            }
            IpAddr::V6(a) => {
                v6.push(a);
                len6.push(p.len);
            }
        }
    }
    len4.extend(len6);
    let iface = InterfaceConfig {
        nodes: c
            .nodes
            .iter()
            .map(|n| NodeConfig {
                vhid: n.vhid,
                advskew: n.advskew,
            })
            .collect(),
        advbase: c.advbase,
        passphrase: c.pass.clone().unwrap_or_default().into_bytes(),
        v4,
        v6,
        peer,
        balancing: balancing(c.balancing),
        preempt: c.preempt,
        parent_mac: [0; 6],
        lladdr: None,
        groups: c.groups.clone(),
        cookies: Vec::new(),
    };
    let group_demote = groups
        .iter()
        .filter(|g| {
            g.demote > 0 && (g.name == super::groups::CARP_GROUP || c.groups.contains(&g.name))
        })
        .map(|g| (g.name.clone(), g.demote))
        .collect();
    Ok(ShellConfig {
        name,
        carpdev,
        netns: None,
        iface,
        prefix_len: len4,
        vip_mode: VipMode::Macvlan,
        group_demote,
    })
}

/// Every carp block of a loaded configuration.
pub fn shell_configs(config: &Config) -> Result<Vec<ShellConfig>, Error> {
    config
        .carp
        .iter()
        .map(|c| shell_config(c, &config.groups))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn load(text: &str) -> Config {
        match config::parse_str("test.conf", text, &[]) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn full_block_maps_every_option() {
        let c = load(
            "group lb demote 3\n\
             carp carp0 { carpdev eth0, vhid 7, advbase 2, advskew 100, pass \"sekrit\",\n\
               carppeer 198.18.0.2, group lb, preempt,\n\
               address 198.18.0.10/24, address 2001:db8::10/64, address 198.18.0.11/32 }\n",
        );
        let s = shell_configs(&c).unwrap();
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.name, "carp0");
        assert_eq!(s.carpdev, "eth0");
        assert_eq!(s.netns, None);
        assert_eq!(s.vip_mode, VipMode::Macvlan);
        let i = &s.iface;
        assert_eq!(
            i.nodes,
            [NodeConfig {
                vhid: 7,
                advskew: 100
            }]
        );
        assert_eq!(i.advbase, 2);
        assert_eq!(i.passphrase, b"sekrit");
        assert_eq!(
            i.v4,
            [Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11)]
        );
        assert_eq!(i.v6, ["2001:db8::10".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(s.prefix_len, [24, 32, 64], "v4 in order, then v6");
        assert_eq!(i.peer, Some(Ipv4Addr::new(198, 18, 0, 2)));
        assert!(i.preempt);
        assert_eq!(i.groups, ["lb"]);
        assert_eq!(s.group_demote, [("lb".to_owned(), 3)]);
        assert_eq!(i.balancing, Balancing::None);
        assert!(i.cookies.is_empty());
    }

    #[test]
    fn carpnodes_and_balancing() {
        let c = load(
            "carp carp0 { carpdev eth0, carpnodes 2:100,1:0, balancing arp, \
             address 198.18.0.10/24 }\n\
             carp carp1 { carpdev eth1, carpnodes 3:0,4:0, balancing ip, address 198.18.1.10/24 }\n",
        );
        let s = shell_configs(&c).unwrap();
        let nodes: Vec<(u8, u8)> = s[0]
            .iface
            .nodes
            .iter()
            .map(|n| (n.vhid, n.advskew))
            .collect();
        assert_eq!(nodes, [(1, 0), (2, 100)]);
        assert_eq!(s[0].iface.balancing, Balancing::Arp);
        assert_eq!(s[1].iface.balancing, Balancing::Ip);
        assert_eq!(s[1].carpdev, "eth1");
        assert_eq!(s[0].iface.passphrase, b"", "no pass: empty key");
        // The core accepts what the mapping produces.
        for sc in &s {
            assert!(Interface::new(&sc.iface).is_ok());
        }
    }

    use super::super::Interface;

    fn block() -> CarpConfig {
        let c = load("carp carp0 { carpdev eth0, vhid 1, address 198.18.0.10/24 }\n");
        c.carp[0].clone()
    }

    #[test]
    fn refusals_are_named() {
        let mut b = block();
        b.carpdev = None;
        assert_eq!(
            shell_config(&b, &[]).unwrap_err(),
            Error::NoCarpdev {
                name: "carp0".into()
            }
        );
        let mut b = block();
        b.carppeer = Some("2001:db8::2".parse().unwrap());
        assert!(matches!(shell_config(&b, &[]), Err(Error::Ipv6Peer { .. })));
        let mut b = block();
        b.addresses.clear();
        assert!(matches!(
            shell_config(&b, &[]),
            Err(Error::NoAddress { .. })
        ));
        assert!(shell_config(&block(), &[]).is_ok());
    }

    #[test]
    fn carp_group_demotion_applies_to_every_block_other_groups_only_to_members() {
        let c = load(
            "group carp demote 1\ngroup lb demote 2\ngroup other demote 5\n\
             carp carp0 { carpdev eth0, vhid 1, group lb, address 198.18.0.10/24 }\n",
        );
        let s = shell_configs(&c).unwrap();
        let mut d = s[0].group_demote.clone();
        d.sort();
        assert_eq!(d, [("carp".to_owned(), 1), ("lb".to_owned(), 2)]);
    }
}
