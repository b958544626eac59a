//! Endpoint choice inside an upstream: the less loaded of two random available endpoints
//! ("power of two choices"), which avoids both herd behaviour and a global scan.
//!
//! Available = healthy and not ejected. A slow-starting endpoint (added less than
//! `slow_start` ago) is accepted with probability age/slow_start, so its share ramps up
//! linearly. When no endpoint is available the pool fails open: every endpoint that has
//! been healthy before takes traffic again rather than every request getting a 503
//! (logged). Endpoints that never passed a check (still starting) are not failed open
//! to; with none ready, `select` returns `None` and the request waits (`queue_timeout`)
//! or gets a 503. `tried` excludes endpoints a retry must not go back to.

use std::sync::Arc;
use tokio::time::Instant;

use super::{Endpoint, Upstream};
use crate::clock;

/// Random pairs drawn before falling back to a scan.
const PAIR_DRAWS: usize = 3;

impl Upstream {
    /// The endpoint for the next attempt, never one in `tried`; `None` when none is left.
    pub fn select(&self, tried: &[&Endpoint]) -> Option<&Arc<Endpoint>> {
        let eps = &self.endpoints;
        let now = clock::now_ms();
        let fresh = |e: &Endpoint| !tried.iter().any(|t| std::ptr::eq(*t, e));
        match eps.len() {
            0 => return None,
            1 => {
                let e = &eps[0];
                if !fresh(e) || !e.has_been_healthy() {
                    return None;
                }
                if !e.is_available(now) {
                    self.log_fail_open(now);
                }
                return Some(e);
            }
            _ => {}
        }
        // Read the clock only when a ramp applies (most pools have no slow start).
        let ramp_now = (!self.slow_start.is_zero()).then(Instant::now);
        let usable = |e: &Endpoint| fresh(e) && e.is_available(now) && ramp_now.is_none_or(|t| self.ramp_accepts(e, t));
        for _ in 0..PAIR_DRAWS {
            let n = eps.len();
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            match (usable(&eps[a]), usable(&eps[b])) {
                (true, true) => return Some(if eps[b].in_flight() < eps[a].in_flight() { &eps[b] } else { &eps[a] }),
                (true, false) => return Some(&eps[a]),
                (false, true) => return Some(&eps[b]),
                (false, false) => {}
            }
        }
        // Few endpoints are usable: scan for the least loaded available one, then fail open.
        if let Some(e) = least_loaded(eps, |e| fresh(e) && e.is_available(now)) {
            return Some(e);
        }
        // Fail open only when the whole pool is down, not because a retry has already
        // tried the available ones.
        if eps.iter().any(|e| e.is_available(now)) {
            return None;
        }
        let e = least_loaded(eps, |e| fresh(e) && e.has_been_healthy())?;
        self.log_fail_open(now);
        Some(e)
    }

    /// Slow start: a young endpoint is taken with probability age / slow_start.
    fn ramp_accepts(&self, e: &Endpoint, now: Instant) -> bool {
        let age = now.saturating_duration_since(e.added_at);
        age >= self.slow_start || fastrand::f64() < age.as_secs_f64() / self.slow_start.as_secs_f64()
    }
}

