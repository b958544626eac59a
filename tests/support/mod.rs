//! Test support: real upstream servers on 127.0.0.1:0 that report who served, the proxy
//! in-process on port 0, and a real HTTP client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use switchyard::app::App;
use switchyard::server::Server;

pub mod devtools;
pub mod etcd;
pub mod function;
pub mod grpc;
pub mod metadata;
pub mod pki;
pub mod raw_h2;
pub mod sigv4;
pub mod ws;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
}

/// Settings of a running [`TestUpstream`] (not applied to `/healthz`).
#[derive(Default)]
pub struct Knobs {
    /// Delay every answer by this many milliseconds.
    pub delay_ms: std::sync::atomic::AtomicU64,
    /// Answer every Nth request with 500 (0: never).
    pub fail_every: std::sync::atomic::AtomicUsize,
}

/// An in-process upstream. Every response carries `x-upstream: NAME` and
/// `x-endpoint: ADDR`, body `NAME` (or the request body echoed). `?delay_ms=N` delays
/// the response head; `?die=1` drops the connection without answering. `/healthz`
/// answers `health` (200 by default), every other path `status` (200 by default).
pub struct TestUpstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Request body bytes received, over all requests (including cut-off bodies).
    pub body_bytes: Arc<AtomicUsize>,
    /// Requests whose body arrived whole (ended without an error), empty ones included.
    pub complete_bodies: Arc<AtomicUsize>,
    pub health: Arc<std::sync::atomic::AtomicU16>,
    pub status: Arc<std::sync::atomic::AtomicU16>,
    /// Behaviour a test can change while the upstream runs.
    pub knobs: Arc<Knobs>,
    /// HTTPS upstreams: the SNI of each accepted TLS connection.
    pub sni: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TestUpstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    pub fn last_seen(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the upstream saw a request")
    }
    /// Hits on paths other than `/healthz`.
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| !s.uri.starts_with("/healthz")).count()
    }
    pub fn set_health(&self, code: u16) {
        self.health.store(code, Ordering::SeqCst);
    }
    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
    /// Stop listening and drop every open connection, as a crashed process would.
    pub fn kill(&self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// `kill`, then wait (bounded) until the listener is really gone: an aborted task
    /// drops its socket only when the runtime gets to it, and until then a connect
    /// still lands in the accept queue and hangs instead of being refused.
    pub async fn kill_and_wait(&self) {
        self.kill();
        let addr = self.addr;
        eventually("the killed upstream refusing connections", Duration::from_secs(5), || async move {
            TcpStream::connect(addr).await.is_err()
        })
        .await;
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn spawn_upstream(name: &str) -> TestUpstream {
    spawn_upstream_at(name, "127.0.0.1:0").await
}

/// An upstream on a given address (e.g. `127.0.0.2:PORT`, for DNS tests).
pub async fn spawn_upstream_at(name: &str, addr: &str) -> TestUpstream {
    spawn_upstream_with(name, addr, None).await
}

/// An upstream that speaks HTTPS with the given rustls config; the SNI each
/// connection sent is recorded in `sni`.
pub async fn spawn_https_upstream(name: &str, tls: rustls::ServerConfig) -> TestUpstream {
    spawn_upstream_with(name, "127.0.0.1:0", Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))).await
}

