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

/// Start the file watcher and the SIGHUP handler; abort the handle to stop both.
pub fn spawn(shared: Arc<Shared>) -> JoinHandle<()> {
    let path = shared
        .config_path
        .clone()
        .expect("reloads need a config file");
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let _watcher = match watch(&path, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot watch the config file; reload with SIGHUP or the admin API");
                None
            }
        };
        tokio::spawn(forward_sighup(tx));
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
    })
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
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the file ourselves produces access events: ignore them, or every
        // reload would trigger the next.
        if !matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
        ) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|f| f == name.as_os_str() || f.to_string_lossy().starts_with(".."))
        });
        if relevant {
            // A full channel already means "reload pending".
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
