//! Metrics: one Prometheus recorder per proxy instance (so tests can run many proxies in
//! one process), and handles resolved when a snapshot is compiled so the request path
//! never builds a label or looks a metric up by name.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod history;
mod mirror;
mod tally;

pub use history::{History, Point, SeriesView, CAPACITY as HISTORY_POINTS, INTERVAL as HISTORY_INTERVAL};
pub use mirror::{MirrorMetrics, MirrorOutcome};
pub use tally::{Counts, Tally, BUCKET_SCHEME};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

pub const REQUESTS: &str = "switchyard_requests_total";
pub const DURATION: &str = "switchyard_request_duration_seconds";
pub const UPSTREAM_ERRORS: &str = "switchyard_upstream_errors_total";
pub const IN_FLIGHT: &str = "switchyard_requests_in_flight";
pub const SHARE: &str = "switchyard_backend_share";
pub const RELOADS: &str = "switchyard_config_reloads_total";
pub const GENERATION: &str = "switchyard_config_generation";
pub const ENDPOINT_HEALTHY: &str = "switchyard_endpoint_healthy";
pub const ROLLOUT_STEP: &str = "switchyard_rollout_step";
pub const ROLLOUTS: &str = "switchyard_rollouts_total";
pub const MIRROR: &str = "switchyard_mirror_requests_total";
pub const FLOODS: &str = "switchyard_client_floods_total";
pub const CLUSTER_CONNECTED: &str = "switchyard_cluster_connected";
pub const CLUSTER_REVISION: &str = "switchyard_cluster_revision";

/// Latency buckets in seconds: from sub-millisecond proxy hops to 30 s timeouts.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static METADATA: Metadata<'static> = Metadata::new("switchyard", Level::INFO, Some(module_path!()));

/// Why an upstream exchange failed, as the `kind` label of `switchyard_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect = 0,
    Timeout = 1,
    Reset = 2,
    Protocol = 3,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 4] = [Self::Connect, Self::Timeout, Self::Reset, Self::Protocol];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
        }
    }
}

/// An HTTP/2 control frame a client can flood a connection with, as the `frame` label
/// of `switchyard_client_floods_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlFrame {
    Ping = 0,
    Settings = 1,
}

impl ControlFrame {
    pub const ALL: [ControlFrame; 2] = [Self::Ping, Self::Settings];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Settings => "settings",
        }
    }
}

/// The recorder and the process-wide handles.
pub struct Telemetry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    pub reloads_ok: Counter,
    pub reloads_error: Counter,
    pub generation: Gauge,
    /// The last ten minutes of every backend's traffic, for charts.
    pub history: History,
    /// Responses made before any route was found (404 no-route, 400, 431, ...).
    pub unrouted: Arc<StatusCounters>,
    /// Connections closed for a control-frame flood, by [`ControlFrame`].
    floods: [Counter; 2],
    /// Handles already registered, so a reload of 10,000 routes reuses them instead of
    /// registering (and allocating labels for) every one again. Only compilation
    /// touches this lock; the request path holds `Arc`s to the handles.
    cache: std::sync::Mutex<HandleCache>,
}

/// (route, upstream, version)
type BackendLabels = (Box<str>, Box<str>, Box<str>);

