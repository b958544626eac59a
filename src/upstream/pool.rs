//! One upstream and its endpoints, with the live state the request path reads (in-flight
//! counts, health, ejection) kept in atomics on long-lived objects that survive reloads.
//!
//! Each endpoint owns its keep-alive client (a hyper-util pool to that one address), so
//! an endpoint removed by a reload or a DNS change drains naturally: the new snapshot no
//! longer offers it, requests already on it finish, and when the last snapshot that
//! held it is gone the client and its pooled connections close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

// tokio's clock, so a test can pause it and walk a slow start.
use tokio::time::Instant;

use http::uri::{Authority, Scheme};
use http::HeaderValue;
use metrics::Gauge;

use super::client::{HttpClient, Transport};
use super::identity::Identity;
use crate::clock;
use crate::config::{FileHealth, FileOutlier, FileUpstream, HostHeader, RetryOn};
use crate::transform::HeaderOps;

pub struct Upstream {
    pub name: Arc<str>,
    pub version: Arc<str>,
    /// The version as a header value, for `version_header`.
    pub version_value: HeaderValue,
    pub endpoints: Box<[Arc<Endpoint>]>,
    /// Plain HTTP/1.1 endpoints and nothing to transform: the HTTP/1.1 fast path can
    /// carry its requests.
    pub plain_h1: bool,
    /// Prepended to the forwarded path.
    pub base_path: Option<Box<str>>,
    /// Applied after the route's (so the upstream wins on a name both set).
    pub request_headers: HeaderOps,
    /// Applied before the route's.
    pub response_headers: HeaderOps,
    /// `auth`: applied to every request and health check, after every transform.
    pub identity: Option<Identity>,
    /// Endpoints removed from this upstream that may still finish requests.
    pub draining: Box<[Weak<Endpoint>]>,
    pub request_timeout: Duration,
    pub host_header: HostHeader,
    pub max_in_flight: usize,
    in_flight: AtomicUsize,
    pub retries: u32,
    pub retry_on: RetryOn,
    pub slow_start: Duration,
    pub health: Option<FileHealth>,
    pub outlier: Option<FileOutlier>,
    /// When fail-open was last logged (clock ms), to log it once in a while, not per request.
    fail_open_logged: AtomicU64,
    /// With no ready endpoint, requests wait this long for one (cold starts).
    pub queue_timeout: Duration,
    /// Requests waiting for a ready endpoint.
    queued: AtomicUsize,
    /// Signalled when an endpoint becomes healthy.
    pub(crate) ready: tokio::sync::Notify,
    /// The file entry this was built from: a reload reuses the upstream when it is equal.
    pub(crate) source: FileUpstream,
    /// For a version group's view: the upstream it narrows, which keeps the counts a
    /// view must share (`max_in_flight`, the cold-start queue and its wake-ups, the
    /// ejection cap over the whole pool, fail-open logging).
    origin: Option<Arc<Upstream>>,
    /// Signalled by the health task when an endpoint's reported version or health
    /// changes (with `health.version_header`): the controller recompiles the version
    /// groups off the request path.
    pub(crate) regroup: Option<Arc<tokio::sync::Notify>>,
}

/// The endpoints of an upstream that report one version.
#[derive(Clone)]
pub struct VersionGroup {
    pub version: Arc<str>,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// How many of them are healthy.
    pub healthy: u32,
    /// The group's weight within the upstream: its healthy endpoints (or, while none
    /// of the upstream's is healthy and requests fail open, all of them).
    pub weight: u32,
}

