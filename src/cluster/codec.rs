//! What members publish besides routing state: their membership record and their
//! per-backend tallies, as JSON values.

use serde::{Deserialize, Serialize};

use crate::telemetry::{Counts, BUCKET_SCHEME};

/// `P/members/<name>`: who this replica is and which revision of the fleet state it
/// serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub admin: String,
    pub version: String,
    pub revision: i64,
}

/// `P/tallies/<route>/<member>`: one member's cumulative counts of a route's canary
/// and baseline since it started (`incarnation` changes with every start, so the
/// decider knows when counts began again from zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub member: String,
    pub incarnation: u64,
    /// The fleet-state revision the member had applied when it counted these.
    pub applied: i64,
    pub scheme: String,
    pub canary: BackendTally,
    pub baseline: BackendTally,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendTally {
    pub upstream: String,
    pub version: String,
    pub requests: u64,
    pub errors: u64,
    /// Non-empty latency buckets as `[index, count]`.
    pub buckets: Vec<(u16, u64)>,
}

impl BackendTally {
    pub fn new(upstream: &str, version: &str, counts: &Counts) -> BackendTally {
        BackendTally {
            upstream: upstream.to_string(),
            version: version.to_string(),
            requests: counts.requests,
            errors: counts.errors,
            buckets: counts.sparse(),
        }
    }

    pub fn counts(&self) -> Counts {
        Counts::from_sparse(self.requests, self.errors, &self.buckets)
    }
}

impl Tally {
    pub fn new(member: &str, incarnation: u64, applied: i64, canary: BackendTally, baseline: BackendTally) -> Tally {
        Tally { member: member.to_string(), incarnation, applied, scheme: BUCKET_SCHEME.to_string(), canary, baseline }
    }

    /// Counts in a layout this build can sum.
    pub fn is_summable(&self) -> bool {
        self.scheme == BUCKET_SCHEME
    }
}
