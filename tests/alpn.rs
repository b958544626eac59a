//! ALPN binds the protocol on TLS listeners, as nginx does: a connection that agreed
//! `h2` speaks HTTP/2 only (anything but the connection preface gets a GOAWAY), one that
//! agreed `http/1.1`, or nothing, speaks HTTP/1.1 only (an HTTP/2 preface is a
//! malformed request). Cleartext listeners keep serving both, and each protocol is
//! still served where it was agreed (`tls.rs`, `alpn_negotiates_h2_or_http11`).

mod support;

use std::time::Duration;

use support::pki::{self, app_behind_tls as proxy};
use support::raw_h2::{frame, frames, get_request, read_until_closed, GOAWAY, PREFACE, SETTINGS};
use support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_with_an_http1_request_gets_a_goaway_and_nothing_else() {
    let (app, proxy, ca) = proxy().await;
    let mut conn = pki::connect(proxy.tls_addrs[0], "a.test", &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(pki::alpn(&conn).as_deref(), Some(&b"h2"[..]));
    conn.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await.unwrap();
    let (bytes, closed) = read_until_closed(conn, Duration::from_secs(10)).await;
    assert!(closed, "the connection stayed open");
    let sent = frames(&bytes);
    assert_eq!(sent.len(), 1, "one frame and nothing else: {bytes:?}");
    // GOAWAY on stream 0: last stream 0, PROTOCOL_ERROR.
    assert_eq!((sent[0].kind, sent[0].stream), (GOAWAY, 0));
    assert_eq!(sent[0].payload, [0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(bytes.len(), 17, "no HTTP/1.1 answer: {:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(app.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_where_http11_was_agreed_is_a_malformed_request() {
    let (app, proxy, ca) = proxy().await;
    let agreements: [&[&[u8]]; 2] = [&[b"http/1.1"], &[]];
    for offer in agreements {
        let mut conn = pki::connect(proxy.tls_addrs[0], "a.test", &ca, offer).await;
        let agreed = pki::alpn(&conn);
        assert_ne!(agreed.as_deref(), Some(&b"h2"[..]));
        let mut h2 = PREFACE.to_vec();
        h2.extend_from_slice(&frame(SETTINGS, 0, 0, &[]));
        h2.extend_from_slice(&get_request("a.test"));
        conn.write_all(&h2).await.unwrap();
        let (bytes, closed) = read_until_closed(conn, Duration::from_secs(10)).await;
        let answer = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
        assert!(closed, "ALPN {agreed:?}: the connection stayed open");
        assert!(answer.starts_with("http/1.1 400 "), "ALPN {agreed:?}: {answer}");
        assert!(answer.contains("\r\nx-switchyard-error: malformed-request\r\n"), "{answer}");
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    }
    assert_eq!(app.requests(), 0);
    let refused = r#"switchyard_requests_total{route="",upstream="",version="",status="400"}"#;
    assert_eq!(proxy.metric_reaching(refused, 2.0).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_listeners_still_serve_http11_and_h2c() {
    let (app, proxy, _) = proxy().await;
    let (status, _, body) = get(&proxy.url("/"), &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "app"));
    let (status, _, _) = send(&h2c_client(), "GET", &proxy.url("/"), &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(app.requests(), 2);
}
