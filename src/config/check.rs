//! The cross-reference pass (relayd `parse.y`: the checks at the end of each block and in
//! `load_config`): table instantiation as `name:port`, host ids, undefined and unused names,
//! duplicates, timeouts against intervals, forwarding modes, carp and pfsync consistency.

use std::collections::{HashMap, HashSet};

use super::model::*;
use super::parser::{Owner, Parsed, TableDef};
use super::{Diagnostic, Reject, Span};

fn err(span: &Span, kind: Reject, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(span, kind, msg)
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Reports names defined more than once (the first definition wins).
fn duplicates<'a>(
    what: &str,
    items: impl Iterator<Item = (&'a str, &'a Span)>,
    out: &mut Vec<Diagnostic>,
) {
    let mut seen = HashSet::new();
    for (name, span) in items {
        if !seen.insert(name) {
            out.push(err(
                span,
                Reject::Duplicate,
                format!("{what} {name} defined twice"),
            ));
        }
    }
}

/// Validates `parsed` and returns the final configuration with the diagnostics (errors and
/// warnings) of this pass.
pub fn check(parsed: Parsed) -> (Config, Vec<Diagnostic>) {
    let Parsed {
        mut config,
        table_defs,
        uses,
        interval_span,
        timeout_span,
        maglev_span,
        broken,
        mentioned,
    } = parsed;
    let mut d = Vec::new();
    let g = &config.global;

    // Global interval and timeout (relayd: the check timeout must be below the interval).
    if g.timeout >= g.interval {
        let span = timeout_span
            .or(interval_span.clone())
            .unwrap_or_else(|| first_span(&table_defs));
        d.push(err(
            &span,
            Reject::Range,
            format!(
                "global timeout {}ms must be less than the interval {}s",
                g.timeout.as_millis(),
                g.interval.as_secs()
            ),
        ));
    }
    if let Some(span) = &maglev_span
        && !is_prime(g.maglev_table_size)
    {
        d.push(err(
            span,
            Reject::Range,
            format!("maglev table size {} is not prime", g.maglev_table_size),
        ));
    }

    duplicates(
        "table",
        table_defs.iter().map(|t| (t.name.as_str(), &t.span)),
        &mut d,
    );
    duplicates(
        "redirect",
        config.redirects.iter().map(|r| (r.name.as_str(), &r.span)),
        &mut d,
    );
    duplicates(
        "relay",
        config.relays.iter().map(|r| (r.name.as_str(), &r.span)),
        &mut d,
    );
    duplicates(
        "protocol",
        config.protocols.iter().map(|r| (r.name.as_str(), &r.span)),
        &mut d,
    );
    duplicates(
        "router",
        config.routers.iter().map(|r| (r.name.as_str(), &r.span)),
        &mut d,
    );
    duplicates(
        "carp interface",
        config.carp.iter().map(|r| (r.name.as_str(), &r.span)),
        &mut d,
    );
    duplicates(
        "interface",
        config.interfaces.iter().map(|r| (r.name.as_str(), &r.span)),
        &mut d,
    );
    duplicates(
        "group",
        config.groups.iter().map(|r| (r.name.as_str(), &r.span)),
        &mut d,
    );

    // Groups that exist for `demote GROUP`: declared ones and those named in carp blocks.
    let mut groups: HashSet<String> = config.groups.iter().map(|g| g.name.clone()).collect();
    groups.extend(config.carp.iter().flat_map(|c| c.groups.iter().cloned()));
    // carp(4) puts every carp interface in the group "carp".
    if !config.carp.is_empty() {
        groups.insert("carp".into());
    }

    // Host ids are allocated in source order, as relayd's parser does (`last_host_id`): each
    // host of a `table` definition takes one, and each new `name:port` copy takes fresh ones
    // (parse.y `table_inherit`). The copies are what the health checks and relayctl see.
    let mut next_id = 1u32;
    let mut def_ids: Vec<u32> = vec![0; table_defs.len()];
    let mut next_def = 0usize;
    let mut alloc_defs_before = |seq: usize, next_id: &mut u32| {
        while let Some(t) = table_defs.get(next_def)
            && t.seq < seq
        {
            if let Some(slot) = def_ids.get_mut(next_def) {
                *slot = *next_id;
            }
            *next_id = next_id.saturating_add(u32::try_from(t.hosts.len()).unwrap_or(u32::MAX));
            next_def += 1;
        }
    };
    let mut def_used = vec![false; table_defs.len()];
    let global_interval = config.global.interval;

    for u in &uses {
        alloc_defs_before(u.seq, &mut next_id);
        let Some(di) = table_defs.iter().position(|t| t.name == u.table) else {
            d.push(err(
                &u.span,
                Reject::Undefined,
                format!("no such table: {}", u.table),
            ));
            continue;
        };
        let Some(def) = table_defs.get(di) else {
            continue;
        };
        let (kind_redirect, kind_relay, listen_port) = match u.owner {
            Owner::Redirect(i, _) => (
                true,
                false,
                config
                    .redirects
                    .get(i)
                    .and_then(|r| r.listen.first())
                    .map(|l| l.port.lo),
            ),
            Owner::Relay(i, _) => (
                false,
                true,
                config
                    .relays
                    .get(i)
                    .and_then(|r| r.listen.first())
                    .map(|l| l.port.lo),
            ),
            Owner::Router(_) => (false, false, None),
        };
        let port = u.opts.port.or(listen_port);
        let name = match port {
            Some(p) => format!("{}:{}", def.name, p),
            None => def.name.clone(),
        };
        let mode = match &u.opts.mode {
            Some((m, span)) => {
                match m {
                    Mode::LeastStates if !kind_redirect => d.push(err(
                        span,
                        Reject::Conflict,
                        "mode least-states is only valid for redirects",
                    )),
                    Mode::Loadbalance(_) | Mode::Hash(_) if !kind_relay => d.push(err(
                        span,
                        Reject::Conflict,
                        "mode loadbalance and hash are only valid for relays",
                    )),
                    _ => {}
                }
                *m
            }
            None => Mode::RoundRobin,
        };
        let timeout = u.opts.timeout.unwrap_or(def.timeout);
        let interval = u.opts.interval.unwrap_or(def.interval);
        if timeout >= interval {
            d.push(err(
                &u.span,
                Reject::Range,
                format!(
                    "table {name}: timeout {}ms must be less than the interval {}s",
                    timeout.as_millis(),
                    interval.as_secs()
                ),
            ));
        }
        if u.opts.interval.is_some()
            && global_interval.as_secs() > 0
            && interval.as_secs() % global_interval.as_secs() != 0
        {
            d.push(err(
                &u.span,
                Reject::Range,
                "table interval must be divisible by global interval",
            ));
        }
        if let Some(g) = &u.opts.demote
            && !groups.contains(g)
        {
            d.push(err(
                &u.span,
                Reject::Undefined,
                format!("demote group {g} is not defined"),
            ));
        }
        if let Some(f) = def_used.get_mut(di) {
            *f = true;
        }
        let base_id = next_id;
        next_id = next_id.saturating_add(u32::try_from(def.hosts.len()).unwrap_or(u32::MAX));
        let tc = TableConfig {
            name: name.clone(),
            base: def.name.clone(),
            port,
            check: u.opts.check.clone().unwrap_or(Check::None),
            timeout,
            interval,
            demote: u.opts.demote.clone(),
            mode,
            disabled: def.disabled,
            hosts: hosts_of(def, base_id),
        };
        match config.tables.iter().find(|t| t.name == name) {
            Some(existing) => {
                let same = existing.check == tc.check
                    && existing.timeout == tc.timeout
                    && existing.interval == tc.interval
                    && existing.demote == tc.demote
                    && existing.mode == tc.mode;
                if !same {
                    d.push(err(
                        &u.span,
                        Reject::Conflict,
                        format!("table {name} used twice with different options"),
                    ));
                }
                // relayd finds the existing copy before copying hosts: no ids are used up.
                next_id = base_id;
            }
            None => config.tables.push(tc),
        }
        match u.owner {
            Owner::Redirect(i, slot) => {
                if let Some(s) = config
                    .redirects
                    .get_mut(i)
                    .and_then(|r| r.tables.get_mut(slot))
                {
                    *s = name;
                }
            }
            Owner::Relay(i, slot) => {
                if let Some(f) = config
                    .relays
                    .get_mut(i)
                    .and_then(|r| r.forwards.get_mut(slot))
                {
                    f.target = RelayTarget::Table(name);
                }
            }
            Owner::Router(i) => {
                if let Some(r) = config.routers.get_mut(i) {
                    r.table = name;
                }
            }
        }
    }
    for (i, (t, used)) in table_defs.iter().zip(&def_used).enumerate() {
        let first_of_name = table_defs.iter().position(|o| o.name == t.name) == Some(i);
        if !used && first_of_name && !mentioned.contains(&t.name) {
            d.push(Diagnostic::warning(
                &t.span,
                Reject::Unused,
                format!("unused table: {}", t.name),
            ));
        }
    }

    alloc_defs_before(usize::MAX, &mut next_id);
    resolve_parents(&mut config, &table_defs, &def_ids, &mut d);

    check_redirects(&config, &broken, &mut d);
    check_relays(&mut config, &broken, &mut d);
    check_routers(&config, &broken, &mut d);
    check_carpio(&config, &broken, &mut d);
    (config, d)
}

