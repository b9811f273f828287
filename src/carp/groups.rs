//! Interface-group demotion counters: OpenBSD's `ifg_carp_demoted`, changed by
//! `ifconfig -g GROUP carpdemote N` (`carp_ifgattr_ioctl`) and by the kernel
//! (`carp_group_demote_adj`: carpdev down +1, send errors +1, pfsync +1 link down and +32 during
//! its bulk update, relayd `demote GROUP` +1 while a table is down).
//!
//! Linux has no such counter, so carpio keeps its own. A carp interface advertises the sum over
//! the groups it belongs to, capped at 255 ([`Groups::sum`]); feed that to
//! [`super::Interface::set_group_demote`] after every change, which makes masters advertise at
//! once so peers see it without waiting an interval.

use std::collections::BTreeMap;

/// The group every carp interface is in (OpenBSD creates it at attach).
pub const CARP_GROUP: &str = "carp";

/// A counter change: the value before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub old: u8,
    pub new: u8,
}

impl Change {
    /// True when the value moved.
    pub fn changed(&self) -> bool {
        self.old != self.new
    }
}

/// Why `carpdemote` refused a change (SIOCSIFGATTR's EINVAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoteError {
    /// The result would leave 0..=255.
    OutOfRange { current: u8, delta: i32 },
}

impl std::fmt::Display for DemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoteError::OutOfRange { current, delta } => {
                write!(f, "demotion {current} {delta:+} is outside 0..255")
            }
        }
    }
}

impl std::error::Error for DemoteError {}

/// Per-group demotion counters, 0..=255 each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    counters: BTreeMap<String, u8>,
}

impl Groups {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of `group` (0 when never touched).
    pub fn get(&self, group: &str) -> u8 {
        self.counters.get(group).copied().unwrap_or(0)
    }

    /// Operator change (`ifconfig -g GROUP carpdemote N` / `-carpdemote N`, relayctl-style
    /// `demote GROUP`): the value is added, and a result outside 0..=255 is refused whole.
    pub fn adjust(&mut self, group: &str, delta: i32) -> Result<Change, DemoteError> {
        let old = self.get(group);
        let new = i32::from(old) + delta;
        let new = u8::try_from(new).map_err(|_| DemoteError::OutOfRange {
            current: old,
            delta,
        })?;
        self.set(group, new);
        Ok(Change { old, new })
    }

    /// Kernel-side change (`carp_group_demote_adj`): never below 0, and capped at 255 here
    /// since the wire field is one byte.
    pub fn adjust_saturating(&mut self, group: &str, delta: i32) -> Change {
        let old = self.get(group);
        let new = (i32::from(old) + delta).clamp(0, 255);
        let new = u8::try_from(new).unwrap_or(u8::MAX);
        self.set(group, new);
        Change { old, new }
    }

    fn set(&mut self, group: &str, v: u8) {
        if v == 0 {
            self.counters.remove(group);
        } else if let Some(c) = self.counters.get_mut(group) {
            *c = v;
        } else {
            self.counters.insert(group.to_owned(), v);
        }
    }

    /// `carp_group_demote_count`'s group part: the sum over `groups`, capped at 255.
    pub fn sum<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> u8 {
        let s: u32 = groups.into_iter().map(|g| u32::from(self.get(g))).sum();
        u8::try_from(s.min(255)).unwrap_or(u8::MAX)
    }

    /// Pushes the current sums into `ifaces` after a change (masters whose advertised value
    /// moves advertise at once).
    pub fn refresh(&self, now: std::time::Duration, ifaces: &mut [super::Interface]) {
        for i in ifaces {
            let sum = self.sum(i.groups());
            i.set_group_demote(now, sum);
        }
    }

    /// Every non-zero counter, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u8)> {
        self.counters.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjust_refuses_out_of_range_and_keeps_value() {
        let mut g = Groups::new();
        assert_eq!(g.adjust("carp", 1), Ok(Change { old: 0, new: 1 }));
        assert_eq!(g.adjust("carp", 254), Ok(Change { old: 1, new: 255 }));
        assert_eq!(
            g.adjust("carp", 1),
            Err(DemoteError::OutOfRange {
                current: 255,
                delta: 1
            })
        );
        assert_eq!(g.get("carp"), 255);
        assert_eq!(g.adjust("carp", -255), Ok(Change { old: 255, new: 0 }));
        assert!(g.adjust("carp", -1).is_err());
        assert_eq!(g.get("carp"), 0);
        assert_eq!(g.iter().count(), 0);
    }

    #[test]
    fn saturating_never_below_zero_nor_above_255() {
        let mut g = Groups::new();
        assert_eq!(g.adjust_saturating("pfsync", -3), Change { old: 0, new: 0 });
        assert!(!g.adjust_saturating("pfsync", -3).changed());
        assert_eq!(
            g.adjust_saturating("pfsync", 32),
            Change { old: 0, new: 32 }
        );
        assert_eq!(
            g.adjust_saturating("pfsync", 1),
            Change { old: 32, new: 33 }
        );
        assert_eq!(
            g.adjust_saturating("pfsync", 300),
            Change { old: 33, new: 255 }
        );
        assert_eq!(
            g.adjust_saturating("pfsync", -1000),
            Change { old: 255, new: 0 }
        );
    }

    #[test]
    fn refresh_feeds_each_interface_its_own_groups() {
        use super::super::{Interface, InterfaceConfig, NodeConfig, State, Transmit};
        use std::time::Duration;
        let mk = |vhid: u8, groups: &[&str]| {
            let mut i = Interface::new(&InterfaceConfig {
                nodes: vec![NodeConfig { vhid, advskew: 0 }],
                v4: vec![std::net::Ipv4Addr::new(198, 18, 0, vhid)],
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            })
            .unwrap();
            i.set_up(Duration::ZERO, true);
            i.force_state(Duration::ZERO, State::Master);
            while i.poll_transmit().is_some() {}
            i
        };
        let mut ifaces = [mk(1, &[]), mk(2, &["dmz"])];
        let mut g = Groups::new();
        g.adjust("dmz", 2).unwrap();
        g.refresh(Duration::from_secs(1), &mut ifaces);
        assert_eq!(ifaces[0].demote(), 0);
        assert_eq!(ifaces[1].demote(), 2);
        assert!(ifaces[0].poll_transmit().is_none(), "unchanged: no ad");
        assert!(matches!(
            ifaces[1].poll_transmit(),
            Some(Transmit::Advert { repr, .. }) if repr.demote == 2
        ));
        g.adjust_saturating(CARP_GROUP, 1);
        g.refresh(Duration::from_secs(2), &mut ifaces);
        assert_eq!([ifaces[0].demote(), ifaces[1].demote()], [1, 3]);
    }

    #[test]
    fn sum_over_member_groups_is_capped() {
        let mut g = Groups::new();
        g.adjust("carp", 200).unwrap();
        g.adjust("dmz", 100).unwrap();
        g.adjust("other", 7).unwrap();
        assert_eq!(g.sum(["carp"]), 200);
        assert_eq!(g.sum(["carp", "dmz"]), 255);
        assert_eq!(g.sum(["dmz", "other", "absent"]), 107);
        assert_eq!(g.sum([]), 0);
    }
}
