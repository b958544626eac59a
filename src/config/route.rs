//! `[[routes]]`: how a route is written and decoded (match conditions, backends,
//! stickiness, overrides). Cross-field rules (unknown upstreams, duplicates, weights)
//! are in `validate.rs`.

use std::ops::Range;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use toml::de::DeValue;
use toml::Spanned;

use super::delivery::{decode_mirror, decode_rollout, FileMirror, FileRollout};
use super::error::Collector;
use super::reader::header_name;
use super::reader::{expect_number, expect_str, Table};
use super::transform::{
    decode_headers, decode_redirect, decode_rewrite, path_like, FileHeaders, FileRedirect, FileRewrite,
};

#[derive(Debug, Clone, PartialEq)]
pub struct FileRoute {
    pub name: String,
    pub span: Range<usize>,
    pub name_span: Range<usize>,
    /// Lower-cased, port-less; `*.example.com` wildcards kept as written. Empty = any host.
    pub hosts: Vec<String>,
    /// Starts with `/`; a trailing `/` is dropped (matching is per segment anyway).
    pub path_prefix: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub backends: Vec<FileBackend>,
    pub backends_span: Range<usize>,
    pub version_header: Option<HeaderName>,
    pub sticky: Option<FileSticky>,
    pub overrides: Vec<FileOverride>,
    pub rollout: Option<FileRollout>,
    pub mirror: Option<FileMirror>,
    pub rewrite: Option<FileRewrite>,
    /// Answered by the proxy; such a route has no backends.
    pub redirect: Option<FileRedirect>,
    pub request_headers: FileHeaders,
    pub response_headers: FileHeaders,
}

/// Where a route's sticky key comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum FileSticky {
    /// A cookie the proxy issues (random key) when absent or malformed.
    Cookie { name: String, ttl: Duration },
    /// A header the client sends (e.g. a user id); absent = per-request split.
    Header(HeaderName),
    /// The client's IP address.
    SourceIp,
}

/// A rule that forces an upstream for matching requests, checked before the split.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOverride {
    pub on: OverrideOn,
    /// Required value; `None` = presence is enough.
    pub value: Option<String>,
    pub upstream: Spanned<String>,
    pub field: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OverrideOn {
    Header(HeaderName),
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileBackend {
    pub upstream: Spanned<String>,
    pub weight: f64,
    pub weight_span: Range<usize>,
    pub field: String,
}

pub(super) fn decode_route(mut t: Table<'_, '_>, errs: &mut Collector) -> FileRoute {
    let span = t.span.clone();
    let (name, name_span) = match t.string("name", errs) {
        Some(n) => (n.get_ref().clone(), n.span()),
        None => {
            errs.push(span.clone(), t.field("name"), "missing: every route needs a `name`");
            (String::new(), span.clone())
        }
    };
    let mut hosts = Vec::new();
    if let Some(list) = t.string_list("hosts", errs) {
        if list.is_empty() {
            errs.push(span.clone(), t.field("hosts"), "empty list: omit `hosts` to match any host");
        }
        for (i, h) in list.iter().enumerate() {
            match normalize_host_pattern(h.get_ref()) {
                Ok(h) => hosts.push(h),
                Err(msg) => errs.push(h.span(), format!("{}[{i}]", t.field("hosts")), msg),
            }
        }
    }
    let path_prefix = t
        .string("path_prefix", errs)
        .map_or_else(|| Some("/".to_string()), |p| path_like(&p, &t.field("path_prefix"), errs))
        .unwrap_or_else(|| "/".to_string());
    let mut headers = Vec::new();
    if let Some(mut ht) = t.table("headers", errs) {
        for (k, v) in ht.entries() {
            let field = format!("{}.{}", ht.path, k.get_ref());
            let name = header_name(&Spanned::new(k.span(), k.get_ref().to_string()), &field, errs);
            let value = expect_str(v, &field, errs).and_then(|s| match HeaderValue::from_str(s.get_ref()) {
                Ok(v) => Some(v),
                Err(_) => {
                    errs.push(s.span(), field.clone(), "invalid header value");
                    None
                }
            });
            if let (Some(n), Some(v)) = (name, value) {
                headers.push((n, v));
            }
        }
        ht.finish(errs);
    }
    let redirect = t.table("redirect", errs).and_then(|rt| decode_redirect(rt, errs));
    let mut backends = Vec::new();
    let mut backends_span = span.clone();
    match t.get("backends") {
        None if redirect.is_some() => {}
        None => errs.push(span.clone(), t.field("backends"), "missing: a route needs at least one backend"),
        Some(node) => {
            backends_span = node.span();
            let field = t.field("backends");
            match node.get_ref() {
                DeValue::Array(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(bt) = Table::from_node(item, format!("{field}[{i}]"), errs) {
                            backends.extend(decode_backend(bt, errs));
                        }
                    }
                }
                _ => errs.push(node.span(), field, "expected a non-empty array of { upstream, weight }"),
            }
        }
    }
    let version_header =
        t.string("version_header", errs).and_then(|s| header_name(&s, &t.field("version_header"), errs));
    let sticky = t.table("sticky", errs).and_then(|st| decode_sticky(st, errs));
    let mut overrides = Vec::new();
    if let Some(items) = t.array("overrides", errs) {
        let field = t.field("overrides");
        for (i, item) in items.iter().enumerate() {
            if let Some(ot) = Table::from_node(item, format!("{field}[{i}]"), errs) {
                overrides.extend(decode_override(ot, errs));
            }
        }
    }
    let rollout = t.table("rollout", errs).and_then(|rt| decode_rollout(rt, errs));
    let mirror = t.table("mirror", errs).and_then(|mt| decode_mirror(mt, errs));
    let rewrite = t.table("rewrite", errs).and_then(|rt| decode_rewrite(rt, errs));
    let request_headers = t.table("request_headers", errs).map(|ht| decode_headers(ht, errs)).unwrap_or_default();
    let response_headers = t.table("response_headers", errs).map(|ht| decode_headers(ht, errs)).unwrap_or_default();
    t.finish(errs);
    FileRoute {
        name,
        span,
        name_span,
        hosts,
        path_prefix,
        headers,
        backends,
        backends_span,
        version_header,
        sticky,
        overrides,
        rollout,
        mirror,
        rewrite,
        redirect,
        request_headers,
        response_headers,
    }
}

