//! Weight changes by hand (admin API, `switchyard ctl`): set some backends' weights,
//! promote one backend, roll back to the file's weights. Each is checked against the
//! compiled route, persisted, then swapped in as one snapshot.

use std::collections::BTreeMap;

use super::Controller;
use crate::config::{FileConfig, FileRoute};
use crate::control::{Applied, ControlError};
use crate::snapshot::Runtime;

impl Controller {
    /// Set some of a route's backend weights; the others keep theirs. One snapshot swap.
    pub async fn set_weights(&self, route: &str, changes: &BTreeMap<String, f64>) -> Result<Applied, ControlError> {
        self.check_fleet_reachable()?;
        let mut writer = self.writer.lock().await;
        let old = self.store().load();
        let file = self.file();
        let file_route = file_route(&file, &old, route).ok_or_else(|| ControlError::UnknownRoute(route.into()))?;
        self.refuse_during_rollout(route)?;
        self.refuse_during_fleet_rollout(&writer, route)?;
        let compiled = old.route(route).expect("compiled from the same file");
        for (name, w) in changes {
            if !compiled.backends.iter().any(|b| &*b.upstream.name == name) {
                let known: Vec<&str> = compiled.backends.iter().map(|b| &*b.upstream.name).collect();
                return Err(ControlError::Invalid(format!(
                    "unknown upstream {name:?} for route {route:?} (its backends: {})",
                    known.join(", ")
                )));
            }
            if !w.is_finite() || *w < 0.0 {
                return Err(ControlError::Invalid(format!(
                    "invalid weight {w} for {name:?}: weights are finite and >= 0"
                )));
            }
        }
        let total: f64 =
            compiled.backends.iter().map(|b| changes.get(&*b.upstream.name).copied().unwrap_or(b.weight)).sum();
        if total <= 0.0 {
            return Err(ControlError::Invalid(format!("every weight of route {route:?} would be 0")));
        }
        let mut admin = writer.admin.clone();
        admin.set(file_route, changes);
        // Durable before visible: a crash after the swap must not restore older weights.
        let warning = self.commit(&mut writer, admin, route, false).await?;
        tracing::info!(route, ?changes, "admin weight change applied");
        Ok(Applied { warning })
    }

    /// Give one backend 100 and every other 0, in one swap.
    pub async fn promote(&self, route: &str, upstream: &str) -> Result<Applied, ControlError> {
        let rt = self.store().load();
        let compiled = rt.route(route).ok_or_else(|| ControlError::UnknownRoute(route.into()))?;
        let changes: BTreeMap<String, f64> = compiled
            .backends
            .iter()
            .map(|b| (b.upstream.name.to_string(), if &*b.upstream.name == upstream { 100.0 } else { 0.0 }))
            .collect();
        if !compiled.backends.iter().any(|b| &*b.upstream.name == upstream) {
            // Reuse set_weights' message for unknown upstreams.
            return self.set_weights(route, &BTreeMap::from([(upstream.to_string(), 100.0)])).await;
        }
        self.set_weights(route, &changes).await
    }

    /// Back to the weights the config file gives, in one swap.
    pub async fn rollback(&self, route: &str) -> Result<Applied, ControlError> {
        self.check_fleet_reachable()?;
        let mut writer = self.writer.lock().await;
        if self.store().load().route(route).is_none() {
            return Err(ControlError::UnknownRoute(route.into()));
        }
        self.refuse_during_rollout(route)?;
        self.refuse_during_fleet_rollout(&writer, route)?;
        let mut admin = writer.admin.clone();
        admin.clear(route);
        let warning = self.commit(&mut writer, admin, route, false).await?;
        tracing::info!(route, "rolled back to the config file's weights");
        Ok(Applied { warning })
    }

    /// Weights by hand would fight a running rollout (and skew what it measures).
    fn refuse_during_rollout(&self, route: &str) -> Result<(), ControlError> {
        let phase = self.rollout_phase(route);
        if phase.is_active() {
            return Err(ControlError::Conflict(format!(
                "the rollout of {route:?} is {}: abort it before changing weights by hand",
                phase.as_str()
            )));
        }
        Ok(())
    }
}

/// The file's definition of the route named `name`, found through the compiled table's
/// name index (routes compile in file order). `rt` and `file` can be a generation apart
/// when read without the writer lock (status during a reload): then it searches.
pub fn file_route<'f>(file: &'f FileConfig, rt: &Runtime, name: &str) -> Option<&'f FileRoute> {
    let indexed = rt.table.position(name).and_then(|i| file.routes.get(i)).filter(|r| r.name == name);
    indexed.or_else(|| file.routes.iter().find(|r| r.name == name))
}
