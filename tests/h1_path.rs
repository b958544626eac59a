//! The HTTP/1.1 fast path, end to end over real sockets: pipelining, keep-alive reuse
//! of upstream connections (after a client abort, and when the upstream closed one
//! while it was idle), 100-continue, bodiless responses, responses read to close, and
//! chunked responses with trailers. Upstreams here are scripted byte by byte, so every
//! framing case is exactly the one named.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One worker: upstream connections are pooled per worker, and these tests count them.
fn config(upstream: SocketAddr) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"{upstream}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n"
    )
}

/// What a scripted upstream does with one request on a connection.
#[derive(Clone, Copy)]
enum Then {
    KeepOpen,
    /// Close the connection right after the response.
    Close,
    /// Close it a little later, while the proxy holds it idle.
    CloseSoon,
}

/// An upstream that answers each request head with `respond(head, n)` (n counts the
/// requests of the whole upstream) and counts the connections it accepted.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// The response's parts (written a few milliseconds apart), and what follows it.
type Script = fn(&str, usize) -> (Vec<Vec<u8>>, Then);

async fn scripted(respond: Script) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head) = read_head(&mut s, &mut buf).await else { return };
                    let body = content_length(&head);
                    while buf.len() < body {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..body);
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    let (parts, then) = respond(&head, n);
                    for part in parts {
                        if s.write_all(&part).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    match then {
                        Then::KeepOpen => {}
                        Then::Close => return,
                        Then::CloseSoon => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Scripted { addr, connections, requests }
}

/// Read one head (through its blank line) off `s`; what follows stays in `buf`.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            buf.drain(..i + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn content_length(head: &str) -> usize {
    header(head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Read a response with a Content-Length body off `s`.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let head = read_head(s, buf).await.expect("a response head");
    let len = content_length(&head);
    while buf.len() < len {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "the body ended early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..len).collect();
    (head, body)
}

fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = scripted(|head, _| {
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        (vec![ok(&path)], Then::KeepOpen)
    })
    .await;
    let proxy = spawn_proxy(&config(up.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // Three requests in one write, the second with a body, then two more cut mid-head.
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /three HTTP/1.1\r\nHost: a\r\n\r\nGET /fo",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    for want in ["/one", "/two", "/three"] {
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, want.as_bytes());
    }
    s.write_all(b"ur HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let (_, body) = read_response(&mut s, &mut buf).await;
    assert_eq!(body, b"/four");
    assert_eq!(up.requests.load(Ordering::SeqCst), 4);
    assert_eq!(up.connections.load(Ordering::SeqCst), 1, "one upstream connection, reused");
}

#[tokio::test]
async fn a_client_abort_mid_response_gives_the_upstream_connection_back() {
    // 200 KB in 20 parts, 5 ms apart: the client leaves after the first.
    let up = scripted(|head, _| {
        if head.starts_with("GET /small") {
            return (vec![ok("small")], Then::KeepOpen);
        }
        let mut parts = vec![b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n".to_vec()];
        parts.extend((0..20).map(|_| vec![b'x'; 10_000]));
        (parts, Then::KeepOpen)
    })
    .await;
    let proxy = spawn_proxy(&config(up.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    drop(s);
    // The proxy drains the rest, pools the connection and then counts the 499: the next
    // request reuses it.
    proxy.metric_reaching(r#"switchyard_requests_total{route="r",upstream="u",version="u",status="499"}"#, 1.0).await;
    let (status, _, body) = get(&proxy.url("/small"), &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "small"));
    assert_eq!(up.connections.load(Ordering::SeqCst), 1, "the aborted response's connection was reused");
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_fails_no_request() {
    // Every connection is closed by the upstream 50 ms after its response.
    let up = scripted(|_, n| (vec![ok(&format!("r{n}"))], Then::CloseSoon)).await;
    let proxy = spawn_proxy(&config(up.addr)).await;
    for i in 0..5 {
        let (status, _, body) = get(&proxy.url("/"), &[]).await;
        assert_eq!(status.as_u16(), 200, "request {i}");
        assert_eq!(body, format!("r{i}"));
        // Long enough for the upstream to close the connection the proxy pooled.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let text = proxy.metrics().await;
    assert_eq!(
        metric_value(&text, r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="reset"}"#),
        0.0
    );
}

#[tokio::test]
async fn expect_100_continue_gets_its_interim_response_before_the_body() {
    let up = scripted(|head, _| {
        let echoed = header(head, "content-length").unwrap_or("none").to_string();
        (vec![ok(&echoed)], Then::KeepOpen)
    })
    .await;
    let proxy = spawn_proxy(&config(up.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let interim = read_head(&mut s, &mut buf).await.unwrap();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    s.write_all(b"hello world").await.unwrap();
    let (head, body) = read_response(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"11");
}

#[tokio::test]
async fn head_204_and_304_responses_carry_no_body_and_keep_the_connection() {
    let up = scripted(|head, _| {
        let resp: &[u8] = if head.starts_with("HEAD") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        } else if head.starts_with("GET /204") {
            // A length on a 204 is not passed on (RFC 9110 §8.6).
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
        } else if head.starts_with("GET /304") {
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"x\"\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast"
        };
        (vec![resp.to_vec()], Then::KeepOpen)
    })
    .await;
    let proxy = spawn_proxy(&config(up.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = Vec::new();
    for (request, status, length) in [
        ("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", "200", Some("1234")),
        ("GET /204 HTTP/1.1\r\nHost: a\r\n\r\n", "204", None),
        ("GET /304 HTTP/1.1\r\nHost: a\r\n\r\n", "304", Some("99")),
    ] {
        s.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut s, &mut buf).await.unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
        assert_eq!(header(&head, "content-length"), length, "{head}");
        assert!(buf.is_empty(), "no body bytes after a {status}: {buf:?}");
    }
    // The connection is still in step: the next response is the next request's.
    s.write_all(b"GET /last HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let (_, body) = read_response(&mut s, &mut buf).await;
    assert_eq!(body, b"last");
}

#[tokio::test]
async fn a_response_without_a_length_is_read_to_close_and_sent_chunked() {
    let up = scripted(|_, _| (vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the ".to_vec(), b"end".to_vec()], Then::Close)).await;
    let proxy = spawn_proxy(&config(up.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).await.unwrap();
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"), "{head}");
    assert_eq!(header(&head, "connection"), None, "the client connection stays open: {head}");
    let want = b"a\r\nuntil the \r\n3\r\nend\r\n0\r\n\r\n";
    while buf.len() < want.len() {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&buf), String::from_utf8_lossy(want));
    // Counted whole (once its last byte is written), not as a failure of the upstream.
    proxy.metric_reaching(r#"switchyard_requests_total{route="r",upstream="u",version="u",status="200"}"#, 1.0).await;
    assert_eq!(
        proxy.metric(r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="reset"}"#).await,
        0.0
    );
}

#[tokio::test]
async fn a_body_read_to_close_that_breaks_off_stays_visibly_cut() {
    // The upstream resets the connection mid-body: the client must not see a whole body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let _ = read_head(&mut s, &mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\npartial").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    let proxy = spawn_proxy(&config(addr)).await;
    let out = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(out.contains("7\r\npartial\r\n"), "{out}");
    assert!(!out.ends_with("0\r\n\r\n"), "a cut body must not end like a whole one: {out:?}");
    assert_eq!(
        proxy.metric(r#"switchyard_upstream_errors_total{route="r",upstream="u",version="u",kind="reset"}"#).await,
        1.0
    );
}

#[tokio::test]
async fn a_length_the_upstream_lists_in_connection_is_still_sent() {
    let up = scripted(|_, _| {
        (
            vec![b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello".to_vec()],
            Then::KeepOpen,
        )
    })
    .await;
    let proxy = spawn_proxy(&config(up.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert_eq!(header(&head, "content-length"), Some("5"), "{head}");
        assert_eq!(body, b"hello");
    }
}

#[tokio::test]
async fn bytes_an_upstream_sends_on_an_idle_connection_never_reach_another_request() {
    // A HEAD answered with a length, and 10 bytes sent after it: they belong to no
    // request, and the connection is not reused.
    let up = scripted(|head, _| {
        if head.starts_with("HEAD") {
            (vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec(), b"0123456789".to_vec()], Then::KeepOpen)
        } else {
            (vec![ok("mine")], Then::KeepOpen)
        }
    })
    .await;
    let proxy = spawn_proxy(&config(up.addr)).await;
    let out = raw(proxy.addr, b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let (status, _, body) = get(&proxy.url("/"), &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "mine"));
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 2, "the connection that got stray bytes was closed");
}

#[tokio::test]
async fn an_error_answer_to_head_has_no_body() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let proxy = spawn_proxy(&config(closed)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let first = read_head(&mut s, &mut buf).await.unwrap();
    assert!(first.starts_with("HTTP/1.1 502"), "{first}");
    assert!(content_length(&first) > 0, "a HEAD learns the length: {first}");
    let second = read_head(&mut s, &mut buf).await.unwrap();
    assert!(second.starts_with("HTTP/1.1 502"), "the HEAD's answer carried a body: {second}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_let_go_after_idle_timeout() {
    // An endless body; the client reads nothing. idle_timeout bounds the wait for it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicUsize::new(0));
    let seen = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = read_head(&mut s, &mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n").await;
                let block = vec![b'x'; 64 * 1024];
                // Bounded: 1 GB at most, or until the proxy lets go.
                for _ in 0..16_000 {
                    if s.write_all(&block).await.is_err() {
                        seen.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    });
    let cfg = config(addr).replace("workers = 1\n", "workers = 1\n[server.limits]\nidle_timeout = \"1s\"\n");
    let proxy = spawn_proxy(&cfg).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let metric = r#"switchyard_requests_total{route="r",upstream="u",version="u",status="499"}"#;
    let mut counted = 0.0;
    for _ in 0..100 {
        counted = proxy.metric(metric).await;
        if counted == 1.0 && cut.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 1.0, "the stalled client was not let go");
    assert_eq!(cut.load(Ordering::SeqCst), 1, "the upstream connection was not closed");
    drop(s);
}

#[tokio::test]
async fn chunked_responses_pass_with_their_trailers() {
    let up = scripted(|_, _| {
        (
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n".to_vec(),
                b"6\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n".to_vec(),
            ],
            Then::KeepOpen,
        )
    })
    .await;
    let proxy = spawn_proxy(&config(up.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).await.unwrap();
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"), "{head}");
    let want = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n";
    while buf.len() < want.len() {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&buf), String::from_utf8_lossy(want));
    // And a client that decodes it sees the body.
    let (status, _, body) = get(&proxy.url("/"), &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "hello world"));
}

#[tokio::test]
async fn an_answer_the_proxy_makes_keeps_the_connection_in_step() {
    // Nothing listens there: every attempt is a connect failure, answered 502.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let proxy = spawn_proxy(&config(closed)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = Vec::new();
    // The body looks like a request: read as one, it would get an answer of its own.
    let body = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    for _ in 0..2 {
        let request = format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        s.write_all(request.as_bytes()).await.unwrap();
        let (head, answer) = read_response(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
        assert_eq!(header(&head, "x-switchyard-error"), Some("upstream-connect"), "{head}");
        assert!(String::from_utf8_lossy(&answer).contains("upstream-connect"));
    }
    let mut more = [0u8; 256];
    let extra = tokio::time::timeout(Duration::from_millis(300), s.read(&mut more)).await;
    assert!(buf.is_empty() && extra.is_err(), "an answer to a request nobody sent: {buf:?} {extra:?}");
}
