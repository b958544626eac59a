//! A "gRPC" upstream: HTTP/2 only (h2c, or h2 over TLS), answering with its name and
//! the HTTP version it saw, followed by a `grpc-status: 0` trailer.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// A body of one data frame followed by trailers.
struct Trailered {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Trailered {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// Start the upstream on 127.0.0.1; with `tls`, it speaks h2 over TLS.
pub async fn upstream(name: &'static str, tls: Option<rustls::ServerConfig>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let version = format!("{:?}", req.version());
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let body = Trailered { data: Some(Bytes::from(format!("{name} {version}"))), trailers: Some(trailers) };
                let mut resp = Response::new(body);
                resp.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
                Ok::<_, Infallible>(resp)
            });
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let server = auto::Builder::new(TokioExecutor::new()).http2_only();
                match acceptor {
                    None => {
                        let _ = server.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(a) => {
                        if let Ok(stream) = a.accept(stream).await {
                            let _ = server.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    });
    addr
}
