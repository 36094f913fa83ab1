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
    /// Reached by a share of clients (the policy holds the share).
    Canary,
    /// Reached by opt-in only (`x-client-mode: green`).
    Green,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Main => "main",
            Role::Shadow => "shadow",
            Role::Standby => "standby",
            Role::Canary => "canary",
            Role::Green => "green",
        })
    }
}
