//! Responses the proxy makes itself: status, `x-switchyard-error`, plain-text body, and
//! the matching upstream error metric.

mod support;

use support::*;

/// A loopback port with nothing listening on it.
async fn closed_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn connect_failure_is_502_upstream_connect() {
    let dead = closed_port().await;
    let cfg = format!("[upstreams.dead]\nendpoints = [\"{dead}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"dead\" }}]\n");
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    let (status, h, body) = get(&proxy.url("/"), &[]).await;
    assert_eq!(status, 502);
    assert_eq!(h["x-switchyard-error"], "upstream-connect");
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert!(body.contains("upstream-connect"), "{body}");
    let m = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            r#"switchyard_upstream_errors_total{route="r",upstream="dead",version="dead",kind="connect"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_value(&m, r#"switchyard_requests_total{route="r",upstream="dead",version="dead",status="502"}"#),
        1.0
    );
}

#[tokio::test]
async fn slow_upstream_is_504_upstream_timeout() {
    let up = spawn_upstream("slow").await;
    let cfg = format!(
        "[upstreams.slow]\nendpoints = [\"{}\"]\nrequest_timeout = \"200ms\"\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"slow\" }}]\n",
        up.addr
    );
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    let (status, h, _) = get(&proxy.url("/?delay_ms=3000"), &[]).await;
    assert_eq!(status, 504);
    assert_eq!(h["x-switchyard-error"], "upstream-timeout");
    assert_eq!(
        proxy
            .metric(r#"switchyard_upstream_errors_total{route="r",upstream="slow",version="slow",kind="timeout"}"#)
            .await,
        1.0
    );
    // Fast requests on the same upstream still pass.
    let (status, _, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn upstream_without_endpoints_is_503() {
    // A name that cannot resolve leaves the upstream with no endpoint (and is logged).
    let cfg = "[upstreams.ghost]\nendpoints = [\"does-not-exist.invalid:80\"]\n[[routes]]\nname = \"r\"\nbackends = [{ upstream = \"ghost\" }]\n";
    let proxy = spawn_proxy(&with_listeners(cfg)).await;
    let (status, h, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!(status, 503);
    assert_eq!(h["x-switchyard-error"], "no-healthy-endpoint");
}

#[tokio::test]
async fn no_route_is_404_counted_without_upstream() {
    let up = spawn_upstream("u").await;
    let cfg = format!("[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\npath_prefix = \"/only\"\nbackends = [{{ upstream = \"u\" }}]\n", up.addr);
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    let (status, h, body) = get(&proxy.url("/elsewhere"), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(h["x-switchyard-error"], "no-route");
    assert!(h.contains_key("x-request-id"));
    assert!(body.starts_with("404"), "{body}");
    assert_eq!(proxy.metric(r#"switchyard_requests_total{route="",upstream="",version="",status="404"}"#).await, 1.0);
    assert_eq!(up.hits(), 0);
}
