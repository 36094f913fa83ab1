//! A service's traffic policy: who reaches which release. Serializable
//! (JSON in revisions, TOML in `switchyard apply -f`) and validated here;
//! [`crate::routing`] compiles it into the table the proxy evaluates.
//!
//! Evaluation order for a request to the service: the opt-in header (or
//! cookie) first, then the rules in order, then the canary split, then main.

use std::collections::BTreeMap;
use std::net::IpAddr;

use semver::Version;
use serde::{Deserialize, Serialize};

use super::{ApiVersion, ModelError};

/// The most rules a service may have.
pub const MAX_RULES: usize = 1000;
/// Regexes are compiled with this size limit, so a rule cannot make the
/// proxy build a huge automaton.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficPolicy {
    pub sticky: Stickiness,
    pub opt_in: OptIn,
    /// The release that a share of clients reaches.
    pub canary: Option<Canary>,
    /// A release reachable by opt-in only (`x-client-mode: green`).
    pub green: Option<Version>,
    /// Evaluated in order; the first whose matchers all hold decides.
    pub rules: Vec<Rule>,
}

/// Where a client's key comes from, in order: the header, the application
/// cookie, the cookie Switchyard set, else the client's IP address (and
/// then Switchyard sets its cookie, so the client keeps its side even when
/// its address changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stickiness {
    /// Header that carries the client key, e.g. `x-user-id`.
    pub header: Option<String>,
    /// Application cookie that carries the client key, e.g. `session`.
    pub cookie: Option<String>,
    /// Cookie Switchyard sets for clients without a key; empty: never set.
    pub set_cookie: String,
    /// GROUP in `murmur3("GROUP:KEY") % 100 + 1`; default the service name,
    /// so a population is the same as an Unleash flag's with that group id.
    pub group: Option<String>,
}

/// The default name of the cookie Switchyard sets.
pub const DEFAULT_STICKY_COOKIE: &str = "switchyard-id";

impl Default for Stickiness {
    fn default() -> Self {
        Self {
            header: None,
            cookie: None,
            set_cookie: DEFAULT_STICKY_COOKIE.to_owned(),
            group: None,
        }
    }
}

/// The opt-in header: `green` reaches the candidate, `blue` reaches main.
/// A cookie of the same name works for browsers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptIn {
    pub header: String,
}

impl Default for OptIn {
    fn default() -> Self {
        Self {
            header: "x-client-mode".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub version: Version,
    /// Share of clients, 0 to 100.
    pub percent: u8,
}

/// One routing rule: when every matcher holds, the action decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: Vec<Matcher>,
    #[serde(flatten)]
    pub action: Action,
}

/// What a matcher compares a value with. Exactly one of the three, or
/// none, which means "present".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StringMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "kebab-case")]
pub enum Matcher {
    Header {
        name: String,
        #[serde(flatten)]
        value: StringMatch,
    },
    Cookie {
        name: String,
        #[serde(flatten)]
        value: StringMatch,
    },
    Host {
        #[serde(flatten)]
        value: StringMatch,
    },
    /// The path within the service (after `/services/NAME` is stripped).
    Path {
        #[serde(flatten)]
        value: StringMatch,
    },
    Method {
        methods: Vec<String>,
    },
    Query {
        name: String,
        #[serde(flatten)]
        value: StringMatch,
    },
    /// The client's address: IPs or CIDR blocks.
    Source {
        cidrs: Vec<String>,
    },
    /// The API version the request asks for, read where API-version
    /// routing reads it (`switchyard api-version NAME`: a header, the
    /// media type's `version=` or the path prefix). Matched as API-version
    /// routing matches: a major alone matches every minor of it, so `v2`
    /// matches a request for 2, 2.0 or 2.1. A request that names no
    /// version, or no readable one, does not match.
    ApiVersion {
        version: ApiVersion,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Send the request to this release.
    Route { to: Version },
    /// Answer it without any release.
    Respond {
        status: u16,
        #[serde(default)]
        body: String,
        #[serde(default = "default_content_type")]
        content_type: String,
    },
    /// Split by weights (summing to 100), sticky by client key.
    Split { weights: BTreeMap<Version, u8> },
}

fn default_content_type() -> String {
    "text/plain; charset=utf-8".to_owned()
}

fn bad<T>(message: String) -> Result<T, ModelError> {
    Err(ModelError::InvalidPolicy(message))
}

/// Parses `10.0.0.0/8` or a lone address (`10.1.2.3`, `::1`).
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    s.parse::<IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("`{s}` is not an IP address or CIDR block such as 10.0.0.0/8"))
}

