//! Listeners and connection lifecycle: accept, serve HTTP/1.1 and h2c on the same port,
//! and drain gracefully on shutdown.
//!
//! Callers bind first (so tests can use port 0 and learn the address), then [`Server::run`]
//! with a shutdown future. On shutdown: `/readyz` turns 503, listeners close (new
//! connections are refused), in-flight requests get up to `drain_timeout` to finish, and
//! `run` returns.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::FileLimits;

use crate::admin;
use crate::proxy::{self, ConnInfo};

mod framing;
mod watched;

use crate::reload::Reloader;
use crate::runtime::Shared;
use watched::Watched;
pub use watched::{Activity, Expired};

pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    admin: TcpListener,
    reloader: Option<Reloader>,
}

impl Server {
    /// Bind the proxy and admin listeners named in the live config.
    pub async fn bind(shared: Arc<Shared>) -> io::Result<Server> {
        let file = shared.runtime().file.clone();
        let mut listeners = Vec::new();
        for addr in &file.server.listen {
            listeners.push(bind(*addr).await?);
        }
        let admin = bind(file.admin.listen).await?;
        let reloader = shared.config_path.as_ref().map(|_| Reloader::new(shared.clone()));
        Ok(Server { shared, listeners, admin, reloader })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound")
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serve until `shutdown` resolves, then drain.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { shared, listeners, admin, reloader } = self;
        shared.access_log.spawn_writer();
        let upkeep = tokio::spawn(upkeep(shared.clone()));
        let dns = tokio::spawn(crate::upstream::dns::refresh_loop(Arc::downgrade(&shared)));
        let reloader = reloader.map(Reloader::spawn);
        let (admin_stop_tx, admin_stop) = watch::channel(false);
        let admin_task = tokio::spawn(admin::serve(admin, shared.clone(), admin_stop));

        let graceful = Arc::new(GracefulShutdown::new());
        let connections = Arc::new(Semaphore::new(shared.runtime().file.server.limits.max_connections));
        let (stop_tx, stop) = watch::channel(false);
        let mut accepts = Vec::new();
        for listener in listeners {
            tracing::info!(addr = %listener.local_addr().expect("bound"), "proxy listening");
            accepts.push(tokio::spawn(accept_loop(
                listener,
                shared.clone(),
                graceful.clone(),
                connections.clone(),
                stop.clone(),
            )));
        }

        shutdown.await;
        let drain_timeout = shared.runtime().file.server.drain_timeout;
        tracing::info!(?drain_timeout, "shutting down: no new connections, draining in-flight requests");
        shared.start_draining();
        let _ = stop_tx.send(true);
        for a in accepts {
            let _ = a.await;
        }
        if let Some(r) = reloader {
            r.abort();
        }
        let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| unreachable!("accept loops have ended"));
        match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
            Ok(()) => tracing::info!("drained; all connections closed"),
            Err(_) => tracing::warn!("drain_timeout reached; closing remaining connections"),
        }
        let _ = admin_stop_tx.send(true);
        let _ = admin_task.await;
        upkeep.abort();
        dns.abort();
    }
}

async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = shared.runtime().file.server.limits.clone();
    let builder = Arc::new(connection_builder(&limits));
    loop {
        // At max_connections, stop accepting until a connection closes: new clients
        // wait in the kernel's backlog instead of the process running out of files.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            _ = stop.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve(stream, peer, &shared, &builder, &graceful, permit),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    // Dropping the listener closes the socket: new connections are refused.
}

fn connection_builder(limits: &FileLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Oversized heads get 431 from hyper when its read buffer fills. Slow heads and idle
    // connections are timed by the connection task (see `Activity`), because hyper's
    // header timer also runs while a keep-alive connection is idle.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(limits.max_header_bytes);
    builder.http2().timer(TokioTimer::new());
    builder
}

fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    graceful: &GracefulShutdown,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let limits = shared.runtime().file.server.limits.clone();
    let conn_info = Arc::new(ConnInfo::new(peer, false));
    let activity = conn_info.activity.clone();
    let io = Watched::new(stream, activity.clone(), limits.max_header_bytes);
    let shared = shared.clone();
    let service = service_fn(move |req| proxy::handle(shared.clone(), conn_info.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(io), service).into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        let _permit = permit;
        tokio::pin!(conn);
        loop {
            let (wait, expired) = activity.check(limits.header_read_timeout, limits.idle_timeout);
            if let Some(why) = expired {
                tracing::debug!(%peer, ?why, "closing connection");
                return; // dropping the connection closes it
            }
            tokio::select! {
                result = &mut conn => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep(wait) => {}
                _ = activity.head_started.notified() => {}
            }
        }
    });
}

async fn upkeep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(crate::telemetry::Telemetry::upkeep_interval());
    loop {
        tick.tick().await;
        shared.telemetry.upkeep();
    }
}
