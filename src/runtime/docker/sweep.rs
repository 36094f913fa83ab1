//! After a restart: containers of releases that should no longer run.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{Engine, label};

/// How long the sweep waits for a hook container left running to end.
const HOOK_WAIT: Duration = Duration::from_secs(24 * 3600);

/// An instance that should run: service, version, slot.
pub type Slot = (String, String, u32);

/// Stops (the engine's stop: SIGTERM, then SIGKILL after `grace`) and
/// removes every container labelled with `state_dir` whose instance is not
/// in `keep` and that was made before `before` (unix seconds), so that a
/// container a new deploy just made is never taken for a stray. Hook
/// containers are no instances: see [`sweep_hook`]. Nothing
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
    let (hooks, found): (Vec<_>, Vec<_>) = found.into_iter().partition(|c| {
        c.labels
            .as_ref()
            .is_some_and(|l| l.contains_key(label::HOOK))
    });
    for hook in hooks {
        sweep_hook(&docker, hook, before);
    }
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

/// A hook's container left by a serve that died while the hook ran (made
/// before `before`): removed at once when it has ended, else once it ends,
/// so a migration is never cut short.
fn sweep_hook(docker: &Docker, hook: ContainerSummary, before: i64) {
    let Some(id) = hook.id else { return };
    if hook.created.unwrap_or(i64::MAX) > before {
        return;
    }
    let name = hook
        .labels
        .as_ref()
        .and_then(|l| l.get(label::HOOK))
        .cloned()
        .unwrap_or_default();
    let running = matches!(hook.state, Some(ContainerSummaryStateEnum::RUNNING));
    // A hook may run for hours; the wait must not time out before it ends.
    let docker = docker.clone().with_timeout(HOOK_WAIT);
    tokio::spawn(async move {
        if running {
            tracing::warn!(hook = %name, container = %id, "a hook container of an earlier serve still runs; it is removed once it ends");
            let options = WaitContainerOptionsBuilder::new()
                .condition("not-running")
                .build();
            let _ = docker.wait_container(&id, Some(options)).next().await;
            let still_running = docker
                .inspect_container(&id, None)
                .await
                .map_or(true, |c| c.state.and_then(|s| s.running) != Some(false));
            if still_running {
                // The wait broke off, not the hook: never kill it.
                tracing::warn!(hook = %name, container = %id, "lost track of a running hook container; it is left as it is");
                return;
            }
        }
        tracing::info!(hook = %name, container = %id, "removing a hook container of an earlier serve");
        let remove = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        if let Err(error) = docker.remove_container(&id, Some(remove)).await {
            tracing::warn!(container = %id, %error, "cannot remove container");
        }
    });
}
