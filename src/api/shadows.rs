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
