//! A route's progressive-delivery keys: `[routes.rollout]` (automated canary steps and
//! the thresholds that judge them) and `mirror` (shadow traffic). Whether the names they
//! use are backends and upstreams is checked in `validate.rs`.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::error::Collector;
use super::reader::{expect_number, Table};

#[derive(Debug, Clone, PartialEq)]
pub struct FileRollout {
    pub span: Range<usize>,
    pub field: String,
    /// The upstream whose share grows step by step.
    pub canary: Spanned<String>,
    /// The upstream that takes the rest, and whose error rate the canary is compared with.
    pub baseline: Spanned<String>,
    /// The canary's share at each step, in percent: increasing, each in (0, 100].
    pub steps: Vec<f64>,
    /// Time at each step before it is judged.
    pub interval: Duration,
    /// Canary requests a step needs before it can pass.
    pub min_requests: u64,
    /// Canary 5xx (upstream errors included) share above which the step fails.
    pub max_error_rate: f64,
    /// Canary p99 of request duration above which the step fails; `None`: not judged.
    pub max_p99: Option<Duration>,
    /// Canary error rate minus the baseline's above which the step fails; `None`: not judged.
    pub max_error_rate_increase: Option<f64>,
    /// Start when this config loads (when no rollout of this route has run yet).
    pub auto_start: bool,
}

/// What a mirrored copy's answer is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    None,
    Status,
    /// Status and a digest of the body.
    Body,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileMirror {
    pub field: String,
    pub upstream: Spanned<String>,
    /// Share of the route's requests copied, 0..=100.
    pub percent: f64,
    pub compare: Compare,
    /// Copies in flight at most; beyond it copies are dropped (and counted).
    pub max_in_flight: usize,
}

pub(crate) const DEFAULT_STEPS: [f64; 5] = [1.0, 5.0, 25.0, 50.0, 100.0];
pub(crate) const DEFAULT_MIRROR_IN_FLIGHT: usize = 128;
const MAX_MIRROR_IN_FLIGHT: u64 = 65_536;

pub(crate) fn decode_rollout(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileRollout> {
    let span = t.span.clone();
    let field = t.path.clone();
    let mut required = |t: &mut Table<'_, '_>, key: &'static str, what: &str| {
        let v = t.string(key, errs);
        if v.is_none() && t.get(key).is_none() {
            errs.push(span.clone(), t.field(key), format!("missing: a rollout names its `{key}` ({what})"));
        }
        v
    };
    let canary = required(&mut t, "canary", "the backend whose share grows");
    let baseline = required(&mut t, "baseline", "the backend that takes the rest");
    let steps = match t.array("steps", errs) {
        None => DEFAULT_STEPS.to_vec(),
        Some(items) => {
            let steps_field = t.field("steps");
            let mut steps = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Some(v) = expect_number(item, &format!("{steps_field}[{i}]"), errs) else { continue };
                if v <= 0.0 || v > 100.0 {
                    errs.push(
                        item.span(),
                        format!("{steps_field}[{i}]"),
                        "a step is a share in percent: more than 0, at most 100",
                    );
                } else if steps.last().is_some_and(|&last| v <= last) {
                    errs.push(item.span(), format!("{steps_field}[{i}]"), "steps must be increasing");
                }
                steps.push(v);
            }
            if items.is_empty() {
                errs.push(span.clone(), steps_field, "at least one step is needed");
            }
            steps
        }
    };
    let interval = match t.duration("interval", errs) {
        Some(d) if d.is_zero() => {
            errs.push(span.clone(), t.field("interval"), "must be more than 0");
            Duration::from_secs(60)
        }
        Some(d) => d,
        None => Duration::from_secs(60),
    };
    let min_requests = t.uint("min_requests", errs).unwrap_or(100);
    let mut rate = |t: &mut Table<'_, '_>, key: &'static str| {
        let node = t.get(key)?;
        let v = expect_number(node, &t.field(key), errs)?;
        if !(0.0..=1.0).contains(&v) {
            errs.push(node.span(), t.field(key), "a rate is a fraction between 0 and 1 (0.01 = 1%)");
            return None;
        }
        Some(v)
    };
    let max_error_rate = rate(&mut t, "max_error_rate").unwrap_or(0.01);
    let max_error_rate_increase = rate(&mut t, "max_error_rate_increase");
    let max_p99 = t.duration("max_p99", errs);
    let auto_start = t.bool("auto_start", errs).unwrap_or(false);
    t.finish(errs);
    Some(FileRollout {
        span,
        field,
        canary: canary?,
        baseline: baseline?,
        steps,
        interval,
        min_requests,
        max_error_rate,
        max_p99,
        max_error_rate_increase,
        auto_start,
    })
}

pub(crate) fn decode_mirror(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileMirror> {
    let field = t.path.clone();
    let upstream = t.string("upstream", errs);
    if upstream.is_none() && t.get("upstream").is_none() {
        errs.push(t.span.clone(), t.field("upstream"), "missing: a mirror names the `upstream` that gets the copies");
    }
    let percent = match t.get("percent") {
        None => 100.0,
        Some(node) => match expect_number(node, &t.field("percent"), errs) {
            Some(p) if (0.0..=100.0).contains(&p) => p,
            Some(_) => {
                errs.push(node.span(), t.field("percent"), "a share in percent: 0 to 100");
                0.0
            }
            None => 0.0,
        },
    };
    let compare = match t.string("compare", errs) {
        None => Compare::None,
        Some(c) => match c.get_ref().as_str() {
            "none" => Compare::None,
            "status" => Compare::Status,
            "body" => Compare::Body,
            other => {
                errs.push(
                    c.span(),
                    t.field("compare"),
                    format!("unknown comparison {other:?}: expected \"none\", \"status\" or \"body\""),
                );
                Compare::None
            }
        },
    };
    let max_in_flight = match t.uint("max_in_flight", errs) {
        Some(n @ 1..=MAX_MIRROR_IN_FLIGHT) => n as usize,
        Some(_) => {
            // Each copy may hold a 64 KiB body: the bound is a memory bound too.
            errs.push(t.span.clone(), t.field("max_in_flight"), format!("must be 1 to {MAX_MIRROR_IN_FLIGHT}"));
            DEFAULT_MIRROR_IN_FLIGHT
        }
        None => DEFAULT_MIRROR_IN_FLIGHT,
    };
    t.finish(errs);
    Some(FileMirror { field, upstream: upstream?, percent, compare, max_in_flight })
}
