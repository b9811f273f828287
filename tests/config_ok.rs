//! Configurations that must load, with the model contents asserted: carpio's full example,
//! includes and macros, older spellings, and the relayd.conf(5) EXAMPLES where relayd accepts
//! them (spec §9 item 19).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use carpio::config::{self, *};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(rel)
}

fn load(rel: &str, defines: &[(&str, &str)]) -> Config {
    let d: Vec<(String, String)> = defines
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    match config::load(&fixture(rel), &d) {
        Ok(c) => c,
        Err(e) => panic!("{rel} should load:\n{e}"),
    }
}

fn ip(s: &str) -> Address {
    Address::Ip(s.parse::<IpAddr>().unwrap())
}

fn ids(t: &TableConfig) -> Vec<u32> {
    t.hosts.iter().map(|h| h.id).collect()
}

#[test]
fn full_globals() {
    let c = load("ok/full.conf", &[]);
    let g = &c.global;
    assert_eq!(g.interval, Duration::from_secs(5));
    assert_eq!(g.timeout, Duration::from_millis(1000));
    assert_eq!(g.prefork, 4);
    assert!(g.log.connection_errors && !g.log.connections && !g.log.host_checks);
    assert_eq!(
        g.agentx,
        Some(AgentxConfig {
            context: Some("carpio".into()),
            path: Some("/var/agentx/master".into()),
            snmp_trap: false
        })
    );
    assert_eq!(g.control_socket, "/run/carpio.sock");
    assert_eq!(g.workers, Some(2));
    assert_eq!(g.flow_table_size, 65536);
    assert_eq!(g.maglev_table_size, 251);
    assert_eq!(g.user.as_deref(), Some("_carpio"));
    let m = g.metrics.as_ref().unwrap();
    assert_eq!(
        (m.addr.clone(), m.port),
        (ip("127.0.0.1"), PortRange { lo: 9100, hi: 9100 })
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn full_interfaces_carp_pfsync() {
    let c = load("ok/full.conf", &[]);
    assert_eq!(c.interfaces.len(), 2);
    let i0 = &c.interfaces[0];
    assert_eq!(
        (i0.name.as_str(), i0.ingress, i0.queues, i0.mode),
        ("eth0", Ingress::Afxdp, Some(2), Some(XdpMode::Native))
    );
    assert_eq!(
        (c.interfaces[1].ingress, c.interfaces[1].mode),
        (Ingress::Afpacket, None)
    );
    assert_eq!(c.groups.len(), 1);
    assert_eq!((c.groups[0].name.as_str(), c.groups[0].demote), ("lb", 0));

    let c0 = &c.carp[0];
    assert_eq!(c0.name, "carp0");
    assert_eq!(c0.carpdev.as_deref(), Some("eth0"));
    assert_eq!(
        c0.nodes,
        vec![CarpNode {
            vhid: 7,
            advskew: 100
        }]
    );
    assert_eq!(c0.advbase, 1);
    assert_eq!(c0.pass.as_deref(), Some("sekrit"));
    assert_eq!(c0.carppeer, Some("198.18.0.2".parse().unwrap()));
    assert_eq!(c0.balancing, Balancing::None);
    assert_eq!(c0.groups, vec!["lb".to_string()]);
    assert!(c0.preempt);
    assert_eq!(
        c0.addresses,
        vec![Prefix {
            addr: "198.18.0.100".parse().unwrap(),
            len: 24
        }]
    );

    let c1 = &c.carp[1];
    // Sorted by vhid, as ip_carp.c keeps them.
    assert_eq!(
        c1.nodes,
        vec![
            CarpNode {
                vhid: 1,
                advskew: 100
            },
            CarpNode {
                vhid: 2,
                advskew: 0
            }
        ]
    );
    assert_eq!(c1.balancing, Balancing::IpStealth);
    assert!(!c1.preempt);
    assert_eq!(
        c1.addresses,
        vec![Prefix {
            addr: "2001:db8::1".parse().unwrap(),
            len: 64
        }]
    );

    let p = c.pfsync.as_ref().unwrap();
    assert_eq!(
        (p.syncdev.as_deref(), p.syncpeer, p.maxupd, p.defer),
        (Some("eth1"), None, 64, true)
    );
}

#[test]
fn full_tables_are_named_by_port_and_ids_are_sequential() {
    let c = load("ok/full.conf", &[]);
    let names: Vec<&str> = c.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["mx:25", "dns:5353", "ntp:123", "mx:2525", "dns:53", "ntp"]
    );
    // relayd numbering (parse.y `table_inherit`): the definitions take ids 1..7 in source
    // order, then each new `name:port` copy takes fresh ones.
    assert_eq!(ids(c.table("mx:25").unwrap()), [8, 9]);
    assert_eq!(ids(c.table("dns:5353").unwrap()), [10, 11, 12]);
    assert_eq!(ids(c.table("ntp:123").unwrap()), [13, 14]);
    assert_eq!(ids(c.table("mx:2525").unwrap()), [15, 16]);
    assert_eq!(ids(c.table("dns:53").unwrap()), [17, 18, 19]);
    assert_eq!(ids(c.table("ntp").unwrap()), [20, 21]);
    let all: Vec<u32> = c.hosts().map(|h| h.id).collect();
    assert_eq!(all, (8..=21).collect::<Vec<_>>());
    // `parent 10` names the first host of dns:5353 as relayctl numbers it; the copy dns:53
    // keeps the same parent (parse.y `table_inherit` copies the host verbatim).
    assert_eq!(c.table("dns:5353").unwrap().hosts[1].parent, Some(10));
    assert_eq!(c.table("dns:53").unwrap().hosts[1].parent, Some(10));

    let mx = c.table("mx:25").unwrap();
    assert_eq!(
        mx.check,
        Check::Send {
            send: vec![],
            expect: "220 *".into(),
            tls: false
        }
    );
    assert_eq!(mx.interval, Duration::from_secs(10));
    assert_eq!(mx.timeout, Duration::from_millis(1000));
    assert_eq!(mx.demote.as_deref(), Some("lb"));
    assert_eq!(mx.hosts[0].retry, 2);
    assert_eq!(mx.hosts[1].priority, Some(5));
    assert_eq!(mx.hosts[0].addr, ip("198.18.1.25"));

    let dns = c.table("dns:5353").unwrap();
    assert_eq!(dns.check, Check::Tcp);
    assert_eq!(dns.timeout, Duration::from_millis(300));
    assert!(matches!(dns.mode, Mode::SourceHash(HashKey::Key(_))));
    assert_eq!(dns.hosts[2].ip_ttl, Some(1));
    assert_eq!(dns.hosts[2].addr, ip("fe80::53"));

    assert_eq!(c.table("ntp:123").unwrap().mode, Mode::LeastStates);
    assert_eq!(
        c.table("mx:2525").unwrap().mode,
        Mode::Hash(HashKey::Key([
            0x0001_0203,
            0x0405_0607,
            0x0809_0a0b,
            0x0c0d_0e0f
        ]))
    );
    // A string key is its MD5 read as big-endian words (parse.y `hashkey`):
    // MD5("dnskey") = 0b8e3e3c... checked against the md-5 crate below.
    let Mode::SourceHash(HashKey::Key(k)) = c.table("dns:5353").unwrap().mode else {
        panic!()
    };
    use md5::Digest as _;
    let md = md5::Md5::digest(b"dnskey");
    assert_eq!(k[0], u32::from_be_bytes([md[0], md[1], md[2], md[3]]));
    assert_eq!(k[3], u32::from_be_bytes([md[12], md[13], md[14], md[15]]));
    assert_eq!(c.table("dns:53").unwrap().check, Check::None);
}

#[test]
fn full_redirects_and_forwarding_modes() {
    let c = load("ok/full.conf", &[]);
    let smtp = c.redirect("smtp").unwrap();
    assert_eq!(smtp.tables, ["mx:25"]);
    assert_eq!(smtp.forward, ForwardMode::Nat);
    assert_eq!(smtp.session_timeout, Duration::from_secs(300));
    assert!(smtp.sticky && !smtp.disabled);
    let l = &smtp.listen[0];
    assert_eq!(
        (l.addr.clone(), l.proto, l.port, l.interface.as_deref()),
        (
            ip("198.18.0.100"),
            Proto::Tcp,
            PortRange { lo: 25, hi: 25 },
            Some("eth0")
        )
    );

    let dns = c.redirect("dns").unwrap();
    assert_eq!(
        dns.listen.iter().map(|l| l.proto).collect::<Vec<_>>(),
        [Proto::Udp, Proto::Tcp]
    );
    assert_eq!(dns.forward, ForwardMode::Gue { port: 6081 });
    assert_eq!((dns.tag.as_deref(), dns.match_tag), (Some("DNS"), true));
    assert_eq!(dns.session_timeout, DEFAULT_SESSION_TIMEOUT);

    let ntp = c.redirect("ntp").unwrap();
    assert_eq!(ntp.listen[0].port, PortRange { lo: 123, hi: 124 });
    assert_eq!(
        ntp.forward,
        ForwardMode::Dsr {
            interface: "eth1".into()
        }
    );
    assert_eq!(ntp.tables, ["ntp:123"]);
    assert!(ntp.disabled);
}

#[test]
fn full_relays_protocols_routers() {
    let c = load("ok/full.conf", &[]);
    let r = c.relay("smtprelay").unwrap();
    assert_eq!(
        r.forwards[0],
        RelayForward {
            target: RelayTarget::Table("mx:2525".into()),
            tls: false
        }
    );
    assert_eq!(
        r.forwards[1].target,
        RelayTarget::Address {
            addr: ip("198.18.1.99"),
            port: Some(25),
            retry: 3,
            inet: false,
            inet6: None
        }
    );
    assert_eq!(r.proxy_protocol, Some(ProxyProtocol::V2));
    assert_eq!(r.session_timeout, Duration::from_secs(120));
    assert_eq!(r.protocol.as_deref(), Some("smtp-relay"));

    let d = c.relay("dnsrelay").unwrap();
    assert!(d.transparent);
    // A dns protocol makes the relay listen on UDP (relayd F_UDP).
    assert_eq!(d.listen[0].proto, Proto::Udp);

    let p = c.protocol("smtp-relay").unwrap();
    assert_eq!(p.kind, ProtocolKind::Tcp);
    assert_eq!(
        p.tcp,
        TcpOptions {
            nodelay: true,
            sack: false,
            splice: false,
            backlog: 128,
            socket_buffer: None,
            ip_ttl: None,
            ip_minttl: Some(254)
        }
    );
    let p = c.protocol("dnsproxy").unwrap();
    assert_eq!(
        (p.kind, p.tcp.ip_ttl, p.tcp.splice),
        (ProtocolKind::Dns, None, true)
    );

    let rt = &c.routers[0];
    assert_eq!(rt.name, "uplinks");
    assert_eq!(
        rt.routes,
        vec![Prefix {
            addr: "198.18.128.0".parse().unwrap(),
            len: 17
        }]
    );
    assert_eq!(rt.table, "ntp");
    assert_eq!(
        (rt.rtable, rt.rtlabel.as_deref()),
        (Some(1), Some("carpio"))
    );
}

#[test]
fn include_is_relative_and_macros_cross_files() {
    let c = load("ok/include.conf", &[]);
    assert_eq!(c.table("resolvers:53").map(ids), Some(vec![3, 4]));
    assert_eq!(
        c.redirect("dns").unwrap().listen[0].port,
        PortRange { lo: 53, hi: 53 }
    );
}

#[test]
fn cmdline_defines_override_file_macros() {
    let c = load("ok/include.conf", &[("port_dns", "5300")]);
    assert_eq!(c.redirect("dns").unwrap().tables, ["resolvers:5300"]);
}

#[test]
fn older_spellings_are_aliases() {
    let c = load("ok/aliases.conf", &[]);
    assert_eq!(
        c.global.agentx,
        Some(AgentxConfig {
            context: None,
            path: Some("/var/agentx/master".into()),
            snmp_trap: true
        })
    );
    assert!(c.global.log.host_checks);
    let w = c.redirect("www").unwrap();
    assert_eq!(w.tag.as_deref(), Some("WWW"));
    assert!(!w.match_tag);
    assert_eq!(c.table("web:80").unwrap().check, Check::Tls);
    let r = c.relay("r").unwrap();
    assert!(r.listen[0].tls);
    assert_eq!(
        r.forwards[0],
        RelayForward {
            target: RelayTarget::Table("web:443".into()),
            tls: true
        }
    );
    assert_eq!(
        c.table("web:443").unwrap().mode,
        Mode::Loadbalance(HashKey::Random)
    );
    let p = c.protocol("old").unwrap();
    assert_eq!(p.tls.ciphers.as_deref(), Some("HIGH:!aNULL"));
    assert!(p.tls.tlsv1_2 && p.tls.tlsv1_3);
}

#[test]
fn parse_str_without_files() {
    let c = config::parse_str(
        "inline.conf",
        "table <t> { 198.18.0.1 }\nredirect x {\n listen on 198.18.0.2 port 53\n forward to <t> check icmp\n}\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.redirect("x").unwrap().tables, ["t:53"]);
    assert_eq!(c.global.maglev_table_size, DEFAULT_MAGLEV_TABLE_SIZE);
}

#[test]
fn unused_table_is_a_warning_not_an_error() {
    let text = "table <spare> { 198.18.0.9 }\ntable <t> { 198.18.0.1 }\n\
                redirect r {\n listen on 198.18.0.2 port 53\n forward to <t> check icmp\n}\n";
    let c = config::parse_str("w.conf", text, &[]).unwrap();
    let w: Vec<String> = c.warnings.iter().map(|d| d.to_string()).collect();
    assert_eq!(w, ["w.conf:1:7: warning: unused table: spare"]);
    assert_eq!(c.warnings[0].kind, Reject::Unused);
}

// ---- relayd.conf(5) EXAMPLES accepted by relayd -------------------------------------------

#[test]
fn manpage_ex1_with_full_digest() {
    let c = load("manpage/ex1_www_fixed.conf", &[]);
    assert_eq!(c.global.interval, Duration::from_secs(5));
    let r = c.redirect("www").unwrap();
    assert_eq!(r.tables, ["phphosts:8080", "sorryhost:8080"]);
    assert_eq!(r.listen.len(), 2);
    assert_eq!(r.listen[1].addr, Address::Name("www6.example.com".into()));
    assert_eq!(r.listen[1].interface.as_deref(), Some("trunk0"));
    assert_eq!(r.tag.as_deref(), Some("REDIRECTED"));
    let php = c.table("phphosts:8080").unwrap();
    assert_eq!(php.hosts.len(), 4);
    assert_eq!(
        php.hosts[3].addr,
        Address::Name("front-www4.private.example.com".into())
    );
    assert_eq!(php.timeout, Duration::from_millis(300));
    let Check::Http {
        tls: false,
        path,
        host: None,
        expect: HttpExpect::Digest(Digest::Sha1(d)),
    } = &php.check
    else {
        panic!("{:?}", php.check)
    };
    assert_eq!(path, "/");
    assert_eq!(d[..3], [0x63, 0x0a, 0xa3]);
    let sorry = c.table("sorryhost:8080").unwrap();
    assert!(sorry.disabled);
    assert_eq!(sorry.check, Check::Icmp);
    // Definitions take 1..5, then the copies: phphosts:8080 6..9, sorryhost:8080 10.
    assert_eq!(ids(php), [6, 7, 8, 9]);
    assert_eq!(ids(sorry), [10]);
}

#[test]
fn manpage_ex2_with_table_supplied() {
    let c = load("manpage/ex2_dns_fixed.conf", &[]);
    let r = c.redirect("dns").unwrap();
    assert_eq!(
        r.listen.iter().map(|l| l.proto).collect::<Vec<_>>(),
        [Proto::Tcp, Proto::Udp]
    );
    assert_eq!(r.tables, ["dnshosts:53"]);
}

#[test]
fn manpage_ex3_tls_acceleration() {
    let c = load("manpage/ex3_tlsaccel.conf", &[]);
    let p = c.protocol("https").unwrap();
    assert_eq!(p.kind, ProtocolKind::Http);
    assert!(!p.tls.tlsv1_2 && p.tls.tlsv1_3);
    assert_eq!(p.tls.ciphers.as_deref(), Some("HIGH"));
    assert_eq!(p.rules.len(), 6);
    let r1 = &p.rules[1];
    assert_eq!(
        (r1.action, r1.dir, r1.quick),
        (RuleAction::Match, RuleDir::Request, false)
    );
    assert_eq!(
        r1.kvs,
        [RuleKv {
            kind: KvType::Header,
            action: KvAction::Set,
            key: Some("X-Forwarded-By".into()),
            digest: false,
            key_pattern: false,
            value: Some("$SERVER_ADDR:$SERVER_PORT".into()),
            value_pattern: false,
        }]
    );
    assert_eq!(
        r1.words,
        [
            "header",
            "set",
            "X-Forwarded-By",
            "value",
            "$SERVER_ADDR:$SERVER_PORT"
        ]
    );
    // `match query hash "sessid"`: the value defaults to "*" (parse.y).
    assert_eq!(p.rules[3].kvs[0].action, KvAction::Hash);
    assert_eq!(p.rules[3].kvs[0].value.as_deref(), Some("*"));
    let pass = &p.rules[4];
    assert_eq!(
        (pass.action, pass.kvs.len(), pass.words.len()),
        (RuleAction::Pass, 0, 0)
    );
    let block = &p.rules[5];
    assert_eq!(block.action, RuleAction::Block);
    assert_eq!(block.kvs[0].kind, KvType::Path);
    assert_eq!(block.kvs[0].key.as_deref(), Some("/cgi-bin/index.cgi"));
    assert_eq!(block.kvs[0].value.as_deref(), Some("*command=*"));
    let r = c.relay("tlsaccel").unwrap();
    assert!(r.listen[0].tls);
    assert_eq!(
        r.forwards[0].target,
        RelayTarget::Table("phphosts:8080".into())
    );
    assert_eq!(
        c.table("phphosts:8080").unwrap().mode,
        Mode::Loadbalance(HashKey::Random)
    );
}

#[test]
fn manpage_ex4_ssh() {
    let c = load("manpage/ex4_ssh.conf", &[]);
    let p = c.protocol("myssh").unwrap();
    assert!(p.tcp.nodelay);
    assert_eq!(p.tcp.socket_buffer, Some(65536));
    let r = c.relay("sshforward").unwrap();
    assert_eq!(
        r.forwards[0].target,
        RelayTarget::Address {
            addr: Address::Name("shell.example.com".into()),
            port: Some(22),
            retry: 0,
            inet: false,
            inet6: None
        }
    );
    assert!(c.tables.is_empty());
}

#[test]
fn manpage_ex5_filter_to_destination() {
    let c = load("manpage/ex5_httpfilter.conf", &[]);
    let p = c.protocol("httpfilter").unwrap();
    assert_eq!(p.return_error, Some(None));
    assert_eq!(p.rules[2].dir, RuleDir::Request);
    assert_eq!(p.rules[0].dir, RuleDir::Request);
    assert!(p.rules[2].quick);
    assert_eq!(p.rules[2].words, ["url", "www.example.com/index.html"]);
    assert_eq!(p.rules[1].label, Some(Setting::Set("URL filtered!".into())));
    assert_eq!(p.rules[2].kvs[0].kind, KvType::Url);
    assert_eq!(p.rules[2].kvs[0].value.as_deref(), Some("*"));
    assert_eq!(
        c.relay("httpproxy").unwrap().forwards[0].target,
        RelayTarget::Destination
    );
}

#[test]
fn manpage_ex6_tls_inspection() {
    let c = load("manpage/ex6_tlsinspect.conf", &[]);
    let p = c.protocol("httpfilter").unwrap();
    assert_eq!(
        p.tls.ca_key,
        Some(("/etc/ssl/private/ca.key".into(), Some("password123".into())))
    );
    assert_eq!(p.tls.ca_cert.as_deref(), Some("/etc/ssl/CA/ca.crt"));
    assert_eq!(
        c.relay("tlsinspect").unwrap().forwards[0],
        RelayForward {
            target: RelayTarget::Destination,
            tls: true
        }
    );
}

#[test]
fn manpage_ex7_router_with_gateways_defined() {
    let c = load(
        "manpage/ex7_router.conf",
        &[("gw1", "198.18.9.1"), ("gw2", "198.18.9.2")],
    );
    let t = c.table("gateways").unwrap();
    assert_eq!(
        t.hosts
            .iter()
            .map(|h| (h.addr.clone(), h.ip_ttl))
            .collect::<Vec<_>>(),
        [(ip("198.18.9.1"), Some(1)), (ip("198.18.9.2"), Some(1))]
    );
    assert_eq!(t.check, Check::Icmp);
    assert_eq!(
        c.routers[0].routes,
        vec![Prefix {
            addr: "0.0.0.0".parse().unwrap(),
            len: 0
        }]
    );
}

#[test]
fn ids_follow_source_order_and_shared_copies_take_none() {
    let text = "table <a> { 198.18.0.1 }\n\
                redirect r1 {\n listen on 198.18.0.10 port 53\n forward to <a> check icmp\n}\n\
                redirect r2 {\n listen on 198.18.0.11 port 53\n forward to <a> check icmp\n}\n\
                table <b> { 198.18.0.2, 198.18.0.3 parent 2 }\n\
                redirect r3 {\n listen on 198.18.0.12 port 53\n forward to <b> check icmp\n}\n";
    let c = config::parse_str("order.conf", text, &[]).unwrap();
    // a: definition 1, copy a:53 2 (shared by r1 and r2); b: definitions 3-4, copy b:53 5-6.
    assert_eq!(c.tables.len(), 2);
    assert_eq!(ids(c.table("a:53").unwrap()), [2]);
    assert_eq!(ids(c.table("b:53").unwrap()), [5, 6]);
    assert_eq!(c.redirect("r2").unwrap().tables, ["a:53"]);
    // `parent 2` is the copy in a:53 (definition ids are gone, as in relayd's load_config).
    assert_eq!(c.table("b:53").unwrap().hosts[1].parent, Some(2));
    let bad = text.replace("parent 2", "parent 1");
    let e = config::parse_str("order.conf", &bad, &[]).unwrap_err();
    assert_eq!(e.to_string(), "order.conf:10:25: host parent id 1 invalid");
}

#[test]
fn docs_example_loads() {
    // The example of docs/carpio.conf.md, kept in step with the document.
    let c = load("ok/doc_example.conf", &[]);
    assert_eq!(c.carp[0].groups, ["lb"]);
    assert_eq!(c.table("mx:25").unwrap().demote.as_deref(), Some("lb"));
    assert_eq!(
        c.redirect("ntp").unwrap().forward,
        ForwardMode::Dsr {
            interface: "eth1".into()
        }
    );
    assert_eq!(c.pfsync.as_ref().map(|p| p.defer), Some(true));
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/carpio.conf.md"))
        .unwrap();
    let text = std::fs::read_to_string(fixture("ok/doc_example.conf")).unwrap();
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        squash(&doc).contains(&squash(&text)),
        "docs example and fixture differ"
    );
}

#[test]
fn every_check_kind_and_service_ports() {
    let text = r#"
table <t> { 198.18.0.1 }
redirect a { listen on 198.18.0.10 port http
  forward to <t> check https "/health" host "www.example.com" code 200 }
redirect b { listen on 198.18.0.10 port domain
  forward to <t> check binary send "0a0b" expect "0C0d" tls }
redirect c { listen on 198.18.0.10 udp port ntp
  forward to <t> check script "/usr/local/bin/check-ntp" }
redirect d { listen on 198.18.0.10 port smtp
  forward to <t> check send "EHLO x\r\n" expect "250*" }
redirect e { listen on 198.18.0.10 port 8080:8090 pflog
  forward to <t> check http "/" digest "d41d8cd98f00b204e9800998ecf8427e" }
"#;
    let c = config::parse_str("checks.conf", text, &[]).unwrap();
    assert_eq!(
        c.table("t:80").unwrap().check,
        Check::Http {
            tls: true,
            path: "/health".into(),
            host: Some("www.example.com".into()),
            expect: HttpExpect::Code(200)
        }
    );
    assert_eq!(
        c.table("t:53").unwrap().check,
        Check::Binary {
            send: vec![0x0a, 0x0b],
            expect: vec![0x0c, 0x0d],
            tls: true
        }
    );
    assert_eq!(
        c.table("t:123").unwrap().check,
        Check::Script {
            path: "/usr/local/bin/check-ntp".into()
        }
    );
    // Backslash sequences other than \" and \<space> stay as written (relayd's lexer).
    assert_eq!(
        c.table("t:25").unwrap().check,
        Check::Send {
            send: b"EHLO x\\r\\n".to_vec(),
            expect: "250*".into(),
            tls: false
        }
    );
    let Check::Http {
        expect: HttpExpect::Digest(Digest::Md5(d)),
        ..
    } = c.table("t:8080").unwrap().check
    else {
        panic!()
    };
    assert_eq!(d[0], 0xd4);
    let e = c.redirect("e").unwrap();
    assert_eq!(e.listen[0].port, PortRange { lo: 8080, hi: 8090 });
    assert!(e.listen[0].pflog);
    // Five copies of one table, one per port: ids 2..6 after the definition's 1.
    assert_eq!(c.hosts().map(|h| h.id).collect::<Vec<_>>(), [2, 3, 4, 5, 6]);
}

#[test]
fn carp_balancing_as_the_kernel_applies_it() {
    let text = "carp carp0 { carpdev eth0, carpnodes 1:0,2:100, address 198.18.0.1/24 }\n\
                carp carp1 { carpdev eth1, vhid 3, balancing ip, address 198.18.0.2/24 }\n";
    let c = config::parse_str("lb.conf", text, &[]).unwrap();
    // ip_carp.c: two or more nodes with none fall back to ip; one node forces none.
    assert_eq!(c.carp[0].balancing, Balancing::Ip);
    assert_eq!(c.carp[1].balancing, Balancing::None);
    let w: Vec<String> = c.warnings.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        w,
        ["lb.conf:2:1: warning: carp carp1: balancing needs two or more carpnodes; using none"]
    );
    // A carp-only box is a configuration of its own (no redirect needed).
    assert!(c.redirects.is_empty());
}

