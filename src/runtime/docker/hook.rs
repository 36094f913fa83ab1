//! A release's hook (`backup`, `migrate`, `migrate_down`) run as a one-off
//! container of the release's image: the release's environment, mounts and
//! limits, the hook's command as the container's command (it replaces the
//! image's `CMD`, as a release's command does), no published port.
//!
//! The container carries the labels of every Switchyard container but
//! [`label::HOOK`] instead of an instance slot, so no instance ever adopts
//! it. It is removed when the hook ends, fails or runs out of time.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::container::{remove, unique_name};
use super::{DockerError, Engine, is_not_found, label};
use crate::model::ContainerSpec;

/// Room the engine gets beyond the hook's own time limit to answer.
const ENGINE_SLACK: Duration = Duration::from_secs(30);

/// One hook run.
pub struct HookJob<'a> {
    /// The state directory of this serve (a label, like every container's).
    pub state_dir: &'a Path,
    pub service: &'a str,
    pub version: &'a str,
    /// `backup`, `migrate` or `migrate_down`.
    pub hook: &'static str,
    /// The program and its arguments.
    pub command: &'a [String],
    /// Added to the release's environment (these win).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// The most output kept, in bytes (the end of it).
    pub keep: usize,
}

/// How a hook's container ended.
#[derive(Debug)]
pub enum HookEnd {
    /// It exited with `code`; its stdout and stderr, interleaved as
    /// written, at most about `keep` bytes (the end).
    Exited { code: i64, output: String },
    /// It ran past the time limit and was killed.
    TimedOut,
}

/// Runs `job` in a new container of `spec`'s image and removes the
/// container afterwards, whatever happened.
pub async fn run_hook(
    engine: &Engine,
    spec: &ContainerSpec,
    job: &HookJob<'_>,
) -> Result<HookEnd, DockerError> {
    let docker = engine
        .client()
        .await?
        .with_timeout(job.timeout + ENGINE_SLACK);
    let options = CreateContainerOptionsBuilder::new()
        .name(&container_name(job))
        .build();
    let created = match docker
        .create_container(Some(options), create_body(spec, job))
        .await
    {
        Ok(created) => created,
        Err(e) if is_not_found(&e) => {
            return Err(DockerError::NoImage {
                image: spec.image_ref().to_owned(),
                host: engine.host().to_owned(),
            });
        }
        Err(e) => return Err(engine.error(e)),
    };
    let ended = run_created(engine, &docker, &created.id, job).await;
    remove(&docker, &created.id).await;
    ended
}

async fn run_created(
    engine: &Engine,
    docker: &Docker,
    id: &str,
    job: &HookJob<'_>,
) -> Result<HookEnd, DockerError> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| engine.error(e))?;
    let exit = async {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        match docker.wait_container(id, Some(options)).next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as this error.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(engine.error(e)),
            None => Err(DockerError::Api(
                "the engine ended the wait for the hook's container without its exit code".into(),
            )),
        }
    };
    // On a timeout the caller's removal (by force) kills the container.
    let Ok(code) = tokio::time::timeout(job.timeout, exit).await else {
        return Ok(HookEnd::TimedOut);
    };
    let code = code?;
    Ok(HookEnd::Exited {
        code,
        output: output(docker, id, job.keep).await,
    })
}

/// The container's stdout and stderr as written, keeping about the last
/// `keep` bytes.
async fn output(docker: &Docker, id: &str, keep: usize) -> String {
    let options = LogsOptionsBuilder::new()
        .follow(false)
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut bytes: Vec<u8> = Vec::new();
    let mut note = String::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                bytes.extend_from_slice(chunk.as_ref());
                if bytes.len() > keep.saturating_mul(2) {
                    bytes.drain(..bytes.len() - keep);
                }
            }
            Err(e) => {
                note = format!("\n(the rest of its output could not be read: {e})");
                break;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned() + &note
}

fn create_body(spec: &ContainerSpec, job: &HookJob<'_>) -> ContainerCreateBody {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(job.env.iter().map(|(k, v)| format!("{k}={v}")));
    let labels = HashMap::from([
        (
            label::STATE_DIR.to_owned(),
            job.state_dir.display().to_string(),
        ),
        (label::SERVICE.to_owned(), job.service.to_owned()),
        (label::VERSION.to_owned(), job.version.to_owned()),
        (label::HOOK.to_owned(), job.hook.to_owned()),
    ]);
    ContainerCreateBody {
        image: Some(spec.image_ref().to_owned()),
        cmd: Some(job.command.to_vec()),
        env: Some(env),
        labels: Some(labels),
        host_config: Some(HostConfig {
            memory: spec.memory_bytes.map(|m| m as i64),
            nano_cpus: spec.millicpus.map(|m| i64::from(m) * 1_000_000),
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `switchyard-hub-1.0.1-migrate-1a2b3c4d`: readable in `docker ps -a`,
/// and unique.
fn container_name(job: &HookJob<'_>) -> String {
    unique_name(
        job.service,
        job.version,
        &job.hook.replace('_', "-"),
        job.state_dir,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    #[test]
    fn a_hook_container_has_the_release_env_mounts_and_a_hook_label_but_no_slot_or_port() {
        let spec = ContainerSpec {
            image: "hub:1".into(),
            image_id: Some("sha256:abc".into()),
            command: vec!["/server".into()],
            env: BTreeMap::from([
                ("DB".into(), "/data/hub.db".into()),
                ("SWITCHYARD_HOOK".into(), "mine".into()),
            ]),
            port: Some(9000),
            memory_bytes: Some(64 << 20),
            millicpus: None,
            volumes: vec!["/srv/hub:/data".into()],
        };
        let dir = PathBuf::from("/state");
        let command = vec!["/migrate.sh".to_owned(), "up".to_owned()];
        let job = HookJob {
            state_dir: &dir,
            service: "hub",
            version: "1.0.1+b2",
            hook: "migrate_down",
            command: &command,
            env: vec![("SWITCHYARD_HOOK".into(), "migrate_down".into())],
            timeout: Duration::from_secs(1),
            keep: 8192,
        };
        let body = create_body(&spec, &job);
        assert_eq!(
            body.image.as_deref(),
            Some("sha256:abc"),
            "the pinned image"
        );
        assert_eq!(body.cmd, Some(command.clone()));
        let env = body.env.expect("env");
        assert!(env.contains(&"DB=/data/hub.db".to_owned()));
        let hook_at = env
            .iter()
            .rposition(|e| e.starts_with("SWITCHYARD_HOOK="))
            .expect("hook var");
        assert_eq!(env[hook_at], "SWITCHYARD_HOOK=migrate_down", "ours wins");
        let labels = body.labels.expect("labels");
        assert_eq!(labels[label::STATE_DIR], "/state");
        assert_eq!(labels[label::HOOK], "migrate_down");
        assert!(!labels.contains_key(label::INSTANCE));
        assert!(body.exposed_ports.is_none());
        let host = body.host_config.expect("host config");
        assert_eq!(host.binds, Some(vec!["/srv/hub:/data".to_owned()]));
        assert_eq!(host.memory, Some(64 << 20));
        assert!(host.port_bindings.is_none());
        assert!(container_name(&job).starts_with("switchyard-hub-1.0.1_b2-migrate-down-"));
    }
}
