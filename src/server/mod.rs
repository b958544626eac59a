//! Listeners and connection lifecycle: accept, terminate TLS where configured, serve
//! HTTP/1.1 and HTTP/2 on the same port, and drain gracefully on shutdown.
//!
//! The worker model is nginx's: `workers` threads, each running its own single-threaded
//! tokio runtime with its own `SO_REUSEPORT` listener per address (the kernel spreads
//! connections across them) and its own upstream connection pools. A connection lives
//! and dies on one thread: no work stealing, no cross-thread wake-ups, no contended pool
//! locks. Admin, reloads, health checks and DNS run on the caller's runtime.
//!
//! Callers bind first (so tests can use port 0 and learn the address), then [`Server::run`]
//! with a shutdown future. On shutdown: `/readyz` turns 503, listeners close (new
//! connections are refused), in-flight requests get up to `drain_timeout` to finish, and
//! `run` returns.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::admin;

mod conn;
mod framing;
mod h1;
mod h2_frames;
mod rewind;
mod tls;
mod watched;
pub mod worker;

use crate::app::App;
use crate::reload::Reloader;

pub struct Server {
    app: Arc<App>,
    /// Per worker, one listener per `listen` and `[[server.tls]]` address (all bound
    /// with `SO_REUSEPORT`).
    listeners: Vec<Vec<worker::Listener>>,
    admin: TcpListener,
    reloader: Option<Reloader>,
}

impl Server {
    /// Bind the proxy and admin listeners named in the live config.
    pub async fn bind(app: Arc<App>) -> io::Result<Server> {
        let settings = app.plane.runtime().settings.clone();
        let workers = crate::workers::count(settings.bound.workers);
        let mut listeners: Vec<Vec<worker::Listener>> = (0..workers).map(|_| Vec::new()).collect();
        let plain = settings.bound.listen.iter().map(|addr| (*addr, None));
        let tls =
            settings.tls.iter().enumerate().map(|(index, l)| {
                (l.listen, Some(tls::TlsListener { index, listen: l.listen, bound_with: l.config() }))
            });
        for (addr, tls) in plain.chain(tls) {
            // The first bind picks the port (it may be 0); the others share it.
            let first = bind_reuseport(addr)?;
            let actual = first.local_addr()?;
            for (i, w) in listeners.iter_mut().enumerate() {
                let socket = if i == 0 { first.try_clone()? } else { bind_reuseport(actual)? };
                w.push(worker::Listener { socket, tls: tls.clone() });
            }
        }
        let admin = bind(settings.bound.admin_listen).await?;
        if let Some(fleet) = app.controller.fleet() {
            fleet.set_admin(admin.local_addr()?.to_string());
        }
        let reloader = app.controller.config_path().map(|_| Reloader::new(app.controller.clone()));
        Ok(Server { app, listeners, admin, reloader })
    }

    /// The plain HTTP listeners' addresses, in `listen` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners[0].iter().filter(|l| l.tls.is_none()).filter_map(|l| l.socket.local_addr().ok()).collect()
    }

    /// The TLS listeners' addresses, in `[[server.tls]]` order.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.listeners[0].iter().filter(|l| l.tls.is_some()).filter_map(|l| l.socket.local_addr().ok()).collect()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound")
    }

    /// Serve until `shutdown` resolves, then drain.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { app, listeners, admin, reloader } = self;
        let plane = app.plane.clone();
        plane.access_log.spawn_writer();
        let upkeep = tokio::spawn(upkeep(plane.clone()));
        let history = tokio::spawn(record_history(plane.clone()));
        let dns = tokio::spawn(crate::state::dns_refresh_loop(Arc::downgrade(&app.controller)));
        let regroup = tokio::spawn(crate::state::regroup_loop(Arc::downgrade(&app.controller)));
        let reloader = reloader.map(Reloader::spawn);
        let (admin_stop_tx, admin_stop) = watch::channel(false);
        let admin_task = tokio::spawn(admin::serve(admin, app.clone(), admin_stop));

        for l in &listeners[0] {
            let addr = l.socket.local_addr().expect("bound");
            tracing::info!(%addr, tls = l.tls.is_some(), workers = listeners.len(), "proxy listening");
        }
        let connections = Arc::new(Semaphore::new(plane.runtime().settings.bound.max_connections));
        let (stop_tx, stop) = watch::channel(false);
        let workers: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, ls)| worker::spawn(i + 1, ls, plane.clone(), connections.clone(), stop.clone()))
            .collect();

        shutdown.await;
        let drain_timeout = plane.runtime().settings.drain_timeout;
        tracing::info!(?drain_timeout, "shutting down: no new connections, draining in-flight requests");
        plane.store.start_draining();
        if let Some(fleet) = app.controller.fleet() {
            // Leave at once, so another replica decides now rather than after `ttl`.
            fleet.leave().await;
        }
        let _ = stop_tx.send(true);
        if let Some(r) = reloader {
            r.abort();
        }
        // Workers close their listeners at once and return when drained (or at the timeout).
        let joined = tokio::task::spawn_blocking(move || workers.into_iter().all(|w| w.join().is_ok())).await;
        if !matches!(joined, Ok(true)) {
            tracing::error!("a worker thread panicked");
        }
        let _ = admin_stop_tx.send(true);
        let _ = admin_task.await;
        upkeep.abort();
        history.abort();
        dns.abort();
        regroup.abort();
    }
}

async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// A non-blocking listener with `SO_REUSEPORT`, so each worker can have its own.
fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_reuse_port(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(4096).map_err(fail)?;
    Ok(socket.into())
}

/// Feed the charts' history every interval: each backend's (and version group's)
/// tally, read from the live snapshot.
async fn record_history(plane: Arc<crate::proxy::Plane>) {
    use crate::telemetry::HISTORY_INTERVAL;
    let mut tick = tokio::time::interval(HISTORY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let rt = plane.runtime();
        let now = crate::clock::unix_ms();
        for route in rt.table.routes() {
            for b in route.backends.iter() {
                let targets = if b.groups.is_empty() { std::slice::from_ref(b) } else { &b.groups[..] };
                for t in targets {
                    let counts = t.metrics.tally.snapshot();
                    plane.telemetry.history.record(&route.name, &t.upstream.name, &t.upstream.version, now, counts);
                }
            }
        }
    }
}

async fn upkeep(plane: Arc<crate::proxy::Plane>) {
    let mut tick = tokio::time::interval(crate::telemetry::Telemetry::upkeep_interval());
    loop {
        tick.tick().await;
        plane.telemetry.upkeep();
    }
}
