//! Rewrites (NAT, DSR, ICMP errors, IPIP/GUE, too-big replies) on hand-built frames, with every
//! checksum verified by full recomputation afterwards.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carpio::dataplane::encap::{self, Outer, Tunnel};
use carpio::dataplane::rewrite::{self, Error, Macs};
use carpio::wire::checksum::{checksum, fold, pseudo_v4, pseudo_v6, sum};
use carpio::wire::classify::{Af, Class, Frag, Meta, Quoted};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MACS: Macs = Macs {
    dst: [0x02, 0, 0, 0, 0, 0xbe],
    src: [0x02, 0, 0, 0, 0, 0x1b],
};
const TCP: u8 = 6;
const UDP: u8 = 17;

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, d))
}
fn v4b(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, 1, d))
}
fn v6(d: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, d))
}
fn v6b(d: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbe, 0, 0, 0, 0xffff, d))
}

/// An IP packet (no link header) with correct checksums.
fn ip_packet(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = Vec::new();
    match proto {
        TCP => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
            l4.extend_from_slice(&0u32.to_be_bytes()); // ack
            l4.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // off, PSH|ACK, win, csum, urg
        }
        UDP => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        _ => {
            // ICMP / ICMPv6 echo request, sport = identifier.
            let ty = if src.is_ipv4() { 8 } else { 128 };
            l4.extend_from_slice(&[ty, 0, 0, 0]);
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&1u16.to_be_bytes());
        }
    }
    l4.extend_from_slice(payload);
    let csum_at = match proto {
        TCP => 16,
        UDP => 6,
        _ => 2,
    };
    let acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) if proto != 1 => pseudo_v4(s, d, proto, l4.len() as u16),
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_v6(s, d, proto, l4.len() as u32),
        _ => 0,
    };
    let mut c = fold(sum(&l4, acc));
    if proto == UDP && c == 0 {
        c = 0xffff;
    }
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    wrap_ip(src, dst, proto, &l4)
}

fn wrap_ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&[0x45, 0x10]);
            p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let c = checksum(&p);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            p.extend_from_slice(&[proto, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    p.extend_from_slice(l4);
    p
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(if ip[0] >> 4 == 4 {
        &[0x08, 0x00]
    } else {
        &[0x86, 0xdd]
    });
    f.extend_from_slice(ip);
    f
}

/// An ICMP error from `src` to `dst` quoting `quote` (an IP packet, maybe truncated).
fn icmp_error(src: IpAddr, dst: IpAddr, quote: &[u8]) -> Vec<u8> {
    let (proto, ty, code) = if src.is_ipv4() { (1, 3, 3) } else { (58, 1, 4) };
    let mut m = vec![ty, code, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(quote);
    let acc = match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_v6(s, d, proto, m.len() as u32),
        _ => 0,
    };
    let c = fold(sum(&m, acc));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    eth(&wrap_ip(src, dst, proto, &m))
}

fn addr_at(f: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&f[at..at + 16]);
        IpAddr::V6(a.into())
    } else {
        IpAddr::V4(Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]))
    }
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// Test helper standing in for `wire::classify::classify` on the well-formed Ethernet frames
/// built above (no VLANs, no options, no extension headers).
fn meta_for_test_frame(f: &[u8]) -> Meta {
    let l3 = 14usize;
    let is6 = f[l3] >> 4 == 6;
    let (proto, l4, end, src, dst) = if is6 {
        (
            f[l3 + 6],
            l3 + 40,
            l3 + 40 + be16(f, l3 + 4) as usize,
            addr_at(f, l3 + 8, true),
            addr_at(f, l3 + 24, true),
        )
    } else {
        let ihl = (f[l3] & 0xf) as usize * 4;
        (
            f[l3 + 9],
            l3 + ihl,
            l3 + be16(f, l3 + 2) as usize,
            addr_at(f, l3 + 12, false),
            addr_at(f, l3 + 16, false),
        )
    };
    let ports = matches!(proto, TCP | UDP);
    let icmp = proto == 1 || proto == 58;
    let (sport, dport) = if ports || icmp {
        if icmp {
            (be16(f, l4 + 4), be16(f, l4 + 4))
        } else {
            (be16(f, l4), be16(f, l4 + 2))
        }
    } else {
        (0, 0)
    };
    let error = icmp
        && if is6 {
            f[l4] < 128
        } else {
            matches!(f[l4], 3 | 11 | 12)
        };
    let quoted = error.then(|| {
        let ql3 = l4 + 8;
        let (qproto, ql4, qs, qd) = if is6 {
            (
                f[ql3 + 6],
                ql3 + 40,
                addr_at(f, ql3 + 8, true),
                addr_at(f, ql3 + 24, true),
            )
        } else {
            let ihl = (f[ql3] & 0xf) as usize * 4;
            (
                f[ql3 + 9],
                ql3 + ihl,
                addr_at(f, ql3 + 12, false),
                addr_at(f, ql3 + 16, false),
            )
        };
        Quoted {
            l3: ql3 as u16,
            l4: ql4 as u16,
            proto: qproto,
            src: qs,
            dst: qd,
            sport: be16(f, ql4),
            dport: be16(f, ql4 + 2),
        }
    });
    let class = match (is6, proto) {
        (false, TCP) => Class::Ipv4Tcp,
        (false, UDP) => Class::Ipv4Udp,
        (false, 1) => Class::Ipv4Icmp,
        (true, TCP) => Class::Ipv6Tcp,
        (true, UDP) => Class::Ipv6Udp,
        (true, 58) => Class::Ipv6Icmp,
        (false, _) => Class::Ipv4Other,
        (true, _) => Class::Ipv6Other,
    };
    Meta {
        class,
        l3: l3 as u16,
        l4: l4 as u16,
        end: end as u16,
        vlan: [0, 0],
        af: if is6 { Af::V6 } else { Af::V4 },
        proto,
        src,
        dst,
        sport,
        dport,
        tcp_flags: if proto == TCP { f[l4 + 13] } else { 0 },
        icmp_type: if icmp { f[l4] } else { 0 },
        icmp_code: if icmp { f[l4 + 1] } else { 0 },
        ttl: if is6 { f[l3 + 7] } else { f[l3 + 8] },
        frag: Frag::None,
        quoted,
    }
}

