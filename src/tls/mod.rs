//! TLS with rustls (ring provider): certificates and keys read from PEM files when a
//! config is loaded, turned into the rustls configs that handshakes use.
//!
//! | file | owns |
//! | --- | --- |
//! | `pem.rs` | reading certificate chains and private keys, with messages naming the file |
//! | `server.rs` | TLS listeners: certificates chosen by SNI (exact, then wildcard), ALPN |
//! | `client.rs` | HTTPS upstreams: roots (webpki or a private CA), mTLS client certificates |
//!
//! The loaded configs live in the config snapshot, so a reload that re-reads changed
//! files swaps new certificates in like any other change: new handshakes use them,
//! connections already established keep the session they negotiated.

mod client;
mod pem;
mod server;

use std::sync::Arc;

pub use client::{ClientTls, ClientTlsField, ClientTlsFiles};
pub use pem::{read_certs, read_key, read_ocsp, PemFile};
pub use server::{CertPair, ServerTls};

/// Every TLS config is built on the same provider, passed explicitly rather than
/// installed process-wide so library users and tests cannot race on a global.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// A digest of the files a TLS config was built from: two loads compare equal exactly
/// when every file had the same bytes (and path).
fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.digest()
}
