use std::time::Duration;

use semver::Version;
use serde::{Deserialize, Serialize};

use super::change::Change;
use super::{Controller, ControllerError};
use crate::error::Result;
use crate::model::{
    DeployAs, ModelError, Release, ReleaseSpec, Revision, Role, ServiceName, ServiceState,
    ShadowSettings, normalize_host, now_millis, parse_version,
};
use crate::store::StoreError;

/// What `switchyard deploy` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    pub version: String,
    /// How to run it; `None` deploys the release registered under the
    /// version (`switchyard release add`) by name, with its stored spec.
    #[serde(default)]
    pub spec: Option<ReleaseSpec>,
    /// Host names to route to the service (added to the ones it has).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Enter as standby instead of shadow (ignored for a first release).
    #[serde(default)]
    pub standby: bool,
    /// The emergency release: straight to main once healthy, no canary.
    #[serde(default)]
    pub promote: bool,
    /// Refuse the change if the service has moved past this revision.
    #[serde(default)]
    pub base_revision: Option<u64>,
    /// For a release that enters as a shadow: the methods it gets copies
    /// of (upper-case; empty: every method). Its other shadow settings
    /// keep their defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_methods: Option<Vec<String>>,
}

/// The releases being deployed right now, so that the same one is not
/// deployed twice at once.
#[derive(Default)]
pub(super) struct Deploying {
    set: std::sync::Mutex<std::collections::HashSet<(ServiceName, String)>>,
}

impl Deploying {
    /// Whether the release is being deployed right now.
    pub(super) fn contains(&self, service: &ServiceName, version: &Version) -> bool {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(service.clone(), version.to_string()))
    }

    /// Marks the release as being deployed until the guard drops; `None`
    /// when it already is.
    fn begin(&self, service: &ServiceName, version: &Version) -> Option<DeployingGuard<'_>> {
        let key = (service.clone(), version.to_string());
        // The set's lock is let go before a guard exists: a guard dropped
        // while it was held would wait on it forever.
        let inserted = self
            .set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        inserted.then(|| DeployingGuard {
            deploying: self,
            key,
        })
    }
}

/// Removes a release from the "being deployed" set when dropped.
struct DeployingGuard<'a> {
    deploying: &'a Deploying,
    key: (ServiceName, String),
}

