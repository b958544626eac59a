//! Rollouts run once per fleet. Every member publishes its own tallies of a running
//! rollout's canary and baseline (at most once a second); the decider alone judges,
//! on the sum over members of requests, errors and each latency bucket during the
//! step, and writes each transition fenced by its election. A step's window opens when
//! every live member has applied the step (and counted under it), so no member's
//! pre-step traffic is judged as the step's.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::drive::{counted_versions, Driver, Next};
use super::{judge, Phase};
use crate::cluster::{BackendTally, Fleet, Tally};
use crate::state::file_route;
use crate::telemetry::Counts;

/// How often members publish tallies and a waiting decider looks again.
const BEAT: Duration = Duration::from_secs(1);

/// One member's counts at a window's start, and what it added since.
struct MemberWindow {
    incarnation: u64,
    start: (Counts, Counts),
    /// What earlier incarnations (before a restart) added during the window.
    carried: (Counts, Counts),
    delta: (Counts, Counts),
}

/// A step's window over the fleet.
#[derive(Default)]
struct FleetWindow {
    members: HashMap<String, MemberWindow>,
}

impl FleetWindow {
    /// Fold the members' latest tallies in; returns the fleet's (canary, baseline)
    /// since the window opened. A member that joined late enters at its first tally;
    /// one that restarted counts from zero again; one that left keeps what it added.
    fn fold(&mut self, tallies: &[Tally]) -> (Counts, Counts) {
        for t in tallies {
            let now = (t.canary.counts(), t.baseline.counts());
            match self.members.get_mut(&t.member) {
                Some(m) => {
                    if m.incarnation != t.incarnation {
                        // Restarted: its counts began again from zero.
                        m.incarnation = t.incarnation;
                        m.carried = std::mem::take(&mut m.delta);
                        m.start = Default::default();
                    }
                    let mut delta = (now.0.since(&m.start.0), now.1.since(&m.start.1));
                    delta.0.add(&m.carried.0);
                    delta.1.add(&m.carried.1);
                    m.delta = delta;
                }
                None => {
                    let m = MemberWindow {
                        incarnation: t.incarnation,
                        start: now,
                        carried: Default::default(),
                        delta: Default::default(),
                    };
                    self.members.insert(t.member.clone(), m);
                }
            }
        }
        let mut sum = (Counts::default(), Counts::default());
        for m in self.members.values() {
            sum.0.add(&m.delta.0);
            sum.1.add(&m.delta.1);
        }
        sum
    }
}

/// The decider's timer for one step of `route`'s rollout (written at `step_revision`):
/// wait for every member to apply the step, then judge every `interval` on the fleet's
/// sum. While etcd is unreachable it does not judge; when etcd is back the step's
/// window opens afresh. A write to the route since the step began that left it at the
/// same step (a pause and resume, or an abort and start, seen in one watch batch) opens
/// a fresh window at that write: a step is never judged on traffic from before it.
/// Ends with the epoch, or when this replica stops deciding.
pub(super) async fn judge_loop(
    driver: Weak<Driver>,
    route: String,
    epoch: u64,
    mut step_revision: i64,
    interval: Duration,
) {
    'window: loop {
        if let Some(d) = driver.upgrade() {
            step_revision = step_revision.max(d.controller.fleet_revision_of(&route).await);
        }
        let mut window = loop {
            tokio::time::sleep(BEAT).await;
            let Some(d) = driver.upgrade() else { return };
            let Some(fleet) = d.deciding(&route, epoch) else { return };
            if !fleet.is_connected() {
                d.note(&route, epoch, "paused: etcd is unreachable; the step's window opens again when it is back");
                continue;
            }
            if let Some(window) = d.open_fleet_window(&fleet, &route, epoch, step_revision).await {
                break window;
            }
        };
        let mut judged = 0;
        loop {
            tokio::time::sleep(interval).await;
            let Some(d) = driver.upgrade() else { return };
            let Some(fleet) = d.deciding(&route, epoch) else { return };
            if !fleet.is_connected() {
                continue 'window;
            }
            let Ok(tallies) = fleet.tallies(&route).await else { continue 'window };
            judged += 1;
            match d.judge_fleet_step(&route, epoch, step_revision, &mut window, &tallies, judged).await {
                Some(Next::Wait) => {}
                Some(Next::Again) => continue 'window,
                Some(Next::Stop) | None => return,
            }
        }
    }
}

