//! Sending one request to its backend: the upstream head, the body (buffered for a
//! retry, or streamed), a mirror's copy, attempts on the upstream's endpoints, and for
//! each attempt one verdict on whose fault a failure was. That verdict decides the
//! endpoint's outlier accounting and the upstream error counter here, and (through the
//! returned [`ProxyError`]) everything the caller counts.

use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::body::{ResponseBody, Source};
use super::error::{Blame, ProxyError};
use super::headers::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::service::ConnInfo;
use super::upgrade;
use super::validate;
use crate::body::{BodyWatch, ClientBodyError, UpstreamBody};
use crate::config::{HostHeader, Protocol, RetryOn};
use crate::mirror::{self, Mirror, Primary};
use crate::routing::{Backend, Route};
use crate::telemetry::UpstreamErrorKind;
use crate::upstream::{Endpoint, Upstream};

/// Bodies up to this size are buffered so a retry can send them again.
pub(crate) const REPLAY_BUFFER: usize = 64 * 1024;

/// What [`forward`] needs besides the request.
pub(super) struct Target<'a> {
    pub route: &'a Route,
    pub backend: &'a Backend,
    pub conn: &'a ConnInfo,
    pub host: HeaderValue,
    /// The request id's header name: the id was decided before forwarding, and a
    /// client's `Connection` header cannot strip it.
    pub request_id: &'a HeaderName,
    pub path_and_query: PathAndQuery,
    pub max_body: u64,
    pub shadow: Option<(&'a Arc<Mirror>, Option<oneshot::Receiver<Primary>>)>,
}

