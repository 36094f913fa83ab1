//! Pause and resume a service's traffic. A pause lives in this serve's
//! memory (held requests do): it is not a revision, and a restarted serve
//! is not paused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Controller, ControllerError};
use crate::error::{Error, Result};
use crate::model::{RolloutState, ServiceName};
use crate::proxy::PauseGate;

/// The longest hold one may ask for.
pub const MAX_HOLD_LIMIT: Duration = Duration::from_secs(3600);

/// What `switchyard pause` sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseRequest {
    /// How long one request may be held before it gets 503 (default 30 s).
    #[serde(default)]
    pub max_hold_ms: Option<u64>,
}

/// A paused service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseView {
    pub service: String,
    pub max_hold_ms: u64,
}

/// What `switchyard resume` resumed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResumeReport {
    /// Held requests let through, when the service's traffic was paused.
    pub released: Option<usize>,
    /// The rollout, when a paused one went on.
    pub rollout: Option<RolloutState>,
}

impl Controller {
    /// Holds the service's new requests until resumed.
    pub fn pause(&self, service: &ServiceName, req: PauseRequest) -> Result<PauseView> {
        self.require(service)?;
        let max_hold = Duration::from_millis(req.max_hold_ms.unwrap_or(30_000));
        if max_hold.is_zero() || max_hold > MAX_HOLD_LIMIT {
            return Err(ControllerError::BadHold.into());
        }
        let mut added = false;
        self.pauses.rcu(|current| {
            let mut next = HashMap::clone(current);
            added = !next.contains_key(service.as_str());
            next.entry(service.to_string())
                .or_insert_with(|| Arc::new(PauseGate::new(max_hold)));
            next
        });
        if !added {
            return Err(ControllerError::AlreadyPaused(service.to_string()).into());
        }
        self.record_event(
            service.as_str(),
            "traffic-paused",
            &format!("traffic paused (max hold {} ms)", max_hold.as_millis()),
            serde_json::Value::Null,
        );
        Ok(PauseView {
            service: service.to_string(),
            max_hold_ms: max_hold.as_millis() as u64,
        })
    }

    /// Removes the service's gate and opens it: how many held requests
    /// went, or `None` when it was not paused.
    pub(super) fn open_gate(&self, service: &ServiceName) -> Option<usize> {
        let mut gate = None;
        self.pauses.rcu(|current| {
            let mut next = HashMap::clone(current);
            gate = next.remove(service.as_str());
            next
        });
        let released = gate.map(|g| g.open());
        if let Some(n) = released {
            self.record_event(
                service.as_str(),
                "traffic-resumed",
                &format!("traffic resumed; {n} held requests let through"),
                serde_json::Value::Null,
            );
        }
        released
    }

    /// Lets held traffic through (oldest first) and a paused rollout go
    /// on; refused when neither is paused.
    pub fn resume_all(&self, service: &ServiceName) -> Result<ResumeReport> {
        self.require(service)?;
        let released = self.open_gate(service);
        let rollout = match self.resume(service) {
            Ok(state) => Some(state),
            Err(Error::Controller(
                ControllerError::NoRollout(_) | ControllerError::NotPaused(_),
            )) => None,
            Err(other) if released.is_none() => return Err(other),
            Err(_) => None,
        };
        if released.is_none() && rollout.is_none() {
            return Err(ControllerError::NothingToResume(service.to_string()).into());
        }
        Ok(ResumeReport { released, rollout })
    }
}
