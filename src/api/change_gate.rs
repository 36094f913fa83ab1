//! Holds the admin API's changes at the handover's gate: while serve hands
//! over to a new serve process, no change may begin.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};

use super::ApiError;
use crate::handover::ChangeGate;

/// Admin API middleware: a request that may change something (any method
/// but GET, HEAD and OPTIONS; the handover itself excepted) counts as a
/// change in progress, and is refused with 503 while the gate is closed.
pub async fn hold_changes(State(gate): State<ChangeGate>, req: Request, next: Next) -> Response {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if reads || req.uri().path() == crate::handover::API_PATH {
        return next.run(req).await;
    }
    match gate.enter() {
        Some(_change) => next.run(req).await,
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "serve is handing over to a new serve process; retry in a moment",
        )
        .into_response(),
    }
}
