//! CARP advertisement (IP protocol 112), byte-compatible with OpenBSD `sys/netinet/ip_carp.h`
//! (`struct carp_header`) and the HMAC of `sys/netinet/ip_carp.c` (`carp_hmac_prepare_ctx`,
//! `carp_hmac_generate`, `carp_hmac_verify`).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  |     VHID      |    AdvSkew    |    AuthLen    |  0
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Demote     |    AdvBase    |           Checksum            |  4
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Counter (8 bytes, the replay cookie,      |  8
//! |                     sent exactly as stored)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               | 16
//! |                 HMAC-SHA1 digest (20 bytes)                   |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  36
//! ```
//!
//! The checksum is the RFC 1071 sum over these 36 bytes only, with no pseudo-header, for IPv6
//! too (unlike VRRPv3). AuthLen is always 7 (32-bit words of counter + digest).
//!
//! Parsing validates the length once ([`Packet::new_checked`]); after that no accessor can
//! panic, whatever the bytes. Version and type are *not* checked by [`Repr::parse`], because
//! OpenBSD checks the version only after the vhid lookup (so the reject is `badvhid` before
//! `badver`); `carp::Interface` applies that order.
//!
//! # HMAC
//! OpenBSD builds HMAC-SHA1 by hand: key = the passphrase copied with `strlcpy` into a 20-byte
//! buffer (at most 19 bytes, NUL-padded), zero-extended to 64, XORed with 0x36 / 0x5c. That is
//! exactly RFC 2104 HMAC with the 20-byte key (a key shorter than the SHA-1 block is zero-padded
//! to 64 bytes by RFC 2104 too), so [`Auth`] uses the `hmac` crate's `Hmac<Sha1>` keyed with
//! those 20 bytes; a test checks it against a manual ipad/opad construction.

use std::net::{Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, KeyInit, Mac};
use sha1::{Digest, Sha1};

use super::checksum;

/// IP protocol number of CARP (`IPPROTO_CARP`).
pub const IPPROTO_CARP: u8 = 112;
/// The only protocol version (`CARP_VERSION`).
pub const VERSION: u8 = 2;
/// The only message type (`CARP_ADVERTISEMENT`).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// AuthLen as sent by OpenBSD: 7 32-bit words (counter + digest).
pub const AUTHLEN: u8 = 7;
/// TTL / hop limit of every advertisement, sent and required on receive (`CARP_DFLTTL`).
pub const TTL: u8 = 255;
/// IPv4 group address (`INADDR_CARP_GROUP`).
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 group address (link-local scope).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Length of the CARP header (`sizeof(struct carp_header)`).
pub const HEADER_LEN: usize = 36;
/// Length of the HMAC-SHA1 digest.
pub const MD_LEN: usize = 20;
/// Length of the counter (replay cookie).
pub const COUNTER_LEN: usize = 8;
/// Length of the key buffer (`carpr_key`); the passphrase keeps at most `KEY_LEN - 1` bytes.
pub const KEY_LEN: usize = 20;

mod field {
    use core::ops::Range;
    /// Version (high nibble) and type (low nibble).
    pub const VER_TYPE: usize = 0;
    pub const VHID: usize = 1;
    pub const ADVSKEW: usize = 2;
    pub const AUTHLEN: usize = 3;
    /// Sender's demotion count (`carp_demote`, formerly `carp_pad1`).
    pub const DEMOTE: usize = 4;
    pub const ADVBASE: usize = 5;
    pub const CKSUM: Range<usize> = 6..8;
    pub const COUNTER: Range<usize> = 8..16;
    pub const MD: Range<usize> = 16..36;
}

/// Why a buffer is not a CARP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than [`HEADER_LEN`].
    Truncated,
}

