//! Results of `carpio bench`: `results.json` (every sample, the medians and the ratios),
//! `results.md` (the table README's "Performance" shows) and one SVG bar chart per scenario
//! (median bar, min–max whisker), drawn with `plotters`' SVG backend.

use plotters::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// One repetition of one subject in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub scenario: String,
    pub subject: String,
    pub rep: u32,
    pub metrics: BTreeMap<String, f64>,
}

/// What the run was.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub smoke: bool,
    pub secs: f64,
    pub reps: u32,
    pub offered_pps: u64,
    pub ingress: String,
    pub machine: String,
    pub wall_s: f64,
    pub errors: Vec<String>,
}

/// Median, minimum and maximum of one metric of one subject.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub subject: String,
    pub metric: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// A subject's median over the baseline's, for the scenario's main metric.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub scenario: String,
    pub subject: String,
    pub baseline: String,
    pub metric: String,
    pub ratio: f64,
}

/// The main metric (higher is better but for failover's outage), its unit, and the baseline
/// subject of a scenario.
pub fn main_metric(scenario: &str) -> (&'static str, &'static str, &'static str) {
    match scenario {
        "gen" => ("pps", "frames/s sent", "tcpreplay"),
        "udp" => ("answered_per_s", "echoes/s", "nft-dnat"),
        "dns" => ("answered_per_s", "answers/s (engine)", "dnsdist"),
        "dnsperf" => ("answered_per_s", "answers/s (dnsperf)", "dnsdist"),
        "ntp" => ("answered_per_s", "answers/s", "nft-dnat"),
        "tcp_conn" => ("per_s", "connections/s", "haproxy"),
        "tcp_bulk" => ("gbit_per_s", "Gbit/s", "haproxy"),
        "failover" => ("outage_ms", "outage ms (lower is better)", "ucarp"),
        // No peer: HAProxy's or relayd's detection time is not measured here.
        "health" => ("detect_ms", "ms to down (lower is better)", ""),
        _ => ("", "", ""),
    }
}

/// Median of a non-empty slice (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Medians of every metric of every (scenario, subject), in first-seen order.
pub fn summarize(samples: &[Sample]) -> Vec<Summary> {
    let mut order: Vec<(String, String, String)> = Vec::new();
    let mut vals: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for s in samples {
        for (m, v) in &s.metrics {
            let k = (s.scenario.clone(), s.subject.clone(), m.clone());
            if !vals.contains_key(&k) {
                order.push(k.clone());
            }
            vals.entry(k).or_default().push(*v);
        }
    }
    order
        .into_iter()
        .map(|k| {
            let v = &vals[&k];
            Summary {
                median: median(v),
                min: v.iter().copied().fold(f64::INFINITY, f64::min),
                max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                n: v.len(),
                scenario: k.0,
                subject: k.1,
                metric: k.2,
            }
        })
        .collect()
}

fn find<'a>(sum: &'a [Summary], sc: &str, subject: &str, metric: &str) -> Option<&'a Summary> {
    sum.iter()
        .find(|s| s.scenario == sc && s.subject == subject && s.metric == metric)
}

