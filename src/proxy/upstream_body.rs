//! The request body sent upstream: nothing, a buffered copy (replayable, for retries), or
//! the client's body streamed through with `max_body_bytes` enforced as it flows, so the
//! upstream never receives more than the limit.

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
    Stream { inner: Incoming, limit: u64, seen: u64 },
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
        UpstreamBody(Kind::Stream { inner, limit, seen: 0 })
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Kind::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            Kind::Stream { inner, limit, seen } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        *seen += d.len() as u64;
                        if *limit != 0 && *seen > *limit {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
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
