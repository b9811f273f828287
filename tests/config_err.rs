//! Configurations that must be rejected, with the exact messages (`file:line:col: message`),
//! every error of a file in one run; and the relayd.conf(5) EXAMPLES that relayd itself rejects
//! as printed (spec §9 item 19).

use std::path::PathBuf;

use carpio::config::{self, Reject, Severity};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// Loads a fixture that must fail and returns its messages with the fixture directory cut off.
fn errors(rel: &str, defines: &[(&str, &str)]) -> Vec<String> {
    let d: Vec<(String, String)> = defines
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let prefix = format!("{}/", dir().display());
    match config::load(&dir().join(rel), &d) {
        Ok(_) => panic!("{rel} should be rejected"),
        Err(e) => {
            // Display is one message per line, the same as the list.
            let shown: Vec<String> = e
                .to_string()
                .lines()
                .map(|l| l.replace(&prefix, ""))
                .collect();
            let listed: Vec<String> =
                e.0.iter()
                    .map(|d| d.to_string().replace(&prefix, ""))
                    .collect();
            assert_eq!(shown, listed);
            shown
        }
    }
}

#[test]
fn syntax_errors_all_in_one_run() {
    assert_eq!(
        errors("err/syntax.conf", &[]),
        [
            "err/syntax.conf:2:10: syntax error: expected interval, found 'ten'",
            "err/syntax.conf:3:9: invalid number of preforked relays: 99",
            "err/syntax.conf:4:1: syntax error: unknown statement 'frobnicate'",
            "err/syntax.conf:5:30: syntax error: expected retry, found 'x'",
            "err/syntax.conf:7:28: invalid port 70000: must be 1..65535",
            "err/syntax.conf:8:39: invalid http digest",
            "err/syntax.conf:9:28: syntax error: unknown check 'bogus'",
            "err/syntax.conf:10:2: syntax error: unknown redirect option 'whatever'",
            "err/syntax.conf:11:28: invalid port range 90:80",
            "err/syntax.conf:13:19: invalid vhid 256: must be 1..255",
            "err/syntax.conf:13:32: invalid advskew 255: must be 0..254 (255 is reserved for bow-out)",
            "err/syntax.conf:14:36: invalid advbase 255: must be 0..254",
            "err/syntax.conf:14:60: invalid prefix length 33: must be 0..32",
            "err/syntax.conf:15:1: syntax error: expected a statement, found '}'",
            "err/syntax.conf:16:13: syntax error: unknown log option 'nonsense'",
            "err/syntax.conf:17:7: warning: unused table: u",
        ]
    );
}

#[test]
fn semantic_errors_all_in_one_run() {
    assert_eq!(
        errors("err/semantic.conf", &[]),
        [
            "err/semantic.conf:2:1: maglev table size 65536 is not prime",
            "err/semantic.conf:4:7: table a defined twice",
            "err/semantic.conf:5:13: host parent id 99 invalid",
            "err/semantic.conf:6:7: warning: unused table: spare",
            "err/semantic.conf:10:13: no such table: nope",
            "err/semantic.conf:11:13: table interval must be divisible by global interval",
            "err/semantic.conf:11:13: table a:53 has no check",
            "err/semantic.conf:12:13: table b:53 has no check",
            "err/semantic.conf:12:13: only one backup table is allowed",
            "err/semantic.conf:12:17: mode not supported for redirections",
            "err/semantic.conf:14:1: redirection r defined twice",
            "err/semantic.conf:16:13: error initializing group 'nogroup'",
            "err/semantic.conf:16:13: table b:54 has no check",
            "err/semantic.conf:18:1: no such protocol: nope",
            "err/semantic.conf:21:17: mode not supported for relays",
            "err/semantic.conf:23:1: relay y has no target, rdr, or table",
        ]
    );
}

#[test]
fn global_timeout_must_be_below_interval() {
    assert_eq!(
        errors("err/timeout.conf", &[]),
        [
            "err/timeout.conf:1:1: no actions, nothing to do",
            "err/timeout.conf:3:1: global timeout exceeds interval",
        ]
    );
}

#[test]
fn table_timeout_must_be_below_its_interval() {
    assert_eq!(
        errors("err/table_timeout.conf", &[]),
        ["err/table_timeout.conf:5:13: table timeout exceeds interval: t:123",]
    );
}

