//! Protocol state of a flow and its idle timeout, as pf tracks them.
//!
//! The timeout classes are pf's `PFTM_*` indices (`sys/net/pfvar.h`) with pf's default values
//! (`sys/net/pf_ioctl.c` `pfattach`), so pfsync can put them on the wire unchanged. Peer states
//! are pf's codes: TCP uses `TCPS_*` (`sys/netinet/tcp_fsm.h`), UDP and other protocols use
//! `PFUDPS_*` / `PFOTHERS_*` (0 no traffic, 1 single, 2 multiple).
//!
//! The TCP tracker follows `pf_tcp_track_full()` in `sys/net/pf.c` without the sequence-window
//! checks (an L4 load balancer does not scrub): SYN moves the sender to SYN_SENT, FIN to
//! CLOSING, an ACK moves the other side from SYN_SENT to ESTABLISHED or from CLOSING to
//! FIN_WAIT_2, RST puts both in TIME_WAIT; then the timeout class is chosen from the pair.
//! Flows that only ever see one direction (DSR, IPIP/GUE: the backend answers the client
//! directly) are tracked *one-sided*: the client's handshake ACK implies the server's SYN-ACK.
//! UDP follows `pf_test_state()`'s "other protocols" branch.
//!
//! Everything here is plain arithmetic on bytes: no input can make it panic.

/// A pf timeout class (`PFTM_*`), in pf's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Pftm {
    TcpFirst = 0,
    TcpOpening = 1,
    TcpEstablished = 2,
    TcpClosing = 3,
    TcpFinWait = 4,
    TcpClosed = 5,
    UdpFirst = 6,
    UdpSingle = 7,
    UdpMultiple = 8,
    IcmpFirst = 9,
    IcmpError = 10,
    OtherFirst = 11,
    OtherSingle = 12,
    OtherMultiple = 13,
}

impl Pftm {
    /// Every class, by index.
    pub const ALL: [Pftm; 14] = [
        Pftm::TcpFirst,
        Pftm::TcpOpening,
        Pftm::TcpEstablished,
        Pftm::TcpClosing,
        Pftm::TcpFinWait,
        Pftm::TcpClosed,
        Pftm::UdpFirst,
        Pftm::UdpSingle,
        Pftm::UdpMultiple,
        Pftm::IcmpFirst,
        Pftm::IcmpError,
        Pftm::OtherFirst,
        Pftm::OtherSingle,
        Pftm::OtherMultiple,
    ];

    /// The class with pf index `i`, if any.
    pub fn from_index(i: u8) -> Option<Pftm> {
        Pftm::ALL.get(usize::from(i)).copied()
    }

    /// pf.conf's name for it (`set timeout tcp.first 120`).
    pub const fn name(self) -> &'static str {
        match self {
            Pftm::TcpFirst => "tcp.first",
            Pftm::TcpOpening => "tcp.opening",
            Pftm::TcpEstablished => "tcp.established",
            Pftm::TcpClosing => "tcp.closing",
            Pftm::TcpFinWait => "tcp.finwait",
            Pftm::TcpClosed => "tcp.closed",
            Pftm::UdpFirst => "udp.first",
            Pftm::UdpSingle => "udp.single",
            Pftm::UdpMultiple => "udp.multiple",
            Pftm::IcmpFirst => "icmp.first",
            Pftm::IcmpError => "icmp.error",
            Pftm::OtherFirst => "other.first",
            Pftm::OtherSingle => "other.single",
            Pftm::OtherMultiple => "other.multiple",
        }
    }

    /// Classes a full table never evicts early: a live, two-way conversation (pf would keep
    /// it for tcp.established / udp.multiple), as opposed to half-open, closing or one-packet
    /// flows.
    pub const fn is_established(self) -> bool {
        matches!(
            self,
            Pftm::TcpEstablished | Pftm::UdpMultiple | Pftm::OtherMultiple
        )
    }
}

/// Idle timeouts in seconds per class (`TimeoutsConfig` in all but name: plain data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub secs: [u32; 14],
}

