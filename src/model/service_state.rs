use std::collections::{BTreeMap, BTreeSet};

use semver::Version;
use serde::{Deserialize, Serialize};

use super::{ComparePolicy, ModelError, Role, ServiceName, ShadowSettings};

/// A release's place in its service's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseEntry {
    pub role: Role,
    /// When the release took this role (unix ms).
    pub since: u64,
    /// How it receives mirrored copies while its role is shadow.
    #[serde(default)]
    pub shadow: ShadowSettings,
}

/// How a newly deployed release enters its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeployAs {
    /// Main if it is the first release, otherwise shadow.
    #[default]
    Auto,
    Standby,
}

/// The desired state of one service: which releases run, in which role,
/// and the host names routed to it. Every change makes a new value; the
/// transitions below are the only way to change it and check every rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    #[serde(default)]
    pub hosts: BTreeSet<String>,
    #[serde(default)]
    pub releases: BTreeMap<Version, ReleaseEntry>,
    /// How shadows' answers are compared with main's.
    #[serde(default)]
    pub compare: ComparePolicy,
}

impl ServiceState {
    pub fn main(&self) -> Option<&Version> {
        self.releases
            .iter()
            .find(|(_, e)| e.role == Role::Main)
            .map(|(v, _)| v)
    }

    pub fn role_of(&self, version: &Version) -> Option<Role> {
        self.releases.get(version).map(|e| e.role)
    }

