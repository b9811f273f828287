//! relayd's sections: tables, redirects, relays, protocols, routers (relayd.conf.5 1.224,
//! parse.y 1.270; spec §4.4-4.8). Older spellings are accepted as aliases (spec §9 item 21):
//! `ssl` for `tls`, `snmp` for `agentx`, `tag` for `pftag`, `check ssl` for `check tls`.

use super::*;

/// Words that end a list of table options (so a `mode ... KEY` does not swallow them).
const TABLE_OPTION_WORDS: &[&str] = &[
    "port",
    "check",
    "timeout",
    "interval",
    "demote",
    "mode",
    "encap",
    "interface",
    "retry",
    "inet",
    "inet6",
];

/// `xx:xx:xx:xx:xx:xx` (six hex octets).
fn parse_lladdr(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks(2) {
        let txt = std::str::from_utf8(pair).ok()?;
        out.push(u8::from_str_radix(txt, 16).ok()?);
    }
    Some(out)
}

/// A hash key as relayd builds it (parse.y `hashkey`, the same as pfctl's): `0x` and exactly 32
/// hex digits, read as four 32-bit words; any other string is hashed with MD5, whose 16 bytes
/// are read as four big-endian words (relayd applies HTONL to each word of the digest).
fn hash_key(s: &str) -> Result<HashKey, &'static str> {
    let mut words = [0u32; 4];
    if let Some(hex) = s.strip_prefix("0x") {
        if hex.len() != 32 {
            return Err("hex key must be 128 bits (32 hex digits) long");
        }
        let bytes = hex_bytes(hex).ok_or("invalid hex key")?;
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_be_bytes(chunk.try_into().map_err(|_| "invalid hex key")?);
        }
    } else {
        use md5::Digest as _;
        let d = md5::Md5::digest(s.as_bytes());
        for (w, chunk) in words.iter_mut().zip(d.chunks_exact(4)) {
            *w = u32::from_be_bytes(chunk.try_into().map_err(|_| "invalid hash key")?);
        }
    }
    Ok(HashKey::Key(words))
}

