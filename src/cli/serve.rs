pub(super) mod config_file;
mod limits;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Extension;
use clap::Args;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

use crate::api::hold_changes;
use crate::api::{AdminHosts, AppState, router};
use crate::config::ServeConfig;
use crate::controller::{Controller, Notifier};
use crate::fleet::{Members, SingleNode};
use crate::handover::{ChangeGate, Handover, Successor};
use crate::listener::{Connections, Drain, FileLimit, Listeners};
use crate::proxy::{
    self, AccessLog, AccessLogTarget, AccessLogWriter, DataPlane, MinRate, MirrorSettings, Proxy,
    ProxySettings, SharedTable,
};
use crate::routing::RoutingTable;
use crate::runtime::{Runtime, RuntimeSettings};
use crate::store::{NodeRecord, ServiceStore, SqliteStore, StateDir, StoreLocation};
use crate::tls::{Certificate, CertificateResolver, CertificateSource, Certificates, HostPattern};
use tokio_rustls::TlsAcceptor;

/// How long a restarted serve waits for its releases before it listens.
const RESTORE_WAIT: Duration = Duration::from_secs(5);
/// After a handover, how long a keep-alive connection may stay idle
/// before it is closed: a busy one ends after its next answer.
const HANDOVER_LINGER: Duration = Duration::from_secs(2);
/// The shortest lease a node of a fleet may ask etcd for.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// How long admin requests in progress may take to finish at shutdown.
const ADMIN_DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the proxy listener (client traffic).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of a TLS proxy listener (HTTPS traffic; HTTP/2 by ALPN),
    /// beside --listen. Certificates: `switchyard tls add`.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// How often ACME certificates are checked for renewal (each is
    /// renewed when a third of its lifetime is left).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub acme_renew_check: Duration,
    /// Serve the admin API over TLS with this PEM certificate (chain)
    /// (needs --admin-tls-key).
    #[arg(long, value_name = "FILE", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,
    /// The PEM private key of --admin-tls-cert.
    #[arg(long, value_name = "FILE", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
    /// Address of the admin API. Anything but loopback needs --token-file.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin: SocketAddr,
    /// Directory for the state database and instance logs. With --store,
    /// it keeps what this node alone runs (its instances' records, logs).
    #[arg(long, env = "SWITCHYARD_STATE_DIR", default_value = ".switchyard")]
    pub state_dir: PathBuf,
    /// Keep the services' desired state in an etcd cluster shared by a
    /// fleet of serves: etcd://HOST:PORT[,HOST:PORT…][/PREFIX] (needs a
    /// switchyard built with `--features etcd`). Without it, the state is
    /// in --state-dir.
    #[arg(long, value_name = "URL")]
    pub store: Option<StoreLocation>,
    /// This node's name in its fleet (default: the host name).
    #[arg(long, value_name = "NAME", requires = "store")]
    pub node: Option<String>,
    /// The host or IP other nodes and operators reach this node at, given
    /// in its record instead of the listeners' own addresses.
    #[arg(long, value_name = "HOST", requires = "store")]
    pub advertise: Option<String>,
    /// How long this node's lease in the fleet lives without renewal: a
    /// node silent that long drops out, and if it led, another leads.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub lease_ttl: Duration,
    /// File holding the bearer token the admin API requires.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// A name the admin API answers to besides its address (and
    /// `localhost` on loopback): NAME (any port) or NAME:PORT (repeatable).
    #[arg(long = "admin-host", value_name = "NAME")]
    pub admin_hosts: Vec<String>,
    /// How long a removed release may take to finish requests in flight.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when stopping an instance.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub stop_grace: Duration,
    /// How long to wait for an upstream's response headers, from the end
    /// of the request body (then 504).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub upstream_timeout: Duration,
    /// How long to wait for a connection to an instance (then another is
    /// tried; 502 when none connects).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub connect_timeout: Duration,
    /// How long a connection to a TCP service may carry nothing either
    /// way before it is closed (both ends see it close). Long, for
    /// protocols whose clients stay quiet between requests.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub tcp_idle_timeout: Duration,
    /// BYTES/INTERVAL: the least a client's request body must bring in
    /// every interval, else 408 (a floor, not a deadline: large uploads
    /// take as long as they need).
    #[arg(long, value_name = "BYTES/INTERVAL", default_value = "1024/10s")]
    pub client_body_min_rate: MinRate,
    /// BYTES/INTERVAL: the least an upstream's response body must bring in
    /// every interval, else the client's connection is cut and the release
    /// counted as failing.
    #[arg(long, value_name = "BYTES/INTERVAL", default_value = "1/60s")]
    pub upstream_body_min_rate: MinRate,
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
    /// Threads that carry client traffic, each a single-threaded runtime
    /// accepting on the same sockets (the admin API and the instances'
    /// health checks run on a thread of their own). One per core to spare.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// Write one JSON line per request (time, service, release, instance,
    /// method, path, status, duration, bytes, client, request id) to this
    /// file, or to stdout with `-`. SIGHUP reopens the file.
    #[arg(long, value_name = "-|PATH")]
    pub access_log: Option<AccessLogTarget>,
    /// Read serve's settings from this TOML file (keys: the flags' names
    /// without dashes); flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// After a handover, how long this serve keeps forwarding the TCP
    /// connections it holds (each until it closes) before it exits and
    /// cuts those still open; the new serve takes every new connection.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub handover_tcp_wait: Duration,
    /// Take over from the serve handing over at this socket (set by that
    /// serve when it starts this one).
    #[arg(long = "handover-from", hide = true)]
    pub handover_from: Option<PathBuf>,
    #[command(flatten)]
    pub limits: limits::LimitArgs,
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
            admin_hosts: self.admin_hosts.clone(),
            drain_timeout: self.drain_timeout,
            stop_grace: self.stop_grace,
            upstream_timeout: self.upstream_timeout,
            connect_timeout: self.connect_timeout,
            tcp_idle_timeout: self.tcp_idle_timeout,
            client_body_min_rate: self.client_body_min_rate,
            upstream_body_min_rate: self.upstream_body_min_rate,
            version_header: !self.no_version_header,
            log_max_bytes: self.log_max_bytes,
            crash_window: self.crash_window,
            crash_limit: self.crash_limit,
            shadow_queue: self.shadow_queue,
            shadow_concurrency: self.shadow_concurrency,
            listeners: self.limits.settings(),
            ..ServeConfig::with_state_dir(self.state_dir.clone())
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    if args.store.is_some() && args.lease_ttl < MIN_LEASE_TTL {
        anyhow::bail!(
            "--lease-ttl {} is too short for etcd to keep; give {} or more",
            humantime::format_duration(args.lease_ttl),
            humantime::format_duration(MIN_LEASE_TTL)
        );
    }
    let files = FileLimit::raise();
    let caps = config.listeners.resolve(&files);
    for warning in &caps.warnings {
        tracing::warn!("{warning}");
    }
    let proxy_connections = Connections::new("proxy", caps.proxy.clone());
    let admin_connections = Connections::new("admin", caps.admin.clone());
    // A serve started to take over from another receives its listening
    // sockets first: if that fails, nothing here has been touched.
    let mut successor = match &args.handover_from {
        Some(socket) => Some(Successor::connect(socket).await.with_context(|| {
            format!(
                "cannot take over from the serve at {}: is it still handing over?",
                socket.display()
            )
        })?),
        None => None,
    };
    // Before anything else in the state directory: one serve at a time.
    let held = Arc::new(match successor.as_mut().and_then(|s| s.lock.take()) {
        Some(lock) => StateDir::take_over(&config.state_dir, lock)?,
        None => StateDir::lock(&config.state_dir)?,
    });
    let node_store = Arc::new(
        SqliteStore::open(&held)
            .with_context(|| format!("cannot open the state in {}", config.state_dir.display()))?,
    );
    let shared = SharedStore::open(args.store.clone().unwrap_or_default(), &node_store)?;
    let store = shared.services();
    let state_dir = held.path().to_path_buf();
    let certificates =
        Certificates::load(store.clone()).context("cannot read the stored TLS certificates")?;
    let acme_challenges = crate::tls::AcmeChallenges::default();
    let acme = crate::tls::Acme::load(
        store.clone(),
        Arc::clone(&certificates),
        acme_challenges.clone(),
    )
    .context("cannot read the stored ACME orders")?;
    let admin_tls = match (&args.admin_tls_cert, &args.admin_tls_key) {
        (Some(cert), Some(key)) => Some(admin_tls(cert, key)?),
        _ => None,
    };
    let data_plane = DataPlane::start(usize::from(args.workers), args.limits.upstream_idle_timeout)
        .context("cannot start the proxy's threads")?;
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(RoutingTable::new()));
    let access_log = match &args.access_log {
        Some(target) => Some(AccessLog::start(target.clone()).with_context(|| {
            format!("cannot open the access log {target}: give a writable file, or - for stdout")
        })?),
        None => None,
    };
    let access_log_stats = access_log.as_ref().map(|(_, w)| Arc::clone(&w.stats));
    let (access_log, access_log_writer) = match access_log {
        Some((log, writer)) => (Some(log), Some(writer)),
        None => (None, None),
    };
    let runtime = Runtime::new(
        RuntimeSettings {
            state_dir: state_dir.clone(),
            stop_grace: config.stop_grace,
            drain_timeout: config.drain_timeout,
            log_max_bytes: config.log_max_bytes,
            crash_window: config.crash_window,
            crash_limit: config.crash_limit,
        },
        node_store.clone(),
    );
    // Bound before the proxy settings, which need its port (accepts wait
    // until the proxy is ready, like the other listeners').
    let passed_tls = successor.as_mut().and_then(|s| s.tls.take());
    let tls_listener = match (args.tls_listen, passed_tls) {
        (Some(_), Some(passed)) => Some(passed),
        (None, Some(_)) => {
            tracing::info!("the old serve's TLS listener is closed: this serve has no --tls-listen");
            None
        }
        (Some(addr), None) => Some(listen(addr).with_context(|| {
            format!("cannot listen on {addr} for TLS traffic: is another serve running? Choose another address with --tls-listen")
        })?),
        (None, None) => None,
    };
    let https_port = match &tls_listener {
        Some(listener) => Some(listener.local_addr()?.port()),
        None => None,
    };
    let proxy_settings = ProxySettings {
        upstream_timeout: config.upstream_timeout,
        connect_timeout: config.connect_timeout,
        tcp_idle_timeout: config.tcp_idle_timeout,
        client_body: config.client_body_min_rate,
        upstream_body: config.upstream_body_min_rate,
        version_header: config.version_header,
        access_log,
        connections: Arc::clone(&proxy_connections),
        https_port,
        acme_challenges,
    };
    let mirror_settings = MirrorSettings {
        queue: config.shadow_queue,
        concurrency: config.shadow_concurrency,
        proxy: proxy_settings.clone(),
        runtime: data_plane.handle().clone(),
        workers: data_plane.handles().cloned().collect(),
    };
    let pauses: crate::proxy::SharedPauses = Arc::default();
    let controller = Arc::new(Controller::with_leadership(
        store,
        node_store,
        runtime,
        Arc::clone(&table),
        Arc::clone(&pauses),
        mirror_settings,
        // A fleet's leader posts every node's events from the store.
        Notifier::start(if shared.is_fleet() {
            Vec::new()
        } else {
            args.webhooks.clone()
        }),
        shared.leadership(),
    ));
    acme.set_tls_listener(tls_listener.is_some());
    {
        let hosts = Arc::clone(&controller);
        acme.set_automatic(Box::new(move || hosts.auto_certificate_hosts()));
        let woken = Arc::downgrade(&acme);
        controller.set_on_commit(Box::new(move || {
            if let Some(acme) = woken.upgrade() {
                acme.wake();
            }
        }));
    }
    {
        let controller = Arc::clone(&controller);
        acme.set_events(Box::new(move |host, kind, message, detail| {
            controller.record_host_event(host, kind, message, detail)
        }));
    }
    if let Some(successor) = successor.as_mut() {
        controller.adopt_tcp_listening_sockets(std::mem::take(&mut successor.tcp));
    }
    controller
        .restore()
        .context("cannot restore the committed state")?;
    controller.wait_restored(RESTORE_WAIT).await;
    // A node of a fleet picks these up when it comes to lead.
    if controller.leadership().is_leading() {
        controller
            .resume_rollouts()
            .context("cannot resume the stored rollouts")?;
        controller
            .interrupt_upgrades()
            .context("cannot mark the interrupted upgrades")?;
    }

    let (proxy_listener, admin_listener, old_serve) = match successor {
        Some(Successor {
            proxy, admin, old, ..
        }) => (proxy, admin, Some(old)),
        None => {
            let proxy = listen(config.listen).with_context(|| {
                format!("cannot listen on {} for traffic: is another serve running? Choose another address with --listen", config.listen)
            })?;
            let admin = listen(config.admin).with_context(|| {
                format!("cannot listen on {} for the admin API: is another serve running? Choose another address with --admin", config.admin)
            })?;
            (proxy, admin, None)
        }
    };
    println!("switchyard: {files}; {}", caps.summary());
    // Tests and scripts read these two lines to find the bound ports.
    println!(
        "switchyard: proxy listening on http://{}",
        proxy_listener.local_addr()?
    );
    if let Some(listener) = &tls_listener {
        println!(
            "switchyard: TLS proxy listening on https://{}",
            listener.local_addr()?
        );
    }
    println!(
        "switchyard: admin API listening on {}://{}",
        if admin_tls.is_some() { "https" } else { "http" },
        admin_listener.local_addr()?
    );
    println!("switchyard: state in {}", state_dir.display());
    let node = NodeRecord {
        name: args.node.clone().unwrap_or_else(crate::fleet::host_name),
        proxy: advertised(proxy_listener.local_addr()?, args.advertise.as_deref()),
        admin: advertised(admin_listener.local_addr()?, args.advertise.as_deref()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: crate::model::now_millis(),
        lease_granted_at: 0,
        lease_ttl: 0,
    };
    let members = shared.join(
        &controller,
        &certificates,
        &acme,
        node,
        args.lease_ttl,
        &args.webhooks,
    )?;
    acme.set_fleet(crate::tls::AcmeFleet {
        leadership: controller.leadership().clone(),
        other_nodes: shared.is_fleet().then(|| other_nodes(&members)),
    });

    let gate = ChangeGate::default();
    let handover = Arc::new(Handover::new(
        Arc::clone(&controller),
        gate.clone(),
        [
            proxy_listener.as_fd().try_clone_to_owned()?,
            admin_listener.as_fd().try_clone_to_owned()?,
        ],
        match &tls_listener {
            Some(listener) => Some(listener.as_fd().try_clone_to_owned()?),
            None => None,
        },
        Arc::clone(&held),
    )?);
    let drain = Drain {
        stop: CancellationToken::new(),
        linger: HANDOVER_LINGER,
        close: CancellationToken::new(),
        timeout: config.drain_timeout,
    };
    let stop_admin = CancellationToken::new();
    let proxy = Arc::new(Proxy {
        table,
        pauses,
        pinned: None,
        settings: proxy_settings,
    });
    tokio::spawn(save_shadow_stats(
        Arc::clone(&controller),
        gate.clone(),
        stop_admin.clone(),
    ));
    // Every worker accepts on the same listening sockets, each with a copy
    // of their descriptors registered with its own runtime.
    let mut proxy_tasks = Vec::new();
    if let Some(listener) = &tls_listener {
        let acceptor = TlsAcceptor::from(crate::tls::server_config(certificates.resolver()));
        for worker in data_plane.handles() {
            proxy_tasks.push(worker.spawn(proxy::serve(
                listener.try_clone()?,
                Arc::clone(&proxy),
                drain.clone(),
                Some(acceptor.clone()),
            )));
        }
    }
    for worker in data_plane.handles() {
        proxy_tasks.push(worker.spawn(proxy::serve(
            proxy_listener.try_clone()?,
            Arc::clone(&proxy),
            drain.clone(),
            None,
        )));
    }
    drop((proxy_listener, tls_listener));
    let hosts = AdminHosts::new(admin_listener.local_addr()?, &config.admin_hosts)?;
    let app = router(AppState {
        controller: Arc::clone(&controller),
        token: config.token.as_deref().map(Arc::from),
        hosts: Arc::new(hosts),
        trends: crate::api::Trends::start(Arc::clone(&controller)),
    })
    .layer(axum::middleware::from_fn_with_state(gate, hold_changes))
    .layer(Extension(Arc::clone(&handover)))
    .layer(Extension(Arc::clone(&certificates)))
    .layer(Extension(Arc::clone(&acme)))
    .layer(Extension(members))
    .layer(Extension(Listeners(vec![
        proxy_connections,
        Arc::clone(&admin_connections),
    ])));
    let app = match access_log_stats {
        Some(stats) => app.layer(Extension(stats)),
        None => app,
    };
    let admin_task = tokio::spawn(crate::listener::serve(
        admin_listener,
        admin_connections,
        Drain {
            stop: stop_admin.clone(),
            linger: Duration::ZERO,
            close: CancellationToken::new(),
            timeout: ADMIN_DRAIN,
        },
        admin_tls,
        move |_client| TowerToHyperService::new(app.clone()),
    ));
    acme.start_renewals(args.acme_renew_check);
    if let Some(old_serve) = old_serve {
        // Should the old serve be gone, this one carries on: it holds the
        // sockets and the instances now.
        match old_serve.ready().await {
            Ok(()) => tracing::info!("took over from the old serve"),
            Err(error) => {
                tracing::warn!(%error, "cannot tell the old serve that this one took over")
            }
        }
    }

    let handed_over = wait_for_exit(&handover, access_log_writer.as_ref()).await;
    stop_admin.cancel();
    if !handed_over {
        // Nobody takes over: new connections are refused (no duplicate
        // keeps the listeners open), and open ones are closed as soon as
        // they are idle.
        tracing::info!("shutting down: draining client connections, then stopping instances");
        handover.close_listeners();
        drain.close.cancel();
    }
    // After a handover, keep-alive connections end after their next answer
    // (or after the linger), and the instances keep running for the new serve.
    drain.stop.cancel();
    for task in proxy_tasks {
        let _ = task.await;
    }
    let _ = admin_task.await;
    if handed_over && controller.tcp_connections_open() > 0 {
        tracing::info!(
            open = controller.tcp_connections_open(),
            "forwarding the open TCP connections until they close (at most {})",
            humantime::format_duration(args.handover_tcp_wait)
        );
        if !controller
            .tcp_connections_closed(args.handover_tcp_wait)
            .await
        {
            tracing::warn!(
                open = controller.tcp_connections_open(),
                "TCP connections still open after serve --handover-tcp-wait; closing them"
            );
        }
    }
    if !handed_over {
        controller.save_shadow_stats();
        controller.shutdown().await;
    }
    drop(data_plane);
    // The lines still queued are written before serve exits.
    drop(access_log_writer);
    Ok(())
}

