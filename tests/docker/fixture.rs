//! Docker fixtures for `tests/docker.rs`: the engine (a test without it
//! fails, unless the run opts out of `docker`), images built here from local files (the engine has
//! no registry to pull from), and [`Docked`], a test env that removes every
//! container and image its test made when dropped, pass or fail.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use switchyard::runtime::docker::{Engine, build_image, label};

use crate::support::{Env, HELLO, component};

/// The Docker Engine; a missing one fails the test unless
/// `SWITCHYARD_TEST_SKIP` names `docker` (then `None`, and the test
/// returns).
pub async fn engine(test: &str) -> Option<Engine> {
    let engine = Engine::from_env();
    let probe = engine.client().await.map(|_| ()).map_err(|e| e.to_string());
    component::available(test, "docker", probe).then_some(engine)
}

/// A name no other test (nor another run of this one) uses: image tags
/// are global to the engine.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An [`Env`] whose drop also removes, by id or by tag, the containers
/// labelled with its state directory and the images its test tracked.
pub struct Docked {
    env: Option<Env>,
    pub engine: Engine,
    state_dir: PathBuf,
    images: Mutex<Vec<String>>,
}

impl Docked {
    pub async fn start(engine: Engine, extra: &[&str]) -> Docked {
        let env = Env::start_with(extra).await;
        Docked {
            state_dir: env.state_dir.clone(),
            env: Some(env),
            engine,
            images: Mutex::new(Vec::new()),
        }
    }

    /// Removes `tag` when the test ends.
    pub fn track_image(&self, tag: &str) {
        self.images.lock().expect("images").push(tag.to_owned());
    }

    /// This env's containers (of one version, if given), running or not.
    pub async fn containers(&self, version: Option<&str>) -> Vec<ContainerSummary> {
        list_containers(&self.engine, &self.state_dir, version).await
    }

    /// Ids of this env's running containers of `version`.
    pub async fn running_ids(&self, version: &str) -> BTreeSet<String> {
        self.containers(Some(version))
            .await
            .into_iter()
            .filter(|c| matches!(c.state, Some(ContainerSummaryStateEnum::RUNNING)))
            .filter_map(|c| c.id)
            .collect()
    }

    /// Builds `FROM scratch` + `hello-server` and the shared libraries it
    /// needs; its CMD listens on every interface at `$PORT`.
    pub async fn hello_image(&self) -> String {
        let dir = self.dir.path().join(unique("hello-image"));
        hello_context(&dir, "CMD [\"/hello-server\", \"--host\", \"0.0.0.0\"]\n");
        let tag = format!("switchyard-test/{}", unique("hello"));
        self.build(&dir, &tag).await;
        tag
    }

    /// Builds a base image with the `python3` of this machine and its
    /// standard library, for `switchyard init --base-image`.
    pub async fn python_base_image(&self) -> String {
        let dir = self.dir.path().join(unique("python-image"));
        let exe = python_context(&dir);
        let bin = exe.parent().expect("python's folder").display().to_string();
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM scratch\nCOPY root/ /\nENV PATH={bin}:/usr/local/bin:/usr/bin:/bin\n"),
        )
        .expect("write Dockerfile");
        let tag = format!("switchyard-test/{}", unique("python"));
        self.build(&dir, &tag).await;
        tag
    }

    async fn build(&self, dir: &Path, tag: &str) {
        self.track_image(tag);
        let mut output = String::new();
        build_image(&self.engine, dir, tag, |line| output.push_str(line))
            .await
            .unwrap_or_else(|e| panic!("building {tag} failed: {e}\n{output}"));
    }
}

impl std::ops::Deref for Docked {
    type Target = Env;
    fn deref(&self) -> &Env {
        self.env.as_ref().expect("env")
    }
}

impl std::ops::DerefMut for Docked {
    fn deref_mut(&mut self) -> &mut Env {
        self.env.as_mut().expect("env")
    }
}

impl Drop for Docked {
    fn drop(&mut self) {
        // serve first (its own checks included), so that it makes no new
        // container after the sweep; its instances must be stopped by then.
        let orphaned = self.env.as_ref().is_some_and(|env| env.serve.is_none());
        let serve_checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(self.env.take());
        }));
        let engine = self.engine.clone();
        let state_dir = self.state_dir.clone();
        let images = std::mem::take(&mut *self.images.lock().unwrap_or_else(|p| p.into_inner()));
        // Drop cannot await; clean up on a runtime of its own.
        let cleaned = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime")
                .block_on(async {
                    let running = running_containers(&engine, &state_dir).await;
                    remove_all(engine, state_dir, images).await;
                    running
                })
        })
        .join();
        let Ok(running) = cleaned else {
            eprintln!("cleaning up the test's containers and images panicked");
            return;
        };
        if let Err(panic) = serve_checked {
            std::panic::resume_unwind(panic);
        }
        if !running.is_empty() && !orphaned && !std::thread::panicking() {
            panic!("containers outlived their serve: {running:?}");
        }
    }
}

