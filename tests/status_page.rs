//! The status page (the release cockpit) in a real browser: headless Chromium loads
//! `GET /` from a live proxy and runs the page's script, which polls the status, the
//! history and (in a fleet) the cluster, and redraws. The tests read the rendered DOM:
//! live shares that follow a promote; during a rollout whose canary fails, a chart line
//! per version, the step bar at the current step, each step's judgement and the
//! rollback's reason (and a screenshot of that); the change form's weight field per
//! backend posting real weights; promote behind a confirmation and the admin token; the
//! fleet's members. Without a browser: the server-rendered page (what a client without
//! JavaScript sees) shows the same state and the last reload error's PATH:LINE:COL, stays
//! under 100 KB and refers to nothing outside the admin listener. Browser tests are
//! skipped (with a message) where Chromium is not installed; `.ci/run` installs Debian's
//! `chromium`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

use support::devtools::{Browser, CHROMIUM, HEADLESS};

/// The page must stay small enough to load at once on a slow link.
const PAGE_LIMIT: usize = 100 * 1024;

fn have_chromium() -> bool {
    let found = Path::new(CHROMIUM).exists();
    if !found {
        eprintln!("SKIPPED: {CHROMIUM} not found (apt-get install chromium); .ci/run installs it");
    }
    found
}

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

/// Open the page (the browser's blocking protocol calls run off the runtime).
async fn open(url: String) -> Browser {
    tokio::task::spawn_blocking(move || Browser::open(&url)).await.unwrap()
}

/// Run `body` in the page as the body of an async function that has `$`, `$$` and a
/// bounded `wait(condition, what, ms)`; its return value, and the browser back.
async fn run(mut browser: Browser, body: &str) -> (Browser, serde_json::Value) {
    let script = format!(
        r#"(async () => {{
            const $ = (s) => document.querySelector(s);
            const $$ = (s) => [...document.querySelectorAll(s)];
            const wait = async (f, what, ms = 15000) => {{
                for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {{
                    const v = f();
                    if (v) return v;
                }}
                throw new Error("timed out waiting for " + what + "; the page says: " + document.body.innerText.slice(0, 3000));
            }};
            {body}
        }})()"#
    );
    tokio::task::spawn_blocking(move || {
        let value = browser.eval(&script).unwrap_or_else(|e| panic!("the page script failed: {e}"));
        (browser, value)
    })
    .await
    .unwrap()
}

