//! The admin API end to end: every call's success and error cases, authentication,
//! atomic cutover under load, persistence, and `switchyard ctl` against a live proxy.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

struct BlueGreen {
    blue: TestUpstream,
    green: TestUpstream,
}

impl BlueGreen {
    async fn new() -> BlueGreen {
        BlueGreen { blue: spawn_upstream("blue").await, green: spawn_upstream("green").await }
    }

    fn config(&self, blue: f64, green: f64, admin_extra: &str) -> String {
        format!(
            r#"[server]
listen = ["127.0.0.1:0"]
[admin]
listen = "127.0.0.1:0"
{admin_extra}

[upstreams.shop-blue]
version = "v1"
endpoints = ["{}"]
[upstreams.shop-green]
version = "v2"
endpoints = ["{}"]

[[routes]]
name = "shop"
backends = [{{ upstream = "shop-blue", weight = {blue} }}, {{ upstream = "shop-green", weight = {green} }}]
overrides = [{{ header = "x-preview", value = "green", upstream = "shop-green" }}]
version_header = "x-served-version"

[[routes]]
name = "other"
path_prefix = "/other"
backends = [{{ upstream = "shop-blue", weight = 1 }}]
"#,
            self.blue.addr, self.green.addr
        )
    }
}

async fn api(
    proxy: &TestProxy,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let url = format!("http://{}{path}", proxy.admin);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, _, text) = send(&client(), method, &url, headers, &body).await;
    (status.as_u16(), serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn weights(doc: &Value) -> Vec<(String, f64, String)> {
    doc["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["upstream"].as_str().unwrap().into(),
                b["weight"].as_f64().unwrap(),
                b["source"].as_str().unwrap().into(),
            )
        })
        .collect()
}

