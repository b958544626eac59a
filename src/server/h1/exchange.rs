//! One request on the fast path, from its parsed head to the end of its response: the
//! route and backend, the upstream head written from the client's lines, the body
//! (buffered for a retry, or streamed), attempts on pooled upstream connections, the
//! response relayed as it arrives, and the same accounting the hyper path does: who is
//! blamed for a failure, what is counted where, and the access log line.
//!
//! This file owns the entry point (reading the head) and the plan: the route, the
//! backend and the upstream head built in `scratch`. The rest is in its siblings:
//! `forward` takes a routed request through admission and its attempts, `attempt`
//! makes one attempt on one endpoint, `relay` relays the response, and `answer` has
//! the proxy's own answers, the request id and the access log line.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::answer::{record, request_id};
use super::conn::{Conn, Facts, Next, NoHead, Readiness, Wake, Worker, READ_BUFFER};
use super::field::{self, Kind};
use super::head::{self, Head, Verdict};
use super::lines::{self, Lines};
use crate::access_log::AccessRecord;
use crate::proxy::forward::is_idempotent;
use crate::proxy::headers::VIA_VALUE;
use crate::proxy::{Blame, ProxyError};
use crate::routing::path::normalize;
use crate::routing::{Backend, Route};
use crate::snapshot::Runtime;

/// What the head decided, with the upstream head built in `scratch`.
pub(super) struct Plan<'r> {
    pub(super) route: &'r Route,
    pub(super) backend: &'r Backend,
    pub(super) set_cookie: Option<HeaderValue>,
    pub(super) body_len: u64,
    pub(super) head_request: bool,
    pub(super) idempotent: bool,
    pub(super) client_close: bool,
    /// In `scratch`: the request line, the header lines (no Host, no blank line), the
    /// client's Host value.
    pub(super) line: Range<usize>,
    pub(super) rest: Range<usize>,
    pub(super) host: Range<usize>,
}

/// What every answer needs, whatever its outcome.
pub(super) struct Request {
    pub(super) head_len: usize,
    /// The client asked to close after this request.
    pub(super) client_close: bool,
    pub(super) head_request: bool,
    /// Body bytes read with the request (consumed with it).
    pub(super) body_read: usize,
    pub(super) start: Instant,
    /// The request id's value, in `scratch`.
    pub(super) id: Range<usize>,
    pub(super) log: Option<AccessRecord>,
}

enum Built<'r> {
    Plan(Plan<'r>),
    Hyper,
    /// Answered before routing (or with no route).
    Refuse(ProxyError, bool),
}

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Conn<S> {
    pub async fn serve_one(&mut self) -> Next {
        // A pipelined head already here has its head deadline set when it turns out
        // incomplete, like any other.
        let mut head_started = false;
        let rt: Arc<Runtime>;
        let built;
        let mut req;
        loop {
            if !self.buf.is_empty() {
                let mut slots = head::slots();
                match head::parse(&self.buf, &mut slots, self.max_head) {
                    Verdict::Fast(h) => {
                        let start = Instant::now();
                        rt = self.worker.plane.runtime();
                        let id = request_id(&rt, &h, &mut self.scratch);
                        let log = rt.settings.access_log.then(|| record(&h, self.facts.peer.ip()));
                        req = Request {
                            head_len: h.len,
                            client_close: h.close,
                            head_request: h.method == "HEAD",
                            body_read: 0,
                            start,
                            id,
                            log,
                        };
                        built = build(&rt, &h, &self.buf, req.id.clone(), &mut self.scratch, &self.facts, &self.worker);
                        break;
                    }
                    Verdict::Fallback => return Next::Hyper,
                    Verdict::Partial => {}
                }
            }
            match self.read_more(&mut head_started).await {
                Ok(()) => {}
                Err(NoHead::Close) => return Next::Close,
            }
        }
        let plan = match built {
            Built::Plan(plan) => plan,
            Built::Hyper => return Next::Hyper,
            Built::Refuse(e, has_body) => {
                let counters = self.worker.plane.telemetry.unrouted.clone();
                let close = has_body || e.blame() == Blame::Client;
                return self.answer_error(&rt, e, &mut req, None, &counters, None, None, close).await;
            }
        };
        self.proxy(&rt, plan, req).await
    }

    /// One more read of a head in progress (or the next one), within the idle or head
    /// deadline. A connection found idle when its timer ticks gives its read buffer
    /// back and waits for bytes without one.
    async fn read_more(&mut self, head_started: &mut bool) -> Result<(), NoHead> {
        if !self.buf.is_empty() && !*head_started {
            *head_started = true;
            self.deadline.set(Instant::now() + self.header_timeout);
        } else if !*head_started {
            self.deadline.set(self.last_done + self.idle_timeout);
        }
        let idle = self.buf.is_empty();
        let timed = !(idle && self.idle_timeout.is_zero());
        loop {
            if *self.stop.borrow_and_update() && idle {
                return Err(NoHead::Close);
            }
            if self.buf.capacity() == 0 {
                // Idle without a buffer: wait until a read would find bytes.
                tokio::select! {
                    biased;
                    ready = std::future::poll_fn(|cx| self.io.poll_readable(cx)) => match ready {
                        Some(Ok(())) | None => self.buf.reserve(READ_BUFFER),
                        Some(Err(_)) => return Err(NoHead::Close),
                    },
                    wake = self.deadline.wake(), if timed => if wake == Wake::Expired {
                        return Err(NoHead::Close);
                    },
                    _ = self.stop.changed() => return Err(NoHead::Close),
                }
                continue;
            }
            if self.buf.len() == self.buf.capacity() {
                self.buf.reserve(self.buf.capacity().max(READ_BUFFER));
            }
            return tokio::select! {
                biased;
                read = self.io.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => Err(NoHead::Close),
                    Ok(_) => Ok(()),
                },
                wake = self.deadline.wake(), if timed => match wake {
                    Wake::Expired => Err(NoHead::Close),
                    Wake::Tick => {
                        if idle && self.io.can_wait_unbuffered() {
                            self.buf = Vec::new();
                        }
                        continue;
                    }
                },
                _ = self.stop.changed(), if idle => Err(NoHead::Close),
            };
        }
    }
}

