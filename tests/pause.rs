//! Pause and resume end to end: held requests, the one in flight, the
//! maximum hold, and a pause that survives `kill -9` of serve.

mod support;

use std::time::Duration;

use support::Env;
use support::load::spawn_get;

#[tokio::test]
async fn pause_holds_new_requests_and_resume_lets_every_one_through() {
    let env = Env::start().await;
    env.deploy("hub", "1.0.0", &[], &["--latency-ms", "3000"])
        .await
        .ok();
    let path = "/services/hub/";
    // One request in flight when the pause comes: it finishes.
    let in_flight = spawn_get(env.proxy(), path);
    env.wait_in_flight("hub", "1.0.0", 1).await;
    let run = env.cli(&["pause", "hub"]).await.ok();
    assert!(run.stdout.contains("held up to 30s"), "{}", run.stdout);
    assert_eq!(
        env.in_flight("hub", "1.0.0").await,
        1,
        "the request (3 s long) is still in flight once paused"
    );
    let held: Vec<_> = (0..20).map(|_| spawn_get(env.proxy(), path)).collect();
    let (status, _, body) = in_flight
        .await
        .expect("in-flight task")
        .expect("the request in flight");
    assert_eq!(status, 200, "the request in flight finishes: {body}");
    // Every new one waits at the gate, and none reaches the release.
    env.wait_held("hub", 20).await;
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "a held request got through"
    );
    assert_eq!(env.in_flight("hub", "1.0.0").await, 0);
    // Pausing twice is refused and changes nothing.
    let twice = env.cli(&["pause", "hub"]).await.failed();
    assert!(twice.stderr.contains("paused already"), "{}", twice.stderr);
    assert_eq!(held_now(&env).await, 20);

    let run = env.cli(&["resume", "hub"]).await.ok();
    assert!(
        run.stdout
            .contains("traffic of hub resumed: 20 held requests let through"),
        "{}",
        run.stdout
    );
    for h in held {
        let (status, _, body) = h.await.expect("held task").expect("a held request");
        assert_eq!(status, 200, "none is lost: {body}");
    }
    // Nothing is left to resume.
    let again = env.cli(&["resume", "hub"]).await.failed();
    assert!(
        again.stderr.contains("nothing to resume"),
        "{}",
        again.stderr
    );

    // A request held past the maximum hold gets 503; serve's log says
    // why, under the request id the page shows.
    env.cli(&["pause", "hub", "--max-hold", "300ms"]).await.ok();
    let late = spawn_get(env.proxy(), path);
    env.wait_held("hub", 1).await;
    let (status, _, body) = late.await.expect("late task").expect("an answer");
    assert_eq!(status, 503, "{body}");
    let id = body
        .lines()
        .find_map(|l| l.strip_prefix("Request id: "))
        .unwrap_or_else(|| panic!("no request id: {body}"));
    let hint = env.hint_for(id).await;
    assert!(hint.contains("hub is paused"), "{hint}");
    let run = env.cli(&["resume", "hub"]).await.ok();
    assert!(run.stdout.contains("0 held requests"), "{}", run.stdout);
    assert_eq!(env.get(path).await.0, 200);
}

/// Requests held at hub's gate now (`held` in `ls --json`).
async fn held_now(env: &Env) -> u64 {
    env.ls().await[0]["paused"]["held"]
        .as_u64()
        .expect("hub is paused")
}

#[tokio::test]
async fn a_pause_survives_a_restart_of_serve_until_resumed() {
    let mut env = Env::start().await;
    env.deploy("hub", "1.0.0", &[], &[]).await.ok();
    env.cli(&["pause", "hub", "--max-hold", "2m"]).await.ok();
    let before = env.ls().await;
    let since = before[0]["paused"]["since"].clone();
    assert!(since.as_u64().is_some_and(|s| s > 0), "{before:#}");
    assert_eq!(before[0]["paused"]["max_hold_ms"], 120_000, "{before:#}");

    env.kill9_and_restart().await;
    env.all_ready(Duration::from_secs(30)).await;

    // Still paused, since the same moment, with the same maximum hold.
    let ls = env.ls().await;
    assert_eq!(ls[0]["paused"]["since"], since, "{ls:#}");
    assert_eq!(ls[0]["paused"]["max_hold_ms"], 120_000, "{ls:#}");
    let text = env.cli(&["ls"]).await.ok();
    assert!(
        text.stdout.contains("hub is paused since")
            && text.stdout.contains("held up to 2m")
            && text.stdout.contains("switchyard resume hub"),
        "{}",
        text.stdout
    );

    // A new request is held, and goes when resumed.
    let held = spawn_get(env.proxy(), "/services/hub/");
    env.wait_held("hub", 1).await;
    assert!(
        !held.is_finished(),
        "a request got through the restored pause"
    );
    let run = env.cli(&["resume", "hub"]).await.ok();
    assert!(
        run.stdout
            .contains("traffic of hub resumed: 1 held requests let through"),
        "{}",
        run.stdout
    );
    let (status, _, body) = held.await.expect("held task").expect("the held request");
    assert_eq!(status, 200, "{body}");
    let ls = env.ls().await;
    assert!(ls[0].get("paused").is_none(), "{ls:#}");

    // Resumed is resumed for good: another restart does not pause again.
    env.kill9_and_restart().await;
    env.all_ready(Duration::from_secs(30)).await;
    assert!(env.ls().await[0].get("paused").is_none());
    let (status, _, body) = env.get("/services/hub/").await;
    assert_eq!(status, 200, "{body}");
}
