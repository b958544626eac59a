//! Every way a proxied request can fail, in one place: whose fault it is (the client's,
//! the version's, or nobody's yet), its status, its `x-switchyard-error` value and its
//! short plain-text body. A failure is classified once, where it is seen; everything
//! that counts it (the status sent, `switchyard_requests_total`, the upstream error
//! counter, outlier detection, a rollout's tally) reads [`ProxyError::blame`] and never
//! decides again.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use super::body::ResponseBody;
use crate::telemetry::UpstreamErrorKind;

pub const ERROR_HEADER: &str = "x-switchyard-error";

/// nginx's "client closed request": counted, never sent.
pub const CLIENT_CLOSED: u16 = 499;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("malformed request")]
    BadRequest,
    /// The client closed its side before its body ended: answered as malformed (a
    /// half-closed client can still read it), counted as a client gone (499).
    #[error("the request body ended early")]
    BodyCutShort,
    #[error("the request head is larger than max_header_bytes")]
    HeaderTooLarge,
    #[error("the request target is too long")]
    UriTooLong,
    #[error("CONNECT tunnels are not supported")]
    ConnectUnsupported,
    #[error("the upstream has no endpoint to send this request to")]
    NoHealthyEndpoint,
    #[error("the proxy is shutting down")]
    Draining,
    #[error("the upstream is at its max_in_flight")]
    OverCapacity,
    #[error("the request body is larger than max_body_bytes")]
    BodyTooLarge,
    #[error("the client did not send its request body in time")]
    ClientTimeout,
    #[error("the client went away before its response was complete")]
    ClientGone,
    #[error("the exchange with the upstream failed ({})", .0.as_str())]
    Upstream(UpstreamErrorKind),
    /// The upstream has `auth` and the proxy cannot prove its identity now (no valid ID
    /// token, or a request it cannot sign): nothing was sent.
    #[error("the proxy has no valid credentials for this upstream")]
    UpstreamAuth,
}

/// Whose fault a failed request is, which decides what it is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Refused before a version had a part in it (no route, draining, a request the
    /// proxy will not forward): counted on the route, or unrouted.
    Proxy,
    /// The client's: a bad, late, oversized or abandoned request. Counted on the route
    /// with `upstream=""`; never in a version's errors, outlier detection or a rollout.
    Client,
    /// The version could not take the request (no endpoint ready, over capacity): a 5xx
    /// of the version and in its rollout tally, but no endpoint is at fault.
    Version,
    /// An exchange with one of the version's endpoints failed: a 5xx of the version,
    /// `switchyard_upstream_errors_total{kind}`, and a failure for outlier detection.
    Upstream(UpstreamErrorKind),
}

impl From<crate::body::ClientFault> for ProxyError {
    fn from(fault: crate::body::ClientFault) -> Self {
        use crate::body::ClientFault;
        match fault {
            ClientFault::Malformed => ProxyError::BadRequest,
            ClientFault::CutShort => ProxyError::BodyCutShort,
            ClientFault::TooLarge => ProxyError::BodyTooLarge,
            ClientFault::Gone => ProxyError::ClientGone,
        }
    }
}

impl Blame {
    /// Counted against the version (its 5xx, its rollout error rate).
    pub fn charges_version(self) -> bool {
        matches!(self, Blame::Version | Blame::Upstream(_))
    }
}

impl ProxyError {
    pub fn blame(self) -> Blame {
        match self {
            // Not the version's doing: the proxy's own identity toward it failed.
            Self::NoRoute | Self::Draining | Self::UpstreamAuth => Blame::Proxy,
            Self::BadRequest
            | Self::BodyCutShort
            | Self::HeaderTooLarge
            | Self::UriTooLong
            | Self::ConnectUnsupported
            | Self::BodyTooLarge
            | Self::ClientTimeout
            | Self::ClientGone => Blame::Client,
            Self::NoHealthyEndpoint | Self::OverCapacity => Blame::Version,
            Self::Upstream(kind) => Blame::Upstream(kind),
        }
    }

