//! HTTP/2 abuse against the listener: a rapid-reset burst (CVE-2023-44487) gets the
//! connection closed, the upstream sees a bounded number of requests, and ordinary
//! clients are still served.

mod support;

use std::time::Duration;

use http::Request;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&with_listeners(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n",
        up.addr
    )))
    .await;
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

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&with_listeners(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n",
        up.addr
    )))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
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
