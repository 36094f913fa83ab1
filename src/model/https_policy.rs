//! How a service treats cleartext and TLS clients: whether a request that
//! came over cleartext HTTP is redirected to HTTPS, and whether answers
//! over HTTPS tell browsers to use nothing else (HSTS).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A service's HTTPS policy (off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpsPolicy {
    /// A cleartext request is answered 308 to the same URL over HTTPS.
    #[serde(default)]
    pub redirect: bool,
    /// `Strict-Transport-Security: max-age=SECONDS` on every answer over
    /// HTTPS; `None`: no such header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts_max_age: Option<u64>,
}

impl HttpsPolicy {
    pub fn is_default(&self) -> bool {
        *self == HttpsPolicy::default()
    }

    /// The `Strict-Transport-Security` value, when HSTS is on.
    pub fn hsts_header(&self) -> Option<String> {
        self.hsts_max_age.map(|age| format!("max-age={age}"))
    }
}

impl fmt::Display for HttpsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redirect to HTTPS {}, HSTS {}",
            if self.redirect { "on" } else { "off" },
            match self.hsts_max_age {
                Some(age) => format!(
                    "max-age {}",
                    humantime::format_duration(Duration::from_secs(age))
                ),
                None => "off".to_owned(),
            }
        )
    }
}
