//! The response body type: the upstream's streamed body or a small body the proxy made,
//! optionally counting bytes for the access log (which is written when the body ends,
//! or is dropped because the client went away).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access_log::AccessRecord;
use crate::runtime::Shared;

pub struct ResponseBody {
    kind: Kind,
    log: Option<Box<PendingLog>>,
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
        ResponseBody { kind: Kind::Upstream(body), log: None }
    }

    pub fn full(bytes: Bytes) -> Self {
        ResponseBody { kind: Kind::Full(Some(bytes)), log: None }
    }

    /// Emit `record` (with `bytes_out` filled in) once this body is finished or dropped.
    pub fn log_on_end(&mut self, record: AccessRecord, shared: Arc<Shared>) {
        self.log = Some(Box::new(PendingLog { record, shared }));
        if self.is_end_stream() {
            self.flush_log();
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
        match &self.kind {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(b) => b.size_hint(),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.flush_log();
    }
}
