use super::Controller;
use crate::error::Result;
use crate::model::{Revision, ServiceName, now_millis, parse_version};

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
        self.ensure_ready(service, &version)?;
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
