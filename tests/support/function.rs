//! A stand-in for a function URL: records every request whole (method, raw path and
//! query, headers in order, body) and answers 200 with an `x-powered-by` header, as
//! function platforms do. Requests can be checked for a SigV4 signature with the
//! independent checker in `sigv4.rs`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::sigv4::{verify, Key, Seen};

/// One request as the function received it, byte for byte.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn verify(&self, access_key_id: &str, secret: &str) -> Result<(), String> {
        let seen = Seen {
            method: &self.method,
            raw_path: &self.path,
            raw_query: &self.query,
            headers: &self.headers,
            body: &self.body,
        };
        verify(&seen, &Key { access_key_id, secret, region: "eu-west-1", service: "lambda" })
    }
}

/// A function URL stand-in: records every request whole and answers 200.
pub struct Function {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Function {
    pub async fn start() -> Function {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let log = log.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let mut headers: Vec<(String, String)> = parts
                            .headers
                            .iter()
                            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect();
                        if parts.version == http::Version::HTTP_2 {
                            if let Some(a) = parts.uri.authority() {
                                headers.push(("host".into(), a.to_string()));
                            }
                        }
                        log.lock().unwrap().push(Received {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            query: parts.uri.query().unwrap_or("").to_string(),
                            headers,
                            body: body.to_vec(),
                        });
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"fn")));
                        resp.headers_mut().insert("x-powered-by", http::HeaderValue::from_static("functions"));
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ =
                        auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Function { addr, received, task }
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.all().pop().expect("a request reached the function")
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        self.task.abort();
    }
}
