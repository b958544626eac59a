//! A routed request forwarded: its body waited for when it can be replayed, its
//! admission to the upstream, its attempts across endpoints (with retries), and the
//! outcome counted and logged once the response was relayed (or the proxy answered).

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::attempt::Attempt;
use super::conn::{Conn, Next, Readiness};
use super::exchange::{Plan, Request};
use super::pool;
use super::relay::Relayed;
use crate::proxy::forward::{record_attempt, GaugeGuard, Policy, REPLAY_BUFFER};
use crate::proxy::{body_ended, body_failed, Blame, ProxyError, CLIENT_CLOSED};
use crate::snapshot::Runtime;
use crate::upstream::Endpoint;

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Conn<S> {
    /// Forward a routed request and relay its answer.
    pub(super) async fn proxy(&mut self, rt: &Runtime, plan: Plan<'_>, mut req: Request) -> Next {
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
}
