//! Edge hardening, from raw bytes and raw HTTP/2 requests: authorities that are not
//! `host[:port]`, chunk sizes no two readers agree on, `Connection` naming headers the
//! proxy owns, HTTP/2 cookies and `:path *`, and upstream answers that are not HTTP the
//! client could read (an unasked-for 101, a head over the limit). Each test checks the
//! status, the cause the proxy names, and exactly what reached the upstream.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that records every byte it receives and answers each request head with
/// `response` (then keeps the connection open).
struct Recording {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Recording {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
    fn heads(&self) -> Vec<String> {
        self.text().split("\r\n\r\n").filter(|h| h.contains(" HTTP/1.1\r\n")).map(str::to_string).collect()
    }
}

async fn recording(response: &'static [u8]) -> Recording {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    log.lock().unwrap().extend_from_slice(&chunk[..n]);
                    pending.extend_from_slice(&chunk[..n]);
                    // Answer every complete head (these tests send no request bodies
                    // the upstream must wait for).
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if s.write_all(response).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Recording { addr, received }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn config(upstream: SocketAddr, limits: &str) -> String {
    with_listeners(&format!(
        "{limits}\n[upstreams.u]\nendpoints = [\"{upstream}\"]\n[[routes]]\nname = \"t\"\nhosts = [\"t.example\"]\nbackends = [{{ upstream = \"u\" }}]\n[[routes]]\nname = \"any\"\nbackends = [{{ upstream = \"u\" }}]\n"
    ))
}

/// Send raw bytes and read one response (head, and a body of its Content-Length), or
/// what arrived before the proxy closed.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + length {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_and_cause(response: &str) -> (String, Option<String>) {
    let status = response.split(' ').nth(1).unwrap_or("").to_string();
    let cause = response
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-switchyard-error: ").map(str::to_string));
    (status, cause)
}

#[tokio::test]
async fn userinfo_and_invalid_hosts_are_refused_and_never_forwarded() {
    let up = recording(OK).await;
    let proxy = spawn_proxy(&config(up.addr, "")).await;
    for request in [
        "GET http://user:pass@t.example/ HTTP/1.1\r\nHost: t.example\r\n\r\n",
        "GET http://evil@t.example/ HTTP/1.1\r\nHost: t.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t.example/evil\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t.example, evil.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: evil@t\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t.example:99999\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t.example:abc\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t.example,evil.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t%2Eexample\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: \r\n\r\n",
        // The fast path's subset and the general path agree: with a body, too.
        "POST / HTTP/1.1\r\nHost: evil@t\r\nContent-Length: 2\r\n\r\nab",
    ] {
        let response = exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_and_cause(&response), ("400".into(), Some("malformed-request".into())), "{request:?}");
    }
    for good in ["t.example", "t.example:8080", "[::1]:80", "10.0.0.1"] {
        let response = exchange(proxy.addr, format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n").as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{good}: {response}");
    }
    let heads = up.heads();
    assert_eq!(heads.len(), 4, "only the valid hosts reached the upstream: {heads:?}");
    assert!(!up.text().contains('@') && !up.text().contains("evil"), "{}", up.text());
    assert_eq!(proxy.metric(r#"switchyard_requests_total{route="",upstream="",version="",status="400"}"#).await, 13.0);
}

/// One HTTP/2 request over a fresh h2c connection to `addr`, with the pseudo-headers
/// `uri` gives (the h2 crate sends its authority as `:authority`, userinfo and all).
async fn h2_send(
    addr: SocketAddr,
    method: &str,
    uri: http::Uri,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (resp, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp).await.expect("in time").expect("a response");
    let (parts, mut body) = resp.into_parts();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&text).into_owned())
}

