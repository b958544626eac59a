//! The TLS keys: `[[server.tls]]` listeners and an upstream's `tls`. Files are read
//! while decoding, so an unreadable, unparsable or mismatched file is an ordinary config
//! error pointing at the line that names it (at start: exit 1; at reload: the old
//! certificates keep serving).

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::de::DeValue;

use super::error::Collector;
use super::reader::socket_addr;
use super::reader::{Node, Table};
use crate::tls::{self, CertPair, ClientTls, ClientTlsField, ClientTlsFiles, ServerTls};

/// One `[[server.tls]]` entry: a listener and the certificates it offers.
#[derive(Debug, Clone, PartialEq)]
pub struct FileTlsListener {
    pub listen: SocketAddr,
    pub tls: ServerTls,
}

impl FileTlsListener {
    pub fn files(&self) -> &[PathBuf] {
        self.tls.files()
    }
}

/// `plain` are the `server.listen` addresses: a TLS listener cannot share one.
pub(crate) fn decode_listeners(items: &[Node<'_>], plain: &[SocketAddr], errs: &mut Collector) -> Vec<FileTlsListener> {
    let mut listeners: Vec<FileTlsListener> = Vec::new();
    for (i, node) in items.iter().enumerate() {
        let Some(mut t) = Table::from_node(node, format!("server.tls[{i}]"), errs) else { continue };
        let listen = match t.get("listen") {
            Some(n) => socket_addr(n, &t.field("listen"), errs).filter(|addr| {
                let taken = plain.iter().chain(listeners.iter().map(|l| &l.listen)).any(|other| clash(addr, other));
                if taken {
                    errs.push(n.span(), t.field("listen"), format!("{addr} shares a port with another listener"));
                }
                !taken
            }),
            None => {
                errs.push(t.span.clone(), t.field("listen"), "missing: a TLS listener needs `listen`");
                None
            }
        };
        let certs = decode_certs(&mut t, errs);
        t.finish(errs);
        if let (Some(listen), Some(tls)) = (listen, certs) {
            listeners.push(FileTlsListener { listen, tls });
        }
    }
    listeners
}

/// Two listeners clash when they would share a port on some address: the same port on
/// the same IP, or on any IP when either is unspecified (`0.0.0.0`, `[::]`). Port 0
/// (the kernel picks one) never clashes.
fn clash(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn decode_certs(t: &mut Table<'_, '_>, errs: &mut Collector) -> Option<ServerTls> {
    let field = t.field("certs");
    let Some(items) = t.array("certs", errs) else {
        errs.push(t.span.clone(), field, "missing: a TLS listener needs `certs = [{ cert = \"...\", key = \"...\" }]`");
        return None;
    };
    if items.is_empty() {
        errs.push(t.span.clone(), field, "at least one certificate is needed");
        return None;
    }
    let mut pairs = Vec::new();
    let mut spans = Vec::new();
    let mut complete = true;
    for (i, node) in items.iter().enumerate() {
        let Some(mut ct) = Table::from_node(node, format!("{field}[{i}]"), errs) else {
            complete = false;
            continue;
        };
        match listener_cert(&mut ct, errs) {
            Some(pair) => {
                pairs.push(pair);
                spans.push((node.span(), ct.field("key")));
            }
            None => complete = false,
        }
        ct.finish(errs);
    }
    if !complete {
        return None;
    }
    match ServerTls::build(pairs) {
        Ok(tls) => Some(tls),
        Err((i, message)) => {
            let (span, key_field) = spans[i].clone();
            errs.push(span, key_field, message);
            None
        }
    }
}

/// A certificate chain and key named by two keys of a table, both files read.
fn cert_pair(t: &mut Table<'_, '_>, cert: &'static str, key: &'static str, errs: &mut Collector) -> Option<CertPair> {
    let cert_file = required_file(t, cert, errs);
    let key_file = required_file(t, key, errs);
    let (cert_file, chain) = read(t, cert, cert_file?, tls::read_certs, errs)?;
    let (key_file, key) = read(t, key, key_file?, tls::read_key, errs)?;
    Some(CertPair { cert_file, chain, key_file, key, ocsp: None })
}

/// A listener certificate: `cert`, `key`, and optionally `ocsp`, a DER OCSP response
/// for the certificate that is stapled to handshakes that ask for one (nginx's
/// `ssl_stapling_file`: fetching and refreshing it is left to a job outside the proxy,
/// whose write of a new file reloads it like a certificate).
fn listener_cert(t: &mut Table<'_, '_>, errs: &mut Collector) -> Option<CertPair> {
    // Read first, so a broken certificate is not also reported as an unknown `ocsp`.
    let ocsp = match t.get("ocsp") {
        Some(_) => {
            let file = required_file(t, "ocsp", errs);
            Some(file.and_then(|f| read(t, "ocsp", f, tls::read_ocsp, errs)))
        }
        None => None,
    };
    let mut pair = cert_pair(t, "cert", "key", errs)?;
    pair.ocsp = match ocsp {
        Some(read) => Some(read?),
        None => None,
    };
    Some(pair)
}

fn required_file(
    t: &mut Table<'_, '_>,
    key: &'static str,
    errs: &mut Collector,
) -> Option<(std::ops::Range<usize>, PathBuf)> {
    match t.string(key, errs) {
        Some(s) => Some((s.span(), errs.relative_to_config(s.get_ref()))),
        None => {
            if t.get(key).is_none() {
                errs.push(t.span.clone(), t.field(key), format!("missing: `{key}` names a PEM file"));
            }
            None
        }
    }
}

fn read<T>(
    t: &Table<'_, '_>,
    key: &str,
    (span, path): (std::ops::Range<usize>, PathBuf),
    reader: fn(&std::path::Path) -> Result<T, String>,
    errs: &mut Collector,
) -> Option<T> {
    match reader(&path) {
        Ok(v) => Some(v),
        Err(message) => {
            errs.push(span, t.field(key), message);
            None
        }
    }
}

/// An upstream's `tls`: `false` (absent), `true` (webpki roots, SNI from the endpoint),
/// or a table with `sni`, `ca_file`, `client_cert`, `client_key`.
pub(crate) fn decode_upstream_tls(t: &mut Table<'_, '_>, errs: &mut Collector) -> Option<ClientTls> {
    let node = t.get("tls")?;
    let field = t.field("tls");
    let files = match node.get_ref() {
        DeValue::Boolean(false) => return None,
        DeValue::Boolean(true) => ClientTlsFiles::default(),
        DeValue::Table(_) => {
            let mut tt = Table::from_node(node, field.clone(), errs)?;
            let files = decode_client_files(&mut tt, errs);
            tt.finish(errs);
            files?
        }
        other => {
            errs.push(
                node.span(),
                field,
                format!(
                    "expected true, false or {{ sni, ca_file, client_cert, client_key }}, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    match ClientTls::build(files) {
        Ok(tls) => Some(tls),
        Err((which, message)) => {
            let key = match which {
                ClientTlsField::CaFile => "ca_file",
                ClientTlsField::ClientKey => "client_key",
            };
            errs.push(node.span(), format!("{field}.{key}"), message);
            None
        }
    }
}

fn decode_client_files(t: &mut Table<'_, '_>, errs: &mut Collector) -> Option<ClientTlsFiles> {
    let mut ok = true;
    let sni = t.string("sni", errs).and_then(|s| match rustls_pki_types::ServerName::try_from(s.get_ref().as_str()) {
        Ok(_) => Some(s.into_inner()),
        Err(_) => {
            errs.push(s.span(), t.field("sni"), format!("{:?} is not a valid TLS server name", s.get_ref()));
            ok = false;
            None
        }
    });
    let ca = match t.string("ca_file", errs) {
        Some(s) => {
            let path = errs.relative_to_config(s.get_ref());
            let read = read(t, "ca_file", (s.span(), path), tls::read_certs, errs);
            ok &= read.is_some();
            read
        }
        None => None,
    };
    let identity = match (t.get("client_cert").is_some(), t.get("client_key").is_some()) {
        (false, false) => None,
        (true, true) => {
            let pair = cert_pair(t, "client_cert", "client_key", errs);
            ok &= pair.is_some();
            pair
        }
        (has_cert, _) => {
            let (present, missing) =
                if has_cert { ("client_cert", "client_key") } else { ("client_key", "client_cert") };
            errs.push(t.span.clone(), t.field(missing), format!("`{present}` needs `{missing}` too"));
            return None;
        }
    };
    ok.then_some(ClientTlsFiles { sni, ca, identity })
}
