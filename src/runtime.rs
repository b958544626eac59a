//! The snapshot and its swap.
//!
//! A [`Runtime`] is everything the request path needs, compiled from one config file:
//! the route table with its splits, the upstream pools, the metric handles. It is
//! immutable and lives behind one `ArcSwap` in [`Shared`], so a weight change or a reload
//! is a single pointer swap: the next request sees the whole new table, in-flight
//! requests finish with the snapshot they started with, and nothing is half-applied.
//! State that must survive a swap (pooled connections, in-flight counts) lives in the
//! long-lived objects the snapshot points to (see [`crate::upstream::UpstreamRegistry`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::access_log::AccessLog;
use crate::compile::compile;
use crate::config::{self, ConfigErrors, FileConfig};
use crate::control::AdminWeights;
use crate::routing::RESOLUTION;
pub use crate::snapshot::Runtime;
use crate::telemetry::Telemetry;
use crate::upstream::{Resolver, SystemResolver, UpstreamRegistry};

/// The state snapshot builders own.
pub(crate) struct Writer {
    pub(crate) registry: UpstreamRegistry,
    pub(crate) admin: AdminWeights,
}

/// What the proxy, the admin listener and the reloader share for the process's life.
pub struct Shared {
    runtime: ArcSwap<Runtime>,
    pub telemetry: Telemetry,
    pub access_log: AccessLog,
    /// The config file reloads read; `None` for configs given in memory (demo, tests).
    pub config_path: Option<PathBuf>,
    /// Everything that builds snapshots: one writer at a time (file reloads, SIGHUP and
    /// admin changes are serialized here; the request path never touches it).
    pub(crate) writer: tokio::sync::Mutex<Writer>,
    generation: AtomicU64,
    draining: AtomicBool,
    last_reload_error: Mutex<Option<String>>,
    /// Each route's rollout, driven off the request path.
    pub(crate) rollouts: crate::rollout::Rollouts,
    /// Mirror slots, kept across snapshots (a swap does not reset the bound).
    mirror_slots: crate::mirror::SlotRegistry,
}

impl Shared {
    /// Compile the first snapshot.
    pub async fn new(cfg: FileConfig, config_path: Option<PathBuf>) -> Arc<Shared> {
        Self::with_resolver(cfg, config_path, Arc::new(SystemResolver)).await
    }