impl Parser<'_> {
    // ---- tables ----------------------------------------------------------------------------

    /// `table <name> [disable] { host [opts], ... }`
    pub(super) fn table(&mut self) -> R<()> {
        let (name, span) = self.table_name()?;
        let disabled = self.eat_kw("disable");
        let mut def = TableDef {
            name,
            disabled,
            hosts: Vec::new(),
            timeout: self.out.config.global.timeout,
            span,
            seq: 0,
        };
        let mut hosts = Vec::new();
        let errors_before = self.diags.len();
        self.block(&mut |p| {
            // Hosts may also be separated by spaces only: keep reading hosts until the end of
            // the statement.
            while !p.at_end_of_statement() {
                hosts.push(p.host()?);
            }
            Ok(())
        })?;
        if hosts.is_empty() && self.diags.len() == errors_before {
            self.diags.push(Diagnostic::error(
                &def.span,
                Reject::Syntax,
                format!("table {} has no hosts", def.name),
            ));
        }
        def.hosts = hosts;
        def.seq = self.pos;
        self.out.table_defs.push(def);
        Ok(())
    }

    fn host(&mut self) -> R<HostDef> {
        let (a, span) = self.string("host address")?;
        let mut h = HostDef {
            addr: Address::parse(&a),
            retry: 0,
            parent: None,
            priority: None,
            ip_ttl: None,
            lladdr: None,
            weight: 1,
            span,
        };
        loop {
            if self.eat_kw("retry") {
                h.retry = self.num_u32("retry", 0, i32::MAX as u32)?;
            } else if self.eat_kw("parent") {
                h.parent = Some(self.num_u32("parent", 1, i32::MAX as u32)?);
            } else if self.eat_kw("priority") {
                // RTP_MAX is 63 on OpenBSD (route priorities).
                h.priority = Some(self.num_u8("priority", 1, 63)?);
            } else if self.is_kw("ip") && self.is_kw_at(1, "ttl") {
                self.bump();
                self.bump();
                h.ip_ttl = Some(self.num_u8("ip ttl", 1, 255)?);
            } else if self.eat_kw("weight") {
                h.weight = self.num_u32("weight", 1, 65535)?;
            } else if self.is_kw("lladdr") {
                let span = self.span();
                self.bump();
                let (text, _) = self.string("link-layer address")?;
                match parse_lladdr(&text) {
                    Some(mac) => h.lladdr = Some(mac),
                    None => {
                        return Err(Diagnostic::error(
                            &span,
                            Reject::Syntax,
                            format!(
                                "invalid link-layer address {text:?}: expected xx:xx:xx:xx:xx:xx"
                            ),
                        ));
                    }
                }
            } else {
                return Ok(h);
            }
        }
    }

    /// Options after `forward to <t>`; `route` also accepts `interface IF` and redirects
    /// `encap ipip|gue [port N]`. Returns the options plus those two extras.
    fn table_opts(&mut self) -> R<(TableOpts, Option<String>, Option<ForwardMode>)> {
        let mut o = TableOpts::default();
        let mut interface = None;
        let mut encap = None;
        while !self.at_end_of_statement() {
            let span = self.span();
            if self.eat_kw("port") {
                o.port = Some(self.port()?);
            } else if self.eat_kw("check") {
                o.check = Some(self.check()?);
            } else if self.eat_kw("timeout") {
                o.timeout = Some(self.millis("timeout")?);
            } else if self.eat_kw("interval") {
                o.interval = Some(self.seconds("interval")?);
            } else if self.eat_kw("demote") {
                o.demote = Some(self.string("demote group")?.0);
            } else if self.eat_kw("mode") {
                o.mode = Some((self.mode()?, span));
            } else if self.eat_kw("interface") {
                interface = Some(self.string("interface")?.0);
            } else if self.eat_kw("encap") {
                encap = Some(if self.eat_kw("ipip") {
                    ForwardMode::Ipip
                } else if self.eat_kw("gue") {
                    let port = if self.eat_kw("port") {
                        self.port()?
                    } else {
                        DEFAULT_GUE_PORT
                    };
                    ForwardMode::Gue { port }
                } else {
                    return self.unexpected("'ipip' or 'gue'");
                });
            } else if let Some(mode) = self.mode_word()? {
                // Old form: the mode without the `mode` keyword (`forward to <t> loadbalance`).
                o.mode = Some((mode, span));
            } else {
                return self.err(format!(
                    "syntax error: unknown table option {}",
                    self.tok().describe()
                ));
            }
        }
        Ok((o, interface, encap))
    }

    fn mode(&mut self) -> R<Mode> {
        match self.mode_word()? {
            Some(m) => Ok(m),
            None => self.unexpected(
                "a mode (roundrobin, random, source-hash, least-states, loadbalance, hash, maglev)",
            ),
        }
    }

    fn mode_word(&mut self) -> R<Option<Mode>> {
        let Tok::Word(w) = self.tok().clone() else {
            return Ok(None);
        };
        let keyed: fn(HashKey) -> Mode = match w.as_str() {
            "roundrobin" => {
                self.bump();
                return Ok(Some(Mode::RoundRobin));
            }
            "random" => {
                self.bump();
                return Ok(Some(Mode::Random));
            }
            "least-states" => {
                self.bump();
                return Ok(Some(Mode::LeastStates));
            }
            "maglev" => {
                self.bump();
                return Ok(Some(Mode::Maglev));
            }
            "source-hash" => Mode::SourceHash,
            "loadbalance" => Mode::Loadbalance,
            "hash" => Mode::Hash,
            _ => return Ok(None),
        };
        self.bump();
        let key_span = self.span();
        let key = match self.tok().clone() {
            Tok::Str(s) => Some(s),
            Tok::Word(s) if !TABLE_OPTION_WORDS.contains(&s.as_str()) => Some(s),
            _ => None,
        };
        let key = match key {
            None => HashKey::Random,
            Some(s) => {
                self.bump();
                match hash_key(&s) {
                    Ok(k) => k,
                    Err(msg) => return self.range_err(&key_span, msg),
                }
            }
        };
        Ok(Some(keyed(key)))
    }

    /// `check ...` (spec §4.4).
    fn check(&mut self) -> R<Check> {
        let Tok::Word(w) = self.tok().clone() else {
            return self.unexpected("a check type");
        };
        self.bump();
        Ok(match w.as_str() {
            "icmp" => Check::Icmp,
            "tcp" => Check::Tcp,
            "tls" | "ssl" => Check::Tls,
            "http" | "https" => {
                let (path, _) = self.string("http path")?;
                let host = if self.eat_kw("host") {
                    Some(self.string("host name")?.0)
                } else {
                    None
                };
                let expect = if self.eat_kw("code") {
                    HttpExpect::Code(u16::try_from(self.num_u32("http code", 1, 999)?).unwrap_or(0))
                } else if self.eat_kw("digest") {
                    let (d, span) = self.string("digest")?;
                    let bytes = hex_bytes(&d);
                    let digest = match (d.len(), bytes) {
                        (32, Some(b)) => b.try_into().ok().map(Digest::Md5),
                        (40, Some(b)) => b.try_into().ok().map(Digest::Sha1),
                        _ => None,
                    };
                    match digest {
                        Some(d) => HttpExpect::Digest(d),
                        // parse.y: "invalid http digest" (MD5 is 32, SHA1 40 hex characters).
                        None => return self.range_err(&span, "invalid http digest"),
                    }
                } else {
                    return self.unexpected("'code' or 'digest'");
                };
                Check::Http {
                    tls: w == "https",
                    path,
                    host,
                    expect,
                }
            }
            "send" => {
                let send = if self.eat_kw("nothing") {
                    Vec::new()
                } else {
                    self.string("send data")?.0.into_bytes()
                };
                self.expect_kw("expect")?;
                let (expect, _) = self.string("expect pattern")?;
                let tls = self.eat_kw("tls") || self.eat_kw("ssl");
                Check::Send { send, expect, tls }
            }
            "binary" => {
                self.expect_kw("send")?;
                let send = self.hex_arg("send")?;
                self.expect_kw("expect")?;
                let expect = self.hex_arg("expect")?;
                let tls = self.eat_kw("tls") || self.eat_kw("ssl");
                Check::Binary { send, expect, tls }
            }
            "script" => Check::Script {
                path: self.string("script path")?.0,
            },
            "dns" => self.check_dns()?,
            "ntp" => Check::Ntp,
            "smtp" => Check::Smtp,
            _ => return self.err(format!("syntax error: unknown check '{w}'")),
        })
    }

    /// carpio extension: `dns "NAME" [type A|AAAA] [rcode NAME|N] [answer ADDR]`.
    fn check_dns(&mut self) -> R<Check> {
        let (name, span) = self.string("dns query name")?;
        // RFC 1035 2.3.4: labels of 1..=63 bytes, 253 characters in all; "." is the root.
        let labels = name.strip_suffix('.').unwrap_or(&name);
        let bad_label =
            !labels.is_empty() && labels.split('.').any(|l| l.is_empty() || l.len() > 63);
        if name.is_empty() || name.len() > 254 || bad_label {
            return self.range_err(&span, format!("invalid dns query name '{name}'"));
        }
        let mut qtype = 1;
        let mut rcode = 0;
        let mut answer = None;
        loop {
            if self.eat_kw("type") {
                let (t, span) = self.string("dns query type")?;
                qtype = match t.to_ascii_uppercase().as_str() {
                    "A" => 1,
                    "AAAA" => 28,
                    _ => return self.range_err(&span, format!("invalid dns query type '{t}'")),
                };
            } else if self.eat_kw("rcode") {
                let (r, span) = self.string("dns rcode")?;
                rcode = match dns_rcode(&r) {
                    Some(r) => r,
                    None => return self.range_err(&span, format!("invalid dns rcode '{r}'")),
                };
            } else if self.eat_kw("answer") {
                let (a, span) = self.string("dns answer address")?;
                answer = match a.parse::<std::net::IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => return self.range_err(&span, format!("invalid dns answer '{a}'")),
                };
            } else {
                break;
            }
        }
        Ok(Check::Dns {
            name,
            qtype,
            rcode,
            answer,
        })
    }

    fn hex_arg(&mut self, what: &str) -> R<Vec<u8>> {
        let (s, span) = self.string(what)?;
        match hex_bytes(&s) {
            Some(b) => Ok(b),
            None => self.range_err(
                &span,
                format!("invalid binary {what} data '{s}': need an even number of hex digits"),
            ),
        }
    }

    fn table_use(&mut self, owner: Owner) -> R<(TableOpts, Option<String>, Option<ForwardMode>)> {
        let (table, span) = self.table_name()?;
        self.out.mentioned.push(table.clone());
        let (opts, interface, encap) = self.table_opts()?;
        self.out.uses.push(TableUse {
            table,
            opts: opts.clone(),
            owner,
            span,
            seq: self.pos,
        });
        Ok((opts, interface, encap))
    }

    // ---- redirects -------------------------------------------------------------------------

    fn listen(&mut self, relay: bool) -> R<ListenConfig> {
        self.expect_kw("on")?;
        let (a, _) = self.string("listen address")?;
        let mut l = ListenConfig {
            addr: Address::parse(&a),
            proto: Proto::Tcp,
            port: PortRange { lo: 0, hi: 0 },
            interface: None,
            pflog: false,
            tls: false,
        };
        if !relay {
            if self.eat_kw("udp") {
                l.proto = Proto::Udp;
            } else {
                self.eat_kw("tcp");
            }
        }
        self.expect_kw("port")?;
        l.port = self.port_range()?;
        if relay && l.port.lo != l.port.hi {
            // parse.y relayoptsl: a relay listens on one port.
            return self.range_err(&self.span(), "invalid port");
        }
        while !self.at_end_of_statement() {
            if !relay && self.eat_kw("interface") {
                l.interface = Some(self.string("interface")?.0);
            } else if !relay && self.eat_kw("pflog") {
                l.pflog = true;
            } else if relay && (self.eat_kw("tls") || self.eat_kw("ssl")) {
                l.tls = true;
            } else {
                return self.err(format!(
                    "syntax error: unexpected {}",
                    self.tok().describe()
                ));
            }
        }
        Ok(l)
    }

    pub(super) fn redirect(&mut self, span: Span) -> R<()> {
        let (name, _) = self.string("redirect name")?;
        let idx = self.out.config.redirects.len();
        let mut r = RedirectConfig {
            name,
            listen: Vec::new(),
            tables: Vec::new(),
            forward: ForwardMode::Nat,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            sticky: false,
            tag: None,
            match_tag: false,
            disabled: false,
            span,
        };
        let mut forward_set: Option<Span> = None;
        self.block(&mut |p| {
            let sspan = p.span();
            if p.eat_kw("listen") {
                let l = p.listen(false)?;
                r.listen.push(l);
            } else if p.is_kw("forward") || p.is_kw("route") {
                let route = p.eat_kw("route");
                if !route {
                    p.bump();
                }
                p.expect_kw("to")?;
                let slot = r.tables.len();
                let (_, interface, encap) = p.table_use(Owner::Redirect(idx, slot))?;
                r.tables.push(String::new());
                let mode = match (route, interface, encap) {
                    (true, Some(interface), None) => Some(ForwardMode::Dsr { interface }),
                    (true, None, _) => return p.err("missing interface to route to"),
                    (true, Some(_), Some(_)) => {
                        return p.err("route to cannot be combined with encap");
                    }
                    (false, Some(_), _) => return p.err("superfluous interface"),
                    (false, None, e) => e,
                };
                if let Some(m) = mode {
                    if forward_set.is_some() && r.forward != m {
                        return Err(Diagnostic::error(
                            &sspan,
                            Reject::Conflict,
                            "conflicting forwarding modes in one redirect",
                        ));
                    }
                    r.forward = m;
                    forward_set = Some(sspan);
                }
            } else if p.eat_kw("session") {
                p.expect_kw("timeout")?;
                r.session_timeout = p.seconds("session timeout")?;
            } else if p.eat_kw("sticky-address") {
                r.sticky = true;
            } else if p.eat_kw("match") {
                p.expect_kw("pftag")?;
                r.tag = Some(p.string("tag")?.0);
                r.match_tag = true;
            } else if p.eat_kw("pftag") || p.eat_kw("tag") {
                r.tag = Some(p.string("tag")?.0);
            } else if p.eat_kw("disable") {
                r.disabled = true;
            } else {
                return p.err(format!(
                    "syntax error: unknown redirect option {}",
                    p.tok().describe()
                ));
            }
            Ok(())
        })?;
        self.out.config.redirects.push(r);
        Ok(())
    }

    // ---- relays ----------------------------------------------------------------------------

    pub(super) fn relay(&mut self, span: Span) -> R<()> {
        let (name, _) = self.string("relay name")?;
        let idx = self.out.config.relays.len();
        let mut r = RelayConfig {
            name,
            listen: Vec::new(),
            forwards: Vec::new(),
            transparent: false,
            protocol: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            proxy_protocol: None,
            disabled: false,
            span,
        };
        self.block(&mut |p| {
            if p.eat_kw("listen") {
                let l = p.listen(true)?;
                r.listen.push(l);
            } else if p.is_kw("forward") || p.is_kw("transparent") {
                if p.eat_kw("transparent") {
                    r.transparent = true;
                }
                p.expect_kw("forward")?;
                let tls = if p.eat_kw("with") {
                    if !(p.eat_kw("tls") || p.eat_kw("ssl")) {
                        return p.unexpected("'tls'");
                    }
                    true
                } else {
                    false
                };
                p.expect_kw("to")?;
                let slot = r.forwards.len();
                let has_address = r
                    .forwards
                    .iter()
                    .any(|f| matches!(f.target, RelayTarget::Address { .. }));
                let target = if *p.tok() == Tok::LAngle {
                    let start = p.uses_len();
                    p.table_use(Owner::Relay(idx, slot))?;
                    let t = p.use_name(start);
                    RelayTarget::Table(t)
                } else if p.eat_kw("destination") {
                    RelayTarget::Destination
                } else if p.is_kw("nat") {
                    p.bump();
                    p.expect_kw("lookup")?;
                    RelayTarget::NatLookup
                } else {
                    if has_address {
                        return p.err(format!(
                            "relay {} target or redirection already specified",
                            r.name
                        ));
                    }
                    let (a, _) = p.string("forward address")?;
                    let mut t = RelayTarget::Address {
                        addr: Address::parse(&a),
                        port: None,
                        retry: 0,
                        inet: false,
                        inet6: None,
                    };
                    while !p.at_end_of_statement() {
                        let RelayTarget::Address {
                            port,
                            retry,
                            inet,
                            inet6,
                            ..
                        } = &mut t
                        else {
                            break;
                        };
                        if p.eat_kw("port") {
                            *port = Some(p.port()?);
                        } else if p.eat_kw("retry") {
                            *retry = p.num_u32("retry", 0, i32::MAX as u32)?;
                        } else if p.eat_kw("inet") {
                            *inet = true;
                        } else if p.eat_kw("inet6") {
                            *inet6 = Some(p.prefix()?);
                        } else if p.eat_kw("proxy-protocol") {
                            r.proxy_protocol = Some(p.proxy_version()?);
                        } else {
                            return p
                                .err(format!("syntax error: unexpected {}", p.tok().describe()));
                        }
                    }
                    t
                };
                if matches!(target, RelayTarget::Destination | RelayTarget::NatLookup) {
                    // Only `retry` and the table options make sense here; accept retry.
                    if p.eat_kw("retry") {
                        p.num_u32("retry", 0, i32::MAX as u32)?;
                    }
                }
                r.forwards.push(RelayForward { target, tls });
            } else if p.eat_kw("protocol") {
                if r.protocol.is_some() {
                    return p.err("more than one protocol specified");
                }
                r.protocol = Some(p.string("protocol name")?.0);
            } else if p.is_kw("route") {
                return p.err("no route for relays");
            } else if p.eat_kw("session") {
                p.expect_kw("timeout")?;
                r.session_timeout = p.seconds("session timeout")?;
            } else if p.eat_kw("proxy-protocol") {
                r.proxy_protocol = Some(p.proxy_version()?);
            } else if p.eat_kw("disable") {
                r.disabled = true;
            } else {
                return p.err(format!(
                    "syntax error: unknown relay option {}",
                    p.tok().describe()
                ));
            }
            Ok(())
        })?;
        self.out.config.relays.push(r);
        Ok(())
    }

    fn uses_len(&self) -> usize {
        self.out.uses.len()
    }

    fn use_name(&self, idx: usize) -> String {
        self.out
            .uses
            .get(idx)
            .map(|u| u.table.clone())
            .unwrap_or_default()
    }

    fn proxy_version(&mut self) -> R<ProxyProtocol> {
        if self.eat_kw("v1") {
            Ok(ProxyProtocol::V1)
        } else if self.eat_kw("v2") {
            Ok(ProxyProtocol::V2)
        } else {
            self.unexpected("'v1' or 'v2'")
        }
    }

    // ---- protocols -------------------------------------------------------------------------

    pub(super) fn protocol(&mut self, kind: ProtocolKind, span: Span) -> R<()> {
        let (name, _) = self.string("protocol name")?;
        let mut pr = ProtocolConfig {
            name,
            kind,
            tcp: TcpOptions::default(),
            tls: TlsOptions::default(),
            http: HttpOptions::default(),
            return_error: None,
            rules: Vec::new(),
            span,
        };
        // parse.y `protopts_n`: the body is optional (`dns protocol "d"` alone is whole).
        let has_body = *self.tok() == Tok::LBrace;
        let mut body = |p: &mut Self| {
            // parse.y protoptsl: tcp and tls options only for tcp or http protocols, http
            // options only for http (a dns relay has neither).
            let tcp_or_http = matches!(kind, ProtocolKind::Tcp | ProtocolKind::Http);
            if p.is_kw("tcp") {
                if !tcp_or_http {
                    return p.err("can set tcp options only for tcp or http protocols");
                }
                p.bump();
                p.option_list(&mut |p| p.tcp_option(&mut pr.tcp))
            } else if p.is_kw("tls") || p.is_kw("ssl") {
                if !tcp_or_http {
                    return p.err("can set tls options only for tcp or http protocols");
                }
                p.bump();
                p.option_list(&mut |p| p.tls_option(&mut pr.tls))
            } else if p.is_kw("http") {
                if kind != ProtocolKind::Http {
                    return p.err("can set http options only for http protocol");
                }
                p.bump();
                p.option_list(&mut |p| p.http_option(&mut pr.http))
            } else if p.eat_kw("return") {
                p.expect_kw("error")?;
                let style = if p.eat_kw("style") {
                    Some(p.string("style")?.0)
                } else {
                    None
                };
                pr.return_error = Some(style);
                Ok(())
            } else if p.is_kw("block") || p.is_kw("pass") || p.is_kw("match") {
                let rule = p.filter_rule()?;
                pr.rules.push(rule);
                Ok(())
            } else {
                p.err(format!(
                    "syntax error: unknown protocol option {}",
                    p.tok().describe()
                ))
            }
        };
        if has_body {
            self.block(&mut body)?;
        }
        if !pr.tls.tlsv1_2 && !pr.tls.tlsv1_3 {
            self.diags.push(Diagnostic::error(
                &pr.span,
                Reject::Conflict,
                "invalid TLS protocol",
            ));
        }
        self.out.config.protocols.push(pr);
        Ok(())
    }

    /// `{ opt, opt ... }` or a single `opt`.
    fn option_list(&mut self, opt: &mut dyn FnMut(&mut Self) -> R<()>) -> R<()> {
        if *self.tok() == Tok::LBrace {
            self.block(opt)
        } else {
            opt(self)
        }
    }

    fn tcp_option(&mut self, t: &mut TcpOptions) -> R<()> {
        let no = self.eat_kw("no");
        if self.eat_kw("nodelay") {
            t.nodelay = !no;
        } else if self.eat_kw("sack") {
            t.sack = !no;
        } else if self.eat_kw("splice") {
            t.splice = !no;
        } else if no {
            return self.unexpected("'nodelay', 'sack' or 'splice'");
        } else if self.eat_kw("backlog") {
            // relayd RELAY_MAX_BACKLOG.
            t.backlog = self.num_u32("backlog", 1, 512)?;
        } else if self.eat_kw("socket") {
            self.expect_kw("buffer")?;
            t.socket_buffer = Some(self.num_u32("socket buffer", 1, i32::MAX as u32)?);
        } else if self.eat_kw("ip") {
            if self.eat_kw("ttl") {
                t.ip_ttl = Some(self.num_u8("ip ttl", 1, 255)?);
            } else {
                self.expect_kw("minttl")?;
                t.ip_minttl = Some(self.num_u8("ip minttl", 1, 255)?);
            }
        } else {
            return self.err(format!(
                "syntax error: unknown tcp option {}",
                self.tok().describe()
            ));
        }
        Ok(())
    }

    fn tls_option(&mut self, t: &mut TlsOptions) -> R<()> {
        let no = self.eat_kw("no");
        if self.eat_kw("client-renegotiation") {
            t.client_renegotiation = !no;
        } else if self.eat_kw("cipher-server-preference") {
            t.cipher_server_preference = !no;
        } else if self.eat_kw("session") {
            // `session tickets`; the 2013 `session cache N|disable` is accepted and ignored.
            if self.eat_kw("cache") {
                if !self.eat_kw("disable") {
                    self.number("session cache", 0, u64::from(u32::MAX))?;
                }
            } else {
                self.expect_kw("tickets")?;
                t.session_tickets = !no;
            }
        } else if self.eat_kw("tlsv1.2") {
            t.tlsv1_2 = !no;
        } else if self.eat_kw("tlsv1.3") {
            t.tlsv1_3 = !no;
        } else if self.eat_kw("tlsv1") {
            // relayd 1.224: `tlsv1` means all TLSv1.x versions it supports.
            t.tlsv1_2 = !no;
            t.tlsv1_3 = !no;
        } else if self.eat_kw("sslv3")
            || self.eat_kw("sslv2")
            || self.eat_kw("tlsv1.0")
            || self.eat_kw("tlsv1.1")
        {
            // Accepted and ignored, as relayd 1.224 does.
        } else if self.eat_kw("edh") {
            t.edh = if no {
                None
            } else if self.eat_kw("params") {
                Some(self.string("edh params")?.0)
            } else {
                Some("auto".into())
            };
        } else if no {
            return self.unexpected("a tls option that takes 'no'");
        } else if self.eat_kw("ca") {
            if self.eat_kw("cert") {
                t.ca_cert = Some(self.string("ca cert path")?.0);
            } else if self.eat_kw("file") {
                t.ca_file = Some(self.string("ca file path")?.0);
            } else {
                self.expect_kw("key")?;
                let (k, _) = self.string("ca key path")?;
                let pw = if self.eat_kw("password") {
                    Some(self.string("password")?.0)
                } else {
                    None
                };
                t.ca_key = Some((k, pw));
            }
        } else if self.eat_kw("ciphers") {
            t.ciphers = Some(self.string("ciphers")?.0);
        } else if self.eat_kw("client") {
            self.expect_kw("ca")?;
            t.client_ca = Some(self.string("client ca path")?.0);
        } else if self.eat_kw("ecdhe") {
            t.ecdhe = Some(self.string("ecdhe curves")?.0);
        } else if self.eat_kw("keypair") {
            let (name, _) = self.string("keypair name")?;
            let mut k = Keypair {
                name,
                cert: None,
                key: None,
                ocsp: None,
            };
            loop {
                if self.eat_kw("cert") {
                    k.cert = Some(self.string("cert path")?.0);
                } else if self.eat_kw("key") {
                    k.key = Some(self.string("key path")?.0);
                } else if self.eat_kw("ocsp") {
                    k.ocsp = Some(self.string("ocsp path")?.0);
                } else {
                    break;
                }
            }
            t.keypairs.push(k);
        } else {
            return self.err(format!(
                "syntax error: unknown tls option {}",
                self.tok().describe()
            ));
        }
        Ok(())
    }

    fn http_option(&mut self, h: &mut HttpOptions) -> R<()> {
        let no = self.eat_kw("no");
        if self.eat_kw("websockets") {
            h.websockets = !no;
        } else if !no && self.eat_kw("headerlen") {
            // relayd RELAY_MAXHEADERLENGTH.
            h.headerlen = self.num_u32("headerlen", 0, 131072)?;
        } else {
            return self.err(format!(
                "syntax error: unknown http option {}",
                self.tok().describe()
            ));
        }
        Ok(())
    }

    // ---- routers ---------------------------------------------------------------------------

    pub(super) fn router(&mut self, span: Span) -> R<()> {
        let (name, _) = self.string("router name")?;
        let idx = self.out.config.routers.len();
        let mut r = RouterConfig {
            name,
            routes: Vec::new(),
            table: String::new(),
            rtable: None,
            rtlabel: None,
            span,
        };
        let mut forwards = 0;
        self.block(&mut |p| {
            if p.eat_kw("route") {
                let pf = p.prefix()?;
                if r.routes
                    .first()
                    .is_some_and(|f| f.addr.is_ipv4() != pf.addr.is_ipv4())
                {
                    return p.err(format!("router {} address family mismatch", r.name));
                }
                r.routes.push(pf);
            } else if p.eat_kw("forward") {
                p.expect_kw("to")?;
                forwards += 1;
                if forwards > 1 {
                    return p.err(format!("router {} table already specified", r.name));
                }
                p.table_use(Owner::Router(idx))?;
            } else if p.eat_kw("rtable") {
                if r.rtable.is_some() {
                    return p.err(format!("router {} rtable already specified", r.name));
                }
                r.rtable = Some(p.num_u32("rtable", 0, 255)?);
            } else if p.eat_kw("rtlabel") {
                r.rtlabel = Some(p.string("rtlabel")?.0);
            } else {
                return p.err(format!(
                    "syntax error: unknown router option {}",
                    p.tok().describe()
                ));
            }
            Ok(())
        })?;
        self.out.config.routers.push(r);
        Ok(())
    }
}

