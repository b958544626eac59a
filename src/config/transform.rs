//! What a route or an upstream changes on the way through: `rewrite`, `base_path`,
//! `request_headers` / `response_headers`, and a route's `redirect`. Decoded and
//! checked here; compiled into the snapshot by `snapshot::compile` (nothing of this is
//! parsed on the request path).

use std::fmt;
use std::path::PathBuf;

use http::{HeaderName, HeaderValue, StatusCode};
use toml::de::DeValue;
use toml::Spanned;

use super::error::Collector;
use super::reader::{expect_str, header_name, Node, Table};

/// A header value as written: literal, or a secret read when the config loads.
#[derive(Clone, PartialEq)]
pub struct FileValue {
    /// Secret values are marked sensitive (HTTP/2 never indexes them).
    pub value: HeaderValue,
    pub from: ValueFrom,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueFrom {
    Literal,
    /// `{ env = "NAME" }`, read at load.
    Env(String),
    /// `{ file = "PATH" }`, read at load and watched: a change reloads the config.
    File(PathBuf),
}

impl FileValue {
    pub fn is_secret(&self) -> bool {
        self.from != ValueFrom::Literal
    }
}

/// Never the value of a secret: only where it came from.
impl fmt::Debug for FileValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            ValueFrom::Literal => write!(f, "{:?}", self.value),
            ValueFrom::Env(name) => write!(f, "<from env {name}>"),
            ValueFrom::File(path) => write!(f, "<from file {}>", path.display()),
        }
    }
}

/// `request_headers` / `response_headers`: applied as `set`, then `add`, then `remove`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileHeaders {
    /// Replaces every value of the name.
    pub set: Vec<(HeaderName, FileValue)>,
    /// Appends one value.
    pub add: Vec<(HeaderName, FileValue)>,
    pub remove: Vec<HeaderName>,
}

impl FileHeaders {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Files values are read from (the reloader watches them).
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.set.iter().chain(&self.add).filter_map(|(_, v)| match &v.from {
            ValueFrom::File(p) => Some(p),
            _ => None,
        })
    }
}

/// A route's `rewrite` of the matched path.
#[derive(Debug, Clone, PartialEq)]
pub enum FileRewrite {
    /// Replace the route's `path_prefix` with this (`/` strips it).
    Prefix(String),
    /// Replace the first match; `$1`..`$9` already turned into `${1}`..`${9}`.
    Regex { pattern: Pattern, replace: String },
}

/// A compiled regex, compared by its source.
#[derive(Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

/// A route's `redirect`: the proxy answers with `Location` built from the request.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRedirect {
    pub scheme: Option<&'static str>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Replaces the whole path.
    pub path: Option<String>,
    /// Replaces the route's `path_prefix`, as `rewrite = { prefix }` does.
    pub prefix: Option<String>,
    pub status: StatusCode,
}

/// Names a transform may not touch: framing and connection management belong to the
/// proxy, `Host` to `host_header`.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

pub(crate) fn decode_headers(mut t: Table<'_, '_>, errs: &mut Collector) -> FileHeaders {
    let mut out = FileHeaders::default();
    for (key, list) in [("set", &mut out.set), ("add", &mut out.add)] {
        let Some(mut vt) = t.table(key, errs) else { continue };
        for (k, node) in vt.entries() {
            let name_field = format!("{}.{}", vt.path, k.get_ref());
            let Some(name) = header_name(&Spanned::new(k.span(), k.get_ref().to_string()), &name_field, errs) else {
                continue;
            };
            if RESERVED.contains(&name.as_str()) {
                errs.push(k.span(), name_field, reserved_message(&name));
                continue;
            }
            if let Some(value) = header_value(node, &name_field, errs) {
                list.push((name, value));
            }
        }
        vt.finish(errs);
    }
    if let Some(items) = t.array("remove", errs) {
        let remove_field = t.field("remove");
        for (i, item) in items.iter().enumerate() {
            let item_field = format!("{remove_field}[{i}]");
            let Some(s) = expect_str(item, &item_field, errs) else { continue };
            let Some(name) = header_name(&s, &item_field, errs) else { continue };
            if RESERVED.contains(&name.as_str()) {
                errs.push(s.span(), item_field, reserved_message(&name));
            } else if out.set.iter().chain(&out.add).any(|(n, _)| *n == name) {
                errs.push(s.span(), item_field, format!("{name} is also set or added here: choose one"));
            } else {
                out.remove.push(name);
            }
        }
    }
    t.finish(errs);
    out
}

