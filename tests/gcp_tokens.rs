//! The GCP ID token cache (`src/auth/gcp.rs`), built on its own against a fake metadata
//! server on 127.0.0.1 (a raw tokio listener answering HTTP/1.1).

#[allow(dead_code)]
#[path = "../src/auth/gcp.rs"]
mod gcp;
#[allow(dead_code)]
#[path = "support/metadata.rs"]
mod metadata;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gcp::{refresh_after, retry_after, IdTokens, SKEW};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const IDENTITY: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";

// ---------------------------------------------------------------- fake metadata server

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    raw_query: String,
    audience: Option<String>,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// `(hit number starting at 1, the request) -> (status, body)`.
type Answer = Arc<dyn Fn(usize, &Seen) -> (u16, String) + Send + Sync>;

struct Fake {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(answer: Answer) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (h, s, answer) = (h.clone(), s.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        assert!(buf.len() < 64 * 1024, "request head too large");
                    }
                    let req = parse_head(&buf);
                    let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                    s.lock().unwrap().push(req.clone());
                    let (status, body) = answer(n, &req);
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Fake { addr, hits, seen, task }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last_seen(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("no request")
    }

    /// Stop accepting and close the listening socket: connections are then refused.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn parse_head(buf: &[u8]) -> Seen {
    let head = std::str::from_utf8(buf).unwrap();
    let head = &head[..head.find("\r\n\r\n").unwrap()];
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap().split(' ');
    let method = first.next().unwrap().to_owned();
    let target = first.next().unwrap();
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let audience = raw_query.split('&').find_map(|kv| kv.strip_prefix("audience=")).map(percent_decode);
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Seen { method, path: path.to_owned(), raw_query: raw_query.to_owned(), audience, headers }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

// ---------------------------------------------------------------- tokens

use metadata::base64url as b64url;

fn jwt(claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes()),
        b64url(b"not-a-real-signature")
    )
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A server minting tokens for whatever audience is asked, valid for `lifetime_s` seconds
/// (iat = now, exp = now + lifetime_s), each one distinct (`n` claim). Records each exp.
fn minting(lifetime_s: u64, exps: Arc<Mutex<Vec<u64>>>) -> Answer {
    Arc::new(move |n, req: &Seen| {
        let now = unix_now();
        let exp = now + lifetime_s;
        exps.lock().unwrap().push(exp);
        let aud = req.audience.clone().unwrap_or_default();
        (200, jwt(&serde_json::json!({"aud": aud, "exp": exp, "iat": now, "n": n})))
    })
}

// ---------------------------------------------------------------- (1) fetch

#[tokio::test]
async fn fetch_sends_metadata_flavor_and_audience_and_serves_bearer() {
    let audience = "https://svc-abc-uc.a.run.app/x y?z=1&é~";
    let exps = Arc::new(Mutex::new(Vec::new()));
    let server = Fake::start(minting(3600, exps.clone())).await;
    let tokens = IdTokens::new(audience, &server.host());

    assert_eq!(tokens.current(SystemTime::now()), None, "no token before a fetch");
    assert_eq!(tokens.last_error(), None);
    tokens.fetch().await.expect("fetch");
    assert_eq!(server.hits(), 1);

    let seen = server.last_seen();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, IDENTITY);
    assert_eq!(seen.raw_query, "audience=https%3A%2F%2Fsvc-abc-uc.a.run.app%2Fx%20y%3Fz%3D1%26%C3%A9~");
    assert_eq!(seen.audience.as_deref(), Some(audience));
    assert_eq!(seen.header("metadata-flavor"), Some("Google"));
    assert_eq!(seen.header("host"), Some(server.host().as_str()));

    let value = tokens.current(SystemTime::now()).expect("a token");
    assert!(value.is_sensitive());
    let text = value.to_str().unwrap();
    let token = text.strip_prefix("Bearer ").expect("Bearer prefix");
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(tokens.last_error(), None);
    let dbg = format!("{tokens:?} {value:?}");
    assert!(!dbg.contains(token), "Debug shows the token: {dbg}");

    // The request path never fetches: many reads, no further hits.
    let now = SystemTime::now();
    for _ in 0..200_000 {
        assert!(tokens.current(now).is_some());
    }
    assert_eq!(server.hits(), 1, "current() must not fetch");
    server.stop().await;
}

// ---------------------------------------------------------------- (2) refusals

