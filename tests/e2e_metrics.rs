//! The daemon's figures end to end (root, network namespaces of `lab::Lab`): traffic through
//! the VIP shows up exactly in `carpioctl show traffic`, in relayd's redirect statistics
//! (`show redirects`) and on the Prometheus endpoint (`metrics listen on ... port 9100`),
//! which is scraped over HTTP from the client's namespace and parsed back (prometheus-parse,
//! plus a strict line check). Bounded in time; everything is removed on drop.

mod common;

use common::lab_daemon::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const METRICS: &str = "198.18.1.1:9100";

fn config(sock: &std::path::Path) -> String {
    format!(
        r#"# e2e_metrics
control socket "{sock}"
metrics listen on 198.18.1.1 port 9100
interface lb0 {{ ingress afpacket }}
table <echo> {{ 198.18.2.11, 198.18.2.12 }}
redirect "echo" {{
    listen on {VIP} udp port {PORT}
    forward to <echo> port {PORT} check icmp
}}
"#,
        sock = sock.display()
    )
}

/// `GET path` from the client namespace: (status, body).
fn http_get(lab: &carpio::lab::Lab, path: &str) -> (u16, String) {
    let path = path.to_string();
    lab.run_in("client", move || {
        let mut s = TcpStream::connect_timeout(&METRICS.parse().unwrap(), Duration::from_secs(5))
            .expect("connect to the metrics endpoint");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: carpio\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert!(
            status != 200 || head.contains("text/plain; version=0.0.4"),
            "content type: {head}"
        );
        (status, body.to_string())
    })
    .unwrap()
}

/// Samples by metric name and sorted `k=v` labels.
type Samples = HashMap<(String, String), f64>;

fn scrape(lab: &carpio::lab::Lab) -> Samples {
    let (status, body) = http_get(lab, "/metrics");
    assert_eq!(status, 200, "{body}");
    let lines = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let n = lines.count();
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(parsed.samples.len(), n, "every sample line parses:\n{body}");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            other => panic!("only counters and gauges expected: {} {other:?}", s.metric),
        };
        let mut l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        l.sort();
        let key = (s.metric.clone(), l.join(","));
        assert!(
            out.insert(key, v).is_none(),
            "duplicate sample {}",
            s.metric
        );
    }
    out
}

fn get(s: &Samples, metric: &str, labels: &str) -> f64 {
    *s.get(&(metric.to_string(), labels.to_string()))
        .unwrap_or_else(|| {
            let names: Vec<_> = s.keys().filter(|k| k.0 == metric).collect();
            panic!("no {metric}{{{labels}}}; have {names:?}")
        })
}

const SVC: &str = "address=198.18.1.100,port=5353,proto=udp,redirect=echo";

