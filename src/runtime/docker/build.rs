//! `deploy NAME VERSION ./folder` with a Dockerfile: the folder is sent to
//! the engine as the build context and built into an image.

use std::path::Path;

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use super::{DockerError, Engine};

/// Builds `folder` (its `Dockerfile`) into an image tagged `tag`, handing
/// each line of build output to `show` as it arrives, and returns the
/// image's id. A failed build tags nothing.
pub async fn build_image(
    engine: &Engine,
    folder: &Path,
    tag: &str,
    mut show: impl FnMut(&str),
) -> Result<String, DockerError> {
    let docker = engine.client().await?;
    let context = {
        let owned = folder.to_path_buf();
        let packed = tokio::task::spawn_blocking(move || pack(&owned)).await;
        let context_error = |cause: String| DockerError::Context {
            folder: folder.display().to_string(),
            cause,
        };
        packed
            .map_err(|e| context_error(e.to_string()))?
            .map_err(|e| context_error(e.to_string()))?
    };
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut id = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = &info.stream {
                    show(text);
                }
                if let Some(status) = &info.status {
                    show(&format!("{status}\n"));
                }
                if let Some(aux) = info.aux.and_then(|a| a.id) {
                    id = Some(aux);
                }
            }
            Err(e) => {
                return Err(match engine.error(e) {
                    DockerError::Api(message) => DockerError::Build(message),
                    other => other,
                });
            }
        }
    }
    match id {
        Some(id) => Ok(id),
        None => engine.image_id(tag).await,
    }
}

/// The folder as an uncompressed tar, symbolic links kept as links.
fn pack(folder: &Path) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    tar.append_dir_all(".", folder)?;
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_holds_the_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
        std::fs::create_dir(dir.path().join("src")).expect("mkdir");
        std::fs::write(dir.path().join("src/app.py"), "print(1)\n").expect("write");
        let bytes = pack(dir.path()).expect("pack");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
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
        assert!(names.iter().any(|n| n.ends_with("Dockerfile")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("src/app.py")), "{names:?}");
    }
}
