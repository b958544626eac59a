//! One request on the fast path, from its parsed head to the end of its response: the
//! route and backend, the upstream head written from the client's lines, the body
//! (buffered for a retry, or streamed), attempts on pooled upstream connections, the
//! response relayed as it arrives, and the same accounting the hyper path does: who is
//! blamed for a failure, what is counted where, and the access log line.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::Chunked;
use super::conn::{Conn, Facts, Next, NoHead, Readiness, Wake, Worker, READ_BUFFER};
use super::field::{self, Kind};
use super::head::{self, Head, Verdict};
use super::lines::{self, Lines};
use super::pool::{self, UpConn};
use super::response::{self, Extras, Framing, Parsed};
use crate::access_log::{timestamp, AccessRecord};
use crate::config::HostHeader;
use crate::proxy::forward::{is_idempotent, record_attempt, GaugeGuard, Policy, REPLAY_BUFFER};
use crate::proxy::headers::VIA_VALUE;
use crate::proxy::{body_ended, body_failed, request_id_hex, Blame, ProxyError, CLIENT_CLOSED, ERROR_HEADER};
use crate::routing::path::normalize;
use crate::routing::{Backend, Route};
use crate::runtime::Runtime;
use crate::telemetry::{StatusCounters, UpstreamErrorKind};
use crate::upstream::Endpoint;

/// A response body up to this size goes out in the same write as its head.
const COALESCE: usize = 16 * 1024;
/// The most a body relay buffers per read.
const MAX_RELAY_BUFFER: usize = 64 * 1024;
/// After a client leaves mid-response, up to this much of the rest is read (and
/// dropped) so the upstream connection can be reused.
const DRAIN_LIMIT: u64 = 256 * 1024;

/// What the head decided, with the upstream head built in `scratch`.
struct Plan<'r> {
    route: &'r Route,
    backend: &'r Backend,
    set_cookie: Option<HeaderValue>,
    body_len: u64,
    head_request: bool,
    idempotent: bool,
    client_close: bool,
    /// In `scratch`: the request line, the header lines (no Host, no blank line), the
    /// client's Host value.
    line: Range<usize>,
    rest: Range<usize>,
    host: Range<usize>,
}

/// What every answer needs, whatever its outcome.
struct Request {
    head_len: usize,
    /// The client asked to close after this request.
    client_close: bool,
    /// Body bytes read with the request (consumed with it).
    body_read: usize,
    start: Instant,
    /// The request id's value, in `scratch`.
    id: Range<usize>,
    log: Option<AccessRecord>,
}

enum Built<'r> {
    Plan(Plan<'r>),
    Hyper,
    /// Answered before routing (or with no route).
    Refuse(ProxyError, bool),
}

/// How an attempt on one endpoint ended.
enum Attempt<C = UpConn> {
    /// A final response head (the client's is in `out`), on its connection.
    Answered(Relay, C),
    /// The status is retried elsewhere.
    Retry,
    Failed(ProxyError),
    /// The client left while the upstream had the request.
    ClientGone,
    /// A pooled connection had been closed by the upstream before anything of this
    /// request could have been processed: try again on a new one.
    Stale,
}