fn first_span(defs: &[TableDef]) -> Span {
    defs.first().map(|t| t.span.clone()).unwrap_or(Span {
        file: "".into(),
        line: 0,
        col: 0,
    })
}

/// `parent N` names a host id as numbered in the definitions. In each copy it is resolved to
/// the copy of that host in the copy of its table with the same port (or else the first copy
/// of its table), so the health engine finds a host that is really checked. An id that is
/// already a copy's id is kept.
fn resolve_parents(
    config: &mut Config,
    defs: &[TableDef],
    def_ids: &[u32],
    d: &mut Vec<Diagnostic>,
) {
    let copy_ids: HashSet<u32> = config.hosts().map(|h| h.id).collect();
    // (template table name, host index) for a definition-numbered id.
    let template = |p: u32| -> Option<(&str, usize)> {
        defs.iter().zip(def_ids).find_map(|(t, &base)| {
            let k = usize::try_from(p.checked_sub(base)?).ok()?;
            (k < t.hosts.len()).then_some((t.name.as_str(), k))
        })
    };
    let mut reported = HashSet::new();
    let mut changes = Vec::new();
    for (ti, t) in config.tables.iter().enumerate() {
        for (hi, h) in t.hosts.iter().enumerate() {
            let Some(p) = h.parent else { continue };
            let resolved = match template(p) {
                Some((name, k)) => config
                    .tables
                    .iter()
                    .find(|c| c.base == name && c.port == t.port)
                    .or_else(|| config.tables.iter().find(|c| c.base == name))
                    .and_then(|c| c.hosts.get(k))
                    .map(|c| c.id),
                None if copy_ids.contains(&p) => Some(p),
                None => None,
            };
            match resolved {
                Some(id) => changes.push((ti, hi, id)),
                None => {
                    if reported.insert(p) {
                        let span = defs
                            .iter()
                            .flat_map(|t| t.hosts.iter())
                            .find(|h| h.parent == Some(p))
                            .map(|h| h.span.clone());
                        if let Some(span) = span {
                            d.push(err(
                                &span,
                                Reject::Undefined,
                                format!("parent host id {p} does not exist"),
                            ));
                        }
                    }
                }
            }
        }
    }
    for (ti, hi, id) in changes {
        if let Some(h) = config.tables.get_mut(ti).and_then(|t| t.hosts.get_mut(hi)) {
            h.parent = Some(id);
        }
    }
}

