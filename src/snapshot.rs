//! The snapshot: one immutable, compiled config, everything the request path needs
//! (the route table with its splits, the upstream pools, the metric handles). Built by
//! `compile`, swapped in by [`crate::runtime::Shared`]; it names neither.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderName;

use crate::config::FileConfig;
use crate::routing::RoutingTable;
use crate::upstream::Upstream;

/// One immutable, compiled config.
pub struct Runtime {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub table: RoutingTable,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub request_id_header: HeaderName,
    pub access_log: bool,
    pub file: FileConfig,
}

impl Runtime {
    /// A sibling of `old` (same config, same generation) with another table and pools:
    /// what admin weight changes and DNS changes swap in.
    pub(crate) fn with_table(old: &Runtime, table: RoutingTable, upstreams: HashMap<String, Arc<Upstream>>) -> Runtime {
        Runtime {
            generation: old.generation,
            loaded_at: old.loaded_at,
            table,
            upstreams,
            request_id_header: old.request_id_header.clone(),
            access_log: old.access_log,
            file: old.file.clone(),
        }
    }
}
