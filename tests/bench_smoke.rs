//! `carpio bench --smoke` (root, network namespaces): every scenario of the benchmark suite runs
//! once for about a second against carpio and its peers, and must produce numbers, ratios and a
//! plot per scenario. The suite's lab cleans up after itself (namespaces and processes); this
//! test checks that too.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("cio-{pid}-")))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_scenario_produces_numbers_and_a_plot() {
    assert!(
        common::euid() == 0,
        "tests/bench_smoke.rs needs root (network namespaces)"
    );
    let dir = std::env::temp_dir().join(format!("carpio-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = env!("CARGO_BIN_EXE_carpio");
    let mut child = Command::new(bin)
        .args(["bench", "--smoke", "-o"])
        .arg(&dir)
        .spawn()
        .expect("carpio bench");
    // The lab's namespaces are named after the bench process: cio-<pid>-bench-*.
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(150);
    let st = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            // SIGTERM-less kill: the lab's Drop does not run, so clean what it would have.
            let _ = child.kill();
            let _ = child.wait();
            for n in namespaces_of(pid) {
                let _ = Command::new("ip").args(["netns", "delete", &n]).status();
            }
            panic!("carpio bench --smoke took more than 150 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(st.success(), "carpio bench --smoke: {st}");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("results.json")).expect("results.json"),
    )
    .expect("json");
    let errors = results["meta"]["errors"].as_array().expect("errors");
    assert!(errors.is_empty(), "failed cases: {errors:?}");
    let summary = results["summary"].as_array().expect("summary");
    let median = |sc: &str, subject: &str, metric: &str| -> Option<f64> {
        summary
            .iter()
            .find(|s| s["scenario"] == sc && s["subject"] == subject && s["metric"] == metric)
            .and_then(|s| s["median"].as_f64())
    };
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "gen",
            &["tcpreplay", "engine-afpacket", "engine-afxdp"],
            "pps",
        ),
        ("udp", &["ceiling", "nft-dnat", "carpio"], "answered_per_s"),
        ("dns", &["ceiling", "dnsdist", "carpio"], "answered_per_s"),
        ("dnsperf", &["dnsdist", "carpio"], "answered_per_s"),
        ("ntp", &["ceiling", "nft-dnat", "carpio"], "answered_per_s"),
        ("tcp_conn", &["ceiling", "haproxy", "carpio"], "per_s"),
        ("tcp_bulk", &["ceiling", "haproxy", "carpio"], "gbit_per_s"),
        (
            "failover",
            &["ucarp", "carpio", "carpio-advbase0"],
            "outage_ms",
        ),
    ];
    for (sc, subjects, metric) in cases {
        for s in *subjects {
            let v = median(sc, s, metric).unwrap_or_else(|| panic!("{sc} {s}: no {metric}"));
            assert!(v > 0.0, "{sc} {s}: {metric} = {v}");
        }
        let svg = std::fs::read_to_string(dir.join(format!("{sc}.svg")))
            .unwrap_or_else(|e| panic!("{sc}.svg: {e}"));
        assert!(
            svg.contains("<svg") && svg.contains("<rect"),
            "{sc}.svg is no chart"
        );
        for s in *subjects {
            assert!(
                svg.lines().any(|l| l.starts_with(&format!("{s} "))),
                "{sc}.svg has no label for {s}"
            );
        }
    }
    // Answers were matched (the engine's loss counting ran) through carpio in the UDP cases.
    for sc in ["udp", "dns", "ntp"] {
        let sent = median(sc, "carpio", "sent").unwrap_or(0.0);
        let matched = median(sc, "carpio", "matched").unwrap_or(0.0);
        assert!(
            sent > 0.0 && matched > 0.0 && matched <= sent,
            "{sc}: sent {sent} matched {matched}"
        );
        assert!(
            median(sc, "carpio", "latency_us_p50").unwrap_or(0.0) > 0.0,
            "{sc}: no latency"
        );
    }
    let ratios = results["ratios"].as_array().expect("ratios");
    for sc in [
        "gen", "udp", "dns", "dnsperf", "ntp", "tcp_conn", "tcp_bulk",
    ] {
        assert!(
            ratios
                .iter()
                .any(|r| r["scenario"] == sc && r["ratio"].as_f64().is_some_and(|x| x > 0.0)),
            "{sc}: no ratio"
        );
    }
    let md = std::fs::read_to_string(dir.join("results.md")).expect("results.md");
    assert!(md.contains("| udp | carpio | echoes/s |"), "{md}");
    // Cleanup: no process runs from the lab's work directory any more.
    let work = dir.join("work");
    assert_no_process_uses(&work);
    assert!(
        namespaces_of(pid).is_empty(),
        "namespaces left: {:?}",
        namespaces_of(pid)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// No process's command line mentions `dir` (the suite's servers all run with files there).
fn assert_no_process_uses(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        assert!(!cmd.contains(&needle), "left running: {cmd}");
    }
}