impl Drop for DeployingGuard<'_> {
    fn drop(&mut self) {
        self.deploying
            .set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Controller {
    /// Registers and starts a release, waits until every replica is
    /// healthy, then commits it in its role. Any failure stops what was
    /// started and changes nothing.
    pub async fn deploy(
        &self,
        service: &ServiceName,
        req: DeployRequest,
        actor: &str,
    ) -> Result<Revision> {
        let version = parse_version(&req.version)?;
        let (spec, registered_at) = match req.spec {
            Some(spec) => (spec, now_millis()),
            None => {
                let stored = self.registered_spec(service, &version)?;
                (stored.spec, stored.registered_at)
            }
        };
        spec.validate()?;
        let hosts = req
            .hosts
            .iter()
            .map(|h| normalize_host(h))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let how = if req.promote {
            DeployAs::Main
        } else if req.standby {
            DeployAs::Standby
        } else {
            DeployAs::Auto
        };

        // Fail fast on what can be checked before starting anything.
        let schema = spec.versioning.schema_version.clone();
        if how == DeployAs::Main {
            if let Some(at) = self.current(service).and_then(|r| r.state.schema) {
                super::assign::ensure_runs_on(service, &version, &spec.versioning, &at)?;
            }
        }
        self.check_deployable(
            service,
            &version,
            how,
            &hosts,
            req.base_revision,
            0,
            &schema,
            req.shadow_methods.as_deref(),
            spec.protocol,
        )?;
        if let Some(stored) = self.store.release(service, &version)? {
            if stored.spec != spec {
                return Err(StoreError::ReleaseMismatch {
                    service: service.to_string(),
                    version: version.to_string(),
                }
                .into());
            }
        }
        let Some(_deploying) = self.deploying.begin(service, &version) else {
            return Err(ControllerError::DeployInProgress {
                service: service.to_string(),
                version: version.to_string(),
            }
            .into());
        };

        let release = Release {
            service: service.clone(),
            version: version.clone(),
            spec,
            registered_at,
        };
        let handle = self.runtime.start(&release, Vec::new());
        let ready_timeout = Duration::from_millis(release.spec.ready_timeout_ms);
        if let Err(error) = handle.wait_ready(ready_timeout).await {
            self.runtime
                .stop(service.as_str(), &version.to_string(), false)
                .await;
            return Err(error.into());
        }

        // On a fleet a release enters as main only once every node has it
        // ready: it enters as standby, and is assigned after the wait.
        let replaces_main = self
            .current(service)
            .is_some_and(|r| r.state.main().is_some());
        let entering = if how == DeployAs::Main && replaces_main && self.reports().shared() {
            DeployAs::Standby
        } else {
            how
        };
        let committed = self
            .change_or_create(service, req.base_revision, actor, |current| {
                let state = deployed_state(
                    current,
                    service,
                    &version,
                    entering,
                    &hosts,
                    now_millis(),
                    &schema,
                    req.shadow_methods.as_deref(),
                    release.spec.protocol,
                )?;
                let role = state
                    .role_of(&version)
                    .map_or("?".into(), |r| r.to_string());
                Ok(Change::new(format!("deploy {version} as {role}"), state)
                    .registering(vec![release]))
            })
            .await;
        let committed = match committed {
            Ok(committed) => committed,
            Err(error) => {
                self.runtime
                    .stop(service.as_str(), &version.to_string(), false)
                    .await;
                return Err(error);
            }
        };
        // Every live node runs it now, or is about to: deploy returns when
        // each has it ready and routes by this revision.
        if let Err(error) = self
            .wait_ready_everywhere(service, &version, committed.number, ready_timeout)
            .await
        {
            self.withdraw(service, &version, actor).await;
            return Err(error);
        }
        if entering != how {
            let assigned = self
                .assign(service, &version.to_string(), None, actor)
                .await?;
            self.wait_ready_everywhere(service, &version, assigned.number, ready_timeout)
                .await?;
            return Ok(assigned);
        }
        Ok(committed)
    }

    /// Takes back a release the fleet could not get ready, so that no
    /// node keeps running it (a service's first release too: the service
    /// then answers 503 until the next deploy, as after `kill --all`).
    async fn withdraw(&self, service: &ServiceName, version: &Version, actor: &str) {
        let withdrawn = self
            .change(service, None, actor, |current| {
                let next = current.state.kill(service, version)?;
                Ok(Change::new(
                    format!("withdraw {version} (not ready on every node of the fleet)"),
                    next,
                ))
            })
            .await;
        match withdrawn {
            Ok(_) => {
                self.stop_drained(service, std::slice::from_ref(version))
                    .await
            }
            Err(error) => {
                tracing::error!(%service, %version, %error, "cannot withdraw a release the fleet could not get ready");
            }
        }
    }

    /// The service's current revision and the state it would have with the
    /// release added, after every check that needs no running instance.
    #[allow(clippy::too_many_arguments)]
    fn check_deployable(
        &self,
        service: &ServiceName,
        version: &Version,
        how: DeployAs,
        hosts: &[String],
        base_revision: Option<u64>,
        now: u64,
        schema: &Option<Version>,
        shadow_methods: Option<&[String]>,
        protocol: crate::model::Protocol,
    ) -> Result<(Option<Revision>, ServiceState)> {
        let current = self.current(service);
        Self::check_base(
            service,
            current.as_ref().map_or(0, |r| r.number),
            base_revision,
        )?;
        let next = deployed_state(
            current.as_ref(),
            service,
            version,
            how,
            hosts,
            now,
            schema,
            shadow_methods,
            protocol,
        )?;
        self.check_hosts(service, &next)?;
        Ok((current, next))
    }
}

/// The state a service has with the release added (a new service's first
/// state when there is no `current`). A release that becomes main of a
/// service with no recorded schema records its own (the database is taken
/// to be at it). `shadow_methods` limits a release entering as a shadow to
/// those methods.
#[allow(clippy::too_many_arguments)]
fn deployed_state(
    current: Option<&Revision>,
    service: &ServiceName,
    version: &Version,
    how: DeployAs,
    hosts: &[String],
    now: u64,
    schema: &Option<Version>,
    shadow_methods: Option<&[String]>,
    protocol: crate::model::Protocol,
) -> Result<ServiceState> {
    let state = current.map(|r| r.state.clone()).unwrap_or_default();
    let mut next = state
        .for_protocol(service, version, protocol)?
        .deploy(service, version, how, now)?
        .with_hosts(hosts)?;
    if next.schema.is_none() && next.main() == Some(version) {
        next = next.with_schema(schema.clone());
    }
    if let Some(methods) = shadow_methods {
        let role = next.role_of(version);
        if role != Some(Role::Shadow) {
            return Err(ModelError::InvalidSpec(format!(
                "--shadow-methods applies to a release that enters as a shadow, and {service} {version} would enter as {}; drop it",
                role.map_or_else(|| "?".to_owned(), |r| r.to_string())
            ))
            .into());
        }
        let settings = ShadowSettings {
            methods: methods.to_vec(),
            ..ShadowSettings::default()
        };
        next = next.set_shadow(service, version, settings)?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_being_deployed_is_refused_a_second_time_until_the_first_ends() {
        let deploying = Deploying::default();
        let service: ServiceName = "hello".parse().expect("a name");
        let version = Version::new(2, 0, 0);
        let first = deploying
            .begin(&service, &version)
            .expect("the first begins");
        assert!(deploying.begin(&service, &version).is_none());
        assert!(
            deploying.begin(&service, &version).is_none(),
            "a refused second deploy leaves the first's mark"
        );
        drop(first);
        assert!(deploying.begin(&service, &version).is_some());
    }
}
