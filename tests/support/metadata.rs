//! A fake GCE metadata server on loopback, minting Google-ID-token-shaped JWTs.
//!
//! `GET /computeMetadata/v1/instance/service-accounts/default/identity?audience=AUD`
//! with `Metadata-Flavor: Google` answers 200, `Content-Type: application/text` and a
//! token `base64url(header).base64url(payload).base64url(signature)` (no padding; the
//! signature is not a real one) whose payload has `aud`, `iat`, `exp` (unix seconds),
//! `sub`, `iss`, `azp` and `n`, this fetch's number (1, 2, ...), to tell tokens apart.
//! Like the real server:
//! - without `Metadata-Flavor: Google`, or with any `X-Forwarded-For`, it answers 403
//!   (counted in [`FakeMetadata::refused`], not in `fetches`);
//! - without a non-empty `audience` it answers 400 (counted as a fetch);
//! - other paths answer 404 and other methods 405 (neither counted).
//!
//! When [`FakeMetadata::set_down`] is on, every flavoured identity request is answered
//! 503 (still counted as a fetch, its audience still recorded).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";
/// The `sub` of every token.
pub const SUBJECT: &str = "113579086420135792468";
pub const EMAIL: &str = "switchyard-test@example-project.iam.gserviceaccount.com";

#[derive(Default)]
struct State {
    fetches: AtomicUsize,
    refused: AtomicUsize,
    lifetime: AtomicU64,
    down: AtomicBool,
    audiences: Mutex<Vec<String>>,
}

pub struct FakeMetadata {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl FakeMetadata {
    /// Bind 127.0.0.1:0 and serve (HTTP/1.1 and h2c) until dropped.
    pub async fn start() -> FakeMetadata {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State { lifetime: AtomicU64::new(3600), ..State::default() });
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (st, conns2) = (state.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let st = st.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let st = st.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&st, &req)) }
                });
                let handle = tokio::spawn(async move {
                    let _ =
                        auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
                let mut conns = conns2.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(handle.abort_handle());
            }
        });
        FakeMetadata { addr, state, task, conns }
    }

    /// `http://ADDR`, what the proxy should be pointed at.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Identity requests answered (200, 400 or 503), not counting refused ones.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Identity requests refused with 403 (no `Metadata-Flavor: Google`, or an
    /// `X-Forwarded-For`).
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Tokens minted from now on expire `secs` after they are issued (default 3600).
    pub fn set_lifetime(&self, secs: u64) {
        self.state.lifetime.store(secs, Ordering::SeqCst);
    }

    /// While down, identity requests are answered 503; the server stays bound.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// The audiences asked for (decoded), in order, by every counted fetch.
    pub fn audiences(&self) -> Vec<String> {
        self.state.audiences.lock().unwrap().clone()
    }
}

impl Drop for FakeMetadata {
    fn drop(&mut self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

fn answer(st: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != IDENTITY_PATH {
        return reply(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into());
    }
    let flavoured = req.headers().get_all("metadata-flavor").iter().any(|v| v.as_bytes() == b"Google");
    if !flavoured || req.headers().contains_key("x-forwarded-for") {
        st.refused.fetch_add(1, Ordering::SeqCst);
        return reply(
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header, or X-Forwarded-For present\n".into(),
        );
    }
    let n = st.fetches.fetch_add(1, Ordering::SeqCst) + 1;
    let audience = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("audience="))
        .map(form_decode)
        .unwrap_or_default();
    if audience.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "non-empty audience parameter required\n".into());
    }
    st.audiences.lock().unwrap().push(audience.clone());
    if st.down.load(Ordering::SeqCst) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "metadata server unavailable\n".into());
    }
    let iat = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let exp = iat + st.lifetime.load(Ordering::SeqCst);
    let header = serde_json::json!({ "alg": "RS256", "kid": "fake-metadata-key", "typ": "JWT" });
    let payload = serde_json::json!({
        "aud": audience,
        "azp": SUBJECT,
        "email": EMAIL,
        "exp": exp,
        "iat": iat,
        "iss": "https://accounts.google.com",
        "sub": SUBJECT,
        "n": n,
    });
    let token = format!(
        "{}.{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(payload.to_string().as_bytes()),
        base64url(format!("not-a-signature-{n}").as_bytes())
    );
    reply(StatusCode::OK, token)
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert("metadata-flavor", http::HeaderValue::from_static("Google"));
    resp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/text"));
    resp
}

/// The payload of a token (as minted here, or any unencrypted JWT), or None when it is
/// not `header.payload.signature` with a base64url JSON payload.
pub fn claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    serde_json::from_slice(&base64url_decode(payload)?).ok()
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 4648 section 5 base64url, without padding.
pub fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The inverse of [`base64url`]; None on a byte outside the alphabet, padding, or a
/// dangling sixth bit group.
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// Decode a form-encoded query value: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::with_capacity(b.len()), 0);
    while i < b.len() {
        let hex_at = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
