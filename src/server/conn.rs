//! One client connection served by hyper, in the protocol it may speak ([`Speaks`]): on
//! a cleartext listener HTTP/1.1 or HTTP/2 with prior knowledge (h2c) on the same port,
//! told apart by hyper from the first bytes; over TLS exactly what ALPN agreed, as nginx
//! does: `h2` is HTTP/2 only (its preface is read here first, and anything else gets a
//! GOAWAY), `http/1.1` or nothing is HTTP/1.1 only (see [`Watched`]). Every connection
//! is watched for slow heads, idleness and control-frame floods, and registered for
//! graceful drain.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::h2_frames::{GOAWAY_PROTOCOL_ERROR, PREFACE};
use super::rewind::Rewind;
use super::watched::{Speaks, Watched};
use crate::config::FileLimits;
use crate::proxy::Plane;
use crate::proxy::{self, ConnInfo};
use crate::proxy::{Activity, Observed};

/// How long a GOAWAY may wait on the client before the connection is dropped.
const GOAWAY_TIME: Duration = Duration::from_secs(1);

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

/// What every connection a worker accepts is served with: built once per worker.
pub(super) struct Serving {
    pub plane: Arc<Plane>,
    /// Tells HTTP/1.1 from HTTP/2 by the first bytes. It serves cleartext connections,
    /// and TLS ones that agreed HTTP/1.1: hyper-util sniffs whenever upgrades are on
    /// (its `http1_only` does nothing then, and hyper's own upgradeable HTTP/1
    /// connection cannot join a graceful drain), so there the protocol is bound by
    /// [`Watched`], which never lets such a stream begin with an HTTP/2 preface.
    sniffing: auto::Builder<TokioExecutor>,
    /// The same settings, HTTP/2 only: for ALPN `h2`, once its preface was read.
    http2: auto::Builder<TokioExecutor>,
    /// The head limit hyper was built with at start (a reload does not change it).
    pub max_head: usize,
}

impl Serving {
    pub fn new(plane: Arc<Plane>) -> Serving {
        let limits = plane.runtime().settings.limits.clone();
        let sniffing = builder(&limits);
        let http2 = sniffing.clone().http2_only();
        Serving { sniffing, http2, max_head: limits.max_header_bytes, plane }
    }
}

/// Serve one accepted connection (for TLS, after the handshake) on its own task.
pub(super) fn serve<S>(
    mut stream: S,
    peer: SocketAddr,
    speaks: Speaks,
    serving: &Arc<Serving>,
    graceful: Watcher,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let serving = serving.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let limits = serving.plane.runtime().settings.limits.clone();
        let conn_info = Arc::new(ConnInfo::new(peer, speaks.tls()));
        let activity = conn_info.activity.clone();
        let plane = serving.plane.clone();
        let service = service_fn(move |req| proxy::handle(plane.clone(), conn_info.clone(), req));
        if speaks == Speaks::Http2 {
            let Some(preface) = read_preface(&mut stream, peer, limits.header_read_timeout).await else { return };
            let io = Watched::new(Rewind::new(preface, stream), activity.clone(), serving.max_head, speaks);
            let conn = serving.http2.serve_connection(TokioIo::new(io), service);
            drive(graceful.watch(conn), peer, &activity, &limits, &serving.plane).await;
        } else {
            let io = Watched::new(stream, activity.clone(), serving.max_head, speaks);
            let conn = serving.sniffing.serve_connection_with_upgrades(TokioIo::new(io), service);
            drive(graceful.watch(conn), peer, &activity, &limits, &serving.plane).await;
        }
        if let Some(frame) = activity.flooded() {
            // One line per connection, however many frames it sent.
            serving.plane.telemetry.flood(frame);
            tracing::warn!(%peer, frame = frame.as_str(), "closed a client connection flooding HTTP/2 control frames");
        }
    });
}

/// The HTTP/2 connection preface of a connection that agreed `h2`, with whatever was
/// read after it, within `timeout`; `None` when the connection is to close: the client
/// sent something else (a GOAWAY with PROTOCOL_ERROR tells it why, RFC 9113 §3.4), went
/// away, or was too slow.
async fn read_preface<S>(stream: &mut S, peer: SocketAddr, timeout: Duration) -> Option<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4 * 1024);
    let read = async {
        while buf.len() < PREFACE.len() {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let n = buf.len().min(PREFACE.len());
            if buf[..n] != PREFACE[..n] {
                return Ok(false);
            }
        }
        Ok::<_, std::io::Error>(true)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(true)) => Some(buf),
        Ok(Ok(false)) => {
            tracing::debug!(%peer, "ALPN agreed h2 but the client sent no HTTP/2 preface");
            let goaway = async {
                stream.write_all(&GOAWAY_PROTOCOL_ERROR).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(GOAWAY_TIME, goaway).await;
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection ended before its HTTP/2 preface");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no HTTP/2 preface within header_read_timeout");
            None
        }
    }
}

/// Run a connection to its end, closing it when it is too slow with a head or idle.
async fn drive<C>(conn: C, peer: SocketAddr, activity: &Activity, limits: &FileLimits, plane: &Plane)
where
    C: Future<Output = Result<(), Box<dyn StdError + Send + Sync>>>,
{
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
                        plane.telemetry.unrouted.inc(status);
                    }
                }
                return;
            }
            _ = tokio::time::sleep(wait) => {}
            _ = activity.head_started.notified() => {}
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[tokio::test]
    async fn a_preface_in_pieces_is_read_whole() {
        let (mut client, mut server) = duplex(64);
        let reading = tokio::spawn(async move { read_preface(&mut server, peer(), Duration::from_secs(30)).await });
        client.write_all(&PREFACE[..7]).await.unwrap();
        client.write_all(&PREFACE[7..]).await.unwrap();
        let got = reading.await.unwrap().expect("the preface");
        assert_eq!(got, PREFACE);
    }

    #[tokio::test]
    async fn anything_else_gets_a_goaway_and_the_connection_closes() {
        let (mut client, mut server) = duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        assert!(read_preface(&mut server, peer(), Duration::from_secs(30)).await.is_none());
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, GOAWAY_PROTOCOL_ERROR);
    }

    #[tokio::test]
    async fn a_client_too_slow_with_its_preface_is_closed_without_a_goaway() {
        let (mut client, mut server) = duplex(64);
        client.write_all(&PREFACE[..10]).await.unwrap();
        assert!(read_preface(&mut server, peer(), Duration::from_millis(50)).await.is_none());
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "no GOAWAY for a slow client, only a close");
    }
}
