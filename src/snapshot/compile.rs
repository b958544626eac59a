//! Compiling a validated [`FileConfig`] into a [`Runtime`] snapshot: resolve endpoints,
//! reuse long-lived upstream state, resolve shares, pre-resolve metric handles, and turn
//! every per-request decision that can be made now into data (STYLE.md: decide at compile
//! time, not per request).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Runtime, Settings};
use crate::config::{self, FileConfig, FileRoute, FileSticky};
use crate::control::AdminWeights;
use crate::mirror::SlotRegistry;
use crate::routing::resolve_shares;
use crate::routing::{sticky, Backend, Override, OverrideOn, Route, RoutingTable, Source, Split, Sticky};
use crate::routing::{Redirect, Rewrite};
use crate::telemetry::Telemetry;
use crate::transform::HeaderOps;
use crate::upstream::{Upstream, UpstreamRegistry};

/// A whole new snapshot from a validated file: reuse the registry's long-lived upstream
/// state, then compile the routes. Synchronous and free of tasks: hostnames are looked
/// up by the caller beforehand ([`UpstreamRegistry::apply_dns`]), so benches and fuzz
/// targets can call it with a fresh registry and get a routing table.
pub fn compile(
    cfg: &FileConfig,
    admin: &AdminWeights,
    registry: &mut UpstreamRegistry,
    telemetry: &Telemetry,
    slots: &SlotRegistry,
    generation: u64,
) -> Runtime {
    let upstreams = registry.build(&cfg.upstreams, telemetry);
    let table = compile_table(cfg, &upstreams, telemetry, admin, slots);
    Runtime { generation, loaded_at: SystemTime::now(), table, upstreams, settings: Arc::new(Settings::compile(cfg)) }
}

/// A snapshot of `cfg` alone: no admin weights, fresh counters and registry, no task
/// started (health checks start only when the controller asks). For benches, fuzz
/// targets and tools that need a routing table; hostnames are not looked up.
pub fn compile_fresh(cfg: &FileConfig) -> Runtime {
    let workers = crate::workers::count(cfg.server.workers);
    let resolver = Arc::new(crate::upstream::SystemResolver);
    let mut registry = UpstreamRegistry::new(resolver, workers, cfg.server.limits.max_header_bytes);
    compile(cfg, &AdminWeights::default(), &mut registry, &Telemetry::new(), &SlotRegistry::default(), 1)
}

/// The route table alone, for changes that keep the upstreams (admin weight changes).
pub fn compile_table(
    cfg: &FileConfig,
    upstreams: &HashMap<String, Arc<Upstream>>,
    telemetry: &Telemetry,
    admin: &AdminWeights,
    slots: &SlotRegistry,
) -> RoutingTable {
    let routes: Vec<Route> = cfg.routes.iter().map(|r| compile_route(r, upstreams, telemetry, admin, slots)).collect();
    let hosts: Vec<Vec<String>> = cfg.routes.iter().map(|r| r.hosts.clone()).collect();
    let prefixes: Vec<String> = cfg.routes.iter().map(|r| r.path_prefix.clone()).collect();
    RoutingTable::new(routes, &hosts, &prefixes)
}

/// A backend's version groups, when its upstream's health checks report versions: one
/// backend per version, narrowed to that version's endpoints, with that version's metric
/// handles (created here, off the request path) and share in proportion to its healthy
/// endpoints. One reported version is one group (so metrics and headers name it).
fn version_groups(
    route: &str,
    upstream: &Arc<Upstream>,
    weight: f64,
    share: u32,
    source: Source,
    telemetry: &Telemetry,
) -> Box<[Backend]> {
    let groups = upstream.version_groups();
    let total: u64 = groups.iter().map(|g| u64::from(g.weight)).sum();
    groups
        .into_iter()
        .map(|g| {
            let view = Arc::new(upstream.version_view(&g.version, g.endpoints));
            Backend {
                metrics: telemetry.backend(route, &view.name, &view.version),
                seed: sticky::backend_seed(route, &format!("{}\0{}", view.name, view.version)),
                share: (u64::from(share) * u64::from(g.weight) / total.max(1)) as u32,
                group_weight: g.weight,
                groups: Box::new([]),
                upstream: view,
                weight,
                source,
            }
        })
        .collect()
}