#[derive(Default)]
struct HandleCache {
    backends: std::collections::HashMap<BackendLabels, Arc<BackendMetrics>>,
    routes: std::collections::HashMap<Box<str>, Arc<StatusCounters>>,
    rollout_steps: std::collections::HashMap<Box<str>, Gauge>,
    /// (route, mirror upstream)
    mirrors: std::collections::HashMap<(Box<str>, Box<str>), Arc<MirrorMetrics>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION.to_string()), BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let recorder = Arc::new(recorder);
        let reloads_ok =
            recorder.register_counter(&Key::from_parts(RELOADS, vec![Label::new("result", "ok")]), &METADATA);
        let reloads_error =
            recorder.register_counter(&Key::from_parts(RELOADS, vec![Label::new("result", "error")]), &METADATA);
        let generation = recorder.register_gauge(&Key::from_name(GENERATION), &METADATA);
        let unrouted = Arc::new(StatusCounters::new(recorder.clone(), "", "", ""));
        let floods = ControlFrame::ALL.map(|frame| {
            let labels = vec![Label::new("frame", frame.as_str())];
            recorder.register_counter(&Key::from_parts(FLOODS, labels), &METADATA)
        });
        Telemetry {
            recorder,
            handle,
            reloads_ok,
            reloads_error,
            generation,
            history: History::default(),
            unrouted,
            floods,
            cache: Default::default(),
        }
    }

    /// A client connection was closed for flooding it with `frame`s.
    pub fn flood(&self, frame: ControlFrame) {
        self.floods[frame as usize].increment(1);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drain histogram buffers; a background task calls this so memory stays bounded
    /// between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub fn upkeep_interval() -> Duration {
        Duration::from_secs(5)
    }

    /// The handles for one backend of one route (registered once, then shared).
    pub fn backend(&self, route: &str, upstream: &str, version: &str) -> Arc<BackendMetrics> {
        let mut cache = self.cache.lock().expect("not poisoned");
        let key = (route.into(), upstream.into(), version.into());
        cache.backends.entry(key).or_insert_with(|| Arc::new(self.register_backend(route, upstream, version))).clone()
    }

    fn register_backend(&self, route: &str, upstream: &str, version: &str) -> BackendMetrics {
        let labels = labels(route, upstream, version);
        let r = &self.recorder;
        let kind = |k: UpstreamErrorKind| {
            let mut l = labels.clone();
            l.push(Label::new("kind", k.as_str()));
            r.register_counter(&Key::from_parts(UPSTREAM_ERRORS, l), &METADATA)
        };
        BackendMetrics {
            requests: Arc::new(StatusCounters::new(r.clone(), route, upstream, version)),
            duration: r.register_histogram(&Key::from_parts(DURATION, labels.clone()), &METADATA),
            in_flight: r.register_gauge(&Key::from_parts(IN_FLIGHT, labels.clone()), &METADATA),
            share: r.register_gauge(&Key::from_parts(SHARE, labels.clone()), &METADATA),
            errors: UpstreamErrorKind::ALL.map(kind),
            tally: Tally::default(),
        }
    }

    /// `switchyard_cluster_connected` and `switchyard_cluster_revision`: registered
    /// only by a replica that is in a fleet.
    pub fn cluster_gauges(&self) -> (Gauge, Gauge) {
        let gauge = |name: &'static str| self.recorder.register_gauge(&Key::from_name(name), &METADATA);
        (gauge(CLUSTER_CONNECTED), gauge(CLUSTER_REVISION))
    }

    /// `switchyard_rollout_step{route}`: the index into the route's rollout steps, -1 idle.
    pub fn rollout_step(&self, route: &str) -> Gauge {
        let mut cache = self.cache.lock().expect("not poisoned");
        cache
            .rollout_steps
            .entry(route.into())
            .or_insert_with(|| {
                let labels = vec![Label::new("route", route.to_string())];
                self.recorder.register_gauge(&Key::from_parts(ROLLOUT_STEP, labels), &METADATA)
            })
            .clone()
    }

    /// `switchyard_mirror_requests_total{route, upstream, version, result}` for one
    /// route's mirror (registered once, then shared across reloads).
    pub fn mirror(&self, route: &str, upstream: &str, version: &str) -> Arc<MirrorMetrics> {
        let mut cache = self.cache.lock().expect("not poisoned");
        cache
            .mirrors
            .entry((route.into(), upstream.into()))
            .or_insert_with(|| {
                let counter = |o: MirrorOutcome| {
                    let mut l = labels(route, upstream, version);
                    l.push(Label::new("result", o.as_str()));
                    self.recorder.register_counter(&Key::from_parts(MIRROR, l), &METADATA)
                };
                Arc::new(MirrorMetrics::new(MirrorOutcome::ALL.map(counter)))
            })
            .clone()
    }

    /// A route's mirror counters, if any copy was ever set up.
    pub fn existing_mirror(&self, route: &str, upstream: &str) -> Option<Arc<MirrorMetrics>> {
        self.cache.lock().expect("not poisoned").mirrors.get(&(route.into(), upstream.into())).cloned()
    }

    /// `switchyard_rollouts_total{route, result}` (promoted, rolled_back, aborted).
    pub fn rollouts_total(&self, route: &str, result: &'static str) -> Counter {
        let labels = vec![Label::new("route", route.to_string()), Label::new("result", result)];
        self.recorder.register_counter(&Key::from_parts(ROLLOUTS, labels), &METADATA)
    }

    /// `switchyard_endpoint_healthy{upstream, endpoint}`.
    pub fn endpoint_healthy(&self, upstream: &str, endpoint: &str) -> Gauge {
        let labels = vec![Label::new("upstream", upstream.to_string()), Label::new("endpoint", endpoint.to_string())];
        self.recorder.register_gauge(&Key::from_parts(ENDPOINT_HEALTHY, labels), &METADATA)
    }

    /// Counters for what the proxy answers itself on a route.
    pub fn route_own(&self, route: &str) -> Arc<StatusCounters> {
        let mut cache = self.cache.lock().expect("not poisoned");
        cache
            .routes
            .entry(route.into())
            .or_insert_with(|| Arc::new(StatusCounters::new(self.recorder.clone(), route, "", "")))
            .clone()
    }
}

