//! Fleets on a real etcd (started on loopback ports by the tests): replicas in this
//! process, each a whole proxy with its own admin API, sharing one prefix. Changes
//! through one replica are applied by all; a late joiner starts with the fleet's
//! state; members come and go; rollouts are judged on the fleet's summed traffic;
//! an outage keeps every replica serving.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{json, Value};
use support::etcd::{Etcd, EtcdGate};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// Route "shop" (v1 90 / v2 10) in a fleet at `etcd` under `prefix`, as `name`.
fn replica_config(etcd: &str, prefix: &str, name: &str, v1: &TestUpstream, v2: &TestUpstream, extra: &str) -> String {
    format!(
        "{}\n[cluster]\netcd = [\"{etcd}\"]\nprefix = \"{prefix}\"\nname = \"{name}\"\nttl = \"2s\"\n",
        shop_canary(v1.addr, v2.addr, 90.0, 10.0, extra)
    )
}

struct Fleet {
    etcd: Etcd,
    v1: TestUpstream,
    v2: TestUpstream,
    prefix: String,
}

impl Fleet {
    async fn new() -> Option<Fleet> {
        let etcd = Etcd::start()?;
        let prefix = format!("/sy/test{}", fastrand::u32(..));
        Some(Fleet { etcd, v1: spawn_upstream("v1").await, v2: spawn_upstream("v2").await, prefix })
    }

    async fn replica(&self, name: &str, extra: &str) -> TestProxy {
        self.replica_at(&self.etcd.url(), name, extra).await
    }

    async fn replica_at(&self, etcd: &str, name: &str, extra: &str) -> TestProxy {
        spawn_proxy(&replica_config(etcd, &self.prefix, name, &self.v1, &self.v2, extra)).await
    }
}

