//! Reading PEM files: certificate chains and private keys, with error messages that name
//! the file and say what was wrong with it (the config error adds where it was named).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A file's path and its bytes, kept so a later load can tell whether it changed.
#[derive(Clone)]
pub struct PemFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

fn read(path: &Path) -> Result<PemFile, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(PemFile { path: path.to_path_buf(), bytes }),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Every certificate in a PEM file, leaf first (the order a chain is served in).
pub fn read_certs(path: &Path) -> Result<(PemFile, Vec<CertificateDer<'static>>), String> {
    let file = read(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&file.bytes).collect();
    match certs {
        Ok(certs) if certs.is_empty() => Err(format!("{} holds no PEM certificate", path.display())),
        Ok(certs) => Ok((file, certs)),
        Err(e) => Err(format!("{} is not a valid PEM certificate file: {e}", path.display())),
    }
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn read_key(path: &Path) -> Result<(PemFile, PrivateKeyDer<'static>), String> {
    let file = read(path)?;
    match PrivateKeyDer::from_pem_slice(&file.bytes) {
        Ok(key) => Ok((file, key)),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(format!("{} holds no PEM private key", path.display())),
        Err(e) => Err(format!("{} is not a valid PEM private key file: {e}", path.display())),
    }
}

/// A DER OCSP response to staple (as `openssl ocsp -respout` writes it). Only its outer
/// shape is checked; whether it is current is the client's judgement, as with nginx.
pub fn read_ocsp(path: &Path) -> Result<PemFile, String> {
    let file = read(path)?;
    match file.bytes.first() {
        Some(0x30) => Ok(file),
        _ => Err(format!("{} is not a DER OCSP response (as `openssl ocsp -respout` writes)", path.display())),
    }
}
