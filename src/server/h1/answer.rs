//! What the proxy says and records on its own: the answers it makes itself (counted
//! and logged like any other), the request id every answer carries, and the access log
//! line begun at the head and settled when the request ends.

use std::ops::Range;
use std::time::{Duration, Instant};

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::{Conn, Next, Readiness};
use super::exchange::Request;
use super::head::Head;
use super::lines;
use crate::access_log::AccessRecord;
use crate::proxy::{request_id_hex, ProxyError, ERROR_HEADER};
use crate::routing::{Backend, Route};
use crate::snapshot::Runtime;
use crate::telemetry::StatusCounters;

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Conn<S> {
    /// Answer with a response the proxy makes, counted on `counters` (with the status
    /// [`ProxyError::counted_status`] says).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn answer_error(
        &mut self,
        rt: &Runtime,
        e: ProxyError,
        req: &mut Request,
        route: Option<&Route>,
        counters: &StatusCounters,
        backend: Option<&Backend>,
        set_cookie: Option<&HeaderValue>,
        close: bool,
    ) -> Next {
        let close = close || req.client_close || self.draining();
        let status = e.status();
        let body = e.body().as_bytes();
        // A HEAD gets the length of the body it would have had, and no body.
        let sent = if req.head_request { &[][..] } else { body };
        let o = &mut self.out;
        o.clear();
        o.extend_from_slice(b"HTTP/1.1 ");
        o.extend_from_slice(status.as_str().as_bytes());
        o.push(b' ');
        o.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        o.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
        lines::line(o, ERROR_HEADER.as_bytes(), e.cause().as_bytes());
        lines::line(o, b"content-length", itoa::Buffer::new().format(body.len()).as_bytes());
        lines::line(o, rt.settings.request_id_header.as_str().as_bytes(), &self.scratch[req.id.clone()]);
        if let Some(c) = set_cookie {
            lines::line(o, b"set-cookie", c.as_bytes());
        }
        lines::line(o, b"date", &super::date::now());
        if close {
            o.extend_from_slice(b"connection: close\r\n");
        }
        o.extend_from_slice(b"\r\n");
        o.extend_from_slice(sent);
        let counted = e.counted_status();
        counters.inc(counted);
        let now = Instant::now();
        self.settle_log(req, counted, route, backend, sent.len() as u64, now - req.start);
        self.deadline.set(now + self.idle_or_forever());
        let written = self.write_timed(None).await;
        self.last_done = now;
        if close || !written {
            return Next::Close;
        }
        self.consume(req.head_len + req.body_read);
        Next::KeepAlive
    }

    /// Send the access log line, when logging: `took` is the time to the response head,
    /// as the hyper path logs it.
    pub(super) fn settle_log(
        &self,
        req: &mut Request,
        status: u16,
        route: Option<&Route>,
        backend: Option<&Backend>,
        bytes: u64,
        took: Duration,
    ) {
        let Some(mut record) = req.log.take() else { return };
        record.status = status;
        record.duration_ms = took.as_secs_f64() * 1000.0;
        record.bytes_out = bytes;
        if let Some(r) = route {
            record.route = r.name.clone();
        }
        if let Some(b) = backend {
            record.upstream = b.upstream.name.clone();
            record.version = b.upstream.version.clone();
        }
        record.request_id = String::from_utf8_lossy(&self.scratch[req.id.clone()]).into_owned();
        self.worker.plane.access_log.send(record);
    }
}

/// The request id (the client's, or a new one) at the start of `scratch`.
pub(super) fn request_id(rt: &Runtime, h: &Head<'_>, scratch: &mut Vec<u8>) -> Range<usize> {
    use crate::routing::Fields;
    scratch.clear();
    match Fields::first(h.headers, &rt.settings.request_id_header) {
        Some(v) => scratch.extend_from_slice(v),
        None => scratch.extend_from_slice(&request_id_hex()),
    }
    0..scratch.len()
}

/// The access log line, to be completed when the request ends.
pub(super) fn record(h: &Head<'_>, client: std::net::IpAddr) -> AccessRecord {
    AccessRecord::arrived(
        h.method.to_string(),
        String::from_utf8_lossy(h.host).into_owned(),
        h.path.to_string(),
        client,
    )
}
