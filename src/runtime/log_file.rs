//! Per-instance log files under `STATE_DIR/logs/SERVICE/VERSION/`.
//!
//! The process appends to `instance-N.log` directly (so it keeps logging
//! while serve restarts). When the file passes the size limit, serve copies
//! it to `instance-N.log.1` and truncates it; appends go on at the start.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The log files of one release.
#[derive(Debug, Clone)]
pub struct LogFiles {
    dir: PathBuf,
}

/// Lines read from one instance's log, and where to continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogChunk {
    pub slot: u32,
    pub lines: Vec<String>,
    /// Byte offset in the current file after the last line returned.
    pub offset: u64,
}

impl LogFiles {
    pub fn new(state_dir: &Path, service: &str, version: &str) -> Self {
        Self {
            dir: state_dir.join("logs").join(service).join(version),
        }
    }

    pub fn path(&self, slot: u32) -> PathBuf {
        self.dir.join(format!("instance-{slot}.log"))
    }

    fn rotated(&self, slot: u32) -> PathBuf {
        self.dir.join(format!("instance-{slot}.log.1"))
    }

    /// Opens (creating) the log for appending, for the process's stdio.
    pub fn open_for_append(&self, slot: u32) -> io::Result<File> {
        std::fs::create_dir_all(&self.dir)?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(slot))
    }

    /// Rotates the log if it is larger than `max_bytes`.
    pub fn rotate_if_larger(&self, slot: u32, max_bytes: u64) -> io::Result<bool> {
        let path = self.path(slot);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len <= max_bytes {
            return Ok(false);
        }
        std::fs::copy(&path, self.rotated(slot))?;
        OpenOptions::new().write(true).open(&path)?.set_len(0)?;
        Ok(true)
    }

    /// The slots that have a log file, in order.
    pub fn slots(&self) -> Vec<u32> {
        let mut slots: Vec<u32> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("instance-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        slots.sort_unstable();
        slots
    }

    /// The last `n` lines (from the rotated file too when needed).
    pub fn tail(&self, slot: u32, n: usize) -> io::Result<LogChunk> {
        let current = std::fs::read(self.path(slot)).unwrap_or_default();
        let offset = current.len() as u64;
        let mut lines = to_lines(&current);
        if lines.len() < n {
            let older = std::fs::read(self.rotated(slot)).unwrap_or_default();
            let mut older = to_lines(&older);
            older.append(&mut lines);
            lines = older;
        }
        let skip = lines.len().saturating_sub(n);
        Ok(LogChunk {
            slot,
            lines: lines.split_off(skip),
            offset,
        })
    }

    /// Complete lines written after `offset` (from the start if the file
    /// was rotated since).
    pub fn since(&self, slot: u32, offset: u64) -> io::Result<LogChunk> {
        let mut file = match File::open(self.path(slot)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(LogChunk {
                    slot,
                    lines: vec![],
                    offset: 0,
                });
            }
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let start = if offset > len { 0 } else { offset };
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        Ok(LogChunk {
            slot,
            lines: to_lines(&buf[..complete]),
            offset: start + complete as u64,
        })
    }
}

fn to_lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tail_reads_across_rotation_and_since_follows_new_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = LogFiles::new(dir.path(), "hello", "1.0.0");
        let mut f = logs.open_for_append(0).expect("open");
        for i in 0..10 {
            writeln!(f, "line {i}").expect("write");
        }
        assert!(logs.rotate_if_larger(0, 10).expect("rotate"));
        writeln!(f, "line 10").expect("write");
        let tail = logs.tail(0, 3).expect("tail");
        assert_eq!(tail.lines, vec!["line 8", "line 9", "line 10"]);
        writeln!(f, "line 11").expect("write");
        let next = logs.since(0, tail.offset).expect("since");
        assert_eq!(next.lines, vec!["line 11"]);
        assert_eq!(logs.slots(), vec![0]);
    }
}
