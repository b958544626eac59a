//! Google Cloud ID tokens for upstreams behind IAM (Cloud Run, Cloud Functions, IAP):
//! `gcp_id_token` auth sends `Authorization: Bearer <ID token>` minted for the upstream's
//! audience by the GCE metadata server.
//!
//! One [`IdTokens`] per audience holds the current token in an `ArcSwapOption`; the request
//! path only loads it ([`IdTokens::current`]: no lock, no allocation, no fetch). A background
//! task ([`IdTokens::spawn_refresher`]) fetches a token at start and again well before its
//! `exp`; a failed refresh keeps the current token (and retries with backoff) until the token
//! is within [`SKEW`] of expiring, after which `current` answers `None` and the caller answers
//! 503 `upstream-auth`, logging [`IdTokens::last_error`].
//!
//! The fetch is `GET http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/
//! default/identity?audience=AUD` with `Metadata-Flavor: Google`, plain HTTP/1.1, one
//! connection per fetch, 5 s overall timeout. The body is a JWT; its payload must carry `exp`
//! (required) and an `aud` equal to the audience asked for. The signature is not verified:
//! the token comes from the local metadata server and is only forwarded, never trusted here.
//!
//! The token value is never logged and never appears in an error: logs carry the audience
//! and the expiry only, and the header value is marked sensitive.
//!
//! Clocks: expiry checks use `SystemTime` (the token's `exp` is wall-clock); every wait uses
//! tokio's clock, and the schedule is a `Duration` computed from the token's lifetime at fetch
//! time, so the refresher behaves under a paused tokio clock too.

use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::task::AbortHandle;

/// The metadata server when `GCE_METADATA_HOST` is unset.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// A token is no longer sent once it expires within this much of now (clock skew between
/// us and the upstream, plus the request's own time in flight).
pub const SKEW: Duration = Duration::from_secs(10);

/// One fetch (connect, request, whole body) must finish within this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Refresh at least this long before the token becomes unusable, when its lifetime allows.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Never schedule a refresh or a retry sooner than this (no hot loop on odd tokens).
const MIN_WAIT: Duration = Duration::from_secs(1);
/// Retry backoff: 1 s doubling up to this.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// An ID token is ~1 KB; anything far larger is not one.
const MAX_BODY: usize = 64 * 1024;

const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";

/// One audience's ID token, kept fresh by a background task.
pub struct IdTokens {
    audience: String,
    /// `host` or `host:port`, as sent in the Host header.
    metadata: String,
    /// `metadata` with the port made explicit (80 by default), for connecting.
    connect_addr: String,
    /// `/computeMetadata/...identity?audience=<percent-encoded audience>`.
    path_and_query: String,
    current: ArcSwapOption<Token>,
    last_error: ArcSwapOption<String>,
    /// The running refresher, aborted when a new one is spawned or this is dropped.
    refresher: Mutex<Option<AbortHandle>>,
    /// The metadata host as given (compared when a reload rebuilds the upstream).
    given: String,
}

/// A fetched ID token.
#[derive(Debug)]
pub struct Token {
    /// `Bearer <jwt>`, marked sensitive (its `Debug` does not show it).
    pub header: HeaderValue,
    /// The token's `exp`.
    pub expires: SystemTime,
}

/// What a successful parse yields: the token and how long it stays usable (until `exp - SKEW`).
struct Parsed {
    token: Token,
    usable_for: Duration,
    exp_unix: u64,
}

impl std::fmt::Debug for IdTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokens")
            .field("audience", &self.audience)
            .field("metadata", &self.metadata)
            .field("has_token", &self.current.load().is_some())
            .field("last_error", &self.last_error.load().as_deref())
            .finish_non_exhaustive()
    }
}

