//! The [`Driver`]: the calls (start, pause, resume, abort) and the timer task that
//! judges each step (what reloads and restarts do is in `reconcile.rs`).
//!
//! Every transition holds the controller's writer lock (so it is ordered with admin
//! changes and reloads), records the phase and step in the state file, then swaps the
//! route's weights in one snapshot swap and publishes the run (status), logs, and bumps
//! the run's epoch so a timer task of an earlier phase exits instead of acting. Durable
//! before visible: whatever `status` or the live weights show survives a crash.
//!
//! Rules chosen where SPEC.md is silent:
//! - `resume` opens a fresh window for the current step (the judge never mixes requests
//!   from before a pause with requests after it).
//! - A reload that changes a route's rollout table (or anything else defining the
//!   route) while its rollout runs ends it as `aborted` and the file's weights apply,
//!   the same rule as for admin weight changes; `auto_start` then starts the new one.
//! - While a rollout is running or paused, weight changes, promote and rollback by hand
//!   on that route get 409: abort it first.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::{judge, measure, Phase, RolloutView, Rollouts, Run, Verdict, Window};
use crate::config::{FileRollout, FileRoute};
use crate::control::{fingerprint, ControlError};
use crate::snapshot::Runtime;
use crate::state::{file_route, Controller, Writer};
use crate::telemetry::Counts;

/// What a rollout call changes; the caller answers with the new status.
pub type RolloutResult = Result<(), ControlError>;

/// What a step's timer does after a judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Not enough to decide yet: judge again after the next interval.
    Wait,
    /// The transition could not be written: judge the step again, from a fresh window.
    Again,
    /// The rollout moved on (a new timer, if any, was armed): this one ends.
    Stop,
}

/// Who makes a transition: a hand (API, `ctl`) or a step's timer (in a fleet, the
/// decider: its writes are fenced by its election).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum By {
    Hand,
    Timer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Abort,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "start" => Action::Start,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "abort" => Action::Abort,
            _ => return None,
        })
    }
}

/// Drives every route's rollout over the [`Controller`]: each transition takes the
/// controller's writer lock, persists, and swaps weights in through it.
pub struct Driver {
    pub(super) controller: Arc<Controller>,
    pub(super) rollouts: Rollouts,
}

impl Driver {
    /// A driver following `controller`'s live file (restoring saved rollouts and
    /// starting `auto_start` ones now).
    pub async fn attach(controller: Arc<Controller>) -> Arc<Driver> {
        let driver = Arc::new(Driver { controller: controller.clone(), rollouts: Rollouts::default() });
        controller.attach(driver.clone()).await;
        driver
    }

    pub fn phase(&self, route: &str) -> Phase {
        self.rollouts.phase(route)
    }

    /// The `rollout` object of `route`'s status; `None` when it has no rollout.
    pub fn view(&self, route: &FileRoute) -> Option<RolloutView> {
        let rollout = route.rollout.as_ref()?;
        let run = self.rollouts.runs.lock().expect("not poisoned").get(&route.name).cloned();
        Some(RolloutView::new(rollout, run.as_ref(), self.live_measurement(route)))
    }

