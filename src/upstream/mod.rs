//! Upstream pools: the endpoints that run one version, the pooled HTTP client that talks
//! to them, and the choice of endpoint per request.

mod pool;
mod registry;
mod select;

pub use pool::{Endpoint, InFlight, Upstream};
pub use registry::UpstreamRegistry;
