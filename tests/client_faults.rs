//! "Client faults are never charged to a version": every way a client can break a
//! request (bad chunk framing, a body cut short, a body over the limit, a stall mid-body,
//! hanging up before or during the response, a head the parser refuses) is answered and
//! counted as the client's, never as the upstream's; and the upstream's own faults are
//! still counted against its version. Raw bytes over real sockets.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Route `r` to upstream `u` (version `u`) at `endpoints`, with `upstream_extra` keys.
fn config(endpoints: &[SocketAddr], upstream_extra: &str, server_extra: &str) -> String {
    let list = endpoints.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{server_extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [{list}]\n{upstream_extra}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n"
    )
}

const ROUTE_400: &str = r#"switchyard_requests_total{route="r",upstream="",version="",status="400"}"#;

/// The counters a client fault must never touch.
const CHARGED: [&str; 8] = [
    r#"switchyard_requests_total{route="r",upstream="u",version="u",status="502"}"#,
    r#"switchyard_requests_total{route="r",upstream="u",version="u",status="503"}"#,
    r#"switchyard_requests_total{route="r",upstream="u",version="u",status="504"}"#,
    r#"switchyard_requests_total{route="r",upstream="u",version="u",status="400"}"#,
    r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="reset"}"#,
    r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="protocol"}"#,
    r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="timeout"}"#,
    r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="connect"}"#,
];

async fn assert_version_not_charged(proxy: &TestProxy) {
    let text = proxy.metrics().await;
    for name in CHARGED {
        assert_eq!(metric_value(&text, name), 0.0, "{name} counted a client fault:\n{text}");
    }
}

