//! Recursive-descent parser for relayd.conf(5) (1.224 / parse.y 1.270, spec §4) plus carpio's
//! blocks (docs/carpio.conf.md). It records an error and resynchronises at the next statement,
//! so one run reports every syntax error. Cross-references (tables, protocols, ids) are left to
//! [`super::check`]: the parser only records what was written and where.

mod blocks;
mod filter;
mod relayd;

use std::time::Duration;

use super::lexer::{Tok, Token};
use super::model::*;
use super::{Diagnostic, Reject, Span};

type R<T> = Result<T, Diagnostic>;

/// A `table <name> { hosts }` definition before it is used.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub disabled: bool,
    pub hosts: Vec<HostDef>,
    /// The global check timeout when the table was defined: a global `timeout` set after a
    /// table does not apply to it (parse.y `tabledef` copies it; spec §9 item 20).
    pub timeout: Duration,
    pub span: Span,
    /// Token position, to allocate host ids in source order as relayd's parser does.
    pub seq: usize,
}

#[derive(Debug, Clone)]
pub struct HostDef {
    pub addr: Address,
    pub retry: u32,
    pub parent: Option<u32>,
    pub priority: Option<u8>,
    pub ip_ttl: Option<u8>,
    pub lladdr: Option<[u8; 6]>,
    pub weight: u32,
    pub span: Span,
}

/// Options written after `forward to <t>` / `route to <t>`.
#[derive(Debug, Clone, Default)]
pub struct TableOpts {
    pub port: Option<u16>,
    pub check: Option<Check>,
    pub timeout: Option<Duration>,
    pub interval: Option<Duration>,
    pub demote: Option<String>,
    pub mode: Option<(Mode, Span)>,
}

/// Who uses a table, and at which slot of its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// `redirects[i].tables[slot]`.
    Redirect(usize, usize),
    /// `relays[i].forwards[slot]`.
    Relay(usize, usize),
    /// `routers[i].table`.
    Router(usize),
}

#[derive(Debug, Clone)]
pub struct TableUse {
    pub table: String,
    pub opts: TableOpts,
    pub owner: Owner,
    pub span: Span,
    /// Token position (see [`TableDef::seq`]).
    pub seq: usize,
}

/// What the parser saw, before cross-referencing.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub config: Config,
    pub table_defs: Vec<TableDef>,
    pub uses: Vec<TableUse>,
    /// Spans of global settings checked later (interval, timeout, maglev size).
    pub interval_span: Option<Span>,
    pub timeout_span: Option<Span>,
    pub maglev_span: Option<Span>,
    /// Blocks (by header span) that had a syntax error inside: the semantic pass does not also
    /// report them as incomplete ("has no forward to") when the statement was only misspelt.
    pub broken: Vec<Span>,
    /// Every table name written in a `forward to`/`route to`, even in a statement that then
    /// failed to parse (so the table is not also called unused).
    pub mentioned: Vec<String>,
    /// Tables named by filter rules' `forward to <t>` (parse.y: "undefined forward table").
    pub rule_tables: Vec<(String, Span)>,
}

pub fn parse(tokens: &[Token]) -> (Parsed, Vec<Diagnostic>) {
    let mut p = Parser {
        toks: tokens,
        pos: 0,
        diags: Vec::new(),
        out: Parsed {
            config: Config {
                global: GlobalConfig::default(),
                interfaces: Vec::new(),
                groups: Vec::new(),
                tables: Vec::new(),
                redirects: Vec::new(),
                relays: Vec::new(),
                protocols: Vec::new(),
                routers: Vec::new(),
                carp: Vec::new(),
                pfsync: None,
                bird: None,
                warnings: Vec::new(),
            },
            table_defs: Vec::new(),
            uses: Vec::new(),
            interval_span: None,
            timeout_span: None,
            maglev_span: None,
            broken: Vec::new(),
            mentioned: Vec::new(),
            rule_tables: Vec::new(),
        },
    };
    p.top();
    (p.out, p.diags)
}

