//! The request body sent upstream (at the bottom of the layers: the upstream clients
//! are typed with it, the request path builds it): nothing, a buffered copy (replayable, for retries), or
//! the client's body streamed through with `max_body_bytes` enforced as it flows, so the
//! upstream never receives more than the limit. A streamed body can also be teed: a copy
//! of up to a bound is kept as it flows to the upstream and handed over when the body
//! ends (a mirror's copy: the primary is never held up waiting for the body).
//!
//! A streamed body is where a client's fault shows up while the upstream exchange is
//! under way. It records the fault in a [`BodyWatch`] the request path keeps (an
//! HTTP/2 upstream client drops the body's error and reports only a reset stream, so
//! the error chain alone cannot carry the blame), wraps it in [`ClientBodyError`] for
//! the HTTP/1 client's error chain, and records whether the exchange is waiting on the
//! client, so a timeout can tell a stalled client (408) from a stalled upstream (504).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a client's request body failed; the request path turns it into its answer
/// (400, 413, or 499 when nobody is left to answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// Bad framing (chunk syntax, a chunk size no two readers agree on).
    Malformed,
    /// The client closed its side before the body ended.
    CutShort,
    /// Over `max_body_bytes`.
    TooLarge,
    /// The connection or stream was reset.
    Gone,
}

/// The client's request body failed: malformed (400), cut short by the client closing
/// its side (400, counted 499), over `max_body_bytes` (413), or the client went away
/// (499). Found in an upstream exchange's error chain, it means the client is to
/// blame, not the upstream.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0:?}")]
pub struct ClientBodyError(pub ClientFault);

impl ClientBodyError {
    /// What a failure of the client's body stream says about the client.
    pub fn from_incoming(e: &hyper::Error) -> Self {
        use std::io::ErrorKind;
        if e.is_incomplete_message() {
            return ClientBodyError(ClientFault::CutShort);
        }
        if e.is_parse() {
            return ClientBodyError(ClientFault::Malformed);
        }
        let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
        ClientBodyError(match io.map(std::io::Error::kind) {
            // Bad chunk framing.
            Some(ErrorKind::InvalidData | ErrorKind::InvalidInput) => ClientFault::Malformed,
            // The stream ended before the body did: the client closed its side.
            Some(ErrorKind::UnexpectedEof) => ClientFault::CutShort,
            // A reset connection or stream: nobody is left to answer.
            _ => ClientFault::Gone,
        })
    }
}

pub struct UpstreamBody(Kind);

/// What the request path learns from a streamed body while the exchange runs.
#[derive(Debug, Default)]
pub struct BodyWatch {
    /// The last read of the client's body found nothing to send.
    waiting: AtomicBool,
    /// The client's fault, once its body failed ([`fault_code`]; 0 = none).
    fault: AtomicU8,
}

impl BodyWatch {
    /// The exchange is waiting on the client's body.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The client's body failed, and how.
    pub fn client_fault(&self) -> Option<ClientFault> {
        match self.fault.load(Ordering::Relaxed) {
            0 => None,
            1 => Some(ClientFault::Malformed),
            2 => Some(ClientFault::CutShort),
            3 => Some(ClientFault::TooLarge),
            _ => Some(ClientFault::Gone),
        }
    }

    fn fault(&self, e: ClientBodyError) -> BoxError {
        self.fault.store(fault_code(e.0), Ordering::Relaxed);
        Box::new(e)
    }
}

fn fault_code(e: ClientFault) -> u8 {
    match e {
        ClientFault::Malformed => 1,
        ClientFault::CutShort => 2,
        ClientFault::TooLarge => 3,
        ClientFault::Gone => 4,
    }
}

enum Kind {
    Full(Option<Bytes>),
    Stream { inner: Incoming, limit: u64, seen: u64, tee: Option<Box<Tee>>, watch: Arc<BodyWatch> },
}

/// The copy being kept of a streamed body.
struct Tee {
    copy: bytes::BytesMut,
    max: usize,
    to: tokio::sync::oneshot::Sender<Bytes>,
}

impl UpstreamBody {
    pub fn empty() -> Self {
        UpstreamBody(Kind::Full(None))
    }

    pub fn full(bytes: Bytes) -> Self {
        UpstreamBody(Kind::Full(if bytes.is_empty() { None } else { Some(bytes) }))
    }

    /// Stream `inner`, failing once more than `limit` bytes (0 = no limit) went through.
    /// `watch` learns of the client's faults and whether the exchange waits on it.
    pub fn stream(inner: Incoming, limit: u64, watch: Arc<BodyWatch>) -> Self {
        UpstreamBody(Kind::Stream { inner, limit, seen: 0, tee: None, watch })
    }

    /// Keep a copy of this body (up to `max` bytes) and send it to `to` when the body has
    /// been read to its end. A body over `max`, or one that fails, sends nothing (the
    /// receiver sees the sender dropped).
    pub fn tee(&mut self, max: usize, to: tokio::sync::oneshot::Sender<Bytes>) {
        match &mut self.0 {
            Kind::Full(b) => {
                let _ = to.send(b.clone().unwrap_or_default());
            }
            Kind::Stream { tee, .. } => *tee = Some(Box::new(Tee { copy: bytes::BytesMut::new(), max, to })),
        }
    }
}

/// Feed a polled frame to the tee; send the copy when the body has ended.
fn feed(tee: &mut Option<Box<Tee>>, polled: &Option<Result<Frame<Bytes>, BoxError>>, ended: bool) {
    let Some(t) = tee.as_mut() else { return };
    match polled {
        Some(Ok(frame)) => {
            if let Some(d) = frame.data_ref() {
                if t.copy.len() + d.len() > t.max {
                    *tee = None; // too large to copy
                    return;
                }
                t.copy.extend_from_slice(d);
            }
        }
        Some(Err(_)) => {
            *tee = None;
            return;
        }
        None => {}
    }
    if ended || polled.is_none() {
        if let Some(t) = tee.take() {
            let _ = t.to.send(t.copy.freeze());
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Kind::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            Kind::Stream { inner, limit, seen, tee, watch } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                watch.waiting.store(polled.is_pending(), Ordering::Relaxed);
                let polled: Option<Result<Frame<Bytes>, BoxError>> = match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            *seen += d.len() as u64;
                        }
                        if *limit != 0 && *seen > *limit {
                            Some(Err(watch.fault(ClientBodyError(ClientFault::TooLarge))))
                        } else {
                            Some(Ok(frame))
                        }
                    }
                    Poll::Ready(Some(Err(e))) => Some(Err(watch.fault(ClientBodyError::from_incoming(&e)))),
                    Poll::Ready(None) => None,
                    Poll::Pending => return Poll::Pending,
                };
                // hyper stops polling a body that says it has ended.
                feed(tee, &polled, inner.is_end_stream());
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(b) => b.is_none(),
            Kind::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream { inner, .. } => inner.size_hint(),
        }
    }
}
