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

/// A DER OCSP response to staple (as `openssl ocsp -respout` writes it). Its outer shape
/// is checked: one DER SEQUENCE filling the file (so a half-written file is refused and
/// the old response keeps being stapled), `responseStatus` successful, and the
/// response bytes present. Whether it is current is the client's judgement, as with
/// nginx.
pub fn read_ocsp(path: &Path) -> Result<PemFile, String> {
    let file = read(path)?;
    if ocsp_shape(&file.bytes) {
        Ok(file)
    } else {
        Err(format!(
            "{} is not a whole, successful DER OCSP response (as `openssl ocsp -respout` writes)",
            path.display()
        ))
    }
}

/// `OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED (0: successful),
/// responseBytes [0] EXPLICIT ... }` (RFC 6960 §4.2.1), the SEQUENCE exactly filling `der`.
fn ocsp_shape(der: &[u8]) -> bool {
    let Some((0x30, body)) = der_element(der) else { return false };
    if body.len() + header_len(der) != der.len() {
        return false;
    }
    matches!(body, [0x0a, 0x01, 0x00, 0xa0, ..]) && der_element(&body[3..]).is_some()
}

/// A DER element's tag and contents (definite lengths up to 4 bytes long).
fn der_element(der: &[u8]) -> Option<(u8, &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |l, b| l << 8 | usize::from(*b)), &rest[n..])
    };
    Some((tag, rest.get(..len)?))
}

/// The bytes of a DER element's tag and length.
fn header_len(der: &[u8]) -> usize {
    match der.get(1) {
        Some(&b) if b >= 0x80 => 2 + usize::from(b & 0x7f),
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::ocsp_shape;

    #[test]
    fn only_whole_successful_ocsp_responses_pass() {
        let good = [0x30, 0x07, 0x0a, 0x01, 0x00, 0xa0, 0x02, 0x05, 0x00];
        assert!(ocsp_shape(&good));
        let mut long = vec![0x30, 0x81, 0x83, 0x0a, 0x01, 0x00, 0xa0, 0x7e];
        long.extend([0u8; 0x7e]);
        assert!(ocsp_shape(&long));
        assert!(!ocsp_shape(&good[..8]), "truncated");
        assert!(!ocsp_shape(&[&good[..], &[0]].concat()), "trailing bytes");
        assert!(!ocsp_shape(&[0x30, 0x03, 0x0a, 0x01, 0x00]), "no response bytes");
        assert!(!ocsp_shape(&[0x30, 0x07, 0x0a, 0x01, 0x06, 0xa0, 0x02, 0x05, 0x00]), "status 6: unauthorized");
        assert!(!ocsp_shape(b"-----BEGIN"));
        assert!(!ocsp_shape(&[]));
    }
}
