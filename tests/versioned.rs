//! Versioned releases end to end: manifests with API and schema versions,
//! registering without starting, upgrade plans, and API-version routing,
//! through the real binary with the payments hub of issue 6.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::http1::Http1;
use support::listing::actions;
use support::load::{Clients, CountingLoad, spawn_get};
use support::{Env, HELLO, component};

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

/// Copies the database aside, named after the release that asked; while
/// `$HUB_DB.hold` exists it waits first (a test holds the step there).
const BACKUP_SH: &str = r#"set -eu
while [ -e "$HUB_DB.hold" ]; do sleep 0.05; done
cp "$HUB_DB" "$HUB_DB.before-$SWITCHYARD_VERSION"
echo "backed up to $HUB_DB.before-$SWITCHYARD_VERSION"
"#;

/// Moves the schema to `$SWITCHYARD_SCHEMA`: 1.0.1 adds an optional
/// `quote_id`, 2.0.0 makes it required (SQLite rebuilds the table).
const MIGRATE_SH: &str = r#"set -eu
if [ "$1" = down ] && [ "$SWITCHYARD_SCHEMA" = 1.0.1 ]; then
  # Back from 1.0.1 to 1.0.0: no quote_id.
  sqlite3 "$HUB_DB" "BEGIN; ALTER TABLE payments DROP COLUMN quote_id; UPDATE schema_info SET version = '1.0.0'; COMMIT;"
  echo "schema back to 1.0.0"
  exit 0
fi
if [ "$1" = down ]; then
  # Back from 2.0.0 to 1.0.1: quote_id optional again.
  [ "$SWITCHYARD_SCHEMA" = 2.0.0 ] || { echo "no way down from $SWITCHYARD_SCHEMA" >&2; exit 2; }
  sqlite3 "$HUB_DB" "BEGIN;
    CREATE TABLE payments_old (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, quote_id TEXT);
    INSERT INTO payments_old SELECT id, amount, quote_id FROM payments;
    DROP TABLE payments;
    ALTER TABLE payments_old RENAME TO payments;
    UPDATE schema_info SET version = '1.0.1';
    COMMIT;"
  echo "schema back to 1.0.1"
  exit 0
fi
case "$SWITCHYARD_SCHEMA" in
1.0.1) sqlite3 "$HUB_DB" "BEGIN; ALTER TABLE payments ADD COLUMN quote_id TEXT; UPDATE schema_info SET version = '1.0.1'; COMMIT;" ;;
2.0.0) sqlite3 "$HUB_DB" "BEGIN;
  UPDATE payments SET quote_id = 'legacy-' || id WHERE quote_id IS NULL;
  CREATE TABLE payments_new (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, quote_id TEXT NOT NULL);
  INSERT INTO payments_new SELECT id, amount, quote_id FROM payments;
  DROP TABLE payments;
  ALTER TABLE payments_new RENAME TO payments;
  UPDATE schema_info SET version = '2.0.0';
  COMMIT;" ;;
*) echo "no migration to $SWITCHYARD_SCHEMA" >&2; exit 2 ;;
esac
echo "schema now $SWITCHYARD_SCHEMA"
"#;

/// The hub's database at schema 1.0.0, with two payments.
fn create_db(dir: &Path) -> PathBuf {
    let db = dir.join("hub.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(
            "CREATE TABLE payments (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);
             INSERT INTO payments (amount) VALUES (100), (250);
             CREATE TABLE schema_info (version TEXT NOT NULL);
             INSERT INTO schema_info VALUES ('1.0.0');",
        )
        .output()
        .expect("run sqlite3");
    assert!(out.status.success(), "sqlite3: {out:?}");
    db
}

