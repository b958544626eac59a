//! One client connection: HTTP/1.1 or HTTP/2 (h2c prior knowledge, or ALPN `h2` over
//! TLS) on the same socket, served by hyper, watched for slow heads and idleness, and
//! registered for graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;

use super::watched::{Observed, Watched};
use crate::config::FileLimits;
use crate::proxy::{self, ConnInfo};
use crate::runtime::Shared;

fn builder(limits: &FileLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The framing tracker refuses oversized heads (431 with its cause) before hyper sees
    // them, and only hands hyper complete heads, so hyper's own buffer limit is set above
    // it and never answers first. Slow heads and idle connections are timed by the
    // connection task (see `Activity`), because hyper's header timer also runs while a
    // keep-alive connection is idle.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.saturating_add(16 * 1024));
    // HTTP/2 limits, stated rather than inherited: concurrent streams per connection, the
    // header list (the request path answers a list over max_header_bytes with a 431 that
    // names its cause; the h2 layer's own, bare 431 is a hard stop above it), and the h2
    // crate's defences against rapid reset (CVE-2023-44487) and streams reset by our own
    // errors: past them the connection gets GOAWAY.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(limits.max_header_bytes.saturating_add(16 * 1024)).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024);
    builder
}

/// What every connection a worker accepts is served with.
pub(super) struct Serving {
    pub shared: Arc<Shared>,
    pub builder: auto::Builder<TokioExecutor>,
    /// The head limit hyper was built with at start (a reload does not change it).
    pub max_head: usize,
}

impl Serving {
    pub fn new(shared: Arc<Shared>) -> Serving {
        let limits = shared.runtime().file.server.limits.clone();
        Serving { builder: builder(&limits), max_head: limits.max_header_bytes, shared }
    }
}

/// Serve one accepted connection (for TLS, after the handshake) on its own task.
pub(super) fn serve<S>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    serving: &Serving,
    graceful: Watcher,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = &serving.shared;
    let limits = shared.runtime().file.server.limits.clone();
    let conn_info = Arc::new(ConnInfo::new(peer, tls));
    let activity = conn_info.activity.clone();
    let io = Watched::new(stream, activity.clone(), serving.max_head);
    let counted = shared.clone();
    let shared = shared.clone();
    let service = service_fn(move |req| proxy::handle(shared.clone(), conn_info.clone(), req));
    let conn = serving.builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        let _permit = permit;
        tokio::pin!(conn);
        let mut seen = Observed::new();
        loop {
            let (wait, expired) = activity.check(&mut seen, limits.header_read_timeout, limits.idle_timeout);
            if let Some(why) = expired {
                tracing::debug!(%peer, ?why, "closing connection");
                return; // dropping the connection closes it
            }
            tokio::select! {
                result = &mut conn => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                        // The framing tracker refuses what hyper's parser would; should
                        // hyper still answer a head itself (a rule the tracker lacks),
                        // count it with the other responses made before routing.
                        if let Some(status) = parser_rejection(&*e) {
                            counted.telemetry.unrouted.inc(status);
                        }
                    }
                    return;
                }
                _ = tokio::time::sleep(wait) => {}
                _ = activity.head_started.notified() => {}
            }
        }
    });
}

/// The status hyper answered with when it refused to parse a request head, if it did.
fn parser_rejection(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return Some(431);
            }
            if h.is_parse() {
                return Some(400);
            }
        }
        source = err.source();
    }
    None
}
