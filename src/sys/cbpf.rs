//! Classic BPF (SO_ATTACH_FILTER) compiled from carpio's virtual services, so an AF_PACKET
//! socket only sees carpio's traffic: the same selection as `bpf/carpio_xdp.c`, in cBPF
//! (Documentation/networking/filter.rst; tcpdump's `-d` output was used to check the idioms).
//!
//! Accepted, on an untagged Ethernet frame:
//! - IPv4 to `addr` with `proto` (and a destination port in range, for TCP/UDP/SCTP with a
//!   port filter); non-first IPv4 fragments to a VIP address;
//! - IPv6 to `addr` with next header `proto` directly after the fixed header (extension headers
//!   are not walked here: such packets go to the kernel), port as above;
//! - ARP whose target protocol address is an IPv4 VIP; IPv6 neighbour solicitations (next header
//!   58 directly) whose target is an IPv6 VIP;
//! - IP protocol 112 (CARP) and 240 (pfsync) over IPv4 and IPv6, when asked;
//! - the NAT return path: IPv4/IPv6 *from* a backend address with `proto` (and a source port
//!   in range), listed in [`FilterConfig::sources`], so the worker can un-NAT backend → client
//!   packets (the backends route to clients through the balancer, see `daemon`'s doc).
//!
//! Layout: one self-contained rule after another. A rule that matches falls through to its own
//! `ret accept`; a failed test jumps to the next rule. Jumps therefore never span more than one
//! rule (< 30 instructions), far below cBPF's 8-bit jump offsets, however many services exist.
//! The program is checked against frames by a small interpreter in the tests below.

use std::net::IpAddr;

// cBPF opcodes (linux/filter.h, linux/bpf_common.h).
pub const BPF_LD: u16 = 0x00;
pub const BPF_LDX: u16 = 0x01;
pub const BPF_JMP: u16 = 0x05;
pub const BPF_RET: u16 = 0x06;
pub const BPF_W: u16 = 0x00;
pub const BPF_H: u16 = 0x08;
pub const BPF_B: u16 = 0x10;
pub const BPF_ABS: u16 = 0x20;
pub const BPF_IND: u16 = 0x40;
pub const BPF_MSH: u16 = 0xa0;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_JGT: u16 = 0x20;
pub const BPF_JGE: u16 = 0x30;
pub const BPF_JSET: u16 = 0x40;
pub const BPF_K: u16 = 0x00;
/// Largest program the kernel accepts (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;
/// Bytes of an accepted packet to keep: all of it.
pub const ACCEPT: u32 = 0x0004_0000;

// Frame offsets (untagged Ethernet; RFC 791, RFC 8200, RFC 826, RFC 4861).
const OFF_ETHERTYPE: u32 = 12;
const ETH_LEN: u32 = 14;
const OFF_V4_FRAG: u32 = ETH_LEN + 6;
const OFF_V4_PROTO: u32 = ETH_LEN + 9;
const OFF_V4_SRC: u32 = ETH_LEN + 12;
const OFF_V4_DST: u32 = ETH_LEN + 16;
const OFF_V6_SRC: u32 = ETH_LEN + 8;
const OFF_V6_NH: u32 = ETH_LEN + 6;
const OFF_V6_DST: u32 = ETH_LEN + 24;
const V6_LEN: u32 = 40;
/// Source port: bytes 0..2 of the TCP/UDP/SCTP header.
const OFF_L4_SPORT: u32 = 0;
/// Destination port: bytes 2..4 of the TCP/UDP/SCTP header.
const OFF_L4_DPORT: u32 = 2;
const OFF_ARP_TPA: u32 = ETH_LEN + 24;
const OFF_ICMP6_TYPE: u32 = ETH_LEN + V6_LEN;
const OFF_NS_TARGET: u32 = ETH_LEN + V6_LEN + 8;
const ETHERTYPE_IPV4: u32 = 0x0800;
const ETHERTYPE_ARP: u32 = 0x0806;
const ETHERTYPE_IPV6: u32 = 0x86dd;
const IP_OFFMASK: u32 = 0x1fff;
const PROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u32 = 135;
pub const PROTO_CARP: u8 = 112;
pub const PROTO_PFSYNC: u8 = 240;

