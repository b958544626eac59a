//! The client connection's byte stream, watched: every read and write marks activity,
//! and request heads are followed by [`Framing`] so the connection task knows when a
//! head is in progress (slowloris cut-off) or the connection is idle, and the request
//! path knows when a head stated its length ambiguously.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::Framing;
use crate::upstream::clock;

/// Connection state shared by the stream wrapper, the connection task and the request
/// path. Plain atomics: each is written by one side and read by the others.
#[derive(Debug, Default)]
pub struct Activity {
    /// Clock ms of the last byte read or written.
    last_ms: AtomicU64,
    /// Clock ms when the head being read started; 0 = no head in progress.
    head_since_ms: AtomicU64,
    /// Requests being handled (until their response head).
    active: AtomicUsize,
    /// A head on this connection stated its length twice.
    ambiguous: AtomicBool,
    /// Wakes the connection task when a head starts, so it re-arms its timer from the
    /// idle deadline to the (shorter) head deadline.
    pub head_started: tokio::sync::Notify,
}

/// Why the connection task should close a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired {
    SlowHead,
    Idle,
}

impl Activity {
    pub fn new() -> Self {
        let a = Activity::default();
        a.last_ms.store(clock::now_ms(), Ordering::Relaxed);
        a
    }

    pub fn ambiguous(&self) -> bool {
        self.ambiguous.load(Ordering::Relaxed)
    }

    /// Count a request as active until the guard drops.
    pub fn request(&self) -> ActiveRequest<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self)
    }

    /// When to look again, and whether the connection is over its limits now.
    pub fn check(&self, header_timeout: Duration, idle_timeout: Duration) -> (Duration, Option<Expired>) {
        let now = clock::now_ms();
        let head_since = self.head_since_ms.load(Ordering::Relaxed);
        if head_since != 0 {
            let deadline = head_since + header_timeout.as_millis() as u64;
            return if now >= deadline {
                (Duration::ZERO, Some(Expired::SlowHead))
            } else {
                (ms(deadline - now), None)
            };
        }
        if self.active.load(Ordering::Relaxed) > 0 || idle_timeout.is_zero() {
            return (idle_timeout.max(Duration::from_secs(1)), None);
        }
        let deadline = self.last_ms.load(Ordering::Relaxed) + idle_timeout.as_millis() as u64;
        if now >= deadline {
            (Duration::ZERO, Some(Expired::Idle))
        } else {
            (ms(deadline - now), None)
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub struct ActiveRequest<'a>(&'a Activity);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.last_ms.store(clock::now_ms(), Ordering::Relaxed);
    }
}

/// An I/O stream whose traffic updates an [`Activity`].
pub struct Watched<IO> {
    inner: IO,
    framing: Framing,
    activity: Arc<Activity>,
}

impl<IO> Watched<IO> {
    pub fn new(inner: IO, activity: Arc<Activity>, max_head: usize) -> Self {
        Watched { inner, framing: Framing::new(max_head), activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let this = &mut *self;
                let now = clock::now_ms();
                this.activity.last_ms.store(now, Ordering::Relaxed);
                let seen = this.framing.feed(new);
                if seen.ambiguous {
                    this.activity.ambiguous.store(true, Ordering::Relaxed);
                }
                if !this.framing.in_head() {
                    this.activity.head_since_ms.store(0, Ordering::Relaxed);
                } else if seen.head_started || seen.head_done {
                    // A new head began in this read (possibly right after another ended).
                    this.activity.head_since_ms.store(now, Ordering::Relaxed);
                    this.activity.head_started.notify_one();
                }
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.activity.last_ms.store(clock::now_ms(), Ordering::Relaxed);
            }
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.activity.last_ms.store(clock::now_ms(), Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