#[test]
fn carp_and_pfsync_consistency() {
    assert_eq!(
        errors("err/carp.conf", &[]),
        [
            "err/carp.conf:3:1: carp1: vhid 5 is already used by carp0",
            "err/carp.conf:4:28: use either vhid or carpnodes, not both",
            "err/carp.conf:5:42: vhid 1 listed twice in carpnodes",
            "err/carp.conf:6:1: carp carp4 has no vhid",
            "err/carp.conf:7:1: carp carp5 has no address",
            "err/carp.conf:8:1: carp interface carp0 defined twice",
            "err/carp.conf:9:1: interface eth0: mode native|generic only applies to ingress afxdp",
            "err/carp.conf:10:1: pfsync needs syncdev or syncpeer",
            "err/carp.conf:11:1: pfsync defined twice",
        ]
    );
}

#[test]
fn include_loop_and_missing_include() {
    assert_eq!(
        errors("err/include_loop.conf", &[]),
        [
            "err/include_loop2.conf:1:1: include loop: include_loop.conf is already being read",
            "err/include_loop2.conf:2:1: failed to include file missing.conf: No such file or directory (os error 2)",
            "err/include_loop.conf:1:1: no actions, nothing to do",
        ]
    );
}

#[test]
fn lexical_errors_do_not_cascade() {
    assert_eq!(
        errors("err/lexical.conf", &[]),
        [
            "err/lexical.conf:3:12: macro 'nohost' not defined",
            "err/lexical.conf:4:42: syntax error: unexpected character '*' (quote arguments that start with it)",
            "err/lexical.conf:6:5: reached end of file while parsing quoted string",
        ]
    );
}

#[test]
fn relay_and_router_cross_references() {
    assert_eq!(
        errors("err/relay.conf", &[]),
        [
            "err/relay.conf:2:18: can set tcp options only for tcp or http protocols",
            "err/relay.conf:5:1: relay a: tls is not supported with dns protocol d",
            "err/relay.conf:10:1: relay b with conflicting nat lookup and peer options",
            "err/relay.conf:10:1: relay b: tls inspection needs tls ca cert and tls ca key",
            "err/relay.conf:19:11: more than one protocol specified",
            "err/relay.conf:21:13: relay c target or redirection already specified",
            "err/relay.conf:22:2: no route for relays",
            "err/relay.conf:24:1: warning: unused protocol: unused",
            "err/relay.conf:25:1: invalid TLS protocol",
            "err/relay.conf:25:1: warning: unused protocol: bad",
            "err/relay.conf:28:21: router rt address family mismatch",
            "err/relay.conf:33:9: router rt2 rtable already specified",
            "err/relay.conf:35:1: router rt3 without routes",
        ]
    );
}

#[test]
fn filter_rules_checked_as_relayd() {
    assert_eq!(
        errors("err/filter.conf", &[]),
        [
            "err/filter.conf:3:16: unknown HTTP method currently not supported",
            "err/filter.conf:4:8: combining query type and the given option is not supported",
            "err/filter.conf:5:8: combining url type and the given option is not supported",
            "err/filter.conf:6:12: address family mismatch",
            "err/filter.conf:7:8: undefined forward table",
            "err/filter.conf:8:24: label already defined",
            "err/filter.conf:9:19: invalid http digest",
        ]
    );
}

#[test]
fn missing_file() {
    let e = config::load(&dir().join("err/nonexistent.conf"), &[]).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].kind, Reject::Include);
    assert!(e.to_string().contains("cannot read"), "{e}");
}

#[test]
fn rejects_carry_named_kinds() {
    let e = config::parse_str(
        "k.conf",
        "workers 0\ntable <t> { 198.18.0.1 }\ntable <t> { 198.18.0.2 }\n",
        &[],
    )
    .unwrap_err();
    let kinds: Vec<(Reject, Severity)> = e.0.iter().map(|d| (d.kind, d.severity)).collect();
    assert_eq!(
        kinds,
        [
            (Reject::Syntax, Severity::Error),
            (Reject::Range, Severity::Error),
            (Reject::Unused, Severity::Warning),
            (Reject::Duplicate, Severity::Error)
        ]
    );
    assert_eq!(e.errors().count(), 3);
    // No redirect, relay, router or carp: relayd's "no actions, nothing to do".
    assert_eq!(e.0[0].to_string(), "k.conf:1:1: no actions, nothing to do");
    assert_eq!(Reject::Duplicate.name(), "config_duplicate");
}

// ---- relayd.conf(5) EXAMPLES that relayd rejects as printed (spec §9 item 19) --------------

