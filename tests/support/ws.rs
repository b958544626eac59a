//! A minimal WebSocket-ish upstream and the raw handshake a client sends.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A minimal WebSocket-ish upstream: answers the handshake with 101 and then echoes every
/// read prefixed with its name; `/refuse` gets a 200 instead.
pub async fn ws_upstream(name: &'static str) -> SocketAddr {
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

pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
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

pub fn handshake(path: &str, cookie: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\n\r\n"
    )
}

/// Send `frames` messages on an upgraded connection and check each comes back echoed by
/// the same version; returns that version.
pub async fn echo_on_one_version<S: AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, frames: usize) -> String {
    let mut first: Option<String> = None;
    for i in 0..frames {
        let msg = format!("message {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (version, echoed) = reply.split_once(':').unwrap();
        assert_eq!(echoed, msg);
        assert_eq!(first.get_or_insert_with(|| version.to_string()), version, "a frame switched versions");
    }
    first.expect("at least one frame")
}