pub struct Endpoint {
    pub addr: SocketAddr,
    /// `ip:port`, for the upstream request URI.
    pub authority: Authority,
    /// `host:port` as written in the config, for `host_header = "endpoint"` and probes.
    pub configured_host: HeaderValue,
    /// One pool per worker thread (index 0: background tasks such as health checks), so
    /// a worker never shares a connection, a lock or a wake-up with another.
    clients: Box<[HttpClient]>,
    pub(crate) transport: Transport,
    /// `http` or `https`, for the upstream request URI.
    pub scheme: Scheme,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
    /// Has been healthy at least once. An endpoint still starting (never passed a
    /// check) is not failed open to: requests wait (`queue_timeout`) or get 503.
    ever_healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Clock ms until which the endpoint is ejected; 0 = not ejected.
    ejected_until: AtomicU64,
    pub(crate) added_at: Instant,
    /// `switchyard_endpoint_healthy{upstream, endpoint}`.
    pub(crate) health_gauge: Gauge,
    /// Active health check streaks, owned by the health task.
    pub(crate) probe_passes: AtomicU32,
    pub(crate) probe_failures: AtomicU32,
    /// The version its health checks report (`health.version_header`); written by the
    /// health task, read when a snapshot is compiled, never on the request path.
    reported_version: std::sync::Mutex<Option<Arc<str>>>,
}

impl Endpoint {
    pub(crate) fn new(
        addr: SocketAddr,
        configured_host: &str,
        transport: &Transport,
        healthy: bool,
        health_gauge: Gauge,
        workers: usize,
    ) -> Self {
        let clients = (0..=workers).map(|_| transport.client(host_only(configured_host), addr)).collect();
        let authority = Authority::try_from(addr.to_string()).expect("a socket address is a valid authority");
        let configured_host = HeaderValue::from_str(configured_host)
            .unwrap_or_else(|_| HeaderValue::from_str(authority.as_str()).expect("valid"));
        health_gauge.set(if healthy { 1.0 } else { 0.0 });
        Endpoint {
            addr,
            authority,
            configured_host,
            clients,
            scheme: transport.scheme(),
            transport: transport.clone(),
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(healthy),
            ever_healthy: AtomicBool::new(healthy),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            added_at: Instant::now(),
            health_gauge,
            probe_passes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            reported_version: std::sync::Mutex::new(None),
        }
    }

    /// The version this endpoint's health checks last reported, if any.
    pub fn reported_version(&self) -> Option<Arc<str>> {
        self.reported_version.lock().expect("not poisoned").clone()
    }

    /// Record the version a health check reported; true when it changed.
    pub(crate) fn report_version(&self, version: Option<&str>) -> bool {
        let mut current = self.reported_version.lock().expect("not poisoned");
        if current.as_deref() == version {
            return false;
        }
        *current = version.map(Arc::from);
        true
    }

