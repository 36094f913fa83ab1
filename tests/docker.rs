//! Releases as containers on the Docker Engine, releases from project
//! folders, and `init`, through the real binary.
//!
//! The engine has no registry: every image is built here from local files
//! (`FROM scratch` with `hello-server` and the libraries `ldd` lists, or
//! with this machine's python3). A test that needs Docker or python3 fails
//! without it, unless `SWITCHYARD_TEST_SKIP` names it. Every
//! container and image a test makes is removed when it ends, pass or fail.

mod support;

#[path = "docker/fixture.rs"]
mod fixture;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use fixture::{Docked, engine, hello_context, hello_shell_context, unique};
use support::listing::release;
use support::load::{failures, gets, spawn_get};
use support::{Env, HELLO, component};

/// The last line of a Dockerfile built on `hello-server`.
const HELLO_CMD: &str = "CMD [\"/hello-server\", \"--host\", \"0.0.0.0\"]\n";

/// The ids `ls --json` shows for a release's containers.
fn container_ids(ls: &Value, service: &str, version: &str) -> BTreeSet<String> {
    release(ls, service, version)["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["container"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_between_container_releases_fails_no_request_and_drains_first() {
    let Some(engine) = engine("blue_green_between_container_releases").await else {
        return;
    };
    // The old containers take 2 s per request, ignore SIGTERM, and the
    // engine kills them 1 s after the stop: a request still in flight then
    // would fail. None fails only if serve drains the old release before it
    // stops its containers.
    let env = Docked::start(engine, &["--stop-grace", "1s"]).await;
    let image = env.hello_image().await;
    let (blue, green) = ("1.0.0", "2.0.0");
    env.cli(&[
        "deploy",
        "web",
        blue,
        "--image",
        &image,
        "--health",
        "/healthz",
        "--replicas",
        "2",
        "--",
        "/hello-server",
        "--host",
        "0.0.0.0",
        "--latency-ms",
        "2000",
        "--ignore-sigterm",
    ])
    .await
    .ok();
    // Green also gets the settings passed through to the engine.
    let data = env.dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let mount = format!("{}:/data:ro", data.display());
    let green_args = [
        "deploy",
        "web",
        green,
        "--image",
        &image,
        "--health",
        "/healthz",
        "--replicas",
        "2",
        "--standby",
        "--env",
        "GREETING=hi",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--volume",
        &mount,
    ];
    let run = env.cli(&green_args).await.ok();
    assert!(run.stdout.contains("as standby"), "{}", run.stdout);
    let docker = env.engine.client().await.expect("docker");
    for id in env.running_ids(green).await {
        let c = docker.inspect_container(&id, None).await.expect("inspect");
        let host = c.host_config.expect("host config");
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.binds, Some(vec![mount.clone()]));
        let env_vars = c.config.and_then(|c| c.env).expect("env");
        assert!(env_vars.contains(&"GREETING=hi".to_owned()), "{env_vars:?}");
    }
    let ls = env.ls().await;
    assert_eq!(release(&ls, "web", blue)["kind"], "container");
    assert_eq!(container_ids(&ls, "web", blue), env.running_ids(blue).await);
    assert_eq!(container_ids(&ls, "web", green).len(), 2);

    let load = gets(
        env.proxy(),
        "/services/web/",
        8,
        std::time::Instant::now() + Duration::from_secs(180),
    );
    env.eventually(
        "blue answers under load",
        Duration::from_secs(30),
        || async { env.get("/services/web/").await.1 == blue },
    )
    .await;
    env.cli(&["assign", "web", green, "--yes"]).await.ok();
    // A slow request on blue's own address is in flight while blue is
    // killed: once the load's last requests to blue are done, the one
    // request in flight to blue is this one.
    env.eventually(
        "blue's share of the load answered",
        Duration::from_secs(30),
        || async { env.in_flight("web", blue).await == 0 },
    )
    .await;
    let slow = spawn_get(env.proxy(), &format!("/services/web_{blue}/"));
    env.wait_in_flight("web", blue, 1).await;
    env.cli(&["kill", "web", blue]).await.ok();
    assert!(
        env.containers(Some(blue)).await.is_empty(),
        "blue's containers are removed once kill returns"
    );
    let (status, version, body) = slow
        .await
        .expect("slow request task")
        .expect("slow request");
    assert_eq!((status, version.as_str()), (200, blue), "{body}");
    env.eventually("green answers", Duration::from_secs(30), || async {
        env.get("/services/web/").await.1 == green
    })
    .await;
    let answers = load.finish().await;
    let failed = failures(&answers);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    let by = |v: &str| {
        answers
            .iter()
            .filter(|a| matches!(a, Ok((_, got, _)) if got == v))
            .count()
    };
    assert!(
        by(blue) > 0 && by(green) > 0,
        "blue {} green {}",
        by(blue),
        by(green)
    );
    assert_eq!(env.running_ids(green).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_at_start_is_a_crash_loop_and_gets_no_traffic() {
    let Some(engine) = engine("a_container_that_exits_at_start").await else {
        return;
    };
    let env = Docked::start(engine, &[]).await;
    let image = env.hello_image().await;
    let run = env
        .cli(&[
            "deploy",
            "crashy",
            "1.0.0",
            "--image",
            &image,
            "--health",
            "/healthz",
            "--",
            "/hello-server",
            "--exit-immediately",
            "--exit-code",
            "7",
        ])
        .await
        .failed();
    assert!(run.stderr.contains("crash loop"), "{}", run.stderr);
    assert!(run.stderr.contains("code 7"), "{}", run.stderr);
    assert!(
        run.stderr.contains("exiting at once"),
        "the error shows the container's last output: {}",
        run.stderr
    );
    assert_eq!(env.get("/services/crashy/").await.0, 404);
    assert_eq!(env.ls().await, serde_json::json!([]));
    assert!(
        env.containers(None).await.is_empty(),
        "no container is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_restarted_serve_adopts_the_same_containers() {
    let Some(engine) = engine("after_kill_9_a_restarted_serve_adopts").await else {
        return;
    };
    let mut env = Docked::start(engine, &[]).await;
    let image = env.hello_image().await;
    env.cli(&[
        "deploy",
        "web",
        "1.0.0",
        "--image",
        &image,
        "--health",
        "/healthz",
        "--replicas",
        "2",
    ])
    .await
    .ok();
    let before = container_ids(&env.ls().await, "web", "1.0.0");
    assert_eq!(before.len(), 2);
    assert_eq!(before, env.running_ids("1.0.0").await);

    // A deploy that never commits: its container is still unhealthy when
    // serve dies, so a restarted serve must remove it.
    let mut pending = env
        .cli_command(&[
            "deploy",
            "web",
            "2.0.0",
            "--image",
            &image,
            "--health",
            "/healthz",
            "--ready-timeout",
            "300s",
            "--",
            "/hello-server",
            "--host",
            "0.0.0.0",
            "--fail-health-for",
            "600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pending deploy");
    env.eventually(
        "the pending deploy's container runs",
        Duration::from_secs(60),
        || async { !env.running_ids("2.0.0").await.is_empty() },
    )
    .await;

    env.kill9().await;
    let _ = tokio::time::timeout(Duration::from_secs(30), pending.wait()).await;
    assert_eq!(
        env.running_ids("1.0.0").await,
        before,
        "containers outlive serve"
    );

    env.launch("127.0.0.1:0", "127.0.0.1:0").await;
    let ls = env.ls().await;
    assert_eq!(
        container_ids(&ls, "web", "1.0.0"),
        before,
        "the same containers"
    );
    let instances = release(&ls, "web", "1.0.0")["instances"].clone();
    for instance in instances.as_array().expect("instances") {
        assert_eq!(instance["adopted"], true, "{instance}");
    }
    env.eventually(
        "main answers as before",
        Duration::from_secs(30),
        || async { env.get("/services/web/").await.1 == "1.0.0" },
    )
    .await;
    let (status, version, _) = env.get("/services/web_1.0.0/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
    env.eventually(
        "the uncommitted release's container is removed",
        Duration::from_secs(60),
        || async { env.containers(Some("2.0.0")).await.is_empty() },
    )
    .await;
    assert_eq!(env.running_ids("1.0.0").await, before);
    assert_eq!(
        env.ls().await[0]["releases"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_with_a_dockerfile_is_built_and_runs_and_a_failing_build_changes_nothing() {
    let Some(engine) = engine("a_folder_with_a_dockerfile").await else {
        return;
    };
    let env = Docked::start(engine, &[]).await;
    let name = unique("built");
    let tag = format!("switchyard/{name}:1.0.0");
    env.track_image(&tag);

    let broken = env.dir.path().join("broken");
    std::fs::create_dir(&broken).expect("mkdir");
    std::fs::write(
        broken.join("Dockerfile"),
        "FROM scratch\nCOPY missing.txt /\n",
    )
    .expect("write");
    let run = env
        .cli(&["deploy", &name, "1.0.0", "broken"])
        .await
        .failed();
    assert!(
        run.stderr.contains("the image build failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was deployed"),
        "{}",
        run.stderr
    );
    assert_eq!(env.ls().await, serde_json::json!([]));

    let app = env.dir.path().join("app");
    hello_context(&app, HELLO_CMD);
    std::fs::write(
        app.join("switchyard.toml"),
        format!("name = \"{name}\"\nreplicas = 2\n[health]\npath = \"/healthz\"\n"),
    )
    .expect("write manifest");
    let run = env.cli(&["deploy", &name, "1.0.0", "app"]).await.ok();
    assert!(
        run.stderr.contains(&format!("building {tag}")) && run.stderr.contains("Step 1/"),
        "the build's output is shown: {}",
        run.stderr
    );
    let (status, version, body) = env.get(&format!("/services/{name}/")).await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");
    let ls = env.ls().await;
    let built = release(&ls, &name, "1.0.0");
    assert_eq!(built["kind"], "container");
    assert_eq!(
        container_ids(&ls, &name, "1.0.0").len(),
        2,
        "replicas from the manifest"
    );
    env.engine
        .image_id(&tag)
        .await
        .expect("the image is tagged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_build_sends_only_what_dockerignore_lets_through() {
    let Some(engine) = engine("a_folder_build_sends_only_what_dockerignore_lets_through").await
    else {
        return;
    };
    let env = Docked::start(engine, &[]).await;
    let name = unique("ignored");
    let tag = format!("switchyard/{name}:1.0.0");
    env.track_image(&tag);

    // The image copies the whole context into /context.
    let app = env.dir.path().join("app");
    hello_context(&app, &format!("COPY . /context/\n{HELLO_CMD}"));
    std::fs::write(
        app.join(".dockerignore"),
        "# what the image must not get\nsecret.txt\ntarget\n*.log\n!keep.log\n",
    )
    .expect("write .dockerignore");
    std::fs::write(app.join("secret.txt"), "s3cret").expect("write");
    std::fs::write(app.join("a.log"), "noise").expect("write");
    std::fs::write(app.join("keep.log"), "kept").expect("write");
    std::fs::create_dir_all(app.join("target/debug")).expect("mkdir");
    std::fs::write(app.join("target/debug/big"), vec![0u8; 8 * 1024 * 1024]).expect("write");
    env.cli(&["deploy", &name, "1.0.0", "app", "--health", "/healthz"])
        .await
        .ok();
    let (status, _, body) = env.get(&format!("/services/{name}/")).await;
    assert_eq!(status, 200, "{body}");

    // What the image holds, read from a container of it that never runs.
    let created = docker(&["create", &tag]);
    let container = created.trim();
    let present = |path: &str| {
        std::process::Command::new("docker")
            .args(["cp", &format!("{container}:/context/{path}"), "-"])
            .output()
            .expect("docker cp")
            .status
            .success()
    };
    let seen: Vec<(&str, bool)> = ["secret.txt", "a.log", "keep.log", "target", "hello-server"]
        .into_iter()
        .map(|p| (p, present(p)))
        .collect();
    docker(&["rm", container]);
    assert_eq!(
        seen,
        [
            ("secret.txt", false),
            ("a.log", false),
            ("keep.log", true),
            ("target", false),
            ("hello-server", true)
        ]
    );

    // A Dockerfile that copies an ignored file fails to build.
    let bad = env.dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    std::fs::write(bad.join("Dockerfile"), "FROM scratch\nCOPY secret.txt /\n").expect("write");
    std::fs::write(bad.join(".dockerignore"), "secret.txt\n").expect("write");
    std::fs::write(bad.join("secret.txt"), "s3cret").expect("write");
    let bad_name = unique("ignored-bad");
    env.track_image(&format!("switchyard/{bad_name}:1.0.0"));
    let run = env
        .cli(&["deploy", &bad_name, "1.0.0", "bad"])
        .await
        .failed();
    assert!(
        run.stderr.contains("the image build failed"),
        "{}",
        run.stderr
    );
}

/// Runs the docker CLI, returning its stdout; panics when it fails.
fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_with_only_a_manifest_runs_as_processes_in_that_folder() {
    let env = Env::start().await;
    let app = env.dir.path().join("svc");
    std::fs::create_dir(&app).expect("mkdir");
    std::fs::write(
        app.join("switchyard.toml"),
        format!(
            r#"command = ["sh", "-c", 'echo "cwd=$(pwd) greeting=$GREETING"; exec {HELLO} --port "$PORT"']
replicas = 2
[env]
GREETING = "hi"
[health]
path = "/healthz"
"#
        ),
    )
    .expect("write manifest");
    env.cli(&["deploy", "svc", "1.0.0", "svc"]).await.ok();
    let ls = env.ls().await;
    let svc = release(&ls, "svc", "1.0.0");
    assert_eq!(svc["kind"], "process");
    assert_eq!(svc["instances"].as_array().map(Vec::len), Some(2));
    let (status, version, _) = env.get("/services/svc/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
    let logs = env.cli(&["logs", "svc", "1.0.0", "-n", "50"]).await.ok();
    let cwd = app.canonicalize().expect("canonical");
    let expected = format!("cwd={} greeting=hi", cwd.display());
    assert!(
        logs.stdout.contains(&expected),
        "{expected} not in:\n{}",
        logs.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_with_neither_dockerfile_nor_manifest_is_refused() {
    let env = Env::start().await;
    std::fs::create_dir(env.dir.path().join("empty")).expect("mkdir");
    let run = env.cli(&["deploy", "svc", "1.0.0", "empty"]).await.failed();
    assert!(
        run.stderr
            .contains("neither a Dockerfile nor a switchyard.toml")
            && run.stderr.contains("add a Dockerfile"),
        "{}",
        run.stderr
    );
    assert_eq!(env.ls().await, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_docker_container_releases_fail_clearly_and_processes_still_deploy() {
    let env = Env::start().await;
    let nowhere = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let run = env
        .cli_with(&nowhere, &["deploy", "web", "1.0.0", "--image", "hello:1"])
        .await
        .failed();
    assert!(
        run.stderr
            .contains("Docker Engine not reachable at unix:///nonexistent/docker.sock"),
        "{}",
        run.stderr
    );
    let args = [
        "deploy", "web", "1.0.0", "--health", "/healthz", "--", HELLO, "--port", "{port}",
    ];
    env.cli_with(&nowhere, &args).await.ok();
    assert_eq!(env.get("/services/web/").await.0, 200);
}

/// `switchyard init NAME` in the test's folder; returns the project folder.
async fn init(env: &Env, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let mut args = vec!["init", name];
    args.extend_from_slice(extra);
    let run = env.cli(&args).await.ok();
    assert!(run.stdout.contains("switchyard deploy"), "{}", run.stdout);
    let dir = env.dir.path().join(name);
    for file in ["app.py", "switchyard.toml", "Dockerfile", "README.md"] {
        assert!(dir.join(file).is_file(), "init made {file}");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_then_deploy_as_processes_answers_through_the_proxy() {
    if !component::command("init_then_deploy_as_processes", "python3") {
        return;
    }
    let env = Env::start().await;
    init(&env, "greeter", &[]).await;
    env.cli(&["deploy", "greeter", "1.0.0", "greeter", "--process"])
        .await
        .ok();
    let (status, version, body) = env.get("/services/greeter/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["service"], "greeter");
    assert_eq!(body["version"], "1.0.0");
    assert_eq!(body["message"], "Hello from greeter 1.0.0");
    assert_eq!(
        release(&env.ls().await, "greeter", "1.0.0")["kind"],
        "process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_then_deploy_as_a_container_answers_through_the_proxy() {
    let Some(engine) = engine("init_then_deploy_as_a_container").await else {
        return;
    };
    if !component::command("init_then_deploy_as_a_container", "python3") {
        return;
    }
    let env = Docked::start(engine, &[]).await;
    let base = env.python_base_image().await;
    let name = unique("greeter");
    env.track_image(&format!("switchyard/{name}:1.0.0"));
    let dir = init(&env, &name, &["--base-image", &base]).await;
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains(&format!("FROM {base}\n")),
        "{dockerfile}"
    );

    env.cli(&["deploy", &name, "1.0.0", &name]).await.ok();
    let (status, version, body) = env.get(&format!("/services/{name}/")).await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["service"], name.as_str());
    assert_eq!(
        release(&env.ls().await, &name, "1.0.0")["kind"],
        "container"
    );
    let logs = env.cli(&["logs", &name, "1.0.0", "-n", "50"]).await.ok();
    assert!(
        logs.stdout.contains("listening on 0.0.0.0:8080"),
        "the container's output is in its log:\n{}",
        logs.stdout
    );
}

/// This env's hook containers (labelled `switchyard.hook`), running or
/// not (or only the running ones).
async fn hook_containers_where(env: &Docked, running_only: bool) -> Vec<String> {
    env.containers(None)
        .await
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .is_some_and(|l| l.contains_key(switchyard::runtime::docker::label::HOOK))
        })
        .filter(|c| {
            !running_only
                || matches!(
                    c.state,
                    Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                )
        })
        .filter_map(|c| c.id)
        .collect()
}

async fn hook_containers(env: &Docked) -> Vec<String> {
    hook_containers_where(env, false).await
}

/// The version that answers `/services/NAME/`.
async fn main_answer(env: &Env, name: &str) -> String {
    env.get(&format!("/services/{name}/")).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_releases_run_their_hooks_in_one_off_containers_of_their_image() {
    let Some(engine) = engine("container_releases_run_their_hooks").await else {
        return;
    };
    let mut env = Docked::start(engine, &[]).await;
    let name = unique("hub");
    let data = env.dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    // Three project folders (hello-server and sh in the image), each a
    // schema step. 1.0.1's hooks write into the mounted folder; 1.0.2's
    // backup hangs while data/hang exists, and its migrate fails.
    let releases = [
        ("1.0.0", "1.0.0", r#""1.0.0", "1.0.1""#, ""),
        (
            "1.0.1",
            "1.0.1",
            r#""1.0.1", "1.0.2""#,
            r#"[hooks]
backup = ["/bin/sh", "-c", "echo backing up for $SWITCHYARD_VERSION; echo $SWITCHYARD_HOOK > /data/backup"]
migrate = ["/bin/sh", "-c", "echo migrating to $SWITCHYARD_SCHEMA; echo a warning >&2; echo $SWITCHYARD_HOOK $SWITCHYARD_SERVICE $SWITCHYARD_VERSION $SWITCHYARD_SCHEMA $GREETING > /data/migrated"]
migrate_down = ["/bin/sh", "-c", "echo down > /data/down"]
"#,
        ),
        (
            "1.0.2",
            "1.0.2",
            r#""1.0.2""#,
            r#"[hooks]
backup = ["/bin/sh", "-c", "if [ -e /data/hang ]; then exec /hello-server --port 9; fi; echo backed up"]
migrate = ["/bin/sh", "-c", "echo about to fail; echo the detail >&2; exit 3"]
"#,
        ),
    ];
    for (version, schema, runs_on, hooks) in releases {
        env.track_image(&format!("switchyard/{name}:{version}"));
        let dir = env.dir.path().join(format!("hub-{version}"));
        hello_shell_context(&dir, HELLO_CMD);
        std::fs::write(
            dir.join("switchyard.toml"),
            format!(
                r#"name = "{name}"
version = "{version}"
api_versions = ["v1"]
schema_version = "{schema}"
runs_on_schemas = [{runs_on}]
[env]
GREETING = "hi"
[health]
path = "/healthz"
{hooks}"#
            ),
        )
        .expect("write manifest");
    }
    env.cli(&["deploy", &name, "1.0.0", "hub-1.0.0"]).await.ok();
    for version in ["1.0.1", "1.0.2"] {
        let folder = format!("hub-{version}");
        let run = env
            .cli(&["release", "add", &folder, "--volume", "./data:/data"])
            .await
            .ok();
        assert!(
            run.stdout.contains(&format!(
                "registered {name} {version}: API v1, schema {version}"
            )),
            "{}",
            run.stdout
        );
    }

    // The upgrade runs 1.0.1's backup and migrate as containers of its
    // image, with its env and mount, and keeps their output.
    let run = env
        .cli(&["upgrade", &name, "--to", "1.0.1", "--json"])
        .await
        .ok();
    let report: Value = serde_json::from_str(&run.stdout).expect("upgrade --json is JSON");
    let hooks = &report["steps"][0]["hooks"];
    assert_eq!(hooks[0][0], "backup", "{report:#}");
    assert!(
        hooks[0][1]
            .as_str()
            .is_some_and(|o| o.contains("backing up for 1.0.1")),
        "{report:#}"
    );
    assert_eq!(hooks[1][0], "migrate", "{report:#}");
    let migrate_output = hooks[1][1].as_str().expect("the migrate hook's output");
    assert!(
        migrate_output.contains("migrating to 1.0.1") && migrate_output.contains("a warning"),
        "stdout and stderr are kept: {report:#}"
    );
    let read = |file: &str| {
        std::fs::read_to_string(data.join(file))
            .unwrap_or_else(|e| panic!("the hook wrote no {file}: {e}"))
    };
    assert_eq!(read("backup"), "backup\n");
    assert_eq!(read("migrated"), format!("migrate {name} 1.0.1 1.0.1 hi\n"));
    assert_eq!(main_answer(&env, &name).await, "1.0.1");
    assert_eq!(
        hook_containers(&env).await,
        Vec::<String>::new(),
        "every hook container is removed"
    );

    // A hook that runs past the time limit is killed and removed; nothing
    // moves.
    std::fs::write(data.join("hang"), "").expect("write hang");
    let run = env
        .cli(&["upgrade", &name, "--to", "1.0.2", "--hook-timeout", "2s"])
        .await
        .failed();
    assert!(
        run.stderr
            .contains("hooks.backup of 1.0.2 did not finish within 2 s and was killed"),
        "{}",
        run.stderr
    );
    assert!(hook_containers(&env).await.is_empty());
    assert_eq!(main_answer(&env, &name).await, "1.0.1");

    // serve dies while a hook runs: the restarted serve neither adopts
    // its container nor cuts it short, and removes it once it has ended.
    let mut upgrade = env
        .cli_command(&["upgrade", &name, "--to", "1.0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn upgrade");
    env.eventually("the backup hook runs", Duration::from_secs(60), || async {
        !hook_containers_where(&env, true).await.is_empty()
    })
    .await;
    let hook = hook_containers(&env).await;
    env.kill9_and_restart().await;
    let _ = tokio::time::timeout(Duration::from_secs(30), upgrade.wait()).await;
    env.eventually(
        "the restarted serve has swept",
        Duration::from_secs(60),
        || async {
            env.serve_log()
                .contains("a hook container of an earlier serve still runs")
        },
    )
    .await;
    let docker = env.engine.client().await.expect("docker");
    let state = docker
        .inspect_container(&hook[0], None)
        .await
        .expect("the hook container is still there")
        .state
        .and_then(|s| s.running);
    assert_eq!(state, Some(true), "the sweep leaves a running hook alone");
    let ls = env.ls().await;
    let instances: usize = ls[0]["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| r["instances"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(instances, 2, "no instance adopted the hook: {ls:#}");
    docker
        .kill_container(
            &hook[0],
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("end the hook");
    env.eventually(
        "the ended hook's container is removed",
        Duration::from_secs(60),
        || async { hook_containers(&env).await.is_empty() },
    )
    .await;
    std::fs::remove_file(data.join("hang")).expect("rm hang");

    // A failing hook stops the upgrade with its output; nothing moves.
    let run = env.cli(&["upgrade", &name, "--to", "1.0.2"]).await.failed();
    assert!(
        run.stderr
            .contains("hooks.migrate of 1.0.2 exited with exit status: 3")
            && run.stderr.contains("about to fail")
            && run.stderr.contains("the detail"),
        "{}",
        run.stderr
    );
    assert!(hook_containers(&env).await.is_empty());
    assert_eq!(main_answer(&env, &name).await, "1.0.1");
    assert_eq!(read("migrated"), format!("migrate {name} 1.0.1 1.0.1 hi\n"));
    let ls = env.ls().await;
    assert_eq!(
        ls[0]["releases"]
            .as_array()
            .map(|r| r.iter().map(|r| r["version"].clone()).collect::<Vec<_>>()),
        Some(vec![Value::from("1.0.0"), Value::from("1.0.1")]),
        "1.0.2 was never started: {ls:#}"
    );
}
