//! The host names a certificate is kept under: one name, a wildcard
//! (`*.example.com`, one label deep) or the default for every name
//! without a certificate of its own (`*`).

use std::fmt;
use std::str::FromStr;

use super::TlsError;
use crate::model::normalize_host;

/// What a stored certificate answers for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Names with no certificate of their own, and clients that send no SNI.
    Default,
    /// Exactly this name (lowercase).
    Exact(String),
    /// Every name one label below this one (`*.example.com` keeps `example.com`).
    Wildcard(String),
}

impl HostPattern {
    /// Whether a certificate whose DNS names are `names` serves this pattern.
    pub fn covered_by<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> bool {
        match self {
            HostPattern::Default => true,
            HostPattern::Exact(host) => names.any(|name| {
                let name = name.to_ascii_lowercase();
                name == *host
                    || name.strip_prefix("*.").is_some_and(|suffix| {
                        host.split_once('.').is_some_and(|(_, rest)| rest == suffix)
                    })
            }),
            HostPattern::Wildcard(suffix) => names.any(|name| {
                name.to_ascii_lowercase()
                    .strip_prefix("*.")
                    .is_some_and(|s| s == suffix)
            }),
        }
    }
}

impl FromStr for HostPattern {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, TlsError> {
        let s = s.trim();
        if s == "*" {
            return Ok(HostPattern::Default);
        }
        let bad = || TlsError::BadHost(s.to_owned());
        match s.strip_prefix("*.") {
            Some(suffix) => {
                let suffix = normalize_host(suffix).map_err(|_| bad())?;
                // `*.com` would answer for a whole top-level domain.
                if !suffix.contains('.') {
                    return Err(bad());
                }
                Ok(HostPattern::Wildcard(suffix))
            }
            None => Ok(HostPattern::Exact(normalize_host(s).map_err(|_| bad())?)),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Default => f.write_str("*"),
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> HostPattern {
        s.parse().expect("a valid pattern")
    }

    #[test]
    fn names_wildcards_and_the_default_are_told_apart() {
        assert_eq!(
            pattern("App.Example.com"),
            HostPattern::Exact("app.example.com".into())
        );
        assert_eq!(
            pattern("*.example.com"),
            HostPattern::Wildcard("example.com".into())
        );
        assert_eq!(pattern("*"), HostPattern::Default);
        assert_eq!(pattern("*.example.com").to_string(), "*.example.com");
    }

    #[test]
    fn what_no_certificate_can_be_for_is_refused() {
        for bad in ["", "a b", "*.com", "a.*.example.com", "*example.com", "x/y"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_wildcard_name_covers_one_label_below_it() {
        let names = ["*.example.com"];
        assert!(pattern("app.example.com").covered_by(names.into_iter()));
        assert!(!pattern("a.b.example.com").covered_by(names.into_iter()));
        assert!(!pattern("example.com").covered_by(names.into_iter()));
        assert!(pattern("*.example.com").covered_by(names.into_iter()));
        assert!(!pattern("*.example.com").covered_by(["app.example.com"].into_iter()));
    }
}
