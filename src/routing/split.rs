//! The weighted per-request split, compiled once per snapshot so a pick is one atomic add,
//! a multiply and a short scan.
//!
//! Weights resolve to integer shares of [`RESOLUTION`] (1/10,000) by largest remainder;
//! a backend with a positive weight never rounds down to nothing. The shares are reduced
//! by their gcd to a period `P` (90/10 → 9/1, so `P = 10`). Request `n` takes slot
//! `(n · K) mod P` with `K` coprime to `P` and close to `P/φ`: every `P` consecutive
//! requests visit every slot exactly once (the split is exact over any window of `P`),
//! and the golden-ratio stride spreads each backend's slots evenly inside the window, so
//! short windows are close too. No table per route, no lock: just one shared counter.

use std::sync::atomic::{AtomicU64, Ordering};

/// Shares are resolved to 1/10,000: a 0.01% canary is one slot in 10,000.
pub const RESOLUTION: u32 = 10_000;

#[derive(Debug)]
pub enum Split {
    /// One backend with traffic: no draw at all.
    Single(usize),
    Weighted(Weighted),
}

#[derive(Debug)]
pub struct Weighted {
    /// Cumulative reduced shares of the backends that get traffic.
    cumulative: Box<[u32]>,
    /// Backend index for each entry of `cumulative`.
    backend: Box<[usize]>,
    period: u64,
    stride: u64,
    counter: AtomicU64,
}

impl Split {
    /// Compile from resolved shares (see [`resolve_shares`]); at least one must be positive.
    pub fn compile(shares: &[u32]) -> Split {
        let live: Vec<usize> = (0..shares.len()).filter(|&i| shares[i] > 0).collect();
        assert!(!live.is_empty(), "validation guarantees a positive weight");
        if live.len() == 1 {
            return Split::Single(live[0]);
        }
        let g = live.iter().fold(0, |g, &i| gcd(g, shares[i]));
        let mut cumulative = Vec::with_capacity(live.len());
        let mut sum = 0;
        for &i in &live {
            sum += shares[i] / g;
            cumulative.push(sum);
        }
        let period = u64::from(sum);
        Split::Weighted(Weighted {
            cumulative: cumulative.into(),
            backend: live.into(),
            period,
            stride: golden_stride(period),
            counter: AtomicU64::new(0),
        })
    }

    /// The backend index for the next request.
    #[inline]
    pub fn pick(&self) -> usize {
        match self {
            Split::Single(i) => *i,
            Split::Weighted(w) => {
                // Relaxed: the counter only needs to hand out distinct numbers.
                let n = w.counter.fetch_add(1, Ordering::Relaxed) % w.period;
                let slot = (n * w.stride % w.period) as u32;
                let i = w.cumulative.iter().position(|&c| slot < c).unwrap_or(0);
                w.backend[i]
            }
        }
    }
}

/// Turn weights into shares of [`RESOLUTION`] summing to exactly `RESOLUTION`
/// (largest remainder). Non-positive weights get 0; positive ones at least 1.
pub fn resolve_shares(weights: &[f64]) -> Vec<u32> {
    let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
    if total <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> =
        weights.iter().map(|&w| if w > 0.0 { w / total * f64::from(RESOLUTION) } else { 0.0 }).collect();
    let mut shares: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut left = RESOLUTION - shares.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
    // Largest remainder first; ties to file order so the result is deterministic.
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for &i in order.iter().cycle().take(left as usize) {
        shares[i] += 1;
        left -= 1;
    }
    // A positive weight never vanishes: take its slot from the largest share.
    for i in 0..shares.len() {
        if weights[i] > 0.0 && shares[i] == 0 {
            let max = (0..shares.len()).max_by_key(|&j| shares[j]).unwrap_or(0);
            shares[max] -= 1;
            shares[i] = 1;
        }
    }
    debug_assert_eq!(left, 0);
    shares
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The integer closest to `p/φ` that is coprime to `p`.
fn golden_stride(p: u64) -> u64 {
    let start = ((p as f64) * 0.618_033_988_749_895).round().max(1.0) as u64;
    (0..p).map(|d| start + d).find(|&k| gcd64(k, p) == 1).unwrap_or(1)
}

fn gcd64(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd64(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(split: &Split, n: usize, backends: usize) -> Vec<usize> {
        let mut counts = vec![0; backends];
        for _ in 0..n {
            counts[split.pick()] += 1;
        }
        counts
    }

    #[test]
    fn shares_sum_to_resolution_and_keep_tiny_canaries() {
        assert_eq!(resolve_shares(&[90.0, 10.0]), vec![9000, 1000]);
        assert_eq!(resolve_shares(&[99.99, 0.01]), vec![9999, 1]);
        assert_eq!(resolve_shares(&[1.0, 1.0, 1.0]).iter().sum::<u32>(), RESOLUTION);
        assert_eq!(resolve_shares(&[1e9, 1.0]), vec![9999, 1]);
        assert_eq!(resolve_shares(&[0.0, 5.0]), vec![0, 10_000]);
    }

    #[test]
    fn every_window_is_exact_over_its_period() {
        let split = Split::compile(&resolve_shares(&[90.0, 10.0]));
        // Any 10 consecutive picks: exactly 9 and 1.
        for _ in 0..50 {
            assert_eq!(observed(&split, 10, 2), vec![9, 1]);
        }
    }

    #[test]
    fn any_10k_window_is_within_one_point() {
        for weights in [vec![33.3, 33.3, 33.4], vec![70.0, 20.0, 10.0], vec![12.5, 87.5], vec![0.5, 99.5]] {
            let shares = resolve_shares(&weights);
            let split = Split::compile(&shares);
            // Skip an odd offset so the window does not start at the period's beginning.
            observed(&split, 1234, weights.len());
            let counts = observed(&split, 10_000, weights.len());
            for (c, s) in counts.iter().zip(&shares) {
                let diff = (*c as i64 - *s as i64).abs();
                assert!(diff <= 100, "weights {weights:?}: counts {counts:?} vs shares {shares:?}");
            }
        }
    }

    #[test]
    fn zero_weight_backends_get_nothing() {
        let split = Split::compile(&resolve_shares(&[0.0, 1.0, 0.0]));
        assert!(matches!(split, Split::Single(1)));
        let split = Split::compile(&resolve_shares(&[0.0, 1.0, 3.0]));
        assert_eq!(observed(&split, 400, 3)[0], 0);
    }
}