impl IdTokens {
    /// `metadata_host` is GCE_METADATA_HOST's value or "metadata.google.internal" (the caller
    /// reads the env at config load); host or host:port, plain HTTP (port 80 default). An
    /// `http://` prefix or a trailing `/` is tolerated; an empty value means the default.
    pub fn new(audience: &str, metadata_host: &str) -> Arc<IdTokens> {
        let given = metadata_host.to_owned();
        let mut host = metadata_host.trim();
        host = host.strip_prefix("http://").unwrap_or(host);
        host = host.trim_end_matches('/');
        if host.is_empty() {
            host = DEFAULT_METADATA_HOST;
        }
        let (metadata, connect_addr) = host_and_addr(host);
        Arc::new(IdTokens {
            audience: audience.to_owned(),
            metadata,
            connect_addr,
            path_and_query: format!("{IDENTITY_PATH}?audience={}", percent_encode(audience)),
            current: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            refresher: Mutex::new(None),
            given,
        })
    }

    /// The audience tokens are minted for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The metadata host as given to [`IdTokens::new`].
    pub fn metadata_host(&self) -> &str {
        &self.given
    }

    /// The Authorization value to send now: a token that does not expire within [`SKEW`] of
    /// `now`; `None` when there is none (the caller answers 503 `upstream-auth` and logs
    /// [`IdTokens::last_error`]). Lock- and allocation-free: an `ArcSwap` load and a
    /// `HeaderValue` clone (a refcount bump).
    pub fn current(&self, now: SystemTime) -> Option<HeaderValue> {
        let guard = self.current.load();
        let token = (*guard).as_ref()?;
        let deadline = now.checked_add(SKEW)?;
        (token.expires > deadline).then(|| token.header.clone())
    }

    /// Why there is no valid token: the last fetch's error, cleared by a successful fetch.
    /// `None` before any fetch has failed (e.g. before the first fetch finished).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.load_full().map(|e| (*e).clone())
    }

    /// Fetch once now (used at start and by the refresher). Err describes the failure
    /// (connect error, status, malformed token, wrong audience, missing exp); it is also kept
    /// for [`IdTokens::last_error`]. A failure leaves the current token in place.
    pub async fn fetch(&self) -> Result<(), String> {
        self.fetch_token().await.map(|_| ())
    }

    /// The refresher: fetch now; then sleep until [`refresh_after`] the token's usable
    /// lifetime and fetch again; on failure keep the current token and retry after
    /// [`retry_after`] (1 s doubling to 30 s, never past the token's usable end). Holds only
    /// a `Weak`, and dropping the `IdTokens` aborts it; spawning again aborts the previous
    /// one. Must be called inside a tokio runtime. All waits are on tokio's clock.
    pub fn spawn_refresher(self: &Arc<Self>) -> AbortHandle {
        let handle = tokio::spawn(refresh_loop(Arc::downgrade(self))).abort_handle();
        let mut slot = self.refresher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.replace(handle.clone()) {
            old.abort();
        }
        handle
    }

    /// [`IdTokens::spawn_refresher`] unless a refresher is already running (what the
    /// upstream registry calls for every live upstream after each snapshot).
    pub fn ensure_refreshing(self: &Arc<Self>) {
        let running = {
            let slot = self.refresher.lock().unwrap_or_else(|e| e.into_inner());
            slot.as_ref().is_some_and(|h| !h.is_finished())
        };
        if !running {
            self.spawn_refresher();
        }
    }

    /// Whether a token has been fetched and is still usable now.
    pub fn is_warm(&self) -> bool {
        self.current(SystemTime::now()).is_some()
    }

    /// One fetch; on success stores the token and returns how long it stays usable.
    async fn fetch_token(&self) -> Result<Duration, String> {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.request()).await {
            Ok(body) => body,
            Err(_) => Err(format!("no complete answer within {} s", FETCH_TIMEOUT.as_secs())),
        }
        .and_then(|body| parse_token(&body, &self.audience, SystemTime::now()));
        match result {
            Ok(parsed) => {
                tracing::debug!(
                    audience = %self.audience,
                    exp = parsed.exp_unix,
                    usable_for_s = parsed.usable_for.as_secs(),
                    "GCP ID token fetched"
                );
                self.current.store(Some(Arc::new(parsed.token)));
                self.last_error.store(None);
                Ok(parsed.usable_for)
            }
            Err(cause) => {
                let msg = format!("fetching GCP ID token from metadata server {}: {cause}", self.metadata);
                self.last_error.store(Some(Arc::new(msg.clone())));
                Err(msg)
            }
        }
    }

    /// GET the identity endpoint over one HTTP/1.1 connection; the body of a 200.
    async fn request(&self) -> Result<Bytes, String> {
        let stream = tokio::net::TcpStream::connect(self.connect_addr.as_str())
            .await
            .map_err(|e| format!("connect to {}: {e}", self.connect_addr))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let req = Request::get(self.path_and_query.as_str())
            .header(http::header::HOST, self.metadata.as_str())
            .header("metadata-flavor", "Google")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let work = async move {
            let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(format!("status {status}{}", error_snippet(&body)));
            }
            Ok(body)
        };
        // Drive the connection in this future (no spawned task outliving a timeout).
        let mut conn = pin!(conn);
        let mut work = pin!(work);
        tokio::select! {
            done = &mut work => done,
            closed = &mut conn => {
                // The connection ended; the response is either complete or fails now.
                let done = work.await;
                match closed {
                    Ok(()) => done,
                    Err(e) => done.map_err(|w| format!("{w} ({e})")),
                }
            }
        }
    }
}

