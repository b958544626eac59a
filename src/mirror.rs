//! Shadow traffic: a copy of a sampled share of a route's requests sent to a mirror
//! upstream after the primary is chosen, its answer discarded (and optionally compared
//! with the primary's).
//!
//! The request path only samples (a thread-local random draw), takes a slot (a
//! non-blocking semaphore acquire: the bound on mirror work) and spawns the copy; it
//! never waits for the mirror. A full mirror (no slot), a body over 64 KiB or a body of
//! unknown length, and a comparison that cannot be made are counted as `dropped`.
//! Copies carry `x-switchyard-mirror: 1` and the client's Host; they are never retried
//! and never upgraded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use metrics::Counter;
use serde::Serialize;
use tokio::sync::{oneshot, Semaphore};

use crate::config::{Compare, FileMirror, Protocol};
use crate::proxy::UpstreamBody;
use crate::telemetry::Telemetry;
use crate::upstream::Upstream;

pub static X_SWITCHYARD_MIRROR: HeaderName = HeaderName::from_static("x-switchyard-mirror");

/// Draws are out of this many: percent 0.0001 is the finest share.
const SAMPLE_SCALE: u32 = 1_000_000;

/// A route's mirror, compiled.
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    /// Copy when a draw in `0..SAMPLE_SCALE` falls below this.
    threshold: u32,
    pub compare: Compare,
    /// Copies in flight; a copy that finds none free is dropped.
    slots: Arc<Semaphore>,
    pub metrics: Arc<MirrorMetrics>,
}

/// What became of a copy: the `result` label of `switchyard_mirror_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The mirror answered, and (when comparing) agreed with the primary. With
    /// `compare = "none"`, every answered copy.
    Match = 0,
    Mismatch = 1,
    /// The mirror failed: no endpoint, connect error, timeout, reset.
    Error = 2,
    /// Not sent, or not comparable: mirror full, body too large or of unknown length,
    /// the primary's answer never completed.
    Dropped = 3,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Match, Outcome::Mismatch, Outcome::Error, Outcome::Dropped];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Mismatch => "mismatch",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
        }
    }
}

/// The counters of one route's mirror, readable for `status`; long-lived (cached in
/// [`Telemetry`]) so counts survive reloads.
pub struct MirrorMetrics {
    counters: [Counter; 4],
    counts: [AtomicU64; 4],
}

impl MirrorMetrics {
    pub fn new(counters: [Counter; 4]) -> Self {
        MirrorMetrics { counters, counts: std::array::from_fn(|_| AtomicU64::new(0)) }
    }

    pub fn count(&self, outcome: Outcome) {
        self.counters[outcome as usize].increment(1);
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize].load(Ordering::Relaxed)
    }
}

impl Mirror {
    pub fn compile(route: &str, m: &FileMirror, upstream: Arc<Upstream>, telemetry: &Telemetry) -> Mirror {
        Mirror {
            metrics: telemetry.mirror(route, &upstream.name, &upstream.version),
            upstream,
            threshold: (m.percent / 100.0 * f64::from(SAMPLE_SCALE)).round() as u32,
            compare: m.compare,
            slots: Arc::new(Semaphore::new(m.max_in_flight)),
        }
    }

    /// Whether this request is one of the copied share.
    #[inline]
    pub fn sample(&self) -> bool {
        self.threshold >= SAMPLE_SCALE || fastrand::u32(..SAMPLE_SCALE) < self.threshold
    }
}

/// The primary's answer, for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Primary {
    pub status: u16,
    /// With `compare = "body"`: the digest of the body the client received.
    pub digest: Option<u64>,
}

/// The copy of one request.
pub struct Copy {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    /// The forwarded headers (hop-by-hop removed, forwarding headers added).
    pub headers: HeaderMap,
    /// The client's Host.
    pub host: HeaderValue,
    pub body: Bytes,
}

