//! Weight changes made at runtime (admin API, `switchyard ctl`): kept beside the config
//! file, applied on top of it whenever a snapshot is compiled, and persisted to the
//! optional state file.
//!
//! An admin change to a route lasts until `rollback`, or until a reload whose file
//! changes that route: each change remembers a fingerprint of the route as the file
//! defined it, and is dropped when the file's route no longer has that fingerprint. The
//! same rule restores the state file at start: changes for routes edited while the
//! process was down are ignored (the file wins) and logged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{FileConfig, FileRoute};

/// Runtime weight changes per route name (by the admin API or a rollout), and the
/// progress of rollouts: what the state file holds.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminWeights {
    version: u32,
    routes: BTreeMap<String, RouteWeights>,
    /// Where each route's rollout stands (so a restart resumes it).
    #[serde(default)]
    rollouts: BTreeMap<String, SavedRollout>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteWeights {
    /// The route as the config file defined it when the change was made.
    pub fingerprint: String,
    /// Only the backends the admin set; the others keep the file's weight.
    pub weights: BTreeMap<String, f64>,
    /// Set by a rollout (every backend's weight given), not by hand.
    #[serde(default)]
    pub by_rollout: bool,
}

/// Where a rollout stands: part of the state file's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Idle,
    Running,
    Paused,
    Promoted,
    RolledBack,
    Aborted,
}

impl Phase {
    /// Running or paused: the rollout owns the route's weights.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }
}

/// A rollout's progress as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRollout {
    pub fingerprint: String,
    pub phase: Phase,
    pub step: usize,
    pub reason: String,
}

const STATE_VERSION: u32 = 1;

/// One route's runtime state as a fleet stores it (one etcd key per route): its weights
/// and its rollout's progress change together in one compare-and-swap write. Both
/// `None` is a route back on the file's weights (kept as a value, not deleted, so the
/// key's revision history stays one line).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<RouteWeights>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<SavedRollout>,
}

impl AdminWeights {
    /// Read a state file. A missing file is an empty state; a corrupt one is reported
    /// and ignored (never fatal: the config file alone is a safe state to serve).
    pub fn load(path: &Path) -> AdminWeights {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return AdminWeights::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the state file; starting from the config file's weights");
                return AdminWeights::default();
            }
        };
        match serde_json::from_str::<AdminWeights>(&text) {
            Ok(state) if state.version == STATE_VERSION => state,
            Ok(state) => {
                tracing::error!(path = %path.display(), version = state.version, "unknown state file version; ignoring it");
                AdminWeights::default()
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "corrupt state file; ignoring it and starting from the config file's weights");
                AdminWeights::default()
            }
        }
    }

    /// Write atomically: a temporary file beside the target, fsynced, renamed over it,
    /// so a crash leaves either the old state or the new one, never half of one.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut state = self.clone();
        state.version = STATE_VERSION;
        let text = serde_json::to_vec_pretty(&state).map_err(io::Error::other)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    /// The runtime weights that still apply to this route of the file.
    pub fn for_route(&self, route: &FileRoute) -> Option<&RouteWeights> {
        self.routes.get(&route.name).filter(|w| w.fingerprint == fingerprint(route))
    }

    /// Drop changes and rollout progress whose route is gone or was changed by the file;
    /// returns the names of routes whose weight changes were dropped.
    pub fn prune(&mut self, cfg: &FileConfig) -> Vec<String> {
        let current = |name: &str, print: &str| cfg.routes.iter().any(|r| r.name == name && fingerprint(r) == print);
        let mut dropped = Vec::new();
        self.routes.retain(|name, w| {
            let keep = current(name, &w.fingerprint);
            if !keep {
                dropped.push(name.clone());
            }
            keep
        });
        self.rollouts.retain(|name, r| current(name, &r.fingerprint));
        dropped
    }

    /// A rollout sets every backend's weight at once.
    pub fn set_by_rollout(&mut self, route: &FileRoute, weights: BTreeMap<String, f64>) {
        let print = fingerprint(route);
        self.routes.insert(route.name.clone(), RouteWeights { fingerprint: print, weights, by_rollout: true });
    }

    pub fn rollout(&self, route: &FileRoute) -> Option<&SavedRollout> {
        self.rollouts.get(&route.name).filter(|r| r.fingerprint == fingerprint(route))
    }

    pub fn save_rollout(&mut self, route: &FileRoute, phase: Phase, step: usize, reason: &str) {
        let saved = SavedRollout { fingerprint: fingerprint(route), phase, step, reason: reason.to_string() };
        self.rollouts.insert(route.name.clone(), saved);
    }

    /// Set some backends' weights (merging with earlier admin changes to the route).
    pub fn set(&mut self, route: &FileRoute, changes: &BTreeMap<String, f64>) {
        let entry = self.routes.entry(route.name.clone()).or_insert_with(|| RouteWeights {
            fingerprint: fingerprint(route),
            weights: BTreeMap::new(),
            by_rollout: false,
        });
        entry.by_rollout = false;
        entry.weights.extend(changes.iter().map(|(k, v)| (k.clone(), *v)));
    }

    /// Forget admin changes to a route; true if there were any.
    pub fn clear(&mut self, route: &str) -> bool {
        self.routes.remove(route).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.rollouts.is_empty()
    }

    /// `route`'s entry as a fleet stores it.
    pub fn route_state(&self, route: &str) -> RouteState {
        RouteState { weights: self.routes.get(route).cloned(), rollout: self.rollouts.get(route).cloned() }
    }

    /// Replace `route`'s entry with a fleet's.
    pub fn set_route_state(&mut self, route: &str, state: RouteState) {
        match state.weights {
            Some(w) => self.routes.insert(route.to_string(), w),
            None => self.routes.remove(route),
        };
        match state.rollout {
            Some(r) => self.rollouts.insert(route.to_string(), r),
            None => self.rollouts.remove(route),
        };
    }

    /// The routes whose entry differs between `self` and `other`.
    pub fn changed_routes(&self, other: &AdminWeights) -> Vec<String> {
        let names: std::collections::BTreeSet<&String> = self
            .routes
            .keys()
            .chain(self.rollouts.keys())
            .chain(other.routes.keys())
            .chain(other.rollouts.keys())
            .collect();
        names.into_iter().filter(|n| self.route_state(n) != other.route_state(n)).cloned().collect()
    }
}

