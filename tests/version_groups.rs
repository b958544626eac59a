//! Version groups: a plain rolling update behind one upstream (endpoints drained,
//! switched to the new version and healthy again, one by one), with sticky users who
//! must never bounce between versions. Each endpoint reports its version in its health
//! checks' `x-version` header; the proxy splits the upstream into version groups.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proptest::prelude::*;
use serde_json::Value;
use support::*;
use switchyard::routing::sticky;

/// A pod: answers `/healthz` with its health code and `x-version`, everything else 200
/// with its version as the body.
struct Pod {
    addr: SocketAddr,
    version: Arc<Mutex<String>>,
    health: Arc<AtomicU16>,
}

impl Pod {
    async fn start(version: &str) -> Pod {
        Pod::start_at(version, "127.0.0.1:0").await
    }

    async fn start_at(version: &str, addr: &str) -> Pod {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let version = Arc::new(Mutex::new(version.to_string()));
        let health = Arc::new(AtomicU16::new(200));
        let (v, h) = (version.clone(), health.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (v, h) = (v.clone(), h.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let version = v.lock().unwrap().clone();
                        let code = if req.uri().path() == "/healthz" { h.load(Ordering::SeqCst) } else { 200 };
                        async move {
                            let mut resp = http::Response::builder().status(code);
                            // An empty version: a build that sends no header.
                            if !version.is_empty() {
                                resp = resp.header("x-version", version.as_str());
                            }
                            Ok::<_, std::convert::Infallible>(resp.body(Full::new(Bytes::from(version))).unwrap())
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Pod { addr, version, health }
    }
}

fn config(pods: &[Pod]) -> String {
    let endpoints: Vec<String> = pods.iter().map(|p| format!("\"{}\"", p.addr)).collect();
    with_listeners(&format!(
        r#"
[upstreams.shop]
version = "v1"
endpoints = [{}]
health = {{ path = "/healthz", interval = "50ms", timeout = "1s", healthy = 1, unhealthy = 1, version_header = "x-version" }}

[[routes]]
name = "shop"
backends = [{{ upstream = "shop", weight = 100 }}]
version_header = "x-served-version"
sticky = {{ cookie = "sy" }}
"#,
        endpoints.join(", ")
    ))
}

async fn status(p: &TestProxy) -> Value {
    let (_, _, body) = get(&format!("http://{}/api/v1/status", p.admin), &[]).await;
    serde_json::from_str(&body).unwrap()
}

/// The upstream's groups as (version, healthy) pairs.
async fn groups(p: &TestProxy) -> Vec<(String, u64)> {
    let s = status(p).await;
    s["upstreams"][0]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| (g["version"].as_str().unwrap().to_string(), g["healthy"].as_u64().unwrap()))
        .collect()
}

const USERS: usize = 400;

/// Every user's version now; each response's `x-served-version` must name the version
/// of the endpoint that answered (its body).
async fn survey(p: &TestProxy) -> Vec<String> {
    let client = client();
    let mut seen = Vec::with_capacity(USERS);
    for user in 0..USERS {
        let cookie = format!("sy=user-{user}");
        let (code, headers, body) = send(&client, "GET", &p.url("/"), &[("cookie", &cookie)], "").await;
        assert_eq!(code, 200, "{body}");
        let named = headers.get("x-served-version").and_then(|v| v.to_str().ok()).unwrap_or("-");
        assert_eq!(named, body, "the version header names the version that served");
        seen.push(body);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_moves_each_sticky_user_once_from_old_to_new() {
    let mut pods = Vec::new();
    for _ in 0..4 {
        pods.push(Pod::start("v1").await);
    }
    let proxy = spawn_proxy(&config(&pods)).await;
    eventually("four healthy v1 endpoints", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 4)]
    })
    .await;
    let mut before = survey(&proxy).await;
    assert!(before.iter().all(|v| v == "v1"));
    let mut moved_at: HashMap<usize, usize> = HashMap::new();
    for (step, pod) in pods.iter().enumerate() {
        // Drain, switch, come back healthy: one pod replaced.
        pod.health.store(503, Ordering::SeqCst);
        let v1 = (3 - step) as u64;
        eventually("the pod leaves v1", Duration::from_secs(10), || async {
            groups(&proxy).await.iter().find(|g| g.0 == "v1").map_or(0, |g| g.1) == v1
        })
        .await;
        *pod.version.lock().unwrap() = "v2".into();
        pod.health.store(200, Ordering::SeqCst);
        let v2 = (step + 1) as u64;
        eventually("the pod joins v2", Duration::from_secs(10), || async {
            groups(&proxy).await.iter().find(|g| g.0 == "v2").map_or(0, |g| g.1) == v2
        })
        .await;
        let now = survey(&proxy).await;
        for (user, (was, is)) in before.iter().zip(&now).enumerate() {
            assert!(!(was == "v2" && is == "v1"), "user {user} went back from v2 to v1 at step {step}");
            if was == "v1" && is == "v2" {
                assert!(moved_at.insert(user, step).is_none(), "user {user} moved twice");
            }
        }
        let share = now.iter().filter(|v| *v == "v2").count() as f64 / USERS as f64;
        let expected = (step + 1) as f64 / 4.0;
        assert!((share - expected).abs() <= 0.1, "step {step}: {share:.3} on v2, expected about {expected}");
        eprintln!("step {step}: {:.1}% of {USERS} sticky users on v2", share * 100.0);
        before = now;
    }
    // One version again: the groups collapse into one, named by the new version.
    assert_eq!(groups(&proxy).await, vec![("v2".to_string(), 4)]);
    let s = status(&proxy).await;
    let backend = &s["routes"][0]["backends"][0];
    assert_eq!(backend["groups"].as_array().unwrap().len(), 1, "{backend:#}");
    assert_eq!(backend["groups"][0]["version"], "v2");
    let metrics = proxy.metrics().await;
    assert!(metrics.contains(r#"upstream="shop",version="v2""#), "metrics name the discovered version");
    let (_, headers, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!(headers["x-served-version"], "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_ctl_list_the_groups_and_their_endpoints() {
    let pods = vec![Pod::start("v1").await, Pod::start("v1").await, Pod::start("v2").await];
    let proxy = spawn_proxy(&config(&pods)).await;
    eventually("two groups", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 2), ("v2".to_string(), 1)]
    })
    .await;
    let s = status(&proxy).await;
    let g = &s["upstreams"][0]["groups"];
    assert_eq!(g[1]["endpoints"], serde_json::json!([pods[2].addr.to_string()]), "{g:#}");
    let backend = &s["routes"][0]["backends"][0];
    let shares: Vec<f64> = backend["groups"].as_array().unwrap().iter().map(|g| g["share"].as_f64().unwrap()).collect();
    assert!((shares[0] - 2.0 / 3.0).abs() < 0.01 && (shares[1] - 1.0 / 3.0).abs() < 0.01, "{shares:?}");
    // Without stickiness, requests split by group size.
    let mut v2 = 0;
    for _ in 0..300 {
        let (_, headers, body) = get(&proxy.url("/"), &[]).await;
        assert_eq!(headers["x-served-version"].to_str().unwrap(), body);
        v2 += usize::from(body == "v2");
    }
    assert!((60..=140).contains(&v2), "{v2} of 300 on v2, expected about 100");
    let (code, out, _) = run_ctl(format!("http://{}", proxy.admin), vec!["status".into()]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("v2 (group)"), "{out}");
    assert!(out.contains(&format!("{}  healthy (v2)", pods[2].addr)), "{out}");
    // `ctl watch` draws one line per version.
    let args = ["watch", "--count", "1", "--interval", "0.2"].map(String::from).to_vec();
    let (code, out, _) = run_ctl(format!("http://{}", proxy.admin), args).await;
    assert_eq!(code, Some(0));
    assert!(out.lines().any(|l| l.contains("shop") && l.contains("v1")), "{out}");
    assert!(out.lines().any(|l| l.contains("shop") && l.contains("v2")), "{out}");
}

/// A headless Service's name the test controls: hostname → pod addresses.
#[derive(Default, Clone)]
struct Headless(Arc<Mutex<Vec<std::net::IpAddr>>>);

impl switchyard::upstream::Resolver for Headless {
    fn resolve(&self, _host: &str, port: u16) -> switchyard::upstream::Resolved {
        let ips = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovered_pods_and_reloads_regroup_as_pods_come_and_go() {
    let first = Pod::start_at("v1", "127.0.0.1:0").await;
    let port = first.addr.port();
    let second = Pod::start_at("v1", &format!("127.0.0.2:{port}")).await;
    let third = Pod::start_at("v2", &format!("127.0.0.3:{port}")).await;
    let dns = Headless::default();
    *dns.0.lock().unwrap() = vec![first.addr.ip(), second.addr.ip()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    let text = |endpoints: &str| {
        config(&[]).replace("endpoints = []", &format!("endpoints = [{endpoints}]\ndns_refresh = \"100ms\""))
    };
    std::fs::write(&path, text(&format!("\"shop.default.svc:{port}\""))).unwrap();
    let proxy = spawn_proxy_resolving(path.clone(), dir, Arc::new(dns.clone())).await;
    eventually("two v1 pods", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 2)]
    })
    .await;
    // The Deployment adds a v2 pod and removes a v1 pod: the Service's answer follows.
    dns.0.lock().unwrap().push(third.addr.ip());
    eventually("a v2 group joins", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 2), ("v2".to_string(), 1)]
    })
    .await;
    dns.0.lock().unwrap().retain(|ip| *ip != first.addr.ip());
    eventually("a v1 pod leaves", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 1), ("v2".to_string(), 1)]
    })
    .await;
    // A reload that lists the pods by address instead: the same groups.
    std::fs::write(&path, text(&format!("\"{}\", \"{}\"", second.addr, third.addr))).unwrap();
    proxy.app.controller.reload().await.unwrap();
    eventually("the reloaded list regroups", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 1), ("v2".to_string(), 1)]
    })
    .await;
    let (_, headers, body) = get(&proxy.url("/"), &[]).await;
    assert_eq!(headers["x-served-version"].to_str().unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_keep_users_on_their_version_and_a_missing_header_means_the_configured_one() {
    let pods = vec![Pod::start("v1").await, Pod::start("v2").await];
    let text = config(&pods).replace(
        "sticky = { cookie = \"sy\" }",
        "sticky = { cookie = \"sy\" }\noverrides = [{ header = \"x-tester\", upstream = \"shop\" }]",
    );
    let proxy = spawn_proxy(&text).await;
    eventually("two groups", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 1), ("v2".to_string(), 1)]
    })
    .await;
    // A tester matched by the override keeps one version across requests.
    let client = client();
    for user in 0..10 {
        let cookie = format!("sy=tester-{user}");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10 {
            let (_, _, body) =
                send(&client, "GET", &proxy.url("/"), &[("cookie", &cookie), ("x-tester", "1")], "").await;
            seen.insert(body);
        }
        assert_eq!(seen.len(), 1, "user {user} saw {seen:?}");
    }
    // A tester without a sticky cookie yet is given one on the override path too, and
    // keeps one version with it.
    for tester in 0..10 {
        let (_, headers, first) = send(&client, "GET", &proxy.url("/"), &[("x-tester", "1")], "").await;
        let set = headers.get("set-cookie").unwrap_or_else(|| panic!("tester {tester}: no cookie: {headers:?}"));
        let cookie = set.to_str().unwrap().split(';').next().unwrap().to_string();
        for _ in 0..10 {
            let (_, _, body) =
                send(&client, "GET", &proxy.url("/"), &[("cookie", &cookie), ("x-tester", "1")], "").await;
            assert_eq!(body, first, "tester {tester} with {cookie} moved");
        }
    }
    // The v2 pod is replaced by a build that sends no version header: it counts as
    // the configured version again.
    *pods[1].version.lock().unwrap() = String::new();
    eventually("one group again, the configured version", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 2)]
    })
    .await;
}