#[test]
fn cmdline_define_splits_at_last_equals() {
    assert_eq!(
        config::parse_define("a=b=c"),
        Some(("a=b".into(), "c".into()))
    );
    assert_eq!(
        config::parse_define("gw1=198.18.9.1"),
        Some(("gw1".into(), "198.18.9.1".into()))
    );
    assert_eq!(config::parse_define("novalue"), None);
}

/// carpio host options: `lladdr` (a static link-layer address) and `weight` (weighted Maglev).
#[test]
fn host_lladdr_and_weight() {
    let text = "table <dns> { 198.18.1.1 lladdr \"02:00:00:00:01:01\" weight 3, 198.18.1.2 }\n\
                redirect dns { listen on 198.18.0.10 udp port 53\n forward to <dns> check icmp }\n";
    let c = config::parse_str("t.conf", text, &[]).unwrap_or_else(|e| panic!("{e}"));
    let t = c.table("dns:53").expect("table dns:53");
    assert_eq!(t.hosts[0].lladdr, Some([2, 0, 0, 0, 1, 1]));
    assert_eq!(t.hosts[0].weight, 3);
    assert_eq!(t.hosts[1].lladdr, None);
    assert_eq!(t.hosts[1].weight, 1);
    let bad = "table <dns> { 198.18.1.1 lladdr \"02:00:00:00:01\" }\n\
               redirect dns { listen on 198.18.0.10 udp port 53\n forward to <dns> check icmp }\n";
    let e = config::parse_str("t.conf", bad, &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("t.conf:1:26: invalid link-layer address"),
        "{e}"
    );
}

#[test]
fn interface_afpacket_ring_layout() {
    let text = "interface a { ingress afpacket ring v2 }\n\
                interface b { ingress afpacket ring v3 queues 2 }\n\
                interface c { ingress afpacket }\n\
                table <t> { 198.18.0.1 }\nredirect x {\n listen on 198.18.0.2 port 53\n forward to <t> check icmp\n}\n";
    let c = config::parse_str("ring.conf", text, &[]).unwrap();
    let got: Vec<(&str, Ingress, Option<PacketRing>, Option<u32>)> = c
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.ingress, i.ring, i.queues))
        .collect();
    assert_eq!(
        got,
        [
            ("a", Ingress::Afpacket, Some(PacketRing::V2), None),
            ("b", Ingress::Afpacket, Some(PacketRing::V3), Some(2)),
            ("c", Ingress::Afpacket, None, None),
        ]
    );
}
