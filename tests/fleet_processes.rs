//! Fleets as processes: three `switchyard run` processes on one real etcd, so a
//! replica can die for real (SIGKILL: no goodbye, its lease has to end). The decider is
//! killed in the middle of a rollout: another takes over within `ttl`, continues from
//! the same step, and the rollout finishes on the survivors.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use support::etcd::Etcd;
use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Replica {
    name: String,
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_replica(dir: &std::path::Path, name: &str, etcd: &str, body: &str) -> Replica {
    let (addr, admin): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{}", free_port()).parse().unwrap(), format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let config = format!(
        "[server]\nlisten = [\"{addr}\"]\ndrain_timeout = \"1s\"\n[admin]\nlisten = \"{admin}\"\n{body}\n[cluster]\netcd = [\"{etcd}\"]\nprefix = \"/sy/processes\"\nname = \"{name}\"\nttl = \"2s\"\n"
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let replica = Replica { name: name.to_string(), child, addr, admin };
    eventually(&format!("{name} is ready"), Duration::from_secs(20), || async {
        let url = format!("http://{admin}/readyz");
        let req = http::Request::get(url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
        matches!(tokio::time::timeout(Duration::from_secs(1), client().request(req)).await, Ok(Ok(r)) if r.status() == 200)
    })
    .await;
    replica
}

/// Ask every 25 ms until `f` gives a value, for at most `budget`.
async fn until<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    budget: Duration,
    mut f: impl FnMut() -> Fut,
) -> T {
    let began = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(began.elapsed() < budget, "{what}: not within {budget:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn decider_seen_by(admin: SocketAddr) -> Option<String> {
    json(admin, "/api/v1/cluster").await?["decider"].as_str().map(String::from)
}

async fn json(admin: SocketAddr, path: &str) -> Option<Value> {
    let req = http::Request::get(format!("http://{admin}{path}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(3), client().request(req)).await.ok()?.ok()?;
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_decider_mid_rollout_hands_it_over_and_the_rollout_finishes() {
    let Some(etcd) = Etcd::start() else { return };
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}\n[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\nsteps = [10, 30, 60]\ninterval = \"1s\"\nmin_requests = 20\nmax_error_rate = 0.05\n",
        shop_canary(v1.addr, v2.addr, 100.0, 0.0, "").split_once("[upstreams").map(|(_, rest)| format!("[upstreams{rest}")).unwrap()
    );
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        replicas.push(spawn_replica(dir.path(), name, &etcd.url(), &body).await);
    }
    // Traffic through every replica, all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for r in &replicas {
        let (url, stop) = (format!("http://{}/", r.addr), stop.clone());
        tokio::spawn(async move {
            let began = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && began.elapsed() < Duration::from_secs(90) {
                let req = http::Request::get(&url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
                if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), client().request(req)).await {
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    let decider = until("a decider", Duration::from_secs(10), || decider_seen_by(replicas[0].admin)).await;
    let (code, _, body) =
        send(&client(), "POST", &format!("http://{}/api/v1/routes/shop/rollout/start", replicas[1].admin), &[], "")
            .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let step_of = |v: &Value| v["routes"][0]["rollout"]["step"].as_u64();
    eventually("the rollout reaches step 1", Duration::from_secs(30), || async {
        json(replicas[0].admin, "/api/v1/status").await.is_some_and(|s| step_of(&s) == Some(1))
    })
    .await;

    // SIGKILL the decider: no resign, no lease revoke.
    let at = replicas.iter().position(|r| r.name == decider).unwrap();
    let mut dead = replicas.remove(at);
    dead.child.kill().unwrap();
    let killed = Instant::now();
    let mut step_before = 0;
    for r in &replicas {
        step_before = step_before.max(json(r.admin, "/api/v1/status").await.and_then(|s| step_of(&s)).unwrap_or(0));
    }
    let new_decider = until("another replica decides", Duration::from_secs(10), || async {
        decider_seen_by(replicas[0].admin).await.filter(|d| *d != decider)
    })
    .await;
    let takeover = killed.elapsed();
    eventually("the dead member leaves the list", Duration::from_secs(10), || async {
        json(replicas[0].admin, "/api/v1/cluster")
            .await
            .is_some_and(|v| v["members"].as_array().is_some_and(|m| m.len() == 2))
    })
    .await;
    let mut steps_seen = Vec::new();
    let began = Instant::now();
    loop {
        let mut done = true;
        for r in &replicas {
            let s = json(r.admin, "/api/v1/status").await.unwrap_or_default();
            if let Some(step) = step_of(&s) {
                steps_seen.push(step);
            }
            done &= s["routes"][0]["rollout"]["state"] == "promoted";
        }
        if done {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(40), "not promoted on both survivors; steps seen {steps_seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(steps_seen.iter().all(|s| *s >= step_before), "no step went back: {steps_seen:?} (was {step_before})");
    eprintln!("decider {decider} killed at step {step_before}; {new_decider} took over after {takeover:?}");
}
