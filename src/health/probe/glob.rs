//! fnmatch(3) with no flags, as relayd's `check send ... expect GLOB` uses it
//! (usr.sbin/relayd/check_tcp.c `check_send_expect`): `*` any run of bytes (including `/`),
//! `?` any one byte, `[...]` a set with ranges and `!`/`^` negation, `\x` the literal `x`.
//! The whole subject must match. Written here rather than taken from a crate because the
//! `glob`/`wildmatch` crates match paths or differ on `\` and `[!...]`; this is ~60 lines,
//! works on bytes (a banner need not be UTF-8) and never panics: every access is `get`.

/// Whether `subject` matches the shell pattern `pattern`.
pub fn fnmatch(pattern: &[u8], subject: &[u8]) -> bool {
    let (mut p, mut s) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, subject index it covers to).
    let mut star: Option<(usize, usize)> = None;
    loop {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, s));
                continue;
            }
            Some(&c) if s < subject.len() => {
                let Some(&b) = subject.get(s) else { break };
                let step = match c {
                    b'?' => Some(1),
                    b'[' => match bracket(pattern, p + 1, b) {
                        Some((true, len)) => Some(len + 1),
                        Some((false, _)) => None,
                        // An unterminated `[` is an ordinary character (fnmatch.c).
                        None => (b == b'[').then_some(1),
                    },
                    b'\\' => match pattern.get(p + 1) {
                        Some(&e) => (e == b).then_some(2),
                        None => (b == b'\\').then_some(1),
                    },
                    _ => (c == b).then_some(1),
                };
                if let Some(len) = step {
                    p += len;
                    s += 1;
                    continue;
                }
            }
            None if s == subject.len() => return true,
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more byte, or fail.
        match star {
            Some((sp, ss)) if ss < subject.len() => {
                star = Some((sp, ss + 1));
                p = sp;
                s = ss + 1;
            }
            _ => return false,
        }
    }
    false
}

/// Matches `b` against the set starting at `pattern[start]` (just after `[`). Returns whether
/// it matched and the length of the set including the closing `]`, or `None` when unterminated.
fn bracket(pattern: &[u8], start: usize, b: u8) -> Option<(bool, usize)> {
    let mut i = start;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut c = *pattern.get(i)?;
        if c == b']' && !first {
            return Some((matched != negate, i + 1 - start));
        }
        first = false;
        if c == b'\\' {
            i += 1;
            c = *pattern.get(i)?;
        }
        i += 1;
        let mut hi = c;
        if pattern.get(i) == Some(&b'-') && pattern.get(i + 1).is_some_and(|&n| n != b']') {
            hi = *pattern.get(i + 1)?;
            if hi == b'\\' {
                hi = *pattern.get(i + 2)?;
                i += 1;
            }
            i += 2;
        }
        if c <= b && b <= hi {
            matched = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("220 *", "220 mx.example ESMTP\r\n", true),
            ("220 *", "554 go away\r\n", false),
            ("220 *", "220", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*ESMTP*", "220 host ESMTP Postfix\r\n", true),
            ("*a*b*c", "xxaybzzc", true),
            ("*a*b*c", "xxaybzzcd", false),
            ("[0-9][0-9][0-9] *", "250 ok", true),
            ("[!2]*", "250", false),
            ("[^2]*", "550", true),
            ("[]]", "]", true),
            ("[a-]", "-", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("[", "[", true),
            ("[abc", "[abc", true),
            ("a/b*", "a/b/c", true),
            ("SSH-2.0-*", "SSH-2.0-OpenSSH_9.6\r\n", true),
            ("+OK*", "-ERR\r\n", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(fnmatch(p.as_bytes(), s.as_bytes()), *want, "{p:?} vs {s:?}");
        }
    }

    #[test]
    fn never_panics_on_odd_patterns() {
        for p in ["[", "[!", "[a-", "[a-\\", "\\", "[\\", "**?**[", "[]-]"] {
            for s in ["", "[", "a", "\\", "]-"] {
                let _ = fnmatch(p.as_bytes(), s.as_bytes());
            }
        }
        assert!(fnmatch(b"\\", b"\\"));
    }
}
