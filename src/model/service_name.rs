use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// A service's name: `[a-z0-9][a-z0-9-]{0,62}`, so that it fits in a DNS
/// label and in the `/services/NAME_VERSION/` path (it never holds `_`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServiceName {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let valid_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let ok = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes[0] != b'-'
            && bytes.iter().all(valid_char);
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ModelError::InvalidServiceName(s.to_owned()))
        }
    }
}

impl TryFrom<String> for ServiceName {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ServiceName> for String {
    fn from(n: ServiceName) -> Self {
        n.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_label_names() {
        for name in ["a", "hello", "pay-hub-2", "0day", &"a".repeat(63)] {
            assert!(name.parse::<ServiceName>().is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_names_outside_the_pattern() {
        for name in ["", "-a", "Hello", "a_b", "a.b", "a b", &"a".repeat(64)] {
            assert!(name.parse::<ServiceName>().is_err(), "{name}");
        }
    }
}
