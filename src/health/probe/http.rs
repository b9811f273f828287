//! `check http|https`: the request relayd sends and the verdict on the reply
//! (usr.sbin/relayd/parse.y 1.270 builds the request, check_tcp.c `check_http_code` and
//! `check_http_digest` judge it). Pure; the engine owns the connection. Also relayd's
//! `translate_string` for `check send` data.

use sha1::Digest as _;

use crate::config::model::Digest;

/// relayd's check User-Agent (parse.y 1.270 and later).
const USER_AGENT: &str = "OpenBSD relayd";
/// `HTTP/1.x ` before the status code.
const STATUS_CODE_AT: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No `HTTP/1.0 NNN` / `HTTP/1.1 NNN` status line (relayd "http code malformed").
    CodeMalformed,
    /// Another status code (relayd "http code mismatch").
    Code(u16),
    /// No header/body separator (relayd "http digest malformed").
    DigestMalformed,
    /// The body hashes to something else (relayd "http digest mismatch").
    Digest,
}

/// The request bytes: HEAD for a code check, GET for a digest check; HTTP/1.1 with `Host`
/// and `Connection: close` when a host name is given, else HTTP/1.0.
pub fn request(get: bool, path: &str, host: Option<&str>) -> Vec<u8> {
    let method = if get { "GET" } else { "HEAD" };
    let r = match host {
        Some(h) => format!(
            "{method} {path} HTTP/1.1\r\nUser-Agent: {USER_AGENT}\r\nHost: {h}\r\nConnection: close\r\n\r\n"
        ),
        None => format!("{method} {path} HTTP/1.0\r\nUser-Agent: {USER_AGENT}\r\n\r\n"),
    };
    r.into_bytes()
}

/// The status code of a reply whose first line is complete; `Ok(None)` while it is not.
pub fn status(reply: &[u8]) -> Result<Option<u16>, Error> {
    let Some(eol) = reply.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let line = reply.get(..eol).ok_or(Error::CodeMalformed)?;
    if !(line.starts_with(b"HTTP/1.0 ") || line.starts_with(b"HTTP/1.1 ")) {
        return Err(Error::CodeMalformed);
    }
    let digits = line
        .get(STATUS_CODE_AT..STATUS_CODE_AT + 3)
        .ok_or(Error::CodeMalformed)?;
    let code = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u16>().ok())
        .filter(|c| (100..=999).contains(c))
        .ok_or(Error::CodeMalformed)?;
    Ok(Some(code))
}

/// The code check: up when the status is `want`.
pub fn check_code(reply: &[u8], want: u16) -> Result<Option<()>, Error> {
    match status(reply)? {
        None => Ok(None),
        Some(c) if c == want => Ok(Some(())),
        Some(c) => Err(Error::Code(c)),
    }
}

/// The digest check on a complete reply (read until the server closed).
pub fn check_digest(reply: &[u8], want: &Digest) -> Result<(), Error> {
    let at = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(Error::DigestMalformed)?;
    let body = reply.get(at + 4..).ok_or(Error::DigestMalformed)?;
    let ok = match want {
        Digest::Sha1(d) => sha1::Sha1::digest(body).as_slice() == d.as_slice(),
        Digest::Md5(d) => md5::Md5::digest(body).as_slice() == d.as_slice(),
    };
    if ok { Ok(()) } else { Err(Error::Digest) }
}

/// relayd `translate_string`: `\n`, `\r`, `\t` and `\\` in `check send` data; any other
/// backslash is kept as written.
pub fn translate(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter().copied().peekable();
    while let Some(c) = it.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        match it.peek().copied() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            _ => {
                out.push(c);
                continue;
            }
        }
        it.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_golden() {
        assert_eq!(
            request(false, "/", None),
            b"HEAD / HTTP/1.0\r\nUser-Agent: OpenBSD relayd\r\n\r\n"
        );
        assert_eq!(
            request(true, "/index.html", Some("www.example.org")),
            b"GET /index.html HTTP/1.1\r\nUser-Agent: OpenBSD relayd\r\nHost: www.example.org\r\nConnection: close\r\n\r\n".as_slice()
        );
    }

    #[test]
    fn code() {
        assert_eq!(check_code(b"HTTP/1.1 200 OK\r\n", 200), Ok(Some(())));
        assert_eq!(check_code(b"HTTP/1.0 200", 200), Ok(None));
        assert_eq!(
            check_code(b"HTTP/1.1 404 Not Found\r\n", 200),
            Err(Error::Code(404))
        );
        assert_eq!(
            check_code(b"HTTP/2 200\r\n", 200),
            Err(Error::CodeMalformed)
        );
        assert_eq!(
            check_code(b"HTTP/1.1 2x0\r\n", 200),
            Err(Error::CodeMalformed)
        );
        assert_eq!(check_code(b"HTTP/1.1 20\n", 200), Err(Error::CodeMalformed));
        let full = b"HTTP/1.1 200 OK\r\n";
        for len in 0..full.len() {
            assert_ne!(check_code(&full[..len], 200), Ok(Some(())), "len {len}");
        }
    }

    #[test]
    fn digest() {
        // printf 'hello\n' | sha1sum ; md5sum
        let sha = Digest::Sha1([
            0xf5, 0x72, 0xd3, 0x96, 0xfa, 0xe9, 0x20, 0x66, 0x28, 0x71, 0x4f, 0xb2, 0xce, 0x00,
            0xf7, 0x2e, 0x94, 0xf2, 0x25, 0x8f,
        ]);
        let md5 = Digest::Md5([
            0xb1, 0x94, 0x6a, 0xc9, 0x24, 0x92, 0xd2, 0x34, 0x7c, 0x62, 0x35, 0xb4, 0xd2, 0x61,
            0x11, 0x84,
        ]);
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";
        assert_eq!(check_digest(reply, &sha), Ok(()));
        assert_eq!(check_digest(reply, &md5), Ok(()));
        assert_eq!(
            check_digest(b"HTTP/1.1 200 OK\r\n\r\nhellO\n", &sha),
            Err(Error::Digest)
        );
        assert_eq!(
            check_digest(b"HTTP/1.1 200 OK\r\n", &sha),
            Err(Error::DigestMalformed)
        );
    }

    #[test]
    fn translate_escapes() {
        assert_eq!(translate(b"HELO x\\r\\n"), b"HELO x\r\n");
        assert_eq!(translate(b"a\\tb\\\\c\\q\\"), b"a\tb\\c\\q\\");
    }
}