/// Send the request to an endpoint of the backend's upstream, retrying on another
/// endpoint when the upstream's `retry_on` allows it and the request can be replayed,
/// and return the response head, or the failure with its blame.
pub(super) async fn forward(t: Target<'_>, req: Request<Incoming>) -> Result<Response<ResponseBody>, ProxyError> {
    let Target { route, backend, conn, host, request_id, path_and_query, max_body, shadow } = t;
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
    headers::strip_hop_by_hop(h, Some(request_id));
    headers::drop_underscore_names(h);
    // The route's transforms after the client's `Connection` has had its say (it may not
    // strip what a transform sets); forwarding headers stay the proxy's (config refuses
    // transforms of those names and of hop-by-hop ones).
    route.request_headers.apply(h);
    if parts.version == Version::HTTP_2 {
        headers::fold_cookies(h);
    }
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
    // What a streamed body tells of the client while the exchange runs.
    let mut watch = None;
    // A signed request's body is hashed into its signature: buffered whole, up to the
    // signer's max_body_bytes (beyond it: 413, and nothing is sent).
    let signed_limit = upstream.identity.as_ref().and_then(|i| i.buffers_body());
    let mut payload = if incoming.is_end_stream() {
        Payload::Replay(Bytes::new())
    } else if let Some(limit) = signed_limit {
        if declared.is_some_and(|n| n > limit) {
            return Err(ProxyError::BodyTooLarge);
        }
        // The server's own limit still holds for bodies that do not declare a length.
        let limit = if max_body != 0 { limit.min(max_body) } else { limit };
        let cap = usize::try_from(limit).unwrap_or(usize::MAX);
        let body = tokio::time::timeout(upstream.request_timeout, Limited::new(incoming, cap).collect());
        match body.await {
            Ok(Ok(collected)) => Payload::Replay(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(ProxyError::BodyTooLarge),
            Ok(Err(e)) => return Err(client_body_failure(&*e)),
            Err(_) => return Err(ProxyError::ClientTimeout),
        }
    } else if retries > 0 && declared.is_some_and(|n| n <= REPLAY_BUFFER as u64) {
        // A client that stalls mid-body must not hold the request forever.
        let body = tokio::time::timeout(upstream.request_timeout, Limited::new(incoming, REPLAY_BUFFER).collect());
        match body.await {
            Ok(Ok(collected)) => Payload::Replay(collected.to_bytes()),
            Ok(Err(e)) => return Err(client_body_failure(&*e)),
            Err(_) => return Err(ProxyError::ClientTimeout),
        }
    } else {
        let w = Arc::new(BodyWatch::default());
        watch = Some(w.clone());
        Payload::Stream(Some(UpstreamBody::stream(incoming, max_body, w)))
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
    // The upstream's transforms after the mirror's copy was taken: a function key for
    // the primary never goes to the shadow.
    upstream.request_headers.apply(&mut parts.headers);
    let idempotent = is_idempotent(parts.method.as_str().as_bytes());
    // Counted from here on, once the body (if buffered) is in hand.
    let _admitted = upstream.admit().ok_or(ProxyError::OverCapacity)?;

    let metrics = &backend.metrics;
    metrics.in_flight.increment(1.0);
    let _gauge = GaugeGuard(&metrics.in_flight);
    let mut tried: Vec<&Endpoint> = Vec::new();
    let mut last_error = ProxyError::NoHealthyEndpoint;
    // A response we were ready to retry; if no retry happens it is still the answer.
    let mut retryable: Option<(Response<Incoming>, &Arc<Endpoint>)> = None;
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
        let mut upstream_req = head.body(attempt_body).map_err(|_| ProxyError::BadRequest)?;
        if let Some(identity) = &upstream.identity {
            let (mut p, b) = upstream_req.into_parts();
            let body: &[u8] = match &payload {
                Payload::Replay(bytes) => bytes,
                Payload::Stream(_) => &[],
            };
            if let Err(e) = identity.apply(&p.method, &p.uri, &mut p.headers, body) {
                tracing::debug!(route = %route.name, upstream = %upstream.name, error = %e, "no identity for the upstream: 503 upstream-auth");
                return Err(ProxyError::UpstreamAuth);
            }
            upstream_req = Request::from_parts(p, b);
        }

        let _endpoint_flight = endpoint.start();
        let result = tokio::time::timeout(upstream.request_timeout, endpoint.client().request(upstream_req)).await;
        let outcome = match result {
            // A response whose framing is ambiguous could smuggle bytes to the client.
            Ok(Ok(resp)) if validate::check_response_framing(resp.headers()).is_err() => {
                Err(ProxyError::Upstream(UpstreamErrorKind::Protocol))
            }
            // hyper's buffer limit only bounds a head loosely (it is checked between
            // reads): the head as received is measured here, as the fast path does.
            Ok(Ok(resp)) if response_head_len(&resp) > endpoint.transport.max_head => {
                Err(ProxyError::Upstream(UpstreamErrorKind::Protocol))
            }
            // Switching protocols nobody asked to switch: what follows is not HTTP the
            // client could read.
            Ok(Ok(resp)) if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none() => {
                Err(ProxyError::Upstream(UpstreamErrorKind::Protocol))
            }
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                tracing::debug!(route = %route.name, upstream = %upstream.name, endpoint = %endpoint.addr, error = %e, "upstream request failed");
                // The client's body failed first: whatever the HTTP client made of it
                // (an HTTP/2 client reports only a reset stream), the fault is the client's.
                Err(watch.as_ref().and_then(|w| w.client_fault()).map_or_else(|| classify(&e), ProxyError::from))
            }
            // Still sending a body the client has not finished: the client stalled.
            Err(_elapsed) if watch.as_ref().is_some_and(|w| w.waiting_on_client()) => Err(ProxyError::ClientTimeout),
            Err(_elapsed) => Err(ProxyError::Upstream(UpstreamErrorKind::Timeout)),
        };
        let status = outcome.as_ref().map(|r| r.status().as_u16()).map_err(|e| *e);
        record_attempt(upstream, endpoint, backend, status);
        let retry = Policy { left: attempt < retries, replayable, idempotent, retry_on: &upstream.retry_on };
        match outcome {
            Ok(mut resp) if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_some() => {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                conn.activity.mark_upgraded();
                upgrade::tunnel(client_upgrade.expect("checked"), upstream_upgrade, route.name.clone());
                let mut resp = finish_response(resp, route, backend, endpoint);
                upgrade::keep_upgrade_headers(resp.headers_mut());
                return Ok(resp);
            }
            Ok(resp) => {
                if retry.again(Ok(resp.status().as_u16())) {
                    tracing::debug!(route = %route.name, upstream = %upstream.name, endpoint = %endpoint.addr, status = resp.status().as_u16(), "retrying on another endpoint");
                    retryable = Some((resp, endpoint));
                    continue;
                }
                return Ok(finish_response(resp, route, backend, endpoint));
            }
            Err(e) => {
                last_error = e;
                retryable = None;
                if !retry.again(Err(e)) {
                    break;
                }
            }
        }
    }
    match retryable {
        Some((resp, endpoint)) => Ok(finish_response(resp, route, backend, endpoint)),
        None => Err(last_error),
    }
}

/// An attempt's outcome for the endpoint that served it: a 5xx or a failure of the
/// upstream's own counts toward its ejection (and the upstream error counter); a
/// client's fault says nothing about the endpoint and is not recorded at all. Any other
/// answer is recorded when its body ends (whole: a success; broken off: a failure).
pub(crate) fn record_attempt(
    upstream: &Upstream,
    endpoint: &Endpoint,
    backend: &Backend,
    outcome: Result<u16, ProxyError>,
) {
    match outcome {
        Ok(status) if status >= 500 => upstream.record(endpoint, true),
        Ok(_) => {}
        Err(e) => {
            if let Blame::Upstream(kind) = e.blame() {
                backend.metrics.error(kind);
                upstream.record(endpoint, true);
            }
        }
    }
}

