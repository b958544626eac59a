//! The control plane's state and its one writer: the [`Controller`] holds the lock
//! every snapshot builder takes (file reloads, SIGHUP, admin weight changes, DNS
//! changes, rollout steps), compiles with [`crate::snapshot::compile`], persists admin
//! weights to the state file, and swaps the result into the [`crate::snapshot::Store`].
//!
//! | file | owns |
//! | --- | --- |
//! | `controller.rs` | the writer lock, start, reload/apply, DNS refresh, persisting, the swap |
//! | `weights.rs` | weight changes by hand: set, promote, rollback |
//! | `fleet.rs` | with `[cluster]`: loading, following and writing the fleet's state in etcd |
//! | `hook.rs` | what the controller asks of the rollout driver above it |
//!
//! The request path never reaches this module: it loads snapshots from the `Store`.

mod controller;
mod fleet;
mod hook;
mod weights;

pub use controller::{dns_refresh_loop, regroup_loop, Controller, Writer};
pub use fleet::follow_fleet;
pub use hook::RolloutHook;
pub use weights::file_route;
