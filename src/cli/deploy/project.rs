//! `deploy NAME VERSION ./folder`: what the folder holds decides how it
//! runs. A `Dockerfile` is built into `switchyard/NAME:VERSION` and run as
//! containers; a `switchyard.toml` alone runs its command as local
//! processes in the folder; a folder with neither is refused.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use crate::cli::progress::Progress;
use crate::model::{MANIFEST_FILE, Manifest};
use crate::runtime::docker::{Engine, build_image};

/// The file a folder must have to be built into an image.
pub const DOCKERFILE: &str = "Dockerfile";

/// A project folder and how it runs.
#[derive(Debug)]
pub enum Project {
    /// Built from its Dockerfile; the manifest, when there is one, gives
    /// the health check, replicas and environment.
    Image {
        dir: PathBuf,
        manifest: Option<Manifest>,
    },
    /// The manifest's command, run as local processes in `dir`.
    Processes { dir: PathBuf, manifest: Manifest },
}

impl Project {
    /// Looks into `path` (relative to the current directory). With
    /// `as_processes`, a folder with both files runs as processes.
    pub fn open(path: &Path, as_processes: bool) -> anyhow::Result<Self> {
        let here = std::env::current_dir().context("cannot read the current directory")?;
        let dir = here.join(path);
        if !dir.is_dir() {
            bail!(
                "`{}` is not a folder: give a project folder (with a Dockerfile or a {MANIFEST_FILE}), or put a command after `--`",
                path.display()
            );
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let has_dockerfile = dir.join(DOCKERFILE).is_file();
        let manifest = read_manifest(&dir)?;
        match (has_dockerfile, manifest) {
            (true, manifest) if !as_processes => Ok(Project::Image { dir, manifest }),
            (_, Some(manifest)) => Ok(Project::Processes { dir, manifest }),
            (true, None) => bail!(
                "--process runs the command of {MANIFEST_FILE}, and {} has none: add one (`switchyard init NAME` shows an example) or drop --process to build the Dockerfile",
                dir.display()
            ),
            (false, None) => bail!(
                "{} has neither a {DOCKERFILE} nor a {MANIFEST_FILE}, so there is nothing to deploy: \
                 add a {DOCKERFILE} to run it as a container, or a {MANIFEST_FILE} with the command that \
                 runs it as a local process (`switchyard init NAME` makes a folder with both)",
                dir.display()
            ),
        }
    }

    /// A manifest file named on its own: its command runs as processes in
    /// the file's folder.
    pub fn from_manifest_file(file: &Path) -> anyhow::Result<Self> {
        let (dir, manifest) = read_manifest_file(file)?;
        Ok(Project::Processes { dir, manifest })
    }

    pub fn manifest(&self) -> Option<&Manifest> {
        match self {
            Project::Image { manifest, .. } => manifest.as_ref(),
            Project::Processes { manifest, .. } => Some(manifest),
        }
    }
}

/// Reads a manifest file; returns its folder (absolute) and its content.
pub fn read_manifest_file(file: &Path) -> anyhow::Result<(PathBuf, Manifest)> {
    let here = std::env::current_dir().context("cannot read the current directory")?;
    let path = here.join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the manifest {}", path.display()))?;
    let manifest = Manifest::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(here)
        .canonicalize()
        .with_context(|| format!("cannot resolve the folder of {}", path.display()))?;
    Ok((dir, manifest))
}

fn read_manifest(dir: &Path) -> anyhow::Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    let manifest = Manifest::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some(manifest))
}

/// `switchyard/NAME:VERSION`; `+` (build metadata) is not allowed in a
/// tag and becomes `_`.
pub fn image_tag(name: &str, version: &str) -> String {
    format!("switchyard/{name}:{}", version.replace('+', "_"))
}

/// Builds the folder into `tag`, streaming the build's output to stderr,
/// and returns the image id. A failed build deploys nothing.
pub async fn build(engine: &Engine, dir: &Path, tag: &str) -> anyhow::Result<String> {
    eprintln!(
        "building {tag} from {} on the Docker Engine at {}",
        dir.display(),
        engine.host()
    );
    let progress = Progress::start(format!("building {tag}"));
    let mut stderr = std::io::stderr();
    let id = build_image(engine, dir, tag, |text| {
        if progress.is_shown() {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                progress.eprintln(line);
            }
        } else {
            let _ = stderr.write_all(text.as_bytes());
            let _ = stderr.flush();
        }
    })
    .await
    .map_err(|e| anyhow!("{e}\nnothing was deployed"))?;
    drop(progress);
    eprintln!("built {tag} ({id})");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_decides_how_it_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = Project::open(dir.path(), false).expect_err("empty folder");
        let text = empty.to_string();
        assert!(
            text.contains("neither a Dockerfile nor a switchyard.toml"),
            "{text}"
        );
        std::fs::write(dir.path().join(MANIFEST_FILE), "command = [\"./run\"]\n").expect("write");
        assert!(matches!(
            Project::open(dir.path(), false).expect("manifest"),
            Project::Processes { .. }
        ));
        std::fs::write(dir.path().join(DOCKERFILE), "FROM scratch\n").expect("write");
        assert!(matches!(
            Project::open(dir.path(), false).expect("both"),
            Project::Image {
                manifest: Some(_),
                ..
            }
        ));
        assert!(matches!(
            Project::open(dir.path(), true).expect("both, as processes"),
            Project::Processes { .. }
        ));
        std::fs::remove_file(dir.path().join(MANIFEST_FILE)).expect("rm");
        assert!(Project::open(dir.path(), true).is_err());
        assert!(Project::open(&dir.path().join("missing"), false).is_err());
    }

    #[test]
    fn tags_drop_build_metadata_plus() {
        assert_eq!(image_tag("hello", "1.0.0"), "switchyard/hello:1.0.0");
        assert_eq!(
            image_tag("hello", "1.0.0-rc.1+b7"),
            "switchyard/hello:1.0.0-rc.1_b7"
        );
    }
}
