//! HTTP/2 abuse against the listener: a rapid-reset burst (CVE-2023-44487), an endless
//! header block, and floods of PING or SETTINGS frames (CVE-2019-9512, -9515; and PING
//! ACKs nobody asked for) get the connection closed, the upstream sees a bounded number
//! of requests, and ordinary clients, busy ones included, are still served.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use support::pki::{self, app_behind_tls as proxy};
use support::raw_h2::{self, frame, ACK, PING, PREFACE, SETTINGS};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off() {
    let (up, proxy, _) = proxy().await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut client = client;
    let attempts = 20_000;
    let mut sent = 0;
    for _ in 0..attempts {
        client = match tokio::time::timeout(Duration::from_secs(2), client.ready()).await {
            Ok(Ok(c)) => c,
            _ => break,
        };
        let req = Request::get(format!("http://{}/?delay_ms=50", proxy.addr)).body(()).unwrap();
        match client.send_request(req, true) {
            Ok((response, _)) => {
                // Open the stream and cancel it at once: HEADERS then RST_STREAM.
                drop(response);
                sent += 1;
            }
            Err(_) => break,
        }
    }
    // How far the burst gets depends on whether h2 saw each reset before or after the
    // stream was accepted; either way the abuse must stay cheap: the connection is cut
    // (GOAWAY) and cancelled streams do not turn into upstream requests.
    let cut_off = sent < attempts;
    let _ = tokio::time::timeout(Duration::from_secs(10), driver).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached = up.requests();
    eprintln!("rapid reset: {sent} streams opened and cancelled (cut off: {cut_off}), {reached} reached the upstream");
    assert!(cut_off, "{attempts} rapid resets and the connection was never refused");
    assert!(reached < 100, "{reached} of {sent} cancelled streams reached the upstream");
    // The process is fine and serves others.
    let (status, _, _) = send(&h2c_client(), "GET", &proxy.url("/"), &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(get(&proxy.url("/"), &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, proxy, _) = proxy().await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(0x4, 0, 0, &[])).await.unwrap(); // SETTINGS
                                                        // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION
                                                        // frames of literal headers (`x-a: b`, never indexed), forever.
    let field: &[u8] = &[0x00, 0x03, b'x', b'-', b'a', 0x01, b'b'];
    let block: Vec<u8> = field.iter().copied().cycle().take(field.len() * 2000).collect();
    s.write_all(&frame(0x1, 0x1, 1, &block)).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        while sent < 64 * 1024 * 1024 {
            if write.write_all(&frame(0x9, 0, 1, &block)).await.is_err() {
                break;
            }
            sent += block.len();
        }
        sent
    });
    // The proxy closes the connection (after a GOAWAY) long before 64 MiB.
    let mut buf = vec![0u8; 65_536];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open under a CONTINUATION flood");
    let sent = writer.await.unwrap();
    assert!(sent < 64 * 1024 * 1024, "the flood was never refused");
    eprintln!("continuation flood: cut off after {sent} bytes of header block");
    assert_eq!(up.requests(), 0);
    assert_eq!(get(&proxy.url("/"), &[]).await.0, 200);
}

const FLOOD: usize = 10_000;

/// Send `one` frame 10,000 times on a new HTTP/2 connection over `stream`: the proxy
/// closes it before acknowledging every copy, counts one flood of `frame` and none of
/// the other kind, and never bothers the upstream.
async fn assert_cut_off<S>(stream: S, one: Vec<u8>, frame: &str, up: &TestUpstream, proxy: &TestProxy)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let kind = one[3];
    let flooded = raw_h2::flood(stream, one, FLOOD).await;
    let acks = flooded.frames.iter().filter(|f| f.is(kind, ACK)).count();
    eprintln!("{frame} flood: {} sent, {acks} acknowledged", flooded.sent);
    assert!(flooded.closed, "the connection stayed open under a {frame} flood");
    assert!(acks < FLOOD, "every {frame} frame was acknowledged");
    for counted in ["ping", "settings"] {
        let want = if counted == frame { 1.0 } else { 0.0 };
        let floods = format!("switchyard_client_floods_total{{frame=\"{counted}\"}}");
        assert_eq!(proxy.metric_reaching(&floods, want).await, want, "{floods}");
    }
    assert_eq!(up.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_over_h2c_is_cut_off_before_it_is_answered() {
    let (up, proxy, _) = proxy().await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    assert_cut_off(tcp, frame(PING, 0, 0, &[7; 8]), "ping", &up, &proxy).await;
    assert_eq!(send(&h2c_client(), "GET", &proxy.url("/"), &[], "").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unsolicited_ping_acks_over_tls_is_cut_off() {
    let (up, proxy, ca) = proxy().await;
    let conn = pki::connect(proxy.tls_addrs[0], "a.test", &ca, &[b"h2"]).await;
    assert_cut_off(conn, frame(PING, ACK, 0, &[7; 8]), "ping", &up, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_flood_is_cut_off_before_it_is_acknowledged() {
    let (up, proxy, _) = proxy().await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    assert_cut_off(tcp, frame(SETTINGS, 0, 0, &[]), "settings", &up, &proxy).await;
}

/// 2,000 requests on one connection, with bodies full of the bytes that name PING and
/// SETTINGS frames and a keep-alive PING every tenth request: none of it is a flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_client_on_one_connection_is_never_cut_off() {
    let (up, proxy, ca) = proxy().await;
    let conn = pki::connect(proxy.tls_addrs[0], "a.test", &ca, &[b"h2"]).await;
    let (mut client, mut connection) = ::h2::client::handshake(conn).await.unwrap();
    let mut pings = connection.ping_pong().expect("the connection's ping handle");
    let driver = tokio::spawn(connection);
    let requests = 2_000;
    let served = tokio::time::timeout(Duration::from_secs(120), async {
        for i in 0..requests {
            client = client.ready().await.unwrap();
            let body = Bytes::from(vec![if i % 2 == 0 { PING } else { SETTINGS }; i % 50 * 7 + 1]);
            let req = Request::post("https://a.test/").body(()).unwrap();
            let (response, mut stream) = client.send_request(req, false).unwrap();
            stream.send_data(body.clone(), true).unwrap();
            let resp = response.await.unwrap();
            assert_eq!(resp.status(), 200, "request {i}");
            let mut body_in = resp.into_body();
            let mut echoed = Vec::new();
            while let Some(chunk) = body_in.data().await {
                let chunk = chunk.unwrap();
                body_in.flow_control().release_capacity(chunk.len()).unwrap();
                echoed.extend_from_slice(&chunk);
            }
            assert_eq!(echoed, body, "request {i}");
            if i % 10 == 0 {
                pings.ping(::h2::Ping::opaque()).await.unwrap();
            }
        }
    })
    .await;
    assert!(served.is_ok(), "2,000 requests did not finish in time");
    assert_eq!(up.requests(), requests);
    assert!(!driver.is_finished(), "the connection is still open");
    for frame in ["ping", "settings"] {
        assert_eq!(proxy.metric(&format!("switchyard_client_floods_total{{frame=\"{frame}\"}}")).await, 0.0);
    }
}
