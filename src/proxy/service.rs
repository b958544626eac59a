//! One request's path: load the snapshot, find the route, pick the backend and the
//! endpoint, rewrite the head, forward, and account for the outcome.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{HOST, SET_COOKIE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::error::ProxyError;
use super::headers::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::upgrade;
use super::upstream_body::{BodyTooLarge, UpstreamBody};
use super::validate::{self, Rejection};
use crate::access_log::{timestamp, AccessRecord};
use crate::config::{Compare, HostHeader, Protocol};
use crate::mirror::{self, Mirror, Primary};
use crate::routing::path::normalize;
use crate::routing::{Backend, Route};
use crate::runtime::{Runtime, Shared};
use crate::server::Activity;
use crate::telemetry::UpstreamErrorKind;
use crate::upstream::{Endpoint, Upstream};
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use tokio::sync::oneshot;

/// What the request path needs to know about the client connection; built once per
/// connection so per-request work is a refcount bump.
pub struct ConnInfo {
    pub client: SocketAddr,
    /// The client IP, preformatted for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    pub proto: HeaderValue,
    /// Accepted on a TLS listener (sticky cookies get `Secure`).
    pub tls: bool,
    /// The connection's traffic, timeouts and framing verdict.
    pub activity: Arc<Activity>,
}

impl ConnInfo {
    pub fn new(client: SocketAddr, tls: bool) -> Self {
        let ip = client.ip().to_canonical().to_string();
        ConnInfo {
            client,
            client_ip: HeaderValue::from_str(&ip).expect("an IP is a valid header value"),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            tls,
            activity: Arc::new(Activity::new()),
        }
    }
}

/// Serve one request. Never fails: every problem becomes a response.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, std::convert::Infallible> {
    let start = Instant::now();
    let _active = conn.activity.request();
    let rt = shared.runtime();
    let log = rt.access_log.then(|| pending_record(&req, &conn));
    let (mut resp, route, backend) = route_and_forward(&shared, &rt, &conn, req, start).await;
    if let Some(mut record) = log {
        record.status = resp.status().as_u16();
        record.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        if let Some(r) = route {
            record.route = r.name.clone();
        }
        if let Some(b) = backend {
            record.upstream = b.upstream.name.clone();
            record.version = b.upstream.version.clone();
        }
        if let Some(id) = resp.headers().get(&rt.request_id_header) {
            record.request_id = String::from_utf8_lossy(id.as_bytes()).into_owned();
        }
        resp.body_mut().log_on_end(record, shared.clone());
    }
    Ok(resp)
}

type Outcome<'r> = (Response<ResponseBody>, Option<&'r Route>, Option<&'r Backend>);

async fn route_and_forward<'r>(
    shared: &Shared,
    rt: &'r Runtime,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    start: Instant,
) -> Outcome<'r> {
    let request_id = ensure_request_id(&mut req, rt);
    let unrouted = |e: ProxyError| {
        shared.telemetry.unrouted.inc(e.status().as_u16());
        (with_request_id(e.response(), rt, &request_id), None, None)
    };

    // The connection's framing tracker saw this head state its length twice.
    if conn.activity.next_request_ambiguous() {
        return unrouted(ProxyError::BadRequest);
    }
    if let Err(rejection) = validate::check(&req) {
        return unrouted(match rejection {
            Rejection::Malformed => ProxyError::BadRequest,
            Rejection::ConnectUnsupported => ProxyError::ConnectUnsupported,
        });
    }
    if shared.is_draining() {
        return unrouted(ProxyError::Draining);
    }
    let host = effective_host(&req);
    // `OPTIONS *` is about the server as a whole: it routes like `/` and is forwarded as `*`.
    let path = if req.uri().path() == "*" { Cow::Borrowed("/") } else { normalize(req.uri().path()) };
    let Some(route) = rt.table.find(Some(host.to_str().unwrap_or("")), &path, req.headers()) else {
        return unrouted(ProxyError::NoRoute);
    };
    let Some(path_and_query) = upstream_path_and_query(&req, &path) else {
        return unrouted(ProxyError::BadRequest);
    };
    let choice = route.select(req.headers(), conn.client.ip(), conn.tls);
    let backend = &route.backends[choice.backend];
    let max_body = rt.file.server.limits.max_body_bytes;
    // Shadow traffic: sampled after the primary was chosen; comparing needs the
    // primary's answer, which reaches the copy over a oneshot channel.
    let mirror = route.mirror.as_ref().filter(|m| m.sample());
    let (primary_tx, primary_rx) = match mirror {
        Some(m) if m.compare != Compare::None => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let shadow = mirror.map(|m| (m, primary_rx));
    let mut resp = match forward(route, backend, conn, req, host, path_and_query, max_body, start, shadow).await {
        Ok(resp) => resp,
        Err(e) => {
            // The client's fault (400, 408, 413) is the route's, not the version's; what
            // happened at the upstream (502, 503, 504) counts against the version.
            match e {
                ProxyError::BadRequest | ProxyError::BodyTooLarge | ProxyError::ClientTimeout => {
                    route.own_responses.inc(e.status().as_u16())
                }
                _ => backend.metrics.answered(e.status().as_u16()),
            }
            e.response()
        }
    };
    if let (Some(tx), Some(m)) = (primary_tx, mirror) {
        let status = resp.status().as_u16();
        match m.compare {
            Compare::Body => resp.body_mut().digest_into(status, tx),
            _ => {
                let _ = tx.send(Primary { status, digest: None });
            }
        }
    }
    if let Some(cookie) = choice.set_cookie {
        resp.headers_mut().append(SET_COOKIE, cookie);
    }
    (with_request_id(resp, rt, &request_id), Some(route), Some(backend))
}

