//! Name resolution for hostname endpoints, behind a trait so tests can control it. The
//! task that re-resolves them every `dns_refresh` (so a docker-compose `--scale` or a
//! rolling replacement behind one name is picked up without a reload) belongs to the
//! snapshot's owner: see `state::dns_refresh_loop`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

pub use super::registry::{lookup_all, DnsAnswers};

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
