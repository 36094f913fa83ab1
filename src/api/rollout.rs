use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::services::{ApiResult, actor, body, query, service_name};
use crate::controller::RolloutView;
use crate::model::{Event, RolloutPlan, RolloutState};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutRequest {
    pub plan: RolloutPlan,
}

/// `rollout promote`: without `full`, skip the current step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PromoteRequest {
    #[serde(default)]
    pub full: bool,
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
    headers: HeaderMap,
) -> ApiResult<RolloutState> {
    Ok(Json(
        state
            .controller
            .abort_rollout(&service_name(&name)?, &actor(&headers))
            .await?,
    ))
}

/// `POST …/rollout/pause`: hold at the current step until resumed.
pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<RolloutState> {
    Ok(Json(
        state
            .controller
            .pause_rollout(&service_name(&name)?)
            .await?,
    ))
}

/// `POST …/rollout/promote {full}`: skip the current step, or (full)
/// make the candidate main now.
pub async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<PromoteRequest>, JsonRejection>,
) -> ApiResult<RolloutState> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let controller = &state.controller;
    Ok(Json(if req.full {
        controller
            .promote_rollout_full(&service, &actor(&headers))
            .await?
    } else {
        controller.promote_rollout_step(&service).await?
    }))
}

/// `POST …/rollout/retry`: run a failed or aborted rollout again.
pub async fn retry(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<RolloutState> {
    Ok(Json(
        state
            .controller
            .retry_rollout(&service_name(&name)?)
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
