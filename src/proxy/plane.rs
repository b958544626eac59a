//! [`Plane`]: what the request path shares for the process's life, and nothing more:
//! the snapshot store it loads from, the counters it bumps, the access log it writes
//! to. It never reaches the control plane (the controller and the rollout driver).

use std::sync::Arc;

use crate::access_log::AccessLog;
use crate::snapshot::{Runtime, Store};
use crate::telemetry::Telemetry;

pub struct Plane {
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    pub access_log: AccessLog,
}

impl Plane {
    /// The live snapshot, for one request's whole life.
    #[inline]
    pub fn runtime(&self) -> Arc<Runtime> {
        self.store.load()
    }

    #[inline]
    pub fn is_draining(&self) -> bool {
        self.store.is_draining()
    }
}
