//! Automated rollouts end to end: real upstreams, real traffic, short intervals. The
//! judge's thresholds are unit-tested in `src/rollout/judge.rs`; here the controller
//! walks steps, rolls back, pauses, survives restarts and keeps sticky users monotonic.
//! Step timing itself (exact intervals, waiting for traffic, pauses) runs on a paused
//! clock in `rollout_clock.rs`.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use support::*;

/// Requests in the background until dropped (bounded to 60 s in any case).
struct Traffic {
    stop: Arc<AtomicBool>,
}

impl Traffic {
    fn start(url: String, concurrency: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..concurrency {
            let (stop, url, client) = (stop.clone(), url.clone(), client());
            tokio::spawn(async move {
                let began = Instant::now();
                while !stop.load(Ordering::Relaxed) && began.elapsed() < Duration::from_secs(60) {
                    let _ = send(&client, "GET", &url, &[], "").await;
                }
            });
        }
        Traffic { stop }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn status(proxy: &TestProxy) -> Value {
    let (code, _, body) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
    assert_eq!(code, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

async fn rollout(proxy: &TestProxy) -> Value {
    status(proxy).await["routes"][0]["rollout"].clone()
}

async fn call(proxy: &TestProxy, action: &str) -> (StatusCode, Value) {
    let (code, _, body) =
        send(&client(), "POST", &format!("http://{}/api/v1/routes/shop/rollout/{action}", proxy.admin), &[], "").await;
    (code, serde_json::from_str(&body).unwrap())
}

/// Poll (bounded) until the rollout's state is `want`; returns the rollout object seen.
async fn wait_state(proxy: &TestProxy, want: &str, within: Duration) -> Value {
    let seen = std::sync::Mutex::new(Value::Null);
    let what = format!("rollout state {want}");
    eventually(&what, within, || async {
        let r = rollout(proxy).await;
        let reached = r["state"] == want;
        *seen.lock().unwrap() = r;
        reached
    })
    .await;
    seen.into_inner().unwrap()
}

/// Poll (bounded) until the rollout is at `step`.
async fn wait_step(proxy: &TestProxy, step: u64) {
    let what = format!("rollout step {step}");
    eventually(&what, Duration::from_secs(20), || async { rollout(proxy).await["step"] == step }).await;
}

fn weights(status: &Value) -> HashMap<String, (f64, String)> {
    status["routes"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["upstream"].as_str().unwrap().to_string(),
                (b["weight"].as_f64().unwrap(), b["source"].as_str().unwrap().to_string()),
            )
        })
        .collect()
}

fn rollout_table(body: &str) -> String {
    format!("\n[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\n{body}\n")
}

async fn canary_proxy(v1: SocketAddr, v2: SocketAddr, table: &str) -> TestProxy {
    spawn_proxy(&shop_canary(v1, v2, 100.0, 0.0, &rollout_table(table))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_walks_every_step_and_is_promoted() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let proxy = canary_proxy(
        v1.addr,
        v2.addr,
        "steps = [1, 5, 25, 50, 100]\ninterval = \"1s\"\nmin_requests = 2\nmax_error_rate = 0.01",
    )
    .await;
    assert_eq!(rollout(&proxy).await["state"], "idle");
    assert_eq!(proxy.metric(r#"switchyard_rollout_step{route="shop"}"#).await, -1.0);
    let _traffic = Traffic::start(proxy.url("/"), 4);

    let (code, doc) = call(&proxy, "start").await;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(doc["rollout"]["state"], "running");
    let mut seen_steps = Vec::new();
    let began = Instant::now();
    loop {
        let s = status(&proxy).await;
        let r = &s["routes"][0]["rollout"];
        if let Some(step) = r["step"].as_u64() {
            if r["state"] == "running" && seen_steps.last() != Some(&step) {
                seen_steps.push(step);
                // The share the rollout set is live: canary = the step's percent.
                let w = weights(&s);
                let percent = [1.0, 5.0, 25.0, 50.0, 100.0][step as usize];
                assert_eq!(w["shop-v2"], (percent, "rollout".to_string()), "{s:#}");
                assert_eq!(w["shop-v1"].0, 100.0 - percent);
            }
        }
        if r["state"] == "promoted" {
            assert!(r["reason"].as_str().unwrap().contains("all 5 steps passed"), "{r:#}");
            break;
        }
        assert_ne!(r["state"], "rolled_back", "{r:#}");
        assert!(began.elapsed() < Duration::from_secs(40), "not promoted: {r:#}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(seen_steps, vec![0, 1, 2, 3, 4]);
    let w = weights(&status(&proxy).await);
    assert_eq!(w["shop-v2"].0, 100.0);
    assert_eq!(w["shop-v1"].0, 0.0);
    assert_eq!(proxy.metric(r#"switchyard_rollouts_total{route="shop",result="promoted"}"#).await, 1.0);
    assert_eq!(proxy.metric(r#"switchyard_rollout_step{route="shop"}"#).await, -1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_starts_failing_is_rolled_back_at_that_step() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let proxy = canary_proxy(
        v1.addr,
        v2.addr,
        "steps = [20, 50, 100]\ninterval = \"2s\"\nmin_requests = 10\nmax_error_rate = 0.05",
    )
    .await;
    let _traffic = Traffic::start(proxy.url("/"), 4);
    call(&proxy, "start").await;
    // Step 0 passes; as step 1 begins, the canary starts answering 20% 500s.
    wait_step(&proxy, 1).await;
    v2.knobs.fail_every.store(5, Ordering::SeqCst);
    let r = wait_state(&proxy, "rolled_back", Duration::from_secs(20)).await;
    // Judged at the end of the step where it failed: it never reached step 2.
    assert_eq!(r["step"], 1, "{r:#}");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("step 1 (50%) failed") && reason.contains("max_error_rate 0.05"), "{reason}");
    let measured = r["last_judgement"]["canary_error_rate"].as_f64().unwrap();
    assert!(measured > 0.1, "{r:#}");
    let s = status(&proxy).await;
    let w = weights(&s);
    assert_eq!((w["shop-v2"].0, w["shop-v1"].0), (0.0, 100.0));
    assert_eq!(proxy.metric(r#"switchyard_rollouts_total{route="shop",result="rolled_back"}"#).await, 1.0);
    // Rolled back in one swap: new requests all go to the baseline.
    let hits = v2.hits();
    for _ in 0..20 {
        assert_eq!(get(&proxy.url("/"), &[]).await.2, "v1");
    }
    assert!(v2.hits() <= hits + 8, "only requests already in flight may still reach the canary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_is_rolled_back_on_p99() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    v2.knobs.delay_ms.store(300, Ordering::SeqCst);
    let proxy = canary_proxy(
        v1.addr,
        v2.addr,
        "steps = [50, 100]\ninterval = \"800ms\"\nmin_requests = 3\nmax_error_rate = 0.5\nmax_p99 = \"100ms\"",
    )
    .await;
    let _traffic = Traffic::start(proxy.url("/"), 4);
    call(&proxy, "start").await;
    let r = wait_state(&proxy, "rolled_back", Duration::from_secs(20)).await;
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("p99") && reason.contains("max_p99 100.0 ms"), "{reason}");
    assert!(r["last_judgement"]["canary_p99_ms"].as_f64().unwrap() > 250.0, "{r:#}");
}

#[tokio::test]
async fn pause_resume_abort_and_the_calls_each_state_forbids() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let proxy = canary_proxy(v1.addr, v2.addr, "steps = [10, 100]\ninterval = \"1h\"").await;
    let conflict = |(code, doc): (StatusCode, Value), words: &str| {
        assert_eq!(code, StatusCode::CONFLICT, "{doc}");
        assert!(doc["error"].as_str().unwrap().contains(words), "{doc}");
    };
    conflict(call(&proxy, "pause").await, "is idle");
    conflict(call(&proxy, "resume").await, "is idle");
    conflict(call(&proxy, "abort").await, "is idle");
    assert_eq!(call(&proxy, "start").await.0, StatusCode::OK);
    conflict(call(&proxy, "start").await, "is running");
    conflict(call(&proxy, "resume").await, "is running");
    // Weights by hand would fight the rollout.
    let weights_url = format!("http://{}/api/v1/routes/shop/weights", proxy.admin);
    let (code, _, body) = send(&client(), "PUT", &weights_url, &[], r#"{"weights": {"shop-v2": 50}}"#).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");

    let (code, doc) = call(&proxy, "pause").await;
    assert_eq!((code, doc["rollout"]["state"].as_str()), (StatusCode::OK, Some("paused")));
    assert_eq!(proxy.metric(r#"switchyard_rollout_step{route="shop"}"#).await, 0.0);
    conflict(call(&proxy, "pause").await, "is paused");
    // Paused: the step's weights stay.
    assert_eq!(weights(&status(&proxy).await)["shop-v2"].0, 10.0);
    assert_eq!(call(&proxy, "resume").await.0, StatusCode::OK);
    assert_eq!(rollout(&proxy).await["state"], "running");

    let (code, doc) = call(&proxy, "abort").await;
    assert_eq!((code, doc["rollout"]["state"].as_str()), (StatusCode::OK, Some("aborted")));
    let w = weights(&status(&proxy).await);
    assert_eq!((w["shop-v2"].0, w["shop-v1"].0), (0.0, 100.0));
    assert_eq!(proxy.metric(r#"switchyard_rollouts_total{route="shop",result="aborted"}"#).await, 1.0);
    conflict(call(&proxy, "abort").await, "is aborted");
    // A finished rollout can run again.
    assert_eq!(call(&proxy, "start").await.0, StatusCode::OK);

    // A route without a rollout, and an unknown route.
    let (code, _, body) =
        send(&client(), "POST", &format!("http://{}/api/v1/routes/nope/rollout/start", proxy.admin), &[], "").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_route_without_a_rollout_answers_409() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let proxy = spawn_proxy(&shop_canary(v1.addr, v2.addr, 90.0, 10.0, "")).await;
    let (code, doc) = call(&proxy, "start").await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(doc["error"].as_str().unwrap().contains("no rollout configured"), "{doc}");
}

/// The shop canary with a rollout and a state file, in `dir`.
fn stateful_config(
    dir: &std::path::Path,
    v1: SocketAddr,
    v2: SocketAddr,
    table: &str,
    state_file: bool,
) -> std::path::PathBuf {
    let state = if state_file { "state_file = \"state.json\"\n" } else { "" };
    let text = shop_canary(v1, v2, 100.0, 0.0, &rollout_table(table))
        .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{state}"));
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rollout_resumes_at_the_same_step_with_a_state_file() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let table = "steps = [10, 30, 100]\ninterval = \"2s\"\nmin_requests = 1";
    let dir = tempfile::tempdir().unwrap();
    let path = stateful_config(dir.path(), v1.addr, v2.addr, table, true);
    let proxy = spawn_proxy_file(path.clone(), dir).await;
    {
        let _traffic = Traffic::start(proxy.url("/"), 2);
        call(&proxy, "start").await;
        wait_step(&proxy, 1).await;
        assert_eq!(call(&proxy, "pause").await.0, StatusCode::OK);
    }
    let dir = proxy.stop_keeping_dir().await;
    let restarted = spawn_proxy_file(path, dir).await;
    let r = rollout(&restarted).await;
    assert_eq!((r["state"].as_str(), r["step"].as_u64()), (Some("paused"), Some(1)), "{r:#}");
    assert!(r["reason"].as_str().unwrap().contains("restored from the state file"), "{r:#}");
    let w = weights(&status(&restarted).await);
    assert_eq!(w["shop-v2"], (30.0, "rollout".to_string()));
    assert_eq!(call(&restarted, "resume").await.0, StatusCode::OK);
    assert_eq!(rollout(&restarted).await["step"], 1);
}

#[tokio::test]
async fn without_a_state_file_a_restart_starts_from_the_file_weights() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let path = stateful_config(dir.path(), v1.addr, v2.addr, "steps = [10, 100]\ninterval = \"1h\"", false);
    let proxy = spawn_proxy_file(path.clone(), dir).await;
    call(&proxy, "start").await;
    let dir = proxy.stop_keeping_dir().await;
    let restarted = spawn_proxy_file(path, dir).await;
    assert_eq!(rollout(&restarted).await["state"], "idle");
    let w = weights(&status(&restarted).await);
    assert_eq!(w["shop-v2"], (0.0, "config".to_string()));
}

#[tokio::test]
async fn auto_start_begins_at_load_and_a_reload_that_changes_the_rollout_aborts_it() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let proxy = canary_proxy(v1.addr, v2.addr, "steps = [10, 100]\ninterval = \"1h\"\nauto_start = true").await;
    let r = rollout(&proxy).await;
    assert_eq!((r["state"].as_str(), r["reason"].as_str()), (Some("running"), Some("auto_start")));
    // An unrelated reload keeps it running at its step.
    proxy.app.controller.reload().await.unwrap();
    assert_eq!(rollout(&proxy).await["state"], "running");
    // Changing the rollout table while it runs: the file wins, the old rollout is
    // aborted and counted, and (auto_start) the new one begins.
    let text = std::fs::read_to_string(&proxy.config_path).unwrap().replace("steps = [10, 100]", "steps = [20, 100]");
    std::fs::write(&proxy.config_path, text).unwrap();
    proxy.app.controller.reload().await.unwrap();
    assert_eq!(proxy.metric(r#"switchyard_rollouts_total{route="shop",result="aborted"}"#).await, 1.0);
    let s = status(&proxy).await;
    assert_eq!(s["routes"][0]["rollout"]["state"], "running");
    assert_eq!(weights(&s)["shop-v2"].0, 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_only_move_onto_the_canary_as_it_grows_and_all_return_on_rollback() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let proxy = spawn_proxy(&shop_canary(
        v1.addr,
        v2.addr,
        100.0,
        0.0,
        &format!(
            "sticky = {{ cookie = \"sy_shop\" }}\n{}",
            rollout_table("steps = [10, 30, 60, 100]\ninterval = \"1s\"\nmin_requests = 1")
        ),
    ))
    .await;
    let c = client();
    let users: Vec<String> = (0..200).map(|i| format!("sy_shop=user-{i}")).collect();
    let versions = |users: Vec<String>| {
        let (c, url) = (c.clone(), proxy.url("/"));
        async move {
            let mut out = Vec::new();
            for u in &users {
                let (_, headers, _) = send(&c, "GET", &url, &[("cookie", u)], "").await;
                out.push(headers["x-served-version"].to_str().unwrap().to_string());
            }
            out
        }
    };
    let _traffic = Traffic::start(proxy.url("/"), 1);
    call(&proxy, "start").await;
    let mut previous: Option<Vec<String>> = None;
    for step in 0..3u64 {
        // Freeze the step, look at every user, then let it go on.
        wait_step(&proxy, step).await;
        call(&proxy, "pause").await;
        let now = versions(users.clone()).await;
        let on_canary = now.iter().filter(|v| *v == "v2").count();
        let want = [20.0, 60.0, 120.0][step as usize];
        assert!((on_canary as f64 - want).abs() <= 25.0, "step {step}: {on_canary} of 200 on the canary");
        if let Some(prev) = &previous {
            for (i, (before, after)) in prev.iter().zip(&now).enumerate() {
                assert!(!(before == "v2" && after == "v1"), "user {i} left the canary at step {step}");
            }
        }
        previous = Some(now);
        call(&proxy, "resume").await;
    }
    call(&proxy, "abort").await;
    let after = versions(users).await;
    assert!(after.iter().all(|v| v == "v1"), "every user is back on the baseline");
}

#[tokio::test]
async fn ctl_drives_a_rollout_and_status_shows_it() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let proxy = canary_proxy(v1.addr, v2.addr, "steps = [10, 100]\ninterval = \"1h\"\nmax_p99 = \"250ms\"").await;
    let admin = format!("http://{}", proxy.admin);
    let ctl = |args: &[&str]| run_ctl(admin.clone(), args.iter().map(|s| s.to_string()).collect());
    let (code, _, err) = ctl(&["rollout", "start", "shop"]).await;
    assert_eq!(code, Some(0), "{err}");
    for _ in 0..10 {
        get(&proxy.url("/"), &[]).await;
    }
    let (code, out, _) = ctl(&["status"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("rollout shop: running, step 1/2 (canary 10%); canary "), "{out}");
    let (code, _, err) = ctl(&["rollout", "resume", "shop"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot resume: the rollout of \"shop\" is running (HTTP 409)"), "{err}");
    // The page at / shows it too.
    let (_, _, page) = get(&format!("{admin}/"), &[]).await;
    assert!(page.contains("<h3>rollout <b class=\"state running\">running</b>"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_running_rollout_keeps_going() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let path = stateful_config(
        dir.path(),
        v1.addr,
        v2.addr,
        "steps = [10, 30, 100]\ninterval = \"2s\"\nmin_requests = 1",
        true,
    );
    let proxy = spawn_proxy_file(path.clone(), dir).await;
    {
        let _traffic = Traffic::start(proxy.url("/"), 2);
        call(&proxy, "start").await;
        wait_step(&proxy, 1).await;
    }
    let dir = proxy.stop_keeping_dir().await;
    let restarted = spawn_proxy_file(path, dir).await;
    let r = rollout(&restarted).await;
    assert_eq!(r["state"], "running", "{r:#}");
    assert!(r["step"].as_u64().unwrap() >= 1, "resumed where it was: {r:#}");
    let _traffic = Traffic::start(restarted.url("/"), 2);
    wait_state(&restarted, "promoted", Duration::from_secs(20)).await;
}

/// Durable before visible: while the state file is being written, neither `status` nor
/// the live weights show the new step. A FIFO where the temporary state file goes holds
/// that write open, so the order is observed rather than raced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_step_is_durable_before_it_is_visible() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let path = stateful_config(dir.path(), v1.addr, v2.addr, "steps = [10, 100]\ninterval = \"1h\"", true);
    let tmp = dir.path().join(format!("state.tmp{}", std::process::id()));
    let made = std::process::Command::new("mkfifo").arg(&tmp).status().unwrap();
    assert!(made.success());
    let proxy = spawn_proxy_file(path, dir).await;
    let url = format!("http://{}/api/v1/routes/shop/rollout/start", proxy.admin);
    let start = tokio::spawn(async move { send(&client(), "POST", &url, &[], "").await.0 });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waited = !start.is_finished();
    // Read in-process: the admin API would answer the same, and this keeps the check on
    // the snapshot itself rather than on a response.
    let doc = serde_json::to_value(switchyard::admin::status::status(&proxy.app)).unwrap();
    let seen = (doc["routes"][0]["rollout"]["state"].clone(), weights(&doc)["shop-v2"].0);
    // Let the write through before asserting (a failed assertion must not leave a
    // worker blocked on the FIFO): a reader takes the bytes; fsync on a FIFO then fails,
    // which the proxy reports as a warning, and the step goes live either way.
    let reader = std::thread::spawn(move || std::fs::read(&tmp).unwrap());
    assert!(waited, "the start waits for the state file");
    assert_eq!(seen, (Value::from("idle"), 0.0), "state or weights visible before they were durable");
    assert_eq!(start.await.unwrap(), StatusCode::OK);
    let written = String::from_utf8(reader.join().unwrap()).unwrap();
    assert!(written.contains("\"running\""), "{written}");
    assert_eq!(rollout(&proxy).await["state"], "running");
    assert_eq!(weights(&status(&proxy).await)["shop-v2"].0, 10.0);
}

#[tokio::test]
async fn a_reload_that_removes_the_route_ends_its_rollout() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let proxy = canary_proxy(v1.addr, v2.addr, "steps = [10, 100]\ninterval = \"1h\"").await;
    call(&proxy, "start").await;
    let text = std::fs::read_to_string(&proxy.config_path).unwrap().replace("name = \"shop\"", "name = \"store\"");
    let text = text.replace("[routes.rollout]", "[routes.unused]").split("[routes.unused]").next().unwrap().to_string();
    std::fs::write(&proxy.config_path, text).unwrap();
    proxy.app.controller.reload().await.unwrap();
    assert_eq!(proxy.metric(r#"switchyard_rollouts_total{route="shop",result="aborted"}"#).await, 1.0);
    assert_eq!(proxy.metric(r#"switchyard_rollout_step{route="shop"}"#).await, -1.0);
    let s = status(&proxy).await;
    assert_eq!(s["routes"][0]["name"], "store");
    assert_eq!(s["routes"][0]["rollout"], Value::Null);
}
