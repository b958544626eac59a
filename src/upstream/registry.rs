//! Long-lived upstream state that outlives a snapshot. A reload that leaves an upstream
//! unchanged gets the very same `Arc<Upstream>`; a changed one keeps every endpoint whose
//! address and client settings did not change (with its pooled connections, health and
//! in-flight count). Endpoints that disappear are remembered weakly as draining until
//! their last request finishes. Health-check tasks are started and stopped here, and the
//! last good DNS answer of every hostname is kept (a failed lookup keeps it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use tokio::task::AbortHandle;

use super::dns::{lookup_all, DnsAnswers, Resolver};
use super::{health, Endpoint, Transport, Upstream};
use crate::config::FileUpstream;
use crate::telemetry::Telemetry;

pub struct UpstreamRegistry {
    live: HashMap<String, Arc<Upstream>>,
    /// Last good addresses of each `(hostname, port)`.
    dns: HashMap<(String, u16), Vec<SocketAddr>>,
    /// Running health checkers, with the upstream they watch.
    health: HashMap<String, (Weak<Upstream>, AbortHandle)>,
    resolver: Arc<dyn Resolver>,
    /// Worker threads: each endpoint gets a connection pool per worker.
    workers: usize,
    /// The largest response head accepted from an upstream (`max_header_bytes` as bound
    /// at start, like the listeners' own limit).
    max_head: usize,
    /// Signalled when an endpoint's reported version or health changes in an upstream
    /// with `health.version_header`: its version groups need a new snapshot.
    regroup: Arc<tokio::sync::Notify>,
}

