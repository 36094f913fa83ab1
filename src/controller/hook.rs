//! Running a release's hooks (`backup`, `migrate`, `migrate_down`). A
//! process release's hook runs as a local process in the release's working
//! directory; a container release's as a one-off container of the
//! release's image (see [`crate::runtime::docker::HookJob`]). Either way it
//! gets the release's environment, its output is captured, and a non-zero
//! exit is an error that carries the end of that output. An external
//! release runs elsewhere: Switchyard cannot run its hooks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::Controller;
use crate::model::{ContainerSpec, Release, RunSpec};
use crate::runtime::docker::{HookEnd, HookJob};

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
    #[error("hooks.{hook} of {version} could not run in a container of {image}: {cause}")]
    Container {
        hook: &'static str,
        version: String,
        image: String,
        cause: String,
    },
    #[error(
        "hooks.{hook} of {version}: an external release runs elsewhere, so Switchyard cannot run its hooks; run them where it runs, or register it as a process or container release"
    )]
    External { hook: &'static str, version: String },
}

impl Controller {
    /// Runs `command` as hook `hook` of `release`, with the release's
    /// environment and `SWITCHYARD_SERVICE`, `SWITCHYARD_VERSION`,
    /// `SWITCHYARD_HOOK` and `SWITCHYARD_SCHEMA` (the release's schema).
    /// An empty command does nothing.
    pub(super) async fn run_hook(
        &self,
        release: &Release,
        hook: &'static str,
        command: &[String],
        timeout: Duration,
    ) -> Result<HookRun, HookError> {
        let version = release.version.to_string();
        let vars = hook_vars(release, hook);
        match &release.spec.run {
            RunSpec::External { .. } => Err(HookError::External { hook, version }),
            _ if command.is_empty() => Ok(HookRun {
                output: String::new(),
            }),
            RunSpec::Process { env, cwd, .. } => {
                run_process(hook, &version, command, env, cwd, vars, timeout).await
            }
            RunSpec::Container(spec) => {
                let job = HookJob {
                    state_dir: &self.runtime.settings().state_dir,
                    service: release.service.as_str(),
                    version: &version,
                    hook,
                    command,
                    env: vars,
                    timeout,
                    keep: MAX_OUTPUT,
                };
                self.run_container(spec, &job).await
            }
        }
    }

    async fn run_container(
        &self,
        spec: &ContainerSpec,
        job: &HookJob<'_>,
    ) -> Result<HookRun, HookError> {
        let hook = job.hook;
        let version = job.version.to_owned();
        match self.runtime.run_container_hook(spec, job).await {
            Ok(HookEnd::Exited { code: 0, output }) => Ok(HookRun {
                output: keep_end(output),
            }),
            Ok(HookEnd::Exited { code, output }) => Err(HookError::Failed {
                hook,
                version,
                status: format!("exit status: {code}"),
                output: keep_end(output),
            }),
            Ok(HookEnd::TimedOut) => Err(HookError::TimedOut {
                hook,
                version,
                secs: job.timeout.as_secs(),
            }),
            Err(error) => Err(HookError::Container {
                hook,
                version,
                image: spec.image.clone(),
                cause: error.to_string(),
            }),
        }
    }
}

/// What every hook gets besides the release's environment.
fn hook_vars(release: &Release, hook: &str) -> Vec<(String, String)> {
    let schema = release
        .spec
        .versioning
        .schema_version
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    vec![
        (
            "SWITCHYARD_SERVICE".into(),
            release.service.as_str().to_owned(),
        ),
        ("SWITCHYARD_VERSION".into(), release.version.to_string()),
        ("SWITCHYARD_HOOK".into(), hook.to_owned()),
        ("SWITCHYARD_SCHEMA".into(), schema),
    ]
}

/// A process release's hook: a local process in the release's working
/// directory, its environment added to serve's.
async fn run_process(
    hook: &'static str,
    version: &str,
    command: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
    vars: Vec<(String, String)>,
    timeout: Duration,
) -> Result<HookRun, HookError> {
    let version = version.to_owned();
    let Some((program, args)) = command.split_first() else {
        return Ok(HookRun {
            output: String::new(),
        });
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .envs(env)
        .envs(vars)
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
    let output = keep_end(output);
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

/// The last [`MAX_OUTPUT`] bytes of `output`, marked with `…` when cut.
fn keep_end(output: String) -> String {
    if output.len() <= MAX_OUTPUT {
        return output;
    }
    let mut cut = output.len() - MAX_OUTPUT;
    while !output.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &output[cut..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_of_long_output_is_kept() {
        assert_eq!(keep_end("short".into()), "short");
        let long = format!("{}é{}", "a".repeat(MAX_OUTPUT), "z".repeat(MAX_OUTPUT - 1));
        let kept = keep_end(long);
        assert!(kept.starts_with('…') && kept.ends_with('z'), "{kept}");
        assert!(kept.len() <= MAX_OUTPUT + '…'.len_utf8());
    }
}
