//! Canary routing through the real proxy: sticky cookies, headers and source IPs,
//! monotonic movement as the canary grows, overrides for testers, 0.01% canaries.

mod support;

use std::collections::HashMap;

use support::*;

struct Canary {
    v1: TestUpstream,
    v2: TestUpstream,
}

impl Canary {
    async fn new() -> Canary {
        Canary { v1: spawn_upstream("v1").await, v2: spawn_upstream("v2").await }
    }

    /// A route "shop" with the given v1/v2 weights and extra route keys.
    fn config(&self, w1: f64, w2: f64, extra: &str) -> String {
        shop_canary(self.v1.addr, self.v2.addr, w1, w2, extra)
    }
}

async fn version_for(client: &TestClient, proxy: &TestProxy, headers: &[(&str, &str)]) -> String {
    let (status, h, _) = send(client, "GET", &proxy.url("/"), headers, "").await;
    assert_eq!(status, 200);
    h["x-served-version"].to_str().unwrap().to_string()
}

/// The version each of `n` cookie keys lands on.
async fn assignments(proxy: &TestProxy, n: usize) -> Vec<String> {
    let client = client();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let cookie = format!("sy_shop=user-{i}");
        out.push(version_for(&client, proxy, &[("cookie", &cookie)]).await);
    }
    out
}

