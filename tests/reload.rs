//! Live reloads: every way a config file gets replaced triggers one; reloads under load
//! fail nothing; a bad file keeps the old config serving.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

/// Two upstreams and one route whose single backend is `target`.
fn config(a: &TestUpstream, b: &TestUpstream, target: &str) -> String {
    with_listeners(&format!(
        "[upstreams.a]\nendpoints = [\"{}\"]\n[upstreams.b]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"{target}\", weight = 1 }}]\n",
        a.addr, b.addr
    ))
}

async fn served_by(proxy: &TestProxy) -> String {
    let (_, h, _) = get(&proxy.url("/"), &[]).await;
    h["x-upstream"].to_str().unwrap().to_string()
}

/// Wait (bounded) until requests are served by `want`.
async fn wait_served_by(proxy: &TestProxy, want: &str) {
    let what = format!("the reload to {want} picked up");
    eventually(&what, Duration::from_secs(5), || async { served_by(proxy).await == want }).await;
}

#[tokio::test]
async fn in_place_write_triggers_a_reload() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy = spawn_proxy(&config(&a, &b, "a")).await;
    assert_eq!(served_by(&proxy).await, "a");
    std::fs::write(&proxy.config_path, config(&a, &b, "b")).unwrap();
    wait_served_by(&proxy, "b").await;
    assert!(proxy.metric(r#"switchyard_config_reloads_total{result="ok"}"#).await >= 1.0);
    assert!(proxy.metric("switchyard_config_generation").await >= 2.0);
}

#[tokio::test]
async fn editor_rename_over_triggers_a_reload() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy = spawn_proxy(&config(&a, &b, "a")).await;
    // Editors write a temporary file beside the original and rename it over.
    let tmp = proxy.dir.path().join(".switchyard.toml.swp");
    std::fs::write(&tmp, config(&a, &b, "b")).unwrap();
    std::fs::rename(&tmp, &proxy.config_path).unwrap();
    wait_served_by(&proxy, "b").await;
}

#[tokio::test]
async fn mv_from_another_directory_triggers_a_reload() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy = spawn_proxy(&config(&a, &b, "a")).await;
    let elsewhere = tempfile::tempdir_in(proxy.dir.path().parent().unwrap()).unwrap();
    let staged = elsewhere.path().join("new.toml");
    std::fs::write(&staged, config(&a, &b, "b")).unwrap();
    std::fs::rename(&staged, &proxy.config_path).unwrap();
    wait_served_by(&proxy, "b").await;
}

#[tokio::test]
async fn configmap_symlink_swap_triggers_a_reload() {
    use std::os::unix::fs::symlink;
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    // The layout the kubelet writes: the file is a symlink through `..data`, and an
    // update swaps `..data` to a new timestamped directory in one rename.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2026_11_28_01")).unwrap();
    std::fs::write(d.join("..2026_11_28_01/switchyard.toml"), config(&a, &b, "a")).unwrap();
    symlink("..2026_11_28_01", d.join("..data")).unwrap();
    symlink("..data/switchyard.toml", d.join("switchyard.toml")).unwrap();
    let path = d.join("switchyard.toml");
    let proxy = spawn_proxy_file(path, dir).await;
    assert_eq!(served_by(&proxy).await, "a");

    let d = proxy.dir.path();
    std::fs::create_dir(d.join("..2026_11_28_02")).unwrap();
    std::fs::write(d.join("..2026_11_28_02/switchyard.toml"), config(&a, &b, "b")).unwrap();
    symlink("..2026_11_28_02", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_11_28_01")).unwrap();
    wait_served_by(&proxy, "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy = spawn_proxy(&config(&a, &b, "a")).await;
    let url = proxy.url("/");
    let load = tokio::spawn(async move { tally(&url, 2_000, 8).await });
    for i in 0..20 {
        let target = if i % 2 == 0 { "b" } else { "a" };
        std::fs::write(&proxy.config_path, config(&a, &b, target)).unwrap();
        proxy.app.controller.reload().await.expect("valid config");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `tally` asserts every response was a 200.
    let counts = load.await.expect("no request failed during reloads");
    assert_eq!(counts.values().sum::<usize>(), 2_000);
    assert!(proxy.metric(r#"switchyard_config_reloads_total{result="ok"}"#).await >= 20.0);
    assert_eq!(proxy.metric(r#"switchyard_config_reloads_total{result="error"}"#).await, 0.0);
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_snapshot_they_started_with() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy = spawn_proxy(&config(&a, &b, "a")).await;
    let url = proxy.url("/?delay_ms=700");
    let slow = tokio::spawn(async move { get(&url, &[]).await });
    eventually("the slow request reaching a", Duration::from_secs(5), || async { a.requests() == 1 }).await;
    // Remove upstream `a` from the config entirely while its request is in flight.
    let only_b = with_listeners(&format!(
        "[upstreams.b]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"b\" }}]\n",
        b.addr
    ));
    std::fs::write(&proxy.config_path, only_b).unwrap();
    proxy.app.controller.reload().await.unwrap();
    assert_eq!(served_by(&proxy).await, "b");
    let (status, h, _) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(h["x-upstream"], "a");
}

#[tokio::test]
async fn unchanged_upstreams_keep_their_pooled_connections() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy = spawn_proxy(&config(&a, &b, "a")).await;
    let client = client();
    for _ in 0..5 {
        send(&client, "GET", &proxy.url("/"), &[], "").await;
    }
    assert_eq!(a.connections(), 1);
    // A reload that changes something else (a new route) keeps upstream `a` as it is.
    let mut changed = config(&a, &b, "a");
    changed += "[[routes]]\nname = \"other\"\npath_prefix = \"/other\"\nbackends = [{ upstream = \"b\" }]\n";
    std::fs::write(&proxy.config_path, changed).unwrap();
    let generation = proxy.app.controller.reload().await.unwrap();
    assert!(generation >= 2);
    for _ in 0..5 {
        send(&client, "GET", &proxy.url("/"), &[], "").await;
    }
    assert_eq!(a.connections(), 1, "the reload must not reconnect to an unchanged upstream");
    assert_eq!(a.hits(), 10);
}

#[tokio::test]
async fn invalid_file_keeps_the_old_config_serving() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let proxy = spawn_proxy(&config(&a, &b, "a")).await;
    let bad = config(&a, &b, "nonexistent");
    std::fs::write(&proxy.config_path, &bad).unwrap();
    // The watcher picks the change up; wait for the error to be counted.
    let errors = proxy.metric_reaching(r#"switchyard_config_reloads_total{result="error"}"#, 1.0).await;
    assert_eq!(errors, 1.0);
    assert_eq!(served_by(&proxy).await, "a", "the old config keeps serving");
    assert_eq!(proxy.app.plane.runtime().generation, 1);
    let last = proxy.app.controller.last_reload_error().expect("the error is kept for status");
    assert!(last.contains("unknown upstream \"nonexistent\""), "{last}");

    // `switchyard check` prints the same problem as PATH:LINE:COL.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(&proxy.config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = bad.lines().position(|l| l.contains("nonexistent")).unwrap() + 1;
    let col = bad.lines().nth(line - 1).unwrap().find("\"nonexistent").unwrap() + 1;
    let want = format!(
        "{}:{line}:{col}: routes[0].backends[0].upstream: unknown upstream",
        Path::new(&proxy.config_path).display()
    );
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
}