    /// `POST /api/v1/routes/{route}/rollout/{action}`.
    pub async fn rollout(self: &Arc<Self>, route: &str, action: Action) -> RolloutResult {
        self.controller.check_fleet_reachable()?;
        let mut writer = self.controller.writer.lock().await;
        let rt = self.controller.store().load();
        let file = self.controller.file();
        let file_route = file_route(&file, &rt, route).ok_or_else(|| ControlError::UnknownRoute(route.into()))?;
        let Some(rollout) = &file_route.rollout else {
            return Err(ControlError::Conflict(format!("route {route:?} has no rollout configured")));
        };
        let phase = self.rollouts.phase(route);
        let refuse = |what: &str| {
            Err(ControlError::Conflict(format!("cannot {what}: the rollout of {route:?} is {}", phase.as_str())))
        };
        match action {
            Action::Start if phase.is_active() => refuse("start"),
            Action::Start => {
                self.begin(&mut writer, file_route, rollout, 0, Phase::Running, "started".into(), By::Hand).await
            }
            Action::Pause if phase != Phase::Running => refuse("pause"),
            Action::Pause => {
                let admin = writer.admin.clone();
                self.transition(&mut writer, file_route, Phase::Paused, "paused by hand".into(), None, admin, By::Hand)
                    .await
            }
            Action::Resume if phase != Phase::Paused => refuse("resume"),
            Action::Resume => {
                let step = self.rollouts.runs.lock().expect("not poisoned").get(route).map_or(0, |r| r.step);
                self.begin(&mut writer, file_route, rollout, step, Phase::Running, "resumed by hand".into(), By::Hand)
                    .await
            }
            Action::Abort if !phase.is_active() => refuse("abort"),
            Action::Abort => {
                self.finish(&mut writer, file_route, rollout, Phase::Aborted, "aborted by hand".into(), None, By::Hand)
                    .await
            }
        }
    }

