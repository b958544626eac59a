//! The fake GCE metadata server (tests/support/metadata.rs) over real HTTP: tokens,
//! audiences, the `Metadata-Flavor` check, outages and lifetimes.

#[path = "support/metadata.rs"]
mod metadata;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use metadata::FakeMetadata;

// ---------------------------------------------------------------------------------
// The fake metadata server.

const IDENTITY: &str = metadata::IDENTITY_PATH;

async fn fetch(fake: &FakeMetadata, path_and_query: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::get(format!("{}{path_and_query}", fake.base_url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req.body(Full::default()).unwrap()))
        .await
        .expect("metadata request timed out")
        .expect("metadata request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
}

const FLAVOR: &[(&str, &str)] = &[("Metadata-Flavor", "Google")];

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn metadata_mints_jwt_shaped_tokens_for_the_audience_asked() {
    let fake = FakeMetadata::start().await;
    let aud = "https://abc123.lambda-url.us-east-1.on.aws/";
    let (status, headers, token) =
        fetch(&fake, &format!("{IDENTITY}?audience=https%3A%2F%2Fabc123.lambda-url.us-east-1.on.aws%2F"), FLAVOR).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(headers["metadata-flavor"], "Google");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    for p in &parts {
        assert!(!p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
    }
    let header: serde_json::Value = serde_json::from_slice(&metadata::base64url_decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let claims = metadata::claims(&token).unwrap();
    assert_eq!(claims["aud"], aud);
    assert_eq!(claims["sub"], metadata::SUBJECT);
    assert_eq!(claims["n"], 1);
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert!(iat.abs_diff(now()) <= 5, "iat {iat}");
    assert_eq!(exp, iat + 3600);
    assert_eq!(fake.fetches(), 1);
    assert_eq!(fake.audiences(), vec![aud.to_string()]);

    // Every fetch mints a new token; the audiences are kept in order, `+` read as a space.
    let (_, _, second) = fetch(&fake, &format!("{IDENTITY}?format=full&audience=other+aud"), FLAVOR).await;
    let claims = metadata::claims(&second).unwrap();
    assert_eq!((claims["n"].as_u64(), claims["aud"].as_str()), (Some(2), Some("other aud")));
    assert_ne!(token, second);
    assert_eq!(fake.fetches(), 2);
    assert_eq!(fake.audiences(), vec![aud.to_string(), "other aud".to_string()]);
}

#[tokio::test]
async fn metadata_refuses_requests_without_the_flavor_header() {
    let fake = FakeMetadata::start().await;
    let url = format!("{IDENTITY}?audience=x");
    assert_eq!(fetch(&fake, &url, &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(fetch(&fake, &url, &[("Metadata-Flavor", "google")]).await.0, StatusCode::FORBIDDEN);
    let forwarded = [("Metadata-Flavor", "Google"), ("X-Forwarded-For", "10.0.0.1")];
    assert_eq!(fetch(&fake, &url, &forwarded).await.0, StatusCode::FORBIDDEN);
    // Over raw HTTP/1.1 as well.
    let mut s = tokio::net::TcpStream::connect(fake.addr).await.unwrap();
    let raw = format!("GET {url} HTTP/1.1\r\nHost: metadata.google.internal\r\nConnection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with(b"HTTP/1.1 403"), "{}", String::from_utf8_lossy(&out));
    assert_eq!((fake.fetches(), fake.refused()), (0, 4));
    assert!(fake.audiences().is_empty());

    // Other paths are 404, an identity request without an audience 400 (counted).
    let (status, _, _) = fetch(&fake, "/computeMetadata/v1/instance/service-accounts/default/token", FLAVOR).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(fetch(&fake, "/", FLAVOR).await.0, StatusCode::NOT_FOUND);
    assert_eq!(fetch(&fake, IDENTITY, FLAVOR).await.0, StatusCode::BAD_REQUEST);
    assert_eq!((fake.fetches(), fake.refused()), (1, 4));
    assert_eq!(fetch(&fake, &url, FLAVOR).await.0, StatusCode::OK);
    assert_eq!(fake.fetches(), 2);
}

#[tokio::test]
async fn metadata_down_answers_503_and_lifetime_sets_exp() {
    let fake = FakeMetadata::start().await;
    let url = format!("{IDENTITY}?audience=aud");
    fake.set_down(true);
    let (status, _, body) = fetch(&fake, &url, FLAVOR).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(metadata::claims(&body).is_none());
    assert_eq!(fake.fetches(), 1);
    fake.set_down(false);
    fake.set_lifetime(120);
    let (status, _, token) = fetch(&fake, &url, FLAVOR).await;
    assert_eq!(status, StatusCode::OK);
    let claims = metadata::claims(&token).unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 120);
    assert_eq!(claims["n"], 2);
    assert_eq!(fake.fetches(), 2);
    assert_eq!(fake.audiences(), vec!["aud".to_string(), "aud".to_string()]);
}

#[tokio::test]
async fn metadata_stops_serving_when_dropped() {
    let fake = FakeMetadata::start().await;
    let addr = fake.addr;
    assert_eq!(fetch(&fake, &format!("{IDENTITY}?audience=a"), FLAVOR).await.0, StatusCode::OK);
    drop(fake);
    let began = std::time::Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(began.elapsed() < Duration::from_secs(5), "still accepting on {addr} after drop");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[test]
fn base64url_matches_rfc4648() {
    for (raw, enc) in
        [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("foobar", "Zm9vYmFy")]
    {
        assert_eq!(metadata::base64url(raw.as_bytes()), enc);
        assert_eq!(metadata::base64url_decode(enc).unwrap(), raw.as_bytes());
    }
    assert_eq!(metadata::base64url(&[0xfb, 0xff]), "-_8");
    assert_eq!(metadata::base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
    assert!(metadata::base64url_decode("Zg==").is_none());
    assert!(metadata::base64url_decode("Z").is_none());
    assert!(metadata::claims("a.b").is_none());
}
