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

/// Reports names defined more than once (the first definition wins), with relayd's wording.
fn duplicates<'a>(
    items: impl Iterator<Item = (&'a str, &'a Span)>,
    msg: impl Fn(&str) -> String,
    out: &mut Vec<Diagnostic>,
) {
    let mut seen = HashSet::new();
    for (name, span) in items {
        if !seen.insert(name) {
            out.push(err(span, Reject::Duplicate, msg(name)));
        }
    }
}

/// What a table use needs from its owner.
struct OwnerInfo {
    redirect: bool,
    listen_port: Option<u16>,
}

fn owner_info(config: &Config, owner: Owner) -> OwnerInfo {
    let first_port = |l: Option<&ListenConfig>| l.map(|l| l.port.lo);
    match owner {
        Owner::Redirect(i, _) => OwnerInfo {
            redirect: true,
            listen_port: first_port(config.redirects.get(i).and_then(|r| r.listen.first())),
        },
        Owner::Relay(i, _) => OwnerInfo {
            redirect: false,
            listen_port: first_port(config.relays.get(i).and_then(|r| r.listen.first())),
        },
        Owner::Router(_) => OwnerInfo {
            redirect: false,
            listen_port: None,
        },
    }
}

/// Validates `parsed` and returns the final configuration with the diagnostics (errors and
/// warnings) of this pass.
/// `top` is the start of the top-level file, for messages about the file as a whole.
pub fn check(parsed: Parsed, top: &Span) -> (Config, Vec<Diagnostic>) {
    let Parsed {
        mut config,
        table_defs,
        uses,
        interval_span,
        timeout_span,
        maglev_span,
        broken,
        mentioned,
        rule_tables,
    } = parsed;
    let mut d = Vec::new();
    let g = &config.global;
    let file_span = top.clone();

    // load_config: the check timeout must stay below the interval.
    if g.timeout >= g.interval {
        let span = timeout_span
            .or(interval_span)
            .unwrap_or_else(|| file_span.clone());
        d.push(err(&span, Reject::Range, "global timeout exceeds interval"));
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
    // load_config: "no actions, nothing to do". A box that only runs carp (and pfsync) is a
    // carpio configuration too.
    if config.redirects.is_empty()
        && config.relays.is_empty()
        && config.routers.is_empty()
        && config.carp.is_empty()
    {
        d.push(err(&file_span, Reject::Syntax, "no actions, nothing to do"));
    }

    duplicates(
        table_defs.iter().map(|t| (t.name.as_str(), &t.span)),
        |n| format!("table {n} defined twice"),
        &mut d,
    );
    duplicates(
        config.redirects.iter().map(|r| (r.name.as_str(), &r.span)),
        |n| format!("redirection {n} defined twice"),
        &mut d,
    );
    duplicates(
        config.relays.iter().map(|r| (r.name.as_str(), &r.span)),
        |n| format!("relay {n} or listener defined twice"),
        &mut d,
    );
    duplicates(
        config.protocols.iter().map(|r| (r.name.as_str(), &r.span)),
        |n| format!("protocol {n} defined twice"),
        &mut d,
    );
    duplicates(
        config.routers.iter().map(|r| (r.name.as_str(), &r.span)),
        |n| format!("router {n} defined twice"),
        &mut d,
    );
    duplicates(
        config.carp.iter().map(|r| (r.name.as_str(), &r.span)),
        |n| format!("carp interface {n} defined twice"),
        &mut d,
    );
    duplicates(
        config.interfaces.iter().map(|r| (r.name.as_str(), &r.span)),
        |n| format!("interface {n} defined twice"),
        &mut d,
    );
    duplicates(
        config.groups.iter().map(|r| (r.name.as_str(), &r.span)),
        |n| format!("group {n} defined twice"),
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
    // (parse.y `table_inherit`). Only the copies remain: they are what the health checks and
    // relayctl see, and what `parent N` refers to.
    let mut next_id = 1u32;
    let mut next_def = 0usize;
    let mut alloc_defs_before = |seq: usize, next_id: &mut u32| {
        while let Some(t) = table_defs.get(next_def)
            && t.seq < seq
        {
            *next_id = next_id.saturating_add(u32::try_from(t.hosts.len()).unwrap_or(u32::MAX));
            next_def += 1;
        }
    };
    let mut def_used = vec![false; table_defs.len()];
    let global_interval = config.global.interval;

    for u in &uses {
        alloc_defs_before(u.seq, &mut next_id);
        let Some((di, def)) = table_defs
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == u.table)
        else {
            d.push(err(
                &u.span,
                Reject::Undefined,
                format!("no such table: {}", u.table),
            ));
            continue;
        };
        let owner = owner_info(&config, u.owner);
        let port = u.opts.port.or(owner.listen_port);
        if port.is_none() && !matches!(u.owner, Owner::Router(_)) {
            // parse.y `table_inherit`: no `port` and no listener to take it from.
            d.push(err(&u.span, Reject::Syntax, "invalid port"));
        }
        let name = match port {
            Some(p) => format!("{}:{}", def.name, p),
            None => def.name.clone(),
        };
        let mode = match &u.opts.mode {
            Some((m, span)) => {
                // parse.y tableopts `MODE`.
                match m {
                    Mode::Loadbalance(_) | Mode::Hash(_) if owner.redirect => d.push(err(
                        span,
                        Reject::Conflict,
                        "mode not supported for redirections",
                    )),
                    Mode::LeastStates if !owner.redirect => {
                        d.push(err(span, Reject::Conflict, "mode not supported for relays"))
                    }
                    _ => {}
                }
                *m
            }
            None => Mode::RoundRobin,
        };
        // The timeout was copied from the global one when the table was defined; the interval
        // is the global one unless given (hce.c runs every table each global round).
        let timeout = u.opts.timeout.unwrap_or(def.timeout);
        let interval = u.opts.interval.unwrap_or(global_interval);
        if let Some(iv) = u.opts.interval {
            let g = global_interval.as_secs();
            if g == 0 || iv.as_secs() < g || iv.as_secs() % g != 0 {
                d.push(err(
                    &u.span,
                    Reject::Range,
                    "table interval must be divisible by global interval",
                ));
            }
        }
        if timeout >= global_interval {
            d.push(err(
                &u.span,
                Reject::Range,
                format!("table timeout exceeds interval: {name}"),
            ));
        }
        if let Some(g) = &u.opts.demote
            && !groups.contains(g)
        {
            // relayd: carp_demote_init fails for a group that does not exist.
            d.push(err(
                &u.span,
                Reject::Undefined,
                format!("error initializing group '{g}'"),
            ));
        }
        let check = u.opts.check.clone().unwrap_or(Check::None);
        if owner.redirect && check == Check::None {
            d.push(err(
                &u.span,
                Reject::Syntax,
                format!("table {name} has no check"),
            ));
        }
        if let Owner::Redirect(i, slot) = u.owner {
            let main = config
                .redirects
                .get(i)
                .and_then(|r| r.tables.first())
                .and_then(|n| config.tables.iter().find(|t| t.name == *n));
            let rname = config
                .redirects
                .get(i)
                .map(|r| r.name.as_str())
                .unwrap_or("");
            if slot >= 2 {
                d.push(err(
                    &u.span,
                    Reject::Range,
                    "only one backup table is allowed",
                ));
            } else if slot == 1
                && let Some(main) = main
            {
                if main.mode != mode {
                    d.push(err(
                        &u.span,
                        Reject::Conflict,
                        format!("backup table for {rname} with different mode"),
                    ));
                }
                if main.port != port {
                    d.push(err(
                        &u.span,
                        Reject::Conflict,
                        format!(
                            "redirection {rname} uses two different ports for its table and backup table"
                        ),
                    ));
                }
            }
        }
        if let Some(f) = def_used.get_mut(di) {
            *f = true;
        }
        let tc = TableConfig {
            name: name.clone(),
            base: def.name.clone(),
            port,
            check,
            timeout,
            interval,
            demote: u.opts.demote.clone(),
            mode,
            disabled: def.disabled,
            hosts: hosts_of(def, next_id),
        };
        match config.tables.iter().find(|t| t.name == name) {
            // relayd `table_findbyconf` reuses an identical copy before copying hosts, so no
            // ids are used up. (relayd would make a second table of the same name when the
            // options differ; carpio refuses, as relayctl could not tell them apart.)
            Some(existing) => {
                if existing.check != tc.check
                    || existing.timeout != tc.timeout
                    || existing.interval != tc.interval
                    || existing.demote != tc.demote
                    || existing.mode != tc.mode
                {
                    d.push(err(
                        &u.span,
                        Reject::Conflict,
                        format!("table {name} used twice with different options"),
                    ));
                }
            }
            None => {
                next_id =
                    next_id.saturating_add(u32::try_from(def.hosts.len()).unwrap_or(u32::MAX));
                config.tables.push(tc);
            }
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
            // relayd drops an unused definition silently; carpio says so.
            d.push(Diagnostic::warning(
                &t.span,
                Reject::Unused,
                format!("unused table: {}", t.name),
            ));
        }
    }

    for (t, span) in &rule_tables {
        if !table_defs.iter().any(|td| td.name == *t) {
            d.push(err(span, Reject::Undefined, "undefined forward table"));
        }
    }
    check_parents(&config, &table_defs, &mut d);
    check_redirects(&config, &broken, &mut d);
    check_relays(&mut config, &broken, &mut d);
    check_routers(&config, &broken, &mut d);
    check_carpio(&config, &broken, &mut d);
    for c in &mut config.carp {
        match (c.nodes.len(), c.balancing) {
            (1, _) => c.balancing = Balancing::None,
            (n, Balancing::None) if n >= 2 => c.balancing = Balancing::Ip,
            _ => {}
        }
    }
    (config, d)
}

/// load_config: `parent N` names a host id of the copies; it must exist, not be the host
/// itself, and not have a parent of its own.
fn check_parents(config: &Config, defs: &[TableDef], d: &mut Vec<Diagnostic>) {
    let parents: HashMap<u32, Option<u32>> = config.hosts().map(|h| (h.id, h.parent)).collect();
    let mut reported = HashSet::new();
    for h in config.hosts() {
        let Some(p) = h.parent else { continue };
        let valid = p != h.id && matches!(parents.get(&p), Some(None));
        if !valid && reported.insert(p) {
            let span = defs
                .iter()
                .flat_map(|t| t.hosts.iter())
                .find(|dh| dh.parent == Some(p))
                .map(|dh| dh.span.clone());
            if let Some(span) = span {
                d.push(err(
                    &span,
                    Reject::Undefined,
                    format!("host parent id {p} invalid"),
                ));
            }
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
            lladdr: h.lladdr,
            weight: h.weight,
        })
        .collect()
}

fn check_redirects(config: &Config, broken: &[Span], d: &mut Vec<Diagnostic>) {
    for r in config
        .redirects
        .iter()
        .filter(|r| !broken.contains(&r.span))
    {
        if r.tables.is_empty() {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("redirection {} has no table", r.name),
            ));
        }
        if r.listen.is_empty() {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("redirection {} has no virtual ip", r.name),
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
        let whole = !broken.contains(&r.span);
        if whole && r.listen.is_empty() {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("relay {} has no listener", r.name),
            ));
        }
        if whole && r.forwards.is_empty() {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("relay {} has no target, rdr, or table", r.name),
            ));
        }
        let has = |t: &RelayTarget| r.forwards.iter().any(|f| f.target == *t);
        if has(&RelayTarget::NatLookup) && has(&RelayTarget::Destination) {
            d.push(err(
                &r.span,
                Reject::Conflict,
                format!(
                    "relay {} with conflicting nat lookup and peer options",
                    r.name
                ),
            ));
        }
        let proto = match &r.protocol {
            Some(p) => match config.protocol(p) {
                Some(pr) => Some(pr),
                None => {
                    d.push(err(
                        &r.span,
                        Reject::Undefined,
                        format!("no such protocol: {p}"),
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
    // load_config: "unused protocol" is a warning.
    for p in &config.protocols {
        if !config
            .relays
            .iter()
            .any(|r| r.protocol.as_deref() == Some(p.name.as_str()))
        {
            d.push(Diagnostic::warning(
                &p.span,
                Reject::Unused,
                format!("unused protocol: {}", p.name),
            ));
        }
    }
}

fn check_routers(config: &Config, broken: &[Span], d: &mut Vec<Diagnostic>) {
    for r in config.routers.iter().filter(|r| !broken.contains(&r.span)) {
        if r.routes.is_empty() {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("router {} without routes", r.name),
            ));
        }
        if r.table.is_empty() {
            d.push(err(
                &r.span,
                Reject::Syntax,
                format!("router {} has no forward to", r.name),
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
        if i.ring.is_some() && i.ingress != Ingress::Afpacket {
            d.push(err(
                &i.span,
                Reject::Conflict,
                format!(
                    "interface {}: ring v2|v3 only applies to ingress afpacket",
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
        // ip_carp.c: one node forces balancing none; two or more with none fall back to ip.
        // The model keeps what the kernel would do, and says so when it differs.
        if c.nodes.len() == 1 && c.balancing != Balancing::None {
            d.push(Diagnostic::warning(
                &c.span,
                Reject::Conflict,
                format!(
                    "carp {}: balancing needs two or more carpnodes; using none",
                    c.name
                ),
            ));
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
