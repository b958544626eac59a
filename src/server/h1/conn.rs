//! One HTTP/1.1 client connection on the fast path: a task that owns the socket, one
//! read buffer, one output buffer and one deadline, and serves requests in order
//! (pipelined ones too) until the connection closes, idles out, is drained, or meets a
//! request the fast path does not take, when it is handed to hyper with the bytes read
//! so far put back in front.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::HeaderValue;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;

use crate::proxy::Plane;
use crate::server::conn::Serving;
use crate::server::rewind::Rewind;
use crate::server::watched::Speaks;

/// A client read buffer's starting size; it grows for a large head and shrinks back.
pub(super) const READ_BUFFER: usize = 4 * 1024;
/// How long closing a connection may wait on the client.
const SHUTDOWN_TIME: Duration = Duration::from_secs(1);

/// What every fast-path connection of a worker shares.
pub struct Worker {
    pub plane: Arc<Plane>,
    pub serving: Arc<Serving>,
    /// Turns true when the worker drains: idle connections close, busy ones close
    /// after their current response.
    pub stop: watch::Receiver<bool>,
    /// Never sent on: its receiver sees the channel close when the last connection
    /// holding this worker is gone, which is what the drain waits for.
    #[allow(dead_code)]
    pub alive: mpsc::Sender<()>,
}

/// The client, as the request path sees it.
pub(super) struct Facts {
    pub peer: SocketAddr,
    /// Preformatted for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// Accepted on a TLS listener.
    pub tls: bool,
}

/// What ended a request on the fast path.
pub(super) enum Next {
    /// Serve the next request on this connection.
    KeepAlive,
    Close,
    /// The request at the start of the buffer is the hyper path's.
    Hyper,
}

pub(super) struct Conn<S> {
    pub io: S,
    /// Bytes read from the client; a request head always starts at 0.
    pub buf: Vec<u8>,
    /// The client's response head (and a small body) before it is written.
    pub out: Vec<u8>,
    /// The upstream request head being built.
    pub scratch: Vec<u8>,
    pub facts: Facts,
    pub deadline: Deadline,
    pub max_head: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// When the connection last finished something (for the idle deadline).
    pub last_done: Instant,
    /// The worker's drain signal, as this connection last saw it.
    pub stop: watch::Receiver<bool>,
    pub worker: Arc<Worker>,
}

/// Serve one accepted connection (for TLS, after a handshake that did not pick h2).
pub fn serve<S>(
    io: S,
    peer: SocketAddr,
    tls: bool,
    worker: &Arc<Worker>,
    watcher: Watcher,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Readiness + Unpin + Send + 'static,
{
    let worker = worker.clone();
    tokio::spawn(async move {
        let limits = worker.plane.runtime().settings.limits.clone();
        let now = Instant::now();
        let floor = limits.header_read_timeout.min(limits.idle_timeout).max(Duration::from_millis(100));
        let mut conn = Conn {
            io,
            buf: Vec::with_capacity(READ_BUFFER),
            out: Vec::new(),
            scratch: Vec::new(),
            facts: Facts {
                peer,
                client_ip: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
                    .expect("an IP is a header value"),
                tls,
            },
            deadline: Deadline::new(now, floor),
            max_head: worker.serving.max_head,
            header_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            last_done: now,
            stop: worker.stop.clone(),
            worker,
        };
        loop {
            match conn.serve_one().await {
                Next::KeepAlive => {}
                Next::Close => {
                    // A TLS close_notify waits on the client's window: bounded.
                    let _ = tokio::time::timeout(SHUTDOWN_TIME, conn.io.shutdown()).await;
                    return;
                }
                Next::Hyper => {
                    let Conn { io, buf, worker, facts: Facts { peer, tls, .. }, .. } = conn;
                    let speaks = Speaks::without_alpn_h2(tls);
                    crate::server::conn::serve(Rewind::new(buf, io), peer, speaks, &worker.serving, watcher, permit);
                    return;
                }
            }
        }
    });
}

/// Why waiting for a head ended without one.
pub(super) enum NoHead {
    /// The client closed, idled out, was too slow with its head, or the worker drains.
    Close,
}

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Conn<S> {
    /// Drop the request's bytes (`n` from the start) and keep what follows (pipelining);
    /// a buffer grown for a large head goes back to its usual size.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        if self.buf.capacity() > 4 * READ_BUFFER && self.buf.len() <= READ_BUFFER {
            self.buf.shrink_to(READ_BUFFER);
        }
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
    }

    pub fn draining(&self) -> bool {
        *self.stop.borrow()
    }
}

/// One timer per connection, moved lazily: setting a later deadline does not touch the
/// timer wheel; the timer fires at most `floor` after it was last armed and re-arms
/// itself if the deadline has moved on. Every deadline is at least `floor` away when it
/// is set, so the request path never resets the timer.
pub(super) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
    floor: Duration,
}

impl Deadline {
    fn new(now: Instant, floor: Duration) -> Self {
        Deadline { sleep: Box::pin(tokio::time::sleep_until((now + floor).into())), at: now + floor, floor }
    }

    pub fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.sleep.deadline().into_std() {
            self.sleep.as_mut().reset(at.into());
        }
    }

    /// Resolves when the deadline has passed.
    pub async fn expired(&mut self) {
        while self.wake().await == Wake::Tick {}
    }

    /// Resolves when the timer fires: past the deadline, or a tick on the way to it
    /// (and re-armed).
    pub async fn wake(&mut self) -> Wake {
        self.sleep.as_mut().await;
        let now = Instant::now();
        if now >= self.at {
            return Wake::Expired;
        }
        let next = self.at.min(now + self.floor);
        self.sleep.as_mut().reset(next.into());
        Wake::Tick
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    Expired,
    Tick,
}

/// A client stream the fast path can wait on for bytes without holding a buffer.
pub trait Readiness {
    /// Ready when a read would find bytes (or an error); `None` when the stream cannot
    /// tell, and must be read into a buffer.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<()>>>;

    fn can_wait_unbuffered(&self) -> bool;
}

impl Readiness for TcpStream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<()>>> {
        self.poll_read_ready(cx).map(Some)
    }

    fn can_wait_unbuffered(&self) -> bool {
        true
    }
}

/// TLS may hold decrypted bytes the socket's readiness does not show: it keeps its
/// buffer.
impl Readiness for TlsStream<TcpStream> {
    fn poll_readable(&mut self, _: &mut Context<'_>) -> Poll<Option<io::Result<()>>> {
        Poll::Ready(None)
    }

    fn can_wait_unbuffered(&self) -> bool {
        false
    }
}