/// Every subject's main-metric median over its scenario's baseline's.
pub fn ratios(sum: &[Summary]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for s in sum {
        let (metric, _, base) = main_metric(&s.scenario);
        if s.metric != metric || s.subject == base {
            continue;
        }
        if let Some(b) = find(sum, &s.scenario, base, metric)
            && b.median > 0.0
        {
            out.push(Ratio {
                scenario: s.scenario.clone(),
                subject: s.subject.clone(),
                baseline: base.to_string(),
                metric: metric.to_string(),
                ratio: s.median / b.median,
            });
        }
    }
    out
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x.abs() >= 100.0 {
        let s = format!("{:.0}", x);
        // Thin-space thousands, like the rest of README.
        let b = s.as_bytes();
        let mut out = String::new();
        for (i, c) in b.iter().enumerate() {
            if i > 0 && (b.len() - i) % 3 == 0 && *c != b'-' && b[i - 1] != b'-' {
                out.push(' ');
            }
            out.push(*c as char);
        }
        out
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The markdown table: one row per (scenario, subject).
pub fn markdown(meta: &Meta, sum: &[Summary], rat: &[Ratio]) -> String {
    let mut s = format!(
        "{} run: {} s per case, {} repetition(s), medians (min–max); offered UDP {} pps (DNS half, NTP a quarter); carpio ingress {}.\n\n",
        if meta.smoke { "Smoke" } else { "Full" },
        meta.secs,
        meta.reps,
        meta.offered_pps,
        meta.ingress
    );
    s += "| scenario | subject | main metric | median (min–max) | × baseline | loss % | p50 µs | p99 µs | CPU ns/answer |\n";
    s += "|---|---|---|---:|---:|---:|---:|---:|---:|\n";
    let mut seen: Vec<(String, String)> = Vec::new();
    for x in sum {
        let k = (x.scenario.clone(), x.subject.clone());
        if seen.contains(&k) {
            continue;
        }
        seen.push(k);
        let (metric, unit, base) = main_metric(&x.scenario);
        let Some(m) = find(sum, &x.scenario, &x.subject, metric) else {
            continue;
        };
        let get = |name: &str| {
            find(sum, &x.scenario, &x.subject, name)
                .map(|v| fmt_num(v.median))
                .unwrap_or_else(|| "–".into())
        };
        let ratio = if x.subject == base {
            "1 (baseline)".to_string()
        } else {
            rat.iter()
                .find(|r| r.scenario == x.scenario && r.subject == x.subject)
                .map(|r| format!("{:.2}", r.ratio))
                .unwrap_or_else(|| "–".into())
        };
        let p50 = if x.scenario == "dnsperf" {
            format!("{} (avg)", get("latency_us_avg"))
        } else {
            get("latency_us_p50")
        };
        s += &format!(
            "| {} | {} | {} | {} ({}–{}) | {} | {} | {} | {} | {} |\n",
            x.scenario,
            x.subject,
            unit,
            fmt_num(m.median),
            fmt_num(m.min),
            fmt_num(m.max),
            ratio,
            get("loss_pct"),
            p50,
            get("latency_us_p99"),
            get("cpu_ns_per_answer"),
        );
    }
    if !meta.errors.is_empty() {
        s += "\nCases that failed:\n\n";
        for e in &meta.errors {
            s += &format!("- {}\n", e.lines().next().unwrap_or(""));
        }
    }
    s
}

/// One bar chart: the main metric's median per subject with a min–max whisker.
pub fn plot(path: &Path, scenario: &str, sum: &[Summary]) -> io::Result<()> {
    let (metric, unit, base) = main_metric(scenario);
    let bars: Vec<&Summary> = sum
        .iter()
        .filter(|s| s.scenario == scenario && s.metric == metric)
        .collect();
    if bars.is_empty() {
        return Err(io::Error::other(format!("{scenario}: no {metric} samples")));
    }
    let top = bars
        .iter()
        .map(|b| b.max.max(b.median))
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.25;
    let e = |x: String| io::Error::other(x);
    let root = SVGBackend::new(path, (640, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{scenario}: {unit} (median, min–max)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(8)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..bars.len() as f64, 0f64..top)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(0)
        .y_desc(unit)
        .y_label_formatter(&|v| fmt_num(*v))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, b) in bars.iter().enumerate() {
        let x0 = i as f64;
        let color = if b.subject == "carpio" || b.subject.starts_with("engine") {
            RGBColor(0x1f, 0x77, 0xb4)
        } else if b.subject == base {
            RGBColor(0xff, 0x7f, 0x0e)
        } else {
            RGBColor(0x99, 0x99, 0x99)
        };
        let m = if b.median.is_finite() { b.median } else { 0.0 };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0 + 0.15, 0.0), (x0 + 0.85, m)],
                color.filled(),
            )))
            .map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x0 + 0.5, b.min), (x0 + 0.5, b.max)],
                BLACK.stroke_width(2),
            )))
            .map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{} {}", b.subject, fmt_num(m)),
                (x0 + 0.17, m.max(b.max) + top * 0.04),
                ("sans-serif", 13),
            )))
            .map_err(|x| e(x.to_string()))?;
    }
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(())
}