/// Watch the groups for `within`, failing at the first sample that differs from `want`.
async fn groups_stay(p: &TestProxy, want: &[(&str, u64)], within: Duration) {
    let want: Vec<(String, u64)> = want.iter().map(|(v, n)| (v.to_string(), *n)).collect();
    let began = std::time::Instant::now();
    while began.elapsed() < within {
        assert_eq!(groups(p).await, want);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_without_the_header_moves_nobody_and_garbage_versions_are_ignored() {
    let pods = vec![Pod::start("v1").await, Pod::start("v2").await];
    // Many failures before an endpoint counts as down: a single failing check is noise.
    let proxy = spawn_proxy(&config(&pods).replace("unhealthy = 1", "unhealthy = 100")).await;
    eventually("two groups", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 1), ("v2".to_string(), 1)]
    })
    .await;
    // The v2 pod's checks fail with no version header (a sidecar's 503, an error page):
    // that says nothing of its version, so it stays in v2 and healthy.
    pods[1].health.store(503, Ordering::SeqCst);
    *pods[1].version.lock().unwrap() = String::new();
    groups_stay(&proxy, &[("v1", 1), ("v2", 1)], Duration::from_millis(500)).await;
    *pods[1].version.lock().unwrap() = "v2".into();
    pods[1].health.store(200, Ordering::SeqCst);
    // A value that is no version name is ignored: the pod counts as the configured one.
    *pods[1].version.lock().unwrap() = "pod shop-7f9c6 is ready".into();
    eventually("the garbage version ignored", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("v1".to_string(), 2)]
    })
    .await;
    *pods[1].version.lock().unwrap() = "x".repeat(65);
    groups_stay(&proxy, &[("v1", 2)], Duration::from_millis(300)).await;
    *pods[1].version.lock().unwrap() = "2.0.1+build.7".into();
    eventually("a semver with build metadata is a version", Duration::from_secs(10), || async {
        groups(&proxy).await == vec![("2.0.1+build.7".to_string(), 1), ("v1".to_string(), 1)]
    })
    .await;
}

