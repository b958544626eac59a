//! WebSocket upgrades pass through to the chosen version and stay there; a refused
//! upgrade leaves the connection as plain HTTP.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A minimal WebSocket-ish upstream: answers the handshake with 101 and then echoes every
/// read prefixed with its name; `/refuse` gets a 200 instead.
async fn ws_upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let Some(head) = read_head(&mut s).await else { return };
                    if head.contains("/refuse") {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno").await;
                        continue;
                    }
                    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
                    let _ = s
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: test\r\n\r\n")
                        .await;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let mut out = format!("{name}:").into_bytes();
                        out.extend_from_slice(&buf[..n]);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
            });
        }
    });
    addr
}

async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn handshake(path: &str, cookie: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\n\r\n"
    )
}

async fn proxy() -> TestProxy {
    let (v1, v2) = (ws_upstream("v1").await, ws_upstream("v2").await);
    spawn_proxy(&with_listeners(&format!(
        r#"[upstreams.chat-v1]
endpoints = ["{v1}"]
[upstreams.chat-v2]
endpoints = ["{v2}"]
[[routes]]
name = "chat"
backends = [{{ upstream = "chat-v1", weight = 50 }}, {{ upstream = "chat-v2", weight = 50 }}]
sticky = {{ cookie = "sy_chat" }}
"#
    )))
    .await
}

#[tokio::test]
async fn websocket_messages_stay_on_the_version_that_answered() {
    let proxy = proxy().await;
    let mut versions = std::collections::HashSet::new();
    for user in 0..6 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(handshake("/ws", &format!("sy_chat=user-{user}")).as_bytes()).await.unwrap();
        let head = read_head(&mut s).await.expect("a handshake answer");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("upgrade: websocket") && lower.contains("connection: upgrade"), "{head}");
        let mut first = None;
        for i in 0..5 {
            let msg = format!("message {i}");
            s.write_all(msg.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
            let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (version, echoed) = reply.split_once(':').unwrap();
            assert_eq!(echoed, msg);
            assert_eq!(*first.get_or_insert(version.to_string()), version, "a frame switched versions");
        }
        versions.insert(first.unwrap());
    }
    assert_eq!(versions.len(), 2, "the sticky 50/50 split spread users over both versions: {versions:?}");
}

#[tokio::test]
async fn a_refused_upgrade_is_not_tunnelled() {
    let proxy = proxy().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(handshake("/refuse", "sy_chat=user-1").as_bytes()).await.unwrap();
    let head = read_head(&mut s).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 2];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"no");
    // Still HTTP: another request on the same connection is answered as HTTP.
    s.write_all(b"GET /refuse HTTP/1.1\r\nHost: chat.test\r\nCookie: sy_chat=user-1\r\n\r\n").await.unwrap();
    let head = read_head(&mut s).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
