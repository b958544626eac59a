//! Requests that are malformed or ambiguous are refused before routing, so they never
//! reach an upstream. hyper's parser already rejects what cannot be parsed at all
//! (invalid bytes, obs-fold, differing duplicate Content-Length, oversized heads); this
//! module rejects what parses but would let two HTTP implementations disagree about where
//! a message ends or what it targets (request smuggling, RFC 9112 §6.3).

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Version};

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 400: ambiguous framing, bad target, missing or repeated Host.
    Malformed,
    /// 405: a valid CONNECT, which this proxy does not tunnel.
    ConnectUnsupported,
}

pub fn check<B>(req: &Request<B>) -> Result<(), Rejection> {
    let hosts = req.headers().get_all(HOST);
    let count = hosts.iter().count();
    if matches!(req.version(), Version::HTTP_10 | Version::HTTP_11 | Version::HTTP_09) {
        check_framing(req.headers())?;
        if count > 1 || (count == 0 && req.version() == Version::HTTP_11) {
            return Err(Rejection::Malformed);
        }
    } else {
        // HTTP/2 names the authority once: in `:authority`, or in one `host` that agrees
        // with it (RFC 9113 §8.3.1), as HTTP/1.1 must name it in exactly one `Host`.
        let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
        let agrees = match (authority, hosts.iter().next()) {
            (None, None) => false,
            (Some(a), Some(h)) => a.eq_ignore_ascii_case(h.as_bytes()),
            _ => true,
        };
        if count > 1 || !agrees {
            return Err(Rejection::Malformed);
        }
    }
    // The authority the request names, wherever it names it (`Host`, an absolute-form
    // target, `:authority`), is routed on and forwarded: it must be one.
    let authority_ok = req.uri().authority().is_none_or(|a| valid_authority(a.as_str().as_bytes()));
    if !authority_ok || !hosts.iter().all(|h| valid_authority(h.as_bytes())) {
        return Err(Rejection::Malformed);
    }
    check_target(req)
}

/// RFC 3986 `host [ ":" port ]`, and nothing else: no userinfo (`user:pass@host` would
/// be routed and forwarded as a host name), a host name or IPv4 address, an IPv6
/// address in brackets, and a port of at most 65535. Of the reg-names RFC 3986 allows,
/// only host names are taken: labels of letters, digits, `-` and `_` (docker-compose
/// service names), no empty label but a trailing dot. Sub-delims and `%XX` are refused:
/// `t.example,evil.example` would be forwarded as `X-Forwarded-Host`, which frameworks
/// read as a list (a host injection), and an escaped host is routed as one name and may
/// be decoded as another upstream. An empty host is refused, as nginx does (there is
/// nothing to route on), and so are IPvFuture literals (no HTTP server takes them).
pub fn valid_authority(a: &[u8]) -> bool {
    // One forward pass (this runs on every request's Host): the host, then the port.
    let port = if let [b'[', rest @ ..] = a {
        let Some(end) = rest.iter().position(|&b| b == b']') else { return false };
        let ip = std::str::from_utf8(&rest[..end]).is_ok_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        if !ip {
            return false;
        }
        &rest[end + 1..]
    } else {
        let host_end = host_name_len(a);
        if host_end == 0 {
            return false;
        }
        &a[host_end..]
    };
    match port {
        [] => true,
        [b':', digits @ ..] => {
            digits.len() <= 5
                && digits.iter().all(u8::is_ascii_digit)
                && digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65535
        }
        _ => false,
    }
}

/// The length of the host name `a` starts with (up to a `:` or the end): dot-separated
/// labels of `[A-Za-z0-9_-]`, none empty, a trailing dot allowed (it ends an FQDN); 0
/// when what stands there is not one.
fn host_name_len(a: &[u8]) -> usize {
    const LABEL: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
            b += 1;
        }
        t
    };
    let mut label = 0usize;
    let mut i = 0;
    while i < a.len() {
        match a[i] {
            b':' => break,
            b'.' if label == 0 => return 0,
            b'.' => label = 0,
            b if LABEL[usize::from(b)] => label += 1,
            _ => return 0,
        }
        i += 1;
    }
    // Ends in a label, or in the dot after one.
    if label > 0 || (i > 0 && a[i - 1] == b'.') {
        i
    } else {
        0
    }
}

