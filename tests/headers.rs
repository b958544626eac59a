//! Header hygiene through the real proxy: hop-by-hop headers never reach the upstream,
//! forwarding headers are added after that removal, ids and versions come back.

mod support;

use support::*;

async fn one_upstream() -> (TestUpstream, TestProxy) {
    let up = spawn_upstream("u").await;
    let cfg = format!(
        "[upstreams.u]\nversion = \"v7\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\", weight = 1 }}]\nversion_header = \"x-served-version\"\n",
        up.addr
    );
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    (up, proxy)
}

#[tokio::test]
async fn hop_by_hop_headers_never_reach_the_upstream() {
    let (up, proxy) = one_upstream().await;
    let (status, _, _) = get(
        &proxy.url("/"),
        &[
            ("connection", "x-secret, keep-alive"),
            ("x-secret", "s3cr3t"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("x_underscored", "1"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let h = up.last_seen().headers;
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "http2-settings",
        "x_underscored",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream: {h:?}");
    }
    assert_eq!(h["x-kept"], "yes");
}

#[tokio::test]
async fn te_trailers_is_kept() {
    let (up, proxy) = one_upstream().await;
    get(&proxy.url("/"), &[("te", "trailers")]).await;
    assert_eq!(up.last_seen().headers["te"], "trailers");
}

#[tokio::test]
async fn forwarding_headers_are_appended_after_hop_by_hop_removal() {
    let (up, proxy) = one_upstream().await;
    // An X-Forwarded-For the client names in Connection is removed first, then ours is added.
    get(
        &proxy.url("/"),
        &[("connection", "x-forwarded-for"), ("x-forwarded-for", "6.6.6.6"), ("host", "shop.test:8080")],
    )
    .await;
    let h = up.last_seen().headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.test:8080");
    assert_eq!(h["host"], "shop.test:8080");
    assert_eq!(h["via"], "1.1 switchyard");

    // Otherwise an existing chain is appended to.
    get(&proxy.url("/"), &[("x-forwarded-for", "10.1.1.1, 10.2.2.2"), ("via", "1.0 edge")]).await;
    let h = up.last_seen().headers;
    assert_eq!(h["x-forwarded-for"], "10.1.1.1, 10.2.2.2, 127.0.0.1");
    assert_eq!(h["via"], "1.0 edge, 1.1 switchyard");
}

#[tokio::test]
async fn request_ids_are_generated_or_passed_through() {
    let (up, proxy) = one_upstream().await;
    let (_, h, _) = get(&proxy.url("/"), &[]).await;
    let id = h["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(up.last_seen().headers["x-request-id"], id.as_str());

    let (_, h, _) = get(&proxy.url("/"), &[("x-request-id", "abc-123")]).await;
    assert_eq!(h["x-request-id"], "abc-123");
    assert_eq!(up.last_seen().headers["x-request-id"], "abc-123");

    let (_, h2, _) = get(&proxy.url("/"), &[]).await;
    assert_ne!(h2["x-request-id"].to_str().unwrap(), id, "ids are unique");
}

#[tokio::test]
async fn version_header_names_the_serving_version() {
    let (_up, proxy) = one_upstream().await;
    let (_, h, body) = get(&proxy.url("/"), &[]).await;
    assert_eq!(h["x-served-version"], "v7");
    assert_eq!(h["via"], "1.1 switchyard");
    assert_eq!(body, "u");
}

#[tokio::test]
async fn h2c_prior_knowledge_and_bodies_stream_both_ways() {
    let (up, proxy) = one_upstream().await;
    let (status, h, body) = send(&h2c_client(), "POST", &proxy.url("/echo"), &[], "hello over h2c").await;
    assert_eq!(status, 200);
    assert_eq!(body, "hello over h2c");
    assert_eq!(h["x-served-version"], "v7");
    // The HTTP/2 :authority became the upstream's Host.
    assert_eq!(up.last_seen().headers["host"], proxy.addr.to_string().as_str());

    let big = "x".repeat(3 * 1024 * 1024);
    let (status, _, body) = send(&client(), "PUT", &proxy.url("/big"), &[], &big).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), big.len());
}
