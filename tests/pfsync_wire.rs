//! Property tests for the pfsync wire format and the replicator's receive path: parse/emit
//! round trips for arbitrary records, and no panic (only named rejects) on arbitrary bytes.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use carpio::pfsync::{Replicator, ReplicatorConfig, Stat};
use carpio::wire::pfsync::{
    HEADER_LEN, IdRecord, Message, Packet, Reject, STATE_LEN, State, StateKey, StatePeer, UpdC,
    Writer, action,
};
use proptest::prelude::*;

fn peer() -> impl Strategy<Value = StatePeer> {
    (any::<[u8; 8]>(), any::<(u32, u32, u32, u16, u16, u8, u8)>()).prop_map(|(s, p)| {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&s);
        let mut x = StatePeer::parse(&b).unwrap_or_default();
        (
            x.seqlo, x.seqhi, x.seqdiff, x.max_win, x.mss, x.state, x.wscale,
        ) = p;
        x
    })
}

fn key() -> impl Strategy<Value = StateKey> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<[u16; 2]>(),
        any::<u16>(),
        any::<u8>(),
    )
        .prop_map(|(a, b, port, rdomain, af)| StateKey {
            addr: [a, b],
            port,
            rdomain,
            af,
        })
}

fn state() -> impl Strategy<Value = State> {
    (
        any::<u64>(),
        any::<[u8; 16]>(),
        key(),
        key(),
        peer(),
        peer(),
        any::<[u8; 16]>(),
        any::<(u32, u32, u32, u32, u32)>(),
        any::<([u64; 2], [u64; 2], u32, [i32; 2], u16)>(),
        any::<[u8; 10]>(),
        any::<(u16, [u8; 2])>(),
    )
        .prop_map(
            |(id, ifname, k0, k1, src, dst, rt_addr, r, c, f, g)| State {
                id,
                ifname,
                key: [k0, k1],
                src,
                dst,
                rt_addr,
                rule: r.0,
                anchor: r.1,
                nat_rule: r.2,
                creation: r.3,
                expire: r.4,
                packets: c.0,
                bytes: c.1,
                creatorid: c.2,
                rtableid: c.3,
                max_mss: c.4,
                af: f[0],
                proto: f[1],
                direction: f[2],
                log: f[3],
                rt: f[4],
                timeout: f[5],
                sync_flags: f[6],
                updates: f[7],
                min_ttl: f[8],
                set_tos: f[9],
                state_flags: g.0,
                set_prio: g.1,
            },
        )
}

proptest! {
    #[test]
    fn state_round_trips(s in state()) {
        let mut b = [0u8; STATE_LEN];
        s.emit(&mut b).unwrap();
        prop_assert_eq!(State::parse(&b), Ok(s));
    }

    #[test]
    fn state_bytes_round_trip_except_pads(bytes in proptest::collection::vec(any::<u8>(), STATE_LEN)) {
        let s = State::parse(&bytes).unwrap();
        let mut out = [0u8; STATE_LEN];
        s.emit(&mut out).unwrap();
        // Only the pad bytes (key pad @39, peer pads @26..32) may differ.
        let pads: Vec<usize> = [24 + 39, 64 + 39]
            .into_iter()
            .chain((104 + 26..104 + 32).chain(136 + 26..136 + 32))
            .collect();
        for i in 0..STATE_LEN {
            if !pads.contains(&i) {
                prop_assert_eq!(out[i], bytes[i], "byte {}", i);
            } else {
                prop_assert_eq!(out[i], 0);
            }
        }
    }

    #[test]
    fn packets_round_trip(ids in proptest::collection::vec(any::<(u64, u32)>(), 0..40),
                          ups in proptest::collection::vec((any::<u64>(), peer(), peer(), any::<u32>(), any::<u8>()), 0..10),
                          full in proptest::collection::vec(state(), 0..4)) {
        let mut msgs = Vec::new();
        msgs.extend(ids.iter().map(|&(id, creatorid)| Message::DelC(IdRecord { id, creatorid })));
        msgs.extend(ups.iter().map(|&(id, src, dst, creatorid, timeout)| {
            Message::UpdC(UpdC { id, src, dst, creatorid, expire: 0, timeout, state_flags: 0 })
        }));
        msgs.extend(full.iter().map(|s| Message::Upd(*s)));
        let mut w = Writer::new(9000);
        for m in &msgs {
            w.push(m).unwrap();
        }
        let bytes = w.finish();
        prop_assert!(bytes.len() >= HEADER_LEN);
        let p = Packet::parse(&bytes).unwrap();
        let back: Result<Vec<_>, Reject> = p.messages().collect();
        prop_assert_eq!(back.unwrap(), msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..1600),
                                   fix_header in any::<bool>(), act in 0u8..20, words in 0u8..80) {
        if fix_header && bytes.len() >= HEADER_LEN + 4 {
            // Make the header valid so the message loop is what gets fuzzed.
            bytes[0] = 6;
            let n = bytes.len() as u16;
            bytes[2..4].copy_from_slice(&n.to_be_bytes());
            bytes[HEADER_LEN] = act;
            bytes[HEADER_LEN + 1] = words;
        }
        if let Ok(p) = Packet::parse(&bytes) {
            for m in p.messages() {
                let _ = m;
            }
        }
        let mut r = Replicator::new(ReplicatorConfig::new(1));
        let from = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        r.handle_packet(Duration::from_secs(5), &bytes, from);
        r.handle_timeout(Duration::from_secs(10));
        while r.poll_transmit().is_some() {}
        while r.poll_event().is_some() {}
        prop_assert_eq!(r.stat(Stat::IPackets), 1);
    }
}

#[test]
fn subheader_words_match_message_sizes() {
    // The subheader len is the message size in 32-bit words: 264/4, 84/4, 12/4, ...
    let cases = [
        (action::UPD, 66u8),
        (action::UPD_C, 21),
        (action::DEL_C, 3),
        (action::CLR, 5),
        (action::BUS, 3),
        (action::TDB, 13),
    ];
    for (a, words) in cases {
        let len = carpio::wire::pfsync::message_len(a).unwrap();
        assert_eq!(len, usize::from(words) * 4, "action {a}");
    }
    for a in [
        action::OINS,
        action::OUPD,
        action::INS_F,
        action::DEL_F,
        action::OTDB,
        action::EOF,
        16,
        255,
    ] {
        assert_eq!(carpio::wire::pfsync::message_len(a), None, "action {a}");
    }
}
