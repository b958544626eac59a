//! The one thing the controller needs from the rollout driver (a layer above it): the
//! driver registers itself here, so dependencies still point down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::Writer;
use crate::config::FileConfig;
use crate::control::Phase;

pub trait RolloutHook: Send + Sync {
    /// Where `route`'s rollout stands: while it is active, weights by hand are refused.
    fn phase(&self, route: &str) -> Phase;

    /// A file went live (the writer lock is held, so nothing interleaves): end rollouts
    /// whose route changed, restore saved progress, start `auto_start` ones.
    fn reconcile<'a>(
        self: Arc<Self>,
        writer: &'a mut Writer,
        cfg: Arc<FileConfig>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

    /// The fleet's state changed these routes (the writer lock is held; their new
    /// weights are live): follow where their rollouts stand.
    fn fleet_applied<'a>(
        self: Arc<Self>,
        writer: &'a mut Writer,
        routes: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}