fn check_header_name(what: &str, name: &str) -> Result<(), ModelError> {
    if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return bad(format!("{what} `{name}` is not a valid header name"));
    }
    Ok(())
}

fn check_cookie_name(what: &str, name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        return bad(format!("{what} `{name}` is not a valid cookie name"));
    }
    Ok(())
}

impl StringMatch {
    fn check(&self, what: &str) -> Result<(), ModelError> {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set > 1 {
            return bad(format!("{what}: give one of exact, prefix or regex"));
        }
        if let Some(re) = &self.regex {
            regex::RegexBuilder::new(re)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ModelError::InvalidPolicy(format!("{what}: bad regex `{re}`: {e}")))?;
        }
        Ok(())
    }
}

impl Matcher {
    fn check(&self) -> Result<(), ModelError> {
        match self {
            Matcher::Header { name, value } => {
                check_header_name("header matcher", name)?;
                value.check(&format!("header {name}"))
            }
            Matcher::Cookie { name, value } => {
                check_cookie_name("cookie matcher", name)?;
                value.check(&format!("cookie {name}"))
            }
            Matcher::Host { value } => value.check("host"),
            Matcher::Path { value } => {
                if let Some(p) = value.exact.as_ref().or(value.prefix.as_ref()) {
                    if !p.starts_with('/') {
                        return bad(format!("path `{p}` must start with '/'"));
                    }
                }
                value.check("path")
            }
            Matcher::Method { methods } => {
                if methods.is_empty() {
                    return bad("method matcher: list at least one method".into());
                }
                match methods
                    .iter()
                    .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
                {
                    Some(m) => bad(format!("`{m}` is not an HTTP method; use GET, POST, …")),
                    None => Ok(()),
                }
            }
            Matcher::Query { name, value } => {
                if name.is_empty() {
                    return bad("query matcher: name the parameter".into());
                }
                value.check(&format!("query {name}"))
            }
            // Its version was checked when it was read.
            Matcher::ApiVersion { .. } => Ok(()),
            Matcher::Source { cidrs } => {
                if cidrs.is_empty() {
                    return bad("source matcher: list at least one address or CIDR block".into());
                }
                for c in cidrs {
                    parse_cidr(c).map_err(ModelError::InvalidPolicy)?;
                }
                Ok(())
            }
        }
    }
}