struct Relay {
    status: u16,
    len: usize,
    framing: Framing,
    keep_alive: bool,
    close: bool,
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
                        rt = self.worker.shared.runtime();
                        let id = request_id(&rt, &h, &mut self.scratch);
                        let log = rt.access_log.then(|| record(&h, self.facts.peer.ip()));
                        req = Request { head_len: h.len, client_close: h.close, body_read: 0, start, id, log };
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
                let counters = self.worker.shared.telemetry.unrouted.clone();
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
    if worker.shared.is_draining() {
        return Built::Refuse(ProxyError::Draining, h.content_length > 0);
    }
    let path = normalize(h.path);
    let Some(route) = rt.table.find(Some(h.host), &path, h.headers) else {
        return Built::Refuse(ProxyError::NoRoute, h.content_length > 0);
    };
    if route.mirror.is_some() || !route.backends.iter().all(|b| b.upstream.plain_h1) {
        return Built::Hyper;
    }
    let choice = route.select(h.headers, facts.peer.ip(), facts.tls);
    let backend = &route.backends[choice.backend];
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
    let id_name = rt.request_id_header.as_str().as_bytes();
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

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Conn<S> {
    /// Forward a routed request and relay its answer.
    async fn proxy(&mut self, rt: &Runtime, plan: Plan<'_>, mut req: Request) -> Next {
        let (route, backend) = (plan.route, plan.backend);
        let upstream = &backend.upstream;
        let cookie = plan.set_cookie.as_ref();
        let max_body = rt.file.server.limits.max_body_bytes;
        if max_body != 0 && plan.body_len > max_body {
            let e = ProxyError::BodyTooLarge;
            return self.answer_error(rt, e, &mut req, Some(route), &route.own_responses, None, cookie, true).await;
        }
        let retries = if upstream.endpoints.len() > 1 { upstream.retries } else { 0 };
        let body_at = req.head_len;
        let in_buf = (self.buf.len() - body_at) as u64;
        // A body is replayable when it is here already, or small enough to wait for.
        let replay = plan.body_len <= in_buf || (retries > 0 && plan.body_len <= REPLAY_BUFFER as u64);
        if replay && plan.body_len > in_buf {
            if let Err(e) = self.read_body(body_at + plan.body_len as usize, req.start + upstream.request_timeout).await
            {
                return self.answer_error(rt, e, &mut req, Some(route), &route.own_responses, None, cookie, true).await;
            }
        }
        if replay {
            req.body_read = plan.body_len as usize;
        }
        let answered = {
            let Some(_admitted) = upstream.admit() else {
                let e = ProxyError::OverCapacity;
                backend.metrics.judged(e.status().as_u16(), req.start.elapsed());
                let close = !replay;
                return self
                    .answer_error(rt, e, &mut req, Some(route), &backend.metrics.requests, Some(backend), cookie, close)
                    .await;
            };
            backend.metrics.in_flight.increment(1.0);
            let _gauge = GaugeGuard(&backend.metrics.in_flight);
            let mut tried: Vec<&Endpoint> = Vec::new();
            let mut outcome = Err(ProxyError::NoHealthyEndpoint);
            let mut streamed = false;
            for attempt in 0..=retries {
                let endpoint = match upstream.select(&tried) {
                    Some(e) => e,
                    None if attempt == 0 && !upstream.queue_timeout.is_zero() => {
                        match upstream.wait_ready(&tried).await {
                            Some(e) => e,
                            None => break,
                        }
                    }
                    None => break,
                };
                if retries > 0 {
                    tried.push(endpoint);
                }
                if streamed {
                    break;
                }
                let policy = Policy {
                    left: attempt < retries,
                    replayable: replay,
                    idempotent: plan.idempotent,
                    retry_on: &upstream.retry_on,
                };
                let started = if attempt == 0 { req.start } else { Instant::now() };
                let _flight = endpoint.start();
                let result =
                    self.attempt(rt, &plan, &req, endpoint, replay, &mut streamed, started, &policy, &tried).await;
                match result {
                    Attempt::Stale => unreachable!("attempt() replaces or fails a stale connection"),
                    Attempt::Answered(relay, up) => {
                        outcome = Ok((relay, up, endpoint.clone()));
                        break;
                    }
                    Attempt::Retry => {}
                    Attempt::ClientGone => {
                        outcome = Err(ProxyError::ClientGone);
                        break;
                    }
                    Attempt::Failed(e) => {
                        record_attempt(upstream, endpoint, backend, Err(e));
                        outcome = Err(e);
                        if !policy.again(Err(e)) {
                            break;
                        }
                    }
                }
            }
            outcome
        };
        let (relay, mut up, endpoint) = match answered {
            Ok(answered) => answered,
            Err(ProxyError::ClientGone) => {
                // Nobody to answer: counted on the route, never on the version.
                route.own_responses.inc(CLIENT_CLOSED);
                self.settle_log(&mut req, CLIENT_CLOSED, Some(route), None, 0);
                return Next::Close;
            }
            Err(e) => {
                // The rest of a streamed body was not read: the connection cannot go on.
                let close = e.blame() == Blame::Client || !replay;
                return if e.blame().charges_version() {
                    backend.metrics.judged(e.status().as_u16(), req.start.elapsed());
                    self.answer_error(
                        rt,
                        e,
                        &mut req,
                        Some(route),
                        &backend.metrics.requests,
                        Some(backend),
                        cookie,
                        close,
                    )
                    .await
                } else {
                    self.answer_error(rt, e, &mut req, Some(route), &route.own_responses, None, cookie, close).await
                };
            }
        };
        let head_at = Instant::now();
        backend.metrics.judged(relay.status, head_at - req.start);
        let (relayed, waited) = self.relay(&relay, &mut up).await;
        let done = if waited { Instant::now() } else { head_at };
        let counted = match relayed {
            Relayed::Done { bytes, reusable } => {
                body_ended(upstream, &endpoint, relay.status);
                if reusable && relay.keep_alive {
                    pool::checkin(&endpoint, up, done);
                }
                if let Some(l) = req.log.as_mut() {
                    l.bytes_out = bytes;
                }
                relay.status
            }
            Relayed::ClientGone { reusable } => {
                if reusable && relay.keep_alive {
                    pool::checkin(&endpoint, up, done);
                }
                self.last_done = done;
                backend.metrics.requests.inc(CLIENT_CLOSED);
                self.settle_log(&mut req, CLIENT_CLOSED, Some(route), Some(backend), 0);
                return Next::Close;
            }
            Relayed::UpstreamFailed(kind) => {
                body_failed(&backend.metrics, upstream, &endpoint, kind, relay.status);
                backend.metrics.requests.inc(relay.status);
                self.settle_log(&mut req, relay.status, Some(route), Some(backend), 0);
                return Next::Close;
            }
        };
        backend.metrics.requests.inc(counted);
        let bytes = req.log.as_ref().map_or(0, |l| l.bytes_out);
        self.settle_log(&mut req, counted, Some(route), Some(backend), bytes);
        self.last_done = done;
        self.consume(body_at + if replay { plan.body_len as usize } else { 0 });
        if relay.close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Read until the buffer holds `until` bytes (a whole small body), by `by`.
    async fn read_body(&mut self, until: usize, by: Instant) -> Result<(), ProxyError> {
        self.deadline.set(by);
        while self.buf.len() < until {
            self.buf.reserve(until - self.buf.len());
            tokio::select! {
                biased;
                read = self.io.read_buf(&mut self.buf) => match read {
                    Ok(0) => return Err(ProxyError::BodyCutShort),
                    Err(_) => return Err(ProxyError::ClientGone),
                    Ok(_) => {}
                },
                _ = self.deadline.expired() => return Err(ProxyError::ClientTimeout),
            }
        }
        Ok(())
    }

    /// One attempt on `endpoint`: send the request, and read the response head (writing
    /// the client's head into `out`).
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &mut self,
        rt: &Runtime,
        plan: &Plan<'_>,
        req: &Request,
        endpoint: &Arc<Endpoint>,
        replay: bool,
        streamed: &mut bool,
        started: Instant,
        policy: &Policy<'_>,
        tried: &[&Endpoint],
    ) -> Attempt {
        let upstream = &plan.backend.upstream;
        self.deadline.set(started + upstream.request_timeout);
        // A stale pooled connection is replaced once, when the request is safe to send
        // again; a request that is not gets a probed connection instead.
        let safe_again = replay && plan.idempotent;
        let mut fresh = false;
        loop {
            let pooled = if fresh { None } else { pool::checkout(endpoint, started, !safe_again) };
            let mut up = match pooled {
                Some(up) => up,
                None => match pool::connect(endpoint).await {
                    Ok(up) => up,
                    Err(e) => {
                        tracing::debug!(route = %plan.route.name, endpoint = %endpoint.addr, error = %e, "upstream connect failed");
                        return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Connect));
                    }
                },
            };
            match self.send(plan, req, endpoint, &mut up, replay, streamed).await {
                Ok(()) => {}
                Err(Some(e)) => return Attempt::Failed(e),
                Err(None) if up.reused && safe_again => {
                    fresh = true;
                    continue;
                }
                Err(None) => return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Reset)),
            }
            match self.response_head(rt, plan, req, endpoint, &mut up, policy, tried).await {
                Attempt::Stale if up.reused && safe_again => fresh = true,
                Attempt::Stale => return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Reset)),
                Attempt::Answered(relay, ()) => return Attempt::Answered(relay, up),
                Attempt::Retry => return Attempt::Retry,
                Attempt::Failed(e) => return Attempt::Failed(e),
                Attempt::ClientGone => return Attempt::ClientGone,
            }
        }
    }

    /// Write the upstream head and the body. `Err(None)`: the upstream connection failed
    /// (maybe a stale one); `Err(Some)`: a failure with its blame.
    async fn send(
        &mut self,
        plan: &Plan<'_>,
        req: &Request,
        endpoint: &Endpoint,
        up: &mut UpConn,
        replay: bool,
        streamed: &mut bool,
    ) -> Result<(), Option<ProxyError>> {
        let body_at = req.head_len;
        let b = &mut up.buf;
        b.clear();
        b.extend_from_slice(&self.scratch[plan.line.clone()]);
        b.extend_from_slice(b"host: ");
        match &plan.backend.upstream.host_header {
            HostHeader::Preserve => b.extend_from_slice(&self.scratch[plan.host.clone()]),
            HostHeader::Endpoint => b.extend_from_slice(endpoint.configured_host.as_bytes()),
            HostHeader::Literal(v) => b.extend_from_slice(v.as_bytes()),
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(&self.scratch[plan.rest.clone()]);
        b.extend_from_slice(b"\r\n");
        let here = (self.buf.len() - body_at).min(plan.body_len as usize);
        b.extend_from_slice(&self.buf[body_at..body_at + here]);
        let sent = tokio::select! {
            biased;
            sent = up.stream.write_all(&up.buf) => sent,
            _ = self.deadline.expired() => return Err(Some(ProxyError::Upstream(UpstreamErrorKind::Timeout))),
        };
        sent.map_err(|_| None)?;
        if replay {
            return Ok(());
        }
        // Stream the rest of the body: one attempt only.
        *streamed = true;
        let mut left = plan.body_len - here as u64;
        self.buf.truncate(body_at);
        while left > 0 {
            let chunk = left.min(16 * 1024) as usize;
            self.buf.resize(body_at + chunk, 0);
            let read = tokio::select! {
                biased;
                read = self.io.read(&mut self.buf[body_at..]) => read,
                _ = self.deadline.expired() => {
                    self.buf.truncate(body_at);
                    return Err(Some(ProxyError::ClientTimeout));
                }
            };
            let n = match read {
                Ok(0) => {
                    self.buf.truncate(body_at);
                    return Err(Some(ProxyError::BodyCutShort));
                }
                Err(_) => {
                    self.buf.truncate(body_at);
                    return Err(Some(ProxyError::ClientGone));
                }
                Ok(n) => n,
            };
            let sent = tokio::select! {
                biased;
                sent = up.stream.write_all(&self.buf[body_at..body_at + n]) => sent,
                _ = self.deadline.expired() => Err(std::io::ErrorKind::TimedOut.into()),
            };
            if let Err(e) = sent {
                self.buf.truncate(body_at);
                return Err(Some(ProxyError::Upstream(if e.kind() == std::io::ErrorKind::TimedOut {
                    UpstreamErrorKind::Timeout
                } else {
                    UpstreamErrorKind::Reset
                })));
            }
            left -= n as u64;
        }
        self.buf.truncate(body_at);
        Ok(())
    }

    /// Read the upstream's response head (skipping interim 1xx heads), watching the
    /// client for a hang-up meanwhile; decide on a retry; write the client's head.
    #[allow(clippy::too_many_arguments)]
    async fn response_head(
        &mut self,
        rt: &Runtime,
        plan: &Plan<'_>,
        req: &Request,
        endpoint: &Endpoint,
        up: &mut UpConn,
        policy: &Policy<'_>,
        tried: &[&Endpoint],
    ) -> Attempt<()> {
        let upstream = &plan.backend.upstream;
        up.buf.clear();
        let mut received = false;
        loop {
            if !up.buf.is_empty() {
                let mut slots = response::slots();
                match response::parse(&up.buf, &mut slots, plan.head_request) {
                    Parsed::Partial => {}
                    Parsed::Bad => return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Protocol)),
                    // No upgrade was asked for on this path.
                    Parsed::Head(h) if h.status == 101 => {
                        return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Protocol))
                    }
                    Parsed::Head(h) if h.status < 200 => {
                        let n = h.len;
                        up.buf.drain(..n);
                        continue;
                    }
                    Parsed::Head(h) => {
                        record_attempt(upstream, endpoint, plan.backend, Ok(h.status));
                        if policy.again(Ok(h.status)) && upstream.select(tried).is_some() {
                            tracing::debug!(route = %plan.route.name, endpoint = %endpoint.addr, status = h.status, "retrying on another endpoint");
                            return Attempt::Retry;
                        }
                        let close = plan.client_close || self.draining() || h.framing == Framing::Close;
                        let extras = Extras {
                            via: VIA_VALUE.as_bytes(),
                            version: plan
                                .route
                                .version_header
                                .as_ref()
                                .map(|n| (n.as_str().as_bytes(), upstream.version_value.as_bytes())),
                            request_id: (rt.request_id_header.as_str().as_bytes(), &self.scratch[req.id.clone()]),
                            set_cookie: plan.set_cookie.as_ref().map(HeaderValue::as_bytes),
                            close,
                        };
                        self.out.clear();
                        response::write_client_head(&mut self.out, &up.buf, &h, &extras);
                        let relay =
                            Relay { status: h.status, len: h.len, framing: h.framing, keep_alive: h.keep_alive, close };
                        return Attempt::Answered(relay, ());
                    }
                }
            }
            if up.buf.len() == up.buf.capacity() {
                up.buf.reserve(up.buf.capacity().max(4096));
            }
            // The client is watched for a hang-up (bytes it pipelines are kept).
            let watch_client = self.buf.len() < 2 * self.max_head;
            tokio::select! {
                biased;
                read = up.stream.read_buf(&mut up.buf) => match read {
                    Ok(0) | Err(_) if !received => return Attempt::Stale,
                    Ok(0) | Err(_) => return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Reset)),
                    Ok(_) => received = true,
                },
                read = self.io.read_buf(&mut self.buf), if watch_client => match read {
                    Ok(0) | Err(_) => return Attempt::ClientGone,
                    Ok(_) => {}
                },
                _ = self.deadline.expired() => return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Timeout)),
            }
        }
    }
}

