//! Live reloads: watch the config file's directory (and the directories of the TLS
//! certificate, key and CA files it names), debounce, and reload; SIGHUP does the same.
//! A file that fails validation changes nothing (see [`Controller::reload`]).
//!
//! Directories are watched rather than files because editors save by writing a new
//! file and renaming it over the old one, `mv` replaces the inode, and Kubernetes
//! ConfigMaps and Secrets swap a `..data` symlink: a watch on the file itself would miss
//! all three. A certificate change reloads the whole config, which re-reads every file:
//! one path for every change, and a bad certificate is rejected like any bad config.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::state::Controller;

/// Quiet time after the last file event before reloading: editors and `kubectl` produce
/// bursts of events for one logical change.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A registered watch on the config file plus the SIGHUP handler. Created when the
/// server binds, so a change made right after startup is not missed; [`Reloader::run`]
/// does the reloading.
pub struct Reloader {
    controller: Arc<Controller>,
    watcher: Option<Watch>,
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

impl Reloader {
    pub fn new(controller: Arc<Controller>) -> Reloader {
        let path = controller.config_path().expect("reloads need a config file").to_path_buf();
        let (tx, rx) = mpsc::channel::<()>(1);
        let watcher = match Watch::new(&path, tx.clone()) {
            Ok(mut w) => {
                w.follow(&controller);
                Some(w)
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot watch the config file; reload with SIGHUP instead");
                None
            }
        };
        Reloader { controller, watcher, tx, rx }
    }

    /// Reload on every debounced burst of file events or SIGHUP, until aborted.
    pub fn spawn(self) -> JoinHandle<()> {
        let Reloader { controller, mut watcher, tx, mut rx } = self;
        tokio::spawn(async move {
            let sighup = tokio::spawn(forward_sighup(tx));
            while rx.recv().await.is_some() {
                settle(&mut rx).await;
                let _ = controller.reload().await;
                if let Some(w) = watcher.as_mut() {
                    w.follow(&controller);
                }
            }
            sighup.abort();
        })
    }
}

/// Debounce: after an event, wait until none has arrived for [`DEBOUNCE`].
async fn settle(rx: &mut mpsc::Receiver<()>) {
    loop {
        tokio::time::sleep(DEBOUNCE).await;
        if rx.try_recv().is_err() {
            return;
        }
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

/// The notify watcher and the file names whose changes trigger a reload.
struct Watch {
    watcher: notify::RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    names: Arc<Mutex<HashSet<OsString>>>,
}

impl Watch {
    fn new(config: &Path, tx: mpsc::Sender<()>) -> notify::Result<Watch> {
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let relevant = names.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Reading the files ourselves produces access events: ignore them, or every
            // reload would trigger the next.
            if !matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
            ) {
                return;
            }
            let names = relevant.lock().expect("not poisoned");
            let hit = event.paths.iter().filter_map(|p| p.file_name()).any(|f| {
                // `..data` and friends: a Kubernetes ConfigMap or Secret swap.
                names.contains(f) || f.to_string_lossy().starts_with("..")
            });
            if hit {
                // A full channel already means "reload pending".
                let _ = tx.try_send(());
            }
        })?;
        let mut w = Watch { watcher, dirs: HashSet::new(), names };
        w.add(config)?;
        Ok(w)
    }

    fn add(&mut self, file: &Path) -> notify::Result<()> {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Some(name) = file.file_name() {
            self.names.lock().expect("not poisoned").insert(name.to_os_string());
        }
        if !self.dirs.contains(&dir) {
            self.watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            self.dirs.insert(dir);
        }
        Ok(())
    }

    /// Watch every TLS file the live config names (a reload may have named new ones),
    /// and where a file is a symlink, its target too (a target rewritten in place in
    /// another directory changes nothing in the link's). Files no longer named stay
    /// watched: a spurious reload is harmless.
    fn follow(&mut self, controller: &Controller) {
        for named in controller.store().load().settings.watched_files.iter().cloned() {
            let target = std::fs::canonicalize(&named).ok().filter(|t| *t != named);
            for file in std::iter::once(named).chain(target) {
                self.watch_file(&file);
            }
        }
    }

    fn watch_file(&mut self, file: &Path) {
        if let Err(e) = self.add(file) {
            tracing::warn!(path = %file.display(), error = %e, "cannot watch a TLS file; reload with SIGHUP after changing it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// Events `gap` apart, `count` of them, as the watcher sends them (dropped while one
    /// is pending); returns how long after the first one `settle` let the reload go.
    async fn settled_after(gap: Duration, count: u32) -> Duration {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let first = Instant::now();
        tokio::spawn(async move {
            for _ in 0..count {
                let _ = tx.try_send(());
                tokio::time::sleep(gap).await;
            }
        });
        rx.recv().await.expect("an event");
        settle(&mut rx).await;
        first.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_reloads_once_debounce_after_its_last_event() {
        // Ten events 150 ms apart: the last at 1350 ms, quiet from then on.
        let waited = settled_after(Duration::from_millis(150), 10).await;
        assert!(waited >= Duration::from_millis(1350) + DEBOUNCE, "{waited:?}");
        assert!(waited < Duration::from_millis(1350) + 2 * DEBOUNCE, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_event_reloads_after_one_debounce() {
        assert_eq!(settled_after(Duration::from_secs(60), 1).await, DEBOUNCE);
    }
}