impl Default for Timeouts {
    /// pf's defaults (`PFTM_*_VAL` in pfvar.h).
    fn default() -> Self {
        Timeouts {
            secs: [
                120,   // tcp.first
                30,    // tcp.opening
                86400, // tcp.established
                900,   // tcp.closing
                45,    // tcp.finwait
                90,    // tcp.closed
                60,    // udp.first
                30,    // udp.single
                60,    // udp.multiple
                20,    // icmp.first
                10,    // icmp.error
                60,    // other.first
                30,    // other.single
                60,    // other.multiple
            ],
        }
    }
}

impl Timeouts {
    /// The timeout for `class`; relayd's `session timeout` (`session`) replaces
    /// tcp.established only, as `pfe_filter.c` `sync_ruleset()` sets
    /// `rule.timeout[PFTM_TCP_ESTABLISHED]` for TCP redirects and nothing else.
    #[inline]
    pub fn get(&self, class: Pftm, session: Option<u32>) -> u32 {
        match (class, session) {
            (Pftm::TcpEstablished, Some(s)) => s,
            _ => self.secs[class as usize],
        }
    }
}

/// pf's TCP FSM codes (`tcp_fsm.h`), the per-peer TCP state.
pub mod tcps {
    pub const CLOSED: u8 = 0;
    pub const LISTEN: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECEIVED: u8 = 3;
    pub const ESTABLISHED: u8 = 4;
    pub const CLOSE_WAIT: u8 = 5;
    pub const FIN_WAIT_1: u8 = 6;
    pub const CLOSING: u8 = 7;
    pub const LAST_ACK: u8 = 8;
    pub const FIN_WAIT_2: u8 = 9;
    pub const TIME_WAIT: u8 = 10;
    /// pf's syn-proxy pseudo-states (pfvar.h), carried by pfsync.
    pub const PROXY_SRC: u8 = 11;
    pub const PROXY_DST: u8 = 12;
}

/// pf's `PFUDPS_*` / `PFOTHERS_*` codes.
pub mod udps {
    pub const NO_TRAFFIC: u8 = 0;
    pub const SINGLE: u8 = 1;
    pub const MULTIPLE: u8 = 2;
}

/// TCP header flag bits.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Which way a packet travels relative to the flow: `Orig` is client → VIP (pf's state
/// "src" peer, the side that created the state), `Reply` is backend → client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Orig,
    Reply,
}

/// The two peers' states (pf `state->src.state`, `state->dst.state`) and the timeout class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    pub src: u8,
    pub dst: u8,
    pub class: Pftm,
}

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

/// The state of a flow created by its first packet (`pf_create_state()`).
///
/// TCP: a SYN gives SYN_SENT/CLOSED and tcp.first, as pf. A first packet without SYN is a flow
/// picked up mid-stream (after a worker restart or a failover whose pfsync copy was lost);
/// pf with `flags S/SA` would not create state for it, but a load balancer whose scheduler is
/// consistent (Maglev) must keep forwarding it, so both peers start ESTABLISHED. A RST-only
/// first packet starts closed.
pub fn create(proto: u8, tcp_flags: u8) -> Track {
    match proto {
        PROTO_TCP => {
            if tcp_flags & flags::RST != 0 {
                Track {
                    src: tcps::TIME_WAIT,
                    dst: tcps::TIME_WAIT,
                    class: Pftm::TcpClosed,
                }
            } else if tcp_flags & flags::SYN != 0 {
                Track {
                    src: tcps::SYN_SENT,
                    dst: tcps::CLOSED,
                    class: Pftm::TcpFirst,
                }
            } else {
                Track {
                    src: tcps::ESTABLISHED,
                    dst: tcps::ESTABLISHED,
                    class: Pftm::TcpEstablished,
                }
            }
        }
        PROTO_UDP => Track {
            src: udps::SINGLE,
            dst: udps::NO_TRAFFIC,
            class: Pftm::UdpFirst,
        },
        PROTO_ICMP | PROTO_ICMPV6 => Track {
            src: udps::SINGLE,
            dst: udps::NO_TRAFFIC,
            class: Pftm::IcmpFirst,
        },
        _ => Track {
            src: udps::SINGLE,
            dst: udps::NO_TRAFFIC,
            class: Pftm::OtherFirst,
        },
    }
}

