//! Rollout plans in the vocabulary of Argo Rollouts and Flagger: steps that
//! set the canary's weight, pause, or analyse the canary's own traffic;
//! and the stored progress of a running rollout, so that a restarted serve
//! resumes at the step it was on.

use semver::Version;
use serde::{Deserialize, Serialize};

use super::ModelError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlan {
    pub version: Version,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Header that carries the client key for the canary (else the
    /// service's stickiness settings apply).
    #[serde(default)]
    pub sticky_header: Option<String>,
    /// A rollout paused (by a pause step, an inconclusive analysis or by
    /// hand) longer than this rolls back.
    #[serde(default = "default_stuck_limit")]
    pub stuck_limit_seconds: u64,
}

/// One hour: long enough to look at a paused rollout, short enough that
/// a forgotten one does not leave clients on the candidate for days.
pub const DEFAULT_STUCK_LIMIT_SECONDS: u64 = 3600;

fn default_stuck_limit() -> u64 {
    DEFAULT_STUCK_LIMIT_SECONDS
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Send this share of clients to the candidate.
    SetWeight { percent: u8 },
    /// Wait this long, or (without a duration) until `switchyard resume`.
    Pause {
        #[serde(default)]
        seconds: Option<u64>,
    },
    /// Measure the candidate for one interval and judge it.
    Analysis,
}

/// A latency limit: the candidate's `quantile` at most `ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyLimit {
    /// 0.5, 0.99, 0.999 …
    pub quantile: f64,
    pub ms: f64,
}

/// What an analysis checks, on the candidate's own traffic of one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisSpec {
    /// Length of one analysis interval.
    pub interval_seconds: u64,
    /// Highest error rate (5xx and the proxy's own failures), in percent.
    pub max_error_rate: Option<f64>,
    pub max_latency: Option<LatencyLimit>,
    /// Candidate p99 at most this many times main's p99 (same interval;
    /// main's last minute when main served nothing in it, at 100%).
    pub max_relative_p99: Option<f64>,
    /// Lowest shadow match rate of the candidate, in percent.
    pub min_match_rate: Option<f64>,
    /// Fewer requests than this in an interval make it inconclusive: the
    /// rollout pauses until `switchyard resume`.
    pub min_requests: u64,
    /// POSTed a JSON context each interval; a 2xx answer passes.
    pub webhook: Option<String>,
    /// Failed analyses in a row that roll back.
    pub failure_limit: u32,
    /// PromQL queries asked of a Prometheus server each interval.
    pub prometheus: Vec<PrometheusCheck>,
}

/// A PromQL instant query whose one value is compared with a bound:
/// `error_ratio < 0.05`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusCheck {
    /// The Prometheus server, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    pub query: String,
    pub op: Comparison,
    pub value: f64,
}

/// How a measured value must compare with its bound to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "==")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
}

impl Comparison {
    pub const ALL: [Comparison; 6] = [
        Comparison::Less,
        Comparison::AtMost,
        Comparison::Greater,
        Comparison::AtLeast,
        Comparison::Equal,
        Comparison::NotEqual,
    ];

    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::AtMost => "<=",
            Comparison::Greater => ">",
            Comparison::AtLeast => ">=",
            Comparison::Equal => "==",
            Comparison::NotEqual => "!=",
        }
    }

    /// Whether `measured OP bound` holds.
    pub fn holds(self, measured: f64, bound: f64) -> bool {
        match self {
            Comparison::Less => measured < bound,
            Comparison::AtMost => measured <= bound,
            Comparison::Greater => measured > bound,
            Comparison::AtLeast => measured >= bound,
            Comparison::Equal => measured == bound,
            Comparison::NotEqual => measured != bound,
        }
    }
}

impl std::str::FromStr for Comparison {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|c| c.symbol() == s)
            .ok_or_else(|| {
                ModelError::InvalidPlan(format!(
                    "`{s}` is not a comparison; use one of < <= > >= == !="
                ))
            })
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.symbol())
    }
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval_seconds: 60,
            max_error_rate: Some(1.0),
            max_latency: None,
            max_relative_p99: None,
            min_match_rate: None,
            min_requests: 20,
            webhook: None,
            failure_limit: 2,
            prometheus: Vec::new(),
        }
    }
}

