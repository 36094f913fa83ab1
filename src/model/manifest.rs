//! `switchyard.toml`: what a project folder says about how to run it.
//!
//! ```toml
//! name = "hello"                       # optional; when set, deploy checks it
//! version = "1.0.0"                    # optional; when set, deploy checks it
//! command = ["python3", "app.py", "--port", "{port}"]
//! replicas = 2                         # default 1
//! [env]
//! GREETING = "hi"
//! [health]
//! path = "/healthz"                    # default "/"
//! interval = "1s"                      # also timeout, healthy_threshold, unhealthy_threshold
//! ```
//!
//! The command runs with the folder as its working directory; `{port}`
//! becomes the instance's port, which is also in `PORT`. Fields that later
//! releases of Switchyard read (`api_versions`, `schema_version`,
//! `runs_on_schemas`, `hooks`, `changelog`) are accepted and not used yet;
//! any other field is refused, so a typo does not pass silently.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{HealthCheck, ModelError};

/// The manifest's file name inside a project folder.
pub const MANIFEST_FILE: &str = "switchyard.toml";

/// Top-level fields read now.
const KNOWN: &[&str] = &["name", "version", "command", "replicas", "env", "health"];
/// Top-level fields reserved for versioned releases; accepted, not used yet.
const RESERVED: &[&str] = &[
    "api_versions",
    "schema_version",
    "runs_on_schemas",
    "hooks",
    "changelog",
];

/// A parsed `switchyard.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    pub name: Option<String>,
    pub version: Option<String>,
    /// The program and its arguments; `{port}` becomes the instance's port.
    #[serde(default)]
    pub command: Vec<String>,
    pub replicas: Option<u32>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub health: ManifestHealth,
}

/// The `[health]` table; what is left out keeps its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestHealth {
    pub path: Option<String>,
    /// A duration such as `1s` or `500ms`.
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

impl Manifest {
    /// Parses and checks a manifest's text.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::InvalidManifest(m);
        let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if let Some(key) = table
            .keys()
            .find(|k| !KNOWN.contains(&k.as_str()) && !RESERVED.contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown field `{key}`; the fields are {}",
                KNOWN.join(", ")
            )));
        }
        let manifest: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        manifest.health_check()?;
        Ok(manifest)
    }

    /// Refuses a manifest that names another service or version than the
    /// one being deployed.
    pub fn check_identity(&self, name: &str, version: &str) -> Result<(), ModelError> {
        let mismatch = |field: &str, theirs: &str, ours: &str| {
            ModelError::InvalidManifest(format!(
                "it says {field} = \"{theirs}\" but you are deploying {ours}; fix one of them"
            ))
        };
        if let Some(theirs) = self.name.as_deref().filter(|n| *n != name) {
            return Err(mismatch("name", theirs, name));
        }
        let ours = super::parse_version(version)?;
        if let Some(theirs) = &self.version {
            let same = super::parse_version(theirs).is_ok_and(|v| v == ours);
            if !same {
                return Err(mismatch("version", theirs, version));
            }
        }
        Ok(())
    }

    /// The health check: the manifest's values over the defaults.
    pub fn health_check(&self) -> Result<HealthCheck, ModelError> {
        let mut check = HealthCheck::default();
        let h = &self.health;
        if let Some(path) = &h.path {
            check.path.clone_from(path);
        }
        if let Some(interval) = &h.interval {
            check.interval_ms = millis("health.interval", interval)?;
        }
        if let Some(timeout) = &h.timeout {
            check.timeout_ms = millis("health.timeout", timeout)?;
        }
        if let Some(n) = h.healthy_threshold {
            check.healthy_threshold = n;
        }
        if let Some(n) = h.unhealthy_threshold {
            check.unhealthy_threshold = n;
        }
        check.validate()?;
        Ok(check)
    }
}

fn millis(field: &str, text: &str) -> Result<u64, ModelError> {
    humantime::parse_duration(text)
        .map(|d: Duration| d.as_millis() as u64)
        .map_err(|e| {
            ModelError::InvalidManifest(format!(
                "{field} = \"{text}\" is not a duration ({e}); write e.g. \"1s\" or \"500ms\""
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_manifest_takes_defaults() {
        let m = Manifest::parse(r#"command = ["./server"]"#).expect("valid");
        assert_eq!(m.command, vec!["./server"]);
        assert_eq!(m.replicas, None);
        assert_eq!(m.health_check().expect("health"), HealthCheck::default());
    }

    #[test]
    fn full_manifest_reads_every_field() {
        let m = Manifest::parse(
            r#"
            name = "hello"
            version = "1.2.0"
            command = ["python3", "app.py"]
            replicas = 3
            [env]
            GREETING = "hi"
            [health]
            path = "/healthz"
            interval = "500ms"
            timeout = "1s"
            healthy_threshold = 1
            unhealthy_threshold = 5
            "#,
        )
        .expect("valid");
        assert_eq!(m.replicas, Some(3));
        assert_eq!(m.env["GREETING"], "hi");
        let h = m.health_check().expect("health");
        assert_eq!(
            (h.path.as_str(), h.interval_ms, h.timeout_ms),
            ("/healthz", 500, 1000)
        );
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (1, 5));
        assert!(m.check_identity("hello", "1.2.0").is_ok());
        assert!(m.check_identity("other", "1.2.0").is_err());
        assert!(m.check_identity("hello", "1.3.0").is_err());
    }

    #[test]
    fn the_versioned_release_example_is_accepted() {
        // The manifest of versioned releases (api_versions, schemas, hooks)
        // must parse today, so folders written for it deploy as they are.
        let m = Manifest::parse(
            r#"
            name = "hub"
            version = "1.0.2"
            command = ["./hub-server", "--port", "{port}"]
            api_versions = ["v1", "v2"]
            schema_version = "1.0.1"
            runs_on_schemas = ["1.0.1", "2.0.0"]
            [health]
            path = "/healthz"
            [hooks]
            backup = ["./backup.sh"]
            migrate = ["./migrate.sh", "up"]
            migrate_down = ["./migrate.sh", "down"]
            "#,
        )
        .expect("valid");
        assert_eq!(m.command[0], "./hub-server");
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_field() {
        let e = Manifest::parse(r#"comand = ["x"]"#).expect_err("unknown field");
        assert!(e.to_string().contains("`comand`"), "{e}");
        let e = Manifest::parse("[health]\npath = \"healthz\"").expect_err("bad path");
        assert!(e.to_string().contains("must start with '/'"), "{e}");
        let e = Manifest::parse("[health]\ninterval = \"soon\"").expect_err("bad duration");
        assert!(e.to_string().contains("health.interval"), "{e}");
        let e = Manifest::parse("[health]\npaht = \"/\"").expect_err("unknown health field");
        assert!(e.to_string().contains("paht"), "{e}");
        assert!(Manifest::parse("replicas = \"two\"").is_err());
    }
}
