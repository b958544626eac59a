//! The [`Controller`]: the one writer of snapshots. Everything that builds a snapshot
//! takes its lock, so reloads, admin changes, DNS changes and rollout steps are
//! serialized, and each ends in one swap of the [`Store`]. Durable before visible: a
//! change to admin weights reaches the state file before its snapshot goes live.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::fleet::{admin_from, FleetRoutes};
use super::RolloutHook;
use crate::cluster::Fleet;
use crate::config::{self, ConfigErrors, FileConfig};
use crate::control::{AdminWeights, Phase};
use crate::mirror::SlotRegistry;
use crate::routing::RESOLUTION;
use crate::snapshot::{compile, compile_table, Bound, Runtime, Store};
use crate::telemetry::Telemetry;
use crate::upstream::{Resolver, UpstreamRegistry};

/// A file and the generation compiled from it.
struct Source {
    generation: u64,
    file: Arc<FileConfig>,
}

/// What only the lock holder touches.
pub struct Writer {
    pub(crate) registry: UpstreamRegistry,
    /// The runtime weights and rollout progress compiled into snapshots (with a fleet:
    /// the fleet's state minus entries this replica's file does not match).
    pub(crate) admin: AdminWeights,
    /// With `[cluster]`: every route's state as etcd holds it, with its key's mod
    /// revision (what a compare-and-swap compares).
    pub(crate) fleet_routes: FleetRoutes,
}

pub struct Controller {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    /// The config file reloads read; `None` for configs given in memory (demo, tests).
    config_path: Option<PathBuf>,
    pub(crate) writer: tokio::sync::Mutex<Writer>,
    /// The file the live generation was compiled from, for the control plane (status,
    /// rollouts, DNS), tagged with that generation; the request path reads the typed
    /// snapshot instead.
    file: ArcSwap<Source>,
    generation: AtomicU64,
    last_reload_error: Mutex<Option<String>>,
    /// Mirror slots, kept across snapshots (a swap does not reset the bound).
    mirror_slots: SlotRegistry,
    rollouts: OnceLock<Weak<dyn RolloutHook>>,
    /// What the process bound at start (a reload that changes it waits for a restart).
    bound: Bound,
    /// Signalled by health tasks when version groups change.
    regroup: Arc<tokio::sync::Notify>,
    /// With `[cluster]`: the fleet whose state this controller applies.
    pub(crate) fleet: Option<Arc<Fleet>>,
    /// `switchyard_cluster_connected` and `switchyard_cluster_revision`, with a fleet.
    pub(crate) fleet_gauges: Option<(metrics::Gauge, metrics::Gauge)>,
}

impl Controller {
    /// Restore the state file, look up hostnames, compile the first snapshot.
    pub async fn start(
        cfg: FileConfig,
        config_path: Option<PathBuf>,
        resolver: Arc<dyn Resolver>,
        telemetry: Arc<Telemetry>,
    ) -> Controller {
        let workers = crate::workers::count(cfg.server.workers);
        let mut registry = UpstreamRegistry::new(resolver, workers, cfg.server.limits.max_header_bytes);
        let fleet = match &cfg.cluster {
            Some(cluster) => Some(super::fleet::join(cluster, &cfg).await),
            None => None,
        };
        let (mut admin, fleet_routes) = match &fleet {
            Some((_, loaded)) => (admin_from(&loaded.routes), loaded.routes.clone()),
            None => (cfg.admin.state_file.as_deref().map(AdminWeights::load).unwrap_or_default(), FleetRoutes::new()),
        };
        for route in admin.prune(&cfg) {
            tracing::warn!(
                route,
                "the config file changed this route since its admin weights were saved; the file's weights apply"
            );
        }
        if !admin.is_empty() {
            tracing::info!("restored admin weight changes from the state file");
        }
        registry.refresh_dns(&cfg.upstreams).await;
        let mirror_slots = SlotRegistry::default();
        let runtime = compile(&cfg, &admin, &mut registry, &telemetry, &mirror_slots, 1);
        registry.sync_tasks();
        registry.warm_tokens().await;
        let bound = runtime.settings.bound.clone();
        let fleet_gauges = fleet.as_ref().map(|_| telemetry.cluster_gauges());
        let fleet = fleet.map(|(fleet, loaded)| {
            fleet.set_applied(loaded.revision);
            fleet
        });
        let regroup = registry.regroup_signal();
        let controller = Controller {
            regroup,
            bound,
            store: Arc::new(Store::new(runtime)),
            telemetry,
            config_path,
            writer: tokio::sync::Mutex::new(Writer { registry, admin, fleet_routes }),
            file: ArcSwap::from_pointee(Source { generation: 1, file: Arc::new(cfg) }),
            generation: AtomicU64::new(1),
            last_reload_error: Mutex::new(None),
            mirror_slots,
            rollouts: OnceLock::new(),
            fleet,
            fleet_gauges,
        };
        controller.publish_gauges(&controller.store.load(), None);
        controller.publish_fleet_gauges();
        controller
    }

