//! The weighted per-request split through the real proxy: observed shares within ±1 point
//! of the weights over 10,000 requests, for 2 and 3 backends and decimal weights.

mod support;

use support::*;

async fn check_split(weights: &[(&str, f64)]) {
    let mut ups = Vec::new();
    let mut cfg = String::new();
    let mut backends = Vec::new();
    for (name, w) in weights {
        let u = spawn_upstream(name).await;
        cfg += &format!("[upstreams.{name}]\nendpoints = [\"{}\"]\n", u.addr);
        backends.push(format!("{{ upstream = \"{name}\", weight = {w} }}"));
        ups.push(u);
    }
    cfg += &format!("[[routes]]\nname = \"r\"\nbackends = [{}]\n", backends.join(", "));
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;

    let n = 10_000;
    let counts = tally(&proxy.url("/"), n, 8).await;
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    for (name, w) in weights {
        let observed = *counts.get(*name).unwrap_or(&0) as f64 / n as f64 * 100.0;
        let want = w / total * 100.0;
        assert!((observed - want).abs() <= 1.0, "{name}: observed {observed:.2}% want {want:.2}% ({counts:?})");
    }
    // The upstreams agree with what the clients saw.
    for u in &ups {
        assert_eq!(u.hits(), *counts.get(&u.name).unwrap_or(&0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backends_90_10() {
    check_split(&[("blue", 90.0), ("green", 10.0)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_backends() {
    check_split(&[("v1", 70.0), ("v2", 20.0), ("v3", 10.0)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_weights() {
    check_split(&[("stable", 97.5), ("canary", 2.5)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_weight_gets_nothing() {
    let a = spawn_upstream("a").await;
    let b = spawn_upstream("b").await;
    let cfg = format!(
        "[upstreams.a]\nendpoints = [\"{}\"]\n[upstreams.b]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\", weight = 0 }}, {{ upstream = \"b\", weight = 3 }}]\n",
        a.addr, b.addr
    );
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    let counts = tally(&proxy.url("/"), 500, 4).await;
    assert_eq!(counts.get("b"), Some(&500));
    assert_eq!(a.hits(), 0);
}
