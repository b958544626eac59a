//! The client connection's byte stream, watched: every read and write marks activity,
//! and request heads are followed by [`Framing`] before hyper reads them, so the
//! connection task knows when a head is in progress (slowloris cut-off) or the
//! connection is idle, and the request path knows which request stands in for a head
//! the tracker refused (and why).
//!
//! It also holds the connection to the protocol it may speak ([`Speaks`]): HTTP/2 is
//! told by its preface's first line, which over TLS with HTTP/1.1 agreed is refused
//! like a malformed head (hyper's version sniffing never sees it, so never serves
//! HTTP/2 there); and on a connection that speaks HTTP/2, the client's PING and
//! SETTINGS frames are counted (see [`h2_frames`](super::h2_frames)) and a flood ends
//! the connection with a read error.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::{Framing, Pass, STAND_IN};
use super::h2_frames::{Budgets, Frames};
use crate::proxy::{Activity, ProxyError};
use crate::telemetry::ControlFrame;

/// What a connection may speak, fixed before hyper reads a byte of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// A cleartext listener: HTTP/1.1, or HTTP/2 with prior knowledge (h2c), which
    /// hyper tells apart by the connection preface.
    Http1OrH2c,
    /// TLS that agreed `http/1.1`, or no protocol: an HTTP/2 preface is a malformed
    /// request (400, then the connection closes), as with nginx.
    Http1,
    /// TLS that agreed `h2`: the preface was checked before hyper was given the stream.
    Http2,
}

impl Speaks {
    /// What a connection that did not agree `h2` by ALPN speaks.
    pub fn without_alpn_h2(tls: bool) -> Speaks {
        if tls {
            Speaks::Http1
        } else {
            Speaks::Http1OrH2c
        }
    }

    pub fn tls(self) -> bool {
        self != Speaks::Http1OrH2c
    }
}

/// An I/O stream whose traffic updates an [`Activity`], and whose reads reach hyper
/// only through the framing tracker and the HTTP/2 frame counter.
pub struct Watched<IO> {
    inner: IO,
    speaks: Speaks,
    framing: Framing,
    frames: Frames,
    budgets: Budgets,
    /// Set when this wrapper ended what hyper may read.
    cut: Option<Cut>,
    activity: Arc<Activity>,
    /// Bytes cleared for hyper that did not fit its buffer yet (a held head that
    /// completed, or the stand-in for a refused one), and how far they were handed over.
    pending: Vec<u8>,
    handed: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// An HTTP/2 preface on an HTTP/1-only connection: hyper got the stand-in for a
    /// refused head, and nothing after it.
    Http2Refused,
    /// Too many control frames: every read fails, so hyper ends the connection.
    Flood(ControlFrame),
}

