//! Shadow traffic end to end: copies reach the mirror with a marker header and the
//! client's Host, never delay or change the primary, are bounded, skip large bodies,
//! and are compared with the primary's answer.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;

async fn mirrored(primary: SocketAddr, shadow: SocketAddr, mirror: &str) -> TestProxy {
    spawn_proxy(&with_listeners(&format!(
        r#"[upstreams.app]
endpoints = ["{primary}"]
[upstreams.shadow]
endpoints = ["{shadow}"]
[[routes]]
name = "app"
backends = [{{ upstream = "app" }}]
mirror = {{ upstream = "shadow", {mirror} }}
"#
    )))
    .await
}

async fn mirror_count(proxy: &TestProxy, result: &str) -> f64 {
    proxy
        .metric(&format!(
            r#"switchyard_mirror_requests_total{{route="app",upstream="shadow",version="shadow",result="{result}"}}"#
        ))
        .await
}

#[tokio::test]
async fn copies_carry_the_marker_and_the_client_host_and_the_primary_does_not() {
    let (app, shadow) = (spawn_upstream("app").await, spawn_upstream("shadow").await);
    let proxy = mirrored(app.addr, shadow.addr, "percent = 100.0").await;
    let (status, headers, body) = get(&proxy.url("/orders?id=7"), &[("host", "shop.example")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));
    assert!(headers.get("x-switchyard-mirror").is_none());
    eventually("the copy arrives", Duration::from_secs(5), || async { shadow.hits() == 1 }).await;
    let copy = shadow.last_seen();
    assert_eq!(copy.uri, "/orders?id=7");
    assert_eq!(copy.headers["x-switchyard-mirror"], "1");
    assert_eq!(copy.headers["host"], "shop.example");
    assert!(app.last_seen().headers.get("x-switchyard-mirror").is_none());
    // compare = none: an answered copy counts as match (once its answer is read).
    eventually("the copy counted as match", Duration::from_secs(5), || async {
        mirror_count(&proxy, "match").await == 1.0
    })
    .await;
}

#[tokio::test]
async fn a_slow_mirror_does_not_slow_the_primary() {
    let (app, shadow) = (spawn_upstream("app").await, spawn_upstream("shadow").await);
    shadow.knobs.delay_ms.store(5000, Ordering::SeqCst);
    let proxy = mirrored(app.addr, shadow.addr, "percent = 100.0").await;
    let c = client();
    let began = Instant::now();
    for _ in 0..5 {
        let (status, _, body) = send(&c, "POST", &proxy.url("/"), &[], "payload").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "payload"));
    }
    // Five primaries in less than one mirror delay: none waited for its copy.
    assert!(began.elapsed() < Duration::from_millis(5000), "{:?}", began.elapsed());
    eventually("copies arrive", Duration::from_secs(5), || async { shadow.hits() == 5 }).await;
}

#[tokio::test]
async fn a_full_mirror_drops_copies_and_counts_them() {
    let (app, shadow) = (spawn_upstream("app").await, spawn_upstream("shadow").await);
    shadow.knobs.delay_ms.store(5000, Ordering::SeqCst);
    let proxy = mirrored(app.addr, shadow.addr, "percent = 100.0, max_in_flight = 2").await;
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/"), &[]).await.0, StatusCode::OK);
    }
    assert_eq!(app.hits(), 10, "every primary was served");
    assert_eq!(mirror_count(&proxy, "dropped").await, 8.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(shadow.hits() <= 2, "{} copies reached the mirror", shadow.hits());
}

#[tokio::test]
async fn mismatched_statuses_are_counted_and_status_shows_the_rate() {
    let (app, shadow) = (spawn_upstream("app").await, spawn_upstream("shadow").await);
    let proxy = mirrored(app.addr, shadow.addr, "percent = 100.0, compare = \"status\"").await;
    for _ in 0..4 {
        get(&proxy.url("/"), &[]).await;
    }
    shadow.set_status(500);
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/"), &[]).await.0, StatusCode::OK, "the primary's answer is untouched");
    }
    eventually("mirror comparisons counted", Duration::from_secs(5), || async {
        mirror_count(&proxy, "match").await + mirror_count(&proxy, "mismatch").await >= 8.0
    })
    .await;
    assert_eq!(mirror_count(&proxy, "match").await, 4.0);
    assert_eq!(mirror_count(&proxy, "mismatch").await, 4.0);
    let (_, _, body) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let m = &status["routes"][0]["mirror"];
    assert_eq!(m["mismatch_rate"], 0.5, "{m:#}");
    assert_eq!(m["compare"], "status");
}