fn labels(route: &str, upstream: &str, version: &str) -> Vec<Label> {
    vec![
        Label::new("route", route.to_string()),
        Label::new("upstream", upstream.to_string()),
        Label::new("version", version.to_string()),
    ]
}

fn describe(r: &PrometheusRecorder) {
    r.describe_counter(REQUESTS.into(), None, "Requests answered, by route, upstream, version and status code.".into());
    r.describe_histogram(
        DURATION.into(),
        Some(Unit::Seconds),
        "Time from request start until the response head, by route, upstream and version.".into(),
    );
    r.describe_counter(
        UPSTREAM_ERRORS.into(),
        None,
        "Failed upstream exchanges by kind (connect, timeout, reset, protocol).".into(),
    );
    r.describe_gauge(IN_FLIGHT.into(), None, "Requests waiting for their upstream's response head.".into());
    r.describe_gauge(SHARE.into(), None, "Live share of the route's traffic for this backend (0..1).".into());
    r.describe_gauge(
        ENDPOINT_HEALTHY.into(),
        None,
        "1 when the endpoint passes its health checks (always 1 without checks).".into(),
    );
    r.describe_gauge(
        CLUSTER_CONNECTED.into(),
        None,
        "1 while this replica reaches its fleet's etcd; 0 while it serves its last applied state without it.".into(),
    );
    r.describe_gauge(
        CLUSTER_REVISION.into(),
        None,
        "The etcd revision of the fleet state this replica applied.".into(),
    );
    r.describe_gauge(
        ROLLOUT_STEP.into(),
        None,
        "Current step of the route's rollout (index into steps; -1 when idle).".into(),
    );
    r.describe_counter(
        ROLLOUTS.into(),
        None,
        "Finished rollouts by route and result (promoted, rolled_back, aborted).".into(),
    );
    r.describe_counter(
        MIRROR.into(),
        None,
        "Mirrored copies by route, mirror upstream and result (match, mismatch, error, dropped).".into(),
    );
    r.describe_counter(
        FLOODS.into(),
        None,
        "Client connections closed for sending more HTTP/2 control frames than their budget, by frame (ping, settings)."
            .into(),
    );
    r.describe_counter(RELOADS.into(), None, "Config reloads by result.".into());
    r.describe_gauge(GENERATION.into(), None, "Generation of the live config snapshot (1 = the first).".into());
}