impl UpstreamRegistry {
    pub fn new(resolver: Arc<dyn Resolver>, workers: usize, max_head: usize) -> Self {
        UpstreamRegistry {
            live: HashMap::new(),
            dns: HashMap::new(),
            health: HashMap::new(),
            resolver,
            workers,
            max_head,
            regroup: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// What the health tasks signal when version groups change.
    pub fn regroup_signal(&self) -> Arc<tokio::sync::Notify> {
        self.regroup.clone()
    }

    /// The resolver, for lookups made without holding the registry.
    pub fn resolver(&self) -> Arc<dyn Resolver> {
        self.resolver.clone()
    }

    /// Resolve every hostname endpoint again; true if any address set changed.
    pub async fn refresh_dns(&mut self, upstreams: &[FileUpstream]) -> bool {
        let answers = lookup_all(&*self.resolver, upstreams).await;
        self.apply_dns(answers)
    }

    /// Record lookup answers; true if any address set changed. A failed lookup keeps the
    /// last good answer.
    pub fn apply_dns(&mut self, answers: DnsAnswers) -> bool {
        let mut changed = false;
        for (upstream, host, port, answer) in answers {
            match answer {
                Ok(mut addrs) if !addrs.is_empty() => {
                    addrs.sort();
                    addrs.dedup();
                    let key = (host.clone(), port);
                    if self.dns.get(&key) != Some(&addrs) {
                        tracing::info!(upstream, host, ?addrs, "endpoint addresses changed");
                        self.dns.insert(key, addrs);
                        changed = true;
                    }
                }
                Ok(_) | Err(_) => {
                    let kept = self.dns.get(&(host.clone(), port)).map_or(0, Vec::len);
                    tracing::warn!(upstream, host, kept, "endpoint lookup failed; keeping the last good addresses");
                }
            }
        }
        changed
    }

    /// Build (or reuse) every upstream of a config, with hostnames at their last good
    /// answers (callers look names up first, see [`lookup_all`]).
    pub fn build(&mut self, upstreams: &[FileUpstream], telemetry: &Telemetry) -> HashMap<String, Arc<Upstream>> {
        let mut next = HashMap::new();
        for source in upstreams {
            let addrs = self.addresses(source);
            let old = self.live.get(&source.name);
            let unchanged = old.filter(|u| {
                u.source == *source && u.endpoints.iter().map(|e| e.addr).eq(addrs.iter().map(|(a, _)| *a))
            });
            let upstream = match unchanged {
                Some(u) => u.clone(),
                None => {
                    let mut u = rebuild(source, &addrs, old.map(|u| &**u), telemetry, self.workers, self.max_head);
                    if source.health.as_ref().is_some_and(|h| h.version_header.is_some()) {
                        u.regroup = Some(self.regroup.clone());
                    }
                    Arc::new(u)
                }
            };
            next.insert(source.name.clone(), upstream);
        }
        self.live = next.clone();
        next
    }

    /// One health checker per upstream with `health`, watching the version the last
    /// [`UpstreamRegistry::build`] made, and a refresher per ID token cache (tasks on the
    /// caller's runtime). Kept apart from `build` so compiling a snapshot starts nothing.
    pub fn sync_tasks(&mut self) {
        for u in self.live.values() {
            if let Some(tokens) = u.identity.as_ref().and_then(|i| i.tokens()) {
                tokens.ensure_refreshing();
            }
        }
        self.sync_health_checks();
    }

    /// Wait (at most one fetch timeout) for every ID token cache's first fetch, which
    /// its refresher starts at once: at start, so the first requests find a token.
    pub async fn warm_tokens(&self) {
        let caches: Vec<_> =
            self.live.values().filter_map(|u| u.identity.as_ref().and_then(|i| i.tokens())).cloned().collect();
        let deadline = tokio::time::Instant::now() + crate::auth::gcp::FETCH_TIMEOUT;
        for t in caches {
            while !t.is_warm() && t.last_error().is_none() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if let Some(why) = t.last_error().filter(|_| !t.is_warm()) {
                tracing::warn!(audience = t.audience(), error = %why, "no ID token yet; requests to this upstream get 503 upstream-auth until one is fetched");
            }
        }
    }

    fn sync_health_checks(&mut self) {
        let live = &self.live;
        self.health.retain(|name, (watched, task)| {
            let current = live.get(name).filter(|u| u.health.is_some());
            let keep = current.is_some_and(|u| std::ptr::eq(Arc::as_ptr(u), watched.as_ptr()));
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, u) in live {
            if u.health.is_some() && !self.health.contains_key(name) {
                let weak = Arc::downgrade(u);
                self.health.insert(name.clone(), (weak.clone(), health::spawn(weak)));
            }
        }
    }

    /// Each configured endpoint's addresses, paired with the `host:port` as written.
    fn addresses(&self, source: &FileUpstream) -> Vec<(SocketAddr, String)> {
        let mut out = Vec::new();
        for ep in &source.endpoints {
            let written = if ep.host.contains(':') {
                format!("[{}]:{}", ep.host, ep.port)
            } else {
                format!("{}:{}", ep.host, ep.port)
            };
            match ep.host.parse::<IpAddr>() {
                Ok(ip) => out.push((SocketAddr::new(ip, ep.port), written)),
                Err(_) => {
                    for a in self.dns.get(&(ep.host.clone(), ep.port)).into_iter().flatten() {
                        out.push((*a, written.clone()));
                    }
                }
            }
        }
        out.sort_by_key(|(a, _)| *a);
        out.dedup_by_key(|(a, _)| *a);
        out
    }
}

impl Drop for UpstreamRegistry {
    fn drop(&mut self) {
        for (_, task) in self.health.values() {
            task.abort();
        }
    }
}

/// A new `Upstream` for changed settings or endpoints, reusing what it can of `old`.
fn rebuild(
    source: &FileUpstream,
    addrs: &[(SocketAddr, String)],
    old: Option<&Upstream>,
    telemetry: &Telemetry,
    workers: usize,
    max_head: usize,
) -> Upstream {
    let checked = source.health.is_some();
    let transport = Transport {
        connect_timeout: source.connect_timeout,
        protocol: source.protocol,
        tls: source.tls.clone(),
        max_head,
    };
    let endpoints: Vec<Arc<Endpoint>> = addrs
        .iter()
        .map(|(addr, host)| {
            let same_place =
                old.and_then(|u| u.endpoints.iter().find(|e| e.addr == *addr && e.configured_host == host.as_str()));
            match same_place {
                Some(e) if e.transport == transport => {
                    if !checked {
                        e.set_healthy(true);
                    }
                    e.clone()
                }
                _ => {
                    // With health checks a new endpoint waits for its first passes; one
                    // whose transport alone changed (a rotated CA or client certificate)
                    // keeps the state of the one it replaces.
                    let new = Endpoint::new(
                        *addr,
                        host,
                        &transport,
                        !checked,
                        telemetry.endpoint_healthy(&source.name, &addr.to_string()),
                        workers,
                    );
                    Arc::new(match same_place {
                        Some(previous) => new.inherit(previous),
                        None => new,
                    })
                }
            }
        })
        .collect();
    let mut draining: Vec<Weak<Endpoint>> = Vec::new();
    if let Some(old) = old {
        let gone = old.endpoints.iter().filter(|e| !endpoints.iter().any(|n| Arc::ptr_eq(n, e)));
        draining.extend(gone.map(Arc::downgrade));
        draining.extend(old.draining.iter().filter(|w| w.strong_count() > 0).cloned());
        for e in old.endpoints.iter().filter(|e| !endpoints.iter().any(|n| Arc::ptr_eq(n, e))) {
            tracing::info!(upstream = %source.name, endpoint = %e.addr, in_flight = e.in_flight(), "endpoint removed: draining");
        }
    }
    // Versions read through another header (or none now) no longer say anything.
    let header = |h: Option<&crate::config::FileHealth>| h.and_then(|h| h.version_header.clone());
    if old.is_some_and(|u| header(u.health.as_ref()) != header(source.health.as_ref())) {
        for e in &endpoints {
            e.report_version(None);
        }
    }
    Upstream::new(source, endpoints, draining, old)
}
