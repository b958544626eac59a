//! One request's path: load the snapshot, find the route, pick the backend and the
//! endpoint, rewrite the head, forward, and account for the outcome.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HOST, SET_COOKIE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::error::{ProxyError, CLIENT_CLOSED};
use super::forward::{forward, Target};
use super::validate::{self, Rejection};
use super::Activity;
use super::Plane;
use crate::access_log::AccessRecord;
use crate::config::Compare;
use crate::mirror::Primary;
use crate::routing::path::normalize;
use crate::routing::{rewrite, Backend, Redirect, Route};
use crate::snapshot::Runtime;
use crate::telemetry::StatusCounters;

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
    plane: Arc<Plane>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, std::convert::Infallible> {
    let start = Instant::now();
    let _active = conn.activity.request();
    let rt = plane.runtime();
    let refused = conn.activity.next_request_refusal();
    let mut exchange = Exchange {
        plane: &plane,
        log: rt.settings.access_log.then(|| pending_record(&req, &conn, refused.is_none())),
        route: None,
        open: true,
        start,
    };
    let request_id = ensure_request_id(&mut req, &rt);
    let sent_whole = req.method() == Method::HEAD;
    let answer = match refused {
        // The stand-in for a head the framing tracker refused.
        Some(e) => Answer::unrouted(&plane, e),
        None => route_and_forward(&plane, &rt, &conn, req, &mut exchange, start).await,
    };
    Ok(exchange.settle(answer, &rt, &request_id, sent_whole))
}

/// A request being served, until its response is handed to hyper. Dropped before
/// that (hyper drops the request when the client goes away while it waits), it counts
/// the request as 499 on its route, never against the version it was sent to.
struct Exchange<'a> {
    plane: &'a Arc<Plane>,
    log: Option<AccessRecord>,
    route: Option<&'a Route>,
    open: bool,
    start: Instant,
}

/// The response and who answered it: the counters its status is counted on when it
/// ends (the version's, or the route's or nobody's for responses the proxy made).
struct Answer<'a> {
    resp: Response<ResponseBody>,
    counters: Arc<StatusCounters>,
    /// The status counted, when it is not the one sent (see [`ProxyError::counted_status`]).
    counted: Option<u16>,
    backend: Option<&'a Backend>,
}

impl<'a> Answer<'a> {
    fn unrouted(plane: &Plane, e: ProxyError) -> Self {
        Answer::failed(e, plane.telemetry.unrouted.clone(), None)
    }

    /// A route's `redirect`: `Location` from the request, counted on the route with no
    /// upstream.
    fn redirect(
        route: &Route,
        redirect: &Redirect,
        req: &Request<Incoming>,
        conn: &ConnInfo,
        host: &HeaderValue,
        path: &str,
    ) -> Self {
        // HTTP/1.0 may come without a Host: no `Location` can be built from nothing
        // (an empty host would read as `https:///evil.example`, an open redirect).
        if redirect.host.is_none() && host.is_empty() {
            return Answer::failed(ProxyError::BadRequest, route.own_responses.clone(), None);
        }
        let scheme = if conn.tls { "https" } else { "http" };
        let location = redirect.location(scheme, host.to_str().unwrap_or(""), path, req.uri().query());
        let Ok(location) = HeaderValue::try_from(location) else {
            return Answer::failed(ProxyError::BadRequest, route.own_responses.clone(), None);
        };
        let mut resp = Response::new(ResponseBody::full(Bytes::new()));
        *resp.status_mut() = redirect.status;
        resp.headers_mut().insert(http::header::LOCATION, location);
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        route.response_headers.apply(resp.headers_mut());
        Answer { resp, counters: route.own_responses.clone(), counted: None, backend: None }
    }

    fn failed(e: ProxyError, counters: Arc<StatusCounters>, backend: Option<&'a Backend>) -> Self {
        let counted = Some(e.counted_status()).filter(|s| *s != e.status().as_u16());
        Answer { resp: e.response(), counters, counted, backend }
    }
}

impl<'a> Exchange<'a> {
    /// Hand the response over; its body counts and logs it when it ends.
    fn settle(
        mut self,
        answer: Answer<'_>,
        rt: &Runtime,
        request_id: &HeaderValue,
        sent_whole: bool,
    ) -> Response<ResponseBody> {
        self.open = false;
        let Answer { mut resp, counters, counted, backend } = answer;
        resp.headers_mut().insert(rt.settings.request_id_header.clone(), request_id.clone());
        let status = resp.status();
        let counted = counted.unwrap_or(status.as_u16());
        let log = self.log.take().map(|mut record| {
            record.status = counted;
            record.duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
            if let Some(r) = self.route {
                record.route = r.name.clone();
            }
            if let Some(b) = backend {
                record.upstream = b.upstream.name.clone();
                record.version = b.upstream.version.clone();
            }
            record.request_id = String::from_utf8_lossy(request_id.as_bytes()).into_owned();
            (record, self.plane.access_log.sink())
        });
        // No body follows these: hyper will not poll for one.
        let sent_whole = sent_whole
            || status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED;
        resp.body_mut().settle_on_end(counters, counted, log, sent_whole);
        resp
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let counters = self.route.map_or(&self.plane.telemetry.unrouted, |r| &r.own_responses);
        counters.inc(CLIENT_CLOSED);
        if let Some(mut record) = self.log.take() {
            record.status = CLIENT_CLOSED;
            record.duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
            if let Some(r) = self.route {
                record.route = r.name.clone();
            }
            self.plane.access_log.send(record);
        }
    }
}

