//! The response body type: the upstream's streamed body or a small body the proxy made,
//! optionally counting bytes for the access log (which is written when the body ends,
//! or is dropped because the client went away), and optionally digesting what the client
//! receives for a mirror's `compare = "body"`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access_log::AccessRecord;
use crate::mirror::Primary;
use crate::runtime::Shared;

pub struct ResponseBody {
    kind: Kind,
    log: Option<Box<PendingLog>>,
    digest: Option<Box<DigestTap>>,
}

/// Hashes the body as it streams and hands the digest to the mirror's comparison when
/// the body ends (dropped early: the mirror counts the comparison as dropped).
struct DigestTap {
    status: u16,
    hasher: xxhash_rust::xxh3::Xxh3,
    to: tokio::sync::oneshot::Sender<Primary>,
}

enum Kind {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

struct PendingLog {
    record: AccessRecord,
    shared: Arc<Shared>,
}

impl ResponseBody {
    pub fn upstream(body: Incoming) -> Self {
        ResponseBody { kind: Kind::Upstream(body), log: None, digest: None }
    }

    pub fn full(bytes: Bytes) -> Self {
        ResponseBody { kind: Kind::Full(Some(bytes)), log: None, digest: None }
    }

    /// Emit `record` (with `bytes_out` filled in) once this body is finished or dropped.
    pub fn log_on_end(&mut self, record: AccessRecord, shared: Arc<Shared>) {
        self.log = Some(Box::new(PendingLog { record, shared }));
        if self.is_end_stream() {
            self.flush_log();
        }
    }

    /// Send this body's digest (with `status`) to `to` once it has been sent in full.
    pub fn digest_into(&mut self, status: u16, to: tokio::sync::oneshot::Sender<Primary>) {
        let tap = DigestTap { status, hasher: xxhash_rust::xxh3::Xxh3::new(), to };
        if self.is_end_stream() {
            let _ = tap.to.send(Primary { status, digest: Some(tap.hasher.digest()) });
        } else {
            self.digest = Some(Box::new(tap));
        }
    }

    fn finish_digest(&mut self) {
        if let Some(tap) = self.digest.take() {
            let _ = tap.to.send(Primary { status: tap.status, digest: Some(tap.hasher.digest()) });
        }
    }

    fn flush_log(&mut self) {
        if let Some(p) = self.log.take() {
            p.shared.access_log.send(p.record);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Upstream(b) => Pin::new(b).poll_frame(cx),
            Kind::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        if let Some(tap) = this.digest.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        tap.hasher.update(d);
                    }
                    // hyper stops polling a body that says it has ended.
                    if this.kind.is_end_stream() {
                        this.finish_digest();
                    }
                }
                Poll::Ready(None) => this.finish_digest(),
                // An error or a drop: the comparison cannot be made.
                Poll::Ready(Some(Err(_))) => this.digest = None,
                Poll::Pending => {}
            }
        }
        if let Some(log) = this.log.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        log.record.bytes_out += d.len() as u64;
                    }
                }
                Poll::Ready(_) => this.flush_log(),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.kind.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(b) => b.size_hint(),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Kind {
    fn is_end_stream(&self) -> bool {
        match self {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Full(b) => b.is_none(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.flush_log();
    }
}
