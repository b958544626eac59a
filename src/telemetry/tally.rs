//! Per-backend counts the process can read back (Prometheus handles are write-only):
//! requests, errors and a latency histogram, in relaxed atomics on the long-lived
//! backend metrics. The rollout judge snapshots them at a step's start and end and
//! judges the difference, so each step is judged on its own requests only.
//!
//! Latency buckets are log-linear: four per power of two of microseconds from 64 µs
//! (each bucket spans 25% of its lower bound), enough to tell a 500 ms p99 from a
//! 400 ms one without a lock or an allocation per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 128;
/// Below this many microseconds, everything shares bucket 0.
const FLOOR_BITS: u32 = 6;

#[derive(Debug)]
pub struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Tally {
    /// A response was sent with this status (5xx, upstream failures included, are errors).
    #[inline]
    pub fn answered(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request counted as answered failed afterwards (its body broke off).
    #[inline]
    pub fn failed_late(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The time until the response head.
    #[inline]
    pub fn timed(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency[bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: self.latency.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        }
    }
}

/// Counts at one moment, or (after [`Counts::since`]) over a window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    latency: Box<[u64]>,
}

impl Counts {
    /// Counts summed with `other`'s (a fleet's step is judged on every member's sum:
    /// requests, errors and each latency bucket, never an average of percentiles).
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.latency.len() < BUCKETS {
            let mut full = vec![0; BUCKETS];
            full[..self.latency.len()].copy_from_slice(&self.latency);
            self.latency = full.into_boxed_slice();
        }
        for (i, n) in other.latency.iter().enumerate().take(BUCKETS) {
            self.latency[i] += n;
        }
    }

    /// The non-empty latency buckets as `(index, count)`: how a member publishes its
    /// tallies to the fleet. [`Counts::from_sparse`] reads them back.
    pub fn sparse(&self) -> Vec<(u16, u64)> {
        self.latency.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (i as u16, *n)).collect()
    }

    /// Counts from their published form; bucket indexes out of range are ignored.
    pub fn from_sparse(requests: u64, errors: u64, buckets: &[(u16, u64)]) -> Counts {
        let mut latency = vec![0; BUCKETS];
        for &(i, n) in buckets {
            if let Some(b) = latency.get_mut(usize::from(i)) {
                *b += n;
            }
        }
        Counts { requests, errors, latency: latency.into_boxed_slice() }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// Errors over requests; 0 with no requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// Non-empty latency buckets as (upper bound in ms, count), in increasing order:
    /// what `status` publishes so a viewer can take differences and compute a window's
    /// quantiles itself.
    pub fn buckets_ms(&self) -> Vec<(f64, u64)> {
        self.latency
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (bounds(i).1 as f64 / 1000.0, *n))
            .collect()
    }

    /// The `q` quantile of the timed requests, interpolated within its bucket (as
    /// Prometheus' `histogram_quantile` does); `None` with no timed requests.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let (lo, hi) = bounds(i);
                let into = (rank - below as f64) / n as f64;
                return Some(Duration::from_micros(lo + ((hi - lo) as f64 * into) as u64));
            }
            below += n;
        }
        None
    }
}

/// The name of the bucket layout above, published beside sparse buckets so a fleet
/// never sums buckets of two layouts.
pub const BUCKET_SCHEME: &str = "log4-64us-128";

fn bucket(micros: u64) -> usize {
    if micros < 1 << FLOOR_BITS {
        return 0;
    }
    let exp = 63 - micros.leading_zeros(); // >= FLOOR_BITS
    let sub = (micros >> (exp - 2)) & 3;
    (1 + (exp - FLOOR_BITS) as usize * 4 + sub as usize).min(BUCKETS - 1)
}

/// `[lower, upper)` in microseconds of bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    if i == 0 {
        return (0, 1 << FLOOR_BITS);
    }
    let exp = FLOOR_BITS + ((i - 1) / 4) as u32;
    let sub = ((i - 1) % 4) as u64;
    ((4 + sub) << (exp - 2), (5 + sub) << (exp - 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summed_counts_keep_each_bucket_and_survive_publishing() {
        let (a, b) = (Tally::default(), Tally::default());
        for _ in 0..90 {
            a.answered(200);
            a.timed(Duration::from_millis(10));
        }
        for _ in 0..10 {
            b.answered(503);
            b.timed(Duration::from_millis(900));
        }
        let (a, b) = (a.snapshot(), b.snapshot());
        let b = Counts::from_sparse(b.requests, b.errors, &b.sparse());
        let mut sum = Counts::default();
        sum.add(&a);
        sum.add(&b);
        assert_eq!((sum.requests, sum.errors), (100, 10));
        // p99 of the sum lies in the slow member's bucket; an average of the two
        // members' p99s (10 ms and 900 ms) would say 455 ms.
        let p99 = sum.quantile(0.99).unwrap();
        assert!(p99 >= Duration::from_millis(700), "{p99:?}");
        let p50 = sum.quantile(0.5).unwrap();
        assert!(p50 < Duration::from_millis(20), "the median stays in the fast member's bucket: {p50:?}");
    }

    #[test]
    fn buckets_cover_their_bounds() {
        for micros in [0u64, 63, 64, 65, 79, 80, 1_000, 123_456, 500_000, 30_000_000] {
            let (lo, hi) = bounds(bucket(micros));
            assert!(lo <= micros && micros < hi, "{micros} not in [{lo}, {hi})");
            assert!(hi - lo <= lo.max(64) / 4 + 1 || micros < 64, "bucket too wide at {micros}");
        }
    }

    #[test]
    fn quantiles_and_windows() {
        let t = Tally::default();
        let start = t.snapshot();
        for i in 0..1000u64 {
            t.answered(if i % 10 == 0 { 503 } else { 200 });
            // 99% at ~10 ms, 1% at ~800 ms.
            t.timed(Duration::from_millis(if i % 100 == 0 { 800 } else { 10 }));
        }
        let w = t.snapshot().since(&start);
        assert_eq!((w.requests, w.errors), (1000, 100));
        assert!((w.error_rate() - 0.1).abs() < 1e-9);
        let p50 = w.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_millis(8) && p50 <= Duration::from_millis(13), "{p50:?}");
        let p99 = w.quantile(0.99).unwrap();
        assert!(p99 <= Duration::from_millis(13), "exactly 1% is slow: p99 is still fast, {p99:?}");
        let p999 = w.quantile(0.999).unwrap();
        assert!(p999 >= Duration::from_millis(640), "{p999:?}");
        // A later window sees only its own requests.
        let mid = t.snapshot();
        t.answered(200);
        t.timed(Duration::from_millis(1));
        let w2 = t.snapshot().since(&mid);
        assert_eq!((w2.requests, w2.errors), (1, 0));
        assert!(w2.quantile(0.99).unwrap() < Duration::from_millis(2));
        assert_eq!(Counts::default().quantile(0.99), None);
    }
}
