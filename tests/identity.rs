//! Upstream identity end to end: SigV4-signed requests checked on the upstream side by
//! an independent implementation of AWS's algorithm (tests/support/sigv4.rs, not the
//! crate the proxy signs with), Google ID tokens from a fake metadata server on
//! loopback, bearer tokens from a watched file, signed health checks, and bodies too
//! large to sign.
//!
//! AWS credentials and `GCE_METADATA_HOST` are process environment: every in-process
//! test here sets the same AWS values (`aws_env`), one test alone uses the metadata
//! host, and the credentials-file case runs the real binary with its own environment.

mod support;

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::function::Function;
use support::metadata::{claims, FakeMetadata};
use support::*;

const AKID: &str = "AKIDSWITCHYARDTEST";
const SECRET: &str = "sw1tchyard/Test+Secret/Key0123456789abcd";
const SESSION: &str = "FwoGZXIvYXdzEXAMPLE//session+token==";

fn aws_env() {
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", AKID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
        std::env::set_var("AWS_SESSION_TOKEN", SESSION);
    });
}

fn function_config(f: &Function, upstream_extra: &str) -> String {
    with_listeners(&format!(
        "[upstreams.fn]\nendpoints = [\"{}\"]\nhost_header = \"endpoint\"\n{upstream_extra}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"fn\" }}]\n",
        f.addr
    ))
}

const SIGV4: &str = "auth = { aws_sigv4 = { region = \"eu-west-1\", service = \"lambda\", max_body_bytes = 1024 } }";

