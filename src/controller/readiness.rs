//! Whether a release is ready on every live node: this node's runtime and
//! what the other nodes report ([`Reports`]; none for a single serve), so
//! that deploy, assign, promote, canary steps and rollouts ask one
//! question whether the serve runs alone or in a fleet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use semver::Version;

use super::{Controller, ControllerError};
use crate::error::Result;
use crate::fleet::{Alone, FleetVerdict, ReleaseReadiness, ReleaseTraffic, Reports, judge};
use crate::model::{Revision, ServiceName};

/// How often a wait for the fleet looks at the nodes' reports again.
const POLL: Duration = Duration::from_millis(200);
/// How much longer than a release's ready timeout a wait for the fleet
/// lasts: the other nodes start it only once they hear of the change, and
/// one that is not ready within its timeout reports that itself.
const FLEET_MARGIN: Duration = Duration::from_secs(10);

impl Controller {
    /// Where the other nodes' reports come from (set once, by serve, for a
    /// node of a fleet; a serve alone has none).
    pub fn set_reports(&self, reports: Arc<dyn Reports>) {
        let _ = self.reports.set(reports);
    }

    pub(super) fn reports(&self) -> &dyn Reports {
        /// Until serve says which node this is.
        static UNNAMED: Alone = Alone(String::new());
        match self.reports.get() {
            Some(reports) => reports.as_ref(),
            None => &UNNAMED,
        }
    }

    /// Every release this node runs, with its traffic through this node.
    pub fn local_traffic(&self) -> BTreeMap<String, ReleaseTraffic> {
        self.runtime
            .running()
            .iter()
            .map(|handle| {
                let traffic = ReleaseTraffic::of(handle);
                (
                    ReleaseReadiness::key(&traffic.service, &traffic.version),
                    traffic,
                )
            })
            .collect()
    }

    /// A release's traffic through each live node that reports it, this
    /// node first (its numbers as they are now; the others' as they last
    /// reported them).
    pub(super) fn fleet_traffic(
        &self,
        service: &ServiceName,
        version: &str,
    ) -> Result<Vec<(String, ReleaseTraffic)>> {
        let key = ReleaseReadiness::key(service.as_str(), version);
        let mut traffic = Vec::new();
        if let Some(handle) = self.runtime.get(service.as_str(), version) {
            traffic.push((
                self.reports().this_node().to_owned(),
                ReleaseTraffic::of(&handle),
            ));
        }
        if self.reports().shared() {
            for mut other in self.reports().others()? {
                if let Some(t) = other.traffic.remove(&key) {
                    traffic.push((other.node, t));
                }
            }
        }
        Ok(traffic)
    }

    /// Every release this node runs, as it reports it to the fleet.
    pub fn local_readiness(&self) -> BTreeMap<String, ReleaseReadiness> {
        self.runtime
            .running()
            .iter()
            .map(|handle| {
                let revision = self
                    .current(&handle.release.service)
                    .map_or(0, |r| r.number);
                let report = ReleaseReadiness::of(handle, revision);
                (
                    ReleaseReadiness::key(&report.service, &report.version),
                    report,
                )
            })
            .collect()
    }

    /// What every live node reports of a release, this node first.
    fn fleet_reports(
        &self,
        service: &ServiceName,
        version: &Version,
    ) -> Result<Vec<(String, Option<ReleaseReadiness>)>> {
        let key = ReleaseReadiness::key(service.as_str(), &version.to_string());
        let local = self
            .runtime
            .get(service.as_str(), &version.to_string())
            .map(|handle| {
                let revision = self.current(service).map_or(0, |r| r.number);
                ReleaseReadiness::of(&handle, revision)
            });
        let mut reports = vec![(self.reports().this_node().to_owned(), local)];
        for mut other in self.reports().others()? {
            let report = other.releases.remove(&key);
            reports.push((other.node, report));
        }
        Ok(reports)
    }