/// How relaying a response body ended.
enum Relayed {
    Done {
        bytes: u64,
        reusable: bool,
    },
    /// The client stopped taking it; the rest was drained when that was cheap.
    ClientGone {
        reusable: bool,
    },
    UpstreamFailed(UpstreamErrorKind),
}

/// Where a relayed body stands.
struct Progress {
    /// Payload bytes forwarded.
    bytes: u64,
    /// The client took everything so far.
    client_ok: bool,
    /// Bytes read and dropped after the client left.
    drained: u64,
}

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Conn<S> {
    /// Send the head in `out` and the body behind it. Returns how it ended and whether
    /// it took more than the first write (the caller then reads the clock again).
    async fn relay(&mut self, r: &Relay, up: &mut UpConn) -> (Relayed, bool) {
        let mut p = Progress { bytes: 0, client_ok: true, drained: 0 };
        let mut chunked = Chunked::default();
        let mut left = match r.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        // What came with the head.
        let mut reusable = true;
        let first = &up.buf[r.len..];
        let body = match r.framing {
            Framing::None => {
                reusable = first.is_empty();
                &first[..0]
            }
            Framing::Length(_) => {
                let n = first.len().min(left as usize);
                reusable = first.len() <= n;
                left -= n as u64;
                &first[..n]
            }
            Framing::Chunked => match chunked.feed(first) {
                Ok(n) => {
                    reusable = n == first.len();
                    &first[..n]
                }
                Err(_) => return (Relayed::UpstreamFailed(UpstreamErrorKind::Protocol), false),
            },
            Framing::Close => first,
        };
        let finished = match r.framing {
            Framing::None => true,
            Framing::Length(_) => left == 0,
            Framing::Chunked => chunked.done(),
            Framing::Close => false,
        };
        if r.framing != Framing::Chunked {
            p.bytes += body.len() as u64;
        }
        if self.out.len() + body.len() <= COALESCE {
            self.out.extend_from_slice(body);
            p.client_ok = write_all(&mut self.io, &self.out).await;
        } else {
            p.client_ok = write_all(&mut self.io, &self.out).await && write_all(&mut self.io, body).await;
        }
        if finished {
            let relayed = if p.client_ok {
                Relayed::Done { bytes: p.bytes + chunked.payload, reusable }
            } else {
                Relayed::ClientGone { reusable }
            };
            return (relayed, false);
        }
        // The rest, as it arrives; a body that keeps filling the buffer gets a larger one.
        loop {
            if up.buf.len() == up.buf.capacity() && up.buf.capacity() < MAX_RELAY_BUFFER {
                up.buf.reserve(up.buf.capacity());
            }
            if !p.client_ok && (p.drained > DRAIN_LIMIT || r.framing == Framing::Close) {
                return (Relayed::ClientGone { reusable: false }, true);
            }
            up.buf.clear();
            let read = if p.client_ok {
                // The client is watched for a hang-up while the upstream is waited on.
                let watch_client = self.buf.len() < 2 * self.max_head;
                tokio::select! {
                    biased;
                    read = up.stream.read_buf(&mut up.buf) => read,
                    read = self.io.read_buf(&mut self.buf), if watch_client => {
                        if matches!(read, Ok(0) | Err(_)) {
                            p.client_ok = false;
                        }
                        continue;
                    }
                }
            } else {
                // Drained in the background of nobody: bounded in time too.
                match tokio::time::timeout(std::time::Duration::from_secs(1), up.stream.read_buf(&mut up.buf)).await {
                    Ok(read) => read,
                    Err(_) => return (Relayed::ClientGone { reusable: false }, true),
                }
            };
            let n = match read {
                Ok(0) if r.framing == Framing::Close => {
                    let relayed = if p.client_ok {
                        Relayed::Done { bytes: p.bytes, reusable: false }
                    } else {
                        Relayed::ClientGone { reusable: false }
                    };
                    return (relayed, true);
                }
                Ok(0) | Err(_) if !p.client_ok => return (Relayed::ClientGone { reusable: false }, true),
                Ok(0) | Err(_) => return (Relayed::UpstreamFailed(UpstreamErrorKind::Reset), true),
                Ok(n) => n,
            };
            let (take, done) = match r.framing {
                Framing::Length(_) => {
                    let take = n.min(left as usize);
                    left -= take as u64;
                    reusable = take == n;
                    (take, left == 0)
                }
                Framing::Chunked => match chunked.feed(&up.buf[..n]) {
                    Ok(take) => {
                        reusable = take == n;
                        (take, chunked.done())
                    }
                    Err(_) if !p.client_ok => return (Relayed::ClientGone { reusable: false }, true),
                    Err(_) => return (Relayed::UpstreamFailed(UpstreamErrorKind::Protocol), true),
                },
                _ => (n, false),
            };
            if p.client_ok {
                if r.framing != Framing::Chunked {
                    p.bytes += take as u64;
                }
                p.client_ok = write_all(&mut self.io, &up.buf[..take]).await;
            } else {
                p.drained += take as u64;
            }
            if done {
                let relayed = if p.client_ok {
                    Relayed::Done { bytes: p.bytes + chunked.payload, reusable }
                } else {
                    Relayed::ClientGone { reusable }
                };
                return (relayed, true);
            }
        }
    }

    /// Answer with a response the proxy makes, counted on `counters` (with the status
    /// [`ProxyError::counted_status`] says).
    #[allow(clippy::too_many_arguments)]
    async fn answer_error(
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
        let close = close || req.client_close;
        let status = e.status();
        let body = e.body().as_bytes();
        let o = &mut self.out;
        o.clear();
        o.extend_from_slice(b"HTTP/1.1 ");
        o.extend_from_slice(status.as_str().as_bytes());
        o.push(b' ');
        o.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        o.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
        lines::line(o, ERROR_HEADER.as_bytes(), e.cause().as_bytes());
        lines::line(o, b"content-length", itoa::Buffer::new().format(body.len()).as_bytes());
        lines::line(o, rt.request_id_header.as_str().as_bytes(), &self.scratch[req.id.clone()]);
        if let Some(c) = set_cookie {
            lines::line(o, b"set-cookie", c.as_bytes());
        }
        lines::line(o, b"date", &super::date::now());
        if close {
            o.extend_from_slice(b"connection: close\r\n");
        }
        o.extend_from_slice(b"\r\n");
        o.extend_from_slice(body);
        let counted = e.counted_status();
        counters.inc(counted);
        self.settle_log(req, counted, route, backend, 0);
        let written = write_all(&mut self.io, &self.out).await;
        self.last_done = Instant::now();
        if close || !written {
            return Next::Close;
        }
        self.consume(req.head_len + req.body_read);
        Next::KeepAlive
    }

    /// Send the access log line, when logging.
    fn settle_log(&self, req: &mut Request, status: u16, route: Option<&Route>, backend: Option<&Backend>, bytes: u64) {
        let Some(mut record) = req.log.take() else { return };
        record.status = status;
        record.duration_ms = req.start.elapsed().as_secs_f64() * 1000.0;
        record.bytes_out = bytes;
        if let Some(r) = route {
            record.route = r.name.clone();
        }
        if let Some(b) = backend {
            record.upstream = b.upstream.name.clone();
            record.version = b.upstream.version.clone();
        }
        record.request_id = String::from_utf8_lossy(&self.scratch[req.id.clone()]).into_owned();
        self.worker.shared.access_log.send(record);
    }
}

async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> bool {
    io.write_all(bytes).await.is_ok() && io.flush().await.is_ok()
}

/// The request id (the client's, or a new one) at the start of `scratch`.
fn request_id(rt: &Runtime, h: &Head<'_>, scratch: &mut Vec<u8>) -> Range<usize> {
    use crate::routing::Fields;
    scratch.clear();
    match Fields::first(h.headers, &rt.request_id_header) {
        Some(v) => scratch.extend_from_slice(v),
        None => scratch.extend_from_slice(&request_id_hex()),
    }
    0..scratch.len()
}

/// The access log line, to be completed when the request ends.
fn record(h: &Head<'_>, client: std::net::IpAddr) -> AccessRecord {
    AccessRecord {
        ts: timestamp(SystemTime::now()),
        method: h.method.to_string(),
        host: String::from_utf8_lossy(h.host).into_owned(),
        path: h.path.to_string(),
        status: 0,
        route: "".into(),
        upstream: "".into(),
        version: "".into(),
        duration_ms: 0.0,
        bytes_out: 0,
        client: client.to_canonical(),
        request_id: String::new(),
    }
}
