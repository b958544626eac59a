//! WebSocket upgrades pass through to the chosen version and stay there; a refused
//! upgrade leaves the connection as plain HTTP.

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::ws::{handshake, read_head, ws_upstream};

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
        versions.insert(support::ws::echo_on_one_version(&mut s, 5).await);
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
