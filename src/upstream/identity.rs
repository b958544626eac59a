//! An upstream's `auth`, compiled: how each request (and health check) to it proves who
//! sends it. A SigV4 signer with the credentials read at load, a Google ID token cache
//! kept warm in the background, or a bearer token. The request path calls
//! [`Identity::apply`] on the final head (and body, for signing); nothing here reads a
//! file, the environment or the network on that path.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method, Uri};

use crate::auth::aws::AwsSigner;
use crate::auth::gcp::IdTokens;
use crate::config::FileAuth;

pub enum Identity {
    /// Sign every request; bodies up to `max_body` are buffered to be hashed.
    Sign {
        signer: AwsSigner,
        max_body: u64,
    },
    Token(Arc<IdTokens>),
    Bearer(HeaderValue),
}

/// Why a request could not be given its identity (answered 503 `upstream-auth`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no valid ID token for {audience}: {why}")]
    NoToken { audience: String, why: String },
    #[error("cannot sign the request: {0}")]
    Sign(String),
}

impl Identity {
    /// `old` is the identity of the upstream this one replaces: a token cache for the
    /// same audience carries over, so a reload never leaves requests without a token.
    pub fn compile(file: &FileAuth, old: Option<&Identity>) -> Identity {
        match file {
            FileAuth::AwsSigV4 { region, service, max_body_bytes, credentials, .. } => Identity::Sign {
                signer: AwsSigner::new(credentials.clone(), region, service),
                max_body: *max_body_bytes,
            },
            FileAuth::GcpIdToken { audience, metadata_host } => match old {
                Some(Identity::Token(t)) if t.audience() == audience && t.metadata_host() == metadata_host => {
                    Identity::Token(t.clone())
                }
                _ => Identity::Token(IdTokens::new(audience, metadata_host)),
            },
            FileAuth::Bearer(v) => {
                let mut value = HeaderValue::try_from(format!("Bearer {}", v.value.to_str().unwrap_or_default()))
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
                value.set_sensitive(true);
                Identity::Bearer(value)
            }
        }
    }

    /// How much of a body must be buffered before sending (signing hashes it), if any.
    pub fn buffers_body(&self) -> Option<u64> {
        match self {
            Identity::Sign { max_body, .. } => Some(*max_body),
            _ => None,
        }
    }

    /// Give a request about to be sent its identity. `uri` is absolute, as sent;
    /// `headers` are final (`host` included); `body` is complete (only signing reads it).
    /// A client's own `Authorization` is replaced.
    pub fn apply(&self, method: &Method, uri: &Uri, headers: &mut HeaderMap, body: &[u8]) -> Result<(), AuthError> {
        match self {
            Identity::Bearer(v) => {
                headers.insert(AUTHORIZATION, v.clone());
            }
            Identity::Token(tokens) => match tokens.current(SystemTime::now()) {
                Some(v) => {
                    headers.insert(AUTHORIZATION, v);
                }
                None => {
                    let why = tokens.last_error().unwrap_or_else(|| "no token fetched yet".to_string());
                    return Err(AuthError::NoToken { audience: tokens.audience().to_string(), why });
                }
            },
            Identity::Sign { signer, .. } => {
                headers.remove(AUTHORIZATION);
                signer
                    .sign(method, uri, headers, body, SystemTime::now())
                    .map_err(|e| AuthError::Sign(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The token cache to keep warm, if this identity has one.
    pub fn tokens(&self) -> Option<&Arc<IdTokens>> {
        match self {
            Identity::Token(t) => Some(t),
            _ => None,
        }
    }
}