    /// Enter `step` (setting its weights) as `phase`, with a fresh measurement window;
    /// when running, arm the timer. Nothing changes when the write is refused.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn begin(
        self: &Arc<Self>,
        writer: &mut Writer,
        route: &FileRoute,
        rollout: &FileRollout,
        step: usize,
        phase: Phase,
        reason: String,
        by: By,
    ) -> RolloutResult {
        let mut admin = writer.admin.clone();
        stage_rollout_weights(&mut admin, route, rollout, rollout.steps[step]);
        admin.save_rollout(route, phase, step, &reason);
        self.controller.commit(writer, admin, &route.name, self.fenced(by)).await?;
        self.enter(writer, route, rollout, step, phase, reason);
        Ok(())
    }

    /// Record (locally) that `route`'s rollout is at `step` as `phase`, with a fresh
    /// window, and arm the step's timer when this replica is the one that judges.
    pub(super) fn enter(
        self: &Arc<Self>,
        writer: &Writer,
        route: &FileRoute,
        rollout: &FileRollout,
        step: usize,
        phase: Phase,
        reason: String,
    ) {
        let epoch = self.rollouts.next_epoch();
        // The steps judged so far carry over to the next step of the same rollout.
        let judgements = match step {
            0 => Vec::new(),
            _ => self
                .rollouts
                .runs
                .lock()
                .expect("not poisoned")
                .get(&route.name)
                .map(|r| r.judgements.clone())
                .unwrap_or_default(),
        };
        let run = Run {
            phase,
            step,
            fingerprint: fingerprint(route),
            epoch,
            window: self.open_window(route, rollout),
            judged: 0,
            last: None,
            judgements,
            reason: reason.clone(),
            changed_at: SystemTime::now(),
        };
        self.rollouts.runs.lock().expect("not poisoned").insert(route.name.clone(), run);
        tracing::info!(route = %route.name, step, canary_percent = rollout.steps[step], state = phase.as_str(), %reason, "rollout step");
        self.controller.telemetry().rollout_step(&route.name).set(if phase.is_active() { step as f64 } else { -1.0 });
        if phase == Phase::Running {
            self.arm(writer, &route.name, epoch, rollout.interval);
        }
    }

    /// Start the timer that judges `route`'s current step: on tokio's clock alone, or
    /// in a fleet, on the decider only, over every member's tallies.
    pub(super) fn arm(self: &Arc<Self>, writer: &Writer, route: &str, epoch: u64, interval: Duration) {
        match self.controller.fleet() {
            None => {
                tokio::spawn(tick_loop(Arc::downgrade(self), route.to_string(), epoch, interval));
            }
            Some(fleet) if fleet.is_decider() => {
                let step_revision = writer.fleet_routes.get(route).map_or(0, |(_, rev)| *rev);
                let judging =
                    super::fleet::judge_loop(Arc::downgrade(self), route.to_string(), epoch, step_revision, interval);
                tokio::spawn(judging);
            }
            Some(_) => {}
        }
    }

    /// Timer writes in a fleet are the decider's: fenced by its election.
    fn fenced(&self, by: By) -> bool {
        by == By::Timer && self.controller.fleet().is_some()
    }

    /// Change phase, with `admin` holding the weights to go live with it (the live
    /// ones for a pause, the final ones for `finish`): written (state file or fleet)
    /// before it is live, and nothing changes when the write is refused.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        writer: &mut Writer,
        route: &FileRoute,
        phase: Phase,
        reason: String,
        last: Option<super::Judgement>,
        mut admin: crate::control::AdminWeights,
        by: By,
    ) -> RolloutResult {
        let Some(step) = self.rollouts.runs.lock().expect("not poisoned").get(&route.name).map(|r| r.step) else {
            return Ok(());
        };
        admin.save_rollout(route, phase, step, &reason);
        self.controller.commit(writer, admin, &route.name, self.fenced(by)).await?;
        self.settle(route, phase, reason, last);
        Ok(())
    }

    /// Record (locally) that `route`'s rollout changed phase at its current step.
    pub(super) fn settle(&self, route: &FileRoute, phase: Phase, reason: String, last: Option<super::Judgement>) {
        let step = {
            let mut runs = self.rollouts.runs.lock().expect("not poisoned");
            let Some(run) = runs.get_mut(&route.name) else { return };
            run.phase = phase;
            run.epoch = self.rollouts.next_epoch();
            run.reason = reason.clone();
            run.changed_at = SystemTime::now();
            if last.is_some() {
                run.last = last;
            }
            run.step
        };
        tracing::info!(route = %route.name, step, state = phase.as_str(), %reason, "rollout transition");
        if !phase.is_active() {
            let result = match phase {
                Phase::Promoted => "promoted",
                Phase::RolledBack => "rolled_back",
                _ => "aborted",
            };
            self.controller.telemetry().rollouts_total(&route.name, result).increment(1);
            if phase == Phase::Promoted {
                tracing::info!(route = %route.name, %reason, "rollout promoted: the canary takes all traffic");
            } else {
                tracing::warn!(route = %route.name, result, %reason, "rollout ended: the baseline takes all traffic");
            }
        }
        self.controller.telemetry().rollout_step(&route.name).set(if phase.is_active() { step as f64 } else { -1.0 });
    }

    /// End the rollout: promoted (canary 100) or rolled back / aborted (canary 0), in
    /// one swap.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn finish(
        &self,
        writer: &mut Writer,
        route: &FileRoute,
        rollout: &FileRollout,
        phase: Phase,
        reason: String,
        last: Option<super::Judgement>,
        by: By,
    ) -> RolloutResult {
        let canary = if phase == Phase::Promoted { 100.0 } else { 0.0 };
        let mut admin = writer.admin.clone();
        stage_rollout_weights(&mut admin, route, rollout, canary);
        self.transition(writer, route, phase, reason, last, admin, by).await
    }

    /// Counts of the canary and the baseline now: a window opens or closes here.
    pub(super) fn open_window(&self, route: &FileRoute, rollout: &FileRollout) -> Window {
        let (canary, baseline, versions) = self.counts(route, rollout);
        Window { canary, baseline, opened_at: Some(SystemTime::now()), versions }
    }

    /// The canary's and baseline's counts now, and the versions they are counted under
    /// (see [`counted_versions`]).
    pub(super) fn counts(&self, route: &FileRoute, rollout: &FileRollout) -> (Counts, Counts, (String, String)) {
        let rt = self.controller.store().load();
        let of = |upstream: &str| {
            let versions = counted_versions(&rt, upstream);
            let mut sum = Counts::default();
            for version in &versions {
                sum.add(&self.controller.telemetry().backend(&route.name, upstream, version).tally.snapshot());
            }
            (sum, versions.join(","))
        };
        let ((canary, canary_versions), (baseline, baseline_versions)) =
            (of(rollout.canary.get_ref()), of(rollout.baseline.get_ref()));
        (canary, baseline, (canary_versions, baseline_versions))
    }

    /// The current step's measurements so far (for status), while a rollout runs.
    fn live_measurement(&self, route: &FileRoute) -> Option<super::Judgement> {
        let rollout = route.rollout.as_ref()?;
        let window = {
            let runs = self.rollouts.runs.lock().expect("not poisoned");
            let run = runs.get(&route.name).filter(|r| r.phase == Phase::Running)?;
            run.window.clone()
        };
        let (canary, baseline, versions) = self.counts(route, rollout);
        if versions != window.versions {
            return None;
        }
        Some(measure(&canary.since(&window.canary), &baseline.since(&window.baseline)))
    }

    /// Judge the current step at the end of an interval. Returns whether the rollout
    /// is still running (the timer goes on).
    async fn tick(self: &Arc<Self>, route_name: &str, epoch: u64) -> bool {
        let mut writer = self.controller.writer.lock().await;
        let rt = self.controller.store().load();
        let file = self.controller.file();
        let Some(route) = file_route(&file, &rt, route_name) else { return false };
        let Some(rollout) = &route.rollout else { return false };
        let (step, window, judged) = {
            let mut runs = self.rollouts.runs.lock().expect("not poisoned");
            let Some(run) = runs.get_mut(route_name).filter(|r| r.epoch == epoch && r.phase == Phase::Running) else {
                return false;
            };
            run.judged += 1;
            (run.step, run.window.clone(), run.judged)
        };
        let (canary, baseline, versions) = self.counts(route, rollout);
        if versions != window.versions {
            tracing::info!(
                route = route_name,
                step,
                "the canary's or baseline's versions changed (a reload, or a rolling update behind it): the step's window starts again"
            );
            let fresh = self.open_window(route, rollout);
            if let Some(run) = self.rollouts.runs.lock().expect("not poisoned").get_mut(route_name) {
                run.window = fresh;
                run.judged = 0;
            }
            return true;
        }
        let j = judge(rollout, &canary.since(&window.canary), &baseline.since(&window.baseline), judged);
        tracing::info!(route = route_name, step, judged, verdict = ?j.verdict, canary_requests = j.canary_requests, canary_error_rate = %rounded(Some(j.canary_error_rate), 4), canary_p99_ms = %rounded(j.canary_p99_ms, 1), "rollout step judged");
        !matches!(self.conclude(&mut writer, route, rollout, step, j).await, Next::Stop)
    }

    /// Act on a step's judgement: wait, roll back, promote or move to the next step.
    /// Returns what this step's timer does next. A refused write changes nothing.
    pub(super) async fn conclude(
        self: &Arc<Self>,
        writer: &mut Writer,
        route: &FileRoute,
        rollout: &FileRollout,
        step: usize,
        j: super::Judgement,
    ) -> Next {
        let route_name = route.name.as_str();
        // Recorded once its transition is written: a refused one is judged again.
        let decisive = super::StepJudgement {
            step,
            percent: rollout.steps[step],
            at: crate::clock::timestamp(SystemTime::now()),
            judgement: j.clone(),
        };
        let written = match j.verdict.clone() {
            Verdict::Wait => {
                if let Some(run) = self.rollouts.runs.lock().expect("not poisoned").get_mut(route_name) {
                    run.last = Some(j);
                }
                return Next::Wait;
            }
            Verdict::Fail(reason) => {
                let reason = format!("step {step} ({}%) failed: {reason}", rollout.steps[step]);
                self.finish(writer, route, rollout, Phase::RolledBack, reason, Some(j), By::Timer).await
            }
            Verdict::Pass if step + 1 == rollout.steps.len() => {
                let reason = format!("all {} steps passed", rollout.steps.len());
                self.finish(writer, route, rollout, Phase::Promoted, reason, Some(j), By::Timer).await
            }
            Verdict::Pass => {
                let reason = format!("step {step} ({}%) passed", rollout.steps[step]);
                let begun = self.begin(writer, route, rollout, step + 1, Phase::Running, reason, By::Timer).await;
                if begun.is_ok() {
                    if let Some(run) = self.rollouts.runs.lock().expect("not poisoned").get_mut(route_name) {
                        run.last = Some(j);
                    }
                }
                // `begin` armed a new timer with a new epoch; this one stops.
                begun
            }
        };
        match written {
            Ok(()) => {
                if let Some(run) = self.rollouts.runs.lock().expect("not poisoned").get_mut(route_name) {
                    run.judgements.push(decisive);
                }
                Next::Stop
            }
            // Still the one who decides (etcd was briefly away, or a hand moved the
            // route: the watch brings that): judge the step again from a fresh window.
            Err(e) if self.controller.fleet().is_some_and(|f| f.is_decider()) => {
                tracing::warn!(route = route_name, step, error = %e, "the rollout's next transition was not written; the step is judged again");
                Next::Again
            }
            Err(e) => {
                tracing::warn!(route = route_name, step, error = %e, "the rollout's next transition was not written: this replica no longer decides");
                Next::Stop
            }
        }
    }
}

