//! One attempt on one upstream endpoint: a pooled (or new) connection, the upstream
//! head and the body sent on it, and the response head read back, with the retry
//! decision and the client's head written from it.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::conn::{Conn, Readiness};
use super::exchange::{Plan, Request};
use super::pool::{self, UpConn};
use super::relay::Relay;
use super::response::{self, Extras, Parsed};
use crate::config::HostHeader;
use crate::proxy::forward::{record_attempt, Policy};
use crate::proxy::headers::VIA_VALUE;
use crate::proxy::ProxyError;
use crate::snapshot::Runtime;
use crate::telemetry::UpstreamErrorKind;
use crate::upstream::Endpoint;

/// How an attempt on one endpoint ended.
pub(super) enum Attempt<C = UpConn> {
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

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Conn<S> {
    /// One attempt on `endpoint`: send the request, and read the response head (writing
    /// the client's head into `out`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt(
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
