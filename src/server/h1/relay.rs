//! The response relayed to the client: its head and the body behind it as it arrives,
//! framed as the client gets it (a body read to close goes out chunked), with the
//! body's state followed so the upstream connection can be reused, and drained for a
//! while when the client leaves mid-response.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::{self, Chunked};
use super::conn::{Conn, Readiness};
use super::pool::UpConn;
use super::response::Framing;
use crate::telemetry::UpstreamErrorKind;

/// A response body up to this size goes out in the same write as its head.
const COALESCE: usize = 16 * 1024;
/// How long the rest of a response is drained after its client left.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// The most a body relay buffers per read.
const MAX_RELAY_BUFFER: usize = 64 * 1024;
/// After a client leaves mid-response, up to this much of the rest is read (and
/// dropped) so the upstream connection can be reused.
const DRAIN_LIMIT: u64 = 256 * 1024;

pub(super) struct Relay {
    pub(super) status: u16,
    pub(super) len: usize,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
    pub(super) close: bool,
}

/// How relaying a response body ended, and the payload bytes that reached the client.
pub(super) enum Relayed {
    Done {
        bytes: u64,
        reusable: bool,
    },
    /// The client stopped taking it (or left); the rest was drained when that was cheap.
    ClientGone {
        bytes: u64,
        reusable: bool,
    },
    UpstreamFailed {
        kind: UpstreamErrorKind,
        bytes: u64,
    },
}

/// Where the body stands: how much is left by its framing, and whether the
/// connection stays in step with it (nothing read past its end).
struct BodyState {
    framing: Framing,
    left: u64,
    chunked: Chunked,
    /// Payload bytes passed on (chunked bodies count theirs in `chunked`).
    bytes: u64,
    reusable: bool,
}

impl BodyState {
    fn new(framing: Framing) -> Self {
        let left = if let Framing::Length(n) = framing { n } else { 0 };
        BodyState { framing, left, chunked: Chunked::default(), bytes: 0, reusable: true }
    }

    /// How much of `data` belongs to the body, and whether the body ended there.
    fn take(&mut self, data: &[u8]) -> Result<(usize, bool), chunked::Malformed> {
        let (n, done) = match self.framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let n = data.len().min(self.left as usize);
                self.left -= n as u64;
                self.bytes += n as u64;
                (n, self.left == 0)
            }
            Framing::Chunked => {
                let n = self.chunked.feed(data)?;
                (n, self.chunked.done())
            }
            Framing::Close => {
                self.bytes += data.len() as u64;
                (data.len(), false)
            }
        };
        self.reusable &= n == data.len();
        Ok((n, done))
    }

    fn bytes(&self) -> u64 {
        self.bytes + self.chunked.payload
    }

    /// The body reached its end: delivered, or drained for a client that left.
    fn ended(&self, client_ok: bool) -> Relayed {
        let (bytes, reusable) = (self.bytes(), self.reusable);
        if client_ok {
            Relayed::Done { bytes, reusable }
        } else {
            Relayed::ClientGone { bytes, reusable }
        }
    }
}

