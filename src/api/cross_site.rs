//! Refuses what a web page on another site could make a browser send to
//! the admin API: a request not addressed to one of the admin API's own
//! names (DNS rebinding), a request from a page of another origin, and a
//! change without a JSON body or the client header (a cross-site form
//! post, which a browser sends without asking; a JSON body or a custom
//! header makes it ask first, and the admin API never says yes). This
//! holds with or without a token: the checks come before it.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};

use super::{AdminHosts, ApiError, AppState};

/// The header the CLI sends with every request, so that a change without
/// a body (a DELETE, say) shows it does not come from a web form.
pub const CLIENT_HEADER: &str = "x-switchyard-client";

pub async fn refuse_cross_site(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    match check(&state.hosts, req.headers(), changes) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

fn check(hosts: &AdminHosts, headers: &HeaderMap, changes: bool) -> Result<(), ApiError> {
    let mut given = headers.get_all(header::HOST).iter();
    let host = match (given.next(), given.next()) {
        (Some(host), None) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
        (None, _) => String::new(),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "the request has two Host headers; send one",
            ));
        }
    };
    if !hosts.allows_host(&host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the admin API does not answer to the host `{host}` (a guard against DNS rebinding); \
                 address it as one of {}, or start serve with --admin-host NAME to add a name",
                hosts.describe()
            ),
        ));
    }
    for origin in headers.get_all(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if !hosts.allows_origin(&origin) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the admin API refuses requests from web pages of other origins (this one came from `{origin}`); \
                     only its own pages may call it from a browser, and scripts send no Origin header"
                ),
            ));
        }
    }
    if changes && !is_json(headers) && !headers.contains_key(CLIENT_HEADER) {
        let sent = headers.get(header::CONTENT_TYPE).map_or_else(
            || "none".to_owned(),
            |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
        );
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "a change to the admin API must be sent with `content-type: application/json`, \
                 or, without a body, with an `{CLIENT_HEADER}` header (a guard against cross-site forms); \
                 the content type sent was {sent}"
            ),
        ));
    }
    Ok(())
}

/// `content-type: application/json`, with parameters or without.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hosts() -> AdminHosts {
        AdminHosts::new("127.0.0.1:8081".parse().expect("addr"), &[]).expect("hosts")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn status(pairs: &[(&'static str, &'static str)], changes: bool) -> Option<StatusCode> {
        check(&hosts(), &headers(pairs), changes)
            .err()
            .map(|e| e.into_response().status())
    }

    #[test]
    fn changes_need_json_or_the_client_header() {
        let host = ("host", "127.0.0.1:8081");
        assert_eq!(status(&[host], false), None, "reads need neither");
        assert_eq!(
            status(
                &[host, ("content-type", "application/x-www-form-urlencoded")],
                true
            ),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(&[host, ("content-type", "text/plain")], true),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(&[host], true),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(
                &[host, ("content-type", "Application/JSON; charset=utf-8")],
                true
            ),
            None
        );
        assert_eq!(status(&[host, (CLIENT_HEADER, "cli")], true), None);
    }

    #[test]
    fn host_and_origin_must_both_be_the_admin_apis_own() {
        let json = ("content-type", "application/json");
        assert_eq!(
            status(&[json], true),
            Some(StatusCode::FORBIDDEN),
            "no Host"
        );
        assert_eq!(
            status(&[("host", "attacker.example:8081"), json], true),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(
                &[("host", "127.0.0.1:8081"), ("host", "127.0.0.1:8081"), json],
                true
            ),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(
                &[
                    ("host", "127.0.0.1:8081"),
                    ("origin", "http://attacker.example"),
                    json
                ],
                true
            ),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(
                &[
                    ("host", "localhost:8081"),
                    ("origin", "http://localhost:8081"),
                    json
                ],
                true
            ),
            None
        );
    }
}
