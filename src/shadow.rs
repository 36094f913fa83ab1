//! Shadow traffic: comparing a shadow's answers with main's and keeping a
//! bounded report of where they differ. The proxy hands it response pairs.

mod compare;
mod path_pattern;
mod report;

pub use compare::{CapturedResponse, CompareRules, DiffKind, Difference, OWN_HEADERS, compare};
pub use path_pattern::{JsonPath, PathPattern};
pub use report::{Example, FieldReport, FieldStats, ShadowReport, ShadowStats};