#[test]
fn manpage_ex1_abbreviated_digest_is_rejected() {
    assert_eq!(
        errors("manpage/ex1_www.conf", &[]),
        ["manpage/ex1_www.conf:21:25: invalid http digest"]
    );
}

#[test]
fn manpage_ex2_undefined_table_is_rejected() {
    assert_eq!(
        errors("manpage/ex2_dns.conf", &[]),
        ["manpage/ex2_dns.conf:7:13: no such table: dnshosts"]
    );
}

#[test]
fn manpage_ex7_undefined_macros_are_rejected() {
    assert_eq!(
        errors("manpage/ex7_router.conf", &[]),
        [
            "manpage/ex7_router.conf:3:20: macro 'gw1' not defined",
            "manpage/ex7_router.conf:3:35: macro 'gw2' not defined",
        ]
    );
}

// ---- robustness: no input panics the parser ------------------------------------------------

#[test]
fn every_prefix_of_every_fixture_is_handled() {
    for rel in [
        "ok/full.conf",
        "ok/aliases.conf",
        "manpage/ex1_www.conf",
        "manpage/ex3_tlsaccel.conf",
        "err/syntax.conf",
        "err/relay.conf",
    ] {
        let text = std::fs::read_to_string(dir().join(rel)).unwrap();
        let chars: Vec<char> = text.chars().collect();
        let mut accepted = 0;
        for n in 0..=chars.len() {
            let s: String = chars[..n].iter().collect();
            // It must not panic, and every message must carry a real position.
            match config::parse_str("cut.conf", &s, &[]) {
                Ok(_) => accepted += 1,
                Err(e) => assert!(
                    e.0.iter().all(|d| d.span.line >= 1 && d.span.col >= 1),
                    "{e}"
                ),
            }
        }
        // The whole valid files are accepted, so at least their last prefix was.
        if rel.starts_with("ok/") {
            assert!(accepted >= 1, "{rel}");
        }
    }
}

#[test]
fn pseudo_random_token_soup_is_handled() {
    let words = [
        "table",
        "<",
        ">",
        "{",
        "}",
        "redirect",
        "relay",
        "listen",
        "on",
        "port",
        "forward",
        "to",
        "check",
        "carp",
        "vhid",
        ",",
        "\n",
        "\"x\"",
        "1",
        "65537",
        "$m",
        "m = 2\n",
        "include",
        "/",
        "pfsync",
        "protocol",
        "tcp",
        "http",
        "interface",
        "mode",
        "route",
        "\\\n",
        "#c\n",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut s = String::new();
        for _ in 0..40 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push_str(words[(seed % words.len() as u64) as usize]);
            s.push(' ');
        }
        let _ = config::parse_str("soup.conf", &s, &[]);
    }
}

#[test]
fn metrics_endpoint_errors() {
    assert_eq!(
        errors("err/metrics.conf", &[]),
        [
            // Only metrics statements: nothing to serve (relayd's message).
            "err/metrics.conf:1:1: no actions, nothing to do",
            "err/metrics.conf:2:19: invalid metrics address 'prometheus.example': must be an IP address",
            "err/metrics.conf:3:34: invalid port 0: must be 1..65535",
            "err/metrics.conf:4:29: syntax error: expected 'port', found '9100'",
            "err/metrics.conf:5:9: syntax error: expected 'listen', found 'on'",
        ]
    );
}

#[test]
fn interface_ring_needs_afpacket_and_a_known_layout() {
    let tail = "table <t> { 198.18.0.1 }\nredirect x {\n listen on 198.18.0.2 port 53\n forward to <t> check icmp\n}\n";
    let e = config::parse_str(
        "ring.conf",
        &format!("interface a {{ ingress afxdp ring v2 }}\ninterface b {{ ingress pnet ring v3 }}\n{tail}"),
        &[],
    )
    .unwrap_err();
    let msgs: Vec<String> = e.0.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "ring.conf:1:1: interface a: ring v2|v3 only applies to ingress afpacket",
            "ring.conf:2:1: interface b: ring v2|v3 only applies to ingress afpacket",
        ]
    );
    assert!(e.0.iter().all(|d| d.kind == Reject::Conflict));
    let e = config::parse_str(
        "ring4.conf",
        &format!("interface a {{ ingress afpacket ring v4 }}\n{tail}"),
        &[],
    )
    .unwrap_err();
    let msgs: Vec<String> = e.errors().map(|d| d.to_string()).collect();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].starts_with("ring4.conf:1:") && msgs[0].contains("'v2' or 'v3'"),
        "{msgs:?}"
    );
}
