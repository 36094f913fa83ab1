use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::{MinRate, ResponseBody};
use crate::metrics::ClientFault;

/// 499: the client closed its connection first (nginx's use). Nobody
/// reads it; it names the outcome in the proxy's accounting.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Why the proxy answered itself instead of an upstream. This is the one
/// place such errors become responses: a status and a one-line body that
/// names the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
        cause: String,
    },
    #[error("upstream {service} {version} failed: {cause}")]
    UpstreamFailed {
        service: String,
        version: String,
        cause: String,
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

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UnknownService(_)
            | ProxyError::UnknownRelease { .. }
            | ProxyError::NoCandidate(_)
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

    fn code(&self) -> &'static str {
        match self {
            ProxyError::UnknownService(_) => "unknown-service",
            ProxyError::UnknownRelease { .. } => "unknown-release",
            ProxyError::NoCandidate(_) => "no-candidate",
            ProxyError::NoMain(_) => "no-main",
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

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::full(format!("switchyard: {self}\n")));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert("x-switchyard-error", HeaderValue::from_static(self.code()));
        response
    }
}
