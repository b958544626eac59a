//! `GET /api/v1/cluster` (and `switchyard ctl cluster`): the fleet as this replica sees
//! it: the live members, the decider, and whether each member has applied the fleet's
//! latest state. While etcd is unreachable it answers from the last list it read,
//! with `connected: false`.

use serde::Serialize;

use crate::cluster::{Fleet, Member};

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// This replica.
    pub name: String,
    /// The deciding member's name; `null` while nobody is elected (or etcd is gone).
    pub decider: Option<String>,
    /// The fleet-state revision this replica applied.
    pub revision: i64,
    /// The newest fleet-state revision in etcd.
    pub latest_revision: i64,
    pub connected: bool,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub name: String,
    pub admin: String,
    pub version: String,
    pub revision: i64,
    /// Has applied the latest revision.
    pub applied: bool,
}

pub async fn view(fleet: &Fleet) -> ClusterView {
    // While the session knows etcd is away, answer at once from what was last read
    // (the page polls this); otherwise the three reads run together.
    let connected = fleet.is_connected() && {
        let read = tokio::try_join!(fleet.load(), fleet.members(), fleet.decider());
        read.map(|(loaded, members, decider)| fleet.remember(&members, &decider, loaded.revision)).is_ok()
    };
    let (mut members, decider, latest) = fleet.last_known();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterView {
        name: fleet.name.clone(),
        decider,
        revision: fleet.applied(),
        latest_revision: latest,
        connected: connected && fleet.is_connected(),
        members: members.into_iter().map(|m: Member| member(m, latest)).collect(),
    }
}

fn member(m: Member, latest: i64) -> MemberView {
    MemberView { applied: m.revision >= latest, name: m.name, admin: m.admin, version: m.version, revision: m.revision }
}
