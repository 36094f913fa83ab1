//! A node's reports in etcd: under `P/ready/NAME`, kept under the node's
//! lease (so a node whose lease lapses stops counting), every release it
//! runs with how many of its instances are healthy, its phase and, when
//! it failed, why and its last log lines. The report is put again on every
//! change (looked at every [`PUBLISH_EVERY`]) and whenever a new lease is
//! granted. [`EtcdReports`] reads the other live nodes' reports back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{GetOptions, PutOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{NodeReport, Reports};
use crate::controller::Controller;
use crate::store::{EtcdClients, EtcdStore, NodeRecord, StoreError, StoreResult};

/// How often this node looks for a change of its releases to report.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// The key of a node's report under the fleet's prefix.
pub(super) fn report_key(store: &EtcdStore, node: &str) -> String {
    store.key(&format!("ready/{node}"))
}

/// Puts this node's report under its lease (`lease`: the current one, if
/// any) whenever what it reports changes, until `stop`.
pub(super) async fn publish(
    clients: EtcdClients,
    key: String,
    node: String,
    controller: Arc<Controller>,
    mut lease: watch::Receiver<Option<i64>>,
    stop: CancellationToken,
) {
    let mut published: Option<(i64, NodeReport)> = None;
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
            changed = lease.changed() => if changed.is_err() { return },
        }
        let Some(id) = *lease.borrow_and_update() else {
            published = None;
            continue;
        };
        let report = NodeReport {
            node: node.clone(),
            releases: controller.local_readiness(),
        };
        if published.as_ref() == Some(&(id, report.clone())) {
            continue;
        }
        let value = match serde_json::to_vec(&report) {
            Ok(value) => value,
            Err(error) => {
                tracing::error!(%error, "cannot encode this node's report to the fleet");
                continue;
            }
        };
        let put = clients
            .current()
            .put(key.clone(), value, Some(PutOptions::new().with_lease(id)))
            .await;
        match put {
            Ok(_) => published = Some((id, report)),
            Err(error) => {
                // The lease may be gone: the lease's task grants a new one
                // and this tries again with it.
                tracing::debug!(%error, "cannot put this node's report in the fleet yet");
            }
        }
    }
}

/// Every live node's record and the reports under the fleet's prefix, in
/// one look.
pub(super) fn live_reports(
    store: &EtcdStore,
) -> StoreResult<(Vec<NodeRecord>, BTreeMap<String, NodeReport>)> {
    let (nodes, reports) = (store.key("node/"), store.key("ready/"));
    let (nodes, reports) = store.call(move |mut c| {
        let (nodes, reports) = (nodes.clone(), reports.clone());
        async move {
            let prefix = || Some(GetOptions::new().with_prefix());
            let mut n = c.get(nodes, prefix()).await?;
            let mut r = c.get(reports, prefix()).await?;
            let values = |kvs: Vec<etcd_client::KeyValue>| {
                kvs.into_iter()
                    .map(|kv| kv.value().to_vec())
                    .collect::<Vec<_>>()
            };
            Ok((values(n.take_kvs()), values(r.take_kvs())))
        }
    })?;
    let nodes = nodes
        .iter()
        .map(|v| serde_json::from_slice::<NodeRecord>(v).map_err(StoreError::from))
        .collect::<StoreResult<Vec<_>>>()?;
    let reports = reports
        .iter()
        .filter_map(|v| serde_json::from_slice::<NodeReport>(v).ok())
        .map(|r| (r.node.clone(), r))
        .collect();
    Ok((nodes, reports))
}

/// The other live nodes' reports, read from etcd.
pub struct EtcdReports {
    pub(super) store: Arc<EtcdStore>,
    /// This node's name.
    pub(super) node: String,
}

impl Reports for EtcdReports {
    fn shared(&self) -> bool {
        true
    }

    fn others(&self) -> StoreResult<Vec<NodeReport>> {
        let (nodes, mut reports) = live_reports(&self.store)?;
        Ok(nodes
            .into_iter()
            .filter(|n| n.name != self.node)
            .map(|n| {
                reports.remove(&n.name).unwrap_or_else(|| NodeReport {
                    node: n.name,
                    releases: BTreeMap::new(),
                })
            })
            .collect())
    }
}
