use std::collections::BTreeMap;
use std::path::PathBuf;

use semver::Version;
use serde::{Deserialize, Serialize};

use super::{HealthCheck, ModelError, ServiceName};

/// The most replicas one release may ask for.
pub const MAX_REPLICAS: u32 = 64;

/// How to run a release. Immutable once registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    pub run: RunSpec,
    /// Instances to run (for `External`, the number of upstream addresses).
    pub replicas: u32,
    pub health: HealthCheck,
    /// How long a deploy waits for every replica to become healthy.
    pub ready_timeout_ms: u64,
}

/// Where a release's instances come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RunSpec {
    /// Local processes started by Switchyard. `{port}` in the arguments is
    /// replaced by the instance's port, which is also in `PORT`.
    Process {
        command: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Working directory; relative command paths resolve against it.
        cwd: PathBuf,
    },
    /// Instances that run elsewhere: health-checked and routed to, never
    /// started or stopped.
    External { upstreams: Vec<String> },
}

impl ReleaseSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidSpec(m));
        self.health.validate()?;
        if self.ready_timeout_ms == 0 {
            return bad("the ready timeout must be more than zero".into());
        }
        match &self.run {
            RunSpec::Process { command, env, cwd } => {
                if command.first().is_none_or(|c| c.is_empty()) {
                    return bad("no command given: put it after `--`, e.g. `switchyard deploy hello 1.0.0 -- ./hello-server --port {port}`".into());
                }
                if self.replicas == 0 || self.replicas > MAX_REPLICAS {
                    return bad(format!("replicas must be between 1 and {MAX_REPLICAS}"));
                }
                if !cwd.is_absolute() {
                    return bad(format!(
                        "the working directory `{}` must be an absolute path",
                        cwd.display()
                    ));
                }
                if let Some(k) = env.keys().find(|k| k.is_empty() || k.contains('=')) {
                    return bad(format!("environment variable name `{k}` is invalid"));
                }
            }
            RunSpec::External { upstreams } => {
                if upstreams.is_empty() {
                    return bad(
                        "an external release needs at least one --upstream HOST:PORT".into(),
                    );
                }
                if self.replicas as usize != upstreams.len() {
                    return bad("an external release has one replica per upstream address".into());
                }
                for u in upstreams {
                    let ok = u.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok {
                        return bad(format!(
                            "upstream `{u}` is not HOST:PORT, e.g. 10.0.0.5:8080"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn is_external(&self) -> bool {
        matches!(self.run, RunSpec::External { .. })
    }
}

/// A version of a service with the spec that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub service: ServiceName,
    pub version: Version,
    pub spec: ReleaseSpec,
    /// When the release was first registered (unix ms).
    pub registered_at: u64,
}

impl Release {
    /// `NAME_VERSION`, the release's own address under `/services/`.
    pub fn address_name(&self) -> String {
        format!("{}_{}", self.service, self.version)
    }
}

/// Parses a semantic version with an error that says what to type.
pub fn parse_version(s: &str) -> Result<Version, ModelError> {
    Version::parse(s).map_err(|e| ModelError::InvalidVersion {
        given: s.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(command: &[&str]) -> ReleaseSpec {
        ReleaseSpec {
            run: RunSpec::Process {
                command: command.iter().map(|s| s.to_string()).collect(),
                env: BTreeMap::new(),
                cwd: PathBuf::from("/tmp"),
            },
            replicas: 1,
            health: HealthCheck::default(),
            ready_timeout_ms: 1000,
        }
    }

    #[test]
    fn process_spec_needs_a_command() {
        assert!(process(&[]).validate().is_err());
        assert!(process(&["./x"]).validate().is_ok());
    }

    #[test]
    fn external_spec_needs_host_port_addresses() {
        let mut spec = process(&["x"]);
        spec.run = RunSpec::External {
            upstreams: vec!["127.0.0.1:80".into()],
        };
        assert!(spec.validate().is_ok());
        spec.run = RunSpec::External {
            upstreams: vec!["127.0.0.1".into()],
        };
        assert!(spec.validate().is_err());
    }

    #[test]
    fn versions_must_be_semver() {
        assert!(parse_version("1.2.3-rc.1").is_ok());
        assert!(parse_version("1.2").is_err());
        assert!(parse_version("v1.0.0").is_err());
    }
}