/// One cBPF instruction, layout of `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A virtual service: destination address, IP protocol, optional inclusive port range
/// (`None` = any port or a protocol without ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub addr: IpAddr,
    pub proto: u8,
    pub ports: Option<(u16, u16)>,
}

/// What the filter accepts.
#[derive(Debug, Clone, Default)]
pub struct FilterConfig {
    pub services: Vec<Service>,
    /// Return-path entries, matched on the packet's *source* address, protocol and source
    /// port range (a NAT backend's address and the port it answers from).
    pub sources: Vec<Service>,
    /// Addresses carpio answers ARP / ND for and takes fragments to.
    pub vips: Vec<IpAddr>,
    pub carp: bool,
    pub pfsync: bool,
}

/// Why a filter could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// More than [`MAX_INSNS`] instructions.
    TooLong(usize),
    /// A port range with lo > hi.
    BadRange(u16, u16),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::TooLong(n) => write!(f, "cBPF filter needs {n} instructions (max {MAX_INSNS})"),
            Error::BadRange(lo, hi) => write!(f, "port range {lo}-{hi} is empty"),
        }
    }
}

impl std::error::Error for Error {}

/// A test inside a rule: on failure jump to the rule's end (the next rule).
enum Step {
    Ld(Insn),
    /// Continue if the condition holds, else next rule.
    Jeq(u32),
    /// Continue if A >= k.
    Jge(u32),
    /// Continue if A <= k (i.e. not A > k).
    Jle(u32),
    /// Continue if (A & k) == 0.
    JclearK(u32),
    /// Continue if (A & k) != 0.
    JsetK(u32),
}

fn ld(size: u16, off: u32) -> Step {
    Step::Ld(Insn {
        code: BPF_LD | size | BPF_ABS,
        jt: 0,
        jf: 0,
        k: off,
    })
}

fn ld_ind(size: u16, off: u32) -> Step {
    Step::Ld(Insn {
        code: BPF_LD | size | BPF_IND,
        jt: 0,
        jf: 0,
        k: off,
    })
}

/// X = 4 * (frame[off] & 0xf): the IPv4 header length.
fn ldx_msh(off: u32) -> Step {
    Step::Ld(Insn {
        code: BPF_LDX | BPF_B | BPF_MSH,
        jt: 0,
        jf: 0,
        k: off,
    })
}

fn emit_rule(out: &mut Vec<Insn>, steps: &[Step]) {
    // Rule length: every step is one instruction, plus the final `ret accept`.
    let len = steps.len() + 1;
    for (i, s) in steps.iter().enumerate() {
        // Jump distance from the next instruction to the first instruction after the rule.
        let to_next = (len - (i + 1)) as u8;
        let j = |code: u16, k: u32, jt: u8, jf: u8| Insn {
            code: BPF_JMP | code | BPF_K,
            jt,
            jf,
            k,
        };
        out.push(match *s {
            Step::Ld(insn) => insn,
            Step::Jeq(k) => j(BPF_JEQ, k, 0, to_next),
            Step::Jge(k) => j(BPF_JGE, k, 0, to_next),
            Step::Jle(k) => j(BPF_JGT, k, to_next, 0),
            Step::JclearK(k) => j(BPF_JSET, k, to_next, 0),
            Step::JsetK(k) => j(BPF_JSET, k, 0, to_next),
        });
    }
    out.push(Insn {
        code: BPF_RET | BPF_K,
        jt: 0,
        jf: 0,
        k: ACCEPT,
    });
}

fn has_ports(proto: u8) -> bool {
    // TCP, UDP, SCTP: destination port at bytes 2..4.
    matches!(proto, 6 | 17 | 132)
}

