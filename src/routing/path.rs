//! Request-path normalization: what routes match is exactly what the upstream receives.
//!
//! Percent-encoded unreserved characters are decoded (`%7E` → `~`, `%2e` → `.`), `.` and
//! `..` segments are resolved (RFC 3986 §5.2.4, never above the root), and repeated
//! slashes are merged. Reserved escapes such as `%2F` stay encoded: decoding them would
//! change the path's structure. Already-normal paths (nearly all) are returned borrowed.

use std::borrow::Cow;

/// Normalize the path part of a request target (no query).
pub fn normalize(path: &str) -> Cow<'_, str> {
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split('/') {
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Cow::Owned(out)
}

/// True when `normalize` would return the path unchanged. Checked byte by byte without
/// allocating: the common case on the request path.
fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => return false,
            b'/' => {
                let rest = &b[i + 1..];
                if rest.first() == Some(&b'/') {
                    return false;
                }
                if rest.first() == Some(&b'.') {
                    let seg_end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                    if &rest[..seg_end] == b"." || &rest[..seg_end] == b".." {
                        return false;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    true
}

fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 1);
    if b.first() != Some(&b'/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    out.push(c);
                } else {
                    // Keep reserved escapes, upper-cased (RFC 3986 §6.2.2.1).
                    out.extend_from_slice(&[b'%', b[i + 1].to_ascii_uppercase(), b[i + 2].to_ascii_uppercase()]);
                }
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Only ASCII bytes were substituted for ASCII escapes, so UTF-8 validity is kept.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Decode every `%XX` escape of `s` (strictly: a malformed escape or a result that is
/// not UTF-8 is `None`). For names carried in a URL path or a key, not for request
/// paths, which [`normalize`] decodes selectively.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (h, l) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_is_strict() {
        assert_eq!(percent_decode("a%20b%2Fc%C3%BC").as_deref(), Some("a b/cü"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%2", "%zz", "%+1", "%FF"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/api", "/api/x/", "/a.b/c", "/.well-known/x", "/a/..b"] {
            assert!(matches!(normalize(p), Cow::Borrowed(_)), "{p}");
        }
    }

    #[test]
    fn dots_slashes_and_escapes() {
        let cases = [
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../etc", "/etc"),
            ("/a//b///c", "/a/b/c"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/%61pi/%7Ex", "/api/~x"),
            ("/%2e%2e/admin", "/admin"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%", "/a%"),
            ("/a%zz", "/a%zz"),
            ("//", "/"),
            ("/api/%2E/", "/api/"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input}");
        }
    }
}
