//! Name resolution for hostname endpoints, behind a trait so tests can control it. The
//! task that re-resolves them every `dns_refresh` (so a docker-compose `--scale` or a
//! rolling replacement behind one name is picked up without a reload) belongs to the
//! snapshot's owner: see `state::dns_refresh_loop`.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use crate::config::FileUpstream;

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

/// (upstream, host, port, answer) for every hostname endpoint.
pub type DnsAnswers = Vec<(String, String, u16, std::io::Result<Vec<SocketAddr>>)>;

/// Look every hostname endpoint up. Takes no lock: slow DNS must never stall the
/// writer (admin changes and reloads wait on it).
pub async fn lookup_all(resolver: &dyn Resolver, upstreams: &[FileUpstream]) -> DnsAnswers {
    let mut answers = Vec::new();
    for u in upstreams {
        for ep in &u.endpoints {
            if ep.host.parse::<IpAddr>().is_ok() {
                continue;
            }
            let answer = resolver.resolve(&ep.host, ep.port).await;
            answers.push((u.name.clone(), ep.host.clone(), ep.port, answer));
        }
    }
    answers
}