async fn route_and_forward<'r>(
    plane: &Plane,
    rt: &'r Runtime,
    conn: &ConnInfo,
    req: Request<Incoming>,
    exchange: &mut Exchange<'r>,
    start: Instant,
) -> Answer<'r> {
    if let Err(rejection) = validate::check(&req) {
        return Answer::unrouted(
            plane,
            match rejection {
                Rejection::Malformed => ProxyError::BadRequest,
                Rejection::ConnectUnsupported => ProxyError::ConnectUnsupported,
            },
        );
    }
    if req.version() == http::Version::HTTP_2 && validate::h2_header_list_over(&req, rt.settings.bound.max_header_bytes)
    {
        return Answer::unrouted(plane, ProxyError::HeaderTooLarge);
    }
    if plane.is_draining() {
        return Answer::unrouted(plane, ProxyError::Draining);
    }
    let host = effective_host(&req);
    // `OPTIONS *` is about the server as a whole: it routes like `/` and is forwarded as `*`.
    let path = if req.uri().path() == "*" { Cow::Borrowed("/") } else { normalize(req.uri().path()) };
    let Some(route) = rt.table.find(Some(host.to_str().unwrap_or("").as_bytes()), &path, req.headers()) else {
        return Answer::unrouted(plane, ProxyError::NoRoute);
    };
    exchange.route = Some(route);
    if let Some(redirect) = &route.redirect {
        return Answer::redirect(route, redirect, &req, conn, &host, &path);
    }
    let choice = route.select(req.headers(), conn.client.ip(), conn.tls);
    let backend = route.target(&choice);
    let rewritten = match req.uri().path() {
        "*" => None,
        _ => rewrite::forwarded_path(route.rewrite.as_ref(), backend.upstream.base_path.as_deref(), &path),
    };
    let forwarded = match rewritten {
        None => upstream_path_and_query(&req, &path),
        Some(p) => with_query(p, req.uri().query()),
    };
    let Some(path_and_query) = forwarded else {
        return Answer::failed(ProxyError::BadRequest, route.own_responses.clone(), None);
    };
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
    let target = Target {
        route,
        backend,
        conn,
        host,
        request_id: &rt.settings.request_id_header,
        path_and_query,
        max_body: rt.settings.limits.max_body_bytes,
        shadow: mirror.map(|m| (m, primary_rx)),
    };
    let result = forward(target, req).await;
    // The version is judged (latency, rollout tally) on what it answered, and on the
    // failures that are its own; a client's fault is the route's alone.
    let mut answer = match result {
        Ok(resp) => {
            backend.metrics.judged(resp.status().as_u16(), start.elapsed());
            Answer { resp, counters: backend.metrics.requests.clone(), counted: None, backend: Some(backend) }
        }
        Err(e) if e.blame().charges_version() => {
            backend.metrics.judged(e.status().as_u16(), start.elapsed());
            Answer::failed(e, backend.metrics.requests.clone(), Some(backend))
        }
        // Logged like it is counted: on the route, with no upstream.
        Err(e) => Answer::failed(e, route.own_responses.clone(), None),
    };
    let resp = &mut answer.resp;
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
    answer
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

/// A rewritten path with the query as sent.
fn with_query(path: String, query: Option<&str>) -> Option<PathAndQuery> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    PathAndQuery::try_from(pq).ok()
}

fn ensure_request_id(req: &mut Request<Incoming>, rt: &Runtime) -> HeaderValue {
    if let Some(id) = req.headers().get(&rt.settings.request_id_header) {
        return id.clone();
    }
    let id = new_request_id();
    req.headers_mut().insert(rt.settings.request_id_header.clone(), id.clone());
    id
}

fn new_request_id() -> HeaderValue {
    HeaderValue::from_bytes(&request_id_hex()).expect("hex is a valid header value")
}

/// A new request id: 128 random bits as 32 hex digits.
pub fn request_id_hex() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = fastrand::u128(..).to_be_bytes();
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// The access log line, filled in as the request goes. The stand-in for a refused head
/// is logged without its made-up method, host and path.
fn pending_record(req: &Request<Incoming>, conn: &ConnInfo, parsed: bool) -> AccessRecord {
    let text = |s: &str| if parsed { s.to_string() } else { String::new() };
    AccessRecord::arrived(
        text(req.method().as_str()),
        text(&String::from_utf8_lossy(effective_host(req).as_bytes())),
        text(req.uri().path()),
        conn.client.ip(),
    )
}
