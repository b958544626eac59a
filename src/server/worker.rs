//! One worker: a thread with a single-threaded tokio runtime that accepts on its own
//! listeners and serves every connection it accepts to the end.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::conn::{self, Serving};
use super::h1;
use super::tls::{self, TlsListener};
use super::watched::Speaks;
use crate::proxy::Plane;

/// A bound, non-blocking listening socket and what it speaks.
pub struct Listener {
    pub socket: std::net::TcpListener,
    /// For a TLS listener, where its certificates are found.
    pub tls: Option<TlsListener>,
}

/// Start worker `id`; it serves until `stop` turns true, then drains for up to the
/// config's `drain_timeout` and returns.
pub fn spawn(
    id: usize,
    listeners: Vec<Listener>,
    plane: Arc<Plane>,
    connections: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("switchyard-worker-{id}"))
        .spawn(move || {
            crate::workers::set_current(id);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a worker runtime");
            rt.block_on(serve(listeners, plane, connections, stop));
        })
        .expect("spawn a worker thread")
}

async fn serve(
    listeners: Vec<Listener>,
    plane: Arc<Plane>,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let serving = Arc::new(Serving::new(plane.clone()));
    // Fast-path connections hold the worker; when the last is gone, `alive` closes.
    let (alive, mut all_closed) = tokio::sync::mpsc::channel(1);
    let worker = Arc::new(h1::Worker { plane: plane.clone(), serving, stop: stop.clone(), alive });
    let sweep = tokio::spawn(sweep_pool());
    let mut accepts = Vec::new();
    for l in listeners {
        let socket = TcpListener::from_std(l.socket).expect("a non-blocking listener");
        let accept = accept_loop(socket, l.tls, worker.clone(), graceful.clone(), connections.clone(), stop.clone());
        accepts.push(tokio::spawn(accept));
    }
    drop(worker);
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    for a in accepts {
        let _ = a.await;
    }
    // Connections still in a TLS handshake hold a `Watcher` or the worker, not the
    // `GracefulShutdown`: the drain below waits for them too.
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| unreachable!("accept loops have ended"));
    let drain_timeout = plane.runtime().settings.drain_timeout;
    let drained = async {
        tokio::join!(graceful.shutdown(), all_closed.recv());
    };
    if tokio::time::timeout(drain_timeout, drained).await.is_err() {
        tracing::warn!(worker = crate::workers::current(), "drain_timeout reached; closing remaining connections");
    }
    sweep.abort();
}

/// Close idle upstream connections that are no longer wanted, now and then.
async fn sweep_pool() {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        h1::pool::sweep(std::time::Instant::now());
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsListener>,
    worker: Arc<h1::Worker>,
    graceful: Arc<GracefulShutdown>,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // At max_connections, this worker stops accepting (holding at most the one
        // connection it just took) until a connection closes; the rest wait in the
        // kernel's backlog. Waiting after the accept, not before, matters with
        // SO_REUSEPORT: a worker parked before accept would strand the connections the
        // kernel hashes to its listener while other workers have room.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => h1::serve(stream, peer, false, &worker, graceful.watcher(), permit),
            Some(listener) => {
                let (worker, listener) = (worker.clone(), listener.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let Some(stream) = tls::handshake(stream, peer, &listener, &worker.plane).await else { return };
                    // ALPN binds the protocol: `h2` is hyper's, HTTP/2 only; `http/1.1`
                    // (or none) takes the fast path, HTTP/1.1 only.
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        conn::serve(stream, peer, Speaks::Http2, &worker.serving, watcher, permit);
                    } else {
                        h1::serve(stream, peer, true, &worker, watcher, permit);
                    }
                });
            }
        }
    }
    // Dropping the listener closes the socket: new connections are refused.
}
