//! The probes' verdict functions on arbitrary bytes: never a panic, and a verdict that
//! agrees with a straightforward reference where one exists.

use carpio::config::model::Digest;
use carpio::health::probe::{dns, glob, http, icmp, ntp};
use proptest::prelude::*;
use std::time::Duration;

/// Reference fnmatch for patterns of literals, `?` and `*` only: plain recursion.
fn reference(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && reference(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
    }
}

proptest! {
    #[test]
    fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = dns::check(&b, 0, Some([198, 18, 0, 1].into()));
        let _ = dns::check(&b, 3, Some("2001:db8::1".parse().unwrap()));
        let _ = dns::is_for(&b, 1);
        let _ = ntp::check(&b, Duration::from_secs(1_800_000_000));
        let _ = ntp::is_for(&b, 7);
        let _ = http::check_code(&b, 200);
        let _ = http::check_digest(&b, &Digest::Md5([0; 16]));
        let _ = http::translate(&b);
        let sent = icmp::request(false, 1, 2, 3);
        let _ = icmp::is_reply(&b, &sent, true, true);
        let _ = icmp::is_reply(&b, &sent, false, false);
        let _ = glob::fnmatch(&b, &b);
    }

    #[test]
    fn fnmatch_agrees_with_reference(
        p in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'*'), Just(b'?')], 0..8),
        s in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], 0..10),
    ) {
        prop_assert_eq!(glob::fnmatch(&p, &s), reference(&p, &s));
    }

    #[test]
    fn dns_answer_found_wherever_it_is(n in 0usize..5, at in 0usize..5) {
        // A reply with n A records; the expected address is in record `at` if at < n.
        let mut r = dns::query(9, "x.test", 1).unwrap();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = n as u8;
        for i in 0..n {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 1, i as u8]);
        }
        let want = [198, 18, 1, at as u8].into();
        let got = dns::check(&r, 0, Some(want));
        prop_assert_eq!(got.is_ok(), at < n);
    }
}