async fn status(p: &TestProxy) -> Value {
    let (code, _, body) = get(&format!("http://{}/api/v1/status", p.admin), &[]).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn cluster(p: &TestProxy) -> Value {
    let (code, _, body) = get(&format!("http://{}/api/v1/cluster", p.admin), &[]).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `shop`'s weight of `upstream` as `p` serves it.
fn weight(status: &Value, upstream: &str) -> f64 {
    status["routes"][0]["backends"].as_array().unwrap().iter().find(|b| b["upstream"] == upstream).unwrap()["weight"]
        .as_f64()
        .unwrap()
}

async fn call(p: &TestProxy, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", p.admin))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let code = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn set_weights(p: &TestProxy, v1: f64, v2: f64) -> (StatusCode, Value) {
    call(p, "PUT", "/api/v1/routes/shop/weights", json!({ "weights": { "shop-v1": v1, "shop-v2": v2 } })).await
}

/// Wait until every replica serves `shop-v2` at `v2`; returns how long that took.
async fn all_serve(replicas: &[&TestProxy], v2: f64) -> Duration {
    let began = Instant::now();
    for p in replicas {
        eventually(&format!("{} serves shop-v2 at {v2}", p.admin), WAIT, || async {
            weight(&status(p).await, "shop-v2") == v2
        })
        .await;
    }
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_is_applied_by_every_replica() {
    let Some(fleet) = Fleet::new().await else { return };
    let (a, b, c) = (fleet.replica("a", "").await, fleet.replica("b", "").await, fleet.replica("c", "").await);
    let s = status(&c).await;
    assert_eq!(s["source"], "cluster");
    assert_eq!(s["connected"], true);

    let (code, body) = set_weights(&a, 20.0, 80.0).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    all_serve(&[&a, &b, &c], 80.0).await;
    let revisions: Vec<Value> =
        [&a, &b, &c].iter().map(|p| p.app.controller.fleet().unwrap().applied().into()).collect();
    for p in [&a, &b, &c] {
        eventually("every replica reports the same revision", WAIT, || async {
            status(p).await["revision"] == revisions[0]
        })
        .await;
        let s = status(p).await;
        assert_eq!(s["routes"][0]["backends"][1]["source"], "cluster", "{s}");
    }

    // Promote through b, roll back through c: each is applied everywhere.
    let (code, body) = call(&b, "POST", "/api/v1/routes/shop/promote", json!({ "upstream": "shop-v2" })).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    all_serve(&[&a, &b, &c], 100.0).await;
    // c's traffic follows the fleet's promote.
    let seen = tally(&c.url("/"), 20, 4).await;
    assert_eq!(seen.get("v2"), Some(&20), "{seen:?}");

    let (code, body) = call(&c, "POST", "/api/v1/routes/shop/rollback", json!({})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    all_serve(&[&a, &b, &c], 10.0).await;
    assert_eq!(a.metric("switchyard_cluster_connected").await, 1.0);
    assert!(a.metric("switchyard_cluster_revision").await > 0.0);
}

/// Requests in a loop through each of `urls` until dropped (at most 60 s), counting
/// answers that are not 200 (a failed connection counts too).
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Traffic {
    fn start(urls: &[String], per_url: usize) -> Traffic {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let (stop, sent, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        for url in urls {
            for _ in 0..per_url {
                let (stop, sent, failed, url, client) =
                    (stop.clone(), sent.clone(), failed.clone(), url.clone(), client());
                tokio::spawn(async move {
                    let began = Instant::now();
                    while !stop.load(Ordering::Relaxed) && began.elapsed() < Duration::from_secs(60) {
                        let req =
                            http::Request::get(&url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
                        let ok = match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                            Ok(Ok(resp)) => {
                                let status = resp.status();
                                http_body_util::BodyExt::collect(resp.into_body()).await.is_ok() && status == 200
                            }
                            _ => false,
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
            }
        }
        Traffic { stop, sent, failed }
    }

    fn counts(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_starts_later_serves_the_fleets_state_from_its_first_request() {
    let Some(fleet) = Fleet::new().await else { return };
    let a = fleet.replica("a", "").await;
    let (code, body) = set_weights(&a, 0.0, 100.0).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    // Started after the change: the state is loaded before it binds (and so before
    // /readyz can answer), so its very first snapshot has it.
    let late = fleet.replica("late", "").await;
    let s = status(&late).await;
    assert_eq!(weight(&s, "shop-v2"), 100.0, "{s:#}");
    eventually("a's own watch reaches the revision late started from", WAIT, || async {
        status(&a).await["revision"] == s["revision"]
    })
    .await;
    let seen = tally(&late.url("/"), 10, 2).await;
    assert_eq!(seen.get("v2"), Some(&10), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_with_the_decider_and_a_member_that_leaves_is_gone() {
    let Some(fleet) = Fleet::new().await else { return };
    let (a, b, c) = (fleet.replica("a", "").await, fleet.replica("b", "").await, fleet.replica("c", "").await);
    eventually("three members, one decider, all applied", WAIT, || async {
        let view = cluster(&b).await;
        view["members"].as_array().unwrap().len() == 3
            && view["decider"].is_string()
            && view["members"].as_array().unwrap().iter().all(|m| m["applied"] == true)
    })
    .await;
    let view = cluster(&b).await;
    assert_eq!(view["name"], "b");
    assert_eq!(view["connected"], true);
    let names: Vec<&str> = view["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let member_c = view["members"].as_array().unwrap().iter().find(|m| m["name"] == "c").unwrap().clone();
    assert_eq!(member_c["admin"], c.admin.to_string(), "{view:#}");
    assert_eq!(member_c["version"], env!("CARGO_PKG_VERSION"));
    let decider = view["decider"].as_str().unwrap().to_string();
    assert!(names.contains(&decider.as_str()));

    // A change: every member's record catches up with the new revision.
    set_weights(&a, 50.0, 50.0).await;
    eventually("every member applied the change", WAIT, || async {
        let view = cluster(&a).await;
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["applied"] == true && m["revision"] == view["latest_revision"])
    })
    .await;

    // The decider shuts down: it leaves at once and another takes over.
    let (rest, gone): (Vec<TestProxy>, Vec<TestProxy>) =
        [a, b, c].into_iter().partition(|p| p.app.controller.fleet().unwrap().name != decider);
    for p in gone {
        p.shutdown().await;
    }
    eventually("the member that left is gone and another decides", WAIT, || async {
        let view = cluster(&rest[0]).await;
        view["members"].as_array().unwrap().len() == 2 && view["decider"].as_str().is_some_and(|d| d != decider)
    })
    .await;
    let (code, _, body) = get(&format!("http://{}/api/v1/cluster", rest[1].admin), &[]).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_the_cluster_api_is_404_and_status_says_file() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let p = spawn_proxy(&shop_canary(v1.addr, v2.addr, 90.0, 10.0, "")).await;
    let (code, _, body) = get(&format!("http://{}/api/v1/cluster", p.admin), &[]).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("[cluster]"), "{body}");
    let s = status(&p).await;
    assert_eq!(s["source"], "file");
    assert!(s["revision"].is_null());
    assert!(!p.metrics().await.contains("switchyard_cluster_connected"));
}

/// A rollout table for `shop`: canary v2 over baseline v1.
fn rollout(steps: &str, extra: &str) -> String {
    format!(
        "\n[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\nsteps = {steps}\ninterval = \"1s\"\nmin_requests = 30\nmax_error_rate = 0.05\n{extra}\n"
    )
}

async fn rollout_of(p: &TestProxy) -> Value {
    status(p).await["routes"][0]["rollout"].clone()
}

/// Poll (bounded) until `p`'s rollout satisfies `reached`; on timeout, fail with the
/// last rollout seen (a wait that ends in a rollback says so).
async fn wait_rollout(p: &TestProxy, what: &str, budget: Duration, reached: impl Fn(&Value) -> bool) -> Value {
    let began = Instant::now();
    loop {
        let r = rollout_of(p).await;
        if reached(&r) {
            return r;
        }
        assert!(began.elapsed() < budget, "{what}: not within {budget:?}; last seen: {r:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The replicas that are not the decider, and the decider.
async fn split_by_decider(replicas: Vec<TestProxy>) -> (Vec<TestProxy>, TestProxy) {
    eventually("a decider is elected", WAIT, || async {
        replicas.iter().any(|p| p.app.controller.fleet().unwrap().is_decider())
    })
    .await;
    let (deciders, others): (Vec<TestProxy>, Vec<TestProxy>) =
        replicas.into_iter().partition(|p| p.app.controller.fleet().unwrap().is_decider());
    assert_eq!(deciders.len(), 1);
    (others, deciders.into_iter().next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_traffic_through_one_replica_only_is_promoted_by_the_fleet() {
    let Some(fleet) = Fleet::new().await else { return };
    let table = rollout("[10, 50]", "");
    let replicas =
        vec![fleet.replica("a", &table).await, fleet.replica("b", &table).await, fleet.replica("c", &table).await];
    let (others, decider) = split_by_decider(replicas).await;
    // All traffic through one replica that is not the decider: judged per replica, the
    // decider would see nothing and wait forever.
    let busy = &others[0];
    let _traffic = Traffic::start(&[busy.url("/")], 4);
    let (code, body) = call(&others[1], "POST", "/api/v1/routes/shop/rollout/start", json!({})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    for p in [&others[0], &others[1], &decider] {
        wait_rollout(p, "promoted", Duration::from_secs(40), |r| r["state"] == "promoted").await;
    }
    for p in [&others[0], &others[1], &decider] {
        assert_eq!(weight(&status(p).await, "shop-v2"), 100.0);
    }
    let r = rollout_of(&decider).await;
    assert!(r["reason"].as_str().unwrap().contains("all 2 steps passed"), "{r:#}");
    // The decider judged requests it never served.
    let judged = r["last_judgement"]["canary_requests"].as_u64().unwrap();
    assert!(judged >= 30, "{r:#}");
    assert_eq!(decider.app.plane.runtime().route("shop").unwrap().backends[1].metrics.tally.snapshot().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_on_every_replica() {
    let Some(fleet) = Fleet::new().await else { return };
    fleet.v2.set_status(500);
    let table = rollout("[10, 50]", "");
    let replicas =
        vec![fleet.replica("a", &table).await, fleet.replica("b", &table).await, fleet.replica("c", &table).await];
    let (others, decider) = split_by_decider(replicas).await;
    let _traffic = Traffic::start(&[others[0].url("/"), others[1].url("/")], 3);
    let (code, body) = call(&others[0], "POST", "/api/v1/routes/shop/rollout/start", json!({})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let mut rolled_back_at = Vec::new();
    let began = Instant::now();
    for p in [&others[0], &others[1], &decider] {
        wait_rollout(p, "rolled back", Duration::from_secs(40), |r| r["state"] == "rolled_back").await;
        rolled_back_at.push(began.elapsed());
        assert_eq!(weight(&status(p).await, "shop-v2"), 0.0);
    }
    let r = rollout_of(&others[1]).await;
    assert!(r["reason"].as_str().unwrap().contains("step 0 (10%) failed: canary error rate"), "{r:#}");
    eprintln!("rolled back on the three replicas after {rolled_back_at:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_through_two_replicas_never_tear_the_state() {
    let Some(fleet) = Fleet::new().await else { return };
    let (a, b) = (fleet.replica("a", "").await, fleet.replica("b", "").await);
    let mut outcomes = Vec::new();
    for i in 0..20 {
        let (ra, rb) =
            tokio::join!(set_weights(&a, 100.0 - i as f64, i as f64), set_weights(&b, 50.0, 50.0 + i as f64));
        for (code, body) in [ra, rb] {
            assert!(code == StatusCode::OK || code == StatusCode::CONFLICT, "{code} {body}");
            if code == StatusCode::CONFLICT {
                assert!(body["error"].as_str().unwrap().contains("changed this route at the same time"), "{body}");
            }
            outcomes.push(code);
        }
    }
    assert!(outcomes.contains(&StatusCode::OK));
    // Whatever won last, both replicas converge on it.
    eventually("both replicas serve the same weights", WAIT, || async {
        let (sa, sb) = (status(&a).await, status(&b).await);
        sa["revision"] == sb["revision"] && sa["routes"][0]["backends"] == sb["routes"][0]["backends"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_etcd_is_down_every_replica_serves_and_fleet_changes_get_503() {
    let Some(mut fleet) = Fleet::new().await else { return };
    let (a, b) = (fleet.replica("a", "").await, fleet.replica("b", "").await);
    set_weights(&a, 30.0, 70.0).await;
    all_serve(&[&a, &b], 70.0).await;
    let traffic = Traffic::start(&[a.url("/"), b.url("/")], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;

    fleet.etcd.stop();
    eventually("both replicas say etcd is unreachable", WAIT, || async {
        a.metric("switchyard_cluster_connected").await == 0.0 && b.metric("switchyard_cluster_connected").await == 0.0
    })
    .await;
    let (code, body) = set_weights(&b, 0.0, 100.0).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("etcd is unreachable"), "{body}");
    let (code, _) = call(&a, "POST", "/api/v1/routes/shop/rollback", json!({})).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    for p in [&a, &b] {
        let (code, _, _) = get(&format!("http://{}/readyz", p.admin), &[]).await;
        assert_eq!(code, StatusCode::OK);
        let s = status(p).await;
        assert_eq!(s["connected"], false);
        assert_eq!(weight(&s, "shop-v2"), 70.0);
        assert_eq!(cluster(p).await["connected"], false);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    fleet.etcd.restart();
    eventually("both replicas reconnect", Duration::from_secs(20), || async {
        a.metric("switchyard_cluster_connected").await == 1.0 && b.metric("switchyard_cluster_connected").await == 1.0
    })
    .await;
    let (code, body) = set_weights(&b, 0.0, 100.0).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    all_serve(&[&a, &b], 100.0).await;
    let (sent, failed) = traffic.counts();
    drop(traffic);
    assert!(sent > 50, "traffic ran: {sent}");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed across the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_catches_up_after_the_history_it_missed_was_compacted() {
    let Some(fleet) = Fleet::new().await else { return };
    let gate = EtcdGate::new(fleet.etcd.port());
    let a = fleet.replica("a", "").await;
    let c = fleet.replica_at(&gate.url(), "c", "").await;
    // c's own change, which the changes it misses will supersede.
    assert_eq!(set_weights(&c, 70.0, 30.0).await.0, StatusCode::OK);
    all_serve(&[&a, &c], 30.0).await;
    gate.cut();
    eventually("c notices", WAIT, || async { c.metric("switchyard_cluster_connected").await == 0.0 }).await;
    for i in 1..=20 {
        let (code, body) = set_weights(&a, 100.0 - i as f64, i as f64).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    assert_eq!(weight(&status(&c).await, "shop-v2"), 30.0, "c kept serving what it had");
    // Compact etcd's history past what c applied: c's watch cannot resume; it must
    // load the state whole.
    let mut client = etcd_client::Client::connect([fleet.etcd.url()], None).await.unwrap();
    // Members and tallies move etcd's revision past the last state change: compact
    // past that too, so resuming from the last state change would be refused again.
    for i in 0..5 {
        client.put(format!("{}/noise/{i}", fleet.prefix), "x", None).await.unwrap();
    }
    let now = client.get("/", None).await.unwrap().header().unwrap().revision();
    client.compact(now, None).await.unwrap();
    gate.heal();
    // The whole state as etcd has it now: c's older change is not laid over it.
    all_serve(&[&c], 20.0).await;
    eventually("c applied a's revision", WAIT, || async {
        status(&c).await["revision"] == status(&a).await["revision"]
    })
    .await;
    // And c follows live changes again.
    assert_eq!(set_weights(&a, 55.0, 45.0).await.0, StatusCode::OK);
    all_serve(&[&c], 45.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_deciders_late_write_is_refused_by_etcd() {
    use std::sync::Arc;
    use switchyard::cluster::{run_session, Fleet as Handle, FleetError};
    use switchyard::config::FileCluster;
    use switchyard::control::RouteState;

    let Some(etcd) = Etcd::start() else { return };
    let cluster = |name: &str| FileCluster {
        etcd: vec![etcd.url()],
        prefix: "/sy/fence".into(),
        name: name.into(),
        ttl: Duration::from_secs(2),
    };
    let a = Arc::new(Handle::connect(&cluster("a"), "127.0.0.1:1".into()).await.unwrap());
    tokio::spawn(run_session(Arc::downgrade(&a)));
    eventually("a decides", WAIT, || async { a.is_decider() }).await;
    let b = Arc::new(Handle::connect(&cluster("b"), "127.0.0.1:2".into()).await.unwrap());
    tokio::spawn(run_session(Arc::downgrade(&b)));
    eventually("b is a member", WAIT, || async { a.members().await.is_ok_and(|m| m.len() == 2) }).await;
    assert!(!b.is_decider());

    let step = |reason: &str| RouteState {
        weights: None,
        rollout: Some(switchyard::control::SavedRollout {
            fingerprint: "f".into(),
            phase: switchyard::control::Phase::Running,
            step: 1,
            reason: reason.into(),
        }),
    };
    let first = a.write("shop", &step("a, step 1"), 0, true).await.unwrap();
    // b is not the decider: its fenced writes are refused before they are sent.
    assert_eq!(b.write("shop", &step("b"), first, true).await, Err(FleetError::Fenced));

    // a's lease ends (as when a stalls past its ttl): b wins the election.
    let stale = a.leader_key().unwrap();
    let mut client = etcd_client::Client::connect([etcd.url()], None).await.unwrap();
    client.lease_revoke(stale.lease()).await.unwrap();
    eventually("b takes over", WAIT, || async { b.is_decider() }).await;

    // a, still holding the key it won with, writes late: etcd refuses it.
    let late = a.write_as("shop", &step("a, late"), first, Some(&stale)).await;
    assert_eq!(late, Err(FleetError::Fenced));
    let key = b.keys.route("shop");
    let kv = client.get(key.as_str(), None).await.unwrap().kvs()[0].clone();
    assert_eq!(kv.mod_revision(), first, "the refused write left the route untouched");
    assert!(kv.value_str().unwrap().contains("a, step 1"));
    // The new decider's write goes through.
    b.write("shop", &step("b, step 2"), first, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_rollout_pauses_while_etcd_is_down_and_finishes_when_it_is_back() {
    let Some(mut fleet) = Fleet::new().await else { return };
    let table = rollout("[10, 20, 30]", "");
    let replicas = vec![fleet.replica("a", &table).await, fleet.replica("b", &table).await];
    let (others, decider) = split_by_decider(replicas).await;
    let _traffic = Traffic::start(&[others[0].url("/"), decider.url("/")], 3);
    let (code, body) = call(&others[0], "POST", "/api/v1/routes/shop/rollout/start", json!({})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    wait_rollout(&decider, "step 1", Duration::from_secs(30), |r| r["step"] == 1).await;

    fleet.etcd.stop();
    eventually("the decider knows", WAIT, || async { decider.metric("switchyard_cluster_connected").await == 0.0 })
        .await;
    let frozen = rollout_of(&decider).await["step"].clone();
    // Several intervals without etcd: the step neither advances nor fails.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = rollout_of(&decider).await;
    assert_eq!(r["state"], "running", "{r:#}");
    assert_eq!(r["step"], frozen, "{r:#}");
    assert!(r["reason"].as_str().unwrap().contains("etcd is unreachable"), "{r:#}");
    let step_gauge = r#"switchyard_rollout_step{route="shop"}"#;
    assert_eq!(others[0].metric(step_gauge).await, frozen.as_f64().unwrap());

    fleet.etcd.restart();
    for p in [&decider, &others[0]] {
        wait_rollout(p, "promoted", Duration::from_secs(40), |r| r["state"] == "promoted").await;
    }
}

/// Figures for BENCHMARKS.md (run by hand: `cargo test --release --test fleet -- --ignored
/// --nocapture`): the time from an admin call's answer until the last replica applied
/// it, over 100 changes, and etcd writes per second for fleets of 3 and 10 replicas,
/// idle and with a rollout running under traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run by hand"]
async fn measure_propagation_and_etcd_writes() {
    let Some(fleet) = Fleet::new().await else { return };
    let replicas = vec![fleet.replica("a", "").await, fleet.replica("b", "").await, fleet.replica("c", "").await];
    let mut lags = Vec::new();
    for i in 0..100u32 {
        let w = f64::from(i % 50) + 1.0;
        let called = Instant::now();
        let (code, _) = set_weights(&replicas[i as usize % 3], 100.0 - w, w).await;
        assert_eq!(code, StatusCode::OK);
        let began = Instant::now();
        loop {
            let applied = replicas.iter().all(|p| p.app.plane.runtime().route("shop").unwrap().backends[1].weight == w);
            if applied {
                break;
            }
            assert!(began.elapsed() < WAIT);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lags.push(called.elapsed());
    }
    lags.sort();
    let pct = |q: f64| lags[((lags.len() as f64 * q).ceil() as usize).min(lags.len()) - 1];
    eprintln!(
        "from an admin call to the last of 3 replicas applying it, over 100 changes: p50 {:?} p99 {:?} max {:?}",
        pct(0.5),
        pct(0.99),
        lags[99]
    );
    drop(replicas);

    for n in [3usize, 10] {
        let table = rollout("[10, 50]", "interval = \"30s\"").replace("interval = \"1s\"\n", "");
        let mut replicas = Vec::new();
        for i in 0..n {
            replicas.push(fleet.replica(&format!("m{n}-{i}"), &table).await);
        }
        let mut client = etcd_client::Client::connect([fleet.etcd.url()], None).await.unwrap();
        let revision = || {
            let mut client = client.clone();
            async move { client.get("/", None).await.unwrap().header().unwrap().revision() }
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let r0 = revision().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle = (revision().await - r0) as f64 / 10.0;
        let urls: Vec<String> = replicas.iter().map(|p| p.url("/")).collect();
        let traffic = Traffic::start(&urls, 1);
        let (code, body) = call(&replicas[0], "POST", "/api/v1/routes/shop/rollout/start", json!({})).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let r1 = revision().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let running = (revision().await - r1) as f64 / 10.0;
        drop(traffic);
        client.delete(fleet.prefix.as_str(), Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
        eprintln!("fleet of {n}: etcd writes/s idle {idle:.1}, with a rollout running under traffic {running:.1}");
        for p in replicas {
            p.shutdown().await;
        }
    }
}
