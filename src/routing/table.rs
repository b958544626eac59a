//! Route lookup: host (exact, `*.` wildcard, or any), header conditions, and the longest
//! segment-aware path prefix, ties to file order.
//!
//! Compiled into hash maps keyed by host and by prefix, so a lookup costs one hash probe
//! per path segment per matching host bucket, independent of the number of routes. The
//! maps use FxHash rather than SipHash: their keys come from the config file, and a
//! client can only look keys up, never insert them, so there is no flooding to defend
//! against and lookups run about twice as fast.

use rustc_hash::FxHashMap as HashMap;

use super::{Fields, Route};

#[derive(Default)]
struct Bucket {
    /// Prefix → indices of the routes with it, in file order.
    by_prefix: HashMap<Box<str>, Vec<usize>>,
}

impl Bucket {
    fn add(&mut self, prefix: &str, route: usize) {
        self.by_prefix.entry(prefix.into()).or_default().push(route);
    }
}

pub struct RoutingTable {
    routes: Vec<Route>,
    exact: HashMap<Box<str>, Bucket>,
    /// Keyed by the suffix after `*`, e.g. `.example.com`.
    wildcard: HashMap<Box<str>, Bucket>,
    any: Bucket,
    /// Route index by name, for the control plane (weights, rollouts, status).
    names: HashMap<Box<str>, usize>,
}

/// The longest host name we look up; longer ones can only match `any`-host routes.
const MAX_HOST: usize = 255;

impl RoutingTable {
    /// `hosts[i]` are route `i`'s normalized host patterns (empty = any host).
    pub fn new(routes: Vec<Route>, hosts: &[Vec<String>], prefixes: &[String]) -> Self {
        let names = routes.iter().enumerate().map(|(i, r)| (Box::from(&*r.name), i)).collect();
        let mut table = RoutingTable {
            routes,
            exact: HashMap::default(),
            wildcard: HashMap::default(),
            any: Bucket::default(),
            names,
        };
        for (i, (hosts, prefix)) in hosts.iter().zip(prefixes).enumerate() {
            if hosts.is_empty() {
                table.any.add(prefix, i);
            }
            for h in hosts {
                match h.strip_prefix('*') {
                    Some(suffix) => table.wildcard.entry(suffix.into()).or_default().add(prefix, i),
                    None => table.exact.entry(h.as_str().into()).or_default().add(prefix, i),
                }
            }
        }
        table
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route named `name` (names are unique: validation refuses duplicates).
    pub fn by_name(&self, name: &str) -> Option<&Route> {
        self.position(name).map(|i| &self.routes[i])
    }

    /// Where the route named `name` sits: routes compile in file order, so this is also
    /// its index among the file's routes.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    /// The route for a request. `host` may carry a port and any case; `path` must be
    /// normalized already.
    pub fn find<F: Fields + ?Sized>(&self, host: Option<&[u8]>, path: &str, headers: &F) -> Option<&Route> {
        let mut buf = [0u8; MAX_HOST];
        let host = host.and_then(|h| lower_host(h, &mut buf));
        let mut buckets: [Option<&Bucket>; 8] = [None; 8];
        let mut n = 0;
        if let Some(h) = host {
            if let Some(b) = self.exact.get(h) {
                buckets[n] = Some(b);
                n += 1;
            }
            if !self.wildcard.is_empty() {
                for (i, _) in h.match_indices('.') {
                    if n == buckets.len() - 1 {
                        break;
                    }
                    // `*.example.com` needs at least one label before `.example.com`.
                    if i == 0 {
                        continue;
                    }
                    if let Some(b) = self.wildcard.get(&h[i..]) {
                        buckets[n] = Some(b);
                        n += 1;
                    }
                }
            }
        }
        buckets[n] = Some(&self.any);
        let buckets = &buckets[..=n];

        for prefix in prefixes(path) {
            let mut best: Option<usize> = None;
            for bucket in buckets.iter().flatten() {
                let Some(list) = bucket.by_prefix.get(prefix) else {
                    continue;
                };
                for &i in list {
                    if best.is_some_and(|b| b < i) {
                        break;
                    }
                    if self.routes[i].headers_match(headers) {
                        best = Some(i);
                        break;
                    }
                }
            }
            if let Some(i) = best {
                return Some(&self.routes[i]);
            }
        }
        None
    }
}

/// Lower-case the host and strip its port (and a trailing dot) without allocating. A
/// host with bytes outside ASCII can only match `any`-host routes.
/// `host[:port]` or `[v6]:port` without the port (a validated authority).
#[inline]
pub(crate) fn without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        &host[..host.iter().position(|b| *b == b']').map_or(host.len(), |i| i + 1)]
    } else {
        host.iter().rposition(|b| *b == b':').map_or(host, |i| &host[..i])
    }
}

fn lower_host<'b>(host: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let host = without_port(host);
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.len() > MAX_HOST || !host.is_ascii() {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (o, b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// The path itself, then each shorter segment-aligned prefix, then `/`.
/// `/a/b/` yields `/a/b/`, `/a/b`, `/a`, `/`.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let mut next: Option<&str> = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = if current == "/" {
            None
        } else {
            match current.rfind('/') {
                Some(0) | None => Some("/"),
                Some(i) => Some(&current[..i]),
            }
        };
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_segment_aligned() {
        assert_eq!(prefixes("/a/b/").collect::<Vec<_>>(), ["/a/b/", "/a/b", "/a", "/"]);
        assert_eq!(prefixes("/apix").collect::<Vec<_>>(), ["/apix", "/"]);
        assert_eq!(prefixes("/").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn hosts_lose_port_and_case() {
        let mut buf = [0; MAX_HOST];
        assert_eq!(lower_host(b"Shop.Example.COM:8080", &mut buf), Some("shop.example.com"));
        assert_eq!(lower_host(b"[::1]:80", &mut buf), Some("[::1]"));
        assert_eq!(lower_host(b"example.com.", &mut buf), Some("example.com"));
        assert_eq!(lower_host("bücher.example".as_bytes(), &mut buf), None);
    }
}
