//! One instance's life: start (or adopt) it, keep checking its health,
//! restart it with backoff when it exits, and stop it when told.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::health::{Verdict, probe};
use super::port::free_loopback_port;
use super::process::{Launch, Proc, spawn, start_ticks};
use super::{ExitRecord, Health, InstanceStatus, LogFiles, ReleaseStatus, RuntimeSettings};
use crate::model::{Release, RunSpec, now_millis};
use crate::proxy::{Backend, Upstream};
use crate::store::{InstanceRecord, Store};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
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
    pub store: Arc<dyn Store>,
    pub health_client: reqwest::Client,
    pub backend: Arc<Backend>,
    pub logs: LogFiles,
    pub status: Arc<watch::Sender<ReleaseStatus>>,
    pub cancel: CancellationToken,
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
        RunSpec::Process { .. } => run_process(&ctx, adopt).await,
        RunSpec::External { upstreams } => {
            let address = upstreams
                .get(ctx.slot as usize)
                .cloned()
                .unwrap_or_default();
            run_external(&ctx, &address).await;
        }
    }
}

async fn run_process(ctx: &InstanceCtx, mut adopt: Option<InstanceRecord>) {
    let mut exits: VecDeque<Instant> = VecDeque::new();
    let mut backoff = FIRST_BACKOFF;
    let mut ever_started = false;
    loop {
        let up_since = Instant::now();
        let how = match start_or_adopt(ctx, adopt.take()) {
            Ok((mut proc, port, adopted)) => {
                ever_started = true;
                let pid = proc.pid();
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let upstream = Arc::new(Upstream::new(addr));
                ctx.backend
                    .set_slot(ctx.slot as usize, Some(Arc::clone(&upstream)));
                ctx.update(|i| {
                    i.addr = Some(addr);
                    i.pid = proc.pid();
                    i.health = Health::Starting;
                    i.adopted = adopted;
                });
                let how = tokio::select! {
                    how = proc.wait() => Some(how),
                    () = watch_health(ctx, &upstream, adopted) => None,
                    () = ctx.cancel.cancelled() => None,
                };
                upstream.set_healthy(false);
                ctx.backend.set_slot(ctx.slot as usize, None);
                match how {
                    Some(how) => {
                        forget(ctx, pid);
                        how
                    }
                    None => {
                        proc.terminate(ctx.settings.stop_grace).await;
                        forget(ctx, pid);
                        ctx.update(|i| i.health = Health::Stopped);
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
        tracing::warn!(service = %ctx.service(), version = %ctx.version(), slot = ctx.slot, %how, "instance exited");

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
        if up_since.elapsed() > ctx.settings.crash_window {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = ctx.cancel.cancelled() => {
                ctx.update(|i| i.health = Health::Stopped);
                return;
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Adopts the recorded process if it is still the one we started;
/// otherwise starts a new one on a free port.
fn start_or_adopt(
    ctx: &InstanceCtx,
    adopt: Option<InstanceRecord>,
) -> Result<(Proc, u16, bool), String> {
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
        return Err("not a process release".into());
    };
    let port = free_loopback_port().map_err(|e| format!("no free port: {e}"))?;
    let mut log = ctx
        .logs
        .open_for_append(ctx.slot)
        .map_err(|e| format!("cannot open log {}: {e}", ctx.logs.path(ctx.slot).display()))?;
    let _ = writeln!(
        log,
        "--- switchyard: starting instance {} of {} {} on port {port}",
        ctx.slot,
        ctx.service(),
        ctx.version()
    );
    let child = spawn(Launch {
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
    .map_err(|e| e.to_string())?;
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
            tracing::error!(%error, "cannot record instance; it will not be adopted after a restart");
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
    loop {
        let ok = probe(&ctx.health_client, upstream.addr, check).await;
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
        let changed = ctx.status.borrow().instances.get(slot).map(|i| i.health) != Some(shown);
        if changed {
            ctx.update(|i| {
                i.health = shown;
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
    let resolved = tokio::net::lookup_host(address)
        .await
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address found".to_owned()));
    let addr = match resolved {
        Ok(addr) => addr,
        Err(cause) => {
            ctx.status.send_modify(|s| {
                s.start_error = Some(format!("cannot resolve upstream {address}: {cause}"));
            });
            return;
        }
    };
    let upstream = Arc::new(Upstream::new(addr));
    ctx.backend
        .set_slot(ctx.slot as usize, Some(Arc::clone(&upstream)));
    ctx.update(|i| {
        i.addr = Some(addr);
        i.health = Health::Starting;
    });
    tokio::select! {
        () = watch_health(ctx, &upstream, false) => {}
        () = ctx.cancel.cancelled() => {}
    }
    upstream.set_healthy(false);
    ctx.backend.set_slot(ctx.slot as usize, None);
    ctx.update(|i| i.health = Health::Stopped);
}
