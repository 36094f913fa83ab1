//! Static stability: while the fleet's store cannot be reached, a node
//! answers reads from the last state it has (its routing goes on the
//! same way), and every answer says so in [`STALE_HEADER`]:
//! `store unreachable since 2026-01-01T10:00:00Z; this answer may be
//! stale`. Changes are refused meanwhile (503, naming the store).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;

use super::AppState;

/// The header that says an answer may be stale, and why.
pub const STALE_HEADER: &str = "x-switchyard-stale";

/// Adds [`STALE_HEADER`] to the answer while the store is unreachable.
pub async fn mark_stale(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if let Some(since) = state.controller.store_unreachable_since() {
        let since = std::time::UNIX_EPOCH + std::time::Duration::from_millis(since);
        let value = format!(
            "store unreachable since {}; this answer may be stale",
            humantime::format_rfc3339_seconds(since)
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(STALE_HEADER, value);
        }
    }
    response
}