/// Send the request to an endpoint of the backend's upstream, retrying on another
/// endpoint when the upstream's `retry_on` allows it and the request can be replayed,
/// and return the response head.
#[allow(clippy::too_many_arguments)]
async fn forward(
    route: &Route,
    backend: &Backend,
    conn: &ConnInfo,
    req: Request<Incoming>,
    host: HeaderValue,
    path_and_query: PathAndQuery,
    max_body: u64,
    start: Instant,
    shadow: Option<(&Arc<Mirror>, Option<oneshot::Receiver<Primary>>)>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upstream = &backend.upstream;
    let declared = declared_length(req.headers());
    if max_body != 0 && declared.is_some_and(|n| n > max_body) {
        return Err(ProxyError::BodyTooLarge);
    }
    let mut req = req;
    let client_upgrade = upgrade::is_websocket(&req).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, incoming) = req.into_parts();

    // Rewrite the head for the upstream.
    let upstream_host = match &upstream.host_header {
        HostHeader::Preserve => Some(host.clone()),
        HostHeader::Endpoint => None, // per endpoint, below
        HostHeader::Literal(v) => Some(v.clone()),
    };
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    headers::drop_underscore_names(h);
    headers::append_list(h, &X_FORWARDED_FOR, &conn.client_ip);
    h.insert(X_FORWARDED_PROTO.clone(), conn.proto.clone());
    let client_host = shadow.is_some().then(|| host.clone());
    h.insert(X_FORWARDED_HOST.clone(), host);
    headers::add_via(h);
    if client_upgrade.is_some() {
        upgrade::keep_upgrade_headers(h);
    }

    // A body is replayable when it is empty, or small and declared so it can be buffered.
    // Retries need another endpoint: with one there is nothing to buffer or copy for.
    // Upgrades are never retried.
    let retries = if upstream.endpoints.len() > 1 && client_upgrade.is_none() { upstream.retries } else { 0 };
    let mut payload = if incoming.is_end_stream() {
        Payload::Replay(Bytes::new())
    } else if retries > 0 && declared.is_some_and(|n| n <= REPLAY_BUFFER as u64) {
        // A client that stalls mid-body must not hold the request forever.
        let body = tokio::time::timeout(upstream.request_timeout, Limited::new(incoming, REPLAY_BUFFER).collect());
        match body.await {
            Ok(Ok(collected)) => Payload::Replay(collected.to_bytes()),
            Ok(Err(_)) => return Err(ProxyError::BadRequest),
            Err(_) => return Err(ProxyError::ClientTimeout),
        }
    } else {
        Payload::Stream(Some(UpstreamBody::stream(incoming, max_body)))
    };
    let replayable = matches!(payload, Payload::Replay(_));
    // Upgrades are never mirrored. The copy's body is the buffered one, or a tee of the
    // streamed one that reaches the mirror when the primary has read it; bodies declared
    // over the copy limit are not copied.
    if let (Some((m, primary)), Some(host), None) = (shadow, client_host, &client_upgrade) {
        let too_large = declared.is_some_and(|n| n > mirror::MAX_COPY as u64);
        if too_large {
            m.metrics.count(mirror::Outcome::Dropped);
        } else if let Some(slot) = m.reserve() {
            let body = match &mut payload {
                Payload::Replay(body) => Some(mirror::CopyBody::Ready(body.clone())),
                Payload::Stream(Some(stream)) => {
                    let (tx, rx) = oneshot::channel();
                    stream.tee(mirror::MAX_COPY, tx);
                    Some(mirror::CopyBody::Teed(rx))
                }
                Payload::Stream(None) => None,
            };
            if let Some(body) = body {
                let copy = mirror::Copy {
                    method: parts.method.clone(),
                    path_and_query: path_and_query.clone(),
                    headers: parts.headers.clone(),
                    host,
                    body,
                };
                mirror::spawn(m, slot, copy, primary);
            }
        }
    }
    let idempotent = is_idempotent(&parts.method);
    // Counted from here on, once the body (if buffered) is in hand.
    let _admitted = upstream.admit().ok_or(ProxyError::OverCapacity)?;

    let metrics = &backend.metrics;
    metrics.in_flight.increment(1.0);
    let _gauge = GaugeGuard(&metrics.in_flight);
    let mut tried: Vec<&Endpoint> = Vec::new();
    let mut last_error = ProxyError::NoHealthyEndpoint;
    // A response we were ready to retry; if no retry happens it is still the answer.
    let mut retryable: Option<Response<Incoming>> = None;
    for attempt in 0..=retries {
        let endpoint = match upstream.select(&tried) {
            Some(e) => e,
            // No endpoint ready yet (a cold start): wait for one, within queue_timeout.
            None if attempt == 0 && !upstream.queue_timeout.is_zero() => match upstream.wait_ready(&tried).await {
                Some(e) => e,
                None => break,
            },
            None => break,
        };
        tried.push(endpoint);
        let attempt_body = match &mut payload {
            Payload::Replay(b) => UpstreamBody::full(b.clone()),
            Payload::Stream(s) => match s.take() {
                Some(b) => b,
                None => break,
            },
        };
        let upstream_host = upstream_host.clone().unwrap_or_else(|| endpoint.configured_host.clone());
        let uri = Uri::builder()
            .scheme(endpoint.scheme.clone())
            .authority(endpoint.request_authority(&upstream_host))
            .path_and_query(path_and_query.clone())
            .build()
            .map_err(|_| ProxyError::BadRequest)?;
        let version = if endpoint.transport.protocol == Protocol::H2 { Version::HTTP_2 } else { Version::HTTP_11 };
        let mut head = Request::builder().method(parts.method.clone()).uri(uri).version(version);
        if let Some(h) = head.headers_mut() {
            *h = if attempt == retries || !replayable {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            h.insert(HOST, upstream_host);
        }
        let upstream_req = head.body(attempt_body).map_err(|_| ProxyError::BadRequest)?;
        let left = attempt < retries;

        let _endpoint_flight = endpoint.start();
        let result = tokio::time::timeout(upstream.request_timeout, endpoint.client().request(upstream_req)).await;
        match result {
            // A response whose framing is ambiguous could smuggle bytes to the client.
            Ok(Ok(resp)) if validate::check_response_framing(resp.headers()).is_err() => {
                metrics.error(UpstreamErrorKind::Protocol);
                upstream.record(endpoint, true);
                last_error = ProxyError::BadUpstreamResponse;
                break;
            }
            Ok(Ok(mut resp)) if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_some() => {
                upstream.record(endpoint, false);
                metrics.timed(start.elapsed());
                metrics.answered(101);
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                conn.activity.mark_upgraded();
                upgrade::tunnel(client_upgrade.expect("checked"), upstream_upgrade, route.name.clone());
                let mut resp = finish_response(resp, route, upstream);
                upgrade::keep_upgrade_headers(resp.headers_mut());
                return Ok(resp);
            }
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                upstream.record(endpoint, status >= 500);
                if left && replayable && idempotent && upstream.retry_on.status(status) {
                    tracing::debug!(route = %route.name, upstream = %upstream.name, endpoint = %endpoint.addr, status, "retrying on another endpoint");
                    retryable = Some(resp);
                    continue;
                }
                metrics.timed(start.elapsed());
                metrics.answered(status);
                return Ok(finish_response(resp, route, upstream));
            }
            Ok(Err(e)) => {
                if is_body_too_large(&e) {
                    return Err(ProxyError::BodyTooLarge);
                }
                let (kind, err) = classify(&e);
                tracing::debug!(route = %route.name, upstream = %upstream.name, endpoint = %endpoint.addr, error = %e, "upstream request failed");
                metrics.error(kind);
                upstream.record(endpoint, true);
                last_error = err;
                retryable = None;
                // A connect failure provably never reached the upstream; a reset may have.
                let retry = match kind {
                    UpstreamErrorKind::Connect => upstream.retry_on.connect_failure,
                    UpstreamErrorKind::Reset => upstream.retry_on.reset && idempotent,
                    _ => false,
                };
                if !(left && replayable && retry) {
                    break;
                }
            }
            Err(_elapsed) => {
                metrics.error(UpstreamErrorKind::Timeout);
                upstream.record(endpoint, true);
                last_error = ProxyError::UpstreamTimeout;
                retryable = None;
                break;
            }
        }
    }
    metrics.timed(start.elapsed());
    match retryable {
        Some(resp) => {
            metrics.answered(resp.status().as_u16());
            Ok(finish_response(resp, route, upstream))
        }
        None => Err(last_error),
    }
}

