//! The client connection's byte stream, watched: every read and write marks activity,
//! and request heads are followed by [`Framing`] before hyper reads them, so the
//! connection task knows when a head is in progress (slowloris cut-off) or the
//! connection is idle, and the request path knows which request stands in for a head
//! the tracker refused (and why).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::{Framing, Pass};
use crate::proxy::ProxyError;

/// Connection state shared by the stream wrapper, the connection task and the request
/// path. The I/O path only bumps counters (no clock reads); the connection task turns
/// them into times when it wakes, which it does when a head starts and at deadlines.
#[derive(Debug, Default)]
pub struct Activity {
    /// Bumped on every write and finished request (reads are covered by the head timer:
    /// between requests, any byte read starts a head).
    ops: AtomicU64,
    /// Bumped when a request head starts.
    heads: AtomicU64,
    /// A head is being read.
    in_head: AtomicBool,
    /// Requests being handled (until their response head).
    active: AtomicUsize,
    /// Request heads read so far on this connection.
    heads_done: AtomicU64,
    /// Index of the request standing in for a refused head (`u64::MAX`: none), and why
    /// it was refused (see [`refusal_code`]).
    refused_at: AtomicU64,
    refusal: AtomicU8,
    /// Requests the request path has started (HTTP/1 answers them in order).
    requests: AtomicU64,
    /// The request path accepted an upgrade (101): the stream is no longer HTTP/1.
    upgraded: AtomicBool,
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

/// What the connection task remembers between wake-ups.
#[derive(Debug)]
pub struct Observed {
    ops: u64,
    last_change: Instant,
    head: u64,
    head_since: Instant,
}

impl Observed {
    pub fn new() -> Self {
        let now = Instant::now();
        Observed { ops: 0, last_change: now, head: 0, head_since: now }
    }
}

impl Default for Observed {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        let a = Activity::default();
        a.refused_at.store(u64::MAX, Ordering::Relaxed);
        a
    }

    /// Called once per request, in order: is this request the stand-in for a head the
    /// framing tracker refused, and with what answer? Requests before it are unaffected.
    pub fn next_request_refusal(&self) -> Option<ProxyError> {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        if index < self.refused_at.load(Ordering::Relaxed) {
            return None;
        }
        Some(refusal_from_code(self.refusal.load(Ordering::Relaxed)))
    }

    fn refuse(&self, index: u64, why: ProxyError) {
        self.refusal.store(refusal_code(why), Ordering::Relaxed);
        self.refused_at.store(index, Ordering::Relaxed);
    }

    /// The connection switched protocols; stop following HTTP/1 framing.
    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Count a request as active until the guard drops.
    pub fn request(&self) -> ActiveRequest<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self)
    }

    /// When to look again, and whether the connection is over its limits now.
    pub fn check(
        &self,
        seen: &mut Observed,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> (Duration, Option<Expired>) {
        let now = Instant::now();
        let ops = self.ops.load(Ordering::Relaxed);
        if ops != seen.ops {
            seen.ops = ops;
            seen.last_change = now;
        }
        let head = self.heads.load(Ordering::Relaxed);
        if head != seen.head {
            seen.head = head;
            seen.head_since = now;
        }
        if self.in_head.load(Ordering::Relaxed) {
            let deadline = seen.head_since + header_timeout;
            return match deadline.checked_duration_since(now) {
                Some(wait) if !wait.is_zero() => (wait, None),
                _ => (Duration::ZERO, Some(Expired::SlowHead)),
            };
        }
        if self.active.load(Ordering::Relaxed) > 0 || idle_timeout.is_zero() {
            return (idle_timeout.max(Duration::from_secs(1)), None);
        }
        match (seen.last_change + idle_timeout).checked_duration_since(now) {
            Some(wait) if !wait.is_zero() => (wait, None),
            _ => (Duration::ZERO, Some(Expired::Idle)),
        }
    }
}

pub struct ActiveRequest<'a>(&'a Activity);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// A refusal as stored in [`Activity`] (only the answers the tracker gives).
fn refusal_code(why: ProxyError) -> u8 {
    match why {
        ProxyError::HeaderTooLarge => 1,
        ProxyError::UriTooLong => 2,
        _ => 0,
    }
}

fn refusal_from_code(code: u8) -> ProxyError {
    match code {
        1 => ProxyError::HeaderTooLarge,
        2 => ProxyError::UriTooLong,
        _ => ProxyError::BadRequest,
    }
}

/// An I/O stream whose traffic updates an [`Activity`], and whose reads reach hyper
/// only through the framing tracker.
pub struct Watched<IO> {
    inner: IO,
    framing: Framing,
    activity: Arc<Activity>,
    /// Bytes cleared for hyper that did not fit its buffer yet (a held head that
    /// completed, or the stand-in for a refused one), and how far they were handed over.
    pending: Vec<u8>,
    handed: usize,
}

impl<IO> Watched<IO> {
    pub fn new(inner: IO, activity: Arc<Activity>, max_head: usize) -> Self {
        Watched { inner, framing: Framing::new(max_head), activity, pending: Vec::new(), handed: 0 }
    }

    /// Hand over what is pending, as much as fits.
    fn hand_pending(&mut self, buf: &mut ReadBuf<'_>) {
        let n = (self.pending.len() - self.handed).min(buf.remaining());
        buf.put_slice(&self.pending[self.handed..self.handed + n]);
        self.handed += n;
        if self.handed == self.pending.len() {
            self.pending.clear();
            self.handed = 0;
        }
    }