async fn spawn_upstream_with(name: &str, addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> TestUpstream {
    use std::sync::atomic::AtomicU16;
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let body_bytes = Arc::new(AtomicUsize::new(0));
    let complete_bodies = Arc::new(AtomicUsize::new(0));
    let health = Arc::new(AtomicU16::new(200));
    let status = Arc::new(AtomicU16::new(200));
    let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let sni: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let sni_seen = sni.clone();
    let knobs = Arc::new(Knobs::default());
    let state = (
        hits.clone(),
        seen.clone(),
        (body_bytes.clone(), complete_bodies.clone()),
        health.clone(),
        status.clone(),
        name.to_string(),
        knobs.clone(),
    );
    let (c, conns2) = (connections.clone(), conns.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let state = state.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let (h, s, (bb, whole), health, status, n, knobs) = state.clone();
                async move {
                    let nth = h.fetch_add(1, Ordering::SeqCst) + 1;
                    s.lock().unwrap().push(Seen {
                        method: req.method().to_string(),
                        uri: req.uri().to_string(),
                        version: req.version(),
                        headers: req.headers().clone(),
                    });
                    let query = req.uri().query().unwrap_or("").to_string();
                    let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(k)).map(str::to_string);
                    if let Some(ms) = param("delay_ms=").and_then(|v| v.parse::<u64>().ok()) {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    let code = if req.uri().path() == "/healthz" {
                        health.load(Ordering::SeqCst)
                    } else {
                        let delay = knobs.delay_ms.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let every = knobs.fail_every.load(Ordering::SeqCst);
                        if every > 0 && nth % every == 0 {
                            500
                        } else {
                            status.load(Ordering::SeqCst)
                        }
                    };
                    let mut body = req.into_body();
                    let mut received = Vec::new();
                    let mut complete = true;
                    while let Some(frame) = body.frame().await {
                        let Ok(frame) = frame else {
                            complete = false;
                            break;
                        };
                        if let Some(d) = frame.data_ref() {
                            bb.fetch_add(d.len(), Ordering::SeqCst);
                            received.extend_from_slice(d);
                        }
                    }
                    if complete {
                        whole.fetch_add(1, Ordering::SeqCst);
                    }
                    if param("die=").is_some() {
                        return Err("dying on request".to_string());
                    }
                    let body = if received.is_empty() { Bytes::from(n.clone()) } else { Bytes::from(received) };
                    let mut resp = Response::new(Full::new(body));
                    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
                    resp.headers_mut().insert("x-upstream", n.parse().unwrap());
                    resp.headers_mut().insert("x-endpoint", addr.to_string().parse().unwrap());
                    Ok::<_, String>(resp)
                }
            });
            let tls = tls.clone();
            let sni_seen = sni_seen.clone();
            let handle = tokio::spawn(async move {
                let server = auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = server.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else { return };
                        sni_seen.lock().unwrap().push(stream.get_ref().1.server_name().map(str::to_string));
                        let _ = server.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
            conns2.lock().unwrap().push(handle.abort_handle());
        }
    });
    TestUpstream {
        name: name.to_string(),
        addr,
        hits,
        connections,
        seen,
        body_bytes,
        complete_bodies,
        health,
        status,
        knobs,
        task,
        conns,
        sni,
    }
}

/// Wait until `cond` holds, asking every 25 ms for at most `budget`, then fail naming
/// `what`. Every wait in the tests goes through here: bounded, and saying what it
/// waited for.
pub async fn eventually<F, Fut>(what: &str, budget: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let began = std::time::Instant::now();
    while !cond().await {
        assert!(began.elapsed() < budget, "{what}: not within {budget:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A proxy running in this process from a config file in a temp dir.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// `[[server.tls]]` listeners, in config order.
    pub tls_addrs: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// `[server]` and `[admin]` on port 0, prepended to the given upstreams and routes.
pub fn with_listeners(body: &str) -> String {
    format!("[server]\nlisten = [\"127.0.0.1:0\"]\ndrain_timeout = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{body}")
}

/// A proxy config with route "shop" split between `shop-v1` (version v1, at `v1`) and
/// `shop-v2` (v2, at `v2`) by the given weights, plus `extra` route keys.
pub fn shop_canary(v1: SocketAddr, v2: SocketAddr, w1: f64, w2: f64, extra: &str) -> String {
    with_listeners(&format!(
        r#"
[upstreams.shop-v1]
version = "v1"
endpoints = ["{v1}"]
[upstreams.shop-v2]
version = "v2"
endpoints = ["{v2}"]

[[routes]]
name = "shop"
backends = [{{ upstream = "shop-v1", weight = {w1} }}, {{ upstream = "shop-v2", weight = {w2} }}]
version_header = "x-served-version"
{extra}
"#
    ))
}

pub async fn spawn_proxy(config: &str) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("switchyard.toml");
    std::fs::write(&config_path, config).unwrap();
    spawn_proxy_file(config_path, dir).await
}

impl TestProxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Ask the proxy to shut down (drain) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Stop (waiting for the drain) and hand back the config directory, so a new proxy
    /// can start from the same files: a restart.
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        self.shutdown().await;
        dir
    }

    /// Stop and wait for the drain to finish.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    pub async fn metrics(&self) -> String {
        let (status, _, body) = get(&format!("http://{}/metrics", self.admin), &[]).await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    /// Value of one sample line from `/metrics`, 0 when absent.
    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        metric_value(&self.metrics().await, name_and_labels)
    }

    /// Wait (bounded) until one sample of `/metrics` reads `want`; returns it.
    pub async fn metric_reaching(&self, name_and_labels: &str, want: f64) -> f64 {
        let what = format!("{name_and_labels} reaching {want}");
        eventually(&what, Duration::from_secs(5), || async { self.metric(name_and_labels).await == want }).await;
        want
    }

    /// Wait (bounded) until `/metrics` shows the config generation `want`.
    pub async fn wait_generation(&self, want: u64) {
        let what = format!("config generation {want}");
        eventually(&what, Duration::from_secs(5), || async { self.app.plane.runtime().generation >= want }).await;
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn metric_value(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// One request on a fresh client; returns status, headers and body text.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    send(&client(), "GET", url, headers, "").await
}

pub async fn send(
    client: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// Count responses per `x-upstream` over `n` requests with `concurrency` workers.
pub async fn tally(url: &str, n: usize, concurrency: usize) -> HashMap<String, usize> {
    let client = client();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url) = (client.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            while next.fetch_add(1, Ordering::SeqCst) < n {
                let (status, headers, _) = send(&client, "GET", &url, &[], "").await;
                assert_eq!(status, StatusCode::OK);
                let who = headers.get("x-upstream").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                *counts.entry(who).or_default() += 1;
            }
            counts
        }));
    }
    let mut total = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