#[tokio::test]
async fn bad_answers_are_refused_and_leave_no_token() {
    let exp = unix_now() + 3600;
    let cases: Vec<(u16, String, &str)> = vec![
        (200, jwt(&serde_json::json!({"aud": "https://other", "exp": exp})), "audience"),
        (200, jwt(&serde_json::json!({"aud": "https://mine"})), "no exp"),
        (200, jwt(&serde_json::json!({"aud": "https://mine", "exp": unix_now() - 5})), "expire"),
        (200, "not a jwt".to_owned(), "malformed"),
        (404, "non-empty audience parameter required".to_owned(), "404"),
        (503, String::new(), "503"),
    ];
    for (status, body, want) in cases {
        let answer_body = body.clone();
        let server = Fake::start(Arc::new(move |_, _| (status, answer_body.clone()))).await;
        let tokens = IdTokens::new("https://mine", &server.host());
        let err = tokens.fetch().await.expect_err(&body);
        assert!(err.contains(want), "{status} {body:?}: {err:?} lacks {want:?}");
        assert!(status != 200 || body.len() < 30 || !err.contains(&body), "error quotes the token: {err}");
        assert_eq!(tokens.current(SystemTime::now()), None);
        assert_eq!(tokens.last_error().as_deref(), Some(err.as_str()));
        assert_eq!(server.hits(), 1);
        server.stop().await;
    }
}

#[tokio::test]
async fn a_slow_server_times_out_after_5s() {
    // A listener that accepts and never answers (real time: sockets and a paused clock
    // do not mix).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            socks.push(s);
        }
    });
    let tokens = IdTokens::new("https://mine", &host);
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(8), tokens.fetch())
        .await
        .expect("fetch must give up by itself")
        .expect_err("no answer");
    assert!(err.contains("within 5 s"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(4900));
    assert_eq!(tokens.current(SystemTime::now()), None);
    hold.abort();
}

// ---------------------------------------------------------------- (3) schedule

#[test]
fn refresh_after_examples() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let cases = [
        (s(86_400), s(64_800)), // 3/4
        (s(3600), s(2700)),     // 1 h token: after 45 min (15 min left)
        (s(1200), s(900)),      // 3/4 and "5 min before" agree
        (s(900), s(600)),       // 5 min before the end, not 3/4
        (s(600), s(300)),       // 5 min before the end = half
        (s(400), s(200)),       // too short for a 5 min margin: half
        (s(301), ms(150_500)),
        (s(120), s(60)),
        (s(3), ms(1500)),
        (s(2), s(1)),
        (ms(1999), s(1)), // floor
        (s(1), s(1)),
        (Duration::ZERO, s(1)),
    ];
    for (lifetime, want) in cases {
        assert_eq!(refresh_after(lifetime), want, "lifetime {lifetime:?}");
    }
}

#[test]
fn refresh_after_properties() {
    let mut lifetimes: Vec<Duration> = (0..=20_000u64).map(Duration::from_millis).collect();
    lifetimes.extend((0..=3 * 86_400u64).step_by(7).map(Duration::from_secs));
    lifetimes.push(Duration::MAX);
    lifetimes.sort();
    let mut prev = Duration::ZERO;
    for lifetime in lifetimes {
        let at = refresh_after(lifetime);
        assert!(at >= Duration::from_secs(1), "{lifetime:?}: sooner than 1 s");
        assert!(at >= prev, "{lifetime:?}: not monotonic");
        prev = at;
        if lifetime >= Duration::from_secs(2) {
            assert!(at <= lifetime - lifetime / 4, "{lifetime:?}: later than 3/4");
            assert!(at >= lifetime / 2, "{lifetime:?}: sooner than half");
        }
        if lifetime >= Duration::from_secs(600) {
            assert!(lifetime - at >= Duration::from_secs(300), "{lifetime:?}: {at:?} leaves under 5 min");
        }
    }
}

#[test]
fn retry_after_backs_off_and_never_passes_exp() {
    let s = Duration::from_secs;
    // No token to protect: 1 s doubling to 30 s.
    let plain: Vec<_> = (1..=8).map(|a| retry_after(a, Duration::ZERO)).collect();
    assert_eq!(plain, [s(1), s(2), s(4), s(8), s(16), s(30), s(30), s(30)]);
    assert_eq!(retry_after(0, Duration::ZERO), s(1));
    assert_eq!(retry_after(u32::MAX, Duration::ZERO), s(30));
    assert_eq!(retry_after(3, s(3)), s(3), "capped at the token's end");
    assert_eq!(retry_after(1, Duration::from_millis(200)), Duration::from_millis(200));
    assert_eq!(retry_after(6, s(3600)), s(30));

    let untils = [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_millis(999),
        s(1),
        s(5),
        s(29),
        s(31),
        s(3600),
        Duration::MAX,
    ];
    for until in untils {
        let mut prev = Duration::ZERO;
        for attempt in (0..=64).chain([1000, u32::MAX]) {
            let wait = retry_after(attempt, until);
            assert!(wait > Duration::ZERO, "{attempt} {until:?}: zero wait");
            assert!(wait <= s(30), "{attempt} {until:?}: {wait:?} over 30 s");
            assert!(wait >= prev, "{attempt} {until:?}: not monotonic");
            prev = wait;
            if !until.is_zero() {
                assert!(wait <= until, "{attempt} {until:?}: {wait:?} past exp");
            }
        }
    }
}