/// A read/write view of a CARP header over a buffer of at least [`HEADER_LEN`] bytes.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer`, checking that it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 36 header bytes. `new_checked` guaranteed the length, so `get` cannot fail; the
    /// fallback keeps accessors panic-free even so.
    fn header(&self) -> &[u8; HEADER_LEN] {
        const ZERO: [u8; HEADER_LEN] = [0; HEADER_LEN];
        self.buffer
            .as_ref()
            .get(..HEADER_LEN)
            .and_then(|s| <&[u8; HEADER_LEN]>::try_from(s).ok())
            .unwrap_or(&ZERO)
    }

    pub fn version(&self) -> u8 {
        self.header()[field::VER_TYPE] >> 4
    }
    pub fn kind(&self) -> u8 {
        self.header()[field::VER_TYPE] & 0x0f
    }
    pub fn vhid(&self) -> u8 {
        self.header()[field::VHID]
    }
    pub fn advskew(&self) -> u8 {
        self.header()[field::ADVSKEW]
    }
    pub fn authlen(&self) -> u8 {
        self.header()[field::AUTHLEN]
    }
    pub fn demote(&self) -> u8 {
        self.header()[field::DEMOTE]
    }
    pub fn advbase(&self) -> u8 {
        self.header()[field::ADVBASE]
    }
    pub fn checksum(&self) -> u16 {
        let h = self.header();
        u16::from_be_bytes([h[field::CKSUM.start], h[field::CKSUM.start + 1]])
    }
    pub fn counter(&self) -> [u8; COUNTER_LEN] {
        let mut c = [0; COUNTER_LEN];
        c.copy_from_slice(&self.header()[field::COUNTER]);
        c
    }
    pub fn md(&self) -> [u8; MD_LEN] {
        let mut m = [0; MD_LEN];
        m.copy_from_slice(&self.header()[field::MD]);
        m
    }

    /// True when the one's-complement sum over the 36 header bytes (checksum included) is
    /// 0xffff, i.e. the RFC 1071 check of `carp_proto_input` passes. Bytes past the header
    /// are not summed: OpenBSD's IPv6 path sums exactly `sizeof(struct carp_header)`.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn header_mut(&mut self) -> Option<&mut [u8]> {
        self.buffer.as_mut().get_mut(..HEADER_LEN)
    }

    /// Recomputes and stores the checksum over the 36 header bytes.
    pub fn fill_checksum(&mut self) {
        if let Some(h) = self.header_mut() {
            h[field::CKSUM].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(h);
            h[field::CKSUM].copy_from_slice(&c.to_be_bytes());
        }
    }
}

/// A parsed CARP header, plain data. Version, type and authlen are kept as received so the
/// receive path can reject them in OpenBSD's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub version: u8,
    pub kind: u8,
    pub vhid: u8,
    pub advskew: u8,
    pub authlen: u8,
    pub demote: u8,
    pub advbase: u8,
    pub counter: [u8; COUNTER_LEN],
    pub md: [u8; MD_LEN],
}

impl Repr {
    /// An advertisement as OpenBSD sends it (version 2, type 1, authlen 7), digest zero until
    /// [`Auth::sign`] fills it.
    pub fn advertisement(vhid: u8, advbase: u8, advskew: u8, demote: u8, counter: [u8; 8]) -> Self {
        Self {
            version: VERSION,
            kind: TYPE_ADVERTISEMENT,
            vhid,
            advskew,
            authlen: AUTHLEN,
            demote,
            advbase,
            counter,
            md: [0; MD_LEN],
        }
    }

    /// Reads every field. The checksum is not checked here (see [`Packet::verify_checksum`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        Self {
            version: packet.version(),
            kind: packet.kind(),
            vhid: packet.vhid(),
            advskew: packet.advskew(),
            authlen: packet.authlen(),
            demote: packet.demote(),
            advbase: packet.advbase(),
            counter: packet.counter(),
            md: packet.md(),
        }
    }

    /// Writes the 36-byte header into `buf` and fills the checksum.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        h[field::VER_TYPE] = (self.version << 4) | (self.kind & 0x0f);
        h[field::VHID] = self.vhid;
        h[field::ADVSKEW] = self.advskew;
        h[field::AUTHLEN] = self.authlen;
        h[field::DEMOTE] = self.demote;
        h[field::ADVBASE] = self.advbase;
        h[field::COUNTER].copy_from_slice(&self.counter);
        h[field::MD].copy_from_slice(&self.md);
        let mut p = Packet { buffer: h };
        p.fill_checksum();
        Ok(())
    }

    /// The header as an array.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        // Cannot fail: the array is exactly HEADER_LEN long.
        let _ = self.emit(&mut b);
        b
    }
}

