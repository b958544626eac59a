//! Malformed or ambiguous requests get a clear 4xx and never reach an upstream; ambiguous
//! upstream responses become 502 without stray bytes.

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn proxy_with(up: &TestUpstream) -> TestProxy {
    let cfg = format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n",
        up.addr
    );
    spawn_proxy(&with_listeners(&cfg)).await
}

#[tokio::test]
async fn ambiguous_requests_are_refused_before_the_upstream() {
    let up = spawn_upstream("u").await;
    let proxy = proxy_with(&up).await;
    let cases: &[(&[u8], &str, &str)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
            "malformed-request",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            "400",
            "malformed-request",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "400",
            "malformed-request",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
            "malformed-request",
        ),
        (b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", "400", "malformed-request"),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "400", "malformed-request"),
        (b"GET a.test:443 HTTP/1.1\r\nHost: a\r\n\r\n", "400", "malformed-request"),
        (b"GET ftp://a.test/x HTTP/1.1\r\nHost: a\r\n\r\n", "400", "malformed-request"),
        (b"GET / HTTP/1.1\r\n\r\n", "400", "malformed-request"),
        // A stray `%` whose decoding would build a new escape the upstream decodes again.
        (b"GET /%6%31dmin HTTP/1.1\r\nHost: a\r\n\r\n", "400", "malformed-request"),
        (b"GET /x% HTTP/1.1\r\nHost: a\r\n\r\n", "400", "malformed-request"),
        (b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", "405", "connect-not-supported"),
    ];
    for (request, status, cause) in cases {
        let resp = raw(proxy.addr, request).await;
        let shown = String::from_utf8_lossy(request);
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{shown:?} got:\n{resp}");
        assert!(resp.contains(&format!("x-switchyard-error: {cause}")), "{shown:?} got:\n{resp}");
    }
    // Rejected by hyper's parser before our code runs: still never forwarded.
    let parser_rejects: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\x01Bad: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n",
    ];
    for request in parser_rejects {
        let resp = raw(proxy.addr, request).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{:?} got:\n{resp}", String::from_utf8_lossy(request));
    }
    assert_eq!(up.hits(), 0, "a malformed request reached the upstream");
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let up = spawn_upstream("u").await;
    let proxy = proxy_with(&up).await;
    let mut request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 70_000));
    request.extend_from_slice(b"\r\n\r\n");
    let resp = raw(proxy.addr, &request).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert_eq!(up.hits(), 0);
    // Counted like the proxy's other answers made before routing.
    let counted =
        proxy.metric_reaching(r#"switchyard_requests_total{route="",upstream="",version="",status="431"}"#, 1.0).await;
    assert_eq!(counted, 1.0);
}

#[tokio::test]
async fn options_star_is_forwarded_as_is() {
    let up = spawn_upstream("u").await;
    let proxy = proxy_with(&up).await;
    let resp = raw(proxy.addr, b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(up.last_seen().method, "OPTIONS");
    assert_eq!(up.last_seen().uri, "*");
}

#[tokio::test]
async fn ambiguous_upstream_responses_become_502() {
    // An upstream that answers with both Content-Length and Transfer-Encoding.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nSMUGG\r\n0\r\n\r\n")
                .await;
        }
    });
    let cfg = format!(
        "[upstreams.bad]\nendpoints = [\"{addr}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"bad\" }}]\n"
    );
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    let resp = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(resp.contains("x-switchyard-error: bad-upstream-response"), "{resp}");
    assert!(!resp.contains("SMUGG"), "upstream bytes leaked to the client:\n{resp}");
    server.abort();
}

#[tokio::test]
async fn an_upgrade_header_does_not_blind_the_framing_check() {
    let up = spawn_upstream("u").await;
    let proxy = proxy_with(&up).await;
    // `Upgrade: h2c` (what curl --http2 sends) is stripped and refused; the connection
    // stays HTTP/1.1 and the next request is still checked.
    let resp = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n\
POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    assert_eq!(up.hits(), 1);
    assert!(!up.last_seen().headers.contains_key("upgrade"));
}
