//! The resilience keys: `[server.limits]`, and per upstream `health`, `outlier`,
//! `retries`/`retry_on`, `max_in_flight`, `slow_start` and `dns_refresh`.

use std::time::Duration;

use super::error::Collector;
use super::reader::Table;

/// `[server.limits]`: what one client may cost.
#[derive(Debug, Clone, PartialEq)]
pub struct FileLimits {
    /// Larger request heads get 431. hyper's read buffer enforces it, and cannot go below 8 KiB.
    pub max_header_bytes: usize,
    /// 0 = unlimited; larger bodies get 413, declared or streamed.
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_header_bytes: 65_536,
            max_body_bytes: 0,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// Active health checking of each endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct FileHealth {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that make an endpoint healthy.
    pub healthy: u32,
    /// Consecutive failures that make it unhealthy.
    pub unhealthy: u32,
    /// Read each endpoint's version from this header of its health-check answers
    /// (version groups: a rolling update that keeps users on one version).
    pub version_header: Option<http::HeaderName>,
}

/// Passive ejection of endpoints that keep failing real requests.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOutlier {
    pub consecutive_failures: u32,
    pub ejection: Duration,
    pub max_ejected_percent: u32,
}

/// When a failed attempt may be tried again on another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub reset: bool,
    pub status_502: bool,
    pub status_503: bool,
    pub status_504: bool,
}

impl RetryOn {
    pub fn status(&self, code: u16) -> bool {
        match code {
            502 => self.status_502,
            503 => self.status_503,
            504 => self.status_504,
            _ => false,
        }
    }
}

pub(crate) fn decode_limits(mut t: Table<'_, '_>, errs: &mut Collector) -> FileLimits {
    let mut l = FileLimits::default();
    if let Some(n) = t.uint("max_header_bytes", errs) {
        if n < 8192 {
            errs.push(t.span.clone(), t.field("max_header_bytes"), "must be at least 8192");
        } else {
            l.max_header_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
    }
    if let Some(n) = t.uint("max_body_bytes", errs) {
        l.max_body_bytes = n;
    }
    if let Some(d) = t.duration("header_read_timeout", errs) {
        if d.is_zero() {
            errs.push(t.span.clone(), t.field("header_read_timeout"), "must be more than 0");
        } else {
            l.header_read_timeout = d;
        }
    }
    if let Some(d) = t.duration("idle_timeout", errs) {
        l.idle_timeout = d;
    }
    if let Some(n) = t.uint("max_connections", errs) {
        l.max_connections = usize::try_from(n).unwrap_or(usize::MAX).max(1);
    }
    t.finish(errs);
    l
}

pub(crate) fn decode_health(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileHealth> {
    let path = t.string("path", errs).map(|p| p.into_inner()).unwrap_or_else(|| "/healthz".into());
    if !path.starts_with('/') {
        errs.push(t.span.clone(), t.field("path"), "must start with `/`");
    }
    let h = FileHealth {
        path,
        interval: t.duration("interval", errs).unwrap_or(Duration::from_secs(2)),
        timeout: t.duration("timeout", errs).unwrap_or(Duration::from_secs(1)),
        healthy: positive(&mut t, "healthy", 2, errs),
        unhealthy: positive(&mut t, "unhealthy", 3, errs),
        version_header: None,
    };
    let mut h = h;
    if let Some(name) = t.string("version_header", errs) {
        h.version_header = super::reader::header_name(&name, &t.field("version_header"), errs);
    }
    if h.interval.is_zero() {
        errs.push(t.span.clone(), t.field("interval"), "must be more than 0");
    }
    if h.timeout.is_zero() {
        errs.push(t.span.clone(), t.field("timeout"), "must be more than 0");
    }
    t.finish(errs);
    Some(h)
}

pub(crate) fn decode_outlier(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileOutlier> {
    let o = FileOutlier {
        consecutive_failures: positive(&mut t, "consecutive_failures", 5, errs),
        ejection: t.duration("ejection", errs).unwrap_or(Duration::from_secs(30)),
        max_ejected_percent: t.uint("max_ejected_percent", errs).map_or(50, |p| p.min(100) as u32),
    };
    t.finish(errs);
    Some(o)
}

pub(crate) fn decode_retry_on(t: &mut Table<'_, '_>, errs: &mut Collector) -> RetryOn {
    // SPEC.md's default: only a failed connect, which provably never reached the upstream.
    let Some(list) = t.string_list("retry_on", errs) else {
        return RetryOn { connect_failure: true, ..RetryOn::default() };
    };
    let mut r = RetryOn::default();
    for item in list {
        match item.get_ref().as_str() {
            "connect-failure" => r.connect_failure = true,
            "reset" => r.reset = true,
            "502" => r.status_502 = true,
            "503" => r.status_503 = true,
            "504" => r.status_504 = true,
            other => errs.push(
                item.span(),
                t.field("retry_on"),
                format!(
                    "unknown condition {other:?}: expected \"connect-failure\", \"reset\", \"502\", \"503\" or \"504\""
                ),
            ),
        }
    }
    r
}

fn positive(t: &mut Table<'_, '_>, key: &'static str, default: u32, errs: &mut Collector) -> u32 {
    match t.uint(key, errs) {
        Some(0) => {
            errs.push(t.span.clone(), t.field(key), "must be at least 1");
            default
        }
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        None => default,
    }
}
