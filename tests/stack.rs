//! The docker-compose stack, checked without a Docker engine: the compose file parses
//! (`docker-compose config -q`), with and without its `fleet` profile, the Prometheus
//! config passes `promtool check config`, the HAProxy config in front of the fleet passes
//! `haproxy -c`, the stack's and the fleet's Switchyard configs pass `switchyard check`,
//! every metric the Grafana dashboard queries exists in a live exposition (a fleet
//! replica's for the fleet panels) and every exported family has a panel, and the
//! image's health check command works against a live admin listener. Tools that are
//! missing are reported as skipped (`.ci/run` installs them).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use support::*;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Run a tool; `None` when it is not installed.
fn tool(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output() {
        Ok(out) => Some(out),
        Err(_) => {
            eprintln!("SKIPPED: {program} not found; .ci/run installs it");
            None
        }
    }
}

fn assert_success(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_file_parses() {
    if let Some(out) = tool("docker-compose", &["-f", "docker-compose.yml", "config", "-q"]) {
        assert_success("docker-compose config -q", &out);
    }
    let compose = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    // The config is a directory mount, so edits on the host reach the watcher.
    assert!(compose.contains("./config:/etc/switchyard"), "{compose}");
}

/// `docker-compose config`'s normalized output, split into its services' blocks.
fn compose_services(config: &str) -> std::collections::BTreeMap<String, String> {
    let mut services = std::collections::BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in config.lines().skip_while(|l| *l != "services:").skip(1) {
        if !line.starts_with(' ') {
            break; // the next top-level key
        }
        match line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')).filter(|n| !n.starts_with(' ')) {
            Some(name) => {
                services.extend(current.take());
                current = Some((name.to_string(), String::new()));
            }
            None => current.iter_mut().for_each(|(_, block)| block.push_str(&format!("{}\n", line.trim()))),
        }
    }
    services.extend(current);
    services
}

#[test]
fn the_fleet_profile_parses_and_leaves_the_default_stack_alone() {
    let Some(out) = tool("docker-compose", &["-f", "docker-compose.yml", "--profile", "fleet", "config"]) else {
        return;
    };
    assert_success("docker-compose --profile fleet config", &out);
    let services = compose_services(&String::from_utf8_lossy(&out.stdout));
    let in_fleet = |block: &String| block.contains("profiles:\n- fleet\n");
    let default: BTreeSet<&str> = services.iter().filter(|(_, b)| !in_fleet(b)).map(|(n, _)| n.as_str()).collect();
    let fleet: BTreeSet<&str> = services.iter().filter(|(_, b)| in_fleet(b)).map(|(n, _)| n.as_str()).collect();
    // A plain `docker compose up` starts exactly what it started before the profile existed.
    assert_eq!(default, BTreeSet::from(["app-blue", "app-green", "grafana", "prometheus", "switchyard"]));
    assert_eq!(fleet, BTreeSet::from(["balancer", "edge-a", "edge-b", "edge-c", "etcd"]));
    for edge in ["edge-a", "edge-b", "edge-c"] {
        let block = &services[edge];
        // `[cluster] name` defaults to the hostname: one config file, three names.
        assert!(block.contains(&format!("hostname: {edge}\n")), "{edge}:\n{block}");
        assert!(block.contains("- /etc/switchyard/fleet.toml\n"), "{edge}:\n{block}");
    }
    let etcd = &services["etcd"];
    assert!(
        etcd.contains("--auto-compaction-mode=revision") && etcd.contains("--auto-compaction-retention="),
        "{etcd}"
    );
    let haproxy = std::fs::read_to_string(repo("config/haproxy/fleet.cfg")).unwrap();
    for edge in ["edge-a", "edge-b", "edge-c"] {
        assert!(haproxy.contains(&format!("server {edge} {edge}:8080")), "the balancer sends to {edge}");
    }
    assert!(haproxy.contains("uri /readyz"), "the balancer checks readiness");
}

