//! Rules that span fields: names that must exist, be unique, or agree with each other.
//! Everything found is reported; nothing stops at the first problem.

use std::collections::{HashMap, HashSet};

use super::error::Collector;
use super::file::FileConfig;

/// `unknown upstream "shop-v3" (did you mean "shop-v2"?)`.
fn unknown_upstream(name: &str, upstreams: &HashSet<&str>) -> String {
    let mut known: Vec<&str> = upstreams.iter().copied().collect();
    known.sort_unstable();
    format!("unknown upstream {name:?}{}", super::suggest::did_you_mean(name, known, true))
}

pub(crate) fn validate(cfg: &FileConfig, errs: &mut Collector) {
    let upstreams: HashSet<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
    for u in &cfg.upstreams {
        if u.endpoints.is_empty() {
            errs.push(
                u.name_span.clone(),
                format!("upstreams.{}.endpoints", u.name),
                "an upstream needs at least one endpoint",
            );
        }
    }

    let mut route_names: HashMap<&str, usize> = HashMap::new();
    for (i, route) in cfg.routes.iter().enumerate() {
        let field = format!("routes[{i}]");
        if !route.name.is_empty() {
            if let Some(first) = route_names.insert(&route.name, i) {
                errs.push(
                    route.name_span.clone(),
                    format!("{field}.name"),
                    format!("duplicate route name {:?} (first used by routes[{first}])", route.name),
                );
            }
        }
        let mut seen = HashSet::new();
        let mut total = 0.0;
        for b in &route.backends {
            let name = b.upstream.get_ref();
            if !upstreams.contains(name.as_str()) {
                errs.push(b.upstream.span(), format!("{}.upstream", b.field), unknown_upstream(name, &upstreams));
            }
            if !seen.insert(name.as_str()) {
                errs.push(
                    b.upstream.span(),
                    format!("{}.upstream", b.field),
                    format!("upstream {name:?} is listed twice in this route"),
                );
            }
            if b.weight < 0.0 {
                errs.push(b.weight_span.clone(), format!("{}.weight", b.field), "weights must not be negative");
            } else {
                total += b.weight;
            }
        }
        for o in &route.overrides {
            let name = o.upstream.get_ref();
            if !upstreams.contains(name.as_str()) {
                errs.push(o.upstream.span(), format!("{}.upstream", o.field), unknown_upstream(name, &upstreams));
            }
        }
        if let Some(r) = &route.rollout {
            let is_backend = |name: &str| route.backends.iter().any(|b| b.upstream.get_ref() == name);
            for (key, name) in [("canary", &r.canary), ("baseline", &r.baseline)] {
                if !is_backend(name.get_ref()) {
                    errs.push(
                        name.span(),
                        format!("{}.{key}", r.field),
                        format!("{:?} is not a backend of this route", name.get_ref()),
                    );
                }
            }
            if r.canary.get_ref() == r.baseline.get_ref() {
                errs.push(
                    r.baseline.span(),
                    format!("{}.baseline", r.field),
                    "the baseline must differ from the canary",
                );
            }
        }
        if let Some(m) = &route.mirror {
            let name = m.upstream.get_ref();
            if !upstreams.contains(name.as_str()) {
                errs.push(m.upstream.span(), format!("{}.upstream", m.field), unknown_upstream(name, &upstreams));
            } else if cfg.upstreams.iter().any(|u| u.name == *name && u.auth.is_some()) {
                // Copies carry the primary's head: they would reach it unauthenticated.
                errs.push(
                    m.upstream.span(),
                    format!("{}.upstream", m.field),
                    format!(
                        "{name:?} has `auth`: mirror copies are not signed or given tokens, so they cannot go to it"
                    ),
                );
            }
        }
        if route.redirect.is_some() {
            let present = [
                ("backends", !route.backends.is_empty()),
                ("sticky", route.sticky.is_some()),
                ("rollout", route.rollout.is_some()),
                ("mirror", route.mirror.is_some()),
                ("overrides", !route.overrides.is_empty()),
                ("rewrite", route.rewrite.is_some()),
                ("request_headers", !route.request_headers.is_empty()),
                ("version_header", route.version_header.is_some()),
            ];
            for (key, _) in present.iter().filter(|(_, here)| *here) {
                errs.push(
                    route.span.clone(),
                    format!("{field}.{key}"),
                    format!("a route with `redirect` answers itself: it may not have `{key}`"),
                );
            }
        }
        if !route.backends.is_empty() && total <= 0.0 {
            errs.push(
                route.backends_span.clone(),
                format!("{field}.backends"),
                "every weight is 0: at least one backend needs a positive weight",
            );
        }
    }
}
