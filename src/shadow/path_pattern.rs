//! JSON paths (`$.items[3].id`) and the patterns that select them
//! (`$.items[*].id`, `$.generated_at`, `$.*.etag`), for ignore rules and for
//! grouping differences by field.

use std::fmt;

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A concrete path, as the comparison walks it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct JsonPath(pub Vec<Step>);

impl JsonPath {
    pub fn child_key(&self, key: &str) -> JsonPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_owned()));
        JsonPath(steps)
    }

    pub fn child_index(&self, index: usize) -> JsonPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        JsonPath(steps)
    }

    /// The path with every array index replaced by `[*]`, so that the same
    /// field of different array elements counts as one field.
    pub fn generalized(&self) -> String {
        let mut out = String::from("$");
        for step in &self.0 {
            match step {
                Step::Key(k) => push_key(&mut out, k),
                Step::Index(_) => out.push_str("[*]"),
            }
        }
        out
    }
}

fn push_key(out: &mut String, key: &str) {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        out.push('.');
        out.push_str(key);
    } else {
        out.push_str(&format!("[{}]", serde_json::Value::String(key.to_owned())));
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::from("$");
        for step in &self.0 {
            match step {
                Step::Key(k) => push_key(&mut out, k),
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        f.write_str(&out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternStep {
    Key(String),
    Index(usize),
    /// `*` after a dot, or `[*]`: any one key or index.
    Any,
}

/// A path pattern. It selects a path when every step matches; it also
/// selects everything below that path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    steps: Vec<PatternStep>,
}

impl PathPattern {
    pub fn parse(source: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "invalid JSON path `{source}`: {why}; write it like $.items[*].id or $.generated_at"
            ))
        };
        let Some(mut rest) = source.strip_prefix('$') else {
            return bad("it must start with $");
        };
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let key = &after[..end];
                if key.is_empty() {
                    return bad("an empty field name");
                }
                steps.push(if key == "*" {
                    PatternStep::Any
                } else {
                    PatternStep::Key(key.to_owned())
                });
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let Some(end) = after.find(']') else {
                    return bad("a `[` without `]`");
                };
                let inner = &after[..end];
                let step = if inner == "*" {
                    PatternStep::Any
                } else if let Ok(i) = inner.parse::<usize>() {
                    PatternStep::Index(i)
                } else if let Ok(serde_json::Value::String(k)) = serde_json::from_str(inner) {
                    PatternStep::Key(k)
                } else {
                    return bad("brackets hold *, a number or a quoted name");
                };
                steps.push(step);
                rest = &after[end + 1..];
            } else {
                return bad("expected `.` or `[`");
            }
        }
        Ok(Self {
            source: source.to_owned(),
            steps,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern selects `path` or one of its ancestors.
    pub fn covers(&self, path: &JsonPath) -> bool {
        if self.steps.len() > path.0.len() {
            return false;
        }
        self.steps.iter().zip(&path.0).all(|(p, s)| match (p, s) {
            (PatternStep::Any, _) => true,
            (PatternStep::Key(a), Step::Key(b)) => a == b,
            (PatternStep::Index(a), Step::Index(b)) => a == b,
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(steps: &[Step]) -> JsonPath {
        JsonPath(steps.to_vec())
    }

    #[test]
    fn wildcards_match_any_key_or_index_and_everything_below() {
        let p = PathPattern::parse("$.items[*].id").expect("pattern");
        let id = path(&[
            Step::Key("items".into()),
            Step::Index(4),
            Step::Key("id".into()),
        ]);
        assert!(p.covers(&id));
        assert!(p.covers(&id.child_key("inner")));
        let name = path(&[
            Step::Key("items".into()),
            Step::Index(4),
            Step::Key("name".into()),
        ]);
        assert!(!p.covers(&name));
        let root = PathPattern::parse("$").expect("root");
        assert!(root.covers(&name));
    }

    #[test]
    fn quoted_keys_and_bad_patterns() {
        let p = PathPattern::parse("$[\"a.b\"].c").expect("pattern");
        assert!(p.covers(&path(&[Step::Key("a.b".into()), Step::Key("c".into())])));
        assert!(PathPattern::parse("items").is_err());
        assert!(PathPattern::parse("$.items[").is_err());
        assert!(PathPattern::parse("$..x").is_err());
    }

    #[test]
    fn generalized_paths_fold_indices() {
        let p = path(&[
            Step::Key("items".into()),
            Step::Index(4),
            Step::Key("a b".into()),
        ]);
        assert_eq!(p.to_string(), "$.items[4][\"a b\"]");
        assert_eq!(p.generalized(), "$.items[*][\"a b\"]");
    }
}