impl Drop for IdTokens {
    fn drop(&mut self) {
        let slot = self.refresher.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = slot.take() {
            handle.abort();
        }
    }
}

async fn refresh_loop(tokens: Weak<IdTokens>) {
    let mut failures: u32 = 0;
    // When the last fetched token stops being usable, on tokio's clock.
    let mut usable_until: Option<tokio::time::Instant> = None;
    loop {
        let Some(this) = tokens.upgrade() else { return };
        let wait = match this.fetch_token().await {
            Ok(usable_for) => {
                failures = 0;
                usable_until = Some(tokio::time::Instant::now() + usable_for);
                refresh_after(usable_for)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let left =
                    usable_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(tokio::time::Instant::now()));
                let wait = retry_after(failures, left);
                tracing::warn!(
                    audience = %this.audience,
                    %error,
                    attempt = failures,
                    token_usable_for_s = left.as_secs(),
                    retry_in_ms = wait.as_millis() as u64,
                    "GCP ID token refresh failed; keeping the current token while it lasts"
                );
                wait
            }
        };
        drop(this);
        tokio::time::sleep(wait).await;
    }
}

/// When to refresh a token that stays usable for `lifetime` (until `exp - SKEW`): at 3/4 of
/// it, but at least 5 minutes before its end when that still leaves the token at least half
/// its lifetime (lifetime >= 10 min), else at half of it; never sooner than 1 s. Continuous
/// and monotonic in `lifetime`. A 1 h token refreshes after 45 min (15 min left for
/// retries), a 15 min one after 10 min, a 10 min one after 5 min, a 2 min one after 1 min.
pub fn refresh_after(lifetime: Duration) -> Duration {
    let three_quarters = lifetime - lifetime / 4;
    let margin_or_half = lifetime.saturating_sub(REFRESH_MARGIN).max(lifetime / 2);
    three_quarters.min(margin_or_half).max(MIN_WAIT)
}

/// How long to wait after the `attempt`-th failed fetch in a row (1-based; 0 counts as 1):
/// 1 s doubling to 30 s, but never past the end of the current token (`until_exp`, the time
/// until it stops being usable) while there is one. With no usable token (`until_exp` zero)
/// the plain backoff applies.
pub fn retry_after(attempt: u32, until_exp: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1).min(5);
    let backoff = (MIN_WAIT * (1u32 << doublings)).min(MAX_RETRY);
    if until_exp.is_zero() {
        backoff
    } else {
        backoff.min(until_exp)
    }
}

