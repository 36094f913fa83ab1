//! What the comparisons of one shadow add up to: counts, the fields that
//! differ most with their noise rate, and a few examples per field.
//! Memory is bounded: at most [`MAX_FIELDS`] fields and [`MAX_EXAMPLES`]
//! truncated examples each.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::compare::{DiffKind, Difference};

pub const MAX_FIELDS: usize = 200;
pub const MAX_EXAMPLES: usize = 3;
/// Main-vs-main comparisons needed before noise is judged.
pub const MIN_NOISE_SAMPLES: u64 = 5;
/// A field that also differs between main's own instances is noise unless
/// the shadow differs in it this much more often (as a share of
/// comparisons). A field in which main never differs from itself is real.
pub const NOISE_MARGIN: f64 = 0.10;
/// Fields beyond [`MAX_FIELDS`] are counted under this name.
pub const OTHER_FIELDS: &str = "(other fields)";

/// One stored example of a difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// `GET /items?page=2`
    pub request: String,
    pub at: String,
    pub kind: DiffKind,
    pub main: String,
    pub shadow: String,
}

/// Counts for one field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldStats {
    /// Comparisons with main in which this field differed.
    pub diffs: u64,
    /// Main-vs-main comparisons in which it differed.
    pub noise: u64,
    pub kinds: BTreeSet<DiffKind>,
    #[serde(default)]
    pub examples: VecDeque<Example>,
}

/// Everything known about one shadow's answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowStats {
    /// Copies sent to the shadow.
    pub mirrored: u64,
    /// Copies whose answer was compared with main's.
    pub compared: u64,
    /// Compared answers without a real difference.
    pub matched: u64,
    /// Copies dropped because the shadow's queue was full.
    pub dropped: u64,
    /// Requests not mirrored because their body was over the size limit.
    pub too_large: u64,
    /// Copies the shadow failed to answer (connect error, timeout, reset).
    /// Stored under its old name, which counted only these.
    #[serde(alias = "shadow_errors")]
    pub shadow_failed: u64,
    /// Copies the shadow answered with a 5xx status (compared as well).
    #[serde(default)]
    pub shadow_5xx: u64,
    /// When this window of counts began (unix ms; 0: before windows were
    /// kept). `shadow report --reset` starts a new one.
    #[serde(default)]
    pub since: u64,
    /// Main-vs-main comparisons made for noise cancellation.
    pub noise_compared: u64,
    pub fields: HashMap<String, FieldStats>,
}

/// A field in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldReport {
    pub field: String,
    pub diffs: u64,
    /// Share of comparisons in which it differed.
    pub rate: f64,
    /// Share of main-vs-main comparisons in which it differed (None without samples).
    pub noise_rate: Option<f64>,
    /// Differs clearly more often than main differs from itself.
    pub real: bool,
    pub kinds: Vec<DiffKind>,
    pub examples: Vec<Example>,
}

/// The report `switchyard shadow report` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    pub service: String,
    pub version: String,
    pub mirrored: u64,
    pub compared: u64,
    pub matched: u64,
    /// matched / compared (None before the first comparison).
    pub match_rate: Option<f64>,
    pub dropped: u64,
    pub too_large: u64,
    /// Copies the shadow answered with a 5xx or failed to answer.
    pub shadow_errors: u64,
    /// Of these: answered with a 5xx status.
    #[serde(default)]
    pub shadow_5xx: u64,
    /// Of these: no answer (connection refused or reset, timeout).
    #[serde(default)]
    pub shadow_failed: u64,
    pub noise_compared: u64,
    /// When the window these counts cover began (unix ms; 0: unknown).
    #[serde(default)]
    pub since: u64,
    /// When the window ended (`shadow report --reset`); `None` for the
    /// current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// Headers Switchyard itself sets: differences in them, where the
    /// answers echo them, are not compared (see [`super::OWN_HEADERS`]).
    #[serde(default)]
    pub own_headers_ignored: Vec<String>,
    /// Most differing first.
    pub fields: Vec<FieldReport>,
}

impl ShadowStats {
    /// Empty counts of a window that begins at `since` (unix ms).
    pub fn starting(since: u64) -> Self {
        Self {
            since,
            ..Self::default()
        }
    }

    /// Copies the shadow answered with a 5xx or failed to answer.
    pub fn shadow_errors(&self) -> u64 {
        self.shadow_failed + self.shadow_5xx
    }

    fn field(&mut self, name: &str) -> &mut FieldStats {
        let key = if self.fields.contains_key(name) || self.fields.len() < MAX_FIELDS {
            name
        } else {
            OTHER_FIELDS
        };
        self.fields.entry(key.to_owned()).or_default()
    }

    fn noise_rate(&self, field: &FieldStats) -> Option<f64> {
        (self.noise_compared >= MIN_NOISE_SAMPLES)
            .then(|| field.noise as f64 / self.noise_compared as f64)
    }