fn reserved_message(name: &HeaderName) -> String {
    if name == http::header::HOST {
        "Host is set only through the upstream's `host_header`".to_string()
    } else if name.as_str().starts_with("x-forwarded-") {
        format!("{name} is set by the proxy after every transform and cannot be transformed")
    } else {
        format!("{name} belongs to the proxy (framing and connection management) and cannot be transformed")
    }
}

/// A literal string, `{ env = "NAME" }` or `{ file = "PATH" }`.
pub(crate) fn header_value(node: &Node<'_>, field: &str, errs: &mut Collector) -> Option<FileValue> {
    if let DeValue::String(_) = node.get_ref() {
        let s = expect_str(node, field, errs)?;
        return match HeaderValue::from_str(s.get_ref()) {
            Ok(value) => Some(FileValue { value, from: ValueFrom::Literal }),
            Err(_) => {
                errs.push(s.span(), field, "invalid header value (control characters are not allowed)");
                None
            }
        };
    }
    let mut t = Table::from_node(node, field.to_string(), errs)?;
    let env = t.string("env", errs);
    let file = t.string("file", errs);
    t.finish(errs);
    let (text, from, span) = match (env, file) {
        (Some(name), None) => match std::env::var(name.get_ref()) {
            Ok(v) => (v, ValueFrom::Env(name.get_ref().clone()), name.span()),
            Err(_) => {
                errs.push(
                    name.span(),
                    format!("{field}.env"),
                    format!("environment variable {} is not set", name.get_ref()),
                );
                return None;
            }
        },
        (None, Some(path)) => {
            let full = errs.relative_to_config(path.get_ref());
            match std::fs::read_to_string(&full) {
                Ok(v) => {
                    let v = v.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&v).to_string();
                    (v, ValueFrom::File(full), path.span())
                }
                Err(e) => {
                    errs.push(path.span(), format!("{field}.file"), format!("cannot read {}: {e}", full.display()));
                    return None;
                }
            }
        }
        _ => {
            errs.push(node.span(), field, "a value is a string, { env = \"NAME\" } or { file = \"PATH\" }");
            return None;
        }
    };
    if text.is_empty() {
        // A file caught mid-rotation (truncated, not yet written): keep the last good
        // config rather than send an empty credential.
        errs.push(span, field, "the value read is empty");
        return None;
    }
    match HeaderValue::from_str(&text) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Some(FileValue { value, from })
        }
        Err(_) => {
            // Never echo a secret: say where it came from, not what it is.
            errs.push(span, field, "the value read is not a valid header value (control characters or non-ASCII)");
            None
        }
    }
}

pub(crate) fn decode_rewrite(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileRewrite> {
    let field = t.path.clone();
    let span = t.span.clone();
    let prefix = t.string("prefix", errs);
    let regex = t.string("regex", errs);
    let replace = t.string("replace", errs);
    t.finish(errs);
    match (prefix, regex, replace) {
        (Some(p), None, None) => path_like(&p, &format!("{field}.prefix"), errs).map(FileRewrite::Prefix),
        (None, Some(re), Some(replace)) => {
            let pattern = match regex::Regex::new(re.get_ref()) {
                Ok(p) => p,
                Err(e) => {
                    let msg = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
                    errs.push(re.span(), format!("{field}.regex"), format!("invalid regex: {msg}"));
                    return None;
                }
            };
            let replace_field = format!("{field}.replace");
            if !replace.get_ref().starts_with('/') || replace.get_ref().contains(['?', '#', ' ']) {
                errs.push(
                    replace.span(),
                    replace_field,
                    "must start with `/` and hold no `?`, `#` or spaces (the query is kept as sent)",
                );
                return None;
            }
            let groups = pattern.captures_len() - 1;
            let expanded = match dollar_groups(replace.get_ref(), groups) {
                Ok(e) => e,
                Err(msg) => {
                    errs.push(replace.span(), replace_field, msg);
                    return None;
                }
            };
            Some(FileRewrite::Regex { pattern: Pattern(pattern), replace: expanded })
        }
        _ => {
            errs.push(span, field, "a rewrite is { prefix = \"/new\" } or { regex = \"...\", replace = \"/...\" }");
            None
        }
    }
}

/// `$1`..`$9` → `${1}`..`${9}` (so `$1a` means group 1 then `a`), `$$` → a dollar;
/// any other `$` or a group the pattern does not have is an error.
fn dollar_groups(replace: &str, groups: usize) -> Result<String, String> {
    let mut out = String::with_capacity(replace.len() + 8);
    let mut chars = replace.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('$') => out.push_str("$$"),
            Some(d @ '1'..='9') => {
                let n = d as usize - '0' as usize;
                if n > groups {
                    return Err(format!("${n} names a group the regex does not have (it has {groups})"));
                }
                out.push_str(&format!("${{{n}}}"));
            }
            _ => return Err("`$` is followed by a group number 1-9 (write `$$` for a dollar sign)".to_string()),
        }
    }
    Ok(out)
}

