use std::collections::BTreeMap;
use std::path::PathBuf;

use semver::Version;
use serde::{Deserialize, Serialize};

use super::{
    HealthCheck, ModelError, Protocol, ProxyHeader, ServiceName, UpstreamAddress, Versioning,
};

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
    /// API versions, schema, hooks and changelog from `switchyard.toml`;
    /// absent in specs stored before versioned releases.
    #[serde(default, skip_serializing_if = "Versioning::is_empty")]
    pub versioning: Versioning,
    /// What its clients speak (`deploy --protocol`); HTTP unless set.
    #[serde(default, skip_serializing_if = "Protocol::is_http")]
    pub protocol: Protocol,
    /// For a TCP release: the PROXY protocol header each connection to an
    /// instance starts with (`deploy --proxy-protocol v1|v2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyHeader>,
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
    /// started or stopped. An `https://HOST:PORT` one is reached over TLS,
    /// verified against the system's CAs and `upstream_ca`.
    External {
        upstreams: Vec<String>,
        /// PEM CA certificates trusted for TLS upstreams besides the
        /// system's (`deploy --upstream-ca FILE`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream_ca: Option<String>,
    },
    /// Containers of a local image on the Docker Engine. Each one publishes
    /// `port` (inside the container) on a free port of 127.0.0.1, where the
    /// proxy reaches it.
    Container(ContainerSpec),
}

/// How the containers of a release are made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The image as the user named it (`NAME[:TAG]` or an image id).
    pub image: String,
    /// The image's id when the release was registered: every instance, and
    /// every restart, runs that image even if the tag moves meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Replaces the image's `CMD` when not empty; `{port}` becomes the
    /// container port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The port the service listens on inside the container (also in
    /// `PORT`). Default: the image's one exposed TCP port, else 8080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU limit in thousandths of a CPU (1500 = 1.5 CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millicpus: Option<u32>,
    /// Mounts, as `SOURCE:TARGET[:ro|rw]`: SOURCE is an absolute host path
    /// or a named volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
}

/// Docker refuses memory limits below 6 MiB.
const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

impl ContainerSpec {
    /// The image reference containers are created from.
    pub fn image_ref(&self) -> &str {
        self.image_id.as_deref().unwrap_or(&self.image)
    }

    fn validate(&self) -> Result<(), String> {
        if self.image.trim().is_empty() {
            return Err("no image given: use --image NAME[:TAG]".into());
        }
        if self.port == Some(0) {
            return Err("the container port must be between 1 and 65535".into());
        }
        if self.memory_bytes.is_some_and(|m| m < MIN_MEMORY_BYTES) {
            return Err("the memory limit must be at least 6m (Docker refuses less)".into());
        }
        if self.millicpus == Some(0) {
            return Err("the CPU limit must be more than zero, e.g. --cpus 0.5".into());
        }
        check_env(&self.env)?;
        for volume in &self.volumes {
            check_volume(volume)?;
        }
        Ok(())
    }
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    match env.keys().find(|k| k.is_empty() || k.contains('=')) {
        Some(k) => Err(format!("environment variable name `{k}` is invalid")),
        None => Ok(()),
    }
}

/// `SOURCE:TARGET[:ro|rw]`, SOURCE an absolute path or a volume name.
fn check_volume(volume: &str) -> Result<(), String> {
    let parts: Vec<&str> = volume.split(':').collect();
    let bad = |why: &str| {
        Err(format!(
            "volume `{volume}` {why}; use SOURCE:TARGET[:ro], e.g. /srv/data:/data:ro or cache:/cache"
        ))
    };
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        _ => return bad("is not SOURCE:TARGET[:MODE]"),
    };
    let named = source
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && source
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !source.starts_with('/') && !named {
        return bad("has a source that is neither an absolute path nor a volume name");
    }
    if !target.starts_with('/') {
        return bad("has a target that is not an absolute path");
    }
    if mode.is_some_and(|m| m != "ro" && m != "rw") {
        return bad("has a mode other than ro or rw");
    }
    Ok(())
}

