//! A small file system of its own (tmpfs) that a test can fill up: a real
//! full disk under serve's state directory. Mounting needs root, which
//! the tests have here; without it the test fails saying so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a fresh temp dir; unmounted when dropped (drop it
/// after whatever holds files in it, e.g. declare it before the [`Env`]).
///
/// [`Env`]: super::Env
pub struct Tmpfs {
    /// The mount point, removed once unmounted (fields drop after `drop`).
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `8m`).
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().canonicalize().expect("canonical temp dir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (the test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file of zeros until the file system is full; returns its
    /// path (remove it to make room again).
    pub fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
        // The last partial page too.
        while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file in it: detach it now, it goes
            // once that lets go.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