fn sql(db: &Path, query: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(query)
        .output()
        .expect("run sqlite3");
    assert!(out.status.success(), "sqlite3 {query}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Writes `hub-VERSION/switchyard.toml` for each release (hooks as shell
/// scripts on the hub's SQLite file) and returns the manifest paths by
/// version.
fn write_hub(dir: &Path) -> Vec<(String, PathBuf)> {
    std::fs::write(dir.join("backup.sh"), BACKUP_SH).expect("backup.sh");
    std::fs::write(dir.join("migrate.sh"), MIGRATE_SH).expect("migrate.sh");
    let scripts = dir.to_str().expect("utf-8 dir");
    let db = dir.join("hub.db");
    let db = db.to_str().expect("utf-8 path");
    HUB.iter()
        .map(|(version, api, schema, runs_on, migrates)| {
            let folder = dir.join(format!("hub-{version}"));
            std::fs::create_dir_all(&folder).expect("release folder");
            let mut hooks = if *migrates {
                format!(
                    "[hooks]\nbackup = [\"sh\", \"{scripts}/backup.sh\"]\nmigrate = [\"sh\", \"{scripts}/migrate.sh\", \"up\"]\n"
                )
            } else {
                String::new()
            };
            if *version == "2.0.1" {
                // The last step can go back.
                hooks.push_str(&format!(
                    "migrate_down = [\"sh\", \"{scripts}/migrate.sh\", \"down\"]\n"
                ));
            }
            let manifest = format!(
                r#"name = "hub"
version = "{version}"
command = ["{HELLO}", "--port", "{{port}}", "--version", "{version}", "--api-versions", "{api}"]
api_versions = [{}]
schema_version = "{schema}"
runs_on_schemas = [{}]
changelog = "hub {version}"
[env]
HUB_DB = "{db}"
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

/// Deploys the first release of `manifests` (1.0.0) as main.
async fn deploy_first(env: &Env, manifests: &[(String, PathBuf)]) {
    env.cli(&[
        "deploy",
        "hub",
        "1.0.0",
        "--manifest",
        manifest(manifests, "1.0.0"),
    ])
    .await
    .ok();
}

/// Registers releases without starting them.
async fn register(env: &Env, manifests: &[(String, PathBuf)]) {
    for (version, _) in manifests {
        env.cli(&["release", "add", manifest(manifests, version)])
            .await
            .ok();
    }
}

async fn releases(env: &Env) -> Vec<Value> {
    let run = env.cli(&["releases", "hub", "--json"]).await.ok();
    serde_json::from_str(&run.stdout).expect("releases --json is JSON")
}

/// GET through the proxy with headers: (status, x-switchyard-version, body).
async fn get_with(env: &Env, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    Http1::new(env.proxy())
        .get_with(path, headers)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
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
    deploy_first(&env, &hub).await;
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
    deploy_first(&env, &hub).await;
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
async fn a_registered_release_deploys_by_name_and_one_that_never_ran_can_be_removed() {
    let env = Env::start().await;
    let hub = write_hub(env.dir.path());
    register(&env, &hub[..3]).await;

    // By name: the registered spec runs, no manifest given again.
    let run = env.cli(&["deploy", "hub", "1.0.0"]).await.ok();
    assert!(
        run.stdout
            .contains("deployed hub 1.0.0 from its registered spec as main (revision 1)"),
        "{}",
        run.stdout
    );
    let (status, version, body) = get_with(&env, "/services/hub/", &[]).await;
    assert_eq!((status, version.as_str()), (200, "1.0.0"), "{body}");
    // Its manifest's health check and environment came with it.
    let ls = env.ls().await;
    assert_eq!(ls[0]["releases"][0]["status"], "ready", "{ls:#}");

    // A version nobody registered, and flags that would make another spec.
    let refused = env.cli(&["deploy", "hub", "9.9.9"]).await.failed();
    assert!(
        refused.stderr.contains("hub 9.9.9 is not registered")
            && refused.stderr.contains("registered: 1.0.0, 1.0.1, 1.0.2")
            && refused.stderr.contains("switchyard release add"),
        "{}",
        refused.stderr
    );
    let refused = env
        .cli(&["deploy", "hub", "1.0.1", "--replicas", "2"])
        .await
        .failed();
    assert!(
        refused
            .stderr
            .contains("--replicas describe how a release runs")
            && refused.stderr.contains("`switchyard deploy hub 1.0.1`"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        env.ls().await[0]["revision"],
        1,
        "a refusal changed nothing"
    );

    // A release that never ran goes; its version can be registered again
    // with the mistake fixed.
    let removed = env.cli(&["release", "rm", "hub", "1.0.2"]).await.ok();
    assert!(
        removed
            .stdout
            .contains("removed hub 1.0.2: it never ran; registered now: 1.0.0, 1.0.1"),
        "{}",
        removed.stdout
    );
    let versions: Vec<String> = releases(&env)
        .await
        .iter()
        .filter_map(|r| r["version"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(versions, ["1.0.0", "1.0.1"]);
    let gone = env.cli(&["deploy", "hub", "1.0.2"]).await.failed();
    assert!(gone.stderr.contains("not registered"), "{}", gone.stderr);
    let path = manifest(&hub, "1.0.2");
    let text = std::fs::read_to_string(path).expect("read");
    std::fs::write(path, text.replace("hub 1.0.2\"", "hub 1.0.2, fixed\"")).expect("write");
    let again = env.cli(&["release", "add", path]).await.ok();
    assert!(
        again.stdout.contains("registered hub 1.0.2"),
        "{}",
        again.stdout
    );
    let events = env.cli(&["events", "hub"]).await.ok();
    assert!(
        events.stdout.contains("registered release 1.0.2 removed"),
        "{}",
        events.stdout
    );

    // One that runs, or ran, stays: rollback needs its spec.
    let refused = env.cli(&["release", "rm", "hub", "1.0.0"]).await.failed();
    assert!(
        refused
            .stderr
            .contains("cannot remove hub 1.0.0: it ran (in revision 1; it runs now as main)")
            && refused.stderr.contains("under a new version"),
        "{}",
        refused.stderr
    );
    env.cli(&["deploy", "hub", "1.0.1", "--standby"]).await.ok();
    env.cli(&["kill", "hub", "1.0.1"]).await.ok();
    let refused = env.cli(&["release", "rm", "hub", "1.0.1"]).await.failed();
    assert!(
        refused
            .stderr
            .contains("cannot remove hub 1.0.1: it ran (in revision 2)")
            && !refused.stderr.contains("runs now"),
        "{}",
        refused.stderr
    );
    let refused = env.cli(&["release", "rm", "hub", "3.0.0"]).await.failed();
    assert!(
        refused.stderr.contains("hub 3.0.0 is not registered"),
        "{}",
        refused.stderr
    );
    assert_eq!(releases(&env).await.len(), 3, "refusals removed nothing");
}

#[tokio::test]
async fn plan_and_upgrade_start_from_the_first_registered_release() {
    if !component::command(
        "plan_and_upgrade_start_from_the_first_registered_release",
        "sqlite3",
    ) {
        return;
    }
    let env = Env::start().await;
    let hub = write_hub(env.dir.path());
    let db = create_db(env.dir.path());
    let refused = env.cli(&["plan", "hub", "--to", "1.0.2"]).await.failed();
    assert!(
        refused.stderr.contains("unknown service"),
        "{}",
        refused.stderr
    );
    register(&env, &hub[..3]).await;

    // Nothing runs: the plan starts 1.0.0, the first registered release.
    let run = env.cli(&["plan", "hub", "--to", "1.0.2"]).await.ok();
    assert!(
        run.stdout.contains("hub 1.0.0 → 1.0.2")
            && run.stdout.contains("0. start 1.0.0 as main")
            && run.stdout.contains("1.0.0 → 1.0.1: ok"),
        "{}",
        run.stdout
    );
    let run = env
        .cli(&["plan", "hub", "--to", "1.0.2", "--json"])
        .await
        .ok();
    let plan: Value = serde_json::from_str(&run.stdout).expect("plan JSON");
    assert_eq!(plan["starts"], true, "{plan:#}");
    let tos: Vec<&str> = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["to"].as_str())
        .collect();
    assert_eq!(tos, ["1.0.1", "1.0.2"]);
    assert!(env.instance_pids().is_empty(), "a plan started something");

    let run = env.cli(&["upgrade", "hub", "--to", "1.0.2"]).await.ok();
    assert!(
        run.stdout.contains("hub upgraded to 1.0.2"),
        "{}",
        run.stdout
    );
    let ls = env.ls().await;
    assert_eq!(main_of(&ls), "1.0.2", "{ls:#}");
    let (status, version, body) = get_with(&env, "/services/hub/", &[]).await;
    assert_eq!((status, version.as_str()), (200, "1.0.2"), "{body}");
    // The step from 1.0.0 ran its migration on the database 1.0.0 was at.
    assert_eq!(sql(&db, "SELECT version FROM schema_info"), "1.0.1");
    let events = env.cli(&["events", "hub"]).await.ok();
    assert!(
        events
            .stdout
            .contains("started 1.0.0, the first registered release, as main"),
        "{}",
        events.stdout
    );
}

#[tokio::test]
async fn requests_reach_a_release_that_serves_their_api_version() {
    let env = Env::start().await;
    let hub = write_hub(env.dir.path());
    deploy_first(&env, &hub).await;
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

    // `routes` shows the API-version stage after the policy.
    let routes = env.cli(&["routes", "hub"]).await.ok();
    assert!(
        routes.stdout.contains("header x-api-version")
            && routes.stdout.contains("2.0.0: v2; 1.0.0: v1"),
        "{}",
        routes.stdout
    );

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
    let actions = actions(&history);
    assert!(
        actions.iter().any(|a| a.contains("path prefix")),
        "{actions:?}"
    );
}

/// Clients asking for one API version in a loop until stopped, each on
/// a connection of its own that never sends a request twice; every answer
/// that is not a 200 from a release is a failure.
fn start_traffic(env: &Env, api: &'static str, clients: usize) -> CountingLoad {
    let conns = Clients::new(env.proxy(), clients);
    CountingLoad::start(clients, move |client, _| {
        let conns = conns.clone();
        async move {
            let result = match conns
                .get_with(client, "/services/hub/", &[("x-api-version", api)])
                .await
            {
                Ok((200, _, _)) => Ok(()),
                Ok((status, version, body)) => {
                    Err(format!("{api}: {status} from `{version}`: {body}"))
                }
                Err(e) => Err(format!("{api}: {e}")),
            };
            // Paced, to leave the machine to the upgrade.
            tokio::time::sleep(Duration::from_millis(5)).await;
            result
        }
    })
}

fn main_of(ls: &Value) -> String {
    ls[0]["main"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn the_hub_upgrades_to_2_0_1_and_steps_back_under_v1_and_v2_traffic_with_no_failure() {
    if !component::command(
        "the_hub_upgrades_to_2_0_1_and_steps_back_under_v1_and_v2_traffic_with_no_failure",
        "sqlite3",
    ) {
        return;
    }
    let env = Env::start().await;
    let hub = write_hub(env.dir.path());
    let db = create_db(env.dir.path());
    deploy_first(&env, &hub).await;
    register(&env, &hub[1..]).await;

    // Up to 1.0.2 under v1 traffic (nobody serves v2 before 1.0.2).
    let v1 = start_traffic(&env, "v1", 3);
    // The schema step holds traffic from its backup until its switch: the
    // backup waits while hub.db.hold exists, so a request sent meanwhile
    // is seen held, and once let go it is answered after the switch.
    let hold = env.dir.path().join("hub.db.hold");
    std::fs::write(&hold, "").expect("write hub.db.hold");
    let mut upgrade = env.cli_command(&["upgrade", "hub", "--to", "1.0.2", "--pause", "30s"]);
    let upgrade = tokio::spawn(async move { upgrade.output().await });
    env.eventually(
        "the upgrade pauses hub",
        Duration::from_secs(30),
        || async { env.ls().await[0]["paused"].is_object() },
    )
    .await;
    let held = spawn_get(env.proxy(), "/services/hub/");
    env.wait_held("hub", 1).await;
    std::fs::remove_file(&hold).expect("remove hub.db.hold");
    let run = support::Run::from(upgrade.await.expect("upgrade task").expect("run upgrade")).ok();
    let (status, version, body) = held.await.expect("held task").expect("the held request");
    assert_eq!(status, 200, "{body}");
    assert!(
        version == "1.0.1" || version == "1.0.2",
        "the held request went out before the switch to 1.0.1: answered by {version}"
    );
    assert!(
        run.stdout.contains("hub upgraded to 1.0.2"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("done 1.0.0 → 1.0.1") && run.stdout.contains("hooks: backup, migrate"),
        "{}",
        run.stdout
    );
    assert_eq!(sql(&db, "SELECT version FROM schema_info"), "1.0.1");
    let columns = sql(&db, "SELECT name FROM pragma_table_info('payments')");
    assert!(columns.contains("quote_id"), "{columns}");
    assert!(
        env.dir.path().join("hub.db.before-1.0.1").is_file(),
        "backup"
    );
    let events = env.cli(&["events", "hub"]).await.ok();
    assert!(
        events.stdout.contains("traffic paused")
            && events.stdout.contains("held requests let through"),
        "{}",
        events.stdout
    );

    // Then to 2.0.1 with v1 and v2 clients at once: after 2.0.0 drops v1,
    // v1 clients go to 1.0.2, the newest running release that serves it.
    let v2 = start_traffic(&env, "v2", 3);
    let run = env.cli(&["upgrade", "hub", "--to", "2.0.1"]).await.ok();
    assert!(
        run.stdout.contains("hub upgraded to 2.0.1"),
        "{}",
        run.stdout
    );
    assert_eq!(sql(&db, "SELECT version FROM schema_info"), "2.0.0");
    let notnull = |db: &Path| {
        sql(
            db,
            "SELECT \"notnull\" FROM pragma_table_info('payments') WHERE name = 'quote_id'",
        )
    };
    assert_eq!(notnull(&db), "1", "quote_id is required at 2.0.0");
    assert_eq!(sql(&db, "SELECT count(*) FROM payments"), "2");
    assert!(
        env.dir.path().join("hub.db.before-2.0.1").is_file(),
        "backup"
    );
    let ls = env.ls().await;
    assert_eq!(main_of(&ls), "2.0.1");
    assert_eq!(ls[0]["schema"], "2.0.0", "the recorded schema");
    let listed = env.cli(&["releases", "hub"]).await.ok();
    assert!(
        listed.stdout.contains("database schema: 2.0.0"),
        "{}",
        listed.stdout
    );
    let v1_answer = get_with(&env, "/services/hub/", &[("x-api-version", "v1")]).await;
    assert_eq!(
        v1_answer.1, "1.0.2",
        "v1 clients reach the newest release serving v1"
    );

    // A release that cannot run on the schema the database is at now is
    // refused as main, with nothing changed.
    let refused = env.cli(&["assign", "hub", "1.0.0", "--yes"]).await.failed();
    assert!(
        refused
            .stderr
            .contains("1.0.0 cannot run against schema 2.0.0"),
        "{}",
        refused.stderr
    );
    assert_eq!(main_of(&env.ls().await), "2.0.1");

    // And back to the revision where 2.0.0 was main, still under traffic:
    // 2.0.0 main again, the schema back down by 2.0.1's migrate_down (a
    // revision of its own), 2.0.1 stopped.
    let history = env.history("hub").await;
    let revision_of = |action: &str| {
        history
            .as_array()
            .expect("history")
            .iter()
            .find(|r| r["action"].as_str().is_some_and(|a| a.starts_with(action)))
            .and_then(|r| r["number"].as_u64())
            .unwrap_or_else(|| panic!("no revision `{action}` in {history}"))
    };
    let before_2_0_1 = revision_of("assign 2.0.0 as main").to_string();
    let run = env.cli(&["rollback", "hub", &before_2_0_1]).await.ok();
    assert!(run.stdout.contains("main is 2.0.0"), "{}", run.stdout);
    // The traffic goes on past the rollback.
    v1.run_for(20, Duration::from_secs(30)).await;
    v2.run_for(20, Duration::from_secs(30)).await;
    let (v1_ok, v1_failed) = v1.finish().await;
    let (v2_ok, v2_failed) = v2.finish().await;
    assert!(
        v1_failed.is_empty() && v2_failed.is_empty(),
        "{} v1 and {} v2 failures, e.g. {:?}",
        v1_failed.len(),
        v2_failed.len(),
        v1_failed
            .iter()
            .chain(&v2_failed)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        v1_ok > 20 && v2_ok > 20,
        "too little traffic: {v1_ok} v1, {v2_ok} v2"
    );

    assert_eq!(sql(&db, "SELECT version FROM schema_info"), "1.0.1");
    assert_eq!(notnull(&db), "0", "quote_id optional again");
    assert_eq!(sql(&db, "SELECT count(*) FROM payments"), "2");
    let ls = env.ls().await;
    assert_eq!(main_of(&ls), "2.0.0");
    let running: Vec<&str> = ls[0]["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .filter_map(|r| r["version"].as_str())
        .collect();
    assert!(!running.contains(&"2.0.1"), "{running:?}");
    // Each step is a revision that names it; events record the hooks.
    let history = env.history("hub").await;
    let actions = actions(&history);
    assert!(
        actions
            .iter()
            .any(|a| a == "schema 2.0.0 → 1.0.1 (hooks.migrate_down of 2.0.1)")
            && actions
                .iter()
                .any(|a| a == "schema 1.0.1 → 2.0.0 (hooks.migrate of 2.0.1)"),
        "{actions:?}"
    );

    // Further back than 1.0.1's migration there is no way: 1.0.1 has no
    // migrate_down. Refused beforehand, nothing changed.
    let first = revision_of("deploy 1.0.0").to_string();
    let before = env.history("hub").await;
    let refused = env.cli(&["rollback", "hub", &first]).await.failed();
    assert!(
        refused.stderr.contains("cannot roll hub back to revision")
            && refused.stderr.contains("1.0.1 has no hooks.migrate_down")
            && refused.stderr.contains("cannot be reversed"),
        "{}",
        refused.stderr
    );
    assert_eq!(env.history("hub").await, before);
    assert_eq!(sql(&db, "SELECT version FROM schema_info"), "1.0.1");
    let events = env.cli(&["events", "hub"]).await.ok();
    assert!(
        events
            .stdout
            .contains("upgrade step 2/2 2.0.0 → 2.0.1: done"),
        "{}",
        events.stdout
    );
}

#[tokio::test]
async fn a_failing_migrate_hook_stops_the_upgrade_with_nothing_changed() {
    if !component::command(
        "a_failing_migrate_hook_stops_the_upgrade_with_nothing_changed",
        "sqlite3",
    ) {
        return;
    }
    let env = Env::start().await;
    let hub = write_hub(env.dir.path());
    let db = create_db(env.dir.path());
    deploy_first(&env, &hub).await;
    // 1.0.1 whose migration fails.
    let path = manifest(&hub, "1.0.1");
    let text = std::fs::read_to_string(path).expect("read");
    let broken = text.replace(
        "migrate = [",
        "migrate = [\"sh\", \"-c\", \"echo cannot add quote_id >&2; exit 3\"]\nunused = [",
    );
    let broken = broken.replace("\nunused = [", "\n#");
    std::fs::write(path, broken).expect("write");
    env.cli(&["release", "add", path]).await.ok();
    let before = env.history("hub").await;

    let v1 = start_traffic(&env, "v1", 2);
    let run = env.cli(&["upgrade", "hub", "--to", "1.0.1"]).await.failed();
    let (ok, failed) = v1.finish().await;
    assert!(
        run.stderr.contains("stopped at step 1/1 1.0.0 → 1.0.1")
            && run
                .stderr
                .contains("hooks.migrate of 1.0.1 exited with exit status: 3")
            && run.stderr.contains("cannot add quote_id"),
        "{}",
        run.stderr
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
    // Routing and state as before: same revision, main 1.0.0, nothing started.
    assert_eq!(env.history("hub").await, before);
    let ls = env.ls().await;
    assert_eq!(main_of(&ls), "1.0.0");
    assert_eq!(ls[0]["releases"].as_array().map(Vec::len), Some(1));
    assert_eq!(env.get("/services/hub/").await.1, "1.0.0");
    // The backup ran before it; the schema did not move.
    assert!(env.dir.path().join("hub.db.before-1.0.1").is_file());
    assert_eq!(sql(&db, "SELECT version FROM schema_info"), "1.0.0");
}

#[tokio::test]
async fn a_step_that_fails_after_its_migration_migrates_back_down() {
    if !component::command(
        "a_step_that_fails_after_its_migration_migrates_back_down",
        "sqlite3",
    ) {
        return;
    }
    let env = Env::start().await;
    let hub = write_hub(env.dir.path());
    let db = create_db(env.dir.path());
    deploy_first(&env, &hub).await;
    // 1.0.1 migrates (and can migrate back) but never starts.
    let path = manifest(&hub, "1.0.1");
    let text = std::fs::read_to_string(path).expect("read");
    let scripts = env.dir.path().to_str().expect("utf-8");
    let broken = text
        .replace(
            "\"--version\", \"1.0.1\"",
            "\"--version\", \"1.0.1\", \"--exit-immediately\"",
        )
        .replace(
            "[hooks]\n",
            &format!("[hooks]\nmigrate_down = [\"sh\", \"{scripts}/migrate.sh\", \"down\"]\n"),
        );
    std::fs::write(path, broken).expect("write");
    env.cli(&["release", "add", path]).await.ok();

    let v1 = start_traffic(&env, "v1", 2);
    let run = env.cli(&["upgrade", "hub", "--to", "1.0.1"]).await.failed();
    let (ok, failed) = v1.finish().await;
    assert!(
        run.stderr.contains("stopped at step 1/1 1.0.0 → 1.0.1"),
        "{}",
        run.stderr
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
    // The schema moved and came back, each move a revision; 1.0.0 is main
    // and alone; the database is as it was.
    let history = env.history("hub").await;
    let actions = actions(&history);
    assert_eq!(
        actions,
        [
            "schema back to 1.0.0 (hooks.migrate_down of 1.0.1: the step failed)",
            "schema 1.0.0 → 1.0.1 (hooks.migrate of 1.0.1)",
            "deploy 1.0.0 as main"
        ],
        "{history}"
    );
    let ls = env.ls().await;
    assert_eq!(main_of(&ls), "1.0.0");
    assert_eq!(ls[0]["releases"].as_array().map(Vec::len), Some(1));
    assert_eq!(sql(&db, "SELECT version FROM schema_info"), "1.0.0");
    let columns = sql(&db, "SELECT name FROM pragma_table_info('payments')");
    assert!(!columns.contains("quote_id"), "{columns}");
    let status = upgrade_status(&env).await;
    assert_eq!(status["status"], "stopped", "{status}");
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn a_pinned_port_serves_its_release_for_as_long_as_it_runs() {
    let env = Env::start().await;
    env.deploy("hub", "1.0.0", &[], &[]).await.ok();
    env.deploy("hub", "2.0.0", &["--standby"], &[]).await.ok();
    let port = free_port();
    let port_text = port.to_string();
    env.cli(&["pin", "hub", "1.0.0", "--port", &port_text])
        .await
        .ok();
    let pinned = format!("http://127.0.0.1:{port}");
    let ls = env.ls().await;
    assert_eq!(
        ls[0]["releases"][0]["pinned"],
        format!("127.0.0.1:{port}"),
        "{ls}"
    );
    let get = |path: &str| {
        let (mut client, path) = (Http1::new(&pinned), path.to_owned());
        async move {
            client
                .get(&path)
                .await
                .map(|(_, version, body)| (version, body))
        }
    };
    let (version, body) = get("/echo/a?b=1").await.expect("pinned answers");
    assert_eq!(version, "1.0.0");
    assert!(
        body.contains("/echo/a?b=1"),
        "the path goes as it is: {body}"
    );

    // Main moves on; the pinned port stays with its release.
    env.cli(&["assign", "hub", "2.0.0", "--yes"]).await.ok();
    assert_eq!(env.get("/services/hub/").await.1, "2.0.0");
    assert_eq!(get("/").await.expect("pinned").0, "1.0.0");

    // One address, one release; a port in use is refused; neither changes anything.
    let revisions = env.history("hub").await.as_array().map(Vec::len);
    let taken = env
        .cli(&["pin", "hub", "2.0.0", "--port", &port_text])
        .await
        .failed();
    assert!(
        taken.stderr.contains("pinned to hub 1.0.0"),
        "{}",
        taken.stderr
    );
    let busy = env
        .proxy()
        .rsplit(':')
        .next()
        .expect("proxy port")
        .to_owned();
    let refused = env
        .cli(&["pin", "hub", "2.0.0", "--port", &busy])
        .await
        .failed();
    assert!(
        refused.stderr.contains("cannot listen"),
        "{}",
        refused.stderr
    );
    assert_eq!(env.history("hub").await.as_array().map(Vec::len), revisions);

    // When the release goes, so does its address.
    env.cli(&["kill", "hub", "1.0.0"]).await.ok();
    env.eventually("the pinned port closes", Duration::from_secs(15), || {
        let url = format!("{pinned}/");
        let http = env.http.clone();
        async move { http.get(&url).send().await.is_err() }
    })
    .await;
}

/// Manifests of releases that all serve v1 and need no schema.
fn write_plain(dir: &Path, versions: &[&str]) -> Vec<(String, PathBuf)> {
    versions
        .iter()
        .map(|version| {
            let folder = dir.join(format!("plain-{version}"));
            std::fs::create_dir_all(&folder).expect("release folder");
            let manifest = format!(
                r#"name = "hub"
version = "{version}"
command = ["{HELLO}", "--port", "{{port}}", "--version", "{version}"]
api_versions = ["v1"]
[health]
path = "/healthz"
interval = "200ms"
"#
            );
            let path = folder.join("switchyard.toml");
            std::fs::write(&path, manifest).expect("write manifest");
            (version.to_string(), path)
        })
        .collect()
}

async fn upgrade_status(env: &Env) -> Value {
    let run = env
        .cli(&["upgrade", "hub", "--status", "--json"])
        .await
        .ok();
    serde_json::from_str(&run.stdout).expect("upgrade --status --json is JSON")
}

#[tokio::test]
async fn an_upgrade_waits_for_approval_between_steps_and_holds_off_manual_changes() {
    let mut env = Env::start().await;
    let plain = write_plain(
        env.dir.path(),
        &[
            "1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0",
        ],
    );
    deploy_first(&env, &plain).await;
    register(&env, &plain[1..]).await;

    // Bad requests change nothing and say what to do.
    let before = env.history("hub").await;
    let refused = env.cli(&["upgrade", "hub", "--status"]).await.failed();
    assert!(
        refused.stderr.contains("hub was never upgraded"),
        "{}",
        refused.stderr
    );
    let refused = env
        .cli(&["upgrade", "hub", "--to", "1.2.0", "--wait", "0s"])
        .await
        .failed();
    assert!(
        refused.stderr.contains("more than zero and at most 24h"),
        "{}",
        refused.stderr
    );
    let refused = env
        .cli(&[
            "upgrade",
            "hub",
            "--to",
            "1.2.0",
            "--approve",
            "--wait",
            "1s",
        ])
        .await
        .failed();
    assert!(
        refused.stderr.contains("cannot be used with"),
        "{}",
        refused.stderr
    );
    let refused = env.cli(&["upgrade", "hub", "--abort"]).await.failed();
    assert!(
        refused.stderr.contains("hub has no upgrade running"),
        "{}",
        refused.stderr
    );
    assert_eq!(env.history("hub").await, before);

    // --approve: the CLI follows the first step and returns while the
    // upgrade waits for --continue.
    let run = env
        .cli(&["upgrade", "hub", "--to", "1.2.0", "--approve"])
        .await
        .ok();
    assert!(
        run.stdout.contains("done 1.0.0 → 1.1.0")
            && run.stdout.contains("waiting after step 1/2")
            && run.stdout.contains("switchyard upgrade hub --continue"),
        "{}",
        run.stdout
    );
    assert_eq!(main_of(&env.ls().await), "1.1.0");
    let status = upgrade_status(&env).await;
    assert_eq!(status["status"], "waiting", "{status}");
    let ls = env.cli(&["ls"]).await.ok();
    assert!(
        ls.stdout.contains(
            "hub is held by its upgrade to 1.2.0: waiting for --continue, step 2/2 1.1.0 → 1.2.0"
        ),
        "{}",
        ls.stdout
    );
    let text = env.cli(&["upgrade", "hub", "--status"]).await.ok();
    assert!(
        text.stdout.contains("waiting for --continue")
            && text.stdout.contains("next: step 2/2 1.1.0 → 1.2.0"),
        "{}",
        text.stdout
    );

    // Meanwhile manual changes and a second upgrade are refused, with
    // nothing changed; reading stays open.
    let before = env.history("hub").await;
    let refused = env.cli(&["assign", "hub", "1.0.0", "--yes"]).await.failed();
    assert!(
        refused.stderr.contains("hub is being upgraded to 1.2.0")
            && refused.stderr.contains("switchyard upgrade hub --abort"),
        "{}",
        refused.stderr
    );
    let refused = env.cli(&["upgrade", "hub", "--to", "1.3.0"]).await.failed();
    assert!(
        refused.stderr.contains("being upgraded"),
        "{}",
        refused.stderr
    );
    let refused = env.cli(&["handover"]).await.failed();
    assert!(
        refused.stderr.contains("an upgrade of hub is running"),
        "{}",
        refused.stderr
    );
    assert_eq!(env.history("hub").await, before);
    assert_eq!(env.get("/services/hub/").await.1, "1.1.0");

    let run = env.cli(&["upgrade", "hub", "--continue"]).await.ok();
    assert!(
        run.stdout.contains("done 1.1.0 → 1.2.0") && run.stdout.contains("hub upgraded to 1.2.0"),
        "{}",
        run.stdout
    );
    assert_eq!(upgrade_status(&env).await["status"], "done");
    assert_eq!(main_of(&env.ls().await), "1.2.0");
    // Nothing waits any more: --continue says so.
    let refused = env.cli(&["upgrade", "hub", "--continue"]).await.failed();
    assert!(
        refused.stderr.contains("no upgrade running"),
        "{}",
        refused.stderr
    );

    // --abort while it waits: it stops there, at the last good step, and
    // the service takes manual changes again.
    env.cli(&["upgrade", "hub", "--to", "1.4.0", "--approve"])
        .await
        .ok();
    let run = env.cli(&["upgrade", "hub", "--abort"]).await.ok();
    assert!(
        run.stdout
            .contains("aborted by the operator after step 1/2"),
        "{}",
        run.stdout
    );
    let status = upgrade_status(&env).await;
    assert_eq!(status["status"], "aborted", "{status}");
    assert_eq!(main_of(&env.ls().await), "1.3.0");
    env.cli(&["assign", "hub", "1.2.0", "--yes"]).await.ok();
    env.cli(&["assign", "hub", "1.3.0", "--yes"]).await.ok();

    // --wait: goes on by itself after the wait.
    let run = env
        .cli(&["upgrade", "hub", "--to", "1.5.0", "--wait", "300ms"])
        .await
        .ok();
    assert!(
        run.stdout.contains("done 1.4.0 → 1.5.0") && run.stdout.contains("hub upgraded to 1.5.0"),
        "{}",
        run.stdout
    );

    // A serve killed while an upgrade waits: the restarted serve reports it
    // interrupted at the last committed step and takes changes again.
    env.cli(&["upgrade", "hub", "--to", "1.7.0", "--approve", "--detach"])
        .await
        .ok();
    env.eventually(
        "the upgrade waits after its first step",
        Duration::from_secs(30),
        || {
            let env = &env;
            async move { upgrade_status(env).await["status"] == "waiting" }
        },
    )
    .await;
    let (proxy, admin) = (
        env.serve().proxy_addr.clone(),
        env.serve().admin_addr.clone(),
    );
    env.kill9().await;
    env.launch(&proxy, &admin).await;
    let status = upgrade_status(&env).await;
    assert_eq!(status["status"], "interrupted", "{status}");
    let error = status["error"]
        .as_str()
        .expect("the upgrade says why it stopped");
    assert!(
        error.contains("serve stopped during step 2/2 1.6.0 → 1.7.0")
            && error.contains("switchyard upgrade hub --to 1.7.0"),
        "{error}"
    );
    // Going on from where it was: one step left.
    env.cli(&["assign", "hub", "1.5.0", "--yes"]).await.ok();
    env.cli(&["assign", "hub", "1.6.0", "--yes"]).await.ok();
    let run = env.cli(&["upgrade", "hub", "--to", "1.7.0"]).await.ok();
    assert!(
        run.stdout.contains("done 1.6.0 → 1.7.0") && !run.stdout.contains("done 1.5.0"),
        "{}",
        run.stdout
    );
}