/// Advances `t` for a packet of `proto` travelling `dir` with `tcp_flags`.
pub fn advance(t: Track, proto: u8, dir: Dir, tcp_flags: u8, one_sided: bool) -> Track {
    match proto {
        PROTO_TCP => advance_tcp(t, dir, tcp_flags, one_sided),
        PROTO_ICMP | PROTO_ICMPV6 => {
            // pf_test_state_icmp(): any later packet (the reply) switches to icmp.error.
            let (src, dst) = peers_other(t, dir);
            Track {
                src,
                dst,
                class: Pftm::IcmpError,
            }
        }
        _ => {
            let (src, dst) = peers_other(t, dir);
            let both = src == udps::MULTIPLE && dst == udps::MULTIPLE;
            let class = match (proto == PROTO_UDP, both) {
                (true, true) => Pftm::UdpMultiple,
                (true, false) => Pftm::UdpSingle,
                (false, true) => Pftm::OtherMultiple,
                (false, false) => Pftm::OtherSingle,
            };
            Track { src, dst, class }
        }
    }
}

/// pf_test_state() for "other" protocols: the sender becomes SINGLE, and if the receiver had
/// already sent (SINGLE), it becomes MULTIPLE.
fn peers_other(t: Track, dir: Dir) -> (u8, u8) {
    let (mut me, mut other) = match dir {
        Dir::Orig => (t.src, t.dst),
        Dir::Reply => (t.dst, t.src),
    };
    if me < udps::SINGLE {
        me = udps::SINGLE;
    }
    if other == udps::SINGLE {
        other = udps::MULTIPLE;
    }
    match dir {
        Dir::Orig => (me, other),
        Dir::Reply => (other, me),
    }
}

fn advance_tcp(t: Track, dir: Dir, f: u8, one_sided: bool) -> Track {
    let (mut src, mut dst) = match dir {
        Dir::Orig => (t.src, t.dst),
        Dir::Reply => (t.dst, t.src),
    };
    if f & flags::SYN != 0 && src < tcps::SYN_SENT {
        src = tcps::SYN_SENT;
    }
    if f & flags::FIN != 0 && src < tcps::CLOSING {
        src = tcps::CLOSING;
    }
    if f & flags::ACK != 0 {
        if dst == tcps::SYN_SENT {
            dst = tcps::ESTABLISHED;
        } else if dst == tcps::CLOSING {
            dst = tcps::FIN_WAIT_2;
        } else if one_sided && f & flags::SYN == 0 && src == tcps::SYN_SENT && dst < tcps::SYN_SENT
        {
            // One-sided: the client's handshake ACK proves the unseen SYN-ACK.
            src = tcps::ESTABLISHED;
            dst = tcps::ESTABLISHED;
        }
    }
    if f & flags::RST != 0 {
        src = tcps::TIME_WAIT;
        dst = tcps::TIME_WAIT;
    }
    let (s, d) = match dir {
        Dir::Orig => (src, dst),
        Dir::Reply => (dst, src),
    };
    Track {
        src: s,
        dst: d,
        class: tcp_class(s, d),
    }
}

