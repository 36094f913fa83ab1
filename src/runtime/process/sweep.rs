//! After a restart: instance processes that no record names.
//!
//! An instance is recorded in the state database as it starts, and a
//! restarted serve adopts it by that record. One that started but was
//! never recorded (serve died in between, say) still carries its marks in
//! its environment: it is found here, so that it is stopped rather than
//! left running unmanaged beside the instance started in its place.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{mark, stat};
use crate::store::InstanceRecord;

/// A live instance process of this state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub pid: u32,
    /// Its start time, which tells it from a later process with its pid.
    pub ticks: u64,
    /// `SERVICE VERSION instance N`, as its marks say.
    pub instance: String,
}

/// The instance processes of `state_dir` that no record names (by pid and
/// start time).
pub fn unrecorded(state_dir: &Path, records: &[InstanceRecord]) -> Vec<Marked> {
    let recorded: HashSet<(u32, u64)> = records.iter().map(|r| (r.pid, r.start_ticks)).collect();
    marked(state_dir)
        .into_iter()
        .filter(|p| !recorded.contains(&(p.pid, p.ticks)))
        .collect()
}

/// Every live process that leads its own process group, as each instance
/// does, and whose environment marks it as an instance started for
/// `state_dir` (what an instance starts inherits its marks, but stays in
/// its group and is stopped with it). Processes whose environment cannot
/// be read (another user's) are not ours.
pub fn marked(state_dir: &Path) -> Vec<Marked> {
    let mut wanted = format!("{}=", mark::STATE_DIR).into_bytes();
    wanted.extend_from_slice(state_dir.as_os_str().as_bytes());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&wanted.as_slice()) {
            continue;
        }
        let value = |name: &str| {
            vars.iter().find_map(|kv| {
                kv.strip_prefix(name.as_bytes())
                    .and_then(|rest| rest.strip_prefix(b"="))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let Some(slot) = value(mark::INSTANCE) else {
            continue;
        };
        let Some(stat) = stat(pid).filter(|s| s.group == pid) else {
            continue;
        };
        found.push(Marked {
            pid,
            ticks: stat.ticks,
            instance: format!(
                "{} {} instance {slot}",
                value(mark::SERVICE).unwrap_or_default(),
                value(mark::VERSION).unwrap_or_default()
            ),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// `sh -c script` with the marks of an instance of `dir`.
    fn marked_shell(dir: &Path, script: &str, group_of_its_own: bool) -> Child {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .env(mark::STATE_DIR, dir)
            .env(mark::SERVICE, "hello")
            .env(mark::VERSION, "1.0.0")
            .env(mark::INSTANCE, "0")
            .stdin(Stdio::null());
        if group_of_its_own {
            cmd.process_group(0);
        }
        cmd.spawn().expect("spawn sh")
    }

    #[test]
    fn finds_the_leaders_of_marked_groups_that_no_record_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The leader starts a sleep, which inherits the marks in its group.
        let mut leader = marked_shell(dir.path(), "sleep 30 & wait", true);
        let mut in_our_group = marked_shell(dir.path(), "exec sleep 30", false);
        let pid = leader.id();
        let ticks = super::super::start_ticks(pid).expect("alive");
        let children = format!("/proc/{pid}/task/{pid}/children");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&children)
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "the leader started no sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            marked(dir.path()),
            vec![Marked {
                pid,
                ticks,
                instance: "hello 1.0.0 instance 0".into()
            }],
            "only the leader of its own group"
        );
        let record = InstanceRecord {
            service: "hello".into(),
            version: "1.0.0".into(),
            slot: 0,
            pid,
            start_ticks: ticks,
            port: 1,
        };
        assert!(unrecorded(dir.path(), &[record]).is_empty());
        assert_eq!(unrecorded(dir.path(), &[]).len(), 1);
        assert!(marked(Path::new("/another/state")).is_empty());
        super::super::kill_group(pid, nix::sys::signal::Signal::SIGKILL);
        for child in [&mut leader, &mut in_our_group] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
