//! The response body type: the upstream's streamed body or a small body the proxy made.
//! It settles the request's accounting when it ends: `switchyard_requests_total` with the
//! status sent, or with 499 when it is dropped first (the client went away mid-response),
//! and the access log line (bytes counted as they go). Optionally it digests what the
//! client receives for a mirror's `compare = "body"`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::error::CLIENT_CLOSED;
use crate::access_log::{AccessRecord, Sink};
use crate::mirror::Primary;
use crate::telemetry::{BackendMetrics, StatusCounters, UpstreamErrorKind};
use crate::upstream::{Endpoint, Upstream};

pub struct ResponseBody {
    kind: Kind,
    /// Who sent an upstream body: a failure mid-body (the upstream reset or closed
    /// before its body ended) is that endpoint's fault, charged when it happens.
    source: Option<Source>,
    /// The counters to count the status on when the body ends (499 if it is dropped).
    settle: Option<(Arc<StatusCounters>, u16)>,
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

/// The backend, upstream and endpoint an upstream body came from, and its status.
pub struct Source {
    pub metrics: Arc<BackendMetrics>,
    pub upstream: Arc<Upstream>,
    pub endpoint: Arc<Endpoint>,
    pub status: u16,
}

impl Source {
    /// The body ended whole: the exchange succeeded, unless its status said otherwise
    /// (a 5xx was recorded as a failure when its head arrived).
    fn ended(self) {
        body_ended(&self.upstream, &self.endpoint, self.status);
    }

    fn failed(self, kind: UpstreamErrorKind) {
        body_failed(&self.metrics, &self.upstream, &self.endpoint, kind, self.status);
    }
}

/// A response body (of `status`) ended whole: a success of the endpoint that sent it,
/// unless the status was a 5xx (recorded as a failure when its head arrived).
pub fn body_ended(upstream: &Upstream, endpoint: &Endpoint, status: u16) {
    if status < 500 {
        upstream.record(endpoint, false);
    }
}

/// The upstream failed mid-body after its head (`status`) was judged: its fault.
pub fn body_failed(
    metrics: &BackendMetrics,
    upstream: &Upstream,
    endpoint: &Endpoint,
    kind: UpstreamErrorKind,
    status: u16,
) {
    metrics.failed_after_head(kind, status);
    upstream.record(endpoint, true);
}

struct PendingLog {
    record: AccessRecord,
    sink: Sink,
}

impl ResponseBody {
    pub fn upstream(body: Incoming, source: Source) -> Self {
        ResponseBody { kind: Kind::Upstream(body), source: Some(source), settle: None, log: None, digest: None }
    }

    /// A body in hand; an empty one is at its end already (nothing for hyper to poll,
    /// so it settles as sent, not as abandoned).
    pub fn full(bytes: Bytes) -> Self {
        let kind = Kind::Full((!bytes.is_empty()).then_some(bytes));
        ResponseBody { kind, source: None, settle: None, log: None, digest: None }
    }

    /// Count `status` on `counters` and emit `log` (with `bytes_out` filled in) when this
    /// body has been sent to its end; if it is dropped before, the client went away:
    /// count and log 499 instead. `sent_whole` says no body will be sent (a HEAD request,
    /// or a status without a body): settle now.
    pub fn settle_on_end(
        &mut self,
        counters: Arc<StatusCounters>,
        status: u16,
        log: Option<(AccessRecord, Sink)>,
        sent_whole: bool,
    ) {
        self.settle = Some((counters, status));
        self.log = log.map(|(record, sink)| Box::new(PendingLog { record, sink }));
        if sent_whole || self.is_end_stream() {
            self.finish(None);
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

    /// Count and log the request once: with the status sent, or `instead` (499).
    fn finish(&mut self, instead: Option<u16>) {
        // A body that ended whole is a success of the endpoint that sent it; one the
        // client abandoned says nothing about it.
        if let (Some(source), None) = (self.source.take(), instead) {
            source.ended();
        }
        if let Some((counters, status)) = self.settle.take() {
            counters.inc(instead.unwrap_or(status));
        }
        if let Some(mut p) = self.log.take() {
            if let Some(status) = instead {
                p.record.status = status;
            }
            p.sink.send(p.record);
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
        // hyper stops polling a body after what it takes for the last frame (trailers,
        // or data that leaves no length to send), so whether this frame ended the body
        // is decided here, without asking an HTTP/2 body (which takes a lock).
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || this.kind.nothing_left(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if let Some(tap) = this.digest.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        tap.hasher.update(d);
                    }
                    if ended {
                        this.finish_digest();
                    }
                }
                Poll::Ready(None) => this.finish_digest(),
                // An error or a drop: the comparison cannot be made.
                Poll::Ready(Some(Err(_))) => this.digest = None,
                Poll::Pending => {}
            }
        }
        if let (Some(log), Poll::Ready(Some(Ok(frame)))) = (this.log.as_mut(), &polled) {
            if let Some(d) = frame.data_ref() {
                log.record.bytes_out += d.len() as u64;
            }
        }
        if let Poll::Ready(Some(Err(e))) = &polled {
            // The upstream failed mid-body. What was sent stands (the status is counted
            // as sent), and the failure is the upstream's.
            if let Some(source) = this.source.take() {
                source.failed(if e.is_parse() { UpstreamErrorKind::Protocol } else { UpstreamErrorKind::Reset });
            }
            this.finish(None);
        } else if ended {
            this.finish(None);
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
    /// Nothing of the body is left to send (a known length fully read).
    fn nothing_left(&self) -> bool {
        match self {
            Kind::Upstream(b) => b.size_hint().exact() == Some(0),
            Kind::Full(b) => b.is_none(),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Full(b) => b.is_none(),
        }
    }
}

impl Drop for ResponseBody {
    /// Dropped before its end: the client is gone (nginx's 499).
    fn drop(&mut self) {
        self.finish(Some(CLIENT_CLOSED));
    }
}
