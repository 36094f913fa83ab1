use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::{MinRate, ResponseBody};
use crate::metrics::ClientFault;
use crate::model::ErrorPage;

/// 499: the client closed its connection first (nginx's use). Nobody
/// reads it; it names the outcome in the proxy's accounting.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Why the proxy answered itself instead of an upstream. This is the one
/// place such errors become responses. The end user gets a neutral page
/// (the status, a short sentence and the request's id, or the service's
/// own page); what an operator needs (the message below) goes to serve's
/// log with the request's id, and its code to `x-switchyard-error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("no service `{0}` here; deployed services are listed by `switchyard ls`")]
    UnknownService(String),
    #[error(
        "service {service} has no running release {version}; `switchyard ls` lists its releases"
    )]
    UnknownRelease { service: String, version: String },
    #[error(
        "no candidate release for service {0}: `x-client-mode: green` reaches a canary or a release marked green (`switchyard green`)"
    )]
    NoCandidate(String),
    #[error("service {0} has no main release")]
    NoMain(String),
    #[error(
        "service {0} speaks TCP, not HTTP: its clients connect to its listen address (`switchyard ls` shows it)"
    )]
    TcpService(String),
    #[error("service {0} is paused and this request waited its maximum hold; retry later")]
    Paused(String),
    #[error("no route: use /services/NAME/ or a host name routed to a service")]
    NoRoute,
    #[error("no healthy instance of {service} {version}")]
    NoHealthyInstance { service: String, version: String },
    #[error("could not connect to any instance of {service} {version}: {cause}")]
    ConnectFailed {
        service: String,
        version: String,
        #[source]
        cause: Cause,
    },
    #[error("upstream {service} {version} failed: {cause}")]
    UpstreamFailed {
        service: String,
        version: String,
        #[source]
        cause: Cause,
    },
    #[error(
        "upstream {service} {version} did not answer within {} (serve --upstream-timeout)",
        humantime::format_duration(*timeout)
    )]
    UpstreamTimeout {
        service: String,
        version: String,
        timeout: Duration,
    },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(
        "the request body is malformed ({0}): send it whole, in valid chunked encoding or with a correct Content-Length"
    )]
    BadBody(String),
    #[error(
        "the request body came slower than {rate} (bytes/interval; serve --client-body-min-rate): send it faster, or ask the operator to lower the floor"
    )]
    SlowBody { rate: MinRate },
    #[error("the client closed its connection before its request body was whole")]
    ClientGone,
}

/// The error under a [`ProxyError`], kept whole so that its chain can be
/// read (`source()`), with the instance it happened at when known.
#[derive(Debug, Clone)]
pub struct Cause {
    at: Option<SocketAddr>,
    error: Arc<dyn std::error::Error + Send + Sync>,
}

