use std::fmt;

use serde::{Deserialize, Serialize};

/// What a running release does for its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Answers the service's traffic.
    Main,
    /// Reachable at its own address; receives mirrored copies once shadow
    /// traffic is configured.
    Shadow,
    /// Running, no traffic: the instant rollback target.
    Standby,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Main => "main",
            Role::Shadow => "shadow",
            Role::Standby => "standby",
        })
    }
}
