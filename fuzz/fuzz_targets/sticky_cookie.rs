//! Arbitrary `Cookie` headers and sticky cookie names: finding the sticky key in the
//! header, and routing with it.
//!
//! Must never happen: a panic; a key returned that is not a substring of the header;
//! a key containing `;` (it would span two cookies); a sticky route answering with a
//! backend index out of range, or a `Set-Cookie` that is not a valid header value.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

#[path = "support.rs"]
mod support;

#[derive(Debug, Arbitrary)]
struct Input {
    name: String,
    cookies: Vec<Vec<u8>>,
}

fuzz_target!(|input: Input| {
    let mut headers = HeaderMap::new();
    for c in input.cookies.iter().take(4) {
        if let Ok(v) = HeaderValue::from_bytes(c) {
            headers.append(http::header::COOKIE, v);
        }
    }
    if let Some(key) = switchyard::routing::cookie(&headers, &input.name) {
        assert!(!key.contains(';'), "{key:?}");
        let found = headers.get_all(http::header::COOKIE).iter().any(|v| {
            std::str::from_utf8(v.as_bytes()).is_ok_and(|s| s.contains(key))
        });
        assert!(found, "{key:?} is not in the header");
    }
    let rt = support::runtime();
    let route = rt.table.routes().iter().find(|r| &*r.name == "sticky").expect("the fixed config has it");
    let choice = route.select(&headers, IpAddr::V4(Ipv4Addr::LOCALHOST), false);
    assert!(choice.backend < route.backends.len());
    assert!(route.backends[choice.backend].share > 0, "a sticky key landed on weight 0");
    if let Some(set) = choice.set_cookie {
        assert!(set.to_str().is_ok());
    }
});
