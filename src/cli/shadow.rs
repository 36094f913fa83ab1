use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::output::{self, json, table};
use super::{AdminClient, ClientArgs, service_path};
use crate::api::services::Change;
use crate::api::shadows::{CompareRequest, ResetRequest, ShadowRequest};
use crate::controller::ServiceView;
use crate::model::parse_version;
use crate::shadow::ShadowReport;

#[derive(Debug, Args)]
pub struct ShadowArgs {
    #[command(subcommand)]
    pub command: ShadowCommand,
}

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// Change how a shadow receives mirrored copies.
    Set(SetArgs),
    /// Change how shadows' answers are compared with main's.
    Compare(CompareArgs),
    /// Show where shadows' answers differ from main's.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    pub name: String,
    pub version: String,
    /// Share of requests mirrored, 0 to 100.
    #[arg(long)]
    pub sample: Option<u8>,
    /// Methods mirrored, e.g. GET,HEAD (safe methods only), or `all`.
    /// Mirroring POST, PUT, PATCH or DELETE repeats their side effects.
    #[arg(long)]
    pub methods: Option<String>,
    /// Turn mirroring on.
    #[arg(long, conflicts_with = "off")]
    pub on: bool,
    /// Turn mirroring off (the release stays a shadow, reachable at its address).
    #[arg(long)]
    pub off: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    pub name: String,
    /// Response headers to compare (repeatable; replaces the list).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// JSON path to ignore, e.g. '$.items[*].id' (repeatable; adds).
    #[arg(long = "ignore-path")]
    pub ignore_paths: Vec<String>,
    /// Forget the ignored paths set so far.
    #[arg(long)]
    pub clear_ignores: bool,
    /// Share of mirrored requests also sent to a second main instance for
    /// noise cancellation (0 turns it off).
    #[arg(long)]
    pub noise: Option<u8>,
    /// Largest body captured for mirroring and comparison, in bytes.
    #[arg(long)]
    pub body_limit: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    pub name: String,
    pub version: Option<String>,
    /// End the current window (printed one last time; kept in the
    /// history) and start counting afresh, e.g. after --ignore-path.
    #[arg(long, conflicts_with = "history")]
    pub reset: bool,
    /// The ended windows, newest first.
    #[arg(long)]
    pub history: bool,
    /// With --history: at most this many windows.
    #[arg(short = 'n', long, default_value_t = 20, requires = "history")]
    pub limit: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: ShadowArgs) -> anyhow::Result<()> {
    match args.command {
        ShadowCommand::Set(a) => set(a).await,
        ShadowCommand::Compare(a) => compare(a).await,
        ShadowCommand::Report(a) => report(a).await,
    }
}

async fn set(args: SetArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let version = parse_version(&args.version)?;
    let client = AdminClient::new(&args.client)?;
    let service: ServiceView = client.get(&path).await?;
    let release = service
        .releases
        .iter()
        .find(|r| r.version == version.to_string())
        .with_context(|| {
            format!(
                "{} has no release {version}; `switchyard ls` lists them",
                args.name
            )
        })?;
    let mut settings = release.shadow.clone();
    if let Some(sample) = args.sample {
        settings.sample_percent = sample;
    }
    if let Some(methods) = &args.methods {
        settings.methods = parse_methods(methods);
    }
    if args.on {
        settings.enabled = true;
    }
    if args.off {
        settings.enabled = false;
    }
    let change: Change = client
        .post(
            &format!("{path}/shadows/{version}"),
            &ShadowRequest {
                settings,
                base_revision: Some(service.revision),
            },
        )
        .await?;
    output::change(&args.client, &change)
}

/// `GET,HEAD` as upper-case names; `all` as the empty list (every method).
pub(super) fn parse_methods(methods: &str) -> Vec<String> {
    if methods.eq_ignore_ascii_case("all") {
        return Vec::new();
    }
    methods
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect()
}