/// A short description of the machine: CPU model, core count, kernel, load average.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpu.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{model}, {cores} vCPU, Linux {}, load average {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

#[derive(Serialize)]
struct Results<'a> {
    meta: &'a Meta,
    summary: &'a [Summary],
    ratios: &'a [Ratio],
    samples: &'a [Sample],
}

/// Writes results.json, results.md and `<scenario>.svg` for every scenario with samples.
pub fn write_all(dir: &Path, meta: &Meta, samples: &[Sample]) -> io::Result<Vec<String>> {
    let sum = summarize(samples);
    let rat = ratios(&sum);
    let json = serde_json::to_string_pretty(&Results {
        meta,
        summary: &sum,
        ratios: &rat,
        samples,
    })
    .map_err(io::Error::other)?;
    std::fs::write(dir.join("results.json"), json)?;
    std::fs::write(dir.join("results.md"), markdown(meta, &sum, &rat))?;
    let mut plots = Vec::new();
    let mut scs: Vec<&str> = Vec::new();
    for s in samples {
        if !scs.contains(&s.scenario.as_str()) {
            scs.push(&s.scenario);
        }
    }
    for sc in scs {
        let p = dir.join(format!("{sc}.svg"));
        plot(&p, sc, &sum)?;
        plots.push(p.to_string_lossy().into_owned());
    }
    Ok(plots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sc: &str, subject: &str, rep: u32, v: f64) -> Sample {
        Sample {
            scenario: sc.into(),
            subject: subject.into(),
            rep,
            metrics: BTreeMap::from([
                ("answered_per_s".to_string(), v),
                ("loss_pct".to_string(), 1.0),
            ]),
        }
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let s = vec![
            sample("udp", "nft-dnat", 1, 100.0),
            sample("udp", "carpio", 1, 150.0),
            sample("udp", "nft-dnat", 2, 300.0),
            sample("udp", "carpio", 2, 450.0),
            sample("udp", "nft-dnat", 3, 200.0),
            sample("udp", "carpio", 3, 300.0),
        ];
        let sum = summarize(&s);
        let c = find(&sum, "udp", "carpio", "answered_per_s").unwrap();
        assert_eq!((c.median, c.min, c.max, c.n), (300.0, 150.0, 450.0, 3));
        let r = ratios(&sum);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].subject, "carpio");
        assert!((r[0].ratio - 1.5).abs() < 1e-9);
        let meta = Meta {
            smoke: true,
            secs: 1.0,
            reps: 3,
            offered_pps: 1000,
            ingress: "afpacket".into(),
            machine: machine(),
            wall_s: 1.0,
            errors: vec![],
        };
        let md = markdown(&meta, &sum, &r);
        assert!(
            md.contains("| udp | carpio | echoes/s | 300 (150–450) | 1.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| udp | nft-dnat | echoes/s | 200 (100–300) | 1 (baseline) |"),
            "{md}"
        );
        let dir = std::env::temp_dir().join(format!("cio-bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plots = write_all(&dir, &meta, &s).unwrap();
        assert_eq!(plots.len(), 1);
        let svg = std::fs::read_to_string(&plots[0]).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<rect") && svg.contains("carpio 300"),
            "{svg}"
        );
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(j["ratios"][0]["ratio"].as_f64(), Some(1.5));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(fmt_num(1234567.0), "1 234 567");
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(fmt_num(f64::NAN), "–");
    }
}
