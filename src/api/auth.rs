use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// Lets a request through only with the right bearer token (when one is set).
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if token_matches(given, token) {
        next.run(req).await
    } else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: pass --token or set SWITCHYARD_TOKEN to the token in serve's --token-file",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"switchyard\""),
        );
        response
    }
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme is
/// case-insensitive, as in every HTTP authentication scheme).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Compares in constant time (`subtle`), so timing does not tell how much
/// of a guess was right (only whether its length was).
fn token_matches(given: &str, token: &str) -> bool {
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, token_matches};

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("secre", "secret"));
        assert!(!token_matches("", "x"));
    }
}