    /// Like [`Shared::new`], resolving hostname endpoints with `resolver`.
    pub async fn with_resolver(
        cfg: FileConfig,
        config_path: Option<PathBuf>,
        resolver: Arc<dyn Resolver>,
    ) -> Arc<Shared> {
        let telemetry = Telemetry::new();
        let workers = crate::workers::count(cfg.server.workers);
        let mut registry = UpstreamRegistry::new(resolver, workers, cfg.server.limits.max_header_bytes);
        let mut admin = cfg.admin.state_file.as_deref().map(AdminWeights::load).unwrap_or_default();
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
        let mirror_slots = crate::mirror::SlotRegistry::default();
        let runtime = compile(cfg, 1, &telemetry, &mut registry, &admin, &mirror_slots).await;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            telemetry,
            access_log: AccessLog::new(),
            config_path,
            writer: tokio::sync::Mutex::new(Writer { registry, admin }),
            generation: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            last_reload_error: Mutex::new(None),
            rollouts: Default::default(),
            mirror_slots,
        });
        {
            let mut writer = shared.writer.lock().await;
            let rt = shared.runtime();
            shared.reconcile_rollouts(&mut writer, &rt.file).await;
        }
        shared.publish_gauges(None);
        shared
    }

    /// The live snapshot, for one request's whole life.
    #[inline]
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Re-read the config file, compile it beside the live snapshot, and swap it in.
    /// On any error the live snapshot keeps serving and the errors are returned.
    pub async fn reload(self: &Arc<Self>) -> Result<u64, ConfigErrors> {
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
    pub async fn apply(self: &Arc<Self>, cfg: FileConfig) -> u64 {
        // Look names up before taking the writer lock: slow DNS must not hold up admin
        // changes.
        let resolver = self.writer.lock().await.registry.resolver();
        let answers = crate::upstream::dns::lookup_all(&*resolver, &cfg.upstreams).await;
        let mut writer = self.writer.lock().await;
        writer.registry.apply_dns(answers);
        let old = self.runtime();
        warn_static_changes(&old.file, &cfg);
        let dropped = writer.admin.prune(&cfg);
        for route in &dropped {
            tracing::info!(route, "the reloaded file changed this route: its admin weight changes no longer apply");
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let Writer { registry, admin } = &mut *writer;
        let runtime = compile(cfg, generation, &self.telemetry, registry, admin, &self.mirror_slots).await;
        if !dropped.is_empty() {
            // Durable before visible, as for every writer of the state file.
            self.persist_to(runtime.file.admin.state_file.as_deref(), &writer.admin).await;
        }
        self.install(runtime, &old);
        let live = self.runtime();
        self.reconcile_rollouts(&mut writer, &live.file).await;
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
        let answers = crate::upstream::dns::lookup_all(&*resolver, &self.runtime().file.upstreams).await;
        let mut writer = self.writer.lock().await;
        let old = self.runtime();
        if !writer.registry.apply_dns(answers) {
            return;
        }
        let Writer { registry, admin } = &mut *writer;
        let upstreams = registry.build(&old.file.upstreams, &self.telemetry);
        let table = crate::compile::compile_table(&old.file, &upstreams, &self.telemetry, admin, &self.mirror_slots);
        self.install(Runtime::with_table(&old, table, upstreams), &old);
    }

    /// The mirror slots every snapshot's mirrors take from.
    pub(crate) fn mirror_slots(&self) -> &crate::mirror::SlotRegistry {
        &self.mirror_slots
    }

    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error.lock().expect("not poisoned").clone()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Swap a new snapshot in (the caller holds the writer lock).
    pub(crate) fn install(&self, runtime: Runtime, old: &Runtime) {
        self.runtime.store(Arc::new(runtime));
        self.publish_gauges(Some(old));
    }

    /// Save admin weights to the state file, if one is configured. A failure is logged:
    /// the change is live either way, and refusing a cutover because a disk is full
    /// would be worse than not persisting it.
    pub(crate) async fn persist(&self, admin: &AdminWeights) -> Option<String> {
        let path = self.runtime().file.admin.state_file.clone();
        self.persist_to(path.as_deref(), admin).await
    }

    /// [`Shared::persist`] to the state file a snapshot not yet live names. The write
    /// and fsync run on the blocking pool: a slow or hung disk (or a FIFO) must not stall
    /// the runtime that serves the admin API, reloads and health checks, nor, on a
    /// multi-thread runtime, the worker whose turn it is to drive timers and sockets.
    /// The caller still waits for it (durable before visible).
    pub(crate) async fn persist_to(&self, path: Option<&std::path::Path>, admin: &AdminWeights) -> Option<String> {
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
    fn publish_gauges(&self, old: Option<&Runtime>) {
        let rt = self.runtime();
        let mut live = std::collections::HashSet::new();
        for route in rt.table.routes() {
            self.telemetry.rollout_step(&route.name).set(self.rollouts.step_gauge(&route.name));
            for b in route.backends.iter() {
                b.metrics.share.set(f64::from(b.share) / f64::from(RESOLUTION));
                live.insert((route.name.clone(), b.upstream.name.clone()));
            }
        }
        if let Some(old) = old {
            for route in old.table.routes() {
                for b in route.backends.iter() {
                    if !live.contains(&(route.name.clone(), b.upstream.name.clone())) {
                        b.metrics.share.set(0.0);
                    }
                }
            }
        }
        self.telemetry.generation.set(rt.generation as f64);
    }
}

/// Re-resolve hostname endpoints while `shared` lives. Runs every `dns_refresh` (the
/// shortest configured among upstreams that have hostnames).
pub async fn dns_refresh_loop(shared: Weak<Shared>) {
    loop {
        let period = {
            let Some(s) = shared.upgrade() else { return };
            let rt = s.runtime();
            rt.file
                .upstreams
                .iter()
                .filter(|u| u.endpoints.iter().any(|e| e.host.parse::<IpAddr>().is_err()))
                .map(|u| u.dns_refresh)
                .min()
        };
        tokio::time::sleep(period.unwrap_or(Duration::from_secs(5))).await;
        if period.is_none() {
            continue;
        }
        let Some(s) = shared.upgrade() else { return };
        s.refresh_dns().await;
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

/// Settings bound at start (sockets, threads) cannot change in a running process.
fn warn_static_changes(old: &FileConfig, new: &FileConfig) {
    let tls_listen = |c: &FileConfig| c.server.tls.iter().map(|l| l.listen).collect::<Vec<_>>();
    if old.server.listen != new.server.listen
        || old.server.workers != new.server.workers
        || tls_listen(old) != tls_listen(new)
    {
        tracing::warn!(
            "[server] listen/workers/tls listen changed: they take effect at the next restart; until then a TLS listener whose entry moved keeps the certificates it started with"
        );
    }
    if old.admin != new.admin {
        tracing::warn!("[admin] changed: it takes effect at the next restart");
    }
}
