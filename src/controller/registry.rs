//! Registered releases: known to the service (for plans and upgrades)
//! whether or not they run.

use serde::{Deserialize, Serialize};

use super::Controller;
use super::change::Change;
use crate::error::Result;
use crate::model::{
    ApiVersionSource, ModelError, Plan, Release, ReleaseSpec, Revision, Role, ServiceName,
    Versioning, now_millis, parse_version, plan,
};

/// What `switchyard release add` sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub version: String,
    pub spec: ReleaseSpec,
}

/// A registered release as `switchyard releases` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisteredView {
    pub version: String,
    /// Its role when it is in the current revision; `None` when it only is
    /// registered.
    pub role: Option<Role>,
    pub registered_at: u64,
    pub versioning: Versioning,
}

/// What registering did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub release: RegisteredView,
    /// False when the same release was registered already.
    pub new: bool,
}

impl Controller {
    /// Registers a release without starting it and without a revision.
    /// Registering the same spec again is a no-op; another spec under a
    /// registered version is refused (releases are immutable).
    pub fn register(&self, service: &ServiceName, req: RegisterRequest) -> Result<Registered> {
        let version = parse_version(&req.version)?;
        req.spec.validate()?;
        let release = Release {
            service: service.clone(),
            version,
            spec: req.spec,
            registered_at: now_millis(),
        };
        let new = self.store.register_release(&release)?;
        let stored = self
            .store
            .release(service, &release.version)?
            .unwrap_or(release);
        Ok(Registered {
            release: self.registered_view(&stored),
            new,
        })
    }

    /// Reads the API version requests ask for from another place.
    pub async fn set_api_version(
        &self,
        service: &ServiceName,
        source: ApiVersionSource,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        self.change(service, base_revision, actor, |current| {
            let action = format!("read the API version from the {source}");
            let next = current.state.with_api_version(source)?;
            Ok(Change::new(action, next))
        })
        .await
    }

    /// Every registered release of a service, oldest version first.
    pub fn registered(&self, service: &ServiceName) -> Result<Vec<RegisteredView>> {
        let releases = self.store.releases(service)?;
        if releases.is_empty() {
            self.require(service)?;
        }
        Ok(releases.iter().map(|r| self.registered_view(r)).collect())
    }

    /// The service's current desired state.
    pub fn service_state(&self, service: &ServiceName) -> Result<crate::model::ServiceState> {
        Ok(self.require(service)?.state)
    }

    /// The upgrade plan from the current main to `target`, every step
    /// checked (see [`crate::model::plan`]).
    pub fn plan(&self, service: &ServiceName, target: &str) -> Result<Plan> {
        let target = parse_version(target)?;
        let current = self.require(service)?;
        let Some(main) = current.state.main() else {
            return Err(ModelError::InvalidUpgrade(format!(
                "{service} has no main release to upgrade from"
            ))
            .into());
        };
        let registered = self.store.releases(service)?;
        Ok(plan(
            service.as_str(),
            &registered,
            main,
            current.state.schema.as_ref(),
            &target,
        )?)
    }

    fn registered_view(&self, release: &Release) -> RegisteredView {
        let role = self
            .current(&release.service)
            .and_then(|r| r.state.role_of(&release.version));
        RegisteredView {
            version: release.version.to_string(),
            role,
            registered_at: release.registered_at,
            versioning: release.spec.versioning.clone(),
        }
    }
}