/// The least loaded endpoint that passes `ok`, ties broken at random (reservoir
/// sampling), so an idle pool does not send everything to its first endpoint.
fn least_loaded(eps: &[Arc<Endpoint>], ok: impl Fn(&Endpoint) -> bool) -> Option<&Arc<Endpoint>> {
    let mut best: Option<(&Arc<Endpoint>, usize)> = None;
    let mut ties = 0u32;
    for e in eps.iter().filter(|e| ok(e)) {
        let load = e.in_flight();
        match best {
            Some((_, b)) if load > b => {}
            Some((_, b)) if load == b => {
                ties += 1;
                if fastrand::u32(..ties) == 0 {
                    best = Some((e, load));
                }
            }
            _ => {
                best = Some((e, load));
                ties = 1;
            }
        }
    }
    best.map(|(e, _)| e)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config;

    fn upstream(n: usize, extra: &str) -> Upstream {
        let eps: Vec<String> = (0..n).map(|i| format!("\"127.0.0.1:{}\"", 1000 + i)).collect();
        let text = format!(
            "[upstreams.u]\nendpoints = [{}]\n{extra}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n",
            eps.join(", ")
        );
        let cfg = config::parse(std::path::Path::new("t.toml"), &text).unwrap();
        let endpoints = (0..n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                let transport = crate::upstream::Transport {
                    connect_timeout: Duration::from_secs(1),
                    protocol: crate::config::Protocol::Http1,
                    tls: None,
                    max_head: 65_536,
                };
                Arc::new(Endpoint::new(addr, "x", &transport, true, metrics::Gauge::noop(), 1))
            })
            .collect();
        Upstream::new(&cfg.upstreams[0], endpoints, vec![], None)
    }

    fn hits(u: &Upstream, n: usize, tried: &[&Endpoint]) -> Vec<usize> {
        let mut hits = vec![0; u.endpoints.len()];
        for _ in 0..n {
            if let Some(e) = u.select(tried) {
                hits[u.endpoints.iter().position(|x| Arc::ptr_eq(x, e)).unwrap()] += 1;
            }
        }
        hits
    }

    #[test]
    fn prefers_the_idle_endpoint_and_spreads_load() {
        let u = upstream(3, "");
        let _busy: Vec<_> = (0..5).map(|_| u.endpoints[0].start()).collect();
        let h = hits(&u, 3000, &[]);
        assert_eq!(h[0], 0, "{h:?}");
        assert!(h[1] > 1000 && h[2] > 1000, "{h:?}");
    }

    #[test]
    fn unhealthy_endpoints_get_nothing_until_all_are_down() {
        let u = upstream(3, "");
        u.endpoints[1].set_healthy(false);
        assert_eq!(hits(&u, 1000, &[])[1], 0);
        u.endpoints[0].set_healthy(false);
        u.endpoints[2].set_healthy(false);
        let h = hits(&u, 3000, &[]);
        assert!(h.iter().all(|&n| n > 500), "fail open spreads over all: {h:?}");
    }

    #[test]
    fn retries_never_go_back_to_a_tried_endpoint() {
        let u = upstream(2, "");
        let first = u.endpoints[0].clone();
        let h = hits(&u, 500, &[&first]);
        assert_eq!(h, vec![0, 500]);
        let second = u.endpoints[1].clone();
        assert!(u.select(&[&first, &second]).is_none());
        let single = upstream(1, "");
        let only = single.endpoints[0].clone();
        assert!(single.select(&[&only]).is_none());
    }

    #[test]
    fn ejection_respects_the_limit() {
        let u = upstream(4, "outlier = { consecutive_failures = 2, ejection = \"30s\", max_ejected_percent = 50 }");
        let now = clock::now_ms();
        for e in u.endpoints.iter() {
            for _ in 0..2 {
                u.record(e, true);
            }
        }
        assert_eq!(u.endpoints.iter().filter(|e| e.is_ejected(now)).count(), 2, "50% of 4");
        // A success resets the streak.
        u.record(&u.endpoints[3], true);
        u.record(&u.endpoints[3], false);
        u.record(&u.endpoints[3], true);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_a_new_endpoint_in_over_its_window() {
        let mut u = upstream(2, "slow_start = \"10s\"");
        // Endpoint 0 has served for a minute; endpoint 1 was just added. (Moving the
        // clock forward, not `added_at` back: a fresh machine's clock may be young.)
        tokio::time::advance(Duration::from_secs(60)).await;
        Arc::get_mut(&mut u.endpoints[1]).unwrap().added_at = Instant::now();
        let share = |u: &Upstream| hits(u, 4000, &[])[1] as f64 / 4000.0;
        assert!(share(&u) < 0.02, "brand new: {}", share(&u));
        tokio::time::advance(Duration::from_secs(5)).await;
        let half = share(&u);
        // Half way: accepted half the time, and then it wins the pair's tie half the
        // time (idle pool): a quarter of the picks, where a ramped endpoint gets half.
        assert!((0.18..0.32).contains(&half), "half way: {half}");
        tokio::time::advance(Duration::from_secs(5)).await;
        let full = share(&u);
        assert!((0.40..0.60).contains(&full), "ramped: {full}");
    }
}
