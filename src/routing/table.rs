use std::collections::HashMap;
use std::sync::Arc;

use super::api_version::{ApiRouting, Asked};
use super::matcher::RequestView;
use super::policy::{CompiledPolicy, Decision, FixedResponse};
use crate::model::{ErrorPage, HttpsPolicy};

/// Every service lives under this path prefix.
pub const SERVICES_PREFIX: &str = "/services/";

/// The releases of one service a request can reach.
#[derive(Debug)]
pub struct ServiceRoutes<B, S = ()> {
    pub name: String,
    /// Answers `/services/NAME/` and the service's hosts; `None` when the
    /// service has no main (every release killed).
    pub main: Option<Arc<B>>,
    /// Every running release by version, for `/services/NAME_VERSION/`.
    pub versions: HashMap<String, Arc<B>>,
    /// Where copies of requests to the service go (shadows with mirroring on).
    pub shadows: Vec<Arc<S>>,
    /// Opt-in, rules and canary; `None` when everything goes to main.
    pub policy: Option<CompiledPolicy<B>>,
    /// API-version routing, applied after the policy; `None` when no
    /// running release declares an API version.
    pub api: Option<ApiRouting<B>>,
    /// Whether answers through a path prefix get their links back to the
    /// application rewritten (see [`Route::Release::rewrite`]).
    pub rewrite: bool,
    /// The page end users see when the proxy answers for the service.
    pub error_page: Option<Arc<ErrorPage>>,
    /// Redirect of cleartext requests to HTTPS, and HSTS.
    pub https: HttpsPolicy,
    /// A TCP service: its connections come to its own addresses, and an
    /// HTTP request for it is refused.
    pub tcp: bool,
}

/// The compiled, immutable routing table. `B` is whatever the data plane
/// forwards to (a release's backend) and `S` what it mirrors to; routing
/// never looks inside either.
#[derive(Debug)]
pub struct RoutingTable<B, S = ()> {
    services: HashMap<String, ServiceRoutes<B, S>>,
    hosts: HashMap<String, String>,
}

impl<B, S> Default for RoutingTable<B, S> {
    fn default() -> Self {
        Self {
            services: HashMap::new(),
            hosts: HashMap::new(),
        }
    }
}