/// One framing, stated once: not both Content-Length and Transfer-Encoding, a
/// Transfer-Encoding of exactly `chunked`, Content-Length values that agree.
pub fn check_framing(headers: &HeaderMap) -> Result<(), Rejection> {
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        let only_chunked = first.as_bytes().eq_ignore_ascii_case(b"chunked") && te.next().is_none();
        if !only_chunked || headers.contains_key(CONTENT_LENGTH) {
            return Err(Rejection::Malformed);
        }
    }
    let mut cl = headers.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = cl.next() {
        let digits = |v: &[u8]| !v.is_empty() && v.iter().all(u8::is_ascii_digit);
        if !digits(first.as_bytes()) || cl.any(|v| v != first) {
            return Err(Rejection::Malformed);
        }
    }
    Ok(())
}

/// An upstream response must not state its length twice in conflicting ways (both
/// headers, or differing Content-Length values); other transfer codings are its business.
pub fn check_response_framing(headers: &HeaderMap) -> Result<(), Rejection> {
    let mut cl = headers.get_all(CONTENT_LENGTH).iter();
    let conflicting_lengths = cl.next().is_some_and(|first| cl.any(|v| v != first));
    if conflicting_lengths || (headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH)) {
        return Err(Rejection::Malformed);
    }
    Ok(())
}

/// origin-form (`/path`), absolute-form (`http://host/path`), `*` for OPTIONS, or
/// authority-form (`host:port`) for CONNECT: nothing else. A path with a `%` that does
/// not start a `%XX` escape is refused too: decoding it could create an escape the
/// upstream decodes again (`/%6%31dmin` → `/%61dmin` → `/admin`), so what was routed
/// would not be what is served (found by the `request_routing` fuzz target).
fn check_target<B>(req: &Request<B>) -> Result<(), Rejection> {
    let uri = req.uri();
    if !valid_escapes(uri.path()) {
        return Err(Rejection::Malformed);
    }
    let is_connect = req.method() == Method::CONNECT;
    if req.version() == Version::HTTP_2 {
        // h2 carries the target in pseudo-headers that the h2 layer has checked for
        // presence; `:path` is `*` only for OPTIONS (RFC 9113 §8.3.1), as on HTTP/1.1.
        return match uri.path() {
            _ if is_connect => Err(Rejection::ConnectUnsupported),
            "*" if req.method() == Method::OPTIONS => Ok(()),
            p if p.starts_with('/') => Ok(()),
            _ => Err(Rejection::Malformed),
        };
    }
    match (uri.scheme_str(), uri.authority(), uri.path()) {
        (None, Some(_), _) if is_connect => Err(Rejection::ConnectUnsupported),
        (Some("http" | "https"), Some(_), p) if !is_connect && p.starts_with('/') => Ok(()),
        (None, None, "*") if req.method() == Method::OPTIONS => Ok(()),
        (None, None, p) if !is_connect && p.starts_with('/') => Ok(()),
        _ => Err(Rejection::Malformed),
    }
}

/// An HTTP/2 request's header list size as RFC 9113 §6.5.2 counts it (each field's name
/// and value plus 32, pseudo-headers included), over `max`? The HTTP/2 layer is given a
/// higher hard limit, so this check, which answers 431 with its cause, comes first.
pub fn h2_header_list_over<B>(req: &Request<B>, max: usize) -> bool {
    let fields: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
    let uri = req.uri();
    let pseudo = req.method().as_str().len()
        + uri.scheme_str().map_or(0, str::len)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
        + 4 * 32;
    fields + pseudo > max
}

