//! The `switchyard` command. `serve` runs the server; every other verb is a
//! client of the admin API (one file per verb).

mod abort;
mod api_version;
mod apply;
mod assign;
mod canary;
mod client;
mod completions;
mod deploy;
mod error_page;
mod events;
mod green;
mod handover;
mod history;
mod host;
mod https;
mod init;
mod kill;
mod listen;
mod logs;
mod ls;
mod nodes;
mod output;
mod pause;
mod pin;
mod plan;
mod progress;
mod promote;
mod reference;
mod release;
mod releases;
mod resume;
mod rewrite;
mod rollback;
mod rollout;
mod route;
mod routes;
mod serve;
mod shadow;
mod status;
mod store;
mod tls;
mod upgrade;

pub use client::{AdminClient, release_path, service_path};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Release manager and traffic router for zero-downtime deployments.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy, admin API and controller in one process.
    Serve(Box<serve::ServeArgs>),
    /// Start a release and wait until every replica is healthy.
    Deploy(Box<deploy::DeployArgs>),
    /// List services and their releases.
    Ls(ls::LsArgs),
    /// Make a release main (the old main stays running as standby).
    Assign(assign::AssignArgs),
    /// Drain and stop a release (or, with --all, every release of a service).
    Kill(kill::KillArgs),
    /// Show a service's revisions.
    History(history::HistoryArgs),
    /// Return a service to an earlier revision (default: the previous one).
    Rollback(rollback::RollbackArgs),
    /// Show (and follow) the logs of a release's instances.
    Logs(logs::LogsArgs),
    /// Create a folder with a small HTTP service ready to deploy.
    Init(init::InitArgs),
    /// Shadow traffic: mirroring settings, comparison rules, reports.
    Shadow(shadow::ShadowArgs),
    /// Replace the running serve by a new serve process (a new binary, say)
    /// without failing a request; its instances keep running.
    Handover(handover::HandoverArgs),
    /// Send a share of clients to a release, sticky per client.
    Canary(canary::CanaryArgs),
    /// End the canary at once: every client back on main.
    Abort(abort::AbortArgs),
    /// Mark the release that `x-client-mode: green` reaches.
    Green(green::GreenArgs),
    /// Make a release main once it is healthy (old main to standby).
    Promote(promote::PromoteArgs),
    /// Routing rules: add, remove, list.
    Route(route::RouteArgs),
    /// Replace a service's whole traffic policy with a file's.
    Apply(apply::ApplyArgs),
    /// Show the effective routing table in evaluation order.
    Routes(routes::RoutesArgs),
    /// Rate, errors and latency of every release over the last minute.
    Status(status::StatusArgs),
    /// The nodes of the fleet: addresses, which one leads, leases, versions.
    Nodes(nodes::NodesArgs),
    /// Copy a stopped serve's state into a fleet's etcd.
    Store(store::StoreArgs),
    /// Step a canary up by plan, judging its metrics; promote or roll back.
    Rollout(Box<rollout::RolloutArgs>),
    /// Let paused traffic through (held requests in order) and a paused rollout go on.
    Resume(resume::ResumeArgs),
    /// Hold a service's new requests (in-flight ones finish) until resume, across restarts.
    Pause(pause::PauseArgs),
    /// Give a release its own listen port, served for as long as it runs.
    Pin(pin::PinArgs),
    /// Give a TCP service its own listen address: new connections go to main.
    Listen(listen::ListenArgs),
    /// Rollout events: steps, checks, promotions, rollbacks.
    Events(events::EventsArgs),
    /// Registered releases: add one from its manifest without starting it.
    Release(release::ReleaseArgs),
    /// List a service's registered releases with API and schema versions.
    Releases(releases::ReleasesArgs),
    /// Show or set where requests name the API version they want.
    ApiVersion(api_version::ApiVersionArgs),
    /// Check the chain of registered releases from main to a version.
    Plan(plan::PlanArgs),
    /// Run the plan to a version step by step: hooks, deploy, switch.
    Upgrade(upgrade::UpgradeArgs),
    /// Route host names to a service, or stop routing them (no new release needed).
    Host(host::HostArgs),
    /// Show or set whether cleartext requests to a service are redirected to HTTPS, and HSTS.
    Https(https::HttpsArgs),
    /// Show or set whether answers through /services/NAME/ get their links rewritten.
    Rewrite(rewrite::RewriteArgs),
    /// Show or replace the page end users see when the proxy answers for a service.
    ErrorPage(error_page::ErrorPageArgs),
    /// TLS certificates per host name, for `serve --tls-listen`.
    Tls(tls::TlsArgs),
    /// Print the completion script of a shell (bash, zsh, fish, …).
    Completions(completions::CompletionsArgs),
    /// Write the command-line reference (docs/cli.md, docs/man/*.1) from these definitions.
    #[command(hide = true)]
    Reference(reference::ReferenceArgs),
}