/// Where a request goes.
#[derive(Debug)]
pub enum Route<'t, B, S = ()> {
    Release {
        /// The service the release belongs to.
        service: &'t str,
        backend: &'t Arc<B>,
        /// Shadows that get a copy: those of the service for a request to
        /// the service; none for a release's own address.
        shadows: &'t [Arc<S>],
        /// The path (and query) to send upstream.
        upstream_path: &'t str,
        /// What was stripped, for `X-Forwarded-Prefix` (empty for hosts).
        prefix: &'t str,
        /// The answer's links back to the application (`Location`,
        /// `Set-Cookie` paths, …) are to be rewritten to go through
        /// `prefix`: a prefix route of a service that has it on.
        rewrite: bool,
        /// `(name, value)` of the sticky cookie to set on the response.
        set_cookie: Option<(&'t str, String)>,
        /// The service's HTTPS policy.
        https: HttpsPolicy,
    },
    /// A rule answers without any release.
    Respond(&'t FixedResponse),
    /// The path names a service that is not here.
    UnknownService { name: &'t str },
    /// The service is here but has no running release of that version.
    UnknownRelease { service: &'t str, version: &'t str },
    /// The service exists but has no main release.
    NoMain { service: &'t str },
    /// The service speaks TCP, not HTTP.
    TcpService { service: &'t str },
    /// `x-client-mode: green` and the service has no candidate.
    NoCandidate { service: &'t str },
    /// Neither a known host nor a `/services/` path.
    NoMatch,
}

impl<B, S> RoutingTable<B, S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service and the hosts routed to it (lower-case, no port).
    pub fn insert(&mut self, routes: ServiceRoutes<B, S>, hosts: impl IntoIterator<Item = String>) {
        for host in hosts {
            self.hosts.insert(host, routes.name.clone());
        }
        self.services.insert(routes.name.clone(), routes);
    }

    pub fn service(&self, name: &str) -> Option<&ServiceRoutes<B, S>> {
        self.services.get(name)
    }

    /// Routes by host first (the whole path goes to the service), then by
    /// `/services/NAME/…` (the service) or `/services/NAME_VERSION/…` (that
    /// release), with the prefix stripped. A request to the service is
    /// decided by its policy.
    pub fn route<'t>(&'t self, req: &RequestView<'t>) -> Route<'t, B, S> {
        let path_and_query = req.path_and_query;
        if let Some(service) = req.host.and_then(|h| self.host_service(h)) {
            return service.decide(req, path_and_query, "");
        }
        let Some(rest) = path_and_query.strip_prefix(SERVICES_PREFIX) else {
            return Route::NoMatch;
        };
        let seg_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let segment = &rest[..seg_end];
        let prefix_len = SERVICES_PREFIX.len() + seg_end;
        let prefix = &path_and_query[..prefix_len];
        let mut upstream_path = &path_and_query[prefix_len..];
        if upstream_path.is_empty() {
            // `/services/NAME` means the root.
            upstream_path = "/";
        }
        let (name, version) = match segment.split_once('_') {
            Some((n, v)) => (n, Some(v)),
            None => (segment, None),
        };
        let Some(service) = self.services.get(name) else {
            return Route::UnknownService { name: segment };
        };
        if service.tcp {
            return Route::TcpService {
                service: &service.name,
            };
        }
        match version {
            Some(v) => match service.versions.get(v) {
                Some(backend) => Route::Release {
                    service: &service.name,
                    backend,
                    shadows: &[],
                    upstream_path,
                    prefix,
                    rewrite: service.rewrite,
                    set_cookie: None,
                    https: service.https,
                },
                None => Route::UnknownRelease {
                    service: &service.name,
                    version: v,
                },
            },
            None => service.decide(req, upstream_path, prefix),
        }
    }

    fn host_service(&self, host: &str) -> Option<&ServiceRoutes<B, S>> {
        if self.hosts.is_empty() {
            return None;
        }
        let host = strip_port(host);
        let name = match self.hosts.get(host) {
            Some(n) => n,
            None => self.hosts.get(&host.to_ascii_lowercase())?,
        };
        self.services.get(name)
    }
}

impl<B, S> ServiceRoutes<B, S> {
    fn decide<'t>(
        &'t self,
        req: &RequestView<'t>,
        upstream_path: &'t str,
        prefix: &'t str,
    ) -> Route<'t, B, S> {
        let release = |backend: &'t Arc<B>, set_cookie: Option<String>| Route::Release {
            service: &self.name,
            backend,
            shadows: &self.shadows,
            upstream_path,
            prefix,
            rewrite: self.rewrite && !prefix.is_empty(),
            set_cookie: self.cookie(set_cookie),
            https: self.https,
        };
        let decision = match &self.policy {
            Some(policy) => policy.decide(req, upstream_path),
            None => Decision::Main { set_cookie: None },
        };
        // The release the policy picked: its version (for API-version
        // routing) and backend (`None`: the service has no main).
        let (picked, backend, set_cookie) = match decision {
            Decision::Main { set_cookie } => (
                self.api.as_ref().and_then(|a| a.main()),
                self.main.as_ref(),
                set_cookie,
            ),
            Decision::Release { target, set_cookie } => match &target.backend {
                Some(backend) => (Some(target.version.as_str()), Some(backend), set_cookie),
                None => {
                    return Route::UnknownRelease {
                        service: &self.name,
                        version: &target.version,
                    };
                }
            },
            Decision::Respond(fixed) => return Route::Respond(fixed),
            Decision::NoCandidate => {
                return Route::NoCandidate {
                    service: &self.name,
                };
            }
        };
        if let Some(api) = &self.api {
            match api.asked(req, upstream_path) {
                Asked::Nothing => {}
                Asked::Unreadable => return Route::Respond(&api.not_acceptable),
                Asked::Version(asked) => {
                    if !picked.is_some_and(|v| api.serves(v, &asked)) {
                        return match api.fallback(&asked) {
                            Some(served) => release(&served.backend, set_cookie),
                            None => Route::Respond(&api.not_acceptable),
                        };
                    }
                }
            }
        }
        match backend {
            Some(backend) => release(backend, set_cookie),
            None => Route::NoMain {
                service: &self.name,
            },
        }
    }

    fn cookie(&self, value: Option<String>) -> Option<(&str, String)> {
        let name = self.policy.as_ref()?.set_cookie.as_deref()?;
        value.map(|v| (name, v))
    }
}

/// The host name without its port (`[::1]:80` → `::1`).
pub(super) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};

    fn table() -> RoutingTable<&'static str> {
        let mut t = RoutingTable::new();
        let one = Arc::new("hello-1");
        let two = Arc::new("hello-2");
        t.insert(
            ServiceRoutes {
                name: "hello".into(),
                main: Some(one.clone()),
                versions: HashMap::from([("1.0.0".into(), one), ("2.0.0-rc.1".into(), two)]),
                shadows: vec![Arc::new(())],
                policy: None,
                api: None,
                rewrite: true,
                error_page: None,
                https: HttpsPolicy::default(),
                tcp: false,
            },
            ["hello.example.com".to_string()],
        );
        t.insert(
            ServiceRoutes {
                name: "empty".into(),
                main: None,
                versions: HashMap::new(),
                shadows: vec![],
                policy: None,
                api: None,
                rewrite: true,
                error_page: None,
                https: HttpsPolicy::default(),
                tcp: false,
            },
            [],
        );
        t
    }

    fn route<'t>(
        t: &'t RoutingTable<&'static str>,
        host: Option<&'t str>,
        path: &'t str,
    ) -> Route<'t, &'static str> {
        static HEADERS: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        let view = RequestView {
            method: &Method::GET,
            host,
            path_and_query: path,
            headers: HEADERS.get_or_init(HeaderMap::new),
            client: "127.0.0.1".parse().expect("ip"),
        };
        t.route(&view)
    }

    fn target<'t>(r: Route<'t, &'static str>) -> (&'static str, &'t str, &'t str) {
        match r {
            Route::Release {
                backend,
                upstream_path,
                prefix,
                ..
            } => (**backend, upstream_path, prefix),
            other => panic!("expected a release, got {other:?}"),
        }
    }

    #[test]
    fn service_path_goes_to_main_with_prefix_stripped() {
        let t = table();
        assert_eq!(
            target(route(&t, None, "/services/hello/a/b?x=1")),
            ("hello-1", "/a/b?x=1", "/services/hello")
        );
        assert_eq!(
            target(route(&t, None, "/services/hello")),
            ("hello-1", "/", "/services/hello")
        );
        assert_eq!(
            target(route(&t, None, "/services/hello?x")),
            ("hello-1", "?x", "/services/hello")
        );
    }

    #[test]
    fn versioned_path_goes_to_that_release() {
        let t = table();
        assert_eq!(
            target(route(&t, None, "/services/hello_2.0.0-rc.1/echo")),
            ("hello-2", "/echo", "/services/hello_2.0.0-rc.1")
        );
        assert!(matches!(
            route(&t, None, "/services/hello_9.9.9/"),
            Route::UnknownRelease {
                service: "hello",
                version: "9.9.9"
            }
        ));
    }

    #[test]
    fn only_requests_to_the_service_are_mirrored() {
        let t = table();
        let shadows = |r: Route<'_, &'static str>| match r {
            Route::Release { shadows, .. } => shadows.len(),
            other => panic!("expected a release, got {other:?}"),
        };
        assert_eq!(shadows(route(&t, None, "/services/hello/x")), 1);
        assert_eq!(shadows(route(&t, Some("hello.example.com"), "/x")), 1);
        assert_eq!(shadows(route(&t, None, "/services/hello_1.0.0/x")), 0);
    }

    #[test]
    fn host_routes_the_whole_path_to_main() {
        let t = table();
        assert_eq!(
            target(route(
                &t,
                Some("HELLO.example.com:8080"),
                "/services/other/x"
            )),
            ("hello-1", "/services/other/x", "")
        );
    }

    #[test]
    fn only_prefix_routes_are_rewritten() {
        let t = table();
        let rewrite = |r: Route<'_, &'static str>| match r {
            Route::Release { rewrite, .. } => rewrite,
            other => panic!("expected a release, got {other:?}"),
        };
        assert!(rewrite(route(&t, None, "/services/hello/x")));
        assert!(rewrite(route(&t, None, "/services/hello_1.0.0/x")));
        assert!(!rewrite(route(&t, Some("hello.example.com"), "/x")));
    }

    #[test]
    fn unknown_service_and_missing_main_are_told_apart() {
        let t = table();
        assert!(matches!(
            route(&t, None, "/services/nope/"),
            Route::UnknownService { .. }
        ));
        assert!(matches!(
            route(&t, None, "/services/empty/"),
            Route::NoMain { .. }
        ));
        assert!(matches!(route(&t, None, "/other"), Route::NoMatch));
    }
}
