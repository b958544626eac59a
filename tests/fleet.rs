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
