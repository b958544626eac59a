//! How the proxy connects to an endpoint: plain TCP or TLS (hyper-rustls over the
//! upstream's rustls config), HTTP/1.1 or HTTP/2, and the keep-alive pool around it.

use std::time::Duration;

use http::uri::Scheme;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Protocol;
use crate::proxy::UpstreamBody;
use crate::tls::ClientTls;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

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
}

impl Transport {
    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// A pooled client for one endpoint. `host` is the endpoint's host as written in the
    /// config: the TLS server name unless the upstream sets `sni`.
    pub fn client(&self, host: &str) -> HttpClient {
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
        builder.pool_idle_timeout(POOL_IDLE).pool_timer(TokioTimer::new()).timer(TokioTimer::new());
        if self.protocol == Protocol::H2 {
            // One multiplexed connection per endpoint and worker carries every request.
            builder.http2_only(true);
        }
        builder.build(connector)
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
