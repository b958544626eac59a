//! Typed reads from the spanned TOML tree, recording every problem instead of stopping
//! at the first (serde's derive stops at the first error; operators want them all).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use http::HeaderName;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::duration::parse_duration;
use super::error::Collector;

pub(crate) type Node<'i> = Spanned<DeValue<'i>>;

/// A table being read: knows its field path and which keys were consumed, so that
/// [`Table::finish`] can report every unknown key.
pub(crate) struct Table<'a, 'i> {
    table: &'a DeTable<'i>,
    pub(crate) span: Range<usize>,
    pub(crate) path: String,
    used: HashSet<&'a str>,
    /// Every key the decoder looked for here (for "did you mean").
    asked: Vec<&'a str>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn new(table: &'a DeTable<'i>, span: Range<usize>, path: impl Into<String>) -> Self {
        Table { table, span, path: path.into(), used: HashSet::new(), asked: Vec::new() }
    }

    /// Read a node as a table, or record that it is not one.
    pub(crate) fn from_node(node: &'a Node<'i>, path: String, errs: &mut Collector) -> Option<Self> {
        match node.get_ref() {
            DeValue::Table(t) => Some(Table::new(t, node.span(), path)),
            other => {
                errs.push(node.span(), path, format!("expected a table, found {}", other.type_str()));
                None
            }
        }
    }

    pub(crate) fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn get(&mut self, key: &'a str) -> Option<&'a Node<'i>> {
        self.asked.push(key);
        let (k, v) = self.table.get_key_value(key)?;
        self.used.insert(k.get_ref().as_ref());
        Some(v)
    }

    /// Iterate over all entries (for maps keyed by user names, like `[upstreams]`).
    pub(crate) fn entries(&mut self) -> Vec<(&'a Spanned<toml::de::DeString<'i>>, &'a Node<'i>)> {
        let all: Vec<_> = self.table.iter().collect();
        for (k, _) in &all {
            self.used.insert(k.get_ref().as_ref());
        }
        all
    }

    pub(crate) fn string(&mut self, key: &'a str, errs: &mut Collector) -> Option<Spanned<String>> {
        let node = self.get(key)?;
        expect_str(node, &self.field(key), errs)
    }

    pub(crate) fn bool(&mut self, key: &'a str, errs: &mut Collector) -> Option<bool> {
        let node = self.get(key)?;
        match node.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                errs.push(node.span(), self.field(key), format!("expected true or false, found {}", other.type_str()));
                None
            }
        }
    }

    /// A non-negative integer.
    pub(crate) fn uint(&mut self, key: &'a str, errs: &mut Collector) -> Option<u64> {
        let node = self.get(key)?;
        expect_uint(node, &self.field(key), errs)
    }

    pub(crate) fn duration(&mut self, key: &'a str, errs: &mut Collector) -> Option<Duration> {
        let node = self.get(key)?;
        let s = expect_str(node, &self.field(key), errs)?;
        match parse_duration(s.get_ref()) {
            Ok(d) => Some(d),
            Err(msg) => {
                errs.push(node.span(), self.field(key), msg);
                None
            }
        }
    }

    pub(crate) fn array(&mut self, key: &'a str, errs: &mut Collector) -> Option<&'a [Node<'i>]> {
        let node = self.get(key)?;
        match node.get_ref() {
            DeValue::Array(a) => Some(a),
            other => {
                errs.push(node.span(), self.field(key), format!("expected an array, found {}", other.type_str()));
                None
            }
        }
    }

    pub(crate) fn string_list(&mut self, key: &'a str, errs: &mut Collector) -> Option<Vec<Spanned<String>>> {
        let items = self.array(key, errs)?;
        let field = self.field(key);
        Some(items.iter().enumerate().filter_map(|(i, n)| expect_str(n, &format!("{field}[{i}]"), errs)).collect())
    }

    pub(crate) fn table(&mut self, key: &'a str, errs: &mut Collector) -> Option<Table<'a, 'i>> {
        let node = self.get(key)?;
        Table::from_node(node, self.field(key), errs)
    }

    /// Report every key that was not read (and, when cataloguing, every key asked).
    pub(crate) fn finish(self, errs: &mut Collector) {
        if let Some(catalog) = errs.catalog.as_mut() {
            catalog.extend(self.asked.iter().map(|key| generic_path(&self.path, key)));
        }
        for (k, _) in self.table.iter() {
            let name: &str = k.get_ref().as_ref();
            if self.used.contains(name) {
                continue;
            }
            let hint = super::suggest::did_you_mean(name, self.asked.iter().copied(), false);
            errs.push(k.span(), self.field(name), format!("unknown key `{name}`{hint}"));
        }
    }
}

/// `routes[3].sticky` + `ttl` → `routes.sticky.ttl`; `upstreams.shop-v1` + `tls` →
/// `upstreams.*.tls` (user-chosen names become `*`).
fn generic_path(path: &str, key: &str) -> String {
    let mut generic: Vec<&str> = Vec::new();
    for (i, segment) in path.split('.').filter(|s| !s.is_empty()).enumerate() {
        let plain = segment.split('[').next().unwrap_or(segment);
        generic.push(if i == 1 && generic.first() == Some(&"upstreams") { "*" } else { plain });
    }
    generic.push(key);
    generic.join(".")
}

pub(crate) fn expect_str(node: &Node<'_>, field: &str, errs: &mut Collector) -> Option<Spanned<String>> {
    match node.get_ref() {
        DeValue::String(s) => Some(Spanned::new(node.span(), s.to_string())),
        other => {
            errs.push(node.span(), field, format!("expected a string, found {}", other.type_str()));
            None
        }
    }
}

pub(crate) fn expect_uint(node: &Node<'_>, field: &str, errs: &mut Collector) -> Option<u64> {
    let parsed = match node.get_ref() {
        DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    };
    if parsed.is_none() {
        errs.push(node.span(), field, "expected a non-negative integer");
    }
    parsed
}

/// Any TOML number (integer or float) as f64.
pub(crate) fn expect_number(node: &Node<'_>, field: &str, errs: &mut Collector) -> Option<f64> {
    let parsed = match node.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok().map(|v| v as f64),
        DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(v) if v.is_finite() => Some(v),
        _ => {
            errs.push(node.span(), field, "expected a finite number");
            None
        }
    }
}

/// An `IP:PORT` string.
pub(crate) fn socket_addr(node: &Node<'_>, field: &str, errs: &mut Collector) -> Option<SocketAddr> {
    let s = expect_str(node, field, errs)?;
    match s.get_ref().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                s.span(),
                field,
                format!("invalid address {:?}: expected IP:PORT, e.g. \"127.0.0.1:8080\"", s.get_ref()),
            );
            None
        }
    }
}

/// A valid HTTP header name.
pub(crate) fn header_name(s: &Spanned<String>, field: &str, errs: &mut Collector) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.get_ref().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            errs.push(s.span(), field, format!("invalid header name {:?}", s.get_ref()));
            None
        }
    }
}
