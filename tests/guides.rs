//! Every guide is a test: the README's tour and each walkthrough in
//! `docs/` are read from the Markdown and run in order against a real
//! serve (the real binary, free ports, a fresh folder), and the output
//! each page shows is checked. A guide that no longer works fails here.
//! The conventions are in CONTRIBUTING.md, "Guides are tested".

#[path = "support/guide.rs"]
mod guide;
mod support;

use std::path::{Path, PathBuf};

use guide::{Block, GuideRun, blocks, shows};
use support::{Env, component};

/// Every page with commands to run, and the test that runs it.
const GUIDES: &[&str] = &[
    "README.md",
    "docs/blue-green.md",
    "docs/canary.md",
    "docs/shadow.md",
    "docs/versioned-releases.md",
    "docs/containers.md",
    "docs/traffic-policy.md",
    "docs/proxy.md",
    "docs/operating.md",
    "docs/dashboard.md",
    "docs/api.md",
    "docs/tls.md",
    "docs/tcp.md",
    "docs/fleet.md",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(page: &str) -> String {
    std::fs::read_to_string(root().join(page)).unwrap_or_else(|e| panic!("read {page}: {e}"))
}

/// A serve like the one the guides start: the guide's folder as working
/// directory and its state in `./.switchyard`.
async fn serve_for_guides() -> Env {
    serve_for_guides_with(&[]).await
}

/// The same, with extra arguments for serve.
async fn serve_for_guides_with(extra: &[&str]) -> Env {
    let mut env = Env::new(extra);
    env.state_dir = env.state_dir.with_file_name(".switchyard");
    env.serve_vars
        .push(("PATH".to_owned(), guide::path_with_binaries()));
    env.launch("127.0.0.1:0", "127.0.0.1:0").await;
    env
}

async fn run_guide(page: &str) {
    run_guide_with(page, &[]).await;
}

async fn run_guide_with(page: &str, serve_args: &[&str]) {
    let env = serve_for_guides_with(serve_args).await;
    let text = read(page);
    let mut run = GuideRun::new(&env, page);
    if let Err(e) = run.run(&text).await {
        drop(run);
        panic!("{e}\n--- serve's log:\n{}", env.serve_log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_tour_runs_as_written() {
    run_guide("README.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_guide_runs_as_written() {
    run_guide("docs/blue-green.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_guide_runs_as_written() {
    run_guide("docs/canary.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_guide_runs_as_written() {
    run_guide("docs/shadow.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_releases_guide_runs_as_written() {
    run_guide("docs/versioned-releases.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_guide_runs_as_written() {
    if !component::command("containers_guide_runs_as_written", "python3") {
        return;
    }
    run_guide("docs/containers.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_policy_guide_runs_as_written() {
    run_guide("docs/traffic-policy.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_guide_runs_as_written() {
    run_guide("docs/proxy.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operating_guide_runs_as_written() {
    if !component::command("operating_guide_runs_as_written", "sqlite3") {
        return;
    }
    run_guide("docs/operating.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_guide_runs_as_written() {
    run_guide("docs/dashboard.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_guide_runs_as_written() {
    if !component::redis("tcp_guide_runs_as_written") {
        return;
    }
    run_guide("docs/tcp.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reference_examples_run_as_written() {
    run_guide("docs/api.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_guide_runs_as_written() {
    let test = "tls_guide_runs_as_written";
    if !component::openssl(test) || !component::command(test, "curl") {
        return;
    }
    if !support::pebble::Pebble::available(test) {
        return;
    }
    run_guide_with("docs/tls.md", &["--tls-listen", "127.0.0.1:0"]).await;
}

/// The fleet guide starts its own etcd members and nodes (in the
/// background of its blocks, on fixed loopback ports below the ephemeral
/// range, so no test's port 0 takes them); it stops them in its last
/// block. When it fails before that, the guide's process groups are
/// killed, and this guard then kills what the nodes started in groups of
/// their own: their instances.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_guide_runs_as_written() {
    let test = "fleet_guide_runs_as_written";
    if !component::command(test, "etcd") || !component::command(test, "curl") {
        return;
    }
    struct NodeLeftovers(PathBuf);
    impl Drop for NodeLeftovers {
        fn drop(&mut self) {
            for node in ["node1", "node2", "node3", "single"] {
                let dir = self.0.join(node);
                let dirs = [dir.clone(), std::fs::canonicalize(&dir).unwrap_or(dir)];
                for dir in &dirs {
                    let pids = support::serve_pids(dir)
                        .into_iter()
                        .chain(support::instance_pids(dir));
                    for pid in pids {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
    }
    let env = serve_for_guides().await;
    let _leftovers = NodeLeftovers(env.dir.path().to_owned());
    let text = read("docs/fleet.md");
    let mut run = GuideRun::new(&env, "docs/fleet.md");
    if let Err(e) = run.run(&text).await {
        drop(run);
        panic!("{e}");
    }
}

/// A page with runnable blocks that no test runs would be a guide that
/// can break unnoticed.
#[test]
fn every_page_with_commands_is_run_by_a_test() {
    let mut pages = vec!["README.md".to_owned(), "CONTRIBUTING.md".to_owned()];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs folder") {
        let path = entry.expect("docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(format!(
                "docs/{}",
                path.file_name().expect("name").to_string_lossy()
            ));
        }
    }
    for page in pages {
        let runnable = blocks(&read(&page))
            .iter()
            .any(|b| !matches!(b, Block::File { .. }));
        assert_eq!(
            runnable,
            GUIDES.contains(&page.as_str()),
            "{page}: a page with ```sh or ```console blocks needs a test in tests/guides.rs \
             (and one without them none); mark blocks not to run as ```sh norun"
        );
    }
}

/// The failure a broken guide must cause: a command whose output is not
/// what the page shows, and one that fails where the page shows success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guide_whose_output_differs_fails_naming_the_line() {
    let env = serve_for_guides().await;
    let wrong_output = "Text\n\n```console\n$ switchyard ls\nNAME THAT IS NOT THERE\n```\n";
    let error = GuideRun::new(&env, "wrong-output")
        .run(wrong_output)
        .await
        .expect_err("a guide showing other output fails");
    assert!(
        error.contains("line 4") && error.contains("NAME THAT IS NOT THERE"),
        "{error}"
    );

    let failing = "```console\n$ switchyard assign nothing 1.0.0 --yes\n```\n";
    let error = GuideRun::new(&env, "failing")
        .run(failing)
        .await
        .expect_err("a guide whose command fails fails");
    assert!(error.contains("it failed"), "{error}");

    let failing_script = "```sh\nfalse\necho never\n```\n";
    let error = GuideRun::new(&env, "failing-script")
        .run(failing_script)
        .await
        .expect_err("a failing sh block fails the guide");
    assert!(error.contains("the sh block failed"), "{error}");
}

#[test]
fn shown_lines_match_in_order_with_gaps_and_wildcards() {
    let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
    let output = "MAIN  NAME  VERSION\n*     web   2.0.0    main  ready  3s ago\nother\n";
    assert!(
        shows(
            output,
            &lines("MAIN NAME VERSION\n*  web  2.0.0  main  ready  ...")
        )
        .is_ok()
    );
    assert!(shows(output, &lines("...\nother")).is_ok());
    assert_eq!(
        shows(output, &lines("other\nMAIN NAME VERSION")),
        Err("MAIN NAME VERSION".to_owned())
    );
    assert!(shows(output, &lines("* web 1.0.0 ...")).is_err());
}

/// Every relative link between the pages leads to a file, and every
/// `#anchor` to a heading of it.
#[test]
fn links_between_pages_resolve() {
    let mut pages = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs folder") {
        let path = entry.expect("docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").expect("link pattern");
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("read page");
        for found in link.captures_iter(&text) {
            let target = &found[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                page.clone()
            } else {
                page.parent().expect("folder").join(file)
            };
            if !file.exists() {
                broken.push(format!("{}: {target}: no such file", page.display()));
            } else if !anchor.is_empty() && !anchors(&file).contains(&anchor.to_owned()) {
                broken.push(format!("{}: {target}: no such heading", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The anchors of a Markdown page's headings, as GitHub makes them.
fn anchors(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap_or_default();
    let mut in_block = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if !in_block && line.starts_with('#') {
            let title = line.trim_start_matches('#').trim().to_lowercase();
            let slug: String = title
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            out.push(slug);
        }
    }
    out
}