fn compile_route(
    r: &FileRoute,
    upstreams: &HashMap<String, Arc<Upstream>>,
    telemetry: &Telemetry,
    admin: &AdminWeights,
    slots: &SlotRegistry,
) -> Route {
    // Backends as listed, then upstreams that only an override names (weight 0).
    let mut entries: Vec<(&str, f64)> = r.backends.iter().map(|b| (b.upstream.get_ref().as_str(), b.weight)).collect();
    for o in &r.overrides {
        if !entries.iter().any(|(name, _)| *name == o.upstream.get_ref()) {
            entries.push((o.upstream.get_ref(), 0.0));
        }
    }
    let admin = admin.for_route(r);
    let sources: Vec<Source> = entries
        .iter_mut()
        .map(|(name, weight)| match admin.and_then(|a| a.weights.get(*name).map(|w| (w, a.by_rollout))) {
            Some((w, by_rollout)) => {
                *weight = *w;
                if by_rollout {
                    Source::Rollout
                } else {
                    Source::Admin
                }
            }
            None => Source::Config,
        })
        .collect();
    let weights: Vec<f64> = entries.iter().map(|(_, w)| *w).collect();
    let shares = resolve_shares(&weights);
    let backends: Vec<Backend> = entries
        .iter()
        .zip(&shares)
        .zip(sources)
        .map(|((&(name, weight), &share), source)| {
            let upstream = upstreams[name].clone();
            Backend {
                source,
                metrics: telemetry.backend(&r.name, &upstream.name, &upstream.version),
                seed: sticky::backend_seed(&r.name, &upstream.name),
                groups: version_groups(&r.name, &upstream, weight, share, source, telemetry),
                group_weight: 0,
                upstream,
                weight,
                share,
            }
        })
        .collect();
    let index = |name: &str| entries.iter().position(|(n, _)| *n == name).expect("validated upstream");
    let overrides = r
        .overrides
        .iter()
        .map(|o| Override {
            on: match &o.on {
                config::OverrideOn::Header(h) => OverrideOn::Header(h.clone()),
                config::OverrideOn::Cookie(c) => OverrideOn::Cookie(c.as_str().into()),
            },
            value: o.value.as_deref().map(Into::into),
            backend: index(o.upstream.get_ref()),
        })
        .collect();
    let sticky = r.sticky.as_ref().map(|s| match s {
        FileSticky::Cookie { name, ttl } => Sticky::Cookie {
            name: name.as_str().into(),
            attributes: format!("; Path=/; Max-Age={}; HttpOnly; SameSite=Lax", ttl.as_secs()).into(),
        },
        FileSticky::Header(h) => Sticky::Header(h.clone()),
        FileSticky::SourceIp => Sticky::SourceIp,
    });
    let plain_h1 = r.mirror.is_none()
        && r.rewrite.is_none()
        && r.redirect.is_none()
        && r.request_headers.is_empty()
        && r.response_headers.is_empty()
        && backends.iter().all(|b| b.upstream.plain_h1);
    Route {
        name: r.name.as_str().into(),
        headers: r.headers.clone().into(),
        // A redirect route has no backends and never splits.
        split: if backends.is_empty() { Split::Single(0) } else { Split::compile(&shares) },
        backends: backends.into(),
        sticky,
        overrides,
        version_header: r.version_header.clone(),
        own_responses: telemetry.route_own(&r.name),
        mirror: r.mirror.as_ref().map(|m| {
            let upstream = upstreams[m.upstream.get_ref().as_str()].clone();
            Arc::new(crate::mirror::Mirror::compile(&r.name, m, upstream, telemetry, slots))
        }),
        plain_h1,
        rewrite: r.rewrite.as_ref().map(|w| Rewrite::compile(w, &r.path_prefix)),
        redirect: r.redirect.as_ref().map(|w| Redirect::compile(w, &r.path_prefix)),
        request_headers: HeaderOps::compile(&r.request_headers),
        response_headers: HeaderOps::compile(&r.response_headers),
    }
}