/// Parse the metadata server's answer: a JWT whose payload has `exp` and the right `aud`.
/// Errors never quote the token.
fn parse_token(body: &[u8], audience: &str, now: SystemTime) -> Result<Parsed, String> {
    let jwt = std::str::from_utf8(body).map_err(|_| "malformed token: not UTF-8".to_owned())?.trim();
    if jwt.is_empty() {
        return Err("empty response body".to_owned());
    }
    let mut parts = jwt.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed token: not a JWT (header.payload.signature)".to_owned());
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err("malformed token: empty JWT segment".to_owned());
    }
    let payload = base64url_decode(payload).ok_or_else(|| "malformed token: payload is not base64url".to_owned())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|_| "malformed token: payload is not JSON".to_owned())?;
    let claims = claims.as_object().ok_or_else(|| "malformed token: payload is not a JSON object".to_owned())?;

    let exp = match claims.get("exp") {
        None | Some(serde_json::Value::Null) => return Err("token has no exp".to_owned()),
        Some(v) => unix_seconds(v).ok_or_else(|| format!("token's exp is not a time: {v}"))?,
    };
    match claims.get("aud") {
        Some(serde_json::Value::String(aud)) if aud == audience => {}
        Some(serde_json::Value::Array(auds)) if auds.iter().any(|a| a.as_str() == Some(audience)) => {}
        Some(other) => return Err(format!("token is for audience {other}, not {audience:?}")),
        None => return Err("token has no aud".to_owned()),
    }
    let iat = claims.get("iat").and_then(unix_seconds);

    let expires = UNIX_EPOCH
        .checked_add(Duration::from_secs(exp))
        .ok_or_else(|| format!("token's exp is out of range: {exp}"))?;
    let mut lifetime = expires.duration_since(now).unwrap_or(Duration::ZERO);
    if let Some(iat) = iat.filter(|&iat| iat < exp) {
        // A local clock running behind would overstate the remaining lifetime; the issuer's
        // own lifetime bounds it.
        lifetime = lifetime.min(Duration::from_secs(exp - iat));
    }
    let usable_for = lifetime.saturating_sub(SKEW);
    if usable_for.is_zero() {
        return Err(format!("token already expired or expires within {} s (exp {exp})", SKEW.as_secs()));
    }

    let mut header = HeaderValue::try_from(format!("Bearer {jwt}"))
        .map_err(|_| "malformed token: not a valid header value".to_owned())?;
    header.set_sensitive(true);
    // A `Bytes` built from a `Vec` may allocate its shared refcount on the first clone; take
    // that one here so every clone on the request path is a refcount bump.
    let _promoted = header.clone();
    Ok(Parsed { token: Token { header, expires }, usable_for, exp_unix: exp })
}

/// A JWT NumericDate: non-negative seconds, integral or not (fractions dropped).
fn unix_seconds(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f as u64))
}

/// A short, printable excerpt of an error body (the metadata server explains 4xx in text).
fn error_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(200).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// `(Host header value, connect address)`: the port defaults to 80; a bare IPv6 literal gets
/// brackets.
fn host_and_addr(host: &str) -> (String, String) {
    let has_port = match host.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => host.matches(':').count() == 1,
    };
    if has_port {
        (host.to_owned(), host.to_owned())
    } else if !host.starts_with('[') && host.contains(':') {
        (format!("[{host}]"), format!("[{host}]:80"))
    } else {
        (host.to_owned(), format!("{host}:80"))
    }
}

/// Percent-encode a query value: RFC 3986 unreserved characters as is, every other byte
/// as `%XX`.
fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    out
}

