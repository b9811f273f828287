//! carpio's own blocks, in relayd's style (docs/carpio.conf.md): `interface`, `carp`, `pfsync`,
//! `bird`.
//! The carp and pfsync options mirror ifconfig(8)'s (sbin/ifconfig/ifconfig.c `setcarp_*`,
//! `setpfsync_*`; spec §1.7, §2.1, §3) so an OpenBSD admin can copy them over.

use super::*;

impl Parser<'_> {
    /// `interface NAME { ingress afxdp|afpacket|pnet [queues N] [mode native|generic]
    /// [ring v2|v3] }`
    pub(super) fn interface(&mut self, span: Span) -> R<()> {
        let (name, _) = self.string("interface name")?;
        let mut i = InterfaceConfig {
            name,
            ingress: Ingress::Afpacket,
            queues: None,
            mode: None,
            ring: None,
            span,
        };
        self.block(&mut |p| {
            while !p.at_end_of_statement() {
                if p.eat_kw("ingress") {
                    i.ingress = if p.eat_kw("afxdp") {
                        Ingress::Afxdp
                    } else if p.eat_kw("afpacket") {
                        Ingress::Afpacket
                    } else if p.eat_kw("pnet") {
                        Ingress::Pnet
                    } else {
                        return p.unexpected("'afxdp', 'afpacket' or 'pnet'");
                    };
                } else if p.eat_kw("queues") {
                    i.queues = Some(p.num_u32("queues", 1, 1024)?);
                } else if p.eat_kw("mode") {
                    i.mode = Some(if p.eat_kw("native") {
                        XdpMode::Native
                    } else if p.eat_kw("generic") {
                        XdpMode::Generic
                    } else {
                        return p.unexpected("'native' or 'generic'");
                    });
                } else if p.eat_kw("ring") {
                    i.ring = Some(if p.eat_kw("v2") {
                        PacketRing::V2
                    } else if p.eat_kw("v3") {
                        PacketRing::V3
                    } else {
                        return p.unexpected("'v2' or 'v3'");
                    });
                } else {
                    return p.err(format!(
                        "syntax error: unknown interface option {}",
                        p.tok().describe()
                    ));
                }
            }
            Ok(())
        })?;
        self.out.config.interfaces.push(i);
        Ok(())
    }

    /// `carp NAME { carpdev IF, vhid N, advbase N, advskew N, pass STR, carppeer ADDR,
    /// carpnodes V:S,..., balancing MODE, group G, preempt, address A/len }`
    pub(super) fn carp(&mut self, span: Span) -> R<()> {
        let (name, _) = self.string("carp interface name")?;
        let mut c = CarpConfig {
            name,
            carpdev: None,
            nodes: Vec::new(),
            advbase: 1,
            pass: None,
            carppeer: None,
            balancing: Balancing::None,
            groups: Vec::new(),
            preempt: false,
            addresses: Vec::new(),
            span: span.clone(),
        };
        let mut vhid: Option<(u8, Span)> = None;
        let mut advskew: u8 = 0;
        let mut nodes_span: Option<Span> = None;
        let errors_before = self.diags.len();
        self.block(&mut |p| {
            let sspan = p.span();
            if p.eat_kw("carpdev") {
                c.carpdev = Some(p.string("carpdev")?.0);
            } else if p.eat_kw("vhid") {
                // ifconfig.c setcarp_vhid: strtonum(1, 255).
                vhid = Some((p.num_u8("vhid", 1, 255)?, sspan));
            } else if p.eat_kw("advbase") {
                // The kernel accepts 0..255 (spec §1.4); 255 is only sent when bowing out
                // (§9 item 7). advbase 0 advertises every advskew/256 s: sub-second failover.
                c.advbase = p.num_u8("advbase", 0, 254)?;
            } else if p.eat_kw("advskew") {
                advskew = p.advskew()?;
            } else if p.eat_kw("pass") {
                c.pass = Some(p.string("pass")?.0);
            } else if p.eat_kw("carppeer") {
                let (a, aspan) = p.string("carppeer address")?;
                match a.parse() {
                    Ok(ip) => c.carppeer = Some(ip),
                    Err(_) => {
                        return p.range_err(&aspan, format!("invalid carppeer address '{a}'"));
                    }
                }
            } else if p.eat_kw("carpnodes") {
                c.nodes = p.carpnodes()?;
                nodes_span = Some(sspan);
            } else if p.eat_kw("balancing") {
                c.balancing = if p.eat_kw("none") {
                    Balancing::None
                } else if p.eat_kw("ip") {
                    Balancing::Ip
                } else if p.eat_kw("ip-stealth") {
                    Balancing::IpStealth
                } else if p.eat_kw("ip-unicast") {
                    Balancing::IpUnicast
                } else if p.eat_kw("arp") {
                    Balancing::Arp
                } else {
                    return p.unexpected("'none', 'ip', 'ip-stealth', 'ip-unicast' or 'arp'");
                };
            } else if p.eat_kw("group") {
                c.groups.push(p.string("group name")?.0);
            } else if p.eat_kw("preempt") {
                c.preempt = true;
            } else if p.eat_kw("address") {
                let pf = p.prefix()?;
                c.addresses.push(pf);
            } else {
                return p.err(format!(
                    "syntax error: unknown carp option {}",
                    p.tok().describe()
                ));
            }
            Ok(())
        })?;
        match (vhid, nodes_span) {
            (Some((_, vspan)), Some(_)) => {
                self.diags.push(Diagnostic::error(
                    &vspan,
                    Reject::Conflict,
                    "use either vhid or carpnodes, not both",
                ));
            }
            (Some((v, _)), None) => c.nodes.push(CarpNode { vhid: v, advskew }),
            (None, Some(_)) => {}
            // A vhid statement that failed to parse was already reported.
            (None, None) if self.diags.len() > errors_before => {}
            (None, None) => {
                self.diags.push(Diagnostic::error(
                    &span,
                    Reject::Syntax,
                    format!("carp {} has no vhid", c.name),
                ));
            }
        }
        self.out.config.carp.push(c);
        Ok(())
    }

    fn advskew(&mut self) -> R<u8> {
        let span = self.span();
        let (n, _) = self.number("advskew", 0, 255)?;
        if n == 255 {
            // ifconfig.c setcarp_advskew: strtonum(0, 254); 255 means bow-out (spec §9 item 7).
            return self.range_err(
                &span,
                "invalid advskew 255: must be 0..254 (255 is reserved for bow-out)",
            );
        }
        Ok(u8::try_from(n).unwrap_or(0))
    }

    /// `V:S[,V:S...]` (ifconfig.c `setcarpnodes`; at most CARP_MAXNODES = 32).
    fn carpnodes(&mut self) -> R<Vec<CarpNode>> {
        let mut nodes = Vec::new();
        loop {
            let (s, span) = self.string("vhid:advskew")?;
            let Some((v, a)) = s.split_once(':') else {
                return self.range_err(
                    &span,
                    format!("invalid carpnode '{s}': expected vhid:advskew"),
                );
            };
            let vhid = match v.parse::<u8>() {
                Ok(v) if v >= 1 => v,
                _ => {
                    return self.range_err(
                        &span,
                        format!("invalid carpnode vhid '{v}': must be 1..255"),
                    );
                }
            };
            let advskew = match a.parse::<u8>() {
                Ok(a) if a < 255 => a,
                _ => {
                    return self.range_err(
                        &span,
                        format!("invalid carpnode advskew '{a}': must be 0..254"),
                    );
                }
            };
            if nodes.iter().any(|n: &CarpNode| n.vhid == vhid) {
                return Err(Diagnostic::error(
                    &span,
                    Reject::Duplicate,
                    format!("vhid {vhid} listed twice in carpnodes"),
                ));
            }
            nodes.push(CarpNode { vhid, advskew });
            // A comma followed by another V:S continues the list; otherwise it ends the statement.
            let next_is_node = matches!(self.tok_at(1), Tok::Word(w) if w.contains(':'));
            if *self.tok() == Tok::Comma && next_is_node {
                self.bump();
            } else {
                break;
            }
        }
        if nodes.len() > 32 {
            return self.range_err(
                &self.span(),
                format!("too many carpnodes ({}): at most 32", nodes.len()),
            );
        }
        // ip_carp.c keeps the vhosts sorted by vhid; the lowest is the leader (spec §2.1).
        nodes.sort_by_key(|n| n.vhid);
        Ok(nodes)
    }

    /// `pfsync { syncdev IF | syncpeer ADDR, maxupd N, [no] defer }`
    pub(super) fn pfsync(&mut self, span: Span) -> R<()> {
        if self.out.config.pfsync.is_some() {
            return Err(Diagnostic::error(
                &span,
                Reject::Duplicate,
                "pfsync defined twice",
            ));
        }
        let mut c = PfsyncConfig {
            syncdev: None,
            syncpeer: None,
            maxupd: 128,
            defer: false,
            span,
        };
        self.block(&mut |p| {
            let no = p.eat_kw("no");
            if p.eat_kw("defer") {
                c.defer = !no;
            } else if no {
                return p.unexpected("'defer'");
            } else if p.eat_kw("syncdev") {
                c.syncdev = Some(p.string("syncdev")?.0);
            } else if p.eat_kw("syncpeer") {
                let (a, aspan) = p.string("syncpeer address")?;
                match a.parse() {
                    Ok(ip) => c.syncpeer = Some(ip),
                    Err(_) => {
                        return p.range_err(&aspan, format!("invalid syncpeer address '{a}'"));
                    }
                }
            } else if p.eat_kw("maxupd") {
                c.maxupd = p.num_u8("maxupd", 0, 255)?;
            } else {
                return p.err(format!(
                    "syntax error: unknown pfsync option {}",
                    p.tok().describe()
                ));
            }
            Ok(())
        })?;
        self.out.config.pfsync = Some(c);
        Ok(())
    }

    /// `bird { socket "PATH", routes "PATH", drain timeout N, device NAME }` (route health
    /// injection, `crate::route`). `routes` is required: it is the file the operator's bird.conf
    /// includes.
    pub(super) fn bird(&mut self, span: Span) -> R<()> {
        if self.out.config.bird.is_some() {
            return Err(Diagnostic::error(
                &span,
                Reject::Duplicate,
                "bird defined twice",
            ));
        }
        let mut c = BirdConfig {
            socket: DEFAULT_BIRD_SOCKET.to_string(),
            routes: String::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            device: DEFAULT_BIRD_DEVICE.to_string(),
            span: span.clone(),
        };
        let errors_before = self.diags.len();
        self.block(&mut |p| {
            if p.eat_kw("socket") {
                c.socket = p.path("bird socket path")?;
            } else if p.eat_kw("routes") {
                c.routes = p.path("routes file path")?;
            } else if p.eat_kw("drain") {
                p.expect_kw("timeout")?;
                // 0 turns draining off; an hour bounds how long `stop` can take.
                let n = p.num_u32("drain timeout", 0, 3600)?;
                c.drain_timeout = Duration::from_secs(u64::from(n));
            } else if p.eat_kw("device") {
                // It becomes an interface name and a BIRD string: checked for both.
                let (d, dspan) = p.string("device name")?;
                if !crate::sys::tun::valid_name(&d) {
                    return p.range_err(
                        &dspan,
                        format!("invalid device name '{d}': 1 to 15 of A-Z a-z 0-9 - _ ."),
                    );
                }
                c.device = d;
            } else {
                return p.err(format!(
                    "syntax error: unknown bird option {}",
                    p.tok().describe()
                ));
            }
            Ok(())
        })?;
        if c.routes.is_empty() && self.diags.len() == errors_before {
            self.diags.push(Diagnostic::error(
                &span,
                Reject::Syntax,
                "bird needs routes \"PATH\" (the file bird.conf includes)",
            ));
        }
        self.out.config.bird = Some(c);
        Ok(())
    }

    /// A non-empty absolute path (BIRD resolves relative paths against its own directory).
    fn path(&mut self, what: &str) -> R<String> {
        let (s, span) = self.string(what)?;
        if !s.starts_with('/') || s.contains('\n') {
            return self.range_err(&span, format!("invalid {what} '{s}': must be absolute"));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{self, DEFAULT_BIRD_SOCKET};
    use std::time::Duration;

    fn errors(text: &str) -> Vec<String> {
        match config::parse_str("t.conf", text, &[]) {
            Ok(_) => panic!("should be rejected:\n{text}"),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    const REDIRECT: &str = "table <t> { 198.18.2.1 }\n\
        redirect r {\n listen on 198.18.1.1 tcp port 80\n forward to <t> check tcp\n}\n";

    #[test]
    fn bird_block_ok() {
        let text = format!(
            "bird {{\n socket \"/run/b.ctl\"\n routes \"/etc/bird/carpio.conf\"\n drain timeout 5\n}}\n{REDIRECT}"
        );
        let c = config::parse_str("t.conf", &text, &[]).unwrap();
        let b = c.bird.unwrap();
        assert_eq!(b.socket, "/run/b.ctl");
        assert_eq!(b.routes, "/etc/bird/carpio.conf");
        assert_eq!(b.drain_timeout, Duration::from_secs(5));
        assert_eq!(b.device, config::DEFAULT_BIRD_DEVICE);
        let text = format!("bird {{ routes \"/r\", device cio-rt7 }}\n{REDIRECT}");
        let b = config::parse_str("t.conf", &text, &[]).unwrap();
        assert_eq!(b.bird.unwrap().device, "cio-rt7");
        // One line with commas, defaults for the rest; drain timeout 0 turns draining off.
        let text = format!("bird {{ routes \"/r.conf\", drain timeout 0 }}\n{REDIRECT}");
        let b = config::parse_str("t.conf", &text, &[])
            .unwrap()
            .bird
            .unwrap();
        assert_eq!(b.socket, DEFAULT_BIRD_SOCKET);
        assert_eq!(b.drain_timeout, Duration::ZERO);
        let text = format!("bird {{ routes \"/r.conf\" }}\n{REDIRECT}");
        let b = config::parse_str("t.conf", &text, &[])
            .unwrap()
            .bird
            .unwrap();
        assert_eq!(b.drain_timeout, config::DEFAULT_DRAIN_TIMEOUT);
        // No bird block: no route injection.
        assert!(
            config::parse_str("t.conf", REDIRECT, &[])
                .unwrap()
                .bird
                .is_none()
        );
    }

    #[test]
    fn bird_block_errors() {
        let text = format!(
            "bird {{ socket \"/s\" }}\n\
             bird {{ routes \"/r\" }}\n\
             bird {{ routes \"relative.conf\" }}\n\
             bird {{ routes \"/r\", drain timeout 3601 }}\n\
             bird {{ routes \"/r\", announce yes }}\n\
             bird {{ routes \"/r\", drain 5 }}\n{REDIRECT}"
        );
        assert_eq!(
            errors(&text),
            [
                "t.conf:1:1: bird needs routes \"PATH\" (the file bird.conf includes)",
                "t.conf:2:1: bird defined twice",
                "t.conf:3:1: bird defined twice",
                "t.conf:4:1: bird defined twice",
                "t.conf:5:1: bird defined twice",
                "t.conf:6:1: bird defined twice",
            ]
        );
        for (body, want) in [
            (
                "routes \"relative.conf\"",
                "t.conf:1:15: invalid routes file path 'relative.conf': must be absolute",
            ),
            (
                "routes \"/r\", drain timeout 3601",
                "t.conf:1:35: invalid drain timeout 3601: must be 0..3600",
            ),
            (
                "routes \"/r\", announce yes",
                "t.conf:1:21: syntax error: unknown bird option 'announce'",
            ),
            (
                "routes \"/r\", drain 5",
                "t.conf:1:27: syntax error: expected 'timeout', found '5'",
            ),
            (
                "routes \"/r\", device \"a/b\"",
                "t.conf:1:28: invalid device name 'a/b': 1 to 15 of A-Z a-z 0-9 - _ .",
            ),
            (
                "routes \"/r\", device sixteen-chars-xx",
                "t.conf:1:28: invalid device name 'sixteen-chars-xx': 1 to 15 of A-Z a-z 0-9 - _ .",
            ),
        ] {
            let got = errors(&format!("bird {{ {body} }}\n{REDIRECT}"));
            assert_eq!(got, [want], "{body}");
        }
    }
}
