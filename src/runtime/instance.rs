//! One instance's life: start (or adopt) it, keep checking its health,
//! restart it with backoff when it exits, and stop it when told.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::docker::{self, ContainerRun, Engine, InstanceLabels};
use super::health::{HealthTarget, Verdict, probe};
use super::port::free_loopback_port;
use super::process::{Launch, Proc, kill_group, spawn, start_ticks};
use super::restart_backoff::RestartBackoff;
use super::{
    ExitRecord, Health, InstanceStatus, LogFiles, ReleaseStatus, RuntimeSettings, StartError,
};
use crate::backend::{Backend, Upstream, UpstreamTls};
use crate::model::{Release, RunSpec, UpstreamAddress, now_millis};
use crate::store::{InstanceRecord, NodeStore};

/// Probe interval until an instance is healthy for the first time.
const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often log sizes are checked for rotation.
const ROTATE_EVERY: Duration = Duration::from_secs(5);
/// Exits remembered per instance for `ls` and error messages.
const EXITS_KEPT: usize = 5;

/// What an instance task shares with its release.
pub(super) struct InstanceCtx {
    pub slot: u32,
    pub release: Arc<Release>,
    pub settings: Arc<RuntimeSettings>,
    pub store: Arc<dyn NodeStore>,
    pub health_client: reqwest::Client,
    pub backend: Arc<Backend>,
    pub logs: LogFiles,
    pub status: Arc<watch::Sender<ReleaseStatus>>,
    pub cancel: CancellationToken,
    /// Cancelled when another serve takes this one's instances over: the
    /// task ends at once and leaves its instance running, recorded and in
    /// the rotation as it is (see [`Runtime::hand_over`](super::Runtime::hand_over)).
    pub handed_over: CancellationToken,
    /// The Docker Engine, for container releases.
    pub engine: Engine,
}

impl InstanceCtx {
    fn update(&self, f: impl FnOnce(&mut InstanceStatus)) {
        let slot = self.slot as usize;
        self.status.send_modify(|s| {
            if let Some(instance) = s.instances.get_mut(slot) {
                f(instance);
            }
            if !s.instances.is_empty() && s.healthy() == s.instances.len() {
                s.was_ready = true;
            }
        });
    }

    fn service(&self) -> String {
        self.release.service.to_string()
    }

    fn version(&self) -> String {
        self.release.version.to_string()
    }
}

pub(super) async fn run(ctx: InstanceCtx, adopt: Option<InstanceRecord>) {
    match &ctx.release.spec.run {
        RunSpec::Process { .. } | RunSpec::Container(_) => run_managed(&ctx, adopt).await,
        RunSpec::External { upstreams, .. } => {
            let address = upstreams
                .get(ctx.slot as usize)
                .cloned()
                .unwrap_or_default();
            run_external(&ctx, &address).await;
        }
    }
}

/// A process or a container that Switchyard started (or adopted) for one
/// instance: both are restarted with backoff when they exit, and both count
/// towards a crash loop the same way.
enum Running {
    /// The pid is kept apart: a child that has been waited for no longer
    /// tells it.
    Process(Proc, Option<u32>),
    Container(ContainerRun),
}

impl Running {
    fn pid(&self) -> Option<u32> {
        match self {
            Running::Process(_, pid) => *pid,
            Running::Container(_) => None,
        }
    }

    fn container(&self) -> Option<String> {
        match self {
            Running::Process(..) => None,
            Running::Container(c) => Some(c.id.clone()),
        }
    }

