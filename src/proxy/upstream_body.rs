//! The request body sent upstream: nothing, a buffered copy (replayable, for retries), or
//! the client's body streamed through with `max_body_bytes` enforced as it flows, so the
//! upstream never receives more than the limit. A streamed body can also be teed: a copy
//! of up to a bound is kept as it flows to the upstream and handed over when the body
//! ends (a mirror's copy: the primary is never held up waiting for the body).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent more than `max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds max_body_bytes")]
pub struct BodyTooLarge;

pub struct UpstreamBody(Kind);

enum Kind {
    Full(Option<Bytes>),
    Stream { inner: Incoming, limit: u64, seen: u64, tee: Option<Box<Tee>> },
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
    pub fn stream(inner: Incoming, limit: u64) -> Self {
        UpstreamBody(Kind::Stream { inner, limit, seen: 0, tee: None })
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
            Kind::Stream { inner, limit, seen, tee } => {
                let polled: Option<Result<Frame<Bytes>, BoxError>> = match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            *seen += d.len() as u64;
                        }
                        if *limit != 0 && *seen > *limit {
                            Some(Err(Box::new(BodyTooLarge)))
                        } else {
                            Some(Ok(frame))
                        }
                    }
                    Poll::Ready(Some(Err(e))) => Some(Err(Box::new(e))),
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
