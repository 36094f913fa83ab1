//! The nodes of the fleet this serve belongs to: `GET /v1/nodes` (a
//! single serve lists itself, as the leader).

use std::sync::Arc;

use axum::{Extension, Json};

use super::services::ApiResult;
use crate::fleet::{Members, NodeView};

pub async fn list(Extension(members): Extension<Arc<dyn Members>>) -> ApiResult<Vec<NodeView>> {
    let nodes = members.nodes().map_err(crate::Error::from)?;
    Ok(Json(nodes))
}
