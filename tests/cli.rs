//! The binary itself: exit codes, `check` output, graceful shutdown on SIGTERM, and
//! what it logs by default.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

#[test]
fn version_and_usage_errors() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("switchyard "));
    let out = Command::new(BIN).arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["run", "--bogus-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_example_config_is_valid() {
    let out = Command::new(BIN).args(["check", "-c", "config/switchyard.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_prints_every_error_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"0.0.0.0:8080\"]\ndrain_timeout = \"soon\"\n\n[upstreams.v1]\nendpoints = [\"127.0.0.1:9001\"]\ncolour = \"blue\"\n\n[[routes]]\nname = \"shop\"\nbackends = [{ upstream = \"v1\", weight = 90 }, { upstream = \"v2\", weight = 10 }]\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    for want in [
        format!("{p}:3:17: server.drain_timeout: invalid duration"),
        format!("{p}:7:1: upstreams.v1.colour: unknown key `colour`"),
        format!("{p}:11:60: routes[0].backends[1].upstream: unknown upstream \"v2\""),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert_eq!(stderr.lines().count(), 3, "{stderr}");

    // `run` refuses the same file with exit 1.
    let out = Command::new(BIN).args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A missing file is an error too, not a panic.
    let out = Command::new(BIN).args(["check", "-c", "/nonexistent/switchyard.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A child process that is killed and reaped if the test fails before it exits.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Start the binary; returns it and the proxy address it logged.
fn start(config: &std::path::Path) -> (Proc, SocketAddr, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run", "-c"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let child = Proc(child);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "proxy listening" {
            return (child, v["fields"]["addr"].as_str().unwrap().parse().unwrap(), rx);
        }
    }
    panic!("the proxy did not report its address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let up = spawn_upstream("u").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        with_listeners(&format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n",
            up.addr
        )),
    )
    .unwrap();
    let (mut proc, addr, _logs) = start(&path);
    let child = &mut proc.0;

    let slow = tokio::spawn(async move { get(&format!("http://{addr}/?delay_ms=5000"), &[]).await });
    // Wait until the upstream has the request, then ask the proxy to stop.
    eventually("the upstream has the slow request", Duration::from_secs(5), || async { up.hits() > 0 }).await;
    assert_eq!(up.hits(), 1);
    let kill = Command::new("sh").args(["-c", &format!("kill -TERM {}", child.id())]).status().unwrap();
    assert!(kill.success());

    // New connections are refused while the slow request is still being served.
    eventually("the listener refuses new connections after SIGTERM", Duration::from_secs(4), || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;

    let (status, h, _) = slow.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completes");
    assert_eq!(h["x-upstream"], "u");

    let mut code = None;
    eventually("the proxy exits after draining", Duration::from_secs(10), || {
        let exited = child.try_wait().unwrap();
        code = exited.and_then(|s| s.code());
        async move { exited.is_some() }
    })
    .await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_a_sticky_canary_without_a_config() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut proxy = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if let Some(rest) = line.trim().strip_prefix("proxy    http://") {
                proxy = rest.split('/').next().map(str::to_string);
            }
        }
    }
    let proxy = proxy.expect("the demo printed its address");
    let url = format!("http://{proxy}/");
    let (status, h, body) = get(&url, &[]).await;
    assert_eq!(status, 200);
    assert!(h["set-cookie"].to_str().unwrap().starts_with("sy_demo="));
    let cookie = h["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    for _ in 0..10 {
        let (_, _, again) = get(&url, &[("cookie", &cookie)]).await;
        assert_eq!(again, body, "sticky");
    }
    let (_, _, tester) = get(&url, &[("x-canary", "always")]).await;
    assert_eq!(tester, "green\n");

    // The banner's ctl commands work as printed, from here (the binary is not on PATH).
    let mut promote = None;
    while promote.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains(" ctl --admin ") && line.contains("promote demo green") {
                promote = line.split('#').next().map(|c| c.trim().to_string());
            }
        }
    }
    let promote = promote.expect("the banner shows how to promote");
    assert!(promote.starts_with(BIN) || promote.starts_with(&format!("'{BIN}")), "{promote}");
    let out = Command::new("sh").args(["-c", &promote]).env_remove("SWITCHYARD_ADMIN_TOKEN").output().unwrap();
    assert!(out.status.success(), "{promote}: {}", String::from_utf8_lossy(&out.stderr));
    let (_, _, everyone) = get(&url, &[("cookie", &cookie)]).await;
    assert_eq!(everyone, "green\n", "promoted by the printed command");
    let _ = proc.0.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_one_json_line_per_request_on_stdout() {
    let up = spawn_upstream("u").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\naccess_log = true\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nversion = \"v9\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\npath_prefix = \"/app\"\nbackends = [{{ upstream = \"u\" }}]\n",
            up.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run", "-c"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let _proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "proxy listening" {
                let _ = tx.send(v["fields"]["addr"].as_str().unwrap().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the proxy started");
    let (log_tx, log_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let (status, h, body) =
        get(&format!("http://{addr}/app/x?q=1"), &[("host", "shop.test"), ("x-request-id", "req-42")]).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-request-id"], "req-42");
    let (status, _, _) = get(&format!("http://{addr}/nowhere"), &[]).await;
    assert_eq!(status, 404);

    // The proxied answer is logged once written, the proxy's own 404 before: on two
    // worker threads the two lines may come in either order.
    let mut two: Vec<serde_json::Value> = (0..2)
        .map(|_| {
            serde_json::from_str(&log_rx.recv_timeout(Duration::from_secs(10)).expect("an access log line")).unwrap()
        })
        .collect();
    two.sort_by_key(|v| v["status"].as_u64());
    let (v, not_found) = (&two[0], &two[1]);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["host"], "shop.test");
    assert_eq!(v["path"], "/app/x");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "r");
    assert_eq!(v["upstream"], "u");
    assert_eq!(v["version"], "v9");
    assert_eq!(v["bytes_out"], body.len() as u64);
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["request_id"], "req-42");
    assert!(v["ts"].as_str().unwrap().ends_with('Z') && v["duration_ms"].as_f64().is_some());
    assert_eq!(
        (not_found["status"].as_u64(), not_found["route"].as_str(), not_found["upstream"].as_str()),
        (Some(404), Some(""), Some(""))
    );

    // A client that hangs up before the (slow) answer is logged as 499, on the route.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /app/slow?delay_ms=500 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = log_rx.recv_timeout(Duration::from_secs(10)).expect("a line for the abandoned request");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["route"].as_str(), v["path"].as_str()),
        (Some(499), Some("r"), Some("/app/slow"))
    );
}

