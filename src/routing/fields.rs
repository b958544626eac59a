//! The request header fields routing reads, behind one small trait, so the same route
//! table and backend choice serve a hyper `HeaderMap` (HTTP/2, the hyper fallback path)
//! and the raw header lines the HTTP/1.1 fast path parsed in place (no map is built).

use http::{HeaderMap, HeaderName};

/// Read-only access to a request's header fields by name.
pub trait Fields {
    /// Every value of the field `name`, in order.
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a;

    fn first<'a>(&'a self, name: &'a HeaderName) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    fn contains(&self, name: &HeaderName) -> bool {
        self.values(name).next().is_some()
    }
}

impl Fields for HeaderMap {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }
}

/// Header lines as httparse returns them (names in any case).
impl Fields for [httparse::Header<'_>] {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |h| h.name.eq_ignore_ascii_case(name.as_str())).map(|h| h.value)
    }
}

/// A field value as text, by the rule `HeaderValue::to_str` applies (visible ASCII and
/// tabs), so both kinds of fields read the same.
pub fn text(value: &[u8]) -> Option<&str> {
    value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)).then(|| std::str::from_utf8(value).ok()).flatten()
}
