//! Tokens with spans, after includes and macros (relayd `parse.y` `yylex`, `lgetc`,
//! `pushfile`, `symset`/`symget`, `cmdline_symset`).
//!
//! - `#` starts a comment to the end of the line (not inside quotes).
//! - A backslash before a newline joins the lines, also inside quotes.
//! - `"..."` and `'...'` quote; `\"` (or `\'`) escapes the quote character.
//! - Unquoted words are made of letters, digits and punctuation other than
//!   `( ) { } < > ! = / # , " '` (relayd `allowed_in_string`).
//! - `name = value` at the start of a statement defines a macro; `$name` at the start of an
//!   unquoted word is replaced by the value, re-lexed (so a macro may hold several words).
//!   Macros given on the command line (`-D`) win over later file definitions.
//! - `include "file"` at the start of a statement splices the file in, relative to the including
//!   file; a file that (indirectly) includes itself is an error, not a stack overflow.
//!
//! Newlines are tokens: relayd's grammar separates statements with them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Diagnostic, Reject, Span};

/// Nested macro expansions deeper than this are reported, not followed (a macro whose value
/// mentions itself would otherwise never end).
const MAX_MACRO_DEPTH: usize = 16;
/// Include depth limit, a second guard beside loop detection.
const MAX_INCLUDE_DEPTH: usize = 32;
/// Macro expansion work (expansions plus the tokens they produce) allowed in one configuration.
/// Depth alone does not bound it: a macro that mentions others several times grows
/// exponentially with depth (`a = "$b $b"`, `b = "$c $c"`, ...). Found by the `config` fuzz
/// target: a 2 KB file expanded to 4 million diagnostics and 1.5 GB before this bound.
const MAX_EXPANSION: usize = 1 << 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// Unquoted word (numbers are words; the parser converts).
    Word(String),
    /// Quoted string, quotes removed.
    Str(String),
    LBrace,
    RBrace,
    LAngle,
    RAngle,
    Comma,
    Equals,
    Slash,
    LParen,
    RParen,
    Bang,
    Newline,
    /// `$name` before expansion (never leaves this module).
    Macro(String),
    Eof,
}

impl Tok {
    /// How the token reads in a message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::LAngle => "'<'".into(),
            Tok::RAngle => "'>'".into(),
            Tok::Comma => "','".into(),
            Tok::Equals => "'='".into(),
            Tok::Slash => "'/'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Bang => "'!'".into(),
            Tok::Newline => "end of line".into(),
            Tok::Macro(m) => format!("'${m}'"),
            Tok::Eof => "end of file".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// The token stream of a whole configuration (includes spliced in, macros expanded), ending in
/// one `Eof`, plus the lexical errors found on the way.
#[derive(Debug)]
pub struct Lexed {
    pub tokens: Vec<Token>,
    pub diagnostics: Vec<Diagnostic>,
}

struct Macro {
    value: String,
    from_cmdline: bool,
}

struct Lexer {
    macros: HashMap<String, Macro>,
    out: Vec<Token>,
    diags: Vec<Diagnostic>,
    /// Canonical paths of the files being read, outermost first (include loop detection).
    stack: Vec<PathBuf>,
    /// What is left of [`MAX_EXPANSION`]; once spent, macros are reported, not expanded.
    expansion_left: usize,
    /// The macro use being expanded hit [`MAX_MACRO_DEPTH`]: the rest of it is abandoned, so
    /// a recursive macro that mentions itself several times is reported once, not per branch.
    too_deep: bool,
}

/// Lexes `text` (named `name` in spans); `path` is where it lives, for relative includes.
pub fn lex(name: &str, text: &str, path: Option<&Path>, defines: &[(String, String)]) -> Lexed {
    let mut lx = Lexer {
        macros: HashMap::new(),
        out: Vec::new(),
        diags: Vec::new(),
        stack: Vec::new(),
        expansion_left: MAX_EXPANSION,
        too_deep: false,
    };
    for (k, v) in defines {
        lx.macros.insert(
            k.clone(),
            Macro {
                value: v.clone(),
                from_cmdline: true,
            },
        );
    }
    if let Some(p) = path {
        lx.stack
            .push(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
    }
    lx.file(name, text, path);
    let span = lx.out.last().map(|t| t.span.clone()).unwrap_or(Span {
        file: Arc::from(name),
        line: 1,
        col: 1,
    });
    lx.out.push(Token {
        tok: Tok::Eof,
        span,
    });
    Lexed {
        tokens: lx.out,
        diagnostics: lx.diags,
    }
}

/// relayd `allowed_in_string`: what may follow the first character of an unquoted word.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
        || (c.is_ascii_punctuation()
            && !matches!(
                c,
                '(' | ')' | '{' | '}' | '<' | '>' | '!' | '=' | '/' | '#' | ','
            ))
}

/// An unquoted word starts with a letter, digit, `:` or `_` (relayd `yylex`; `-` too, for
/// negative numbers). Other punctuation must be quoted.
fn is_word_start(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, ':' | '_' | '-')
}