/// Send `copy` to the mirror in the background, unless the mirror is full. The primary's
/// answer arrives on `primary` when comparing.
pub fn spawn(mirror: &Arc<Mirror>, copy: Copy, primary: Option<oneshot::Receiver<Primary>>) {
    let Ok(slot) = mirror.slots.clone().try_acquire_owned() else {
        mirror.metrics.count(Outcome::Dropped);
        return;
    };
    let mirror = mirror.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let outcome = run(&mirror, copy, primary).await;
        mirror.metrics.count(outcome);
    });
}

async fn run(mirror: &Mirror, copy: Copy, primary: Option<oneshot::Receiver<Primary>>) -> Outcome {
    let upstream = &mirror.upstream;
    let Some(_admitted) = upstream.admit() else { return Outcome::Dropped };
    let Some(endpoint) = upstream.select(&[]).cloned() else { return Outcome::Error };
    let Ok(uri) = Uri::builder()
        .scheme(endpoint.scheme.clone())
        .authority(endpoint.request_authority(&copy.host))
        .path_and_query(copy.path_and_query)
        .build()
    else {
        return Outcome::Error;
    };
    let version = if endpoint.transport.protocol == Protocol::H2 { Version::HTTP_2 } else { Version::HTTP_11 };
    let mut req = Request::builder().method(copy.method).uri(uri).version(version);
    if let Some(h) = req.headers_mut() {
        *h = copy.headers;
        h.insert(HOST, copy.host);
        h.insert(X_SWITCHYARD_MIRROR.clone(), HeaderValue::from_static("1"));
    }
    let Ok(req) = req.body(UpstreamBody::full(copy.body)) else { return Outcome::Error };
    let _flight = endpoint.start();
    let exchange = async {
        let resp = endpoint.client().request(req).await.map_err(|_| ())?;
        let status = resp.status().as_u16();
        let digest = match mirror.compare {
            Compare::Body => Some(digest_body(resp.into_body()).await?),
            // The answer is discarded; reading it keeps the connection reusable.
            _ => {
                let mut body = resp.into_body();
                while let Some(frame) = body.frame().await {
                    frame.map_err(|_| ())?;
                }
                None
            }
        };
        Ok::<_, ()>(Primary { status, digest })
    };
    let mirrored = match tokio::time::timeout(upstream.request_timeout, exchange).await {
        Ok(Ok(m)) => {
            upstream.record(&endpoint, m.status >= 500);
            m
        }
        _ => {
            upstream.record(&endpoint, true);
            return Outcome::Error;
        }
    };
    let Some(primary) = primary else { return Outcome::Match };
    match primary.await {
        Ok(p) if p == mirrored => Outcome::Match,
        Ok(_) => Outcome::Mismatch,
        // The primary's answer never completed: nothing to compare with.
        Err(_) => Outcome::Dropped,
    }
}

async fn digest_body(mut body: hyper::body::Incoming) -> Result<u64, ()> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.map_err(|_| ())?.data_ref() {
            hasher.update(d);
        }
    }
    Ok(hasher.digest())
}

/// The `mirror` object of a route in `status`.
#[derive(Debug, Serialize)]
pub struct MirrorView {
    pub upstream: String,
    pub percent: f64,
    pub compare: &'static str,
    pub matched: u64,
    pub mismatched: u64,
    pub errors: u64,
    pub dropped: u64,
    /// Mismatches over compared copies (match + mismatch); `null` before any.
    pub mismatch_rate: Option<f64>,
}

impl MirrorView {
    pub fn new(route: &str, m: &FileMirror, telemetry: &Telemetry) -> MirrorView {
        let upstream = m.upstream.get_ref();
        let metrics = telemetry.existing_mirror(route, upstream);
        let get = |o: Outcome| metrics.as_ref().map_or(0, |m| m.get(o));
        let (matched, mismatched) = (get(Outcome::Match), get(Outcome::Mismatch));
        let compared = matched + mismatched;
        MirrorView {
            upstream: upstream.clone(),
            percent: m.percent,
            compare: match m.compare {
                Compare::None => "none",
                Compare::Status => "status",
                Compare::Body => "body",
            },
            matched,
            mismatched,
            errors: get(Outcome::Error),
            dropped: get(Outcome::Dropped),
            mismatch_rate: (m.compare != Compare::None && compared > 0).then(|| mismatched as f64 / compared as f64),
        }
    }
}