impl TrafficPolicy {
    /// Checks the policy on its own and against the service's releases
    /// (`running`) and main.
    pub fn validate(&self, running: &[&Version], main: Option<&Version>) -> Result<(), ModelError> {
        let known = |v: &Version, what: &str| -> Result<(), ModelError> {
            if running.contains(&v) {
                Ok(())
            } else {
                let list: Vec<String> = running.iter().map(|v| v.to_string()).collect();
                bad(format!(
                    "{what} names release {v}, which does not run; running: {}",
                    if list.is_empty() {
                        "none".into()
                    } else {
                        list.join(", ")
                    }
                ))
            }
        };
        if let Some(h) = &self.sticky.header {
            check_header_name("sticky header", h)?;
        }
        if let Some(c) = &self.sticky.cookie {
            check_cookie_name("sticky cookie", c)?;
        }
        if !self.sticky.set_cookie.is_empty() {
            check_cookie_name("sticky set-cookie", &self.sticky.set_cookie)?;
        }
        if self.sticky.group.as_deref().is_some_and(str::is_empty) {
            return bad("the sticky group cannot be empty".into());
        }
        check_header_name("opt-in header", &self.opt_in.header)?;
        if let Some(canary) = &self.canary {
            known(&canary.version, "the canary")?;
            if canary.percent > 100 {
                return bad(format!(
                    "the canary percentage is 0 to 100, got {}",
                    canary.percent
                ));
            }
            if Some(&canary.version) == main {
                return bad(format!(
                    "{} is main; a canary must be another release",
                    canary.version
                ));
            }
        }
        if let Some(green) = &self.green {
            known(green, "green")?;
            if Some(green) == main {
                return bad(format!("{green} is main; green must be another release"));
            }
            if self.canary.as_ref().is_some_and(|c| &c.version == green) {
                return bad(format!(
                    "{green} is the canary; it is already the candidate"
                ));
            }
        }
        if self.rules.len() > MAX_RULES {
            return bad(format!("at most {MAX_RULES} rules"));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let what = rule_label(i, rule);
            for m in &rule.matches {
                m.check()
                    .map_err(|e| ModelError::InvalidPolicy(format!("{what}: {e}")))?;
            }
            match &rule.action {
                Action::Route { to } => known(to, &what)?,
                Action::Respond {
                    status,
                    content_type,
                    ..
                } => {
                    if !(100..=599).contains(status) {
                        return bad(format!("{what}: status {status} is not 100 to 599"));
                    }
                    if http::HeaderValue::from_str(content_type).is_err() {
                        return bad(format!(
                            "{what}: content type `{content_type}` is not a header value"
                        ));
                    }
                }
                Action::Split { weights } => {
                    let total: u32 = weights.values().map(|w| u32::from(*w)).sum();
                    if total != 100 {
                        return bad(format!("{what}: split weights add up to {total}, not 100"));
                    }
                    for v in weights.keys() {
                        known(v, &what)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops `version` as canary or green (it became main, or it is gone).
    pub fn forget_candidate(&mut self, version: &Version) {
        if self.canary.as_ref().is_some_and(|c| &c.version == version) {
            self.canary = None;
        }
        if self.green.as_ref() == Some(version) {
            self.green = None;
        }
    }

    /// The releases the policy sends traffic to (besides main).
    pub fn targets(&self) -> Vec<&Version> {
        let mut out: Vec<&Version> = Vec::new();
        out.extend(self.canary.as_ref().map(|c| &c.version));
        out.extend(self.green.as_ref());
        for rule in &self.rules {
            match &rule.action {
                Action::Route { to } => out.push(to),
                Action::Split { weights } => out.extend(weights.keys()),
                Action::Respond { .. } => {}
            }
        }
        out
    }

    /// The rules that send traffic to `version`, by label.
    pub fn rules_naming(&self, version: &Version) -> Vec<String> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| match &r.action {
                Action::Route { to } => to == version,
                Action::Split { weights } => weights.contains_key(version),
                Action::Respond { .. } => false,
            })
            .map(|(i, r)| rule_label(i, r))
            .collect()
    }

    /// Reads a policy file (`switchyard apply -f`).
    pub fn from_toml(text: &str) -> Result<Self, ModelError> {
        toml::from_str(text)
            .map_err(|e| ModelError::InvalidPolicy(format!("cannot read the policy file: {e}")))
    }
}

impl std::fmt::Display for StringMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.exact, &self.prefix, &self.regex) {
            (Some(e), _, _) => write!(f, "= {e}"),
            (_, Some(p), _) => write!(f, "starts with {p}"),
            (_, _, Some(r)) => write!(f, "~ /{r}/"),
            _ => f.write_str("present"),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Matcher::Header { name, value } => write!(f, "header {name} {value}"),
            Matcher::Cookie { name, value } => write!(f, "cookie {name} {value}"),
            Matcher::Host { value } => write!(f, "host {value}"),
            Matcher::Path { value } => write!(f, "path {value}"),
            Matcher::Method { methods } => write!(f, "method {}", methods.join("|")),
            Matcher::Query { name, value } => write!(f, "query {name} {value}"),
            Matcher::Source { cidrs } => write!(f, "source {}", cidrs.join("|")),
            Matcher::ApiVersion { version } => write!(f, "api-version {version}"),
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Route { to } => write!(f, "{to}"),
            Action::Respond { status, .. } => write!(f, "respond {status}"),
            Action::Split { weights } => {
                let parts: Vec<String> = weights.iter().map(|(v, w)| format!("{v}={w}%")).collect();
                write!(f, "split {}", parts.join(" "))
            }
        }
    }
}

