use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, router};
use crate::config::ServeConfig;
use crate::controller::{Controller, Notifier};
use crate::proxy::{self, MirrorSettings, Proxy, ProxySettings, SharedTable};
use crate::routing::RoutingTable;
use crate::runtime::{Runtime, RuntimeSettings};
use crate::store::SqliteStore;

/// How long a restarted serve waits for its releases before it listens.
const RESTORE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the proxy listener (client traffic).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the admin API. Anything but loopback needs --token-file.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin: SocketAddr,
    /// Directory for the state database and instance logs.
    #[arg(long, env = "SWITCHYARD_STATE_DIR", default_value = ".switchyard")]
    pub state_dir: PathBuf,
    /// File holding the bearer token the admin API requires.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// How long a removed release may take to finish requests in flight.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when stopping an instance.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub stop_grace: Duration,
    /// How long to wait for an upstream's response headers (then 504).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub upstream_timeout: Duration,
    /// Do not add the x-switchyard-version response header.
    #[arg(long)]
    pub no_version_header: bool,
    /// Rotate an instance's log file past this many bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub log_max_bytes: u64,
    /// URL that rollout events are POSTed to as JSON (repeatable).
    #[arg(long = "webhook", value_name = "URL")]
    pub webhooks: Vec<String>,
    /// Mirrored copies waiting per shadow; more are dropped and counted.
    #[arg(long, default_value_t = 256)]
    pub shadow_queue: usize,
    /// Mirrored copies in flight per shadow at once.
    #[arg(long, default_value_t = 16)]
    pub shadow_concurrency: usize,
    /// This many exits within --crash-window make a crash loop.
    #[arg(long, default_value_t = 3)]
    pub crash_limit: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub crash_window: Duration,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServeConfig> {
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let config = ServeConfig {
            listen: self.listen,
            admin: self.admin,
            token,
            drain_timeout: self.drain_timeout,
            stop_grace: self.stop_grace,
            upstream_timeout: self.upstream_timeout,
            version_header: !self.no_version_header,
            log_max_bytes: self.log_max_bytes,
            crash_window: self.crash_window,
            crash_limit: self.crash_limit,
            shadow_queue: self.shadow_queue,
            shadow_concurrency: self.shadow_concurrency,
            ..ServeConfig::with_state_dir(self.state_dir.clone())
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let store = Arc::new(
        SqliteStore::open(&config.state_dir)
            .with_context(|| format!("cannot open the state in {}", config.state_dir.display()))?,
    );
    let state_dir = std::fs::canonicalize(&config.state_dir)?;
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(RoutingTable::new()));
    let runtime = Runtime::new(
        RuntimeSettings {
            state_dir: state_dir.clone(),
            stop_grace: config.stop_grace,
            drain_timeout: config.drain_timeout,
            log_max_bytes: config.log_max_bytes,
            crash_window: config.crash_window,
            crash_limit: config.crash_limit,
        },
        store.clone(),
    );
    let proxy_settings = ProxySettings {
        upstream_timeout: config.upstream_timeout,
        connect_timeout: config.connect_timeout,
        version_header: config.version_header,
    };
    let mirror_settings = MirrorSettings {
        queue: config.shadow_queue,
        concurrency: config.shadow_concurrency,
        proxy: proxy_settings.clone(),
    };
    let pauses: crate::proxy::SharedPauses = Arc::default();
    let controller = Arc::new(Controller::new(
        store,
        runtime,
        Arc::clone(&table),
        Arc::clone(&pauses),
        mirror_settings,
        Notifier::start(args.webhooks.clone()),
    ));
    controller
        .restore()
        .context("cannot restore the committed state")?;
    controller.wait_restored(RESTORE_WAIT).await;
    controller
        .resume_rollouts()
        .context("cannot resume the stored rollouts")?;

    let proxy_listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!("cannot listen on {} for traffic: is another serve running? Choose another address with --listen", config.listen)
    })?;
    let admin_listener = TcpListener::bind(config.admin).await.with_context(|| {
        format!("cannot listen on {} for the admin API: is another serve running? Choose another address with --admin", config.admin)
    })?;
    // Tests and scripts read these two lines to find the bound ports.
    println!(
        "switchyard: proxy listening on http://{}",
        proxy_listener.local_addr()?
    );
    println!(
        "switchyard: admin API listening on http://{}",
        admin_listener.local_addr()?
    );
    println!("switchyard: state in {}", state_dir.display());

    let shutdown = CancellationToken::new();
    let proxy = Arc::new(Proxy {
        table,
        pauses,
        pinned: None,
        settings: proxy_settings,
    });
    tokio::spawn(save_shadow_stats(Arc::clone(&controller), shutdown.clone()));
    let proxy_task = tokio::spawn(proxy::serve(
        proxy_listener,
        proxy,
        shutdown.clone(),
        config.drain_timeout,
    ));
    let app = router(AppState {
        controller: Arc::clone(&controller),
        token: config.token.as_deref().map(Arc::from),
    });
    let admin_task = tokio::spawn(
        axum::serve(admin_listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    wait_for_signal().await;
    tracing::info!("shutting down: draining client connections, then stopping instances");
    shutdown.cancel();
    let _ = proxy_task.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    controller.save_shadow_stats();
    controller.shutdown().await;
    Ok(())
}

/// Saves shadow summaries every few seconds, so a restart keeps them.
async fn save_shadow_stats(controller: Arc<Controller>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => controller.save_shadow_stats(),
            () = shutdown.cancelled() => return,
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
