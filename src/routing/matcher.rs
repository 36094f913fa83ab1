//! Compiled matchers and the view of a request they look at.

use std::net::IpAddr;

use http::Method;
use http::header::{self, HeaderMap, HeaderName};
use regex::Regex;

use super::api_version::{ApiVersionReader, Asked};
use super::table::strip_port;
use crate::model::{
    ApiVersion, ApiVersionSource, Matcher, REGEX_SIZE_LIMIT, StringMatch, parse_cidr,
};

/// What routing may look at in a request. Borrowed: building it costs
/// nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// The Host header (or the HTTP/2 authority), port included.
    pub host: Option<&'a str>,
    /// The request target in origin form.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub client: IpAddr,
}

impl<'a> RequestView<'a> {
    /// A cookie's value, from any `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    pub fn header(&self, name: &HeaderName) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A query parameter's raw value in `path_and_query` (not percent-decoded).
fn query_param<'p>(path_and_query: &'p str, name: &str) -> Option<&'p str> {
    let (_, query) = path_and_query.split_once('?')?;
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

#[derive(Debug)]
enum ValueMatch {
    Present,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl ValueMatch {
    /// `ignore_case` makes a regex case-insensitive (host names).
    fn compile(m: &StringMatch, ignore_case: bool) -> Result<Self, String> {
        Ok(match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), None, None) => ValueMatch::Exact(e.clone()),
            (None, Some(p), None) => ValueMatch::Prefix(p.clone()),
            (None, None, Some(r)) => ValueMatch::Regex(
                regex::RegexBuilder::new(r)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .case_insensitive(ignore_case)
                    .build()
                    .map_err(|e| format!("bad regex `{r}`: {e}"))?,
            ),
            (None, None, None) => ValueMatch::Present,
            _ => return Err("give one of exact, prefix or regex".into()),
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::Exact(e) => value == e,
            ValueMatch::Prefix(p) => value.starts_with(p.as_str()),
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }

    fn matches_ignoring_case(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => value.eq_ignore_ascii_case(e),
            ValueMatch::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            other => other.matches(value),
        }
    }
}

/// A matcher ready to evaluate.
#[derive(Debug)]
pub enum CompiledMatcher {
    Header(HeaderName, ValueMatchBox),
    Cookie(String, ValueMatchBox),
    Host(ValueMatchBox),
    Path(ValueMatchBox),
    Method(Vec<Method>),
    Query(String, ValueMatchBox),
    Source(Vec<ipnet::IpNet>),
    /// The version the request asks for, read as API-version routing
    /// reads it.
    ApiVersion(Box<(ApiVersionReader, ApiVersion)>),
}

/// A compiled value comparison (boxed away from the enum's hot variants).
#[derive(Debug)]
pub struct ValueMatchBox(Box<ValueMatch>);

fn value(m: &StringMatch) -> Result<ValueMatchBox, String> {
    ValueMatch::compile(m, false).map(|v| ValueMatchBox(Box::new(v)))
}

/// Host names compare without case, regexes included.
fn host_value(m: &StringMatch) -> Result<ValueMatchBox, String> {
    ValueMatch::compile(m, true).map(|v| ValueMatchBox(Box::new(v)))
}