    fn known(&self) -> String {
        if self.releases.is_empty() {
            "none".to_owned()
        } else {
            self.releases
                .keys()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    fn unknown(&self, service: &ServiceName, version: &Version) -> ModelError {
        ModelError::UnknownRelease {
            service: service.to_string(),
            version: version.to_string(),
            known: self.known(),
        }
    }

    /// Adds a release; the first release of a service becomes main.
    pub fn deploy(
        &self,
        service: &ServiceName,
        version: &Version,
        how: DeployAs,
        now: u64,
    ) -> Result<ServiceState, ModelError> {
        if self.releases.contains_key(version) {
            return Err(ModelError::ReleaseExists {
                service: service.to_string(),
                version: version.to_string(),
            });
        }
        let role = match (self.main(), how) {
            (None, _) => Role::Main,
            (Some(_), DeployAs::Auto) => Role::Shadow,
            (Some(_), DeployAs::Standby) => Role::Standby,
        };
        let mut next = self.clone();
        next.releases.insert(
            version.clone(),
            ReleaseEntry {
                role,
                since: now,
                shadow: ShadowSettings::default(),
            },
        );
        Ok(next)
    }

    /// Makes `version` main; the old main becomes standby.
    pub fn assign(
        &self,
        service: &ServiceName,
        version: &Version,
        now: u64,
    ) -> Result<ServiceState, ModelError> {
        match self.role_of(version) {
            None => return Err(self.unknown(service, version)),
            Some(Role::Main) => {
                return Err(ModelError::AlreadyMain {
                    service: service.to_string(),
                    version: version.to_string(),
                });
            }
            Some(_) => {}
        }
        let mut next = self.clone();
        for (v, entry) in next.releases.iter_mut() {
            if v == version {
                entry.role = Role::Main;
                entry.since = now;
            } else if entry.role == Role::Main {
                entry.role = Role::Standby;
                entry.since = now;
            }
        }
        Ok(next)
    }

    /// Removes a release. Main can go only when it is the last one.
    pub fn kill(
        &self,
        service: &ServiceName,
        version: &Version,
    ) -> Result<ServiceState, ModelError> {
        let role = self
            .role_of(version)
            .ok_or_else(|| self.unknown(service, version))?;
        if role == Role::Main && self.releases.len() > 1 {
            let others = self
                .releases
                .keys()
                .filter(|v| *v != version)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ModelError::MainHasOthers {
                service: service.to_string(),
                version: version.to_string(),
                others,
            });
        }
        let mut next = self.clone();
        next.releases.remove(version);
        Ok(next)
    }

    /// Removes every release; the service stops answering.
    pub fn kill_all(&self) -> ServiceState {
        ServiceState {
            releases: BTreeMap::new(),
            ..self.clone()
        }
    }

    /// Changes how a release is mirrored to (while it is a shadow).
    pub fn set_shadow(
        &self,
        service: &ServiceName,
        version: &Version,
        settings: ShadowSettings,
    ) -> Result<ServiceState, ModelError> {
        settings.validate()?;
        let mut next = self.clone();
        match next.releases.get_mut(version) {
            Some(entry) => entry.shadow = settings,
            None => return Err(self.unknown(service, version)),
        }
        Ok(next)
    }

    /// Changes how shadows' answers are compared with main's.
    pub fn set_compare(&self, compare: ComparePolicy) -> Result<ServiceState, ModelError> {
        compare.validate()?;
        Ok(ServiceState {
            compare,
            ..self.clone()
        })
    }

    /// Releases that receive mirrored copies: shadows with mirroring on.
    pub fn mirrored(&self) -> impl Iterator<Item = (&Version, &ShadowSettings)> {
        self.releases
            .iter()
            .filter(|(_, e)| {
                e.role == Role::Shadow && e.shadow.enabled && e.shadow.sample_percent > 0
            })
            .map(|(v, e)| (v, &e.shadow))
    }

    /// Adds host names routed to this service.
    pub fn with_hosts(&self, hosts: &[String]) -> Result<ServiceState, ModelError> {
        let mut next = self.clone();
        for h in hosts {
            next.hosts.insert(normalize_host(h)?);
        }
        Ok(next)
    }
}

/// Lower-cases a host name and checks it is a plausible DNS name.
pub fn normalize_host(host: &str) -> Result<String, ModelError> {
    let h = host.trim().to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(h)
    } else {
        Err(ModelError::InvalidHost(host.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> ServiceName {
        "hello".parse().expect("valid name")
    }

    fn v(s: &str) -> Version {
        Version::parse(s).expect("valid version")
    }

    #[test]
    fn first_release_is_main_and_later_ones_are_shadows() {
        let s = ServiceState::default()
            .deploy(&name(), &v("1.0.0"), DeployAs::Auto, 1)
            .and_then(|s| s.deploy(&name(), &v("2.0.0"), DeployAs::Auto, 2))
            .and_then(|s| s.deploy(&name(), &v("3.0.0"), DeployAs::Standby, 3))
            .expect("deploys");
        assert_eq!(s.role_of(&v("1.0.0")), Some(Role::Main));
        assert_eq!(s.role_of(&v("2.0.0")), Some(Role::Shadow));
        assert_eq!(s.role_of(&v("3.0.0")), Some(Role::Standby));
    }

    #[test]
    fn assign_keeps_old_main_as_standby() {
        let s = ServiceState::default()
            .deploy(&name(), &v("1.0.0"), DeployAs::Auto, 1)
            .and_then(|s| s.deploy(&name(), &v("2.0.0"), DeployAs::Auto, 2))
            .and_then(|s| s.assign(&name(), &v("2.0.0"), 3))
            .expect("assign");
        assert_eq!(s.main(), Some(&v("2.0.0")));
        assert_eq!(s.role_of(&v("1.0.0")), Some(Role::Standby));
    }

    #[test]
    fn main_cannot_be_killed_while_others_run() {
        let s = ServiceState::default()
            .deploy(&name(), &v("1.0.0"), DeployAs::Auto, 1)
            .and_then(|s| s.deploy(&name(), &v("2.0.0"), DeployAs::Auto, 2))
            .expect("deploys");
        let err = s.kill(&name(), &v("1.0.0")).expect_err("main with others");
        assert!(err.to_string().contains("2.0.0"), "{err}");
        let s = s.kill(&name(), &v("2.0.0")).expect("shadow can go");
        let s = s.kill(&name(), &v("1.0.0")).expect("main alone can go");
        assert!(s.releases.is_empty());
    }

    #[test]
    fn deploying_an_existing_version_is_refused() {
        let s = ServiceState::default()
            .deploy(&name(), &v("1.0.0"), DeployAs::Auto, 1)
            .expect("deploy");
        assert!(matches!(
            s.deploy(&name(), &v("1.0.0"), DeployAs::Auto, 2),
            Err(ModelError::ReleaseExists { .. })
        ));
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = ServiceState::default()
            .deploy(&name(), &v("1.0.0-rc.1"), DeployAs::Auto, 1)
            .and_then(|s| s.with_hosts(&["App.Example.com".into()]))
            .expect("state");
        let json = serde_json::to_string(&s).expect("serialize");
        let back: ServiceState = serde_json::from_str(&json).expect("parse");
        assert_eq!(s, back);
        assert!(back.hosts.contains("app.example.com"));
    }

    #[test]
    fn host_names_are_validated() {
        assert!(normalize_host("a.example.com").is_ok());
        assert!(normalize_host("a..b").is_err());
        assert!(normalize_host("a/b").is_err());
    }
}