fn is_macro_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits one file into raw tokens (macros not yet expanded).
fn raw_tokens(
    file: &Arc<str>,
    text: &str,
    line0: u32,
    col0: u32,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0usize;
    let (mut line, mut col) = (line0, col0);
    // Advances over one character, tracking the position.
    let step = |i: &mut usize, line: &mut u32, col: &mut u32, c: char| {
        *i += 1;
        if c == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
    };
    while let Some(&c) = chars.get(i) {
        let span = Span {
            file: file.clone(),
            line,
            col,
        };
        match c {
            '\\' if chars.get(i + 1) == Some(&'\n') => {
                step(&mut i, &mut line, &mut col, c);
                step(&mut i, &mut line, &mut col, '\n');
            }
            ' ' | '\t' | '\r' => step(&mut i, &mut line, &mut col, c),
            '#' => {
                while let Some(&c) = chars.get(i) {
                    if c == '\n' {
                        break;
                    }
                    step(&mut i, &mut line, &mut col, c);
                }
            }
            '\n' => {
                toks.push(Token {
                    tok: Tok::Newline,
                    span,
                });
                step(&mut i, &mut line, &mut col, c);
            }
            '"' | '\'' => {
                // relayd `yylex`: a newline inside quotes is dropped (the string goes on), a
                // backslash escapes the quote, a space or a tab, and joins lines; any other
                // backslash stays. Only the end of the file leaves a string open.
                let quote = c;
                step(&mut i, &mut line, &mut col, c);
                let mut s = String::new();
                let mut closed = false;
                while let Some(&c) = chars.get(i) {
                    step(&mut i, &mut line, &mut col, c);
                    if c == quote {
                        closed = true;
                        break;
                    }
                    match c {
                        '\n' => {}
                        '\\' => match chars.get(i) {
                            Some('\n') => step(&mut i, &mut line, &mut col, '\n'),
                            Some(&n) if n == quote || n == ' ' || n == '\t' => {
                                step(&mut i, &mut line, &mut col, n);
                                s.push(n);
                            }
                            _ => s.push(c),
                        },
                        _ => s.push(c),
                    }
                }
                if !closed {
                    diags.push(Diagnostic::error(
                        &span,
                        Reject::Lexical,
                        "reached end of file while parsing quoted string",
                    ));
                }
                toks.push(Token {
                    tok: Tok::Str(s),
                    span,
                });
            }
            '{' | '}' | '<' | '>' | ',' | '=' | '/' | '(' | ')' | '!' => {
                let tok = match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '<' => Tok::LAngle,
                    '>' => Tok::RAngle,
                    ',' => Tok::Comma,
                    '=' => Tok::Equals,
                    '/' => Tok::Slash,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    _ => Tok::Bang,
                };
                toks.push(Token { tok, span });
                step(&mut i, &mut line, &mut col, c);
            }
            '$' => {
                step(&mut i, &mut line, &mut col, c);
                let mut name = String::new();
                while let Some(&c) = chars.get(i) {
                    if !(c.is_ascii_alphanumeric() || c == '_') {
                        break;
                    }
                    name.push(c);
                    step(&mut i, &mut line, &mut col, c);
                }
                if name.is_empty() {
                    diags.push(Diagnostic::error(
                        &span,
                        Reject::Macro,
                        "'$' without a macro name",
                    ));
                } else {
                    toks.push(Token {
                        tok: Tok::Macro(name),
                        span,
                    });
                }
            }
            c if is_word_start(c) => {
                let mut w = String::new();
                while let Some(&c) = chars.get(i) {
                    if c == '\\' && chars.get(i + 1) == Some(&'\n') {
                        step(&mut i, &mut line, &mut col, c);
                        step(&mut i, &mut line, &mut col, '\n');
                        continue;
                    }
                    if !is_word_char(c) {
                        break;
                    }
                    w.push(c);
                    step(&mut i, &mut line, &mut col, c);
                }
                toks.push(Token {
                    tok: Tok::Word(w),
                    span,
                });
            }
            other => {
                diags.push(Diagnostic::error(
                    &span,
                    Reject::Lexical,
                    format!("syntax error: unexpected character '{other}' (quote arguments that start with it)"),
                ));
                step(&mut i, &mut line, &mut col, other);
                // Read the rest as if it had been quoted, so the statement parses on without a
                // second error.
                let mut w = String::from(other);
                while let Some(&c) = chars.get(i) {
                    if !is_word_char(c) {
                        break;
                    }
                    w.push(c);
                    step(&mut i, &mut line, &mut col, c);
                }
                toks.push(Token {
                    tok: Tok::Str(w),
                    span,
                });
            }
        }
    }
    toks
}