async fn served(proxy: &TestProxy, headers: &[(&str, &str)]) -> String {
    let (_, h, _) = get(&proxy.url("/"), headers).await;
    h["x-served-version"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn status_document() {
    let bg = BlueGreen::new().await;
    let proxy = spawn_proxy(&bg.config(90.0, 10.0, "")).await;
    let (status, doc) = api(&proxy, "GET", "/api/v1/status", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["config_path"], proxy.config_path.display().to_string());
    assert!(doc["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(doc["last_reload_error"], Value::Null);
    let shop = &doc["routes"][0];
    assert_eq!(shop["name"], "shop");
    assert_eq!(shop["rollout"], Value::Null);
    assert_eq!(
        shop["backends"][0],
        json!({"upstream": "shop-blue", "version": "v1", "weight": 90.0, "share": 0.9, "source": "config",
               "requests": 0, "errors": 0, "latency_ms_buckets": []})
    );
    let blue = doc["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == "shop-blue").unwrap();
    assert_eq!(
        blue["endpoints"][0],
        json!({"address": bg.blue.addr.to_string(), "healthy": true, "ejected": false, "draining": false, "in_flight": 0})
    );
    // HEAD works like GET; the status page renders the same data.
    let (s, _, page) = get(&format!("http://{}/", proxy.admin), &[]).await;
    assert_eq!(s, 200);
    assert!(page.contains("<td>shop-green</td>") && page.contains("10.00%"), "{page}");
}

#[tokio::test]
async fn weights_promote_rollback_and_their_errors() {
    let bg = BlueGreen::new().await;
    let proxy = spawn_proxy(&bg.config(90.0, 10.0, "")).await;
    let share = |up: &str| {
        format!(
            r#"switchyard_backend_share{{route="shop",upstream="{up}",version="{}"}}"#,
            if up == "shop-blue" { "v1" } else { "v2" }
        )
    };

    // Omitted backends keep their weight.
    let (s, doc) =
        api(&proxy, "PUT", "/api/v1/routes/shop/weights", Some(json!({"weights": {"shop-green": 30}})), &[]).await;
    assert_eq!(s, 200, "{doc}");
    assert_eq!(
        weights(&doc),
        vec![("shop-blue".into(), 90.0, "config".into()), ("shop-green".into(), 30.0, "admin".into())]
    );
    assert_eq!(proxy.metric(&share("shop-green")).await, 0.25, "the share gauge follows at once");

    let errors = [
        ("PUT", "/api/v1/routes/nope/weights", json!({"weights": {"shop-green": 1}}), 404),
        ("PUT", "/api/v1/routes/shop/weights", json!({"weights": {"ghost": 1}}), 400),
        ("PUT", "/api/v1/routes/shop/weights", json!({"weights": {"shop-green": -1}}), 400),
        ("PUT", "/api/v1/routes/shop/weights", json!({"weights": {"shop-green": 0, "shop-blue": 0}}), 400),
        ("PUT", "/api/v1/routes/shop/weights", json!({"weights": {"shop-green": "lots"}}), 400),
        ("PUT", "/api/v1/routes/shop/weights", json!({"wieghts": {}}), 400),
        ("POST", "/api/v1/routes/shop/promote", json!({"upstream": "ghost"}), 400),
        ("POST", "/api/v1/routes/nope/promote", json!({"upstream": "shop-green"}), 404),
        ("POST", "/api/v1/routes/nope/rollback", json!({}), 404),
        ("POST", "/api/v1/routes/shop/weights", json!({"weights": {"shop-green": 99}}), 405),
        ("GET", "/api/v1/routes/shop/promote", json!({"upstream": "shop-green"}), 405),
        ("DELETE", "/api/v1/status", json!({}), 405),
        ("GET", "/api/v1/reload", json!({}), 405),
        ("POST", "/api/v1/routes/shop/rollout/start", json!({}), 409),
        ("GET", "/api/v1/nothing", json!({}), 404),
    ];
    for (method, path, body, want) in errors {
        let (s, doc) = api(&proxy, method, path, Some(body.clone()), &[]).await;
        assert_eq!(s, want, "{method} {path} {body} -> {doc}");
        assert!(doc["error"].as_str().is_some_and(|e| !e.is_empty()), "{doc}");
    }
    // Malformed JSON.
    let (s, _, text) =
        send(&client(), "PUT", &format!("http://{}/api/v1/routes/shop/weights", proxy.admin), &[], "{not json").await;
    assert_eq!(s, 400, "{text}");
    // None of that changed anything.
    let (_, doc) = api(&proxy, "GET", "/api/v1/status", None, &[]).await;
    assert_eq!(weights(&doc["routes"][0])[1].1, 30.0);

    let (s, doc) =
        api(&proxy, "POST", "/api/v1/routes/shop/promote", Some(json!({"upstream": "shop-green"})), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(
        weights(&doc),
        vec![("shop-blue".into(), 0.0, "admin".into()), ("shop-green".into(), 100.0, "admin".into())]
    );
    assert_eq!(proxy.metric(&share("shop-blue")).await, 0.0);
    assert_eq!(proxy.metric(&share("shop-green")).await, 1.0);

    let (s, doc) = api(&proxy, "POST", "/api/v1/routes/shop/rollback", None, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(
        weights(&doc),
        vec![("shop-blue".into(), 90.0, "config".into()), ("shop-green".into(), 10.0, "config".into())]
    );
    assert_eq!(proxy.metric(&share("shop-blue")).await, 0.9);
}

#[tokio::test]
async fn reload_call_reports_errors_as_422() {
    let bg = BlueGreen::new().await;
    let proxy = spawn_proxy(&bg.config(90.0, 10.0, "")).await;
    let (s, doc) = api(&proxy, "POST", "/api/v1/reload", None, &[]).await;
    assert_eq!(s, 200);
    assert!(doc["generation"].as_u64().unwrap() >= 2);
    std::fs::write(&proxy.config_path, bg.config(90.0, 10.0, "").replace("shop-green\", weight", "ghost\", weight"))
        .unwrap();
    let (s, doc) = api(&proxy, "POST", "/api/v1/reload", None, &[]).await;
    assert_eq!(s, 422, "{doc}");
    assert!(doc["errors"][0].as_str().unwrap().contains("unknown upstream \"ghost\""), "{doc}");
    let (_, status) = api(&proxy, "GET", "/api/v1/status", None, &[]).await;
    assert!(status["last_reload_error"].as_str().unwrap().contains("ghost"));
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let bg = BlueGreen::new().await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "s3cret-token\n").unwrap();
    let extra = format!("token_file = \"{}\"", token_path.display());
    let proxy = spawn_proxy(&bg.config(90.0, 10.0, &extra)).await;

    let status = "/api/v1/status";
    assert_eq!(api(&proxy, "GET", status, None, &[]).await.0, 401);
    assert_eq!(api(&proxy, "GET", status, None, &[("authorization", "Bearer wrong")]).await.0, 401);
    assert_eq!(api(&proxy, "GET", "/api/v1/status?token=s3cret-token", None, &[]).await.0, 401);
    assert_eq!(api(&proxy, "GET", status, None, &[("authorization", "Basic czNjcmV0LXRva2Vu")]).await.0, 401);
    let (s, _) = api(&proxy, "POST", "/api/v1/routes/shop/promote", Some(json!({"upstream": "shop-green"})), &[]).await;
    assert_eq!(s, 401);
    assert_eq!(served(&proxy, &[]).await, "v1", "an unauthorized promote changed nothing");
    let auth = [("authorization", "Bearer s3cret-token")];
    assert_eq!(api(&proxy, "GET", status, None, &auth).await.0, 200);
    // With a token, any Host may call (it is no longer a loopback-only API).
    assert_eq!(api(&proxy, "GET", status, None, &[auth[0], ("host", "switchyard.internal:9901")]).await.0, 200);
    // Probes and metrics never need it.
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(&format!("http://{}{path}", proxy.admin), &[]).await.0, 200, "{path}");
    }
}

#[tokio::test]
async fn without_a_token_foreign_hosts_are_refused() {
    let bg = BlueGreen::new().await;
    let proxy = spawn_proxy(&bg.config(90.0, 10.0, "")).await;
    for host in ["evil.example.com", "evil.example.com:9901", "10.0.0.1"] {
        assert_eq!(api(&proxy, "GET", "/api/v1/status", None, &[("host", host)]).await.0, 403, "{host}");
        assert_eq!(get(&format!("http://{}/", proxy.admin), &[("host", host)]).await.0, 403, "{host}");
        let (s, _) = api(
            &proxy,
            "POST",
            "/api/v1/routes/shop/promote",
            Some(json!({"upstream": "shop-green"})),
            &[("host", host)],
        )
        .await;
        assert_eq!(s, 403);
    }
    for host in ["localhost:9901", "127.0.0.1", "[::1]:9901"] {
        assert_eq!(api(&proxy, "GET", "/api/v1/status", None, &[("host", host)]).await.0, 200, "{host}");
    }
    assert_eq!(get(&format!("http://{}/metrics", proxy.admin), &[("host", "evil.example.com")]).await.0, 200);
}

#[test]
fn non_loopback_admin_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"SWITCHYARD_TEST_UNSET_TOKEN_VARIABLE\"\n[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nbackends = [{ upstream = \"a\" }]\n",
    )
    .unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard")).args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":2:10: admin.listen: the admin listener 0.0.0.0:9901 is not loopback, so it needs a token"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_under_load_loses_nothing() {
    let bg = BlueGreen::new().await;
    let proxy = spawn_proxy(&bg.config(100.0, 0.0, "")).await;
    let url = proxy.url("/");
    let promoted_at = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));

    // A slow request that starts on blue before the promote.
    let slow_url = proxy.url("/?delay_ms=1500");
    let slow = tokio::spawn(async move { get(&slow_url, &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut clients = Vec::new();
    for _ in 0..16 {
        let (url, promoted_at) = (url.clone(), promoted_at.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut after_promote_on_blue = 0;
            let mut total = 0;
            while Instant::now() < deadline && total < 5_000 {
                let started = Instant::now();
                let (status, h, _) = send(&c, "GET", &url, &[], "").await;
                assert_eq!(status, 200, "a request failed during the cutover");
                total += 1;
                let promoted = *promoted_at.lock().unwrap();
                if promoted.is_some_and(|p| started > p) && h["x-served-version"] != "v2" {
                    after_promote_on_blue += 1;
                }
            }
            (total, after_promote_on_blue)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (s, _) = api(&proxy, "POST", "/api/v1/routes/shop/promote", Some(json!({"upstream": "shop-green"})), &[]).await;
    assert_eq!(s, 200);
    *promoted_at.lock().unwrap() = Some(Instant::now());

    let mut total = 0;
    for c in clients {
        let (n, wrong) = c.await.expect("no client saw a failure");
        assert_eq!(wrong, 0, "a request that started after the promote returned reached blue");
        total += n;
    }
    assert!(total > 100, "only {total} requests were sent");
    assert!(bg.green.hits() > 0 && bg.blue.hits() > 0);
    let (status, h, _) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(h["x-served-version"], "v1", "the in-flight request finished where it started");
}

#[tokio::test]
async fn admin_changes_survive_unrelated_reloads_and_restarts_but_not_route_edits() {
    let bg = BlueGreen::new().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let extra = format!("state_file = \"{}\"", state.display());
    let cfg = bg.config(100.0, 0.0, &extra);
    let proxy = spawn_proxy(&cfg).await;
    api(&proxy, "POST", "/api/v1/routes/shop/promote", Some(json!({"upstream": "shop-green"})), &[]).await;
    assert_eq!(served(&proxy, &[]).await, "v2");
    assert!(state.exists(), "the change was persisted");

    // An unrelated edit (another route) keeps the admin change.
    std::fs::write(&proxy.config_path, cfg.replace("path_prefix = \"/other\"", "path_prefix = \"/elsewhere\""))
        .unwrap();
    proxy.app.controller.reload().await.unwrap();
    assert_eq!(served(&proxy, &[]).await, "v2");
    let (_, doc) = api(&proxy, "GET", "/api/v1/status", None, &[]).await;
    assert_eq!(doc["routes"][0]["backends"][1]["source"], "admin");

    // A restart restores it from the state file.
    let restarted = spawn_proxy_file(proxy.config_path.clone(), tempfile::tempdir().unwrap()).await;
    assert_eq!(served(&restarted, &[]).await, "v2");

    // A reload that changes the route itself replaces it.
    let edited = cfg.replace(
        "version_header = \"x-served-version\"",
        "version_header = \"x-served-version\"\nheaders = { \"x-any\" = \"1\" }",
    );
    std::fs::write(&proxy.config_path, edited).unwrap();
    proxy.app.controller.reload().await.unwrap();
    assert_eq!(served(&proxy, &[("x-any", "1")]).await, "v1", "the file's weights apply again");
    let (_, doc) = api(&proxy, "GET", "/api/v1/status", None, &[]).await;
    assert_eq!(doc["routes"][0]["backends"][1]["source"], "config");

    // A corrupt state file is reported and ignored, never fatal.
    std::fs::write(&state, "{{{ garbage").unwrap();
    let after_corruption = spawn_proxy_file(proxy.config_path.clone(), tempfile::tempdir().unwrap()).await;
    assert_eq!(served(&after_corruption, &[("x-any", "1")]).await, "v1");
}

#[tokio::test]
async fn blue_green_preview_promote_and_rollback() {
    let bg = BlueGreen::new().await;
    // Blue live, green deployed beside it at weight 0.
    let proxy = spawn_proxy(&bg.config(100.0, 0.0, "")).await;
    assert_eq!(served(&proxy, &[]).await, "v1");
    // Testers preview green through the override header.
    assert_eq!(served(&proxy, &[("x-preview", "green")]).await, "v2");
    // Flip.
    api(&proxy, "POST", "/api/v1/routes/shop/promote", Some(json!({"upstream": "shop-green"})), &[]).await;
    for _ in 0..20 {
        assert_eq!(served(&proxy, &[]).await, "v2");
    }
    // And back.
    api(&proxy, "POST", "/api/v1/routes/shop/rollback", None, &[]).await;
    for _ in 0..20 {
        assert_eq!(served(&proxy, &[]).await, "v1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drives_a_live_proxy() {
    let bg = BlueGreen::new().await;
    let proxy = spawn_proxy(&bg.config(90.0, 10.0, "")).await;
    let admin = format!("http://{}", proxy.admin);
    let ctl = |args: Vec<&str>| run_ctl(admin.clone(), args.iter().map(|s| s.to_string()).collect());

    let (code, out, _) = ctl(vec!["status"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("ROUTE") && out.contains("SOURCE"), "{out}");
    let row = out.lines().find(|l| l.contains("shop-green")).unwrap();
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["shop-green", "v2", "10", "10.00%", "config"], "{out}");
    // Endpoint health, as the troubleshooting guide tells users to check.
    assert!(out.contains("ENDPOINT") && out.contains("STATE") && out.contains("IN FLIGHT"), "{out}");
    let endpoint = out.lines().find(|l| l.contains(&bg.green.addr.to_string())).expect("the green endpoint is listed");
    assert_eq!(
        endpoint.split_whitespace().collect::<Vec<_>>(),
        ["shop-green", bg.green.addr.to_string().as_str(), "healthy", "0"],
        "{out}"
    );

    let (code, out, _) = ctl(vec!["status", "--json"]).await;
    assert_eq!(code, Some(0));
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["routes"][0]["name"], "shop");

    let (code, out, _) = ctl(vec!["weights", "shop", "shop-green=25", "shop-blue=75"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["shop-green", "v2", "25", "25.00%", "admin"]),
        "{out}"
    );

    // Shares in percent: green to exactly 50%, blue scaled to the rest.
    let (code, out, err) = ctl(vec!["weights", "shop", "--percent", "shop-green=50"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["shop-green", "v2", "50", "50.00%", "admin"]),
        "{out}"
    );
    let (code, _, err) = ctl(vec!["weights", "shop", "--percent", "shop-grene=5"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown upstream \"shop-grene\""), "{err}");

    let (code, _, _) = ctl(vec!["promote", "shop", "shop-green"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(served(&proxy, &[]).await, "v2");

    let (code, out, _) = ctl(vec!["rollback", "shop"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["shop-blue", "v1", "90", "90.00%", "config"]),
        "{out}"
    );

    let (code, out, _) = ctl(vec!["reload"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("config generation 2"), "{out}");

    let (code, _, err) = ctl(vec!["promote", "nope", "shop-green"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown route \"nope\" (HTTP 404)"), "{err}");
    let (code, _, err) = ctl(vec!["weights", "shop", "shop-green"]).await;
    assert_eq!(code, Some(2), "a usage error: {err}");
    let (code, _, err) = run_ctl("http://127.0.0.1:1".into(), vec!["status".into()]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_watch_prints_plain_frames_when_not_a_terminal() {
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let proxy = spawn_proxy(&shop_canary(blue.addr, green.addr, 50.0, 50.0, "")).await;
    let url = proxy.url("/");
    // Traffic for as long as the watch runs (aborted after it; bounded to 20 s anyway):
    // a fixed number of requests can finish before the last frame on a fast run.
    let traffic = tokio::spawn(async move {
        let began = std::time::Instant::now();
        while began.elapsed() < std::time::Duration::from_secs(20) {
            get(&url, &[]).await;
        }
    });
    let args = ["watch", "--count", "3", "--interval", "0.3"].map(String::from).to_vec();
    let (code, out, err) = run_ctl(format!("http://{}", proxy.admin), args).await;
    traffic.abort();
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains('\x1b'), "no terminal escapes in a pipe: {out:?}");
    assert_eq!(out.matches("switchyard: config generation 1").count(), 3, "{out}");
    assert!(out.contains("REQ/S") && out.contains("P99") && out.contains("50.00%"), "{out}");
    // Frames after the first show a measured rate for the versions under traffic.
    let last = out.rsplit("switchyard: config generation").next().unwrap();
    let shop_v1 = last.lines().find(|l| l.contains("shop-v1")).unwrap();
    let rate: f64 = shop_v1.split_whitespace().nth(4).unwrap().parse().unwrap_or(0.0);
    assert!(rate > 0.0, "{shop_v1}");
}