impl<IO> Watched<IO> {
    pub fn new(inner: IO, activity: Arc<Activity>, max_head: usize, speaks: Speaks) -> Self {
        Watched {
            inner,
            speaks,
            framing: Framing::new(max_head),
            frames: Frames::default(),
            budgets: Budgets::default(),
            cut: None,
            activity,
            pending: Vec::new(),
            handed: 0,
        }
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
        if self.framing.refused() || self.cut == Some(Cut::Http2Refused) {
            // The client finished sending after a refused head. hyper is answering the
            // stand-in; an end of stream now would make it drop that answer, and it
            // closes the connection once the answer is written.
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Follow the bytes just read and update the connection's state; returns what of
    /// them hyper may see, or the error that ends the connection.
    fn follow(&mut self, new: &[u8]) -> io::Result<Pass> {
        if self.cut == Some(Cut::Http2Refused) {
            return Ok(Pass::Direct(0));
        }
        let control = self.frames.feed(new);
        if self.frames.is_http2() {
            if self.speaks == Speaks::Http1 {
                self.refuse_http2();
                return Ok(Pass::Direct(0));
            }
            if let Err(frame) = self.budgets.spend(control, Instant::now) {
                self.cut = Some(Cut::Flood(frame));
                self.activity.cut_for_flood(frame);
                return Err(flood_error(frame));
            }
        }
        if self.speaks == Speaks::Http2 {
            return Ok(Pass::Direct(new.len()));
        }
        Ok(self.follow_http1(new))
    }

    /// An HTTP/2 preface on a connection that agreed HTTP/1.1: it is refused like a
    /// malformed head, before any of it reached hyper (the framing tracker holds a
    /// head until it is complete, and the preface's line is shorter than its head).
    fn refuse_http2(&mut self) {
        self.activity.heads_read(1, Some((0, ProxyError::BadRequest)));
        self.activity.head_ended();
        self.pending.clear();
        self.pending.extend_from_slice(STAND_IN);
        self.handed = 0;
        self.cut = Some(Cut::Http2Refused);
    }

    /// Follow HTTP/1 request framing (see [`Framing`]).
    fn follow_http1(&mut self, new: &[u8]) -> Pass {
        let a = &self.activity;
        let seen = self.framing.feed(new);
        if seen.heads > 0 {
            a.heads_read(seen.heads, seen.refused);
        }
        let in_head = self.framing.in_head();
        if in_head && (seen.head_started || seen.head_done) {
            // A new head began in this read (possibly right after another ended).
            a.head_began();
        } else if !in_head {
            a.head_ended();
        }
        seen.pass
    }
}

fn flood_error(frame: ControlFrame) -> io::Error {
    let what = match frame {
        ControlFrame::Ping => "too many HTTP/2 PING frames",
        ControlFrame::Settings => "too many HTTP/2 SETTINGS frames",
    };
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Below this much room in the caller's buffer, read into our own (on the stack) and
/// hand the bytes over from `pending`: hyper's protocol sniffing reads 24 bytes at a
/// time, and a head held back until complete would otherwise cost a read per 24 bytes.
const SMALL_READ: usize = 4096;

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(Cut::Flood(frame)) = this.cut {
            return Poll::Ready(Err(flood_error(frame)));
        }
        if this.activity.upgraded() {
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
                match this.follow(own.filled())? {
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
            let pass = match this.follow(&buf.filled()[before..]) {
                Ok(pass) => pass,
                Err(e) => {
                    buf.set_filled(before);
                    return Poll::Ready(Err(e));
                }
            };
            match pass {
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
                self.activity.wrote();
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
                self.activity.wrote();
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
        let mut w = Watched::new(source, Arc::new(Activity::new()), 65_536, Speaks::Http1OrH2c);
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
        let mut w = Watched::new(source, activity.clone(), 65_536, Speaks::Http1OrH2c);
        let mut got = vec![0u8; request.len()];
        w.read_exact(&mut got).await.unwrap();
        assert_eq!(got, request);
        activity.mark_upgraded();
        let mut frame = vec![0u8; early.len()];
        w.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, early, "held as the start of a head, handed over after the 101");
    }

    #[tokio::test]
    async fn an_http2_preface_where_http1_was_agreed_reaches_hyper_as_the_stand_in() {
        let preface = super::super::h2_frames::PREFACE;
        for cut in [preface.len(), 10] {
            let source = Source { data: preface[..cut].to_vec(), reads: 0 };
            let activity = Arc::new(Activity::new());
            let mut w = Watched::new(source, activity.clone(), 65_536, Speaks::Http1);
            let mut buf = [0u8; 64];
            if cut < preface.len() {
                // The source runs dry (an end of stream, to the reader), then has the rest.
                assert_eq!(w.read(&mut buf).await.unwrap(), 0, "nothing of a partial head is handed over");
                w.inner.data.extend_from_slice(&preface[cut..]);
            }
            let n = w.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], STAND_IN, "cut at {cut}");
            assert_eq!(activity.next_request_refusal(), Some(ProxyError::BadRequest));
        }
        // Where h2c is allowed, the preface is hyper's.
        let source = Source { data: preface.to_vec(), reads: 0 };
        let mut w = Watched::new(source, Arc::new(Activity::new()), 65_536, Speaks::Http1OrH2c);
        let mut got = vec![0u8; preface.len()];
        w.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..], &preface[..]);
    }

    #[tokio::test]
    async fn a_ping_flood_fails_the_read_and_is_recorded() {
        let ping: &[u8] = &[0, 0, 8, 0x6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut data = super::super::h2_frames::PREFACE.to_vec();
        for _ in 0..=super::super::h2_frames::Budget::BURST {
            data.extend_from_slice(ping);
        }
        let activity = Arc::new(Activity::new());
        let mut w = Watched::new(Source { data, reads: 0 }, activity.clone(), 65_536, Speaks::Http2);
        let mut buf = vec![0u8; 64 * 1024];
        let e = w.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(activity.flooded(), Some(ControlFrame::Ping));
        assert!(w.read(&mut buf).await.is_err(), "and stays cut off");
    }

    #[tokio::test]
    async fn a_refused_head_reaches_hyper_as_the_stand_in() {
        let source = Source { data: b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec(), reads: 0 };
        let activity = Arc::new(Activity::new());
        let mut w = Watched::new(source, activity.clone(), 65_536, Speaks::Http1OrH2c);
        let mut got = vec![0u8; super::super::framing::STAND_IN.len()];
        w.read_exact(&mut got).await.unwrap();
        assert_eq!(got, super::super::framing::STAND_IN);
        assert_eq!(activity.next_request_refusal(), Some(ProxyError::BadRequest));
    }
}