/// Every `%` is followed by two hex digits.
pub fn valid_escapes(path: &str) -> bool {
    let b = path.as_bytes();
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'%') {
        let at = i + off;
        if !(b.get(at + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(at + 2).is_some_and(u8::is_ascii_hexdigit)) {
            return false;
        }
        i = at + 3;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn framing() {
        let host = ("host", "a");
        assert_eq!(check(&req("POST", "/", &[host, ("transfer-encoding", "chunked")])), Ok(()));
        assert_eq!(check(&req("POST", "/", &[host, ("content-length", "5"), ("content-length", "5")])), Ok(()));
        for bad in [
            vec![host, ("content-length", "5"), ("transfer-encoding", "chunked")],
            vec![host, ("transfer-encoding", "gzip, chunked")],
            vec![host, ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
            vec![host, ("transfer-encoding", "identity")],
            vec![host, ("content-length", "5"), ("content-length", "6")],
            vec![host, ("content-length", "+5")],
            vec![],
            vec![host, ("host", "b")],
        ] {
            assert_eq!(check(&req("POST", "/", &bad)), Err(Rejection::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn authorities_are_host_and_port_only() {
        for good in [
            "t.example",
            "t.example:8080",
            "t.example:",
            "T.Example.",
            "10.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::1]:0",
            "svc_a",
            "web-1.shop_net",
        ] {
            assert!(valid_authority(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "a b",
            "t.example/evil",
            "t.example, evil.example",
            "evil@t",
            "user:pass@t.example",
            "t.example:99999",
            "t.example:65536",
            "t.example:abc",
            "t.example:-1",
            "t.example:000080",
            "[::1",
            "::1",
            "[::g]",
            "[v1.x]",
            "[::1]x",
            "a%4",
            "a%zz",
            "a%41b",
            "t%2Eexample",
            "a,b",
            "t.example,evil.example",
            "a;b",
            "a..b",
            ".a",
            ".",
            "a~b",
            "a\\b",
            "a\"b",
            "a\u{7f}",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn hosts_and_authorities_are_checked_where_they_are() {
        assert_eq!(check(&req("GET", "/", &[("host", "t.example:8080")])), Ok(()));
        assert_eq!(check(&req("GET", "/", &[("host", "evil@t")])), Err(Rejection::Malformed));
        assert_eq!(
            check(&req("GET", "http://user:pass@t.example/", &[("host", "t.example")])),
            Err(Rejection::Malformed)
        );
        let h2 = |method: &str, target: &str| {
            let mut r = req(method, target, &[]);
            *r.version_mut() = Version::HTTP_2;
            check(&r)
        };
        assert_eq!(h2("GET", "https://t.example/x"), Ok(()));
        assert_eq!(h2("GET", "https://u@t.example/x"), Err(Rejection::Malformed));
        let h2_with_host = |target: &str, hosts: &[&str]| {
            let headers: Vec<(&str, &str)> = hosts.iter().map(|h| ("host", *h)).collect();
            let mut r = req("GET", target, &headers);
            *r.version_mut() = Version::HTTP_2;
            check(&r)
        };
        assert_eq!(h2_with_host("https://t.example/x", &["T.example"]), Ok(()));
        assert_eq!(h2_with_host("/x", &["t.example"]), Ok(()));
        assert_eq!(h2_with_host("https://t.example/x", &["evil.example"]), Err(Rejection::Malformed));
        assert_eq!(h2_with_host("/x", &["t.example", "t.example"]), Err(Rejection::Malformed));
        assert_eq!(h2_with_host("/x", &[]), Err(Rejection::Malformed));
        let star = |method: &str| {
            let mut r = req(method, "*", &[("host", "t.example")]);
            *r.version_mut() = Version::HTTP_2;
            check(&r)
        };
        assert_eq!(star("OPTIONS"), Ok(()));
        assert_eq!(star("GET"), Err(Rejection::Malformed));
    }

    #[test]
    fn targets() {
        let h = [("host", "a")];
        assert_eq!(check(&req("GET", "/x", &h)), Ok(()));
        assert_eq!(check(&req("GET", "http://b/x", &h)), Ok(()));
        assert_eq!(check(&req("OPTIONS", "*", &h)), Ok(()));
        assert_eq!(check(&req("CONNECT", "a:443", &h)), Err(Rejection::ConnectUnsupported));
        assert_eq!(check(&req("GET", "/a%2Fb%7e", &h)), Ok(()));
        for (m, t) in [
            ("GET", "*"),
            ("GET", "a:443"),
            ("GET", "ftp://a/x"),
            ("CONNECT", "/x"),
            ("GET", "/%6%31dmin"),
            ("GET", "/x%"),
            ("GET", "/x%4"),
            ("GET", "/%zz"),
        ] {
            assert_eq!(check(&req(m, t, &h)), Err(Rejection::Malformed), "{m} {t}");
        }
    }
}
