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
    if matches!(req.version(), Version::HTTP_10 | Version::HTTP_11 | Version::HTTP_09) {
        check_framing(req.headers())?;
        let hosts = req.headers().get_all(HOST).iter().count();
        if hosts > 1 || (hosts == 0 && req.version() == Version::HTTP_11) {
            return Err(Rejection::Malformed);
        }
    }
    check_target(req)
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
        // h2 carries the target in pseudo-headers that hyper has already validated.
        return if is_connect { Err(Rejection::ConnectUnsupported) } else { Ok(()) };
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
