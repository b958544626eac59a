//! One request's path: load the snapshot, find the route, pick the backend and the
//! endpoint, rewrite the head, forward, and account for the outcome.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{HOST, SET_COOKIE};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::error::ProxyError;
use super::headers::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::validate::{self, Rejection};
use crate::access_log::{timestamp, AccessRecord};
use crate::config::HostHeader;
use crate::routing::path::normalize;
use crate::routing::{Backend, Route};
use crate::runtime::{Runtime, Shared};
use crate::telemetry::UpstreamErrorKind;

/// What the request path needs to know about the client connection; built once per
/// connection so per-request work is a refcount bump.
pub struct ConnInfo {
    pub client: SocketAddr,
    /// The client IP, preformatted for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    pub proto: HeaderValue,
    /// Accepted on a TLS listener (sticky cookies get `Secure`).
    pub tls: bool,
}

impl ConnInfo {
    pub fn new(client: SocketAddr, tls: bool) -> Self {
        let ip = client.ip().to_canonical().to_string();
        ConnInfo {
            client,
            client_ip: HeaderValue::from_str(&ip).expect("an IP is a valid header value"),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            tls,
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
    let rt = shared.runtime();
    let log = rt.access_log.then(|| pending_record(&req, &conn, &rt));
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
    let mut resp = match forward(route, backend, conn, req, host, path_and_query, start).await {
        Ok(resp) => resp,
        Err(e) => {
            backend.metrics.requests.inc(e.status().as_u16());
            e.response()
        }
    };
    if let Some(cookie) = choice.set_cookie {
        resp.headers_mut().append(SET_COOKIE, cookie);
    }
    (with_request_id(resp, rt, &request_id), Some(route), Some(backend))
}

/// Send the request to one endpoint of the backend's upstream and return its response
/// head, counting the exchange on the backend's metrics.
async fn forward(
    route: &Route,
    backend: &Backend,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    host: HeaderValue,
    path_and_query: PathAndQuery,
    start: Instant,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upstream = &backend.upstream;
    let endpoint = upstream.select().ok_or(ProxyError::NoHealthyEndpoint)?;

    // Rewrite the head for the upstream.
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(endpoint.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ProxyError::BadRequest)?;
    let upstream_host = match &upstream.host_header {
        HostHeader::Preserve => host.clone(),
        HostHeader::Endpoint => endpoint.configured_host.clone(),
        HostHeader::Literal(v) => v.clone(),
    };
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let h = req.headers_mut();
    headers::strip_hop_by_hop(h);
    headers::drop_underscore_names(h);
    headers::append_list(h, &X_FORWARDED_FOR, &conn.client_ip);
    h.insert(X_FORWARDED_PROTO.clone(), conn.proto.clone());
    h.insert(X_FORWARDED_HOST.clone(), host);
    h.insert(HOST, upstream_host);
    headers::add_via(h);

    // Forward.
    let metrics = &backend.metrics;
    let _endpoint_flight = endpoint.start();
    metrics.in_flight.increment(1.0);
    let result = tokio::time::timeout(upstream.request_timeout, upstream.client.request(req)).await;
    metrics.in_flight.decrement(1.0);
    metrics.duration.record(start.elapsed().as_secs_f64());

    let mut resp = match result {
        // A response whose framing is ambiguous could smuggle bytes to the client.
        Ok(Ok(resp)) if validate::check_response_framing(resp.headers()).is_err() => {
            metrics.error(UpstreamErrorKind::Protocol);
            return Err(ProxyError::BadUpstreamResponse);
        }
        Ok(Ok(resp)) => resp.map(ResponseBody::upstream),
        Ok(Err(e)) => {
            let (kind, err) = classify(&e);
            tracing::debug!(route = %route.name, upstream = %upstream.name, endpoint = %endpoint.addr, error = %e, "upstream request failed");
            metrics.error(kind);
            return Err(err);
        }
        Err(_elapsed) => {
            metrics.error(UpstreamErrorKind::Timeout);
            return Err(ProxyError::UpstreamTimeout);
        }
    };
    metrics.requests.inc(resp.status().as_u16());
    let h = resp.headers_mut();
    headers::strip_hop_by_hop(h);
    headers::add_via(h);
    if let Some(name) = &route.version_header {
        h.insert(name.clone(), upstream.version_value.clone());
    }
    Ok(resp)
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

fn pending_record(req: &Request<Incoming>, conn: &ConnInfo, rt: &Runtime) -> AccessRecord {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(HOST).map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()))
        .unwrap_or_default();
    let _ = rt;
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
