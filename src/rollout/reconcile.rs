//! What reloads and restarts do to rollouts: after every file goes live (the
//! controller calls [`RolloutHook::reconcile`] with its writer lock held), rollouts
//! whose route changed or went away end, saved progress is restored, and `auto_start`
//! ones begin.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use super::drive::Driver;
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
                        Phase::Running | Phase::Paused => {
                            self.begin(writer, route, rollout, saved.step, saved.phase, reason).await;
                        }
                        Phase::Idle => {}
                        finished => self.restore_finished(route, saved.step, finished, reason),
                    }
                }
                _ if rollout.auto_start => {
                    self.begin(writer, route, rollout, 0, Phase::Running, "auto_start".into()).await;
                }
                _ => {
                    if cfg.admin.state_file.is_none() {
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

    fn restore_finished(&self, route: &FileRoute, step: usize, phase: Phase, reason: String) {
        let run = Run {
            phase,
            step,
            fingerprint: fingerprint(route),
            epoch: self.rollouts.next_epoch(),
            window: Window::default(),
            judged: 0,
            last: None,
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
}
