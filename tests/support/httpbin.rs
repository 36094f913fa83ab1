//! httpbin (a third-party WSGI application, from PyPI) under gunicorn,
//! installed into a virtual environment under the build's target folder:
//! made once (under a lock, so tests running at once wait for the first),
//! kept for later runs. It needs `python3` with `venv` and, the first
//! time, PyPI (the component `httpbin`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::component;

/// Where the virtual environment lives.
pub const VENV: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/httpbin-venv");

/// What is installed into it (the top-level packages, pinned).
const PACKAGES: &[&str] = &["httpbin==0.10.4", "gunicorn==23.0.0"];

/// The command that runs httpbin on `{port}` (for `switchyard deploy …
/// -- COMMAND`), or `None` when the test is skipped for a missing
/// component.
pub fn command(test: &str) -> Option<Vec<String>> {
    if !component::command(test, "python3") {
        return None;
    }
    if !component::available(test, "httpbin", ensure_venv()) {
        return None;
    }
    let gunicorn = Path::new(VENV).join("bin/gunicorn");
    Some(vec![
        gunicorn.display().to_string(),
        "--bind".into(),
        "127.0.0.1:{port}".into(),
        "--workers".into(),
        "2".into(),
        "--timeout".into(),
        "120".into(),
        "httpbin:app".into(),
    ])
}

/// The venv's python, for what a test checks with it.
pub fn python() -> PathBuf {
    Path::new(VENV).join("bin/python3")
}

/// Makes the venv unless a complete one is there.
fn ensure_venv() -> Result<(), String> {
    let venv = Path::new(VENV);
    let ready = venv.join(".switchyard-ready");
    let parent = venv.parent().expect("the venv has a parent folder");
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let lock = File::create(parent.join("httpbin-venv.lock"))
        .map_err(|e| format!("cannot create the venv's lock file: {e}"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("cannot lock the venv: {e}"))?;
    let wanted = PACKAGES.join(" ");
    if std::fs::read_to_string(&ready).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(venv))
        .map_err(|e| format!("{e} (Debian: apt-get install python3-venv)"))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PACKAGES))
    .map_err(|e| format!("{e} (it needs PyPI the first time)"))?;
    std::fs::write(&ready, wanted).map_err(|e| format!("cannot mark the venv ready: {e}"))
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
