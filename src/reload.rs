//! Live reloads: watch the config file's directory, debounce, and reload; SIGHUP does the
//! same. A file that fails validation changes nothing (see [`Shared::reload`]).
//!
//! The directory is watched rather than the file because editors save by writing a new
//! file and renaming it over the old one, `mv` replaces the inode, and Kubernetes
//! ConfigMaps swap a `..data` symlink: a watch on the file itself would miss all three.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::runtime::Shared;

/// Quiet time after the last file event before reloading: editors and `kubectl` produce
/// bursts of events for one logical change.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A registered watch on the config file plus the SIGHUP handler. Created when the
/// server binds, so a change made right after startup is not missed; [`Reloader::run`]
/// does the reloading.
pub struct Reloader {
    shared: Arc<Shared>,
    _watcher: Option<notify::RecommendedWatcher>,
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

impl Reloader {
    pub fn new(shared: Arc<Shared>) -> Reloader {
        let path = shared.config_path.clone().expect("reloads need a config file");
        let (tx, rx) = mpsc::channel::<()>(1);
        let watcher = match watch(&path, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot watch the config file; reload with SIGHUP instead");
                None
            }
        };
        Reloader { shared, _watcher: watcher, tx, rx }
    }

    /// Reload on every debounced burst of file events or SIGHUP, until aborted.
    pub fn spawn(self) -> JoinHandle<()> {
        let Reloader { shared, _watcher, tx, mut rx } = self;
        tokio::spawn(async move {
            let _watcher = _watcher;
            let sighup = tokio::spawn(forward_sighup(tx));
            while rx.recv().await.is_some() {
                // Debounce: wait until events stop arriving for DEBOUNCE.
                loop {
                    tokio::time::sleep(DEBOUNCE).await;
                    if rx.try_recv().is_err() {
                        break;
                    }
                }
                let _ = shared.reload().await;
            }
            sighup.abort();
        })
    }
}

async fn forward_sighup(tx: mpsc::Sender<()>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading config");
        let _ = tx.try_send(());
    }
}

fn watch(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the file ourselves produces access events: ignore them, or every
        // reload would trigger the next.
        if !matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any) {
            return;
        }
        let relevant = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|f| f == name.as_os_str() || f.to_string_lossy().starts_with("..")));
        if relevant {
            // A full channel already means "reload pending".
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
