//! Rollout timing on tokio's paused clock: no sockets, no real waiting. The proxy's
//! parts are built in-process ([`App::start`]), the canary's and baseline's requests are
//! counted straight into the tallies the judge reads (what the request path does per
//! request), and virtual time moves only when every task waits, so each assertion
//! lands at an exact point in a step's interval. End-to-end rollouts with real traffic
//! are in `rollout.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::*;
use switchyard::app::App;
use switchyard::rollout::Action;

const INTERVAL: Duration = Duration::from_secs(10);

async fn app(table: &str) -> Arc<App> {
    let text = shop_canary(
        "127.0.0.1:9".parse().unwrap(),
        "127.0.0.1:10".parse().unwrap(),
        100.0,
        0.0,
        &format!("\n[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\ninterval = \"10s\"\n{table}\n"),
    );
    let cfg = switchyard::config::parse(std::path::Path::new("clock.toml"), &text).unwrap();
    App::start(cfg, None).await
}

fn rollout(app: &App) -> Value {
    serde_json::to_value(switchyard::admin::status::status(app)).unwrap()["routes"][0]["rollout"].clone()
}

/// `n` answered requests of `upstream` (all 200 in 2 ms, or all 503), as the request
/// path counts them.
fn served(app: &App, upstream: &str, n: u64, status: u16) {
    let version = if upstream == "shop-v1" { "v1" } else { "v2" };
    let metrics = app.plane.telemetry.backend("shop", upstream, version);
    for _ in 0..n {
        metrics.tally.answered(status);
        metrics.tally.timed(Duration::from_millis(2));
    }
}

/// Just past the next judgement (ticks are `INTERVAL` apart from the step's start).
async fn next_tick() {
    tokio::time::sleep(INTERVAL).await;
    tokio::task::yield_now().await;
}

fn state_and_step(app: &App) -> (String, Value) {
    let r = rollout(app);
    (r["state"].as_str().unwrap().to_string(), r["step"].clone())
}

#[tokio::test(start_paused = true)]
async fn each_step_lasts_exactly_one_interval_when_it_passes() {
    let app = app("steps = [10, 50, 100]\nmin_requests = 5").await;
    app.driver.rollout("shop", Action::Start).await.unwrap();
    for step in 0..3u64 {
        assert_eq!(state_and_step(&app), ("running".into(), Value::from(step)));
        served(&app, "shop-v2", 10, 200);
        served(&app, "shop-v1", 10, 200);
        // Just short of the interval nothing is judged yet.
        tokio::time::sleep(INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(state_and_step(&app), ("running".into(), Value::from(step)));
        tokio::time::sleep(Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
    }
    let r = rollout(&app);
    assert_eq!(r["state"], "promoted", "{r:#}");
    assert_eq!(r["reason"], "all 3 steps passed");
}

#[tokio::test(start_paused = true)]
async fn a_canary_failing_at_its_second_step_is_rolled_back_there() {
    let app = app("steps = [10, 50, 100]\nmin_requests = 5\nmax_error_rate = 0.1").await;
    app.driver.rollout("shop", Action::Start).await.unwrap();
    served(&app, "shop-v2", 10, 200);
    next_tick().await;
    assert_eq!(state_and_step(&app), ("running".into(), Value::from(1)));
    served(&app, "shop-v2", 8, 200);
    served(&app, "shop-v2", 2, 503);
    next_tick().await;
    let r = rollout(&app);
    assert_eq!(r["state"], "rolled_back", "{r:#}");
    assert!(r["reason"].as_str().unwrap().starts_with("step 1 (50%) failed"), "{r:#}");
    assert_eq!(r["canary_percent"], 0.0);
}

/// Moved from `rollout.rs` (same assertions): with real intervals it waited ~1.3 s.
#[tokio::test(start_paused = true)]
async fn a_step_without_enough_traffic_waits_ten_intervals_then_fails() {
    let app = app("steps = [50]\nmin_requests = 1000").await;
    app.driver.rollout("shop", Action::Start).await.unwrap();
    for judged in 1..10 {
        next_tick().await;
        let waiting = rollout(&app);
        assert_eq!(waiting["state"], "running", "still waiting for traffic after {judged} intervals: {waiting:#}");
    }
    next_tick().await;
    let r = rollout(&app);
    assert_eq!(r["state"], "rolled_back", "{r:#}");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("only 0 canary requests after 10 intervals (min_requests = 1000)"), "{reason}");
}

/// Moved from `rollout.rs` (same assertions): with real intervals it slept a second.
#[tokio::test(start_paused = true)]
async fn a_paused_rollout_stays_on_its_step_and_resume_goes_on() {
    let app = app("steps = [10, 50, 100]\nmin_requests = 1").await;
    app.driver.rollout("shop", Action::Start).await.unwrap();
    app.driver.rollout("shop", Action::Pause).await.unwrap();
    let step = rollout(&app)["step"].as_u64().unwrap();
    // Several intervals pass with traffic: a paused rollout is not judged.
    for _ in 0..5 {
        served(&app, "shop-v2", 10, 200);
        next_tick().await;
    }
    let r = rollout(&app);
    assert_eq!((r["state"].as_str(), r["step"].as_u64()), (Some("paused"), Some(step)), "{r:#}");
    app.driver.rollout("shop", Action::Resume).await.unwrap();
    for _ in 0..3 {
        served(&app, "shop-v2", 10, 200);
        next_tick().await;
    }
    assert_eq!(rollout(&app)["state"], "promoted");
}
