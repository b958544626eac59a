//! Serverless cold starts: requests wait (bounded, within `queue_timeout`) for an
//! endpoint that is still starting, and are released as soon as it is ready.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn config(up: &TestUpstream, queue_timeout: &str) -> String {
    with_listeners(&format!(
        "[upstreams.fn]\nendpoints = [\"{}\"]\nqueue_timeout = \"{queue_timeout}\"\nhealth = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", healthy = 1, unhealthy = 1 }}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"fn\" }}]\n",
        up.addr
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_are_released_when_the_endpoint_warms_up() {
    let up = spawn_upstream("fn").await;
    up.set_health(503); // still cold
    let proxy = spawn_proxy(&config(&up, "5s")).await;
    let started = Instant::now();
    let mut waiting = Vec::new();
    for _ in 0..5 {
        let url = proxy.url("/invoke");
        waiting.push(tokio::spawn(async move { get(&url, &[]).await.0 }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(up.requests(), 0, "nothing reaches a cold endpoint");
    up.set_health(200); // warm
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "released on warm-up, not at the timeout: {took:?}"
    );
    assert_eq!(up.requests(), 5);
}

#[tokio::test]
async fn without_a_queue_a_cold_upstream_answers_503_at_once() {
    let up = spawn_upstream("fn").await;
    up.set_health(503);
    let proxy = spawn_proxy(&config(&up, "0s")).await;
    let started = Instant::now();
    let (status, h, _) = get(&proxy.url("/invoke"), &[]).await;
    assert_eq!(status, 503);
    assert_eq!(h["x-switchyard-error"], "no-healthy-endpoint");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn a_queue_that_times_out_answers_503() {
    let up = spawn_upstream("fn").await;
    up.set_health(503);
    let proxy = spawn_proxy(&config(&up, "300ms")).await;
    let started = Instant::now();
    let (status, h, _) = get(&proxy.url("/invoke"), &[]).await;
    assert_eq!(status, 503);
    assert_eq!(h["x-switchyard-error"], "no-healthy-endpoint");
    assert!(started.elapsed() >= Duration::from_millis(300));
}
