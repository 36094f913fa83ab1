//! Registered releases: known to the service (for plans and upgrades)
//! whether or not they run.

use serde::{Deserialize, Serialize};

use super::change::Change;
use super::{Controller, ControllerError};
use crate::error::{Classify, ErrorKind, Result};
use crate::model::{
    ApiVersionSource, ModelError, Plan, Release, ReleaseSpec, Revision, Role, ServiceName,
    Versioning, now_millis, parse_version, plan, plan_first,
};

/// Why a registered release cannot be used or removed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "{service} {version} is not registered (registered: {registered}); register it with `switchyard release add FILE`, or say what to run: a command after `--`, --image IMAGE, a project folder, --manifest FILE or --upstream HOST:PORT"
    )]
    NotRegistered {
        service: String,
        version: String,
        registered: String,
    },
    #[error(
        "cannot remove {service} {version}: it ran (in revision{revisions}{now}), and `switchyard rollback` starts a revision's releases from their registered specs, so a release that ran stays registered. To change it, register the corrected manifest under a new version"
    )]
    Ran {
        service: String,
        version: String,
        /// ` 3` or `s 1, 2, 3`
        revisions: String,
        /// `; it runs now as main`, or nothing
        now: String,
    },
    #[error(
        "cannot remove {service} {version}: the running upgrade to {to} goes through it; stop the upgrade first with `switchyard upgrade {service} --abort`"
    )]
    PlannedByUpgrade {
        service: String,
        version: String,
        to: String,
    },
}

impl From<RegistryError> for crate::Error {
    fn from(e: RegistryError) -> Self {
        crate::Error::part(e)
    }
}

impl Classify for RegistryError {
    fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::NotRegistered { .. } => ErrorKind::NotFound,
            RegistryError::Ran { .. } | RegistryError::PlannedByUpgrade { .. } => {
                ErrorKind::Conflict
            }
        }
    }
}

/// What `switchyard release rm` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unregistered {
    pub service: String,
    pub version: String,
    /// Registered releases left, oldest version first.
    pub left: Vec<String>,
}

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
    /// checked (see [`crate::model::plan`]). A service with no main yet
    /// (only registered releases) starts from its first registered release
    /// (see [`crate::model::plan_first`]).
    pub fn plan(&self, service: &ServiceName, target: &str) -> Result<Plan> {
        let target = parse_version(target)?;
        let current = self.current(service);
        let registered = self.store.releases(service)?;
        if current.is_none() && registered.is_empty() {
            return Err(ModelError::UnknownService(service.to_string()).into());
        }
        let schema = current.as_ref().and_then(|r| r.state.schema.clone());
        match current.as_ref().and_then(|r| r.state.main()) {
            Some(main) => Ok(plan(
                service.as_str(),
                &registered,
                main,
                schema.as_ref(),
                &target,
            )?),
            None => Ok(plan_first(
                service.as_str(),
                &registered,
                schema.as_ref(),
                &target,
            )?),
        }
    }

    /// A service that has a revision or a registered release.
    pub fn require_known(&self, service: &ServiceName) -> Result<()> {
        if self.current(service).is_some() || !self.store.releases(service)?.is_empty() {
            return Ok(());
        }
        Err(ModelError::UnknownService(service.to_string()).into())
    }

    /// The registered release to deploy by name, or why there is none.
    pub(super) fn registered_spec(
        &self,
        service: &ServiceName,
        version: &semver::Version,
    ) -> Result<Release> {
        if let Some(release) = self.store.release(service, version)? {
            return Ok(release);
        }
        let known = self.store.releases(service)?;
        Err(RegistryError::NotRegistered {
            service: service.to_string(),
            version: version.to_string(),
            registered: if known.is_empty() {
                "none".into()
            } else {
                known
                    .iter()
                    .map(|r| r.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }
        .into())
    }

    /// Removes a registered release that never ran: one in no revision,
    /// not being deployed, and not in the plan of a running upgrade.
    /// Anything else is refused with the reason, and nothing changes.
    pub async fn unregister(
        &self,
        service: &ServiceName,
        version: &str,
        actor: &str,
    ) -> Result<Unregistered> {
        let version = parse_version(version)?;
        let _lock = self.revisions.lock(service).await;
        self.registered_spec(service, &version)?;
        let deploying = self.deploying.contains(service, &version);
        if deploying {
            return Err(ControllerError::DeployInProgress {
                service: service.to_string(),
                version: version.to_string(),
            }
            .into());
        }
        if let Some(upgrade) = self.active_upgrade(service) {
            let planned =
                upgrade.plan.from == version || upgrade.plan.steps.iter().any(|s| s.to == version);
            if planned {
                return Err(RegistryError::PlannedByUpgrade {
                    service: service.to_string(),
                    version: version.to_string(),
                    to: upgrade.to.to_string(),
                }
                .into());
            }
        }
        let mut ran: Vec<u64> = self
            .store
            .history(service, usize::MAX)?
            .iter()
            .filter(|r| r.state.releases.contains_key(&version))
            .map(|r| r.number)
            .collect();
        if !ran.is_empty() {
            ran.sort_unstable();
            let now = self
                .current(service)
                .and_then(|r| r.state.role_of(&version))
                .map_or_else(String::new, |role| format!("; it runs now as {role}"));
            let revisions = if ran.len() == 1 {
                format!(" {}", ran[0])
            } else if ran.len() <= 6 {
                let list: Vec<String> = ran.iter().map(ToString::to_string).collect();
                format!("s {}", list.join(", "))
            } else {
                format!(
                    "s {} to {}, {} of them",
                    ran[0],
                    ran[ran.len() - 1],
                    ran.len()
                )
            };
            return Err(RegistryError::Ran {
                service: service.to_string(),
                version: version.to_string(),
                revisions,
                now,
            }
            .into());
        }
        self.store.unregister_release(service, &version)?;
        self.record_event(
            service.as_str(),
            "release-removed",
            &format!("registered release {version} removed (it never ran) by {actor}"),
            serde_json::Value::Null,
        );
        Ok(Unregistered {
            service: service.to_string(),
            version: version.to_string(),
            left: self
                .store
                .releases(service)?
                .iter()
                .map(|r| r.version.to_string())
                .collect(),
        })
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
