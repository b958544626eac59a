//! HTTPS upstreams: the rustls `ClientConfig` an upstream's connections use. Servers are
//! verified against the webpki roots (Mozilla's list, compiled in, so a scratch container
//! needs no CA bundle), or only against `ca_file` when one is given (a private CA);
//! `client_cert` + `client_key` present a client certificate (mTLS).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName};

use super::pem::PemFile;
use super::server::CertPair;

/// What an upstream's `tls` table names, with the files already read.
#[derive(Default)]
pub struct ClientTlsFiles {
    /// The name sent as SNI and verified; default: the endpoint's hostname.
    pub sni: Option<String>,
    pub ca: Option<(PemFile, Vec<CertificateDer<'static>>)>,
    pub identity: Option<CertPair>,
}

/// An upstream's TLS settings, ready for connections.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    sni: Option<String>,
    files: Vec<PathBuf>,
    fingerprint: u64,
}

/// Which key of the `tls` table a build error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsField {
    CaFile,
    ClientKey,
}

impl ClientTls {
    pub fn build(files: ClientTlsFiles) -> Result<ClientTls, (ClientTlsField, String)> {
        let ClientTlsFiles { sni, ca, identity } = files;
        let mut parts: Vec<&[u8]> = vec![sni.as_deref().unwrap_or("").as_bytes()];
        let mut paths = Vec::new();
        if let Some((f, _)) = &ca {
            parts.push(&f.bytes);
            paths.push(f.path.clone());
        }
        if let Some(p) = &identity {
            parts.extend([&p.cert_file.bytes[..], &p.key_file.bytes[..]]);
            paths.extend([p.cert_file.path.clone(), p.key_file.path.clone()]);
        }
        let fingerprint = super::fingerprint(parts);

        let roots = match ca {
            None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
            Some((file, certs)) => {
                let mut roots = RootCertStore::empty();
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    let msg = format!("{} holds no usable CA certificate", file.path.display());
                    return Err((ClientTlsField::CaFile, msg));
                }
                roots
            }
        };
        let builder = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| (ClientTlsField::CaFile, format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(pair) => {
                let (cert_path, key_path) = (pair.cert_file.path.display(), pair.key_file.path.display());
                let why = format!("the private key in {key_path} cannot be used with the certificate in {cert_path}");
                builder
                    .with_client_auth_cert(pair.chain, pair.key)
                    .map_err(|e| (ClientTlsField::ClientKey, format!("{why}: {e}")))?
            }
        };
        Ok(ClientTls { config: Arc::new(config), sni, files: paths, fingerprint })
    }

    /// The config connections start from (ALPN is set per upstream protocol).
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The name to send as SNI and verify the certificate against: `sni` when set,
    /// else the endpoint's host as written (an IP literal is verified as an IP SAN).
    pub fn server_name(&self, endpoint_host: &str) -> Result<ServerName<'static>, String> {
        let name = self.sni.as_deref().unwrap_or(endpoint_host);
        ServerName::try_from(name.to_string()).map_err(|e| format!("{name:?} is not a valid TLS server name: {e}"))
    }

    /// The CA and client certificate files, for the reloader to watch.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint && self.files == other.files
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("sni", &self.sni).field("files", &self.files).finish()
    }
}
