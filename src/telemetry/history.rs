//! The last ten minutes of every backend's traffic, for charts (the status page,
//! `GET /api/v1/history`, `ctl watch`'s sparklines): a background task feeds it a tally
//! snapshot per backend every [`INTERVAL`], and it keeps one point per interval (request
//! rate, error rate, p99 of that interval) in a bounded ring per (route, upstream,
//! version). Memory is bounded twice: [`CAPACITY`] points per series and [`MAX_SERIES`]
//! series (the least recently fed go first). The request path never touches it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::Counts;

/// One point per interval.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Ten minutes of points.
pub const CAPACITY: usize = 300;
/// Series kept at most (each at most [`CAPACITY`] points of 32 bytes: about 10 MB).
pub const MAX_SERIES: usize = 1024;

/// One interval of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// The interval's end, unix ms.
    pub t: u64,
    /// Requests per second.
    pub rps: f64,
    /// Errors over requests; `null` without requests.
    pub error_rate: Option<f64>,
    /// The interval's p99 time to response head; `null` without timed requests.
    pub p99_ms: Option<f64>,
}

/// (route, upstream, version)
type Key = (Box<str>, Box<str>, Box<str>);

struct Series {
    last: Counts,
    last_at: u64,
    points: VecDeque<Point>,
}

#[derive(Default)]
pub struct History {
    series: Mutex<HashMap<Key, Series>>,
}

/// A backend's points, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    pub upstream: String,
    pub version: String,
    pub points: Vec<Point>,
}

impl History {
    /// Feed one backend's cumulative counts at `now_ms`: the difference from the last
    /// feed becomes a point (the first feed only sets the baseline).
    pub fn record(&self, route: &str, upstream: &str, version: &str, now_ms: u64, counts: Counts) {
        let mut all = self.series.lock().expect("not poisoned");
        let key: Key = (route.into(), upstream.into(), version.into());
        let Some(series) = all.get_mut(&key) else {
            if all.len() >= MAX_SERIES {
                // Make room: the series fed least recently (gone from the config, or a
                // version that left) goes first.
                if let Some(oldest) = all.iter().min_by_key(|(_, s)| s.last_at).map(|(k, _)| k.clone()) {
                    all.remove(&oldest);
                }
            }
            all.insert(key, Series { last: counts, last_at: now_ms, points: VecDeque::new() });
            return;
        };
        let secs = now_ms.saturating_sub(series.last_at) as f64 / 1000.0;
        if secs <= 0.0 {
            return;
        }
        let window = counts.since(&series.last);
        let point = Point {
            t: now_ms,
            rps: window.requests as f64 / secs,
            error_rate: (window.requests > 0).then(|| window.error_rate()),
            p99_ms: window.quantile(0.99).map(|d| d.as_secs_f64() * 1000.0),
        };
        if series.points.len() == CAPACITY {
            series.points.pop_front();
        }
        series.points.push_back(point);
        series.last = counts;
        series.last_at = now_ms;
    }

    /// Every series of `route`, by upstream then version.
    pub fn route(&self, route: &str) -> Vec<SeriesView> {
        let all = self.series.lock().expect("not poisoned");
        let mut out: Vec<SeriesView> = all
            .iter()
            .filter(|(k, _)| &*k.0 == route)
            .map(|(k, s)| SeriesView {
                upstream: k.1.to_string(),
                version: k.2.to_string(),
                points: s.points.iter().copied().collect(),
            })
            .collect();
        out.sort_by(|a, b| (&a.upstream, &a.version).cmp(&(&b.upstream, &b.version)));
        out
    }

    /// How many series and points it holds (for the memory bound's test).
    pub fn size(&self) -> (usize, usize) {
        let all = self.series.lock().expect("not poisoned");
        (all.len(), all.values().map(|s| s.points.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Tally;

    fn counts(requests: u64, errors: u64) -> Counts {
        let t = Tally::default();
        for i in 0..requests {
            t.answered(if i < errors { 500 } else { 200 });
            t.timed(Duration::from_millis(10));
        }
        t.snapshot()
    }

    #[test]
    fn a_point_is_one_intervals_rate_error_rate_and_p99() {
        let h = History::default();
        h.record("shop", "v1", "v1", 1_000, counts(10, 0));
        h.record("shop", "v1", "v1", 3_000, counts(30, 2));
        h.record("shop", "v1", "v1", 5_000, counts(30, 2));
        let s = h.route("shop");
        assert_eq!(s.len(), 1);
        let p = &s[0].points;
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].t, p[0].rps, p[0].error_rate), (3_000, 10.0, Some(0.1)));
        assert!(p[0].p99_ms.unwrap() >= 10.0);
        // A quiet interval: zero rate, no error rate, no p99 (not a misleading 0).
        assert_eq!((p[1].rps, p[1].error_rate, p[1].p99_ms), (0.0, None, None));
    }

    #[test]
    fn memory_stays_bounded_with_many_routes_versions_and_hours() {
        let h = History::default();
        let mut now = 0;
        for round in 0..(CAPACITY + 50) as u64 {
            now += 2_000;
            // 3,000 series over time: every round a few new versions appear.
            for route in 0..10 {
                for version in 0..3 {
                    let v = format!("v{}", round / 10 * 3 + version);
                    h.record(&format!("r{route}"), "u", &v, now, counts(round, 0));
                }
            }
        }
        let (series, points) = h.size();
        assert!(series <= MAX_SERIES, "{series} series");
        assert!(points <= MAX_SERIES * CAPACITY, "{points} points");
        assert!(h.route("r0").iter().all(|s| s.points.len() <= CAPACITY));
    }
}
