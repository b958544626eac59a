//! The settings of `[server]` and `[admin]`, typed and compiled once per config: what
//! the request path, the listeners and the admin API read from the snapshot (never the
//! raw file).
//!
//! Which apply when is part of the type: everything in [`Settings`] applies to the next
//! request or connection after a reload, except [`Bound`], which is bound when the
//! process starts (sockets, threads, connection and head buffers) and changes only at a
//! restart (the values in `limits` that `Bound` repeats are the bound ones' sources).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use rustls::ServerConfig;

use crate::config::{FileConfig, FileLimits, Secret};
use crate::tls::ServerTls;

#[derive(Debug, Clone)]
pub struct Settings {
    /// `[server.limits]`: what one client may cost.
    pub limits: FileLimits,
    pub request_id_header: HeaderName,
    pub access_log: bool,
    /// How long a shutdown waits for in-flight requests (read when it begins).
    pub drain_timeout: Duration,
    /// `[[server.tls]]` in file order: a listener's certificates reload; its address
    /// is bound (see [`Bound`]).
    pub tls: Vec<TlsListener>,
    /// The admin API's bearer token; checked on each call, so a reload rotates it.
    pub admin_token: Option<Secret>,
    /// Where admin weights and rollout progress are persisted.
    pub state_file: Option<PathBuf>,
    /// Certificate and key files, for the reloader to watch.
    pub watched_files: Vec<PathBuf>,
    pub bound: Bound,
}

/// One TLS listener's address and certificates.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub tls: ServerTls,
}

impl TlsListener {
    pub fn config(&self) -> Arc<ServerConfig> {
        self.tls.config()
    }
}

/// Settings bound at start: a reload that changes them is logged and waits for the next
/// restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub listen: Vec<SocketAddr>,
    /// Request-handling threads; 0 = one per core.
    pub workers: usize,
    pub tls_listen: Vec<SocketAddr>,
    pub admin_listen: SocketAddr,
    /// The connection semaphore is sized once.
    pub max_connections: usize,
    /// hyper's read buffer, the framing tracker and the upstream head limit are sized
    /// once per worker.
    pub max_header_bytes: usize,
    /// The fleet joined at start (etcd, prefix, name, lease).
    pub cluster: Option<crate::config::FileCluster>,
}

impl Settings {
    pub fn compile(cfg: &FileConfig) -> Settings {
        let server = &cfg.server;
        Settings {
            limits: server.limits.clone(),
            request_id_header: server.request_id_header.clone(),
            access_log: server.access_log,
            drain_timeout: server.drain_timeout,
            tls: server.tls.iter().map(|l| TlsListener { listen: l.listen, tls: l.tls.clone() }).collect(),
            admin_token: cfg.admin.token.clone(),
            state_file: cfg.admin.state_file.clone(),
            watched_files: cfg.watched_files(),
            bound: Bound {
                listen: server.listen.clone(),
                workers: server.workers,
                tls_listen: server.tls.iter().map(|l| l.listen).collect(),
                admin_listen: cfg.admin.listen,
                max_connections: server.limits.max_connections,
                max_header_bytes: server.limits.max_header_bytes,
                cluster: cfg.cluster.clone(),
            },
        }
    }
}

impl Bound {
    /// The settings `next` would change, compared with those bound at start: they wait
    /// for a restart.
    pub fn restart_only_changes(&self, next: &Bound) -> Vec<&'static str> {
        let (a, b) = (self, next);
        let mut changed = Vec::new();
        for (name, differs) in [
            ("server.listen", a.listen != b.listen),
            ("server.workers", a.workers != b.workers),
            ("server.tls listen", a.tls_listen != b.tls_listen),
            ("admin.listen", a.admin_listen != b.admin_listen),
            ("server.limits.max_connections", a.max_connections != b.max_connections),
            ("server.limits.max_header_bytes", a.max_header_bytes != b.max_header_bytes),
            ("cluster", a.cluster != b.cluster),
        ] {
            if differs {
                changed.push(name);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        Settings::compile(&crate::config::parse(std::path::Path::new("t.toml"), text).unwrap())
    }

    #[test]
    fn only_bound_settings_wait_for_a_restart() {
        let base = settings("[server]\nlisten = [\"127.0.0.1:8080\"]\n");
        let limits = settings("[server]\nlisten = [\"127.0.0.1:8080\"]\n[server.limits]\nmax_body_bytes = 10\n");
        assert!(base.bound.restart_only_changes(&limits.bound).is_empty());
        assert_eq!(limits.limits.max_body_bytes, 10);
        let moved = settings("[server]\nlisten = [\"127.0.0.1:8081\"]\nworkers = 3\n");
        assert_eq!(base.bound.restart_only_changes(&moved.bound), vec!["server.listen", "server.workers"]);
    }
}