    /// The status sent, or for [`ProxyError::ClientGone`] the one counted (499).
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest | Self::BodyCutShort => StatusCode::BAD_REQUEST,
            Self::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::ConnectUnsupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoHealthyEndpoint | Self::Draining | Self::OverCapacity | Self::UpstreamAuth => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::ClientGone => StatusCode::from_u16(CLIENT_CLOSED).expect("499 is a valid status"),
            Self::Upstream(UpstreamErrorKind::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The status `switchyard_requests_total` and the access log count: the one sent,
    /// except for a client that closed the connection (499, whatever it was sent).
    pub fn counted_status(self) -> u16 {
        match self {
            Self::BodyCutShort | Self::ClientGone => CLIENT_CLOSED,
            _ => self.status().as_u16(),
        }
    }

    /// The `x-switchyard-error` value: stable, machine-readable.
    pub fn cause(self) -> &'static str {
        match self {
            Self::NoRoute => "no-route",
            Self::BadRequest | Self::BodyCutShort => "malformed-request",
            Self::HeaderTooLarge => "header-too-large",
            Self::UriTooLong => "uri-too-long",
            Self::ConnectUnsupported => "connect-not-supported",
            Self::NoHealthyEndpoint => "no-healthy-endpoint",
            Self::Draining => "draining",
            Self::OverCapacity => "max-in-flight",
            Self::BodyTooLarge => "body-too-large",
            Self::ClientTimeout => "client-timeout",
            Self::ClientGone => "client-closed",
            Self::Upstream(UpstreamErrorKind::Connect) => "upstream-connect",
            Self::Upstream(UpstreamErrorKind::Timeout) => "upstream-timeout",
            Self::Upstream(_) => "bad-upstream-response",
            Self::UpstreamAuth => "upstream-auth",
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Self::NoRoute => "404 no route matches this request (no-route)\n",
            Self::BadRequest => "400 malformed request (malformed-request)\n",
            Self::BodyCutShort => "400 the request body ended early (malformed-request)\n",
            Self::HeaderTooLarge => "431 the request head is too large (header-too-large)\n",
            Self::UriTooLong => "414 the request target is too long (uri-too-long)\n",
            Self::ConnectUnsupported => "405 CONNECT is not supported by this proxy (connect-not-supported)\n",
            Self::NoHealthyEndpoint => "503 no healthy upstream endpoint (no-healthy-endpoint)\n",
            Self::Draining => "503 the proxy is shutting down (draining)\n",
            Self::OverCapacity => "503 the upstream has too many requests in flight (max-in-flight)\n",
            Self::BodyTooLarge => "413 the request body is too large (body-too-large)\n",
            Self::ClientTimeout => "408 the request body did not arrive in time (client-timeout)\n",
            Self::ClientGone => "499 the client closed the request (client-closed)\n",
            Self::Upstream(UpstreamErrorKind::Connect) => "502 could not connect to the upstream (upstream-connect)\n",
            Self::Upstream(UpstreamErrorKind::Timeout) => {
                "504 the upstream did not answer in time (upstream-timeout)\n"
            }
            Self::Upstream(_) => "502 bad response from the upstream (bad-upstream-response)\n",
            Self::UpstreamAuth => "503 the proxy has no valid credentials for this upstream (upstream-auth)\n",
        }
    }

    pub fn response(self) -> Response<ResponseBody> {
        let mut resp = Response::new(ResponseBody::full(Bytes::from_static(self.body().as_bytes())));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.cause()));
        if self.blame() == Blame::Client {
            // The connection is in an unknown state (where does the next message start?
            // is the client about to send tunnel bytes or the rest of a body?): close it.
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_versions_own_failures_are_charged_to_it() {
        for e in [
            ProxyError::BadRequest,
            ProxyError::BodyCutShort,
            ProxyError::HeaderTooLarge,
            ProxyError::BodyTooLarge,
            ProxyError::ClientTimeout,
            ProxyError::ClientGone,
            ProxyError::NoRoute,
        ] {
            assert!(!e.blame().charges_version(), "{e:?}");
            assert!(e.status().as_u16() < 500, "{e:?} must not look like a server error");
        }
        for kind in UpstreamErrorKind::ALL {
            let e = ProxyError::Upstream(kind);
            assert_eq!(e.blame(), Blame::Upstream(kind));
            assert!(e.status().is_server_error());
        }
        assert!(ProxyError::NoHealthyEndpoint.blame().charges_version());
    }

    #[test]
    fn every_cause_is_distinct() {
        let all = [
            ProxyError::NoRoute,
            ProxyError::BadRequest,
            ProxyError::HeaderTooLarge,
            ProxyError::UriTooLong,
            ProxyError::ConnectUnsupported,
            ProxyError::NoHealthyEndpoint,
            ProxyError::Draining,
            ProxyError::OverCapacity,
            ProxyError::BodyTooLarge,
            ProxyError::ClientTimeout,
            ProxyError::ClientGone,
            ProxyError::Upstream(UpstreamErrorKind::Connect),
            ProxyError::Upstream(UpstreamErrorKind::Timeout),
            ProxyError::Upstream(UpstreamErrorKind::Reset),
        ];
        let causes: std::collections::HashSet<_> = all.iter().map(|e| e.cause()).collect();
        assert_eq!(causes.len(), all.len());
        for e in all {
            assert!(e.body().contains(e.cause()) && e.body().starts_with(e.status().as_str()));
        }
    }
}