/// Canary at `percent`, baseline the rest, every other backend 0, in `admin`; the
/// caller commits it (one snapshot swap).
pub(super) fn stage_rollout_weights(
    admin: &mut crate::control::AdminWeights,
    route: &FileRoute,
    rollout: &FileRollout,
    percent: f64,
) {
    let weights: BTreeMap<String, f64> = route
        .backends
        .iter()
        .map(|b| {
            let name = b.upstream.get_ref();
            let w = if name == rollout.canary.get_ref() {
                percent
            } else if name == rollout.baseline.get_ref() {
                100.0 - percent
            } else {
                0.0
            };
            (name.clone(), w)
        })
        .collect();
    admin.set_by_rollout(route, weights);
}

/// Judge at the end of every interval until the rollout leaves this epoch's running
/// state. Holds only a weak reference: a dropped proxy ends its timers. The wait is on
/// tokio's clock, so a test can pause it and step through a rollout.
async fn tick_loop(driver: Weak<Driver>, route: String, epoch: u64, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(driver) = driver.upgrade() else { return };
        if !tick_boxed(&driver, &route, epoch).await {
            return;
        }
    }
}

/// The versions `upstream`'s requests are counted under now: the versions its
/// endpoints report when its health checks read one (a rolling update behind it, or
/// builds that name themselves), else its configured version. A window is judged on
/// their sum, and starts again when the set changes.
pub(super) fn counted_versions(rt: &Runtime, upstream: &str) -> Vec<Arc<str>> {
    let Some(u) = rt.upstreams.get(upstream) else { return vec![upstream.into()] };
    let groups = u.reported_groups();
    if groups.is_empty() {
        vec![u.version.clone()]
    } else {
        groups.into_iter().map(|g| g.version).collect()
    }
}

/// [`Driver::tick`], boxed: a tick may begin the next step, which spawns this loop
/// again, and the box (stated `Send`) breaks that cycle in the future's type.
fn tick_boxed<'a>(
    driver: &'a Arc<Driver>,
    route: &'a str,
    epoch: u64,
) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
    Box::pin(driver.tick(route, epoch))
}

/// A measured value for a log line: plain and rounded (`0.2`, not
/// `Some(0.18000000000000002)`), `-` when there is none.
fn rounded(v: Option<f64>, places: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.places$}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn logged_measurements_are_plain_rounded_numbers() {
        assert_eq!(super::rounded(Some(0.18000000000000002), 1), "0.2");
        assert_eq!(super::rounded(Some(0.012345), 4), "0.0123");
        assert_eq!(super::rounded(None, 1), "-");
    }
}
