//! How the proxy connects to an endpoint: plain TCP or TLS (hyper-rustls over the
//! upstream's rustls config), HTTP/1.1 or HTTP/2, and the keep-alive pool around it.
//!
//! Every pool connects to its endpoint's address whatever the request URI's authority
//! says (so an HTTP/2 request can carry the `:authority` the upstream routes on), and
//! `connect_timeout` bounds the TCP connect and the TLS handshake together (a server
//! that accepts and then stalls the handshake is a connect failure, retried elsewhere).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::body::UpstreamBody;
use crate::config::Protocol;
use crate::tls::ClientTls;

pub type HttpClient = Client<EndpointConnector, UpstreamBody>;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The connection settings an endpoint's pools are built with. An endpoint is reused
/// across reloads only when its transport is unchanged (a new CA or client certificate
/// means new connections).
#[derive(Debug, Clone, PartialEq)]
pub struct Transport {
    pub connect_timeout: Duration,
    pub protocol: Protocol,
    pub tls: Option<ClientTls>,
    /// The largest response head accepted (`max_header_bytes`): a larger one fails the
    /// exchange (502 `bad-upstream-response`) instead of being buffered without bound.
    pub max_head: usize,
}

impl Transport {
    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// A pooled client for the endpoint at `addr`. `host` is the endpoint's host as
    /// written in the config: the TLS server name unless the upstream sets `sni`.
    pub fn client(&self, host: &str, addr: SocketAddr) -> HttpClient {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(self.connect_timeout));
        // The HTTPS connector checks the scheme; the TCP connector must pass https URIs.
        tcp.enforce_http(false);
        let connector = match &self.tls {
            None => {
                // Plain endpoints are addressed with http URIs: the connector passes
                // them through and never uses this config.
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(unused_tls_config())
                    .https_or_http()
                    .enable_all_versions()
                    .wrap_connector(tcp)
            }
            Some(tls) => {
                let builder =
                    hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls.config().clone()).https_only();
                let builder = match tls.server_name(host) {
                    Ok(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
                    // Unreachable for names that passed config validation; the URI's
                    // host (the endpoint's IP) is the fallback.
                    Err(_) => builder,
                };
                // ALPN offers exactly the protocol the upstream is configured for.
                match self.protocol {
                    Protocol::Http1 => builder.enable_http1().wrap_connector(tcp),
                    Protocol::H2 => builder.enable_http2().wrap_connector(tcp),
                }
            }
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // hyper's floor for its read buffer is 8 KiB (max_header_bytes' floor too).
            // Both limits sit above max_head, which the request path checks exactly on
            // the head received (hyper checks its buffer only between reads, and the
            // h2 crate counts 32 bytes more per field and answers with a stream reset).
            .http1_max_buf_size(self.max_head.max(8192))
            .http2_max_header_list_size(u32::try_from(self.max_head + 16 * 1024).unwrap_or(u32::MAX));
        if self.protocol == Protocol::H2 {
            // One multiplexed connection per endpoint and worker carries every request.
            builder.http2_only(true);
        }
        let addr = Authority::try_from(addr.to_string()).expect("a socket address is an authority");
        builder.build(EndpointConnector { inner: connector, addr, timeout: self.connect_timeout })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects to one endpoint's address (see the module docs).
#[derive(Clone)]
pub struct EndpointConnector {
    inner: HttpsConnector<HttpConnector>,
    addr: Authority,
    timeout: Duration,
}

impl Service<Uri> for EndpointConnector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let target = Uri::builder().scheme(scheme).authority(self.addr.clone()).path_and_query("/").build();
        let connecting = target.map(|t| self.inner.call(t));
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting?).await {
                Ok(connected) => connected,
                Err(_) => Err(format!("connect (TCP and TLS) took longer than connect_timeout {timeout:?}").into()),
            }
        })
    }
}

fn unused_tls_config() -> rustls::ClientConfig {
    static CONFIG: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .clone()
}
