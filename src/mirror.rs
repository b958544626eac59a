//! Shadow traffic: a copy of a sampled share of a route's requests sent to a mirror
//! upstream after the primary is chosen, its answer discarded (and optionally compared
//! with the primary's).
//!
//! The request path only samples (a thread-local random draw), takes a slot (a
//! non-blocking semaphore acquire: the bound on mirror work) and spawns the copy; it
//! never waits for the mirror. A request body is copied as it streams to the primary
//! (up to 64 KiB) and the copy is sent when the body has ended, so the primary is never
//! held up by the mirror. A full mirror (no slot), a body over 64 KiB, and a comparison
//! that cannot be made are counted as `dropped`. Copies carry `x-switchyard-mirror: 1`
//! and the client's Host; they are never retried and never upgraded.

use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::body::UpstreamBody;
use crate::config::{Compare, FileMirror, Protocol};
use crate::telemetry::Telemetry;
pub use crate::telemetry::{MirrorMetrics, MirrorOutcome as Outcome};
use crate::upstream::Upstream;

pub static X_SWITCHYARD_MIRROR: HeaderName = HeaderName::from_static("x-switchyard-mirror");

/// Draws are out of this many: percent 0.0001 is the finest share.
const SAMPLE_SCALE: u32 = 1_000_000;

/// The largest request body copied to a mirror.
pub const MAX_COPY: usize = 64 * 1024;

/// A route's mirror, compiled.
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    /// Copy when a draw in `0..SAMPLE_SCALE` falls below this.
    threshold: u32,
    pub compare: Compare,
    /// Counters (long-lived, like every metric handle).
    pub metrics: Arc<MirrorMetrics>,
    /// The slots copies take (long-lived: a snapshot swap does not reset the bound).
    slots: Arc<Slots>,
}

/// The slots that bound one route's mirror copies in flight: long-lived (kept in the
/// [`SlotRegistry`] across snapshot swaps) so a swap never resets the bound.
pub struct Slots {
    permits: Arc<Semaphore>,
    /// The `max_in_flight` the permits were sized for.
    capacity: std::sync::Mutex<usize>,
}

impl Slots {
    fn new() -> Self {
        Slots { permits: Arc::new(Semaphore::new(0)), capacity: std::sync::Mutex::new(0) }
    }

    /// Size the slots for `max_in_flight` (at compile time; a smaller bound takes effect
    /// as copies in flight finish).
    fn resize(&self, max_in_flight: usize) {
        let mut cap = self.capacity.lock().expect("not poisoned");
        if max_in_flight > *cap {
            self.permits.add_permits(max_in_flight - *cap);
        } else if max_in_flight < *cap {
            let owed = *cap - max_in_flight;
            let forgotten = self.permits.forget_permits(owed);
            // Permits held by copies in flight: retire them as they come back.
            if forgotten < owed {
                let permits = self.permits.clone();
                let rest = u32::try_from(owed - forgotten).unwrap_or(u32::MAX);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Ok(p) = permits.acquire_many(rest).await {
                            p.forget();
                        }
                    });
                }
            }
        }
        *cap = max_in_flight;
    }
}

/// (route, mirror upstream)
type SlotKey = (Box<str>, Box<str>);

/// Every route's mirror slots, by (route, mirror upstream), for the life of the proxy.
#[derive(Default)]
pub struct SlotRegistry(std::sync::Mutex<std::collections::HashMap<SlotKey, Arc<Slots>>>);

impl SlotRegistry {
    fn get(&self, route: &str, upstream: &str) -> Arc<Slots> {
        let mut map = self.0.lock().expect("not poisoned");
        map.entry((route.into(), upstream.into())).or_insert_with(|| Arc::new(Slots::new())).clone()
    }
}

impl Mirror {
    pub fn compile(
        route: &str,
        m: &FileMirror,
        upstream: Arc<Upstream>,
        telemetry: &Telemetry,
        slots: &SlotRegistry,
    ) -> Mirror {
        let metrics = telemetry.mirror(route, &upstream.name, &upstream.version);
        let slots = slots.get(route, &upstream.name);
        slots.resize(m.max_in_flight);
        Mirror {
            metrics,
            slots,
            upstream,
            threshold: (m.percent / 100.0 * f64::from(SAMPLE_SCALE)).round() as u32,
            compare: m.compare,
        }
    }

    /// A slot for one copy, or `None` (counted as dropped) when the mirror is full.
    pub fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        let slot = self.slots.permits.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.metrics.count(Outcome::Dropped);
        }
        slot
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
    pub body: CopyBody,
}

/// The copy's body: known now, or arriving when the primary has read it (nothing
/// arrives when it was over [`MAX_COPY`] or failed).
pub enum CopyBody {
    Ready(Bytes),
    Teed(oneshot::Receiver<Bytes>),
}

/// Send `copy` to the mirror in the background, holding `slot` until it is done. The
/// primary's answer arrives on `primary` when comparing.
pub fn spawn(
    mirror: &Arc<Mirror>,
    slot: OwnedSemaphorePermit,
    copy: Copy,
    primary: Option<oneshot::Receiver<Primary>>,
) {
    let mirror = mirror.clone();
    tokio::spawn(async move {
        let outcome = run(&mirror, slot, copy, primary).await;
        mirror.metrics.count(outcome);
    });
}

async fn run(
    mirror: &Mirror,
    slot: OwnedSemaphorePermit,
    copy: Copy,
    primary: Option<oneshot::Receiver<Primary>>,
) -> Outcome {
    let upstream = &mirror.upstream;
    let body = match copy.body {
        CopyBody::Ready(b) => b,
        // The client's body is read by the primary; a stalled client must not hold the slot.
        CopyBody::Teed(rx) => match tokio::time::timeout(upstream.request_timeout, rx).await {
            Ok(Ok(b)) => b,
            _ => return Outcome::Dropped,
        },
    };
    let Some(admitted) = upstream.admit() else { return Outcome::Dropped };
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
    let Ok(req) = req.body(UpstreamBody::full(body)) else { return Outcome::Error };
    let flight = endpoint.start();
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
    // The mirror's part is done: free its capacity before waiting on the primary, whose
    // body may stream for a long time.
    drop((flight, admitted, slot));
    let Some(primary) = primary else { return Outcome::Match };
    match tokio::time::timeout(COMPARE_WAIT, primary).await {
        Ok(Ok(p)) if p == mirrored => Outcome::Match,
        Ok(Ok(_)) => Outcome::Mismatch,
        // The primary's answer never completed (or is still streaming): nothing to
        // compare with.
        _ => Outcome::Dropped,
    }
}

/// How long a finished copy waits for the primary's answer to compare with.
const COMPARE_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

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