async fn status(admin: &str) -> serde_json::Value {
    let (code, _, body) = get(&format!("{admin}/api/v1/status"), &[]).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_live_shares_and_follows_a_promote() {
    if !have_chromium() {
        return;
    }
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let proxy = spawn_proxy(&shop_canary(blue.addr, green.addr, 90.0, 10.0, "")).await;
    tally(&proxy.url("/"), 50, 2).await;
    let page = format!("http://{}/", proxy.admin);

    let dom = rendered_dom(page.clone()).await;
    // Only the script writes these cells (the server-rendered tables have no data-* cells).
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
    // The weight fields are the route's own backends, showing their live weights.
    for (upstream, weight) in [("shop-v1", 0), ("shop-v2", 100)] {
        let field = format!(r#"data-upstream="{upstream}" min="0" step="any" required="" value="{weight}">"#);
        assert!(dom.contains(&field), "{field} in {dom}");
    }
}

/// During a rollout whose canary starts failing: charts with both versions' lines, the
/// step bar at the current step with the passed step marked, then the rollback's reason,
/// the failed step and its judgement; a screenshot of that. The page refers to nothing
/// outside the admin listener and stays under 100 KB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cockpit_charts_a_failing_canary_and_shows_its_rollback() {
    if !have_chromium() {
        return;
    }
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    // A step with fewer than min_requests canary requests waits (up to 10 intervals, 20 s
    // here): the test's bursts of traffic decide when a step can be judged.
    let rollout = "[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\nsteps = [10, 50]\ninterval = \"2s\"\nmin_requests = 20\nmax_error_rate = 0.05\nmax_p99 = \"2s\"\nmax_error_rate_increase = 0.05\n";
    let proxy = spawn_proxy(&shop_canary(blue.addr, green.addr, 100.0, 0.0, rollout)).await;
    let admin = format!("http://{}", proxy.admin);
    let start = format!("{admin}/api/v1/routes/shop/rollout/start");
    assert_eq!(send(&client(), "POST", &start, &[], "").await.0, 200);
    // Step 1 (10%): 400 requests give the canary 40, enough to pass at the first judgement.
    tally(&proxy.url("/"), 400, 4).await;
    eventually("the rollout's second step", Duration::from_secs(10), || async {
        status(&admin).await["routes"][0]["rollout"]["step"] == 1
    })
    .await;

    let browser = open(format!("{admin}/")).await;
    let (browser, running) = run(
        browser,
        r##"
        const bar = await wait(() => $('ol.steps[data-route="shop"][data-current="1"]'), "the step bar at step 2");
        const line = (measure, version) => $(`svg[data-route="shop"][data-measure="${measure}"] path[data-version="${version}"]`);
        await wait(() => ["v1", "v2"].every((v) => line("rps", v) && +line("rps", v).dataset.points >= 2 && +line("rps", v).dataset.max > 0),
            "request-rate lines with points for both versions");
        const lines = {};
        for (const m of ["rps", "error_rate", "p99_ms"]) for (const v of ["v1", "v2"]) {
            const p = line(m, v);
            lines[m + " " + v] = p ? {points: +p.dataset.points, max: +p.dataset.max, stroke: p.getAttribute("stroke")} : null;
        }
        return {
            state: bar.dataset.state,
            current: bar.querySelector(".current").textContent,
            first: bar.querySelector('[data-step="0"]').className,
            timing: $('.timing[data-route="shop"]').textContent,
            judgements: $('table.judgements[data-route="shop"]').innerText,
            share: [...$$('.bar[data-route="shop"] span')].map((s) => s.dataset.upstream + " " + s.style.width),
            lines,
        };
        "##,
    )
    .await;
    assert_eq!(running["state"], "running", "{running:#}");
    assert!(running["current"].as_str().unwrap().starts_with("50%"), "{running:#}");
    assert!(running["first"].as_str().unwrap().contains("pass"), "the passed step is marked: {running:#}");
    assert!(running["timing"].as_str().unwrap().starts_with("step 2 of 2 (50%)"), "{running:#}");
    assert!(running["judgements"].as_str().unwrap().contains("pass"), "{running:#}");
    assert_eq!(running["share"], serde_json::json!(["shop-v1 50%", "shop-v2 50%"]), "{running:#}");
    // The baseline's and the canary's lines share the axes, in their own colours.
    let (v1, v2) = (&running["lines"]["rps v1"], &running["lines"]["rps v2"]);
    assert_ne!(v1["stroke"], v2["stroke"], "{running:#}");
    for measure in ["error_rate", "p99_ms"] {
        for version in ["v1", "v2"] {
            assert!(running["lines"][format!("{measure} {version}")].is_object(), "{measure} {version}: {running:#}");
        }
    }

    // The canary breaks; its next requests are 500s and step 2 fails at its judgement.
    green.set_status(500);
    let http = client();
    for _ in 0..100 {
        send(&http, "GET", &proxy.url("/"), &[], "").await;
    }
    let (mut browser, rolled_back) = run(
        browser,
        r##"
        const reason = await wait(() => $('.reason[data-route="shop"][data-state="rolled_back"]'), "the rollback's reason", 25000);
        // The failure reaches the canary's error-rate line with the next history point.
        await wait(() => { const p = $('svg[data-route="shop"][data-measure="error_rate"] path[data-version="v2"]'); return p && +p.dataset.max >= 0.5; },
            "the canary's errors in its chart", 15000);
        const urls = [];
        for (const el of $$("[src], [href], [xlink\\:href]")) for (const a of ["src", "href", "xlink:href"]) if (el.hasAttribute(a)) urls.push(el.getAttribute(a));
        return {
            reason: reason.textContent,
            step2: $('ol.steps[data-route="shop"] [data-step="1"]').className,
            verdicts: $$('table.judgements[data-route="shop"] td.verdict').map((td) => td.textContent),
            urls,
            foreign: urls.filter((u) => new URL(u, location.href).origin !== location.origin),
            loaded: performance.getEntriesByType("resource").map((e) => e.name).filter((u) => new URL(u).origin !== location.origin),
            styles: [...document.styleSheets].map((s) => s.href).filter(Boolean),
            css: [...$$("style")].map((s) => s.textContent).join(""),
        };
        "##,
    )
    .await;
    let reason = rolled_back["reason"].as_str().unwrap();
    assert!(reason.contains("(50%) failed: canary error rate"), "{rolled_back:#}");
    assert!(rolled_back["step2"].as_str().unwrap().contains("fail"), "{rolled_back:#}");
    assert_eq!(rolled_back["verdicts"], serde_json::json!(["pass", "fail"]), "{rolled_back:#}");
    assert!(rolled_back["urls"].as_array().unwrap().len() >= 3, "the links are there: {rolled_back:#}");
    assert_eq!(rolled_back["foreign"], serde_json::json!([]), "{rolled_back:#}");
    assert_eq!(rolled_back["loaded"], serde_json::json!([]), "{rolled_back:#}");
    assert_eq!(rolled_back["styles"], serde_json::json!([]), "no linked style sheets: {rolled_back:#}");
    let css = rolled_back["css"].as_str().unwrap();
    assert!(!css.contains("url(") && !css.contains("@import"), "{css}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-rollback.png");
    let shot_path = shot.clone();
    tokio::task::spawn_blocking(move || browser.screenshot(&shot_path, 1280)).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
    eprintln!("screenshot of the rolled-back rollout: {}", shot.display());

    let doc = status(&admin).await;
    let ro = &doc["routes"][0]["rollout"];
    assert_eq!(ro["state"], "rolled_back", "{ro:#}");
    assert_eq!(
        (ro["judgements"][0]["verdict"].as_str(), ro["judgements"][1]["verdict"].as_str()),
        (Some("pass"), Some("fail"))
    );
    let (_, _, page) = get(&format!("{admin}/"), &[]).await;
    eprintln!("the page during the rolled-back rollout: {} bytes", page.len());
    assert!(page.len() < PAGE_LIMIT, "{} bytes", page.len());
}

/// The weights form has a number field per backend of the route, nothing else to type:
/// submitting it sets exactly those weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weight_fields_post_real_weights() {
    if !have_chromium() {
        return;
    }
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let proxy = spawn_proxy(&shop_canary(blue.addr, green.addr, 90.0, 10.0, "")).await;
    let admin = format!("http://{}", proxy.admin);
    let browser = open(format!("{admin}/")).await;
    let (_browser, result) = run(
        browser,
        r##"
        const fields = () => $$("#wfields input");
        await wait(() => fields().length && $("#wfields").dataset.key, "the weight fields from a polled status");
        const before = fields().map((i) => [i.dataset.upstream, i.type, i.value]);
        const f = $("#weights");
        f.route.value = "shop";
        for (const [upstream, w] of [["shop-v1", "30"], ["shop-v2", "70"]]) {
            const i = $(`#wfields input[data-upstream="${upstream}"]`);
            i.value = w;
            i.dispatchEvent(new Event("input", {bubbles: true}));
        }
        const preview = fields().map((i) => i.nextElementSibling.textContent);
        f.requestSubmit();
        const msg = await wait(() => $("#msg").textContent, "the answer");
        await wait(() => { const c = $('.share[data-upstream="shop-v2"]'); return c && c.textContent === "70.00%"; }, "the new share");
        return {before, preview, msg, after: fields().map((i) => [i.dataset.upstream, i.value])};
        "##,
    )
    .await;
    assert_eq!(
        result["before"],
        serde_json::json!([["shop-v1", "number", "90"], ["shop-v2", "number", "10"]]),
        "a number field per backend, with its live weight: {result:#}"
    );
    assert_eq!(result["preview"], serde_json::json!(["= 30.0%", "= 70.0%"]), "{result:#}");
    assert_eq!(result["msg"], "done", "{result:#}");
    assert_eq!(result["after"], serde_json::json!([["shop-v1", "30"], ["shop-v2", "70"]]), "{result:#}");
    let doc = status(&admin).await;
    let backends = &doc["routes"][0]["backends"];
    let got: Vec<_> =
        backends.as_array().unwrap().iter().map(|b| (b["weight"].as_f64(), b["source"].as_str())).collect();
    assert_eq!(got, [(Some(30.0), Some("admin")), (Some(70.0), Some("admin"))], "{doc:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_form_promotes_with_the_admin_token_and_refuses_a_wrong_one() {
    if !have_chromium() {
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
    let browser = open(format!("http://{}/", proxy.admin)).await;

    // What a person does: type the token, wait for the live view, pick shop-v2, promote,
    // read the confirmation and confirm (or cancel).
    let (_browser, result) = run(
        browser,
        r##"
        const submit = async (token, answer) => {
            $("#token").value = token;
            $("#msg").textContent = "";
            const f = $("#promote");
            f.route.value = "shop";
            f.upstream.value = "shop-v2";
            f.requestSubmit();
            await wait(() => !$("#confirm").hidden, "the confirmation");
            const asked = $("#confirm-what").textContent;
            $(answer).click();
            return [asked, await wait(() => $("#msg").textContent, "the answer")];
        };
        $("#token").value = "s3cret";
        await wait(() => document.body.dataset.generation, "a polled status");
        const cancelled = await submit("s3cret", "#confirm-no");
        const refused = await submit("wrong", "#confirm-yes");
        const promoted = await submit("s3cret", "#confirm-yes");
        await wait(() => { const c = $('.share[data-upstream="shop-v2"]'); return c && c.textContent === "100.00%"; }, "the new share");
        return { cancelled, refused, promoted };
        "##,
    )
    .await;
    assert!(result["cancelled"][0].as_str().unwrap().contains("Promote shop-v2 on route shop"), "{result}");
    assert_eq!(result["cancelled"][1], "cancelled", "{result}");
    assert!(result["refused"][1].as_str().is_some_and(|r| r.contains("HTTP 401")), "{result}");
    assert_eq!(result["promoted"][1], "done", "{result}");
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

/// In a fleet (a replica with `[cluster]` on a real etcd) the page lists the members,
/// the decider and the revision each applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_panel_lists_members_the_decider_and_revisions() {
    if !have_chromium() {
        return;
    }
    let Some(etcd) = support::etcd::Etcd::start() else { return };
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let cluster = format!("\n[cluster]\netcd = [\"{}\"]\nprefix = \"/page-test\"\nname = \"edge-a\"\n", etcd.url());
    let proxy = spawn_proxy(&shop_canary(blue.addr, green.addr, 80.0, 20.0, &cluster)).await;
    proxy.metric_reaching("switchyard_cluster_connected", 1.0).await;
    // A change written to the fleet's state gives it a revision to apply.
    let weights = format!("http://{}/api/v1/routes/shop/weights", proxy.admin);
    let (code, _, body) = send(&client(), "PUT", &weights, &[], r#"{"weights": {"shop-v2": 50}}"#).await;
    assert_eq!(code, 200, "{body}");
    let browser = open(format!("http://{}/", proxy.admin)).await;
    let (_browser, fleet) = run(
        browser,
        r##"
        const row = await wait(() => $('table.members tr[data-member="edge-a"]'), "the member list");
        await wait(() => $(".decider") && $(".decider").textContent === "edge-a", "the decider");
        await wait(() => +row.cells[3].textContent > 0 || +$('table.members tr[data-member="edge-a"]').cells[3].textContent > 0, "the revision applied");
        const row2 = $('table.members tr[data-member="edge-a"]');
        return {row: [...row2.cells].map((c) => c.textContent), summary: $(".summary").textContent};
        "##,
    )
    .await;
    let row = fleet["row"].as_array().unwrap();
    assert!(row[0].as_str().unwrap().starts_with("edge-a decider this replica"), "{fleet:#}");
    assert!(row[3].as_str().unwrap().parse::<i64>().unwrap() > 0, "the revision applied: {fleet:#}");
    assert_eq!(row[4], "yes", "{fleet:#}");
    assert!(fleet["summary"].as_str().unwrap().contains("state from cluster (revision"), "{fleet:#}");
}

/// An endpoint that reports `version` in an `x-version` header on every answer (its
/// health checks' included).
async fn spawn_versioned(version: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| async move {
                let resp = http::Response::builder().header("x-version", version);
                Ok::<_, std::convert::Infallible>(
                    resp.body(http_body_util::Full::new(bytes::Bytes::from(version))).unwrap(),
                )
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            tokio::spawn(async move {
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// During a rolling update (one upstream whose endpoints report two versions) the page
/// shows a row, a share and a chart line per version group, and the upstream's groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_shows_a_line_per_version_group() {
    if !have_chromium() {
        return;
    }
    let (old, new) = (spawn_versioned("v1").await, spawn_versioned("v2").await);
    let proxy = spawn_proxy(&with_listeners(&format!(
        "[upstreams.shop]\nversion = \"v1\"\nendpoints = [\"{old}\", \"{new}\"]\nhealth = {{ path = \"/healthz\", interval = \"50ms\", healthy = 1, version_header = \"x-version\" }}\n\n[[routes]]\nname = \"shop\"\nbackends = [{{ upstream = \"shop\" }}]\n"
    )))
    .await;
    let admin = format!("http://{}", proxy.admin);
    eventually("two version groups", Duration::from_secs(10), || async {
        status(&admin).await["upstreams"][0]["groups"].as_array().is_some_and(|g| g.len() == 2)
    })
    .await;
    // Steady traffic while the page waits for the history's next points.
    let url = proxy.url("/");
    let traffic = tokio::spawn(async move {
        let http = client();
        loop {
            send(&http, "GET", &url, &[], "").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let browser = open(format!("{admin}/")).await;
    let (_browser, page) = run(
        browser,
        r##"
        const line = (v) => $(`svg[data-route="shop"][data-measure="rps"] path[data-version="${v}"]`);
        await wait(() => ["v1", "v2"].every((v) => line(v) && +line(v).dataset.max > 0), "a rate line per version");
        return {
            shares: $$('.share[data-route="shop"]').map((c) => c.dataset.version + " " + c.textContent),
            groups: $$("tr.group").map((r) => r.dataset.version + " " + r.cells[2].textContent),
            colours: ["v1", "v2"].map((v) => line(v).getAttribute("stroke")),
        };
        "##,
    )
    .await;
    traffic.abort();
    assert_eq!(page["shares"], serde_json::json!(["v1 50.00%", "v2 50.00%"]), "{page:#}");
    assert_eq!(page["groups"], serde_json::json!(["v1 1", "v2 1"]), "one healthy endpoint each: {page:#}");
    assert_ne!(page["colours"][0], page["colours"][1], "{page:#}");
}

/// What a client without JavaScript gets: the server-rendered tables, the step bar,
/// weight fields per backend and the last reload error with its PATH:LINE:COL, in a page
/// under 100 KB whose links all stay on the admin listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_rendered_page_shows_the_state_and_the_reload_error_without_script() {
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let rollout = "[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\nsteps = [5, 25, 50]\n";
    let proxy = spawn_proxy(&shop_canary(blue.addr, green.addr, 100.0, 0.0, rollout)).await;
    let admin = format!("http://{}", proxy.admin);
    std::fs::write(&proxy.config_path, "[[routes]]\nname = \"shop\"\nbackends = [{ upstream = \"nowhere\" }]\n")
        .unwrap();
    let (code, _, body) = send(&client(), "POST", &format!("{admin}/api/v1/reload"), &[], "").await;
    assert_eq!(code, 422, "{body}");

    let (code, headers, page) = get(&format!("{admin}/"), &[]).await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(page.len() < PAGE_LIMIT, "{} bytes", page.len());
    let location = format!(r#"<code class="loc">{}:3:"#, proxy.config_path.display());
    assert!(page.contains(&location), "{location} in {page}");
    for part in [
        r#"<ol class="steps" data-route="shop" data-state="idle" data-current="">"#,
        r#"<li class="step" data-step="2">50%</li>"#,
        r#"<p class="reason" data-route="shop" data-state="idle">not started</p>"#,
        r#"name="weight" data-upstream="shop-v1" min="0" step="any" required value="100">"#,
        r#"name="weight" data-upstream="shop-v2" min="0" step="any" required value="0">"#,
        r#"<div class="bar" data-route="shop"><span style="width:100.00%;background:#2f6fbf""#,
    ] {
        assert!(page.contains(part), "{part} in {page}");
    }
    // Every src/href is a path on this listener; nothing is fetched from elsewhere.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.match_indices(attr) {
            let value = &page[i + attr.len()..];
            assert!(value.starts_with('/') && !value.starts_with("//"), "{}", &value[..value.len().min(80)]);
        }
    }
    assert!(!page.contains("url(") && !page.contains("@import"), "{page}");
}