/// A canary whose pods name their own build ("2.0.1", not the configured "v2"): its
/// requests are counted under that version, and the rollout judges them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_judges_a_canary_whose_pods_report_their_own_version() {
    let (old, new) = (Pod::start("v1").await, Pod::start("2.0.1").await);
    let rollout = "[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\nsteps = [50, 100]\ninterval = \"1s\"\nmin_requests = 5\nmax_error_rate = 0.05\n";
    let health = r#"health = { path = "/healthz", interval = "50ms", timeout = "1s", healthy = 1, unhealthy = 1, version_header = "x-version" }"#;
    let text = shop_canary(old.addr, new.addr, 100.0, 0.0, rollout)
        .replace(&format!("endpoints = [\"{}\"]", new.addr), &format!("endpoints = [\"{}\"]\n{health}", new.addr));
    let proxy = spawn_proxy(&text).await;
    eventually("the canary's group", Duration::from_secs(10), || async {
        let s = status(&proxy).await;
        s["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["groups"][0]["version"] == "2.0.1" && u["groups"][0]["healthy"] == 1)
    })
    .await;
    let start = format!("http://{}/api/v1/routes/shop/rollout/start", proxy.admin);
    assert_eq!(send(&client(), "POST", &start, &[], "").await.0, 200);
    let began = std::time::Instant::now();
    let rollout = loop {
        let _ = get(&proxy.url("/"), &[]).await;
        let r = status(&proxy).await["routes"][0]["rollout"].clone();
        if r["state"] != "running" {
            break r;
        }
        assert!(began.elapsed() < Duration::from_secs(30), "not finished: {r:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(rollout["state"], "promoted", "{rollout:#}");
    assert!(rollout["last_judgement"]["canary_requests"].as_u64().unwrap() >= 5, "{rollout:#}");
}

proptest! {
    /// The group choice for a sticky user under any ordinary rolling update (old
    /// endpoints only leave, new ones only join, in any order): once on the new
    /// version, a user never goes back.
    #[test]
    fn rendezvous_over_groups_only_moves_users_from_old_to_new(
        steps in proptest::collection::vec(any::<bool>(), 1..16),
        old_start in 1u32..12,
        keys in proptest::collection::vec(any::<u64>(), 50),
    ) {
        let seeds = [sticky::backend_seed("shop", "shop\0v1"), sticky::backend_seed("shop", "shop\0v2")];
        let (mut old, mut new) = (old_start, 0u32);
        let pick = |h: u64, old: u32, new: u32| sticky::assign(h, [(seeds[0], old), (seeds[1], new)].into_iter());
        let mut on_new = vec![false; keys.len()];
        for leave in steps {
            if leave && old > 0 { old -= 1 } else { new += 1 }
            for (i, &k) in keys.iter().enumerate() {
                let now_new = pick(k, old, new) == Some(1);
                prop_assert!(!on_new[i] || now_new, "key {k} went back to the old version");
                on_new[i] = now_new;
            }
        }
    }
}