/// The admin API's TLS settings: one certificate from files, whatever
/// name the client asks for.
fn admin_tls(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin API's TLS {what} {}", path.display()))
    };
    let certificate = Certificate::parse(
        HostPattern::Default,
        &read(cert, "certificate")?,
        &read(key, "key")?,
        CertificateSource::File,
        0,
    )
    .context("--admin-tls-cert/--admin-tls-key cannot be used")?;
    let resolver = Arc::new(CertificateResolver::default());
    resolver.replace([&certificate]);
    Ok(TlsAcceptor::from(crate::tls::server_config(resolver)))
}

/// A listening socket with the backlog tokio would give it (the standard
/// library's is 128), built here so the data plane's runtime can take it.
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Saves shadow summaries every few seconds, so a restart keeps them;
/// not while changes are held back (the serve is handing over).
async fn save_shadow_stats(
    controller: Arc<Controller>,
    gate: ChangeGate,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                if !gate.is_closed() {
                    controller.save_shadow_stats();
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Runs until SIGTERM or SIGINT (false) or until another serve took over
/// (true). SIGUSR2 hands over to the binary this serve was started from,
/// as `switchyard handover` does; SIGHUP reopens the access log.
async fn wait_for_exit(handover: &Arc<Handover>, access_log: Option<&AccessLogWriter>) -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut usr2), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined2()),
        signal(SignalKind::hangup()),
    ) else {
        // Without signal handlers, run until killed or handed over.
        handover.done().cancelled().await;
        return true;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr2.recv() => {
                let handover = Arc::clone(handover);
                tokio::spawn(async move {
                    match handover.start(None).await {
                        Ok(report) => tracing::info!(new_pid = report.new_pid, "handed over on SIGUSR2"),
                        Err(error) => tracing::error!(%error, "SIGUSR2: handover failed"),
                    }
                });
            }
            _ = hup.recv() => match access_log {
                Some(log) => log.reopen(),
                None => tracing::info!("SIGHUP: no access log to reopen"),
            },
            () = handover.done().cancelled() => return true,
        }
    }
    // A handover under way ends first: stopping now would leave its
    // instances to nobody.
    handover.settled().await;
    handover.done().is_cancelled()
}

