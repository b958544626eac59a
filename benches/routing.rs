//! Request-path building blocks: route lookup at 1, 100 and 10,000 routes, the weighted
//! split pick, the sticky pick, and path normalization. Run: `cargo bench --bench routing`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::HeaderMap;
use switchyard::app::App;
use switchyard::routing::path::normalize;
use switchyard::routing::{resolve_shares, Split};
use switchyard::snapshot::compile_fresh;

/// `n` routes: host-specific ones with distinct prefixes, plus a catch-all at the end.
fn config(n: usize) -> String {
    let mut s = String::from(
        "[upstreams.a]\nendpoints = [\"127.0.0.1:9001\"]\n[upstreams.b]\nendpoints = [\"127.0.0.1:9002\"]\n",
    );
    for i in 0..n {
        s += &format!(
            "[[routes]]\nname = \"r{i}\"\nhosts = [\"svc{}.example.com\"]\npath_prefix = \"/api/v{i}\"\nbackends = [{{ upstream = \"a\", weight = 90 }}, {{ upstream = \"b\", weight = 10 }}]\n",
            i % 50
        );
    }
    s
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in [1usize, 100, 10_000] {
        let cfg = switchyard::config::parse(Path::new("bench.toml"), &config(n)).unwrap();
        let snapshot = compile_fresh(&cfg);
        let headers = HeaderMap::new();
        let last = n - 1;
        let host = format!("SVC{}.example.com:8080", last % 50);
        let path = format!("/api/v{last}/users/42/orders");
        assert!(snapshot.table.find(Some(host.as_bytes()), &path, &headers).is_some());
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(snapshot.table.find(Some(black_box(host.as_bytes())), black_box(&path), &headers)))
        });
    }
    group.finish();
}

fn split_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_pick");
    for weights in [vec![90.0, 10.0], vec![99.99, 0.01], vec![50.0, 30.0, 15.0, 4.0, 1.0]] {
        let split = Split::compile(&resolve_shares(&weights));
        group.bench_function(format!("{weights:?}"), |b| b.iter(|| black_box(split.pick())));
    }
    group.finish();
}

/// A sticky pick as the request path does it: find the cookie, hash the key, score each
/// backend. 2 to 5 backends.
fn sticky_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("sticky_pick");
    for n in 2..=5usize {
        let mut cfg = String::new();
        let mut backends = Vec::new();
        for i in 0..n {
            cfg += &format!("[upstreams.v{i}]\nendpoints = [\"127.0.0.1:{}\"]\n", 9001 + i);
            backends.push(format!("{{ upstream = \"v{i}\", weight = {} }}", 10 * (i + 1)));
        }
        cfg += &format!(
            "[[routes]]\nname = \"shop\"\nbackends = [{}]\nsticky = {{ cookie = \"sy_shop\" }}\n",
            backends.join(", ")
        );
        let parsed = switchyard::config::parse(Path::new("bench.toml"), &cfg).unwrap();
        let snapshot = compile_fresh(&parsed);
        let route = &snapshot.table.routes()[0];
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("theme=dark; sy_shop=4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a99; lang=en"),
        );
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        assert!(route.select(&headers, ip, false).set_cookie.is_none());
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(route.select(black_box(&headers), ip, false).backend))
        });
    }
    group.finish();
}

fn path_normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    group.bench_function("already_normal", |b| b.iter(|| black_box(normalize(black_box("/api/v1/users/42/orders")))));
    group.bench_function("dot_segments", |b| b.iter(|| black_box(normalize(black_box("/api/v1/../v2/./users//42")))));
    group.finish();
}

/// A reload of 10,000 routes: compile the new snapshot beside the live one and swap it in
/// (what a config reload does after parsing).
fn reload_10k_routes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let text = config(10_000);
    let cfg = switchyard::config::parse(Path::new("bench.toml"), &text).unwrap();
    let app = rt.block_on(App::start(cfg.clone(), None));
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    group.bench_function("parse_10000_routes", |b| {
        b.iter(|| black_box(switchyard::config::parse(Path::new("bench.toml"), &text).unwrap()))
    });
    group.bench_function("compile_10000_routes", |b| b.iter(|| black_box(compile_fresh(&cfg))));
    group
        .bench_function("compile_and_swap_10000_routes", |b| b.iter(|| rt.block_on(app.controller.apply(cfg.clone()))));
    group.finish();
}

/// What the request path adds per response for rollout judging: two or three relaxed
/// atomic adds on the backend's tally.
fn tally_record(c: &mut Criterion) {
    let tally = switchyard::telemetry::Tally::default();
    let mut i = 0u64;
    c.bench_function("tally: answered + timed", |b| {
        b.iter(|| {
            i = i.wrapping_add(7919);
            tally.answered(if i.is_multiple_of(100) { 503 } else { 200 });
            tally.timed(std::time::Duration::from_micros(i % 50_000));
        })
    });
}

criterion_group!(benches, route_lookup, split_pick, sticky_pick, path_normalize, reload_10k_routes, tally_record);
criterion_main!(benches);