    /// The fleet's verdict on a release; with `revision`, every node must
    /// also route by that revision of the service (or a later one).
    pub fn fleet_verdict(
        &self,
        service: &ServiceName,
        version: &Version,
        revision: u64,
    ) -> Result<FleetVerdict> {
        Ok(judge(&self.fleet_reports(service, version)?, revision))
    }

    /// Refuses a release that is not ready on every other live node
    /// (this node's own readiness is checked by `ensure_ready`).
    pub(super) fn ensure_ready_everywhere(
        &self,
        service: &ServiceName,
        version: &Version,
    ) -> Result<()> {
        if !self.reports().shared() {
            return Ok(());
        }
        let verdict = self.fleet_verdict(service, version, 0)?;
        fleet_error(service, version, verdict, None).map_or(Ok(()), Err)
    }

    /// Waits until a release is ready on every live node (and, with
    /// `revision`, routed by it), at most its ready timeout and a margin;
    /// fails at once when a node reports it failed, naming that node.
    pub(super) async fn wait_ready_everywhere(
        &self,
        service: &ServiceName,
        version: &Version,
        revision: u64,
        ready_timeout: Duration,
    ) -> Result<()> {
        let waited = ready_timeout + FLEET_MARGIN;
        let deadline = tokio::time::Instant::now() + waited;
        loop {
            let verdict = self.fleet_verdict(service, version, revision)?;
            if matches!(verdict, FleetVerdict::Waiting(_)) && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(POLL).await;
                continue;
            }
            return fleet_error(service, version, verdict, Some(waited)).map_or(Ok(()), Err);
        }
    }

    /// After a change committed on a fleet that other nodes must start
    /// releases for (a rollback to a retired release): waits until every
    /// live node has the revision's main ready and routes by the revision,
    /// so that the change returns when the fleet routes by it; fails naming
    /// a node where the main cannot get ready (that node keeps routing by
    /// the revision before). A serve alone has waited already.
    pub(super) async fn await_routed_everywhere(&self, revision: &Revision) -> Result<()> {
        match revision.state.main() {
            Some(main) => {
                self.await_fleet(&revision.service, main, revision.number)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Before a switch to a release on a fleet: waits until every live
    /// node has it ready (a serve alone checks its own instances when it
    /// commits, as before).
    pub(super) async fn await_ready_everywhere(
        &self,
        service: &ServiceName,
        version: &Version,
    ) -> Result<()> {
        self.await_fleet(service, version, 0).await
    }

    /// On a fleet, [`Self::wait_ready_everywhere`] within the release's
    /// own ready timeout; nothing to wait for on a serve alone, nor for a
    /// release not running here (the change's own check says so).
    async fn await_fleet(
        &self,
        service: &ServiceName,
        version: &Version,
        revision: u64,
    ) -> Result<()> {
        if !self.reports().shared() {
            return Ok(());
        }
        let Some(handle) = self.runtime.get(service.as_str(), &version.to_string()) else {
            return Ok(());
        };
        let timeout = Duration::from_millis(handle.release.spec.ready_timeout_ms);
        self.wait_ready_everywhere(service, version, revision, timeout)
            .await
    }
}

/// The error for a release the fleet does not have ready (none when it
/// does); `waited`: how long a wait for it lasted.
fn fleet_error(
    service: &ServiceName,
    version: &Version,
    verdict: FleetVerdict,
    waited: Option<Duration>,
) -> Option<crate::Error> {
    let (service, version) = (service.to_string(), version.to_string());
    Some(match verdict {
        FleetVerdict::Ready => return None,
        FleetVerdict::Failed { node, why, logs } => ControllerError::FailedOnNode {
            service,
            version,
            node,
            why,
            logs,
        }
        .into(),
        FleetVerdict::Waiting(nodes) => match waited {
            Some(waited) => ControllerError::NotReadyInTime {
                service,
                version,
                waited: humantime::format_duration(waited).to_string(),
                nodes: nodes.join("; "),
            }
            .into(),
            None => ControllerError::NotReadyEverywhere {
                service,
                version,
                nodes: nodes.join("; "),
            }
            .into(),
        },
    })
}