impl Lexer {
    fn at_statement_start(&self) -> bool {
        matches!(
            self.out.last().map(|t| &t.tok),
            None | Some(Tok::Newline) | Some(Tok::LBrace) | Some(Tok::RBrace) | Some(Tok::Comma)
        )
    }

    fn file(&mut self, name: &str, text: &str, path: Option<&Path>) {
        let file: Arc<str> = Arc::from(name);
        let raw = raw_tokens(&file, text, 1, 1, &mut self.diags);
        let base = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut i = 0usize;
        while let Some(t) = raw.get(i) {
            // `name = value` (relayd `varset`).
            if let (Tok::Word(name), Some(Tok::Equals)) = (&t.tok, raw.get(i + 1).map(|t| &t.tok))
                && self.at_statement_start()
            {
                let value = match raw.get(i + 2).map(|t| &t.tok) {
                    Some(Tok::Word(v)) | Some(Tok::Str(v)) => Some(v.clone()),
                    Some(Tok::Macro(m)) => self.macros.get(m).map(|m| m.value.clone()),
                    _ => None,
                };
                match value {
                    None => self.diags.push(Diagnostic::error(
                        &t.span,
                        Reject::Macro,
                        format!("macro '{name}' has no value"),
                    )),
                    Some(_) if !is_macro_name(name) => self.diags.push(Diagnostic::error(
                        &t.span,
                        Reject::Macro,
                        format!("macro name '{name}' may only hold letters, digits and '_'"),
                    )),
                    Some(value) => {
                        if !self.macros.get(name).is_some_and(|m| m.from_cmdline) {
                            self.macros.insert(
                                name.clone(),
                                Macro {
                                    value,
                                    from_cmdline: false,
                                },
                            );
                        }
                    }
                }
                i += 3;
                // The definition's newline ends no statement of its own.
                if raw.get(i).map(|t| &t.tok) == Some(&Tok::Newline) {
                    i += 1;
                }
                continue;
            }
            // `include "file"`.
            if t.tok == Tok::Word("include".into()) && self.at_statement_start() {
                match raw.get(i + 1).map(|t| &t.tok) {
                    Some(Tok::Str(f)) => {
                        let f = f.clone();
                        self.include(&t.span, &base, &f);
                        i += 2;
                        if raw.get(i).map(|t| &t.tok) == Some(&Tok::Newline) {
                            i += 1;
                        }
                        continue;
                    }
                    _ => {
                        self.diags.push(Diagnostic::error(
                            &t.span,
                            Reject::Include,
                            "include needs a quoted file name",
                        ));
                        i += 1;
                        continue;
                    }
                }
            }
            match &t.tok {
                Tok::Macro(m) => self.expand(m, &t.span, 0),
                _ => self.out.push(t.clone()),
            }
            i += 1;
        }
        // A file always ends a statement.
        if !matches!(self.out.last().map(|t| &t.tok), None | Some(Tok::Newline))
            && let Some(last) = raw.last()
        {
            self.out.push(Token {
                tok: Tok::Newline,
                span: last.span.clone(),
            });
        }
    }