    /// Let the rollout driver above follow every file that goes live, and run it once
    /// for the live one (restoring saved rollouts).
    pub async fn attach(&self, rollouts: Arc<dyn RolloutHook>) {
        assert!(self.rollouts.set(Arc::downgrade(&rollouts)).is_ok(), "one rollout driver per controller");
        let mut writer = self.writer.lock().await;
        rollouts.reconcile(&mut writer, self.file()).await;
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// The file the live snapshot was compiled from.
    pub fn file(&self) -> Arc<FileConfig> {
        self.file.load().file.clone()
    }

    /// The live snapshot and the file it was compiled from, of the same generation
    /// (a reload stores the file just before it swaps the snapshot in: readers outside
    /// the writer lock could otherwise see the new file beside the old snapshot).
    pub fn live(&self) -> (Arc<Runtime>, Arc<FileConfig>) {
        for _ in 0..1000 {
            let rt = self.store.load();
            let source = self.file.load();
            if source.generation == rt.generation {
                return (rt, source.file.clone());
            }
            std::thread::yield_now();
        }
        (self.store.load(), self.file())
    }

    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error.lock().expect("not poisoned").clone()
    }

    pub(crate) fn hook(&self) -> Option<Arc<dyn RolloutHook>> {
        self.rollouts.get().and_then(Weak::upgrade)
    }

    /// Where `route`'s rollout stands (idle when no driver is attached).
    pub fn rollout_phase(&self, route: &str) -> Phase {
        self.rollouts.get().and_then(Weak::upgrade).map_or(Phase::Idle, |r| r.phase(route))
    }

    /// Re-read the config file, compile it beside the live snapshot, and swap it in.
    /// On any error the live snapshot keeps serving and the errors are returned.
    pub async fn reload(&self) -> Result<u64, ConfigErrors> {
        let Some(path) = self.config_path.as_deref() else {
            return Err(no_file());
        };
        match config::load(path) {
            Ok(cfg) => Ok(self.apply(cfg).await),
            Err(errors) => {
                self.telemetry.reloads_error.increment(1);
                tracing::error!(path = %path.display(), "config reload rejected; the previous config keeps serving:\n{errors}");
                *self.last_reload_error.lock().expect("not poisoned") = Some(errors.to_string());
                Err(errors)
            }
        }
    }

