//! The state database upgrades in place: a state directory written by an
//! earlier serve opens with its services, revisions and rules intact, and
//! one written by a newer serve is refused without being touched.
//!
//! `tests/fixtures/main-state/switchyard.db` was written by the serve of
//! the release before numbered migrations; `tests/fixtures/main-state/make`
//! makes it again from given binaries.

mod support;

use std::path::Path;

use serde_json::Value;
use support::Env;
use support::serves::serve_exits;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/main-state/switchyard.db"
);

fn user_version(db: &Path) -> u32 {
    let conn = rusqlite::Connection::open(db).expect("open the state database");
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version")
}

fn service<'a>(ls: &'a Value, name: &str) -> &'a Value {
    ls.as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("{name} is listed: {ls:#}"))
}

fn roles(service: &Value) -> Vec<(String, String)> {
    service["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| {
            (
                r["version"].as_str().expect("version").to_owned(),
                r["role"].as_str().expect("role").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_of_the_release_before_opens_with_its_services_intact() {
    let mut env = Env::new(&[]);
    std::fs::create_dir_all(&env.state_dir).expect("state dir");
    let db = env.state_dir.join("switchyard.db");
    std::fs::copy(FIXTURE, &db).expect("copy the fixture");
    assert_eq!(
        user_version(&db),
        0,
        "the fixture predates numbered migrations"
    );
    env.launch("127.0.0.1:0", "127.0.0.1:0").await;

    let ls = env.ls().await;
    let shop = service(&ls, "shop");
    let mut shop_roles = roles(shop);
    shop_roles.sort();
    assert_eq!(
        shop_roles,
        [
            ("1.0.0".to_owned(), "main".to_owned()),
            ("1.1.0".to_owned(), "canary".to_owned())
        ],
        "{ls:#}"
    );
    assert_eq!(shop["revision"], 4, "{ls:#}");
    assert_eq!(
        roles(service(&ls, "blog")),
        [("2.0.0".to_owned(), "main".to_owned())],
        "{ls:#}"
    );

    let history = env.history("shop").await;
    let actions: Vec<&str> = history
        .as_array()
        .expect("revisions")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "add rule beta",
            "canary 1.1.0 at 25%",
            "deploy 1.1.0 as shadow",
            "deploy 1.0.0 as main"
        ],
        "{history:#}"
    );
    let rules = env.cli(&["route", "ls", "shop"]).await.ok().stdout;
    assert!(
        rules.contains("beta") && rules.contains("x-beta"),
        "{rules}"
    );

    // The migrated state takes changes as before.
    env.cli(&["route", "rm", "shop", "beta"]).await.ok();
    assert_eq!(service(&env.ls().await, "shop")["revision"], 5);

    env.stop().await;
    assert_eq!(
        user_version(&db),
        switchyard::store::SCHEMA_VERSION,
        "serve numbered the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_database_of_a_newer_serve_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let db = state_dir.join("switchyard.db");
    std::fs::copy(FIXTURE, &db).expect("copy the fixture");
    let newer = switchyard::store::SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&db)
        .expect("open")
        .pragma_update(None, "user_version", newer)
        .expect("set user_version");

    let run = serve_exits(&state_dir, &["--admin", "127.0.0.1:0"])
        .await
        .failed();
    assert!(
        run.stderr.contains("newer Switchyard") && run.stderr.contains(&newer.to_string()),
        "{}",
        run.stderr
    );
    assert_eq!(user_version(&db), newer, "left as it was");
}
