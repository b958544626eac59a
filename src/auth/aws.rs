//! AWS Signature Version 4 for upstreams that stand behind IAM auth (Lambda function
//! URLs): the credentials the proxy signs with ([`AwsCredentials`], found by
//! [`load_credentials`] in the environment or the shared credentials file) and the
//! signer ([`AwsSigner`]) that adds `Authorization`, `X-Amz-Date`,
//! `X-Amz-Content-Sha256` and, with temporary credentials, `X-Amz-Security-Token` to a
//! request whose head and body are final (after every transform), so the signature
//! covers exactly what is sent.
//!
//! The signing itself is the `aws-sigv4` crate's; this module chooses its settings,
//! feeds it the request as it will go on the wire and applies the result. It depends on
//! nothing else in the crate.

use std::fmt;
use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};

// `#[path]` keeps this resolving to `aws/credentials.rs` both when this file is the
// crate's `auth::aws` and when a test includes it with `#[path]`.
#[path = "aws/credentials.rs"]
mod credentials;

pub use credentials::{load_credentials, CredentialSource};

/// Credentials as loaded. `Debug` never prints the secret or the session token.
#[derive(Clone, PartialEq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    secret: String,
    session_token: Option<String>,
}

impl AwsCredentials {
    /// An empty `session_token` counts as none.
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<String>, session_token: Option<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            session_token: session_token.filter(|t| !t.is_empty()),
        }
    }

    /// Temporary credentials: requests also carry (and sign) `X-Amz-Security-Token`.
    pub fn has_session_token(&self) -> bool {
        self.session_token.is_some()
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"** redacted **")
            .field("session_token", &self.session_token.as_ref().map(|_| "** redacted **"))
            .finish()
    }
}

/// Why a request could not be signed. No variant carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the request has no host header to sign (set it before signing)")]
    MissingHost,
    #[error("the value of header {name} is not UTF-8, so it cannot be signed")]
    HeaderNotUtf8 { name: String },
    #[error("invalid AWS SigV4 signing parameters: {0}")]
    Params(String),
    #[error("AWS SigV4 signing failed: {0}")]
    Signing(#[from] aws_sigv4::http_request::SigningError),
    #[error("AWS SigV4 signing produced an invalid {name} header")]
    InvalidOutput { name: &'static str },
}

/// The headers the signer writes; any copy already on the request (say, sent by the
/// client) is removed first: `aws-sigv4` requires their absence, and a stale
/// `x-amz-security-token` must not travel with our signature.
const SIGNER_HEADERS: [&str; 4] = ["authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"];

/// Headers left out of the signature, in addition to `aws-sigv4`'s default exclusions
/// (`authorization`, `user-agent`, `x-amzn-trace-id`, `transfer-encoding`): hop-by-hop
/// headers, which any hop may drop or rewrite, and the forwarding headers that
/// intermediaries append to (`forwarded`, `via`, `x-forwarded-for`). AWS checks only the
/// headers named in `SignedHeaders`, so an unsigned header is never a mismatch, while a
/// signed one altered on the way is. Every other header sent is signed, including
/// `content-type`, `content-length` and the proxy's `x-forwarded-proto`,
/// `x-forwarded-host` and `x-request-id`, which go out exactly as signed.
const UNSIGNED_HEADERS: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "forwarded",
    "via",
    "x-forwarded-for",
];

/// The signing settings for Lambda function URLs (and any other non-S3 service):
/// - `payload_checksum_kind = XAmzSha256`: send `X-Amz-Content-Sha256` (the hex SHA-256
///   of the body, also the canonical request's payload hash): the spec requires the
///   header, and any service accepts it (the crate's default, `NoHeader`, omits it).
/// - `percent_encoding_mode = Double` (the default): for every service but S3, AWS
///   URI-encodes the path as received once more ("each path segment must be URI-encoded
///   twice"), so `/a%20b` is signed as `/a%2520b`. S3 alone would need `Single`.
/// - `uri_path_normalization_mode = Enabled` (the default): AWS removes `.`/`..` and
///   empty segments from non-S3 paths before checking; S3 alone wants `Disabled`.
/// - `session_token_mode = Include` (the default): the token header is part of the
///   signature, the standard SigV4 form for temporary credentials.
/// - `excluded_headers`: the default list plus [`UNSIGNED_HEADERS`].
/// - `signature_location = Headers` (the default), never presigned query strings.
pub(crate) fn lambda_signing_settings() -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Double;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Enabled;
    settings.session_token_mode = SessionTokenMode::Include;
    settings.excluded_headers.get_or_insert_with(Vec::new).extend(UNSIGNED_HEADERS.map(Into::into));
    settings
}

