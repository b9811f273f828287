//! `check dns`: one RFC 1035 query over UDP and the verdict on its reply. Pure functions over
//! bytes; the engine owns the socket. Every read of the reply is bounds-checked (`get`), so a
//! hostile or truncated reply is a named [`Error`], never a panic.
//!
//! ```text
//! header (RFC 1035 4.1.1), 12 bytes:
//!  0      2      4        6        8        10       12
//!  +------+------+--------+--------+--------+--------+
//!  |  ID  |FLAGS |QDCOUNT |ANCOUNT |NSCOUNT |ARCOUNT | question... answer RRs...
//!  +------+------+--------+--------+--------+--------+
//! FLAGS: QR(15) OPCODE(14..11) AA TC RD(8) RA Z AD CD RCODE(3..0)
//! RR: NAME TYPE(2) CLASS(2) TTL(4) RDLENGTH(2) RDATA
//! ```

use std::net::IpAddr;

const ID: usize = 0;
const FLAGS: usize = 2;
const QDCOUNT: usize = 4;
const ANCOUNT: usize = 6;
const HEADER_LEN: usize = 12;
const FLAG_QR: u16 = 0x8000;
/// Recursion desired: harmless to an authoritative server, needed by a resolver.
const FLAG_RD: u16 = 0x0100;
const RCODE_MASK: u16 = 0x000f;
const CLASS_IN: u16 = 1;
/// RR fixed part after the name: TYPE, CLASS, TTL, RDLENGTH.
const RR_FIXED_LEN: usize = 10;
const RR_RDLENGTH: usize = 8;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// Why a reply does not make the host up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its header or its records claim, or a bad name.
    Malformed,
    /// QR not set: a query, not a reply.
    NotReply,
    /// The reply's RCODE is not the expected one.
    Rcode(u8),
    /// The expected address is not among the answers.
    NoAnswer,
}

/// The query for `name` (dots separate labels; a trailing dot is allowed) and `qtype`, or
/// `None` for a name with an empty or over-long label.
pub fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&FLAG_RD.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q.extend_from_slice(&[0; 6]);
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_empty() {
        for label in name.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|l| (1..=63).contains(l))?;
            q.push(len);
            q.extend_from_slice(label.as_bytes());
        }
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(q)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Index just after the (possibly compressed) name at `at`.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    // A name has at most 127 labels (255 bytes); more means a malformed reply.
    for _ in 0..128 {
        let len = *b.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return b.get(at + 1).map(|_| at + 2),
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
    None
}

/// Whether `reply` answers query `id` at all (a stray or late datagram is not an error: the
/// check keeps waiting for its own).
pub fn is_for(reply: &[u8], id: u16) -> bool {
    be16(reply, ID) == Some(id)
}

/// The verdict on the reply to our query: `Ok` when RCODE is `rcode` and, if `answer` is
/// given, an A/AAAA answer record holds it.
pub fn check(reply: &[u8], rcode: u8, answer: Option<IpAddr>) -> Result<(), Error> {
    if reply.len() < HEADER_LEN {
        return Err(Error::Malformed);
    }
    let flags = be16(reply, FLAGS).ok_or(Error::Malformed)?;
    if flags & FLAG_QR == 0 {
        return Err(Error::NotReply);
    }
    let got = u8::try_from(flags & RCODE_MASK).unwrap_or(u8::MAX);
    if got != rcode {
        return Err(Error::Rcode(got));
    }
    let Some(want) = answer else { return Ok(()) };
    let qd = be16(reply, QDCOUNT).ok_or(Error::Malformed)?;
    let an = be16(reply, ANCOUNT).ok_or(Error::Malformed)?;
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        // QTYPE + QCLASS after the name.
        at = skip_name(reply, at).ok_or(Error::Malformed)? + 4;
    }
    for _ in 0..an {
        at = skip_name(reply, at).ok_or(Error::Malformed)?;
        let rtype = be16(reply, at).ok_or(Error::Malformed)?;
        let rdlen = usize::from(be16(reply, at + RR_RDLENGTH).ok_or(Error::Malformed)?);
        let data = reply
            .get(at + RR_FIXED_LEN..at + RR_FIXED_LEN + rdlen)
            .ok_or(Error::Malformed)?;
        let addr = match (rtype, data.len()) {
            (TYPE_A, 4) => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
            (TYPE_AAAA, 16) => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
            _ => None,
        };
        if addr == Some(want) {
            return Ok(());
        }
        at += RR_FIXED_LEN + rdlen;
    }
    Err(Error::NoAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dig +norec www.example.org A` as sent by dig 9.18 minus EDNS, with id 0x1234 and RD.
    const QUERY: [u8; 33] = [
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, //
        3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'o', b'r', b'g', 0,
        0, 1, 0, 1,
    ];

    fn reply(rcode: u8, answers: &[[u8; 4]]) -> Vec<u8> {
        let mut r = QUERY.to_vec();
        r[2] = 0x81;
        r[3] = 0x80 | rcode;
        r[7] = u8::try_from(answers.len()).unwrap();
        for a in answers {
            // Name compressed to the question (offset 12), A, IN, TTL 300, RDLENGTH 4.
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
            r.extend_from_slice(a);
        }
        r
    }

    #[test]
    fn query_golden() {
        assert_eq!(query(0x1234, "www.example.org", 1).unwrap(), QUERY);
        assert_eq!(query(0x1234, "www.example.org.", 1).unwrap(), QUERY);
        assert_eq!(query(1, ".", 28).unwrap()[12..], [0, 0, 28, 0, 1]);
        assert!(query(1, "a..b", 1).is_none());
        assert!(query(1, &"x".repeat(64), 1).is_none());
    }

    #[test]
    fn verdicts() {
        let a = [198, 18, 0, 10];
        assert_eq!(check(&reply(0, &[a]), 0, None), Ok(()));
        assert_eq!(
            check(&reply(0, &[[1, 2, 3, 4], a]), 0, Some(a.into())),
            Ok(())
        );
        assert_eq!(
            check(&reply(0, &[[1, 2, 3, 4]]), 0, Some(a.into())),
            Err(Error::NoAnswer)
        );
        assert_eq!(check(&reply(3, &[]), 0, None), Err(Error::Rcode(3)));
        assert_eq!(check(&reply(3, &[]), 3, None), Ok(()));
        assert_eq!(check(&QUERY, 0, None), Err(Error::NotReply));
        assert!(is_for(&QUERY, 0x1234) && !is_for(&QUERY, 0x1235) && !is_for(&[0x12], 0x12));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = reply(0, &[[198, 18, 0, 10]]);
        for len in 0..full.len() {
            let r = check(&full[..len], 0, Some([198, 18, 0, 10].into()));
            assert!(r.is_err(), "len {len}");
        }
        assert_eq!(check(&full, 0, Some([198, 18, 0, 10].into())), Ok(()));
    }

    #[test]
    fn pointer_loops_and_bad_labels_are_malformed() {
        let mut r = reply(0, &[]);
        r[7] = 1;
        // A name of 0x40-type label (reserved), then nothing.
        r.extend_from_slice(&[0x40, 0, 1]);
        assert_eq!(
            check(&r, 0, Some([1, 1, 1, 1].into())),
            Err(Error::Malformed)
        );
    }
}
