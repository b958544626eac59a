//! Test PKI made fresh in each test with rcgen: a CA, leaf certificates for chosen
//! names, PEM files, a proxy with a TLS listener that serves them, and a TLS client
//! that reports what the server presented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{spawn_proxy_resolving, spawn_upstream, TestProxy, TestUpstream};
use switchyard::upstream::dns::Resolved;
use switchyard::upstream::Resolver;

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for these DNS names (or IP addresses), signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// A client config trusting this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> ClientConfig {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A server config presenting `leaf`; with `client_ca`, clients must present a
    /// certificate from that CA (mTLS).
    pub fn server_config(leaf: &Leaf, client_ca: Option<&TestCa>, alpn: &[&[u8]]) -> ServerConfig {
        let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider())
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(vec![leaf.der.clone()], leaf.key()).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::try_from(self.key_der.clone()).unwrap()
    }

    /// Write `STEM.pem` and `STEM-key.pem` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}-key.pem")));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A proxy whose `[[server.tls]]` listener offers the certificates written as
/// `cert-N.pem` / `cert-N-key.pem` into its config directory.
pub async fn tls_proxy(certs: &[&Leaf], upstreams_and_routes: &str) -> TestProxy {
    tls_proxy_in(tempfile::tempdir().unwrap(), certs, upstreams_and_routes).await
}

/// Like [`tls_proxy`], in a directory the test prepared (e.g. with a `ca.pem`); hostname
/// endpoints resolve to 127.0.0.1.
pub async fn tls_proxy_in(dir: tempfile::TempDir, certs: &[&Leaf], upstreams_and_routes: &str) -> TestProxy {
    let mut entries = Vec::new();
    for (i, leaf) in certs.iter().enumerate() {
        leaf.write(dir.path(), &format!("cert-{i}"));
        entries.push(format!("{{ cert = \"cert-{i}.pem\", key = \"cert-{i}-key.pem\" }}"));
    }
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ndrain_timeout = \"5s\"\n\n[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{}]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{upstreams_and_routes}",
        entries.join(", ")
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    spawn_proxy_resolving(path, dir, Arc::new(Loopback)).await
}

pub fn one_route(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[upstreams.app]\nendpoints = [\"{upstream}\"]\n\n[[routes]]\nname = \"app\"\nbackends = [{{ upstream = \"app\" }}]\n{extra}\n"
    )
}

/// An upstream "app" and a proxy routing everything to it, on a plain listener and a TLS
/// one presenting a certificate for `a.test` from the returned CA.
pub async fn app_behind_tls() -> (TestUpstream, TestProxy, TestCa) {
    let app = spawn_upstream("app").await;
    let ca = TestCa::new("test ca");
    let proxy = tls_proxy(&[&ca.leaf(&["a.test"])], &one_route(app.addr, "")).await;
    (app, proxy, ca)
}

/// Every name resolves to 127.0.0.1 (so endpoints can be written as hostnames).
pub struct Loopback;

impl Resolver for Loopback {
    fn resolve(&self, _host: &str, port: u16) -> Resolved {
        Box::pin(async move { Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]) })
    }
}

/// A TLS connection to `addr` sending `sni`, trusting `ca`, offering `alpn`.
pub async fn connect(addr: SocketAddr, sni: &str, ca: &TestCa, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(alpn)));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(ServerName::try_from(sni.to_string()).unwrap(), tcp).await.unwrap()
}

/// The leaf certificate the server presented on this connection.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("a server certificate")[0].clone().into_owned()
}

/// The ALPN protocol agreed on this connection.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// An HTTP/1.1 connection over `stream`: send requests on the returned handle.
pub async fn http1<S>(stream: S) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 connection over `stream`.
pub async fn http2<S>(stream: S) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// A GET for `path` with this Host.
pub fn get_request(host: &str, path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::get(path).header("host", host).body(http_body_util::Full::default()).unwrap()
}

/// The status, headers and body of a response.
pub async fn read(resp: http::Response<hyper::body::Incoming>) -> (http::StatusCode, http::HeaderMap, String) {
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// The certificate a server presents to a client that sends `sni` (or no SNI at all),
/// without verifying it: for checking which certificate a listener chose.
pub async fn presented_unverified(addr: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    presented(&unverified(addr, sni, Arc::default()).await)
}

/// The OCSP response a server staples for `sni` (empty when none; rustls asks for one in
/// every hello), without verifying the certificate.
pub async fn stapled_unverified(addr: SocketAddr, sni: &str) -> Vec<u8> {
    let verifier = Arc::new(AcceptAnything::default());
    unverified(addr, Some(sni), verifier.clone()).await;
    let stapled = verifier.stapled.lock().unwrap().take();
    stapled.expect("the certificate was seen")
}

async fn unverified(addr: SocketAddr, sni: Option<&str>, verifier: Arc<AcceptAnything>) -> TlsStream<TcpStream> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.unwrap_or("unused.invalid").to_string()).unwrap();
    connector.connect(name, TcpStream::connect(addr).await.unwrap()).await.unwrap()
}

/// Accepts any server certificate (tests only: to see what was presented), and keeps
/// the OCSP response stapled to it.
#[derive(Debug, Default)]
struct AcceptAnything {
    stapled: std::sync::Mutex<Option<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        ocsp: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.stapled.lock().unwrap() = Some(ocsp.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}
