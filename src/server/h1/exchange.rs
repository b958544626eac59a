//! One request on the fast path, from its parsed head to the end of its response: the
//! route and backend, the upstream head written from the client's lines, the body
//! (buffered for a retry, or streamed), attempts on pooled upstream connections, the
//! response relayed as it arrives, and the same accounting the hyper path does: who is
//! blamed for a failure, what is counted where, and the access log line.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::{self, Chunked};
use super::conn::{Conn, Facts, Next, NoHead, Readiness, Wake, Worker, READ_BUFFER};
use super::field::{self, Kind};
use super::head::{self, Head, Verdict};
use super::lines::{self, Lines};
use super::pool::{self, UpConn};
use super::response::{self, Extras, Framing, Parsed};
use crate::access_log::AccessRecord;
use crate::config::HostHeader;
use crate::proxy::forward::{is_idempotent, record_attempt, GaugeGuard, Policy, REPLAY_BUFFER};
use crate::proxy::headers::VIA_VALUE;
use crate::proxy::{body_ended, body_failed, request_id_hex, Blame, ProxyError, CLIENT_CLOSED, ERROR_HEADER};
use crate::routing::path::normalize;
use crate::routing::{Backend, Route};
use crate::snapshot::Runtime;
use crate::telemetry::{StatusCounters, UpstreamErrorKind};
use crate::upstream::Endpoint;

/// A response body up to this size goes out in the same write as its head.
const COALESCE: usize = 16 * 1024;
/// How long the rest of a response is drained after its client left.
const DRAIN_TIME: Duration = Duration::from_secs(1);
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
    head_request: bool,
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

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Conn<S> {
    /// Forward a routed request and relay its answer.
    async fn proxy(&mut self, rt: &Runtime, plan: Plan<'_>, mut req: Request) -> Next {
        let (route, backend) = (plan.route, plan.backend);
        let upstream = &backend.upstream;
        let cookie = plan.set_cookie.as_ref();
        let max_body = rt.settings.limits.max_body_bytes;
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
        // The first attempt's request_timeout runs from the head's arrival, unless the
        // request waited (for its body, or for an endpoint): then from the attempt.
        let mut waited = plan.body_len > in_buf;
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
                        waited = true;
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
                let started = if attempt == 0 && !waited { req.start } else { Instant::now() };
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
                let took = req.start.elapsed();
                self.settle_log(&mut req, CLIENT_CLOSED, Some(route), None, 0, took);
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
        let took = head_at - req.start;
        backend.metrics.judged(relay.status, took);
        let consumed = body_at + req.body_read;
        let (relayed, waited) = self.relay(&relay, &mut up, head_at, consumed).await;
        let done = if waited { Instant::now() } else { head_at };
        self.last_done = done;
        let counted = match relayed {
            Relayed::Done { bytes, reusable } => {
                body_ended(upstream, &endpoint, relay.status);
                if reusable && relay.keep_alive {
                    pool::checkin(&endpoint, up, done);
                }
                backend.metrics.requests.inc(relay.status);
                self.settle_log(&mut req, relay.status, Some(route), Some(backend), bytes, took);
                relay.status
            }
            Relayed::ClientGone { bytes, reusable } => {
                if reusable && relay.keep_alive {
                    pool::checkin(&endpoint, up, done);
                }
                backend.metrics.requests.inc(CLIENT_CLOSED);
                self.settle_log(&mut req, CLIENT_CLOSED, Some(route), Some(backend), bytes, took);
                return Next::Close;
            }
            Relayed::UpstreamFailed { kind, bytes } => {
                body_failed(&backend.metrics, upstream, &endpoint, kind, relay.status);
                backend.metrics.requests.inc(relay.status);
                self.settle_log(&mut req, relay.status, Some(route), Some(backend), bytes, took);
                return Next::Close;
            }
        };
        debug_assert_eq!(counted, relay.status);
        self.consume(consumed);
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
        // A pooled connection found closed once the request is on it is replaced once,
        // when the request is safe to send again.
        let safe_again = replay && plan.idempotent;
        let mut fresh = false;
        loop {
            let pooled = if fresh { None } else { pool::checkout(endpoint, started) };
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
            let cut = match self.send(plan, req, endpoint, &mut up, replay, streamed).await {
                Ok(cut) => cut,
                Err(Some(e)) => return Attempt::Failed(e),
                Err(None) if up.reused && safe_again => {
                    fresh = true;
                    continue;
                }
                Err(None) => return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Reset)),
            };
            match self.response_head(rt, plan, req, endpoint, &mut up, policy, tried, cut).await {
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
    ) -> Result<bool, Option<ProxyError>> {
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
            return Ok(false);
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
                if e.kind() == std::io::ErrorKind::TimedOut {
                    return Err(Some(ProxyError::Upstream(UpstreamErrorKind::Timeout)));
                }
                // The upstream stopped reading: it may have answered already (a 413, a
                // 401), and that answer is the client's.
                return Ok(true);
            }
            left -= n as u64;
        }
        self.buf.truncate(body_at);
        Ok(false)
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
        upload_cut: bool,
    ) -> Attempt<()> {
        let upstream = &plan.backend.upstream;
        up.buf.clear();
        let mut received = false;
        let mut client_done = false;
        loop {
            if !up.buf.is_empty() {
                let mut slots = response::slots();
                match response::parse(&up.buf, &mut slots, plan.head_request, self.max_head) {
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
                        // A client whose body was not all read cannot send another request.
                        let close = plan.client_close || self.draining() || upload_cut;
                        let extras = Extras {
                            via: VIA_VALUE.as_bytes(),
                            version: plan
                                .route
                                .version_header
                                .as_ref()
                                .map(|n| (n.as_str().as_bytes(), upstream.version_value.as_bytes())),
                            request_id: (
                                rt.settings.request_id_header.as_str().as_bytes(),
                                &self.scratch[req.id.clone()],
                            ),
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
            let watch_client = !client_done && self.buf.len() < 2 * self.max_head;
            tokio::select! {
                biased;
                read = up.stream.read_buf(&mut up.buf) => match read {
                    Ok(0) | Err(_) if !received => return Attempt::Stale,
                    Ok(0) | Err(_) => return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Reset)),
                    Ok(_) => received = true,
                },
                read = self.io.read_buf(&mut self.buf), if watch_client => match read {
                    // It only finished sending: its pipelined requests still get answers.
                    Ok(0) if self.buf.len() > req.head_len + req.body_read => client_done = true,
                    Ok(0) | Err(_) => return Attempt::ClientGone,
                    Ok(_) => {}
                },
                _ = self.deadline.expired() => return Attempt::Failed(ProxyError::Upstream(UpstreamErrorKind::Timeout)),
            }
        }
    }
}

