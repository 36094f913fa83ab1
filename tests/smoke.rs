//! The shortest path through the real binary: serve, deploy, proxy, ls.

mod support;

use support::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_release_is_main_and_answers_at_both_addresses() {
    let env = Env::start().await;
    env.deploy("hello", "1.0.0", &[], &[]).await.ok();
    let (status, version, body) = env.get("/services/hello/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");
    let (status, version, _) = env.get("/services/hello_1.0.0/").await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"));
    let ls = env.ls().await;
    assert_eq!(ls[0]["main"], "1.0.0");
    assert_eq!(ls[0]["releases"][0]["role"], "main");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_get_port_env_and_working_directory() {
    let env = Env::start().await;
    let bin_dir = std::path::Path::new(support::HELLO)
        .parent()
        .expect("binary dir")
        .to_str()
        .expect("utf-8 path")
        .to_owned();
    // A relative command resolves against --cwd; PORT and --env reach the
    // process; its output lands in the release's log.
    env.cli(&[
        "deploy",
        "envy",
        "1.0.0",
        "--health",
        "/healthz",
        "--cwd",
        &bin_dir,
        "--env",
        "GREETING=hi there",
        "--",
        "sh",
        "-c",
        "echo \"greeting=$GREETING port=$PORT cwd=$(pwd)\"; exec ./hello-server --port \"$PORT\"",
    ])
    .await
    .ok();
    let ls = env.ls().await;
    let port = ls[0]["releases"][0]["instances"][0]["addr"]
        .as_str()
        .expect("instance address")
        .rsplit_once(':')
        .expect("host:port")
        .1
        .to_owned();
    let logs = env.cli(&["logs", "envy", "1.0.0", "-n", "100"]).await.ok();
    let expected = format!("greeting=hi there port={port} cwd={bin_dir}");
    assert!(
        logs.stdout.contains(&expected),
        "{expected} not in:\n{}",
        logs.stdout
    );
    let (status, _, _) = env.get("/services/envy/").await;
    assert_eq!(status, 200);
}