    fn expand(&mut self, name: &str, span: &Span, depth: usize) {
        if depth == 0 {
            self.too_deep = false;
        }
        if self.expansion_left == 0 || self.too_deep {
            return;
        }
        self.expansion_left -= 1;
        if depth >= MAX_MACRO_DEPTH {
            self.too_deep = true;
            self.diags.push(Diagnostic::error(
                span,
                Reject::Macro,
                format!("macro '{name}' expands too deeply"),
            ));
            return;
        }
        let Some(value) = self.macros.get(name).map(|m| m.value.clone()) else {
            self.diags.push(Diagnostic::error(
                span,
                Reject::Macro,
                format!("macro '{name}' not defined"),
            ));
            // Stand in an empty argument so the statement around it parses without a second
            // error.
            self.out.push(Token {
                tok: Tok::Str(String::new()),
                span: span.clone(),
            });
            return;
        };
        let mut inner = Vec::new();
        let toks = raw_tokens(&span.file, &value, span.line, span.col, &mut inner);
        self.expansion_left = self.expansion_left.saturating_sub(toks.len());
        if self.expansion_left == 0 {
            // Reported once: every later expansion returns at the top.
            self.diags.push(Diagnostic::error(
                span,
                Reject::Macro,
                format!("macros expand to more than {MAX_EXPANSION} tokens"),
            ));
            return;
        }
        for d in inner {
            self.diags.push(Diagnostic {
                span: span.clone(),
                ..d
            });
        }
        for t in toks {
            match t.tok {
                Tok::Macro(m) => self.expand(&m, span, depth + 1),
                tok => self.out.push(Token {
                    tok,
                    span: span.clone(),
                }),
            }
        }
    }

