//! The charts' series: `GET /api/v1/history` keeps a point per interval for every
//! version of every route (rate, error rate, p99), `ctl watch` draws them as sparklines,
//! and a rollout's status lists each finished step's decisive judgement.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

async fn history(p: &TestProxy, query: &str) -> Value {
    let (code, _, body) = get(&format!("http://{}/api/v1/history{query}", p.admin), &[]).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_each_versions_series_and_ctl_watch_draws_it() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    v2.set_status(500);
    let rollout = "\n[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\nsteps = [20, 50]\ninterval = \"1s\"\nmin_requests = 5\nmax_error_rate = 0.05\n";
    let proxy = spawn_proxy(&shop_canary(v1.addr, v2.addr, 100.0, 0.0, rollout)).await;
    let client = client();
    let (code, _, body) =
        send(&client, "POST", &format!("http://{}/api/v1/routes/shop/rollout/start", proxy.admin), &[], "").await;
    assert_eq!(code, 200, "{body}");
    // Traffic until the failing canary is rolled back, and history has points.
    let mut rolled_back = Value::Null;
    for _ in 0..400 {
        for _ in 0..10 {
            send(&client, "GET", &proxy.url("/"), &[], "").await;
        }
        let (_, _, body) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
        let s: Value = serde_json::from_str(&body).unwrap();
        if s["routes"][0]["rollout"]["state"] == "rolled_back" {
            rolled_back = s["routes"][0]["rollout"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(rolled_back["state"], "rolled_back", "the canary was rolled back");
    let judgements = rolled_back["judgements"].as_array().unwrap();
    assert_eq!(judgements.len(), 1, "{rolled_back:#}");
    assert_eq!(judgements[0]["step"], 0);
    assert_eq!(judgements[0]["percent"], 20.0);
    assert_eq!(judgements[0]["verdict"], "fail");
    assert!(judgements[0]["reason"].as_str().unwrap().contains("error rate"), "{rolled_back:#}");

    eventually("points for both versions", Duration::from_secs(10), || async {
        let h = history(&proxy, "?route=shop").await;
        let series = h["routes"][0]["series"].as_array().cloned().unwrap_or_default();
        series.len() == 2 && series.iter().all(|s| s["points"].as_array().is_some_and(|p| !p.is_empty()))
    })
    .await;
    let h = history(&proxy, "?route=shop").await;
    assert_eq!(h["interval_seconds"], 2);
    assert_eq!(h["window_seconds"], 600);
    let series = h["routes"][0]["series"].as_array().unwrap();
    assert_eq!((series[0]["version"].as_str(), series[1]["version"].as_str()), (Some("v1"), Some("v2")));
    let canary_errors = series[1]["points"].as_array().unwrap().iter().filter_map(|p| p["error_rate"].as_f64());
    assert!(canary_errors.clone().any(|e| e > 0.5), "the canary's errors are charted: {series:#?}");
    assert!(history(&proxy, "?route=nope").await["routes"].as_array().unwrap().is_empty());

    // `ctl watch`, piped: plain frames with a sparkline per version.
    let args = ["watch", "--count", "1"].map(String::from).to_vec();
    let (code, out, err) = run_ctl(format!("http://{}", proxy.admin), args).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("request rate, last 10 min"), "{out}");
    let bars = out.lines().filter(|l| l.contains("shop-v") && l.chars().any(|c| ('▁'..='█').contains(&c))).count();
    assert!(bars >= 1, "{out}");
}