/// Builds the 20-byte key from a passphrase the way `ifconfig carpN pass STR` does: `strlcpy`
/// into `carpr_key[20]`, so at most 19 bytes survive, then NUL padding. No passphrase gives 20
/// zero bytes. The key is not hashed.
pub fn key_from_passphrase(pass: &[u8]) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    // strlcpy stops at the first NUL as well.
    let n = pass
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(pass.len())
        .min(KEY_LEN - 1);
    key[..n].copy_from_slice(&pass[..n]);
    key
}

/// Which precomputed HMAC context (`HMAC_ORIG`, `HMAC_NOV6LL` in ip_carp.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// IPv6 link-local addresses included (scope word cleared).
    Orig,
    /// IPv6 link-local addresses left out; used on transmit.
    NoV6Ll,
}

/// The address material a vhost authenticates: `carp_hmac_prepare_ctx` inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInput<'a> {
    pub key: [u8; KEY_LEN],
    /// The interface lladdr, only when OpenBSD hashes it: a hand-set lladdr (neither the
    /// parent's MAC nor this vhost's virtual MAC) on the leader vhost.
    pub lladdr: Option<[u8; 6]>,
    pub vhid: u8,
    pub v4: &'a [Ipv4Addr],
    pub v6: &'a [Ipv6Addr],
}

/// Precomputed HMAC-SHA1 contexts of one vhost: everything up to the counter is hashed once;
/// signing or verifying an advertisement clones a context and adds the 8 counter bytes, with no
/// allocation.
#[derive(Clone)]
pub struct Auth {
    orig: Hmac<Sha1>,
    nov6ll: Hmac<Sha1>,
}

impl core::fmt::Debug for Auth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

/// True for the addresses whose embedded scope word OpenBSD clears and leaves out of NOV6LL
/// (`IN6_IS_SCOPE_EMBED`: link-local unicast, interface- and link-local multicast).
fn scope_embedded(a: &Ipv6Addr) -> bool {
    let o = a.octets();
    (o[0] == 0xfe && (o[1] & 0xc0) == 0x80) || (o[0] == 0xff && matches!(o[1] & 0x0f, 0x01 | 0x02))
}

impl Auth {
    /// Prepares both contexts (`carp_hmac_prepare_ctx`). Addresses are sorted here, IPv4 by
    /// numeric value and IPv6 by memcmp, and duplicates are hashed once, as OpenBSD's
    /// "next larger" selection loop does.
    pub fn new(input: &AuthInput<'_>) -> Self {
        Self {
            orig: Self::prepare(input, Context::Orig),
            nov6ll: Self::prepare(input, Context::NoV6Ll),
        }
    }

