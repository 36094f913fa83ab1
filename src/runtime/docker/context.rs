//! The build context of a project folder: what its `.dockerignore` lets
//! through, packed as a tar while it is sent, never whole in memory.
//!
//! `.dockerignore` is read as Docker reads it: one pattern a line, `#`
//! starts a comment line, blank lines are skipped, each pattern is cleaned
//! (`./a`, `/a` and `a/` all mean `a`) and is relative to the folder;
//! `*` and `?` stop at `/`, `**` crosses directories, `[^…]` is a negated
//! class, `\` escapes; a pattern matches a path when it matches the path
//! or one of its parent directories, and the last pattern that matches
//! decides (`!pattern` lets a path back in). The `Dockerfile` and
//! `.dockerignore` are always sent: the engine needs them (and leaves
//! them out of `COPY` itself when they are ignored).

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use globset::{GlobBuilder, GlobMatcher};
use tokio::sync::mpsc;

/// How much of the tar is sent at once.
const CHUNK: usize = 64 * 1024;
/// Chunks packed ahead of the engine at most.
const AHEAD: usize = 4;

/// Files the engine needs whatever `.dockerignore` says.
const ALWAYS: &[&str] = &["Dockerfile", ".dockerignore"];

/// The patterns of a `.dockerignore`, in order.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    glob: GlobMatcher,
    /// `!pattern`: lets matching paths back in.
    exception: bool,
}

impl DockerIgnore {
    /// The folder's `.dockerignore`; none when it has no such file.
    pub fn of(folder: &Path) -> Result<DockerIgnore, String> {
        match std::fs::read_to_string(folder.join(".dockerignore")) {
            Ok(text) => DockerIgnore::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
            Err(e) => Err(format!("cannot read .dockerignore: {e}")),
        }
    }

    pub fn parse(text: &str) -> Result<DockerIgnore, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            let cleaned = clean(pattern);
            let glob = GlobBuilder::new(&as_glob(&cleaned))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!(".dockerignore line {}: `{line}`: {e}", n + 1))?
                .compile_matcher();
            rules.push(Rule { glob, exception });
        }
        Ok(DockerIgnore { rules })
    }

    /// Whether `path` (relative to the folder, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            let matched = rule.glob.is_match(path)
                || path
                    .match_indices('/')
                    .any(|(i, _)| rule.glob.is_match(&path[..i]));
            if matched {
                excluded = !rule.exception;
            }
        }
        excluded
    }

    /// Whether a pattern may let a path back in under an excluded folder
    /// (then the folder is still looked into).
    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }
}

/// Go's `filepath.Clean` of a pattern, then relative to the folder.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !pattern.starts_with('/') {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// Docker's glob in globset's words: `[^` negates a class, and braces are
/// plain characters.
fn as_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '[' if chars.peek() == Some(&'^') => {
                chars.next();
                out.push_str("[!");
            }
            '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Packs `folder` (what its `.dockerignore` lets through) as a tar on a
/// thread of its own, handing it over in chunks as the receiver takes
/// them; an error ends the stream.
pub fn stream(folder: &Path) -> Result<mpsc::Receiver<io::Result<Bytes>>, String> {
    let ignore = DockerIgnore::of(folder)?;
    let (tx, rx) = mpsc::channel(AHEAD);
    let folder = folder.to_path_buf();
    std::thread::Builder::new()
        .name("switchyard-build-context".into())
        .spawn(move || {
            let mut out = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let packed = pack(&folder, &ignore, &mut out).and_then(|()| out.flush());
            if let Err(error) = packed {
                let _ = tx.blocking_send(Err(error));
            }
        })
        .map_err(|e| format!("cannot start packing the folder: {e}"))?;
    Ok(rx)
}

/// Writes the tar of what `ignore` lets through into `out`.
fn pack(folder: &Path, ignore: &DockerIgnore, out: &mut impl Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let mut entries = std::fs::read_dir(folder.join(&dir))?.collect::<io::Result<Vec<_>>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries.iter().rev() {
            let rel = dir.join(entry.file_name());
            let name = slash_path(&rel);
            let is_dir = entry.file_type()?.is_dir();
            let always = dir.as_os_str().is_empty() && ALWAYS.contains(&name.as_str());
            let excluded = !always && ignore.excludes(&name);
            if is_dir {
                if !excluded || ignore.has_exceptions() {
                    pending.push(rel.clone());
                }
                if excluded {
                    continue;
                }
            } else if excluded {
                continue;
            }
            tar.append_path_with_name(entry.path(), &rel)?;
        }
    }
    tar.into_inner()?.flush()
}

/// A path relative to the folder, `/`-separated, as patterns see it.
fn slash_path(rel: &Path) -> String {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Sends what is written in chunks, waiting while the receiver is behind.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the build context",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_dockers_rules() {
        let ignore = DockerIgnore::parse(
            "# comment\n\
             \n\
             node_modules\n\
             *.log\n\
             /build/\n\
             ./docs/**/*.md\n\
             !docs/keep.md\n\
             secret[0-9].txt\n\
             data/[^a]*\n\
             a{b}\n",
        )
        .expect("parse");
        for (path, excluded) in [
            ("node_modules", true),
            ("node_modules/pkg/index.js", true),
            ("src/node_modules", false),
            ("app.log", true),
            ("logs/app.log", false),
            ("build/out.o", true),
            ("docs/a/b.md", true),
            ("docs/b.md", true),
            ("docs/keep.md", false),
            ("docs/readme.txt", false),
            ("secret1.txt", true),
            ("secretx.txt", false),
            ("data/b.csv", true),
            ("data/a.csv", false),
            ("a{b}", true),
            ("ab", false),
            ("app.py", false),
        ] {
            assert_eq!(ignore.excludes(path), excluded, "{path}");
        }
    }

    #[test]
    fn the_last_matching_pattern_decides() {
        let ignore = DockerIgnore::parse("*\n!src\nsrc/*.tmp\n").expect("parse");
        assert!(ignore.excludes("README.md"));
        assert!(!ignore.excludes("src/app.py"));
        assert!(ignore.excludes("src/x.tmp"));
    }

    fn names(folder: &Path) -> Vec<String> {
        let mut rx = stream(folder).expect("stream");
        let mut bytes = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            bytes.extend_from_slice(&chunk.expect("chunk"));
        }
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_context_holds_what_dockerignore_lets_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("Dockerfile"), "FROM scratch\n").expect("write");
        std::fs::write(
            d.join(".dockerignore"),
            "Dockerfile\n.dockerignore\ntarget\n*.log\n!keep.log\n",
        )
        .expect("write");
        std::fs::create_dir_all(d.join("src")).expect("mkdir");
        std::fs::write(d.join("src/app.py"), "print(1)\n").expect("write");
        std::fs::create_dir_all(d.join("target/debug")).expect("mkdir");
        std::fs::write(d.join("target/debug/big"), vec![0u8; 300_000]).expect("write");
        std::fs::write(d.join("a.log"), "x").expect("write");
        std::fs::write(d.join("keep.log"), "x").expect("write");
        assert_eq!(
            names(d),
            [
                ".dockerignore",
                "Dockerfile",
                "keep.log",
                "src",
                "src/app.py"
            ]
        );
    }

    #[test]
    fn without_dockerignore_everything_is_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
        std::fs::create_dir(dir.path().join("src")).expect("mkdir");
        std::fs::write(dir.path().join("src/app.py"), vec![b'x'; 200_000]).expect("write");
        assert_eq!(names(dir.path()), ["Dockerfile", "src", "src/app.py"]);
    }
}
