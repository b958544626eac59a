//! Header hygiene at the proxy boundary: hop-by-hop headers never cross it, forwarding
//! headers are added, and names that different servers read differently (`_` vs `-`)
//! are dropped.

use http::header::{CONNECTION, COOKIE, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA};
use http::{HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// What this proxy adds to `Via`.
pub const VIA_VALUE: &str = "1.1 switchyard";

/// Remove hop-by-hop headers (RFC 9110 §7.6.1): those named by `Connection`, then the
/// fixed set. `TE: trailers` is end-to-end in practice (gRPC needs it) and is kept.
/// `owned` is a header the proxy itself decided before this point (the request id): a
/// `Connection` header cannot strip it. The other headers the proxy sets
/// (`X-Forwarded-*`, `Via`) are added after this, so a client's copies named here go
/// and the proxy's stand.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, owned: Option<&HeaderName>) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            // Never let a client strip the Host the upstream needs; it is rewritten anyway.
            if name != HOST && Some(&name) != owned {
                headers.remove(&name);
            }
        }
        headers.remove(CONNECTION);
    }
    for name in [&KEEP_ALIVE, &PROXY_CONNECTION, &TRAILER, &TRANSFER_ENCODING, &UPGRADE, &HTTP2_SETTINGS] {
        headers.remove(name);
    }
    if let Some(te) = headers.get(TE) {
        let only_trailers = te.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")));
        if only_trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        } else {
            headers.remove(TE);
        }
    }
}

/// Several `cookie` fields (HTTP/2 sends one per cookie, RFC 9113 §8.2.3) become one
/// `cookie: a=1; b=2`, as an HTTP/1.1 upstream expects (it may read only the first).
pub fn fold_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = Vec::with_capacity(256);
    for v in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

/// Drop header names containing `_`: nginx and others drop or rewrite them, so one
/// server may read `x_user` as `x-user` and another not (a smuggling vector).
pub fn drop_underscore_names(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let bad: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().contains('_')).cloned().collect();
    for k in bad {
        headers.remove(k);
    }
}

/// Append `value` to a list-valued header, folding existing lines into one.
pub fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let mut existing = headers.get_all(name).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(name.clone(), value.clone());
        return;
    }
    let mut joined = Vec::with_capacity(64);
    for v in existing {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(value.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name.clone(), v);
    }
}

pub fn add_via(headers: &mut HeaderMap) {
    append_list(headers, &VIA, &HeaderValue::from_static(VIA_VALUE));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn connection_named_and_fixed_hop_by_hop_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAA"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["te", "x-kept"]);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn connection_cannot_name_what_the_proxy_owns() {
        let mut h = map(&[("connection", "x-request-id, host, x-other"), ("x-request-id", "abc"), ("host", "a")]);
        strip_hop_by_hop(&mut h, Some(&HeaderName::from_static("x-request-id")));
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["host", "x-request-id"]);
    }

    #[test]
    fn cookies_fold_into_one_field() {
        let mut h = map(&[("cookie", "a=1"), ("x", "y"), ("cookie", "b=2"), ("cookie", "c=3")]);
        fold_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2; c=3"]);
        let mut one = map(&[("cookie", "a=1")]);
        fold_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
    }

    #[test]
    fn lists_are_appended() {
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]);
        append_list(&mut h, &X_FORWARDED_FOR, &HeaderValue::from_static("3.3.3.3"));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3");
    }

    #[test]
    fn underscores_are_dropped() {
        let mut h = map(&[("x_user", "a"), ("x-user", "b")]);
        drop_underscore_names(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-user"], "b");
    }
}
