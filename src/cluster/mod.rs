//! Fleets on etcd: the fleet's routing state, membership, tallies and the decider's
//! election, as keys under the `[cluster]` prefix (layout in `keys.rs`). This module
//! knows etcd and the value formats; it knows nothing of snapshots. The Controller
//! above feeds what [`Fleet::follow`] yields into snapshot swaps, and writes through
//! [`Fleet::write`]. The request path never reaches it.
//!
//! | file | owns |
//! | --- | --- |
//! | `keys.rs` | the key layout, percent-encoded names |
//! | `codec.rs` | member records and published tallies |
//! | `state.rs` | loading, watching and writing the per-route state (CAS, fenced) |
//! | `session.rs` | the lease, the member record, the election, `connected` |
//!
//! Every etcd call has its own deadline ([`CALL_TIMEOUT`]): a client-wide timeout would
//! also cut the election's `Campaign`, which blocks until it wins.

mod codec;
mod keys;
mod session;
mod state;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::watch;

pub use codec::{BackendTally, Member, Tally};
pub use etcd_client::LeaderKey;
pub use keys::Keys;
pub use session::run_session;
pub use state::{Loaded, Update};

use crate::config::FileCluster;

/// The deadline of one etcd call (the election's campaign excepted).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a fleet write or read did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FleetError {
    #[error("etcd is unreachable ({0}): the fleet's state cannot change until it is back")]
    Unavailable(String),
    #[error(
        "etcd did not answer {0} within 2s: the change may or may not have been made; check status before retrying"
    )]
    Unanswered(String),
    #[error("another replica changed this route at the same time; read the new state and retry")]
    Conflict,
    #[error("this replica is no longer the fleet's decider; its write was refused")]
    Fenced,
}

/// This replica's handle on its fleet.
pub struct Fleet {
    pub name: String,
    pub keys: Keys,
    pub ttl: Duration,
    client: Client,
    /// Where this replica's admin API answers (set again once its listener is bound).
    admin: watch::Sender<String>,
    /// Random per process start: tallies published under another incarnation started
    /// from zero.
    pub incarnation: u64,
    /// The lease holding this member's keys (0 before the first grant).
    lease: AtomicI64,
    connected: watch::Sender<bool>,
    /// The highest fleet-state revision this replica applied (what its member record
    /// and `switchyard_cluster_revision` say).
    applied: watch::Sender<i64>,
    /// Our election key while we are the decider: every decider write is fenced on it.
    leader: Mutex<Option<LeaderKey>>,
    decider: watch::Sender<bool>,
    /// The members and decider last read from etcd (what `GET /api/v1/cluster` shows
    /// while etcd is unreachable).
    pub(crate) known: Mutex<(Vec<Member>, Option<String>, i64)>,
    /// etcd's revision at the last full read of the state (where the watch starts).
    read_at: AtomicI64,
    /// Set by [`Fleet::leave`]: the session ends instead of joining again.
    leaving: std::sync::atomic::AtomicBool,
}

