use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::services::{ApiResult, BaseQuery, Change, actor, body, change, query, service_name};
use crate::controller::HandChange;
use crate::model::{Rule, Stickiness, TrafficPolicy};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryRequest {
    pub version: String,
    pub percent: u8,
    /// Replaces the service's stickiness settings when given.
    #[serde(default)]
    pub sticky: Option<Stickiness>,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaseRequest {
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GreenRequest {
    /// `None` clears green.
    pub version: Option<String>,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRequest {
    pub version: String,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleRequest {
    pub rule: Rule,
    /// 1-based; default last.
    #[serde(default)]
    pub position: Option<usize>,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRequest {
    pub policy: TrafficPolicy,
    #[serde(default)]
    pub base_revision: Option<u64>,
}

/// One line of the effective routing table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteLine {
    pub matches: String,
    pub target: String,
}

pub async fn canary(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<CanaryRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let actor = actor(&headers);
    let set = state.controller.set_canary(
        &service,
        &req.version,
        req.percent,
        req.sticky,
        req.base_revision,
        &actor,
    );
    let revision = state
        .controller
        .by_hand(&service, HandChange::SetCanary, set)
        .await?;
    change(&state, revision)
}

pub async fn abort(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<BaseRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let actor = actor(&headers);
    let abort = state.controller.abort(&service, req.base_revision, &actor);
    let revision = state
        .controller
        .by_hand(&service, HandChange::EndCanary, abort)
        .await?;
    change(&state, revision)
}

pub async fn green(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<GreenRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .set_green(
            &service,
            req.version.as_deref(),
            req.base_revision,
            &actor(&headers),
        )
        .await?;
    change(&state, revision)
}

pub async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<VersionRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let actor = actor(&headers);
    let hand = HandChange::MakeMain {
        version: &req.version,
        verb: "promote",
    };
    let promote = state
        .controller
        .promote(&service, &req.version, req.base_revision, &actor);
    let revision = state.controller.by_hand(&service, hand, promote).await?;
    change(&state, revision)
}

pub async fn add_rule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<RuleRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .add_rule(
            &service,
            req.rule,
            req.position,
            req.base_revision,
            &actor(&headers),
        )
        .await?;
    change(&state, revision)
}

pub async fn remove_rule(
    State(state): State<AppState>,
    Path((name, selector)): Path<(String, String)>,
    q: Result<Query<BaseQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let q = query(q)?;
    let revision = state
        .controller
        .remove_rule(&service, &selector, q.base_revision, &actor(&headers))
        .await?;
    change(&state, revision)
}

pub async fn get_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<TrafficPolicy> {
    Ok(Json(state.controller.policy(&service_name(&name)?)?))
}

pub async fn put_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Result<Json<PolicyRequest>, JsonRejection>,
) -> ApiResult<Change> {
    let service = service_name(&name)?;
    let req = body(req)?;
    let revision = state
        .controller
        .apply_policy(&service, req.policy, req.base_revision, &actor(&headers))
        .await?;
    change(&state, revision)
}

pub async fn routes(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<RouteLine>> {
    let lines = state.controller.routes(&service_name(&name)?)?;
    Ok(Json(
        lines
            .into_iter()
            .map(|(matches, target)| RouteLine { matches, target })
            .collect(),
    ))
}
