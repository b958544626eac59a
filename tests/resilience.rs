//! Rolling deployments and failures under load: endpoints dying, leaving, joining,
//! failing health checks, being ejected; DNS changes; retries that must not happen.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use switchyard::upstream::dns::Resolved;
use switchyard::upstream::Resolver;

fn pool(endpoints: &[&TestUpstream], extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    with_listeners(&format!(
        "[upstreams.app]\nendpoints = [{}]\n{extra}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"app\" }}]\n",
        eps.join(", ")
    ))
}

/// Send GETs from `clients` tasks until `stop` is set (bounded by 20 s and 20,000
/// requests); returns (ok, failed) counts and the failures' statuses.
fn load(url: String, clients: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<u16>)> {
    tokio::spawn(async move {
        let count = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (url, stop, count) = (url.clone(), stop.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let c = client();
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut failures = Vec::new();
                let mut ok = 0;
                while !stop.load(Ordering::SeqCst)
                    && Instant::now() < deadline
                    && count.fetch_add(1, Ordering::SeqCst) < 20_000
                {
                    let (status, _, _) = send(&c, "GET", &url, &[], "").await;
                    if status == 200 {
                        ok += 1
                    } else {
                        failures.push(status.as_u16())
                    }
                }
                (ok, failures)
            }));
        }
        let mut total = (0, Vec::new());
        for t in tasks {
            let (ok, f) = t.await.unwrap();
            total.0 += ok;
            total.1.extend(f);
        }
        total
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_endpoint_under_load_fails_no_get() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    // Requests in flight on the dying endpoint lose their connection: with `reset` in
    // retry_on, idempotent ones are retried on the other endpoint.
    let proxy = spawn_proxy(&pool(&[&a, &b], "retry_on = [\"connect-failure\", \"reset\"]")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy.url("/"), 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = running.await.unwrap();
    assert!(failures.is_empty(), "{} of {} requests failed: {failures:?}", failures.len(), ok + failures.len());
    assert!(a.requests() > 0 && b.requests() > 0);
}

#[tokio::test]
async fn a_post_that_reached_an_endpoint_is_never_sent_again() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy =
        spawn_proxy(&pool(&[&a, &b], "retries = 3\nretry_on = [\"connect-failure\", \"reset\", \"502\", \"503\"]"))
            .await;
    // Both endpoints drop the connection after reading this POST.
    let (status, h, _) = send(&client(), "POST", &proxy.url("/order?die=1"), &[], "pay 10 EUR").await;
    assert_eq!(status, 502);
    assert_eq!(h["x-switchyard-error"], "bad-upstream-response");
    assert_eq!(a.requests() + b.requests(), 1, "the POST reached exactly one endpoint");

    // An idempotent request is retried on the other endpoint (and fails there too).
    let (status, _, _) = send(&client(), "GET", &proxy.url("/order?die=1"), &[], "").await;
    assert_eq!(status, 502);
    assert_eq!(a.requests() + b.requests(), 3, "the GET was tried once on each endpoint");

    // A POST whose connect failed never reached anyone, so it may go elsewhere.
    a.kill_and_wait().await;
    let client = client();
    for _ in 0..10 {
        let (status, h, _) = send(&client, "POST", &proxy.url("/order"), &[], "pay").await;
        assert_eq!(status, 200);
        assert_eq!(h["x-upstream"], "b");
    }
}

