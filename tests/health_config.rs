//! carpio's check extensions in the config language (`check dns|ntp|smtp`), as the health
//! engine reads them, and their rejects with exact messages.

use std::net::IpAddr;

use carpio::config::{self, model::Check};
use carpio::health::engine::{EngineConfig, SpawnError};

fn conf(check: &str) -> String {
    format!(
        "interval 1\n\
         table <b> {{ 198.18.0.2, 198.18.0.3 retry 2 }}\n\
         redirect \"r\" {{\n\
         \tlisten on 198.18.0.1 port 53\n\
         \tforward to <b> port 53 {check} interval 2 timeout 500\n\
         }}\n"
    )
}

fn check_of(check: &str) -> Check {
    let c =
        config::parse_str("t.conf", &conf(check), &[]).unwrap_or_else(|e| panic!("{check}: {e}"));
    c.table("b:53").expect("table b:53").check.clone()
}

fn error_of(check: &str) -> String {
    match config::parse_str("t.conf", &conf(check), &[]) {
        Ok(_) => panic!("{check} should be rejected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn dns_defaults_and_options() {
    assert_eq!(
        check_of("check dns \"www.example.org\""),
        Check::Dns {
            name: "www.example.org".into(),
            qtype: 1,
            rcode: 0,
            answer: None
        }
    );
    assert_eq!(
        check_of("check dns \"x.test.\" type AAAA rcode nxdomain answer 2001:db8::1"),
        Check::Dns {
            name: "x.test.".into(),
            qtype: 28,
            rcode: 3,
            answer: Some("2001:db8::1".parse::<IpAddr>().unwrap())
        }
    );
    assert_eq!(
        check_of("check dns \"a.test\" answer 198.18.0.9 rcode 5 type a"),
        Check::Dns {
            name: "a.test".into(),
            qtype: 1,
            rcode: 5,
            answer: Some("198.18.0.9".parse::<IpAddr>().unwrap())
        }
    );
    assert_eq!(check_of("check ntp"), Check::Ntp);
    assert_eq!(check_of("check smtp"), Check::Smtp);
}

#[test]
fn dns_rejects() {
    assert_eq!(
        error_of("check dns \"a.test\" type MX"),
        "t.conf:5:49: invalid dns query type 'MX'"
    );
    assert_eq!(
        error_of("check dns \"a.test\" rcode 16"),
        "t.conf:5:50: invalid dns rcode '16'"
    );
    assert_eq!(
        error_of("check dns \"a.test\" answer nohost"),
        "t.conf:5:51: invalid dns answer 'nohost'"
    );
    assert_eq!(
        error_of("check dns \"a..test\""),
        "t.conf:5:35: invalid dns query name 'a..test'"
    );
}

#[test]
fn engine_config_from_config() {
    let c = config::parse_str("t.conf", &conf("check smtp"), &[]).unwrap();
    let e = EngineConfig::from_config(&c).unwrap();
    assert_eq!(e.tables.len(), 1);
    let t = &e.tables[0];
    assert_eq!((t.id, t.name.as_str(), t.port), (1, "b:53", Some(53)));
    assert_eq!(t.interval, std::time::Duration::from_secs(2));
    assert_eq!(t.timeout, std::time::Duration::from_millis(500));
    let hosts: Vec<(u32, String, u32)> = e
        .hosts
        .iter()
        .map(|h| (h.id, h.name.clone(), h.retry))
        .collect();
    assert_eq!(
        hosts,
        [(3, "198.18.0.2".into(), 0), (4, "198.18.0.3".into(), 2)]
    );

    let named = conf("check tcp").replace("198.18.0.3", "backend.example");
    let c = config::parse_str("t.conf", &named, &[]).unwrap();
    match EngineConfig::from_config(&c) {
        Err(SpawnError::HostName { id, name }) => {
            assert_eq!((id, name.as_str()), (4, "backend.example"))
        }
        other => panic!("want HostName, got {other:?}"),
    }
}