#[tokio::test]
async fn sigv4_signs_the_exact_request_sent_with_temporary_credentials() {
    aws_env();
    let f = Function::start().await;
    let proxy = spawn_proxy(&function_config(&f, SIGV4)).await;
    let c = client();

    // GET with a query (unsorted, with escapes); the client's own Authorization is replaced.
    let (status, _, _) =
        send(&c, "GET", &proxy.url("/orders?z=1&a=%2F%20x&a=0"), &[("authorization", "Bearer client")], "").await;
    assert_eq!(status, StatusCode::OK);
    let got = f.last();
    got.verify(AKID, SECRET).unwrap();
    assert_eq!(got.query, "z=1&a=%2F%20x&a=0", "signed over the query as sent");
    assert_eq!(got.header("x-amz-security-token"), Some(SESSION));
    assert!(got.header("authorization").unwrap().starts_with("AWS4-HMAC-SHA256 Credential=AKIDSWITCHYARDTEST/"));
    assert!(got.header("x-amz-date").is_some());

    // POST with a body: the body's hash is part of the signature.
    let (status, _, _) =
        send(&c, "POST", &proxy.url("/orders"), &[("content-type", "application/json")], "{\"qty\":3}").await;
    assert_eq!(status, StatusCode::OK);
    let got = f.last();
    assert_eq!(got.body, b"{\"qty\":3}");
    got.verify(AKID, SECRET).unwrap();
    assert_eq!(got.header("x-amz-content-sha256"), Some(support::sigv4::sha256_hex(b"{\"qty\":3}").as_str()));

    // A path with escapes (signed as sent, encoded once more for a non-S3 service).
    let (status, _, _) = send(&c, "GET", &proxy.url("/files/a%20b/%C3%A9t%C3%A9"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let got = f.last();
    assert_eq!(got.path, "/files/a%20b/%C3%A9t%C3%A9");
    got.verify(AKID, SECRET).unwrap();

    // The checker is not a rubber stamp: a wrong secret fails.
    assert!(got.verify(AKID, "not-the-secret").is_err());

    // Over HTTP/2 from the client, the same signature on the upstream side.
    let (status, _, _) = send(&h2c_client(), "PUT", &proxy.url("/h2?x=y"), &[], "h2 body").await;
    assert_eq!(status, StatusCode::OK);
    f.last().verify(AKID, SECRET).unwrap();
}

#[tokio::test]
async fn a_body_too_large_to_sign_gets_413_and_nothing_is_sent() {
    aws_env();
    let f = Function::start().await;
    let proxy = spawn_proxy(&function_config(&f, SIGV4)).await;
    let big = "x".repeat(2000);
    let (status, h, _) = send(&client(), "POST", &proxy.url("/"), &[], &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h["x-switchyard-error"], "body-too-large");
    // Streamed (chunked, no length): cut off at the limit, still 413, still nothing sent.
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        1000,
        "y".repeat(1000),
        1000,
        "y".repeat(1000)
    );
    let resp = raw(proxy.addr, chunked.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(f.all().is_empty(), "nothing reached the function");
    // Within the limit it goes through, signed.
    assert_eq!(send(&client(), "POST", &proxy.url("/"), &[], &"z".repeat(1000)).await.0, StatusCode::OK);
    f.last().verify(AKID, SECRET).unwrap();
}

#[tokio::test]
async fn health_checks_of_a_signed_upstream_are_signed_too() {
    aws_env();
    let f = Function::start().await;
    let extra = format!("{SIGV4}\nhealth = {{ path = \"/healthz\", interval = \"100ms\", healthy = 1 }}");
    let proxy = spawn_proxy(&function_config(&f, &extra)).await;
    eventually("a health check arrives", Duration::from_secs(5), || async {
        f.all().iter().any(|r| r.path == "/healthz")
    })
    .await;
    let probe = f.all().into_iter().find(|r| r.path == "/healthz").unwrap();
    probe.verify(AKID, SECRET).unwrap();
    assert_eq!(get(&proxy.url("/"), &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn credentials_come_from_a_profile_in_the_shared_credentials_file() {
    let f = Function::start().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n\n# the one used\n[canary]\naws_access_key_id = AKIDCANARYPROFILE\naws_secret_access_key = canary/secret+key\n",
    )
    .unwrap();
    // Both held at once, so the two numbers differ; freed just before the child binds them.
    let held =
        [std::net::TcpListener::bind("127.0.0.1:0").unwrap(), std::net::TcpListener::bind("127.0.0.1:0").unwrap()];
    let [proxy_port, admin_port] = held.each_ref().map(|l| l.local_addr().unwrap().port());
    drop(held);
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{proxy_port}\"]\nworkers = 1\naccess_log = true\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[upstreams.fn]\nendpoints = [\"{}\"]\n{SIGV4}\nrequest_headers = {{ set = {{ \"x-functions-key\" = {{ env = \"SWITCHYARD_TEST_LOGGED_KEY\" }} }} }}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"fn\" }}]\n",
            f.addr
        ),
    )
    .unwrap();
    let log = dir.path().join("proxy.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "-c"])
        .arg(&config)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "canary")
        .env("SWITCHYARD_TEST_LOGGED_KEY", "header-secret-in-env")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{proxy_port}/from-profile?q=1");
    let served = async {
        eventually("the proxy listens", Duration::from_secs(15), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", proxy_port)).await.is_ok()
        })
        .await;
        assert_eq!(get(&url, &[]).await.0, StatusCode::OK);
        let got = f.last();
        got.verify("AKIDCANARYPROFILE", "canary/secret+key").unwrap();
        assert_eq!(got.header("x-amz-security-token"), None, "no session token in that profile");
        assert_eq!(got.header("x-functions-key"), Some("header-secret-in-env"));
        // The credentials file is watched: new keys are used without a restart.
        std::fs::write(
            &creds,
            "[canary]\naws_access_key_id = AKIDROTATED\naws_secret_access_key = rotated/secret\naws_session_token = rotated-token\n",
        )
        .unwrap();
        eventually("the rotated credentials sign", Duration::from_secs(10), || async {
            get(&url, &[]).await;
            f.last().verify("AKIDROTATED", "rotated/secret").is_ok()
        })
        .await;
        assert_eq!(f.last().header("x-amz-security-token"), Some("rotated-token"));
    };
    let outcome = tokio::time::timeout(Duration::from_secs(40), served).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(outcome.is_ok(), "timed out");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"path\":\"/from-profile\""), "the access log ran: {logged}");
    for secret in ["canary/secret+key", "rotated/secret", "rotated-token", "header-secret-in-env"] {
        assert!(!logged.contains(secret), "{secret} in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_id_tokens_are_fetched_in_the_background_refreshed_before_expiry_and_503_without_one() {
    let metadata = FakeMetadata::start().await;
    // Tokens live 13 s; the proxy stops using one 10 s before `exp`, so each is good
    // for about 3 s and must be refreshed well before then.
    metadata.set_lifetime(13);
    std::env::set_var("GCE_METADATA_HOST", metadata.addr.to_string());
    let f = Function::start().await;
    let audience = "https://orders-abc-ew.a.run.app";
    let proxy =
        spawn_proxy(&function_config(&f, &format!("auth = {{ gcp_id_token = {{ audience = \"{audience}\" }} }}")))
            .await;
    let c = client();
    let mut tokens = std::collections::BTreeSet::new();
    let began = Instant::now();
    let mut sent = 0;
    while began.elapsed() < Duration::from_secs(5) {
        let (status, _, _) = send(&c, "GET", &proxy.url("/"), &[("authorization", "Bearer client-token")], "").await;
        assert_eq!(status, StatusCode::OK, "a token is always there while the metadata server answers");
        let auth = f.last().header("authorization").unwrap().to_string();
        let token = auth.strip_prefix("Bearer ").expect("a bearer token, not the client's");
        let claims = claims(token).expect("a JWT");
        assert_eq!(claims["aud"], audience);
        tokens.insert(claims["n"].to_string());
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(tokens.len() >= 2, "refreshed before expiry: {tokens:?}");
    assert!(metadata.fetches() <= 6, "{} fetches for {sent} requests", metadata.fetches());
    assert_eq!(metadata.refused(), 0, "every fetch said Metadata-Flavor: Google");
    assert!(metadata.audiences().iter().all(|a| a == audience));

    // The metadata server goes down: the current token serves until it expires, then 503.
    metadata.set_down(true);
    eventually("503 upstream-auth once the token expired", Duration::from_secs(8), || async {
        let (status, h, _) = get(&proxy.url("/"), &[]).await;
        status == StatusCode::SERVICE_UNAVAILABLE && h["x-switchyard-error"] == "upstream-auth"
    })
    .await;
    let before = f.all().len();
    assert_eq!(get(&proxy.url("/"), &[]).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(f.all().len(), before, "nothing sent without a token");
    proxy.metric_reaching(r#"switchyard_requests_total{route="r",upstream="",version="",status="503"}"#, 2.0).await;
    // Back up: the refresher's retries find it.
    metadata.set_down(false);
    eventually("tokens again", Duration::from_secs(10), || async {
        get(&proxy.url("/"), &[]).await.0 == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn bearer_tokens_come_from_a_watched_file() {
    let f = Function::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let extra = format!("auth = {{ bearer = {{ file = \"{}\" }} }}", token.display());
    let proxy = spawn_proxy(&function_config(&f, &extra)).await;
    let (status, _, _) = get(&proxy.url("/"), &[("authorization", "Basic Y2xpZW50")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f.last().header("authorization"), Some("Bearer first-token"));
    let (_, _, status_doc) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
    assert!(!status_doc.contains("first-token"));
    std::fs::write(&token, "second-token\n").unwrap();
    eventually("the rotated token is sent", Duration::from_secs(10), || async {
        get(&proxy.url("/"), &[]).await;
        f.last().header("authorization") == Some("Bearer second-token")
    })
    .await;
}

#[test]
fn auth_config_errors_say_what_is_missing() {
    let base = "[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n";
    let routes = "[[routes]]\nname = \"r\"\nbackends = [{ upstream = \"a\" }]\n";
    let parse = |auth: &str| {
        switchyard::config::parse(std::path::Path::new("t.toml"), &format!("{base}{auth}\n{routes}"))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = parse("auth = { aws_sigv4 = { region = \"eu-west-1\" } }");
    assert!(e.contains("t.toml:3:") && e.contains("`region` and `service` are required"), "{e}");
    let e = parse("auth = { bearer = \"literal-token\" }");
    assert!(e.contains("never written in the config"), "{e}");
    let e = parse("auth = { gcp_id_token = { audience = \"x\" }, bearer = { env = \"X\" } }");
    assert!(e.contains("choose exactly one of"), "{e}");
    aws_env();
    let e = parse("auth = { aws_sigv4 = { region = \"r\", service = \"lambda\", max_body_bytes = 0 } }");
    assert!(e.contains("max_body_bytes: from 1 to"), "{e}");
    // Mirror copies are not signed: a mirror to an upstream with auth is refused.
    let text = format!(
        "{base}[upstreams.fn]\nendpoints = [\"127.0.0.1:2\"]\nauth = {{ gcp_id_token = {{ audience = \"x\" }} }}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}]\nmirror = {{ upstream = \"fn\" }}\n"
    );
    let e = switchyard::config::parse(std::path::Path::new("t.toml"), &text).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("mirror copies are not signed"), "{e}");
}
