//! API-version routing, compiled: which running releases serve which API
//! versions, and where a request names the one it wants.
//!
//! It is applied after the traffic policy: opt-in, rules and canary pick a
//! release as usual, and when the request names an API version that the
//! picked release does not serve, the request goes to main if main serves
//! it, else to the newest running release that does, else it gets 406
//! with the versions served. A request that names no version is left to
//! the policy. So a canary still gets its share of the clients whose
//! version it serves, and no client ever reaches a release that cannot
//! answer it.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};

use super::matcher::RequestView;
use super::policy::FixedResponse;
use crate::model::{ApiVersion, ApiVersionSource};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// It names no version: the policy decides alone.
    Nothing,
    Version(ApiVersion),
    /// It names something that is no API version: nobody serves it.
    Unreadable,
}

/// Where requests name their API version, compiled: reads the version a
/// request asks for. API-version routing and the `api-version` rule
/// matcher read it the same way.
#[derive(Debug, Clone)]
pub enum ApiVersionReader {
    Header(HeaderName),
    MediaType,
    PathPrefix,
}

impl ApiVersionReader {
    /// `None` for a header name that is not one (validated earlier).
    pub fn compile(source: &ApiVersionSource) -> Option<Self> {
        Some(match source {
            ApiVersionSource::Header { name } => {
                ApiVersionReader::Header(HeaderName::from_bytes(name.as_bytes()).ok()?)
            }
            ApiVersionSource::MediaType => ApiVersionReader::MediaType,
            ApiVersionSource::PathPrefix => ApiVersionReader::PathPrefix,
        })
    }

    /// The API version the request names; `path` is the path within the
    /// service.
    pub fn asked(&self, req: &RequestView<'_>, path: &str) -> Asked {
        let text = match self {
            ApiVersionReader::Header(name) => {
                req.header(name).map(str::trim).filter(|v| !v.is_empty())
            }
            ApiVersionReader::MediaType => {
                media_type_version(req, &ACCEPT).or_else(|| media_type_version(req, &CONTENT_TYPE))
            }
            ApiVersionReader::PathPrefix => {
                let first = path
                    .strip_prefix('/')
                    .unwrap_or(path)
                    .split(['/', '?'])
                    .next()
                    .unwrap_or("");
                // Only `/vN/` names a version; any other path names none.
                return match first.strip_prefix('v') {
                    Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
                        ApiVersion::parse_lenient(first).map_or(Asked::Unreadable, Asked::Version)
                    }
                    _ => Asked::Nothing,
                };
            }
        };
        match text {
            None => Asked::Nothing,
            Some(t) => ApiVersion::parse_lenient(t).map_or(Asked::Unreadable, Asked::Version),
        }
    }
}

/// A running release and the API versions it serves.
#[derive(Debug)]
pub struct Served<B> {
    pub version: String,
    pub api_versions: Vec<ApiVersion>,
    pub backend: Arc<B>,
}

#[derive(Debug)]
pub struct ApiRouting<B> {
    reader: ApiVersionReader,
    /// The main release's version.
    main: Option<String>,
    /// Running releases, newest version first.
    served: Vec<Served<B>>,
    /// 406 with the versions served, built once.
    pub not_acceptable: FixedResponse,
}

