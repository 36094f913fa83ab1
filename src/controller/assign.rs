use semver::Version;

use super::change::Change;
use super::{Controller, ControllerError};
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
        self.await_ready_everywhere(service, &version).await?;
        self.change(service, base_revision, actor, |current| {
            let next = current.state.assign(service, &version, now_millis())?;
            self.ensure_ready(service, &version)?;
            self.check_runs_on(service, &version, current.state.schema.as_ref())?;
            let old = current
                .state
                .main()
                .map_or_else(|| "none".to_owned(), |v| v.to_string());
            Ok(Change::new(
                format!("assign {version} as main (was {old})"),
                next,
            ))
        })
        .await
    }

    /// Refuses a release as main that cannot run against the schema the
    /// service's database is at (as its manifest's `runs_on_schemas` say).
    pub(super) fn check_runs_on(
        &self,
        service: &ServiceName,
        version: &Version,
        schema: Option<&Version>,
    ) -> Result<()> {
        let Some(schema) = schema else {
            return Ok(());
        };
        let Some(release) = self.store.release(service, version)? else {
            return Ok(());
        };
        ensure_runs_on(service, version, &release.spec.versioning, schema)
    }
}

/// Refuses a release whose `runs_on_schemas` leave out `schema`.
pub(super) fn ensure_runs_on(
    service: &ServiceName,
    version: &Version,
    versioning: &crate::model::Versioning,
    schema: &Version,
) -> Result<()> {
    let runs_on = versioning.runs_on();
    if runs_on.is_empty() || runs_on.contains(schema) {
        return Ok(());
    }
    Err(ControllerError::WrongSchema {
        service: service.to_string(),
        version: version.to_string(),
        schema: schema.to_string(),
        runs_on: runs_on
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
    .into())
}
