//! WebSocket pass-through. An HTTP/1.1 `Upgrade: websocket` request is forwarded with its
//! upgrade headers (every other `Upgrade`, `h2c` included, is stripped as hop-by-hop);
//! when the chosen upstream answers `101 Switching Protocols`, the client and upstream
//! connections are spliced together and bytes flow both ways until either side closes.
//! The version that answered the handshake serves the whole connection. Anything but a
//! 101 is an ordinary response and the client connection stays HTTP. Upgrades are never
//! retried.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// An HTTP/1.1 request asking to become a WebSocket.
pub fn is_websocket<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().get(UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Put back the two headers hop-by-hop stripping removed, for the upgrade to go through.
pub fn keep_upgrade_headers(h: &mut HeaderMap) {
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Splice the client's and the upstream's upgraded connections once both are ready.
pub fn tunnel(client: OnUpgrade, upstream: OnUpgrade, route: std::sync::Arc<str>) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(%route, error = %e, "upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(%route, up, down, "websocket closed"),
            Err(e) => tracing::debug!(%route, error = %e, "websocket ended with an error"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http11_websocket_upgrades_count() {
        let req = |version, upgrade: &str, connection: &str| {
            Request::builder()
                .version(version)
                .header("upgrade", upgrade)
                .header("connection", connection)
                .body(())
                .unwrap()
        };
        assert!(is_websocket(&req(Version::HTTP_11, "websocket", "Upgrade")));
        assert!(is_websocket(&req(Version::HTTP_11, "WebSocket", "keep-alive, upgrade")));
        assert!(!is_websocket(&req(Version::HTTP_11, "h2c", "upgrade")));
        assert!(!is_websocket(&req(Version::HTTP_11, "websocket", "keep-alive")));
        assert!(!is_websocket(&req(Version::HTTP_10, "websocket", "upgrade")));
    }
}
