//! One upstream: its endpoints (with live in-flight counts) and its keep-alive client.
//!
//! The client is a hyper-util pooled client shared by all endpoints of the upstream (the
//! pool is keyed by endpoint address), reused across reloads while the settings it was
//! built from do not change, so a reload keeps warm connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::HeaderValue;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{FileUpstream, HostHeader};

pub type HttpClient = Client<HttpConnector, Incoming>;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

pub struct Upstream {
    pub name: Arc<str>,
    pub version: Arc<str>,
    /// The version as a header value, for `version_header`.
    pub version_value: HeaderValue,
    pub endpoints: Box<[Arc<Endpoint>]>,
    pub client: HttpClient,
    pub request_timeout: Duration,
    pub host_header: HostHeader,
    /// The file entry this was built from: a reload reuses the upstream when it is equal.
    pub(crate) source: FileUpstream,
}

pub struct Endpoint {
    pub addr: SocketAddr,
    /// `ip:port`, for the upstream request URI.
    pub authority: Authority,
    /// `host:port` as written in the config, for `host_header = "endpoint"`.
    pub configured_host: HeaderValue,
    in_flight: AtomicUsize,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, configured_host: &str) -> Self {
        let authority = Authority::try_from(addr.to_string()).expect("a socket address is a valid authority");
        let configured_host = HeaderValue::from_str(configured_host)
            .unwrap_or_else(|_| HeaderValue::from_str(authority.as_str()).expect("valid"));
        Endpoint { addr, authority, configured_host, in_flight: AtomicUsize::new(0) }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count a request against this endpoint until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// An in-flight request on an endpoint; decrements on drop, so every exit path counts.
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    pub(crate) fn new(source: &FileUpstream, endpoints: Vec<Arc<Endpoint>>, client: HttpClient) -> Self {
        Upstream {
            name: source.name.as_str().into(),
            version: source.version.as_str().into(),
            version_value: HeaderValue::from_str(&source.version).unwrap_or(HeaderValue::from_static("invalid")),
            endpoints: endpoints.into(),
            client,
            request_timeout: source.request_timeout,
            host_header: source.host_header.clone(),
            source: source.clone(),
        }
    }

    /// The endpoint for the next request, or `None` when the pool is empty.
    pub fn select(&self) -> Option<&Arc<Endpoint>> {
        super::select::least_of_two(&self.endpoints)
    }
}

/// Build the pooled client for an upstream's settings.
pub(crate) fn build_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}