/// The other live nodes of the fleet, as `(name, proxy address)`, for the
/// leader's check that every node answers its ACME challenges.
fn other_nodes(members: &Arc<dyn Members>) -> crate::tls::AcmeOtherNodes {
    let members = Arc::clone(members);
    Box::new(move || match members.nodes() {
        Ok(nodes) => nodes
            .into_iter()
            .filter(|n| !n.this)
            .map(|n| (n.name, n.proxy))
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot list the fleet's nodes");
            Vec::new()
        }
    })
}

/// `addr` as the node's record gives it: with `--advertise HOST`, that
/// host and the listener's port.
fn advertised(addr: SocketAddr, host: Option<&str>) -> String {
    match host {
        Some(host) if host.contains(':') && !host.starts_with('[') => {
            format!("[{host}]:{}", addr.port())
        }
        Some(host) => format!("{host}:{}", addr.port()),
        None => addr.to_string(),
    }
}

/// Where the services' desired state is kept: the state directory's
/// database, or a fleet's etcd.
enum SharedStore {
    StateDir(Arc<SqliteStore>),
    #[cfg(feature = "etcd")]
    Etcd(Arc<crate::store::EtcdStore>),
}

impl SharedStore {
    fn open(location: StoreLocation, state_dir: &Arc<SqliteStore>) -> anyhow::Result<Self> {
        match location {
            StoreLocation::StateDir => Ok(Self::StateDir(Arc::clone(state_dir))),
            #[cfg(feature = "etcd")]
            StoreLocation::Etcd(location) => {
                let store = crate::store::EtcdStore::open(&location)
                    .with_context(|| format!("cannot open the fleet's store {location}"))?;
                println!("switchyard: fleet state in {location}");
                Ok(Self::Etcd(Arc::new(store)))
            }
            #[cfg(not(feature = "etcd"))]
            StoreLocation::Etcd(location) => anyhow::bail!(
                "--store {location}: this switchyard was built without etcd. Build one with it: \
                 `cargo build --release --features etcd` (building it needs protoc: \
                 `apt-get install protobuf-compiler`)"
            ),
        }
    }