impl Driver {
    /// The fleet, while this replica decides and `route`'s run is still at `epoch`.
    fn deciding(&self, route: &str, epoch: u64) -> Option<Arc<Fleet>> {
        let fleet = self.controller.fleet()?.clone();
        let current = self
            .rollouts
            .runs
            .lock()
            .expect("not poisoned")
            .get(route)
            .is_some_and(|r| r.epoch == epoch && r.phase == Phase::Running);
        (current && fleet.is_decider()).then_some(fleet)
    }

    /// Say in `status` why the step is not being judged.
    fn note(&self, route: &str, epoch: u64, why: &str) {
        if let Some(run) = self.rollouts.runs.lock().expect("not poisoned").get_mut(route).filter(|r| r.epoch == epoch)
        {
            if run.reason != why {
                tracing::info!(route, why, "rollout step waiting");
                run.reason = why.to_string();
            }
        }
    }

    /// Open the step's window once every live member has applied `step_revision` and
    /// published a tally counted under it (with the canary's and baseline's versions
    /// this replica knows); `None` while some have not.
    async fn open_fleet_window(
        &self,
        fleet: &Fleet,
        route: &str,
        epoch: u64,
        step_revision: i64,
    ) -> Option<FleetWindow> {
        let members = fleet.members().await.ok()?;
        let tallies = fleet.tallies(route).await.ok()?;
        let versions = self.versions_of(route)?;
        let ready = |name: &str| {
            tallies.iter().any(|t| {
                t.member == name
                    && t.applied >= step_revision
                    && t.is_summable()
                    && (t.canary.version.as_str(), t.baseline.version.as_str())
                        == (versions.0.as_str(), versions.1.as_str())
            })
        };
        // The tally is the proof: a member publishes it after applying the step (its
        // member record's revision may lag a failed write behind).
        let waiting: Vec<&str> = members.iter().filter(|m| !ready(&m.name)).map(|m| m.name.as_str()).collect();
        if !waiting.is_empty() {
            self.note(route, epoch, &format!("waiting for members to apply the step: {}", waiting.join(", ")));
            return None;
        }
        let mut window = FleetWindow::default();
        let live: Vec<Tally> = tallies.into_iter().filter(|t| members.iter().any(|m| m.name == t.member)).collect();
        window.fold(&live);
        if let Some(run) = self.rollouts.runs.lock().expect("not poisoned").get_mut(route).filter(|r| r.epoch == epoch)
        {
            run.window.opened_at = Some(SystemTime::now());
            run.judged = 0;
            run.reason = format!("judging the fleet's traffic ({} members)", members.len());
        }
        tracing::info!(route, members = members.len(), step_revision, "the step's window opened on every member");
        Some(window)
    }

    /// The canary's and baseline's versions as this replica counts them.
    fn versions_of(&self, route: &str) -> Option<(String, String)> {
        let (rt, file) = self.controller.live();
        let rollout = file_route(&file, &rt, route)?.rollout.as_ref()?;
        let version = |upstream: &str| counted_versions(&rt, upstream).join(",");
        Some((version(rollout.canary.get_ref()), version(rollout.baseline.get_ref())))
    }

    /// Judge the step on the fleet's sum; `Some(true)` while the timer goes on.
    async fn judge_fleet_step(
        self: &Arc<Self>,
        route_name: &str,
        epoch: u64,
        step_revision: i64,
        window: &mut FleetWindow,
        tallies: &[Tally],
        judged: u32,
    ) -> Option<Next> {
        let versions = self.versions_of(route_name)?;
        // Only tallies counted under the step: a member that rejoins mid-step publishes
        // before its watch has caught up, and enters the window once it has.
        let summable: Vec<Tally> = tallies
            .iter()
            .filter(|t| {
                t.applied >= step_revision
                    && t.is_summable()
                    && t.canary.version == versions.0
                    && t.baseline.version == versions.1
            })
            .cloned()
            .collect();
        let (canary, baseline) = window.fold(&summable);
        let mut writer = self.controller.writer.lock().await;
        if writer.fleet_routes.get(route_name).map_or(0, |(_, rev)| *rev) != step_revision {
            tracing::info!(
                route = route_name,
                "the route was written since its step began: the step's window opens again"
            );
            return Some(Next::Again);
        }
        let (rt, file) = self.controller.live();
        let route = file_route(&file, &rt, route_name)?;
        let rollout = route.rollout.as_ref()?;
        let step = {
            let mut runs = self.rollouts.runs.lock().expect("not poisoned");
            let run = runs.get_mut(route_name).filter(|r| r.epoch == epoch && r.phase == Phase::Running)?;
            run.judged = judged;
            run.step
        };
        let j = judge(rollout, &canary, &baseline, judged);
        tracing::info!(route = route_name, step, judged, members = window.members.len(), verdict = ?j.verdict, canary_requests = j.canary_requests, baseline_requests = j.baseline_requests, "fleet rollout step judged");
        Some(self.conclude(&mut writer, route, rollout, step, j).await)
    }

