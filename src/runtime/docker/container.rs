//! One container instance: made, or adopted from an earlier serve; waited
//! for; stopped (the engine's stop: SIGTERM, then SIGKILL after the
//! timeout) and removed. Its output is followed into the instance's log
//! file, so `switchyard logs` reads containers and processes alike.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio_util::task::AbortOnDropHandle;

use super::{DockerError, Engine, fingerprint, is_not_found, label};
use crate::model::ContainerSpec;
use crate::runtime::LogFiles;

/// The port a container listens on when neither the release nor the image
/// says.
const DEFAULT_CONTAINER_PORT: u16 = 8080;
/// How long an exited container's last output may take to reach its log.
const LOG_FLUSH: Duration = Duration::from_secs(2);
/// How often a lost connection to the engine is retried while waiting.
const RECHECK: Duration = Duration::from_secs(1);

/// Who an instance is, as its container's labels say.
pub struct InstanceLabels<'a> {
    pub state_dir: &'a Path,
    pub service: &'a str,
    pub version: &'a str,
    pub slot: u32,
}

impl InstanceLabels<'_> {
    fn filters(&self) -> HashMap<String, Vec<String>> {
        let labels = [
            format!("{}={}", label::STATE_DIR, self.state_dir.display()),
            format!("{}={}", label::SERVICE, self.service),
            format!("{}={}", label::VERSION, self.version),
            format!("{}={}", label::INSTANCE, self.slot),
        ];
        HashMap::from([("label".to_owned(), labels.to_vec())])
    }

    fn labels(&self, spec_hash: &str, port: u16) -> HashMap<String, String> {
        HashMap::from([
            (
                label::STATE_DIR.to_owned(),
                self.state_dir.display().to_string(),
            ),
            (label::SERVICE.to_owned(), self.service.to_owned()),
            (label::VERSION.to_owned(), self.version.to_owned()),
            (label::INSTANCE.to_owned(), self.slot.to_string()),
            (label::SPEC.to_owned(), spec_hash.to_owned()),
            (label::PORT.to_owned(), port.to_string()),
        ])
    }

    /// `switchyard-hello-1.0.0-0-1a2b3c4d`: readable in `docker ps`, and
    /// unique (the suffix changes with every container).
    fn container_name(&self) -> String {
        unique_name(
            self.service,
            self.version,
            &self.slot.to_string(),
            self.state_dir,
        )
    }
}

/// A container that runs for an instance.
pub struct ContainerRun {
    docker: Docker,
    pub id: String,
    /// Where the container's port is published on 127.0.0.1.
    pub host_port: u16,
    pub adopted: bool,
    logs: Option<AbortOnDropHandle<()>>,
}

/// The spec's fingerprint, kept on its containers' labels.
fn spec_hash(spec: &ContainerSpec) -> String {
    fingerprint(&serde_json::to_string(spec).unwrap_or_default())
}

/// Adopts a running container that an earlier serve made for this instance
/// from the same spec, removing any other container of the instance (left
/// by a crash, say); otherwise makes and starts a new one.
pub async fn start_or_adopt(
    engine: &Engine,
    spec: &ContainerSpec,
    who: &InstanceLabels<'_>,
    logs: &LogFiles,
) -> Result<ContainerRun, String> {
    let docker = engine.client().await.map_err(|e| e.to_string())?;
    let hash = spec_hash(spec);
    if let Some(run) = adopt_existing(engine, &docker, who, &hash, logs).await? {
        return Ok(run);
    }
    create_and_start(engine, docker, spec, who, &hash, logs).await
}

