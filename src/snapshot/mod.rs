//! The snapshot: one immutable, compiled config, everything the request path needs
//! (the route table with its splits, the upstream pools, the metric handles, the typed
//! settings), and the one `ArcSwap` it lives behind.
//!
//! | file | owns |
//! | --- | --- |
//! | `compile.rs` | a validated file (plus admin weights) → a [`Runtime`], synchronously |
//! | `settings.rs` | the typed `[server]`/`[admin]` settings, and which need a restart |
//! | `store.rs` | [`Store`]: load the live snapshot, swap in a new one, draining |
//!
//! It names no writer: the control plane (`state`) builds snapshots with [`compile`] and
//! swaps them in through the [`Store`]; the request path only loads.

mod compile;
mod settings;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

pub use compile::{compile, compile_fresh, compile_table};
pub use settings::{Bound, Settings, TlsListener};
pub use store::Store;

use crate::routing::{Route, RoutingTable};
use crate::upstream::Upstream;

/// One immutable, compiled config.
pub struct Runtime {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub table: RoutingTable,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Shared between the siblings a weight or DNS change makes (never re-derived).
    pub settings: Arc<Settings>,
}

impl Runtime {
    /// A sibling of `old` (same config, same generation) with another table and pools:
    /// what admin weight changes and DNS changes swap in. Nothing of the file is copied.
    pub fn with_table(old: &Runtime, table: RoutingTable, upstreams: HashMap<String, Arc<Upstream>>) -> Runtime {
        Runtime {
            generation: old.generation,
            loaded_at: old.loaded_at,
            table,
            upstreams,
            settings: old.settings.clone(),
        }
    }

    /// The compiled route named `name` (control-plane lookups; the request path finds
    /// routes by host and path).
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.table.by_name(name)
    }
}