/// Handles for one backend of one route.
pub struct BackendMetrics {
    /// `switchyard_requests_total` for responses this version gave (counted when the
    /// response ends, so a client that leaves mid-response counts as 499).
    pub requests: Arc<StatusCounters>,
    duration: Histogram,
    pub in_flight: Gauge,
    pub share: Gauge,
    errors: [Counter; 4],
    /// The same requests, readable (for rollout judging).
    pub tally: Tally,
}

impl BackendMetrics {
    /// The version's answer to one request: its own status, or the 5xx the proxy sent
    /// for its failure, after `elapsed` (until the response head). Feeds the duration
    /// histogram and the rollout tally; only outcomes charged to the version come here.
    #[inline]
    pub fn judged(&self, status: u16, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
        self.tally.answered(status);
        self.tally.timed(elapsed);
    }

    pub fn error(&self, kind: UpstreamErrorKind) {
        self.errors[kind as usize].increment(1);
    }

    /// The upstream failed after its response head (`status`) was judged: an upstream
    /// error of `kind`, and for the rollout tally an error unless the status was one.
    pub fn failed_after_head(&self, kind: UpstreamErrorKind, status: u16) {
        self.error(kind);
        if status < 500 {
            self.tally.failed_late();
        }
    }
}

/// The HTTP status codes that get a slot up front; any other code (100..=999 are valid)
/// makes the backend allocate a slot for every code, once.
const KNOWN: [u16; 44] = [
    100, 101, 200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 307, 308, 400, 401, 402, 403, 404, 405, 406,
    407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 421, 422, 429, 431, 451, 500, 501, 502, 503, 504, 505,
];

/// `switchyard_requests_total` for one label set, one counter per status code. Counters
/// are registered on first use of a code (once; a `OnceLock` read afterwards), so a
/// backend costs about a kilobyte instead of a counter per possible code, and counting
/// never takes a lock.
pub struct StatusCounters {
    recorder: Arc<PrometheusRecorder>,
    labels: Box<[Label]>,
    known: [OnceLock<Counter>; KNOWN.len()],
    /// Indexed by `code - 100`; allocated the first time an unusual code is seen.
    other: OnceLock<Box<[OnceLock<Counter>]>>,
}

impl StatusCounters {
    fn new(recorder: Arc<PrometheusRecorder>, route: &str, upstream: &str, version: &str) -> Self {
        StatusCounters {
            recorder,
            labels: labels(route, upstream, version).into(),
            known: std::array::from_fn(|_| OnceLock::new()),
            other: OnceLock::new(),
        }
    }

    #[inline]
    pub fn inc(&self, status: u16) {
        match KNOWN.binary_search(&status) {
            Ok(i) => self.known[i].get_or_init(|| self.register(status)).increment(1),
            Err(_) => {
                let slots = self.other.get_or_init(|| (100..1000).map(|_| OnceLock::new()).collect());
                let i = usize::from(status.clamp(100, 999) - 100);
                slots[i].get_or_init(|| self.register(status)).increment(1);
            }
        }
    }

    fn register(&self, status: u16) -> Counter {
        let mut labels = self.labels.to_vec();
        labels.push(Label::new("status", status.to_string()));
        self.recorder.register_counter(&Key::from_parts(REQUESTS, labels), &METADATA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counters_count_standard_and_unusual_codes() {
        let t = Telemetry::new();
        let c = t.route_own("r");
        c.inc(200);
        c.inc(200);
        c.inc(599);
        c.inc(999);
        let text = t.render();
        assert!(
            text.contains(r#"switchyard_requests_total{route="r",upstream="",version="",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"status="599"} 1"#), "{text}");
        assert!(text.contains(r#"status="999"} 1"#), "{text}");
    }
}