/// A digest of everything that defines a route in the file (not where it sits in the
/// file: moving lines around is not a change).
pub fn fingerprint(r: &FileRoute) -> String {
    let mut s = String::new();
    let _ =
        write!(s, "{}|{:?}|{}|{:?}|{:?}|{:?}|", r.name, r.hosts, r.path_prefix, r.headers, r.version_header, r.sticky);
    for b in &r.backends {
        let _ = write!(s, "b:{}={}|", b.upstream.get_ref(), b.weight);
    }
    for o in &r.overrides {
        let _ = write!(s, "o:{:?}={:?}->{}|", o.on, o.value, o.upstream.get_ref());
    }
    // A rollout's table defines how the route's weights move; a mirror does not touch
    // weights, so editing it keeps admin changes.
    if let Some(ro) = &r.rollout {
        let _ = write!(
            s,
            "r:{}>{}|{:?}|{:?}|{}|{}|{:?}|{:?}|{}",
            ro.canary.get_ref(),
            ro.baseline.get_ref(),
            ro.steps,
            ro.interval,
            ro.min_requests,
            ro.max_error_rate,
            ro.max_p99,
            ro.max_error_rate_increase,
            ro.auto_start
        );
    }
    format!("{:016x}", xxh3_64(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn cfg(text: &str) -> FileConfig {
        config::parse(Path::new("t.toml"), text).unwrap()
    }

    const BASE: &str = "[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n[upstreams.b]\nendpoints = [\"127.0.0.1:2\"]\n[[routes]]\nname = \"r\"\nbackends = [{ upstream = \"a\", weight = 90 }, { upstream = \"b\", weight = 10 }]\n";

    #[test]
    fn changes_survive_moves_but_not_edits() {
        let c = cfg(BASE);
        let mut w = AdminWeights::default();
        w.set(&c.routes[0], &BTreeMap::from([("b".to_string(), 100.0)]));
        // Same route, shifted down by a comment: still applies.
        let moved = cfg(&format!("# a comment\n\n{BASE}"));
        assert!(w.for_route(&moved.routes[0]).is_some());
        assert!(w.prune(&moved).is_empty());
        // The file changed the route's weights: the admin change is dropped.
        let edited = cfg(&BASE.replace("weight = 10 }", "weight = 20 }"));
        assert!(w.for_route(&edited.routes[0]).is_none());
        assert_eq!(w.prune(&edited), vec!["r".to_string()]);
        assert!(w.is_empty());
    }

    #[test]
    fn state_files_round_trip_and_corruption_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let c = cfg(BASE);
        let mut w = AdminWeights::default();
        w.set(&c.routes[0], &BTreeMap::from([("a".to_string(), 0.0), ("b".to_string(), 100.0)]));
        w.save(&path).unwrap();
        let mut loaded = AdminWeights::load(&path);
        loaded.version = 0;
        w.version = 0;
        assert_eq!(loaded, w);
        std::fs::write(&path, "{ not json").unwrap();
        assert!(AdminWeights::load(&path).is_empty());
        assert!(AdminWeights::load(&dir.path().join("missing.json")).is_empty());
    }
}

/// Why an admin change was refused; each knows its HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error("unknown route {0:?}")]
    UnknownRoute(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The fleet's state cannot be written now (etcd unreachable, or this replica is
    /// not the decider any more).
    #[error("{0}")]
    Unavailable(String),
}

impl ControlError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            ControlError::UnknownRoute(_) => http::StatusCode::NOT_FOUND,
            ControlError::Invalid(_) => http::StatusCode::BAD_REQUEST,
            ControlError::Conflict(_) => http::StatusCode::CONFLICT,
            ControlError::Unavailable(_) => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What a successful change reports besides the new state.
#[derive(Debug, Default)]
pub struct Applied {
    /// Set when the change is live but could not be persisted.
    pub warning: Option<String>,
}
