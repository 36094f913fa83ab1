use semver::Version;

use super::Controller;
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
        let revision = {
            let _lock = self.lock(service).await;
            let current = self.require(service)?;
            Self::check_base(service, current.number, base_revision)?;
            let next = current.state.kill(service, &version)?;
            self.commit(
                service,
                Some(&current),
                next,
                format!("kill {version}"),
                actor,
                Vec::new(),
            )?
        };
        self.runtime
            .stop(service.as_str(), &version.to_string(), true)
            .await;
        Ok(revision)
    }

    /// Removes every release of a service; it answers 503 until the next deploy.
    pub async fn kill_all(
        &self,
        service: &ServiceName,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let (revision, gone) = {
            let _lock = self.lock(service).await;
            let current = self.require(service)?;
            Self::check_base(service, current.number, base_revision)?;
            let gone: Vec<Version> = current.state.releases.keys().cloned().collect();
            let revision = self.commit(
                service,
                Some(&current),
                current.state.kill_all(),
                "kill --all".into(),
                actor,
                Vec::new(),
            )?;
            (revision, gone)
        };
        self.stop_drained(service, &gone).await;
        Ok(revision)
    }

    /// Drains and stops releases that left the routing table, together.
    pub(super) async fn stop_drained(&self, service: &ServiceName, versions: &[Version]) {
        let stops = versions.iter().map(|v| {
            let version = v.to_string();
            async move { self.runtime.stop(service.as_str(), &version, true).await }
        });
        futures_util::future::join_all(stops).await;
    }
}