/// Append `data` to `out` as the client gets it: as is, or (a body read to close)
/// as one chunk.
fn frame(out: &mut Vec<u8>, framing: Framing, data: &[u8]) {
    if framing != Framing::Close {
        out.extend_from_slice(data);
    } else if !data.is_empty() {
        let mut hex = [0u8; 16];
        let mut n = data.len();
        let mut at = hex.len();
        while n > 0 || at == hex.len() {
            at -= 1;
            hex[at] = b"0123456789abcdef"[n & 0xf];
            n >>= 4;
        }
        out.extend_from_slice(&hex[at..]);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Conn<S> {
    /// Send the head in `out` and the body behind it, each wait bounded by the idle
    /// timeout since the last progress. Returns how it ended and whether it took more
    /// than the first write (the caller then reads the clock again).
    pub(super) async fn relay(
        &mut self,
        r: &Relay,
        up: &mut UpConn,
        head_at: Instant,
        consumed: usize,
    ) -> (Relayed, bool) {
        let mut body = BodyState::new(r.framing);
        let idle = self.idle_or_forever();
        self.deadline.set(head_at + idle);
        // What came with the head goes out with it.
        let first = &up.buf[r.len..];
        let (n, mut done) = match body.take(first) {
            Ok(taken) => taken,
            Err(_) => return (Relayed::UpstreamFailed { kind: UpstreamErrorKind::Protocol, bytes: 0 }, false),
        };
        let coalesce = self.out.len() + n <= COALESCE;
        if coalesce {
            frame(&mut self.out, r.framing, &first[..n]);
        }
        let mut client_ok = self.write_timed(None).await;
        if client_ok && !coalesce {
            self.out.clear();
            frame(&mut self.out, r.framing, &first[..n]);
            client_ok = self.write_timed(None).await;
        }
        if done {
            return (body.ended(client_ok), false);
        }
        // The rest, as it arrives; a body that keeps filling the buffer gets a larger one.
        let mut watch_client = true;
        let mut drained = 0u64;
        loop {
            if !client_ok {
                if drained > DRAIN_LIMIT || r.framing == Framing::Close {
                    return (Relayed::ClientGone { bytes: body.bytes(), reusable: false }, true);
                }
            } else if up.buf.len() == up.buf.capacity() && up.buf.capacity() < MAX_RELAY_BUFFER {
                up.buf.reserve(up.buf.capacity());
            }
            up.buf.clear();
            watch_client &= client_ok && self.buf.len() < 2 * self.max_head;
            let read = tokio::select! {
                biased;
                read = up.stream.read_buf(&mut up.buf) => read,
                read = self.io.read_buf(&mut self.buf), if watch_client => {
                    if matches!(read, Ok(0) | Err(_)) {
                        // Gone, unless it only finished sending (pipelined requests wait).
                        if self.buf.len() > consumed && matches!(read, Ok(0)) {
                            watch_client = false;
                        } else {
                            client_ok = false;
                            self.deadline.set(Instant::now() + DRAIN_TIME);
                        }
                    }
                    continue;
                }
                _ = self.deadline.expired() => {
                    return if client_ok {
                        (Relayed::UpstreamFailed { kind: UpstreamErrorKind::Timeout, bytes: body.bytes() }, true)
                    } else {
                        (Relayed::ClientGone { bytes: body.bytes(), reusable: false }, true)
                    };
                }
            };
            let n = match read {
                Ok(0) if r.framing == Framing::Close => {
                    // The end of a body read to close: the last chunk.
                    self.out.clear();
                    self.out.extend_from_slice(b"0\r\n\r\n");
                    let relayed = if client_ok && self.write_timed(None).await {
                        Relayed::Done { bytes: body.bytes(), reusable: false }
                    } else {
                        Relayed::ClientGone { bytes: body.bytes(), reusable: false }
                    };
                    return (relayed, true);
                }
                Ok(0) | Err(_) if !client_ok => {
                    return (Relayed::ClientGone { bytes: body.bytes(), reusable: false }, true)
                }
                Ok(0) | Err(_) => {
                    return (Relayed::UpstreamFailed { kind: UpstreamErrorKind::Reset, bytes: body.bytes() }, true)
                }
                Ok(n) => n,
            };
            let (take, end) = match body.take(&up.buf[..n]) {
                Ok(taken) => taken,
                Err(_) if !client_ok => return (Relayed::ClientGone { bytes: body.bytes(), reusable: false }, true),
                Err(_) => {
                    return (Relayed::UpstreamFailed { kind: UpstreamErrorKind::Protocol, bytes: body.bytes() }, true)
                }
            };
            done = end;
            if client_ok {
                self.deadline.set(Instant::now() + idle);
                client_ok = if r.framing == Framing::Close {
                    self.out.clear();
                    frame(&mut self.out, r.framing, &up.buf[..take]);
                    self.write_timed(None).await
                } else {
                    self.write_timed(Some(&up.buf[..take])).await
                };
            } else {
                drained += take as u64;
            }
            if done {
                return (body.ended(client_ok), true);
            }
        }
    }

    /// Write `bytes` (or `out`) to the client before the deadline.
    pub(super) async fn write_timed(&mut self, bytes: Option<&[u8]>) -> bool {
        let bytes = bytes.unwrap_or(&self.out);
        tokio::select! {
            biased;
            written = write_all(&mut self.io, bytes) => written,
            _ = self.deadline.expired() => false,
        }
    }

    /// The idle timeout, or (0: none) a year.
    pub(super) fn idle_or_forever(&self) -> Duration {
        if self.idle_timeout.is_zero() {
            Duration::from_secs(365 * 24 * 3600)
        } else {
            self.idle_timeout
        }
    }
}

async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> bool {
    io.write_all(bytes).await.is_ok() && io.flush().await.is_ok()
}
