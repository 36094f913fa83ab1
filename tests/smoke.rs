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