    /// Compile and swap in a validated config; returns the new generation.
    pub async fn apply(&self, cfg: FileConfig) -> u64 {
        // Look names up before taking the writer lock: slow DNS must not hold up admin
        // changes.
        let resolver = self.writer.lock().await.registry.resolver();
        let answers = crate::upstream::dns::lookup_all(&*resolver, &cfg.upstreams).await;
        let mut writer = self.writer.lock().await;
        writer.registry.apply_dns(answers);
        if self.fleet.is_some() {
            // The fleet's entries, not what the last file kept of them: a route this
            // file matches again takes the fleet's weights again.
            writer.admin = admin_from(&writer.fleet_routes);
        }
        let dropped = writer.admin.prune(&cfg);
        for route in &dropped {
            tracing::info!(route, "the reloaded file changed this route: its admin weight changes no longer apply");
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let Writer { registry, admin, .. } = &mut *writer;
        let runtime = compile(&cfg, admin, registry, &self.telemetry, &self.mirror_slots, generation);
        let live = self.store.load();
        let waiting = self.bound.restart_only_changes(&runtime.settings.bound);
        if !waiting.is_empty() {
            let tls = if waiting.contains(&"server.tls listen") {
                "; until then a TLS listener whose entry moved keeps the certificates it started with"
            } else {
                ""
            };
            tracing::warn!(changed = %waiting.join(", "), "these settings are bound at start: they take effect at the next restart{tls}");
        }
        if live.settings.state_file != runtime.settings.state_file {
            tracing::info!(
                from = ?live.settings.state_file,
                to = ?runtime.settings.state_file,
                "admin.state_file changed: later changes are saved to the new file; nothing is restored from it until a restart"
            );
        }
        if !dropped.is_empty() {
            // Durable before visible, as for every writer of the state file.
            self.persist_to(runtime.settings.state_file.as_deref(), &writer.admin).await;
        }
        // Tasks first, and a new audience's first ID token, so the snapshot never goes
        // live without one (bounded by one fetch timeout).
        writer.registry.sync_tasks();
        writer.registry.warm_tokens().await;
        let cfg = Arc::new(cfg);
        self.file.store(Arc::new(Source { generation, file: cfg.clone() }));
        self.install(runtime);
        if let Some(rollouts) = self.rollouts.get().and_then(Weak::upgrade) {
            rollouts.reconcile(&mut writer, cfg).await;
        }
        drop(writer);
        self.telemetry.reloads_ok.increment(1);
        *self.last_reload_error.lock().expect("not poisoned") = None;
        tracing::info!(generation, "config reloaded");
        generation
    }

    /// Re-resolve hostname endpoints; when any address changed, swap in a snapshot with
    /// the new endpoint sets (same config, same generation).
    pub async fn refresh_dns(&self) {
        let resolver = self.writer.lock().await.registry.resolver();
        let answers = crate::upstream::dns::lookup_all(&*resolver, &self.file().upstreams).await;
        let mut writer = self.writer.lock().await;
        if !writer.registry.apply_dns(answers) {
            return;
        }
        let old = self.store.load();
        let file = self.file();
        let Writer { registry, admin, .. } = &mut *writer;
        let upstreams = registry.build(&file.upstreams, &self.telemetry);
        let table = compile_table(&file, &upstreams, &self.telemetry, admin, &self.mirror_slots);
        self.install(Runtime::with_table(&old, table, upstreams));
        registry.sync_tasks();
    }

    /// Recompile the route table so version groups follow what health checks saw (an
    /// endpoint changed version, or one of a grouped upstream changed health).
    pub async fn regroup(&self) {
        let writer = self.writer.lock().await;
        self.swap_table(&writer.admin);
    }

    /// Recompile the live snapshot's route table under `admin` (same upstreams, same
    /// settings, same generation) and swap it in. The caller holds the writer lock.
    pub(crate) fn swap_table(&self, admin: &AdminWeights) {
        let old = self.store.load();
        let table = compile_table(&self.file(), &old.upstreams, &self.telemetry, admin, &self.mirror_slots);
        self.install(Runtime::with_table(&old, table, old.upstreams.clone()));
    }

    /// Swap a new snapshot in (the caller holds the writer lock).
    fn install(&self, runtime: Runtime) {
        let old = self.store.swap(runtime);
        self.publish_gauges(&self.store.load(), Some(&old));
    }

    /// Save admin weights to the state file, if one is configured. A failure is logged:
    /// the change is live either way, and refusing a cutover because a disk is full
    /// would be worse than not persisting it.
    pub(crate) async fn persist(&self, admin: &AdminWeights) -> Option<String> {
        let path = self.store.load().settings.state_file.clone();
        self.persist_to(path.as_deref(), admin).await
    }

    /// [`Controller::persist`] to the state file a snapshot not yet live names. The
    /// write and fsync run on the blocking pool: a slow or hung disk (or a FIFO) must
    /// not stall the runtime that serves the admin API, reloads and health checks, nor,
    /// on a multi-thread runtime, the worker whose turn it is to drive timers and
    /// sockets. The caller still waits for it (durable before visible).
    async fn persist_to(&self, path: Option<&Path>, admin: &AdminWeights) -> Option<String> {
        if self.fleet.is_some() {
            // A fleet's state lives in etcd: the state file is neither read nor written.
            return None;
        }
        let path = path?.to_path_buf();
        let state = admin.clone();
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || state.save(&target))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match written {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot write the state file; the change is live but will not survive a restart");
                Some(format!("state file not written: {e}"))
            }
        }
    }

    /// Shares and generation are gauges set when a snapshot goes live, not per request.
    /// New values are set first and only backends that disappeared are zeroed, so a
    /// scrape never sees a live backend at 0.
    fn publish_gauges(&self, rt: &Runtime, old: Option<&Runtime>) {
        // Every backend and version group, by its metric handles: a group's handles
        // are shared with the backend of the same version.
        fn targets(rt: &Runtime) -> impl Iterator<Item = (&Arc<crate::telemetry::BackendMetrics>, u32)> {
            rt.table.routes().iter().flat_map(|route| {
                route.backends.iter().flat_map(|b| match b.groups.is_empty() {
                    true => vec![(&b.metrics, b.share)],
                    false => b.groups.iter().map(|g| (&g.metrics, g.share)).collect(),
                })
            })
        }
        let mut live = HashSet::new();
        for (metrics, share) in targets(rt) {
            metrics.share.set(f64::from(share) / f64::from(RESOLUTION));
            live.insert(Arc::as_ptr(metrics));
        }
        for (metrics, _) in old.into_iter().flat_map(targets) {
            if !live.contains(&Arc::as_ptr(metrics)) {
                metrics.share.set(0.0);
            }
        }
        self.telemetry.generation.set(rt.generation as f64);
    }
}