#[tokio::test]
async fn body_comparison_uses_digests_of_both_bodies() {
    let (app, shadow) = (spawn_upstream("app").await, spawn_upstream("shadow").await);
    let proxy = mirrored(app.addr, shadow.addr, "percent = 100.0, compare = \"body\"").await;
    let c = client();
    // Both echo a request body: identical answers.
    send(&c, "POST", &proxy.url("/"), &[], "same on both").await;
    // Without a body each answers its own name: same status, different bodies.
    send(&c, "GET", &proxy.url("/"), &[], "").await;
    eventually("mirror comparisons counted", Duration::from_secs(5), || async {
        mirror_count(&proxy, "match").await + mirror_count(&proxy, "mismatch").await >= 2.0
    })
    .await;
    assert_eq!(mirror_count(&proxy, "match").await, 1.0);
    assert_eq!(mirror_count(&proxy, "mismatch").await, 1.0);
}

#[tokio::test]
async fn bodies_over_64_kib_are_not_mirrored() {
    let (app, shadow) = (spawn_upstream("app").await, spawn_upstream("shadow").await);
    let proxy = mirrored(app.addr, shadow.addr, "percent = 100.0").await;
    let big = "x".repeat(100 * 1024);
    let (status, _, body) = send(&client(), "POST", &proxy.url("/upload"), &[], &big).await;
    assert_eq!((status, body.len()), (StatusCode::OK, big.len()), "the primary got the whole body");
    assert_eq!(mirror_count(&proxy, "dropped").await, 1.0);
    let small = "y".repeat(1024);
    send(&client(), "POST", &proxy.url("/upload"), &[], &small).await;
    eventually("the small body is mirrored", Duration::from_secs(5), || async { shadow.hits() == 1 }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shadow.hits(), 1, "the large body never reached the mirror");
    assert_eq!(shadow.body_bytes.load(Ordering::SeqCst), small.len());
}

#[tokio::test]
async fn percent_sets_the_mirrored_share() {
    let (app, shadow) = (spawn_upstream("app").await, spawn_upstream("shadow").await);
    let proxy = mirrored(app.addr, shadow.addr, "percent = 25.0").await;
    tally(&proxy.url("/"), 800, 8).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copies = shadow.hits();
    // 25% of 800 = 200; a binomial spread of ±4σ is about ±50.
    assert!((150..=250).contains(&copies), "{copies} of 800 mirrored");
}

#[tokio::test]
async fn a_chunked_body_is_copied_as_it_streams_to_the_primary() {
    let (app, shadow) = (spawn_upstream("app").await, spawn_upstream("shadow").await);
    let proxy = mirrored(app.addr, shadow.addr, "percent = 100.0, compare = \"body\"").await;
    let request = b"POST /in HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let response = raw(proxy.addr, request).await;
    assert!(response.starts_with("HTTP/1.1 200") && response.ends_with("hello world"), "{response}");
    eventually("the copy arrives", Duration::from_secs(5), || async { shadow.hits() == 1 }).await;
    assert_eq!(shadow.body_bytes.load(Ordering::SeqCst), 11);
    // Both echoed the same body: the digests agree.
    eventually("mirror comparisons counted", Duration::from_secs(5), || async {
        mirror_count(&proxy, "match").await >= 1.0
    })
    .await;
}

#[tokio::test]
async fn the_mirror_bound_holds_across_snapshot_swaps() {
    let (app, shadow) = (spawn_upstream("app").await, spawn_upstream("shadow").await);
    shadow.knobs.delay_ms.store(5000, Ordering::SeqCst);
    let proxy = mirrored(app.addr, shadow.addr, "percent = 100.0, max_in_flight = 2").await;
    for _ in 0..2 {
        get(&proxy.url("/"), &[]).await;
    }
    // Two copies in flight. A weight change recompiles the route (a new snapshot).
    let url = format!("http://{}/api/v1/routes/app/weights", proxy.admin);
    assert_eq!(send(&client(), "PUT", &url, &[], r#"{"weights": {"app": 2}}"#).await.0, StatusCode::OK);
    for _ in 0..5 {
        get(&proxy.url("/"), &[]).await;
    }
    assert_eq!(mirror_count(&proxy, "dropped").await, 5.0, "the new snapshot shares the old one's slots");
}