/// Decode base64url (RFC 4648 §5), padding optional. `None` on a character outside the
/// alphabet or an impossible length.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &c in s.as_bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64url(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn jwt(claims: &str) -> String {
        format!("{}.{}.c2ln", b64url(br#"{"alg":"RS256"}"#), b64url(claims.as_bytes()))
    }

    #[test]
    fn base64url_round_trips_every_length_and_byte() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            let enc = b64url(&data[..len]);
            assert_eq!(base64url_decode(&enc).as_deref(), Some(&data[..len]));
            let padded = format!("{enc}{}", "=".repeat((4 - enc.len() % 4) % 4));
            assert_eq!(base64url_decode(&padded).as_deref(), Some(&data[..len]));
        }
        assert_eq!(base64url_decode("aGk"), Some(b"hi".to_vec()));
        assert_eq!(base64url_decode("a+b/"), None, "standard alphabet is not base64url");
        assert_eq!(base64url_decode("abcde"), None, "length 4n+1 is impossible");
        assert_eq!(base64url_decode("ab.c"), None);
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(percent_encode("https://svc-x.a.run.app/p?q=1&r"), "https%3A%2F%2Fsvc-x.a.run.app%2Fp%3Fq%3D1%26r");
        assert_eq!(percent_encode("a b+é"), "a%20b%2B%C3%A9");
    }

    #[test]
    fn host_and_port() {
        let a = |h: &str| host_and_addr(h);
        assert_eq!(
            a("metadata.google.internal"),
            ("metadata.google.internal".into(), "metadata.google.internal:80".into())
        );
        assert_eq!(a("127.0.0.1:8080"), ("127.0.0.1:8080".into(), "127.0.0.1:8080".into()));
        assert_eq!(a("[::1]:81"), ("[::1]:81".into(), "[::1]:81".into()));
        assert_eq!(a("[::1]"), ("[::1]".into(), "[::1]:80".into()));
        assert_eq!(a("::1"), ("[::1]".into(), "[::1]:80".into()));
        let t = IdTokens::new("aud", " http://169.254.169.254/ ");
        assert_eq!(t.metadata, "169.254.169.254");
        assert_eq!(t.connect_addr, "169.254.169.254:80");
        assert_eq!(IdTokens::new("aud", "").metadata, DEFAULT_METADATA_HOST);
    }

    #[test]
    fn parse_accepts_a_good_token_and_bounds_lifetime() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = jwt(r#"{"aud":"https://a","exp":1003600,"iat":1000000}"#);
        let p = parse_token(format!("{token}\n").as_bytes(), "https://a", now).unwrap();
        assert_eq!(p.token.header, format!("Bearer {token}").as_str());
        assert!(p.token.header.is_sensitive());
        assert_eq!(p.token.expires, UNIX_EPOCH + Duration::from_secs(1_003_600));
        assert_eq!(p.usable_for, Duration::from_secs(3600) - SKEW);
        // Local clock behind the issuer: the issuer's lifetime (exp - iat) bounds it.
        let behind = now - Duration::from_secs(600);
        let p = parse_token(token.as_bytes(), "https://a", behind).unwrap();
        assert_eq!(p.usable_for, Duration::from_secs(3600) - SKEW);
        // aud as an array, exp as a float, no iat.
        let token = jwt(r#"{"aud":["x","https://a"],"exp":1000100.5}"#);
        let p = parse_token(token.as_bytes(), "https://a", now).unwrap();
        assert_eq!(p.usable_for, Duration::from_secs(90));
        let dbg = format!("{:?}", p.token);
        assert!(!dbg.contains(&token), "Debug must not show the token: {dbg}");
    }

    #[test]
    fn parse_refuses_bad_tokens_without_quoting_them() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cases = [
            (jwt(r#"{"aud":"https://b","exp":1003600}"#), "audience"),
            (jwt(r#"{"aud":"https://a"}"#), "no exp"),
            (jwt(r#"{"aud":"https://a","exp":"soon"}"#), "exp"),
            (jwt(r#"{"exp":1003600}"#), "no aud"),
            (jwt(r#"{"aud":"https://a","exp":1000005}"#), "expire"),
            (jwt(r#"{"aud":"https://a","exp":999999}"#), "expire"),
            (jwt(r#"["aud"]"#), "JSON object"),
            (jwt("not json"), "not JSON"),
            ("a.b!.c".to_owned(), "base64url"),
            ("onlyone".to_owned(), "not a JWT"),
            ("a.b.c.d".to_owned(), "not a JWT"),
            ("a..c".to_owned(), "empty"),
            ("  ".to_owned(), "empty response"),
        ];
        for (body, want) in cases {
            let err =
                parse_token(body.as_bytes(), "https://a", now).err().unwrap_or_else(|| panic!("{body:?} accepted"));
            assert!(err.contains(want), "{body:?}: {err:?} lacks {want:?}");
            if body.len() > 10 {
                assert!(!err.contains(&body), "error quotes the token: {err}");
            }
        }
        let bad_bytes = [b'a', b'.', 0xff, b'.', b'c'];
        assert!(parse_token(&bad_bytes, "https://a", now).is_err());
    }
}
