//! Data plane micro-benchmarks: flow lookup (hit, inbound and return), insert+remove, the NAT
//! rewrite of a 64-byte UDP frame, GUE encapsulation and the flow hashes.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use carpio::dataplane::encap::{self, Outer, Tunnel};
use carpio::dataplane::flow::{FlowTable, FlowTableConfig, Key, NewFlow, Origin, ReturnKey};
use carpio::dataplane::hash;
use carpio::dataplane::rewrite::{self, Macs};
use carpio::wire::checksum::{checksum, fold, pseudo_v4, sum};
use carpio::wire::classify::{Af, Class, Frag, Meta};
use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam::queue::ArrayQueue;

const FLOWS: u32 = 1 << 16;

fn key(i: u32) -> Key {
    Key {
        proto: 17,
        client: hash::addr16(IpAddr::V4(Ipv4Addr::from(0xc612_0000 + (i >> 4)))),
        client_port: 1024 + (i & 0xf) as u16,
        vip: 1,
        vip_port: 53,
    }
}

fn new(i: u32) -> NewFlow {
    NewFlow {
        service: 0,
        backend: (i % 8) as u16,
        backend_port: 53,
        tcp_flags: 0,
        one_sided: false,
        session_timeout: None,
        origin: Origin::Local,
    }
}

fn filled() -> FlowTable {
    let q = Arc::new(ArrayQueue::new(1 << 17));
    let c = FlowTableConfig {
        capacity: FLOWS * 2,
        ..Default::default()
    };
    let mut t = FlowTable::new(&c, q).expect("config");
    for i in 0..FLOWS {
        t.insert(0, &key(i), &new(i)).expect("insert");
    }
    t
}

/// A 60-byte Ethernet + IPv4 + UDP frame (64 on the wire with the FCS) and its Meta.
fn udp64() -> (Vec<u8>, Meta) {
    udp_frame(60)
}

/// An Ethernet + IPv4 + UDP frame of `len` bytes (without FCS) and its Meta.
fn udp_frame(len: usize) -> (Vec<u8>, Meta) {
    let (src, dst) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 1));
    let mut f = vec![0u8; len];
    let ip_len = (len - 14) as u16;
    let udp_len = ip_len - 20;
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14..24].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..42].copy_from_slice(&[0x9c, 0x40, 0, 53, 0, 0, 0, 0]);
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    let c = fold(sum(&f[34..len], pseudo_v4(src, dst, 17, udp_len)));
    f[40..42].copy_from_slice(&c.to_be_bytes());
    let meta = Meta {
        class: Class::Ipv4Udp,
        l3: 14,
        l4: 34,
        end: len as u16,
        vlan: [0, 0],
        af: Af::V4,
        proto: 17,
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        sport: 40000,
        dport: 53,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        ttl: 64,
        frag: Frag::None,
        quoted: None,
    };
    (f, meta)
}

fn bench(c: &mut Criterion) {
    let mut t = filled();
    let mut i = 0u32;
    c.bench_function("flow/lookup_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % FLOWS;
            black_box(t.lookup(1, black_box(&key(i))))
        })
    });
    c.bench_function("flow/lookup_return_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % FLOWS;
            let k = key(i);
            let r = ReturnKey {
                proto: 17,
                backend: (i % 8) as u16,
                backend_port: 53,
                client: k.client,
                client_port: k.client_port,
            };
            black_box(t.lookup_return(1, black_box(&r)))
        })
    });
    // Baseline in the same run: std's HashMap (SipHash) from the same keys to an index.
    let map: std::collections::HashMap<Key, u32> = (0..FLOWS).map(|i| (key(i), i)).collect();
    c.bench_function("baseline/std_hashmap_lookup_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % FLOWS;
            black_box(map.get(black_box(&key(i))))
        })
    });
    let mut j = FLOWS;
    c.bench_function("flow/insert_remove", |b| {
        b.iter(|| {
            j = FLOWS + (j + 1 - FLOWS) % FLOWS;
            let k = key(j);
            black_box(t.insert(1, &k, &new(j)).is_ok());
            black_box(t.remove(&k, true));
        })
    });

    let macs = Macs {
        dst: [2, 0, 0, 0, 0, 1],
        src: [2, 0, 0, 0, 0, 2],
    };
    let backends = [
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)),
    ];
    let mut n = 0usize;
    for (len, name) in [(60usize, "udp64"), (1514, "udp1514")] {
        let (mut f, m) = udp_frame(len);
        c.bench_function(&format!("rewrite/nat_{name}"), |b| {
            b.iter(|| {
                n ^= 1;
                // Alternate backends so every iteration really changes the bytes.
                let r =
                    rewrite::nat_to_backend(black_box(&mut f), &m, backends[n], 5353, Some(&macs));
                black_box(r.is_ok())
            })
        });
        // Baseline in the same run: the same NAT with both checksums recomputed in full.
        let (mut g, _) = udp_frame(len);
        c.bench_function(&format!("baseline/nat_{name}_full_recompute"), |b| {
            b.iter(|| {
                n ^= 1;
                let g = black_box(&mut g);
                let IpAddr::V4(a) = backends[n] else { return };
                g[30..34].copy_from_slice(&a.octets());
                g[36..38].copy_from_slice(&5353u16.to_be_bytes());
                g[0..6].copy_from_slice(&macs.dst);
                g[6..12].copy_from_slice(&macs.src);
                g[24..26].copy_from_slice(&[0, 0]);
                let c = checksum(&g[14..34]);
                g[24..26].copy_from_slice(&c.to_be_bytes());
                g[40..42].copy_from_slice(&[0, 0]);
                let src = Ipv4Addr::new(g[26], g[27], g[28], g[29]);
                let ulen = (len - 34) as u16;
                let c = fold(sum(&g[34..len], pseudo_v4(src, a, 17, ulen)));
                g[40..42].copy_from_slice(&c.to_be_bytes());
            })
        });
    }

    let (frame, m) = udp64();
    let mut buf = vec![0u8; 128 + frame.len()];
    let outer = Outer {
        tunnel: Tunnel::Gue { port: 6080 },
        src: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        mtu: 1500,
        macs: Some(macs),
    };
    c.bench_function("encap/gue_v4_udp64", |b| {
        b.iter(|| {
            buf[128..].copy_from_slice(&frame);
            black_box(encap::encap(&mut buf, 128, frame.len(), &m, &outer, 0x1234).is_ok())
        })
    });
    c.bench_function("hash/symmetric_meta", |b| {
        b.iter(|| black_box(hash::symmetric_meta(7, black_box(&m))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