/// Route the head and build the upstream head in `scratch` (after the request id).
fn build<'r>(
    rt: &'r Runtime,
    h: &Head<'_>,
    src: &[u8],
    id: Range<usize>,
    s: &mut Vec<u8>,
    facts: &Facts,
    worker: &Worker,
) -> Built<'r> {
    if worker.plane.is_draining() {
        return Built::Refuse(ProxyError::Draining, h.content_length > 0);
    }
    let path = normalize(h.path);
    let Some(route) = rt.table.find(Some(h.host), &path, h.headers) else {
        return Built::Refuse(ProxyError::NoRoute, h.content_length > 0);
    };
    if !route.plain_h1 {
        return Built::Hyper;
    }
    let choice = route.select(h.headers, facts.peer.ip(), facts.tls);
    let backend = route.target(&choice);
    let host_at = s.len();
    s.extend_from_slice(h.host);
    let host_range = host_at..s.len();
    let line_at = s.len();
    s.extend_from_slice(h.method.as_bytes());
    s.push(b' ');
    s.extend_from_slice(path.as_bytes());
    if let Some(q) = h.query {
        s.push(b'?');
        s.extend_from_slice(q.as_bytes());
    }
    s.extend_from_slice(b" HTTP/1.1\r\n");
    let line = s.len();
    let mut forwarded_for = false;
    let mut via = false;
    let id_name = rt.settings.request_id_header.as_str().as_bytes();
    let mut has_id = false;
    let mut kept = Lines::new(src);
    for f in h.headers {
        let name = f.name.as_bytes();
        match field::kind(name) {
            Kind::Te => {
                let trailers = f.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
                if trailers {
                    kept.flush(s);
                    s.extend_from_slice(b"te: trailers\r\n");
                }
            }
            Kind::Host | Kind::HopByHop | Kind::XForwardedProto | Kind::XForwardedHost => {}
            // Folded with ours, below.
            Kind::XForwardedFor => forwarded_for = true,
            Kind::Via => via = true,
            _ if name.contains(&b'_') => {}
            _ => {
                has_id |= name.eq_ignore_ascii_case(id_name);
                kept.keep(s, f);
            }
        }
    }
    kept.flush(s);
    // List fields arrive as one line: the client's values, then ours.
    s.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_for {
        for v in h.headers.iter().filter(|f| f.name.eq_ignore_ascii_case("x-forwarded-for")) {
            s.extend_from_slice(v.value);
            s.extend_from_slice(b", ");
        }
    }
    s.extend_from_slice(facts.client_ip.as_bytes());
    s.extend_from_slice(if facts.tls {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    lines::line(s, b"x-forwarded-host", h.host);
    s.extend_from_slice(b"via: ");
    if via {
        for v in h.headers.iter().filter(|f| f.name.eq_ignore_ascii_case("via")) {
            s.extend_from_slice(v.value);
            s.extend_from_slice(b", ");
        }
    }
    s.extend_from_slice(VIA_VALUE.as_bytes());
    s.extend_from_slice(b"\r\n");
    if !has_id {
        s.extend_from_slice(id_name);
        s.extend_from_slice(b": ");
        s.extend_from_within(id.clone());
        s.extend_from_slice(b"\r\n");
    }
    let rest = s.len();
    Built::Plan(Plan {
        route,
        backend,
        set_cookie: choice.set_cookie,
        body_len: h.content_length,
        head_request: h.method == "HEAD",
        idempotent: is_idempotent(h.method.as_bytes()),
        client_close: h.close,
        line: line_at..line,
        rest: line..rest,
        host: host_range,
    })
}