    fn prepare(input: &AuthInput<'_>, ctx: Context) -> Hmac<Sha1> {
        // A 20-byte key is always accepted by HMAC (any length is); the fallback never runs.
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&input.key)
            .unwrap_or_else(|_| <Hmac<Sha1> as KeyInit>::new(&Default::default()));
        // ip_carp.c feeds version and type as two separate bytes, not the packed header byte.
        mac.update(&[VERSION, TYPE_ADVERTISEMENT]);
        if let Some(ll) = input.lladdr {
            mac.update(&ll);
        }
        mac.update(&[input.vhid]);
        let mut v4: Vec<u32> = input.v4.iter().map(|a| u32::from(*a)).collect();
        v4.sort_unstable();
        v4.dedup();
        for a in v4 {
            mac.update(&a.to_be_bytes());
        }
        let mut v6: Vec<[u8; 16]> = Vec::with_capacity(input.v6.len());
        for a in input.v6 {
            let mut o = a.octets();
            if scope_embedded(a) {
                if ctx == Context::NoV6Ll {
                    continue;
                }
                // Clear the KAME embedded scope word (s6_addr16[1]).
                o[2] = 0;
                o[3] = 0;
            }
            v6.push(o);
        }
        v6.sort_unstable();
        v6.dedup();
        for o in v6 {
            mac.update(&o);
        }
        mac
    }

    /// The digest for `counter` with the given context (`carp_hmac_generate`).
    pub fn digest(&self, counter: &[u8; COUNTER_LEN], ctx: Context) -> [u8; MD_LEN] {
        let mut mac = match ctx {
            Context::Orig => self.orig.clone(),
            Context::NoV6Ll => self.nov6ll.clone(),
        };
        mac.update(counter);
        let mut md = [0; MD_LEN];
        md.copy_from_slice(&mac.finalize().into_bytes());
        md
    }

    /// Fills `repr.md` for transmit, with the NOV6LL context as `carp_prepare_ad` does.
    pub fn sign(&self, repr: &mut Repr) {
        repr.md = self.digest(&repr.counter, Context::NoV6Ll);
    }

    /// True when `repr.md` matches either context (`carp_hmac_verify`), compared in constant
    /// time (`Mac::verify_slice`, as `timingsafe_bcmp`).
    pub fn verify(&self, repr: &Repr) -> bool {
        [&self.orig, &self.nov6ll].into_iter().any(|ctx| {
            let mut mac = ctx.clone();
            mac.update(&repr.counter);
            mac.verify_slice(&repr.md).is_ok()
        })
    }
}

