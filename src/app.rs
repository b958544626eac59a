//! [`App`]: one proxy's parts, wired. The request path's [`Plane`] (snapshot store,
//! counters, access log), the [`Controller`] (the one writer of snapshots) and the
//! rollout [`Driver`] over it. `server` and `admin` take an `App` (`reload` the
//! controller alone); `main`,
//! `demo`, tests and benches build one with [`App::start`] and hand it to
//! [`crate::server::Server::bind`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::access_log::AccessLog;
use crate::config::FileConfig;
use crate::proxy::Plane;
use crate::rollout::Driver;
use crate::state::Controller;
use crate::telemetry::Telemetry;
use crate::upstream::{Resolver, SystemResolver};

pub struct App {
    pub plane: Arc<Plane>,
    pub controller: Arc<Controller>,
    pub driver: Arc<Driver>,
}

impl App {
    /// Compile the first snapshot from `cfg` (restoring the state file it names) and
    /// attach the rollout driver; `config_path` is what reloads read.
    pub async fn start(cfg: FileConfig, config_path: Option<PathBuf>) -> Arc<App> {
        Self::start_with(cfg, config_path, Arc::new(SystemResolver)).await
    }

    /// Like [`App::start`], resolving hostname endpoints with `resolver`.
    pub async fn start_with(cfg: FileConfig, config_path: Option<PathBuf>, resolver: Arc<dyn Resolver>) -> Arc<App> {
        let telemetry = Arc::new(Telemetry::new());
        let controller = Arc::new(Controller::start(cfg, config_path, resolver, telemetry.clone()).await);
        let driver = Driver::attach(controller.clone()).await;
        let plane = Arc::new(Plane { store: controller.store().clone(), telemetry, access_log: AccessLog::new() });
        if let Some(fleet) = controller.fleet() {
            // In a fleet: the lease, membership and election; the watch that applies
            // the fleet's state; tallies published and (on the decider) judged.
            tokio::spawn(crate::cluster::run_session(Arc::downgrade(fleet)));
            tokio::spawn(crate::state::follow_fleet(Arc::downgrade(&controller)));
            tokio::spawn(driver.clone().run_fleet());
        }
        Arc::new(App { plane, controller, driver })
    }
}
