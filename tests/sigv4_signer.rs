//! The proxy's SigV4 signer (`src/auth/aws.rs`, AWS's aws-sigv4 crate underneath) built on
//! its own: published vectors, every signed request confirmed by the independent checker
//! in tests/support/sigv4.rs, and the credential chain (environment, then a profile of
//! the shared credentials file).

#[allow(dead_code)]
#[path = "../src/auth/aws.rs"]
mod aws;

#[allow(dead_code)]
#[path = "support/sigv4.rs"]
mod sigv4;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws::{load_credentials, AwsCredentials, AwsSigner, CredentialSource, SignError};
use http::{HeaderMap, HeaderValue, Method, Uri};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW";

/// 2015-08-30T12:36:00Z, the test suite's signing time.
fn suite_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_440_938_160)
}

fn host_only(host: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_str(host).unwrap());
    headers
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

fn signed_headers(headers: &HeaderMap) -> Vec<String> {
    sigv4::parse_authorization(header(headers, "authorization")).unwrap().signed_headers
}

/// Check the signed request with the independent checker in tests/support/sigv4.rs.
fn verify(method: &str, uri: &Uri, headers: &HeaderMap, body: &[u8], service: &str) -> Result<(), String> {
    let pairs: Vec<(String, String)> =
        headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect();
    let seen =
        sigv4::Seen { method, raw_path: uri.path(), raw_query: uri.query().unwrap_or(""), headers: &pairs, body };
    sigv4::verify(&seen, &sigv4::Key { access_key_id: AKID, secret: SECRET, region: "us-east-1", service })
}