    /// Publish this member's tallies of every running rollout, at most once a second
    /// and only when they changed; and follow this replica's election.
    pub async fn run_fleet(self: Arc<Self>) {
        let Some(fleet) = self.controller.fleet().cloned() else { return };
        let me = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(follow_election(me.clone(), fleet.decider_changes()));
        let mut published: HashMap<String, Tally> = HashMap::new();
        let mut lease = 0;
        loop {
            tokio::time::sleep(BEAT).await;
            let Some(d) = me.upgrade() else { return };
            if fleet.is_leaving() {
                return;
            }
            if !fleet.is_connected() {
                // Keys under a lease that ends go with it: publish all again after.
                published.clear();
                continue;
            }
            if fleet.lease() != lease {
                lease = fleet.lease();
                published.clear();
            }
            let running: Vec<String> = {
                let runs = d.rollouts.runs.lock().expect("not poisoned");
                runs.iter().filter(|(_, r)| r.phase == Phase::Running).map(|(n, _)| n.clone()).collect()
            };
            published.retain(|route, _| running.contains(route));
            let file = d.controller.file();
            for name in running {
                let Some(route) = file.routes.iter().find(|r| r.name == name) else { continue };
                let Some(rollout) = &route.rollout else { continue };
                // `applied` read first: a tally's counts are never older than the
                // revision it says it applied (the decider opens a window on that).
                let applied = fleet.applied();
                let (canary, baseline, versions) = d.counts(route, rollout);
                let tally = Tally::new(
                    &fleet.name,
                    fleet.incarnation,
                    applied,
                    BackendTally::new(rollout.canary.get_ref(), &versions.0, &canary),
                    BackendTally::new(rollout.baseline.get_ref(), &versions.1, &baseline),
                );
                if published.get(&name) != Some(&tally) && fleet.publish_tally(&name, &tally).await.is_ok() {
                    published.insert(name, tally);
                }
            }
        }
    }
}

/// Take over running rollouts whenever this replica becomes the decider.
async fn follow_election(driver: Weak<Driver>, mut decider: tokio::sync::watch::Receiver<bool>) {
    loop {
        if decider.changed().await.is_err() {
            return;
        }
        let now = *decider.borrow_and_update();
        if now {
            let Some(d) = driver.upgrade() else { return };
            d.take_over().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Tally as Counter;

    fn tally(member: &str, incarnation: u64, canary: (u64, u64), baseline: (u64, u64)) -> Tally {
        let counts = |(n, errors): (u64, u64)| {
            let c = Counter::default();
            for i in 0..n {
                c.answered(if i < errors { 500 } else { 200 });
                c.timed(Duration::from_millis(5));
            }
            c.snapshot()
        };
        Tally::new(
            member,
            incarnation,
            1,
            BackendTally::new("green", "v2", &counts(canary)),
            BackendTally::new("blue", "v1", &counts(baseline)),
        )
    }

    #[test]
    fn a_window_sums_what_each_member_added_since_it_opened() {
        let mut w = FleetWindow::default();
        w.fold(&[tally("a", 1, (10, 0), (100, 0)), tally("b", 7, (0, 0), (50, 0))]);
        // a adds 5 canary requests (1 error); b adds 20 (4 errors); c joins late.
        let (c, b) = w.fold(&[
            tally("a", 1, (15, 1), (150, 0)),
            tally("b", 7, (20, 4), (60, 0)),
            tally("c", 3, (1000, 0), (1000, 0)),
        ]);
        assert_eq!((c.requests, c.errors), (25, 5));
        assert_eq!(b.requests, 60);
        // b restarts (counts from zero) and a leaves: a keeps what it added.
        let (c, _) = w.fold(&[tally("b", 8, (2, 2), (0, 0)), tally("c", 3, (1010, 0), (1000, 0))]);
        assert_eq!((c.requests, c.errors), (5 + 22 + 10, 1 + 6));
    }
}
