//! The references cannot drift from the code: the command-line reference
//! (docs/cli.md and docs/man/) must be what the real binary generates
//! from its clap definitions, and the admin API reference (docs/api.md)
//! must list exactly the routes of the admin router, each of which a real
//! serve answers with a handler of its own.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use support::{Env, SWITCHYARD};

/// Set to write the generated reference over the committed one.
const UPDATE_VAR: &str = "SWITCHYARD_UPDATE_REFERENCE";
const REGENERATE: &str = "cargo run --bin switchyard -- reference --out docs \
     (or SWITCHYARD_UPDATE_REFERENCE=1 cargo test --test reference)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate(out: &Path) {
    let run = std::process::Command::new(SWITCHYARD)
        .args(["reference", "--out"])
        .arg(out)
        .output()
        .expect("run switchyard reference");
    assert!(
        run.status.success(),
        "switchyard reference failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The files of `dir` (relative names) and their contents.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(
        "cli.md".to_owned(),
        std::fs::read(dir.join("cli.md")).unwrap_or_default(),
    )];
    let mut man: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("man"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "1"))
                .map(|p| {
                    let name = format!("man/{}", p.file_name().expect("name").to_string_lossy());
                    (name, std::fs::read(&p).expect("read man page"))
                })
                .collect()
        })
        .unwrap_or_default();
    man.sort();
    out.extend(man);
    out
}

#[test]
fn committed_cli_reference_is_what_the_code_generates() {
    let docs = root().join("docs");
    if std::env::var_os(UPDATE_VAR).is_some() {
        generate(&docs);
    }
    let fresh = tempfile::tempdir().expect("temp dir");
    generate(fresh.path());
    let generated = files(fresh.path());
    let committed = files(&docs);
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>();
    assert_eq!(
        names(&committed),
        names(&generated),
        "the pages in docs/ are not the ones the CLI's commands make; regenerate: {REGENERATE}"
    );
    for ((name, want), (_, have)) in generated.iter().zip(&committed) {
        if want != have {
            let want = String::from_utf8_lossy(want);
            let have = String::from_utf8_lossy(have);
            let line = want
                .lines()
                .zip(have.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| want.lines().count().min(have.lines().count()));
            panic!(
                "docs/{name} differs from what the code generates, from line {}:\n  generated: {:?}\n  committed: {:?}\nregenerate: {REGENERATE}",
                line + 1,
                want.lines().nth(line).unwrap_or("(end)"),
                have.lines().nth(line).unwrap_or("(end)"),
            );
        }
    }
}

/// `METHOD PATH` of every route the admin router declares: read from the
/// `.route(PATH, get(..).post(..))` calls in its source.
fn router_routes() -> BTreeSet<String> {
    let handover = std::fs::read_to_string(root().join("src/handover.rs")).expect("handover.rs");
    let handover_path = Regex::new(r#"pub const API_PATH: &str = "([^"]+)";"#)
        .expect("pattern")
        .captures(&handover)
        .expect("handover's API_PATH")[1]
        .to_owned();
    let method = Regex::new(r"\b(get|post|put|delete|patch)\(").expect("method pattern");
    let mut routes = BTreeSet::new();
    for file in ["src/api.rs", "src/api/dashboard.rs"] {
        let source = std::fs::read_to_string(root().join(file)).expect("router source");
        for call in source.split(".route(").skip(1) {
            let args = balanced(call);
            let (path, methods) = args.split_once(',').expect("route(PATH, METHODS)");
            let path = match path.trim() {
                "crate::handover::API_PATH" => handover_path.clone(),
                quoted => quoted.trim_matches('"').to_owned(),
            };
            for m in method.captures_iter(methods) {
                routes.insert(format!("{} {path}", m[1].to_uppercase()));
            }
        }
    }
    routes
}

/// The text of a call's arguments: `text` up to the parenthesis that
/// closes the one before it.
fn balanced(text: &str) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return &text[..i],
            ')' => depth -= 1,
            _ => {}
        }
    }
    text
}

/// `METHOD PATH` of every row of docs/api.md's route table.
fn documented_routes() -> BTreeSet<String> {
    let page = std::fs::read_to_string(root().join("docs/api.md")).expect("docs/api.md");
    let row =
        Regex::new(r"(?m)^\| `(GET|POST|PUT|DELETE|PATCH) (/[^`]*)` \|").expect("row pattern");
    row.captures_iter(&page)
        .map(|c| format!("{} {}", &c[1], &c[2]))
        .collect()
}

#[test]
fn api_reference_lists_exactly_the_routes_of_the_router() {
    let router = router_routes();
    assert!(
        router.len() > 40,
        "the router's routes were not found: {router:?}"
    );
    let documented = documented_routes();
    let missing: Vec<_> = router.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&router).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/api.md and the admin router disagree.\nroutes without a row in docs/api.md: {missing:?}\nrows the router does not have: {extra:?}"
    );
}

/// Each documented route, asked of a real serve, reaches a handler: the
/// answer is never the router's "no such endpoint" or "does not take"
/// fallback. (The handover is asked with a method it does not take, which
/// must be told apart from an unknown path, so that no handover starts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_reaches_a_handler_of_a_real_serve() {
    let env = Env::start().await;
    for route in documented_routes() {
        let (method, path) = route.split_once(' ').expect("METHOD PATH");
        let path = path
            .replace("{name}", "nosuch")
            .replace("{version}", "1.0.0")
            .replace("{host}", "nosuch.example")
            .replace("{selector}", "1")
            .replace("{file}", "nosuch.js");
        let url = format!("{}{path}", env.admin());
        let probe_method = if path == "/v1/handover" {
            "GET"
        } else {
            method
        };
        let mut request = env
            .http
            .request(probe_method.parse().expect("method"), &url)
            .header("x-switchyard-client", "reference-test")
            .timeout(Duration::from_secs(30));
        if matches!(probe_method, "POST" | "PUT") {
            request = request
                .header("content-type", "application/json")
                .body("{}");
        }
        let answer = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{route}: {e}"));
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        if path == "/v1/handover" {
            assert_eq!(
                status, 405,
                "{route}: the path is unknown to the router: {body}"
            );
            continue;
        }
        assert!(
            !body.contains("the admin API has no") && status != 405,
            "{route}: documented, but the router has no handler for it ({status}): {body}"
        );
    }
}
