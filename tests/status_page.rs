//! The status page in a real browser: headless Chromium loads `GET /` from a live proxy,
//! runs the page's script (which polls `/api/v1/status` and redraws), and the rendered
//! DOM shows the routes, live shares and per-version rates; after a promote, the share
//! the script renders changes. A second test drives the page's own change form through
//! the DevTools protocol, with an admin token: a wrong token is refused, the right one
//! promotes. Skipped (with a message) where Chromium is not installed; `.ci/run` installs
//! Debian's `chromium`.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

use support::devtools::{Browser, CHROMIUM, HEADLESS};

/// The DOM after the page's scripts ran for a few (virtual) seconds.
async fn rendered_dom(url: String) -> String {
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(CHROMIUM)
            .args(HEADLESS)
            .args(["--virtual-time-budget=5000", "--dump-dom"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(&url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Bounded: a hung browser fails the test instead of hanging it.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("chromium did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_live_shares_and_follows_a_promote() {
    if !std::path::Path::new(CHROMIUM).exists() {
        eprintln!("SKIPPED: {CHROMIUM} not found (apt-get install chromium); .ci/run installs it");
        return;
    }
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let proxy = spawn_proxy(&shop_canary(blue.addr, green.addr, 90.0, 10.0, "")).await;
    tally(&proxy.url("/"), 50, 2).await;
    let page = format!("http://{}/", proxy.admin);

    let dom = rendered_dom(page.clone()).await;
    // Only the script writes these cells (the server-rendered fallback has no data-* cells).
    let share = |upstream: &str, value: &str| {
        format!(r#"class="share" data-route="shop" data-upstream="{upstream}">{value}</td>"#)
    };
    assert!(dom.contains(&share("shop-v1", "90.00%")), "{dom}");
    assert!(dom.contains(&share("shop-v2", "10.00%")), "{dom}");
    assert!(dom.contains(r#"class="rate" data-route="shop" data-upstream="shop-v1""#), "{dom}");
    assert!(dom.contains("data-generation=\"1\""), "the script ran and recorded the generation: {dom}");
    assert!(dom.contains("<option>shop</option>"), "the change forms list the routes: {dom}");

    let url = format!("http://{}/api/v1/routes/shop/promote", proxy.admin);
    let (status, _, body) = send(&client(), "POST", &url, &[], r#"{"upstream": "shop-v2"}"#).await;
    assert_eq!(status, 200, "{body}");
    let dom = rendered_dom(page).await;
    assert!(dom.contains(&share("shop-v2", "100.00%")), "{dom}");
    assert!(dom.contains(&share("shop-v1", "0.00%")), "{dom}");
    // The weights field shows the route's own backends and their live weights.
    assert!(dom.contains(r#"placeholder="shop-v1=0 shop-v2=100""#), "{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_form_promotes_with_the_admin_token_and_refuses_a_wrong_one() {
    if !std::path::Path::new(CHROMIUM).exists() {
        eprintln!("SKIPPED: {CHROMIUM} not found (apt-get install chromium); .ci/run installs it");
        return;
    }
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let config = shop_canary(blue.addr, green.addr, 90.0, 10.0, "")
        .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n");
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = spawn_proxy_file(path, dir).await;
    let page = format!("http://{}/", proxy.admin);

    // What a person does: type the token, wait for the live view, pick shop-v2, promote.
    let script = r##"(async () => {
        const $ = (s) => document.querySelector(s);
        const wait = async (f, what) => {
            for (let i = 0; i < 300; i++) { const v = f(); if (v) return v; await new Promise((r) => setTimeout(r, 50)); }
            throw new Error("timed out waiting for " + what);
        };
        const submit = async (token) => {
            $("#token").value = token;
            $("#msg").textContent = "";
            const f = $("#promote");
            f.route.value = "shop";
            f.upstream.value = "shop-v2";
            f.requestSubmit();
            return wait(() => $("#msg").textContent, "the answer");
        };
        await wait(() => document.readyState === "complete" && $("#token"), "the page to load");
        $("#token").value = "s3cret";
        await wait(() => $("#promote [name=upstream] option"), "the forms to fill from a polled status");
        const refused = await submit("wrong");
        const promoted = await submit("s3cret");
        await wait(() => { const c = $('.share[data-upstream="shop-v2"]'); return c && c.textContent === "100.00%"; }, "the new share");
        return { refused, promoted };
    })()"##;
    let result = tokio::task::spawn_blocking(move || Browser::open(&page).eval(script)).await.unwrap();
    let result = result.unwrap_or_else(|e| panic!("the page script failed: {e}"));
    assert!(result["refused"].as_str().is_some_and(|r| r.contains("HTTP 401")), "{result}");
    assert_eq!(result["promoted"], "done", "{result}");
    let (_, _, body) =
        get(&format!("http://{}/api/v1/status", proxy.admin), &[("authorization", "Bearer s3cret")]).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let backends = &status["routes"][0]["backends"];
    assert_eq!(
        (backends[1]["weight"].as_f64(), backends[1]["source"].as_str()),
        (Some(100.0), Some("admin")),
        "{body}"
    );
    assert_eq!(backends[0]["weight"].as_f64(), Some(0.0));
}