pub(super) struct Parser<'a> {
    toks: &'a [Token],
    pos: usize,
    diags: Vec<Diagnostic>,
    out: Parsed,
}

/// Well-known service names for ports (the /etc/services names relayd configs use).
const SERVICES: &[(&str, u16)] = &[
    ("ftp", 21),
    ("ssh", 22),
    ("smtp", 25),
    ("domain", 53),
    ("http", 80),
    ("www", 80),
    ("pop3", 110),
    ("ntp", 123),
    ("imap", 143),
    ("snmp", 161),
    ("ldap", 389),
    ("https", 443),
    ("submission", 587),
    ("ldaps", 636),
    ("imaps", 993),
    ("pop3s", 995),
];

impl<'a> Parser<'a> {
    // ---- token helpers ---------------------------------------------------------------------

    fn tok(&self) -> &Tok {
        self.toks.get(self.pos).map(|t| &t.tok).unwrap_or(&Tok::Eof)
    }

    fn tok_at(&self, n: usize) -> &Tok {
        self.toks
            .get(self.pos + n)
            .map(|t| &t.tok)
            .unwrap_or(&Tok::Eof)
    }

    fn span(&self) -> Span {
        self.toks
            .get(self.pos)
            .or_else(|| self.toks.last())
            .map(|t| t.span.clone())
            .unwrap_or(Span {
                file: "".into(),
                line: 0,
                col: 0,
            })
    }

