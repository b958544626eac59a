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
    let attempts = 5_000;
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
    // The proxy ends the abusive connection.
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(ended.is_ok(), "the connection survived {sent} rapid resets");
    assert!(sent < attempts, "the burst was never refused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached = up.requests();
    eprintln!(
        "rapid reset: {sent} streams opened and cancelled before the connection ended, {reached} reached the upstream"
    );
    assert!(reached < attempts / 2, "{reached} of {sent} cancelled streams reached the upstream");
    // The process is fine and serves others.
    let (status, _, _) = send(&h2c_client(), "GET", &proxy.url("/"), &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(get(&proxy.url("/"), &[]).await.0, 200);
}
