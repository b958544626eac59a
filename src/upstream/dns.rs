//! Name resolution for hostname endpoints, behind a trait so tests can control it, and
//! the background task that re-resolves them every `dns_refresh` (so a docker-compose
//! `--scale` or a rolling replacement behind one name is picked up without a reload).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Weak;
use std::time::Duration;

pub use super::registry::{lookup_all, DnsAnswers};
use crate::runtime::Shared;

pub type Resolved = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

pub trait Resolver: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> Resolved;
}

/// The operating system's resolver (getaddrinfo on a blocking thread).
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Resolved {
        let host = host.to_string();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

/// Re-resolve hostname endpoints while `shared` lives. Runs every `dns_refresh` (the
/// shortest configured among upstreams that have hostnames).
pub async fn refresh_loop(shared: Weak<Shared>) {
    loop {
        let period = {
            let Some(s) = shared.upgrade() else { return };
            let rt = s.runtime();
            rt.file
                .upstreams
                .iter()
                .filter(|u| u.endpoints.iter().any(|e| e.host.parse::<IpAddr>().is_err()))
                .map(|u| u.dns_refresh)
                .min()
        };
        tokio::time::sleep(period.unwrap_or(Duration::from_secs(5))).await;
        if period.is_none() {
            continue;
        }
        let Some(s) = shared.upgrade() else { return };
        s.refresh_dns().await;
    }
}