async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let path = service_path(&args.name)?;
    let client = AdminClient::new(&args.client)?;
    let service: ServiceView = client.get(&path).await?;
    let mut policy = service.compare.clone();
    if !args.headers.is_empty() {
        policy.headers = args
            .headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
    }
    if args.clear_ignores {
        policy.ignore_paths.clear();
    }
    policy
        .ignore_paths
        .extend(args.ignore_paths.iter().cloned());
    if let Some(noise) = args.noise {
        policy.noise_percent = noise;
    }
    if let Some(limit) = args.body_limit {
        policy.body_limit = limit;
    }
    let change: Change = client
        .post(
            &format!("{path}/compare"),
            &CompareRequest {
                policy,
                base_revision: Some(service.revision),
            },
        )
        .await?;
    output::change(&args.client, &change)
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let service = service_path(&args.name)?;
    let version = args.version.as_deref().map(parse_version).transpose()?;
    let client = AdminClient::new(&args.client)?;
    if args.reset {
        let ended: Vec<ShadowReport> = client
            .post(
                &format!("{service}/shadows/reset"),
                &ResetRequest {
                    version: version.as_ref().map(ToString::to_string),
                },
            )
            .await?;
        if args.client.json {
            return json(&ended);
        }
        if ended.is_empty() {
            println!(
                "no shadow of {} has a report yet; a window starts with its first copy",
                args.name
            );
        }
        for r in &ended {
            print_report(r);
            println!(
                "{} {}: a new window starts now; the one above is kept in `switchyard shadow report {} --history`",
                r.service, r.version, args.name
            );
        }
        return Ok(());
    }
    let mut path = if args.history {
        format!("{service}/shadows/history?limit={}", args.limit)
    } else {
        format!("{service}/shadows/report")
    };
    if let Some(v) = &version {
        let sep = if path.contains('?') { '&' } else { '?' };
        path.push_str(&format!("{sep}version={v}"));
    }
    let reports: Vec<ShadowReport> = client.get(&path).await?;
    if args.client.json {
        return json(&reports);
    }
    if reports.is_empty() {
        if args.history {
            println!(
                "no ended window yet: `switchyard shadow report {} --reset` ends one",
                args.name
            );
            return Ok(());
        }
        bail!("no shadow of {} has been mirrored to yet", args.name);
    }
    for r in &reports {
        print_report(r);
    }
    if !args.history {
        if let Some(r) = reports.first() {
            println!(
                "not compared: headers Switchyard sets itself ({}), wherever the answers show them",
                r.own_headers_ignored.join(", ")
            );
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC`, or `-` when unknown.
fn when(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.replace('T', " ").replace('Z', " UTC")
}

fn print_report(r: &ShadowReport) {
    let window = match r.until {
        Some(until) => format!("window {} to {}", when(r.since), when(until)),
        None => format!("since {}", when(r.since)),
    };
    println!(
        "{} {} ({window}): mirrored {}, compared {}, matched {} ({}), dropped {}, too large {}, shadow errors {} ({} 5xx, {} no answer), noise samples {}",
        r.service,
        r.version,
        r.mirrored,
        r.compared,
        r.matched,
        percent(r.match_rate),
        r.dropped,
        r.too_large,
        r.shadow_errors,
        r.shadow_5xx,
        r.shadow_failed,
        r.noise_compared
    );
    if r.fields.is_empty() {
        println!();
        return;
    }
    let rows: Vec<Vec<String>> = r
        .fields
        .iter()
        .map(|f| {
            vec![
                f.field.clone(),
                f.diffs.to_string(),
                percent(Some(f.rate)),
                percent(f.noise_rate),
                if f.real { "yes" } else { "noise" }.to_owned(),
                f.kinds
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    table(&["FIELD", "DIFFS", "RATE", "NOISE", "REAL", "KINDS"], &rows);
    for f in r.fields.iter().take(5) {
        for e in &f.examples {
            println!(
                "  {} {}: main {} | shadow {}   ({})",
                f.field, e.kind, e.main, e.shadow, e.request
            );
        }
    }
    println!();
}