#[test]
fn the_fleet_balancer_config_passes_haproxy_check() {
    // The replicas' names resolve only inside compose: `init-addr none` lets the check pass.
    if let Some(out) = tool("haproxy", &["-c", "-f", "config/haproxy/fleet.cfg"]) {
        assert_success("haproxy -c -f config/haproxy/fleet.cfg", &out);
    }
}

#[test]
fn the_fleet_config_passes_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(repo("config/fleet.toml"))
        .env("SWITCHYARD_ADMIN_TOKEN", "test-token")
        .output()
        .unwrap();
    assert_success("switchyard check -c config/fleet.toml", &out);
}

#[test]
fn the_prometheus_config_passes_promtool() {
    if let Some(out) = tool("promtool", &["check", "config", "config/prometheus/prometheus.yml"]) {
        assert_success("promtool check config", &out);
    }
}

#[test]
fn the_stack_config_passes_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(repo("config/docker-compose.toml"))
        .env("SWITCHYARD_ADMIN_TOKEN", "test-token")
        .output()
        .unwrap();
    assert_success("switchyard check -c config/docker-compose.toml", &out);
}

#[test]
fn the_image_is_multi_stage_non_root_and_health_checked() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    assert_eq!(dockerfile.lines().filter(|l| l.starts_with("FROM ")).count(), 2, "build and runtime stages");
    assert!(dockerfile.lines().any(|l| l.starts_with("USER ") && !l.contains("root:") && !l.ends_with(" root")));
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("\"health\"]"), "{dockerfile}");
}

#[tokio::test]
async fn the_health_check_command_asks_the_admin_listener() {
    let app = spawn_upstream("app").await;
    let proxy = spawn_proxy(&with_listeners(&format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"app\"\nbackends = [{{ upstream = \"app\" }}]\n",
        app.addr
    )))
    .await;
    let (code, out, _) = run_ctl(format!("http://{}", proxy.admin), vec!["health".into()]).await;
    assert_eq!((code, out.trim()), (Some(0), "healthy"));
    let (code, _, err) = run_ctl("http://127.0.0.1:1".into(), vec!["health".into()]).await;
    assert_eq!(code, Some(1), "{err}");
}

/// `switchyard_...` names in PromQL, with histogram suffixes folded into the family.
fn queried_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut exprs = Vec::new();
    fn walk<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("expr" | "query" | "definition", Some(s)) => out.push(s),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(dashboard, &mut exprs);
    let mut names = BTreeSet::new();
    for e in exprs {
        for (i, _) in e.match_indices("switchyard_") {
            let name: String = e[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let family = ["_bucket", "_sum", "_count"].iter().fold(name.clone(), |n, s| {
                n.strip_suffix(s).filter(|base| base.ends_with("_seconds")).map_or(n.clone(), str::to_string)
            });
            names.insert(family);
        }
    }
    names
}

/// Families exported only by a replica with `[cluster]` (docs/metrics.md's "Fleets"
/// table): the dashboard's fleet panels query them, a proxy without a fleet has none, so
/// `every_metric_the_dashboard_queries_exists` checks them against a fleet replica (on a
/// real etcd) instead, as tests/metrics.rs's fleet test does.
const FLEET_ONLY: [&str; 2] = ["switchyard_cluster_connected", "switchyard_cluster_revision"];

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo("config/grafana/dashboards/switchyard.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// `# TYPE` names of an exposition.
fn families(exposition: &str) -> BTreeSet<String> {
    exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).map(str::to_string).collect()
}

