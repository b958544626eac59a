//! The config file's shape: `File*` types decoded from the spanned TOML tree, with each
//! value already parsed (durations, addresses, header names) and its span kept for
//! validation messages. Routes are in `route.rs`, the resilience keys in
//! `resilience.rs`; cross-field rules live in `validate.rs`.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::auth::{decode_auth, FileAuth};
use super::cluster::{decode_cluster, FileCluster};
use super::error::Collector;
use super::reader::{header_name, socket_addr, Node, Table};
use super::resilience::{decode_health, decode_limits, decode_outlier, decode_retry_on};
use super::resilience::{FileHealth, FileLimits, FileOutlier, RetryOn};
use super::route::FileRoute;
use super::tls::{decode_listeners, decode_upstream_tls, FileTlsListener};
use super::transform::{decode_headers, path_like, FileHeaders};
use crate::tls::ClientTls;

#[derive(Debug, Clone, PartialEq)]
pub struct FileConfig {
    pub server: FileServer,
    pub admin: FileAdmin,
    /// `[cluster]`: the fleet this replica belongs to; `None` runs on its own.
    pub cluster: Option<FileCluster>,
    /// Sorted by name.
    pub upstreams: Vec<FileUpstream>,
    /// In file order (ties in routing go to file order).
    pub routes: Vec<FileRoute>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileServer {
    pub listen: Vec<SocketAddr>,
    /// Request-handling threads; 0 = one per core.
    pub workers: usize,
    pub drain_timeout: Duration,
    pub access_log: bool,
    pub request_id_header: HeaderName,
    pub limits: FileLimits,
    /// TLS listeners, each with its certificates.
    pub tls: Vec<FileTlsListener>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileAdmin {
    pub listen: SocketAddr,
    /// The API token, read from `token_env` (default `SWITCHYARD_ADMIN_TOKEN`) or
    /// `token_file` when the config is loaded.
    pub token: Option<Secret>,
    /// Where admin weight changes are persisted (relative paths are relative to the
    /// config file's directory).
    pub state_file: Option<PathBuf>,
}

/// A credential: compared, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The environment variable a token is read from when the config names none.
pub const DEFAULT_TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";

#[derive(Debug, Clone, PartialEq)]
pub struct FileUpstream {
    pub name: String,
    pub name_span: Range<usize>,
    pub version: String,
    pub endpoints: Vec<FileEndpoint>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub host_header: HostHeader,
    /// 0 = unlimited; beyond it requests get 503 at once.
    pub max_in_flight: usize,
    /// Extra attempts, each on another endpoint.
    pub retries: u32,
    pub retry_on: RetryOn,
    /// A new endpoint's share ramps up over this long.
    pub slow_start: Duration,
    pub health: Option<FileHealth>,
    pub outlier: Option<FileOutlier>,
    /// How often hostname endpoints are resolved again.
    pub dns_refresh: Duration,
    /// With no ready endpoint, hold requests this long (cold starts) before 503.
    pub queue_timeout: Duration,
    pub protocol: Protocol,
    /// HTTPS toward the endpoints.
    pub tls: Option<ClientTls>,
    /// Prepended to the forwarded path (a function's fixed path); `None` = nothing.
    pub base_path: Option<String>,
    pub request_headers: FileHeaders,
    pub response_headers: FileHeaders,
    /// How the proxy identifies itself to the endpoints (requests and health checks).
    pub auth: Option<FileAuth>,
}

/// How the proxy talks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c): gRPC and other HTTP/2 services.
    H2,
}

/// An endpoint as written: an IP or a hostname, with a port. Hostnames are resolved when
/// the config is compiled; each address becomes an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileEndpoint {
    pub host: String,
    pub port: u16,
}

/// What the upstream sees as `Host`.
#[derive(Debug, Clone, PartialEq)]
pub enum HostHeader {
    /// The client's Host (or the authority of an absolute-form target).
    Preserve,
    /// The endpoint's own `host[:port]` as written in the config: what function URLs need.
    Endpoint,
    Literal(HeaderValue),
}

pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub(crate) const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// Decode the whole document; problems go to `errs`, and what could be read is returned.
pub(crate) fn decode(root: &Spanned<DeTable<'_>>, errs: &mut Collector) -> FileConfig {
    let mut top = Table::new(root.get_ref(), root.span(), "");
    let server = match top.table("server", errs) {
        Some(t) => decode_server(t, errs),
        None => default_server(),
    };
    let admin = match top.table("admin", errs) {
        Some(t) => decode_admin(t, errs),
        None => decode_admin(Table::new(&DeTable::new(), root.span(), "admin"), errs),
    };
    let cluster = top.table("cluster", errs).map(|t| decode_cluster(t, errs));
    let mut upstreams = Vec::new();
    if let Some(mut t) = top.table("upstreams", errs) {
        for (name, node) in t.entries() {
            let field = format!("upstreams.{}", name.get_ref());
            if let Some(ut) = Table::from_node(node, field, errs) {
                upstreams.push(decode_upstream(name.get_ref(), name.span(), ut, errs));
            }
        }
        t.finish(errs);
    }
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    let mut routes = Vec::new();
    if let Some(items) = top.array("routes", errs) {
        for (i, node) in items.iter().enumerate() {
            if let Some(rt) = Table::from_node(node, format!("routes[{i}]"), errs) {
                routes.push(super::route::decode_route(rt, errs));
            }
        }
    }
    top.finish(errs);
    FileConfig { server, admin, cluster, upstreams, routes }
}

