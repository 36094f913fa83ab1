//! The admin API's own behaviour, without a socket: the router as serve
//! builds it, over a real controller and SQLite store in a temp dir,
//! called request by request (`tower::ServiceExt::oneshot`). Auth, the
//! mapping of errors to statuses and the validation of requests; the
//! end-to-end tests under tests/ cover the rest through the binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AdminHosts, AppState, CLIENT_HEADER, Trends, router};
use crate::controller::{Controller, Notifier};
use crate::listener::{Connections, Limits, Timeouts};
use crate::model::{DeployAs, Revision, ServiceName, ServiceState};
use crate::proxy::{MirrorSettings, ProxySettings};
use crate::routing::RoutingTable;
use crate::runtime::{Runtime, RuntimeSettings};
use crate::store::{Commit, ServiceStore, SqliteStore, StateDir};

const ADMIN: &str = "127.0.0.1:8081";

/// A router over a fresh state directory in which `hello` 1.0.0 is main
/// (revision 1; its release is not running, which these tests never need).
struct Api {
    router: Router,
    controller: Arc<Controller>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start(token: Option<&str>) -> Api {
        let dir = tempfile::tempdir().expect("temp dir");
        let state_dir = Arc::new(StateDir::lock(dir.path()).expect("lock the state dir"));
        let store = Arc::new(SqliteStore::open(&state_dir).expect("open the store"));
        let service: ServiceName = "hello".parse().expect("a service name");
        let state = ServiceState::default()
            .deploy(&service, &semver::Version::new(1, 0, 0), DeployAs::Auto, 0)
            .expect("deploy");
        store
            .commit(&Commit {
                releases: Vec::new(),
                revision: Revision {
                    service,
                    number: 1,
                    at: 0,
                    action: "deploy 1.0.0 as main".into(),
                    actor: "test".into(),
                    state,
                },
            })
            .expect("commit revision 1");
        let limits = Limits {
            connections: 16,
            per_client: 16,
            requests: None,
            timeouts: Timeouts {
                header: Duration::from_secs(10),
                idle: Duration::from_secs(60),
            },
            http2_max_streams: 100,
            http2_keep_alive: None,
            tls_handshake: Duration::from_secs(10),
        };
        let proxy = ProxySettings {
            upstream_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            tcp_idle_timeout: Duration::from_secs(3600),
            client_body: "1/10s".parse().expect("a rate"),
            upstream_body: "1/60s".parse().expect("a rate"),
            version_header: true,
            access_log: None,
            connections: Connections::new("proxy", limits),
            https_port: None,
            acme_challenges: Default::default(),
        };
        let runtime = Runtime::new(
            RuntimeSettings {
                state_dir: state_dir.path().to_path_buf(),
                stop_grace: Duration::from_secs(1),
                drain_timeout: Duration::from_secs(1),
                log_max_bytes: 1 << 20,
                crash_window: Duration::from_secs(60),
                crash_limit: 3,
            },
            store.clone(),
        );
        let controller = Arc::new(Controller::new(
            store.clone(),
            store,
            runtime,
            Arc::new(ArcSwap::from_pointee(RoutingTable::new())),
            Arc::default(),
            MirrorSettings {
                queue: 4,
                concurrency: 1,
                proxy,
                runtime: tokio::runtime::Handle::current(),
                workers: vec![tokio::runtime::Handle::current()],
            },
            Notifier::start(Vec::new()),
        ));
        controller.restore().expect("restore revision 1");
        let bound: SocketAddr = ADMIN.parse().expect("an address");
        let router = router(AppState {
            controller: Arc::clone(&controller),
            token: token.map(Arc::from),
            hosts: Arc::new(AdminHosts::new(bound, &[]).expect("admin hosts")),
            trends: Trends::start(Arc::clone(&controller)),
        });
        Api {
            router,
            controller,
            _dir: dir,
        }
    }

    /// A request as the CLI sends it (Host, client header, JSON body).
    fn request(method: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, ADMIN)
            .header(CLIENT_HEADER, "test")
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router always answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, body)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let builder = Self::request(method, path);
        let request = match body {
            Some(json) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json.to_string())),
            None => builder.body(Body::empty()),
        }
        .expect("a request");
        let (status, _, body) = self.send(request).await;
        (status, body)
    }

    /// The current revision of `hello`, as the controller holds it.
    fn revision(&self) -> u64 {
        let service: ServiceName = "hello".parse().expect("a service name");
        self.controller
            .current(&service)
            .expect("hello is deployed")
            .number
    }
}

fn error(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a JSON error: {body}"))
}

