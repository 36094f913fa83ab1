//! Registered releases: `POST` registers one without starting it, `GET`
//! lists them with their API and schema versions.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::services::{ApiResult, Change, actor, body, change, query, service_name};
use super::{ApiError, AppState};
use crate::controller::{
    PauseRequest, PauseView, RegisterRequest, Registered, RegisteredView, ResumeReport,
    Unregistered, UpgradeRequest,
};
use crate::model::{ApiVersionSource, Plan, UpgradeState};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiVersionRequest {
    pub source: ApiVersionSource,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

pub async fn register(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Result<Json<RegisterRequest>, JsonRejection>,
) -> ApiResult<Registered> {
    let service = service_name(&name)?;
    Ok(Json(state.controller.register(&service, body(req)?)?))
}

/// Removes a registered release that never ran; 409 with the reason
/// otherwise.
pub async fn unregister(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Unregistered> {
    let service = service_name(&name)?;
    Ok(Json(
        state
            .controller
            .unregister(&service, &version, &actor(&headers))
            .await?,
    ))
}

pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<RegisteredView>> {
    Ok(Json(state.controller.registered(&service_name(&name)?)?))
}

pub async fn get_api_version(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ApiVersionSource> {
    let service = state.controller.service_state(&service_name(&name)?)?;
    Ok(Json(service.api_version))
}

pub async fn set_api_version(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<ApiVersionRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .set_api_version(&service, req.source, req.base_revision, &actor(&headers))
        .await?;
    change(&state, revision)
}

#[derive(Debug, Deserialize)]
pub struct PlanQuery {
    to: String,
}

/// The plan with every step checked; a broken rule is in its step (200),
/// a plan that cannot be made at all is an error.
pub async fn plan(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<PlanQuery>, QueryRejection>,
) -> ApiResult<Plan> {
    let service = service_name(&name)?;
    let q = query(q)?;
    Ok(Json(state.controller.plan(&service, &q.to)?))
}

/// Checks the plan and starts the upgrade in the background; answers with
/// the upgrade as it starts (follow it with `GET …/upgrade`).
pub async fn upgrade(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<UpgradeRequest>, JsonRejection>,
) -> ApiResult<UpgradeState> {
    let service = service_name(&name)?;
    let req = body(req)?;
    Ok(Json(state.controller.start_upgrade(
        &service,
        req,
        &actor(&headers),
    )?))
}

/// The service's latest upgrade: running, waiting, or how it ended.
pub async fn upgrade_status(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<UpgradeState> {
    let service = service_name(&name)?;
    state.controller.require_known(&service)?;
    match state.controller.upgrade_state(&service)? {
        Some(upgrade) => Ok(Json(upgrade)),
        None => Err(ApiError::new(
            http::StatusCode::NOT_FOUND,
            format!(
                "{service} was never upgraded; start with `switchyard upgrade {service} --to VERSION`"
            ),
        )),
    }
}

pub async fn upgrade_continue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<UpgradeState> {
    let service = service_name(&name)?;
    Ok(Json(state.controller.continue_upgrade(&service)?))
}

pub async fn upgrade_abort(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<UpgradeState> {
    let service = service_name(&name)?;
    Ok(Json(state.controller.abort_upgrade(&service)?))
}

pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Result<Json<PauseRequest>, JsonRejection>,
) -> ApiResult<PauseView> {
    let service = service_name(&name)?;
    Ok(Json(state.controller.pause(&service, body(req)?)?))
}

/// Lets held traffic and a paused rollout go on.
pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ResumeReport> {
    let service = service_name(&name)?;
    Ok(Json(state.controller.resume_all(&service)?))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRequest {
    /// `IP:PORT`, or `None` to unpin.
    pub address: Option<std::net::SocketAddr>,
}

pub async fn pin(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    req: Result<Json<PinRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .pin(&service, &version, req.address, &actor(&headers))
        .await?;
    change(&state, revision)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenRequest {
    /// `IP:PORT` of a TCP service's own listener, or `None` to stop it.
    pub address: Option<std::net::SocketAddr>,
    /// How long connections to a release that left may stay open (ms);
    /// none: until they close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_ms: Option<u64>,
}

pub async fn listen(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<ListenRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .listen(
            &service,
            req.address,
            req.drain_ms.map(std::time::Duration::from_millis),
            &actor(&headers),
        )
        .await?;
    change(&state, revision)
}
