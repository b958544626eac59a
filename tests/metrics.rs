//! The Prometheus exposition: per-version counts match what was sent, and the output
//! passes `promtool check metrics`.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::*;

async fn canary() -> (TestUpstream, TestUpstream, TestProxy) {
    let blue = spawn_upstream("blue").await;
    let green = spawn_upstream("green").await;
    let cfg = shop_canary(blue.addr, green.addr, 80.0, 20.0, "");
    let proxy = spawn_proxy(&cfg).await;
    (blue, green, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_per_version_match_requests_sent() {
    let (blue, green, proxy) = canary().await;
    let counts = tally(&proxy.url("/"), 500, 4).await;
    let v1_line = r#"switchyard_requests_total{route="shop",upstream="shop-v1",version="v1",status="200"}"#;
    let v2_line = r#"switchyard_requests_total{route="shop",upstream="shop-v2",version="v2",status="200"}"#;
    // The fast path counts a request once its last byte is written, so the last few
    // may be counted a moment after the client has them.
    proxy.metric_reaching(v1_line, counts["blue"] as f64).await;
    proxy.metric_reaching(v2_line, counts["green"] as f64).await;
    let m = proxy.metrics().await;
    let (v1, v2) = (metric_value(&m, v1_line), metric_value(&m, v2_line));
    assert_eq!(v1 as usize, counts["blue"]);
    assert_eq!(v2 as usize, counts["green"]);
    assert_eq!(v1 as usize, blue.hits());
    assert_eq!(v2 as usize, green.hits());
    assert_eq!((v1 + v2) as usize, 500);
    assert_eq!(v2, 100.0, "80/20 over 500 requests is exact with the stride split");
    assert_eq!(
        metric_value(&m, r#"switchyard_request_duration_seconds_count{route="shop",upstream="shop-v1",version="v1"}"#),
        v1
    );
    assert_eq!(metric_value(&m, r#"switchyard_backend_share{route="shop",upstream="shop-v1",version="v1"}"#), 0.8);
    assert_eq!(metric_value(&m, r#"switchyard_backend_share{route="shop",upstream="shop-v2",version="v2"}"#), 0.2);
    assert_eq!(metric_value(&m, r#"switchyard_requests_in_flight{route="shop",upstream="shop-v1",version="v1"}"#), 0.0);
    assert_eq!(metric_value(&m, "switchyard_config_generation"), 1.0);
    assert_eq!(metric_value(&m, r#"switchyard_rollout_step{route="shop"}"#), -1.0);
    assert!(m.contains(r#"switchyard_config_reloads_total{result="ok"} 0"#), "{m}");
    assert!(m.contains(
        r#"switchyard_upstream_errors_total{route="shop",upstream="shop-v2",version="v2",kind="connect"} 0"#
    ));
}

#[tokio::test]
async fn exposition_passes_promtool() {
    let (_blue, _green, proxy) = every_family().await;
    get(&proxy.url("/"), &[("host", "x")]).await;
    let text = proxy.metrics().await;
    for family in ["switchyard_mirror_requests_total{", "switchyard_rollouts_total{", "switchyard_rollout_step{"] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED: promtool not found (apt-get install prometheus); .ci/run installs it");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn admin_health_endpoints() {
    let (_b, _g, proxy) = canary().await;
    let admin = format!("http://{}", proxy.admin);
    assert_eq!(get(&format!("{admin}/healthz"), &[]).await.0, 200);
    assert_eq!(get(&format!("{admin}/readyz"), &[]).await.0, 200);
    assert_eq!(send(&client(), "POST", &format!("{admin}/metrics"), &[], "").await.0, 405);
    assert_eq!(get(&format!("{admin}/nope"), &[]).await.0, 404);
    proxy.app.plane.store.start_draining();
    assert_eq!(get(&format!("{admin}/readyz"), &[]).await.0, 503);
    assert_eq!(get(&format!("{admin}/healthz"), &[]).await.0, 200);
}

type Families = std::collections::BTreeMap<String, String>;

/// `docs/metrics.md`, split at its "Fleets" section: the families every proxy exports,
/// and those only a replica with `[cluster]` does.
fn metrics_reference() -> (String, String) {
    let doc =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md")).unwrap();
    let fleets = doc.find("\n## Fleets").expect("docs/metrics.md has a Fleets section");
    let (every, fleet) = doc.split_at(fleets);
    (every.to_string(), fleet.to_string())
}

/// Name → type of each `switchyard_` row of the tables in `doc`.
fn documented(doc: &str) -> Families {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `switchyard_"))
        .map(|rest| {
            let mut cells = rest.split('|').map(str::trim);
            let name = format!("switchyard_{}", cells.next().unwrap().trim_end_matches('`'));
            (name, cells.next().unwrap().to_string())
        })
        .collect()
}

/// Name → type of each family in an exposition.
fn exposed(text: &str) -> Families {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// `docs/metrics.md` is the one metrics reference: its table names exactly the families
/// a live exposition has, with their types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_reference_matches_the_exposition_both_ways() {
    let (every, _) = metrics_reference();
    let (_blue, _green, proxy) = every_family().await;
    let exposed = exposed(&proxy.metrics().await);
    assert_eq!(documented(&every), exposed, "docs/metrics.md's table against /metrics");
}

/// A replica with `[cluster]` (on a real etcd) exports the Fleets table's families too,
/// exactly those, and says it is connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_metrics_reference_matches_a_fleet_replica() {
    let Some(etcd) = support::etcd::Etcd::start() else { return };
    let (_, fleet) = metrics_reference();
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let cluster = format!("\n[cluster]\netcd = [\"{}\"]\nprefix = \"/metrics-test\"\nname = \"m\"\n", etcd.url());
    let proxy = spawn_proxy(&shop_canary(blue.addr, green.addr, 80.0, 20.0, &cluster)).await;
    proxy.metric_reaching("switchyard_cluster_connected", 1.0).await;
    let cluster_families: Families = exposed(&proxy.metrics().await)
        .into_iter()
        .filter(|(name, _)| name.starts_with("switchyard_cluster_"))
        .collect();
    assert_eq!(documented(&fleet), cluster_families, "docs/metrics.md's Fleets table against a fleet replica");
}