/// pf_tcp_track_full()'s "update expire time" ladder.
pub fn tcp_class(src: u8, dst: u8) -> Pftm {
    if src >= tcps::FIN_WAIT_2 && dst >= tcps::FIN_WAIT_2 {
        Pftm::TcpClosed
    } else if src >= tcps::CLOSING && dst >= tcps::CLOSING {
        Pftm::TcpFinWait
    } else if src < tcps::ESTABLISHED || dst < tcps::ESTABLISHED {
        Pftm::TcpOpening
    } else if src >= tcps::CLOSING || dst >= tcps::CLOSING {
        Pftm::TcpClosing
    } else {
        Pftm::TcpEstablished
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;

    fn run(steps: &[(Dir, u8)], one_sided: bool) -> Vec<Pftm> {
        let mut t = create(PROTO_TCP, steps[0].1);
        let mut out = vec![t.class];
        for &(d, f) in &steps[1..] {
            t = advance(t, PROTO_TCP, d, f, one_sided);
            out.push(t.class);
        }
        out
    }

    #[test]
    fn tcp_full_lifecycle_two_sided() {
        use Dir::*;
        let got = run(
            &[
                (Orig, SYN),
                (Reply, SYN | ACK),
                (Orig, ACK),
                (Orig, ACK),
                (Orig, FIN | ACK),
                (Reply, ACK),
                (Reply, FIN | ACK),
                (Orig, ACK),
            ],
            false,
        );
        assert_eq!(
            got,
            vec![
                Pftm::TcpFirst,
                Pftm::TcpOpening, // SYN-ACK: client ESTABLISHED, server SYN_SENT
                Pftm::TcpEstablished,
                Pftm::TcpEstablished,
                Pftm::TcpClosing,
                Pftm::TcpClosing, // client FIN acked: FIN_WAIT_2 vs ESTABLISHED
                Pftm::TcpFinWait,
                Pftm::TcpClosed,
            ]
        );
    }

    #[test]
    fn tcp_one_sided_handshake_and_rst() {
        use Dir::*;
        let got = run(
            &[(Orig, SYN), (Orig, ACK), (Orig, FIN | ACK), (Orig, RST)],
            true,
        );
        assert_eq!(
            got,
            vec![
                Pftm::TcpFirst,
                Pftm::TcpEstablished,
                Pftm::TcpClosing,
                Pftm::TcpClosed
            ]
        );
        // Two-sided tracking of the same packets never reaches established.
        let got = run(&[(Orig, SYN), (Orig, ACK)], false);
        assert_eq!(got, vec![Pftm::TcpFirst, Pftm::TcpOpening]);
    }

    #[test]
    fn tcp_midstream_and_rst_first() {
        assert_eq!(create(PROTO_TCP, ACK).class, Pftm::TcpEstablished);
        assert_eq!(create(PROTO_TCP, RST | ACK).class, Pftm::TcpClosed);
    }

    #[test]
    fn udp_single_then_multiple() {
        let t = create(PROTO_UDP, 0);
        assert_eq!(t.class, Pftm::UdpFirst);
        let t = advance(t, PROTO_UDP, Dir::Orig, 0, false);
        assert_eq!(t.class, Pftm::UdpSingle);
        // The answer makes the client MULTIPLE; pf needs one more client packet to see the
        // server SINGLE and lift it too.
        let t = advance(t, PROTO_UDP, Dir::Reply, 0, false);
        assert_eq!((t.src, t.dst, t.class), (2, 1, Pftm::UdpSingle));
        let t = advance(t, PROTO_UDP, Dir::Orig, 0, false);
        assert_eq!((t.src, t.dst, t.class), (2, 2, Pftm::UdpMultiple));
        let o = advance(create(47, 0), 47, Dir::Reply, 0, false);
        assert_eq!(o.class, Pftm::OtherSingle);
        let o = advance(o, 47, Dir::Orig, 0, false);
        assert_eq!(o.class, Pftm::OtherMultiple);
    }

    #[test]
    fn icmp_first_then_error_class() {
        let t = create(PROTO_ICMP, 0);
        assert_eq!(t.class, Pftm::IcmpFirst);
        assert_eq!(
            advance(t, PROTO_ICMP, Dir::Reply, 0, false).class,
            Pftm::IcmpError
        );
    }

    #[test]
    fn defaults_are_pfs_and_session_overrides_established_only() {
        let t = Timeouts::default();
        let want = [
            (Pftm::TcpFirst, 120),
            (Pftm::TcpOpening, 30),
            (Pftm::TcpEstablished, 86400),
            (Pftm::TcpClosing, 900),
            (Pftm::TcpFinWait, 45),
            (Pftm::TcpClosed, 90),
            (Pftm::UdpFirst, 60),
            (Pftm::UdpSingle, 30),
            (Pftm::UdpMultiple, 60),
            (Pftm::IcmpFirst, 20),
            (Pftm::IcmpError, 10),
        ];
        for (c, s) in want {
            assert_eq!(t.get(c, None), s, "{}", c.name());
        }
        assert_eq!(t.get(Pftm::TcpEstablished, Some(600)), 600);
        assert_eq!(t.get(Pftm::TcpOpening, Some(600)), 30);
        assert_eq!(t.get(Pftm::UdpMultiple, Some(600)), 60);
        for (i, c) in Pftm::ALL.iter().enumerate() {
            assert_eq!(Pftm::from_index(i as u8), Some(*c));
        }
        assert_eq!(Pftm::from_index(14), None);
    }
}