    /// The connection pool of the calling worker thread.
    #[inline]
    pub fn client(&self) -> &HttpClient {
        &self.clients[crate::workers::current().min(self.clients.len() - 1)]
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn has_been_healthy(&self) -> bool {
        self.ever_healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) -> bool {
        self.health_gauge.set(if healthy { 1.0 } else { 0.0 });
        if healthy {
            self.ever_healthy.store(true, Ordering::Relaxed);
        }
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// Healthy and not ejected.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.is_healthy() && !self.is_ejected(now_ms)
    }

    /// The request URI's authority for a request sending `host` as its Host. HTTP/2
    /// carries it as `:authority`, which HTTP/2 servers route on, so there it is the
    /// host; for HTTP/1.1 (which sends `Host` itself) it stays the address, keeping one
    /// pool key per endpoint. Connections go to `addr` either way.
    pub fn request_authority(&self, host: &HeaderValue) -> Authority {
        match self.transport.protocol {
            crate::config::Protocol::H2 => {
                Authority::try_from(host.as_bytes()).unwrap_or_else(|_| self.authority.clone())
            }
            crate::config::Protocol::Http1 => self.authority.clone(),
        }
    }

    /// Take over the live state of the endpoint this one replaces (same address, new
    /// transport: e.g. a rotated CA or client certificate), so the replacement does not
    /// start unhealthy, ramp up again, or forget an ejection.
    pub(crate) fn inherit(mut self, old: &Endpoint) -> Self {
        self.set_healthy(old.is_healthy());
        self.ever_healthy.store(old.has_been_healthy(), Ordering::Relaxed);
        self.ejected_until.store(old.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
        self.consecutive_failures.store(old.consecutive_failures.load(Ordering::Relaxed), Ordering::Relaxed);
        self.probe_passes.store(old.probe_passes.load(Ordering::Relaxed), Ordering::Relaxed);
        self.probe_failures.store(old.probe_failures.load(Ordering::Relaxed), Ordering::Relaxed);
        self.added_at = old.added_at;
        self.report_version(old.reported_version().as_deref());
        self
    }

    /// Count a request against this endpoint until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// An in-flight request on an endpoint; decrements on drop, so every exit path counts.
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests that may wait for a ready endpoint at once, when `max_in_flight` is unset.
const QUEUE_BOUND: usize = 1024;

/// A place in an upstream's cold-start queue.
struct Queued<'u>(&'u Upstream);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request counted against an upstream's `max_in_flight`.
pub struct Admitted<'u>(&'u Upstream);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// `old` is the upstream this one replaces (a token cache carries over).
    pub(crate) fn new(
        source: &FileUpstream,
        endpoints: Vec<Arc<Endpoint>>,
        draining: Vec<Weak<Endpoint>>,
        old: Option<&Upstream>,
    ) -> Self {
        Upstream {
            name: source.name.as_str().into(),
            version: source.version.as_str().into(),
            version_value: HeaderValue::from_str(&source.version).unwrap_or(HeaderValue::from_static("invalid")),
            endpoints: endpoints.into(),
            plain_h1: source.tls.is_none()
                && source.protocol == crate::config::Protocol::Http1
                && source.base_path.is_none()
                && source.request_headers.is_empty()
                && source.response_headers.is_empty()
                && source.auth.is_none(),
            base_path: source.base_path.as_deref().map(Into::into),
            request_headers: HeaderOps::compile(&source.request_headers),
            response_headers: HeaderOps::compile(&source.response_headers),
            identity: source.auth.as_ref().map(|a| Identity::compile(a, old.and_then(|u| u.identity.as_ref()))),
            draining: draining.into(),
            request_timeout: source.request_timeout,
            host_header: source.host_header.clone(),
            max_in_flight: source.max_in_flight,
            in_flight: AtomicUsize::new(0),
            retries: source.retries,
            retry_on: source.retry_on,
            slow_start: source.slow_start,
            health: source.health.clone(),
            outlier: source.outlier.clone(),
            fail_open_logged: AtomicU64::new(0),
            queue_timeout: source.queue_timeout,
            queued: AtomicUsize::new(0),
            ready: tokio::sync::Notify::new(),
            source: source.clone(),
            origin: None,
            regroup: None,
        }
    }

    /// The upstream whose shared counts this one uses: itself, or for a version
    /// group's view the upstream it narrows.
    #[inline]
    fn base(&self) -> &Upstream {
        self.origin.as_deref().unwrap_or(self)
    }

    /// This upstream narrowed to the endpoints that report `version` (a version group):
    /// same settings and identity, its own `version` for metrics, headers and logs.
    pub fn version_view(self: &Arc<Self>, version: &str, endpoints: Vec<Arc<Endpoint>>) -> Upstream {
        let mut view = Upstream::new(&self.source, endpoints, Vec::new(), Some(self));
        view.version = version.into();
        view.version_value = HeaderValue::from_str(version).unwrap_or(HeaderValue::from_static("invalid"));
        view.origin = Some(self.clone());
        view
    }

    /// The healthy endpoints grouped by the version they report (those that report none
    /// belong to the configured `version`), sorted by version; empty without
    /// `health.version_header`. While no endpoint is healthy, every group, weighted by
    /// its endpoints.
    pub fn version_groups(&self) -> Vec<VersionGroup> {
        let mut groups = self.reported_groups();
        if groups.iter().any(|g| g.healthy > 0) {
            groups.retain(|g| g.healthy > 0);
        } else {
            // Failing open: still by version, so a response is named by what served it.
            for g in &mut groups {
                g.weight = g.endpoints.len() as u32;
            }
        }
        groups
    }

