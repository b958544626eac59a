//! Request-path building blocks: route lookup at 1, 100 and 10,000 routes, the weighted
//! split pick, and path normalization. Run: `cargo bench --bench routing`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::HeaderMap;
use switchyard::routing::path::normalize;
use switchyard::routing::{resolve_shares, Split};
use switchyard::runtime::Shared;

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
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("route_lookup");
    for n in [1usize, 100, 10_000] {
        let cfg = switchyard::config::parse(Path::new("bench.toml"), &config(n)).unwrap();
        let shared = rt.block_on(Shared::new(cfg, None));
        let snapshot = shared.runtime();
        let headers = HeaderMap::new();
        let last = n - 1;
        let host = format!("SVC{}.example.com:8080", last % 50);
        let path = format!("/api/v{last}/users/42/orders");
        assert!(snapshot.table.find(Some(&host), &path, &headers).is_some());
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(snapshot.table.find(Some(black_box(&host)), black_box(&path), &headers)))
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

fn path_normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    group.bench_function("already_normal", |b| b.iter(|| black_box(normalize(black_box("/api/v1/users/42/orders")))));
    group.bench_function("dot_segments", |b| b.iter(|| black_box(normalize(black_box("/api/v1/../v2/./users//42")))));
    group.finish();
}

criterion_group!(benches, route_lookup, split_pick, path_normalize);
criterion_main!(benches);
