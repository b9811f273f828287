//! CARP wire format against a reference dissector (tshark) and property tests: arbitrary bytes
//! never panic the receive path, and every reject is counted.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

use carpio::carp::{Interface, InterfaceConfig, NodeConfig, Received, Transmit};
use carpio::wire::carp::{self, Packet, Repr};
use carpio::wire::checksum;
use carpio::wire::classify::Af;
use proptest::prelude::*;

fn iface(v6: bool) -> Interface {
    let cfg = InterfaceConfig {
        nodes: vec![NodeConfig {
            vhid: 5,
            advskew: 100,
        }],
        passphrase: b"tshark".to_vec(),
        v4: vec![Ipv4Addr::new(198, 18, 0, 100)],
        v6: if v6 {
            vec!["2001:db8::100".parse().unwrap()]
        } else {
            vec![]
        },
        ..Default::default()
    };
    Interface::new(&cfg).unwrap()
}

/// The ads a freshly forced master sends.
fn adverts(v6: bool, demote: u8) -> Vec<(Af, Repr)> {
    let mut i = iface(v6);
    i.set_up(Duration::ZERO, true);
    i.set_group_demote(Duration::ZERO, demote);
    i.force_state(Duration::ZERO, carpio::carp::State::Master);
    std::iter::from_fn(|| i.poll_transmit())
        .filter_map(|t| match t {
            Transmit::Advert { af, repr } => Some((af, repr)),
            _ => None,
        })
        .collect()
}

/// Ethernet + IPv4/IPv6 + CARP, as the shell will send it (TTL 255, DF, TOS lowdelay).
fn frame(af: Af, repr: &Repr) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[6..12].copy_from_slice(&[0, 0, 0x5e, 0, 1, 5]);
    let carp = repr.to_bytes();
    match af {
        Af::V4 => {
            f[..6].copy_from_slice(&[1, 0, 0x5e, 0, 0, 0x12]);
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[1] = 0x10;
            ip[2..4].copy_from_slice(&(20 + carp::HEADER_LEN as u16).to_be_bytes());
            ip[6] = 0x40;
            ip[8] = carp::TTL;
            ip[9] = carp::IPPROTO_CARP;
            ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
            ip[16..20].copy_from_slice(&carp::GROUP_V4.octets());
            let c = checksum::checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        Af::V6 => {
            f[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 0x12]);
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(carp::HEADER_LEN as u16).to_be_bytes());
            ip[6] = carp::IPPROTO_CARP;
            ip[7] = carp::TTL;
            let src: Ipv6Addr = "fe80::1".parse().unwrap();
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&carp::GROUP_V6.octets());
            f.extend_from_slice(&ip);
        }
    }
    f.extend_from_slice(&carp);
    f
}

fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for v in [i as u32, 0, f.len() as u32, f.len() as u32] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.extend_from_slice(f);
    }
    p
}

/// tshark (Wireshark's CARP dissector, selected with `-d ip.proto==112,carp` since 112 is
/// VRRP by default) must decode our frames with a correct checksum and no expert warnings.
#[test]
fn tshark_dissects_our_adverts() {
    if Command::new("tshark").arg("-v").output().is_err() {
        // scripts/deps.sh installs tshark for `make test`; a missing reference is a failure,
        // never a silent skip.
        panic!("tshark is not installed: run scripts/deps.sh");
    }
    let ads = adverts(true, 3);
    assert_eq!(ads.len(), 2);
    let frames: Vec<Vec<u8>> = ads.iter().map(|(af, r)| frame(*af, r)).collect();
    let path = std::env::temp_dir().join(format!("carpio-carp-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(&frames)).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args([
            "-V",
            "-d",
            "ip.proto==112,carp",
            "-o",
            "ip.check_checksum:TRUE",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("Common Address Redundancy Protocol").count(),
        2,
        "{text}"
    );
    for want in [
        "CARP protocol version: 2",
        "CARP packet type: Advertisement (1)",
        "Virtual Host ID: 5",
        "Advertisement Skew: 100",
        "Auth Len: 7",
        "Demotion indicator: 3",
        "Adver Int: 1",
    ] {
        assert_eq!(text.matches(want).count(), 2, "{want}\n{text}");
    }
    assert_eq!(text.matches("[Checksum Status: Good]").count(), 2, "{text}");
    assert!(!text.contains("Expert Info"), "{text}");
    assert!(!text.contains("Malformed"), "{text}");
    let md: String = ads[0].1.md.iter().map(|b| format!("{b:02x}")).collect();
    assert!(text.contains(&format!("HMAC: {md}")), "{text}");
}

proptest! {
    #[test]
    fn repr_round_trips(ver in 0u8..16, kind in 0u8..16, vhid: u8, skew: u8, authlen: u8,
                        demote: u8, advbase: u8, counter: [u8; 8], md: [u8; 20]) {
        let r = Repr { version: ver, kind, vhid, advskew: skew, authlen, demote, advbase, counter, md };
        let b = r.to_bytes();
        let p = Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(Repr::parse(&p), r);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_rejects_are_counted(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        ttl: u8, multicast: bool, on_carp: bool, v6: bool,
    ) {
        let mut i = iface(false);
        i.set_up(Duration::ZERO, true);
        let rx = Received {
            af: if v6 { Af::V6 } else { Af::V4 },
            ttl, multicast, on_carp_interface: on_carp, payload: &payload,
        };
        let r = i.handle_advert(Duration::from_secs(1), &rx);
        prop_assert_eq!(i.rejects().total(), u64::from(r.is_err()));
        // Random bytes essentially never carry a valid HMAC.
        prop_assert!(r.is_err());
    }

    /// One flipped bit in a real ad, checksum refilled so the later checks must catch it.
    /// OpenBSD's HMAC covers version, type, vhid, the addresses and the counter, but NOT
    /// advskew, authlen, demote or advbase, and the type nibble is never checked: such
    /// flips are accepted, exactly as an OpenBSD peer would accept them.
    #[test]
    fn flipped_bits_are_caught_only_where_openbsd_catches_them(byte in 0usize..36, bit in 0u8..8) {
        if (6..8).contains(&byte) {
            return Ok(());
        }
        let (_, repr) = adverts(false, 0)[0];
        let mut b = repr.to_bytes();
        b[byte] ^= 1 << bit;
        Packet::new_checked(&mut b[..]).unwrap().fill_checksum();
        let cfg = InterfaceConfig {
            nodes: vec![NodeConfig { vhid: 5, advskew: 0 }],
            passphrase: b"tshark".to_vec(),
            v4: vec![Ipv4Addr::new(198, 18, 0, 100)],
            cookies: vec![[7; 8]],
            ..Default::default()
        };
        let mut i = Interface::new(&cfg).unwrap();
        i.set_up(Duration::ZERO, true);
        let rx = Received { af: Af::V4, ttl: 255, multicast: true, on_carp_interface: true, payload: &b };
        let unauthenticated = (2..6).contains(&byte) || (byte == 0 && bit < 4);
        prop_assert_eq!(i.handle_advert(Duration::from_secs(1), &rx).is_ok(), unauthenticated);
    }
}
