//! `serve --config FILE`: serve's flags from a TOML file. Each key is a
//! flag's name without its dashes (`listen = "127.0.0.1:8080"`,
//! `drain-timeout = "30s"`, `admin-host = ["ops.example"]`,
//! `no-version-header = true`); a flag given on the command line (or by
//! its environment variable) wins over the file's key. A key that is no
//! flag, or a value the flag would refuse, is an error naming the key.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;

/// Flags that have no key: the file itself, and what serve passes to the
/// serve that takes over from it.
const NOT_KEYS: &[&str] = &["config", "handover-from", "help"];

/// The file's settings as `--flag=value` arguments, leaving out those the
/// command line gave (`given`: the matches of `serve`'s own arguments).
pub fn arguments(
    serve: &clap::Command,
    file: &Path,
    given: &ArgMatches,
) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the configuration file {}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", file.display()))?;
    let flags: Vec<&clap::Arg> = serve
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| !NOT_KEYS.contains(&l)))
        .collect();
    let mut out = Vec::new();
    for (key, value) in &table {
        let Some(flag) = flags.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            let keys: Vec<&str> = flags.iter().filter_map(|a| a.get_long()).collect();
            bail!(
                "{}: unknown key `{key}`; the keys are serve's flags without their dashes: {}",
                file.display(),
                keys.join(", ")
            );
        };
        let tokens =
            tokens(flag, key, value).with_context(|| format!("{}: key `{key}`", file.display()))?;
        check(serve, &tokens).with_context(|| format!("{}: key `{key}`", file.display()))?;
        let from_command_line = matches!(
            given.value_source(flag.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !from_command_line {
            out.extend(tokens);
        }
    }
    Ok(out)
}

/// `key = value` as the flag's arguments.
fn tokens(flag: &clap::Arg, key: &str, value: &toml::Value) -> anyhow::Result<Vec<OsString>> {
    let switch = !flag.get_action().takes_values();
    let many = matches!(flag.get_action(), clap::ArgAction::Append);
    let scalar = |v: &toml::Value| -> anyhow::Result<String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            other => bail!("expects a string or a number, got {}", other.type_str()),
        }
    };
    match value {
        toml::Value::Boolean(on) if switch => Ok(if *on {
            vec![format!("--{key}").into()]
        } else {
            Vec::new()
        }),
        _ if switch => bail!("is a switch: write `{key} = true` or `{key} = false`"),
        toml::Value::Array(items) if many => items
            .iter()
            .map(|v| Ok(format!("--{key}={}", scalar(v)?).into()))
            .collect(),
        toml::Value::Array(_) => bail!("takes one value, not a list"),
        v => Ok(vec![format!("--{key}={}", scalar(v)?).into()]),
    }
}

/// Whether serve's parser takes the arguments; its complaint otherwise.
fn check(serve: &clap::Command, tokens: &[OsString]) -> anyhow::Result<()> {
    let argv = std::iter::once(OsString::from("serve")).chain(tokens.iter().cloned());
    match serve.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(error) => {
            let rendered = error.to_string();
            let first = rendered.lines().next().unwrap_or("").trim();
            bail!("{}", first.strip_prefix("error: ").unwrap_or(first))
        }
    }
}