/// Full recomputation of every checksum in the frame: the IP header (IPv4), the transport
/// (pseudo-header included), and for ICMP errors the quoted IPv4 header and, when the quote
/// holds the whole quoted packet, its transport checksum too.
fn verify(f: &[u8]) {
    let m = meta_for_test_frame(f);
    let (l3, l4, end) = (m.l3 as usize, m.l4 as usize, m.end as usize);
    if m.af == Af::V4 {
        assert_eq!(checksum(&f[l3..l4]), 0, "IPv4 header checksum");
    }
    verify_l4(f, m.af, m.proto, m.src, m.dst, l4, end, "outer");
    if let Some(q) = m.quoted {
        let ql3 = q.l3 as usize;
        let ql4 = q.l4 as usize;
        if m.af == Af::V4 {
            assert_eq!(checksum(&f[ql3..ql4]), 0, "quoted IPv4 header checksum");
        }
        let qend = if m.af == Af::V4 {
            ql3 + be16(f, ql3 + 2) as usize
        } else {
            ql4 + be16(f, ql3 + 4) as usize
        };
        if qend <= end {
            verify_l4(f, m.af, q.proto, q.src, q.dst, ql4, qend, "quoted");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn verify_l4(
    f: &[u8],
    af: Af,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    l4: usize,
    end: usize,
    what: &str,
) {
    let seg = &f[l4..end];
    let acc = match (src, dst, proto) {
        (_, _, 1) => 0,
        (IpAddr::V4(s), IpAddr::V4(d), _) => pseudo_v4(s, d, proto, seg.len() as u16),
        (IpAddr::V6(s), IpAddr::V6(d), _) => pseudo_v6(s, d, proto, seg.len() as u32),
        _ => panic!("mixed"),
    };
    if proto == UDP && af == Af::V4 && be16(seg, 6) == 0 {
        return;
    }
    assert_eq!(fold(sum(seg, acc)), 0, "{what} proto {proto} checksum");
}

fn all_cases() -> Vec<(IpAddr, IpAddr, IpAddr, u8)> {
    // (client, vip, backend, proto)
    let mut v = Vec::new();
    for proto in [TCP, UDP] {
        v.push((v4(10), v4(1), v4b(20), proto));
        v.push((v6(10), v6(1), v6b(20), proto));
    }
    v
}

#[test]
fn nat_to_backend_each_af_and_proto() {
    for (client, vip, backend, proto) in all_cases() {
        let mut f = eth(&ip_packet(client, vip, proto, 40000, 53, b"hello, world!"));
        let before = f.clone();
        verify(&f);
        let m = meta_for_test_frame(&f);
        rewrite::nat_to_backend(&mut f, &m, backend, 5353, Some(&MACS)).unwrap();
        verify(&f);
        let n = meta_for_test_frame(&f);
        assert_eq!(
            (n.src, n.dst, n.sport, n.dport),
            (client, backend, 40000, 5353)
        );
        assert_eq!(&f[..6], &MACS.dst);
        assert_eq!(&f[6..12], &MACS.src);
        assert_eq!(f.len(), before.len());
        assert_eq!(&f[n.end as usize - 13..], b"hello, world!");
    }
}

#[test]
fn nat_to_client_each_af_and_proto() {
    for (client, vip, backend, proto) in all_cases() {
        let mut f = eth(&ip_packet(backend, client, proto, 5353, 40000, b"answer"));
        let m = meta_for_test_frame(&f);
        rewrite::nat_to_client(&mut f, &m, vip, 53, None).unwrap();
        verify(&f);
        let n = meta_for_test_frame(&f);
        assert_eq!((n.src, n.dst, n.sport, n.dport), (vip, client, 53, 40000));
        assert_eq!(&f[..6], &MAC_A, "MACs untouched without Macs");
    }
}

#[test]
fn nat_icmp_echo_v4_and_v6() {
    for (client, vip, backend) in [(v4(10), v4(1), v4b(20)), (v6(10), v6(1), v6b(20))] {
        let proto = if client.is_ipv4() { 1 } else { 58 };
        let mut f = eth(&ip_packet(client, vip, proto, 777, 0, b"ping"));
        let m = meta_for_test_frame(&f);
        rewrite::nat_to_backend(&mut f, &m, backend, 9, None).unwrap();
        verify(&f);
        let n = meta_for_test_frame(&f);
        assert_eq!((n.dst, n.sport), (backend, 777), "echo id is not a port");
    }
}

#[test]
fn golden_ipv4_udp_nat() {
    let mut f = eth(&ip_packet(v4(10), v4(1), UDP, 0x9c40, 53, b"\x12\x34"));
    let m = meta_for_test_frame(&f);
    rewrite::nat_to_backend(&mut f, &m, v4b(20), 53, None).unwrap();
    #[rustfmt::skip]
    let want: [u8; 44] = [
        0x02, 0, 0, 0, 0, 0x0a, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x00,
        0x45, 0x10, 0x00, 0x1e, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
        198, 18, 0, 10, 198, 19, 1, 20,
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x00, 0x12, 0x34,
    ];
    // Checksums by full recomputation, then compared byte for byte.
    let mut want = want.to_vec();
    let c = checksum(&want[14..34]);
    want[24..26].copy_from_slice(&c.to_be_bytes());
    let acc = pseudo_v4(
        Ipv4Addr::new(198, 18, 0, 10),
        Ipv4Addr::new(198, 19, 1, 20),
        UDP,
        10,
    );
    let c = fold(sum(&want[34..], acc));
    want[40..42].copy_from_slice(&c.to_be_bytes());
    assert_eq!(f, want);
}

#[test]
fn ipv4_udp_zero_checksum_stays_zero() {
    let mut f = eth(&ip_packet(v4(10), v4(1), UDP, 1000, 123, b"ntp"));
    f[14 + 20 + 6] = 0;
    f[14 + 20 + 7] = 0;
    let m = meta_for_test_frame(&f);
    rewrite::nat_to_backend(&mut f, &m, v4b(20), 123, None).unwrap();
    assert_eq!(be16(&f, 14 + 20 + 6), 0);
    verify(&f);
}

#[test]
fn ipv6_udp_zero_checksum_is_refused() {
    let mut f = eth(&ip_packet(v6(10), v6(1), UDP, 1000, 123, b"ntp"));
    f[14 + 40 + 6] = 0;
    f[14 + 40 + 7] = 0;
    let before = f.clone();
    let m = meta_for_test_frame(&f);
    assert_eq!(
        rewrite::nat_to_backend(&mut f, &m, v6b(20), 123, None),
        Err(Error::Ipv6UdpZeroChecksum)
    );
    assert_eq!(f, before, "nothing written on refusal");
}

#[test]
fn af_mismatch_and_non_ethernet_are_refused() {
    let mut f = eth(&ip_packet(v4(10), v4(1), TCP, 1000, 25, b""));
    let m = meta_for_test_frame(&f);
    assert_eq!(
        rewrite::nat_to_backend(&mut f, &m, v6b(1), 25, None),
        Err(Error::AfMismatch)
    );
    let mut raw = ip_packet(v4(10), v4(1), TCP, 1000, 25, b"");
    let mut rm = m;
    rm.l3 = 0;
    rm.l4 -= 14;
    rm.end -= 14;
    assert_eq!(rewrite::dsr(&mut raw, &rm, &MACS), Err(Error::NoEthernet));
    // A raw IP frame can still be NAT'ed without MACs.
    rewrite::nat_to_backend(&mut raw, &rm, v4b(2), 2525, None).unwrap();
    verify(&eth(&raw));
}

#[test]
fn dsr_changes_only_macs() {
    for (client, vip, _, proto) in all_cases() {
        let mut f = eth(&ip_packet(client, vip, proto, 1234, 80, b"GET /"));
        let before = f.clone();
        let m = meta_for_test_frame(&f);
        rewrite::dsr(&mut f, &m, &MACS).unwrap();
        assert_eq!(&f[..6], &MACS.dst);
        assert_eq!(&f[6..12], &MACS.src);
        assert_eq!(&f[12..], &before[12..]);
    }
}

#[test]
fn rewrites_never_panic_on_truncated_frames() {
    for (client, vip, backend, proto) in all_cases() {
        let full = eth(&ip_packet(client, vip, proto, 1, 2, b"xyz"));
        let m = meta_for_test_frame(&full);
        for cut in 0..full.len() {
            let mut f = full[..cut].to_vec();
            let r = rewrite::nat_to_backend(&mut f, &m, backend, 3, Some(&MACS));
            assert_eq!(r, Err(Error::Truncated), "cut at {cut}");
            let mut f = full[..cut].to_vec();
            let _ = rewrite::nat_to_client(&mut f, &m, vip, 3, Some(&MACS));
            let _ = rewrite::dsr(&mut f, &m, &MACS);
        }
        // ICMP errors quoting that flow, both directions.
        let full = icmp_error(
            backend,
            client,
            &ip_packet(client, backend, proto, 1, 2, b"q"),
        );
        let m = meta_for_test_frame(&full);
        for cut in 0..full.len() {
            let mut f = full[..cut].to_vec();
            let r = rewrite::nat_icmp_to_client(&mut f, &m, vip, 3, None);
            assert_eq!(r, Err(Error::Truncated), "cut at {cut}");
            assert_eq!(f, full[..cut], "refused frames are untouched");
            let r = rewrite::nat_icmp_to_backend(&mut f, &m, backend, 3, None);
            assert_eq!(r, Err(Error::Truncated), "cut at {cut}");
        }
    }
}

#[test]
fn seeded_nat_round_trips_keep_checksums_valid() {
    // 2000 random flows: NAT in, NAT back out, every checksum verified each time.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..2000 {
        let r = rnd();
        let proto = if r & 1 == 0 { TCP } else { UDP };
        let six = r & 2 != 0;
        let a = |r: u64| {
            if six {
                IpAddr::V6(Ipv6Addr::from((r as u128) << 64 | r as u128))
            } else {
                IpAddr::V4(Ipv4Addr::from(r as u32))
            }
        };
        let (client, vip, backend) = (a(rnd()), a(rnd()), a(rnd()));
        let (cp, vp, bp) = (rnd() as u16, rnd() as u16, rnd() as u16);
        let payload: Vec<u8> = (0..(rnd() % 40)).map(|_| rnd() as u8).collect();
        let mut f = eth(&ip_packet(client, vip, proto, cp, vp, &payload));
        let m = meta_for_test_frame(&f);
        rewrite::nat_to_backend(&mut f, &m, backend, bp, Some(&MACS)).unwrap();
        verify(&f);
        let m = meta_for_test_frame(&f);
        assert_eq!((m.dst, m.dport), (backend, bp));
        // Back: the reply is built fresh, then source-NAT'ed to the VIP.
        let mut g = eth(&ip_packet(backend, client, proto, bp, cp, &payload));
        let m = meta_for_test_frame(&g);
        rewrite::nat_to_client(&mut g, &m, vip, vp, None).unwrap();
        verify(&g);
        assert_eq!(
            g[14..],
            ip_packet(vip, client, proto, vp, cp, &payload)[..],
            "equals a packet built with the VIP"
        );
    }
}

#[test]
fn icmp_error_to_client_port_unreachable() {
    // Backend answers a client's UDP datagram with port unreachable; it must reach the client
    // as if the VIP sent it, quoting client → VIP.
    for (client, vip, backend) in [(v4(10), v4(1), v4b(20)), (v6(10), v6(1), v6b(20))] {
        for proto in [UDP, TCP] {
            let orig = ip_packet(client, backend, proto, 40000, 5353, b"query");
            let mut f = icmp_error(backend, client, &orig);
            verify(&f);
            let m = meta_for_test_frame(&f);
            rewrite::nat_icmp_to_client(&mut f, &m, vip, 53, Some(&MACS)).unwrap();
            verify(&f);
            let n = meta_for_test_frame(&f);
            let q = n.quoted.unwrap();
            assert_eq!((n.src, n.dst), (vip, client));
            assert_eq!((q.src, q.sport, q.dst, q.dport), (client, 40000, vip, 53));
            let want_quote = ip_packet(client, vip, proto, 40000, 53, b"query");
            assert_eq!(
                &f[q.l3 as usize..],
                &want_quote[..],
                "quoted packet as the client sent it"
            );
        }
    }
}

#[test]
fn icmp_error_from_router_keeps_outer_source() {
    let router = v4(254);
    let orig = ip_packet(v4(10), v4b(20), UDP, 40000, 5353, b"q");
    let mut f = icmp_error(router, v4(10), &orig);
    let m = meta_for_test_frame(&f);
    rewrite::nat_icmp_to_client(&mut f, &m, v4(1), 53, None).unwrap();
    verify(&f);
    let n = meta_for_test_frame(&f);
    assert_eq!(n.src, router);
    assert_eq!(n.quoted.unwrap().dst, v4(1));
}

#[test]
fn icmp_error_to_backend_frag_needed() {
    // A router on the client's path says our reply (VIP:53 → client) was too big; the backend
    // must learn it about its own flow (backend:5353 → client). The quote is cut short to the
    // IP header + 8 bytes, so the quoted TCP checksum is absent and left alone.
    for (client, vip, backend) in [(v4(10), v4(1), v4b(20)), (v6(10), v6(1), v6b(20))] {
        for (proto, cut) in [(UDP, usize::MAX), (TCP, 8)] {
            let orig = ip_packet(vip, client, proto, 53, 40000, &[0xab; 100]);
            let ihl: usize = if vip.is_ipv4() { 20 } else { 40 };
            let quote = &orig[..orig.len().min(ihl.saturating_add(cut))];
            let mut f = icmp_error(v4_or_v6_router(vip), vip, quote);
            verify(&f);
            let m = meta_for_test_frame(&f);
            rewrite::nat_icmp_to_backend(&mut f, &m, backend, 5353, Some(&MACS)).unwrap();
            verify(&f);
            let n = meta_for_test_frame(&f);
            let q = n.quoted.unwrap();
            assert_eq!(n.dst, backend);
            assert_eq!(
                (q.src, q.sport, q.dst, q.dport),
                (backend, 5353, client, 40000)
            );
        }
    }
}

fn v4_or_v6_router(like: IpAddr) -> IpAddr {
    if like.is_ipv4() { v4(254) } else { v6(0xfe) }
}

#[test]
fn icmp_rewrite_needs_a_quote() {
    let mut f = eth(&ip_packet(v4(10), v4(1), UDP, 1, 2, b""));
    let m = meta_for_test_frame(&f);
    assert_eq!(
        rewrite::nat_icmp_to_backend(&mut f, &m, v4b(1), 2, None),
        Err(Error::NoQuoted)
    );
}

fn outer(tunnel: Tunnel, six: bool, mtu: u16) -> Outer {
    Outer {
        tunnel,
        src: if six { v6(0x100) } else { v4(100) },
        dst: if six { v6b(0x20) } else { v4b(20) },
        mtu,
        macs: Some(MACS),
    }
}

#[test]
fn encap_ipip_and_gue_every_combination() {
    for (client, vip, _, proto) in all_cases() {
        for six in [false, true] {
            for tunnel in [Tunnel::Ipip, Tunnel::Gue { port: 6080 }] {
                let inner = ip_packet(client, vip, proto, 40000, 53, b"payload!");
                let frame = eth(&inner);
                let m = meta_for_test_frame(&frame);
                let headroom = 256;
                let mut buf = vec![0u8; headroom + frame.len() + 4];
                buf[headroom..headroom + frame.len()].copy_from_slice(&frame);
                // Ethernet padding after the packet must not be carried into the tunnel.
                let len = frame.len() + 4;
                let o = outer(tunnel, six, 1500);
                let (start, n) =
                    encap::encap(&mut buf, headroom, len, &m, &o, 0xdead_beef).unwrap();
                let ohdr = encap::overhead(tunnel, if six { Af::V6 } else { Af::V4 });
                assert_eq!(start, headroom - ohdr);
                assert_eq!(n, frame.len() + ohdr);
                let out = &buf[start..start + n];
                assert_eq!(&out[..12], &[MACS.dst, MACS.src].concat()[..]);
                assert_eq!(
                    &out[12..14],
                    if six { &[0x86, 0xdd] } else { &[0x08, 0x00] }
                );
                assert_eq!(&out[14 + ohdr..], &inner[..], "inner packet untouched");
                let om = meta_for_test_frame(out);
                assert_eq!((om.src, om.dst), (o.src, o.dst));
                let want_proto = match tunnel {
                    Tunnel::Ipip => {
                        if client.is_ipv4() {
                            4
                        } else {
                            41
                        }
                    }
                    Tunnel::Gue { .. } => UDP,
                };
                assert_eq!(om.proto, want_proto);
                if six {
                    let label = u32::from_be_bytes([0, out[15] & 0xf, out[16], out[17]]);
                    assert_eq!(label, 0xdead_beef & 0xfffff, "flow label entropy");
                } else {
                    assert_eq!(checksum(&out[14..34]), 0);
                    assert_eq!(out[14 + 6] & 0x40, 0x40, "DF");
                    let tos = if client.is_ipv4() { 0x10 } else { 0 };
                    assert_eq!(out[14 + 1], tos, "TOS copied from inner");
                }
                if let Tunnel::Gue { port } = tunnel {
                    let u = 14 + if six { 40 } else { 20 };
                    assert_eq!(
                        be16(out, u),
                        0xc000 | (0xbeef & 0x3fff),
                        "source port entropy"
                    );
                    assert_eq!(be16(out, u + 2), port);
                    assert_eq!(be16(out, u + 4) as usize, 8 + inner.len());
                    if six {
                        assert_ne!(be16(out, u + 6), 0);
                    } else {
                        assert_eq!(be16(out, u + 6), 0, "IPv4 GUE sends no UDP checksum");
                    }
                    verify(out);
                }
            }
        }
    }
}

#[test]
fn encap_errors_headroom_mtu_af() {
    let frame = eth(&ip_packet(v4(10), v4(1), UDP, 1, 2, &[0; 100]));
    let m = meta_for_test_frame(&frame);
    let ip_len = frame.len() - 14;
    let mut buf = vec![0u8; 19 + frame.len()];
    buf[19..].copy_from_slice(&frame);
    let o = outer(Tunnel::Ipip, false, 1500);
    assert_eq!(
        encap::encap(&mut buf, 19, frame.len(), &m, &o, 0),
        Err(Error::NoHeadroom)
    );
    let mut buf = vec![0u8; 64 + frame.len()];
    buf[64..].copy_from_slice(&frame);
    let exact = outer(Tunnel::Gue { port: 1 }, false, (ip_len + 28) as u16);
    assert!(encap::encap(&mut buf.clone(), 64, frame.len(), &m, &exact, 0).is_ok());
    let small = outer(Tunnel::Gue { port: 1 }, false, (ip_len + 27) as u16);
    assert_eq!(
        encap::encap(&mut buf, 64, frame.len(), &m, &small, 0),
        Err(Error::TooBig)
    );
    assert_eq!(encap::inner_mtu(&small) as usize, ip_len - 1);
    let mut mixed = outer(Tunnel::Ipip, false, 1500);
    mixed.dst = v6(1);
    assert_eq!(
        encap::encap(&mut buf, 64, frame.len(), &m, &mixed, 0),
        Err(Error::AfMismatch)
    );
    // Every truncation of the frame (len shorter than the packet) is refused untouched.
    for cut in 0..frame.len() {
        let before = buf.clone();
        assert_eq!(
            encap::encap(&mut buf, 64, cut, &m, &o, 0),
            Err(Error::Truncated),
            "cut {cut}"
        );
        assert_eq!(buf, before);
        let mut out = [0u8; 1500];
        assert_eq!(
            encap::icmp_too_big(&frame[..cut], &m, 1400, &mut out),
            Err(Error::Truncated)
        );
    }
    // Truncated buffer: len beyond the buffer.
    assert_eq!(
        encap::encap(&mut buf, 64, frame.len() + 1000, &m, &o, 0),
        Err(Error::Truncated)
    );
}

#[test]
fn icmp_too_big_v4_and_v6() {
    for (client, vip) in [(v4(10), v4(1)), (v6(10), v6(1))] {
        let frame = eth(&ip_packet(client, vip, TCP, 40000, 25, &[7; 1400]));
        let m = meta_for_test_frame(&frame);
        let mut out = [0u8; 2048];
        let n = encap::icmp_too_big(&frame, &m, 1452, &mut out).unwrap();
        let r = out[..n].to_vec();
        let r = &r[..];
        assert_eq!(&r[..6], &MAC_B, "MACs swapped");
        assert_eq!(&r[6..12], &MAC_A);
        verify(r);
        let rm = meta_for_test_frame(r);
        assert_eq!((rm.src, rm.dst), (vip, client));
        let q = rm.quoted.unwrap();
        assert_eq!((q.src, q.dst, q.sport, q.dport), (client, vip, 40000, 25));
        let l4 = rm.l4 as usize;
        if client.is_ipv4() {
            assert_eq!(n - 14, 576, "RFC 1812 size limit");
            assert_eq!((r[l4], r[l4 + 1], be16(r, l4 + 6)), (3, 4, 1452));
        } else {
            assert_eq!(n - 14, 1280, "RFC 4443 size limit");
            assert_eq!(r[l4], 2);
            assert_eq!(
                u32::from_be_bytes([r[l4 + 4], r[l4 + 5], r[l4 + 6], r[l4 + 7]]),
                1452
            );
        }
        // No room, and never about an ICMP error.
        assert_eq!(
            encap::icmp_too_big(&frame, &m, 1452, &mut out[..100]),
            Err(Error::NoRoom)
        );
        assert_eq!(
            encap::icmp_too_big(r, &rm, 1000, &mut [0u8; 2048]),
            Err(Error::AboutIcmpError)
        );
    }
}

#[test]
fn decrement_ttl_v4_and_v6() {
    for (client, vip) in [(v4(10), v4(1)), (v6(10), v6(1))] {
        let mut f = eth(&ip_packet(client, vip, UDP, 40000, 53, b"q"));
        let m = meta_for_test_frame(&f);
        let start = m.ttl;
        let before = f.clone();
        rewrite::decrement_ttl(&mut f, &m).unwrap();
        verify(&f);
        let n = meta_for_test_frame(&f);
        assert_eq!(n.ttl, start - 1);
        let ttl_at = if client.is_ipv4() { 14 + 8 } else { 14 + 7 };
        // Only the TTL and (IPv4) the header checksum change.
        let changed: Vec<usize> = (0..f.len()).filter(|&i| f[i] != before[i]).collect();
        assert!(changed.contains(&ttl_at), "{changed:?}");
        assert!(
            changed
                .iter()
                .all(|&i| i == ttl_at || (client.is_ipv4() && (24..26).contains(&i))),
            "{changed:?}"
        );
        // Every TTL with assorted header words: the incremental update matches a recomputed
        // header checksum (verify recomputes it), including sums that wrap around 0xffff.
        if client.is_ipv4() {
            for ttl in 2..=255u8 {
                for id in [0u16, 0x00ff, 0x7fff, 0xfeff, 0xffff] {
                    let mut g = before.clone();
                    g[ttl_at] = ttl;
                    g[18..20].copy_from_slice(&id.to_be_bytes());
                    g[24..26].fill(0);
                    let c = checksum(&g[14..34]);
                    g[24..26].copy_from_slice(&c.to_be_bytes());
                    let gm = meta_for_test_frame(&g);
                    rewrite::decrement_ttl(&mut g, &gm).unwrap();
                    assert_eq!(g[ttl_at], ttl - 1);
                    verify(&g);
                }
            }
        }
        // Down to 1: refused, the frame untouched.
        for ttl in [1u8, 0] {
            let mut g = f.clone();
            g[ttl_at] = ttl;
            let gm = meta_for_test_frame(&g);
            let kept = g.clone();
            assert_eq!(rewrite::decrement_ttl(&mut g, &gm), Err(Error::TtlExpired));
            assert_eq!(g, kept);
        }
    }
}

#[test]
fn icmp_time_exceeded_v4_and_v6() {
    for (client, vip) in [(v4(10), v4(1)), (v6(10), v6(1))] {
        let frame = eth(&ip_packet(client, vip, UDP, 40000, 53, b"last hop"));
        let m = meta_for_test_frame(&frame);
        let mut out = [0u8; 2048];
        let n = encap::icmp_error(&frame, &m, encap::IcmpError::TimeExceeded, &mut out).unwrap();
        let r = &out[..n];
        verify(r);
        let rm = meta_for_test_frame(r);
        assert_eq!((rm.src, rm.dst), (vip, client));
        let l4 = rm.l4 as usize;
        let ty = if client.is_ipv4() { 11 } else { 3 };
        assert_eq!((r[l4], r[l4 + 1]), (ty, 0), "time exceeded in transit");
        assert_eq!(&r[l4 + 8..], &frame[14..], "the whole packet is quoted");
        // Never to a multicast source.
        let mut mm = m;
        mm.src = if client.is_ipv4() {
            "224.0.0.1".parse().unwrap()
        } else {
            "ff02::1".parse().unwrap()
        };
        assert_eq!(
            encap::icmp_error(&frame, &mm, encap::IcmpError::TimeExceeded, &mut out),
            Err(Error::NotUnicastSource)
        );
    }
}

#[test]
fn icmp_errors_hash_to_the_worker_of_their_flow() {
    use carpio::dataplane::hash;
    for (client, vip) in [(v4(10), v4(1)), (v6(10), v6(1))] {
        let pkt = eth(&ip_packet(client, vip, UDP, 40000, 53, b"q"));
        let reply = ip_packet(vip, client, UDP, 53, 40000, b"a");
        let err = icmp_error(v4_or_v6_router(vip), vip, &reply);
        let (pm, em) = (meta_for_test_frame(&pkt), meta_for_test_frame(&err));
        assert_eq!(hash::symmetric_meta(9, &pm), hash::symmetric_meta(9, &em));
        assert_ne!(
            hash::directed_meta(9, &pm),
            hash::directed_meta(9, &meta_for_test_frame(&eth(&reply)))
        );
    }
}

/// Inserts an 802.1Q tag (VLAN 42) and shifts the Meta offsets accordingly.
fn with_vlan(f: &[u8], m: &Meta) -> (Vec<u8>, Meta) {
    let mut g = f[..12].to_vec();
    g.extend_from_slice(&[0x81, 0x00, 0x00, 42]);
    g.extend_from_slice(&f[12..]);
    let mut n = *m;
    n.l3 += 4;
    n.l4 += 4;
    n.end += 4;
    n.vlan = [42, 0];
    (g, n)
}

#[test]
fn vlan_tagged_nat_and_encap() {
    for (client, vip, backend, proto) in all_cases() {
        let plain = eth(&ip_packet(client, vip, proto, 40000, 53, b"tagged"));
        let (mut f, m) = with_vlan(&plain, &meta_for_test_frame(&plain));
        rewrite::nat_to_backend(&mut f, &m, backend, 5353, Some(&MACS)).unwrap();
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 42], "tag kept");
        // Without the tag it is exactly the untagged NAT result.
        let mut want = plain.clone();
        let pm = meta_for_test_frame(&plain);
        rewrite::nat_to_backend(&mut want, &pm, backend, 5353, Some(&MACS)).unwrap();
        assert_eq!([&f[..12], &f[16..]].concat(), want);

        let (tagged, m) = with_vlan(&plain, &pm);
        let mut buf = vec![0u8; 128 + tagged.len()];
        buf[128..].copy_from_slice(&tagged);
        let o = outer(Tunnel::Ipip, true, 1500);
        let (start, n) = encap::encap(&mut buf, 128, tagged.len(), &m, &o, 1).unwrap();
        let out = &buf[start..start + n];
        assert_eq!(
            &out[12..18],
            &[0x81, 0x00, 0x00, 42, 0x86, 0xdd],
            "tag kept, outer ethertype"
        );
        assert_eq!(&out[18 + 40..], &tagged[18..], "inner packet untouched");
    }
}
