use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::services::{ApiResult, Change, actor, body, change, query, service_name};
use crate::model::{ComparePolicy, ShadowSettings};
use crate::shadow::ShadowReport;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShadowRequest {
    #[serde(flatten)]
    pub settings: ShadowSettings,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareRequest {
    #[serde(flatten)]
    pub policy: ComparePolicy,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    version: Option<String>,
    limit: Option<usize>,
}

/// What `shadow report --reset` sends: one shadow, or every one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResetRequest {
    #[serde(default)]
    pub version: Option<String>,
}

pub async fn set_shadow(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    req: Result<Json<ShadowRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .set_shadow(
            &service,
            &version,
            req.settings,
            req.base_revision,
            &actor(&headers),
        )
        .await?;
    change(&state, revision)
}

pub async fn set_compare(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<CompareRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .set_compare(&service, req.policy, req.base_revision, &actor(&headers))
        .await?;
    change(&state, revision)
}

pub async fn report(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> ApiResult<Vec<ShadowReport>> {
    let service = service_name(&name)?;
    let q = query(q)?;
    Ok(Json(
        state
            .controller
            .shadow_reports(&service, q.version.as_deref())?,
    ))
}

/// Ends the current window of the reports and starts a new one; answers
/// with the ended windows.
pub async fn reset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<ResetRequest>, JsonRejection>,
) -> ApiResult<Vec<ShadowReport>> {
    let service = service_name(&name)?;
    let req = body(req)?;
    Ok(Json(state.controller.reset_shadow_reports(
        &service,
        req.version.as_deref(),
        &actor(&headers),
    )?))
}

/// Ended windows, newest first (default at most 20).
pub async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Vec<ShadowReport>> {
    let service = service_name(&name)?;
    let q = query(q)?;
    Ok(Json(state.controller.shadow_history(
        &service,
        q.version.as_deref(),
        q.limit.unwrap_or(20).min(1000),
    )?))
}