impl<B> ApiRouting<B> {
    /// `None` when no running release declares an API version: then
    /// nothing is routed by version.
    pub fn compile(
        service: &str,
        source: &ApiVersionSource,
        main: Option<String>,
        mut served: Vec<Served<B>>,
        newest_first: impl Fn(&str, &str) -> std::cmp::Ordering,
    ) -> Option<Self> {
        if served.iter().all(|s| s.api_versions.is_empty()) {
            return None;
        }
        served.sort_by(|a, b| newest_first(&a.version, &b.version));
        let reader = ApiVersionReader::compile(source)?;
        let mut all: Vec<ApiVersion> = served
            .iter()
            .flat_map(|s| s.api_versions.iter().copied())
            .collect();
        all.sort();
        all.dedup();
        let body = serde_json::json!({
            "error": format!(
                "no running release of {service} serves the API version this request asks for"
            ),
            "served": all.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        Some(Self {
            reader,
            main,
            served,
            not_acceptable: FixedResponse {
                status: StatusCode::NOT_ACCEPTABLE,
                body: Bytes::from(body.to_string()),
                content_type: HeaderValue::from_static("application/json"),
            },
        })
    }

    /// The API version the request names; `path` is the path within the
    /// service.
    pub fn asked(&self, req: &RequestView<'_>, path: &str) -> Asked {
        self.reader.asked(req, path)
    }

    pub fn main(&self) -> Option<&str> {
        self.main.as_deref()
    }

    /// Whether the running release `version` serves `asked`.
    pub fn serves(&self, version: &str, asked: &ApiVersion) -> bool {
        self.served
            .iter()
            .find(|s| s.version == version)
            .is_some_and(|s| s.api_versions.iter().any(|v| v.matches(asked)))
    }

    /// Main when it serves `asked`, else the newest running release that
    /// does.
    pub fn fallback(&self, asked: &ApiVersion) -> Option<&Served<B>> {
        let serves = |s: &&Served<B>| s.api_versions.iter().any(|v| v.matches(asked));
        self.main
            .as_deref()
            .and_then(|m| self.served.iter().find(|s| s.version == m))
            .filter(serves)
            .or_else(|| self.served.iter().find(serves))
    }
}

/// The `version=` parameter of the first media type in the header that
/// has one.
fn media_type_version<'r>(req: &RequestView<'r>, header: &HeaderName) -> Option<&'r str> {
    let value = req.header(header)?;
    value.split(',').find_map(|media_type| {
        media_type.split(';').skip(1).find_map(|param| {
            let (k, v) = param.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("version")
                .then(|| v.trim().trim_matches('"'))
                .filter(|v| !v.is_empty())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};

    fn api(list: &[&str]) -> Vec<ApiVersion> {
        list.iter().map(|s| s.parse().expect("api")).collect()
    }

    fn routing(source: ApiVersionSource) -> ApiRouting<&'static str> {
        routing_with_main(source, "1.0.0")
    }

    fn routing_with_main(source: ApiVersionSource, main: &str) -> ApiRouting<&'static str> {
        let served = vec![
            Served {
                version: "1.0.0".into(),
                api_versions: api(&["v1"]),
                backend: Arc::new("one"),
            },
            Served {
                version: "2.0.0".into(),
                api_versions: api(&["v2"]),
                backend: Arc::new("two"),
            },
            Served {
                version: "1.0.2".into(),
                api_versions: api(&["v1", "v2"]),
                backend: Arc::new("both"),
            },
        ];
        ApiRouting::compile("hub", &source, Some(main.into()), served, |a, b| {
            let v = |s: &str| semver::Version::parse(s).expect("semver");
            v(b).cmp(&v(a))
        })
        .expect("versioned")
    }

    fn asked(r: &ApiRouting<&'static str>, headers: &[(&'static str, &str)], path: &str) -> Asked {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().expect("value"));
        }
        let view = RequestView {
            method: &Method::GET,
            host: None,
            path_and_query: path,
            headers: &map,
            client: "127.0.0.1".parse().expect("ip"),
        };
        r.asked(&view, path)
    }

    #[test]
    fn each_source_reads_its_place() {
        let v = |s: &str| Asked::Version(s.parse().expect("api"));
        let h = routing(ApiVersionSource::default());
        assert_eq!(asked(&h, &[("x-api-version", "2")], "/"), v("v2"));
        assert_eq!(asked(&h, &[], "/v2/x"), Asked::Nothing);
        assert_eq!(
            asked(&h, &[("x-api-version", "two")], "/"),
            Asked::Unreadable
        );
        let m = routing(ApiVersionSource::MediaType);
        let accept = "text/html, application/vnd.interoperability.transfers+json;version=2.0";
        assert_eq!(asked(&m, &[("accept", accept)], "/"), v("2.0"));
        assert_eq!(
            asked(
                &m,
                &[("content-type", "application/json; version=\"1\"")],
                "/"
            ),
            v("v1")
        );
        assert_eq!(asked(&m, &[("accept", "*/*")], "/"), Asked::Nothing);
        let p = routing(ApiVersionSource::PathPrefix);
        assert_eq!(asked(&p, &[], "/v1.1/quotes?x=1"), v("1.1"));
        assert_eq!(asked(&p, &[], "/v2"), v("v2"));
        assert_eq!(asked(&p, &[], "/version/1"), Asked::Nothing);
        assert_eq!(asked(&p, &[], "/quotes"), Asked::Nothing);
    }

    #[test]
    fn main_first_then_the_newest_release_that_serves_it() {
        let v = |s: &str| s.parse::<ApiVersion>().expect("api");
        let pick = |main: &str, a: &str| {
            routing_with_main(ApiVersionSource::default(), main)
                .fallback(&v(a))
                .map(|s| *s.backend)
        };
        assert_eq!(pick("1.0.0", "v1"), Some("one"));
        assert_eq!(pick("1.0.0", "2.0"), Some("two"), "newest with v2");
        assert_eq!(pick("2.0.0", "1.1"), Some("both"), "newest with v1");
        assert_eq!(pick("2.0.0", "v3"), None);
        let r = routing(ApiVersionSource::default());
        assert!(r.serves("1.0.2", &v("v1")));
        assert!(!r.serves("2.0.0", &v("v1")));
        let body = String::from_utf8(r.not_acceptable.body.to_vec()).expect("utf8");
        assert!(body.contains(r#""served":["v1","v2"]"#), "{body}");
    }
}