    fn services(&self) -> Arc<dyn ServiceStore> {
        match self {
            Self::StateDir(store) => store.clone(),
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => store.clone(),
        }
    }

    /// Whether this serve is a node of a fleet (on etcd).
    fn is_fleet(&self) -> bool {
        !matches!(self, Self::StateDir(_))
    }

    /// A single serve always leads; a node of a fleet waits for its election.
    fn leadership(&self) -> crate::controller::Leadership {
        match self {
            Self::StateDir(_) => crate::controller::Leadership::single(),
            #[cfg(feature = "etcd")]
            Self::Etcd(_) => crate::controller::Leadership::follower(),
        }
    }

    /// Joins the fleet (a node of one joins nothing); returns the nodes the
    /// admin API lists.
    fn join(
        &self,
        controller: &Arc<Controller>,
        certificates: &Arc<Certificates>,
        acme: &Arc<crate::tls::Acme>,
        node: NodeRecord,
        lease_ttl: Duration,
        webhooks: &[String],
    ) -> anyhow::Result<Arc<dyn Members>> {
        match self {
            Self::StateDir(_) => {
                let _ = (certificates, acme, lease_ttl, webhooks);
                controller.set_reports(Arc::new(crate::fleet::Alone(node.name.clone())));
                let controller = Arc::clone(controller);
                Ok(Arc::new(SingleNode {
                    record: node,
                    local: Box::new(move || controller.local_readiness().into_values().collect()),
                }))
            }
            #[cfg(feature = "etcd")]
            Self::Etcd(store) => {
                tracing::info!(node = %node.name, "joining the fleet");
                Ok(crate::fleet::Fleet::join(
                    Arc::clone(store),
                    Arc::clone(controller),
                    crate::fleet::FleetSettings {
                        node,
                        lease_ttl,
                        certificates: Arc::clone(certificates),
                        acme: Arc::clone(acme),
                        webhooks: webhooks.to_vec(),
                    },
                ))
            }
        }
    }
}
