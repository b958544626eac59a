//! Long-lived upstream state that outlives a snapshot: a reload that leaves an upstream
//! unchanged gets the very same `Arc<Upstream>` (pooled connections, in-flight counts),
//! and a changed one keeps its client (and so its warm connections) when the client's
//! settings did not change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::pool::{build_client, HttpClient};
use super::{Endpoint, Upstream};
use crate::config::FileUpstream;

#[derive(Default)]
pub struct UpstreamRegistry {
    live: HashMap<String, Arc<Upstream>>,
    clients: HashMap<String, (Duration, HttpClient)>,
}

impl UpstreamRegistry {
    /// Build (or reuse) every upstream of a new config. Hostnames are resolved here,
    /// off the request path; a name that does not resolve leaves that upstream without
    /// those endpoints (logged) rather than failing the whole reload.
    pub async fn build(&mut self, upstreams: &[FileUpstream]) -> HashMap<String, Arc<Upstream>> {
        let mut next = HashMap::new();
        let mut clients = HashMap::new();
        for source in upstreams {
            let addrs = resolve(source).await;
            let reusable = self.live.get(&source.name).filter(|u| {
                u.source == *source && u.endpoints.iter().map(|e| e.addr).eq(addrs.iter().map(|(a, _)| *a))
            });
            let upstream = match reusable {
                Some(u) => u.clone(),
                None => {
                    let client = match self.clients.get(&source.name) {
                        Some((timeout, c)) if *timeout == source.connect_timeout => c.clone(),
                        _ => build_client(source.connect_timeout),
                    };
                    let old = self.live.get(&source.name);
                    let endpoints = addrs
                        .iter()
                        .map(|(addr, host)| {
                            old.and_then(|u| {
                                u.endpoints.iter().find(|e| e.addr == *addr && e.configured_host == host.as_str())
                            })
                            .cloned()
                            .unwrap_or_else(|| Arc::new(Endpoint::new(*addr, host)))
                        })
                        .collect();
                    Arc::new(Upstream::new(source, endpoints, client))
                }
            };
            clients.insert(source.name.clone(), (source.connect_timeout, upstream.client.clone()));
            next.insert(source.name.clone(), upstream);
        }
        self.live = next.clone();
        self.clients = clients;
        next
    }
}

/// Each configured endpoint's addresses, paired with the `host:port` as written.
async fn resolve(source: &FileUpstream) -> Vec<(SocketAddr, String)> {
    let mut out = Vec::new();
    for ep in &source.endpoints {
        let written = if ep.host.contains(':') {
            format!("[{}]:{}", ep.host, ep.port)
        } else {
            format!("{}:{}", ep.host, ep.port)
        };
        if let Ok(ip) = ep.host.parse::<std::net::IpAddr>() {
            out.push((SocketAddr::new(ip, ep.port), written));
            continue;
        }
        match tokio::net::lookup_host((ep.host.as_str(), ep.port)).await {
            Ok(addrs) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.sort();
                addrs.dedup();
                out.extend(addrs.into_iter().map(|a| (a, written.clone())));
            }
            Err(e) => {
                tracing::warn!(upstream = %source.name, endpoint = %written, error = %e, "endpoint does not resolve; it gets no traffic until a reload")
            }
        }
    }
    out.sort_by_key(|(a, _)| *a);
    out.dedup_by_key(|(a, _)| *a);
    out
}
