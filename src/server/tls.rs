//! The TLS handshake of an accepted connection, with the certificates of the live
//! config: a reload that changed a certificate file applies to the next handshake,
//! while established connections keep the session they negotiated.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::proxy::Plane;

/// A TLS listener: which `[[server.tls]]` entry it is (index and address as
/// configured: the key to its certificates in the live config) and the certificates it
/// was bound with, used if a reload moved or dropped the entry (listeners change only
/// at restart).
#[derive(Clone)]
pub struct TlsListener {
    pub index: usize,
    pub listen: SocketAddr,
    pub bound_with: Arc<ServerConfig>,
}

/// Complete the handshake within `header_read_timeout` (a client that never finishes
/// one is a slowloris like any other), or close the connection.
pub(super) async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &TlsListener,
    plane: &Arc<Plane>,
) -> Option<TlsStream<TcpStream>> {
    let runtime = plane.runtime();
    let live = runtime.settings.tls.get(listener.index).filter(|l| l.listen == listener.listen);
    let config = live.map_or_else(|| listener.bound_with.clone(), |l| l.config());
    let acceptor = TlsAcceptor::from(config);
    let timeout = runtime.settings.limits.header_read_timeout;
    drop(runtime);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
