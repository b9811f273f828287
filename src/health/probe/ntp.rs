//! `check ntp`: an RFC 5905 client-mode request and the verdict on the server's reply. Pure
//! functions; the engine owns the socket and passes the wall-clock time in. Reads are
//! bounds-checked: a short reply is [`Error::Malformed`].
//!
//! ```text
//! RFC 5905 7.3, 48 bytes:
//!  0        1        2      3          4           8           12      16      24      32      40
//!  +--------+--------+------+----------+-----------+-----------+-------+-------+-------+-------+
//!  |LI|VN|MD|stratum | poll |precision |root delay |root disp. | refid |ref ts |orig ts|recv ts|xmit ts|
//!  +--------+--------+------+----------+-----------+-----------+-------+-------+-------+-------+
//! ```

use std::time::Duration;

const LI_VN_MODE: usize = 0;
const STRATUM: usize = 1;
const ORIGIN_TS: usize = 24;
const TRANSMIT_TS: usize = 40;
pub const PACKET_LEN: usize = 48;
/// LI 0, version 4, mode 3 (client).
const CLIENT_V4: u8 = 0x23;
const MODE_MASK: u8 = 0x07;
const MODE_SERVER: u8 = 4;
/// LI 3: "unknown (clock unsynchronized)".
const LI_ALARM: u8 = 3;
/// Seconds from the NTP era 0 (1900) to the Unix epoch (RFC 5905 figure 4).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// How far the server's transmit time may be from ours: a sane server, not a precise one.
pub const MAX_OFFSET: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Malformed,
    /// Not a server-mode (4) reply.
    Mode(u8),
    /// Stratum 0 (kiss-o'-death / unspecified) or 16+ (unsynchronized).
    Stratum(u8),
    /// Leap indicator 3: the server says its clock is not synchronized.
    Unsynchronized,
    /// The transmit time is more than [`MAX_OFFSET`] from ours.
    Offset,
}

/// A client request whose transmit timestamp is `cookie` (the server echoes it as the origin
/// timestamp, RFC 5905 8, which is how we match the reply).
pub fn request(cookie: u64) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[LI_VN_MODE] = CLIENT_V4;
    p[TRANSMIT_TS..TRANSMIT_TS + 8].copy_from_slice(&cookie.to_be_bytes());
    p
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    Some(u64::from_be_bytes(<[u8; 8]>::try_from(s).ok()?))
}

/// Whether `reply` answers the request with `cookie`.
pub fn is_for(reply: &[u8], cookie: u64) -> bool {
    be64(reply, ORIGIN_TS) == Some(cookie)
}

/// The verdict on a reply, given the local wall clock as time since the Unix epoch.
pub fn check(reply: &[u8], unix_now: Duration) -> Result<(), Error> {
    if reply.len() < PACKET_LEN {
        return Err(Error::Malformed);
    }
    let first = *reply.get(LI_VN_MODE).ok_or(Error::Malformed)?;
    let mode = first & MODE_MASK;
    if mode != MODE_SERVER {
        return Err(Error::Mode(mode));
    }
    if first >> 6 == LI_ALARM {
        return Err(Error::Unsynchronized);
    }
    let stratum = *reply.get(STRATUM).ok_or(Error::Malformed)?;
    if !(1..=15).contains(&stratum) {
        return Err(Error::Stratum(stratum));
    }
    let ts = be64(reply, TRANSMIT_TS).ok_or(Error::Malformed)?;
    // Era 0 only (until 2036); the fraction is the low 32 bits.
    let secs = (ts >> 32).wrapping_sub(NTP_UNIX_OFFSET);
    let nanos = ((ts & 0xffff_ffff) * 1_000_000_000) >> 32;
    let theirs = Duration::from_secs(secs) + Duration::from_nanos(nanos);
    let diff = theirs.abs_diff(unix_now);
    if diff > MAX_OFFSET {
        return Err(Error::Offset);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn reply(first: u8, stratum: u8, xmit_unix: u64, cookie: u64) -> [u8; PACKET_LEN] {
        let mut p = [0u8; PACKET_LEN];
        p[LI_VN_MODE] = first;
        p[STRATUM] = stratum;
        p[ORIGIN_TS..ORIGIN_TS + 8].copy_from_slice(&cookie.to_be_bytes());
        let ts = ((xmit_unix + NTP_UNIX_OFFSET) << 32) | 0x8000_0000;
        p[TRANSMIT_TS..TRANSMIT_TS + 8].copy_from_slice(&ts.to_be_bytes());
        p
    }

    #[test]
    fn request_golden() {
        let r = request(0x0102_0304_0506_0708);
        assert_eq!(r[0], 0x23);
        assert_eq!(r[1..40], [0u8; 39]);
        assert_eq!(r[40..], [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn verdicts() {
        let now = NOW.as_secs();
        let ok = reply(0x24, 3, now, 7);
        assert!(is_for(&ok, 7) && !is_for(&ok, 8));
        assert_eq!(check(&ok, NOW), Ok(()));
        assert_eq!(check(&reply(0x24, 3, now - 9, 7), NOW), Ok(()));
        assert_eq!(check(&reply(0x24, 3, now + 11, 7), NOW), Err(Error::Offset));
        assert_eq!(check(&reply(0x24, 0, now, 7), NOW), Err(Error::Stratum(0)));
        assert_eq!(
            check(&reply(0x24, 16, now, 7), NOW),
            Err(Error::Stratum(16))
        );
        assert_eq!(
            check(&reply(0xe4, 3, now, 7), NOW),
            Err(Error::Unsynchronized)
        );
        assert_eq!(check(&reply(0x23, 3, now, 7), NOW), Err(Error::Mode(3)));
    }

    #[test]
    fn every_truncation_is_malformed() {
        let ok = reply(0x24, 2, NOW.as_secs(), 7);
        for len in 0..PACKET_LEN {
            assert_eq!(check(&ok[..len], NOW), Err(Error::Malformed), "len {len}");
        }
    }
}