fn cause(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("x-switchyard-error").and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn http2_authorities_are_checked_like_host() {
    let up = recording(OK).await;
    let proxy = spawn_proxy(&config(up.addr, "")).await;
    for uri in ["http://user:pass@t.example/", "http://evil@t.example/", "http://t.example:99999/"] {
        let (status, headers, _) = h2_send(proxy.addr, "GET", uri.parse().unwrap(), &[]).await;
        assert_eq!((status, cause(&headers)), (400, Some("malformed-request")), "{uri}");
    }
    // `host` beside `:authority` is checked too.
    let (status, headers, _) =
        h2_send(proxy.addr, "GET", "http://t.example/".parse().unwrap(), &[("host", "a b")]).await;
    assert_eq!((status, cause(&headers)), (400, Some("malformed-request")));
    // Two names for the request: refused, as HTTP/1.1 refuses two Hosts.
    let (status, headers, _) =
        h2_send(proxy.addr, "GET", "http://t.example/".parse().unwrap(), &[("host", "evil.example")]).await;
    assert_eq!((status, cause(&headers)), (400, Some("malformed-request")));
    let (status, _, _) = h2_send(proxy.addr, "GET", "http://t.example:8443/".parse().unwrap(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(up.heads().len(), 1, "{:?}", up.heads());
    assert!(!up.text().contains('@') && !up.text().contains("99999"), "{}", up.text());
}

#[tokio::test]
async fn http2_cookies_reach_an_http1_upstream_as_one_field_and_path_star_is_for_options() {
    let up = recording(OK).await;
    let proxy = spawn_proxy(&config(up.addr, "")).await;
    let cookies = [("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")];
    let (status, _, _) = h2_send(proxy.addr, "GET", "http://t.example/c".parse().unwrap(), &cookies).await;
    assert_eq!(status, 200);
    let head = up.heads().pop().unwrap().to_ascii_lowercase();
    let fields: Vec<&str> = head.lines().filter(|l| l.starts_with("cookie:")).collect();
    assert_eq!(fields, ["cookie: a=1; b=2; c=3"], "{head}");

    let star = |method: &str| {
        let parts = http::uri::Builder::new().scheme("http").authority("t.example").path_and_query("*");
        (method.to_string(), parts.build().unwrap())
    };
    let (method, uri) = star("GET");
    let (status, headers, _) = h2_send(proxy.addr, &method, uri, &[]).await;
    assert_eq!((status, cause(&headers)), (400, Some("malformed-request")));
    assert_eq!(up.heads().len(), 1, "GET * never reached the upstream");
    let (method, uri) = star("OPTIONS");
    let (status, _, _) = h2_send(proxy.addr, &method, uri, &[]).await;
    assert_eq!(status, 200);
    assert!(up.heads().last().unwrap().starts_with("OPTIONS * HTTP/1.1"), "{:?}", up.heads());
}

#[tokio::test]
async fn chunk_sizes_past_16_digits_or_2_pow_63_are_refused() {
    let up = recording(OK).await;
    let proxy = spawn_proxy(&config(up.addr, "")).await;
    for size in ["ffffffffffffffff", "8000000000000000", "00000000000000001"] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: t.example\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nab\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t.example\r\n\r\n"
        );
        let response = exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_and_cause(&response), ("400".into(), Some("malformed-request".into())), "{size}: {response}");
        assert!(response.to_ascii_lowercase().contains("connection: close"), "{response}");
    }
    // A body fault: the head was streamed upstream before the size line arrived, and
    // is all it got (then a close); never a complete body, never what followed.
    let seen = up.text();
    assert!(
        !seen.contains("\r\n0\r\n\r\n") && !seen.contains("smuggled"),
        "a body or request completed upstream: {seen:?}"
    );
    // A bad size after a good chunk is refused the same way.
    let late = "POST / HTTP/1.1\r\nHost: t.example\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n10000000000000000\r\nc\r\n0\r\n\r\n";
    let response = exchange(proxy.addr, late.as_bytes()).await;
    assert_eq!(status_and_cause(&response), ("400".into(), Some("malformed-request".into())), "{response}");
    assert!(!up.text().contains("\r\n0\r\n\r\n"), "{:?}", up.text());
    // 16 digits, leading zeros counted, is the most both readers agree on.
    let ok =
        "POST / HTTP/1.1\r\nHost: t.example\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000002\r\nab\r\n0\r\n\r\n";
    assert!(exchange(proxy.addr, ok.as_bytes()).await.starts_with("HTTP/1.1 200"));
    // The recording upstream may still be taking in the body when the answer arrives.
    eventually("the valid body completed upstream", std::time::Duration::from_secs(5), || async {
        up.text().contains("\r\n0\r\n\r\n")
    })
    .await;
}

#[tokio::test]
async fn connection_cannot_strip_what_the_proxy_sets() {
    let up = recording(OK).await;
    let proxy = spawn_proxy(&config(up.addr, "")).await;
    let request = "GET / HTTP/1.1\r\nHost: t.example\r\nConnection: X-Request-Id, X-Forwarded-For, Via, X-Forwarded-Host, X-Forwarded-Proto, keep-alive\r\nX-Request-Id: mine\r\nX-Forwarded-For: 6.6.6.6\r\nVia: 1.0 evil\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: gopher\r\n\r\n";
    let response = exchange(proxy.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_ascii_lowercase().contains("x-request-id: mine"), "{response}");
    let head = up.heads().pop().unwrap().to_ascii_lowercase();
    let field = |name: &str| -> Vec<String> {
        head.lines().filter_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string)).collect()
    };
    assert_eq!(field("x-request-id"), ["mine"], "{head}");
    assert_eq!(field("x-forwarded-for"), ["127.0.0.1"], "the client's copy goes, the proxy's stays: {head}");
    assert_eq!(field("via"), ["1.1 switchyard"], "{head}");
    assert_eq!(field("x-forwarded-host"), ["t.example"], "{head}");
    assert_eq!(field("x-forwarded-proto"), ["http"], "{head}");
    // Without a client id, the proxy's own is sent, named or not.
    let request = "GET / HTTP/1.1\r\nHost: t.example\r\nConnection: x-request-id\r\n\r\n";
    let response = exchange(proxy.addr, request.as_bytes()).await.to_ascii_lowercase();
    let head = up.heads().pop().unwrap().to_ascii_lowercase();
    let id = head.lines().find_map(|l| l.strip_prefix("x-request-id: ")).expect("an id upstream").to_string();
    assert_eq!(id.len(), 32, "{head}");
    assert!(response.contains(&format!("x-request-id: {id}")), "{response}");
}