#[tokio::test]
async fn retry_on_status_goes_to_another_endpoint() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    a.set_status(503);
    let proxy = spawn_proxy(&pool(&[&a, &b], "retries = 1\nretry_on = [\"503\"]")).await;
    for _ in 0..20 {
        let (status, h, _) = get(&proxy.url("/"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(h["x-upstream"], "b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_endpoint_by_reload_drains_it() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy = spawn_proxy(&pool(&[&a, &b], "")).await;
    // Make sure a slow request is in flight on `a`: send one at a time until one lands
    // there (waiting for it to land on either, so none is misattributed).
    let mut slow = None;
    for _ in 0..20 {
        let before = (a.requests(), b.requests());
        let url = proxy.url("/?delay_ms=3000");
        let task = tokio::spawn(async move { get(&url, &[]).await });
        eventually("the slow request reaching an endpoint", Duration::from_secs(5), || async {
            (a.requests(), b.requests()) != before
        })
        .await;
        if a.requests() > before.0 {
            slow = Some(task);
            break;
        }
        task.await.unwrap();
    }
    let slow = slow.expect("a slow request landed on a");
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy.url("/"), 4, stop.clone());
    std::fs::write(&proxy.config_path, pool(&[&b], "")).unwrap();
    proxy.app.controller.reload().await.unwrap();
    // Requests that picked `a` on the old snapshot may still arrive; none start after it.
    // Once only the slow one is in flight there, every old one has arrived.
    let status = || async {
        let (_, _, body) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let draining_a = |doc: &serde_json::Value| {
        doc["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|u| u["endpoints"].as_array().unwrap().clone())
            .find(|e| e["address"] == a.addr.to_string())
    };
    eventually("only the slow request in flight on the removed endpoint", Duration::from_secs(5), || async {
        draining_a(&status().await).is_some_and(|e| e["draining"] == true && e["in_flight"] == 1)
    })
    .await;
    let after = a.requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (_, failures) = running.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(a.requests(), after, "a removed endpoint gets no new requests");
    let (status, h, _) = slow.await.unwrap();
    assert_eq!(status, 200, "its in-flight request completes");
    assert_eq!(h["x-upstream"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_endpoint_waits_for_health_then_ramps_up() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let extra = "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", healthy = 2, unhealthy = 2 }\nslow_start = \"3s\"";
    let proxy = spawn_proxy(&pool(&[&a], extra)).await;
    let gauge = |u: &TestUpstream| format!(r#"switchyard_endpoint_healthy{{upstream="app",endpoint="{}"}}"#, u.addr);
    // Let `a` pass its checks (were it still unchecked, the pool would fail open to `b`).
    proxy.metric_reaching(&gauge(&a), 1.0).await;
    b.set_health(503);
    std::fs::write(&proxy.config_path, pool(&[&a, &b], extra)).unwrap();
    proxy.app.controller.reload().await.unwrap();
    let counts = tally(&proxy.url("/"), 200, 4).await;
    assert_eq!(counts.get("b"), None, "an unhealthy new endpoint gets no traffic");

    b.set_health(200);
    proxy.metric_reaching(&gauge(&b), 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let early = tally(&proxy.url("/"), 400, 4).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let late = tally(&proxy.url("/"), 400, 4).await;
    let share = |c: &HashMap<String, usize>| *c.get("b").unwrap_or(&0) as f64 / 400.0;
    assert!(share(&early) > 0.0, "healthy now: {early:?}");
    assert!(share(&early) < share(&late), "ramping: early {early:?} late {late:?}");
    assert!(share(&late) > 0.3, "fully ramped: {late:?}");
}

#[tokio::test]
async fn health_flapping_and_fail_open() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let extra = "health = { path = \"/healthz\", interval = \"50ms\", timeout = \"1s\", healthy = 1, unhealthy = 1 }";
    let proxy = spawn_proxy(&pool(&[&a, &b], extra)).await;
    let gauge = |u: &TestUpstream| format!(r#"switchyard_endpoint_healthy{{upstream="app",endpoint="{}"}}"#, u.addr);
    eventually("both endpoints healthy", Duration::from_secs(5), || async {
        proxy.metric(&gauge(&a)).await == 1.0 && proxy.metric(&gauge(&b)).await == 1.0
    })
    .await;

    a.set_health(500);
    eventually("a unhealthy", Duration::from_secs(5), || async { proxy.metric(&gauge(&a)).await == 0.0 }).await;
    let counts = tally(&proxy.url("/"), 100, 2).await;
    assert_eq!(counts.get("b"), Some(&100), "{counts:?}");

    // Everything down: fail open to the whole pool rather than 503 everything.
    b.set_health(500);
    eventually("b unhealthy (fail open)", Duration::from_secs(5), || async { proxy.metric(&gauge(&b)).await == 0.0 })
        .await;
    let counts = tally(&proxy.url("/"), 100, 2).await;
    assert!(counts.contains_key("a") && counts.contains_key("b"), "{counts:?}");

    a.set_health(200);
    eventually("a healthy again", Duration::from_secs(5), || async { proxy.metric(&gauge(&a)).await == 1.0 }).await;
    let counts = tally(&proxy.url("/"), 100, 2).await;
    assert_eq!(counts.get("a"), Some(&100), "{counts:?}");
    let (_, _, status) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
    assert!(status.contains("\"healthy\": false") && status.contains("\"healthy\": true"), "{status}");
}

#[tokio::test]
async fn outlier_ejection_respects_max_ejected_percent() {
    let ups =
        [spawn_upstream("a").await, spawn_upstream("b").await, spawn_upstream("c").await, spawn_upstream("d").await];
    for u in &ups {
        u.set_status(500);
    }
    let refs: Vec<&TestUpstream> = ups.iter().collect();
    let extra = "retries = 0\noutlier = { consecutive_failures = 3, ejection = \"30s\", max_ejected_percent = 50 }";
    let proxy = spawn_proxy(&pool(&refs, extra)).await;
    let client = client();
    for _ in 0..60 {
        let (status, _, _) = send(&client, "GET", &proxy.url("/"), &[], "").await;
        assert_eq!(status, 500);
    }
    let (_, _, status) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
    assert_eq!(status.matches("\"ejected\": true").count(), 2, "at most half of 4: {status}");
    // The ejected ones get nothing now.
    let before: Vec<usize> = ups.iter().map(|u| u.requests()).collect();
    for _ in 0..40 {
        send(&client, "GET", &proxy.url("/"), &[], "").await;
    }
    let grew = ups.iter().zip(&before).filter(|(u, b)| u.requests() > **b).count();
    assert_eq!(grew, 2, "only the two endpoints still in rotation got requests");
}

/// A resolver the test controls: hostname → addresses (port from the config).
#[derive(Default, Clone)]
struct FakeDns(Arc<Mutex<HashMap<String, Option<Vec<std::net::IpAddr>>>>>);

impl Resolver for FakeDns {
    fn resolve(&self, host: &str, port: u16) -> Resolved {
        let answer = self.0.lock().unwrap().get(host).cloned().flatten();
        Box::pin(async move {
            match answer {
                Some(ips) => Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect()),
                None => Err(std::io::Error::other("NXDOMAIN")),
            }
        })
    }
}

#[tokio::test]
async fn dns_names_become_endpoints_and_follow_changes() {
    let one = spawn_upstream_at("one", "127.0.0.1:0").await;
    let port = one.addr.port();
    let two = spawn_upstream_at("two", &format!("127.0.0.2:{port}")).await;
    let dns = FakeDns::default();
    let ips = |list: &[&str]| Some(list.iter().map(|s| s.parse().unwrap()).collect());
    dns.0.lock().unwrap().insert("app.internal".into(), ips(&["127.0.0.1", "127.0.0.2"]));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        with_listeners(&format!(
            "[upstreams.app]\nendpoints = [\"app.internal:{port}\"]\ndns_refresh = \"100ms\"\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"app\" }}]\n"
        )),
    )
    .unwrap();
    let proxy = spawn_proxy_resolving(path, dir, Arc::new(dns.clone())).await;
    let counts = tally(&proxy.url("/"), 200, 4).await;
    assert!(counts["one"] > 30 && counts["two"] > 30, "both addresses serve: {counts:?}");

    // Scale down to one address: picked up without a reload.
    dns.0.lock().unwrap().insert("app.internal".into(), ips(&["127.0.0.2"]));
    eventually("endpoint one out of rotation", Duration::from_secs(5), || async {
        !tally(&proxy.url("/"), 20, 1).await.contains_key("one")
    })
    .await;
    assert_eq!(proxy.app.plane.runtime().generation, 1, "no config reload was needed");

    // A failed lookup keeps the last good addresses.
    dns.0.lock().unwrap().insert("app.internal".into(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tally(&proxy.url("/"), 50, 2).await.get("two"), Some(&50));
    assert!(two.requests() >= 50 && one.requests() > 0);
}

#[tokio::test]
async fn when_retries_run_out_the_upstream_answer_is_returned() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    a.set_status(502);
    b.set_status(502);
    let proxy = spawn_proxy(&pool(&[&a, &b], "retries = 3\nretry_on = [\"502\"]")).await;
    let (status, h, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!(status, 502);
    assert!(!h.contains_key("x-switchyard-error"), "the upstream's own 502, not one the proxy made");
    assert_eq!(a.requests() + b.requests(), 2, "one try per endpoint");
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy = spawn_proxy(&pool(&[&a, &b], "request_timeout = \"500ms\"")).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PUT /doc HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly a few bytes").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("x-switchyard-error: client-timeout"), "{resp}");
    assert_eq!(a.requests() + b.requests(), 0);
}
