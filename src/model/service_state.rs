use std::collections::{BTreeMap, BTreeSet};

use semver::Version;
use serde::{Deserialize, Serialize};

use super::{
    ApiVersionSource, AutoCertificates, Canary, ComparePolicy, ErrorPage, HttpsPolicy, ModelError,
    PrefixRewrite, Role, Rule, ServiceName, ShadowSettings, Stickiness, TrafficPolicy, rule_label,
};

/// A release's place in its service's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseEntry {
    pub role: Role,
    /// When the release took this role (unix ms).
    pub since: u64,
    /// How it receives mirrored copies while its role is shadow.
    #[serde(default)]
    pub shadow: ShadowSettings,
    /// Its own listen address (`IP:PORT`), served for as long as it runs:
    /// every request there goes to this release, whatever its role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<std::net::SocketAddr>,
}

/// How a newly deployed release enters its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeployAs {
    /// Main if it is the first release, otherwise shadow.
    #[default]
    Auto,
    Standby,
    /// Main at once (the emergency release); the old main goes to standby.
    Main,
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
    /// Who reaches which release: opt-in, rules, canary.
    #[serde(default)]
    pub policy: TrafficPolicy,
    /// Where requests name the API version they want.
    #[serde(default)]
    pub api_version: ApiVersionSource,
    /// The schema the service's database is at, as far as Switchyard
    /// moved it: set by the first release that declares one, then by
    /// each `migrate` / `migrate_down` hook that succeeds. A revision
    /// carries it, so a rollback knows which migrations to undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Version>,
    /// Whether answers through `/services/NAME/` have their links back
    /// to the application rewritten (on unless turned off).
    #[serde(default)]
    pub rewrite: PrefixRewrite,
    /// The page end users see when the proxy answers for the service
    /// itself; none: the proxy's neutral page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_page: Option<ErrorPage>,
    /// Redirect to HTTPS and HSTS (both off unless set).
    #[serde(default, skip_serializing_if = "HttpsPolicy::is_default")]
    pub https: HttpsPolicy,
    /// Certificates ordered from an ACME CA for every host name (none
    /// unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<AutoCertificates>,
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
            (Some(_), DeployAs::Standby | DeployAs::Main) => Role::Standby,
        };
        let mut next = self.clone();
        next.releases.insert(
            version.clone(),
            ReleaseEntry {
                role,
                since: now,
                shadow: ShadowSettings::default(),
                pinned: None,
            },
        );
        if how == DeployAs::Main && role != Role::Main {
            return next.assign(service, version, now);
        }
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
        // The new main is nobody's candidate any more.
        next.policy.forget_candidate(version);
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
        let rules = self.policy.rules_naming(version);
        if !rules.is_empty() {
            return Err(ModelError::RuleTargets {
                service: service.to_string(),
                version: version.to_string(),
                rules: rules.join(", "),
            });
        }
        let mut next = self.clone();
        next.releases.remove(version);
        next.policy.forget_candidate(version);
        Ok(next)
    }

    /// Removes every release; the service stops answering.
    pub fn kill_all(&self) -> ServiceState {
        ServiceState {
            releases: BTreeMap::new(),
            policy: TrafficPolicy {
                canary: None,
                green: None,
                rules: Vec::new(),
                ..self.policy.clone()
            },
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

    /// The state with another traffic policy, validated against the
    /// running releases; canary and green roles follow the policy (a
    /// release that loses either becomes standby).
    pub fn with_policy(&self, policy: TrafficPolicy, now: u64) -> Result<ServiceState, ModelError> {
        let running: Vec<&Version> = self.releases.keys().collect();
        policy.validate(&running, self.main())?;
        let mut next = self.clone();
        for (version, entry) in next.releases.iter_mut() {
            let role = if policy
                .canary
                .as_ref()
                .is_some_and(|c| &c.version == version)
            {
                Role::Canary
            } else if policy.green.as_ref() == Some(version) {
                Role::Green
            } else if matches!(entry.role, Role::Canary | Role::Green) {
                Role::Standby
            } else {
                entry.role
            };
            if role != entry.role {
                entry.role = role;
                entry.since = now;
            }
        }
        next.policy = policy;
        Ok(next)
    }

    /// Sends `percent` of clients to `version`. One canary at a time.
    pub fn set_canary(
        &self,
        service: &ServiceName,
        version: &Version,
        percent: u8,
        sticky: Option<Stickiness>,
        now: u64,
    ) -> Result<ServiceState, ModelError> {
        if !self.releases.contains_key(version) {
            return Err(self.unknown(service, version));
        }
        if let Some(current) = &self.policy.canary {
            if &current.version != version {
                return Err(ModelError::CanaryExists {
                    service: service.to_string(),
                    version: current.version.to_string(),
                });
            }
        }
        let mut policy = self.policy.clone();
        policy.canary = Some(Canary {
            version: version.clone(),
            percent,
        });
        if policy.green.as_ref() == Some(version) {
            policy.green = None;
        }
        if let Some(sticky) = sticky {
            policy.sticky = sticky;
        }
        self.with_policy(policy, now)
    }

    /// Ends the canary at once: every client back on main; the canary
    /// release stays running as standby.
    pub fn abort(&self, service: &ServiceName, now: u64) -> Result<ServiceState, ModelError> {
        if self.policy.canary.is_none() {
            return Err(ModelError::NoCanary {
                service: service.to_string(),
            });
        }
        let mut policy = self.policy.clone();
        policy.canary = None;
        self.with_policy(policy, now)
    }

    /// Marks a release as the opt-in candidate (or clears it).
    pub fn set_green(
        &self,
        service: &ServiceName,
        version: Option<&Version>,
        now: u64,
    ) -> Result<ServiceState, ModelError> {
        if let Some(v) = version {
            if !self.releases.contains_key(v) {
                return Err(self.unknown(service, v));
            }
        }
        let mut policy = self.policy.clone();
        policy.green = version.cloned();
        self.with_policy(policy, now)
    }

    /// Inserts a rule at `position` (1-based; default last).
    pub fn add_rule(
        &self,
        rule: Rule,
        position: Option<usize>,
        now: u64,
    ) -> Result<ServiceState, ModelError> {
        let mut policy = self.policy.clone();
        let at = position
            .map(|p| p.saturating_sub(1).min(policy.rules.len()))
            .unwrap_or(policy.rules.len());
        policy.rules.insert(at, rule);
        self.with_policy(policy, now)
    }

    /// Removes a rule named by its 1-based number or its name.
    pub fn remove_rule(
        &self,
        service: &ServiceName,
        selector: &str,
        now: u64,
    ) -> Result<ServiceState, ModelError> {
        let index = match selector.parse::<usize>() {
            Ok(n) if n >= 1 && n <= self.policy.rules.len() => Some(n - 1),
            _ => self
                .policy
                .rules
                .iter()
                .position(|r| !r.name.is_empty() && r.name == selector),
        };
        let Some(index) = index else {
            return Err(ModelError::UnknownRule {
                service: service.to_string(),
                selector: selector.to_owned(),
            });
        };
        let mut policy = self.policy.clone();
        policy.rules.remove(index);
        self.with_policy(policy, now)
    }

    /// Names the rules for listings.
    pub fn rule_labels(&self) -> Vec<String> {
        self.policy
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule_label(i, r))
            .collect()
    }

    /// Gives a release its own listen address (or takes it away).
    pub fn pin(
        &self,
        service: &ServiceName,
        version: &Version,
        address: Option<std::net::SocketAddr>,
    ) -> Result<ServiceState, ModelError> {
        if !self.releases.contains_key(version) {
            return Err(self.unknown(service, version));
        }
        if let Some(addr) = address {
            if addr.port() == 0 {
                return Err(ModelError::InvalidSpec(
                    "a pinned address needs a port other than 0".into(),
                ));
            }
            if let Some((other, _)) = self
                .releases
                .iter()
                .find(|(v, e)| *v != version && e.pinned == Some(addr))
            {
                return Err(ModelError::InvalidSpec(format!(
                    "{addr} is pinned to {service} {other} already"
                )));
            }
        }
        let mut next = self.clone();
        if let Some(entry) = next.releases.get_mut(version) {
            entry.pinned = address;
        }
        Ok(next)
    }

    /// Pinned addresses of the service's releases.
    pub fn pins(&self) -> impl Iterator<Item = (std::net::SocketAddr, &Version)> {
        self.releases
            .iter()
            .filter_map(|(v, e)| e.pinned.map(|a| (a, v)))
    }

    /// Reads the API version from another place.
    pub fn with_api_version(&self, source: ApiVersionSource) -> Result<ServiceState, ModelError> {
        source.validate()?;
        Ok(ServiceState {
            api_version: source,
            ..self.clone()
        })
    }

    /// The same state at another schema.
    pub fn with_schema(&self, schema: Option<Version>) -> ServiceState {
        ServiceState {
            schema,
            ..self.clone()
        }
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

impl ServiceState {
    /// Routes one more host name to the service (refused when it does
    /// already: a revision that changes nothing is noise).
    pub fn add_host(&self, service: &ServiceName, host: &str) -> Result<ServiceState, ModelError> {
        let host = normalize_host(host)?;
        if self.hosts.contains(&host) {
            return Err(ModelError::HostAlreadyHere {
                service: service.to_string(),
                host,
            });
        }
        let mut next = self.clone();
        next.hosts.insert(host);
        Ok(next)
    }

    /// Stops routing a host name to the service.
    pub fn remove_host(
        &self,
        service: &ServiceName,
        host: &str,
    ) -> Result<ServiceState, ModelError> {
        let wanted = host.trim().to_ascii_lowercase();
        if !self.hosts.contains(&wanted) {
            let hosts = if self.hosts.is_empty() {
                "none".to_owned()
            } else {
                self.hosts.iter().cloned().collect::<Vec<_>>().join(", ")
            };
            return Err(ModelError::UnknownHost {
                service: service.to_string(),
                host: host.to_owned(),
                hosts,
            });
        }
        let mut next = self.clone();
        next.hosts.remove(&wanted);
        Ok(next)
    }

    /// Replaces the service's HTTPS policy.
    pub fn with_https(&self, https: HttpsPolicy) -> ServiceState {
        ServiceState {
            https,
            ..self.clone()
        }
    }

    /// Orders certificates for the service's host names from an ACME CA
    /// (`Some`), or stops doing so.
    pub fn with_certificates(&self, certificates: Option<AutoCertificates>) -> ServiceState {
        ServiceState {
            certificates,
            ..self.clone()
        }
    }

    /// Turns the rewriting of links through the path prefix on or off.
    pub fn with_rewrite(&self, rewrite: PrefixRewrite) -> ServiceState {
        ServiceState {
            rewrite,
            ..self.clone()
        }
    }

    /// Replaces the service's error page (`None`: the neutral one).
    pub fn with_error_page(&self, page: Option<ErrorPage>) -> Result<ServiceState, ModelError> {
        if let Some(page) = &page {
            page.validate()?;
        }
        Ok(ServiceState {
            error_page: page,
            ..self.clone()
        })
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

    fn two() -> ServiceState {
        ServiceState::default()
            .deploy(&name(), &v("1.0.0"), DeployAs::Auto, 1)
            .and_then(|s| s.deploy(&name(), &v("2.0.0"), DeployAs::Auto, 2))
            .expect("deploys")
    }

    #[test]
    fn canary_takes_the_canary_role_and_abort_makes_it_standby() {
        let s = two()
            .set_canary(&name(), &v("2.0.0"), 10, None, 3)
            .expect("canary");
        assert_eq!(s.role_of(&v("2.0.0")), Some(Role::Canary));
        let err = s
            .deploy(&name(), &v("3.0.0"), DeployAs::Auto, 4)
            .and_then(|s| s.set_canary(&name(), &v("3.0.0"), 5, None, 5))
            .expect_err("one canary at a time");
        assert!(matches!(err, ModelError::CanaryExists { .. }));
        let s = s.abort(&name(), 6).expect("abort");
        assert_eq!(s.role_of(&v("2.0.0")), Some(Role::Standby));
        assert!(s.policy.canary.is_none());
        assert!(s.abort(&name(), 7).is_err());
    }

    #[test]
    fn assigning_the_canary_ends_the_canary() {
        let s = two()
            .set_canary(&name(), &v("2.0.0"), 50, None, 3)
            .and_then(|s| s.assign(&name(), &v("2.0.0"), 4))
            .expect("promote");
        assert_eq!(s.main(), Some(&v("2.0.0")));
        assert!(s.policy.canary.is_none());
    }

    #[test]
    fn a_release_that_rules_send_traffic_to_cannot_be_killed() {
        let rule = Rule {
            name: "beta".into(),
            matches: vec![],
            action: crate::model::Action::Route { to: v("2.0.0") },
        };
        let s = two().add_rule(rule, None, 3).expect("rule");
        let err = s.kill(&name(), &v("2.0.0")).expect_err("targeted");
        assert!(err.to_string().contains("beta"), "{err}");
        let s = s.remove_rule(&name(), "beta", 4).expect("remove by name");
        assert!(s.kill(&name(), &v("2.0.0")).is_ok());
        assert!(s.remove_rule(&name(), "1", 5).is_err());
    }

    #[test]
    fn hosts_are_added_and_removed_one_at_a_time() {
        let s = two().add_host(&name(), "App.Example.com").expect("add");
        assert!(s.hosts.contains("app.example.com"));
        assert!(matches!(
            s.add_host(&name(), "app.example.com"),
            Err(ModelError::HostAlreadyHere { .. })
        ));
        let err = s.remove_host(&name(), "b.example.com").expect_err("absent");
        assert!(err.to_string().contains("app.example.com"), "{err}");
        let s = s.remove_host(&name(), "APP.example.com").expect("remove");
        assert!(s.hosts.is_empty());
    }

    #[test]
    fn states_stored_before_the_rewrite_setting_rewrite() {
        let back: ServiceState = serde_json::from_str("{}").expect("parse");
        assert_eq!(back.rewrite, PrefixRewrite::On);
        assert!(back.error_page.is_none());
    }

    #[test]
    fn host_names_are_validated() {
        assert!(normalize_host("a.example.com").is_ok());
        assert!(normalize_host("a..b").is_err());
        assert!(normalize_host("a/b").is_err());
    }
}
