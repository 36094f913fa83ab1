//! `deploy NAME VERSION ./folder` with a Dockerfile: the folder (what its
//! `.dockerignore` lets through) is streamed to the engine as the build
//! context and built into an image.

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
    let context = super::context::stream(folder).map_err(|cause| DockerError::Context {
        folder: folder.display().to_string(),
        cause,
    })?;
    let context = futures_util::stream::unfold(context, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_try_stream(context)));
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
