//! What a test needs beyond this crate (a Docker Engine, `python3`,
//! `sqlite3`, …): a test whose component is missing fails and says what
//! to install, unless the run opts out of that component by name:
//! `SWITCHYARD_TEST_SKIP=docker,python3 cargo test` skips those tests and
//! says so. CI opts out of nothing.

/// The variable listing the components a run may do without.
pub const SKIP_VAR: &str = "SWITCHYARD_TEST_SKIP";

/// Every component a test may need, by the name the skip list uses.
pub const KNOWN: &[&str] = &[
    "docker",
    "python3",
    "sqlite3",
    "httpbin",
    "etcd",
    "pebble",
    "chromium",
    "prometheus",
    "openssl",
    "curl",
    "redis",
];

/// Whether the test may go on: true when `probe` found `name`. When it
/// did not, the test fails, unless the run opts out of `name`: then it
/// says why it is skipped and this returns false (the test returns).
pub fn available(test: &str, name: &str, probe: Result<(), String>) -> bool {
    let skipped = skip_list();
    let error = match probe {
        Ok(()) => return true,
        Err(error) => error,
    };
    if skipped.iter().any(|s| s == name) {
        eprintln!("skipped {test}: it needs {name} ({error}), and {SKIP_VAR} lets it go without");
        return false;
    }
    panic!(
        "{test} needs {name}, which is missing: {error}\n\
         Install it (.ci/run shows how), or run with {SKIP_VAR}={name} to skip the tests that need it."
    );
}

/// Whether `openssl` runs here (it has `version`, not `--version`).
pub fn openssl(test: &str) -> bool {
    let probe = match std::process::Command::new("openssl")
        .arg("version")
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`openssl version` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `openssl`: {e}")),
    };
    available(test, "openssl", probe)
}

/// Whether the program `name` runs here (`name --version` succeeds);
/// see [`available`].
pub fn command(test: &str, name: &str) -> bool {
    let probe = match std::process::Command::new(name).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{name} --version` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{name}`: {e}")),
    };
    available(test, name, probe)
}

/// Whether `etcdctl` runs here (it has `version`, not `--version`); it
/// comes with etcd, so a run that does without etcd skips it too.
pub fn etcdctl(test: &str) -> bool {
    let probe = match std::process::Command::new("etcdctl")
        .arg("version")
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`etcdctl version` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `etcdctl` ({e}): it comes with etcd")),
    };
    available(test, "etcd", probe)
}

/// Whether Debian's `redis-server` and `redis-cli` run here (apt packages
/// redis-server and redis-tools); see [`available`].
pub fn redis(test: &str) -> bool {
    let probe =
        ["redis-server", "redis-cli"]
            .iter()
            .try_for_each(|name| {
                match std::process::Command::new(name).arg("--version").output() {
                    Ok(out) if out.status.success() => Ok(()),
                    Ok(_) => Err(format!("`{name} --version` failed")),
                    Err(e) => Err(format!(
                        "cannot run `{name}` ({e}): `apt-get install redis-server redis-tools`"
                    )),
                }
            });
    available(test, "redis", probe)
}

/// The components this run may do without; a name no test knows is a
/// mistake, so it fails rather than skip nothing.
fn skip_list() -> Vec<String> {
    let list: Vec<String> = std::env::var(SKIP_VAR)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for name in &list {
        assert!(
            KNOWN.contains(&name.as_str()),
            "{SKIP_VAR} names `{name}`, which no test needs; the components are {}",
            KNOWN.join(", ")
        );
    }
    list
}