/// Names of this env's containers still running.
async fn running_containers(engine: &Engine, state_dir: &Path) -> Vec<String> {
    if engine.client().await.is_err() {
        return Vec::new();
    }
    list_containers(engine, state_dir, None)
        .await
        .into_iter()
        .filter(|c| matches!(c.state, Some(ContainerSummaryStateEnum::RUNNING)))
        .map(|c| c.names.map(|n| n.join(",")).or(c.id).unwrap_or_default())
        .collect()
}

async fn list_containers(
    engine: &Engine,
    state_dir: &Path,
    version: Option<&str>,
) -> Vec<ContainerSummary> {
    let mut labels = vec![format!("{}={}", label::STATE_DIR, state_dir.display())];
    if let Some(v) = version {
        labels.push(format!("{}={v}", label::VERSION));
    }
    let filters = HashMap::from([("label".to_owned(), labels)]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let docker = engine.client().await.expect("docker client");
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
}

/// Removes this env's containers (found by its unique state-dir label),
/// then the images the test built, by tag.
async fn remove_all(engine: Engine, state_dir: PathBuf, images: Vec<String>) {
    let Ok(docker) = engine.client().await else {
        return;
    };
    for c in list_containers(&engine, &state_dir, None).await {
        if let Some(id) = c.id {
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            let _ = docker.remove_container(&id, Some(options)).await;
        }
    }
    for tag in images {
        let options = RemoveImageOptionsBuilder::new().force(true).build();
        let _ = docker.remove_image(&tag, Some(options), None).await;
    }
}

/// A build folder: `hello-server`, its libraries under `root/`, and a
/// Dockerfile ending with `last_line`.
///
/// `root/` carries the folder's own path, so no two tests' images share
/// a layer: removing one test's image (its drop does) can never take a
/// cached layer from under another test's build running at that moment
/// (the engine then fails that build with "unknown parent image ID").
pub fn hello_context(dir: &Path, last_line: &str) {
    std::fs::create_dir_all(dir).expect("context folder");
    copy_with_libraries(Path::new(HELLO), &dir.join("root"));
    std::fs::write(dir.join("root/.context"), dir.display().to_string())
        .expect("write the context's mark");
    std::fs::copy(HELLO, dir.join("hello-server")).expect("copy hello-server");
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM scratch\nCOPY root/ /\nCOPY hello-server /hello-server\n{last_line}"),
    )
    .expect("write Dockerfile");
}

/// A build folder like [`hello_context`]'s, with this machine's `/bin/sh`
/// (and its libraries) in the image too, for hooks that run shell
/// commands.
pub fn hello_shell_context(dir: &Path, last_line: &str) {
    hello_context(dir, &format!("COPY sh /bin/sh\n{last_line}"));
    let sh = std::fs::canonicalize("/bin/sh").expect("this machine's /bin/sh");
    std::fs::copy(&sh, dir.join("sh")).expect("copy sh");
    copy_with_libraries(&sh, &dir.join("root"));
}

/// Copies the shared libraries `ldd` lists for `binary` under `root`, at
/// their own paths.
pub fn copy_with_libraries(binary: &Path, root: &Path) {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("run ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let target = root.join(path.trim_start_matches('/'));
        if !target.exists() {
            std::fs::create_dir_all(target.parent().expect("library folder")).expect("mkdir");
            std::fs::copy(path, &target).expect("copy library");
        }
    }
}

/// Lays out python3 (as its own path and as `python3` beside it), its
/// standard library without tests and tools, and the libraries they need
/// under `dir/root`. Returns the path of `python3` inside.
fn python_context(dir: &Path) -> PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, sysconfig, os; print(os.path.realpath(sys.executable)); print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let exe = PathBuf::from(lines.next().expect("python3's path"));
    let stdlib = PathBuf::from(lines.next().expect("python3's stdlib"));
    let root = dir.join("root");
    let inside = |p: &Path| root.join(p.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(inside(exe.parent().expect("bin"))).expect("mkdir bin");
    std::fs::copy(&exe, inside(&exe)).expect("copy python");
    let python3 = exe.with_file_name("python3");
    if python3 != exe {
        std::fs::copy(&exe, inside(&python3)).expect("copy python3");
    }
    copy_with_libraries(&exe, &root);
    copy_tree(&stdlib, &inside(&stdlib), &root);
    // Its own layer, as in `hello_context`.
    std::fs::write(root.join(".context"), dir.display().to_string())
        .expect("write the context's mark");
    python3
}

/// Copies a standard library folder, leaving out what a server does not
/// import, and the libraries of its extension modules.
fn copy_tree(from: &Path, to: &Path, root: &Path) {
    const SKIP: &[&str] = &[
        "test",
        "tests",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "__pycache__",
        "site-packages",
        "dist-packages",
    ];
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read stdlib").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if SKIP.contains(&name.as_str()) || name.starts_with("config-") {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            copy_tree(&path, &to.join(&name), root);
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy stdlib file");
            if name.ends_with(".so") {
                copy_with_libraries(&path, root);
            }
        }
    }
}