impl FileConfig {
    /// Every file the config reads besides itself: certificates, keys and CAs (listeners
    /// and upstreams), header values `{ file = ... }`, bearer tokens and AWS credentials files. The reloader watches them: a
    /// change reloads the config, which reads them all again.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let listeners = self.server.tls.iter().flat_map(|l| l.files());
        let upstreams = self.upstreams.iter().filter_map(|u| u.tls.as_ref()).flat_map(|t| t.files());
        let headers = self.routes.iter().flat_map(|r| [&r.request_headers, &r.response_headers]);
        let headers = headers.chain(self.upstreams.iter().flat_map(|u| [&u.request_headers, &u.response_headers]));
        let auth = self.upstreams.iter().filter_map(|u| u.auth.as_ref()?.files());
        listeners.chain(upstreams).chain(headers.flat_map(|h| h.files())).chain(auth).cloned().collect()
    }
}

fn default_server() -> FileServer {
    FileServer {
        listen: vec![DEFAULT_LISTEN.parse().expect("valid default")],
        workers: 0,
        drain_timeout: Duration::from_secs(30),
        access_log: false,
        request_id_header: HeaderName::from_static("x-request-id"),
        limits: FileLimits::default(),
        tls: Vec::new(),
    }
}

fn decode_server(mut t: Table<'_, '_>, errs: &mut Collector) -> FileServer {
    let mut server = default_server();
    if let Some(node) = t.get("listen") {
        let field = t.field("listen");
        let list: Vec<&Node> = match node.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            _ => vec![node],
        };
        server.listen = list.iter().filter_map(|n| socket_addr(n, &field, errs)).collect();
        if list.is_empty() && t.get("tls").is_none() {
            errs.push(node.span(), field, "at least one listen address is needed (or a [[server.tls]] listener)");
        }
    }
    if let Some(w) = t.uint("workers", errs) {
        server.workers = usize::try_from(w).unwrap_or(usize::MAX).min(1024);
    }
    if let Some(d) = t.duration("drain_timeout", errs) {
        server.drain_timeout = d;
    }
    if let Some(b) = t.bool("access_log", errs) {
        server.access_log = b;
    }
    if let Some(name) = t.string("request_id_header", errs) {
        if let Some(h) = header_name(&name, &t.field("request_id_header"), errs) {
            server.request_id_header = h;
        }
    }
    if let Some(lt) = t.table("limits", errs) {
        server.limits = decode_limits(lt, errs);
    }
    if let Some(items) = t.array("tls", errs) {
        server.tls = decode_listeners(items, &server.listen, errs);
    }
    t.finish(errs);
    server
}

fn decode_admin(mut t: Table<'_, '_>, errs: &mut Collector) -> FileAdmin {
    let listen_node = t.get("listen");
    let listen = listen_node
        .and_then(|n| socket_addr(n, "admin.listen", errs))
        .unwrap_or_else(|| DEFAULT_ADMIN.parse().expect("valid default"));
    let token_env = t.string("token_env", errs);
    let token_file = t.string("token_file", errs);
    let state_file = t.string("state_file", errs).map(|s| errs.relative_to_config(s.get_ref()));
    let token = match (&token_env, &token_file) {
        (Some(e), Some(_)) => {
            errs.push(e.span(), "admin.token_env", "set `token_env` or `token_file`, not both");
            None
        }
        (_, Some(f)) => match std::fs::read_to_string(errs.relative_to_config(f.get_ref())) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => {
                errs.push(f.span(), "admin.token_file", format!("cannot read {:?}: {e}", f.get_ref()));
                None
            }
        },
        (e, None) => std::env::var(e.as_ref().map_or(DEFAULT_TOKEN_ENV, |e| e.get_ref().as_str())).ok(),
    };
    let token = token.filter(|t| !t.is_empty()).map(Secret);
    if token.is_none() && !listen.ip().is_loopback() {
        let span = listen_node.map_or(t.span.clone(), |n| n.span());
        let env = token_env.as_ref().map_or(DEFAULT_TOKEN_ENV, |e| e.get_ref().as_str());
        errs.push(
            span,
            "admin.listen",
            format!("the admin listener {listen} is not loopback, so it needs a token: set ${env} or `token_file`"),
        );
    }
    t.finish(errs);
    FileAdmin { listen, token, state_file }
}