    /// The client's stream ended.
    fn end_of_stream(&self) -> Poll<io::Result<()>> {
        if self.framing.refused() {
            // The client finished sending after a refused head. hyper is answering the
            // stand-in; an end of stream now would make it drop that answer, and it
            // closes the connection once the answer is written.
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Follow the bytes just read and update the connection's state; returns what of
    /// them hyper may see.
    fn follow(&mut self, new: &[u8]) -> Pass {
        let a = &self.activity;
        let seen = self.framing.feed(new);
        if seen.heads > 0 {
            let before = a.heads_done.fetch_add(u64::from(seen.heads), Ordering::Relaxed);
            if let Some((i, why)) = seen.refused {
                a.refuse(before + u64::from(i), why);
            }
        }
        let in_head = self.framing.in_head();
        if in_head && (seen.head_started || seen.head_done) {
            // A new head began in this read (possibly right after another ended).
            a.heads.fetch_add(1, Ordering::Relaxed);
            a.in_head.store(true, Ordering::Relaxed);
            a.head_started.notify_one();
        } else if !in_head && a.in_head.load(Ordering::Relaxed) {
            a.in_head.store(false, Ordering::Relaxed);
        }
        seen.pass
    }
}

/// Below this much room in the caller's buffer, read into our own (on the stack) and
/// hand the bytes over from `pending`: hyper's protocol sniffing reads 24 bytes at a
/// time, and a head held back until complete would otherwise cost a read per 24 bytes.
const SMALL_READ: usize = 4096;

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.activity.upgraded.load(Ordering::Relaxed) {
            // Not HTTP/1 any more: what was held as the start of a head is the new
            // protocol's first bytes, handed over before anything read later.
            this.framing.stop(&mut this.pending);
        }
        loop {
            if !this.pending.is_empty() {
                this.hand_pending(buf);
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() < SMALL_READ {
                let mut space = [std::mem::MaybeUninit::<u8>::uninit(); SMALL_READ];
                let mut own = ReadBuf::uninit(&mut space);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut own))?;
                if own.filled().is_empty() {
                    return this.end_of_stream();
                }
                match this.follow(own.filled()) {
                    Pass::Direct(n) => this.pending.extend_from_slice(&own.filled()[..n]),
                    Pass::Rebuilt => this.framing.take_out(&mut this.pending),
                }
                this.handed = 0;
                continue;
            }
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let read = buf.filled().len() - before;
            if read == 0 {
                return this.end_of_stream();
            }
            match this.follow(&buf.filled()[before..]) {
                Pass::Direct(n) => {
                    buf.set_filled(before + n);
                    if n > 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // All of it is held (part of a head) or discarded (after a refusal):
                    // read on, so hyper is not woken for nothing nor told the stream ended.
                }
                Pass::Rebuilt => {
                    buf.set_filled(before);
                    this.framing.take_out(&mut this.pending);
                    this.handed = 0;
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.activity.ops.fetch_add(1, Ordering::Relaxed);
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
                self.activity.ops.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A client stream that has `data` to give and counts how often it is read.
    struct Source {
        data: Vec<u8>,
        reads: usize,
    }

    impl AsyncRead for Source {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            self.reads += 1;
            let n = self.data.len().min(buf.remaining());
            let rest = self.data.split_off(n);
            buf.put_slice(&self.data);
            self.data = rest;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_head_read_through_a_small_buffer_costs_one_read() {
        let head = format!("GET / HTTP/1.1\r\nHost: a\r\nCookie: {}\r\n\r\n", "c".repeat(2000));
        let source = Source { data: head.clone().into_bytes(), reads: 0 };
        let mut w = Watched::new(source, Arc::new(Activity::new()), 65_536);
        // hyper's protocol sniffing reads 24 bytes at a time.
        let mut got = Vec::new();
        while got.len() < head.len() {
            let mut small = [0u8; 24];
            let n = w.read(&mut small).await.unwrap();
            assert!(n > 0, "no end of stream before the head is handed over");
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, head.as_bytes());
        assert_eq!(w.inner.reads, 1, "the whole head came from one read of the socket");
    }

    #[tokio::test]
    async fn bytes_held_before_an_upgrade_reach_the_new_protocol() {
        // An upgrade request, then the client's first frame before the 101 arrived.
        let request = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let early = b"\x81\x05hello";
        let source = Source { data: [&request[..], early].concat(), reads: 0 };
        let activity = Arc::new(Activity::new());
        let mut w = Watched::new(source, activity.clone(), 65_536);
        let mut got = vec![0u8; request.len()];
        w.read_exact(&mut got).await.unwrap();
        assert_eq!(got, request);
        activity.mark_upgraded();
        let mut frame = vec![0u8; early.len()];
        w.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, early, "held as the start of a head, handed over after the 101");
    }

    #[tokio::test]
    async fn a_refused_head_reaches_hyper_as_the_stand_in() {
        let source = Source { data: b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec(), reads: 0 };
        let activity = Arc::new(Activity::new());
        let mut w = Watched::new(source, activity.clone(), 65_536);
        let mut got = vec![0u8; super::super::framing::STAND_IN.len()];
        w.read_exact(&mut got).await.unwrap();
        assert_eq!(got, super::super::framing::STAND_IN);
        assert_eq!(activity.next_request_refusal(), Some(ProxyError::BadRequest));
    }
}
