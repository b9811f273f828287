//! `check icmp`: the echo request and the match of its reply (usr.sbin/relayd/check_icmp.c:
//! 64-byte packets, id `getpid() & 0xffff`, a sequence number, and the host id in the payload
//! to match the reply). Pure; the engine owns the socket. On a Linux ping socket
//! (SOCK_DGRAM/IPPROTO_ICMP) the kernel rewrites the id, so the match then skips it (spec §9
//! item 15); on a raw IPv4 socket the reply starts with the IP header, which is skipped.
//!
//! ```text
//! RFC 792 / RFC 4443 echo:
//!  0      1      2          4      6      8
//!  +------+------+----------+------+------+----------------------+
//!  | type | code | checksum |  id  | seq  | payload (56 bytes)   |
//!  +------+------+----------+------+------+----------------------+
//! ```

use crate::wire::checksum;

const TYPE: usize = 0;
const CHECKSUM: usize = 2;
const ID: usize = 4;
const SEQ: usize = 6;
const PAYLOAD: usize = 8;
/// relayd's ICMP_BUF_SIZE: the whole echo message is 64 bytes.
pub const ECHO_LEN: usize = 64;
const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const MAGIC: &[u8] = b"carpio health ";
/// IPv4 IHL field mask and unit.
const IHL_MASK: u8 = 0x0f;

/// The echo request for host `host_id`. The checksum is filled for ICMPv4; for ICMPv6 the
/// kernel computes it (it covers a pseudo-header the socket owns).
pub fn request(v6: bool, id: u16, seq: u16, host_id: u32) -> [u8; ECHO_LEN] {
    let mut p = [0u8; ECHO_LEN];
    p[TYPE] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    p[ID..ID + 2].copy_from_slice(&id.to_be_bytes());
    p[SEQ..SEQ + 2].copy_from_slice(&seq.to_be_bytes());
    p[PAYLOAD..PAYLOAD + MAGIC.len()].copy_from_slice(MAGIC);
    let at = PAYLOAD + MAGIC.len();
    p[at..at + 4].copy_from_slice(&host_id.to_be_bytes());
    if !v6 {
        let sum = checksum::checksum(&p);
        p[CHECKSUM..CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// Whether `packet` (as read from the socket) is the reply to `sent`. `ip_header`: the socket
/// hands the IPv4 header too (a raw IPv4 socket). `check_id`: the id is ours to match (raw
/// sockets; ping sockets rewrite it).
pub fn is_reply(packet: &[u8], sent: &[u8; ECHO_LEN], ip_header: bool, check_id: bool) -> bool {
    let icmp = if ip_header {
        let Some(&vihl) = packet.first() else {
            return false;
        };
        match packet.get(usize::from(vihl & IHL_MASK) * 4..) {
            Some(rest) => rest,
            None => return false,
        }
    } else {
        packet
    };
    let want_type = if sent.first() == Some(&ECHO_REQUEST_V6) {
        ECHO_REPLY_V6
    } else {
        ECHO_REPLY_V4
    };
    icmp.get(TYPE) == Some(&want_type)
        && (!check_id || icmp.get(ID..ID + 2) == sent.get(ID..ID + 2))
        && icmp.get(SEQ..SEQ + 2) == sent.get(SEQ..SEQ + 2)
        && icmp.get(PAYLOAD..ECHO_LEN) == sent.get(PAYLOAD..ECHO_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_golden_and_checksum() {
        let p = request(false, 0x4242, 7, 3);
        assert_eq!(p[..8], [8, 0, p[2], p[3], 0x42, 0x42, 0, 7]);
        assert_eq!(&p[8..22], b"carpio health ");
        assert_eq!(p[22..26], [0, 0, 0, 3]);
        assert_eq!(p[26..], [0u8; 38]);
        // A correct RFC 1071 checksum sums to zero over the whole message.
        assert_eq!(checksum::checksum(&p), 0);
        let q = request(true, 1, 1, 1);
        assert_eq!((q[0], q[2], q[3]), (128, 0, 0));
    }

    #[test]
    fn replies() {
        let sent = request(false, 0x4242, 7, 3);
        let mut reply = sent;
        reply[0] = 0;
        assert!(is_reply(&reply, &sent, false, true));
        let mut rewritten = reply;
        rewritten[4] = 9;
        assert!(is_reply(&rewritten, &sent, false, false));
        assert!(!is_reply(&rewritten, &sent, false, true));
        let mut other_host = reply;
        other_host[25] = 4;
        assert!(!is_reply(&other_host, &sent, false, false));
        assert!(
            !is_reply(&sent, &sent, false, false),
            "our own request is no reply"
        );
        let mut with_ip = vec![0x45u8];
        with_ip.extend_from_slice(&[0; 19]);
        with_ip.extend_from_slice(&reply);
        assert!(is_reply(&with_ip, &sent, true, true));
        for len in 0..with_ip.len() {
            assert!(!is_reply(&with_ip[..len], &sent, true, true), "len {len}");
        }
    }
}