/// How relaying a response body ended, and the payload bytes that reached the client.
enum Relayed {
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
    async fn relay(&mut self, r: &Relay, up: &mut UpConn, head_at: Instant, consumed: usize) -> (Relayed, bool) {
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
    async fn write_timed(&mut self, bytes: Option<&[u8]>) -> bool {
        let bytes = bytes.unwrap_or(&self.out);
        tokio::select! {
            biased;
            written = write_all(&mut self.io, bytes) => written,
            _ = self.deadline.expired() => false,
        }
    }

    /// The idle timeout, or (0: none) a year.
    fn idle_or_forever(&self) -> Duration {
        if self.idle_timeout.is_zero() {
            Duration::from_secs(365 * 24 * 3600)
        } else {
            self.idle_timeout
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
    fn settle_log(
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

async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> bool {
    io.write_all(bytes).await.is_ok() && io.flush().await.is_ok()
}

/// The request id (the client's, or a new one) at the start of `scratch`.
fn request_id(rt: &Runtime, h: &Head<'_>, scratch: &mut Vec<u8>) -> Range<usize> {
    use crate::routing::Fields;
    scratch.clear();
    match Fields::first(h.headers, &rt.settings.request_id_header) {
        Some(v) => scratch.extend_from_slice(v),
        None => scratch.extend_from_slice(&request_id_hex()),
    }
    0..scratch.len()
}

/// The access log line, to be completed when the request ends.
fn record(h: &Head<'_>, client: std::net::IpAddr) -> AccessRecord {
    AccessRecord::arrived(
        h.method.to_string(),
        String::from_utf8_lossy(h.host).into_owned(),
        h.path.to_string(),
        client,
    )
}
