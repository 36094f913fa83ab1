//! Compares a shadow's response with main's: status, chosen headers, and
//! the body — structurally by field path for JSON, as text or bytes
//! otherwise. Differences under an ignore rule are not reported.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::path_pattern::{JsonPath, PathPattern};

/// A response as captured for comparison (the body up to a size limit).
#[derive(Debug, Clone, Default)]
pub struct CapturedResponse {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The body was longer than the capture limit.
    pub truncated: bool,
}

impl CapturedResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn looks_like_json(&self) -> bool {
        self.header("content-type")
            .is_some_and(|t| t.contains("json"))
            || matches!(
                self.body.iter().find(|b| !b.is_ascii_whitespace()),
                Some(b'{') | Some(b'[')
            )
    }
}

/// Headers Switchyard itself sets on what it forwards or answers: the
/// marker of a mirrored copy, its own answer headers, the request id and
/// the forwarding headers. A shadow that echoes its request (a debugging
/// endpoint, httpbin's `/headers`) sees the marker that main never sees,
/// which is no difference the release made. So wherever the answers name
/// one of these (a JSON key in any case, a `Name: value` line of a text
/// body, a compared response header), it is left out of the comparison.
pub const OWN_HEADERS: &[&str] = &[
    "x-switchyard-shadow",
    "x-switchyard-version",
    "x-switchyard-error",
    "x-request-id",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// Whether `name` is one of [`OWN_HEADERS`] (any `x-switchyard-` name
/// counts), in any case.
pub fn is_own_header(name: &str) -> bool {
    let prefix = "x-switchyard-";
    name.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        || OWN_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A text body without the lines that show one of [`OWN_HEADERS`]
/// (`X-Switchyard-Shadow: 1`).
fn without_own_header_lines(body: &str) -> String {
    body.lines()
        .filter(|line| {
            line.split_once(':')
                .is_none_or(|(name, _)| !is_own_header(name.trim()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What to compare and what to leave out, per service.
#[derive(Debug, Clone)]
pub struct CompareRules {
    /// Response headers compared (lower-case).
    pub headers: Vec<String>,
    /// JSON paths whose differences are ignored (and everything below them).
    pub ignore_paths: Vec<PathPattern>,
}

impl Default for CompareRules {
    fn default() -> Self {
        Self {
            headers: vec!["content-type".to_owned()],
            ignore_paths: Vec::new(),
        }
    }
}

/// How two values differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    Status,
    Header,
    /// Same JSON type, another value.
    Changed,
    /// Another JSON type (string vs number, …).
    TypeChanged,
    /// In main's answer, not in the shadow's.
    Missing,
    /// In the shadow's answer, not in main's.
    Extra,
    ArrayLength,
    /// The same elements in another order.
    Order,
    /// Non-JSON bodies differ.
    Body,
}

impl fmt::Display for DiffKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// One difference between the two answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The field, with array indices folded: `status`, `header:content-type`,
    /// `$.items[*].id`, `body`. Differences are grouped by it.
    pub field: String,
    /// Where exactly: `$.items[3].id`.
    pub at: String,
    pub kind: DiffKind,
    pub main: String,
    pub shadow: String,
}

/// Longest rendering of a value kept in a difference.
const VALUE_LIMIT: usize = 120;

fn short(s: &str) -> String {
    if s.len() <= VALUE_LIMIT {
        return s.to_owned();
    }
    let mut end = VALUE_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn render(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_owned(), |v| short(&v.to_string()))
}

/// Every difference between main's answer and the shadow's.
pub fn compare(
    main: &CapturedResponse,
    shadow: &CapturedResponse,
    rules: &CompareRules,
) -> Vec<Difference> {
    let mut out = Vec::new();
    if main.status != shadow.status {
        out.push(Difference {
            field: "status".into(),
            at: "status".into(),
            kind: DiffKind::Status,
            main: main.status.to_string(),
            shadow: shadow.status.to_string(),
        });
    }
    for name in rules.headers.iter().filter(|h| !is_own_header(h)) {
        let (a, b) = (main.header(name), shadow.header(name));
        if a != b {
            out.push(Difference {
                field: format!("header:{name}"),
                at: format!("header:{name}"),
                kind: DiffKind::Header,
                main: short(a.unwrap_or("(absent)")),
                shadow: short(b.unwrap_or("(absent)")),
            });
        }
    }
    compare_bodies(main, shadow, rules, &mut out);
    out
}

fn compare_bodies(
    main: &CapturedResponse,
    shadow: &CapturedResponse,
    rules: &CompareRules,
    out: &mut Vec<Difference>,
) {
    if main.body == shadow.body && main.truncated == shadow.truncated {
        return;
    }
    let complete = !main.truncated && !shadow.truncated;
    if complete && (main.looks_like_json() || shadow.looks_like_json()) {
        let parsed = (
            serde_json::from_slice::<Value>(&main.body),
            serde_json::from_slice::<Value>(&shadow.body),
        );
        if let (Ok(a), Ok(b)) = parsed {
            diff_values(&JsonPath::default(), Some(&a), Some(&b), rules, out);
            return;
        }
    }
    if complete {
        if let (Ok(a), Ok(b)) = (
            std::str::from_utf8(&main.body),
            std::str::from_utf8(&shadow.body),
        ) {
            if without_own_header_lines(a) == without_own_header_lines(b) {
                return;
            }
        }
    }
    let text = |c: &CapturedResponse| match std::str::from_utf8(&c.body) {
        Ok(s) => short(s),
        Err(_) => format!("({} bytes)", c.body.len()),
    };
    out.push(Difference {
        field: "body".into(),
        at: "body".into(),
        kind: DiffKind::Body,
        main: text(main),
        shadow: text(shadow),
    });
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn diff_values(
    path: &JsonPath,
    a: Option<&Value>,
    b: Option<&Value>,
    rules: &CompareRules,
    out: &mut Vec<Difference>,
) {
    if rules.ignore_paths.iter().any(|p| p.covers(path)) {
        return;
    }
    let push = |kind: DiffKind, out: &mut Vec<Difference>| {
        out.push(Difference {
            field: path.generalized(),
            at: path.to_string(),
            kind,
            main: render(a),
            shadow: render(b),
        });
    };
    match (a, b) {
        (None, None) => {}
        (Some(_), None) => push(DiffKind::Missing, out),
        (None, Some(_)) => push(DiffKind::Extra, out),
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            for (key, xv) in x.iter().filter(|(k, _)| !is_own_header(k)) {
                diff_values(&path.child_key(key), Some(xv), y.get(key), rules, out);
            }
            let extra = |k: &String| !x.contains_key(k) && !is_own_header(k);
            for (key, yv) in y.iter().filter(|(k, _)| extra(k)) {
                diff_values(&path.child_key(key), None, Some(yv), rules, out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            if x.len() == y.len() && x != y && same_elements(x, y) {
                push(DiffKind::Order, out);
                return;
            }
            if x.len() != y.len() {
                out.push(Difference {
                    field: path.generalized(),
                    at: path.to_string(),
                    kind: DiffKind::ArrayLength,
                    main: format!("{} elements", x.len()),
                    shadow: format!("{} elements", y.len()),
                });
            }
            for (i, (xv, yv)) in x.iter().zip(y).enumerate() {
                diff_values(&path.child_index(i), Some(xv), Some(yv), rules, out);
            }
        }
        (Some(x), Some(y)) if type_name(x) != type_name(y) => push(DiffKind::TypeChanged, out),
        (Some(x), Some(y)) if x != y => push(DiffKind::Changed, out),
        _ => {}
    }
}

fn same_elements(x: &[Value], y: &[Value]) -> bool {
    let key = |v: &Value| v.to_string();
    let mut a: Vec<String> = x.iter().map(key).collect();
    let mut b: Vec<String> = y.iter().map(key).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(status: u16, body: &str) -> CapturedResponse {
        CapturedResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.to_owned()),
            truncated: false,
        }
    }

    fn fields(d: &[Difference]) -> Vec<(String, DiffKind)> {
        d.iter().map(|d| (d.at.clone(), d.kind)).collect()
    }

    #[test]
    fn equal_answers_have_no_differences() {
        let a = json(200, r#"{"a":1,"b":[1,2]}"#);
        let b = json(200, r#"{ "b": [1, 2], "a": 1 }"#);
        assert!(compare(&a, &b, &CompareRules::default()).is_empty());
    }

    #[test]
    fn json_differences_are_found_by_field_path() {
        let a = json(
            200,
            r#"{"total":3,"kind":"x","items":[{"id":1},{"id":2}],"gone":true,"tags":["a","b"]}"#,
        );
        let b = json(
            201,
            r#"{"total":4,"kind":7,"items":[{"id":1},{"id":5},{"id":6}],"new":null,"tags":["b","a"]}"#,
        );
        let d = compare(&a, &b, &CompareRules::default());
        let f = fields(&d);
        assert!(f.contains(&("status".into(), DiffKind::Status)), "{f:?}");
        assert!(f.contains(&("$.total".into(), DiffKind::Changed)), "{f:?}");
        assert!(
            f.contains(&("$.kind".into(), DiffKind::TypeChanged)),
            "{f:?}"
        );
        assert!(
            f.contains(&("$.items".into(), DiffKind::ArrayLength)),
            "{f:?}"
        );
        assert!(
            f.contains(&("$.items[1].id".into(), DiffKind::Changed)),
            "{f:?}"
        );
        assert!(f.contains(&("$.gone".into(), DiffKind::Missing)), "{f:?}");
        assert!(f.contains(&("$.new".into(), DiffKind::Extra)), "{f:?}");
        assert!(f.contains(&("$.tags".into(), DiffKind::Order)), "{f:?}");
        let id = d.iter().find(|d| d.at == "$.items[1].id").expect("id diff");
        assert_eq!(id.field, "$.items[*].id");
        assert_eq!((id.main.as_str(), id.shadow.as_str()), ("2", "5"));
    }

    #[test]
    fn ignored_paths_are_not_reported() {
        let a = json(200, r#"{"generated_at":"t1","items":[{"id":"x","n":1}]}"#);
        let b = json(200, r#"{"generated_at":"t2","items":[{"id":"y","n":1}]}"#);
        let rules = CompareRules {
            ignore_paths: vec![
                PathPattern::parse("$.generated_at").expect("pattern"),
                PathPattern::parse("$.items[*].id").expect("pattern"),
            ],
            ..CompareRules::default()
        };
        assert!(compare(&a, &b, &rules).is_empty());
        assert_eq!(compare(&a, &b, &CompareRules::default()).len(), 2);
    }

    #[test]
    fn switchyards_own_headers_are_not_differences() {
        let a = json(
            200,
            r#"{"headers":{"Host":"a","X-Request-Id":"1","Forwarded":"for=1"},"n":1}"#,
        );
        let b = json(
            200,
            r#"{"headers":{"Host":"a","X-Switchyard-Shadow":"1","x-request-id":"2"},"n":1}"#,
        );
        assert!(compare(&a, &b, &CompareRules::default()).is_empty());
        let c = json(200, r#"{"headers":{"Host":"b","X-Switchyard-Shadow":"1"}}"#);
        let f = fields(&compare(&a, &c, &CompareRules::default()));
        assert_eq!(
            f,
            vec![
                ("$.headers.Host".into(), DiffKind::Changed),
                ("$.n".into(), DiffKind::Missing)
            ]
        );
        let text = |body: &'static str| CapturedResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("x-switchyard-version".into(), body.into()),
            ],
            body: Bytes::from_static(body.as_bytes()),
            truncated: false,
        };
        let rules = CompareRules {
            headers: vec!["content-type".into(), "x-switchyard-version".into()],
            ..CompareRules::default()
        };
        let main = text("GET / HTTP/1.1\nhost: a\n");
        let copy = text("GET / HTTP/1.1\nhost: a\nx-switchyard-shadow: 1\n");
        assert!(compare(&main, &copy, &rules).is_empty());
        let other = text("GET / HTTP/1.1\nhost: b\nx-switchyard-shadow: 1\n");
        assert_eq!(fields(&compare(&main, &other, &rules)).len(), 1);
    }

    #[test]
    fn headers_and_text_bodies_are_compared() {
        let a = CapturedResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from_static(b"hello"),
            truncated: false,
        };
        let mut b = a.clone();
        b.headers = vec![("content-type".into(), "text/html".into())];
        b.body = Bytes::from_static(b"world");
        let f = fields(&compare(&a, &b, &CompareRules::default()));
        assert_eq!(
            f,
            vec![
                ("header:content-type".into(), DiffKind::Header),
                ("body".into(), DiffKind::Body)
            ]
        );
    }
}