    fn bump(&mut self) {
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.tok(), Tok::Word(w) if w == kw)
    }

    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.tok_at(n), Tok::Word(w) if w == kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.tok() == t {
            self.bump();
            true
        } else {
            false
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(Diagnostic::error(&self.span(), Reject::Syntax, msg))
    }

    fn unexpected<T>(&self, wanted: &str) -> R<T> {
        self.err(format!(
            "syntax error: expected {wanted}, found {}",
            self.tok().describe()
        ))
    }

    fn range_err<T>(&self, span: &Span, msg: impl Into<String>) -> R<T> {
        Err(Diagnostic::error(span, Reject::Range, msg))
    }

    fn expect_kw(&mut self, kw: &str) -> R<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.unexpected(&format!("'{kw}'"))
        }
    }

    fn expect(&mut self, t: Tok) -> R<()> {
        if self.eat(&t) {
            Ok(())
        } else {
            self.unexpected(&t.describe())
        }
    }

    /// A word or quoted string.
    fn string(&mut self, what: &str) -> R<(String, Span)> {
        let span = self.span();
        match self.tok().clone() {
            Tok::Word(w) | Tok::Str(w) => {
                self.bump();
                Ok((w, span))
            }
            _ => self.unexpected(what),
        }
    }

    fn number(&mut self, what: &str, min: u64, max: u64) -> R<(u64, Span)> {
        let span = self.span();
        let Tok::Word(w) = self.tok().clone() else {
            return self.unexpected(what);
        };
        let n: u64 = match w.parse() {
            Ok(n) => n,
            Err(_) => return self.err(format!("syntax error: expected {what}, found '{w}'")),
        };
        self.bump();
        if n < min || n > max {
            return self.range_err(&span, format!("invalid {what} {n}: must be {min}..{max}"));
        }
        Ok((n, span))
    }

    fn num_u8(&mut self, what: &str, min: u8, max: u8) -> R<u8> {
        let (n, _) = self.number(what, u64::from(min), u64::from(max))?;
        Ok(u8::try_from(n).unwrap_or(max))
    }

    fn num_u32(&mut self, what: &str, min: u32, max: u32) -> R<u32> {
        let (n, _) = self.number(what, u64::from(min), u64::from(max))?;
        Ok(u32::try_from(n).unwrap_or(max))
    }

    fn seconds(&mut self, what: &str) -> R<Duration> {
        Ok(Duration::from_secs(u64::from(self.num_u32(
            what,
            1,
            i32::MAX as u32,
        )?)))
    }

    fn millis(&mut self, what: &str) -> R<Duration> {
        Ok(Duration::from_millis(u64::from(self.num_u32(
            what,
            1,
            i32::MAX as u32,
        )?)))
    }

    fn port_value(&self, s: &str, span: &Span) -> R<u16> {
        if let Some(&(_, p)) = SERVICES.iter().find(|(n, _)| *n == s) {
            return Ok(p);
        }
        match s.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => Ok(u16::try_from(p).unwrap_or(u16::MAX)),
            Ok(p) => self.range_err(span, format!("invalid port {p}: must be 1..65535")),
            Err(_) => self.range_err(span, format!("invalid port '{s}'")),
        }
    }

    /// `PORT` (number or service name).
    fn port(&mut self) -> R<u16> {
        let (s, span) = self.string("port")?;
        self.port_value(&s, &span)
    }

    /// `PORT[:PORT]`.
    fn port_range(&mut self) -> R<PortRange> {
        let (s, span) = self.string("port")?;
        match s.split_once(':') {
            Some((a, b)) => {
                let lo = self.port_value(a, &span)?;
                let hi = self.port_value(b, &span)?;
                if lo > hi {
                    return self.range_err(&span, format!("invalid port range {lo}:{hi}"));
                }
                Ok(PortRange { lo, hi })
            }
            None => {
                let p = self.port_value(&s, &span)?;
                Ok(PortRange { lo: p, hi: p })
            }
        }
    }

    /// `ADDR/LEN`.
    fn prefix(&mut self) -> R<Prefix> {
        let (s, span) = self.string("address/prefix")?;
        let Ok(addr) = s.parse::<std::net::IpAddr>() else {
            return self.range_err(&span, format!("invalid address '{s}'"));
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if self.eat(&Tok::Slash) {
            self.num_u8("prefix length", 0, max)?
        } else {
            max
        };
        Ok(Prefix { addr, len })
    }

    /// `<name>`.
    fn table_name(&mut self) -> R<(String, Span)> {
        let span = self.span();
        self.expect(Tok::LAngle)?;
        let (name, _) = self.string("table name")?;
        self.expect(Tok::RAngle)?;
        if name.len() > 32 {
            // relayd TABLE_NAME_SIZE.
            return self.range_err(&span, format!("table name too long: {name}"));
        }
        Ok((name, span))
    }

    fn at_end_of_statement(&self) -> bool {
        matches!(
            self.tok(),
            Tok::Newline | Tok::Comma | Tok::RBrace | Tok::Eof
        )
    }

    /// Skips the rest of a statement after an error: up to a newline or comma outside braces, or
    /// to (not over) the `}` closing the current block.
    fn recover(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.tok() {
                Tok::Eof => return,
                Tok::Newline | Tok::Comma if depth == 0 => return,
                Tok::LBrace => depth += 1,
                Tok::RBrace if depth == 0 => return,
                Tok::RBrace => depth -= 1,
                _ => {}
            }
            self.bump();
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.tok(), Tok::Newline | Tok::Comma) {
            self.bump();
        }
    }

    /// `{ stmt (sep stmt)* }` where sep is a newline or a comma; errors are recorded per
    /// statement.
    fn block(&mut self, stmt: &mut dyn FnMut(&mut Self) -> R<()>) -> R<()> {
        let open = self.span();
        while self.eat(&Tok::Newline) {}
        self.expect(Tok::LBrace)?;
        loop {
            self.skip_separators();
            match self.tok() {
                Tok::RBrace => {
                    self.bump();
                    return Ok(());
                }
                Tok::Eof => {
                    self.diags.push(Diagnostic::error(
                        &open,
                        Reject::Syntax,
                        "syntax error: '{' is never closed",
                    ));
                    return Ok(());
                }
                _ => {}
            }
            match stmt(self) {
                Ok(()) if self.at_end_of_statement() => {}
                Ok(()) => {
                    let d = Diagnostic::error(
                        &self.span(),
                        Reject::Syntax,
                        format!("syntax error: unexpected {}", self.tok().describe()),
                    );
                    self.diags.push(d);
                    self.recover();
                }
                Err(d) => {
                    self.diags.push(d);
                    self.recover();
                }
            }
        }
    }

    // ---- top level -------------------------------------------------------------------------

    fn top(&mut self) {
        loop {
            while self.eat(&Tok::Newline) {}
            if *self.tok() == Tok::Eof {
                return;
            }
            let r = self.statement();
            match r {
                Ok(()) if matches!(self.tok(), Tok::Newline | Tok::Eof) => {}
                Ok(()) => {
                    let d = Diagnostic::error(
                        &self.span(),
                        Reject::Syntax,
                        format!("syntax error: unexpected {}", self.tok().describe()),
                    );
                    self.diags.push(d);
                    self.recover_top();
                }
                Err(d) => {
                    self.diags.push(d);
                    self.recover_top();
                }
            }
        }
    }

    fn recover_top(&mut self) {
        loop {
            self.recover();
            match self.tok() {
                Tok::Newline | Tok::Eof => return,
                // A stray `}` or `,` at top level: skip it and keep going.
                _ => self.bump(),
            }
        }
    }

    fn statement(&mut self) -> R<()> {
        let span = self.span();
        let Tok::Word(w) = self.tok().clone() else {
            return self.unexpected("a statement");
        };
        match w.as_str() {
            "interval" => {
                self.bump();
                self.out.config.global.interval = self.seconds("interval")?;
                self.out.interval_span = Some(span);
            }
            "timeout" => {
                self.bump();
                self.out.config.global.timeout = self.millis("timeout")?;
                self.out.timeout_span = Some(span);
            }
            "prefork" => {
                self.bump();
                // relayd PROC_MAX_INSTANCES.
                let (n, nspan) = self.number("prefork", 0, u64::from(u32::MAX))?;
                if !(1..=32).contains(&n) {
                    return self
                        .range_err(&nspan, format!("invalid number of preforked relays: {n}"));
                }
                self.out.config.global.prefork = u32::try_from(n).unwrap_or(1);
            }
            "log" => {
                self.bump();
                self.log()?;
            }
            "agentx" | "snmp" => {
                self.bump();
                self.agentx(w == "snmp")?;
            }
            "socket" => {
                self.bump();
                self.out.config.global.control_socket = self.string("socket path")?.0;
            }
            "table" => {
                self.bump();
                self.table()?;
            }
            "redirect" => {
                self.bump();
                let before = self.diags.len();
                self.redirect(span.clone())?;
                self.mark_broken(before, span);
            }
            "relay" => {
                self.bump();
                let before = self.diags.len();
                self.relay(span.clone())?;
                self.mark_broken(before, span);
            }
            "protocol" => {
                self.bump();
                self.protocol(ProtocolKind::Tcp, span)?;
            }
            "tcp" | "http" | "dns" if self.is_kw_at(1, "protocol") => {
                self.bump();
                self.bump();
                let kind = match w.as_str() {
                    "http" => ProtocolKind::Http,
                    "dns" => ProtocolKind::Dns,
                    _ => ProtocolKind::Tcp,
                };
                self.protocol(kind, span)?;
            }
            "router" => {
                self.bump();
                let before = self.diags.len();
                self.router(span.clone())?;
                self.mark_broken(before, span);
            }
            // carpio's own statements (docs/carpio.conf.md).
            "control" => {
                self.bump();
                self.expect_kw("socket")?;
                self.out.config.global.control_socket = self.string("socket path")?.0;
            }
            "workers" => {
                self.bump();
                self.out.config.global.workers = Some(self.num_u32("workers", 1, 1024)?);
            }
            "flow" => {
                self.bump();
                self.expect_kw("table")?;
                self.expect_kw("size")?;
                self.out.config.global.flow_table_size =
                    self.num_u32("flow table size", 1024, 1 << 28)?;
            }
            "maglev" => {
                self.bump();
                self.expect_kw("table")?;
                self.expect_kw("size")?;
                self.out.config.global.maglev_table_size =
                    self.num_u32("maglev table size", 2, 1 << 24)?;
                self.out.maglev_span = Some(span);
            }
            "metrics" => {
                self.bump();
                self.expect_kw("listen")?;
                self.expect_kw("on")?;
                let (a, aspan) = self.string("address")?;
                // The endpoint binds before privileges are dropped and never resolves names.
                let addr = match Address::parse(&a) {
                    Address::Ip(ip) => Address::Ip(ip),
                    Address::Name(_) => {
                        return self.range_err(
                            &aspan,
                            format!("invalid metrics address '{a}': must be an IP address"),
                        );
                    }
                };
                self.expect_kw("port")?;
                let port = self.port()?;
                self.out.config.global.metrics = Some(ListenConfig {
                    addr,
                    proto: Proto::Tcp,
                    port: PortRange { lo: port, hi: port },
                    interface: None,
                    pflog: false,
                    tls: false,
                });
            }
            "user" => {
                self.bump();
                self.out.config.global.user = Some(self.string("user name")?.0);
            }
            "interface" => {
                self.bump();
                self.interface(span)?;
            }
            "group" => {
                self.bump();
                let (name, _) = self.string("group name")?;
                let demote = if self.eat_kw("demote") {
                    self.num_u8("demote", 0, 255)?
                } else {
                    0
                };
                self.out
                    .config
                    .groups
                    .push(GroupConfig { name, demote, span });
            }
            "carp" => {
                self.bump();
                let before = self.diags.len();
                self.carp(span.clone())?;
                self.mark_broken(before, span);
            }
            "pfsync" => {
                self.bump();
                self.pfsync(span)?;
            }
            "bird" => {
                self.bump();
                self.bird(span)?;
            }
            _ => return self.err(format!("syntax error: unknown statement '{w}'")),
        }
        Ok(())
    }

    fn mark_broken(&mut self, before: usize, span: Span) {
        if self.diags.len() > before {
            self.out.broken.push(span);
        }
    }

    fn log(&mut self) -> R<()> {
        let Tok::Word(w) = self.tok().clone() else {
            return self.unexpected("'state', 'host', 'connection' or 'level'");
        };
        self.bump();
        match w.as_str() {
            "state" => {
                self.expect_kw("changes")?;
                self.out.config.global.log.host_checks = false;
            }
            "host" => {
                self.expect_kw("checks")?;
                self.out.config.global.log.host_checks = true;
            }
            "all" => {
                // Older relayd: `log all` logged every check, `log updates` only changes.
                self.out.config.global.log.host_checks = true;
            }
            "updates" => self.out.config.global.log.host_checks = false,
            "connection" => {
                // parse.y loglevel: `log connection` logs every session, errors included.
                self.out.config.global.log.connection_errors = true;
                if !self.eat_kw("errors") {
                    self.out.config.global.log.connections = true;
                }
            }
            "level" => {
                if self.eat_kw("verbose") {
                    self.out.config.global.log.verbose = true;
                } else {
                    self.expect_kw("brief")?;
                    self.out.config.global.log.verbose = false;
                }
            }
            _ => return self.err(format!("syntax error: unknown log option '{w}'")),
        }
        Ok(())
    }

    fn agentx(&mut self, snmp: bool) -> R<()> {
        let mut a = AgentxConfig::default();
        loop {
            if snmp && self.eat_kw("trap") {
                a.snmp_trap = true;
            } else if !snmp && self.eat_kw("context") {
                a.context = Some(self.string("context")?.0);
            } else if self.eat_kw("path") {
                a.path = Some(self.string("path")?.0);
            } else {
                break;
            }
        }
        self.out.config.global.agentx = Some(a);
        Ok(())
    }
}
