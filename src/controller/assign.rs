use super::{Controller, ControllerError};
use crate::error::Result;
use crate::model::{ModelError, Revision, ServiceName, now_millis, parse_version};
use crate::runtime::ReleasePhase;

impl Controller {
    /// Makes a release main, atomically: requests routed after the swap go
    /// to it, requests in flight finish where they are, and the old main
    /// stays running as standby. Refused unless every instance is healthy.
    pub async fn assign(
        &self,
        service: &ServiceName,
        version: &str,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let version = parse_version(version)?;
        let _lock = self.lock(service).await;
        let current = self.require(service)?;
        Self::check_base(service, current.number, base_revision)?;
        let next = current.state.assign(service, &version, now_millis())?;
        let handle = self
            .runtime
            .get(service.as_str(), &version.to_string())
            .ok_or_else(|| ModelError::UnknownRelease {
                service: service.to_string(),
                version: version.to_string(),
                known: "it is not running".into(),
            })?;
        let status = handle.status();
        let phase = status.phase();
        if phase != ReleasePhase::Ready {
            return Err(ControllerError::NotHealthy {
                service: service.to_string(),
                version: version.to_string(),
                phase: phase.to_string(),
                detail: status.health_summary(),
            }
            .into());
        }
        let old = current
            .state
            .main()
            .map_or_else(|| "none".to_owned(), |v| v.to_string());
        self.commit(
            service,
            Some(&current),
            next,
            format!("assign {version} as main (was {old})"),
            actor,
            Vec::new(),
        )
    }
}
