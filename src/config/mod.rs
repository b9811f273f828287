//! carpio's configuration language: relayd.conf(5)'s grammar plus carpio's own blocks
//! (interfaces and ingress path, workers, flow table, maglev, carp, pfsync, control socket,
//! metrics, privilege drop). One language everywhere: the daemon, replay, benchmarks and tests
//! all read it; there is no second format. The carpio-only blocks are documented in
//! `docs/carpio.conf.md`.
//!
//! Three passes, like relayd's `parse.y`:
//! 1. [`lexer`]: tokens with spans (`file:line:col`), `#` comments, backslash continuation,
//!    quoting, `include "file"` (relative to the including file, loops detected), macros
//!    `name = value` expanded with `$name` in unquoted arguments, and `-D name=value` defines
//!    that win over the file's own definitions (relayd `cmdline_symset`).
//! 2. [`parser`]: builds the [`model`] and keeps going after an error, so one run reports every
//!    syntax error (relayd stops at the first one per statement; so do we, then resynchronise at
//!    the next line).
//! 3. [`check`]: the cross-reference pass (relayd `parse.y` `load_config` and the checks at the
//!    end of each block): undefined and unused tables, duplicate names, timeouts, ranges.
//!
//! Nothing here panics on input from a file: no `unwrap`, no slice indexing that can fail; every
//! reject is a [`Diagnostic`] with a named [`Reject`] kind and a message for humans.

pub mod check;
pub mod lexer;
pub mod model;
pub mod parser;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use model::*;

crate::named_counters! {
    /// Why a configuration was rejected (or warned about). Each [`Diagnostic`] carries one.
    pub enum Reject {
        Lexical = "config_lexical",
        Syntax = "config_syntax",
        Include = "config_include",
        Macro = "config_macro",
        Range = "config_range",
        Undefined = "config_undefined",
        Duplicate = "config_duplicate",
        Conflict = "config_conflict",
        Unused = "config_unused",
    }
}

/// A position in a configuration file: 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One message about the configuration, displayed as `file:line:col: message`
/// (warnings as `file:line:col: warning: message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub severity: Severity,
    pub kind: Reject,
    pub message: String,
}

impl Diagnostic {
    pub fn error(span: &Span, kind: Reject, message: impl Into<String>) -> Self {
        Self {
            span: span.clone(),
            severity: Severity::Error,
            kind,
            message: message.into(),
        }
    }

    pub fn warning(span: &Span, kind: Reject, message: impl Into<String>) -> Self {
        Self {
            span: span.clone(),
            severity: Severity::Warning,
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.span, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.span, self.message),
        }
    }
}

/// Every error of one run (and the warnings found alongside), one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errors(pub Vec<Diagnostic>);

impl Errors {
    /// Only the errors, without warnings.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// Splits a command-line `-D name=value` at the last `=`, as relayd's `cmdline_symset` does.
pub fn parse_define(arg: &str) -> Option<(String, String)> {
    let (name, value) = arg.rsplit_once('=')?;
    Some((name.to_string(), value.to_string()))
}

/// Reads and validates the configuration file at `path` (includes are resolved relative to the
/// including file). `defines` are `-D name=value` macros; they override the file's definitions.
pub fn load(path: &Path, defines: &[(String, String)]) -> Result<Config, Errors> {
    let name = path.to_string_lossy().into_owned();
    match std::fs::read_to_string(path) {
        Ok(text) => run(&name, &text, Some(path), defines),
        Err(e) => {
            let span = Span {
                file: Arc::from(name.as_str()),
                line: 0,
                col: 0,
            };
            Err(Errors(vec![Diagnostic::error(
                &span,
                Reject::Include,
                format!("cannot read {name}: {e}"),
            )]))
        }
    }
}

/// Parses and validates configuration text. `name` is used in messages and as the base for
/// relative `include` paths (its directory; the current directory if it has none).
pub fn parse_str(name: &str, text: &str, defines: &[(String, String)]) -> Result<Config, Errors> {
    run(name, text, Some(Path::new(name)), defines)
}

fn run(
    name: &str,
    text: &str,
    path: Option<&Path>,
    defines: &[(String, String)],
) -> Result<Config, Errors> {
    let lexed = lexer::lex(name, text, path, defines);
    let mut diags = lexed.diagnostics;
    let (parsed, parse_diags) = parser::parse(&lexed.tokens);
    diags.extend(parse_diags);
    // The cross-reference pass runs even after syntax errors, so one run reports everything;
    // the parser keeps every block whose header parsed, which keeps cascades rare.
    let top = Span {
        file: Arc::from(name),
        line: 1,
        col: 1,
    };
    let (mut config, check_diags) = check::check(parsed, &top);
    diags.extend(check_diags);
    sort(&mut diags);
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(Errors(diags));
    }
    config.warnings = diags;
    Ok(config)
}

/// Orders messages by file (in the order files were first mentioned), line and column; the
/// sort is stable, so messages at one position keep the order of the passes.
fn sort(diags: &mut [Diagnostic]) {
    let mut files: Vec<Arc<str>> = Vec::new();
    for d in diags.iter() {
        if !files.contains(&d.span.file) {
            files.push(d.span.file.clone());
        }
    }
    diags.sort_by_key(|d| {
        let f = files
            .iter()
            .position(|f| *f == d.span.file)
            .unwrap_or(usize::MAX);
        (f, d.span.line, d.span.col)
    });
}