/// Recompile version groups whenever a health task signals a change, while the
/// controller lives (one snapshot swap per signal; signals coalesce).
pub async fn regroup_loop(controller: Weak<Controller>) {
    let Some(signal) = controller.upgrade().map(|c| c.regroup.clone()) else { return };
    loop {
        signal.notified().await;
        let Some(c) = controller.upgrade() else { return };
        c.regroup().await;
    }
}

/// Re-resolve hostname endpoints while the controller lives. Runs every `dns_refresh`
/// (the shortest configured among upstreams that have hostnames).
pub async fn dns_refresh_loop(controller: Weak<Controller>) {
    loop {
        let period = {
            let Some(c) = controller.upgrade() else { return };
            let file = c.file();
            file.upstreams
                .iter()
                .filter(|u| u.endpoints.iter().any(|e| e.host.parse::<IpAddr>().is_err()))
                .map(|u| u.dns_refresh)
                .min()
        };
        tokio::time::sleep(period.unwrap_or(Duration::from_secs(5))).await;
        if period.is_none() {
            continue;
        }
        let Some(c) = controller.upgrade() else { return };
        c.refresh_dns().await;
    }
}

fn no_file() -> ConfigErrors {
    ConfigErrors(vec![config::ConfigError {
        file: Path::new("-").to_path_buf(),
        line: 1,
        col: 1,
        field: String::new(),
        message: "this instance was started without a config file; nothing to reload".into(),
    }])
}
