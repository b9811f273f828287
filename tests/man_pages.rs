//! The man pages (man/carpio.8, man/carpio.conf.5, man/carpioctl.8) are lint-clean for mandoc
//! (`mandoc -T lint -W warning`: mdoc structure, Xr order, sections) and render through
//! groff's mdoc macros (what `man -l` uses) without warnings; carpio.conf.5 documents every
//! top-level statement the parser accepts (read from src/config/parser.rs, so a new statement
//! without its man page entry fails here) and every option of carpio's own blocks.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const PAGES: &[&str] = &["man/carpio.8", "man/carpio.conf.5", "man/carpioctl.8"];

#[test]
fn mandoc_lint_is_clean() {
    for p in PAGES {
        let o = Command::new("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(root().join(p))
            .output()
            .expect("mandoc is required (scripts/deps.sh installs it)");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success() && out.trim().is_empty(), "{p}:\n{out}");
    }
}

#[test]
fn groff_renders_without_warnings() {
    for p in PAGES {
        let o = Command::new("groff")
            .args(["-mandoc", "-ww", "-Tutf8", "-P-cbou"])
            .arg(root().join(p))
            .output()
            .expect("groff is required (man -l renders with it)");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && err.trim().is_empty(), "{p}:\n{err}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("NAME") && text.contains("SEE ALSO"), "{p}");
    }
}

/// Every word on the page's macro lines (`.Ic workers`, `.It Ic flow table size Ar n`, ...).
fn macro_words(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| l.starts_with('.'))
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect()
}

/// The statement keywords of `Parser::statement` in src/config/parser.rs: the quoted words of
/// its match arms.
fn statement_keywords() -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join("src/config/parser.rs")).unwrap();
    let start = src.find("fn statement(").expect("Parser::statement");
    let body = &src[start..];
    let end = body.find("unknown statement").expect("its catch-all arm");
    let mut words = BTreeSet::new();
    for line in body[..end].lines() {
        let t = line.trim_start();
        if !t.starts_with('"') || !t.contains("=>") {
            continue;
        }
        let arm = t.split("=>").next().unwrap_or("");
        let arm = arm.split(" if ").next().unwrap_or("");
        for w in arm.split('|') {
            let w = w.trim().trim_matches('"');
            if !w.is_empty() {
                words.insert(w.to_string());
            }
        }
    }
    words
}

#[test]
fn carpio_conf_5_documents_every_statement_and_block_option() {
    let page = std::fs::read_to_string(root().join("man/carpio.conf.5")).unwrap();
    let have = macro_words(&page);
    let statements = statement_keywords();
    assert!(statements.len() >= 20, "parsed {statements:?}");
    let mut want: BTreeSet<String> = statements;
    for w in [
        "include",
        // interface
        "ingress",
        "afxdp",
        "afpacket",
        "pnet",
        "queues",
        "mode",
        "native",
        "generic",
        "ring",
        "v2",
        "v3",
        // carp, group, pfsync
        "carpdev",
        "vhid",
        "carpnodes",
        "advbase",
        "advskew",
        "pass",
        "carppeer",
        "balancing",
        "preempt",
        "address",
        "demote",
        "syncdev",
        "syncpeer",
        "maxupd",
        "defer",
        // host and table options carpio adds
        "lladdr",
        "weight",
        "encap",
        "ipip",
        "gue",
        "dns",
        "ntp",
        "smtp",
        "maglev",
        // relayd host and table options
        "retry",
        "parent",
        "priority",
        "ttl",
        "check",
        "icmp",
        "tls",
        "script",
        "send",
        "expect",
        "binary",
        "digest",
        "code",
        "port",
        "interval",
        "timeout",
        // redirect statements
        "listen",
        "forward",
        "route",
        "pftag",
        "session",
        "sticky-address",
        "disable",
        // relays, protocols, routers
        "transparent",
        "proxy-protocol",
        "destination",
        "nodelay",
        "sack",
        "splice",
        "backlog",
        "headerlen",
        "websockets",
        "return",
        "rtable",
        "rtlabel",
    ] {
        want.insert(w.to_string());
    }
    let missing: Vec<&String> = want.iter().filter(|w| !have.contains(*w)).collect();
    assert!(missing.is_empty(), "carpio.conf.5 lacks {missing:?}");
}

/// Every literal example of carpio.conf(5)'s EXAMPLES section (`.Bd -literal` … `.Ed`, roff's
/// `\e` unescaped) is a valid configuration: the page shows what the parser accepts.
#[test]
fn carpio_conf_5_examples_parse() {
    let page = std::fs::read_to_string(root().join("man/carpio.conf.5")).unwrap();
    let examples = page
        .split_once(".Sh EXAMPLES")
        .map(|(_, rest)| rest.split(".Sh ").next().unwrap_or(""))
        .expect("an EXAMPLES section");
    let mut n = 0;
    let mut rest = examples;
    while let Some(start) = rest.find(".Bd -literal") {
        let body = &rest[start..];
        let body = body.split_once('\n').map_or("", |(_, b)| b);
        let (text, after) = body.split_once("\n.Ed").expect("an .Ed for every .Bd");
        let text = text.replace("\\e", "\\").replace("\\&", "");
        if let Err(e) = carpio::config::parse_str("carpio.conf.5", &text, &[]) {
            panic!("carpio.conf(5) example {n} does not parse:\n{text}\n{e}");
        }
        n += 1;
        rest = after;
    }
    assert!(n >= 1, "EXAMPLES has at least one literal example");
}