fn words(a: [u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Which address and port of the packet a [`Service`] rule matches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Destination address and port: a virtual service.
    Dst,
    /// Source address and port: a NAT backend's answers.
    Src,
}

fn service_rule(out: &mut Vec<Insn>, s: &Service, side: Side) -> Result<(), Error> {
    let (off_v4, off_v6, off_l4) = match side {
        Side::Dst => (OFF_V4_DST, OFF_V6_DST, OFF_L4_DPORT),
        Side::Src => (OFF_V4_SRC, OFF_V6_SRC, OFF_L4_SPORT),
    };
    let range = match s.ports {
        Some((lo, hi)) if lo > hi => return Err(Error::BadRange(lo, hi)),
        Some((lo, hi)) if has_ports(s.proto) && !(lo == 0 && hi == u16::MAX) => Some((lo, hi)),
        _ => None,
    };
    let mut steps = vec![ld(BPF_H, OFF_ETHERTYPE)];
    match s.addr {
        IpAddr::V4(a) => {
            steps.extend([
                Step::Jeq(ETHERTYPE_IPV4),
                ld(BPF_W, off_v4),
                Step::Jeq(u32::from(a)),
                ld(BPF_B, OFF_V4_PROTO),
                Step::Jeq(s.proto.into()),
            ]);
            if let Some((lo, hi)) = range {
                steps.extend([
                    // A non-first fragment has no ports (the VIP fragment rule takes it).
                    ld(BPF_H, OFF_V4_FRAG),
                    Step::JclearK(IP_OFFMASK),
                    ldx_msh(ETH_LEN),
                    ld_ind(BPF_H, ETH_LEN + off_l4),
                    Step::Jge(lo.into()),
                    Step::Jle(hi.into()),
                ]);
            }
        }
        IpAddr::V6(a) => {
            steps.push(Step::Jeq(ETHERTYPE_IPV6));
            for (i, wi) in words(a.octets()).iter().enumerate() {
                steps.push(ld(BPF_W, off_v6 + 4 * i as u32));
                steps.push(Step::Jeq(*wi));
            }
            steps.extend([ld(BPF_B, OFF_V6_NH), Step::Jeq(s.proto.into())]);
            if let Some((lo, hi)) = range {
                steps.extend([
                    ld(BPF_H, ETH_LEN + V6_LEN + off_l4),
                    Step::Jge(lo.into()),
                    Step::Jle(hi.into()),
                ]);
            }
        }
    }
    emit_rule(out, &steps);
    Ok(())
}

/// Compiles `cfg` into a cBPF program (ends with `ret 0`: everything else is not delivered).
pub fn compile(cfg: &FilterConfig) -> Result<Vec<Insn>, Error> {
    let mut out = Vec::new();
    for (proto, on) in [(PROTO_CARP, cfg.carp), (PROTO_PFSYNC, cfg.pfsync)] {
        if on {
            emit_rule(
                &mut out,
                &[
                    ld(BPF_H, OFF_ETHERTYPE),
                    Step::Jeq(ETHERTYPE_IPV4),
                    ld(BPF_B, OFF_V4_PROTO),
                    Step::Jeq(proto.into()),
                ],
            );
            emit_rule(
                &mut out,
                &[
                    ld(BPF_H, OFF_ETHERTYPE),
                    Step::Jeq(ETHERTYPE_IPV6),
                    ld(BPF_B, OFF_V6_NH),
                    Step::Jeq(proto.into()),
                ],
            );
        }
    }
    for vip in &cfg.vips {
        match vip {
            IpAddr::V4(a) => {
                let a = u32::from(*a);
                emit_rule(
                    &mut out,
                    &[
                        ld(BPF_H, OFF_ETHERTYPE),
                        Step::Jeq(ETHERTYPE_ARP),
                        ld(BPF_W, OFF_ARP_TPA),
                        Step::Jeq(a),
                    ],
                );
                emit_rule(
                    &mut out,
                    &[
                        ld(BPF_H, OFF_ETHERTYPE),
                        Step::Jeq(ETHERTYPE_IPV4),
                        ld(BPF_W, OFF_V4_DST),
                        Step::Jeq(a),
                        ld(BPF_H, OFF_V4_FRAG),
                        Step::JsetK(IP_OFFMASK),
                    ],
                );
            }
            IpAddr::V6(a) => {
                let w = words(a.octets());
                let mut steps = vec![
                    ld(BPF_H, OFF_ETHERTYPE),
                    Step::Jeq(ETHERTYPE_IPV6),
                    ld(BPF_B, OFF_V6_NH),
                    Step::Jeq(PROTO_ICMPV6.into()),
                    ld(BPF_B, OFF_ICMP6_TYPE),
                    Step::Jeq(ND_NEIGHBOR_SOLICIT),
                ];
                for (i, wi) in w.iter().enumerate() {
                    steps.push(ld(BPF_W, OFF_NS_TARGET + 4 * i as u32));
                    steps.push(Step::Jeq(*wi));
                }
                emit_rule(&mut out, &steps);
            }
        }
    }
    for s in &cfg.services {
        service_rule(&mut out, s, Side::Dst)?;
    }
    for s in &cfg.sources {
        service_rule(&mut out, s, Side::Src)?;
    }
    out.push(Insn {
        code: BPF_RET | BPF_K,
        jt: 0,
        jf: 0,
        k: 0,
    });
    if out.len() > MAX_INSNS {
        return Err(Error::TooLong(out.len()));
    }
    Ok(out)
}

/// Runs `prog` on `pkt` as the kernel would for the subset [`compile`] emits; returns the
/// accepted length (0 = drop). Out-of-bounds loads end the program with 0, as in the kernel.
/// For tests and for checking a filter before attaching it.
pub fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |off: u32, size: u16| -> Option<u32> {
        let o = off as usize;
        match size {
            BPF_W => pkt
                .get(o..o.checked_add(4)?)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            BPF_H => pkt
                .get(o..o.checked_add(2)?)
                .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]]))),
            _ => pkt.get(o).map(|b| u32::from(*b)),
        }
    };
    // Every jump goes forward, so the program ends within `prog.len()` steps.
    for _ in 0..=prog.len() {
        let Some(i) = prog.get(pc) else { return 0 };
        pc += 1;
        let class = i.code & 0x07;
        let size = i.code & 0x18;
        let mode = i.code & 0xe0;
        match class {
            BPF_LD => {
                let off = if mode == BPF_IND {
                    x.wrapping_add(i.k)
                } else {
                    i.k
                };
                match load(off, size) {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            BPF_LDX if mode == BPF_MSH => match load(i.k, BPF_B) {
                Some(v) => x = 4 * (v & 0xf),
                None => return 0,
            },
            BPF_JMP => {
                let cond = match i.code & 0xf0 {
                    BPF_JEQ => a == i.k,
                    BPF_JGT => a > i.k,
                    BPF_JGE => a >= i.k,
                    BPF_JSET => a & i.k != 0,
                    _ => return 0,
                };
                pc += usize::from(if cond { i.jt } else { i.jf });
            }
            BPF_RET => return i.k,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    fn cfg() -> FilterConfig {
        FilterConfig {
            services: vec![
                Service {
                    addr: VIP4.into(),
                    proto: 17,
                    ports: Some((53, 53)),
                },
                Service {
                    addr: VIP4.into(),
                    proto: 6,
                    ports: Some((8000, 8099)),
                },
                Service {
                    addr: VIP6.into(),
                    proto: 17,
                    ports: Some((123, 123)),
                },
                Service {
                    addr: VIP4.into(),
                    proto: 47,
                    ports: None,
                },
            ],
            vips: vec![VIP4.into(), VIP6.into()],
            carp: true,
            pfsync: true,
            sources: Vec::new(),
        }
    }

    fn v4(dst: Ipv4Addr, proto: u8, dport: u16, frag_off: u16, ihl: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0u8; usize::from(ihl) * 4];
        ip[0] = 0x40 | ihl;
        ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
        ip[16..20].copy_from_slice(&dst.octets());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&1234u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f
    }

    fn v6(dst: Ipv6Addr, nh: u8, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[6] = nh;
        ip[24..40].copy_from_slice(&dst.octets());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&1234u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0u8; 20]);
        f
    }

    fn arp(tpa: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[38..42].copy_from_slice(&tpa.octets());
        f
    }

    fn ns(target: Ipv6Addr) -> Vec<u8> {
        let mut f = v6("ff02::1:ff00:100".parse().unwrap(), 58, 0);
        f[54] = 135;
        f[62..78].copy_from_slice(&target.octets());
        f
    }

    #[test]
    fn accepts_exactly_carpios_traffic() {
        let p = compile(&cfg()).unwrap();
        let other4 = Ipv4Addr::new(198, 18, 0, 2);
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("udp/53 to VIP", v4(VIP4, 17, 53, 0, 5), true),
            ("udp/53 to VIP, IP options", v4(VIP4, 17, 53, 0, 7), true),
            ("udp/54 to VIP", v4(VIP4, 17, 54, 0, 5), false),
            ("tcp/8000 to VIP (range lo)", v4(VIP4, 6, 8000, 0, 5), true),
            ("tcp/8099 to VIP (range hi)", v4(VIP4, 6, 8099, 0, 5), true),
            ("tcp/8100 to VIP", v4(VIP4, 6, 8100, 0, 5), false),
            ("tcp/7999 to VIP", v4(VIP4, 6, 7999, 0, 5), false),
            ("udp/53 to other", v4(other4, 17, 53, 0, 5), false),
            ("gre to VIP (no ports)", v4(VIP4, 47, 0, 0, 5), true),
            (
                "non-first fragment to VIP",
                v4(VIP4, 17, 9, 0x0010, 5),
                true,
            ),
            (
                "first fragment (MF) udp/53",
                v4(VIP4, 17, 53, 0x2000, 5),
                true,
            ),
            (
                "non-first fragment to other",
                v4(other4, 17, 53, 0x0010, 5),
                false,
            ),
            (
                "carp v4",
                v4(Ipv4Addr::new(224, 0, 0, 18), 112, 0, 0, 5),
                true,
            ),
            (
                "pfsync v4",
                v4(Ipv4Addr::new(224, 0, 0, 240), 240, 0, 0, 5),
                true,
            ),
            ("carp v6", v6("ff02::12".parse().unwrap(), 112, 0), true),
            ("udp/123 to VIP6", v6(VIP6, 17, 123), true),
            ("udp/124 to VIP6", v6(VIP6, 17, 124), false),
            (
                "udp/123 to other6",
                v6("2001:db8::1".parse().unwrap(), 17, 123),
                false,
            ),
            ("arp for VIP", arp(VIP4), true),
            ("arp for other", arp(other4), false),
            ("NS for VIP6", ns(VIP6), true),
            ("NS for other", ns("2001:db8::1".parse().unwrap()), false),
        ];
        for (name, frame, want) in cases {
            assert_eq!(run(&p, &frame) == ACCEPT, want, "{name}");
        }
    }

    #[test]
    fn every_truncation_is_rejected_not_panicking() {
        let p = compile(&cfg()).unwrap();
        let full = v4(VIP4, 17, 53, 0, 5);
        for n in 0..full.len() {
            // Shorter than the destination port: out-of-bounds load -> 0.
            let got = run(&p, &full[..n]);
            assert_eq!(got == ACCEPT, n >= 14 + 20 + 4, "len {n}");
        }
    }

    #[test]
    fn empty_config_rejects_everything() {
        let p = compile(&FilterConfig::default()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(run(&p, &v4(VIP4, 17, 53, 0, 5)), 0);
    }

    #[test]
    fn golden_carp_rule() {
        let p = compile(&FilterConfig {
            carp: true,
            ..Default::default()
        })
        .unwrap();
        // ldh [12]; jeq #0x800 jt 0 jf 3; ldb [23]; jeq #112 jt 0 jf 1; ret #0x40000; ...
        assert_eq!(
            p[0..5],
            [
                Insn {
                    code: 0x28,
                    jt: 0,
                    jf: 0,
                    k: 12
                },
                Insn {
                    code: 0x15,
                    jt: 0,
                    jf: 3,
                    k: 0x800
                },
                Insn {
                    code: 0x30,
                    jt: 0,
                    jf: 0,
                    k: 23
                },
                Insn {
                    code: 0x15,
                    jt: 0,
                    jf: 1,
                    k: 112
                },
                Insn {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: ACCEPT
                },
            ]
        );
        assert_eq!(p.len(), 11);
    }

    /// NAT return path: frames from a backend's address and source port are accepted, by
    /// source only (the same address as a destination is not), for both families.
    #[test]
    fn source_entries_match_the_return_path() {
        let backend4 = Ipv4Addr::new(198, 18, 0, 1); // the source v4() writes
        let p = compile(&FilterConfig {
            sources: vec![
                Service {
                    addr: backend4.into(),
                    proto: 17,
                    ports: Some((1234, 1234)),
                },
                Service {
                    addr: Ipv6Addr::UNSPECIFIED.into(), // the source v6() writes
                    proto: 6,
                    ports: Some((1000, 2000)),
                },
            ],
            ..Default::default()
        })
        .unwrap();
        let other = Ipv4Addr::new(198, 18, 9, 9);
        assert_ne!(run(&p, &v4(other, 17, 40000, 0, 5)), 0);
        // Wrong protocol, wrong source port, later fragment: not the return path.
        assert_eq!(run(&p, &v4(other, 6, 40000, 0, 5)), 0);
        let mut f = v4(other, 17, 40000, 0, 5);
        f[34..36].copy_from_slice(&1235u16.to_be_bytes());
        assert_eq!(run(&p, &f), 0);
        assert_eq!(run(&p, &v4(other, 17, 40000, 0x0010, 5)), 0);
        // Source port found behind IPv4 options.
        assert_ne!(run(&p, &v4(other, 17, 40000, 0, 6)), 0);
        // Destination == backend address is not a match.
        let mut f = v4(backend4, 17, 1234, 0, 5);
        f[26..30].copy_from_slice(&[198, 18, 7, 7]);
        assert_eq!(run(&p, &f), 0);
        // IPv6: sport 1234 within 1000..=2000 over TCP; UDP is not.
        assert_ne!(run(&p, &v6(VIP6, 6, 80)), 0);
        assert_eq!(run(&p, &v6(VIP6, 17, 80)), 0);
        // Every truncation of an accepted frame runs without panicking.
        let f = v4(other, 17, 40000, 0, 5);
        for n in 0..f.len() {
            let _ = run(&p, &f[..n]);
        }
        assert_eq!(run(&p, &f[..35]), 0);
    }

    #[test]
    fn too_many_services_is_an_error() {
        let services = (0..400u16)
            .map(|i| Service {
                addr: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i).into(),
                proto: 17,
                ports: Some((1, 2)),
            })
            .collect();
        let r = compile(&FilterConfig {
            services,
            ..Default::default()
        });
        assert!(matches!(r, Err(Error::TooLong(_))));
        let r = compile(&FilterConfig {
            services: vec![Service {
                addr: VIP4.into(),
                proto: 17,
                ports: Some((9, 1)),
            }],
            ..Default::default()
        });
        assert_eq!(r, Err(Error::BadRange(9, 1)));
    }
}
