//! Pause and resume end to end: held requests, the one in flight, the
//! maximum hold, and a pause that survives `kill -9` of serve.

mod support;

use std::time::Duration;

use support::Env;

#[tokio::test]
async fn pause_holds_new_requests_and_resume_lets_every_one_through() {
    let env = Env::start().await;
    env.deploy("hub", "1.0.0", &[], &["--latency-ms", "600"])
        .await
        .ok();
    let url = format!("{}/services/hub/", env.proxy());
    let send = |http: reqwest::Client, url: String| {
        tokio::spawn(async move {
            let sent = http.get(&url).send();
            let r = tokio::time::timeout(Duration::from_secs(30), sent)
                .await
                .expect("answered within 30 s")
                .expect("no transport error");
            (r.status().as_u16(), std::time::Instant::now())
        })
    };
    // One request in flight when the pause comes: it finishes.
    let in_flight = send(env.http.clone(), url.clone());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let run = env.cli(&["pause", "hub"]).await.ok();
    assert!(run.stdout.contains("held up to 30s"), "{}", run.stdout);
    let paused_at = std::time::Instant::now();
    let held: Vec<_> = (0..20)
        .map(|_| send(env.http.clone(), url.clone()))
        .collect();
    let (status, _) = in_flight.await.expect("in-flight task");
    assert_eq!(status, 200, "the request in flight finishes");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "a held request got through"
    );
    // Pausing twice is refused and changes nothing.
    let twice = env.cli(&["pause", "hub"]).await.failed();
    assert!(twice.stderr.contains("paused already"), "{}", twice.stderr);

    let resumed_at = std::time::Instant::now();
    let run = env.cli(&["resume", "hub"]).await.ok();
    assert!(
        run.stdout
            .contains("traffic of hub resumed: 20 held requests let through"),
        "{}",
        run.stdout
    );
    for h in held {
        let (status, done) = h.await.expect("held task");
        assert_eq!(status, 200, "none is lost");
        assert!(done > resumed_at && done - paused_at >= Duration::from_millis(1000));
    }
    // Nothing is left to resume.
    let again = env.cli(&["resume", "hub"]).await.failed();
    assert!(
        again.stderr.contains("nothing to resume"),
        "{}",
        again.stderr
    );

    // A request held past the maximum hold gets 503 saying why.
    env.cli(&["pause", "hub", "--max-hold", "300ms"]).await.ok();
    let started = std::time::Instant::now();
    let (status, _, body) = env.get("/services/hub/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("paused"), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let run = env.cli(&["resume", "hub"]).await.ok();
    assert!(run.stdout.contains("0 held requests"), "{}", run.stdout);
    assert_eq!(env.get("/services/hub/").await.0, 200);
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
    let request = env.http.get(format!("{}/services/hub/", env.proxy()));
    let held = tokio::spawn(async move {
        let r = tokio::time::timeout(Duration::from_secs(60), request.send())
            .await
            .expect("answered within 60 s")
            .expect("no transport error");
        r.status().as_u16()
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
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
    assert_eq!(held.await.expect("held task"), 200);
    let ls = env.ls().await;
    assert!(ls[0].get("paused").is_none(), "{ls:#}");

    // Resumed is resumed for good: another restart does not pause again.
    env.kill9_and_restart().await;
    env.all_ready(Duration::from_secs(30)).await;
    assert!(env.ls().await[0].get("paused").is_none());
    let (status, _, body) = env.get("/services/hub/").await;
    assert_eq!(status, 200, "{body}");
}
