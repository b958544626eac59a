//! Upstream pools: the endpoints that run one version, their clients and live state,
//! the choice of endpoint per request, health checks, and DNS.

mod client;
pub mod dns;
mod health;
pub mod identity;
mod pool;
mod registry;
mod select;

pub use client::{HttpClient, Transport};
pub use dns::{Resolved, Resolver, SystemResolver};
pub use pool::{Admitted, Endpoint, InFlight, Upstream, VersionGroup};
pub use registry::UpstreamRegistry;
