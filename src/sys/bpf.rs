//! Map layouts of the XDP program, mirrored from `bpf/abi.h` (the C side is the reference; the
//! test below checks every size and offset against the constants there, parsed from the header
//! itself so the two cannot drift apart silently).
//!
//! Addresses and ports are in network byte order as on the wire; IPv4 addresses are stored
//! v4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) so one map serves both families.

use std::net::IpAddr;

/// XSKMAP slots (one per RX queue).
pub const MAX_QUEUES: u32 = 64;
/// Capacity of the service map.
pub const MAX_SERVICES: u32 = 4096;
/// Capacity of the VIP map.
pub const MAX_VIPS: u32 = 1024;

pub const MAP_XSKS: &str = "carpio_xsks";
pub const MAP_SVCS: &str = "carpio_svcs";
pub const MAP_VIPS: &str = "carpio_vips";
pub const MAP_STATS: &str = "carpio_stats";
pub const PROG: &str = "carpio_xdp";

/// `struct carpio_svc_key`: a virtual service {dst address, IP protocol, dst port}.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SvcKey {
    pub addr: [u8; 16],
    pub proto: u8,
    /// Must be zero: it is part of the hashed key.
    pub pad: u8,
    /// Destination port, network byte order; 0 = any port or the range in [`SvcVal`].
    pub port_be: u16,
}

impl SvcKey {
    /// A key for `addr` (v4-mapped if IPv4), `proto` and host-order `port`.
    pub fn new(addr: IpAddr, proto: u8, port: u16) -> Self {
        Self {
            addr: mapped(addr),
            proto,
            pad: 0,
            port_be: port.to_be(),
        }
    }
}

/// `CARPIO_SVC_F_SRC`: the entry also matches packets *from* its address and port (the NAT
/// return path).
pub const SVC_F_SRC: u32 = 1;
/// `CARPIO_SVC_F_NODST`: the entry does not match as a destination (a backend, not a service).
pub const SVC_F_NODST: u32 = 2;

/// `struct carpio_svc_val`: for a port-0 key, the accepted port range (host order, inclusive;
/// 0..=0 = any port), and the match flags ([`SVC_F_SRC`], [`SVC_F_NODST`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvcVal {
    pub port_lo: u16,
    pub port_hi: u16,
    pub flags: u32,
}

/// `struct carpio_vip_key`: a virtual address carpio answers ARP / neighbour solicitations for.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: [u8; 16],
}

impl VipKey {
    pub fn new(addr: IpAddr) -> Self {
        Self { addr: mapped(addr) }
    }
}

