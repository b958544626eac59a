//! Active health checks: one background task per upstream with `health`, probing every
//! endpoint with `GET path` each `interval`. `healthy` consecutive passes bring an
//! endpoint into rotation, `unhealthy` consecutive failures take it out. The request
//! path only reads the resulting flag.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::header::HOST;
use http::{Method, Request};
use tokio::task::{AbortHandle, JoinSet};

use super::{Endpoint, Upstream};
use crate::body::UpstreamBody;
use crate::config::FileHealth;

pub(crate) fn spawn(upstream: Weak<Upstream>) -> AbortHandle {
    tokio::spawn(async move {
        let Some(interval) = upstream.upgrade().and_then(|u| u.health.as_ref().map(|h| h.interval)) else { return };
        every(interval, || {
            let upstream = upstream.clone();
            async move {
                let Some(u) = upstream.upgrade() else { return false };
                probe_all(&u).await;
                true
            }
        })
        .await;
    })
    .abort_handle()
}

/// Run `round` at once and then every `interval` on tokio's clock, until it returns
/// false. A round that overruns the interval delays the next one rather than bunching
/// the missed ones (a slow endpoint must not turn into a probe storm).
async fn every<F, R>(interval: Duration, mut round: F)
where
    F: FnMut() -> R,
    R: Future<Output = bool>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !round().await {
            return;
        }
    }
}

async fn probe_all(u: &Arc<Upstream>) {
    let Some(health) = u.health.clone() else { return };
    let mut probes = JoinSet::new();
    for e in u.endpoints.iter() {
        let (e, health, u) = (e.clone(), health.clone(), u.clone());
        probes.spawn(async move {
            let answer = probe(&u, &e, &health).await;
            (e, answer)
        });
    }
    // A change of version or of health reshapes the version groups: signal it at
    // once (the controller swaps in new groups), not after the whole round.
    let regroup = || {
        if let Some(signal) = &u.regroup {
            signal.notify_one();
        }
    };
    while let Some(Ok((e, answer))) = probes.join_next().await {
        let was_healthy = e.is_healthy();
        // Only a passing answer says what runs there: a failing one may come from a
        // sidecar or an error page that never sends the header.
        if health.version_header.is_some() && answer.passed {
            // No header, or the configured version, both mean the configured version:
            // recorded as none, so the two never count as a change.
            let version = answer.version.as_deref().filter(|v| **v != *u.version);
            if e.report_version(version) {
                // A new version at this address: it leaves its old group now and
                // joins the new one after `healthy` further passes, by when the
                // snapshot with the new groups is live, so no request reaches it
                // under the wrong version's name.
                tracing::info!(upstream = %u.name, endpoint = %e.addr, version = version.unwrap_or(&u.version), "endpoint reports a new version");
                regroup();
                e.probe_passes.store(0, Ordering::Relaxed);
                e.set_healthy(false);
                continue;
            }
        }
        apply(u, &e, answer.passed, &health);
        if was_healthy != e.is_healthy() {
            regroup();
        }
    }
}

/// What one probe found.
struct Answer {
    passed: bool,
    /// The `version_header` value it carried, when it is a version name.
    version: Option<String>,
}

/// Longest reported version taken as one: it becomes a metric label, a group and the
/// `x-served-version` clients see.
const VERSION_NAME_MAX: usize = 64;

/// A reported version the groups take: 1 to 64 of `A-Z a-z 0-9 . _ + : -` (image tags,
/// semver with build metadata, git hashes). Anything else (a pod name, a sentence, a
/// 60 KB value) is ignored, and the endpoint counts as its configured version.
fn is_version_name(v: &str) -> bool {
    v.len() <= VERSION_NAME_MAX && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+:-".contains(&b))
}

/// One probe: a 2xx or 3xx answer within the timeout passes. It carries the upstream's
/// request headers and identity (a function behind a key or IAM checks probes too).
async fn probe(u: &Upstream, e: &Endpoint, health: &FileHealth) -> Answer {
    let failed = Answer { passed: false, version: None };
    let uri = format!("{}://{}{}", e.scheme, e.authority, health.path);
    let Ok(req) = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(HOST, e.configured_host.clone())
        .header("user-agent", "switchyard-health-check")
        .body(UpstreamBody::empty())
    else {
        return failed;
    };
    let (mut parts, body) = req.into_parts();
    u.request_headers.apply(&mut parts.headers);
    if let Some(identity) = &u.identity {
        if let Err(e) = identity.apply(&parts.method, &parts.uri, &mut parts.headers, &[]) {
            tracing::debug!(upstream = %u.name, error = %e, "health check not sent: no identity");
            return failed;
        }
    }
    let req = Request::from_parts(parts, body);
    match tokio::time::timeout(health.timeout, e.client().request(req)).await {
        Ok(Ok(resp)) => {
            let passed = resp.status().is_success() || resp.status().is_redirection();
            let version = health.version_header.as_ref().and_then(|name| resp.headers().get(name));
            let version = version.and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
            let version = version.filter(|v| {
                let fits = is_version_name(v);
                if !fits {
                    tracing::debug!(upstream = %u.name, endpoint = %e.addr, "ignoring a reported version that is not a version name");
                }
                fits
            });
            Answer { passed, version: version.map(str::to_string) }
        }
        _ => failed,
    }
}

fn apply(u: &Upstream, e: &Arc<Endpoint>, passed: bool, health: &FileHealth) {
    if passed {
        e.probe_failures.store(0, Ordering::Relaxed);
        let passes = e.probe_passes.fetch_add(1, Ordering::Relaxed) + 1;
        if !e.is_healthy() && passes >= health.healthy && e.set_healthy(true) {
            tracing::info!(upstream = %u.name, endpoint = %e.addr, passes, "endpoint is healthy");
            // Release requests queued for a cold start.
            u.ready.notify_waiters();
        }
    } else {
        e.probe_passes.store(0, Ordering::Relaxed);
        let failures = e.probe_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if e.is_healthy() && failures >= health.unhealthy && e.set_healthy(false) {
            tracing::warn!(upstream = %u.name, endpoint = %e.addr, failures, "endpoint is unhealthy");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rounds_run_every_interval_and_an_overrun_delays_the_next() {
        let start = Instant::now();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        every(Duration::from_secs(5), || {
            let log = log.clone();
            async move {
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(start.elapsed().as_secs());
                    log.len()
                };
                // The second round overruns the interval (a probe timing out).
                if n == 2 {
                    tokio::time::sleep(Duration::from_secs(7)).await;
                }
                n < 5
            }
        })
        .await;
        assert_eq!(*seen.lock().unwrap(), vec![0, 5, 12, 17, 22]);
    }
}
