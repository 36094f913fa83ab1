use semver::Version;

use super::Controller;
use super::change::Change;
use crate::error::Result;
use crate::model::{Revision, ServiceName, parse_version};

impl Controller {
    /// Removes a release: it leaves the routing table at once, finishes its
    /// requests in flight (bounded by the drain timeout), then its instances
    /// get SIGTERM and, after the grace period, SIGKILL.
    pub async fn kill(
        &self,
        service: &ServiceName,
        version: &str,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let version = parse_version(version)?;
        let revision = self
            .change(service, base_revision, actor, |current| {
                let next = current.state.kill(service, &version)?;
                Ok(Change::new(format!("kill {version}"), next))
            })
            .await?;
        self.stop_drained(service, &[version]).await;
        Ok(revision)
    }

    /// Removes every release of a service; it answers 503 until the next deploy.
    pub async fn kill_all(
        &self,
        service: &ServiceName,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let mut gone: Vec<Version> = Vec::new();
        let revision = self
            .change(service, base_revision, actor, |current| {
                gone = current.state.releases.keys().cloned().collect();
                Ok(Change::new("kill --all", current.state.kill_all()))
            })
            .await?;
        self.stop_drained(service, &gone).await;
        Ok(revision)
    }

    /// Drains and stops releases that left the routing table, together.
    pub(super) async fn stop_drained(&self, service: &ServiceName, versions: &[Version]) {
        if let Some(limit) = self.tcp_drain(service) {
            for v in versions {
                self.runtime
                    .stop_when_closed(service.as_str(), &v.to_string(), limit);
            }
            return;
        }
        let stops = versions.iter().map(|v| {
            let version = v.to_string();
            async move { self.runtime.stop(service.as_str(), &version, true).await }
        });
        futures_util::future::join_all(stops).await;
    }
}
