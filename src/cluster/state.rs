//! The fleet's per-route state in etcd: load it whole, follow its changes revision by
//! revision, write one route with a compare-and-swap (fenced by the election when the
//! decider writes). Also the reads and writes of members and tallies.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, GetOptions, LeaderKey, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::mpsc;

use super::{call, Fleet, FleetError, Member, Tally};
use crate::control::RouteState;

/// What a member record said when it was written: the session writes it again when
/// the replica's applied revision or admin address no longer match.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Registered {
    revision: i64,
    admin: String,
}

/// The whole state at one revision: each route's state with its key's mod revision.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The highest mod revision among the state keys (0 when there are none): the
    /// revision a replica that applied this has applied.
    pub revision: i64,
    /// etcd's revision when it was read (members and tallies move it every second):
    /// where a watch resumes, so it never asks for history compaction removed.
    pub read_at: i64,
    pub routes: BTreeMap<String, (RouteState, i64)>,
}

/// What the follower hands the Controller: a batch of route changes (every event of
/// one etcd response, so a revision is never torn), or the whole state again after
/// the watch lost history it needed.
#[derive(Debug)]
pub enum Update {
    /// Each route's new state (`None`: its key was deleted) and the event's revision.
    Changes {
        revision: i64,
        routes: Vec<(String, Option<RouteState>, i64)>,
    },
    Resync(Loaded),
}

impl Fleet {
    /// Read every route's state.
    pub async fn load(&self) -> Result<Loaded, FleetError> {
        let mut client = self.client();
        let resp =
            call(self, "load state", client.get(self.keys.state(), Some(GetOptions::new().with_prefix()))).await?;
        // etcd's revision at this read: where the watch resumes, and what a resync
        // compares local writes with.
        let mut loaded = Loaded { read_at: resp.header().map_or(0, |h| h.revision()), ..Loaded::default() };
        for kv in resp.kvs() {
            let Some(route) = self.keys.route_of(kv.key()) else { continue };
            match serde_json::from_slice::<RouteState>(kv.value()) {
                Ok(state) => {
                    loaded.revision = loaded.revision.max(kv.mod_revision());
                    loaded.routes.insert(route, (state, kv.mod_revision()));
                }
                Err(e) => tracing::error!(route, error = %e, "ignoring an unreadable fleet state entry"),
            }
        }
        self.read_at.fetch_max(loaded.read_at, std::sync::atomic::Ordering::AcqRel);
        Ok(loaded)
    }

    /// Write `route`'s state if its key is still at `seen` (its mod revision when read;
    /// 0 for a key never written). With `fenced`, also only while our election key is
    /// the one we won with. Returns the write's revision.
    pub async fn write(&self, route: &str, state: &RouteState, seen: i64, fenced: bool) -> Result<i64, FleetError> {
        if !self.is_connected() {
            return Err(FleetError::Unavailable("not connected".into()));
        }
        let leader = match fenced {
            true => Some(self.leader_key().ok_or(FleetError::Fenced)?),
            false => None,
        };
        self.write_as(route, state, seen, leader.as_ref()).await
    }

    /// [`Fleet::write`], fenced on `leader` (an election key we won, maybe long ago):
    /// etcd itself refuses the write unless that key still exists with the revision it
    /// was created at, so a deposed decider cannot write whatever it believes.
    pub async fn write_as(
        &self,
        route: &str,
        state: &RouteState,
        seen: i64,
        leader: Option<&LeaderKey>,
    ) -> Result<i64, FleetError> {
        let key = self.keys.route(route);
        let value = serde_json::to_vec(state).expect("route state serializes");
        let mut when = vec![Compare::mod_revision(key.as_str(), CompareOp::Equal, seen)];
        if let Some(leader) = leader {
            when.push(Compare::create_revision(leader.key().to_vec(), CompareOp::Equal, leader.rev()));
        }
        let mut txn = Txn::new().when(when).and_then([TxnOp::put(key.as_str(), value, None)]);
        if let Some(leader) = leader {
            txn = txn.or_else([TxnOp::get(leader.key().to_vec(), None)]);
        }
        let mut client = self.client();
        let resp = call(self, "write state", client.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        if let Some(leader) = leader {
            // Tell a lost election from a moved route: is our election key still there?
            let ours = resp.op_responses().into_iter().any(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => !g.kvs().is_empty(),
                _ => false,
            });
            if !ours {
                if self.leader_key().is_some_and(|k| k.key() == leader.key() && k.rev() == leader.rev()) {
                    self.depose("a fenced write was refused: our election key is gone");
                }
                return Err(FleetError::Fenced);
            }
        }
        Err(FleetError::Conflict)
    }

    /// Every live member's record.
    pub async fn members(&self) -> Result<Vec<Member>, FleetError> {
        let mut client = self.client();
        let resp =
            call(self, "list members", client.get(self.keys.members(), Some(GetOptions::new().with_prefix()))).await?;
        Ok(resp.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect())
    }

    /// The decider's member name, if the fleet has one.
    pub async fn decider(&self) -> Result<Option<String>, FleetError> {
        let mut client = self.client();
        match tokio::time::timeout(super::CALL_TIMEOUT, client.leader(self.keys.decider())).await {
            Ok(Ok(resp)) => Ok(resp.kv().and_then(|kv| kv.value_str().ok()).map(str::to_string)),
            // etcd answers "election: no leader" as an error.
            Ok(Err(e)) if e.to_string().contains("no leader") => Ok(None),
            Ok(Err(e)) => Err(FleetError::Unavailable(e.to_string())),
            Err(_) => Err(FleetError::Unavailable("no answer".into())),
        }
    }