fn hosts_of(def: &TableDef, base_id: u32) -> Vec<HostConfig> {
    def.hosts
        .iter()
        .zip(base_id..)
        .map(|(h, id)| HostConfig {
            id,
            addr: h.addr.clone(),
            retry: h.retry,
            parent: h.parent,
            priority: h.priority,
            ip_ttl: h.ip_ttl,
        })
        .collect()
}

fn check_redirects(config: &Config, broken: &[Span], d: &mut Vec<Diagnostic>) {
    for r in &config.redirects {
        if r.listen.is_empty() && !broken.contains(&r.span) {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("redirect {} has no listen on", r.name),
            ));
        }
        if r.tables.is_empty() && !broken.contains(&r.span) {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("redirect {} has no forward to", r.name),
            ));
        }
        if r.tables.len() > 2 {
            d.push(err(
                &r.span,
                Reject::Range,
                format!(
                    "redirect {} has more than two tables (main and backup)",
                    r.name
                ),
            ));
        }
    }
}

fn check_relays(config: &mut Config, broken: &[Span], d: &mut Vec<Diagnostic>) {
    // A relay with a dns protocol listens on UDP: the socket type comes from the protocol
    // (relayd F_UDP, spec §5).
    let dns: HashSet<String> = config
        .protocols
        .iter()
        .filter(|p| p.kind == ProtocolKind::Dns)
        .map(|p| p.name.clone())
        .collect();
    for r in &mut config.relays {
        if r.protocol.as_ref().is_some_and(|p| dns.contains(p)) {
            for l in &mut r.listen {
                l.proto = Proto::Udp;
            }
        }
    }
    for r in &config.relays {
        if r.listen.is_empty() && !broken.contains(&r.span) {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("relay {} has no listen on", r.name),
            ));
        }
        if r.forwards.is_empty() && !broken.contains(&r.span) {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("relay {} has no forward to", r.name),
            ));
        }
        let proto = match &r.protocol {
            Some(p) => match config.protocol(p) {
                Some(pr) => Some(pr),
                None => {
                    d.push(err(
                        &r.span,
                        Reject::Undefined,
                        format!("relay {}: no such protocol: {p}", r.name),
                    ));
                    None
                }
            },
            None => None,
        };
        let tls = r.listen.iter().any(|l| l.tls) || r.forwards.iter().any(|f| f.tls);
        if let Some(pr) = proto {
            if pr.kind == ProtocolKind::Dns && tls {
                // relay_udp.c: UDP with TLS is fatal at config time (spec §5).
                d.push(err(
                    &r.span,
                    Reject::Conflict,
                    format!(
                        "relay {}: tls is not supported with dns protocol {}",
                        r.name, pr.name
                    ),
                ));
            }
            // TLS inspection needs both the CA certificate and key (spec §4.7).
            let inspect = r.listen.iter().any(|l| l.tls)
                && r.forwards
                    .iter()
                    .any(|f| f.tls && f.target == RelayTarget::Destination);
            if inspect && (pr.tls.ca_cert.is_none() || pr.tls.ca_key.is_none()) {
                d.push(err(
                    &r.span,
                    Reject::Conflict,
                    format!(
                        "relay {}: tls inspection needs tls ca cert and tls ca key",
                        r.name
                    ),
                ));
            }
        }
    }
}

