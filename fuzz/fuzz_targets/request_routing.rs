//! Arbitrary method, target, Host and headers through what the request path decides
//! before any I/O: validation, path normalization, route lookup, backend choice.
//!
//! Must never happen: a panic; a normalized path that is not normal (normalizing again
//! changes it) or climbs above `/`; a route whose host or header conditions the request
//! does not meet; a backend index out of range; a weight-0 backend chosen other than by
//! an override.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use arbitrary::Arbitrary;
use http::{HeaderName, HeaderValue, Method, Request};
use libfuzzer_sys::fuzz_target;
use switchyard::routing::path::normalize;

#[path = "support.rs"]
mod support;

#[derive(Debug, Arbitrary)]
struct Input {
    method: String,
    target: String,
    host: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
}

fuzz_target!(|input: Input| {
    let Ok(method) = Method::from_bytes(input.method.as_bytes()) else { return };
    let mut req = Request::builder().method(method);
    if let Some(h) = &input.host {
        req = req.header(http::header::HOST, h.as_str());
    }
    for (name, value) in input.headers.iter().take(16) {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            req = req.header(n, v);
        }
    }
    let Ok(req) = req.uri(input.target.as_str()).body(()) else { return };
    if switchyard::proxy::validate::check(&req).is_err() {
        return; // answered 400/405 by the proxy, never routed
    }
    let path = req.uri().path();
    let normal = normalize(path);
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
    assert_eq!(normalize(&normal), normal, "not idempotent for {path:?}");
    assert!(!normal.split('/').any(|s| s == ".." || s == "."), "{normal:?}");

    let rt = support::runtime();
    let host = req.headers().get(http::header::HOST).map(|h| h.as_bytes());
    let Some(route) = rt.table.find(host, &normal, req.headers()) else { return };
    assert!(route.headers_match(req.headers()));
    let choice = route.select(req.headers(), IpAddr::V4(Ipv4Addr::LOCALHOST), false);
    assert!(choice.backend < route.backends.len());
    let overridden = route.overrides.iter().any(|o| o.backend == choice.backend);
    assert!(route.backends[choice.backend].share > 0 || overridden, "weight 0 chosen without an override");
});