/// A response the upstream should not have sent, on both request paths: the HTTP/1.1
/// fast path (a plain GET) and the general one (the same request over HTTP/2).
async fn refused_upstream_answer(response: &'static [u8], limits: &str) {
    let up = recording(response).await;
    let proxy = spawn_proxy(&config(up.addr, limits)).await;
    let answer = exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: t.example\r\n\r\n").await;
    let start = &answer[..answer.len().min(200)];
    assert_eq!(status_and_cause(&answer), ("502".into(), Some("bad-upstream-response".into())), "{start}");
    let (status, headers, _) = h2_send(proxy.addr, "GET", "http://t.example/".parse().unwrap(), &[]).await;
    assert_eq!((status, cause(&headers)), (502, Some("bad-upstream-response")));
    assert_eq!(up.heads().len(), 2);
    let protocol = r#"switchyard_upstream_errors_total{route="t",upstream="u",version="u",kind="protocol"}"#;
    assert_eq!(proxy.metric(protocol).await, 2.0, "the upstream's fault, counted as its own");
}

#[tokio::test]
async fn an_unasked_for_101_is_a_bad_upstream_response() {
    refused_upstream_answer(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\nraw bytes",
        "",
    )
    .await;
}

#[tokio::test]
async fn response_heads_over_max_header_bytes_are_bad_upstream_responses() {
    let head = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok", "b".repeat(12 * 1024));
    refused_upstream_answer(
        Box::leak(head.into_bytes().into_boxed_slice()),
        "[server.limits]\nmax_header_bytes = 8192",
    )
    .await;
}

#[tokio::test]
async fn response_heads_over_the_default_limit_are_refused_however_they_are_read() {
    // 100 KiB in one write: more than 64 KiB arrives in a single read on both paths.
    let head = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok", "b".repeat(100 * 1024));
    refused_upstream_answer(Box::leak(head.into_bytes().into_boxed_slice()), "").await;
}

#[tokio::test]
async fn response_heads_under_max_header_bytes_pass() {
    let head = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok", "b".repeat(6 * 1024));
    let up = recording(Box::leak(head.into_bytes().into_boxed_slice())).await;
    let proxy = spawn_proxy(&config(up.addr, "[server.limits]\nmax_header_bytes = 8192")).await;
    let answer = exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: t.example\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", &answer[..answer.len().min(200)]);
    let (status, headers, _) = h2_send(proxy.addr, "GET", "http://t.example/".parse().unwrap(), &[]).await;
    assert_eq!((status, headers["x-big"].len()), (200, 6 * 1024));
}

/// The sweep's parser probes: each used to get the HTTP parser's bare 400 (no cause, no
/// body); every one must name its cause and reach nothing upstream.
#[tokio::test]
async fn every_head_the_parser_refuses_names_its_cause() {
    let up = recording(OK).await;
    let proxy = spawn_proxy(&config(up.addr, "")).await;
    let probes: &[&[u8]] = &[
        b"GET  / HTTP/1.1\r\nHost: t.example\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: t.example\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: t.example\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: t.example\r\n\r\n",
        b"GET / http/1.1\r\nHost: t.example\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\nHost: t.example\r\n\r\n",
        b"GET\t/ HTTP/1.1\r\nHost: t.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t.example\r\nX\x7f: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t.example\r\nx(y: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t.example\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t.example\r\nX: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t.example\r\n: empty\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t.example\r\nHost : t.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t.example\r\nContent-Length: 1, 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t.example\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t.example\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: t.example\r\n\r\n",
        b"GET /\x80 HTTP/1.1\r\nHost: t.example\r\n\r\n",
        b"GET a HTTP/1.1\r\nHost: t.example\r\n\r\n",
        b"GET /\r\n\r\n",
    ];
    for probe in probes {
        let response = exchange(proxy.addr, probe).await;
        assert_eq!(
            status_and_cause(&response),
            ("400".into(), Some("malformed-request".into())),
            "{:?}: {response}",
            String::from_utf8_lossy(probe)
        );
        assert!(response.contains("\r\n\r\n400 "), "a body naming the cause: {response}");
    }
    assert_eq!(up.text(), "", "nothing reached the upstream");
}
