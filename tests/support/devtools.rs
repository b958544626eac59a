//! Just enough of the Chrome DevTools protocol to drive a page in headless Chromium:
//! start the browser on a URL with a debugging port, connect to the page's WebSocket
//! (hand-framed: a test-only client, text frames only), evaluate a script that may
//! return a promise, and take a screenshot of the whole page.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless, as root in a container, and quiet on a machine without network access
/// (no background fetches, updates or sync).
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A headless Chromium showing one page; killed on drop.
pub struct Browser {
    child: Child,
    socket: TcpStream,
    _profile: tempfile::TempDir,
    next_id: u64,
}

impl Browser {
    /// Launch on `url` and connect to its page target (bounded: 30 s).
    pub fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(CHROMIUM)
            .args(HEADLESS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let port = wait_for_port(profile.path());
        let ws_path = page_target(port, url);
        let socket = handshake(port, &ws_path);
        let mut browser = Browser { child, socket, _profile: profile, next_id: 0 };
        // The target can exist before its document does: wait until the page has loaded
        // (an evaluation during the navigation fails with its context destroyed).
        let began = Instant::now();
        let probe = format!("document.readyState === 'complete' && location.href.startsWith({url:?})");
        while browser.eval(&probe) != Ok(serde_json::Value::Bool(true)) {
            assert!(began.elapsed() < Duration::from_secs(30), "{url} never finished loading");
            std::thread::sleep(Duration::from_millis(50));
        }
        browser
    }

    /// Evaluate `expression` in the page, awaiting a returned promise; the value (as
    /// JSON), or the exception's description as an `Err`.
    pub fn eval(&mut self, expression: &str) -> Result<serde_json::Value, String> {
        let params = serde_json::json!({ "expression": expression, "awaitPromise": true, "returnByValue": true });
        let result = self.call("Runtime.evaluate", params)?;
        if let Some(e) = result["exceptionDetails"].as_object() {
            return Err(e.get("exception").and_then(|x| x["description"].as_str()).unwrap_or("exception").into());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Save a PNG of the whole page, `width` CSS pixels wide, as tall as its content.
    pub fn screenshot(&mut self, path: &Path, width: u32) {
        let metrics = serde_json::json!({ "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": false });
        self.call("Emulation.setDeviceMetricsOverride", metrics).unwrap();
        let height = self.eval("document.documentElement.scrollHeight").unwrap().as_u64().unwrap_or(800);
        let clip = serde_json::json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
        let params = serde_json::json!({ "format": "png", "clip": clip, "captureBeyondViewport": true });
        let shot = self.call("Page.captureScreenshot", params).unwrap();
        std::fs::write(path, base64_decode(shot["data"].as_str().expect("screenshot data"))).unwrap();
    }

    /// One DevTools command; its result, or the protocol error.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> Result<serde_json::Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        send_text(&mut self.socket, msg.to_string().as_bytes());
        loop {
            let reply: serde_json::Value = serde_json::from_slice(&read_message(&mut self.socket)).unwrap();
            if reply["id"] != id {
                continue; // an event
            }
            if let Some(e) = reply.get("error") {
                return Err(e.to_string());
            }
            return Ok(reply["result"].clone());
        }
    }
}

/// Standard base64 (the protocol's binary payloads), padding ignored.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(profile: &Path) -> u16 {
    let began = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(profile.join("DevToolsActivePort")) {
            if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                return port;
            }
        }
        assert!(began.elapsed() < Duration::from_secs(30), "chromium never opened its debugging port");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The WebSocket path of the page target showing `url` (not the initial blank page).
fn page_target(port: u16, url: &str) -> String {
    let began = Instant::now();
    loop {
        let body = http_get(port, "/json/list");
        let body = body.as_str();
        let targets: Vec<serde_json::Value> = serde_json::from_str(body).unwrap_or_default();
        let page = targets
            .iter()
            .find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url)))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str());
        if let Some(url) = page {
            let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
            return after_scheme.split_once('/').map(|(_, path)| format!("/{path}")).unwrap();
        }
        assert!(began.elapsed() < Duration::from_secs(30), "no page target: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A GET answered with a Content-Length body (Chromium keeps the connection open).
fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

fn handshake(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Longer than any test script's own bounded waits: an evaluation answers when its
    // promise settles.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    s
}

/// One masked text frame (clients must mask).
fn send_text(s: &mut TcpStream, payload: &[u8]) {
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
}

/// One whole message (continuation frames joined; the server does not mask).
fn read_message(s: &mut TcpStream) -> Vec<u8> {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).unwrap();
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).unwrap();
        message.extend_from_slice(&payload);
        if head[0] & 0x80 != 0 {
            return message;
        }
    }
}
