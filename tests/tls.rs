//! TLS termination and HTTPS upstreams, with certificates made in each test (rcgen):
//! SNI picks the certificate, ALPN negotiates h2, a replaced certificate file applies to
//! new handshakes while open connections keep working, bad files are config errors, and
//! HTTPS upstreams verify with a private CA, send SNI, present client certificates.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use support::pki::{self, one_route, tls_proxy, tls_proxy_in, Loopback, TestCa};
use support::*;

#[tokio::test]
async fn sni_picks_the_certificate_for_each_hostname_and_requests_are_proxied_as_https() {
    let app = spawn_upstream("app").await;
    let ca = TestCa::new("test ca");
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["*.b.test"]));
    // `b` first: it is the default, so `a` being served proves the SNI lookup.
    let proxy = tls_proxy(&[&b, &a], &one_route(app.addr, "")).await;
    let tls = proxy.tls_addrs[0];

    let conn = pki::connect(tls, "a.test", &ca, &[b"http/1.1"]).await;
    assert_eq!(pki::presented(&conn), a.der, "exact SAN match");
    let mut h1 = pki::http1(conn).await;
    let (status, _, body) = pki::read(h1.send_request(pki::get_request("a.test", "/x")).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));
    let seen = app.last_seen();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["host"], "a.test");

    let conn = pki::connect(tls, "api.b.test", &ca, &[b"http/1.1"]).await;
    assert_eq!(pki::presented(&conn), b.der, "wildcard SAN match");
    assert_eq!(pki::presented_unverified(tls, Some("A.TEST")).await, a.der, "SNI is case-insensitive");
    // No SNI, a name nobody covers, or a wildcard one label too deep: the first certificate.
    assert_eq!(pki::presented_unverified(tls, None).await, b.der);
    assert_eq!(pki::presented_unverified(tls, Some("c.test")).await, b.der);
    assert_eq!(pki::presented_unverified(tls, Some("x.a.test")).await, b.der);

    // The plain listener still speaks plain HTTP, and says so upstream.
    let (status, _, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.last_seen().headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn alpn_negotiates_h2_or_http11() {
    let app = spawn_upstream("app").await;
    let ca = TestCa::new("test ca");
    let leaf = ca.leaf(&["a.test"]);
    let proxy = tls_proxy(&[&leaf], &one_route(app.addr, "")).await;
    let tls = proxy.tls_addrs[0];

    let conn = pki::connect(tls, "a.test", &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(pki::alpn(&conn).as_deref(), Some(&b"h2"[..]));
    let mut h2 = pki::http2(conn).await;
    let req = http::Request::get("https://a.test/h2").body(http_body_util::Full::default()).unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (status, _, body) = pki::read(resp).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));
    // HTTP/2 downstream, HTTP/1.1 upstream (protocol = "http1").
    assert_eq!(app.last_seen().version, http::Version::HTTP_11);

    let conn = pki::connect(tls, "a.test", &ca, &[b"http/1.1"]).await;
    assert_eq!(pki::alpn(&conn).as_deref(), Some(&b"http/1.1"[..]));
    let mut h1 = pki::http1(conn).await;
    let resp = h1.send_request(pki::get_request("a.test", "/h1")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn sticky_cookies_are_secure_on_tls_listeners_only() {
    let app = spawn_upstream("app").await;
    let ca = TestCa::new("test ca");
    let leaf = ca.leaf(&["a.test"]);
    let proxy = tls_proxy(&[&leaf], &one_route(app.addr, "sticky = { cookie = \"sy\", ttl = \"1h\" }")).await;

    let mut h1 = pki::http1(pki::connect(proxy.tls_addrs[0], "a.test", &ca, &[]).await).await;
    let (_, headers, _) = pki::read(h1.send_request(pki::get_request("a.test", "/")).await.unwrap()).await;
    let cookie = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("sy=") && cookie.contains("; Secure"), "{cookie}");

    let (_, headers, _) = get(&proxy.url("/"), &[]).await;
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(!cookie.contains("Secure"), "{cookie}");
}

/// Poll (bounded) until a new handshake presents `want`.
async fn wait_for_certificate(addr: SocketAddr, sni: &str, ca: &TestCa, want: &pki::Leaf) {
    eventually("the new certificate served", Duration::from_secs(10), || async {
        pki::presented(&pki::connect(addr, sni, ca, &[]).await) == want.der
    })
    .await;
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_handshakes_while_open_connections_keep_working() {
    let app = spawn_upstream("app").await;
    let ca = TestCa::new("test ca");
    let (old, new) = (ca.leaf(&["a.test"]), ca.leaf(&["a.test"]));
    let proxy = tls_proxy(&[&old], &one_route(app.addr, "")).await;
    let tls = proxy.tls_addrs[0];

    let conn = pki::connect(tls, "a.test", &ca, &[]).await;
    assert_eq!(pki::presented(&conn), old.der);
    let mut open = pki::http1(conn).await;
    assert_eq!(open.send_request(pki::get_request("a.test", "/1")).await.unwrap().status(), StatusCode::OK);

    // Certificates live beside the config in a `certs/` layout in real deployments;
    // here they sit in the config directory, written in place like `cp` would.
    new.write(proxy.dir.path(), "cert-0");
    wait_for_certificate(tls, "a.test", &ca, &new).await;

    // The connection opened before the change was not dropped and still works.
    let resp = open.send_request(pki::get_request("a.test", "/2")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(proxy.app.plane.runtime().generation >= 2);
}

#[tokio::test]
async fn certificates_outside_the_config_directory_are_watched_too() {
    let app = spawn_upstream("app").await;
    let ca = TestCa::new("test ca");
    let (old, new) = (ca.leaf(&["a.test"]), ca.leaf(&["a.test"]));
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = old.write(certs.path(), "site");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{{ cert = {cert:?}, key = {key:?} }}]\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        one_route(app.addr, "")
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = spawn_proxy_file(path, dir).await;

    // A Kubernetes-style swap: new files written aside, then renamed over the old ones.
    let staged = tempfile::tempdir_in(certs.path()).unwrap();
    let (c, k) = new.write(staged.path(), "site");
    std::fs::rename(k, &key).unwrap();
    std::fs::rename(c, &cert).unwrap();
    wait_for_certificate(proxy.tls_addrs[0], "a.test", &ca, &new).await;
}

#[tokio::test]
async fn a_mismatched_key_at_reload_keeps_the_old_certificate_serving() {
    let app = spawn_upstream("app").await;
    let ca = TestCa::new("test ca");
    let (old, other) = (ca.leaf(&["a.test"]), ca.leaf(&["a.test"]));
    let proxy = tls_proxy(&[&old], &one_route(app.addr, "")).await;

    std::fs::write(proxy.dir.path().join("cert-0-key.pem"), &other.key_pem).unwrap();
    let errors = proxy.app.controller.reload().await.expect_err("a key that does not match must be refused");
    let text = errors.to_string();
    assert!(text.contains("switchyard.toml:") && text.contains("does not match the certificate"), "{text}");
    assert!(proxy.app.controller.last_reload_error().is_some());
    let conn = pki::connect(proxy.tls_addrs[0], "a.test", &ca, &[]).await;
    assert_eq!(pki::presented(&conn), old.der);
}

#[test]
fn unreadable_or_mismatched_tls_files_are_config_errors_with_positions() {
    let ca = TestCa::new("test ca");
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));
    let dir = tempfile::tempdir().unwrap();
    a.write(dir.path(), "a");
    b.write(dir.path(), "b");
    std::fs::write(dir.path().join("junk.pem"), "not pem at all").unwrap();
    let config = r#"[server]
listen = ["127.0.0.1:0"]
[[server.tls]]
listen = "127.0.0.1:0"
certs = [{ cert = "missing.pem", key = "a-key.pem" }]
[[server.tls]]
listen = "127.0.0.1:0"
certs = [{ cert = "a.pem", key = "b-key.pem" }]
[[server.tls]]
listen = "127.0.0.1:0"
certs = [{ cert = "junk.pem", key = "a-key.pem" }]
[upstreams.fn]
endpoints = ["fn.test:443"]
tls = { ca_file = "nope.pem", client_cert = "a.pem" }
"#;
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let errors = switchyard::config::load(&path).unwrap_err().to_string();
    let at = |line_col: &str, field: &str, words: &str| {
        let want = format!("switchyard.toml:{line_col}: {field}: ");
        assert!(errors.lines().any(|l| l.contains(&want) && l.contains(words)), "want {want}…{words} in:\n{errors}");
    };
    at("5:19", "server.tls[0].certs[0].cert", "cannot read");
    at("8:10", "server.tls[1].certs[0].key", "does not match the certificate");
    at("11:19", "server.tls[2].certs[0].cert", "holds no PEM certificate");
    at("14:7", "upstreams.fn.tls.client_key", "`client_cert` needs `client_key` too");
}