    /// Every endpoint grouped by the version it reports, healthy or not (for status);
    /// empty without `health.version_header`.
    pub fn reported_groups(&self) -> Vec<VersionGroup> {
        if self.health.as_ref().is_none_or(|h| h.version_header.is_none()) {
            return Vec::new();
        }
        let mut groups: Vec<VersionGroup> = Vec::new();
        for e in self.endpoints.iter() {
            let version = e.reported_version().unwrap_or_else(|| self.version.clone());
            let at = match groups.iter().position(|g| g.version == version) {
                Some(at) => at,
                None => {
                    groups.push(VersionGroup { version, endpoints: Vec::new(), healthy: 0, weight: 0 });
                    groups.len() - 1
                }
            };
            groups[at].healthy += u32::from(e.is_healthy());
            groups[at].weight = groups[at].healthy;
            groups[at].endpoints.push(e.clone());
        }
        groups.sort_by(|a, b| a.version.cmp(&b.version));
        groups
    }

    /// Take a `max_in_flight` slot, or `None` when the upstream is full.
    pub fn admit(&self) -> Option<Admitted<'_>> {
        let base = self.base();
        let now = base.in_flight.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted(base);
        if self.max_in_flight != 0 && now >= self.max_in_flight {
            return None; // `admitted` drops and gives the slot back.
        }
        Some(admitted)
    }

    /// Wait up to `queue_timeout` for an endpoint to become ready (a cold start), in a
    /// queue bounded by `max_in_flight` (or 1,024): `None` when the queue is full or time
    /// runs out.
    pub async fn wait_ready(&self, tried: &[&Endpoint]) -> Option<&Arc<Endpoint>> {
        let base = self.base();
        let bound = if self.max_in_flight == 0 { QUEUE_BOUND } else { self.max_in_flight };
        let waiting = base.queued.fetch_add(1, Ordering::Relaxed);
        let _slot = Queued(base);
        if waiting >= bound {
            return None;
        }
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        loop {
            let notified = base.ready.notified();
            if let Some(e) = self.select(tried) {
                return Some(e);
            }
            // Woken by a health change, or re-check now and then (endpoints can also
            // arrive through DNS into a newer snapshot's copy of this upstream).
            let nap = tokio::time::sleep(Duration::from_millis(250));
            if tokio::time::timeout_at(deadline, async {
                tokio::select! { _ = notified => {}, _ = nap => {} }
            })
            .await
            .is_err()
            {
                return None;
            }
        }
    }

    /// Record a real request's outcome for passive outlier ejection.
    pub fn record(&self, endpoint: &Endpoint, failed: bool) {
        let Some(outlier) = &self.outlier else { return };
        if !failed {
            if endpoint.consecutive_failures.load(Ordering::Relaxed) != 0 {
                endpoint.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = endpoint.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = clock::now_ms();
        if failures < outlier.consecutive_failures || endpoint.is_ejected(now) {
            return;
        }
        let pool = &self.base().endpoints;
        let ejected = pool.iter().filter(|e| e.is_ejected(now)).count();
        let allowed = pool.len() * outlier.max_ejected_percent as usize / 100;
        if ejected >= allowed {
            tracing::warn!(upstream = %self.name, endpoint = %endpoint.addr, failures, "not ejecting: max_ejected_percent reached");
            return;
        }
        endpoint.ejected_until.store(now + outlier.ejection.as_millis() as u64, Ordering::Relaxed);
        endpoint.consecutive_failures.store(0, Ordering::Relaxed);
        tracing::warn!(upstream = %self.name, endpoint = %endpoint.addr, failures, ejection = ?outlier.ejection, "endpoint ejected after consecutive failures");
    }

    /// Log that every endpoint is unavailable and traffic goes to all of them, at most
    /// once every 10 s per upstream.
    pub(crate) fn log_fail_open(&self, now_ms: u64) {
        let logged = &self.base().fail_open_logged;
        let last = logged.load(Ordering::Relaxed);
        if (last == 0 || now_ms.saturating_sub(last) >= 10_000)
            && logged.compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(upstream = %self.name, "no healthy endpoint: failing open to all endpoints");
        }
    }
}

/// `host` of `host:port` (IPv6 literals come bracketed: `[::1]:443` → `::1`).
fn host_only(host_port: &str) -> &str {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
