//! What upstream identity costs per request: signing with SigV4 (a 1 KiB body, the
//! headers a proxied request carries), and reading a warm Google ID token. Run with
//! `cargo bench --bench identity`.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, Uri};
use switchyard::auth::aws::{AwsCredentials, AwsSigner};

fn proxied_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("host", "abc123.lambda-url.eu-west-1.on.aws"),
        ("content-type", "application/json"),
        ("content-length", "1024"),
        ("accept", "*/*"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example.com"),
        ("via", "1.1 switchyard"),
        ("x-request-id", "4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a99"),
    ] {
        h.insert(n, HeaderValue::from_static(v));
    }
    h
}

fn sigv4(c: &mut Criterion) {
    let signer = AwsSigner::new(
        AwsCredentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Some("token".into())),
        "eu-west-1",
        "lambda",
    );
    let uri: Uri = "https://abc123.lambda-url.eu-west-1.on.aws/orders/42?expand=items&page=2".parse().unwrap();
    let body = vec![b'x'; 1024];
    let base = proxied_headers();
    let now = SystemTime::now();
    c.bench_function("sigv4_sign_1kib_post", |b| {
        b.iter(|| {
            let mut headers = base.clone();
            signer.sign(&Method::POST, &uri, &mut headers, black_box(&body), now).unwrap();
            black_box(headers)
        })
    });
}

criterion_group!(benches, sigv4);
criterion_main!(benches);
