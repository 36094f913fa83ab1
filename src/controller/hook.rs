//! Running a release's hooks (`backup`, `migrate`, `migrate_down`): the
//! command runs in the release's working directory with its environment,
//! its output is captured, and a non-zero exit is an error that carries
//! the end of that output.

use std::process::Stdio;
use std::time::Duration;

use crate::model::{Release, RunSpec};

/// The most output kept from one hook run (its end).
const MAX_OUTPUT: usize = 8 * 1024;

/// How a hook ended when it succeeded.
#[derive(Debug, Clone)]
pub struct HookRun {
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hooks.{hook} of {version} exited with {status}; output:\n{output}")]
    Failed {
        hook: &'static str,
        version: String,
        status: String,
        output: String,
    },
    #[error("hooks.{hook} of {version} did not finish within {secs} s and was killed")]
    TimedOut {
        hook: &'static str,
        version: String,
        secs: u64,
    },
    #[error("hooks.{hook} of {version} could not start `{program}`: {source}")]
    Spawn {
        hook: &'static str,
        version: String,
        program: String,
        source: std::io::Error,
    },
    #[error(
        "hooks.{hook} of {version}: hooks run only for releases run as local processes (this one is {kind})"
    )]
    NotAProcess {
        hook: &'static str,
        version: String,
        kind: &'static str,
    },
}

/// Runs `command` as hook `hook` of `release`. The release's environment
/// is added to serve's, with `SWITCHYARD_SERVICE`, `SWITCHYARD_VERSION`,
/// `SWITCHYARD_HOOK` and `SWITCHYARD_SCHEMA` (the release's schema).
pub async fn run_hook(
    release: &Release,
    hook: &'static str,
    command: &[String],
    timeout: Duration,
) -> Result<HookRun, HookError> {
    let version = release.version.to_string();
    let RunSpec::Process { env, cwd, .. } = &release.spec.run else {
        return Err(HookError::NotAProcess {
            hook,
            version,
            kind: release.spec.run.kind_name(),
        });
    };
    let Some((program, args)) = command.split_first() else {
        return Ok(HookRun {
            output: String::new(),
        });
    };
    let schema = release
        .spec
        .versioning
        .schema_version
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .envs(env)
        .env("SWITCHYARD_SERVICE", release.service.as_str())
        .env("SWITCHYARD_VERSION", &version)
        .env("SWITCHYARD_HOOK", hook)
        .env("SWITCHYARD_SCHEMA", schema)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Spawn {
            hook,
            version: version.clone(),
            program: program.clone(),
            source,
        })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => {
            return Err(HookError::Spawn {
                hook,
                version,
                program: program.clone(),
                source,
            });
        }
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => {
            return Err(HookError::TimedOut {
                hook,
                version,
                secs: timeout.as_secs(),
            });
        }
    };
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    if output.len() > MAX_OUTPUT {
        let mut cut = output.len() - MAX_OUTPUT;
        while !output.is_char_boundary(cut) {
            cut += 1;
        }
        output = format!("…{}", &output[cut..]);
    }
    if out.status.success() {
        Ok(HookRun { output })
    } else {
        Err(HookError::Failed {
            hook,
            version,
            status: out.status.to_string(),
            output,
        })
    }
}