fn decode_upstream(name: &str, name_span: Range<usize>, mut t: Table<'_, '_>, errs: &mut Collector) -> FileUpstream {
    let version = t.string("version", errs).map_or_else(|| name.to_string(), Spanned::into_inner);
    let mut endpoints = Vec::new();
    match t.string_list("endpoints", errs) {
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                match parse_endpoint(s.get_ref()) {
                    Ok(ep) => endpoints.push(ep),
                    Err(msg) => errs.push(s.span(), format!("{}[{i}]", t.field("endpoints")), msg),
                }
            }
        }
        None => errs.push(name_span.clone(), t.field("endpoints"), "missing: an upstream needs `endpoints`"),
    }
    let mut nonzero = |key: &'static str, default: Duration| match t.duration(key, errs) {
        Some(d) if d.is_zero() => {
            errs.push(t.span.clone(), t.field(key), "must be more than 0");
            default
        }
        Some(d) => d,
        None => default,
    };
    let connect_timeout = nonzero("connect_timeout", Duration::from_secs(1));
    let request_timeout = nonzero("request_timeout", Duration::from_secs(30));
    let host_header = match t.string("host_header", errs) {
        None => HostHeader::Preserve,
        Some(s) => match s.get_ref().as_str() {
            "preserve" => HostHeader::Preserve,
            "endpoint" => HostHeader::Endpoint,
            literal => match HeaderValue::from_str(literal) {
                Ok(v) if !literal.is_empty() => HostHeader::Literal(v),
                _ => {
                    errs.push(s.span(), t.field("host_header"), "expected \"preserve\", \"endpoint\" or a host name");
                    HostHeader::Preserve
                }
            },
        },
    };
    let max_in_flight = t.uint("max_in_flight", errs).map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let retries = t.uint("retries", errs).map_or(1, |n| n.min(10) as u32);
    let retry_on = decode_retry_on(&mut t, errs);
    let slow_start = t.duration("slow_start", errs).unwrap_or_default();
    let health = t.table("health", errs).and_then(|h| decode_health(h, errs));
    let outlier = t.table("outlier", errs).and_then(|o| decode_outlier(o, errs));
    let dns_refresh = t.duration("dns_refresh", errs).unwrap_or(Duration::from_secs(5));
    let queue_timeout = t.duration("queue_timeout", errs).unwrap_or_default();
    let protocol = match t.string("protocol", errs) {
        None => Protocol::Http1,
        Some(p) => match p.get_ref().as_str() {
            "http1" => Protocol::Http1,
            "h2" => Protocol::H2,
            other => {
                errs.push(
                    p.span(),
                    t.field("protocol"),
                    format!("unknown protocol {other:?}: expected \"http1\" or \"h2\""),
                );
                Protocol::Http1
            }
        },
    };
    let tls = decode_upstream_tls(&mut t, errs);
    let base_path =
        t.string("base_path", errs).and_then(|p| path_like(&p, &t.field("base_path"), errs)).filter(|p| p != "/");
    let request_headers = t.table("request_headers", errs).map(|ht| decode_headers(ht, errs)).unwrap_or_default();
    let response_headers = t.table("response_headers", errs).map(|ht| decode_headers(ht, errs)).unwrap_or_default();
    let auth = t.table("auth", errs).and_then(|at| decode_auth(at, errs));
    t.finish(errs);
    FileUpstream {
        name: name.to_string(),
        name_span,
        version,
        endpoints,
        connect_timeout,
        request_timeout,
        host_header,
        max_in_flight,
        retries,
        retry_on,
        slow_start,
        health,
        outlier,
        dns_refresh: dns_refresh.max(Duration::from_millis(100)),
        queue_timeout,
        protocol,
        tls,
        base_path,
        request_headers,
        response_headers,
        auth,
    }
}

/// `host:port` where host is an IP (v6 in brackets) or a DNS name.
pub(crate) fn parse_endpoint(s: &str) -> Result<FileEndpoint, String> {
    let bad = || format!("invalid endpoint {s:?}: expected HOST:PORT, e.g. \"127.0.0.1:9001\" or \"app:8080\"");
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(FileEndpoint { host: addr.ip().to_string(), port: addr.port() });
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid || port == 0 {
        return Err(bad());
    }
    Ok(FileEndpoint { host: host.to_ascii_lowercase(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_ips_and_names() {
        assert_eq!(parse_endpoint("127.0.0.1:9001").unwrap().port, 9001);
        assert_eq!(parse_endpoint("[::1]:80").unwrap().host, "::1");
        assert_eq!(parse_endpoint("Shop-Blue:8080").unwrap().host, "shop-blue");
        for bad in ["nohost", ":80", "a:b", "a:0", "a b:80", "a..b:1"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
