//! The sample upstream: a tiny app that answers every request with its name and an
//! `x-version` header. The demo runs two of them; docker-compose and tutorials run it on
//! its own with `switchyard sample-upstream --name NAME`.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Serve until `shutdown` resolves.
pub async fn serve(listener: TcpListener, name: String, shutdown: impl Future<Output = ()>) {
    let version = HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("sample"));
    let body = Bytes::from(format!("{name}\n"));
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (version, body) = (version.clone(), body.clone());
                let service = service_fn(move |_req| {
                    let mut resp = Response::new(Full::new(body.clone()));
                    resp.headers_mut().insert("x-version", version.clone());
                    resp.headers_mut().insert("content-type", HeaderValue::from_static("text/plain"));
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(conn);
            }
            _ = &mut shutdown => break,
        }
    }
}
