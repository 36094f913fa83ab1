//! Versioned releases end to end: manifests with API and schema versions,
//! registering without starting, upgrade plans, and API-version routing,
//! through the real binary with the payments hub of issue 6.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{Env, HELLO};

/// The five releases of the hub: version, API versions, schema, the
/// schemas it runs on, and whether it migrates (with a way back).
const HUB: &[(&str, &str, &str, &str, bool)] = &[
    ("1.0.0", "v1", "1.0.0", "1.0.0,1.0.1", false),
    ("1.0.1", "v1", "1.0.1", "1.0.1", true),
    ("1.0.2", "v1,v2", "1.0.1", "1.0.1,2.0.0", false),
    ("2.0.0", "v2", "1.0.1", "1.0.1,2.0.0", false),
    ("2.0.1", "v2", "2.0.0", "2.0.0", true),
];

fn quoted(list: &str) -> String {
    list.split(',')
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `hub-VERSION/switchyard.toml` for each release and returns the
/// manifest paths by version.
fn write_hub(dir: &Path) -> Vec<(String, PathBuf)> {
    HUB.iter()
        .map(|(version, api, schema, runs_on, migrates)| {
            let folder = dir.join(format!("hub-{version}"));
            std::fs::create_dir_all(&folder).expect("release folder");
            let hooks = if *migrates {
                "[hooks]\nbackup = [\"./backup.sh\"]\nmigrate = [\"./migrate.sh\", \"up\"]\n"
            } else {
                ""
            };
            let manifest = format!(
                r#"name = "hub"
version = "{version}"
command = ["{HELLO}", "--port", "{{port}}", "--version", "{version}", "--api-versions", "{api}"]
api_versions = [{}]
schema_version = "{schema}"
runs_on_schemas = [{}]
changelog = "hub {version}"
[health]
path = "/healthz"
interval = "200ms"
{hooks}"#,
                quoted(api),
                quoted(runs_on),
            );
            let path = folder.join("switchyard.toml");
            std::fs::write(&path, manifest).expect("write manifest");
            (version.to_string(), path)
        })
        .collect()
}

fn manifest<'a>(hub: &'a [(String, PathBuf)], version: &str) -> &'a str {
    hub.iter()
        .find(|(v, _)| v == version)
        .and_then(|(_, p)| p.to_str())
        .expect("manifest of that version")
}

async fn releases(env: &Env) -> Vec<Value> {
    let run = env.cli(&["releases", "hub", "--json"]).await.ok();
    serde_json::from_str(&run.stdout).expect("releases --json is JSON")
}