async fn adopt_existing(
    engine: &Engine,
    docker: &Docker,
    who: &InstanceLabels<'_>,
    hash: &str,
    logs: &LogFiles,
) -> Result<Option<ContainerRun>, String> {
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&who.filters())
        .build();
    let mut found = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine.error(e).to_string())?;
    found.sort_by_key(|c| std::cmp::Reverse(c.created.unwrap_or(0)));
    let mut adopted = None;
    for summary in found {
        let Some(id) = summary.id else { continue };
        let labels = summary.labels.unwrap_or_default();
        let running = matches!(summary.state, Some(ContainerSummaryStateEnum::RUNNING));
        let same_spec = labels.get(label::SPEC).map(String::as_str) == Some(hash);
        let port = labels.get(label::PORT).and_then(|p| p.parse::<u16>().ok());
        if adopted.is_none() && running && same_spec {
            if let Some(port) = port {
                if let Ok(Some(host_port)) = published_port(docker, &id, port).await {
                    adopted = Some((id, host_port));
                    continue;
                }
            }
        }
        tracing::info!(service = who.service, version = who.version, slot = who.slot, container = %id, "removing a container of this instance that is not adopted");
        remove(docker, &id).await;
    }
    let Some((id, host_port)) = adopted else {
        return Ok(None);
    };
    tracing::info!(service = who.service, version = who.version, slot = who.slot, container = %id, "adopted running container");
    // Catch up with what it printed while no serve was reading.
    let since = std::fs::metadata(logs.path(who.slot))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    let mut log = open_log(logs, who.slot)?;
    let _ = writeln!(
        log,
        "--- switchyard: adopted container {} of {} {} on 127.0.0.1:{host_port}",
        short(&id),
        who.service,
        who.version
    );
    Ok(Some(ContainerRun {
        logs: Some(follow_logs(docker.clone(), id.clone(), log, since)),
        docker: docker.clone(),
        id,
        host_port,
        adopted: true,
    }))
}

async fn create_and_start(
    engine: &Engine,
    docker: Docker,
    spec: &ContainerSpec,
    who: &InstanceLabels<'_>,
    hash: &str,
    logs: &LogFiles,
) -> Result<ContainerRun, String> {
    let image = spec.image_ref();
    let inspect = match docker.inspect_image(image).await {
        Ok(inspect) => inspect,
        Err(e) if is_not_found(&e) => {
            return Err(DockerError::NoImage {
                image: image.to_owned(),
                host: engine.host().to_owned(),
            }
            .to_string());
        }
        Err(e) => return Err(engine.error(e).to_string()),
    };
    let exposed = inspect
        .config
        .and_then(|c| c.exposed_ports)
        .unwrap_or_default();
    let port = spec
        .port
        .or_else(|| single_tcp_port(&exposed))
        .unwrap_or(DEFAULT_CONTAINER_PORT);
    let body = create_body(spec, who, hash, port);
    let name = who.container_name();
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| engine.error(e).to_string())?;
    let id = created.id;
    let mut log = open_log(logs, who.slot)?;
    let _ = writeln!(
        log,
        "--- switchyard: starting container {} ({name}) of {} {} from {}",
        short(&id),
        who.service,
        who.version,
        spec.image
    );
    if let Err(e) = docker.start_container(&id, None).await {
        remove(&docker, &id).await;
        return Err(engine.error(e).to_string());
    }
    let host_port = match published_port(&docker, &id, port).await {
        Ok(Some(p)) => {
            let _ = writeln!(
                log,
                "--- switchyard: container port {port} published on 127.0.0.1:{p}"
            );
            p
        }
        // It exited at once: an exit like any other, which `wait` reports
        // with its code. Port 0 is never healthy.
        Ok(None) => 0,
        Err(cause) => {
            remove(&docker, &id).await;
            return Err(cause);
        }
    };
    Ok(ContainerRun {
        logs: Some(follow_logs(docker.clone(), id.clone(), log, 0)),
        docker,
        id,
        host_port,
        adopted: false,
    })
}

