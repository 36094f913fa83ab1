//! The domain nouns every part of Switchyard speaks: services, releases,
//! roles, desired state and revisions. Pure data and validation; no I/O.

mod auto_certificates;
mod error_page;
mod health_check;
mod https_policy;
mod manifest;
mod plan;
mod policy;
mod release;
mod revision;
mod role;
mod rollout;
mod service_name;
mod service_state;
mod shadow_policy;
mod upgrade;
mod upstream_address;
mod versioning;

pub use auto_certificates::{AcmeChallenge, AutoCertificates};
pub use error_page::{ERROR_PAGE_MAX_BYTES, ErrorPage, PrefixRewrite};
pub use health_check::HealthCheck;
pub use https_policy::HttpsPolicy;
pub use manifest::{MANIFEST_FILE, Manifest, ManifestHealth, ManifestHooks};
pub use plan::{Plan, PlanStep, declared_schemas, plan, plan_first};
pub use policy::{
    Action, Canary, DEFAULT_STICKY_COOKIE, Matcher, OptIn, REGEX_SIZE_LIMIT, Rule, Stickiness,
    StringMatch, TrafficPolicy, parse_cidr, rule_label,
};
pub use release::{ContainerSpec, Release, ReleaseSpec, RunSpec, parse_version};
pub use revision::{Revision, now_millis};
pub use role::Role;
pub use rollout::{
    AnalysisSpec, CheckResult, Comparison, DEFAULT_STUCK_LIMIT_SECONDS, Event, LatencyLimit,
    PrometheusCheck, RolloutPlan, RolloutState, RolloutStatus, Step,
};
pub use service_name::ServiceName;
pub use service_state::{DeployAs, ReleaseEntry, ServiceState, normalize_host};
pub use shadow_policy::{ComparePolicy, DEFAULT_BODY_LIMIT, ShadowSettings};
pub use upgrade::{
    BetweenSteps, StepDone, UpgradeOptions, UpgradeState, UpgradeStatus, step_label,
};
pub use upstream_address::UpstreamAddress;
pub use versioning::{
    ApiVersion, ApiVersionSource, DEFAULT_API_VERSION_HEADER, Hooks, Versioning, api_list,
};

/// A change the model refuses, with what to do about it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error(
        "invalid service name `{0}`: use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    InvalidServiceName(String),
    #[error("invalid version `{given}`: {reason}; use a semantic version such as 1.0.0")]
    InvalidVersion { given: String, reason: String },
    #[error("invalid release spec: {0}")]
    InvalidSpec(String),
    #[error("invalid switchyard.toml: {0}")]
    InvalidManifest(String),
    #[error("cannot plan the upgrade: {0}")]
    InvalidUpgrade(String),
    #[error(
        "release {service} {version} already exists; versions are immutable, deploy a new version instead"
    )]
    ReleaseExists { service: String, version: String },
    #[error("service {service} has no release {version}; running releases: {known}")]
    UnknownRelease {
        service: String,
        version: String,
        known: String,
    },
    #[error("unknown service `{0}`; `switchyard ls` lists the services")]
    UnknownService(String),
    #[error(
        "cannot kill {service} {version}: it is main and {others} still run; assign another main or kill those first (or `kill {service} --all`)"
    )]
    MainHasOthers {
        service: String,
        version: String,
        others: String,
    },
    #[error("{service} {version} is already main; nothing to change")]
    AlreadyMain { service: String, version: String },
    #[error("host `{host}` already routes to service {owner}; remove it there first")]
    HostTaken { host: String, owner: String },
    #[error("invalid host name `{0}`: use a DNS name such as app.example.com")]
    InvalidHost(String),
    #[error("host `{host}` already routes to {service}; nothing to change")]
    HostAlreadyHere { service: String, host: String },
    #[error("{service} has no host `{host}`; its hosts: {hosts}")]
    UnknownHost {
        service: String,
        host: String,
        hosts: String,
    },
    #[error("invalid error page: {0}")]
    InvalidErrorPage(String),
    #[error("invalid rollout plan: {0}")]
    InvalidPlan(String),
    #[error("invalid traffic policy: {0}")]
    InvalidPolicy(String),
    #[error(
        "{service} already has canary {version}; promote it or abort it (`switchyard abort {service}`) before starting another"
    )]
    CanaryExists { service: String, version: String },
    #[error("{service} has no canary to abort")]
    NoCanary { service: String },
    #[error(
        "cannot kill {service} {version}: traffic goes to it from {rules}; remove them first (`switchyard route rm {service} RULE`)"
    )]
    RuleTargets {
        service: String,
        version: String,
        rules: String,
    },
    #[error("{service} has no rule `{selector}`; `switchyard route ls {service}` lists them")]
    UnknownRule { service: String, selector: String },
}

impl crate::error_kind::Classify for ModelError {
    fn kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            ModelError::UnknownRelease { .. }
            | ModelError::UnknownService(_)
            | ModelError::UnknownHost { .. } => ErrorKind::NotFound,
            ModelError::ReleaseExists { .. }
            | ModelError::MainHasOthers { .. }
            | ModelError::AlreadyMain { .. }
            | ModelError::HostTaken { .. }
            | ModelError::HostAlreadyHere { .. } => ErrorKind::Conflict,
            _ => ErrorKind::BadRequest,
        }
    }
}