#[test]
fn metrics_endpoint_and_traffic_figures() {
    require_root_and_tools("e2e_metrics");
    let started = Instant::now();
    let dir = TempDir::new("metrics");
    let sock = dir.path("carpio.sock");
    let conf = dir.path("carpio.conf");
    std::fs::write(&conf, config(&sock)).unwrap();
    let lab = topology("metrics", &dir);
    let mut d = start_daemon(&lab, &conf, &dir);
    wait_serving(&lab, &d, &sock);
    assert!(
        d.log()
            .contains("metrics on http://198.18.1.1:9100/metrics"),
        "{}",
        d.log()
    );

    let before = scrape(&lab);
    assert_eq!(get(&before, "carpio_up", ""), 1.0);
    let flows0 = get(&before, "carpio_service_flows_total", SVC);
    let pkts0 = get(&before, "carpio_service_packets_total", SVC);

    // 10 new flows (fresh source ports); each answered one is two packets (NAT both ways).
    let answered = (0..10)
        .filter(|_| udp_query_to(&lab, 0, PORT).is_some())
        .count() as f64;
    assert!(answered >= 8.0, "only {answered} of 10 answered");
    let after = scrape(&lab);
    let flows = get(&after, "carpio_service_flows_total", SVC) - flows0;
    let pkts = get(&after, "carpio_service_packets_total", SVC) - pkts0;
    assert!(
        (answered..=10.0).contains(&flows),
        "flows {flows}, answered {answered}"
    );
    assert!(pkts >= 2.0 * answered && pkts <= 20.0, "packets {pkts}");
    // Frames of at least 14 + 20 + 8 bytes plus the payload ("hello" in, "bN" out).
    let bytes = get(&after, "carpio_service_bytes_total", SVC)
        - get(&before, "carpio_service_bytes_total", SVC);
    assert!(
        bytes >= 44.0 * pkts && bytes <= 1514.0 * pkts,
        "bytes {bytes}"
    );
    // UDP states stay (pf's udp.multiple): at least the new ones are live.
    assert!(get(&after, "carpio_service_states", SVC) >= flows);
    // The hosts' figures add up to the service's.
    let hosts = ["host=198.18.2.11", "host=198.18.2.12"];
    let host_sum: f64 = hosts
        .iter()
        .map(|h| get(&after, "carpio_backend_packets_total", h))
        .sum();
    assert_eq!(host_sum, get(&after, "carpio_service_packets_total", SVC));
    for h in hosts {
        assert!(
            get(&after, "carpio_backend_flows_total", h) > 0.0,
            "{h}: round-robin"
        );
    }
    // Named counters: drops by reason, classes, the parent's, gauges.
    get(&after, "carpio_drops_total", "reason=no_backend");
    assert!(get(&after, "carpio_tx_nat_in_total", "") >= answered);
    assert!(get(&after, "carpio_flow_new_total", "") >= flows);
    assert!(get(&after, "carpio_daemon_snapshot_builds_total", "") >= 1.0);
    assert!(get(&after, "carpio_worker_busy_ns_total", "worker=0") > 0.0);
    // Health-check view: every host counts as up until the engine says otherwise.
    assert_eq!(
        get(
            &after,
            "carpio_host_up",
            "host=198.18.2.11,id=3,table=echo:5353"
        ),
        1.0
    );
    assert_eq!(get(&after, "carpio_table_hosts_up", "table=echo:5353"), 2.0);
    assert!(get(&after, "carpio_metrics_scrapes_total", "") >= 2.0);

    // A wrong path is refused and counted.
    assert_eq!(http_get(&lab, "/nope").0, 404);
    assert_eq!(
        get(&scrape(&lab), "carpio_metrics_not_found_total", ""),
        1.0
    );

    // The same figures through carpioctl.
    let o = carpioctl(&sock, &["show", "traffic"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.starts_with("echo"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(line.contains("198.18.1.100 udp 5353"), "{t}");
    let o = carpioctl(&sock, &["-j", "show", "traffic"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cnt = v["services"][0]["flows"].as_u64().unwrap();
    assert!(cnt as f64 >= flows0 + flows, "{v}");
    // relayd's statistics under the redirect: the running total of sessions.
    let o = carpioctl(&sock, &["show", "redirects"]);
    let r = text(&o);
    assert!(r.contains("\ttotal: "), "{r}");
    let total: u64 = r
        .lines()
        .find_map(|l| l.split("total: ").nth(1))
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{r}"));
    assert!(total >= cnt, "{r}");
    assert!(r.contains("last: ") && r.contains("/60s"), "{r}");

    // Logs: brief (INFO) by default; `carpioctl log verbose` shows DEBUG events (a monitor
    // event of a host disable, with its fields), `log brief` hides them again.
    assert!(!d.log().contains("DEBUG"), "{}", d.log());
    let o = carpioctl(&sock, &["log", "verbose"]);
    assert_eq!(text(&o).trim(), "logging request sent.\ncommand succeeded");
    assert!(carpioctl(&sock, &["host", "disable", "3"]).status.success());
    let l = d.log();
    let ev = l
        .lines()
        .find(|x| x.contains("DEBUG") && x.contains("event"))
        .unwrap_or_else(|| panic!("no debug event in\n{l}"));
    assert!(
        ev.contains("kind=\"host\"") && ev.contains("detail=\"disable\""),
        "{ev}"
    );
    assert!(carpioctl(&sock, &["log", "brief"]).status.success());
    let debug_lines = d.log().matches("DEBUG").count();
    assert!(carpioctl(&sock, &["host", "enable", "3"]).status.success());
    assert!(l.contains("INFO") && l.contains("log level verbose"), "{l}");
    assert_eq!(d.log().matches("DEBUG").count(), debug_lines, "{}", d.log());

    // SIGTERM closes the endpoint with the rest.
    let st = d.terminate();
    assert!(st.is_some_and(|s| s.success()), "{}", d.log());
    let closed = lab
        .run_in("client", || {
            TcpStream::connect_timeout(&METRICS.parse().unwrap(), Duration::from_secs(2)).is_err()
        })
        .unwrap();
    assert!(closed, "metrics endpoint still open after exit");
    assert!(started.elapsed() < Duration::from_secs(60));
}