fn decode_sticky(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileSticky> {
    let span = t.span.clone();
    let cookie = t.string("cookie", errs);
    let header = t.string("header", errs);
    let source_ip = t.bool("source_ip", errs);
    let ttl = t.duration("ttl", errs);
    let field = t.path.clone();
    t.finish(errs);
    let modes = usize::from(cookie.is_some()) + usize::from(header.is_some()) + usize::from(source_ip == Some(true));
    if modes != 1 {
        errs.push(span, field, "choose exactly one of `cookie = NAME`, `header = NAME` or `source_ip = true`");
        return None;
    }
    if ttl.is_some() && cookie.is_none() {
        errs.push(span, format!("{field}.ttl"), "`ttl` only applies to `cookie` stickiness");
    }
    if let Some(c) = cookie {
        if !is_cookie_name(c.get_ref()) {
            errs.push(c.span(), format!("{field}.cookie"), format!("invalid cookie name {:?}", c.get_ref()));
            return None;
        }
        let ttl = ttl.unwrap_or(Duration::from_secs(24 * 3600));
        return Some(FileSticky::Cookie { name: c.into_inner(), ttl });
    }
    if let Some(h) = header {
        return header_name(&h, &format!("{field}.header"), errs).map(FileSticky::Header);
    }
    Some(FileSticky::SourceIp)
}

fn decode_override(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileOverride> {
    let span = t.span.clone();
    let field = t.path.clone();
    let header = t.string("header", errs);
    let cookie = t.string("cookie", errs);
    let value = t.string("value", errs).map(Spanned::into_inner);
    let upstream = t.string("upstream", errs);
    t.finish(errs);
    let on = match (header, cookie) {
        (Some(h), None) => OverrideOn::Header(header_name(&h, &format!("{field}.header"), errs)?),
        (None, Some(c)) if is_cookie_name(c.get_ref()) => OverrideOn::Cookie(c.into_inner()),
        (None, Some(c)) => {
            errs.push(c.span(), format!("{field}.cookie"), format!("invalid cookie name {:?}", c.get_ref()));
            return None;
        }
        _ => {
            errs.push(span, field, "an override matches on exactly one of `header = NAME` or `cookie = NAME`");
            return None;
        }
    };
    let Some(upstream) = upstream else {
        errs.push(span, format!("{field}.upstream"), "missing: an override names the `upstream` it forces");
        return None;
    };
    Some(FileOverride { on, value, upstream, field })
}

/// RFC 6265 cookie-name: a token.
fn is_cookie_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn decode_backend(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileBackend> {
    let upstream = t.string("upstream", errs);
    if upstream.is_none() && t.get("upstream").is_none() {
        errs.push(t.span.clone(), t.field("upstream"), "missing: a backend names an `upstream`");
    }
    let (weight, weight_span) = match t.get("weight") {
        None => (1.0, t.span.clone()),
        Some(node) => (expect_number(node, &t.field("weight"), errs)?, node.span()),
    };
    let field = t.path.clone();
    t.finish(errs);
    Some(FileBackend { upstream: upstream?, weight, weight_span, field })
}

fn normalize_host_pattern(h: &str) -> Result<String, String> {
    let lower = h.trim_end_matches('.').to_ascii_lowercase();
    let body = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !body.is_empty()
        && body
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if ok {
        Ok(lower)
    } else {
        Err(format!("invalid host {h:?}: expected a host name (no port), optionally starting with `*.`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(normalize_host_pattern("Shop.Example.com").unwrap(), "shop.example.com");
        assert_eq!(normalize_host_pattern("*.example.com").unwrap(), "*.example.com");
        assert!(normalize_host_pattern("example.com:80").is_err());
        assert!(normalize_host_pattern("a.*.com").is_err());
    }
}
