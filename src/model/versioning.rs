//! What a release says about compatibility: the API versions it serves,
//! the database schema it migrates to and the schemas it can run against,
//! the hooks that back up and migrate, and its changelog.
//!
//! All of it is optional: a release that says nothing is unversioned and
//! is never picked by API-version routing for a request that names a
//! version.

use std::fmt;
use std::str::FromStr;

use semver::Version;
use serde::{Deserialize, Serialize};

use super::ModelError;

/// An API version as clients name it: `v2`, `2`, `v1.1` or `2.0`. A major
/// alone matches every minor of it (`v1` matches `1.0`, `1.1`, …); two
/// versions that both name a minor match only when the minors agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiVersion {
    pub major: u32,
    pub minor: Option<u32>,
}

impl ApiVersion {
    /// Whether a request for `self` can be served by a release that serves
    /// `other` (the relation is symmetric).
    pub fn matches(&self, other: &ApiVersion) -> bool {
        self.major == other.major
            && match (self.minor, other.minor) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Parses without an error message: for values read off requests.
    pub fn parse_lenient(text: &str) -> Option<ApiVersion> {
        let t = text.trim();
        let t = t
            .strip_prefix('v')
            .or_else(|| t.strip_prefix('V'))
            .unwrap_or(t);
        let (major, minor) = match t.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (t, None),
        };
        let num = |s: &str| {
            (!s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        Some(ApiVersion {
            major: num(major)?,
            minor: match minor {
                Some(m) => Some(num(m)?),
                None => None,
            },
        })
    }
}

impl FromStr for ApiVersion {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiVersion::parse_lenient(s).ok_or_else(|| {
            ModelError::InvalidSpec(format!(
                "API version `{s}` is not of the form v2, v1.1, 2 or 2.0"
            ))
        })
    }
}

impl TryFrom<String> for ApiVersion {
    type Error = ModelError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ApiVersion> for String {
    fn from(v: ApiVersion) -> String {
        v.to_string()
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minor {
            Some(minor) => write!(f, "v{}.{minor}", self.major),
            None => write!(f, "v{}", self.major),
        }
    }
}

/// Commands run around a schema change, each with the release's
/// environment: for a process release in its working directory, for a
/// container release in a one-off container of its image (with its
/// mounts). Output is captured and a non-zero exit aborts the step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// Copies the database before the schema changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup: Vec<String>,
    /// Moves the schema to this release's `schema_version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrate: Vec<String>,
    /// Moves it back; without it a schema change cannot be reversed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrate_down: Vec<String>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.backup.is_empty() && self.migrate.is_empty() && self.migrate_down.is_empty()
    }
}

/// A release's compatibility promises.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioning {
    /// The API versions it serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<ApiVersion>,
    /// The schema it migrates the database to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<Version>,
    /// The schemas it can run against (always including `schema_version`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs_on_schemas: Vec<Version>,
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub changelog: String,
}

impl Versioning {
    pub fn is_empty(&self) -> bool {
        *self == Versioning::default()
    }

    /// Whether the release serves a request for `asked`.
    pub fn serves(&self, asked: &ApiVersion) -> bool {
        self.api_versions.iter().any(|v| v.matches(asked))
    }

    /// The schemas it can run against: the declared ones, else just its own.
    pub fn runs_on(&self) -> Vec<Version> {
        if !self.runs_on_schemas.is_empty() {
            return self.runs_on_schemas.clone();
        }
        self.schema_version.iter().cloned().collect()
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidSpec(m));
        for (i, v) in self.api_versions.iter().enumerate() {
            if self.api_versions[..i].contains(v) {
                return bad(format!("api_versions lists {v} twice"));
            }
        }
        if let Some(schema) = &self.schema_version {
            if !self.runs_on_schemas.is_empty() && !self.runs_on_schemas.contains(schema) {
                return bad(format!(
                    "runs_on_schemas must include schema_version {schema}: a release runs on the schema it migrates to"
                ));
            }
        } else if !self.runs_on_schemas.is_empty() {
            return bad("runs_on_schemas needs a schema_version".into());
        }
        let hooks = [
            ("backup", &self.hooks.backup),
            ("migrate", &self.hooks.migrate),
            ("migrate_down", &self.hooks.migrate_down),
        ];
        for (name, command) in hooks {
            if command.first().is_some_and(|c| c.trim().is_empty()) {
                return bad(format!("hooks.{name} starts with an empty program name"));
            }
        }
        if !self.hooks.migrate.is_empty() && self.schema_version.is_none() {
            return bad("hooks.migrate needs a schema_version to migrate to".into());
        }
        if !self.hooks.migrate_down.is_empty() && self.hooks.migrate.is_empty() {
            return bad("hooks.migrate_down without hooks.migrate: nothing to reverse".into());
        }
        Ok(())
    }
}

/// Where a service's requests name the API version they want. Part of the
/// service's revisioned state; it matters only once a running release
/// declares `api_versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum ApiVersionSource {
    /// A request header, e.g. `x-api-version: v2` (or `2`, `2.0`).
    Header { name: String },
    /// The `version=` parameter of the `Accept` media type, else of
    /// `Content-Type` (`application/vnd.x+json;version=2.0`).
    MediaType,
    /// The first path segment within the service: `/v2/…`. The path is
    /// forwarded unchanged.
    PathPrefix,
}

/// The header read when nothing else was configured.
pub const DEFAULT_API_VERSION_HEADER: &str = "x-api-version";

impl Default for ApiVersionSource {
    fn default() -> Self {
        ApiVersionSource::Header {
            name: DEFAULT_API_VERSION_HEADER.to_owned(),
        }
    }
}

impl ApiVersionSource {
    pub fn validate(&self) -> Result<(), ModelError> {
        if let ApiVersionSource::Header { name } = self {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ModelError::InvalidSpec(format!(
                    "`{name}` is not a valid header name"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for ApiVersionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiVersionSource::Header { name } => write!(f, "header {name}"),
            ApiVersionSource::MediaType => f.write_str("media type version= parameter"),
            ApiVersionSource::PathPrefix => f.write_str("path prefix /vN/"),
        }
    }
}

/// Names a list of API versions for people: `v1, v2` or `-`.
pub fn api_list(versions: &[ApiVersion]) -> String {
    if versions.is_empty() {
        return "-".into();
    }
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(s: &str) -> ApiVersion {
        s.parse().expect("api version")
    }

    #[test]
    fn a_major_matches_each_of_its_minors() {
        assert!(api("v1").matches(&api("1.0")));
        assert!(api("1.1").matches(&api("v1")));
        assert!(!api("v1.1").matches(&api("1.0")));
        assert!(!api("v2").matches(&api("1.0")));
        assert_eq!(api("V2.0").to_string(), "v2.0");
        for bad in ["", "v", "x2", "1.a", "1.2.3", "v-1"] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn runs_on_must_include_the_own_schema() {
        let v = |s: &str| Version::parse(s).expect("version");
        let mut ok = Versioning {
            api_versions: vec![api("v1")],
            schema_version: Some(v("1.0.1")),
            runs_on_schemas: vec![v("1.0.1"), v("2.0.0")],
            ..Versioning::default()
        };
        assert!(ok.validate().is_ok());
        ok.runs_on_schemas = vec![v("2.0.0")];
        assert!(ok.validate().is_err());
        ok.runs_on_schemas.clear();
        assert_eq!(ok.runs_on(), vec![v("1.0.1")]);
        ok.hooks.migrate_down = vec!["./down".into()];
        assert!(ok.validate().is_err(), "migrate_down without migrate");
    }
}