/// Send `bytes`, optionally close our sending side, and read the answer (bounded).
async fn exchange(addr: SocketAddr, bytes: &[u8], close_write: bool) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if close_write {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Send the start of a request and hang up without waiting for anything.
async fn hang_up_after(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(s);
}

/// Poll `/metrics` (bounded) until `name` reaches `want`.
async fn eventually_metric(proxy: &TestProxy, name: &str, want: f64) {
    proxy.metric_reaching(name, want).await;
}

fn cause(resp: &str) -> Option<&str> {
    resp.lines().find_map(|l| l.strip_prefix("x-switchyard-error: ")).map(str::trim)
}

/// A chunked POST of 1,200 body bytes (over a `max_body_bytes` of 1000).
fn chunked_1200_bytes() -> Vec<u8> {
    let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(format!("190\r\n{}\r\n", "y".repeat(400)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

const BAD_CHUNKS: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\n0\r\n\r\n";
const TRUNCATED: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789";

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_400_and_never_completes_upstream() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&[up.addr], "", "")).await;
    let resp = exchange(proxy.addr, BAD_CHUNKS, false).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(cause(&resp), Some("malformed-request"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
    eventually_metric(&proxy, ROUTE_400, 1.0).await;
    assert_version_not_charged(&proxy).await;
    assert_eq!(up.complete_bodies.load(Ordering::SeqCst), 0, "the upstream got a whole request the client never sent");
    // The connection to the upstream was aborted, not left half-sent: the next request is fine.
    let (status, _, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn client_faults_against_an_http2_upstream_are_still_the_clients() {
    // An HTTP/2 upstream client reports a failed request body only as a reset stream.
    let up = spawn_upstream("u").await;
    let outlier = "protocol = \"h2\"\noutlier = { consecutive_failures = 3 }";
    let proxy = spawn_proxy(&config(&[up.addr], outlier, "[server.limits]\nmax_body_bytes = 1000")).await;
    for _ in 0..4 {
        let resp = exchange(proxy.addr, BAD_CHUNKS, false).await;
        assert_eq!(cause(&resp), Some("malformed-request"), "{resp}");
    }
    let resp = exchange(proxy.addr, &chunked_1200_bytes(), false).await;
    assert_eq!(cause(&resp), Some("body-too-large"), "{resp}");
    eventually_metric(&proxy, ROUTE_400, 4.0).await;
    assert_version_not_charged(&proxy).await;
    for e in endpoints(&proxy).await {
        assert_eq!(e["ejected"], false, "{e}");
    }
    let (status, _, _) = send(&client(), "POST", &proxy.url("/"), &[], "fine").await;
    assert_eq!(status, 200);
    assert_eq!(up.last_seen().version, http::Version::HTTP_2);
}

#[tokio::test]
async fn a_body_cut_short_is_the_clients_400_counted_as_gone() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&[up.addr], "", "")).await;
    // The client closes its side early: a half-closed client still reads the 400; the
    // request counts as the client's going away (499), as a hang-up mid-body does.
    let resp = exchange(proxy.addr, TRUNCATED, true).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(cause(&resp), Some("malformed-request"));
    eventually_metric(&proxy, r#"switchyard_requests_total{route="r",upstream="",version="",status="499"}"#, 1.0).await;
    assert_version_not_charged(&proxy).await;
    assert_eq!(up.complete_bodies.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_client_stalled_mid_body_gets_408_not_a_504() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&[up.addr], "request_timeout = \"300ms\"", "")).await;
    // Half the body, then silence while the connection stays open.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(TRUNCATED).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert_eq!(cause(&resp), Some("client-timeout"));
    eventually_metric(&proxy, r#"switchyard_requests_total{route="r",upstream="",version="",status="408"}"#, 1.0).await;
    assert_version_not_charged(&proxy).await;

    // A buffered body (two endpoints make it replayable) stalls the same way.
    let up2 = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&[up.addr, up2.addr], "request_timeout = \"300ms\"", "")).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(TRUNCATED).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert_eq!(cause(&String::from_utf8_lossy(&out)), Some("client-timeout"));
    assert_version_not_charged(&proxy).await;

    // An upstream that is itself slow is still the upstream's 504.
    up.knobs.delay_ms.store(1000, Ordering::SeqCst);
    let proxy = spawn_proxy(&config(&[up.addr], "request_timeout = \"300ms\"", "")).await;
    let resp = exchange(proxy.addr, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", false).await;
    assert!(resp.starts_with("HTTP/1.1 504"), "{resp}");
    assert_eq!(
        proxy.metric(r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="timeout"}"#).await,
        1.0
    );
}

#[tokio::test]
async fn a_streamed_body_over_max_body_bytes_is_the_clients_413() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&[up.addr], "", "[server.limits]\nmax_body_bytes = 1000")).await;
    let resp = exchange(proxy.addr, &chunked_1200_bytes(), false).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(cause(&resp), Some("body-too-large"));
    eventually_metric(&proxy, r#"switchyard_requests_total{route="r",upstream="",version="",status="413"}"#, 1.0).await;
    assert_version_not_charged(&proxy).await;
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_counted_499_on_the_route() {
    let up = spawn_upstream("u").await;
    up.knobs.delay_ms.store(400, Ordering::SeqCst);
    let proxy = spawn_proxy(&config(&[up.addr], "", "")).await;
    hang_up_after(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    eventually_metric(&proxy, r#"switchyard_requests_total{route="r",upstream="",version="",status="499"}"#, 1.0).await;
    // Gone mid-body too.
    hang_up_after(proxy.addr, TRUNCATED).await;
    eventually_metric(&proxy, r#"switchyard_requests_total{route="r",upstream="",version="",status="499"}"#, 2.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_version_not_charged(&proxy).await;
    let text = proxy.metrics().await;
    assert_eq!(
        metric_value(&text, r#"switchyard_requests_total{route="r",upstream="u",version="u",status="200"}"#),
        0.0
    );
}

/// An upstream that answers each request it reads (one read each: small requests)
/// with `response` as raw bytes, keeping the connection open.
async fn raw_upstream(response: &'static [u8]) -> SocketAddr {
    scripted_upstream(response, true).await
}

/// A raw-bytes upstream: `response` to every request read, or (not `keep_open`) to the
/// first one only, then a close.
async fn scripted_upstream(response: &'static [u8], keep_open: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                    if !matches!(n, Ok(n) if n > 0) || s.write_all(response).await.is_err() || !keep_open {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An upstream that sends a response head and the start of a long body, then holds.
async fn slow_body_upstream() -> SocketAddr {
    raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nstart").await
}

#[tokio::test]
async fn a_client_that_leaves_mid_response_is_counted_499_on_its_version() {
    let addr = slow_body_upstream().await;
    let proxy = spawn_proxy(&config(&[addr], "", "")).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(s);
    // The upstream answered (its version's label), the client did not stay for it.
    eventually_metric(&proxy, r#"switchyard_requests_total{route="r",upstream="u",version="u",status="499"}"#, 1.0)
        .await;
    assert_eq!(
        proxy.metric(r#"switchyard_requests_total{route="r",upstream="u",version="u",status="200"}"#).await,
        0.0
    );
}

#[tokio::test]
async fn a_response_delivered_in_full_is_never_a_499() {
    // Chunked with trailers (hyper stops polling a body after its trailers), and a
    // Content-Length body (hyper stops once the length is written).
    let trailers = raw_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n",
    )
    .await;
    let sized = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
    for up in [trailers, sized] {
        let proxy = spawn_proxy(&config(&[up], "", "")).await;
        for te in ["trailers", "gzip"] {
            let (status, _, body) = get(&proxy.url("/"), &[("te", te)]).await;
            assert_eq!((status.as_u16(), body.as_str()), (200, "hello"));
        }
        eventually_metric(&proxy, r#"switchyard_requests_total{route="r",upstream="u",version="u",status="200"}"#, 2.0)
            .await;
        assert_eq!(
            proxy.metric(r#"switchyard_requests_total{route="r",upstream="u",version="u",status="499"}"#).await,
            0.0
        );
    }
}

/// An upstream that answers every connection's first request with `response` and
/// closes it.
async fn closing_upstream(response: &'static [u8]) -> SocketAddr {
    scripted_upstream(response, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_breaks_off_its_body_is_charged_for_it() {
    // The head says 100 bytes; five arrive, then the connection closes.
    let broken = closing_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort").await;
    let good = spawn_upstream("good").await;
    let outlier = "outlier = { consecutive_failures = 3, ejection = \"30s\", max_ejected_percent = 50 }";
    let proxy = spawn_proxy(&config(&[broken, good.addr], outlier, "")).await;
    let mut cut = 0;
    for _ in 0..30 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        if String::from_utf8_lossy(&out).ends_with("short") {
            cut += 1;
        }
    }
    assert!(cut >= 3, "the broken endpoint served {cut} requests");
    let resets =
        proxy.metric(r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="reset"}"#).await;
    assert_eq!(resets, f64::from(cut), "every broken-off body is an upstream reset");
    let eps = endpoints(&proxy).await;
    let dead = eps.iter().find(|e| e["address"] == broken.to_string()).unwrap();
    assert_eq!(dead["ejected"], true, "{eps:?}");
}

async fn endpoints(proxy: &TestProxy) -> Vec<Value> {
    let (_, _, body) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    doc["upstreams"][0]["endpoints"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_client_faults_eject_no_endpoint_and_upstream_faults_still_do() {
    let (a, b) = (spawn_upstream("a").await, spawn_upstream("b").await);
    let outlier = "outlier = { consecutive_failures = 3, ejection = \"30s\", max_ejected_percent = 100 }\nrequest_timeout = \"300ms\"";
    let proxy = spawn_proxy(&config(&[a.addr, b.addr], outlier, "")).await;
    let mut stalled = Vec::new();
    for i in 0..30 {
        match i % 3 {
            0 => assert_eq!(cause(&exchange(proxy.addr, BAD_CHUNKS, false).await), Some("malformed-request")),
            1 => hang_up_after(proxy.addr, TRUNCATED).await,
            _ => {
                // Stalls mid-body past request_timeout (streamed: chunked).
                let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc").await.unwrap();
                stalled.push(s);
            }
        }
    }
    for mut s in stalled {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert_eq!(cause(&String::from_utf8_lossy(&out)), Some("client-timeout"));
    }
    for e in endpoints(&proxy).await {
        assert_eq!(e["ejected"], false, "a client's faults ejected {e}");
    }
    assert_version_not_charged(&proxy).await;
    let tally = tally(&proxy.url("/"), 40, 4).await;
    assert!(tally.get("a").copied().unwrap_or(0) > 5 && tally.get("b").copied().unwrap_or(0) > 5, "{tally:?}");

    // The upstream's own faults still eject: endpoint `a` dies on every request.
    a.kill_and_wait().await;
    for _ in 0..20 {
        let _ = get(&proxy.url("/"), &[]).await;
    }
    let eps = endpoints(&proxy).await;
    let dead = eps.iter().find(|e| e["address"] == a.addr.to_string()).unwrap();
    assert_eq!(dead["ejected"], true, "{eps:?}");
    let text = proxy.metrics().await;
    let connect =
        metric_value(&text, r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="connect"}"#);
    assert!(connect >= 3.0, "{connect} connect errors charged to the version:\n{text}");
}

#[tokio::test]
async fn upstream_faults_are_still_charged_to_the_version_by_kind() {
    let up = spawn_upstream("u").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // connect: nothing listens.
    let proxy = spawn_proxy(&config(&[dead], "", "")).await;
    let (status, h, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!((status.as_u16(), h["x-switchyard-error"].to_str().unwrap()), (502, "upstream-connect"));
    let text = proxy.metrics().await;
    assert_eq!(
        metric_value(&text, r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="connect"}"#),
        1.0
    );
    assert_eq!(
        metric_value(&text, r#"switchyard_requests_total{route="r",upstream="u",version="u",status="502"}"#),
        1.0
    );

    let proxy = spawn_proxy(&config(&[up.addr], "request_timeout = \"200ms\"", "")).await;
    // reset: the upstream drops the connection after reading the whole request.
    let (status, h, _) = get(&proxy.url("/?die=1"), &[]).await;
    assert_eq!((status.as_u16(), h["x-switchyard-error"].to_str().unwrap()), (502, "bad-upstream-response"));
    // timeout
    let (status, h, _) = get(&proxy.url("/?delay_ms=1000"), &[]).await;
    assert_eq!((status.as_u16(), h["x-switchyard-error"].to_str().unwrap()), (504, "upstream-timeout"));
    // bad framing: an upstream that states its length twice.
    let liar =
        raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
    let liar_proxy = spawn_proxy(&config(&[liar], "", "")).await;
    let (status, h, _) = get(&liar_proxy.url("/"), &[]).await;
    assert_eq!((status.as_u16(), h["x-switchyard-error"].to_str().unwrap()), (502, "bad-upstream-response"));
    assert_eq!(
        liar_proxy
            .metric(r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="protocol"}"#)
            .await,
        1.0
    );
    // its own 5xx
    up.set_status(500);
    let (status, _, _) = send(&client(), "POST", &proxy.url("/"), &[], "whole body").await;
    assert_eq!(status, 500);
    // Counted as the response ends, which the client may see a moment before the proxy
    // has counted it (the last write, then the count).
    eventually_metric(&proxy, r#"switchyard_requests_total{route="r",upstream="u",version="u",status="500"}"#, 1.0)
        .await;
    let text = proxy.metrics().await;
    let m = |k: &str| metric_value(&text, &format!("switchyard_{k}"));
    assert_eq!(m(r#"upstream_errors_total{route="r",upstream="u",version="u",kind="reset"}"#), 1.0, "{text}");
    assert_eq!(m(r#"upstream_errors_total{route="r",upstream="u",version="u",kind="timeout"}"#), 1.0);
    assert_eq!(m(r#"requests_total{route="r",upstream="u",version="u",status="502"}"#), 1.0);
    assert_eq!(m(r#"requests_total{route="r",upstream="u",version="u",status="504"}"#), 1.0);
    assert_eq!(m(r#"requests_total{route="r",upstream="u",version="u",status="500"}"#), 1.0);
}

#[tokio::test]
async fn heads_the_parser_refuses_carry_their_cause() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&[up.addr], "", "[server.limits]\nmax_header_bytes = 8192")).await;
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
    let resp = exchange(proxy.addr, big.as_bytes(), false).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert_eq!(cause(&resp), Some("header-too-large"));
    for bad in [
        &b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"[..],
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n",
    ] {
        let resp = exchange(proxy.addr, bad, false).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{}: {resp}", String::from_utf8_lossy(bad));
        assert_eq!(cause(&resp), Some("malformed-request"), "{resp}");
        assert!(resp.ends_with("(malformed-request)\n"), "{resp}");
    }
    // Pipelined behind a good request: the good one is answered first, then the refusal.
    let resp = exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.2\r\nHost: a\r\n\r\n", false).await;
    let (first, second) = resp.split_at(resp.find("HTTP/1.1 400").expect("the refusal"));
    assert!(first.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(cause(second), Some("malformed-request"));
    let text = proxy.metrics().await;
    assert_eq!(metric_value(&text, r#"switchyard_requests_total{route="",upstream="",version="",status="431"}"#), 1.0);
    assert_eq!(metric_value(&text, r#"switchyard_requests_total{route="",upstream="",version="",status="400"}"#), 6.0);
    assert_eq!(up.requests(), 1, "only the good request reached the upstream");
}

#[tokio::test]
async fn an_oversized_http2_header_list_gets_431_with_its_cause() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&[up.addr], "", "[server.limits]\nmax_header_bytes = 8192")).await;
    let big = "a".repeat(9000);
    let (status, h, body) = send(&h2c_client(), "GET", &proxy.url("/"), &[("x-big", &big)], "").await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(h["x-switchyard-error"], "header-too-large");
    let (status, _, _) = send(&h2c_client(), "GET", &proxy.url("/"), &[("x-small", &"a".repeat(4000))], "").await;
    assert_eq!(status, 200);
    assert_eq!(up.requests(), 1);
}

/// Requests from a saboteur, until dropped (bounded to 60 s): broken chunked bodies,
/// bodies cut short by a hang-up, and bodies that stall past request_timeout.
struct Saboteur {
    stop: Arc<AtomicBool>,
}

impl Saboteur {
    fn start(addr: SocketAddr) -> Saboteur {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) && began.elapsed() < Duration::from_secs(60) {
                match i % 3 {
                    0 => drop(exchange(addr, BAD_CHUNKS, false).await),
                    1 => hang_up_after(addr, TRUNCATED).await,
                    _ => {
                        tokio::spawn(async move {
                            let mut s = TcpStream::connect(addr).await.unwrap();
                            let _ = s.write_all(TRUNCATED).await;
                            let mut out = Vec::new();
                            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
                        });
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Saboteur { stop }
    }
}

impl Drop for Saboteur {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_promotes_while_a_client_sends_broken_bodies_throughout() {
    let (v1, v2) = (spawn_upstream("v1").await, spawn_upstream("v2").await);
    let rollout = "[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\nsteps = [20, 50, 100]\ninterval = \"1s\"\nmin_requests = 3\nmax_error_rate = 0.05\nmax_p99 = \"2s\"\n";
    // request_timeout above max_p99: a stalled client counted as the version's latency
    // would fail the step on p99.
    let mut cfg = shop_canary(v1.addr, v2.addr, 100.0, 0.0, rollout);
    cfg = cfg.replace("version = \"v2\"\n", "version = \"v2\"\nrequest_timeout = \"3s\"\n");
    cfg = cfg.replace("version = \"v1\"\n", "version = \"v1\"\nrequest_timeout = \"3s\"\n");
    let proxy = spawn_proxy(&cfg).await;
    let _sabotage = Saboteur::start(proxy.addr);
    let good = client();
    let url = format!("http://{}/api/v1/routes/shop/rollout/start", proxy.admin);
    assert_eq!(send(&good, "POST", &url, &[], "").await.0, 200);
    let began = Instant::now();
    let state = loop {
        let _ = send(&good, "GET", &proxy.url("/"), &[], "").await;
        let (_, _, body) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
        let doc: Value = serde_json::from_str(&body).unwrap();
        let r = doc["routes"][0]["rollout"].clone();
        if r["state"] != "running" {
            break r;
        }
        assert!(began.elapsed() < Duration::from_secs(30), "the rollout never finished: {r:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(state["state"], "promoted", "client faults failed a healthy canary: {state:#}");
    let text = proxy.metrics().await;
    assert!(
        metric_value(&text, r#"switchyard_requests_total{route="shop",upstream="",version="",status="400"}"#) > 0.0
    );
    assert_eq!(metric_value(&text, r#"switchyard_rollouts_total{route="shop",result="promoted"}"#), 1.0);
}
