//! Several serves ("nodes") sharing one desired state: the fleet. With
//! `serve --store etcd://…` (the `etcd` feature) every node keeps its
//! record under an etcd lease, watches the services' heads and follows
//! each change another node commits, and takes part in the election of
//! the node that leads (rollouts, upgrades, webhooks). A serve on its
//! state directory is a fleet of one that always leads.

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod webhooks;

#[cfg(feature = "etcd")]
pub use etcd::{Fleet, FleetSettings};

use serde::{Deserialize, Serialize};

use crate::model::now_millis;
use crate::store::{NodeRecord, StoreResult};

/// A node as `switchyard nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub proxy: String,
    pub admin: String,
    pub version: String,
    /// When it started (unix ms).
    pub started_at: u64,
    /// How long ago its lease was granted (ms); none for a single serve.
    #[serde(default)]
    pub lease_age_ms: Option<u64>,
    /// Its lease's time to live (seconds); none for a single serve.
    #[serde(default)]
    pub lease_ttl_s: Option<u64>,
    /// Whether it leads the fleet.
    pub leader: bool,
    /// Whether it is the node that answered.
    pub this: bool,
}

impl NodeView {
    /// A node's record as a view (`leader`: the leading node's name).
    pub fn of(record: NodeRecord, leader: Option<&str>, this: &str, leased: bool) -> Self {
        Self {
            leader: leader == Some(record.name.as_str()),
            this: record.name == this,
            lease_age_ms: leased.then(|| now_millis().saturating_sub(record.lease_granted_at)),
            lease_ttl_s: leased.then_some(record.lease_ttl),
            name: record.name,
            proxy: record.proxy,
            admin: record.admin,
            version: record.version,
            started_at: record.started_at,
        }
    }
}

/// The nodes a serve knows of: itself alone, or every live node of its
/// fleet.
pub trait Members: Send + Sync + 'static {
    fn nodes(&self) -> StoreResult<Vec<NodeView>>;
}

/// A serve on its own: the only node, and so the leader.
pub struct SingleNode {
    pub record: NodeRecord,
}

impl Members for SingleNode {
    fn nodes(&self) -> StoreResult<Vec<NodeView>> {
        let name = self.record.name.clone();
        Ok(vec![NodeView::of(
            self.record.clone(),
            Some(&name),
            &name,
            false,
        )])
    }
}

/// This machine's host name, the default name of a node.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "switchyard".to_owned())
}
