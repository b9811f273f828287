//! The 128-bit SipHash-2-4 key of relayd's hash modes (`mode source-hash|loadbalance|hash [key]`).
//!
//! relayd parse.y, rule `hashkey` (kept in sync with pfctl's): a key written `0x` followed by
//! exactly 32 hex digits is read as four 32-bit words (`sscanf("0x%8x%8x%8x%8x")`); any other
//! string is hashed with MD5 and each of the four digest words is byte-swapped (`HTONL` of the
//! word read in host order). The words are then the memory of a `SIPHASH_KEY`, whose `k0`/`k1`
//! `SipHash_Init` reads little-endian. This module reproduces the bytes an OpenBSD machine of
//! little-endian byte order (amd64, arm64, the platforms relayd runs on in practice) hands to
//! SipHash, so a carpio table and a relayd table with the same key string pick the same host.
//!
//! When no key is configured relayd draws one with arc4random at config load. carpio cannot do
//! that: two active/active nodes must pick the same backend for the same client. The default key
//! is therefore [`Key::derived`], a pure function of a context string (the config layer passes
//! the redirect or relay name and the table name), so identical configurations agree. Operators
//! who fear clients steering load through chosen source addresses should set an explicit key,
//! identical on all nodes.
//!
//! Parsing is on configuration text, never on packets; every error is a named [`KeyError`].

use md5::{Digest, Md5};

/// The 16 key bytes exactly as SipHash-2-4 consumes them (`k0` = little-endian bytes 0..8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 16]);

/// Length of `0x` plus 32 hex digits: relayd's `strlen($1) != 34` check.
const HEX_KEY_LEN: usize = 34;
/// relayd's hex prefix, matched case-sensitively (`strncmp($1, "0x", 2)`).
const HEX_PREFIX: &str = "0x";
/// Hex digits per 32-bit key word (`%8x`).
const WORD_HEX_DIGITS: usize = 8;
/// Domain separator of the derived default key, so that it never equals a plain string key.
const DERIVED_PREFIX: &str = "carpio default hash key\0";

/// Why a configured key was refused. Names match relayd's messages where relayd has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// `0x` key not 32 hex digits long: "hex key must be 128 bits (32 hex digits) long".
    HexLength,
    /// `0x` key with a non-hex digit: "invalid hex key". relayd's sscanf would accept some
    /// malformed forms (a sign, fewer digits in a word); carpio is stricter and says so.
    HexDigit,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyError::HexLength => "hex key must be 128 bits (32 hex digits) long",
            KeyError::HexDigit => "invalid hex key",
        })
    }
}

impl std::error::Error for KeyError {}

impl Key {
    /// Parses a key as written after `mode source-hash|loadbalance|hash` in relayd.conf.
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        match text.strip_prefix(HEX_PREFIX) {
            Some(hex) => Self::parse_hex(text.len(), hex),
            None => Ok(Self::from_string(text)),
        }
    }

    fn parse_hex(total_len: usize, hex: &str) -> Result<Key, KeyError> {
        if total_len != HEX_KEY_LEN {
            return Err(KeyError::HexLength);
        }
        let mut out = [0u8; 16];
        for (word_index, chunk) in hex.as_bytes().chunks(WORD_HEX_DIGITS).enumerate() {
            let digits = std::str::from_utf8(chunk).map_err(|_| KeyError::HexDigit)?;
            if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(KeyError::HexDigit);
            }
            let word = u32::from_str_radix(digits, 16).map_err(|_| KeyError::HexDigit)?;
            let dst = out
                .get_mut(word_index * 4..word_index * 4 + 4)
                .ok_or(KeyError::HexLength)?;
            // key.data[i] lives in host (little-endian) order in the SIPHASH_KEY memory.
            dst.copy_from_slice(&word.to_le_bytes());
        }
        Ok(Key(out))
    }

    /// A string key: MD5 of the string, each 32-bit digest word byte-swapped (relayd parse.y
    /// `MD5Final` then `HTONL(data[i])` on a little-endian host).
    pub fn from_string(text: &str) -> Key {
        let digest = Md5::digest(text.as_bytes());
        let mut out = [0u8; 16];
        for (dst, src) in out.chunks_exact_mut(4).zip(digest.chunks_exact(4)) {
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
        Key(out)
    }

    /// carpio's default when no key is configured (relayd would pick a random one): a pure
    /// function of `context`, so every node with the same configuration derives the same key.
    pub fn derived(context: &str) -> Key {
        let mut text = String::with_capacity(DERIVED_PREFIX.len() + context.len());
        text.push_str(DERIVED_PREFIX);
        text.push_str(context);
        Self::from_string(&text)
    }

    /// The key as SipHash's `(k0, k1)` words.
    pub fn words(&self) -> (u64, u64) {
        let [
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
        ] = self.0;
        (
            u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_key_words_are_little_endian_in_memory() {
        let k = Key::parse("0x0102030405060708090a0b0c0d0e0f10").unwrap();
        assert_eq!(
            k.0,
            [
                4, 3, 2, 1, 8, 7, 6, 5, 0x0c, 0x0b, 0x0a, 9, 0x10, 0x0f, 0x0e, 0x0d
            ]
        );
        assert_eq!(k.words(), (0x0506_0708_0102_0304, 0x0d0e_0f10_090a_0b0c));
    }

    #[test]
    fn hex_key_errors() {
        assert_eq!(Key::parse("0x0102"), Err(KeyError::HexLength));
        assert_eq!(
            Key::parse("0x0102030405060708090a0b0c0d0e0f1011"),
            Err(KeyError::HexLength)
        );
        assert_eq!(
            Key::parse("0x0102030405060708090a0b0c0d0e0fzz"),
            Err(KeyError::HexDigit)
        );
        assert_eq!(
            Key::parse("0x+102030405060708090a0b0c0d0e0f10"),
            Err(KeyError::HexDigit)
        );
        // A multi-byte character making the length 34 must not panic.
        assert!(Key::parse("0x0102030405060708090a0b0c0d0e0é").is_err());
    }

    #[test]
    fn every_truncation_of_a_hex_key() {
        let full = "0x0102030405060708090a0b0c0d0e0f10";
        for len in 0..full.len() {
            let got = Key::parse(&full[..len]);
            if len < 2 {
                // "" and "0" are not the hex form: hashed as strings.
                assert_eq!(got, Ok(Key::from_string(&full[..len])));
            } else {
                assert_eq!(got, Err(KeyError::HexLength), "len {len}");
            }
        }
        assert!(Key::parse(full).is_ok());
    }

    #[test]
    fn string_key_is_byteswapped_md5() {
        // MD5("") = d41d8cd9 8f00b204 e9800998 ecf8427e.
        let k = Key::parse("").unwrap();
        assert_eq!(
            k.0,
            [
                0xd9, 0x8c, 0x1d, 0xd4, 0x04, 0xb2, 0x00, 0x8f, 0x98, 0x09, 0x80, 0xe9, 0x7e, 0x42,
                0xf8, 0xec
            ]
        );
        // "0X..." is not the hex form in relayd (strncmp is case-sensitive): hashed as a string.
        let upper = Key::parse("0X0102030405060708090a0b0c0d0e0f10").unwrap();
        assert_eq!(
            upper,
            Key::from_string("0X0102030405060708090a0b0c0d0e0f10")
        );
    }

    #[test]
    fn derived_is_deterministic_and_distinct() {
        assert_eq!(Key::derived("www:web"), Key::derived("www:web"));
        assert_ne!(Key::derived("www:web"), Key::derived("www:web2"));
        assert_ne!(Key::derived("www:web"), Key::from_string("www:web"));
    }
}