/// The key of the historical ARP-balancing hash (ip_carp.c 1.263 `carp_hmac_prepare_ctx`):
/// `kmd = SHA1(ipad ‖ version ‖ type)` read as five 32-bit words, `hashkey[0] = kmd[0] ^
/// kmd[1]`, `hashkey[1] = kmd[2] ^ kmd[3]`. OpenBSD reads the words in host order; carpio
/// fixes little-endian (amd64, i386, arm64: the hosts OpenBSD ran balancing on).
pub fn arp_hash_key(key: &[u8; KEY_LEN]) -> [u32; 2] {
    let mut ipad = [0x36u8; 64];
    for (p, k) in ipad.iter_mut().zip(key.iter()) {
        *p ^= k;
    }
    let mut h = Sha1::new();
    h.update(ipad);
    h.update([VERSION, TYPE_ADVERTISEMENT]);
    let d = h.finalize();
    let w = |i: usize| {
        let mut b = [0u8; 4];
        if let Some(s) = d.get(i * 4..i * 4 + 4) {
            b.copy_from_slice(s);
        }
        u32::from_le_bytes(b)
    };
    [w(0) ^ w(1), w(2) ^ w(3)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An advertisement captured in spirit from OpenBSD: vhid 1, advskew 100, advbase 1,
    /// demote 0, counter 01..08, digest 0xaa.., checksum computed by hand below.
    fn golden() -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = 0x21;
        b[1] = 1;
        b[2] = 100;
        b[3] = 7;
        b[4] = 0;
        b[5] = 1;
        b[8..16].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        b[16..36].copy_from_slice(&[0xaa; 20]);
        // Hand sum of 16-bit words: 0x2101 + 0x6407 + 0x0001 + 0x0102 + 0x0304 + 0x0506
        // + 0x0708 + 10 * 0xaaaa = 0x951D + 0x6AAA4 = 0x73FC1 -> 0x3FC1 + 7 = 0x3FC8,
        // complement 0xC037.
        b[6] = 0xc0;
        b[7] = 0x37;
        b
    }

    #[test]
    fn parse_golden() {
        let b = golden();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        let r = Repr::parse(&p);
        assert_eq!(r.version, 2);
        assert_eq!(r.kind, 1);
        assert_eq!(r.vhid, 1);
        assert_eq!(r.advskew, 100);
        assert_eq!(r.authlen, 7);
        assert_eq!(r.demote, 0);
        assert_eq!(r.advbase, 1);
        assert_eq!(r.counter, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.md, [0xaa; 20]);
        assert_eq!(p.checksum(), 0xc037);
    }

    #[test]
    fn emit_golden_round_trip() {
        let r = Repr {
            md: [0xaa; 20],
            ..Repr::advertisement(1, 1, 100, 0, [1, 2, 3, 4, 5, 6, 7, 8])
        };
        assert_eq!(r.to_bytes(), golden());
        let b = r.to_bytes();
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), r);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let b = golden();
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&b[..n]).err(),
                Some(Error::Truncated),
                "len {n}"
            );
            let mut out = vec![0u8; n];
            assert_eq!(
                Repr::parse(&Packet::new_checked(&b[..]).unwrap()).emit(&mut out),
                Err(Error::Truncated)
            );
        }
        // Trailing bytes are allowed and not summed.
        let mut long = b.to_vec();
        long.extend_from_slice(&[0xff, 0x01]);
        assert!(Packet::new_checked(&long[..]).unwrap().verify_checksum());
    }

    #[test]
    fn every_single_bit_flip_breaks_the_checksum() {
        let b = golden();
        for i in 0..HEADER_LEN * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            assert!(
                !Packet::new_checked(&c[..]).unwrap().verify_checksum(),
                "bit {i}"
            );
        }
    }

    #[test]
    fn fill_checksum_fixes_a_modified_header() {
        let mut b = golden();
        b[1] = 42;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
    }

    #[test]
    fn key_truncates_to_19_and_pads() {
        assert_eq!(key_from_passphrase(b""), [0; 20]);
        let k = key_from_passphrase(b"abcdefghijklmnopqrstuvwxyz");
        assert_eq!(&k[..19], b"abcdefghijklmnopqrs");
        assert_eq!(k[19], 0);
        let k = key_from_passphrase(b"secret");
        assert_eq!(&k[..6], b"secret");
        assert_eq!(&k[6..], &[0; 14]);
        assert_eq!(key_from_passphrase(b"ab\0cd"), key_from_passphrase(b"ab"));
    }

    /// The manual ipad/opad construction of ip_carp.c, written with the `sha1` crate alone.
    fn manual(key: &[u8; 20], body: &[u8]) -> [u8; 20] {
        let mut pad = [0u8; 64];
        pad[..20].copy_from_slice(key);
        let ipad: Vec<u8> = pad.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = pad.iter().map(|b| b ^ 0x5c).collect();
        let mut h = Sha1::new();
        h.update(&ipad);
        h.update(body);
        let inner = h.finalize();
        let mut h = Sha1::new();
        h.update(&opad);
        h.update(inner);
        h.finalize().into()
    }

    #[test]
    fn hmac_matches_manual_construction_and_pinned_bytes() {
        let key = key_from_passphrase(b"carpio-test");
        let v4 = [Ipv4Addr::new(192, 0, 2, 20), Ipv4Addr::new(10, 0, 0, 1)];
        let v6 = [
            "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
            "fe80:5::1".parse().unwrap(),
        ];
        let auth = Auth::new(&AuthInput {
            key,
            lladdr: None,
            vhid: 7,
            v4: &v4,
            v6: &v6,
        });
        let counter = [0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3];
        // Body as ip_carp.c hashes it: ver, type, vhid, sorted v4, sorted v6 (scope cleared).
        let mut nov6ll = vec![2u8, 1, 7, 10, 0, 0, 1, 192, 0, 2, 20];
        nov6ll.extend_from_slice(&v6[0].octets());
        let mut orig = vec![2u8, 1, 7, 10, 0, 0, 1, 192, 0, 2, 20];
        orig.extend_from_slice(&v6[0].octets());
        let mut ll = "fe80::1".parse::<Ipv6Addr>().unwrap().octets();
        ll[2] = 0;
        orig.extend_from_slice(&ll);
        nov6ll.extend_from_slice(&counter);
        orig.extend_from_slice(&counter);
        let want_nov6ll = manual(&key, &nov6ll);
        let want_orig = manual(&key, &orig);
        assert_eq!(auth.digest(&counter, Context::NoV6Ll), want_nov6ll);
        assert_eq!(auth.digest(&counter, Context::Orig), want_orig);
        assert_ne!(want_orig, want_nov6ll);
        // Pinned: must never change across refactors.
        assert_eq!(want_nov6ll, PINNED_NOV6LL);

        let mut r = Repr::advertisement(7, 1, 0, 0, counter);
        auth.sign(&mut r);
        assert_eq!(r.md, want_nov6ll);
        assert!(auth.verify(&r));
        r.md = want_orig;
        assert!(auth.verify(&r), "ORIG accepted on receive");
        r.md[19] ^= 1;
        assert!(!auth.verify(&r));
        r.md = want_nov6ll;
        r.counter[0] ^= 1;
        assert!(!auth.verify(&r));
    }

    /// Computed independently with Python's `hmac.new(key, body, hashlib.sha1)`.
    const PINNED_NOV6LL: [u8; 20] = [
        53, 109, 127, 53, 141, 196, 239, 105, 176, 171, 49, 37, 77, 193, 71, 116, 227, 243, 211,
        227,
    ];

    #[test]
    fn lladdr_and_order_matter() {
        let key = key_from_passphrase(b"x");
        let a = [Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(1, 2, 3, 5)];
        let b = [Ipv4Addr::new(1, 2, 3, 5), Ipv4Addr::new(1, 2, 3, 4)];
        let c = [0u8; 8];
        let x = Auth::new(&AuthInput {
            key,
            lladdr: None,
            vhid: 1,
            v4: &a,
            v6: &[],
        });
        let y = Auth::new(&AuthInput {
            key,
            lladdr: None,
            vhid: 1,
            v4: &b,
            v6: &[],
        });
        let z = Auth::new(&AuthInput {
            key,
            lladdr: Some([2, 0, 0, 0, 0, 1]),
            vhid: 1,
            v4: &a,
            v6: &[],
        });
        let w = Auth::new(&AuthInput {
            key,
            lladdr: None,
            vhid: 2,
            v4: &a,
            v6: &[],
        });
        assert_eq!(x.digest(&c, Context::NoV6Ll), y.digest(&c, Context::NoV6Ll));
        assert_ne!(x.digest(&c, Context::NoV6Ll), z.digest(&c, Context::NoV6Ll));
        assert_ne!(x.digest(&c, Context::NoV6Ll), w.digest(&c, Context::NoV6Ll));
        // Without link-local addresses the two contexts agree.
        assert_eq!(x.digest(&c, Context::NoV6Ll), x.digest(&c, Context::Orig));
        let mut body = vec![2u8, 1, 2, 0, 0, 0, 0, 1, 1, 1, 2, 3, 4, 1, 2, 3, 5];
        body.extend_from_slice(&c);
        assert_eq!(z.digest(&c, Context::NoV6Ll), manual(&key, &body));
    }

    #[test]
    fn arp_hash_key_is_derived_from_the_ipad_prefix() {
        let key = key_from_passphrase(b"k");
        let mut ipad = [0x36u8; 64];
        ipad[0] ^= b'k';
        let mut h = Sha1::new();
        h.update(ipad);
        h.update([2u8, 1]);
        let d: [u8; 20] = h.finalize().into();
        let w = |i: usize| u32::from_le_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]]);
        assert_eq!(arp_hash_key(&key), [w(0) ^ w(1), w(2) ^ w(3)]);
    }
}