    fn is_real(&self, field: &FieldStats) -> bool {
        match self.noise_rate(field) {
            Some(noise) if noise > 0.0 => {
                let rate = field.diffs as f64 / self.compared.max(1) as f64;
                rate - noise > NOISE_MARGIN
            }
            _ => true,
        }
    }

    /// Records one shadow-vs-main comparison. Returns whether it matched:
    /// no difference, or only differences in fields judged to be noise.
    pub fn record(&mut self, request: &str, diffs: &[Difference]) -> bool {
        self.compared += 1;
        let mut seen = BTreeSet::new();
        for d in diffs {
            let field = self.field(&d.field);
            field.kinds.insert(d.kind);
            if field.examples.len() == MAX_EXAMPLES {
                field.examples.pop_front();
            }
            field.examples.push_back(Example {
                request: request.to_owned(),
                at: d.at.clone(),
                kind: d.kind,
                main: d.main.clone(),
                shadow: d.shadow.clone(),
            });
            if seen.insert(d.field.clone()) {
                self.field(&d.field).diffs += 1;
            }
        }
        let matched = seen
            .iter()
            .all(|f| self.fields.get(f).is_some_and(|s| !self.is_real(s)));
        if matched {
            self.matched += 1;
        }
        matched
    }

    /// Records one main-vs-main comparison (noise cancellation).
    pub fn record_noise(&mut self, diffs: &[Difference]) {
        self.noise_compared += 1;
        let fields: BTreeSet<&str> = diffs.iter().map(|d| d.field.as_str()).collect();
        for f in fields {
            self.field(f).noise += 1;
        }
    }

    pub fn report(&self, service: &str, version: &str) -> ShadowReport {
        let mut fields: Vec<FieldReport> = self
            .fields
            .iter()
            .filter(|(_, s)| s.diffs > 0)
            .map(|(name, s)| FieldReport {
                field: name.clone(),
                diffs: s.diffs,
                rate: s.diffs as f64 / self.compared.max(1) as f64,
                noise_rate: self.noise_rate(s),
                real: self.is_real(s),
                kinds: s.kinds.iter().copied().collect(),
                examples: s.examples.iter().cloned().collect(),
            })
            .collect();
        fields.sort_by(|a, b| b.diffs.cmp(&a.diffs).then_with(|| a.field.cmp(&b.field)));
        ShadowReport {
            service: service.to_owned(),
            version: version.to_owned(),
            mirrored: self.mirrored,
            compared: self.compared,
            matched: self.matched,
            match_rate: (self.compared > 0).then(|| self.matched as f64 / self.compared as f64),
            dropped: self.dropped,
            too_large: self.too_large,
            shadow_errors: self.shadow_errors(),
            shadow_5xx: self.shadow_5xx,
            shadow_failed: self.shadow_failed,
            noise_compared: self.noise_compared,
            since: self.since,
            until: None,
            own_headers_ignored: super::OWN_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            fields,
        }
    }

    /// The counts without examples, for the store.
    pub fn summary(&self) -> ShadowStats {
        let mut s = self.clone();
        for f in s.fields.values_mut() {
            f.examples.clear();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(field: &str) -> Difference {
        Difference {
            field: field.into(),
            at: field.into(),
            kind: DiffKind::Changed,
            main: "1".into(),
            shadow: "2".into(),
        }
    }

    #[test]
    fn a_field_that_differs_between_main_instances_is_noise() {
        let mut s = ShadowStats::default();
        for _ in 0..20 {
            s.record_noise(&[diff("$.request_id")]);
        }
        for _ in 0..20 {
            assert!(s.record("GET /", &[diff("$.request_id")]));
        }
        assert!(!s.record("GET /", &[diff("$.request_id"), diff("$.total")]));
        let r = s.report("svc", "2.0.0");
        assert_eq!((r.compared, r.matched), (21, 20));
        let total = r
            .fields
            .iter()
            .find(|f| f.field == "$.total")
            .expect("total");
        assert!(total.real);
        let id = r
            .fields
            .iter()
            .find(|f| f.field == "$.request_id")
            .expect("id");
        assert!(!id.real);
        assert_eq!(id.noise_rate, Some(1.0));
    }

    #[test]
    fn without_noise_samples_every_difference_is_real() {
        let mut s = ShadowStats::default();
        assert!(s.record("GET /", &[]));
        assert!(!s.record("GET /x", &[diff("$.a")]));
        assert_eq!(s.report("svc", "2").match_rate, Some(0.5));
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = ShadowStats::default();
        for i in 0..(MAX_FIELDS + 50) {
            for _ in 0..5 {
                s.record("GET /", &[diff(&format!("$.f{i}"))]);
            }
        }
        assert!(s.fields.len() <= MAX_FIELDS + 1);
        assert!(s.fields.values().all(|f| f.examples.len() <= MAX_EXAMPLES));
        assert!(s.fields.contains_key(OTHER_FIELDS));
    }
}