/// Whether an attempt is tried again on another endpoint.
pub(crate) struct Policy<'a> {
    /// Attempts remain.
    pub left: bool,
    /// The body can be sent again.
    pub replayable: bool,
    pub idempotent: bool,
    pub retry_on: &'a RetryOn,
}

impl Policy<'_> {
    pub fn again(&self, outcome: Result<u16, ProxyError>) -> bool {
        if !(self.left && self.replayable) {
            return false;
        }
        match outcome {
            Ok(status) => self.idempotent && self.retry_on.status(status),
            // A connect failure provably never reached the upstream; a reset may have.
            Err(ProxyError::Upstream(UpstreamErrorKind::Connect)) => self.retry_on.connect_failure,
            Err(ProxyError::Upstream(UpstreamErrorKind::Reset)) => self.retry_on.reset && self.idempotent,
            // Timeouts and bad responses may have had effects; the client's faults
            // would fail again anywhere.
            Err(_) => false,
        }
    }
}

fn finish_response(
    resp: Response<Incoming>,
    route: &Route,
    backend: &Backend,
    endpoint: &Arc<Endpoint>,
) -> Response<ResponseBody> {
    let upstream = &backend.upstream;
    let source = Source {
        metrics: backend.metrics.clone(),
        upstream: upstream.clone(),
        endpoint: endpoint.clone(),
        status: resp.status().as_u16(),
    };
    let mut resp = resp.map(|body| ResponseBody::upstream(body, source));
    let h = resp.headers_mut();
    headers::strip_hop_by_hop(h, None);
    upstream.response_headers.apply(h);
    route.response_headers.apply(h);
    headers::add_via(h);
    if let Some(name) = &route.version_header {
        h.insert(name.clone(), upstream.version_value.clone());
    }
    resp
}

/// Decrements an in-flight gauge on every exit path.
pub(crate) struct GaugeGuard<'g>(pub &'g metrics::Gauge);

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

/// The size of a response head as HTTP/1.1 would carry it (a status line, then
/// `name: value` lines): what `max_header_bytes` bounds.
fn response_head_len<B>(resp: &Response<B>) -> usize {
    let status_line = "HTTP/1.1 200 \r\n".len() + resp.status().canonical_reason().map_or(0, str::len);
    status_line + 2 + resp.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>()
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

pub(crate) fn is_idempotent(method: &[u8]) -> bool {
    matches!(method, b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE")
}

/// Why a buffered read of the client's body failed (always the client's fault).
fn client_body_failure(e: &(dyn std::error::Error + 'static)) -> ProxyError {
    match e.downcast_ref::<hyper::Error>() {
        Some(he) => ClientBodyError::from_incoming(he).0.into(),
        // Over the buffer although it declared less: its framing lied.
        None => ProxyError::BadRequest,
    }
}

/// Whose fault a failed exchange was: the client's, when its body failed while being
/// sent (found in the error's chain), else the upstream's, by kind.
fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source = std::error::Error::source(e);
    let mut kind = UpstreamErrorKind::Reset;
    while let Some(s) = source {
        if let Some(client) = s.downcast_ref::<ClientBodyError>() {
            return client.0.into();
        }
        if let Some(he) = s.downcast_ref::<hyper::Error>() {
            if he.is_parse() || he.is_parse_status() || he.is_parse_too_large() {
                kind = UpstreamErrorKind::Protocol;
            }
        }
        source = s.source();
    }
    if e.is_connect() {
        kind = UpstreamErrorKind::Connect;
    }
    ProxyError::Upstream(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_what_the_upstream_failed_and_can_be_replayed() {
        let retry_on = RetryOn { connect_failure: true, reset: true, status_503: true, ..RetryOn::default() };
        let p = |left, replayable, idempotent| Policy { left, replayable, idempotent, retry_on: &retry_on };
        let connect = Err(ProxyError::Upstream(UpstreamErrorKind::Connect));
        let reset = Err(ProxyError::Upstream(UpstreamErrorKind::Reset));
        assert!(p(true, true, false).again(connect), "a connect failure never reached the upstream");
        assert!(!p(true, true, false).again(reset), "a reset POST may have been processed");
        assert!(p(true, true, true).again(reset));
        assert!(p(true, true, true).again(Ok(503)));
        assert!(!p(true, true, true).again(Ok(502)), "not in retry_on");
        assert!(!p(false, true, true).again(connect), "no attempts left");
        assert!(!p(true, false, true).again(connect), "a streamed body cannot be sent twice");
        for client in
            [ProxyError::BadRequest, ProxyError::BodyTooLarge, ProxyError::ClientTimeout, ProxyError::ClientGone]
        {
            assert!(!p(true, true, true).again(Err(client)), "{client:?} would fail anywhere");
        }
        assert!(!p(true, true, true).again(Err(ProxyError::Upstream(UpstreamErrorKind::Timeout))));
    }
}