impl ReleaseSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidSpec(m));
        self.health.validate()?;
        self.versioning.validate()?;
        if self.proxy_protocol.is_some() && self.protocol.is_http() {
            return bad("--proxy-protocol applies to TCP releases: add --protocol tcp (HTTP releases get X-Forwarded-For instead)".into());
        }
        if self.protocol.is_http() && self.health.port.is_none() && !self.health.command.is_empty()
        {
            return bad("a health command applies to TCP releases: HTTP releases are checked with GET of --health".into());
        }
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
                check_env(env).map_err(ModelError::InvalidSpec)?;
            }
            RunSpec::Container(container) => {
                if self.replicas == 0 || self.replicas > MAX_REPLICAS {
                    return bad(format!("replicas must be between 1 and {MAX_REPLICAS}"));
                }
                container.validate().map_err(ModelError::InvalidSpec)?;
            }
            RunSpec::External {
                upstreams,
                upstream_ca,
            } => {
                if upstreams.is_empty() {
                    return bad(
                        "an external release needs at least one --upstream HOST:PORT".into(),
                    );
                }
                if self.replicas as usize != upstreams.len() {
                    return bad("an external release has one replica per upstream address".into());
                }
                if !self.versioning.hooks.is_empty() {
                    return bad(
                        "an external release runs elsewhere, so Switchyard cannot run its hooks; drop [hooks] and run its backups and migrations where it runs, or run it as a process or container release".into(),
                    );
                }
                for u in upstreams {
                    UpstreamAddress::parse(u).map_err(ModelError::InvalidSpec)?;
                }
                if let Some(pem) = upstream_ca {
                    check_ca_pem(pem).map_err(ModelError::InvalidSpec)?;
                }
            }
        }
        Ok(())
    }

    pub fn is_external(&self) -> bool {
        matches!(self.run, RunSpec::External { .. })
    }
}

/// Refuses CA text that holds no PEM certificate.
fn check_ca_pem(pem: &str) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the upstream CA is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(
            "the upstream CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        );
    }
    Ok(())
}

impl RunSpec {
    /// `process`, `external` or `container`, as `ls` shows it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            RunSpec::Process { .. } => "process",
            RunSpec::External { .. } => "external",
            RunSpec::Container(_) => "container",
        }
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
            versioning: Versioning::default(),
            protocol: Protocol::Http,
            proxy_protocol: None,
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
            upstream_ca: None,
        };
        assert!(spec.validate().is_ok());
        spec.run = RunSpec::External {
            upstreams: vec!["127.0.0.1".into()],
            upstream_ca: None,
        };
        assert!(spec.validate().is_err());
    }

    #[test]
    fn hooks_are_refused_for_an_external_release_only() {
        let hooks = |mut spec: ReleaseSpec| {
            spec.versioning.schema_version = Some(Version::new(1, 0, 0));
            spec.versioning.hooks.migrate = vec!["./migrate".into()];
            spec
        };
        assert!(hooks(process(&["x"])).validate().is_ok());
        assert!(hooks(container("hub:1")).validate().is_ok());
        let mut external = process(&["x"]);
        external.run = RunSpec::External {
            upstreams: vec!["127.0.0.1:80".into()],
            upstream_ca: None,
        };
        let err = hooks(external).validate().expect_err("external with hooks");
        assert!(err.to_string().contains("cannot run its hooks"), "{err}");
    }

    fn container(image: &str) -> ReleaseSpec {
        let mut spec = process(&["x"]);
        spec.run = RunSpec::Container(ContainerSpec {
            image: image.into(),
            image_id: None,
            command: vec![],
            env: BTreeMap::new(),
            port: None,
            memory_bytes: None,
            millicpus: None,
            volumes: vec![],
        });
        spec
    }

    fn with_container(mut spec: ReleaseSpec, f: impl FnOnce(&mut ContainerSpec)) -> ReleaseSpec {
        if let RunSpec::Container(c) = &mut spec.run {
            f(c);
        }
        spec
    }

    #[test]
    fn container_spec_needs_an_image_and_sane_limits() {
        assert!(container("hello:1").validate().is_ok());
        assert!(container(" ").validate().is_err());
        assert!(
            with_container(container("x"), |c| c.memory_bytes = Some(1024))
                .validate()
                .is_err()
        );
        assert!(
            with_container(container("x"), |c| c.millicpus = Some(0))
                .validate()
                .is_err()
        );
        assert!(
            with_container(container("x"), |c| c.port = Some(0))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn volumes_are_source_target_and_optional_mode() {
        for ok in ["/srv/data:/data", "/srv:/data:ro", "cache:/cache:rw"] {
            assert!(check_volume(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/srv",
            "relative/dir:/data",
            "/srv:data",
            "/a:/b:rx",
            "/a:/b:ro:x",
        ] {
            assert!(check_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_specs_keep_their_shape() {
        // Specs are stored as JSON; the kinds that existed before
        // containers must read back unchanged.
        let json = r#"{"kind":"process","command":["x"],"env":{},"cwd":"/tmp"}"#;
        let run: RunSpec = serde_json::from_str(json).expect("process spec");
        assert_eq!(run.kind_name(), "process");
        let json = r#"{"kind":"container","image":"hello:1"}"#;
        let run: RunSpec = serde_json::from_str(json).expect("container spec");
        let RunSpec::Container(c) = &run else {
            panic!("not a container: {run:?}");
        };
        assert_eq!(c.image_ref(), "hello:1");
        let back = serde_json::to_string(&run).expect("serialize");
        assert_eq!(back, r#"{"kind":"container","image":"hello:1","env":{}}"#);
    }

    #[test]
    fn versions_must_be_semver() {
        assert!(parse_version("1.2.3-rc.1").is_ok());
        assert!(parse_version("1.2").is_err());
        assert!(parse_version("v1.0.0").is_err());
    }
}
