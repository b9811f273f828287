//! HTTP filter rules (relayd.conf.5 1.224 "Filter rules", parse.y `filterrule`, `ruleopts`):
//! `(block|pass|match) [request|response] [quick] [inet|inet6] [from A[/len]] [to A[/len]]
//! OPTIONS...`, parsed into [`FilterRule`] data and checked as relayd checks them.

use super::*;

/// relayd `http_methods` names (http.h) accepted by `method`.
const METHODS: &[&str] = &[
    "ACL",
    "BASELINE-CONTROL",
    "BIND",
    "CHECKIN",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LABEL",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MKREDIRECTREF",
    "MKWORKSPACE",
    "MOVE",
    "OPTIONS",
    "ORDERPATCH",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PUT",
    "REBIND",
    "REPORT",
    "SEARCH",
    "TRACE",
    "UNBIND",
    "UNCHECKOUT",
    "UNLINK",
    "UNLOCK",
    "UPDATE",
    "UPDATEREDIRECTREF",
    "VERSION-CONTROL",
];

/// Words that start the next rule option, so they are never taken as a key.
const OPTION_WORDS: &[&str] = &[
    "method", "cookie", "header", "path", "query", "url", "forward", "tag", "tagged", "label",
    "no", "file", "value",
];

impl Parser<'_> {
    fn rule_word(&mut self, words: &mut Vec<String>, what: &str) -> R<String> {
        let (w, _) = self.string(what)?;
        words.push(w.clone());
        Ok(w)
    }

    fn rule_kw(&mut self, words: &mut Vec<String>, kw: &str) -> bool {
        if self.eat_kw(kw) {
            words.push(kw.to_string());
            true
        } else {
            false
        }
    }

    fn rule_prefix(&mut self, words: &mut Vec<String>) -> R<Prefix> {
        let p = self.prefix()?;
        words.push(format!("{}/{}", p.addr, p.len));
        Ok(p)
    }

    pub(super) fn filter_rule(&mut self) -> R<FilterRule> {
        let action = if self.eat_kw("block") {
            RuleAction::Block
        } else if self.eat_kw("pass") {
            RuleAction::Pass
        } else {
            self.expect_kw("match")?;
            RuleAction::Match
        };
        // parse.y `dir`: a rule without a direction applies to requests.
        let dir = if self.eat_kw("response") {
            RuleDir::Response
        } else {
            self.eat_kw("request");
            RuleDir::Request
        };
        let quick = self.eat_kw("quick");
        let mut w = Vec::new();
        let mut r = FilterRule {
            action,
            dir,
            quick,
            inet6: None,
            from: None,
            to: None,
            method: None,
            kvs: Vec::new(),
            forward_to: None,
            tag: None,
            tagged: None,
            label: None,
            file: None,
            words: Vec::new(),
        };
        if self.rule_kw(&mut w, "inet") {
            r.inet6 = Some(false);
        } else if self.rule_kw(&mut w, "inet6") {
            r.inet6 = Some(true);
        }
        let span = self.span();
        if self.rule_kw(&mut w, "from") {
            r.from = Some(self.rule_prefix(&mut w)?);
        }
        if self.rule_kw(&mut w, "to") {
            r.to = Some(self.rule_prefix(&mut w)?);
        }
        // parse.y: "address family mismatch" between inet/inet6, from and to.
        let fams: Vec<bool> = r
            .inet6
            .into_iter()
            .chain(r.from.map(|p| p.addr.is_ipv6()))
            .chain(r.to.map(|p| p.addr.is_ipv6()))
            .collect();
        if fams.windows(2).any(|f| f.first() != f.get(1)) {
            return Err(Diagnostic::error(
                &span,
                Reject::Conflict,
                "address family mismatch",
            ));
        }
        while !self.at_end_of_statement() {
            let span = self.span();
            if self.rule_kw(&mut w, "method") {
                let m = self.rule_word(&mut w, "method name")?;
                if !METHODS.contains(&m.as_str()) {
                    return Err(Diagnostic::error(
                        &span,
                        Reject::Range,
                        "unknown HTTP method currently not supported",
                    ));
                }
                r.method = Some(m);
            } else if let Some(kind) = self.kv_type(&mut w) {
                let kv = self.rule_kv(kind, &mut w, &span)?;
                r.kvs.push(kv);
            } else if self.rule_kw(&mut w, "forward") {
                if !self.rule_kw(&mut w, "to") {
                    return self.unexpected("'to'");
                }
                let (t, _) = self.table_name()?;
                w.push(format!("<{t}>"));
                self.out.mentioned.push(t.clone());
                self.out.rule_tables.push((t.clone(), span));
                r.forward_to = Some(t);
            } else if self.rule_kw(&mut w, "tagged") {
                if r.tagged.is_some() {
                    return self.err("tagged already defined");
                }
                r.tagged = Some(self.rule_word(&mut w, "tag")?);
            } else if self.rule_kw(&mut w, "tag") {
                if r.tag.is_some() {
                    return self.err("tag already defined");
                }
                r.tag = Some(Setting::Set(self.rule_word(&mut w, "tag")?));
            } else if self.rule_kw(&mut w, "label") {
                if r.label.is_some() {
                    return self.err("label already defined");
                }
                r.label = Some(Setting::Set(self.rule_word(&mut w, "label")?));
            } else if self.rule_kw(&mut w, "no") {
                if self.rule_kw(&mut w, "tag") {
                    r.tag = Some(Setting::Clear);
                } else if self.rule_kw(&mut w, "label") {
                    r.label = Some(Setting::Clear);
                } else {
                    return self.unexpected("'tag' or 'label'");
                }
            } else if self.rule_kw(&mut w, "file") {
                if r.file.is_some() {
                    return self.err("only one file per rule supported");
                }
                r.file = Some(self.rule_word(&mut w, "file path")?);
                if self.rule_kw(&mut w, "value") {
                    let v = self.rule_word(&mut w, "value")?;
                    if let Some(kv) = r.kvs.last_mut() {
                        kv.value = Some(v);
                    }
                }
            } else {
                return self.err(format!(
                    "syntax error: unknown filter rule option {}",
                    self.tok().describe()
                ));
            }
        }
        r.words = w;
        Ok(r)
    }

    fn kv_type(&mut self, w: &mut Vec<String>) -> Option<KvType> {
        for (kw, t) in [
            ("cookie", KvType::Cookie),
            ("header", KvType::Header),
            ("path", KvType::Path),
            ("query", KvType::Query),
            ("url", KvType::Url),
        ] {
            if self.rule_kw(w, kw) {
                return Some(t);
            }
        }
        None
    }

    /// After `TYPE`: `[append|set|remove|hash|log] [[pattern] KEY | digest KEY]
    /// [value [pattern] VALUE]`, or `path strip N`.
    fn rule_kv(&mut self, kind: KvType, w: &mut Vec<String>, span: &Span) -> R<RuleKv> {
        let mut kv = RuleKv {
            kind,
            action: KvAction::None,
            key: None,
            digest: false,
            key_pattern: false,
            value: None,
            value_pattern: false,
        };
        if kind == KvType::Path && self.rule_kw(w, "strip") {
            let (n, _) = self.number("strip number", 0, i32::MAX as u64)?;
            w.push(n.to_string());
            kv.action = KvAction::Strip;
            kv.value = Some(n.to_string());
            return Ok(kv);
        }
        for (kw, a) in [
            ("append", KvAction::Append),
            ("set", KvAction::Set),
            ("remove", KvAction::Remove),
            ("hash", KvAction::Hash),
            ("log", KvAction::Log),
        ] {
            if self.rule_kw(w, kw) {
                kv.action = a;
                break;
            }
        }
        if matches!(kind, KvType::Query | KvType::Url)
            && matches!(
                kv.action,
                KvAction::Append | KvAction::Set | KvAction::Remove
            )
        {
            let t = if kind == KvType::Query {
                "query"
            } else {
                "url"
            };
            return Err(Diagnostic::error(
                span,
                Reject::Conflict,
                format!("combining {t} type and the given option is not supported"),
            ));
        }
        if kind == KvType::Url && self.rule_kw(w, "digest") {
            let (d, dspan) = self.string("digest")?;
            w.push(d.clone());
            if !(d.len() == 32 || d.len() == 40) {
                return self.range_err(&dspan, "invalid http digest");
            }
            kv.digest = true;
            kv.key = Some(d);
        } else {
            kv.key_pattern = self.rule_kw(w, "pattern");
            let key = match self.tok().clone() {
                Tok::Str(s) => Some(s),
                Tok::Word(s) if !OPTION_WORDS.contains(&s.as_str()) => Some(s),
                _ => None,
            };
            if let Some(k) = key {
                self.bump();
                w.push(k.clone());
                kv.key = Some(k);
            } else if kv.key_pattern {
                return self.unexpected("a pattern");
            }
        }
        if self.rule_kw(w, "value") {
            kv.value_pattern = self.rule_kw(w, "pattern");
            kv.value = Some(self.rule_word(w, "value")?);
        } else if kv.key.is_some() {
            kv.value = Some("*".into());
        }
        Ok(kv)
    }
}