fn check_routers(config: &Config, broken: &[Span], d: &mut Vec<Diagnostic>) {
    for r in &config.routers {
        if r.routes.is_empty() && !broken.contains(&r.span) {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("router {} has no route", r.name),
            ));
        }
        if r.table.is_empty() && !broken.contains(&r.span) {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("router {} has no forward to", r.name),
            ));
        }
        let v4 = r.routes.iter().filter(|p| p.addr.is_ipv4()).count();
        if v4 != 0 && v4 != r.routes.len() {
            d.push(err(
                &r.span,
                Reject::Conflict,
                format!(
                    "router {}: routes must all be of one address family",
                    r.name
                ),
            ));
        }
    }
}

fn check_carpio(config: &Config, broken: &[Span], d: &mut Vec<Diagnostic>) {
    for i in &config.interfaces {
        if i.mode.is_some() && i.ingress != Ingress::Afxdp {
            d.push(err(
                &i.span,
                Reject::Conflict,
                format!(
                    "interface {}: mode native|generic only applies to ingress afxdp",
                    i.name
                ),
            ));
        }
    }
    // A vhid may appear once per parent device (ip_carp.c returns EINVAL otherwise).
    let mut vhids: HashMap<(Option<&str>, u8), &str> = HashMap::new();
    for c in &config.carp {
        for n in &c.nodes {
            if let Some(other) = vhids.insert((c.carpdev.as_deref(), n.vhid), c.name.as_str()) {
                d.push(err(
                    &c.span,
                    Reject::Duplicate,
                    format!("{}: vhid {} is already used by {other}", c.name, n.vhid),
                ));
            }
        }
        if c.addresses.is_empty() && !broken.contains(&c.span) {
            d.push(err(
                &c.span,
                Reject::Syntax,
                format!("carp {} has no address", c.name),
            ));
        }
    }
    if let Some(p) = &config.pfsync
        && p.syncdev.is_none()
        && p.syncpeer.is_none()
    {
        d.push(err(
            &p.span,
            Reject::Syntax,
            "pfsync needs syncdev or syncpeer",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::is_prime;

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(2));
        assert!(is_prime(251));
        assert!(!is_prime(65536));
        assert!(!is_prime(1));
        assert!(!is_prime(0));
        assert!(!is_prime(65535));
    }
}