impl Fleet {
    /// A client for `cfg`'s endpoints. Connecting is lazy: nothing is asked of etcd yet.
    pub async fn connect(cfg: &FileCluster, admin: String) -> Result<Fleet, FleetError> {
        // require_leader: an etcd member cut off from its cluster's leader cancels our
        // calls and watch instead of answering pings while delivering nothing, so the
        // watch reconnects (to another member) rather than going quiet for good.
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), CALL_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client =
            Client::connect(&cfg.etcd, Some(options)).await.map_err(|e| FleetError::Unavailable(e.to_string()))?;
        Ok(Fleet {
            name: cfg.name.clone(),
            keys: Keys::new(&cfg.prefix),
            ttl: cfg.ttl,
            client,
            admin: watch::Sender::new(admin),
            incarnation: fastrand::u64(..),
            lease: AtomicI64::new(0),
            connected: watch::Sender::new(false),
            applied: watch::Sender::new(0),
            leader: Mutex::new(None),
            decider: watch::Sender::new(false),
            known: Mutex::new((Vec::new(), None, 0)),
            read_at: AtomicI64::new(0),
            leaving: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// Where this replica's admin API answers (the member record says it).
    pub fn set_admin(&self, addr: String) {
        self.admin.send_if_modified(|a| std::mem::replace(a, addr.clone()) != addr);
    }

    pub fn admin(&self) -> String {
        self.admin.borrow().clone()
    }

    pub(crate) fn admin_changes(&self) -> watch::Receiver<String> {
        self.admin.subscribe()
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.send_if_modified(|c| std::mem::replace(c, up) != up);
    }

    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    pub fn set_applied(&self, revision: i64) {
        self.applied.send_if_modified(|r| {
            let newer = revision > *r;
            if newer {
                *r = revision;
            }
            newer
        });
    }

    pub(crate) fn applied_changes(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    pub fn is_decider(&self) -> bool {
        *self.decider.borrow()
    }

    /// Changes whenever this replica becomes or stops being the decider.
    pub fn decider_changes(&self) -> watch::Receiver<bool> {
        self.decider.subscribe()
    }

    /// [`Fleet::leave`] was called: publish nothing more, join nothing again.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// etcd's revision at the last full read of the state.
    pub fn read_at(&self) -> i64 {
        self.read_at.load(Ordering::Acquire)
    }

    pub(crate) fn set_connected_after_load(&self) {
        self.set_connected(true);
    }

    pub(crate) fn lease(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    pub(crate) fn set_lease(&self, id: i64) {
        self.lease.store(id, Ordering::Release);
    }

    pub(crate) fn elected(&self, key: LeaderKey) {
        tracing::info!(member = %self.name, "this replica is now the fleet's decider");
        *self.leader.lock().expect("not poisoned") = Some(key);
        self.decider.send_replace(true);
    }

    /// Stop deciding: the lease that held our election key is gone (or a fenced write
    /// proved it). Timers of the decider see `is_decider` false and stop.
    pub fn depose(&self, why: &str) {
        let was = self.leader.lock().expect("not poisoned").take().is_some();
        self.decider.send_replace(false);
        if was {
            tracing::warn!(member = %self.name, why, "this replica is no longer the fleet's decider");
        }
    }

    /// The members, decider and latest state revision last read from etcd.
    pub fn last_known(&self) -> (Vec<Member>, Option<String>, i64) {
        self.known.lock().expect("not poisoned").clone()
    }

    pub fn remember(&self, members: &[Member], decider: &Option<String>, latest: i64) {
        *self.known.lock().expect("not poisoned") = (members.to_vec(), decider.clone(), latest);
    }

    /// Our election key while we decide.
    pub fn leader_key(&self) -> Option<LeaderKey> {
        self.leader.lock().expect("not poisoned").clone()
    }

    /// Leave the fleet now (graceful shutdown): resign and revoke the lease, so the
    /// member disappears and another replica takes over at once instead of after `ttl`.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
        let mut client = self.client();
        let leader = self.leader.lock().expect("not poisoned").take();
        if let Some(key) = leader {
            let resign = client.resign(Some(etcd_client::ResignOptions::new().with_leader(key)));
            let _ = tokio::time::timeout(CALL_TIMEOUT, resign).await;
        }
        self.decider.send_replace(false);
        let lease = self.lease();
        if lease != 0 {
            let _ = tokio::time::timeout(CALL_TIMEOUT, client.lease_revoke(lease)).await;
        }
        tracing::info!(member = %self.name, "left the fleet");
    }
}

/// Run an etcd call under [`CALL_TIMEOUT`]; a transport error or a timeout marks the
/// fleet disconnected.
pub(crate) async fn call<T>(
    fleet: &Fleet,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            if is_transport(&e) {
                fleet.set_connected(false);
            }
            Err(FleetError::Unavailable(format!("{what}: {e}")))
        }
        Err(_) => {
            fleet.set_connected(false);
            Err(FleetError::Unanswered(what.to_string()))
        }
    }
}

/// An error that says etcd cannot be reached (not one etcd answered with).
fn is_transport(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown)
        }
        _ => false,
    }
}