fn create_body(
    spec: &ContainerSpec,
    who: &InstanceLabels<'_>,
    hash: &str,
    port: u16,
) -> ContainerCreateBody {
    let port_text = port.to_string();
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend([
        format!("PORT={port}"),
        format!("SWITCHYARD_SERVICE={}", who.service),
        format!("SWITCHYARD_VERSION={}", who.version),
        format!("SWITCHYARD_INSTANCE={}", who.slot),
    ]);
    let cmd = (!spec.command.is_empty()).then(|| {
        spec.command
            .iter()
            .map(|a| a.replace("{port}", &port_text))
            .collect()
    });
    let published = HashMap::from([(
        format!("{port}/tcp"),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".to_owned()),
            // Empty: the engine picks a free port.
            host_port: Some(String::new()),
        }]),
    )]);
    ContainerCreateBody {
        image: Some(spec.image_ref().to_owned()),
        cmd,
        env: Some(env),
        exposed_ports: Some(vec![format!("{port}/tcp")]),
        labels: Some(who.labels(hash, port)),
        host_config: Some(HostConfig {
            port_bindings: Some(published),
            memory: spec.memory_bytes.map(|m| m as i64),
            nano_cpus: spec.millicpus.map(|m| i64::from(m) * 1_000_000),
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The image's exposed TCP port, when it exposes exactly one.
fn single_tcp_port(exposed: &[String]) -> Option<u16> {
    let tcp: Vec<u16> = exposed
        .iter()
        .filter_map(|p| match p.split_once('/') {
            Some((n, "tcp")) => n.parse().ok(),
            None => p.parse().ok(),
            _ => None,
        })
        .collect();
    match tcp.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The host port the engine published `port` on; `None` when the container
/// stopped before it could be read.
async fn published_port(docker: &Docker, id: &str, port: u16) -> Result<Option<u16>, String> {
    let key = format!("{port}/tcp");
    for _ in 0..20 {
        let inspect = docker
            .inspect_container(id, None)
            .await
            .map_err(|e| format!("cannot inspect container {}: {e}", short(id)))?;
        let host_port = inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(&key))
            .flatten()
            .into_iter()
            .flatten()
            .find_map(|b| b.host_port.and_then(|p| p.parse::<u16>().ok()))
            .filter(|p| *p != 0);
        if let Some(p) = host_port {
            return Ok(Some(p));
        }
        let running = inspect.state.and_then(|s| s.running).unwrap_or(false);
        if !running {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the engine did not publish port {port} of container {}",
        short(id)
    ))
}

fn open_log(logs: &LogFiles, slot: u32) -> Result<File, String> {
    logs.open_for_append(slot)
        .map_err(|e| format!("cannot open log {}: {e}", logs.path(slot).display()))
}

/// Appends the container's stdout and stderr to its log file, from `since`
/// (unix seconds; 0 for everything). Follows across a lost connection to
/// the engine for as long as the container runs.
fn follow_logs(docker: Docker, id: String, mut file: File, since: i64) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut since = since;
        loop {
            let options = LogsOptionsBuilder::new()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .since(i32::try_from(since).unwrap_or(0))
                .build();
            let mut stream = docker.logs(&id, Some(options));
            while let Some(Ok(output)) = stream.next().await {
                let _ = file.write_all(output.as_ref());
            }
            let running = docker
                .inspect_container(&id, None)
                .await
                .ok()
                .and_then(|c| c.state)
                .and_then(|s| s.running)
                .unwrap_or(false);
            if !running {
                return;
            }
            tokio::time::sleep(RECHECK).await;
            since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
        }
    }))
}

impl ContainerRun {
    /// Waits for the container to stop and says how it ended, as process
    /// exits are told: `code 1`, `code 137 (out of memory)`.
    pub async fn wait(&mut self) -> String {
        let how = loop {
            let options = WaitContainerOptionsBuilder::new()
                .condition("not-running")
                .build();
            let mut stream = self.docker.wait_container(&self.id, Some(options));
            match stream.next().await {
                Some(Ok(r)) => break Some(r.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    break Some(code);
                }
                Some(Err(e)) if is_not_found(&e) => break None,
                // The connection to the engine broke: look again shortly.
                _ => {}
            }
            tokio::time::sleep(RECHECK).await;
            match self.docker.inspect_container(&self.id, None).await {
                Ok(c) => {
                    let state = c.state.unwrap_or_default();
                    if state.running != Some(true) {
                        break state.exit_code;
                    }
                }
                Err(e) if is_not_found(&e) => break None,
                Err(_) => {}
            }
        };
        let oom = match self.docker.inspect_container(&self.id, None).await {
            Ok(c) => c.state.and_then(|s| s.oom_killed).unwrap_or(false),
            Err(_) => false,
        };
        self.flush_logs().await;
        match (how, oom) {
            (Some(code), false) => format!("code {code}"),
            (Some(code), true) => format!("code {code} (out of memory)"),
            (None, _) => "container removed outside Switchyard".to_owned(),
        }
    }