async fn proxy_with_loopback_dns(dir: tempfile::TempDir, body: &str) -> TestProxy {
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, with_listeners(body)).unwrap();
    spawn_proxy_resolving(path, dir, Arc::new(Loopback)).await
}

fn write_ca(dir: &Path, ca: &TestCa) {
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
}

#[tokio::test]
async fn https_upstream_with_a_private_ca_gets_the_endpoint_hostname_as_sni_and_host() {
    let ca = TestCa::new("private ca");
    let leaf = ca.leaf(&["fn.test"]);
    let function = spawn_https_upstream("fn", TestCa::server_config(&leaf, None, &[b"http/1.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path(), &ca);
    let port = function.addr.port();
    let proxy = proxy_with_loopback_dns(
        dir,
        &format!(
            r#"[upstreams.fn]
endpoints = ["fn.test:{port}"]
tls = {{ ca_file = "ca.pem" }}
host_header = "endpoint"
connect_timeout = "5s"
request_timeout = "60s"
[[routes]]
name = "fn"
backends = [{{ upstream = "fn" }}]
"#
        ),
    )
    .await;
    let (status, _, body) = get(&proxy.url("/invoke"), &[("host", "edge.example")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fn"));
    assert_eq!(function.sni.lock().unwrap()[0].as_deref(), Some("fn.test"));
    assert_eq!(function.last_seen().headers["host"], format!("fn.test:{port}").as_str());
}

#[tokio::test]
async fn https_upstream_sni_override_and_an_untrusted_certificate_is_a_502() {
    let ca = TestCa::new("private ca");
    let leaf = ca.leaf(&["real-name.test"]);
    let function = spawn_https_upstream("fn", TestCa::server_config(&leaf, None, &[])).await;
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path(), &ca);
    let addr = function.addr;
    let proxy = proxy_with_loopback_dns(
        dir,
        &format!(
            r#"[upstreams.named]
endpoints = ["{addr}"]
tls = {{ ca_file = "ca.pem", sni = "real-name.test" }}
[upstreams.public-roots]
endpoints = ["real-name.test:{port}"]
tls = true
[[routes]]
name = "named"
path_prefix = "/named"
backends = [{{ upstream = "named" }}]
[[routes]]
name = "public"
path_prefix = "/public"
backends = [{{ upstream = "public-roots" }}]
"#,
            port = addr.port()
        ),
    )
    .await;
    let (status, _, _) = get(&proxy.url("/named"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(function.sni.lock().unwrap()[0].as_deref(), Some("real-name.test"));

    // `tls = true` trusts only the public webpki roots: the private CA is refused,
    // and the request never reaches the function.
    let hits = function.hits();
    let (status, headers, _) = get(&proxy.url("/public"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-switchyard-error"], "upstream-connect");
    assert_eq!(function.hits(), hits);
}

#[tokio::test]
async fn https_upstream_requiring_a_client_certificate_gets_one_with_mtls() {
    let ca = TestCa::new("private ca");
    let server_leaf = ca.leaf(&["mtls.test"]);
    let client_leaf = ca.leaf(&["switchyard.test"]);
    let function = spawn_https_upstream("fn", TestCa::server_config(&server_leaf, Some(&ca), &[])).await;
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path(), &ca);
    client_leaf.write(dir.path(), "client");
    let port = function.addr.port();
    let proxy = proxy_with_loopback_dns(
        dir,
        &format!(
            r#"[upstreams.with-cert]
endpoints = ["mtls.test:{port}"]
tls = {{ ca_file = "ca.pem", client_cert = "client.pem", client_key = "client-key.pem" }}
[upstreams.without-cert]
endpoints = ["mtls.test:{port}"]
tls = {{ ca_file = "ca.pem" }}
retries = 0
[[routes]]
name = "with"
path_prefix = "/with"
backends = [{{ upstream = "with-cert" }}]
[[routes]]
name = "without"
path_prefix = "/without"
backends = [{{ upstream = "without-cert" }}]
"#
        ),
    )
    .await;
    let (status, _, body) = get(&proxy.url("/with"), &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fn"));
    let hits = function.hits();
    let (status, _, _) = get(&proxy.url("/without"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(function.hits(), hits);
}

#[tokio::test]
async fn grpc_over_h2_with_tls_on_both_sides_keeps_its_trailers() {
    use http_body_util::BodyExt;
    let ca = TestCa::new("ca");
    let upstream_leaf = ca.leaf(&["grpc.test"]);
    let grpc = support::grpc::upstream("grpc", Some(TestCa::server_config(&upstream_leaf, None, &[b"h2"]))).await;
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path(), &ca);
    let port = grpc.port();
    let body = format!(
        r#"[upstreams.grpc]
endpoints = ["grpc.test:{port}"]
protocol = "h2"
tls = {{ ca_file = "ca.pem" }}
[[routes]]
name = "grpc"
backends = [{{ upstream = "grpc" }}]
"#
    );
    let edge_leaf = ca.leaf(&["edge.test"]);
    let proxy = tls_proxy_in(dir, &[&edge_leaf], &body).await;

    let mut h2 = pki::http2(pki::connect(proxy.tls_addrs[0], "edge.test", &ca, &[b"h2"]).await).await;
    let req = http::Request::post("https://edge.test/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(String::from_utf8_lossy(&collected.to_bytes()), "grpc HTTP/2.0");
}

#[tokio::test]
async fn canary_stickiness_metrics_and_websocket_work_the_same_over_tls() {
    use tokio::io::AsyncWriteExt;
    let (v1, v2) = (support::ws::ws_upstream("v1").await, support::ws::ws_upstream("v2").await);
    let ca = TestCa::new("ca");
    let leaf = ca.leaf(&["chat.test"]);
    let body = format!(
        r#"[upstreams.chat-v1]
version = "v1"
endpoints = ["{v1}"]
[upstreams.chat-v2]
version = "v2"
endpoints = ["{v2}"]
[[routes]]
name = "chat"
backends = [{{ upstream = "chat-v1", weight = 50 }}, {{ upstream = "chat-v2", weight = 50 }}]
sticky = {{ cookie = "sy_chat" }}
"#
    );
    let proxy = tls_proxy(&[&leaf], &body).await;
    let mut versions = std::collections::HashSet::new();
    for user in 0..8 {
        let mut s = pki::connect(proxy.tls_addrs[0], "chat.test", &ca, &[b"http/1.1"]).await;
        s.write_all(support::ws::handshake("/ws", &format!("sy_chat=user-{user}")).as_bytes()).await.unwrap();
        let head = support::ws::read_head(&mut s).await.expect("a handshake answer");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        versions.insert(support::ws::echo_on_one_version(&mut s, 3).await);
    }
    assert_eq!(versions.len(), 2, "the sticky 50/50 split spread users over both versions: {versions:?}");
    let metrics = proxy.metrics().await;
    let count = |v: &str| {
        metric_value(
            &metrics,
            &format!(
                "switchyard_requests_total{{route=\"chat\",upstream=\"chat-{v}\",version=\"{v}\",status=\"101\"}}"
            ),
        )
    };
    assert_eq!(count("v1") + count("v2"), 8.0, "{metrics}");
}

#[tokio::test]
async fn two_tls_listeners_serve_their_own_certificates_and_a_tls_only_proxy_works() {
    let app = spawn_upstream("app").await;
    let ca = TestCa::new("test ca");
    let (one, two) = (ca.leaf(&["one.test"]), ca.leaf(&["two.test"]));
    let dir = tempfile::tempdir().unwrap();
    one.write(dir.path(), "one");
    two.write(dir.path(), "two");
    let config = format!(
        "[server]\nlisten = []\n[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{{ cert = \"one.pem\", key = \"one-key.pem\" }}]\n[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{{ cert = \"two.pem\", key = \"two-key.pem\" }}]\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        one_route(app.addr, "")
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = spawn_proxy_file(path, dir).await;
    assert_eq!(proxy.tls_addrs.len(), 2);
    assert_eq!(pki::presented_unverified(proxy.tls_addrs[0], None).await, one.der);
    assert_eq!(pki::presented_unverified(proxy.tls_addrs[1], None).await, two.der);
    let mut h1 = pki::http1(pki::connect(proxy.tls_addrs[1], "two.test", &ca, &[]).await).await;
    assert_eq!(h1.send_request(pki::get_request("two.test", "/")).await.unwrap().status(), StatusCode::OK);
}

#[test]
fn listeners_sharing_a_port_are_refused() {
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    let config = "[server]\nlisten = [\"0.0.0.0:18443\"]\n[[server.tls]]\nlisten = \"127.0.0.1:18443\"\ncerts = [{ cert = \"a.pem\", key = \"a-key.pem\" }]\n";
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let errors = switchyard::config::load(&path).unwrap_err().to_string();
    assert!(errors.contains("server.tls[0].listen: 127.0.0.1:18443 shares a port with another listener"), "{errors}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_cut_off() {
    use tokio::io::AsyncReadExt;
    let app = spawn_upstream("app").await;
    let ca = TestCa::new("test ca");
    let leaf = ca.leaf(&["a.test"]);
    let dir = tempfile::tempdir().unwrap();
    leaf.write(dir.path(), "a");
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[server.limits]\nheader_read_timeout = \"300ms\"\n[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{{ cert = \"a.pem\", key = \"a-key.pem\" }}]\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        one_route(app.addr, "")
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = spawn_proxy_file(path, dir).await;
    let mut silent = tokio::net::TcpStream::connect(proxy.tls_addrs[0]).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the proxy closed the silent connection: {read:?}");
}

#[tokio::test]
async fn https_health_checks_and_a_rotated_ca_keep_the_endpoint_healthy() {
    let ca = TestCa::new("private ca");
    let leaf = ca.leaf(&["fn.test"]);
    let function = spawn_https_upstream("fn", TestCa::server_config(&leaf, None, &[])).await;
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path(), &ca);
    let port = function.addr.port();
    let proxy = proxy_with_loopback_dns(
        dir,
        &format!(
            r#"[upstreams.fn]
endpoints = ["fn.test:{port}"]
tls = {{ ca_file = "ca.pem" }}
health = {{ path = "/healthz", interval = "100ms", healthy = 1, unhealthy = 2 }}
[[routes]]
name = "fn"
backends = [{{ upstream = "fn" }}]
"#
        ),
    )
    .await;
    // Probed over HTTPS: the endpoint becomes healthy and serves.
    eventually("the endpoint becomes healthy", Duration::from_secs(5), || async {
        get(&proxy.url("/"), &[]).await.0 == StatusCode::OK
    })
    .await;
    assert!(function.seen.lock().unwrap().iter().any(|s| s.uri == "/healthz"));
    // The same CA written again (a rotation that changes the file's bytes): the
    // endpoint is rebuilt for the new trust but keeps its health; no request fails.
    let pem = format!("{}\n", ca.pem());
    std::fs::write(proxy.dir.path().join("ca.pem"), pem).unwrap();
    proxy.app.controller.reload().await.unwrap();
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/"), &[]).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn ip_endpoints_are_verified_against_ip_sans() {
    let ca = TestCa::new("private ca");
    let by_ip = spawn_https_upstream("by-ip", TestCa::server_config(&ca.leaf(&["127.0.0.1"]), None, &[])).await;
    let by_name = spawn_https_upstream("by-name", TestCa::server_config(&ca.leaf(&["fn.test"]), None, &[])).await;
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path(), &ca);
    let proxy = proxy_with_loopback_dns(
        dir,
        &format!(
            r#"[upstreams.ip]
endpoints = ["{}"]
tls = {{ ca_file = "ca.pem" }}
[upstreams.name-only]
endpoints = ["{}"]
tls = {{ ca_file = "ca.pem" }}
retries = 0
[[routes]]
name = "ip"
path_prefix = "/ip"
backends = [{{ upstream = "ip" }}]
[[routes]]
name = "name"
path_prefix = "/name"
backends = [{{ upstream = "name-only" }}]
"#,
            by_ip.addr, by_name.addr
        ),
    )
    .await;
    assert_eq!(get(&proxy.url("/ip"), &[]).await.0, StatusCode::OK);
    // A certificate for fn.test does not cover 127.0.0.1.
    assert_eq!(get(&proxy.url("/name"), &[]).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(by_name.hits(), 0);
}

#[tokio::test]
async fn a_stalled_upstream_handshake_is_a_connect_failure_within_connect_timeout() {
    // Accepts TCP and never says a word: the TLS handshake never completes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let proxy = proxy_with_loopback_dns(
        tempfile::tempdir().unwrap(),
        &format!(
            "[upstreams.fn]\nendpoints = [\"{addr}\"]\ntls = true\nconnect_timeout = \"300ms\"\nrequest_timeout = \"30s\"\n[[routes]]\nname = \"fn\"\nbackends = [{{ upstream = \"fn\" }}]\n"
        ),
    )
    .await;
    let (status, headers, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-switchyard-error"], "upstream-connect", "not a 504 after request_timeout");
    held.abort();
}

#[tokio::test]
async fn h2_upstreams_get_the_host_as_authority() {
    let ca = TestCa::new("private ca");
    let leaf = ca.leaf(&["fn.test"]);
    let function = spawn_https_upstream("fn", TestCa::server_config(&leaf, None, &[b"h2"])).await;
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path(), &ca);
    let port = function.addr.port();
    let proxy = proxy_with_loopback_dns(
        dir,
        &format!(
            "[upstreams.fn]\nendpoints = [\"fn.test:{port}\"]\nprotocol = \"h2\"\ntls = {{ ca_file = \"ca.pem\" }}\nhost_header = \"endpoint\"\n[[routes]]\nname = \"fn\"\nbackends = [{{ upstream = \"fn\" }}]\n"
        ),
    )
    .await;
    assert_eq!(get(&proxy.url("/call"), &[]).await.0, StatusCode::OK);
    let seen = function.last_seen();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.uri, format!("https://fn.test:{port}/call"), ":authority is the endpoint's host, not its IP");
}
