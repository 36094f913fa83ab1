//! An upgrade through a checked plan, as it runs: which step it is on,
//! what each finished step did, and how it goes from one step to the next.
//! Stored, so `switchyard upgrade NAME --status` answers after the fact and
//! a restarted serve can tell the operator where an interrupted one ended.

use semver::Version;
use serde::{Deserialize, Serialize};

use super::Plan;

/// What happens after a step, before the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BetweenSteps {
    /// The next step starts at once.
    #[default]
    Go,
    /// Wait this long (the new main must stay ready meanwhile), then go on.
    Wait { ms: u64 },
    /// Wait for `switchyard upgrade NAME --continue`.
    Approve,
}

/// How the operator asked for the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpgradeOptions {
    /// How long each hook may run, in ms.
    pub hook_timeout_ms: u64,
    /// Hold the service's new requests during each step that changes the
    /// schema (from before the backup until the switch), at most this many
    /// ms each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_max_hold_ms: Option<u64>,
    #[serde(default)]
    pub between: BetweenSteps,
}

/// One step done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDone {
    pub from: String,
    pub to: String,
    /// Hooks run, with their captured output.
    pub hooks: Vec<(String, String)>,
    /// The revision that made `to` main.
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeStatus {
    /// A step runs, or the wait between two steps.
    Running,
    /// Between two steps, until the operator says go on or stop.
    Waiting,
    Done,
    /// A step failed; the service stays at the last good step.
    Stopped,
    /// The operator stopped it between two steps.
    Aborted,
    /// Serve stopped while it ran; the service is at the last step that
    /// committed.
    Interrupted,
}

impl UpgradeStatus {
    /// Whether the upgrade still holds the service (manual changes wait).
    pub fn is_active(self) -> bool {
        matches!(self, UpgradeStatus::Running | UpgradeStatus::Waiting)
    }
}

impl std::fmt::Display for UpgradeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpgradeStatus::Running => "running",
            UpgradeStatus::Waiting => "waiting for --continue",
            UpgradeStatus::Done => "done",
            UpgradeStatus::Stopped => "stopped",
            UpgradeStatus::Aborted => "aborted",
            UpgradeStatus::Interrupted => "interrupted",
        })
    }
}

/// The latest upgrade of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeState {
    pub service: String,
    pub to: Version,
    pub plan: Plan,
    pub options: UpgradeOptions,
    pub status: UpgradeStatus,
    /// Steps done, in order.
    pub steps: Vec<StepDone>,
    /// Why it stopped, aborted or was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// While waiting between steps for a set time: until when (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_until: Option<u64>,
    /// The operator asked it to stop; it does after the running step.
    #[serde(default)]
    pub abort_requested: bool,
    pub actor: String,
    pub started_at: u64,
    pub updated_at: u64,
}

impl UpgradeState {
    /// The step it is on (or will start next), as `step 2/4 1.0.1 → 1.0.2`.
    pub fn current_step(&self) -> Option<String> {
        let i = self.steps.len();
        self.plan
            .steps
            .get(i)
            .map(|s| step_label(i, self.plan.steps.len(), &s.from, &s.to))
    }
}

/// `step I/N FROM → TO`, with I counted from 1.
pub fn step_label(index: usize, total: usize, from: &Version, to: &Version) -> String {
    format!("step {}/{total} {from} → {to}", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_and_waiting_upgrades_hold_the_service() {
        assert!(UpgradeStatus::Running.is_active());
        assert!(UpgradeStatus::Waiting.is_active());
        for s in [
            UpgradeStatus::Done,
            UpgradeStatus::Stopped,
            UpgradeStatus::Aborted,
            UpgradeStatus::Interrupted,
        ] {
            assert!(!s.is_active(), "{s}");
        }
    }

    #[test]
    fn between_steps_round_trips_through_json() {
        for b in [
            BetweenSteps::Go,
            BetweenSteps::Wait { ms: 1500 },
            BetweenSteps::Approve,
        ] {
            let json = serde_json::to_string(&b).expect("json");
            assert_eq!(
                serde_json::from_str::<BetweenSteps>(&json).expect("back"),
                b
            );
        }
    }
}
