//! `[server.limits]` and `max_in_flight`: what one client may cost.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(up: &TestUpstream, limits: &str, upstream_extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[server.limits]\n{limits}\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"{}\"]\n{upstream_extra}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n",
        up.addr
    )
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&up, "max_header_bytes = 8192", "")).await;
    let big = "a".repeat(10_000);
    let resp = raw(proxy.addr, format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let (status, _, _) = get(&proxy.url("/"), &[("x-small", &"a".repeat(4000))]).await;
    assert_eq!(status, 200);
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_never_reach_the_upstream_whole() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&up, "max_body_bytes = 1000", "")).await;
    // Declared too large: refused before any upstream work.
    let (status, h, _) = send(&client(), "POST", &proxy.url("/"), &[], &"x".repeat(1001)).await;
    assert_eq!(status, 413);
    assert_eq!(h["x-switchyard-error"], "body-too-large");
    assert_eq!(up.requests(), 0);
    // At the limit: fine.
    let (status, _, body) = send(&client(), "POST", &proxy.url("/"), &[], &"x".repeat(1000)).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 1000);

    // Streamed (chunked) past the limit: cut off, and the upstream got at most the limit.
    let before = up.body_bytes.load(std::sync::atomic::Ordering::SeqCst);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").await.unwrap();
    for _ in 0..6 {
        let _ = s.write_all(format!("190\r\n{}\r\n", "y".repeat(400)).as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let received = up.body_bytes.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(received <= 1000, "the upstream received {received} bytes of a body over the 1000-byte limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_while_others_are_served() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&up, "header_read_timeout = \"1s\"", "")).await;
    // 200 connections that each send a head one byte at a time, never finishing it.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ").await.unwrap();
        slow.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut buf = [0u8; 64];
            // Trickle bytes until the proxy closes the connection (bounded).
            while started.elapsed() < Duration::from_secs(10) {
                if s.write_all(b"a").await.is_err() {
                    break;
                }
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    _ => {}
                }
            }
            started.elapsed()
        }));
    }
    // A normal client is served meanwhile.
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _, _) = get(&proxy.url("/"), &[]).await;
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    for t in slow {
        let lasted = t.await.unwrap();
        assert!(lasted < Duration::from_secs(9), "a slow head survived {lasted:?}");
    }
    assert_eq!(up.requests(), 5);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&up, "idle_timeout = \"500ms\"\nheader_read_timeout = \"10s\"", "")).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // Timed from before the request: the idle clock starts when the proxy has written
    // the answer, which is before this task reads it.
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then nothing: the proxy closes the idle connection.
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "idle connection still open");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn max_connections_pauses_accepting() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&up, "max_connections = 2", "")).await;
    let c1 = client();
    let c2 = client();
    // Two keep-alive connections hold both slots.
    assert_eq!(send(&c1, "GET", &proxy.url("/"), &[], "").await.0, 200);
    assert_eq!(send(&c2, "GET", &proxy.url("/"), &[], "").await.0, 200);
    // A third client connects (the kernel queues it) but is not served...
    let url = proxy.url("/");
    let third = tokio::spawn(async move { get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served beyond max_connections");
    // ...until a slot frees up.
    drop(c1);
    let (status, _, _) =
        tokio::time::timeout(Duration::from_secs(5), third).await.expect("served after a slot freed").unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_sheds_load_with_503() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&up, "", "max_in_flight = 2")).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let url = proxy.url("/?delay_ms=3000");
        slow.push(tokio::spawn(async move { get(&url, &[]).await.0 }));
    }
    eventually("both slow requests admitted", Duration::from_secs(5), || async { up.requests() == 2 }).await;
    let (status, h, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!(status, 503);
    assert_eq!(h["x-switchyard-error"], "max-in-flight");
    assert!(slow.iter().all(|s| !s.is_finished()), "shed at once, not queued until a slot freed");
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert_eq!(get(&proxy.url("/"), &[]).await.0, 200);
}

#[tokio::test]
async fn shutdown_tells_keep_alive_clients_to_close_and_finishes_in_flight() {
    let up = spawn_upstream("u").await;
    let mut proxy = spawn_proxy(&config(&up, "", "")).await;
    // An idle keep-alive connection and one with a request in flight.
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = idle.read(&mut buf).await.unwrap();
    let mut busy = TcpStream::connect(proxy.addr).await.unwrap();
    busy.write_all(b"GET /?delay_ms=700 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    eventually("the busy request reaching the upstream", Duration::from_secs(5), || async { up.requests() == 2 }).await;

    proxy.begin_shutdown();
    // The idle one is closed.
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "idle keep-alive connection left open");
    // The busy one gets its response, marked as the connection's last, then EOF.
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out).to_lowercase();
    assert!(resp.starts_with("http/1.1 200"), "{resp}");
    assert!(resp.contains("connection: close"), "{resp}");
    assert!(TcpStream::connect(proxy.addr).await.is_err(), "new connections are refused");
}

#[tokio::test]
async fn trickled_blank_lines_count_as_a_slow_head() {
    let up = spawn_upstream("u").await;
    let proxy = spawn_proxy(&config(&up, "header_read_timeout = \"500ms\"\nidle_timeout = \"60s\"", "")).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    while started.elapsed() < Duration::from_secs(10) {
        if s.write_all(b"\r\n").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            _ => {}
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "blank lines kept the connection for {:?}", started.elapsed());
}