impl Rule {
    /// `header x-beta = 1 and method GET`, or `always`.
    pub fn describe_matches(&self) -> String {
        if self.matches.is_empty() {
            return "always".to_owned();
        }
        self.matches
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// `rule 2 (beta)`: how errors and listings name a rule (1-based).
pub fn rule_label(index: usize, rule: &Rule) -> String {
    if rule.name.is_empty() {
        format!("rule {}", index + 1)
    } else {
        format!("rule {} ({})", index + 1, rule.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    const FILE: &str = r#"
        [sticky]
        header = "x-user-id"
        group = "checkout"

        [canary]
        version = "2.0.0"
        percent = 10

        [[rules]]
        name = "beta"
        match = [
            { on = "header", name = "x-beta", exact = "1" },
            { on = "method", methods = ["GET", "HEAD"] },
            { on = "source", cidrs = ["10.0.0.0/8", "127.0.0.1"] },
        ]
        action = "route"
        to = "2.0.0"

        [[rules]]
        match = [{ on = "path", prefix = "/maintenance" }]
        action = "respond"
        status = 503
        body = "down for maintenance"

        [[rules]]
        match = [{ on = "cookie", name = "ab", regex = "^b" }]
        action = "split"
        weights = { "1.0.0" = 50, "2.0.0" = 50 }
    "#;

    #[test]
    fn a_policy_file_reads_and_validates() {
        let p = TrafficPolicy::from_toml(FILE).expect("parse");
        assert_eq!(p.rules.len(), 3);
        assert_eq!(
            p.canary,
            Some(Canary {
                version: v("2.0.0"),
                percent: 10
            })
        );
        assert_eq!(p.sticky.set_cookie, DEFAULT_STICKY_COOKIE);
        let (one, two) = (v("1.0.0"), v("2.0.0"));
        p.validate(&[&one, &two], Some(&one)).expect("valid");
        let json = serde_json::to_string(&p).expect("json");
        assert_eq!(
            serde_json::from_str::<TrafficPolicy>(&json).expect("back"),
            p
        );
    }

    #[test]
    fn invalid_policies_say_what_is_wrong() {
        let (one, two) = (v("1.0.0"), v("2.0.0"));
        let p = TrafficPolicy::from_toml(FILE).expect("parse");
        let err = p.validate(&[&one], Some(&one)).expect_err("2.0.0 missing");
        assert!(err.to_string().contains("2.0.0"), "{err}");

        let mut bad_regex = p.clone();
        bad_regex.rules[2].matches = vec![Matcher::Path {
            value: StringMatch {
                regex: Some("(".into()),
                ..StringMatch::default()
            },
        }];
        let err = bad_regex
            .validate(&[&one, &two], Some(&one))
            .expect_err("regex");
        assert!(err.to_string().contains("rule 3"), "{err}");

        let mut bad_split = p.clone();
        bad_split.rules[2].action = Action::Split {
            weights: BTreeMap::from([(one.clone(), 60), (two.clone(), 50)]),
        };
        let err = bad_split
            .validate(&[&one, &two], Some(&one))
            .expect_err("weights");
        assert!(err.to_string().contains("110"), "{err}");

        let mut canary_main = p.clone();
        canary_main.canary = Some(Canary {
            version: one.clone(),
            percent: 5,
        });
        assert!(canary_main.validate(&[&one, &two], Some(&one)).is_err());

        assert!(TrafficPolicy::from_toml("[canary]\nversion = \"x\"").is_err());
        assert!(TrafficPolicy::from_toml("unknown = 1").is_err());
    }

    #[test]
    fn an_api_version_matcher_reads_checks_and_shows_its_version() {
        let p = TrafficPolicy::from_toml(
            r#"
            [[rules]]
            match = [{ on = "api-version", version = "2" }, { on = "method", methods = ["GET"] }]
            action = "route"
            to = "2.0.0"
            "#,
        )
        .expect("parse");
        let (one, two) = (v("1.0.0"), v("2.0.0"));
        p.validate(&[&one, &two], Some(&one)).expect("valid");
        assert_eq!(
            p.rules[0].matches[0],
            Matcher::ApiVersion {
                version: "v2".parse().expect("api version")
            }
        );
        assert_eq!(
            p.rules[0].describe_matches(),
            "api-version v2 and method GET"
        );
        let json = serde_json::to_string(&p).expect("json");
        assert!(
            json.contains(r#"{"on":"api-version","version":"v2"}"#),
            "{json}"
        );
        for bad in ["two", "", "v2.x", "1.2.3"] {
            let text = format!(
                "[[rules]]\nmatch = [{{ on = \"api-version\", version = \"{bad}\" }}]\naction = \"route\"\nto = \"2.0.0\""
            );
            let err = TrafficPolicy::from_toml(&text).expect_err(bad);
            assert!(
                err.to_string()
                    .contains("is not of the form v2, v1.1, 2 or 2.0"),
                "{bad}: {err}"
            );
        }
        let missing =
            "[[rules]]\nmatch = [{ on = \"api-version\" }]\naction = \"route\"\nto = \"2.0.0\"";
        let err = TrafficPolicy::from_toml(missing).expect_err("no version");
        assert!(err.to_string().contains("version"), "{err}");
    }

    /// Random text and random structured policies thrown at the parser,
    /// the validator and the compiler (the same path as the fuzz target
    /// `policy_parse`, which `fuzz/run` builds and runs on stable).
    mod random {
        use super::*;
        use crate::model::ApiVersionSource;
        use crate::routing::{CompiledPolicy, Decision, RequestView};
        use http::{HeaderMap, HeaderValue, Method};
        use proptest::prelude::*;
        use proptest::sample::select;

        /// Parses, validates and compiles `text`, then evaluates the result
        /// for a few requests. Nothing may panic, and a policy that
        /// validates must compile.
        fn exercise(text: &str) -> Result<(), TestCaseError> {
            let Ok(policy) = TrafficPolicy::from_toml(text) else {
                return Ok(());
            };
            let running = policy.targets();
            let valid = policy.validate(&running, None);
            let compiled =
                CompiledPolicy::<()>::compile("svc", &policy, &ApiVersionSource::default(), |_| {
                    None
                });
            if valid.is_ok() {
                prop_assert!(
                    compiled.is_ok(),
                    "validated but does not compile: {:?}\n{text}",
                    compiled.err()
                );
            }
            if let Ok(compiled) = compiled {
                let mut headers = HeaderMap::new();
                headers.insert("x-user-id", HeaderValue::from_static("u1"));
                headers.insert("x-beta", HeaderValue::from_static("1"));
                headers.insert(
                    http::header::COOKIE,
                    HeaderValue::from_static("ab=b; session=s1; x-client-mode=green"),
                );
                let empty = HeaderMap::new();
                for (h, path) in [(&headers, "/api/x?page=2&q"), (&empty, "?")] {
                    let view = RequestView {
                        method: &Method::GET,
                        host: Some("Shop.Example.com:8080"),
                        path_and_query: path,
                        headers: h,
                        client: "10.1.2.3".parse().expect("ip"),
                    };
                    if let Decision::Release { target, .. } = compiled.decide(&view, path) {
                        prop_assert!(
                            policy
                                .targets()
                                .iter()
                                .any(|v| v.to_string() == target.version)
                        );
                    }
                }
                let _ = compiled.describe(Some("1.0.0"));
            }
            Ok(())
        }

        /// A TOML string literal.
        fn quoted(s: &str) -> String {
            toml::Value::String(s.to_owned()).to_string()
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                "[a-z0-9./^$()*+?{}|-]{0,12}",
                r"[\[\]a-zA-Z0-9 =:;\-_]{0,12}",
                Just("(".to_owned()),
                Just("[z-a]".to_owned()),
                Just("a{1000}{1000}{1000}".to_owned()),
                Just("x-client-mode".to_owned()),
                any::<String>(),
            ]
        }

        fn version() -> impl Strategy<Value = String> {
            prop_oneof![
                select(vec!["1.0.0", "2.0.0", "3.0.0-rc.1", "9.9.9", "x", ""])
                    .prop_map(String::from),
                any::<String>(),
            ]
        }

        fn value_match() -> impl Strategy<Value = String> {
            prop::collection::vec(
                (select(vec!["exact", "prefix", "regex", "other"]), text()),
                0..3,
            )
            .prop_map(|kvs| {
                kvs.iter()
                    .map(|(k, v)| format!(", {k} = {}", quoted(v)))
                    .collect()
            })
        }

        fn matcher() -> impl Strategy<Value = String> {
            let on = select(vec![
                "header",
                "cookie",
                "host",
                "path",
                "method",
                "query",
                "source",
                "api-version",
                "bogus",
            ]);
            let methods = prop::collection::vec(
                prop_oneof![
                    select(vec!["GET", "POST", "get", "", "PATCH"]).prop_map(String::from),
                    text()
                ],
                0..3,
            );
            let cidrs = prop::collection::vec(
                prop_oneof![
                    select(vec![
                        "10.0.0.0/8",
                        "127.0.0.1",
                        "::1",
                        "fe80::/10",
                        "10.0.0.0/33",
                        "nope",
                        ""
                    ])
                    .prop_map(String::from),
                    text()
                ],
                0..3,
            );
            (on, text(), value_match(), methods, cidrs, any::<bool>()).prop_map(
                |(on, name, value, methods, cidrs, named)| {
                    let list = |items: &[String]| {
                        items
                            .iter()
                            .map(|i| quoted(i))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let name = if named {
                        format!(", name = {}", quoted(&name))
                    } else {
                        String::new()
                    };
                    match on {
                        "method" => {
                            format!("{{ on = \"method\", methods = [{}] }}", list(&methods))
                        }
                        "source" => format!("{{ on = \"source\", cidrs = [{}] }}", list(&cidrs)),
                        "api-version" => format!(
                            "{{ on = \"api-version\", version = {} }}",
                            quoted(if named { "v2" } else { &name })
                        ),
                        _ => format!("{{ on = \"{on}\"{name}{value} }}"),
                    }
                },
            )
        }

        fn action() -> impl Strategy<Value = String> {
            let weights = prop::collection::vec((version(), 0u32..300), 0..4);
            prop_oneof![
                version().prop_map(|v| format!("action = \"route\"\nto = {}", quoted(&v))),
                (0u32..70_000, text(), prop::option::of(text())).prop_map(|(status, body, ct)| {
                    let ct = ct
                        .map(|c| format!("\ncontent_type = {}", quoted(&c)))
                        .unwrap_or_default();
                    format!(
                        "action = \"respond\"\nstatus = {status}\nbody = {}{ct}",
                        quoted(&body)
                    )
                }),
                weights.prop_map(|ws| {
                    let ws: Vec<String> = ws
                        .iter()
                        .map(|(v, w)| format!("{} = {w}", quoted(v)))
                        .collect();
                    format!("action = \"split\"\nweights = {{ {} }}", ws.join(", "))
                }),
                Just("action = \"mirror\"".to_owned()),
            ]
        }

        fn rule() -> impl Strategy<Value = String> {
            (
                prop::option::of(text()),
                prop::collection::vec(matcher(), 0..4),
                action(),
            )
                .prop_map(|(name, matches, action)| {
                    let name = name
                        .map(|n| format!("name = {}\n", quoted(&n)))
                        .unwrap_or_default();
                    format!(
                        "[[rules]]\n{name}match = [{}]\n{action}\n",
                        matches.join(", ")
                    )
                })
        }

        fn policy() -> impl Strategy<Value = String> {
            let sticky = prop::collection::vec(
                (
                    select(vec!["header", "cookie", "set_cookie", "group"]),
                    text(),
                ),
                0..3,
            );
            let canary = prop::option::of((version(), 0u32..300));
            (
                sticky,
                canary,
                prop::option::of(version()),
                prop::option::of(text()),
                prop::collection::vec(rule(), 0..5),
            )
                .prop_map(|(sticky, canary, green, opt_in, rules)| {
                    let mut out = String::new();
                    if !sticky.is_empty() {
                        let kvs: Vec<String> = sticky
                            .iter()
                            .map(|(k, v)| format!("{k} = {}", quoted(v)))
                            .collect();
                        out += &format!("sticky = {{ {} }}\n", kvs.join(", "));
                    }
                    if let Some((v, p)) = canary {
                        out += &format!("canary = {{ version = {}, percent = {p} }}\n", quoted(&v));
                    }
                    if let Some(g) = green {
                        out += &format!("green = {}\n", quoted(&g));
                    }
                    if let Some(h) = opt_in {
                        out += &format!("opt_in = {{ header = {} }}\n", quoted(&h));
                    }
                    out + &rules.concat()
                })
        }

        /// TOML-looking token soup: reaches deeper into the parser than
        /// arbitrary text.
        fn soup() -> impl Strategy<Value = String> {
            prop::collection::vec(
                select(vec![
                    "[canary]",
                    "[sticky]",
                    "[[rules]]",
                    "\n",
                    "=",
                    "{",
                    "}",
                    "[",
                    "]",
                    ",",
                    "\"",
                    "version",
                    "percent",
                    "match",
                    "on",
                    "\"header\"",
                    "\"path\"",
                    "\"source\"",
                    "action",
                    "\"route\"",
                    "\"split\"",
                    "\"respond\"",
                    "to",
                    "weights",
                    "status",
                    "\"2.0.0\"",
                    "10",
                    "-1",
                    "1e9",
                    "name",
                    "regex",
                    "\"(\"",
                    "cidrs",
                    "true",
                ]),
                0..40,
            )
            .prop_map(|tokens| tokens.join(" "))
        }

        proptest! {
            #[test]
            fn random_text_never_panics(text in any::<String>()) {
                exercise(&text)?;
            }

            #[test]
            fn toml_token_soup_never_panics(text in soup()) {
                exercise(&text)?;
            }

            #[test]
            fn random_structured_policies_never_panic_and_valid_ones_compile(text in policy()) {
                exercise(&text)?;
            }
        }

        #[test]
        fn the_structured_generator_reaches_valid_policies() {
            // Guards the generator: if nothing it made parsed and
            // validated, the property above would only check error paths.
            use proptest::strategy::ValueTree;
            use proptest::test_runner::TestRunner;
            let mut runner = TestRunner::deterministic();
            let (mut parsed, mut valid) = (0, 0);
            for _ in 0..500 {
                let text = policy().new_tree(&mut runner).expect("a value").current();
                if let Ok(p) = TrafficPolicy::from_toml(&text) {
                    parsed += 1;
                    valid += usize::from(p.validate(&p.targets(), None).is_ok());
                }
            }
            assert!(
                parsed >= 50 && valid >= 10,
                "parsed {parsed}, valid {valid} of 500"
            );
        }
    }
}