    /// Publish our member record under our lease.
    pub(crate) async fn register(&self) -> Result<Registered, FleetError> {
        let member = Member {
            name: self.name.clone(),
            admin: self.admin(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: self.applied(),
        };
        let value = serde_json::to_vec(&member).expect("member serializes");
        let options = PutOptions::new().with_lease(self.lease());
        let mut client = self.client();
        call(self, "register member", client.put(self.keys.member(&self.name), value, Some(options))).await?;
        Ok(Registered { revision: member.revision, admin: member.admin })
    }

    /// What the member record would say now.
    pub(crate) fn to_register(&self) -> Registered {
        Registered { revision: self.applied(), admin: self.admin() }
    }

    /// Publish our tally of `route` under our lease.
    pub async fn publish_tally(&self, route: &str, tally: &Tally) -> Result<(), FleetError> {
        let lease = self.lease();
        if lease == 0 {
            return Err(FleetError::Unavailable("no lease yet".into()));
        }
        let value = serde_json::to_vec(tally).expect("tally serializes");
        let mut client = self.client();
        let put = client.put(self.keys.tally(route, &self.name), value, Some(PutOptions::new().with_lease(lease)));
        call(self, "publish tally", put).await?;
        Ok(())
    }

    /// Every live member's latest tally of `route`.
    pub async fn tallies(&self, route: &str) -> Result<Vec<Tally>, FleetError> {
        let mut client = self.client();
        let get = client.get(self.keys.tallies(route), Some(GetOptions::new().with_prefix()));
        let resp = call(self, "read tallies", get).await?;
        Ok(resp.kvs().iter().filter_map(|kv| serde_json::from_slice::<Tally>(kv.value()).ok()).collect())
    }

    /// Follow the state from just after `from`: each etcd watch response becomes one
    /// [`Update`]. On a broken stream it reconnects from the last revision it passed
    /// on; when etcd compacted that history away it loads the whole state again. Ends
    /// when the receiver is dropped.
    pub fn follow(self: &std::sync::Arc<Self>, from: i64) -> mpsc::Receiver<Update> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(follow_loop(std::sync::Arc::downgrade(self), from, tx));
        rx
    }
}

async fn follow_loop(fleet: Weak<Fleet>, mut passed: i64, tx: mpsc::Sender<Update>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(f) = fleet.upgrade() else { return };
        match watch_once(&f, &mut passed, &tx).await {
            Ok(Flow::Closed) => return,
            Ok(Flow::Compacted) => {
                tracing::warn!(
                    passed,
                    "the fleet state's history was compacted past what this replica applied; loading it whole"
                );
                match f.load().await {
                    Ok(loaded) => {
                        passed = passed.max(loaded.read_at);
                        if tx.send(Update::Resync(loaded)).await.is_err() {
                            return;
                        }
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot load the fleet state"),
                }
            }
            Err(e) => {
                f.set_connected(false);
                tracing::warn!(error = %e, "the watch of the fleet state broke; reconnecting");
            }
        }
        drop(f);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

enum Flow {
    Closed,
    Compacted,
}

/// One watch stream, until it breaks. Every event newer than `passed` is handed on.
async fn watch_once(fleet: &Fleet, passed: &mut i64, tx: &mpsc::Sender<Update>) -> Result<Flow, String> {
    let mut client = fleet.client();
    let options = WatchOptions::new().with_prefix().with_start_revision(*passed + 1);
    let watch = tokio::time::timeout(super::CALL_TIMEOUT, client.watch(fleet.keys.state(), Some(options)));
    let mut stream = watch.await.map_err(|_| "no answer".to_string())?.map_err(|e| e.to_string())?;
    // Once etcd confirms the watch, events since `passed` are on their way: a change
    // made while disconnected is not missed. (A stream object alone proves nothing:
    // the request may not have reached etcd.)
    let mut confirmed = false;
    loop {
        let next = match confirmed {
            true => stream.message().await,
            false => match tokio::time::timeout(super::CALL_TIMEOUT, stream.message()).await {
                Ok(next) => next,
                Err(_) => return Err("etcd did not confirm the watch".into()),
            },
        };
        let Some(resp) = next.map_err(|e| e.to_string())? else { break };
        if !confirmed && resp.created() && !resp.canceled() {
            confirmed = true;
            fleet.set_connected(true);
        }
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Ok(Flow::Compacted);
            }
            return Err(format!("watch canceled: {}", resp.cancel_reason()));
        }
        let mut routes = Vec::new();
        let mut revision = *passed;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            revision = revision.max(kv.mod_revision());
            let Some(route) = fleet.keys.route_of(kv.key()) else { continue };
            let state = match event.event_type() {
                // Nothing here deletes state keys; an operator who does resets the route.
                EventType::Delete => None,
                EventType::Put => match serde_json::from_slice(kv.value()) {
                    Ok(state) => Some(state),
                    Err(e) => {
                        tracing::error!(route, error = %e, "ignoring an unreadable fleet state entry");
                        continue;
                    }
                },
            };
            routes.push((route, state, kv.mod_revision()));
        }
        if revision > *passed {
            *passed = revision;
            if tx.send(Update::Changes { revision, routes }).await.is_err() {
                return Ok(Flow::Closed);
            }
        }
    }
    Err("the watch stream ended".into())
}