/// Raw bytes over TCP, for requests a well-behaved client cannot send.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A proxy started from an existing config file (for layouts like a ConfigMap's).
pub async fn spawn_proxy_file(config_path: PathBuf, dir: tempfile::TempDir) -> TestProxy {
    spawn_proxy_resolving(config_path, dir, Arc::new(switchyard::upstream::SystemResolver)).await
}

/// A proxy whose hostname endpoints are resolved by `resolver`.
pub async fn spawn_proxy_resolving(
    config_path: PathBuf,
    dir: tempfile::TempDir,
    resolver: Arc<dyn switchyard::upstream::Resolver>,
) -> TestProxy {
    let cfg = switchyard::config::load(&config_path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let app = App::start_with(cfg, Some(config_path.clone()), resolver).await;
    let server = Server::bind(app.clone()).await.unwrap();
    let tls_addrs = server.tls_addrs();
    let addr = server.local_addrs().first().copied().unwrap_or_else(|| tls_addrs[0]);
    let admin = server.admin_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    TestProxy { addr, admin, tls_addrs, dir, config_path, app, stop: Some(stop), task: Some(task) }
}

/// Run `switchyard ctl --admin ADMIN ARGS...` off the async runtime.
pub async fn run_ctl(admin: String, args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["ctl", "--admin", &admin])
            .args(&args)
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// A shop canary with every metric family live: traffic on both versions, a mirror
/// (compare = status) with counted copies, and a rollout started and aborted.
pub async fn every_family() -> (TestUpstream, TestUpstream, TestProxy) {
    let (blue, green) = (spawn_upstream("blue").await, spawn_upstream("green").await);
    let extra = "mirror = { upstream = \"shop-v2\", percent = 100.0, compare = \"status\" }\n[routes.rollout]\ncanary = \"shop-v2\"\nbaseline = \"shop-v1\"\ninterval = \"1h\"\n";
    let proxy = spawn_proxy(&shop_canary(blue.addr, green.addr, 80.0, 20.0, extra)).await;
    for action in ["start", "abort"] {
        let url = format!("http://{}/api/v1/routes/shop/rollout/{action}", proxy.admin);
        assert_eq!(send(&client(), "POST", &url, &[], "").await.0, 200);
    }
    for _ in 0..20 {
        get(&proxy.url("/"), &[]).await;
    }
    // Mirror copies are counted when they finish, off the request path.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (blue, green, proxy)
}
