//! The Controller in a fleet: the fleet's state is loaded before the first snapshot,
//! followed through etcd's watch (each batch of changes is one snapshot swap), and
//! every change by hand or by the decider is a compare-and-swap write to etcd before it
//! goes live here. The writer lock is never held while waiting for etcd to answer
//! anything but our own write, so an outage stalls no reload and no request.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Controller, Writer};
use crate::cluster::{Fleet, FleetError, Loaded, Update};
use crate::config::{FileCluster, FileConfig};
use crate::control::{AdminWeights, ControlError, RouteState};

/// Every route's state in etcd, with its key's mod revision.
pub type FleetRoutes = BTreeMap<String, (RouteState, i64)>;

/// The admin state the fleet's entries make (before the file prunes what it does not
/// match).
pub(crate) fn admin_from(routes: &FleetRoutes) -> AdminWeights {
    let mut admin = AdminWeights::default();
    for (name, (state, _)) in routes {
        admin.set_route_state(name, state.clone());
    }
    admin
}

/// Connect and load the fleet's state, retrying until etcd answers: a replica does
/// not serve (and so is not ready) before it has the fleet's state.
pub(crate) async fn join(cluster: &FileCluster, cfg: &FileConfig) -> (Arc<Fleet>, Loaded) {
    if cfg.admin.state_file.is_some() {
        tracing::warn!("[admin] state_file is ignored with [cluster]: the fleet's state lives in etcd");
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let fleet = Fleet::connect(cluster, cfg.admin.listen.to_string()).await?;
            let loaded = fleet.load().await?;
            Ok::<_, FleetError>((Arc::new(fleet), loaded))
        };
        match attempt.await {
            Ok((fleet, loaded)) => {
                fleet.set_connected_after_load();
                tracing::info!(
                    member = %cluster.name,
                    revision = loaded.revision,
                    routes = loaded.routes.len(),
                    "loaded the fleet's state"
                );
                return (fleet, loaded);
            }
            Err(e) => {
                tracing::warn!(etcd = ?cluster.etcd, error = %e, "cannot load the fleet's state yet; not serving until it is loaded")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

impl Controller {
    /// The fleet this replica is in, if any.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// Apply what the fleet's watch delivered: one snapshot swap for the whole batch.
    pub async fn apply_fleet(&self, update: Update) {
        let Some(fleet) = &self.fleet else { return };
        let mut writer = self.writer.lock().await;
        // The routes this update brings news of (a resync: all of them).
        let mut news: Vec<String> = Vec::new();
        let revision = match update {
            Update::Changes { revision, routes } => {
                for (name, state, mod_rev) in routes {
                    news.push(name.clone());
                    // Our own write went live when it was made; older news never
                    // overwrites newer.
                    if writer.fleet_routes.get(&name).is_some_and(|(_, seen)| *seen >= mod_rev) {
                        continue;
                    }
                    match state {
                        Some(state) => writer.fleet_routes.insert(name, (state, mod_rev)),
                        // A deleted key compares as revision 0 in the next CAS.
                        None => writer.fleet_routes.remove(&name),
                    };
                }
                revision
            }
            Update::Resync(loaded) => {
                // Keep only what we wrote after etcd was read: the rest is as etcd says
                // (a route whose key was deleted meanwhile is reset).
                let newer_here: Vec<_> = writer
                    .fleet_routes
                    .iter()
                    .filter(|(_, (_, rev))| *rev > loaded.read_at)
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                writer.fleet_routes = loaded.routes;
                writer.fleet_routes.extend(newer_here);
                news.extend(writer.fleet_routes.keys().cloned());
                loaded.revision
            }
        };
        let file = self.file();
        let mut admin = admin_from(&writer.fleet_routes);
        for route in admin.prune(&file) {
            // Said once per change of the entry, not on every later batch.
            if news.contains(&route) {
                tracing::warn!(route, "the fleet changed a route this replica's config file defines differently: ignored here until the files agree");
            }
        }
        let changed = writer.admin.changed_routes(&admin);
        if !changed.is_empty() {
            writer.admin = admin;
            self.swap_table(&writer.admin);
            if let Some(rollouts) = self.hook() {
                rollouts.fleet_applied(&mut writer, changed.clone()).await;
            }
            tracing::info!(revision, routes = ?changed, "applied the fleet's state");
        }
        drop(writer);
        fleet.set_applied(revision);
        self.publish_fleet_gauges();
    }

    /// Make `admin` (the writer's admin with `route` changed) live: with a fleet, write
    /// `route`'s entry to etcd first (compare-and-swap on the revision this replica
    /// last saw; `fenced`: also only while we are the decider), and nothing changes
    /// here when etcd refuses. Without one, persist to the state file, then swap.
    pub async fn commit(
        &self,
        writer: &mut Writer,
        admin: AdminWeights,
        route: &str,
        fenced: bool,
    ) -> Result<Option<String>, ControlError> {
        let warning = match &self.fleet {
            None => self.persist(&admin).await,
            Some(fleet) => {
                let state = admin.route_state(route);
                let seen = writer.fleet_routes.get(route).map_or(0, |(_, rev)| *rev);
                match fleet.write(route, &state, seen, fenced).await {
                    Ok(revision) => {
                        writer.fleet_routes.insert(route.to_string(), (state, revision));
                        None
                    }
                    Err(e) => {
                        self.publish_fleet_gauges();
                        return Err(match e {
                            FleetError::Conflict => ControlError::Conflict(e.to_string()),
                            e => ControlError::Unavailable(e.to_string()),
                        });
                    }
                }
            }
        };
        self.swap_table(&admin);
        writer.admin = admin;
        Ok(warning)
    }

    /// A hand change would overwrite the whole route entry, rollout included: refuse it
    /// while the fleet's rollout of the route is active, even when this replica's file
    /// defines the route differently and so does not follow that rollout itself.
    pub(crate) fn refuse_during_fleet_rollout(&self, writer: &Writer, route: &str) -> Result<(), ControlError> {
        let active = writer.fleet_routes.get(route).and_then(|(state, _)| state.rollout.as_ref()).map(|r| r.phase);
        match active {
            Some(phase) if self.fleet.is_some() && phase.is_active() => Err(ControlError::Conflict(format!(
                "the fleet's rollout of {route:?} is {}: abort it before changing weights by hand",
                phase.as_str()
            ))),
            _ => Ok(()),
        }
    }

    /// Refuse a fleet-changing call up front while etcd is unreachable.
    pub fn check_fleet_reachable(&self) -> Result<(), ControlError> {
        match &self.fleet {
            Some(fleet) if !fleet.is_connected() => Err(ControlError::Unavailable(
                "etcd is unreachable: the fleet's state cannot change now (this replica keeps serving the last state it applied)".into(),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn publish_fleet_gauges(&self) {
        if let (Some(fleet), Some((connected, revision))) = (&self.fleet, &self.fleet_gauges) {
            connected.set(if fleet.is_connected() { 1.0 } else { 0.0 });
            revision.set(fleet.applied() as f64);
        }
    }

    /// The mod revision of `route`'s fleet entry as this replica last saw it.
    pub async fn fleet_revision_of(&self, route: &str) -> i64 {
        self.writer.lock().await.fleet_routes.get(route).map_or(0, |(_, rev)| *rev)
    }
}

/// Follow the fleet's state while the controller lives, and keep the connection gauge
/// current.
pub async fn follow_fleet(controller: Weak<Controller>) {
    let Some(fleet) = controller.upgrade().and_then(|c| c.fleet.clone()) else { return };
    let mut updates = fleet.follow(fleet.read_at());
    let mut connected = fleet.connected();
    loop {
        tokio::select! {
            update = updates.recv() => {
                let Some(update) = update else { return };
                let Some(c) = controller.upgrade() else { return };
                c.apply_fleet(update).await;
            }
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(c) = controller.upgrade() else { return };
                c.publish_fleet_gauges();
            }
        }
    }
}
