use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::services::{ApiResult, body, query, service_name};
use crate::controller::RolloutView;
use crate::model::{Event, RolloutPlan, RolloutState};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutRequest {
    pub plan: RolloutPlan,
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    limit: Option<usize>,
}

pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Result<Json<RolloutRequest>, JsonRejection>,
) -> ApiResult<RolloutState> {
    let service = service_name(&name)?;
    let req = body(req)?;
    Ok(Json(
        state.controller.start_rollout(&service, req.plan).await?,
    ))
}

pub async fn status(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<RolloutView> {
    Ok(Json(state.controller.rollout_view(&service_name(&name)?)?))
}

pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<RolloutState> {
    Ok(Json(state.controller.resume(&service_name(&name)?)?))
}

pub async fn abort(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<RolloutState> {
    Ok(Json(
        state
            .controller
            .abort_rollout(&service_name(&name)?)
            .await?,
    ))
}

pub async fn events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Vec<Event>> {
    let service = service_name(&name)?;
    let q = query(q)?;
    Ok(Json(
        state
            .controller
            .events(&service, q.limit.unwrap_or(100).min(10_000))?,
    ))
}
