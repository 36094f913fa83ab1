use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{ServiceName, ServiceState};

/// One numbered change of a service's desired state: what it became, when,
/// why and by whom. Numbers start at 1 and grow by one per change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub service: ServiceName,
    pub number: u64,
    /// Unix time in milliseconds.
    pub at: u64,
    /// What happened, e.g. `deploy 2.0.0` or `rollback to 3`.
    pub action: String,
    /// Who asked for it.
    pub actor: String,
    pub state: ServiceState,
}

/// The current unix time in milliseconds.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
