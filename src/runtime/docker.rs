//! Releases as containers on the Docker Engine, through its API (`bollard`)
//! on the local socket, or wherever `DOCKER_HOST` points.
//!
//! Every container Switchyard makes carries labels: the state directory of
//! the serve that made it, the service, version and instance slot, and a
//! fingerprint of the release's spec. A restarted serve finds its
//! containers by these labels, adopts the ones that should run and removes
//! the rest; a container without its state directory's label is never
//! touched. A hook's one-off container has the hook's name where an
//! instance has its slot.

mod build;
mod container;
mod context;
mod hook;
pub(super) mod sweep;

pub use build::build_image;
pub(super) use container::{ContainerRun, InstanceLabels, start_or_adopt};
pub(super) use hook::run_hook;
pub use hook::{HookEnd, HookJob};
pub(super) use sweep::remove_strays;

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use tokio::sync::OnceCell;

/// Label keys on every container Switchyard makes.
pub mod label {
    /// The state directory of the serve that made the container.
    pub const STATE_DIR: &str = "switchyard.state-dir";
    pub const SERVICE: &str = "switchyard.service";
    pub const VERSION: &str = "switchyard.version";
    /// The instance slot (0, 1, …).
    pub const INSTANCE: &str = "switchyard.instance";
    /// A fingerprint of the release's run spec: only a container made from
    /// the same spec is adopted.
    pub const SPEC: &str = "switchyard.spec";
    /// The port the service listens on inside the container.
    pub const PORT: &str = "switchyard.port";
    /// On a hook's one-off container, in place of an instance slot: the
    /// hook's name. No instance adopts it, and a restarted serve's sweep
    /// leaves it while it runs (a migration is not cut short) and removes
    /// it once it has ended.
    pub const HOOK: &str = "switchyard.hook";
}

/// Where the engine is when `DOCKER_HOST` is not set.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How long the first request to the engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error)]
pub enum DockerError {
    #[error(
        "Docker Engine not reachable at {host}: {cause}. Start Docker, or point DOCKER_HOST at a running engine"
    )]
    Unreachable { host: String, cause: String },
    #[error(
        "image `{image}` is not on the Docker Engine at {host}; build it (`docker build -t {image} .`) or load it there first"
    )]
    NoImage { image: String, host: String },
    #[error("the Docker Engine refused: {0}")]
    Api(String),
    #[error("cannot read the build folder {folder}: {cause}")]
    Context { folder: String, cause: String },
    #[error("the image build failed: {0}")]
    Build(String),
}

/// The Docker Engine this process talks to. Connecting is lazy and is
/// retried on the next use until it succeeds, so serve starts (and runs
/// process releases) without Docker.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    client: OnceCell<Docker>,
}

impl Engine {
    /// The engine at `DOCKER_HOST`, or the local socket.
    pub fn from_env() -> Self {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        Self {
            inner: Arc::new(Inner {
                host,
                client: OnceCell::new(),
            }),
        }
    }

    /// `unix:///var/run/docker.sock`, `tcp://…`: where the engine is.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// A client whose API version both sides speak.
    pub async fn client(&self) -> Result<Docker, DockerError> {
        let host = self.host();
        self.inner
            .client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_host(host).map_err(|e| self.error(e))?;
                match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
                    Ok(Ok(docker)) => Ok(docker),
                    Ok(Err(e)) => Err(self.unreachable(e)),
                    Err(_) => Err(DockerError::Unreachable {
                        host: host.to_owned(),
                        cause: format!("no answer within {CONNECT_TIMEOUT:?}"),
                    }),
                }
            })
            .await
            .cloned()
    }

    fn unreachable(&self, e: bollard::errors::Error) -> DockerError {
        DockerError::Unreachable {
            host: self.host().to_owned(),
            cause: e.to_string(),
        }
    }

    /// An engine error as the user should read it: a refusal by the engine
    /// says what it refused; anything else means the engine is not there.
    pub(crate) fn error(&self, e: bollard::errors::Error) -> DockerError {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError { message, .. } => DockerError::Api(message),
            E::DockerStreamError { error } => DockerError::Build(error),
            E::JsonDataError { .. } | E::JsonSerdeError { .. } => DockerError::Api(e.to_string()),
            other => self.unreachable(other),
        }
    }

    /// The id of a local image, or a clear error when it is missing.
    pub async fn image_id(&self, image: &str) -> Result<String, DockerError> {
        let docker = self.client().await?;
        match docker.inspect_image(image).await {
            Ok(inspect) => inspect
                .id
                .ok_or_else(|| DockerError::Api(format!("image `{image}` has no id"))),
            Err(e) if is_not_found(&e) => Err(DockerError::NoImage {
                image: image.to_owned(),
                host: self.host().to_owned(),
            }),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// Whether the engine answered 404 (no such container or image).
fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// FNV-1a, 64 bits: a fingerprint that stays the same across builds of
/// Switchyard (std's hasher makes no such promise).
pub(crate) fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(fingerprint(""), "cbf29ce484222325");
        assert_eq!(fingerprint("a"), "af63dc4c8601ec8c");
        assert_ne!(fingerprint("spec 1"), fingerprint("spec 2"));
    }

    #[tokio::test]
    async fn an_engine_that_is_not_there_says_where_it_was_looked_for() {
        let engine = Engine {
            inner: Arc::new(Inner {
                host: "unix:///nonexistent/docker.sock".into(),
                client: OnceCell::new(),
            }),
        };
        let Err(error) = engine.client().await else {
            panic!("connected to a socket that does not exist");
        };
        let text = error.to_string();
        assert!(
            text.starts_with("Docker Engine not reachable at unix:///nonexistent/docker.sock"),
            "{text}"
        );
    }
}