impl CompiledMatcher {
    /// `api` is where the service's requests name their API version.
    pub fn compile(m: &Matcher, api: &ApiVersionSource) -> Result<Self, String> {
        Ok(match m {
            Matcher::Header { name, value: v } => CompiledMatcher::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("bad header name `{name}`"))?,
                value(v)?,
            ),
            Matcher::Cookie { name, value: v } => CompiledMatcher::Cookie(name.clone(), value(v)?),
            Matcher::Host { value: v } => CompiledMatcher::Host(host_value(v)?),
            Matcher::Path { value: v } => CompiledMatcher::Path(value(v)?),
            Matcher::Method { methods } => CompiledMatcher::Method(
                methods
                    .iter()
                    .map(|m| {
                        Method::from_bytes(m.as_bytes()).map_err(|_| format!("bad method `{m}`"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Matcher::Query { name, value: v } => CompiledMatcher::Query(name.clone(), value(v)?),
            Matcher::Source { cidrs } => CompiledMatcher::Source(
                cidrs
                    .iter()
                    .map(|c| parse_cidr(c))
                    .collect::<Result<_, _>>()?,
            ),
            Matcher::ApiVersion { version } => {
                let reader = ApiVersionReader::compile(api).ok_or_else(|| {
                    format!("the API version is read from {api}, which is not valid")
                })?;
                CompiledMatcher::ApiVersion(Box::new((reader, *version)))
            }
        })
    }

    /// Whether the request matches; `path` is the path within the service.
    pub fn matches(&self, req: &RequestView<'_>, path: &str) -> bool {
        match self {
            CompiledMatcher::Header(name, v) => req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .any(|h| v.0.matches(h)),
            CompiledMatcher::Cookie(name, v) => req.cookie(name).is_some_and(|c| v.0.matches(c)),
            CompiledMatcher::Host(v) => req
                .host
                .map(strip_port)
                .is_some_and(|h| v.0.matches_ignoring_case(h)),
            CompiledMatcher::Path(v) => v.0.matches(path.split('?').next().unwrap_or(path)),
            CompiledMatcher::Method(methods) => methods.contains(req.method),
            CompiledMatcher::Query(name, v) => {
                query_param(path, name).is_some_and(|q| v.0.matches(q))
            }
            CompiledMatcher::Source(nets) => nets.iter().any(|n| n.contains(&req.client)),
            CompiledMatcher::ApiVersion(m) => match m.0.asked(req, path) {
                Asked::Version(asked) => asked.matches(&m.1),
                Asked::Nothing | Asked::Unreadable => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn view<'a>(headers: &'a HeaderMap, method: &'a Method, path: &'a str) -> RequestView<'a> {
        RequestView {
            method,
            host: Some("Shop.Example.com:8080"),
            path_and_query: path,
            headers,
            client: "10.1.2.3".parse().expect("ip"),
        }
    }

    fn compile(toml_matcher: &str) -> CompiledMatcher {
        #[derive(serde::Deserialize)]
        struct One {
            m: Matcher,
        }
        let one: One = toml::from_str(&format!("m = {toml_matcher}")).expect("matcher");
        CompiledMatcher::compile(&one.m, &ApiVersionSource::default()).expect("compile")
    }

    #[test]
    fn every_matcher_kind() {
        let mut h = HeaderMap::new();
        h.insert("x-tenant", HeaderValue::from_static("acme-eu"));
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; beta=yes"));
        let get = Method::GET;
        let r = view(&h, &get, "/api/items?page=2&sort=asc");
        let path = "/api/items?page=2&sort=asc";
        let yes = [
            r#"{ on = "header", name = "x-tenant", exact = "acme-eu" }"#,
            r#"{ on = "header", name = "x-tenant", prefix = "acme" }"#,
            r#"{ on = "header", name = "x-tenant", regex = "-eu$" }"#,
            r#"{ on = "header", name = "x-tenant" }"#,
            r#"{ on = "cookie", name = "beta", exact = "yes" }"#,
            r#"{ on = "host", exact = "shop.example.com" }"#,
            r#"{ on = "host", regex = "^shop\\.example\\." }"#,
            r#"{ on = "path", prefix = "/api/" }"#,
            r#"{ on = "path", regex = "^/api/[a-z]+$" }"#,
            r#"{ on = "method", methods = ["GET", "HEAD"] }"#,
            r#"{ on = "query", name = "page", exact = "2" }"#,
            r#"{ on = "source", cidrs = ["10.0.0.0/8"] }"#,
            r#"{ on = "source", cidrs = ["10.1.2.3"] }"#,
        ];
        for m in yes {
            assert!(compile(m).matches(&r, path), "{m} should match");
        }
        let no = [
            r#"{ on = "header", name = "x-tenant", exact = "acme" }"#,
            r#"{ on = "header", name = "x-other" }"#,
            r#"{ on = "cookie", name = "beta", exact = "no" }"#,
            r#"{ on = "host", prefix = "api." }"#,
            r#"{ on = "path", exact = "/api" }"#,
            r#"{ on = "method", methods = ["POST"] }"#,
            r#"{ on = "query", name = "sort", exact = "desc" }"#,
            r#"{ on = "query", name = "missing" }"#,
            r#"{ on = "source", cidrs = ["192.168.0.0/16", "::1"] }"#,
        ];
        for m in no {
            assert!(!compile(m).matches(&r, path), "{m} should not match");
        }
    }

    #[test]
    fn api_version_is_read_where_the_service_reads_it() {
        let matcher = |version: &str, source: ApiVersionSource| {
            let m = Matcher::ApiVersion {
                version: version.parse().expect("api version"),
            };
            CompiledMatcher::compile(&m, &source).expect("compile")
        };
        let get = Method::GET;
        let check = |m: &CompiledMatcher, headers: &[(&'static str, &str)], path: &str| {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(*k, HeaderValue::from_str(v).expect("value"));
            }
            m.matches(&view(&h, &get, path), path)
        };
        let header = ApiVersionSource::default();
        let v2 = matcher("v2", header.clone());
        for asked in ["v2", "2", "2.0", "V2.1", " v2 "] {
            assert!(check(&v2, &[("x-api-version", asked)], "/"), "{asked}");
        }
        for asked in ["v1", "1.2", "v3", "two", ""] {
            assert!(!check(&v2, &[("x-api-version", asked)], "/"), "{asked}");
        }
        assert!(
            !check(&v2, &[], "/v2/x"),
            "the header source ignores the path"
        );
        let minor = matcher("1.1", header);
        assert!(check(&minor, &[("x-api-version", "v1.1")], "/"));
        assert!(!check(&minor, &[("x-api-version", "v1.2")], "/"));
        assert!(
            check(&minor, &[("x-api-version", "v1")], "/"),
            "a major alone matches each of its minors, as API-version routing does"
        );

        let custom = matcher(
            "v2",
            ApiVersionSource::Header {
                name: "x-version".into(),
            },
        );
        assert!(check(&custom, &[("x-version", "2")], "/"));
        assert!(!check(&custom, &[("x-api-version", "2")], "/"));

        let media = matcher("v2", ApiVersionSource::MediaType);
        let accept = "application/vnd.shop+json;version=2.0";
        assert!(check(&media, &[("accept", accept)], "/"));
        assert!(check(
            &media,
            &[("content-type", "application/json; version=\"2\"")],
            "/"
        ));
        assert!(!check(&media, &[("accept", "application/json")], "/"));
        assert!(!check(&media, &[("x-api-version", "v2")], "/"));

        let path = matcher("v2", ApiVersionSource::PathPrefix);
        assert!(check(&path, &[], "/v2/items?x=1"));
        assert!(check(&path, &[], "/v2.1"));
        assert!(!check(&path, &[], "/v1/items"));
        assert!(!check(&path, &[], "/items/v2"));
    }
}