/// Bodies up to this size are buffered so a retry can send them again.
const REPLAY_BUFFER: usize = 64 * 1024;

fn finish_response(resp: Response<Incoming>, route: &Route, upstream: &Upstream) -> Response<ResponseBody> {
    let mut resp = resp.map(ResponseBody::upstream);
    let h = resp.headers_mut();
    headers::strip_hop_by_hop(h);
    headers::add_via(h);
    if let Some(name) = &route.version_header {
        h.insert(name.clone(), upstream.version_value.clone());
    }
    resp
}

/// Decrements an in-flight gauge on every exit path.
struct GaugeGuard<'g>(&'g metrics::Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The request body across attempts.
enum Payload {
    /// Buffered (or empty): every attempt sends a copy.
    Replay(Bytes),
    /// Streamed: only one attempt can send it.
    Stream(Option<UpstreamBody>),
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn is_idempotent(m: &http::Method) -> bool {
    use http::Method;
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

fn is_body_too_large(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<BodyTooLarge>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The host the request is for: an absolute-form target's authority wins over `Host`
/// (RFC 9112 §3.2.2), and HTTP/2 requests carry it as `:authority`. (Validation has
/// already refused HTTP/1.1 requests without exactly one `Host`.)
fn effective_host(req: &Request<Incoming>) -> HeaderValue {
    if let Some(auth) = req.uri().authority() {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            return v;
        }
    }
    req.headers().get(HOST).cloned().unwrap_or(HeaderValue::from_static(""))
}

/// The normalized path with the query as sent. When normalization changed nothing the
/// original bytes are reused (a refcount, no copy).
#[allow(clippy::ptr_arg)] // borrowed vs owned is the information used here
fn upstream_path_and_query(req: &Request<Incoming>, path: &Cow<'_, str>) -> Option<PathAndQuery> {
    match (path, req.uri().path_and_query()) {
        (Cow::Borrowed(_), Some(pq)) => Some(pq.clone()),
        _ => {
            let pq = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_string(),
            };
            PathAndQuery::try_from(pq).ok()
        }
    }
}

fn ensure_request_id(req: &mut Request<Incoming>, rt: &Runtime) -> HeaderValue {
    if let Some(id) = req.headers().get(&rt.request_id_header) {
        return id.clone();
    }
    let id = new_request_id();
    req.headers_mut().insert(rt.request_id_header.clone(), id.clone());
    id
}

fn with_request_id(mut resp: Response<ResponseBody>, rt: &Runtime, id: &HeaderValue) -> Response<ResponseBody> {
    resp.headers_mut().insert(rt.request_id_header.clone(), id.clone());
    resp
}

/// 128 random bits as 32 hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (4 * (31 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
}

/// Map a client error to its metric kind and the response the client gets.
fn classify(e: &hyper_util::client::legacy::Error) -> (UpstreamErrorKind, ProxyError) {
    if e.is_connect() {
        return (UpstreamErrorKind::Connect, ProxyError::UpstreamConnect);
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(he) = s.downcast_ref::<hyper::Error>() {
            if he.is_parse() || he.is_parse_status() || he.is_parse_too_large() {
                return (UpstreamErrorKind::Protocol, ProxyError::BadUpstreamResponse);
            }
        }
        source = s.source();
    }
    (UpstreamErrorKind::Reset, ProxyError::BadUpstreamResponse)
}

fn pending_record(req: &Request<Incoming>, conn: &ConnInfo) -> AccessRecord {
    let host = String::from_utf8_lossy(effective_host(req).as_bytes()).into_owned();
    AccessRecord {
        ts: timestamp(SystemTime::now()),
        method: req.method().as_str().to_string(),
        host,
        path: req.uri().path().to_string(),
        status: 0,
        route: "".into(),
        upstream: "".into(),
        version: "".into(),
        duration_ms: 0.0,
        bytes_out: 0,
        client: conn.client.ip().to_canonical(),
        request_id: String::new(),
    }
}
