//! The one `ArcSwap`: the request path loads the live [`Runtime`] once per request;
//! the control plane swaps a whole new one in. In-flight requests keep the snapshot
//! they loaded, so nothing is ever half-applied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Runtime;

pub struct Store {
    live: ArcSwap<Runtime>,
    draining: AtomicBool,
}

impl Store {
    pub fn new(first: Runtime) -> Store {
        Store { live: ArcSwap::from_pointee(first), draining: AtomicBool::new(false) }
    }

    /// The live snapshot, for one request's whole life.
    #[inline]
    pub fn load(&self) -> Arc<Runtime> {
        self.live.load_full()
    }

    /// Make `next` the live snapshot; returns the one it replaced. Callers serialize
    /// swaps (the controller's writer lock): this is a store, not a merge.
    pub fn swap(&self, next: Runtime) -> Arc<Runtime> {
        self.live.swap(Arc::new(next))
    }

    /// Shutdown began: readiness turns 503 and new requests get 503 draining.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    #[inline]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
