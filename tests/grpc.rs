//! HTTP/2 upstreams (`protocol = "h2"`, prior knowledge): HTTP/1.1 and HTTP/2 clients
//! reach them, trailers (what gRPC's status rides on) come back, and a canary split
//! applies per call.

mod support;

use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, Full};
use support::*;

async fn h2_upstream(name: &'static str) -> std::net::SocketAddr {
    support::grpc::upstream(name, None).await
}

async fn call(client: &TestClient, url: &str, te: bool) -> (String, Option<HeaderMap>) {
    let mut req = Request::builder().method("POST").uri(url).header("content-type", "application/grpc");
    if te {
        req = req.header("te", "trailers");
    }
    let resp = client.request(req.body(Full::new(Bytes::from_static(b"\0\0\0\0\0"))).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (String::from_utf8_lossy(&collected.to_bytes()).into_owned(), trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2_with_trailers_and_a_canary() {
    let (v1, v2) = (h2_upstream("v1").await, h2_upstream("v2").await);
    let proxy = spawn_proxy(&with_listeners(&format!(
        "[upstreams.grpc-v1]\nendpoints = [\"{v1}\"]\nprotocol = \"h2\"\n[upstreams.grpc-v2]\nendpoints = [\"{v2}\"]\nprotocol = \"h2\"\n[[routes]]\nname = \"grpc\"\nbackends = [{{ upstream = \"grpc-v1\", weight = 50 }}, {{ upstream = \"grpc-v2\", weight = 50 }}]\n"
    )))
    .await;
    let url = proxy.url("/helloworld.Greeter/SayHello");
    let h2 = h2c_client();
    let mut seen = std::collections::HashMap::new();
    for _ in 0..20 {
        let (body, trailers) = call(&h2, &url, true).await;
        let trailers = trailers.expect("trailers reach an HTTP/2 client");
        assert_eq!(trailers["grpc-status"], "0");
        let (version, upstream_saw) = body.split_once(' ').unwrap();
        assert_eq!(upstream_saw, format!("{:?}", Version::HTTP_2), "the upstream spoke HTTP/2");
        *seen.entry(version.to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen.get("v1"), Some(&10), "50/50 per call: {seen:?}");
    // An HTTP/1.1 client reaches the h2 upstream too.
    let (body, _) = call(&client(), &url, false).await;
    assert!(body.ends_with("HTTP/2.0"), "{body}");
    // Every call was answered in full: counted 200 when its body ended with trailers,
    // never 499 (hyper stops polling a body after its trailers).
    let m = proxy.metrics().await;
    let count = |status: &str| -> f64 {
        ["grpc-v1", "grpc-v2"]
            .iter()
            .map(|u| {
                metric_value(
                    &m,
                    &format!(
                        r#"switchyard_requests_total{{route="grpc",upstream="{u}",version="{u}",status="{status}"}}"#
                    ),
                )
            })
            .sum()
    };
    assert_eq!((count("200"), count("499")), (21.0, 0.0), "{m}");
}