/// Signs requests for one region and service with fixed credentials (a config reload
/// builds a new signer from freshly loaded credentials). Cheap to share: `Send + Sync`.
pub struct AwsSigner {
    identity: Identity,
    access_key_id: String,
    has_session_token: bool,
    region: String,
    service: String,
}

impl fmt::Debug for AwsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSigner")
            .field("access_key_id", &self.access_key_id)
            .field("has_session_token", &self.has_session_token)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish()
    }
}

impl AwsSigner {
    /// `service` is the signing name: `lambda` for Lambda function URLs.
    pub fn new(credentials: AwsCredentials, region: &str, service: &str) -> AwsSigner {
        let has_session_token = credentials.has_session_token();
        let AwsCredentials { access_key_id, secret, session_token } = credentials;
        let identity =
            aws_credential_types::Credentials::new(access_key_id.clone(), secret, session_token, None, "switchyard")
                .into();
        AwsSigner { identity, access_key_id, has_session_token, region: region.to_owned(), service: service.to_owned() }
    }

    /// Sign the request exactly as it will be sent. `uri` is the request's URI with the
    /// path and query percent-encoded as sent (absolute or origin-form: only its path and
    /// query are signed). `headers` holds every header that will be sent, including
    /// `host` (set it before calling: it is what gets signed, the URI's authority is not
    /// consulted). Adds, replacing any existing, `authorization`, `x-amz-date`,
    /// `x-amz-content-sha256` and, with a session token, `x-amz-security-token` (marked
    /// sensitive); an existing `x-amz-security-token` is removed when there is no token.
    /// `body` is the complete body, `now` the signing time (AWS allows 5 minutes of skew).
    /// On error the request must not be sent: those four headers may already be gone.
    pub fn sign(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut http::HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignError> {
        self.sign_with_settings(lambda_signing_settings(), method, uri, headers, body, now)
    }

    /// [`AwsSigner::sign`] with other settings (tests use the suite's own settings).
    pub(crate) fn sign_with_settings(
        &self,
        settings: SigningSettings,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut http::HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignError> {
        if !headers.contains_key(HOST) {
            return Err(SignError::MissingHost);
        }
        for name in SIGNER_HEADERS {
            headers.remove(name);
        }
        let mut signable_headers = Vec::with_capacity(headers.len());
        for (name, value) in headers.iter() {
            let value = std::str::from_utf8(value.as_bytes())
                .map_err(|_| SignError::HeaderNotUtf8 { name: name.as_str().to_owned() })?;
            signable_headers.push((name.as_str(), value));
        }
        let request = SignableRequest::new(
            method.as_str(),
            signing_target(uri),
            signable_headers.into_iter(),
            SignableBody::Bytes(body),
        )?;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(&self.service)
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| SignError::Params(e.to_string()))?
            .into();
        let (instructions, _signature) = sign(request, &params)?.into_parts();
        let (signed, _query_params) = instructions.into_parts();
        for header in signed {
            let invalid = || SignError::InvalidOutput { name: header.name() };
            let name = HeaderName::from_bytes(header.name().as_bytes()).map_err(|_| invalid())?;
            let mut value = HeaderValue::from_str(header.value()).map_err(|_| invalid())?;
            value.set_sensitive(header.sensitive() || name == AUTHORIZATION);
            headers.insert(name, value);
        }
        Ok(())
    }
}

/// The path and query to hand `aws-sigv4`, which reads the query as a form and would
/// sign a literal `+` as a space (`%20`; smithy-rs issue 4227). AWS reads a `+` in the
/// query as a plus, so it is given as `%2B`, which the crate decodes to `+` and encodes
/// back as `%2B`. What is sent is unchanged. (The crate also decodes escapes that are not
/// UTF-8, such as `%FF`, lossily; such queries are mis-signed.)
fn signing_target(uri: &http::Uri) -> String {
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    match uri.query() {
        Some(query) => format!("{path}?{}", query.replace('+', "%2B")),
        None => path.to_owned(),
    }
}