// ---------------------------------------------------------------- refresher, real time

/// Poll `cond` every 10 ms for up to `limit`.
async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

#[tokio::test]
async fn refresher_refreshes_before_exp_without_a_gap() {
    // exp = now + 13 s: usable until exp - SKEW, i.e. for 2-3 s; refreshed after 3/4 of that.
    let exps = Arc::new(Mutex::new(Vec::new()));
    let server = Fake::start(minting(SKEW.as_secs() + 3, exps.clone())).await;
    let tokens = IdTokens::new("https://svc.a.run.app", &server.host());
    let handle = tokens.spawn_refresher();

    assert!(
        wait_for(Duration::from_secs(2), || tokens.current(SystemTime::now()).is_some()).await,
        "first token: {:?}",
        tokens.last_error()
    );
    let first = tokens.current(SystemTime::now()).unwrap();
    let started = Instant::now();
    let mut values = vec![first];
    while started.elapsed() < Duration::from_millis(3200) {
        let now = SystemTime::now();
        let value =
            tokens.current(now).unwrap_or_else(|| panic!("gap at {:?}: {:?}", started.elapsed(), tokens.last_error()));
        if values.last() != Some(&value) {
            values.push(value);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.hits() >= 2, "hits {}", server.hits());
    assert!(server.hits() <= 4, "refreshing too often: {}", server.hits());
    assert!(values.len() >= 2, "the served token never changed");
    assert_eq!(tokens.last_error(), None);

    // Dropping the IdTokens ends the refresher.
    drop(tokens);
    assert!(wait_for(Duration::from_secs(1), || handle.is_finished()).await);
    let hits = server.hits();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.hits(), hits, "fetches after drop");
    server.stop().await;
}

// ---------------------------------------------------------------- (4) server down

#[tokio::test]
async fn server_down_keeps_token_until_it_expires() {
    let exps = Arc::new(Mutex::new(Vec::new()));
    let server = Fake::start(minting(600, exps.clone())).await;
    let tokens = IdTokens::new("https://svc.a.run.app", &server.host());
    tokens.fetch().await.unwrap();
    let good = tokens.current(SystemTime::now()).unwrap();
    server.stop().await;

    let err = tokens.fetch().await.expect_err("server is down");
    assert!(err.contains("connect"), "{err}");
    assert_eq!(tokens.last_error().as_deref(), Some(err.as_str()));
    assert_eq!(tokens.current(SystemTime::now()), Some(good.clone()));

    let expires = UNIX_EPOCH + Duration::from_secs(exps.lock().unwrap()[0]);
    let at = |before: u64| tokens.current(expires - Duration::from_secs(before));
    assert_eq!(at(11), Some(good), "still valid 11 s before exp");
    assert_eq!(at(10), None, "within the 10 s skew of exp");
    assert_eq!(tokens.current(expires + Duration::from_secs(1)), None);
}

#[tokio::test]
async fn refresher_with_server_down_serves_token_until_exp_then_none() {
    // Usable for 1-2 s; the server goes away right after the first fetch.
    let exps = Arc::new(Mutex::new(Vec::new()));
    let server = Fake::start(minting(SKEW.as_secs() + 2, exps.clone())).await;
    let tokens = IdTokens::new("https://svc.a.run.app", &server.host());
    let _handle = tokens.spawn_refresher();
    assert!(wait_for(Duration::from_secs(2), || tokens.current(SystemTime::now()).is_some()).await);
    server.stop().await;
    let expires = UNIX_EPOCH + Duration::from_secs(exps.lock().unwrap()[0]);

    let (mut saw_some, mut saw_none) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) && saw_none < 5 {
        let now = SystemTime::now();
        let valid = expires > now + SKEW;
        assert_eq!(tokens.current(now).is_some(), valid, "at {:?} with exp {expires:?}", started.elapsed());
        if valid {
            saw_some += 1;
        } else {
            saw_none += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_some > 0 && saw_none > 0, "{saw_some} {saw_none}");
    // The refresher tried (connection refused) and said why.
    assert!(wait_for(Duration::from_secs(2), || tokens.last_error().is_some()).await, "no error recorded");
    let err = tokens.last_error().unwrap();
    assert!(err.contains("connect"), "{err}");
}

#[tokio::test]
async fn refresher_with_no_server_reports_why() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tokens = IdTokens::new("https://svc.a.run.app", &format!("127.0.0.1:{port}"));
    let _handle = tokens.spawn_refresher();
    assert!(wait_for(Duration::from_secs(2), || tokens.last_error().is_some()).await);
    assert_eq!(tokens.current(SystemTime::now()), None);
    assert!(tokens.last_error().unwrap().contains("connect"));
}