#[tokio::test]
async fn cookie_mode_issues_a_key_and_sticks_to_it() {
    let c = Canary::new().await;
    let proxy = spawn_proxy(&c.config(50.0, 50.0, "sticky = { cookie = \"sy_shop\", ttl = \"24h\" }")).await;
    let client = client();
    let (_, h, _) = send(&client, "GET", &proxy.url("/"), &[], "").await;
    let set = h["set-cookie"].to_str().unwrap().to_string();
    let (pair, attrs) = set.split_once(';').unwrap();
    let key = pair.strip_prefix("sy_shop=").unwrap();
    assert_eq!(key.len(), 32, "a 128-bit key: {set}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(attrs, " Path=/; Max-Age=86400; HttpOnly; SameSite=Lax");
    let first = h["x-served-version"].to_str().unwrap().to_string();

    // With the cookie: the same version every time, and no new cookie.
    for _ in 0..30 {
        let (_, h, _) = send(&client, "GET", &proxy.url("/"), &[("cookie", pair)], "").await;
        assert_eq!(h["x-served-version"], first.as_str());
        assert!(!h.contains_key("set-cookie"));
    }
}

#[tokio::test]
async fn malformed_or_oversized_cookies_get_a_fresh_key() {
    let c = Canary::new().await;
    let proxy = spawn_proxy(&c.config(50.0, 50.0, "sticky = { cookie = \"sy_shop\" }")).await;
    let long = format!("sy_shop={}", "a".repeat(5000));
    for cookie in ["sy_shop=", "sy_shop=<script>", "sy_shop=a b", long.as_str(), "other=1"] {
        let (status, h, _) = get(&proxy.url("/"), &[("cookie", cookie)]).await;
        assert_eq!(status, 200, "{cookie}");
        let set = h["set-cookie"].to_str().unwrap();
        assert!(set.starts_with("sy_shop=") && set.len() > 40, "{set}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_the_canary_only_moves_users_onto_it() {
    let c = Canary::new().await;
    let sticky = "sticky = { cookie = \"sy_shop\" }";
    let proxy = spawn_proxy(&c.config(90.0, 10.0, sticky)).await;
    let n = 2_000;
    let at10 = assignments(&proxy, n).await;
    let share = |a: &[String]| a.iter().filter(|v| *v == "v2").count() as f64 / n as f64 * 100.0;
    assert!((share(&at10) - 10.0).abs() < 3.0, "10% canary got {}%", share(&at10));

    std::fs::write(&proxy.config_path, c.config(80.0, 20.0, sticky)).unwrap();
    proxy.app.controller.reload().await.unwrap();
    let at20 = assignments(&proxy, n).await;
    assert!((share(&at20) - 20.0).abs() < 3.0, "20% canary got {}%", share(&at20));
    for (i, (before, after)) in at10.iter().zip(&at20).enumerate() {
        assert!(!(before == "v2" && after == "v1"), "user-{i} bounced back from the canary to v1");
    }

    // Rolled back to 0: everyone is on v1 at once, sticky or not.
    std::fs::write(&proxy.config_path, c.config(100.0, 0.0, sticky)).unwrap();
    proxy.app.controller.reload().await.unwrap();
    assert!(assignments(&proxy, 300).await.iter().all(|v| v == "v1"));
}

#[tokio::test]
async fn replicas_agree_without_shared_state() {
    let c = Canary::new().await;
    let cfg = c.config(70.0, 30.0, "sticky = { header = \"x-user-id\" }");
    let (a, b) = (spawn_proxy(&cfg).await, spawn_proxy(&cfg).await);
    let client = client();
    for i in 0..200 {
        let user = format!("{i}");
        let h = [("x-user-id", user.as_str())];
        assert_eq!(version_for(&client, &a, &h).await, version_for(&client, &b, &h).await, "user {i}");
    }
}

#[tokio::test]
async fn header_mode_without_the_header_splits_per_request() {
    let c = Canary::new().await;
    let proxy = spawn_proxy(&c.config(50.0, 50.0, "sticky = { header = \"x-user-id\" }")).await;
    let client = client();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        *seen.entry(version_for(&client, &proxy, &[]).await).or_default() += 1;
    }
    assert_eq!(seen.get("v1"), Some(&50), "{seen:?}");
    // With the header, one version only.
    let first = version_for(&client, &proxy, &[("x-user-id", "42")]).await;
    for _ in 0..20 {
        assert_eq!(version_for(&client, &proxy, &[("x-user-id", "42")]).await, first);
    }
}

#[tokio::test]
async fn source_ip_mode_pins_a_client_address() {
    let c = Canary::new().await;
    let proxy = spawn_proxy(&c.config(50.0, 50.0, "sticky = { source_ip = true }")).await;
    let client = client();
    let first = version_for(&client, &proxy, &[]).await;
    for _ in 0..30 {
        assert_eq!(version_for(&client, &proxy, &[]).await, first);
    }
}

#[tokio::test]
async fn overrides_force_an_upstream_even_at_weight_zero() {
    let c = Canary::new().await;
    let v3 = spawn_upstream("v3").await;
    let extra = format!(
        r#"sticky = {{ cookie = "sy_shop" }}
overrides = [ {{ header = "x-canary", value = "always", upstream = "shop-v2" }},
              {{ cookie = "preview", upstream = "shop-v2" }},
              {{ header = "x-try-v3", upstream = "shop-v3" }} ]
[upstreams.shop-v3]
version = "v3"
endpoints = ["{}"]
"#,
        v3.addr
    );
    // Blue/green preview: v2 idle at weight 0, testers reach it anyway.
    let proxy = spawn_proxy(&c.config(100.0, 0.0, &extra)).await;
    let client = client();
    assert_eq!(version_for(&client, &proxy, &[]).await, "v1");
    assert_eq!(version_for(&client, &proxy, &[("x-canary", "always")]).await, "v2");
    assert_eq!(version_for(&client, &proxy, &[("x-canary", "sometimes")]).await, "v1", "value must match");
    assert_eq!(version_for(&client, &proxy, &[("cookie", "preview=1")]).await, "v2", "presence is enough");
    assert_eq!(version_for(&client, &proxy, &[("cookie", "a=b; preview=yes")]).await, "v2");
    // An override beats a sticky cookie, and may name an upstream outside the split.
    assert_eq!(version_for(&client, &proxy, &[("cookie", "sy_shop=user-1"), ("x-try-v3", "")]).await, "v3");
    // Overrides do not rewrite the sticky cookie.
    let (_, h, _) =
        send(&client, "GET", &proxy.url("/"), &[("cookie", "sy_shop=user-1"), ("x-canary", "always")], "").await;
    assert!(!h.contains_key("set-cookie"));
    let m = proxy.metrics().await;
    assert_eq!(metric_value(&m, r#"switchyard_backend_share{route="shop",upstream="shop-v3",version="v3"}"#), 0.0);
    assert_eq!(
        metric_value(&m, r#"switchyard_requests_total{route="shop",upstream="shop-v3",version="v3",status="200"}"#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_in_ten_thousand_canary_gets_exactly_its_share() {
    let c = Canary::new().await;
    let proxy = spawn_proxy(&c.config(99.99, 0.01, "")).await;
    let counts = tally(&proxy.url("/"), 10_000, 8).await;
    assert_eq!(counts.get("v2"), Some(&1), "{counts:?}");
    assert_eq!(proxy.metric(r#"switchyard_backend_share{route="shop",upstream="shop-v2",version="v2"}"#).await, 0.0001);
}

#[tokio::test]
async fn sticky_and_override_config_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nbackends = [{ upstream = \"a\" }]\nsticky = { cookie = \"x\", header = \"y\" }\noverrides = [{ header = \"x-t\", upstream = \"nope\" }, { upstream = \"a\" }]\n",
    )
    .unwrap();
    let errs = switchyard::config::load(&path).unwrap_err().to_string();
    assert!(errs.contains(":6:10: routes[0].sticky: choose exactly one"), "{errs}");
    assert!(errs.contains(":7:43: routes[0].overrides[0].upstream: unknown upstream \"nope\""), "{errs}");
    assert!(errs.contains(":7:53: routes[0].overrides[1]: an override matches on exactly one"), "{errs}");
}