impl Cause {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            at: None,
            error: Arc::new(error),
        }
    }

    /// The error, as it happened at the instance `at`.
    pub fn at(at: SocketAddr, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            at: Some(at),
            error: Arc::new(error),
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Some(at) => write!(f, "{at}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

impl ProxyError {
    /// Whether sending the request again can do no harm: it reached no
    /// instance (nothing was routed, none was healthy, none took the
    /// connection, or it was held at a pause), so no application can have
    /// acted on it. An upstream that failed or timed out may have acted on
    /// it; a client's own fault is not cured by sending it again.
    pub fn retry_is_safe(&self) -> bool {
        match self {
            ProxyError::UnknownService(_)
            | ProxyError::UnknownRelease { .. }
            | ProxyError::NoCandidate(_)
            | ProxyError::NoMain(_)
            | ProxyError::TcpService(_)
            | ProxyError::Paused(_)
            | ProxyError::NoRoute
            | ProxyError::NoHealthyInstance { .. }
            | ProxyError::ConnectFailed { .. } => true,
            ProxyError::UpstreamFailed { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::BadBody(_)
            | ProxyError::SlowBody { .. }
            | ProxyError::ClientGone => false,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UnknownService(_)
            | ProxyError::UnknownRelease { .. }
            | ProxyError::NoCandidate(_)
            | ProxyError::TcpService(_)
            | ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoMain(_)
            | ProxyError::Paused(_)
            | ProxyError::NoHealthyInstance { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectFailed { .. } | ProxyError::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) | ProxyError::BadBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::SlowBody { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientGone => StatusCode::from_u16(CLIENT_CLOSED_REQUEST)
                .expect("499 is in the range of status codes"),
        }
    }

    /// The client's part in this error, if it was the client's doing:
    /// such errors are never counted against the release.
    pub fn client_fault(&self) -> Option<ClientFault> {
        match self {
            ProxyError::BadBody(_) => Some(ClientFault::BadBody),
            ProxyError::SlowBody { .. } => Some(ClientFault::SlowBody),
            ProxyError::ClientGone => Some(ClientFault::Aborted),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::UnknownService(_) => "unknown-service",
            ProxyError::UnknownRelease { .. } => "unknown-release",
            ProxyError::NoCandidate(_) => "no-candidate",
            ProxyError::NoMain(_) => "no-main",
            ProxyError::TcpService(_) => "tcp-service",
            ProxyError::Paused(_) => "paused",
            ProxyError::NoRoute => "no-route",
            ProxyError::NoHealthyInstance { .. } => "no-healthy-instance",
            ProxyError::ConnectFailed { .. } => "connect-failed",
            ProxyError::UpstreamFailed { .. } => "upstream-failed",
            ProxyError::UpstreamTimeout { .. } => "upstream-timeout",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::BadBody(_) => "bad-body",
            ProxyError::SlowBody { .. } => "slow-body",
            ProxyError::ClientGone => "client-gone",
        }
    }

    /// The service the error is about, when one is known.
    pub fn service(&self) -> Option<&str> {
        match self {
            ProxyError::UnknownRelease { service, .. }
            | ProxyError::NoHealthyInstance { service, .. }
            | ProxyError::ConnectFailed { service, .. }
            | ProxyError::UpstreamFailed { service, .. }
            | ProxyError::UpstreamTimeout { service, .. } => Some(service),
            ProxyError::NoCandidate(service)
            | ProxyError::TcpService(service)
            | ProxyError::NoMain(service)
            | ProxyError::Paused(service) => Some(service),
            ProxyError::UnknownService(_)
            | ProxyError::NoRoute
            | ProxyError::BadRequest(_)
            | ProxyError::BadBody(_)
            | ProxyError::SlowBody { .. }
            | ProxyError::ClientGone => None,
        }
    }

    /// The answer: `page` (the service's own) or the neutral one, with
    /// the request's id and the error's code.
    pub fn into_response(
        self,
        request_id: &HeaderValue,
        page: Option<&ErrorPage>,
    ) -> Response<ResponseBody> {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("Error");
        let id = request_id.to_str().unwrap_or("");
        let (body, content_type) = match page {
            Some(page) => (
                page.render(status.as_u16(), reason, id),
                HeaderValue::from_str(&page.content_type)
                    .unwrap_or_else(|_| HeaderValue::from_static("text/plain; charset=utf-8")),
            ),
            None => (
                format!(
                    "{} {reason}\n{}\nRequest id: {id}\n",
                    status.as_u16(),
                    sentence(status)
                ),
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        };
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert("x-switchyard-error", HeaderValue::from_static(self.code()));
        response
    }
}

/// What an end user is told, in words that hold for any service.
fn sentence(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request could not be understood.",
        404 => "Nothing is served at this address.",
        408 => "The request took too long to arrive.",
        499 => "The request did not arrive whole.",
        502 => "The service could not answer this request.",
        503 => "The service is not available right now; please try again shortly.",
        504 => "The service took too long to answer.",
        _ => "The request could not be answered.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_failure_keeps_its_io_error_and_is_safe_to_retry() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let error = ProxyError::ConnectFailed {
            service: "shop".into(),
            version: "1.0.0".into(),
            cause: Cause::at(
                addr,
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
            ),
        };
        assert_eq!(
            error.to_string(),
            "could not connect to any instance of shop 1.0.0: 127.0.0.1:9: refused"
        );
        let cause = std::error::Error::source(&error).expect("the cause");
        let io = cause
            .source()
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the io error under the cause");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(error.retry_is_safe());
    }

    #[test]
    fn an_upstream_that_failed_or_timed_out_may_have_acted_so_no_retry() {
        let failed = ProxyError::UpstreamFailed {
            service: "shop".into(),
            version: "1.0.0".into(),
            cause: Cause::new(std::io::Error::other("reset")),
        };
        let timed_out = ProxyError::UpstreamTimeout {
            service: "shop".into(),
            version: "1.0.0".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!failed.retry_is_safe());
        assert!(!timed_out.retry_is_safe());
        assert!(!ProxyError::ClientGone.retry_is_safe());
        assert!(ProxyError::NoRoute.retry_is_safe());
    }

    #[test]
    fn the_neutral_page_has_no_operator_hint() {
        let id = HeaderValue::from_static("req-1");
        let response = ProxyError::UnknownService("nope".into()).into_response(&id, None);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["x-switchyard-error"], "unknown-service");
        let text = String::from_utf8_lossy(response.body().full_bytes().expect("full"));
        assert!(text.contains("404 Not Found"), "{text}");
        assert!(text.contains("req-1"), "{text}");
        assert!(!text.contains("switchyard"), "{text}");
        assert!(!text.contains("nope"), "{text}");
    }
}