    /// Waits for it to end; says how it ended (`code 1`, `signal 9`).
    async fn wait(&mut self) -> String {
        match self {
            Running::Process(proc, _) => proc.wait().await,
            Running::Container(c) => c.wait().await,
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) {
        match self {
            Running::Process(proc, _) => proc.terminate(grace).await,
            Running::Container(c) => c.stop(grace).await,
        }
    }

    /// Lets go of what is left once it ended: the adoption record of a
    /// process, the stopped container itself.
    async fn release(&mut self, ctx: &InstanceCtx) {
        match self {
            Running::Process(_, pid) => forget(ctx, *pid),
            Running::Container(c) => c.remove().await,
        }
    }
}

/// Starts (or adopts) the instance's process or container: what runs, its
/// port on 127.0.0.1, and whether it was adopted. A process is adopted from
/// its record; a container is found by its labels.
async fn start(
    ctx: &InstanceCtx,
    adopt: Option<InstanceRecord>,
) -> Result<(Running, u16, bool), StartError> {
    match &ctx.release.spec.run {
        RunSpec::Container(spec) => {
            let (service, version) = (ctx.service(), ctx.version());
            let who = InstanceLabels {
                state_dir: &ctx.settings.state_dir,
                service: &service,
                version: &version,
                slot: ctx.slot,
            };
            let run = docker::start_or_adopt(&ctx.engine, spec, &who, &ctx.logs)
                .await
                .map_err(StartError::Launch)?;
            let (port, adopted) = (run.host_port, run.adopted);
            Ok((Running::Container(run), port, adopted))
        }
        _ => start_or_adopt(ctx, adopt)
            .await
            .map(|(proc, port, adopted)| {
                let pid = proc.pid();
                (Running::Process(proc, pid), port, adopted)
            }),
    }
}

async fn run_managed(ctx: &InstanceCtx, mut adopt: Option<InstanceRecord>) {
    let mut exits: VecDeque<Instant> = VecDeque::new();
    let mut backoff = RestartBackoff::new();
    let mut ever_started = false;
    loop {
        let up_since = Instant::now();
        let started = start(ctx, adopt.take()).await;
        let how = match started {
            Ok((mut running, port, adopted)) => {
                if !ever_started && ctx.status.borrow().start_error.is_some() {
                    // It could not start before (the Docker Engine was
                    // down, say) and now it could.
                    ctx.status.send_modify(|s| s.start_error = None);
                }
                ever_started = true;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let upstream = Arc::new(Upstream::new(addr));
                ctx.backend
                    .set_slot(ctx.slot as usize, Some(Arc::clone(&upstream)));
                ctx.update(|i| {
                    i.addr = Some(addr);
                    i.pid = running.pid();
                    i.container = running.container();
                    i.health = Health::Starting;
                    i.adopted = adopted;
                });
                let how = tokio::select! {
                    how = running.wait() => Some(how),
                    () = watch_health(ctx, &upstream, adopted) => None,
                    () = ctx.cancel.cancelled() => None,
                    () = ctx.handed_over.cancelled() => return,
                };
                upstream.set_healthy(false);
                ctx.backend.set_slot(ctx.slot as usize, None);
                match how {
                    Some(how) => {
                        running.release(ctx).await;
                        how
                    }
                    None => {
                        running.stop(ctx.settings.stop_grace).await;
                        running.release(ctx).await;
                        ctx.update(|i| {
                            i.health = Health::Stopped;
                            i.container = None;
                        });
                        log_stopped(ctx);
                        return;
                    }
                }
            }
            Err(cause) => {
                if !ever_started {
                    ctx.status
                        .send_modify(|s| s.start_error = Some(cause.clone()));
                }
                format!("failed to start: {cause}")
            }
        };
        // Logged before the exit shows in the status, so whoever reads the
        // status (a deploy calling a crash loop) finds every exit logged.
        let delay = backoff.after_exit(up_since.elapsed(), ctx.settings.crash_window);
        tracing::warn!(service = %ctx.service(), version = %ctx.version(), slot = ctx.slot, %how, restart_in_ms = delay.as_millis() as u64, "instance exited");

        let now = Instant::now();
        exits.push_back(now);
        while exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > ctx.settings.crash_window)
        {
            exits.pop_front();
        }
        let crash_loop = exits.len() >= ctx.settings.crash_limit;
        ctx.update(|i| {
            i.health = Health::Exited;
            i.pid = None;
            i.container = None;
            i.restarts += 1;
            i.crash_loop |= crash_loop;
            i.last_exits.push(ExitRecord {
                at: now_millis(),
                how,
            });
            if i.last_exits.len() > EXITS_KEPT {
                i.last_exits.remove(0);
            }
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.handed_over.cancelled() => return,
            () = ctx.cancel.cancelled() => {
                ctx.update(|i| i.health = Health::Stopped);
                log_stopped(ctx);
                return;
            }
        }
    }
}

/// Says that an instance is stopped for good: nothing starts it again.
fn log_stopped(ctx: &InstanceCtx) {
    tracing::info!(service = %ctx.service(), version = %ctx.version(), slot = ctx.slot, "instance stopped");
}

/// Adopts the recorded process if it is still the one we started;
/// otherwise starts a new one on a free port and records it. One that
/// cannot be recorded is killed at once: a restarted serve would not know
/// it, leave it running unmanaged and start another beside it.
async fn start_or_adopt(
    ctx: &InstanceCtx,
    adopt: Option<InstanceRecord>,
) -> Result<(Proc, u16, bool), StartError> {
    if let Some(record) = adopt {
        if super::is_alive(record.pid, record.start_ticks) {
            tracing::info!(service = %ctx.service(), version = %ctx.version(), slot = ctx.slot, pid = record.pid, "adopted running instance");
            let proc = Proc::Adopted {
                pid: record.pid,
                ticks: record.start_ticks,
            };
            return Ok((proc, record.port, true));
        }
    }
    let RunSpec::Process { command, env, cwd } = &ctx.release.spec.run else {
        return Err(StartError::Launch("not a process release".into()));
    };
    let port =
        free_loopback_port().map_err(|e| StartError::Launch(format!("no free port: {e}")))?;
    let mut log = ctx.logs.open_for_append(ctx.slot).map_err(|e| {
        StartError::Launch(format!(
            "cannot open log {}: {e}",
            ctx.logs.path(ctx.slot).display()
        ))
    })?;
    let _ = writeln!(
        log,
        "--- switchyard: starting instance {} of {} {} on port {port}",
        ctx.slot,
        ctx.service(),
        ctx.version()
    );
    let mut child = spawn(Launch {
        command,
        env,
        cwd,
        port,
        log,
        service: &ctx.service(),
        version: &ctx.version(),
        slot: ctx.slot,
        state_dir: &ctx.settings.state_dir,
    })
    .map_err(|e| StartError::Launch(e.to_string()))?;
    if let Some(pid) = child.id() {
        let record = InstanceRecord {
            service: ctx.service(),
            version: ctx.version(),
            slot: ctx.slot,
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            port,
        };
        if let Err(error) = ctx.store.record_instance(&record) {
            tracing::error!(service = %ctx.service(), version = %ctx.version(), slot = ctx.slot, pid, %error, "cannot record instance; stopping it");
            kill_group(pid, Signal::SIGKILL);
            let _ = child.wait().await;
            return Err(StartError::Unrecorded(format!(
                "its instance {} (pid {pid}) could not be recorded in the state database: {error}",
                ctx.slot
            )));
        }
    }
    Ok((Proc::Child(child), port, false))
}

fn forget(ctx: &InstanceCtx, pid: Option<u32>) {
    let Some(pid) = pid else {
        return;
    };
    if let Err(error) = ctx
        .store
        .forget_instance(&ctx.service(), &ctx.version(), ctx.slot, pid)
    {
        tracing::error!(%error, "cannot forget instance record");
    }
}

/// Probes the instance for as long as it runs, flipping its place in the
/// rotation after enough results in a row. Never returns.
async fn watch_health(ctx: &InstanceCtx, upstream: &Upstream, adopted: bool) {
    let check = &ctx.release.spec.health;
    let mut verdict = if adopted {
        Verdict::trusting(check)
    } else {
        Verdict::default()
    };
    let mut ever_healthy = false;
    let mut last_rotate = Instant::now();
    let target = match &upstream.tls {
        None => HealthTarget::plain(&ctx.health_client, upstream.addr),
        Some(tls) => {
            let config = (**tls.connector.config()).clone();
            match HealthTarget::tls(upstream.addr, &tls.server_name.to_str(), config) {
                Ok(target) => target,
                Err(error) => {
                    tracing::error!(%error, "cannot build the health check's TLS client");
                    HealthTarget::plain(&ctx.health_client, upstream.addr)
                }
            }
        }
    };
    loop {
        let outcome = probe(&target, check).await;
        let ok = outcome.is_ok();
        if let Some(healthy) = verdict.record(ok, upstream.is_healthy(), check) {
            upstream.set_healthy(healthy);
        }
        let healthy = upstream.is_healthy();
        ever_healthy |= healthy;
        let shown = match (healthy, ever_healthy) {
            (true, _) => Health::Healthy,
            (false, true) => Health::Unhealthy,
            (false, false) => Health::Starting,
        };
        let slot = ctx.slot as usize;
        let error = outcome.err();
        let changed = ctx
            .status
            .borrow()
            .instances
            .get(slot)
            .map(|i| (i.health, &i.last_check_error) != (shown, &error))
            .unwrap_or(true);
        if changed {
            ctx.update(|i| {
                i.health = shown;
                i.last_check_error = error;
                if healthy {
                    i.crash_loop = false;
                }
            });
        }
        if last_rotate.elapsed() >= ROTATE_EVERY {
            last_rotate = Instant::now();
            let _ = ctx
                .logs
                .rotate_if_larger(ctx.slot, ctx.settings.log_max_bytes);
        }
        let pause = if ever_healthy {
            check.interval()
        } else {
            STARTUP_PROBE_INTERVAL
        };
        tokio::time::sleep(pause).await;
    }
}

/// An instance that runs elsewhere: resolve it once, then only check health.
async fn run_external(ctx: &InstanceCtx, address: &str) {
    let fail = |cause: String| {
        ctx.status.send_modify(|s| {
            s.start_error = Some(StartError::Launch(cause));
        });
    };
    let parsed = match UpstreamAddress::parse(address) {
        Ok(parsed) => parsed,
        Err(cause) => return fail(cause),
    };
    let tls = if parsed.tls {
        match upstream_tls(&parsed, &ctx.release.spec.run) {
            Ok(tls) => Some(tls),
            Err(cause) => return fail(cause),
        }
    } else {
        None
    };
    let resolved = tokio::net::lookup_host(parsed.host_port())
        .await
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address found".to_owned()));
    let addr = match resolved {
        Ok(addr) => addr,
        Err(cause) => {
            ctx.status.send_modify(|s| {
                s.start_error = Some(StartError::Launch(format!(
                    "cannot resolve upstream {address}: {cause}"
                )));
            });
            return;
        }
    };
    let upstream = Arc::new(Upstream::with_tls(addr, tls));
    ctx.backend
        .set_slot(ctx.slot as usize, Some(Arc::clone(&upstream)));
    ctx.update(|i| {
        i.addr = Some(addr);
        i.health = Health::Starting;
    });
    tokio::select! {
        () = watch_health(ctx, &upstream, false) => {}
        () = ctx.cancel.cancelled() => {}
        () = ctx.handed_over.cancelled() => return,
    }
    upstream.set_healthy(false);
    ctx.backend.set_slot(ctx.slot as usize, None);
    ctx.update(|i| i.health = Health::Stopped);
}

/// TLS to an `https://` upstream: the system's CAs and the release's
/// `upstream_ca`, SNI and verification by the address's host.
fn upstream_tls(address: &UpstreamAddress, run: &RunSpec) -> Result<UpstreamTls, String> {
    let ca_pem = match run {
        RunSpec::External { upstream_ca, .. } => upstream_ca.clone(),
        _ => None,
    };
    let trust = crate::tls::ClientTrust {
        ca_files: Vec::new(),
        ca_pem,
    };
    let config = crate::tls::client_config(&trust, &[b"http/1.1"])
        .map_err(|e| format!("cannot set up TLS to {address}: {e}"))?;
    let server_name = rustls::pki_types::ServerName::try_from(address.host.clone())
        .map_err(|e| format!("{} is no name TLS can verify: {e}", address.host))?;
    Ok(UpstreamTls {
        connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        server_name,
    })
}
