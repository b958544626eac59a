//! TLS listeners: each `[[server.tls]]` entry becomes one rustls `ServerConfig` whose
//! certificate is chosen per handshake by SNI: an exact SAN match first, then a
//! wildcard (`*.example.com` covers one label, as browsers apply it), else the entry's
//! first certificate (nginx's default-server behaviour: a client that sent no SNI, or a
//! name nobody covers, gets the first certificate and its own verdict on it).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::pem::PemFile;

/// A certificate chain and its key, read from their files.
pub struct CertPair {
    pub cert_file: PemFile,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_file: PemFile,
    pub key: PrivateKeyDer<'static>,
    /// A DER OCSP response stapled to handshakes that ask for one.
    pub ocsp: Option<PemFile>,
}

/// One TLS listener's loaded certificates and the config its handshakes use.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    files: Vec<PathBuf>,
    /// DNS names each certificate covers, in file order (for logs and status).
    names: Vec<Vec<String>>,
    fingerprint: u64,
}

impl ServerTls {
    /// Build the listener's config. A pair that cannot be used (a key that does not
    /// match its certificate, an unsupported key type, a certificate that does not
    /// parse) is reported with its index.
    pub fn build(pairs: Vec<CertPair>) -> Result<ServerTls, (usize, String)> {
        let provider = super::provider();
        let fingerprint = super::fingerprint(pairs.iter().flat_map(|p| {
            let ocsp: &[u8] = p.ocsp.as_ref().map_or(&[], |f| &f.bytes);
            [p.cert_file.path.as_os_str().as_encoded_bytes(), &p.cert_file.bytes, &p.key_file.bytes, ocsp]
        }));
        let files = pairs
            .iter()
            .flat_map(|p| [Some(&p.cert_file), Some(&p.key_file), p.ocsp.as_ref()])
            .flatten()
            .map(|f| f.path.clone())
            .collect();
        let mut resolver = SniResolver { exact: HashMap::new(), wildcard: HashMap::new(), default: None };
        let mut names = Vec::new();
        for (i, pair) in pairs.into_iter().enumerate() {
            let cert_path = pair.cert_file.path.display().to_string();
            let key_path = pair.key_file.path.display().to_string();
            let leaf_names = dns_names(&pair.chain[0]).map_err(|e| (i, format!("{cert_path}: {e}")))?;
            let mut key = CertifiedKey::from_der(pair.chain, pair.key, &provider).map_err(|e| {
                let why = match e {
                    rustls::Error::InconsistentKeys(_) => "does not match the certificate".to_string(),
                    other => format!("cannot be used: {other}"),
                };
                (i, format!("the private key in {key_path} {why} in {cert_path}"))
            })?;
            key.ocsp = pair.ocsp.map(|f| f.bytes);
            let key = Arc::new(key);
            resolver.add(&leaf_names, &key);
            names.push(leaf_names);
        }
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| (0, format!("TLS setup failed: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls { config: Arc::new(config), files, names, fingerprint })
    }

    /// The config new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The certificate and key files, for the reloader to watch.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// DNS names per certificate, in file order.
    pub fn names(&self) -> &[Vec<String>] {
        &self.names
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files).field("names", &self.names).finish()
    }
}

/// The SAN DNS names a leaf certificate covers, lowercased (wildcards kept as `*.x`).
fn dns_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("not a usable X.509 certificate: {e}"))?;
    Ok(cert.valid_dns_names().map(str::to_ascii_lowercase).collect())
}

#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// The first certificate to claim a name keeps it (file order decides).
    fn add(&mut self, names: &[String], key: &Arc<CertifiedKey>) {
        self.default.get_or_insert_with(|| key.clone());
        for name in names {
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_string()).or_insert_with(|| key.clone()),
                None => self.exact.entry(name.clone()).or_insert_with(|| key.clone()),
            };
        }
    }

    fn find(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        if let Some(k) = self.exact.get(sni) {
            return Some(k);
        }
        let (_, parent) = sni.split_once('.')?;
        self.wildcard.get(parent)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = hello.server_name().and_then(|sni| {
            // rustls hands SNI over as sent; DNS names compare case-insensitively.
            if sni.bytes().any(|b| b.is_ascii_uppercase()) {
                self.find(&sni.to_ascii_lowercase()).cloned()
            } else {
                self.find(sni).cloned()
            }
        });
        found.or_else(|| self.default.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        let k = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()]).unwrap().self_signed(&k).unwrap();
        let der = PrivateKeyDer::try_from(k.serialize_der()).unwrap();
        Arc::new(CertifiedKey::from_der(vec![cert.der().clone()], der, &crate::tls::provider()).unwrap())
    }

    #[test]
    fn exact_names_beat_wildcards_and_wildcards_cover_one_label() {
        let (a, b) = (key(), key());
        let mut r = SniResolver { exact: HashMap::new(), wildcard: HashMap::new(), default: None };
        r.add(&["*.example.com".into()], &a);
        r.add(&["api.example.com".into(), "*.example.com".into()], &b);
        assert!(Arc::ptr_eq(r.find("api.example.com").unwrap(), &b));
        assert!(Arc::ptr_eq(r.find("www.example.com").unwrap(), &a), "first claim of the wildcard wins");
        assert!(r.find("a.b.example.com").is_none());
        assert!(r.find("example.com").is_none());
        assert!(Arc::ptr_eq(r.default.as_ref().unwrap(), &a));
    }
}