/// 16-byte form of an address: IPv6 as is, IPv4 as `::ffff:a.b.c.d`.
pub fn mapped(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

// SAFETY: plain `repr(C)` structs of integers and byte arrays with no padding (checked by the
// size test below: the field sizes add up to the struct size), so every bit pattern is valid
// and aya may copy them to and from the kernel as bytes.
unsafe impl aya::Pod for SvcKey {}
// SAFETY: as above.
unsafe impl aya::Pod for SvcVal {}
// SAFETY: as above.
unsafe impl aya::Pod for VipKey {}

crate::named_counters! {
    /// `enum carpio_stat`: what the XDP program did with each frame (per-CPU, summed on read).
    pub enum XdpStat {
        RedirectService = "xdp_redirect_service",
        RedirectArp = "xdp_redirect_arp",
        RedirectNd = "xdp_redirect_nd",
        PassCarp = "xdp_pass_carp",
        PassPfsync = "xdp_pass_pfsync",
        RedirectFragment = "xdp_redirect_fragment",
        PassNotIp = "xdp_pass_not_ip",
        PassNoMatch = "xdp_pass_no_match",
        PassTruncated = "xdp_pass_truncated",
        PassNoXsk = "xdp_pass_no_xsk",
        RedirectReturn = "xdp_redirect_return",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    const ABI_H: &str = include_str!("../../bpf/abi.h");

    /// Value of `#define NAME value` in abi.h (panics in the test if missing).
    fn define(name: &str) -> usize {
        ABI_H
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("#define") && w.next() == Some(name))
                    .then(|| w.next())
                    .flatten()
            })
            .unwrap_or_else(|| panic!("{name} not in abi.h"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number"))
    }

    fn string_define(name: &str) -> String {
        ABI_H
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("#define") && w.next() == Some(name))
                    .then(|| w.next())
                    .flatten()
            })
            .unwrap_or_else(|| panic!("{name} not in abi.h"))
            .trim_matches('"')
            .to_string()
    }

    #[test]
    fn layouts_match_abi_h() {
        assert_eq!(size_of::<SvcKey>(), define("CARPIO_SVC_KEY_SIZE"));
        assert_eq!(offset_of!(SvcKey, addr), define("CARPIO_SVC_KEY_OFF_ADDR"));
        assert_eq!(
            offset_of!(SvcKey, proto),
            define("CARPIO_SVC_KEY_OFF_PROTO")
        );
        assert_eq!(offset_of!(SvcKey, pad), define("CARPIO_SVC_KEY_OFF_PAD"));
        assert_eq!(
            offset_of!(SvcKey, port_be),
            define("CARPIO_SVC_KEY_OFF_PORT")
        );
        assert_eq!(size_of::<SvcVal>(), define("CARPIO_SVC_VAL_SIZE"));
        assert_eq!(
            offset_of!(SvcVal, port_lo),
            define("CARPIO_SVC_VAL_OFF_PORT_LO")
        );
        assert_eq!(
            offset_of!(SvcVal, port_hi),
            define("CARPIO_SVC_VAL_OFF_PORT_HI")
        );
        assert_eq!(
            offset_of!(SvcVal, flags),
            define("CARPIO_SVC_VAL_OFF_FLAGS")
        );
        assert_eq!(size_of::<VipKey>(), define("CARPIO_VIP_KEY_SIZE"));
        assert_eq!(size_of::<u32>(), define("CARPIO_VIP_VAL_SIZE"));
        // No padding anywhere (the Pod impls rely on it).
        assert_eq!(size_of::<SvcKey>(), 16 + 1 + 1 + 2);
        assert_eq!(size_of::<SvcVal>(), 2 + 2 + 4);
    }

    #[test]
    fn limits_and_names_match_abi_h() {
        assert_eq!(MAX_QUEUES as usize, define("CARPIO_MAX_QUEUES"));
        assert_eq!(MAX_SERVICES as usize, define("CARPIO_MAX_SERVICES"));
        assert_eq!(MAX_VIPS as usize, define("CARPIO_MAX_VIPS"));
        assert_eq!(MAP_XSKS, string_define("CARPIO_MAP_XSKS"));
        assert_eq!(MAP_SVCS, string_define("CARPIO_MAP_SVCS"));
        assert_eq!(MAP_VIPS, string_define("CARPIO_MAP_VIPS"));
        assert_eq!(MAP_STATS, string_define("CARPIO_MAP_STATS"));
        assert_eq!(PROG, string_define("CARPIO_PROG"));
        assert_eq!(SVC_F_SRC as usize, define("CARPIO_SVC_F_SRC"));
        assert_eq!(SVC_F_NODST as usize, define("CARPIO_SVC_F_NODST"));
    }

    #[test]
    fn stats_enum_matches_abi_h() {
        // `CARPIO_STAT_<NAME> = <i>,` lines, in order, must match XdpStat's names and indices.
        let stats: Vec<(String, usize)> = ABI_H
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let rest = l.strip_prefix("CARPIO_STAT_")?;
                let (name, val) = rest.split_once('=')?;
                let val = val.trim().split(',').next()?.trim().parse().ok()?;
                Some((name.trim().to_ascii_lowercase(), val))
            })
            .collect();
        let max = stats.iter().find(|(n, _)| n == "max").map(|s| s.1);
        assert_eq!(max, Some(XdpStat::COUNT));
        for s in XdpStat::ALL {
            let want = s.name().trim_start_matches("xdp_");
            let got = stats.iter().find(|(n, _)| n == want);
            assert_eq!(got.map(|g| g.1), Some(s.index()), "{want}");
        }
    }

    #[test]
    fn keys_are_network_order_and_mapped() {
        let k = SvcKey::new("198.18.0.10".parse().unwrap(), 17, 53);
        assert_eq!(
            k.addr,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 10]
        );
        assert_eq!(k.port_be.to_ne_bytes(), [0, 53]);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(VipKey::new(v6).addr[0..4], [0x20, 0x01, 0x0d, 0xb8]);
    }
}
