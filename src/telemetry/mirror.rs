//! The counters of one route's mirror: `switchyard_mirror_requests_total{result}`, and
//! the same counts readable for `status` (its mismatch rate). The bound on copies in
//! flight is the mirror's own (`mirror::Slots`); these are counters only.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Counter;

/// What became of a copy: the `result` label of `switchyard_mirror_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorOutcome {
    /// The mirror answered, and (when comparing) agreed with the primary. With
    /// `compare = "none"`, every answered copy.
    Match = 0,
    Mismatch = 1,
    /// The mirror failed: no endpoint, connect error, timeout, reset.
    Error = 2,
    /// Not sent, or not comparable: mirror full, body too large or of unknown length,
    /// the primary's answer never completed.
    Dropped = 3,
}

impl MirrorOutcome {
    pub const ALL: [MirrorOutcome; 4] =
        [MirrorOutcome::Match, MirrorOutcome::Mismatch, MirrorOutcome::Error, MirrorOutcome::Dropped];

    pub fn as_str(self) -> &'static str {
        match self {
            MirrorOutcome::Match => "match",
            MirrorOutcome::Mismatch => "mismatch",
            MirrorOutcome::Error => "error",
            MirrorOutcome::Dropped => "dropped",
        }
    }
}

/// One route's mirror counters; long-lived (cached in [`Telemetry`](super::Telemetry)) so
/// counts do not reset when a snapshot is swapped.
pub struct MirrorMetrics {
    counters: [Counter; 4],
    counts: [AtomicU64; 4],
}

impl MirrorMetrics {
    pub fn new(counters: [Counter; 4]) -> Self {
        MirrorMetrics { counters, counts: std::array::from_fn(|_| AtomicU64::new(0)) }
    }

    pub fn count(&self, outcome: MirrorOutcome) {
        self.counters[outcome as usize].increment(1);
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, outcome: MirrorOutcome) -> u64 {
        self.counts[outcome as usize].load(Ordering::Relaxed)
    }
}
