//! Who may call the admin API.
//!
//! With a token: every `/api/` call needs `Authorization: Bearer <token>` (compared in
//! constant time; a token in the query string does not count). Without one (only allowed
//! on a loopback listener): `/api/` and `/` answer only requests whose `Host` names a
//! loopback address, so a web page cannot reach them through DNS rebinding, and not from
//! a browser page of another origin (`Origin` / `Sec-Fetch-Site`), so it cannot make the
//! browser send them either (CSRF).

use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::{HeaderMap, Uri};

use crate::config::Secret;

#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// 401: missing or wrong token.
    Unauthorized,
    /// 403: no token configured and the Host is not loopback.
    ForeignHost,
}

pub fn check(token: Option<&Secret>, uri: &Uri, headers: &HeaderMap, path_needs_token: bool) -> Result<(), Denied> {
    match token {
        Some(secret) if path_needs_token => {
            let given = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim);
            match given {
                Some(t) if constant_time_eq(t.as_bytes(), secret.0.as_bytes()) => Ok(()),
                _ => Err(Denied::Unauthorized),
            }
        }
        Some(_) => Ok(()),
        None => {
            let host = uri.authority().map(|a| a.as_str()).or_else(|| headers.get(HOST).and_then(|h| h.to_str().ok()));
            if !host.is_some_and(is_loopback_host) {
                return Err(Denied::ForeignHost);
            }
            // A page on another site can still make the browser send a simple POST to
            // 127.0.0.1 (CSRF). Browsers mark such requests: refuse them.
            let cross_site = headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site")
                || headers
                    .get(ORIGIN)
                    .and_then(|o| o.to_str().ok())
                    .is_some_and(|o| o == "null" || !o.split_once("://").is_some_and(|(_, h)| is_loopback_host(h)));
            if cross_site {
                Err(Denied::ForeignHost)
            } else {
                Ok(())
            }
        }
    }
}

/// `localhost`, `*.localhost`, `127.0.0.0/8` or `::1`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Compare without an early exit, so response timing does not reveal how much of a
/// guessed token was right. (The length is not secret.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn loopback_hosts() {
        for h in
            ["localhost", "localhost:9901", "127.0.0.1:9901", "127.1.2.3", "[::1]:9901", "app.localhost", "LOCALHOST."]
        {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["evil.com", "evil.com:9901", "10.0.0.1:9901", "localhost.evil.com", "[::2]:1", ""] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn cross_site_browser_requests_are_refused_without_a_token() {
        let uri: Uri = "/api/v1/routes/shop/rollback".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:9901"));
        assert_eq!(check(None, &uri, &h, true), Ok(()));
        h.insert(ORIGIN, HeaderValue::from_static("http://localhost:9901"));
        assert_eq!(check(None, &uri, &h, true), Ok(()));
        h.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert_eq!(check(None, &uri, &h, true), Err(Denied::ForeignHost));
        h.insert(ORIGIN, HeaderValue::from_static("null"));
        assert_eq!(check(None, &uri, &h, true), Err(Denied::ForeignHost));
        h.remove(ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert_eq!(check(None, &uri, &h, true), Err(Denied::ForeignHost));
    }

    #[test]
    fn bearer_tokens() {
        let secret = Secret("s3cret".into());
        let uri: Uri = "/api/v1/status?token=s3cret".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(check(Some(&secret), &uri, &h, true), Err(Denied::Unauthorized));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong!"));
        assert_eq!(check(Some(&secret), &uri, &h, true), Err(Denied::Unauthorized));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert_eq!(check(Some(&secret), &uri, &h, true), Ok(()));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