#[test]
fn get_vanilla_matches_the_published_vector() {
    // aws-sig-v4-test-suite get-vanilla: no x-amz-content-sha256, so the suite's own
    // settings (no payload checksum header), not the Lambda ones.
    let signer = AwsSigner::new(AwsCredentials::new(AKID, SECRET, None), "us-east-1", "service");
    let mut headers = host_only("example.amazonaws.com");
    let uri: Uri = "https://example.amazonaws.com/".parse().unwrap();
    let settings = aws_sigv4::http_request::SigningSettings::default();
    signer.sign_with_settings(settings, &Method::GET, &uri, &mut headers, b"", suite_time()).unwrap();
    assert_eq!(
        header(&headers, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
    assert_eq!(header(&headers, "x-amz-date"), "20150830T123600Z");
    assert!(headers.get("x-amz-content-sha256").is_none());
    assert_eq!(headers.len(), 3);

    // get-vanilla-query-order-key-case, same settings.
    let mut headers = host_only("example.amazonaws.com");
    let uri: Uri = "https://example.amazonaws.com/?Param2=value2&Param1=value1".parse().unwrap();
    let settings = aws_sigv4::http_request::SigningSettings::default();
    signer.sign_with_settings(settings, &Method::GET, &uri, &mut headers, b"", suite_time()).unwrap();
    assert!(header(&headers, "authorization")
        .ends_with("Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"));
}

#[test]
fn sign_adds_all_four_headers_over_the_body_and_token() {
    let signer = AwsSigner::new(AwsCredentials::new(AKID, SECRET, Some(TOKEN.into())), "us-east-1", "lambda");
    let uri: Uri = "https://abc.lambda-url.us-east-1.on.aws/a%20b/c:d/./e/?q=a+b&x=%2F&flag".parse().unwrap();
    let mut headers = host_only("abc.lambda-url.us-east-1.on.aws");
    for (name, value) in [
        ("content-type", "application/json"),
        ("content-length", "17"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "192.0.2.1"),
        ("via", "1.1 switchyard"),
        ("connection", "keep-alive"),
        ("user-agent", "curl/8"),
        ("x-request-id", "  spaced   out  "),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.append("accept", HeaderValue::from_static("text/plain"));
    headers.append("accept", HeaderValue::from_static("application/json"));
    let body = br#"{"hello":"world"}"#;
    let now = SystemTime::now();
    signer.sign(&Method::POST, &uri, &mut headers, body, now).unwrap();

    let digest = sigv4::sha256_hex(body);
    assert_eq!(header(&headers, "x-amz-content-sha256"), digest);
    assert_eq!(header(&headers, "x-amz-security-token"), TOKEN);
    assert!(headers["x-amz-security-token"].is_sensitive());
    assert_eq!(header(&headers, "x-amz-date").len(), 16);
    let signed = signed_headers(&headers);
    for name in ["host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "content-type"] {
        assert!(signed.iter().any(|h| h == name), "{name} not in {signed:?}");
    }
    for name in ["connection", "user-agent", "via", "x-forwarded-for", "authorization"] {
        assert!(!signed.iter().any(|h| h == name), "{name} in {signed:?}");
    }
    let auth = sigv4::parse_authorization(header(&headers, "authorization")).unwrap();
    assert_eq!((auth.region.as_str(), auth.service.as_str()), ("us-east-1", "lambda"));
    // The path is encoded twice, the `+` in the query is a plus: the independent checker agrees.
    verify("POST", &uri, &headers, body, "lambda").unwrap();
    // And it catches a changed body or signed header.
    assert!(verify("POST", &uri, &headers, b"{}", "lambda").is_err());
    let mut tampered = headers.clone();
    tampered.insert("content-type", HeaderValue::from_static("text/plain"));
    assert!(verify("POST", &uri, &tampered, body, "lambda").is_err());
}

#[test]
fn sign_replaces_stale_signing_headers() {
    let signer = AwsSigner::new(AwsCredentials::new(AKID, SECRET, None), "us-east-1", "lambda");
    let uri: Uri = "https://example.amazonaws.com/".parse().unwrap();
    let mut headers = host_only("example.amazonaws.com");
    for name in ["authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"] {
        headers.append(name, HeaderValue::from_static("stale"));
        headers.append(name, HeaderValue::from_static("stale2"));
    }
    signer.sign(&Method::GET, &uri, &mut headers, b"", SystemTime::now()).unwrap();
    assert!(headers.get("x-amz-security-token").is_none());
    for name in ["authorization", "x-amz-date", "x-amz-content-sha256"] {
        assert_eq!(headers.get_all(name).iter().count(), 1, "{name}");
        assert_ne!(header(&headers, name), "stale");
    }
    assert_eq!(
        header(&headers, "x-amz-content-sha256"),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(signed_headers(&headers), ["host", "x-amz-content-sha256", "x-amz-date"]);
    verify("GET", &uri, &headers, b"", "lambda").unwrap();
}

#[test]
fn sign_errors() {
    let signer = AwsSigner::new(AwsCredentials::new(AKID, SECRET, None), "us-east-1", "lambda");
    let uri: Uri = "https://example.amazonaws.com/".parse().unwrap();
    let mut headers = HeaderMap::new();
    let err = signer.sign(&Method::GET, &uri, &mut headers, b"", SystemTime::now()).unwrap_err();
    assert!(matches!(err, SignError::MissingHost), "{err}");

    let mut headers = host_only("example.amazonaws.com");
    headers.insert("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
    let err = signer.sign(&Method::GET, &uri, &mut headers, b"", SystemTime::now()).unwrap_err();
    assert!(matches!(&err, SignError::HeaderNotUtf8 { name } if name == "x-latin1"), "{err}");
    assert!(err.to_string().contains("x-latin1"));

    // UTF-8 that is not ASCII is fine.
    let mut headers = host_only("example.amazonaws.com");
    headers.insert("x-name", HeaderValue::from_bytes("café".as_bytes()).unwrap());
    signer.sign(&Method::GET, &uri, &mut headers, b"", SystemTime::now()).unwrap();
}

#[test]
fn signer_is_shareable_and_debug_hides_secrets() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AwsSigner>();
    let credentials = AwsCredentials::new(AKID, SECRET, Some(TOKEN.into()));
    assert!(credentials.has_session_token());
    assert!(!AwsCredentials::new(AKID, SECRET, Some(String::new())).has_session_token());
    let signer = AwsSigner::new(credentials.clone(), "us-east-1", "lambda");
    for text in [format!("{credentials:?}"), format!("{signer:?}")] {
        assert!(text.contains(AKID), "{text}");
        assert!(!text.contains(SECRET) && !text.contains(TOKEN), "{text}");
    }
}

// ---- load_credentials ----

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| map.get(name).cloned()
}

const FILE: &str = "\u{feff}# written by hand\n\
; another comment\n\
\n\
[default]\n\
aws_access_key_id=AKIDDEFAULT\n\
\x20 aws_secret_access_key   =   default/secret+KEY=  # inline comment\n\
\n\
[ prod ]   ; trailing comment\n\
AWS_Access_Key_Id = AKIDPROD\n\
aws_secret_access_key = prod-secret ;comment\n\
aws_session_token = prod-token\n\
unrelated_setting = whatever\n\
\n\
[nosecret]\n\
aws_access_key_id = AKIDNOSECRET\n\
aws_session_token = nosecret-token\n\
\n\
[legacy]\n\
aws_access_key_id = AKIDLEGACY\n\
aws_secret_access_key = legacy-secret\n\
aws_security_token = legacy-token\n";

fn write_file(contents: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(&path, contents).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

#[test]
fn environment_wins_over_the_file() {
    let (_dir, path) = write_file(FILE);
    let env = lookup(&[
        ("AWS_ACCESS_KEY_ID", "AKIDENV"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ("AWS_SESSION_TOKEN", "env-token"),
        ("AWS_SHARED_CREDENTIALS_FILE", &path),
    ]);
    let (credentials, source) = load_credentials(&env).unwrap();
    assert_eq!(credentials, AwsCredentials::new("AKIDENV", "env-secret", Some("env-token".into())));
    assert_eq!(source, CredentialSource::Environment);

    let env = lookup(&[("AWS_ACCESS_KEY_ID", "AKIDENV"), ("AWS_SECRET_ACCESS_KEY", "env-secret")]);
    let (credentials, _) = load_credentials(&env).unwrap();
    assert!(!credentials.has_session_token());
}

#[test]
fn file_profiles_comments_and_whitespace() {
    let (_dir, path) = write_file(FILE);
    // Only half the environment: the file is used.
    let env = lookup(&[("AWS_ACCESS_KEY_ID", "AKIDENV"), ("AWS_SHARED_CREDENTIALS_FILE", &path)]);
    let (credentials, source) = load_credentials(&env).unwrap();
    assert_eq!(credentials, AwsCredentials::new("AKIDDEFAULT", "default/secret+KEY=", None));
    assert_eq!(source, CredentialSource::File { path: path.clone().into(), profile: "default".into() });

    let env = lookup(&[("AWS_PROFILE", "prod"), ("AWS_SHARED_CREDENTIALS_FILE", &path)]);
    let (credentials, source) = load_credentials(&env).unwrap();
    assert_eq!(credentials, AwsCredentials::new("AKIDPROD", "prod-secret", Some("prod-token".into())));
    assert_eq!(source, CredentialSource::File { path: path.clone().into(), profile: "prod".into() });

    let env = lookup(&[("AWS_PROFILE", "legacy"), ("AWS_SHARED_CREDENTIALS_FILE", &path)]);
    let (credentials, _) = load_credentials(&env).unwrap();
    assert_eq!(credentials, AwsCredentials::new("AKIDLEGACY", "legacy-secret", Some("legacy-token".into())));
}

#[test]
fn default_file_under_home() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".aws")).unwrap();
    std::fs::write(dir.path().join(".aws/credentials"), FILE).unwrap();
    let home = dir.path().to_str().unwrap();
    let (credentials, source) = load_credentials(&lookup(&[("HOME", home)])).unwrap();
    assert_eq!(credentials.access_key_id, "AKIDDEFAULT");
    let want = CredentialSource::File { path: dir.path().join(".aws/credentials"), profile: "default".into() };
    assert_eq!(source, want);
    // `~/` in AWS_SHARED_CREDENTIALS_FILE is the home directory.
    let env = lookup(&[("HOME", home), ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), ("AWS_PROFILE", "prod")]);
    assert_eq!(load_credentials(&env).unwrap().0.access_key_id, "AKIDPROD");
}

#[test]
fn errors_name_what_was_tried_and_no_secret() {
    let secrets = ["default/secret+KEY=", "prod-secret", "prod-token", "nosecret-token", "legacy-secret"];
    let no_secret = |text: &str| {
        for secret in secrets {
            assert!(!text.contains(secret), "{text}");
        }
    };

    let err = load_credentials(&lookup(&[])).unwrap_err();
    assert!(err.contains("AWS_ACCESS_KEY_ID") && err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(err.contains("AWS_SHARED_CREDENTIALS_FILE") && err.contains("HOME"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let err = load_credentials(&lookup(&[("HOME", dir.path().to_str().unwrap())])).unwrap_err();
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(err.contains(&dir.path().join(".aws/credentials").display().to_string()), "{err}");
    assert!(!err.contains('\n'), "{err}");

    let (_dir, path) = write_file(FILE);
    let err =
        load_credentials(&lookup(&[("AWS_PROFILE", "staging"), ("AWS_SHARED_CREDENTIALS_FILE", &path)])).unwrap_err();
    assert!(err.contains("[staging]") && err.contains("AWS_PROFILE") && err.contains(&path), "{err}");
    no_secret(&err);

    let err = load_credentials(&lookup(&[
        ("AWS_SECRET_ACCESS_KEY", "env-only-secret"),
        ("AWS_PROFILE", "nosecret"),
        ("AWS_SHARED_CREDENTIALS_FILE", &path),
    ]))
    .unwrap_err();
    assert!(err.contains("aws_secret_access_key") && err.contains("[nosecret]"), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID is not set"), "{err}");
    assert!(!err.contains("env-only-secret"), "{err}");
    no_secret(&err);

    let (_dir2, broken) = write_file("[default]\naws_access_key_id = A\nthis line is secret-ish garbage\n");
    let err = load_credentials(&lookup(&[("AWS_SHARED_CREDENTIALS_FILE", &broken)])).unwrap_err();
    assert!(err.contains("line 3") && !err.contains("garbage"), "{err}");

    for profile in ["default", "prod", "legacy"] {
        let env = lookup(&[("AWS_PROFILE", profile), ("AWS_SHARED_CREDENTIALS_FILE", &path)]);
        let (credentials, source) = load_credentials(&env).unwrap();
        no_secret(&format!("{credentials:?} {source:?}"));
    }
}
