//! A traffic policy compiled for evaluation: opt-in, rules, canary, main.
//! Evaluating it takes no lock and allocates only to set a sticky cookie.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderName, HeaderValue};
use semver::Version;

use super::bucket::{bucket, client_token};
use super::matcher::{CompiledMatcher, RequestView};
use crate::model::{Action, ApiVersionSource, Matcher, Rule, TrafficPolicy, rule_label};

/// An answer a rule gives without any release.
#[derive(Debug, Clone)]
pub struct FixedResponse {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: HeaderValue,
}

#[derive(Debug)]
enum CompiledAction<B> {
    Route(Target<B>),
    Respond(FixedResponse),
    /// Cumulative weights: the first entry whose bound is ≥ the bucket.
    Split(Vec<(u32, Target<B>)>),
}

/// A release the policy sends traffic to; `None` when it does not run.
#[derive(Debug)]
pub struct Target<B> {
    pub version: String,
    pub backend: Option<Arc<B>>,
}

#[derive(Debug)]
struct CompiledRule<B> {
    label: String,
    /// What it matches, for listings.
    when: String,
    matchers: Vec<CompiledMatcher>,
    action: CompiledAction<B>,
}

/// What a rule matches, for `switchyard routes`: as `route ls` shows it,
/// with where an `api-version` matcher reads the version.
fn describe_matches(rule: &Rule, api: &ApiVersionSource) -> String {
    if !rule
        .matches
        .iter()
        .any(|m| matches!(m, Matcher::ApiVersion { .. }))
    {
        return rule.describe_matches();
    }
    rule.matches
        .iter()
        .map(|m| match m {
            Matcher::ApiVersion { .. } => format!("{m} ({api})"),
            _ => m.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// How a request to the service was decided.
#[derive(Debug)]
pub enum Decision<'t, B> {
    /// Main answers (no rule, outside the canary, or `blue`).
    Main {
        set_cookie: Option<String>,
    },
    Release {
        target: &'t Target<B>,
        set_cookie: Option<String>,
    },
    Respond(&'t FixedResponse),
    /// `green` was asked for and there is no candidate.
    NoCandidate,
}

#[derive(Debug)]
pub struct CompiledPolicy<B> {
    group: String,
    sticky_header: Option<HeaderName>,
    sticky_cookie: Option<String>,
    /// The cookie Switchyard sets for clients without a key.
    pub set_cookie: Option<String>,
    opt_in_header: HeaderName,
    opt_in_cookie: String,
    candidate: Option<Target<B>>,
    canary: Option<(u32, Target<B>)>,
    rules: Vec<CompiledRule<B>>,
}

impl<B> CompiledPolicy<B> {
    /// Compiles a validated policy; `api` is where the service's requests
    /// name their API version (for `api-version` matchers), `resolve` finds
    /// a release's backend.
    pub fn compile(
        service: &str,
        policy: &TrafficPolicy,
        api: &ApiVersionSource,
        resolve: impl Fn(&Version) -> Option<Arc<B>>,
    ) -> Result<Self, String> {
        let target = |v: &Version| Target {
            version: v.to_string(),
            backend: resolve(v),
        };
        let mut rules = Vec::with_capacity(policy.rules.len());
        for (i, rule) in policy.rules.iter().enumerate() {
            let label = rule_label(i, rule);
            let matchers = rule
                .matches
                .iter()
                .map(|m| CompiledMatcher::compile(m, api))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{label}: {e}"))?;
            let action = match &rule.action {
                Action::Route { to } => CompiledAction::Route(target(to)),
                Action::Respond {
                    status,
                    body,
                    content_type,
                } => CompiledAction::Respond(FixedResponse {
                    status: StatusCode::from_u16(*status).map_err(|e| format!("{label}: {e}"))?,
                    body: Bytes::from(body.clone()),
                    content_type: HeaderValue::from_str(content_type)
                        .map_err(|e| format!("{label}: {e}"))?,
                }),
                Action::Split { weights } => {
                    let mut bound = 0u32;
                    CompiledAction::Split(
                        weights
                            .iter()
                            .filter(|(_, w)| **w > 0)
                            .map(|(v, w)| {
                                bound += u32::from(*w);
                                (bound, target(v))
                            })
                            .collect(),
                    )
                }
            };
            rules.push(CompiledRule {
                when: describe_matches(rule, api),
                label,
                matchers,
                action,
            });
        }
        let header = |name: &str| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name `{name}`"))
        };
        let candidate = policy
            .green
            .as_ref()
            .or(policy.canary.as_ref().map(|c| &c.version))
            .map(target);
        Ok(Self {
            group: policy
                .sticky
                .group
                .clone()
                .unwrap_or_else(|| service.to_owned()),
            sticky_header: policy.sticky.header.as_deref().map(header).transpose()?,
            sticky_cookie: policy.sticky.cookie.clone(),
            set_cookie: (!policy.sticky.set_cookie.is_empty())
                .then(|| policy.sticky.set_cookie.clone()),
            opt_in_header: header(&policy.opt_in.header)?,
            opt_in_cookie: policy.opt_in.header.clone(),
            candidate,
            canary: policy
                .canary
                .as_ref()
                .filter(|c| c.percent > 0)
                .map(|c| (u32::from(c.percent), target(&c.version))),
            rules,
        })
    }

    /// The client's key and, when it came from the client's address, the
    /// cookie value to set so the client keeps its side.
    fn key<'r>(&self, req: &RequestView<'r>) -> (std::borrow::Cow<'r, str>, Option<String>) {
        let from_header = self
            .sticky_header
            .as_ref()
            .and_then(|h| req.header(h))
            .filter(|v| !v.is_empty());
        let from_cookie = || {
            self.sticky_cookie
                .as_deref()
                .and_then(|c| req.cookie(c))
                .or_else(|| self.set_cookie.as_deref().and_then(|c| req.cookie(c)))
                .filter(|v| !v.is_empty())
        };
        match from_header.or_else(from_cookie) {
            Some(key) => (key.into(), None),
            None => {
                let token = client_token(req.client);
                let set = self.set_cookie.as_ref().map(|_| token.clone());
                (token.into(), set)
            }
        }
    }

    /// Decides where a request to the service goes; `path` is the path
    /// within the service.
    pub fn decide<'t>(&'t self, req: &RequestView<'_>, path: &str) -> Decision<'t, B> {
        let opt_in = req
            .header(&self.opt_in_header)
            .or_else(|| req.cookie(&self.opt_in_cookie));
        match opt_in.map(str::trim) {
            Some(mode) if mode.eq_ignore_ascii_case("green") => {
                return match &self.candidate {
                    Some(target) => Decision::Release {
                        target,
                        set_cookie: None,
                    },
                    None => Decision::NoCandidate,
                };
            }
            Some(mode) if mode.eq_ignore_ascii_case("blue") => {
                return Decision::Main { set_cookie: None };
            }
            _ => {}
        }
        for rule in &self.rules {
            if rule.matchers.iter().all(|m| m.matches(req, path)) {
                return match &rule.action {
                    CompiledAction::Route(target) => Decision::Release {
                        target,
                        set_cookie: None,
                    },
                    CompiledAction::Respond(fixed) => Decision::Respond(fixed),
                    CompiledAction::Split(bounds) => {
                        let (key, set_cookie) = self.key(req);
                        let b = bucket(&self.group, &key);
                        match bounds.iter().find(|(bound, _)| b <= *bound) {
                            Some((_, target)) => Decision::Release { target, set_cookie },
                            None => Decision::Main { set_cookie },
                        }
                    }
                };
            }
        }
        if let Some((percent, target)) = &self.canary {
            let (key, set_cookie) = self.key(req);
            if bucket(&self.group, &key) <= *percent {
                return Decision::Release { target, set_cookie };
            }
            return Decision::Main { set_cookie };
        }
        Decision::Main { set_cookie: None }
    }

    /// Where a new TCP connection from `client` goes when not to main: the
    /// canary's release, when the client's address falls in its share.
    /// The key is the token an HTTP client known only by its address gets,
    /// so an address is in the same population over TCP and HTTP.
    pub fn canary_for(&self, client: std::net::IpAddr) -> Option<&Arc<B>> {
        let (percent, target) = self.canary.as_ref()?;
        if bucket(&self.group, &client_token(client)) <= *percent {
            target.backend.as_ref()
        } else {
            None
        }
    }

    /// The effective table in evaluation order, for `switchyard routes`.
    pub fn describe(&self, main: Option<&str>) -> Vec<(String, String)> {
        let main = main.unwrap_or("(no main)");
        let mut rows = Vec::new();
        let opt_in = self.opt_in_header.as_str();
        rows.push((
            format!("{opt_in}: green (header or cookie)"),
            match &self.candidate {
                Some(t) => format!("{} (candidate)", t.version),
                None => "404 (no candidate)".to_owned(),
            },
        ));
        rows.push((
            format!("{opt_in}: blue (header or cookie)"),
            format!("{main} (main)"),
        ));
        for rule in &self.rules {
            let action = match &rule.action {
                CompiledAction::Route(t) => t.version.clone(),
                CompiledAction::Respond(f) => format!("respond {}", f.status.as_u16()),
                CompiledAction::Split(bounds) => {
                    let mut last = 0;
                    bounds
                        .iter()
                        .map(|(b, t)| {
                            let share = b - last;
                            last = *b;
                            format!("{}={share}%", t.version)
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            };
            rows.push((format!("{}: {}", rule.label, rule.when), action));
        }
        if let Some((percent, t)) = &self.canary {
            rows.push((
                format!("canary {percent}% of clients (group {})", self.group),
                t.version.clone(),
            ));
        }
        rows.push(("everything else".to_owned(), format!("{main} (main)")));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};

    fn policy(toml: &str) -> CompiledPolicy<&'static str> {
        let p = TrafficPolicy::from_toml(toml).expect("policy");
        CompiledPolicy::compile("hello", &p, &ApiVersionSource::default(), |v| {
            Some(Arc::new(if v.major == 2 { "two" } else { "one" }))
        })
        .expect("compile")
    }

    fn decide(p: &CompiledPolicy<&'static str>, headers: &HeaderMap) -> String {
        let method = Method::GET;
        let view = RequestView {
            method: &method,
            host: None,
            path_and_query: "/x",
            headers,
            client: "127.0.0.1".parse().expect("ip"),
        };
        match p.decide(&view, "/x") {
            Decision::Main { .. } => "main".into(),
            Decision::Release { target, .. } => target.version.clone(),
            Decision::Respond(f) => format!("respond {}", f.status.as_u16()),
            Decision::NoCandidate => "no candidate".into(),
        }
    }

    proptest::proptest! {
        /// Raising a canary's share through the compiled policy (not just
        /// the bucket arithmetic) keeps every client already on it there.
        #[test]
        fn raising_the_canary_keeps_everyone_already_on_it(
            key in "[A-Za-z0-9_.-]{1,40}",
            p in 0u8..=100,
            q in 0u8..=100,
        ) {
            let (low, high) = (p.min(q), p.max(q));
            let mut h = HeaderMap::new();
            h.insert("x-user-id", HeaderValue::from_str(&key).expect("header value"));
            let at = |percent: u8| {
                let p = policy(&format!(
                    "canary = {{ version = \"2.0.0\", percent = {percent} }}\nsticky = {{ header = \"x-user-id\" }}"
                ));
                decide(&p, &h)
            };
            if at(low) == "2.0.0" {
                proptest::prop_assert_eq!(at(high), "2.0.0");
            }
            proptest::prop_assert_eq!(at(0), "main");
            proptest::prop_assert_eq!(at(100), "2.0.0");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn opt_in_reaches_the_candidate_or_main() {
        let p = policy("green = \"2.0.0\"");
        assert_eq!(decide(&p, &headers(&[("x-client-mode", "green")])), "2.0.0");
        assert_eq!(decide(&p, &headers(&[("x-client-mode", "blue")])), "main");
        assert_eq!(
            decide(&p, &headers(&[("cookie", "x-client-mode=green")])),
            "2.0.0"
        );
        assert_eq!(decide(&p, &headers(&[])), "main");
        let none = policy("");
        assert_eq!(
            decide(&none, &headers(&[("x-client-mode", "green")])),
            "no candidate"
        );
    }

    #[test]
    fn rules_go_first_then_the_canary() {
        let p = policy(
            r#"
            canary = { version = "2.0.0", percent = 100 }
            [[rules]]
            match = [{ on = "header", name = "x-beta" }]
            action = "respond"
            status = 418
            "#,
        );
        assert_eq!(decide(&p, &headers(&[("x-beta", "1")])), "respond 418");
        assert_eq!(decide(&p, &headers(&[])), "2.0.0");
    }

    #[test]
    fn canary_is_sticky_by_header_and_sets_a_cookie_for_keyless_clients() {
        let p = policy(
            r#"
            canary = { version = "2.0.0", percent = 50 }
            sticky = { header = "x-user-id" }
            "#,
        );
        let method = Method::GET;
        let mut inside = 0;
        for i in 0..1000 {
            let h = HeaderMap::from_iter([(
                HeaderName::from_static("x-user-id"),
                HeaderValue::from_str(&format!("u{i}")).expect("value"),
            )]);
            let first = decide(&p, &h);
            assert_eq!(first, decide(&p, &h), "same key, same side");
            inside += usize::from(first == "2.0.0");
        }
        assert!((430..=570).contains(&inside), "{inside}");
        let empty = HeaderMap::new();
        let view = RequestView {
            method: &method,
            host: None,
            path_and_query: "/",
            headers: &empty,
            client: "192.0.2.7".parse().expect("ip"),
        };
        let token = match p.decide(&view, "/") {
            Decision::Main { set_cookie } | Decision::Release { set_cookie, .. } => set_cookie,
            other => panic!("{other:?}"),
        }
        .expect("a cookie for a client without a key");
        // With the cookie, the client stays where its address put it.
        let cookie = format!("switchyard-id={token}");
        let h = HeaderMap::from_iter([(
            http::header::COOKIE,
            HeaderValue::from_str(&cookie).expect("cookie"),
        )]);
        let by_cookie = decide(&p, &h);
        let by_address = match p.decide(&view, "/") {
            Decision::Main { .. } => "main".to_owned(),
            Decision::Release { target, .. } => target.version.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(by_cookie, by_address);
    }

    #[test]
    fn an_api_version_rule_routes_what_asks_for_that_version() {
        let p = policy(
            r#"
            [[rules]]
            match = [{ on = "api-version", version = "v2" }]
            action = "route"
            to = "2.0.0"
            "#,
        );
        assert_eq!(decide(&p, &headers(&[("x-api-version", "v2")])), "2.0.0");
        assert_eq!(decide(&p, &headers(&[("x-api-version", "2.1")])), "2.0.0");
        assert_eq!(decide(&p, &headers(&[("x-api-version", "v1")])), "main");
        assert_eq!(decide(&p, &headers(&[])), "main");
        let rows = p.describe(Some("1.0.0"));
        assert!(
            rows.iter().any(
                |(when, to)| when == "rule 1: api-version v2 (header x-api-version)"
                    && to == "2.0.0"
            ),
            "{rows:?}"
        );
    }

    #[test]
    fn splits_follow_their_weights() {
        let p = policy(
            r#"
            [[rules]]
            action = "split"
            weights = { "1.0.0" = 70, "2.0.0" = 30 }
            "#,
        );
        let twos = (0..2000)
            .filter(|i| {
                let h = HeaderMap::from_iter([(
                    http::header::COOKIE,
                    HeaderValue::from_str(&format!("switchyard-id=k{i}")).expect("cookie"),
                )]);
                decide(&p, &h) == "2.0.0"
            })
            .count();
        assert!((500..=700).contains(&twos), "{twos}");
    }
}