/// RFC 1035 / RFC 6895 rcode mnemonics, or a number 0..=15.
fn dns_rcode(s: &str) -> Option<u8> {
    const NAMES: [&str; 11] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
        "NXRRSET", "NOTAUTH", "NOTZONE",
    ];
    let up = s.to_ascii_uppercase();
    if let Some(i) = NAMES.iter().position(|n| *n == up) {
        return u8::try_from(i).ok();
    }
    s.parse::<u8>().ok().filter(|n| *n <= 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_as_relayd_builds_them() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e (RFC 1321 A.5), read as big-endian words.
        assert_eq!(
            hash_key(""),
            Ok(HashKey::Key([
                0xd41d_8cd9,
                0x8f00_b204,
                0xe980_0998,
                0xecf8_427e
            ]))
        );
        assert_eq!(
            hash_key("0x0123456789abcdef0123456789ABCDEF"),
            Ok(HashKey::Key([
                0x0123_4567,
                0x89ab_cdef,
                0x0123_4567,
                0x89ab_cdef
            ]))
        );
        assert_eq!(
            hash_key("0x0102"),
            Err("hex key must be 128 bits (32 hex digits) long")
        );
        assert_eq!(
            hash_key("0x0123456789abcdef0123456789abcdeg"),
            Err("invalid hex key")
        );
    }

    #[test]
    fn hex_bytes_needs_even_nonempty_hex() {
        assert_eq!(hex_bytes("00ff10"), Some(vec![0, 0xff, 0x10]));
        assert_eq!(hex_bytes(""), None);
        assert_eq!(hex_bytes("abc"), None);
        assert_eq!(hex_bytes("zz"), None);
        // Multi-byte characters never split a byte boundary into a panic.
        assert_eq!(hex_bytes("é0"), None);
    }
}