#[tokio::test]
async fn without_the_token_a_request_gets_401_saying_how_to_pass_it() {
    let api = Api::start(Some("s3cret")).await;
    let (status, headers, body) = api
        .send(
            Api::request("POST", "/v1/services/hello/abort")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .expect("a request"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(error(&body).contains("--token"), "{body}");
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"switchyard\""
    );

    let (status, _, body) = api
        .send(
            Api::request("GET", "/v1/services")
                .header(header::AUTHORIZATION, "Bearer wrong")
                .body(Body::empty())
                .expect("a request"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let (status, _, body) = api
        .send(
            Api::request("GET", "/v1/services")
                .header(header::AUTHORIZATION, "bearer s3cret")
                .body(Body::empty())
                .expect("a request"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["name"], "hello", "{body}");
    assert_eq!(api.revision(), 1, "nothing changed");
}

#[tokio::test]
async fn without_a_token_file_no_token_is_asked_for() {
    let api = Api::start(None).await;
    let (status, body) = api.call("GET", "/v1/services/hello", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"], 1, "{body}");
}

#[tokio::test]
async fn errors_map_to_statuses_and_a_stale_revision_names_the_current_one() {
    let api = Api::start(None).await;

    let (status, body) = api.call("GET", "/v1/services/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(error(&body).contains("nope"), "{body}");

    let (status, body) = api.call("GET", "/v1/services/Not_A_Name", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("invalid service name"), "{body}");

    let (status, body) = api
        .call(
            "DELETE",
            "/v1/services/hello/releases/1.0.0?base_revision=7",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["current_revision"], 1, "{body}");
    assert!(error(&body).contains("revision 7"), "{body}");

    let (status, body) = api
        .call(
            "POST",
            "/v1/services/hello/assign",
            Some(json!({"version": "9.9.9"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(error(&body).contains("9.9.9"), "{body}");

    let (status, body) = api
        .call(
            "POST",
            "/v1/services/hello/assign",
            Some(json!({"version": "1.0.0"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, body) = api.call("GET", "/v1/no-such-thing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(error(&body).contains("no GET /v1/no-such-thing"), "{body}");

    let (status, body) = api.call("PUT", "/v1/services", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(error(&body).contains("does not take PUT"), "{body}");

    assert_eq!(api.revision(), 1, "no refused request changed anything");
}

#[tokio::test]
async fn malformed_or_unfit_requests_are_refused_and_change_nothing() {
    let api = Api::start(None).await;

    let (status, _, body) = api
        .send(
            Api::request("POST", "/v1/services/hello/canary")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .expect("a request"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("invalid request body"), "{body}");

    let (status, body) = api
        .call(
            "POST",
            "/v1/services/hello/canary",
            Some(json!({"version": "1.0.0"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("percent"), "{body}");

    let (status, body) = api
        .call(
            "POST",
            "/v1/services/hello/assign",
            Some(json!({"version": "one"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("semantic version"), "{body}");

    let big = "x".repeat(super::BODY_LIMIT + 1);
    let (status, _, body) = api
        .send(
            Api::request("PUT", "/v1/services/hello/policy")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!("{{\"policy\": \"{big}\"}}")))
                .expect("a request"),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // A change from a web form (no JSON, no client header) is refused.
    let (status, _, body) = api
        .send(
            Request::builder()
                .method("POST")
                .uri("/v1/services/hello/abort")
                .header(header::HOST, ADMIN)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("a=b"))
                .expect("a request"),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert!(error(&body).contains("cross-site"), "{body}");

    // Nor does the API answer to a name it was not given (DNS rebinding).
    let (status, _, body) = api
        .send(
            Request::builder()
                .uri("/v1/services")
                .header(header::HOST, "evil.example:8081")
                .body(Body::empty())
                .expect("a request"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).contains("--admin-host"), "{body}");

    assert_eq!(api.revision(), 1, "no refused request changed anything");
}

/// A request body made on a base revision (`None`: the base goes in the query).
type BodyOn = Box<dyn Fn(u64) -> Option<Value>>;

/// Sends two changes made on the same base revision at once.
async fn race(api: &Api, method: &str, path: &str, body: Option<Value>) -> [StatusCode; 2] {
    let (a, b) = tokio::join!(
        api.call(method, path, body.clone()),
        api.call(method, path, body.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    statuses
}

#[tokio::test]
async fn of_two_changes_on_the_same_base_one_commits_and_the_other_gets_409() {
    let api = Api::start(None).await;
    let verbs: Vec<(&str, String, BodyOn)> = vec![
        (
            "POST",
            "/v1/services/hello/compare".into(),
            Box::new(|base| Some(json!({"policy": {"headers": ["etag"]}, "base_revision": base}))),
        ),
        (
            "PUT",
            "/v1/services/hello/rewrite".into(),
            Box::new(|base| Some(json!({"rewrite": "off", "base_revision": base}))),
        ),
        (
            "POST",
            "/v1/services/hello/hosts".into(),
            Box::new(|base| Some(json!({"host": "shop.example", "base_revision": base}))),
        ),
        (
            "PUT",
            "/v1/services/hello/api-version".into(),
            Box::new(|base| {
                Some(json!({"source": {"from": "path-prefix"}, "base_revision": base}))
            }),
        ),
        (
            "DELETE",
            "/v1/services/hello/releases/1.0.0".into(),
            Box::new(|_| None),
        ),
    ];
    for (method, path, body) in verbs {
        let base = api.revision();
        let path = match body(base) {
            Some(_) => path,
            None => format!("{path}?base_revision={base}"),
        };
        let statuses = race(&api, method, &path, body(base)).await;
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "{method} {path}"
        );
        assert_eq!(api.revision(), base + 1, "{method} {path}: one commit");
    }
}