    async fn flush_logs(&mut self) {
        if let Some(handle) = self.logs.take() {
            let _ = tokio::time::timeout(LOG_FLUSH, handle).await;
        }
    }

    /// The engine's stop: SIGTERM (or the image's stop signal), then
    /// SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let t = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)).unwrap_or(0);
        let options = StopContainerOptionsBuilder::new().t(t).build();
        let docker = self
            .docker
            .clone()
            .with_timeout(grace + Duration::from_secs(30));
        if let Err(e) = docker.stop_container(&self.id, Some(options)).await {
            if !is_not_found(&e) {
                tracing::warn!(container = %self.id, error = %e, "stopping the container failed; removing it by force");
            }
        }
    }

    /// Removes the container (it must have stopped, or it is killed).
    pub async fn remove(&mut self) {
        self.flush_logs().await;
        remove(&self.docker, &self.id).await;
    }
}

/// Removes a container by force (a running one is killed), with its
/// anonymous volumes.
pub(super) async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        if !is_not_found(&e) {
            tracing::warn!(container = %id, error = %e, "cannot remove container");
        }
    }
}

/// The first 12 characters of an id, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `switchyard-SERVICE-VERSION-PART-SUFFIX`: readable in `docker ps -a`,
/// and unique (the suffix changes with every call).
pub(super) fn unique_name(service: &str, version: &str, part: &str, state_dir: &Path) -> String {
    let version: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let suffix = fingerprint(&format!("{} {nanos}", state_dir.display()));
    format!("switchyard-{service}-{version}-{part}-{}", &suffix[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: "hello:1".into(),
            image_id: Some("sha256:abc".into()),
            command: vec!["/hello".into(), "--port".into(), "{port}".into()],
            env: BTreeMap::from([("PORT".into(), "1".into()), ("A".into(), "b".into())]),
            port: Some(9000),
            memory_bytes: Some(64 << 20),
            millicpus: Some(1500),
            volumes: vec!["/srv:/data:ro".into()],
        }
    }

    #[test]
    fn a_container_gets_its_port_env_limits_and_labels() {
        let dir = PathBuf::from("/state");
        let who = InstanceLabels {
            state_dir: &dir,
            service: "hello",
            version: "1.0.0+build.1",
            slot: 2,
        };
        let body = create_body(&spec(), &who, "h", 9000);
        assert_eq!(body.image.as_deref(), Some("sha256:abc"));
        assert_eq!(
            body.cmd,
            Some(vec!["/hello".into(), "--port".into(), "9000".into()])
        );
        let env = body.env.expect("env");
        // Switchyard's PORT comes last, so it wins over the release's.
        let port_at = env
            .iter()
            .rposition(|e| e.starts_with("PORT="))
            .expect("PORT");
        assert_eq!(env[port_at], "PORT=9000");
        assert!(env.contains(&"A=b".to_owned()));
        assert!(env.contains(&"SWITCHYARD_INSTANCE=2".to_owned()));
        let host = body.host_config.expect("host config");
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.binds, Some(vec!["/srv:/data:ro".to_owned()]));
        let bindings = host.port_bindings.expect("ports");
        let binding = &bindings["9000/tcp"].as_ref().expect("binding")[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        let labels = body.labels.expect("labels");
        assert_eq!(labels[label::STATE_DIR], "/state");
        assert_eq!(labels[label::INSTANCE], "2");
        assert!(
            who.container_name()
                .starts_with("switchyard-hello-1.0.0_build.1-2-")
        );
    }

    #[test]
    fn only_a_single_exposed_tcp_port_is_taken_as_the_default() {
        assert_eq!(single_tcp_port(&["8000/tcp".into()]), Some(8000));
        assert_eq!(
            single_tcp_port(&["8000/tcp".into(), "53/udp".into()]),
            Some(8000)
        );
        assert_eq!(single_tcp_port(&["1/tcp".into(), "2/tcp".into()]), None);
        assert_eq!(single_tcp_port(&[]), None);
    }
}
