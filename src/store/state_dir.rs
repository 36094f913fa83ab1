//! The state directory, held by one serve at a time.
//!
//! Before it touches anything else, `serve` takes an exclusive `flock` on
//! `serve.lock` in its state directory and writes its pid there; a second
//! serve of the same directory stops at once, naming that pid (two serves
//! would adopt, and then stop, each other's instances). The lock belongs
//! to the open file, not to the process: a handover passes the file's
//! descriptor to the new serve, which then holds the lock when the old one
//! exits, and writes its own pid.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use super::{StoreError, StoreResult};

/// The lock file in the state directory.
pub const LOCK_FILE: &str = "serve.lock";
/// The instances' logs, under the state directory: a sign that a serve
/// ran releases here.
const LOGS: &str = "logs";

/// A state directory this process holds the lock of.
#[derive(Debug)]
pub struct StateDir {
    /// Absolute, symbolic links resolved: instances carry it as their mark.
    path: PathBuf,
    lock: File,
    /// What shows that a serve used the directory before this one (its
    /// lock file, instance logs); `None` for a new directory.
    used_before: Option<String>,
}

impl StateDir {
    /// Creates the directory if needed and takes its lock; fails at once
    /// when another serve holds it.
    pub fn lock(path: &Path) -> StoreResult<Self> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(path).map_err(open_error)?;
        let path = std::fs::canonicalize(path).map_err(open_error)?;
        let lock_path = path.join(LOCK_FILE);
        let lock_error = |source| StoreError::Lock {
            path: lock_path.display().to_string(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        let (lock, created) = match options.clone().create_new(true).open(&lock_path) {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                (options.open(&lock_path).map_err(lock_error)?, false)
            }
            Err(e) => return Err(lock_error(e)),
        };
        match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(StoreError::InUse {
                    path: path.display().to_string(),
                    holder: holder(&lock),
                });
            }
            Err(e) => return Err(lock_error(e.into())),
        }
        let mut signs = Vec::new();
        if !created {
            signs.push(format!("the lock file {LOCK_FILE} of an earlier serve"));
        }
        if path.join(LOGS).exists() {
            signs.push(format!("instance logs in {LOGS}/"));
        }
        let dir = Self {
            path,
            lock,
            used_before: (!signs.is_empty()).then(|| signs.join(" and ")),
        };
        dir.write_pid()?;
        Ok(dir)
    }

    /// Takes over the lock that the serve handing over passed: `lock` must
    /// be the open lock file of the directory at `path`.
    pub fn take_over(path: &Path, lock: OwnedFd) -> StoreResult<Self> {
        let lock = File::from(lock);
        let path = std::fs::canonicalize(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let lock_path = path.join(LOCK_FILE);
        let lock_error = |source| StoreError::Lock {
            path: lock_path.display().to_string(),
            source,
        };
        let expected = std::fs::metadata(&lock_path).map_err(lock_error)?;
        let got = lock.metadata().map_err(lock_error)?;
        if (expected.dev(), expected.ino()) != (got.dev(), got.ino()) {
            return Err(lock_error(io::Error::other(
                "the serve handing over passed another file as the state directory's lock; \
                 is it running with another --state-dir?",
            )));
        }
        // The lock belongs to this open file already: taking it again only
        // confirms that.
        flock(&lock, FlockOperation::NonBlockingLockExclusive).map_err(|e| lock_error(e.into()))?;
        let dir = Self {
            path,
            lock,
            used_before: Some("the serve that handed over".into()),
        };
        dir.write_pid()?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What shows that a serve used the directory before this one.
    pub fn used_before(&self) -> Option<&str> {
        self.used_before.as_deref()
    }

    /// The open lock file, to pass on in a handover.
    pub fn lock_fd(&self) -> BorrowedFd<'_> {
        self.lock.as_fd()
    }

    /// Writes this process's pid into the lock file, for the message a
    /// second serve prints (again after a handover that failed).
    pub fn write_pid(&self) -> StoreResult<()> {
        let pid = format!("{}\n", std::process::id());
        self.lock
            .set_len(0)
            .and_then(|()| self.lock.write_all_at(pid.as_bytes(), 0))
            .map_err(|source| StoreError::Lock {
                path: self.path.join(LOCK_FILE).display().to_string(),
                source,
            })
    }
}

/// `pid 1234`, as the lock file names the serve holding it.
fn holder(mut lock: &File) -> String {
    let mut text = String::new();
    let _ = lock.read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("pid {pid}"),
        Err(_) => "its pid is not written yet".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_the_same_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = StateDir::lock(dir.path()).expect("first lock");
        assert_eq!(first.used_before(), None, "a new directory");
        let Err(StoreError::InUse { holder, .. }) = StateDir::lock(dir.path()) else {
            panic!("a second lock of a held directory was granted");
        };
        assert_eq!(holder, format!("pid {}", std::process::id()));
        drop(first);
        let again = StateDir::lock(dir.path()).expect("free once the holder let go");
        assert!(again.used_before().is_some_and(|s| s.contains(LOCK_FILE)));
    }

    #[test]
    fn a_passed_lock_file_keeps_the_directory_held() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = StateDir::lock(dir.path()).expect("lock");
        let passed = first.lock_fd().try_clone_to_owned().expect("dup");
        let second = StateDir::take_over(dir.path(), passed).expect("take over");
        drop(first);
        assert!(
            matches!(StateDir::lock(dir.path()), Err(StoreError::InUse { .. })),
            "the lock went with the passed file"
        );
        drop(second);
        StateDir::lock(dir.path()).expect("free once the last holder let go");

        let other = tempfile::tempdir().expect("temp dir");
        let other_lock = StateDir::lock(other.path()).expect("lock");
        let wrong = other_lock.lock_fd().try_clone_to_owned().expect("dup");
        assert!(StateDir::take_over(dir.path(), wrong).is_err());
    }
}
