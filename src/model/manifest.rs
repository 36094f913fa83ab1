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
//! Versioned releases add what they promise about compatibility:
//!
//! ```toml
//! api_versions = ["v1", "v2"]          # API versions served (v2, v1.1, 2.0)
//! schema_version = "1.0.1"             # the schema this release migrates to
//! runs_on_schemas = ["1.0.1", "2.0.0"] # schemas it can run against (default: its own)
//! changelog = "adds API v2"
//! [hooks]                              # with the release's env: in the folder, or in a container of its image
//! backup = ["./backup.sh"]             # before the schema changes
//! migrate = ["./migrate.sh", "up"]     # moves the schema to schema_version
//! migrate_down = ["./migrate.sh", "down"]  # optional; without it no way back
//! ```
//!
//! The command runs with the folder as its working directory; `{port}`
//! becomes the instance's port, which is also in `PORT`. Any other field is
//! refused, so a typo does not pass silently.

use std::collections::BTreeMap;
use std::time::Duration;

use semver::Version;
use serde::Deserialize;

use super::{ApiVersion, HealthCheck, Hooks, ModelError, Versioning};

/// The manifest's file name inside a project folder.
pub const MANIFEST_FILE: &str = "switchyard.toml";

/// The top-level fields.
const KNOWN: &[&str] = &[
    "name",
    "version",
    "command",
    "replicas",
    "env",
    "health",
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
    /// API versions served, e.g. `["v1", "v2"]`.
    #[serde(default)]
    pub api_versions: Vec<String>,
    /// The schema this release migrates the database to (semver).
    pub schema_version: Option<String>,
    /// The schemas it can run against (semver); default its own.
    #[serde(default)]
    pub runs_on_schemas: Vec<String>,
    #[serde(default)]
    pub hooks: ManifestHooks,
    pub changelog: Option<String>,
}

/// The `[hooks]` table: each a program and its arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestHooks {
    #[serde(default)]
    pub backup: Vec<String>,
    #[serde(default)]
    pub migrate: Vec<String>,
    #[serde(default)]
    pub migrate_down: Vec<String>,
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
        if let Some(key) = table.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown field `{key}`; the fields are {}",
                KNOWN.join(", ")
            )));
        }
        let manifest: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        manifest.health_check()?;
        manifest.versioning()?;
        Ok(manifest)
    }

    /// API versions, schemas, hooks and changelog, parsed and checked.
    pub fn versioning(&self) -> Result<Versioning, ModelError> {
        let bad = |m: String| ModelError::InvalidManifest(m);
        let schema = |field: &str, text: &str| {
            Version::parse(text).map_err(|e| {
                bad(format!(
                    "{field} = \"{text}\" is not a semantic version ({e}); write e.g. \"1.0.1\""
                ))
            })
        };
        let api_versions = self
            .api_versions
            .iter()
            .map(|v| v.parse::<ApiVersion>().map_err(|e| bad(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let schema_version = match &self.schema_version {
            Some(s) => Some(schema("schema_version", s)?),
            None => None,
        };
        let runs_on_schemas = self
            .runs_on_schemas
            .iter()
            .map(|s| schema("runs_on_schemas", s))
            .collect::<Result<Vec<_>, _>>()?;
        let versioning = Versioning {
            api_versions,
            schema_version,
            runs_on_schemas,
            hooks: Hooks {
                backup: self.hooks.backup.clone(),
                migrate: self.hooks.migrate.clone(),
                migrate_down: self.hooks.migrate_down.clone(),
            },
            changelog: self.changelog.clone().unwrap_or_default(),
        };
        versioning.validate().map_err(|e| match e {
            ModelError::InvalidSpec(m) => bad(m),
            other => other,
        })?;
        Ok(versioning)
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
        let v = m.versioning().expect("versioning");
        assert_eq!(crate::model::api_list(&v.api_versions), "v1, v2");
        assert_eq!(v.schema_version, Some(Version::new(1, 0, 1)));
        assert_eq!(v.runs_on_schemas.len(), 2);
        assert_eq!(v.hooks.migrate, vec!["./migrate.sh", "up"]);
    }

    #[test]
    fn bad_versioning_is_refused_with_the_field() {
        let e = Manifest::parse(r#"api_versions = ["two"]"#).expect_err("bad api");
        assert!(e.to_string().contains("`two`"), "{e}");
        let e = Manifest::parse(r#"schema_version = "1.0""#).expect_err("bad schema");
        assert!(e.to_string().contains("schema_version"), "{e}");
        let e = Manifest::parse("schema_version = \"1.0.0\"\nruns_on_schemas = [\"2.0.0\"]")
            .expect_err("own schema missing");
        assert!(e.to_string().contains("runs_on_schemas"), "{e}");
        let e = Manifest::parse("[hooks]\nmigrat = [\"x\"]").expect_err("typo in hooks");
        assert!(e.to_string().contains("migrat"), "{e}");
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