impl RolloutPlan {
    /// `--steps 5,25,50,100`: set-weight then analysis for each, in order.
    pub fn from_weights(version: Version, weights: &[u8], analysis: AnalysisSpec) -> Self {
        let steps = weights
            .iter()
            .flat_map(|w| [Step::SetWeight { percent: *w }, Step::Analysis])
            .collect();
        Self {
            version,
            steps,
            analysis,
            sticky_header: None,
            stuck_limit_seconds: DEFAULT_STUCK_LIMIT_SECONDS,
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, ModelError> {
        toml::from_str(text)
            .map_err(|e| ModelError::InvalidPlan(format!("cannot read the plan file: {e}")))
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidPlan(m));
        if self.steps.is_empty() {
            return bad("a plan needs at least one step".into());
        }
        if self.steps.len() > 1000 {
            return bad("at most 1000 steps".into());
        }
        for (i, step) in self.steps.iter().enumerate() {
            if let Step::SetWeight { percent } = step {
                if *percent > 100 {
                    return bad(format!("step {}: weight {percent} is over 100", i + 1));
                }
            }
        }
        let a = &self.analysis;
        if a.interval_seconds == 0 || a.interval_seconds > 86_400 {
            return bad("the analysis interval must be 1 s to 1 day".into());
        }
        if a.failure_limit == 0 {
            return bad("the failure limit must be at least 1".into());
        }
        for (what, v) in [
            ("max error rate", a.max_error_rate),
            ("min match rate", a.min_match_rate),
        ] {
            if v.is_some_and(|v| !(0.0..=100.0).contains(&v)) {
                return bad(format!("the {what} is a percentage from 0 to 100"));
            }
        }
        if let Some(l) = &a.max_latency {
            if !(0.0 < l.quantile && l.quantile < 1.0) || l.ms <= 0.0 {
                return bad(
                    "a latency limit needs a quantile between 0 and 1 and a positive ms".into(),
                );
            }
        }
        if a.max_relative_p99.is_some_and(|k| k <= 0.0) {
            return bad("the relative p99 limit must be positive".into());
        }
        if let Some(url) = &a.webhook {
            if !is_http_url(url) {
                return bad(format!("webhook `{url}` is not an http(s) URL"));
            }
        }
        for check in &a.prometheus {
            if !is_http_url(&check.url) {
                return bad(format!(
                    "Prometheus `{}` is not an http(s) URL, e.g. http://127.0.0.1:9090",
                    check.url
                ));
            }
            if check.query.trim().is_empty() {
                return bad("a Prometheus check needs a PromQL query".into());
            }
            if !check.value.is_finite() {
                return bad(format!("the bound of `{}` must be a number", check.query));
            }
        }
        if self.stuck_limit_seconds == 0 || self.stuck_limit_seconds > 7 * 86_400 {
            return bad("the stuck limit must be 1 s to 7 days".into());
        }
        Ok(())
    }
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RolloutStatus {
    Running,
    Paused {
        reason: String,
        /// Since when (unix ms); the stuck limit counts from here.
        #[serde(default)]
        since: Option<u64>,
        /// Paused by hand in the middle of a step: resuming runs that
        /// step again rather than go on to the next.
        #[serde(default)]
        by_hand: bool,
    },
    Succeeded,
    Failed {
        reason: String,
    },
    Aborted,
    /// The candidate was made main by hand before the plan's end.
    PromotedByHand {
        reason: String,
    },
}

impl RolloutStatus {
    /// Paused from now, for `reason`.
    pub fn paused(reason: String, now: u64, by_hand: bool) -> Self {
        RolloutStatus::Paused {
            reason,
            since: Some(now),
            by_hand,
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self, RolloutStatus::Running | RolloutStatus::Paused { .. })
    }
}

/// One check of an analysis, with what was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    pub measured: String,
    pub threshold: String,
}

/// A rollout's stored progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub service: String,
    pub plan: RolloutPlan,
    /// The step being carried out (0-based); `steps.len()` when done.
    pub step: usize,
    /// When the current step began (unix ms).
    pub step_started_at: u64,
    /// Failed analyses in a row.
    pub failures: u32,
    pub status: RolloutStatus,
    /// The last analysis' checks.
    pub checks: Vec<CheckResult>,
    pub started_at: u64,
}

/// Something that happened to a service's rollout: a step, a check, a
/// promotion, a rollback. Recorded and posted to webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub service: String,
    /// Unix ms.
    pub at: u64,
    /// `rollout-started`, `step`, `analysis`, `promoted`, `rolled-back`, …
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_become_steps_with_analysis() {
        let plan =
            RolloutPlan::from_weights(Version::new(2, 0, 0), &[5, 50], AnalysisSpec::default());
        assert_eq!(
            plan.steps,
            vec![
                Step::SetWeight { percent: 5 },
                Step::Analysis,
                Step::SetWeight { percent: 50 },
                Step::Analysis
            ]
        );
        plan.validate().expect("valid");
    }

    #[test]
    fn a_plan_file_reads_and_bad_plans_are_refused() {
        let plan = RolloutPlan::from_toml(
            r#"
            version = "2.0.0"
            steps = [
                { step = "set-weight", percent = 10 },
                { step = "pause", seconds = 30 },
                { step = "analysis" },
                { step = "pause" },
                { step = "set-weight", percent = 100 },
            ]
            [analysis]
            interval_seconds = 10
            max_error_rate = 5.0
            max_latency = { quantile = 0.99, ms = 250.0 }
            max_relative_p99 = 1.5

            [[analysis.prometheus]]
            url = "http://127.0.0.1:9090"
            query = 'sum(rate(errors[1m]))'
            op = "<="
            value = 0.5
            "#,
        )
        .expect("plan");
        plan.validate().expect("valid");
        assert_eq!(plan.stuck_limit_seconds, DEFAULT_STUCK_LIMIT_SECONDS);
        let prometheus = &plan.analysis.prometheus[0];
        assert_eq!(prometheus.op, Comparison::AtMost);
        assert!(prometheus.op.holds(0.5, prometheus.value));
        let mut bad = plan.clone();
        bad.analysis.prometheus[0].url = "127.0.0.1:9090".into();
        assert!(bad.validate().is_err(), "a URL needs its scheme");
        let mut bad = plan.clone();
        bad.stuck_limit_seconds = 0;
        assert!(bad.validate().is_err());
        assert!(
            RolloutPlan::from_toml(
                "version = \"2.0.0\"\nsteps = [{ step = \"analysis\" }]\n[[analysis.prometheus]]\nurl = \"http://p\"\nquery = \"up\"\nop = \"=<\"\nvalue = 1.0"
            )
            .is_err(),
            "an unknown comparison is refused"
        );
        assert_eq!(plan.steps[3], Step::Pause { seconds: None });
        let mut bad = plan.clone();
        bad.steps[0] = Step::SetWeight { percent: 101 };
        assert!(bad.validate().is_err());
        assert!(
            RolloutPlan::from_toml("version = \"2.0.0\"\nsteps = [{ step = \"jump\" }]").is_err()
        );
    }
}
