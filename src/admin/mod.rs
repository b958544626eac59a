//! The admin listener: the control API (`/api/v1/...`), the status page (`/`), metrics,
//! liveness and readiness.

mod api;
pub mod auth;
pub mod cluster;
mod page;
pub mod status;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use api::Call;
use auth::Denied;

pub type AdminResponse = Response<Full<Bytes>>;

/// Serve admin requests until `stop` flips to true.
pub async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    tracing::info!(addr = %listener.local_addr().expect("bound"), "admin listening");
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let app = app.clone();
                let service = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(dispatch(&app, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = stop.changed() => break,
        }
    }
}

async fn dispatch(app: &Arc<App>, req: Request<Incoming>) -> AdminResponse {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let token = app.plane.runtime().settings.admin_token.clone();

    // Probes and metrics: no token, no Host check (Prometheus and kubelets use IPs).
    if matches!(path.as_str(), "/metrics" | "/healthz" | "/readyz") {
        if method != Method::GET && method != Method::HEAD {
            return not_allowed("GET, HEAD", false);
        }
        return match path.as_str() {
            "/metrics" => {
                let mut r = Response::new(Full::new(Bytes::from(app.plane.telemetry.render())));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            _ if app.plane.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            _ => text(StatusCode::OK, "ready\n"),
        };
    }

    let is_api = path.starts_with("/api/");
    if !is_api && path != "/" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if let Err(denied) = auth::check(token.as_ref(), req.uri(), req.headers(), is_api) {
        return match denied {
            Denied::Unauthorized => {
                let mut r =
                    api::error(StatusCode::UNAUTHORIZED, "missing or wrong admin token (Authorization: Bearer ...)");
                r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            Denied::ForeignHost => api::error(
                StatusCode::FORBIDDEN,
                "the admin API only answers requests addressed to a loopback host (set a token to allow others)",
            ),
        };
    }
    if path == "/" {
        if method != Method::GET && method != Method::HEAD {
            return not_allowed("GET, HEAD", false);
        }
        let mut r = Response::new(Full::new(Bytes::from(page::render(&status::status(app)))));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        return r;
    }

    let Some((mut call, allowed)) = Call::parse(&path) else {
        return api::error(StatusCode::NOT_FOUND, &format!("no such API call: {path}"));
    };
    if let Call::History(route) = &mut call {
        *route = api::query_param(req.uri().query(), "route");
    }
    if method != allowed && !(allowed == Method::GET && method == Method::HEAD) {
        let allow = match allowed {
            Method::GET => "GET, HEAD",
            Method::PUT => "PUT",
            _ => "POST",
        };
        return not_allowed(allow, true);
    }
    let body = match Limited::new(req.into_body(), api::MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return api::error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large (64 KiB at most)"),
    };
    api::handle(app, call, body).await
}

pub(crate) fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> AdminResponse {
    let mut body = serde_json::to_vec_pretty(value).expect("serializable");
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn not_allowed(allow: &'static str, json: bool) -> AdminResponse {
    let mut r = if json {
        api::error(StatusCode::METHOD_NOT_ALLOWED, &format!("method not allowed; use {allow}"))
    } else {
        text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
    };
    r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
