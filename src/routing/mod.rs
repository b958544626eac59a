//! Which route and which backend serve a request: the compiled route table and the
//! weighted split. Everything here is built once per config snapshot and only read by
//! the request path.

pub mod path;
pub mod split;
pub mod table;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

pub use split::{resolve_shares, Split, RESOLUTION};
pub use table::RoutingTable;

use crate::telemetry::{BackendMetrics, StatusCounters};
use crate::upstream::Upstream;

/// A compiled `[[routes]]` entry.
pub struct Route {
    pub name: Arc<str>,
    pub headers: Box<[(HeaderName, HeaderValue)]>,
    pub backends: Box<[Backend]>,
    pub split: Split,
    pub version_header: Option<HeaderName>,
    /// Responses the proxy makes itself on this route (no upstream answered).
    pub own_responses: StatusCounters,
}

/// An upstream inside a route, with its resolved share and pre-resolved metric handles.
pub struct Backend {
    pub upstream: Arc<Upstream>,
    pub weight: f64,
    /// Share in units of 1/[`RESOLUTION`].
    pub share: u32,
    pub metrics: BackendMetrics,
}

impl Route {
    pub fn headers_match(&self, headers: &HeaderMap) -> bool {
        self.headers.iter().all(|(name, want)| headers.get_all(name).iter().any(|v| v == want))
    }

    /// The backend for the next request (per-request split).
    #[inline]
    pub fn pick(&self) -> &Backend {
        &self.backends[self.split.pick()]
    }
}
