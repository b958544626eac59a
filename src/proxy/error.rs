//! Every response the proxy makes itself, in one place: the cause, its status, its
//! `x-switchyard-error` value and its short plain-text body.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use super::body::ResponseBody;

pub const ERROR_HEADER: &str = "x-switchyard-error";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("malformed request")]
    BadRequest,
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
    #[error("could not connect to the upstream")]
    UpstreamConnect,
    #[error("the upstream sent a bad or incomplete response")]
    BadUpstreamResponse,
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::ConnectUnsupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoHealthyEndpoint | Self::Draining | Self::OverCapacity => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamConnect | Self::BadUpstreamResponse => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `x-switchyard-error` value: stable, machine-readable.
    pub fn cause(self) -> &'static str {
        match self {
            Self::NoRoute => "no-route",
            Self::BadRequest => "malformed-request",
            Self::ConnectUnsupported => "connect-not-supported",
            Self::NoHealthyEndpoint => "no-healthy-endpoint",
            Self::Draining => "draining",
            Self::OverCapacity => "max-in-flight",
            Self::BodyTooLarge => "body-too-large",
            Self::ClientTimeout => "client-timeout",
            Self::UpstreamConnect => "upstream-connect",
            Self::BadUpstreamResponse => "bad-upstream-response",
            Self::UpstreamTimeout => "upstream-timeout",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Self::NoRoute => "404 no route matches this request (no-route)\n",
            Self::BadRequest => "400 malformed request (malformed-request)\n",
            Self::ConnectUnsupported => "405 CONNECT is not supported by this proxy (connect-not-supported)\n",
            Self::NoHealthyEndpoint => "503 no healthy upstream endpoint (no-healthy-endpoint)\n",
            Self::Draining => "503 the proxy is shutting down (draining)\n",
            Self::OverCapacity => "503 the upstream has too many requests in flight (max-in-flight)\n",
            Self::BodyTooLarge => "413 the request body is too large (body-too-large)\n",
            Self::ClientTimeout => "408 the request body did not arrive in time (client-timeout)\n",
            Self::UpstreamConnect => "502 could not connect to the upstream (upstream-connect)\n",
            Self::BadUpstreamResponse => "502 bad response from the upstream (bad-upstream-response)\n",
            Self::UpstreamTimeout => "504 the upstream did not answer in time (upstream-timeout)\n",
        }
    }

    pub fn response(self) -> Response<ResponseBody> {
        let mut resp = Response::new(ResponseBody::full(Bytes::from_static(self.body().as_bytes())));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.cause()));
        if matches!(self, Self::BadRequest | Self::ConnectUnsupported | Self::BodyTooLarge | Self::ClientTimeout) {
            // The connection is in an unknown state (where does the next message start?
            // is the client about to send tunnel bytes?): close it.
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