    fn include(&mut self, span: &Span, base: &Path, file: &str) {
        let path = base.join(file);
        let canon = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if self.stack.contains(&canon) {
            self.diags.push(Diagnostic::error(
                span,
                Reject::Include,
                format!("include loop: {file} is already being read"),
            ));
            return;
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            self.diags.push(Diagnostic::error(
                span,
                Reject::Include,
                format!("includes nested too deeply at {file}"),
            ));
            return;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.diags.push(Diagnostic::error(
                    span,
                    Reject::Include,
                    format!("failed to include file {file}: {e}"),
                ));
                return;
            }
        };
        self.stack.push(canon);
        let name = path.to_string_lossy().into_owned();
        self.file(&name, &text, Some(&path));
        self.stack.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str, defines: &[(String, String)]) -> (Vec<Tok>, Vec<String>) {
        let l = lex("t.conf", text, None, defines);
        (
            l.tokens.into_iter().map(|t| t.tok).collect(),
            l.diagnostics.iter().map(|d| d.to_string()).collect(),
        )
    }

    fn w(s: &str) -> Tok {
        Tok::Word(s.into())
    }

    #[test]
    fn words_symbols_comments_continuation() {
        let (t, e) = toks("table <web> { 10.0.0.1, \\\n fe80::1 } # c\nx \"a b\"", &[]);
        assert!(e.is_empty());
        assert_eq!(
            t,
            vec![
                w("table"),
                Tok::LAngle,
                w("web"),
                Tok::RAngle,
                Tok::LBrace,
                w("10.0.0.1"),
                Tok::Comma,
                w("fe80::1"),
                Tok::RBrace,
                Tok::Newline,
                w("x"),
                Tok::Str("a b".into()),
                Tok::Newline,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn spans_are_line_and_column() {
        let l = lex("f", "a\n  bb \"q\"", None, &[]);
        let s: Vec<(u32, u32)> = l.tokens.iter().map(|t| (t.span.line, t.span.col)).collect();
        assert_eq!(s[..4], [(1, 1), (1, 2), (2, 3), (2, 6)]);
    }

    #[test]
    fn macros_expand_and_cmdline_wins() {
        let (t, e) = toks(
            "a = \"1 2\"\nb = x\nport $a $b\n",
            &[("b".into(), "y".into())],
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            t,
            vec![w("port"), w("1"), w("2"), w("y"), Tok::Newline, Tok::Eof]
        );
    }

    #[test]
    fn undefined_and_recursive_macros_are_errors() {
        let (_, e) = toks("x $nope\n", &[]);
        assert_eq!(e, vec!["t.conf:1:3: macro 'nope' not defined"]);
        let (_, e) = toks("a = \"$a\"\nx $a\n", &[]);
        assert_eq!(e, vec!["t.conf:2:3: macro 'a' expands too deeply"]);
    }

    #[test]
    fn exponential_macro_expansion_is_bounded() {
        // Ten macros, each mentioning the next eight times: 8^9 tokens if expanded. Found by
        // the `config` fuzz target (fuzz/regressions/config/).
        let mut text = String::new();
        for i in 0..10 {
            let next = format!("$m{} ", i + 1);
            text.push_str(&format!("m{i} = \"{}\"\n", next.repeat(8)));
        }
        text.push_str("m10 = \"x\"\nv $m0\n");
        let (t, e) = toks(&text, &[]);
        assert_eq!(
            e,
            vec![format!(
                "t.conf:12:3: macros expand to more than {MAX_EXPANSION} tokens"
            )]
        );
        assert!(t.len() <= MAX_EXPANSION + 64, "{} tokens", t.len());
        // A self-recursive macro with fan-out is bounded the same way.
        let (t, e) = toks("a = \"$a $a $a $a\"\nx $a\n", &[]);
        assert!(e.len() < 64, "{} diagnostics", e.len());
        assert!(t.len() <= MAX_EXPANSION + 64);
    }

    #[test]
    fn quoted_dollar_is_literal() {
        let (t, _) = toks("v \"$REMOTE_ADDR\"", &[]);
        assert_eq!(t[1], Tok::Str("$REMOTE_ADDR".into()));
    }

    #[test]
    fn unterminated_quote_runs_to_end_of_file() {
        let (_, e) = toks("a \"b\nc", &[]);
        assert_eq!(
            e,
            vec!["t.conf:1:3: reached end of file while parsing quoted string"]
        );
    }

    #[test]
    fn quotes_follow_relayd_escapes_and_newlines() {
        // A newline inside quotes is dropped; \" \<space> escape; other backslashes stay.
        let (t, e) = toks("x \"a\nb\\\" c\\d\\ e\"", &[]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(t[1], Tok::Str("ab\" c\\d e".into()));
    }

    #[test]
    fn words_start_with_alnum_colon_underscore() {
        let (t, e) = toks("::1 _x a\"b' *.x", &[]);
        assert_eq!(
            t[..4],
            [w("::1"), w("_x"), w("a\"b'"), Tok::Str("*.x".into())]
        );
        assert_eq!(
            e,
            vec![
                "t.conf:1:13: syntax error: unexpected character '*' (quote arguments that start with it)"
            ]
        );
    }
}
