//! The status document (`GET /api/v1/status`, `switchyard ctl status`, the status page):
//! what is live, built from the current snapshot.

use serde::Serialize;

use crate::app::App;
use crate::clock;
use crate::clock::timestamp;
use crate::config::FileConfig;
use crate::rollout::RolloutView;
use crate::routing::{Backend, Route, Sticky, RESOLUTION};
use crate::snapshot::Runtime;
use crate::state::file_route;
use crate::upstream::Endpoint;

#[derive(Debug, Serialize)]
pub struct Status {
    pub generation: u64,
    pub config_path: Option<String>,
    pub loaded_at: String,
    pub last_reload_error: Option<String>,
    pub draining: bool,
    /// Where runtime weights and rollout progress come from: `"file"` (this process,
    /// with its state file) or `"cluster"` (the fleet's state in etcd).
    pub source: &'static str,
    /// With `"cluster"`: the etcd revision of the fleet state this replica applied.
    pub revision: Option<i64>,
    /// With `"cluster"`: whether etcd is reachable now.
    pub connected: Option<bool>,
    pub routes: Vec<RouteStatus>,
    pub upstreams: Vec<UpstreamStatus>,
}

#[derive(Debug, Serialize)]
pub struct RouteStatus {
    pub name: String,
    pub hosts: Vec<String>,
    pub path_prefix: String,
    pub sticky: Option<&'static str>,
    pub backends: Vec<BackendStatus>,
    /// Rollout state; `null` when the route has no rollout.
    pub rollout: Option<RolloutView>,
    /// Shadow traffic and its comparison counts; `null` without a mirror.
    pub mirror: Option<crate::mirror::MirrorView>,
}

#[derive(Debug, Serialize)]
pub struct BackendStatus {
    pub upstream: String,
    pub version: String,
    pub weight: f64,
    /// The live share, 0..1.
    pub share: f64,
    pub source: &'static str,
    /// Responses sent for this backend since the process started.
    pub requests: u64,
    /// Of which 5xx (upstream errors included).
    pub errors: u64,
    /// Time to response head, as cumulative (upper bound ms, count) buckets (non-empty
    /// ones only); viewers diff two polls for a window's p99.
    pub latency_ms_buckets: Vec<(f64, u64)>,
    /// During a rolling update seen through `health.version_header`: the backend's
    /// version groups, each with its share and counts (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<BackendStatus>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub version: String,
    pub endpoints: Vec<EndpointStatus>,
    /// With `health.version_header`: the endpoints by the version they report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupStatus>,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub version: String,
    /// Healthy endpoints: the group's weight within the upstream.
    pub healthy: u32,
    pub endpoints: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct EndpointStatus {
    pub address: String,
    pub healthy: bool,
    pub ejected: bool,
    pub draining: bool,
    pub in_flight: usize,
}

pub fn status(app: &App) -> Status {
    let (rt, file) = app.controller.live();
    let now = clock::now_ms();
    let endpoint = |e: &Endpoint, draining: bool| EndpointStatus {
        address: e.addr.to_string(),
        healthy: e.is_healthy(),
        ejected: e.is_ejected(now),
        draining,
        in_flight: e.in_flight(),
    };
    let mut upstreams: Vec<UpstreamStatus> = rt
        .upstreams
        .values()
        .map(|u| UpstreamStatus {
            name: u.name.to_string(),
            version: u.version.to_string(),
            endpoints: u
                .endpoints
                .iter()
                .map(|e| endpoint(e, false))
                .chain(
                    u.draining
                        .iter()
                        .filter_map(|w| w.upgrade())
                        .filter(|e| e.in_flight() > 0)
                        .map(|e| endpoint(&e, true)),
                )
                .collect(),
            groups: u
                .reported_groups()
                .into_iter()
                .map(|g| GroupStatus {
                    version: g.version.to_string(),
                    healthy: g.healthy,
                    endpoints: g.endpoints.iter().map(|e| e.addr.to_string()).collect(),
                })
                .collect(),
        })
        .collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    let fleet = app.controller.fleet();
    Status {
        generation: rt.generation,
        config_path: app.controller.config_path().map(|p| p.display().to_string()),
        loaded_at: timestamp(rt.loaded_at),
        last_reload_error: app.controller.last_reload_error(),
        draining: app.plane.is_draining(),
        source: if fleet.is_some() { "cluster" } else { "file" },
        revision: fleet.map(|f| f.applied()),
        connected: fleet.map(|f| f.is_connected()),
        routes: rt.table.routes().iter().map(|r| route_status(app, &file, &rt, r)).collect(),
        upstreams,
    }
}

pub fn route_status(app: &App, file: &FileConfig, rt: &Runtime, r: &Route) -> RouteStatus {
    let file = file_route(file, rt, &r.name);
    RouteStatus {
        name: r.name.to_string(),
        hosts: file.map(|f| f.hosts.clone()).unwrap_or_default(),
        path_prefix: file.map(|f| f.path_prefix.clone()).unwrap_or_default(),
        sticky: r.sticky.as_ref().map(|s| match s {
            Sticky::Cookie { .. } => "cookie",
            Sticky::Header(_) => "header",
            Sticky::SourceIp => "source_ip",
        }),
        backends: r.backends.iter().map(|b| backend_status(app, b)).collect(),
        rollout: file.and_then(|f| app.driver.view(f)),
        mirror: file
            .and_then(|f| f.mirror.as_ref())
            .map(|m| crate::mirror::MirrorView::new(&r.name, m, &app.plane.telemetry)),
    }
}

fn backend_status(app: &App, b: &Backend) -> BackendStatus {
    let counts = b.metrics.tally.snapshot();
    BackendStatus {
        upstream: b.upstream.name.to_string(),
        version: b.upstream.version.to_string(),
        weight: b.weight,
        share: f64::from(b.share) / f64::from(RESOLUTION),
        // In a fleet, what is not the file's came from the fleet's state.
        source: match b.source.as_str() {
            "config" => "config",
            _ if app.controller.fleet().is_some() => "cluster",
            other => other,
        },
        requests: counts.requests,
        errors: counts.errors,
        latency_ms_buckets: counts.buckets_ms(),
        groups: b.groups.iter().map(|g| backend_status(app, g)).collect(),
    }
}
