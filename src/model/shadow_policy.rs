use serde::{Deserialize, Serialize};

use super::ModelError;

/// How one shadow release receives mirrored copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowSettings {
    /// Mirroring on or off.
    pub enabled: bool,
    /// Share of the service's requests mirrored, 0 to 100.
    pub sample_percent: u8,
    /// Methods mirrored (upper-case); empty means every method. Mirroring
    /// POST, PUT, PATCH or DELETE repeats their side effects on the shadow.
    pub methods: Vec<String>,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_percent: 100,
            methods: Vec::new(),
        }
    }
}

impl ShadowSettings {
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.sample_percent > 100 {
            return Err(ModelError::InvalidSpec(format!(
                "the sample is a percentage from 0 to 100, got {}",
                self.sample_percent
            )));
        }
        if let Some(m) = self
            .methods
            .iter()
            .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(ModelError::InvalidSpec(format!(
                "`{m}` is not an HTTP method; use upper-case names such as GET,HEAD"
            )));
        }
        Ok(())
    }

    /// `on, 100%, all methods`
    pub fn describe(&self) -> String {
        format!(
            "{}, {}%, {}",
            if self.enabled { "on" } else { "off" },
            self.sample_percent,
            if self.methods.is_empty() {
                "all methods".to_owned()
            } else {
                self.methods.join(",")
            }
        )
    }
}

/// How a service compares its shadows' answers with main's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ComparePolicy {
    /// Response headers compared (lower-case).
    pub headers: Vec<String>,
    /// JSON paths whose differences are ignored, e.g. `$.items[*].id`.
    pub ignore_paths: Vec<String>,
    /// Share of mirrored requests also sent to a second main instance, to
    /// learn which fields differ by themselves (0 turns noise cancellation
    /// off; it needs main to have two or more instances).
    pub noise_percent: u8,
    /// Largest request or response body captured for mirroring and
    /// comparison; larger requests are not mirrored.
    pub body_limit: u64,
}

/// The default body capture limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;

impl Default for ComparePolicy {
    fn default() -> Self {
        Self {
            headers: vec!["content-type".to_owned()],
            ignore_paths: Vec::new(),
            noise_percent: 0,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

impl ComparePolicy {
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidSpec(m));
        if self.noise_percent > 100 {
            return bad(format!(
                "--noise is a percentage from 0 to 100, got {}",
                self.noise_percent
            ));
        }
        if self.body_limit == 0 || self.body_limit > 64 * 1024 * 1024 {
            return bad("the body limit must be between 1 byte and 64 MiB".into());
        }
        for p in &self.ignore_paths {
            crate::shadow::PathPattern::parse(p).map_err(ModelError::InvalidSpec)?;
        }
        if let Some(h) = self.headers.iter().find(|h| {
            http::HeaderName::from_bytes(h.as_bytes()).is_err() || h.to_ascii_lowercase() != **h
        }) {
            return bad(format!("`{h}` is not a lower-case header name"));
        }
        Ok(())
    }
}