/// GET through the proxy with headers: (status, x-switchyard-version, body).
async fn get_with(env: &Env, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut request = env.http.get(format!("{}{path}", env.proxy()));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = tokio::time::timeout(Duration::from_secs(30), request.send())
        .await
        .expect("answer within 30 s")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let version = response
        .headers()
        .get("x-switchyard-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, version, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn manifests_register_without_starting_and_list_their_versions() {
    let env = Env::start().await;
    let hub = write_hub(env.dir.path());
    let run = env
        .cli(&["release", "add", manifest(&hub, "1.0.2")])
        .await
        .ok();
    assert!(
        run.stdout
            .contains("registered hub 1.0.2: API v1, v2, schema 1.0.1"),
        "{}",
        run.stdout
    );
    // Nothing runs and no revision was made.
    assert!(
        env.instance_pids().is_empty(),
        "registering started something"
    );
    assert_eq!(env.ls().await.as_array().map(Vec::len), Some(0));
    let listed = releases(&env).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["versioning"]["api_versions"][1], "v2");
    assert_eq!(listed[0]["versioning"]["runs_on_schemas"][1], "2.0.0");
    assert!(listed[0]["role"].is_null());

    // The same manifest again is a no-op; another spec under the version is refused.
    let again = env
        .cli(&["release", "add", manifest(&hub, "1.0.2")])
        .await
        .ok();
    assert!(
        again.stdout.contains("already registered"),
        "{}",
        again.stdout
    );
    let path = manifest(&hub, "1.0.2");
    let text = std::fs::read_to_string(path).expect("read");
    std::fs::write(path, text.replace("hub 1.0.2\"", "changed\"")).expect("write");
    let refused = env.cli(&["release", "add", path]).await.failed();
    assert!(refused.stderr.contains("immutable"), "{}", refused.stderr);

    // An invalid manifest is refused with the field, and registers nothing.
    let bad = env.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"hub\"\nversion = \"3.0.0\"\ncommand = [\"x\"]\napi_versions = [\"two\"]\n",
    )
    .expect("write");
    let refused = env
        .cli(&["release", "add", bad.to_str().expect("utf-8")])
        .await
        .failed();
    assert!(refused.stderr.contains("`two`"), "{}", refused.stderr);
    assert_eq!(releases(&env).await.len(), 1);

    // deploy --manifest starts it; the listing shows its role.
    env.cli(&[
        "deploy",
        "hub",
        "1.0.0",
        "--manifest",
        manifest(&hub, "1.0.0"),
    ])
    .await
    .ok();
    let listed = releases(&env).await;
    let roles: Vec<(&str, &str)> = listed
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap_or(""),
                r["role"].as_str().unwrap_or("registered"),
            )
        })
        .collect();
    assert_eq!(roles, [("1.0.0", "main"), ("1.0.2", "registered")]);
    let table = env.cli(&["releases", "hub"]).await.ok();
    assert!(table.stdout.contains("v1, v2"), "{}", table.stdout);
    // The manifest's name must match the deploy's.
    let refused = env
        .cli(&[
            "deploy",
            "other",
            "1.0.0",
            "--manifest",
            manifest(&hub, "1.0.0"),
        ])
        .await
        .failed();
    assert!(
        refused.stderr.contains("name = \"hub\""),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn the_plan_goes_through_every_release_and_refuses_a_skip() {
    let env = Env::start().await;
    let hub = write_hub(env.dir.path());
    env.cli(&[
        "deploy",
        "hub",
        "1.0.0",
        "--manifest",
        manifest(&hub, "1.0.0"),
    ])
    .await
    .ok();
    env.cli(&["release", "add", manifest(&hub, "2.0.0")])
        .await
        .ok();

    // 1.0.0 straight to 2.0.0: v1 clients would have nowhere to go.
    let refused = env.cli(&["plan", "hub", "--to", "2.0.0"]).await.failed();
    assert!(
        refused.stderr.contains("step 1.0.0 → 2.0.0 breaks api")
            && refused.stderr.contains("no API version in common"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.contains("BROKEN"), "{}", refused.stdout);

    for version in ["1.0.1", "1.0.2", "2.0.1"] {
        env.cli(&["release", "add", manifest(&hub, version)])
            .await
            .ok();
    }
    let run = env
        .cli(&["plan", "hub", "--to", "2.0.1", "--json"])
        .await
        .ok();
    let plan: Value = serde_json::from_str(&run.stdout).expect("plan JSON");
    let steps = plan["steps"].as_array().expect("steps");
    let tos: Vec<&str> = steps.iter().filter_map(|s| s["to"].as_str()).collect();
    assert_eq!(tos, ["1.0.1", "1.0.2", "2.0.0", "2.0.1"], "never skips");
    assert!(steps.iter().all(|s| s["broken"] == serde_json::json!([])));
    let text = env.cli(&["plan", "hub", "--to", "2.0.1"]).await.ok();
    assert!(
        text.stdout
            .contains("1.0.0 → 1.0.1: ok; shared API v1; schema 1.0.0 → 1.0.1 (cannot be reversed"),
        "{}",
        text.stdout
    );
    // A target that is not registered, or behind main, is refused.
    let refused = env.cli(&["plan", "hub", "--to", "9.0.0"]).await.failed();
    assert!(
        refused.stderr.contains("not registered"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn requests_reach_a_release_that_serves_their_api_version() {
    let env = Env::start().await;
    let hub = write_hub(env.dir.path());
    env.cli(&[
        "deploy",
        "hub",
        "1.0.0",
        "--manifest",
        manifest(&hub, "1.0.0"),
    ])
    .await
    .ok();
    env.cli(&[
        "deploy",
        "hub",
        "2.0.0",
        "--standby",
        "--manifest",
        manifest(&hub, "2.0.0"),
    ])
    .await
    .ok();

    let api = |v: &'static str| [("x-api-version", v)];
    let at = "/services/hub/";
    assert_eq!(get_with(&env, at, &[]).await.1, "1.0.0", "no version: main");
    assert_eq!(get_with(&env, at, &api("v1")).await.1, "1.0.0");
    assert_eq!(
        get_with(&env, at, &api("1.1")).await.1,
        "1.0.0",
        "v1 matches 1.1"
    );
    let (status, version, _) = get_with(&env, at, &api("2.0")).await;
    assert_eq!(
        (status, version.as_str()),
        (200, "2.0.0"),
        "standby serves v2"
    );

    // Nobody serves v3: 406 listing what is served.
    for asked in ["v3", "banana"] {
        let (status, _, body) = get_with(&env, at, &[("x-api-version", asked)]).await;
        assert_eq!(status, 406, "{asked}: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(body["served"], serde_json::json!(["v1", "v2"]), "{body}");
    }

    // The policy decides first: a full canary of 2.0.0 takes the requests
    // that name no version or v2, while v1 clients stay on main.
    env.cli(&["canary", "hub", "2.0.0", "--percent", "100"])
        .await
        .ok();
    assert_eq!(get_with(&env, at, &[]).await.1, "2.0.0");
    assert_eq!(get_with(&env, at, &api("v2")).await.1, "2.0.0");
    assert_eq!(get_with(&env, at, &api("v1")).await.1, "1.0.0");
    env.cli(&["abort", "hub"]).await.ok();

    // The version can come from the media type instead…
    let run = env.cli(&["api-version", "hub", "--media-type"]).await.ok();
    assert!(run.stdout.contains("media type"), "{}", run.stdout);
    let accept = "application/vnd.interoperability.transfers+json;version=2.0";
    assert_eq!(get_with(&env, at, &[("accept", accept)]).await.1, "2.0.0");
    assert_eq!(
        get_with(&env, at, &api("v2")).await.1,
        "1.0.0",
        "the header is not read any more"
    );
    // …or from the path, which is forwarded as it is.
    env.cli(&["api-version", "hub", "--path-prefix"]).await.ok();
    let (_, version, body) = get_with(&env, "/services/hub/v2/echo", &[]).await;
    assert_eq!(version, "2.0.0", "{body}");
    assert_eq!(
        get_with(&env, "/services/hub/v1/echo", &[]).await.1,
        "1.0.0"
    );
    assert_eq!(get_with(&env, "/services/hub/v9/x", &[]).await.0, 406);
    let shown = env.cli(&["api-version", "hub"]).await.ok();
    assert!(shown.stdout.contains("path prefix"), "{}", shown.stdout);
    // Each change is a revision.
    let history = env.history("hub").await;
    let actions: Vec<&str> = history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.iter().any(|a| a.contains("path prefix")),
        "{actions:?}"
    );
}
