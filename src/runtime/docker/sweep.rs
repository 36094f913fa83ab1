//! After a restart: containers of releases that should no longer run.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};

use super::{Engine, label};

/// An instance that should run: service, version, slot.
pub type Slot = (String, String, u32);

/// Stops (the engine's stop: SIGTERM, then SIGKILL after `grace`) and
/// removes every container labelled with `state_dir` whose instance is not
/// in `keep` and that was made before `before` (unix seconds), so that a
/// container a new deploy just made is never taken for a stray. Nothing
/// routes to these containers (the serve that routed to them is gone), so
/// their requests in flight finish within the grace period.
pub async fn remove_strays(
    engine: Engine,
    state_dir: PathBuf,
    keep: HashSet<Slot>,
    before: i64,
    grace: Duration,
) {
    let docker = match engine.client().await {
        Ok(docker) => docker,
        Err(error) => {
            tracing::debug!(%error, "no Docker Engine: no containers to look after");
            return;
        }
    };
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{}={}", label::STATE_DIR, state_dir.display())],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let found = match docker.list_containers(Some(options)).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%error, "cannot list this serve's containers; strays are left running");
            return;
        }
    };
    let strays = found.into_iter().filter_map(|c| {
        let labels = c.labels.unwrap_or_default();
        let slot = (
            labels.get(label::SERVICE).cloned().unwrap_or_default(),
            labels.get(label::VERSION).cloned().unwrap_or_default(),
            labels
                .get(label::INSTANCE)
                .and_then(|s| s.parse().ok())
                .unwrap_or(u32::MAX),
        );
        let recent = c.created.unwrap_or(i64::MAX) > before;
        (!keep.contains(&slot) && !recent).then_some((c.id?, slot))
    });
    let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
    let stops = strays.map(|(id, (service, version, slot))| {
        let docker = docker.clone().with_timeout(grace + Duration::from_secs(30));
        async move {
            tracing::warn!(%service, %version, slot, container = %id, "stopping and removing a container of a release that should not run");
            let stop = StopContainerOptionsBuilder::new().t(t).build();
            let _ = docker.stop_container(&id, Some(stop)).await;
            let remove = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
            if let Err(error) = docker.remove_container(&id, Some(remove)).await {
                tracing::warn!(container = %id, %error, "cannot remove container");
            }
        }
    });
    futures_util::future::join_all(stops).await;
}