/// 10,000 PING ACKs nobody asked for: the h2 crate would warn about each one; by default
/// the log gets one line, the server's own, for the connection it closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_flood_is_one_log_line_not_one_per_frame() {
    use support::raw_h2::{flood, frame, ACK, PING};
    let up = spawn_upstream("u").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, with_listeners(&format!("[upstreams.u]\nendpoints = [\"{}\"]\n", up.addr))).unwrap();
    let (_proc, addr, logs) = start(&path);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = tcp.local_addr().unwrap().to_string();
    let flooded = flood(tcp, frame(PING, ACK, 0, &[7; 8]), 10_000).await;
    assert!(flooded.closed, "the connection stayed open");
    // The server's line comes when the connection has ended, after anything h2 logged
    // while it was open.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(line) = logs.recv_timeout(Duration::from_millis(100)) else { continue };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let ours = v["fields"]["peer"] == client.as_str();
        lines.push(v);
        if ours {
            break;
        }
    }
    let from_h2 = lines.iter().filter(|v| v["target"].as_str().is_some_and(|t| t.starts_with("h2"))).count();
    assert_eq!(from_h2, 0, "{lines:#?}");
    let ours: Vec<_> = lines.iter().filter(|v| v["fields"]["peer"] == client.as_str()).collect();
    assert_eq!(ours.len(), 1, "{lines:#?}");
    assert_eq!(ours[0]["level"], "WARN");
    assert_eq!(ours[0]["fields"]["frame"], "ping");
}
