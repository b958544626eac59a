//! `[cluster]`: the etcd endpoints and key prefix a fleet shares, this replica's name
//! and the lease that holds its membership and its candidacy for decider.

use std::time::Duration;

use super::error::Collector;
use super::reader::Table;

#[derive(Debug, Clone, PartialEq)]
pub struct FileCluster {
    /// etcd v3 client URLs (`http://host:port`).
    pub etcd: Vec<String>,
    /// Every key of the fleet lives under it: starts with `/`, no trailing `/`.
    pub prefix: String,
    /// This replica, unique in the fleet.
    pub name: String,
    /// How long a silent replica stays a member (and decider): whole seconds, at least 2.
    pub ttl: Duration,
}

pub(super) fn decode_cluster(mut t: Table<'_, '_>, errs: &mut Collector) -> FileCluster {
    let span = t.span.clone();
    let mut etcd = Vec::new();
    match t.string_list("etcd", errs) {
        Some(list) if list.is_empty() => {
            errs.push(span.clone(), "cluster.etcd", "at least one etcd endpoint is needed")
        }
        Some(list) => {
            for (i, url) in list.iter().enumerate() {
                match endpoint(url.get_ref()) {
                    Ok(()) => etcd.push(url.get_ref().clone()),
                    Err(msg) => errs.push(url.span(), format!("cluster.etcd[{i}]"), msg),
                }
            }
        }
        None => errs.push(span.clone(), "cluster.etcd", "missing: a cluster needs its etcd endpoints"),
    }
    let prefix = match t.string("prefix", errs) {
        Some(p) => {
            let text = p.get_ref();
            if !text.starts_with('/') || text.len() < 2 || text.ends_with('/') {
                errs.push(
                    p.span(),
                    "cluster.prefix",
                    "a key prefix starts with `/` and does not end with one, like \"/switchyard/prod\"",
                );
            }
            text.clone()
        }
        None => {
            errs.push(span.clone(), "cluster.prefix", "missing: replicas with the same prefix are one fleet");
            String::new()
        }
    };
    let name = match t.string("name", errs) {
        Some(n) if n.get_ref().trim().is_empty() || n.get_ref().contains('/') => {
            errs.push(n.span(), "cluster.name", "a member name is not empty and has no `/`");
            String::new()
        }
        Some(n) => n.into_inner(),
        None => hostname(),
    };
    let ttl_span = t.get("ttl").map_or(span, |n| n.span());
    let ttl = match t.duration("ttl", errs) {
        Some(d) if d < Duration::from_secs(2) || d.subsec_nanos() != 0 => {
            errs.push(ttl_span, "cluster.ttl", "a lease is whole seconds, at least 2s (etcd's own minimum)");
            d
        }
        Some(d) => d,
        None => Duration::from_secs(10),
    };
    t.finish(errs);
    FileCluster { etcd, prefix, name, ttl }
}

/// `http://host:port`: TLS to etcd is not built in (terminate it in a local proxy).
fn endpoint(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?}: an etcd endpoint is http://host:port (https is not supported)"));
    };
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() && !rest.contains('/') => Ok(()),
        _ => Err(format!("{url:?}: an etcd endpoint is http://host:port")),
    }
}

/// The default member name: the machine's (in a container, the container's) hostname.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchyard".to_string())
}