/// A path-like setting: starts with `/`, no `?`, `#` or spaces, trailing `/` dropped
/// (except the root).
pub(crate) fn path_like(p: &Spanned<String>, field: &str, errs: &mut Collector) -> Option<String> {
    let s = p.get_ref();
    if !s.starts_with('/') || s.contains(['?', '#', ' ']) {
        errs.push(p.span(), field, "must start with `/` and hold no `?`, `#` or spaces");
        return None;
    }
    let trimmed = s.trim_end_matches('/');
    Some(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
}

pub(crate) fn decode_redirect(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileRedirect> {
    let field = t.path.clone();
    let span = t.span.clone();
    let scheme = t.string("scheme", errs);
    let host = t.string("host", errs);
    let port = t.uint("port", errs);
    let path = t.string("path", errs);
    let prefix = t.string("prefix", errs);
    let status = t.uint("status", errs);
    t.finish(errs);
    let scheme = match scheme {
        None => None,
        Some(s) if s.get_ref() == "http" => Some("http"),
        Some(s) if s.get_ref() == "https" => Some("https"),
        Some(s) => {
            errs.push(s.span(), format!("{field}.scheme"), "expected \"http\" or \"https\"");
            return None;
        }
    };
    let host = match host {
        None => None,
        Some(h) => {
            let lower = h.get_ref().trim_end_matches('.').to_ascii_lowercase();
            let ok = !lower.is_empty()
                && lower
                    .split('.')
                    .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            if !ok {
                errs.push(h.span(), format!("{field}.host"), "expected a host name (no port, no scheme)");
                return None;
            }
            Some(lower)
        }
    };
    let port = match port {
        None => None,
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(_) => {
            errs.push(span.clone(), format!("{field}.port"), "expected a port from 1 to 65535");
            return None;
        }
    };
    if path.is_some() && prefix.is_some() {
        errs.push(span, field, "choose `path` (replaces the path) or `prefix` (replaces the matched prefix), not both");
        return None;
    }
    let path = match path {
        Some(p) => Some(path_like(&p, &format!("{field}.path"), errs)?),
        None => None,
    };
    let prefix = match prefix {
        Some(p) => Some(path_like(&p, &format!("{field}.prefix"), errs)?),
        None => None,
    };
    if scheme.is_none() && host.is_none() && port.is_none() && path.is_none() && prefix.is_none() {
        errs.push(span, field, "a redirect changes at least one of scheme, host, port, path or prefix");
        return None;
    }
    // 301 by default, as nginx's `return 301` and Envoy's redirect default.
    let status = match status.unwrap_or(301) {
        s @ (301 | 302 | 303 | 307 | 308) => StatusCode::from_u16(s as u16).expect("a valid status"),
        other => {
            errs.push(span, format!("{field}.status"), format!("status {other}: expected 301, 302, 303, 307 or 308"));
            return None;
        }
    };
    Some(FileRedirect { scheme, host, port, path, prefix, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_groups_are_exact() {
        assert_eq!(dollar_groups("/o/$1", 1).unwrap(), "/o/${1}");
        assert_eq!(dollar_groups("/o/$1a$$", 1).unwrap(), "/o/${1}a$$");
        assert!(dollar_groups("/o/$2", 1).unwrap_err().contains("$2"));
        assert!(dollar_groups("/o/$x", 1).is_err());
        assert!(dollar_groups("/o/$", 1).is_err());
    }
}
