//! What reloads and restarts do to rollouts: after every file goes live (the
//! controller calls [`RolloutHook::reconcile`] with its writer lock held), rollouts
//! whose route changed or went away end, saved progress is restored, and `auto_start`
//! ones begin.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use super::drive::{By, Driver};
use super::{Phase, Run, Window};
use crate::config::{FileConfig, FileRoute};
use crate::control::fingerprint;
use crate::state::{RolloutHook, Writer};

impl Driver {
    /// After the first snapshot or a reload: end rollouts whose route the file changed
    /// or removed, restore persisted progress (at start), and start `auto_start` ones
    /// that have not run.
    async fn reconcile_rollouts(self: &Arc<Self>, writer: &mut Writer, cfg: &FileConfig) {
        let stale: Vec<(String, Phase)> = {
            let runs = self.rollouts.runs.lock().expect("not poisoned");
            runs.iter()
                .filter(|(name, run)| {
                    !cfg.routes
                        .iter()
                        .any(|r| r.name == **name && r.rollout.is_some() && fingerprint(r) == run.fingerprint)
                })
                .map(|(name, run)| (name.clone(), run.phase))
                .collect()
        };
        for (name, phase) in stale {
            self.rollouts.runs.lock().expect("not poisoned").remove(&name);
            if phase.is_active() {
                tracing::warn!(route = %name, "the reloaded file changed this route: its rollout is aborted and the file's weights apply");
                self.controller.telemetry().rollouts_total(&name, "aborted").increment(1);
            }
            self.controller.telemetry().rollout_step(&name).set(-1.0);
        }
        for route in &cfg.routes {
            let Some(rollout) = &route.rollout else { continue };
            if self.rollouts.runs.lock().expect("not poisoned").contains_key(&route.name) {
                continue;
            }
            match writer.admin.rollout(route).cloned() {
                Some(saved) if saved.step < rollout.steps.len() => {
                    let first =
                        saved.reason.strip_prefix("restored from the state file (").and_then(|r| r.strip_suffix(')'));
                    let reason = format!("restored from the state file ({})", first.unwrap_or(&saved.reason));
                    match saved.phase {
                        // A fleet's state is already where it stands: follow it.
                        Phase::Running | Phase::Paused if self.controller.fleet().is_some() => {
                            self.enter(writer, route, rollout, saved.step, saved.phase, saved.reason.clone());
                        }
                        Phase::Running | Phase::Paused => {
                            let restored =
                                self.begin(writer, route, rollout, saved.step, saved.phase, reason, By::Hand).await;
                            if let Err(e) = restored {
                                tracing::error!(route = %route.name, error = %e, "cannot restore the rollout");
                            }
                        }
                        Phase::Idle => {}
                        finished => self.restore_finished(route, saved.step, finished, reason),
                    }
                }
                // In a fleet only the decider starts rollouts (others would race it).
                _ if rollout.auto_start && self.controller.fleet().is_none_or(|f| f.is_decider()) => {
                    let started =
                        self.begin(writer, route, rollout, 0, Phase::Running, "auto_start".into(), By::Timer).await;
                    if let Err(e) = started {
                        tracing::warn!(route = %route.name, error = %e, "auto_start: the rollout did not start");
                    }
                }
                _ => {
                    if cfg.admin.state_file.is_none() && cfg.cluster.is_none() {
                        tracing::info!(route = %route.name, "route has a rollout and no [admin] state_file: its progress is not kept across restarts; the config file's weights apply until it starts");
                    }
                }
            }
        }
        // Every route's step gauge, set as its file goes live (-1: no active rollout).
        for route in &cfg.routes {
            self.controller.telemetry().rollout_step(&route.name).set(self.rollouts.step_gauge(&route.name));
        }
    }

    /// The fleet's state moved these routes' rollouts (a hand on another replica, or
    /// the decider): follow them here. Only the decider arms timers (in `enter`).
    fn follow_fleet(self: &Arc<Self>, writer: &mut Writer, routes: &[String]) {
        let file = self.controller.file();
        for name in routes {
            let Some(route) = file.routes.iter().find(|r| &r.name == name) else { continue };
            let Some(rollout) = &route.rollout else { continue };
            let here = self.rollouts.runs.lock().expect("not poisoned").get(name).map(|r| (r.phase, r.step));
            match writer.admin.rollout(route).cloned() {
                Some(saved) if here == Some((saved.phase, saved.step)) => {}
                Some(saved) if saved.step < rollout.steps.len() => match saved.phase {
                    Phase::Running | Phase::Paused => {
                        self.enter(writer, route, rollout, saved.step, saved.phase, saved.reason.clone());
                    }
                    Phase::Idle => {}
                    finished if here.is_some_and(|(phase, _)| phase.is_active()) => {
                        self.settle(route, finished, saved.reason.clone(), None);
                    }
                    finished => self.restore_finished(route, saved.step, finished, saved.reason.clone()),
                },
                _ => {
                    if self.rollouts.runs.lock().expect("not poisoned").remove(name).is_some() {
                        self.controller.telemetry().rollout_step(name).set(-1.0);
                    }
                }
            }
        }
    }

    /// This replica just became the fleet's decider: judge every running rollout from
    /// a fresh window of its current step, and start `auto_start` ones nobody started.
    pub(super) async fn take_over(self: &Arc<Self>) {
        let mut writer = self.controller.writer.lock().await;
        let file = self.controller.file();
        let running: Vec<(String, u64)> = {
            let mut runs = self.rollouts.runs.lock().expect("not poisoned");
            runs.iter_mut()
                .filter(|(_, run)| run.phase == Phase::Running)
                .map(|(name, run)| {
                    run.epoch = self.rollouts.next_epoch();
                    (name.clone(), run.epoch)
                })
                .collect()
        };
        for (name, epoch) in running {
            let Some(rollout) = file.routes.iter().find(|r| r.name == name).and_then(|r| r.rollout.as_ref()) else {
                continue;
            };
            tracing::info!(route = %name, "the new decider continues this rollout from its current step");
            self.arm(&writer, &name, epoch, rollout.interval);
        }
        self.reconcile_rollouts(&mut writer, &file).await;
    }

    fn restore_finished(&self, route: &FileRoute, step: usize, phase: Phase, reason: String) {
        let run = Run {
            phase,
            step,
            fingerprint: fingerprint(route),
            epoch: self.rollouts.next_epoch(),
            window: Window::default(),
            judged: 0,
            last: None,
            judgements: Vec::new(),
            reason,
            changed_at: SystemTime::now(),
        };
        self.rollouts.runs.lock().expect("not poisoned").insert(route.name.clone(), run);
    }
}

impl RolloutHook for Driver {
    fn phase(&self, route: &str) -> Phase {
        self.rollouts.phase(route)
    }

    fn reconcile<'a>(
        self: Arc<Self>,
        writer: &'a mut Writer,
        cfg: Arc<FileConfig>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move { self.reconcile_rollouts(writer, &cfg).await })
    }

    fn fleet_applied<'a>(
        self: Arc<Self>,
        writer: &'a mut Writer,
        routes: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move { self.follow_fleet(writer, &routes) })
    }
}
