//! Automated rollouts: a route's canary share walks through `steps`, each step judged
//! from the canary's and baseline's own requests during it, rolled back in one swap
//! when a threshold is crossed and promoted when the last step passes.
//!
//! | file | owns |
//! | --- | --- |
//! | `judge.rs` | the verdict on one step's measurements (pure) |
//! | `drive.rs` | the Driver: start/pause/resume/abort, the timer task per running rollout |
//! | `reconcile.rs` | what reloads, restarts and the fleet's state do to rollouts |
//! | `fleet.rs` | with `[cluster]`: tallies published, the decider's judging on their sum |
//!
//! A rollout's weights are runtime weights like the admin API's (see
//! [`crate::control`]), marked as set by the rollout, swapped in through the
//! [`crate::state::Controller`] (the one writer of snapshots) and persisted to the
//! state file with the rollout's phase and step. The request path
//! knows nothing of rollouts: it reads the snapshot and bumps per-backend counters
//! ([`crate::telemetry::Tally`]) that the judge reads back.
//!
//! States: idle → running(step i) ⇄ paused → promoted | rolled_back | aborted; a finished
//! rollout can be started again.

mod drive;
mod fleet;
mod judge;
mod reconcile;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

pub use drive::{Action, Driver};
pub use judge::{judge, measure, Judgement, Verdict, MAX_WAIT_INTERVALS};

use crate::clock::timestamp;
use crate::config::FileRollout;
use crate::telemetry::Counts;

/// Where a rollout stands (persisted in the state file, so it is defined there).
pub use crate::control::Phase;

/// One route's rollout as it runs.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub phase: Phase,
    pub step: usize,
    /// The route's fingerprint when the rollout started: a reload that changes it ends
    /// the rollout.
    pub fingerprint: String,
    /// Bumped on every transition; a timer task whose epoch is stale exits.
    pub epoch: u64,
    /// Where the current step's window started.
    pub window: Window,
    /// Judgements made in the current step so far.
    pub judged: u32,
    pub last: Option<Judgement>,
    /// The decisive judgement of each finished step of this rollout, oldest first.
    pub judgements: Vec<StepJudgement>,
    /// Why the last transition happened (human-readable).
    pub reason: String,
    pub changed_at: SystemTime,
}

/// A finished step's decisive judgement (for status and the status page).
#[derive(Debug, Clone, Serialize)]
pub struct StepJudgement {
    pub step: usize,
    /// The canary's share during the step.
    pub percent: f64,
    pub at: String,
    #[serde(flatten)]
    pub judgement: Judgement,
}

/// The counts when a step's window opened.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    pub canary: Counts,
    pub baseline: Counts,
    pub opened_at: Option<SystemTime>,
    /// The canary's and baseline's versions: their counts are per version, so a reload
    /// that renames one opens a new window instead of comparing unrelated counters.
    pub versions: (String, String),
}

/// Every route's rollout run; never touched by the request path.
#[derive(Default)]
pub(crate) struct Rollouts {
    pub runs: Mutex<HashMap<String, Run>>,
    epochs: AtomicU64,
}

impl Rollouts {
    pub fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn phase(&self, route: &str) -> Phase {
        self.runs.lock().expect("not poisoned").get(route).map_or(Phase::Idle, |r| r.phase)
    }

    /// `switchyard_rollout_step`: the step index while running or paused, else -1.
    pub fn step_gauge(&self, route: &str) -> f64 {
        match self.runs.lock().expect("not poisoned").get(route) {
            Some(r) if r.phase.is_active() => r.step as f64,
            _ => -1.0,
        }
    }
}

/// The `rollout` object of a route in `status`.
#[derive(Debug, Serialize)]
pub struct RolloutView {
    pub state: &'static str,
    /// Index into `steps`; `null` when idle.
    pub step: Option<usize>,
    pub steps: Vec<f64>,
    /// The canary's share now, in percent (as the rollout set it).
    pub canary_percent: Option<f64>,
    pub canary: String,
    pub baseline: String,
    pub interval_seconds: f64,
    pub step_started_at: Option<String>,
    /// The current step's window so far (while running), else the last judgement.
    pub measured: Option<Judgement>,
    pub last_judgement: Option<Judgement>,
    /// Each finished step's decisive judgement, oldest first.
    pub judgements: Vec<StepJudgement>,
    pub thresholds: Thresholds,
    pub reason: String,
    pub changed_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Thresholds {
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_p99_ms: Option<f64>,
    pub max_error_rate_increase: Option<f64>,
}

impl RolloutView {
    pub(crate) fn new(r: &FileRollout, run: Option<&Run>, live: Option<Judgement>) -> RolloutView {
        let thresholds = Thresholds {
            min_requests: r.min_requests,
            max_error_rate: r.max_error_rate,
            max_p99_ms: r.max_p99.map(|d| d.as_secs_f64() * 1000.0),
            max_error_rate_increase: r.max_error_rate_increase,
        };
        let phase = run.map_or(Phase::Idle, |r| r.phase);
        RolloutView {
            state: phase.as_str(),
            step: run.filter(|_| phase != Phase::Idle).map(|r| r.step),
            steps: r.steps.clone(),
            canary_percent: run.and_then(|run| match run.phase {
                Phase::Idle => None,
                Phase::Running | Phase::Paused => r.steps.get(run.step).copied(),
                Phase::Promoted => Some(100.0),
                Phase::RolledBack | Phase::Aborted => Some(0.0),
            }),
            canary: r.canary.get_ref().clone(),
            baseline: r.baseline.get_ref().clone(),
            interval_seconds: r.interval.as_secs_f64(),
            step_started_at: run.and_then(|r| r.window.opened_at).map(timestamp),
            measured: live.or_else(|| run.and_then(|r| r.last.clone())),
            last_judgement: run.and_then(|r| r.last.clone()),
            judgements: run.map(|r| r.judgements.clone()).unwrap_or_default(),
            thresholds,
            reason: run.map_or_else(|| "not started".to_string(), |r| r.reason.clone()),
            changed_at: run.map(|r| timestamp(r.changed_at)),
        }
    }
}