/// Every metric a panel, variable or annotation queries is exported, and every family
/// the proxy exports has a panel: the dashboard keeps up with new metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists() {
    let dashboard = dashboard();
    assert!(dashboard["templating"]["list"].as_array().unwrap().iter().any(|v| v["name"] == "version"));
    let wanted = queried_metrics(&dashboard);
    let fleet_only: BTreeSet<String> = FLEET_ONLY.iter().map(|s| s.to_string()).collect();

    let (_blue, _green, proxy) = every_family().await;
    let exported = families(&proxy.metrics().await);
    let charted: BTreeSet<String> = wanted.difference(&fleet_only).cloned().collect();
    assert_eq!(charted, exported, "the dashboard's queries (fleet-only aside) against /metrics' families");
    assert!(fleet_only.is_subset(&wanted), "the fleet panels query {FLEET_ONLY:?}: {wanted:?}");
    assert!(fleet_only.is_disjoint(&exported), "a family exported without [cluster] is not fleet-only");

    let Some(etcd) = support::etcd::Etcd::start() else { return };
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let cluster = format!("\n[cluster]\netcd = [\"{}\"]\nprefix = \"/dashboard-test\"\nname = \"d\"\n", etcd.url());
    let replica = spawn_proxy(&shop_canary(blue.addr, green.addr, 80.0, 20.0, &cluster)).await;
    replica.metric_reaching("switchyard_cluster_connected", 1.0).await;
    let on_replica = families(&replica.metrics().await);
    for name in FLEET_ONLY {
        assert!(on_replica.contains(name), "the dashboard queries {name}, which a fleet replica does not export");
    }
}

/// The panels added with the metrics they chart: client-closed requests (499), mirror
/// results, rollout steps and results (also as annotations), and the fleet's gauges.
#[test]
fn the_dashboard_charts_client_closed_requests_rollouts_mirrors_and_the_fleet() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let queries = |panel: &serde_json::Value| -> String {
        panel["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()).collect()
    };
    let panel_querying = |needle: &str| {
        panels.iter().find(|p| queries(p).contains(needle)).unwrap_or_else(|| panic!("no panel queries {needle}"))
    };
    assert!(queries(panel_querying(r#"status="499""#)).contains("switchyard_requests_total"));
    for needle in [
        "switchyard_rollout_step",
        "switchyard_rollouts_total",
        "switchyard_mirror_requests_total",
        r#"result="mismatch""#,
        "switchyard_cluster_connected",
        "switchyard_cluster_revision",
        "max(switchyard_cluster_revision) - min(switchyard_cluster_revision)",
    ] {
        panel_querying(needle);
    }
    let annotations: Vec<&str> =
        dashboard["annotations"]["list"].as_array().unwrap().iter().filter_map(|a| a["expr"].as_str()).collect();
    for family in ["switchyard_rollout_step", "switchyard_rollouts_total"] {
        assert!(annotations.iter().any(|e| e.contains(family)), "an annotation marks {family}: {annotations:?}");
    }
    // Panels do not overlap and ids are unique (Grafana keeps one of two equal ids).
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id {}", p["id"]);
        let g = &p["gridPos"];
        let (x, y, w, h) =
            (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(x + w <= 24, "{} is wider than the grid", p["title"]);
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(cells.insert(cell), "{} overlaps another panel", p["title"]);
        }
    }
}

/// The image's default command (the Dockerfile's `CMD`), run as its usage comment says,
/// answers at `/`: the demo, on the same arguments (ports made free for the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_default_command_answers_at_the_root() {
    use std::io::{BufRead, BufReader};
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    assert!(dockerfile.contains("docker run --rm -p 8080:8080 switchyard "), "the usage comment runs the default CMD");
    let cmd = dockerfile.lines().find_map(|l| l.strip_prefix("CMD ")).expect("a CMD");
    let args: Vec<String> = serde_json::from_str(cmd).unwrap();
    let args: Vec<String> = args
        .into_iter()
        .map(|a| if a.parse::<std::net::SocketAddr>().is_ok() { "127.0.0.1:0".to_string() } else { a })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Read every line (the process must not find its stdout closed), reporting the address.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.trim().strip_prefix("proxy    http://").and_then(|r| r.split('/').next()) {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let proxy = tokio::task::spawn_blocking(move || rx.recv_timeout(std::time::Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the default command printed its proxy address");
    let (status, _, body) = get(&format!("http://{proxy}/"), &[]).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
}
