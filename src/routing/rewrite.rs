//! Paths and locations a route changes: `rewrite` (prefix or regex) and an upstream's
//! `base_path` for what is forwarded, `redirect` for what the proxy answers itself.
//! Compiled once per snapshot; the functions here are pure.

use std::borrow::Cow;

use http::StatusCode;

use super::path::normalize;
use crate::config::{FileRedirect, FileRewrite};

pub enum Rewrite {
    /// The route's `path_prefix` (`from`) becomes `to` (`/` strips it).
    Prefix { from: Box<str>, to: Box<str> },
    /// The first match is replaced (`${1}`-style groups).
    Regex { pattern: regex::Regex, replace: Box<str> },
}

impl Rewrite {
    pub fn compile(file: &FileRewrite, path_prefix: &str) -> Rewrite {
        match file {
            FileRewrite::Prefix(to) => Rewrite::Prefix { from: path_prefix.into(), to: to.as_str().into() },
            FileRewrite::Regex { pattern, replace } => {
                Rewrite::Regex { pattern: pattern.0.clone(), replace: replace.as_str().into() }
            }
        }
    }

    /// The rewritten (not yet normalized) path; `path` is normalized and matched the
    /// route, so it starts with the route's prefix.
    pub fn apply<'p>(&self, path: &'p str) -> Cow<'p, str> {
        match self {
            Rewrite::Prefix { from, to } => Cow::Owned(swap_prefix(path, from, to)),
            Rewrite::Regex { pattern, replace } => pattern.replace(path, &**replace),
        }
    }
}

/// `path` with its leading `from` (segment-aware, as routes match) replaced by `to`.
fn swap_prefix(path: &str, from: &str, to: &str) -> String {
    let rest = if from == "/" { path } else { path.strip_prefix(from).unwrap_or(path) };
    match (to, rest) {
        ("/", "") => "/".to_string(),
        ("/", rest) => rest.to_string(),
        (to, rest) => format!("{to}{rest}"),
    }
}

/// What is forwarded: the route's rewrite, then the upstream's `base_path`, normalized
/// again. `None` when neither applies (the caller forwards the path as it was).
pub fn forwarded_path(rewrite: Option<&Rewrite>, base_path: Option<&str>, path: &str) -> Option<String> {
    if rewrite.is_none() && base_path.is_none() {
        return None;
    }
    let rewritten = rewrite.map_or(Cow::Borrowed(path), |r| r.apply(path));
    let joined = match base_path {
        None => rewritten,
        Some(base) if rewritten == "/" => Cow::Borrowed(base),
        Some(base) => Cow::Owned(format!("{base}{rewritten}")),
    };
    Some(normalize(&joined).into_owned())
}

/// A compiled `redirect`.
pub struct Redirect {
    pub scheme: Option<&'static str>,
    pub host: Option<Box<str>>,
    pub port: Option<u16>,
    pub path: Option<Box<str>>,
    /// The route's `path_prefix` and its replacement.
    pub prefix: Option<(Box<str>, Box<str>)>,
    pub status: StatusCode,
}

impl Redirect {
    pub fn compile(file: &FileRedirect, path_prefix: &str) -> Redirect {
        Redirect {
            scheme: file.scheme,
            host: file.host.as_deref().map(Into::into),
            port: file.port,
            path: file.path.as_deref().map(Into::into),
            prefix: file.prefix.as_deref().map(|to| (path_prefix.into(), to.into())),
            status: file.status,
        }
    }

    /// The `Location` for a request: `scheme` and `host` as the request came (the host
    /// without its port, as nginx's `$host`), `path` normalized, `query` as sent.
    pub fn location(&self, scheme: &str, host: &str, path: &str, query: Option<&str>) -> String {
        let scheme = self.scheme.unwrap_or(scheme);
        let host = self.host.as_deref().unwrap_or_else(|| strip_port(host));
        let path: Cow<'_, str> = match (&self.path, &self.prefix) {
            (Some(p), _) => Cow::Borrowed(p),
            (None, Some((from, to))) => Cow::Owned(swap_prefix(path, from, to)),
            (None, None) => Cow::Borrowed(path),
        };
        let mut out = format!("{scheme}://{host}");
        if let Some(port) = self.port {
            out.push_str(&format!(":{port}"));
        }
        out.push_str(&path);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

fn strip_port(host: &str) -> &str {
    // The cut is at an ASCII byte, so the prefix is still valid UTF-8.
    &host[..super::table::without_port(host.as_bytes()).len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(from: &str, to: &str) -> Rewrite {
        Rewrite::Prefix { from: from.into(), to: to.into() }
    }

    #[test]
    fn prefixes_are_replaced_or_stripped() {
        assert_eq!(prefix("/orders", "/api/orders").apply("/orders/42"), "/api/orders/42");
        assert_eq!(prefix("/orders", "/").apply("/orders/42"), "/42");
        assert_eq!(prefix("/orders", "/").apply("/orders"), "/");
        assert_eq!(prefix("/", "/api").apply("/x"), "/api/x");
    }

    #[test]
    fn regex_replaces_the_first_match() {
        let r = Rewrite::Regex { pattern: regex::Regex::new(r"^/orders/(\d+)$").unwrap(), replace: "/o/${1}".into() };
        assert_eq!(r.apply("/orders/42"), "/o/42");
        assert_eq!(r.apply("/orders/x"), "/orders/x");
    }

    #[test]
    fn base_paths_join_and_normalize() {
        assert_eq!(forwarded_path(None, None, "/a"), None);
        assert_eq!(forwarded_path(None, Some("/api/fn"), "/").unwrap(), "/api/fn");
        assert_eq!(forwarded_path(None, Some("/api/fn"), "/x/y").unwrap(), "/api/fn/x/y");
        let strip = prefix("/orders", "/");
        assert_eq!(forwarded_path(Some(&strip), Some("/api"), "/orders/42").unwrap(), "/api/42");
        let dots = Rewrite::Regex { pattern: regex::Regex::new("^/a/(.*)$").unwrap(), replace: "/b/${1}/../c".into() };
        assert_eq!(forwarded_path(Some(&dots), None, "/a/x").unwrap(), "/b/c");
    }

    #[test]
    fn locations_keep_what_the_redirect_does_not_change() {
        let to_https = Redirect {
            scheme: Some("https"),
            host: None,
            port: None,
            path: None,
            prefix: None,
            status: StatusCode::PERMANENT_REDIRECT,
        };
        assert_eq!(
            to_https.location("http", "shop.example.com:8080", "/a/b", Some("q=1")),
            "https://shop.example.com/a/b?q=1"
        );
        assert_eq!(to_https.location("http", "[::1]:80", "/", None), "https://[::1]/");
        let moved = Redirect {
            scheme: None,
            host: Some("new.example.com".into()),
            port: Some(8443),
            path: None,
            prefix: Some(("/old".into(), "/new".into())),
            status: StatusCode::FOUND,
        };
        assert_eq!(moved.location("https", "a", "/old/x", None), "https://new.example.com:8443/new/x");
    }
}
