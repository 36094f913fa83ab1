//! `POST /v1/handover`: replace this serve by a new serve process (a new
//! binary, say) without a failed request; see [`crate::handover`].

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::{Extension, Json};
use http::StatusCode;

use super::ApiError;
use crate::handover::{Handover, HandoverError, HandoverReport, HandoverRequest};

pub async fn start(
    handover: Option<Extension<Arc<Handover>>>,
    body: Result<Json<HandoverRequest>, JsonRejection>,
) -> Result<Json<HandoverReport>, ApiError> {
    let Some(Extension(handover)) = handover else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this serve cannot hand over",
        ));
    };
    let request = super::services::body(body)?;
    handover.start(request.binary).await.map(Json).map_err(|e| {
        let status = match e {
            HandoverError::InProgress
            | HandoverError::AlreadyDone
            | HandoverError::ChangesInProgress
            | HandoverError::UpgradeRunning(_) => StatusCode::CONFLICT,
            HandoverError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    })
}
