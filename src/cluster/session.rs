//! This replica's session with the fleet: a lease (re-granted when it is lost), the
//! member record under it (kept saying the applied revision and admin address), and the
//! campaign for decider under the same lease, so a dead replica's membership, tallies
//! and candidacy all end together. The keepalive is also the liveness signal behind
//! `connected`: a quiet watch proves nothing.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::state::Registered;
use super::{call, Fleet, CALL_TIMEOUT};

/// Keep the session while the fleet handle lives.
pub async fn run_session(fleet: Weak<Fleet>) {
    let mut backoff = Duration::from_millis(200);
    // Leases given up but not yet known revoked: etcd keeps a lease through its own
    // restart, and our election key under an old one would hold the queue for its ttl.
    let mut abandoned: Vec<i64> = Vec::new();
    loop {
        let Some(f) = fleet.upgrade() else { return };
        if f.is_leaving() {
            return;
        }
        match grant(&f).await {
            Ok((lease, written)) => {
                backoff = Duration::from_millis(200);
                revoke_abandoned(&f, &mut abandoned).await;
                let campaign = tokio::spawn(campaign(Arc::downgrade(&f), lease));
                let lost = keep(&f, lease, written).await;
                campaign.abort();
                f.depose(lost);
                // Whatever etcd still holds under the old lease goes now if etcd can
                // hear it, else after the next grant. Leaving revokes it too: `leave`
                // may have read the lease before this one was granted.
                abandoned.push(lease);
                revoke_abandoned(&f, &mut abandoned).await;
                if f.is_leaving() {
                    return;
                }
                tracing::warn!(member = %f.name, why = lost, "the fleet lease ended; joining again");
            }
            Err(e) => tracing::warn!(member = %f.name, error = %e, "cannot join the fleet yet; retrying"),
        }
        drop(f);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Revoke the leases this replica gave up; keep those etcd did not confirm gone.
async fn revoke_abandoned(f: &Fleet, abandoned: &mut Vec<i64>) {
    let mut client = f.client();
    let mut left = Vec::new();
    for &lease in abandoned.iter() {
        match tokio::time::timeout(CALL_TIMEOUT, client.lease_revoke(lease)).await {
            Ok(Ok(_)) => {}
            // Expired meanwhile: nothing is held under it.
            Ok(Err(e)) if e.to_string().contains("lease not found") => {}
            _ => left.push(lease),
        }
    }
    *abandoned = left;
}

/// The lease granted is `ttl` minus a second (etcd keeps a lease up to about a second
/// past its TTL), at least 2 s: so a dead member is gone, and its election won by
/// another, within `ttl`.
fn lease_seconds(ttl: Duration) -> i64 {
    (ttl.as_secs() as i64 - 1).max(2)
}

async fn grant(f: &Fleet) -> Result<(i64, Registered), super::FleetError> {
    let mut client = f.client();
    let lease = call(f, "grant lease", client.lease_grant(lease_seconds(f.ttl), None)).await?.id();
    f.set_lease(lease);
    let written = f.register().await?;
    f.set_connected(true);
    tracing::info!(member = %f.name, lease = format!("{lease:x}"), "joined the fleet");
    Ok((lease, written))
}

/// Keep `lease` alive and the member record current; returns why the lease ended.
///
/// The record is rewritten whenever what it should say differs from what was last
/// written, checked on every change and after every confirmed keepalive: a write that
/// failed (etcd slow for a moment), or a change made between the grant's write and the
/// subscriptions below, is put right by the next tick. A tick sends the keepalive
/// first, so a slow record write never delays the lease.
async fn keep(f: &Fleet, lease: i64, written: Registered) -> &'static str {
    let mut written = Some(written);
    let period = Duration::from_secs(lease_seconds(f.ttl) as u64) / 3;
    let mut applied = f.applied_changes();
    let mut admin = f.admin_changes();
    let mut last_ok = Instant::now();
    let mut client = f.client();
    let mut keeper = None;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if f.is_leaving() {
            return "leaving the fleet";
        }
        let wake = tokio::select! {
            _ = tick.tick() => Ok(Wake::Tick),
            changed = applied.changed() => changed.map(|()| Wake::Change),
            changed = admin.changed() => changed.map(|()| Wake::Change),
        };
        match wake {
            Err(_) => return "the fleet handle closed",
            Ok(Wake::Change) => {
                if f.is_connected() {
                    rewrite(f, &mut written).await;
                }
                continue;
            }
            Ok(Wake::Tick) => {}
        }
        if keeper.is_none() {
            keeper = call(f, "keep lease", client.lease_keep_alive(lease)).await.ok();
        }
        let answer = match keeper.as_mut() {
            Some((k, stream)) => match tokio::time::timeout(CALL_TIMEOUT, async {
                k.keep_alive().await?;
                stream.message().await
            })
            .await
            {
                Ok(Ok(Some(resp))) => Some(resp.ttl()),
                _ => None,
            },
            None => None,
        };
        match answer {
            Some(ttl) if ttl > 0 => {
                last_ok = Instant::now();
                if !f.is_connected() {
                    // Back after an outage: say where we are again.
                    written = None;
                }
                f.set_connected(true);
                rewrite(f, &mut written).await;
            }
            Some(_) => return "etcd says the lease expired",
            None => {
                keeper = None;
                f.set_connected(false);
                if last_ok.elapsed() >= Duration::from_secs(lease_seconds(f.ttl) as u64) {
                    // Our election key may be gone already, or etcd may keep it alive
                    // when it is back (a restart extends leases) while we no longer
                    // act as decider: either way, start over with a new lease, a new
                    // member record and a new campaign.
                    return "etcd has not confirmed the lease for a whole ttl";
                }
            }
        }
    }
}

/// Write the member record if it would say something else than it did when last
/// written (`None`: not known to be in etcd).
async fn rewrite(f: &Fleet, written: &mut Option<Registered>) {
    if written.as_ref() != Some(&f.to_register()) {
        if let Ok(now) = f.register().await {
            *written = Some(now);
        }
    }
}

/// Why [`keep`]'s loop woke.
enum Wake {
    Tick,
    Change,
}

/// Campaign for decider under `lease` until elected (etcd's election service blocks
/// the call until our key is the oldest).
async fn campaign(fleet: Weak<Fleet>, lease: i64) {
    loop {
        let Some(f) = fleet.upgrade() else { return };
        let mut client = f.client();
        let name = f.name.clone();
        let key = f.keys.decider();
        drop(f);
        match client.campaign(key, name, lease).await {
            Ok(resp) => {
                let Some(f) = fleet.upgrade() else { return };
                if let Some(leader) = resp.leader() {
                    f.elected(leader.clone());
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "campaign for decider failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