/// How a client command reaches serve.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Admin API URL of the serve to talk to.
    #[arg(
        long = "admin",
        env = "SWITCHYARD_ADMIN",
        default_value = "http://127.0.0.1:8081"
    )]
    pub admin: String,
    /// Bearer token, when serve runs with --token-file.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// PEM file of a CA to trust, besides the system's, for an https://
    /// admin URL (a serve with --admin-tls-cert from a private CA).
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_CA")]
    pub ca: Option<std::path::PathBuf>,
}

/// Parses the command line; `serve --config FILE` reads its settings from
/// the file too, where the command line gives none.
pub fn parse() -> anyhow::Result<Cli> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let Command::Serve(args) = &cli.command else {
        return Ok(cli);
    };
    let (Some(file), Some(("serve", given))) = (&args.config, matches.subcommand()) else {
        return Ok(cli);
    };
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("serve is one of the commands");
    let from_file = serve::config_file::arguments(serve, file, given)?;
    // The file's flags right after `serve`, before the command line's own.
    let mut merged = argv[..2].to_vec();
    merged.extend(from_file);
    merged.extend_from_slice(&argv[2..]);
    let matches = Cli::command().try_get_matches_from(merged)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // One thread: a client verb makes a few requests, and serve runs only
    // its control plane here (admin API, controller, health checks); its
    // data plane has threads of its own (`serve --workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    crate::tls::install_default_provider();
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Deploy(args) => deploy::run(*args).await,
            Command::Ls(args) => ls::run(args).await,
            Command::Nodes(args) => nodes::run(args).await,
            Command::Store(args) => store::run(args),
            Command::Assign(args) => assign::run(args).await,
            Command::Kill(args) => kill::run(args).await,
            Command::History(args) => history::run(args).await,
            Command::Rollback(args) => rollback::run(args).await,
            Command::Logs(args) => logs::run(args).await,
            Command::Init(args) => init::run(args),
            Command::Shadow(args) => shadow::run(args).await,
            Command::Handover(args) => handover::run(args).await,
            Command::Canary(args) => canary::run(args).await,
            Command::Abort(args) => abort::run(args).await,
            Command::Green(args) => green::run(args).await,
            Command::Promote(args) => promote::run(args).await,
            Command::Route(args) => route::run(args).await,
            Command::Apply(args) => apply::run(args).await,
            Command::Routes(args) => routes::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Rollout(args) => rollout::run(*args).await,
            Command::Resume(args) => resume::run(args).await,
            Command::Pause(args) => pause::run(args).await,
            Command::Pin(args) => pin::run(args).await,
            Command::Listen(args) => listen::run(args).await,
            Command::Events(args) => events::run(args).await,
            Command::Release(args) => release::run(args).await,
            Command::Releases(args) => releases::run(args).await,
            Command::ApiVersion(args) => api_version::run(args).await,
            Command::Plan(args) => plan::run(args).await,
            Command::Upgrade(args) => upgrade::run(args).await,
            Command::Host(args) => host::run(args).await,
            Command::Rewrite(args) => rewrite::run(args).await,
            Command::Https(args) => https::run(args).await,
            Command::ErrorPage(args) => error_page::run(args).await,
            Command::Tls(args) => tls::run(args).await,
            Command::Completions(args) => completions::run(args),
            Command::Reference(args) => reference::run(args),
        }
    })
}
