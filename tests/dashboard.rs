//! The dashboard in a real browser (headless chromium over WebDriver)
//! against a real serve with real hello-server releases: what it shows,
//! that it follows changes made elsewhere without a reload, the actions
//! clicked in it, the token, and a page reached through a foreign name.
//! The tests write screenshots of each page under the build's target
//! folder; with `SWITCHYARD_UPDATE_SCREENSHOTS=1` they replace docs/dashboard.md's
//! in docs/screenshots/.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::Env;
use support::browser::{Browser, FOREIGN_HOST};
use support::http1::Http1;
use support::listing::{release, roles};
use support::load::{Clients, CountingLoad};

/// A laptop's screen.
const WIDTH: u32 = 1366;
const HEIGHT: u32 = 900;

/// Escape, as WebDriver sends it.
const ESCAPE: &str = "\u{e00c}";
/// Tab.
const TAB: &str = "\u{e004}";

/// The row of `version` in the releases of `service` (either page).
fn row(service: &str, version: &str) -> String {
    format!("table[data-key='releases-{service}'] tr[data-version='{version}']")
}

/// The service page of `name`.
fn service_page(env: &Env, name: &str) -> String {
    format!("{}/ui#/services/{name}", env.admin())
}

/// A browser showing the page of service `name`.
async fn browse_service(env: &Env, name: &str) -> Option<Browser> {
    let browser = Browser::start(WIDTH, HEIGHT).await?;
    browser.open(&service_page(env, name)).await;
    Some(browser)
}

/// Clicks `action` on the row of shop's `version`; returns what the
/// dialog it opens says.
async fn open_action(browser: &Browser, version: &str, action: &str) -> String {
    browser
        .click(&format!(
            "{} button[data-action='{action}']",
            row("shop", version)
        ))
        .await;
    browser
        .wait_for_text_that("dialog[open]", "a dialog", |_| true)
        .await
}

/// Clicks `action` on the row of `version`, confirms, and waits for the
/// notice that says it was done.
async fn click_and_confirm(browser: &Browser, version: &str, action: &str, done: &str) {
    open_action(browser, version, action).await;
    browser.click("dialog[open] button[type='submit']").await;
    browser.wait_for_text("#notice", done).await;
    browser.wait_until_gone("dialog[open]").await;
}

/// `shop` with 1.1.0 as a canary at `percent`, its page open and showing it.
async fn shop_with_a_canary_on_the_page(percent: u8) -> Option<(Env, Browser)> {
    let env = shop_with_two_releases().await;
    let percent = percent.to_string();
    env.cli(&["canary", "shop", "1.1.0", "--percent", &percent])
        .await
        .ok();
    let browser = browse_service(&env, "shop").await?;
    browser
        .wait_for_text(&row("shop", "1.1.0"), &format!("canary {percent} %"))
        .await;
    Some((env, browser))
}

/// `shop` with 1.0.0 as main and 1.1.0 beside it as a shadow.
async fn shop_with_two_releases() -> Env {
    let env = Env::start().await;
    env.deploy("shop", "1.0.0", &[], &[]).await.ok();
    env.deploy("shop", "1.1.0", &[], &[]).await.ok();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_page_lists_what_ls_lists() {
    let env = shop_with_two_releases().await;
    env.cli(&["canary", "shop", "1.1.0", "--percent", "10"])
        .await
        .ok();
    env.deploy(
        "search",
        "2.0.0",
        &["--host", "search.example", "--replicas", "2"],
        &[],
    )
    .await
    .ok();
    // Clients of their own (the cookie is the canary's client key).
    for n in 0..40 {
        let answer = env
            .http
            .get(format!("{}/services/shop/", env.proxy()))
            .header("cookie", format!("switchyard-id=client-{n}"))
            .send()
            .await
            .expect("through the proxy");
        assert_eq!(answer.status(), 200);
    }

    let Some(browser) = Browser::start(WIDTH, HEIGHT).await else {
        return;
    };
    browser.open(&format!("{}/ui", env.admin())).await;
    let ls = env.ls().await;
    let services = ls.as_array().expect("ls lists services");
    browser.wait_for("section.service-card").await;
    assert_eq!(
        browser.count("section.service-card").await,
        services.len(),
        "one card per service"
    );
    for service in services {
        let name = service["name"].as_str().expect("name");
        let card = format!("section[data-key='svc-{name}']");
        let head = browser.wait_for_text(&card, name).await;
        assert!(head.contains(&format!("/services/{name}/")), "{head}");
        for host in service["hosts"].as_array().expect("hosts") {
            assert!(head.contains(host.as_str().expect("host")), "{head}");
        }
        let listed = roles(&ls, name);
        assert_eq!(
            browser.count(&format!("{card} tbody tr")).await,
            listed.len(),
            "one row per release of {name}"
        );
        for (version, role) in listed {
            let shown = browser.wait_for_text(&row(name, &version), &version).await;
            let instances = release(&ls, name, &version)["instances"]
                .as_array()
                .expect("instances")
                .len();
            assert!(shown.contains(&role), "{name} {version} is {role}: {shown}");
            assert!(
                shown.contains(&format!("ready {instances}/{instances}")),
                "{shown}"
            );
        }
    }
    assert!(
        browser
            .wait_for_text(&row("shop", "1.1.0"), "canary")
            .await
            .contains("canary 10 %"),
        "the canary's share is shown"
    );
    // The last minute's rate comes from the same numbers as `status`.
    let rate = format!("{} td:nth-of-type(3)", row("shop", "1.0.0"));
    browser
        .wait_for_text_that(&rate, "a rate above zero", |text| {
            text.ends_with("/s") && text != "0/s"
        })
        .await;
    browser.screenshot("services").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_change_made_with_the_cli_shows_without_a_reload() {
    let Some((env, browser)) = shop_with_a_canary_on_the_page(10).await else {
        return;
    };
    browser.run("window.stillTheSamePage = true").await;
    // An operator is about to press a button when the update comes in.
    browser
        .run("document.querySelector(\".history button[data-revision='1']\").focus()")
        .await;

    env.cli(&["canary", "shop", "1.1.0", "--percent", "30"])
        .await
        .ok();
    browser
        .wait_for_text(&row("shop", "1.1.0"), "canary 30 %")
        .await;
    let split = browser.wait_for_text(".share-legend", "30 %").await;
    assert!(split.contains("70 %"), "main keeps the rest: {split}");
    browser
        .wait_for_text(".routes", "canary 30% of clients")
        .await;
    assert_eq!(
        browser.run("return window.stillTheSamePage === true").await,
        json!(true),
        "the page was not reloaded"
    );
    browser
        .wait_for_text(".history tbody tr", "canary 1.1.0 at 30%")
        .await;
    assert_eq!(
        browser
            .run("return document.activeElement.dataset.revision || ''")
            .await,
        json!("1"),
        "the focused button kept its focus while rows were added above it"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assign_clicked_in_the_page_changes_main() {
    let env = shop_with_two_releases().await;
    let Some(browser) = browse_service(&env, "shop").await else {
        return;
    };
    // The dialog says what will happen; Escape closes it and changes nothing.
    let said = open_action(&browser, "1.1.0", "assign").await;
    assert!(said.contains("Make shop 1.1.0 main?"), "{said}");
    assert!(
        said.contains("1.0.0, main now, keeps running as standby"),
        "{said}"
    );
    for _ in 0..6 {
        browser.press(TAB).await;
        assert_eq!(
            browser
                .run("return document.getElementById('dialog').contains(document.activeElement)")
                .await,
            json!(true),
            "Tab stays in the dialog"
        );
    }
    browser.screenshot("dialog").await;
    browser.press(ESCAPE).await;
    browser.wait_until_gone("dialog[open]").await;
    assert_eq!(
        browser
            .run("return document.activeElement.dataset.action || ''")
            .await,
        json!("assign"),
        "focus goes back to the button"
    );
    assert_eq!(env.get("/services/shop/").await.1, "1.0.0");

    click_and_confirm(&browser, "1.1.0", "assign", "1.1.0 is main").await;
    let (status, version, _) = env.get("/services/shop/").await;
    assert_eq!((status, version.as_str()), (200, "1.1.0"));
    assert_eq!(env.history("shop").await[0]["actor"], "dashboard");
    browser.wait_for_text(&row("shop", "1.1.0"), "main").await;
    browser
        .wait_for_text(&row("shop", "1.0.0"), "standby")
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_share_set_in_the_page_refuses_a_bad_number_and_sends_a_good_one() {
    let env = shop_with_two_releases().await;
    let Some(browser) = browse_service(&env, "shop").await else {
        return;
    };
    open_action(&browser, "1.1.0", "canary").await;
    let field = browser.wait_for("dialog[open] input#dialog-input").await;
    field.clear().await.expect("clear");
    field.send_keys("150\n").await.expect("type");
    browser
        .wait_for_text(
            "dialog[open] .dialog-error",
            "Give a whole number from 0 to 100.",
        )
        .await;
    assert!(
        env.ls().await[0]["policy"]["canary"].is_null(),
        "nothing was sent"
    );

    let field = browser.wait_for("dialog[open] input#dialog-input").await;
    field.clear().await.expect("clear");
    field.send_keys("20\n").await.expect("type");
    browser
        .wait_for_text("#notice", "canary 1.1.0 at 20 %")
        .await;
    let ls = env.ls().await;
    assert_eq!(
        ls[0]["policy"]["canary"],
        json!({"version": "1.1.0", "percent": 20})
    );
    browser
        .wait_for_text(&row("shop", "1.1.0"), "canary 20 %")
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_clicked_in_the_history_brings_that_revision_back() {
    let env = shop_with_two_releases().await;
    env.cli(&["assign", "shop", "1.1.0", "--yes"]).await.ok();
    assert_eq!(env.get("/services/shop/").await.1, "1.1.0");
    let Some(browser) = browse_service(&env, "shop").await else {
        return;
    };
    browser
        .click(".history button[data-action='rollback'][data-revision='2']")
        .await;
    let said = browser
        .wait_for_text("dialog[open]", "Roll shop back to revision 2?")
        .await;
    assert!(said.contains("deploy 1.1.0 as shadow"), "{said}");
    browser.click("dialog[open] button[type='submit']").await;
    browser
        .wait_for_text("#notice", "rolled back to revision 2 (now revision 4)")
        .await;
    assert_eq!(env.get("/services/shop/").await.1, "1.0.0");
    browser
        .wait_for_text_that(".history tbody tr", "revision 4 on top", |text| {
            text.starts_with("4 ") && text.ends_with("current")
        })
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_canary_promote_and_kill_clicked_in_the_page_do_what_they_say() {
    let Some((env, browser)) = shop_with_a_canary_on_the_page(20).await else {
        return;
    };

    click_and_confirm(&browser, "1.1.0", "abort", "every client on main").await;
    assert!(env.ls().await[0]["policy"]["canary"].is_null());
    browser
        .wait_for_text(&row("shop", "1.1.0"), "standby")
        .await;

    click_and_confirm(&browser, "1.1.0", "promote", "promoted to main").await;
    assert_eq!(env.get("/services/shop/").await.1, "1.1.0");
    browser
        .wait_for_text(&row("shop", "1.0.0"), "standby")
        .await;

    click_and_confirm(&browser, "1.0.0", "kill", "1.0.0 killed").await;
    let ls = env.ls().await;
    assert_eq!(
        roles(&ls, "shop"),
        [support::listing::pair("1.1.0", "main")]
    );
    browser.wait_until_gone(&row("shop", "1.0.0")).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_action_shows_the_admin_apis_message() {
    let env = shop_with_two_releases().await;
    let Some(browser) = browse_service(&env, "shop").await else {
        return;
    };
    let said = open_action(&browser, "1.0.0", "kill").await;
    assert!(said.contains("Kill shop 1.0.0?"), "{said}");
    browser.click("dialog[open] button[type='submit']").await;
    let shown = browser
        .wait_for_text("dialog[open] .dialog-error", "1.0.0")
        .await;

    // The same refusal, asked of the admin API directly.
    let answer = env
        .http
        .delete(format!("{}/v1/services/shop/releases/1.0.0", env.admin()))
        .header("x-switchyard-client", "test")
        .send()
        .await
        .expect("admin API answers");
    assert_eq!(answer.status(), 409);
    let body: serde_json::Value = answer.json().await.expect("JSON error");
    assert_eq!(shown, body["error"].as_str().expect("error text"));
    assert_eq!(
        browser.count("dialog[open]").await,
        1,
        "the refusal stays until closed"
    );
    let ls = env.ls().await;
    assert_eq!(
        roles(&ls, "shop"),
        [
            support::listing::pair("1.0.0", "main"),
            support::listing::pair("1.1.0", "shadow")
        ],
        "nothing changed"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_shows_only_the_login_until_it_is_given() {
    let token = "dashboard-token-4711";
    let env = Env::start_with_token(token).await;
    env.deploy("shop", "1.0.0", &[], &[]).await.ok();

    let Some(browser) = Browser::start(WIDTH, HEIGHT).await else {
        return;
    };
    browser.open(&format!("{}/ui", env.admin())).await;
    browser.wait_for("form.login input#token").await;
    let no_data = |page: &str| !page.contains("shop") && !page.contains("1.0.0");
    assert!(no_data(&browser.body().await), "{}", browser.body().await);
    browser.screenshot("login").await;

    let field = browser.wait_for("input#token").await;
    field.send_keys("not-the-token\n").await.expect("type");
    browser
        .wait_for_text(".login .dialog-error", "That token was refused")
        .await;
    assert!(no_data(&browser.body().await), "{}", browser.body().await);
    let page_source = browser.client.source().await.expect("source");
    assert!(no_data(&page_source), "no data in the page's DOM either");

    let field = browser.wait_for("input#token").await;
    field.send_keys(&format!("{token}\n")).await.expect("type");
    browser.wait_for_text(&row("shop", "1.0.0"), "main").await;
    assert_eq!(
        browser
            .run("return [sessionStorage.getItem('switchyard-token'), localStorage.length, document.cookie]")
            .await,
        json!([token, 0, ""]),
        "kept for this tab only"
    );

    browser.click("#sign-out").await;
    browser.wait_for("form.login").await;
    assert!(no_data(&browser.body().await));
    assert_eq!(
        browser
            .run("return sessionStorage.getItem('switchyard-token')")
            .await,
        json!(null)
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reached_through_a_foreign_host_gets_nothing() {
    let env = shop_with_two_releases().await;
    let port = env
        .serve()
        .admin_addr
        .rsplit_once(':')
        .expect("host:port")
        .1
        .to_owned();
    let Some(browser) = Browser::start(WIDTH, HEIGHT).await else {
        return;
    };
    // Through its own address, the dashboard shows shop.
    browser.open(&format!("{}/ui", env.admin())).await;
    browser.wait_for_text(&row("shop", "1.0.0"), "main").await;

    // The same port through a name that resolves to 127.0.0.1, as a page
    // that rebinds its DNS would reach it.
    for path in ["/ui", "/ui/app.js", "/v1/services"] {
        browser
            .open(&format!("http://{FOREIGN_HOST}:{port}{path}"))
            .await;
        let body = browser.body().await;
        assert!(
            body.contains("does not answer to the host"),
            "{path}: {body}"
        );
        assert!(!body.contains("shop"), "{path}: {body}");
        assert_eq!(browser.count("#main").await, 0, "{path}: no dashboard");
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_the_api_show_as_text_never_as_markup() {
    let env = shop_with_two_releases().await;
    let markup = "<img src=x id=injected>";
    env.cli(&[
        "route",
        "add",
        "shop",
        "--name",
        "tagged",
        "--header",
        &format!("x-tag={markup}"),
        "--to",
        "1.1.0",
    ])
    .await
    .ok();
    let Some(browser) = browse_service(&env, "shop").await else {
        return;
    };
    browser.wait_for_text(".routes", markup).await;
    assert_eq!(browser.count("#injected").await, 0, "shown, not parsed");
    browser.close().await;
}

/// A rollout plan that pauses after its first analysis, for the operator,
/// then waits long enough at 50% for the operator's pause and promotions.
const PLAN: &str = r#"
version = "1.1.0"
sticky_header = "x-user-id"
steps = [
    { step = "set-weight", percent = 25 },
    { step = "analysis" },
    { step = "pause" },
    { step = "set-weight", percent = 50 },
    { step = "pause", seconds = 600 },
    { step = "pause", seconds = 600 },
    { step = "analysis" },
]
[analysis]
interval_seconds = 2
min_requests = 5
max_error_rate = 20.0
max_latency = { quantile = 0.99, ms = 500.0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_page_follows_a_rollout_and_resumes_pauses_and_promotes_it() {
    let env = Env::start().await;
    env.deploy(
        "shop",
        "1.0.0",
        &["--host", "shop.example"],
        &["--fail-rate", "0.03"],
    )
    .await
    .ok();
    env.deploy("shop", "1.1.0", &[], &["--latency-ms", "3"])
        .await
        .ok();
    env.deploy("shop", "1.2.0", &[], &[]).await.ok();
    env.cli(&[
        "route", "add", "shop", "--name", "beta", "--header", "x-beta=1", "--to", "1.1.0",
    ])
    .await
    .ok();
    // hello-server answers with its own pid, port and version.
    env.cli(&[
        "shadow",
        "compare",
        "shop",
        "--ignore-path",
        "$.pid",
        "--ignore-path",
        "$.port",
        "--ignore-path",
        "$.version",
    ])
    .await
    .ok();
    let plan = env.dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).expect("write plan");

    // Clients with keys of their own, at a bounded pace, for at most a minute.
    let conns = Clients::new(env.proxy(), 2);
    let load = CountingLoad::start_until(
        2,
        Instant::now() + Duration::from_secs(60),
        move |client, n| {
            let conns = conns.clone();
            async move {
                let user = format!("user-{client}-{}", n % 40);
                let answer = conns
                    .get_with(client, "/services/shop/", &[("x-user-id", &user)])
                    .await;
                tokio::time::sleep(Duration::from_millis(25)).await;
                answer.map(|_| ())
            }
        },
    );
    env.cli(&[
        "rollout",
        "shop",
        "1.1.0",
        "--plan",
        plan.to_str().expect("utf-8"),
    ])
    .await
    .ok();

    let Some(browser) = browse_service(&env, "shop").await else {
        return;
    };
    let rollout = browser.wait_for_text(".rollout", "paused").await;
    assert!(rollout.contains("Step 3 of 7"), "{rollout}");
    let checks = browser.wait_for_text(".checks", "pass").await;
    assert!(
        checks.contains("at most 20"),
        "the threshold is shown: {checks}"
    );
    browser
        .wait_until(
            "[...document.querySelectorAll('.chart path.line')]\
             .some(p => (p.getAttribute('d').match(/L/g) || []).length >= 1)",
            "charts with two points",
        )
        .await;
    browser
        .wait_for_text(".shadow-report[data-key='1.2.0']", "% match")
        .await;
    browser.wait_for_text(".events", "step 2 done").await;
    browser.screenshot("service").await;

    browser
        .click(".rollout button[data-action='rollout-resume']")
        .await;
    browser
        .wait_for_text("dialog[open]", "Resume the rollout of shop 1.1.0?")
        .await;
    browser.click("dialog[open] button[type='submit']").await;
    browser
        .wait_for_text("#notice", "resumed at step 4 of 7")
        .await;

    // Pause it in the ten-minute wait at 50%.
    browser.wait_for_text(".rollout", "Step 5 of 7").await;
    browser
        .click(".rollout button[data-action='rollout-pause']")
        .await;
    let dialog = browser
        .wait_for_text("dialog[open]", "Pause the rollout of shop 1.1.0?")
        .await;
    assert!(
        dialog.contains("holds at step 5 of 7") && dialog.contains("stuck limit"),
        "the dialog says what will happen: {dialog}"
    );
    browser.click("dialog[open] button[type='submit']").await;
    browser
        .wait_for_text("#notice", "paused at step 5 of 7")
        .await;
    let view: serde_json::Value = serde_json::from_str(
        &env.cli(&["rollout", "status", "shop", "--json"])
            .await
            .ok()
            .stdout,
    )
    .expect("rollout status JSON");
    assert_eq!(view["state"]["status"]["by_hand"], true, "{view:#}");

    // Promote to the next step: the second wait.
    browser
        .wait_for(".rollout button[data-action='rollout-resume']")
        .await;
    browser.wait_until_gone("#notice p").await;
    browser
        .click(".rollout button[data-action='rollout-promote']")
        .await;
    let dialog = browser
        .wait_for_text("dialog[open]", "Skip step 5 of the rollout of shop 1.1.0?")
        .await;
    assert!(dialog.contains("goes on with step 6 of 7"), "{dialog}");
    browser.click("dialog[open] button[type='submit']").await;
    browser
        .wait_for_text("#notice", "skipped to step 6 of 7")
        .await;

    // Promote fully: 1.1.0 is main now, for every client.
    browser.wait_for_text(".rollout", "Step 6 of 7").await;
    // The notice floats over the page's corner until it goes.
    browser.wait_until_gone("#notice p").await;
    browser
        .click(".rollout button[data-action='rollout-promote-full']")
        .await;
    let dialog = browser
        .wait_for_text("dialog[open]", "Make shop 1.1.0 main now?")
        .await;
    assert!(dialog.contains("promoted by hand"), "{dialog}");
    browser.click("dialog[open] button[type='submit']").await;
    browser
        .wait_for_text(
            "#notice",
            "1.1.0 is main; the rollout ended, promoted by hand",
        )
        .await;
    browser.wait_for_text(".rollout", "promoted-by-hand").await;
    let answer = Http1::new(env.proxy())
        .get_with("/services/shop/", &[("x-user-id", "anyone")])
        .await
        .expect("an answer through the proxy");
    assert_eq!(answer.1, "1.1.0", "main now answers: {answer:?}");
    let (passed, failures) = load.finish().await;
    assert!(passed > 0);
    let failed_not_500: Vec<&String> = failures.iter().filter(|f| !f.starts_with("500 ")).collect();
    assert!(failed_not_500.is_empty(), "{failed_not_500:?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inconclusive_rollout_shows_every_measured_value_in_the_page() {
    let env = Env::start().await;
    env.deploy("shop", "1.0.0", &[], &[]).await.ok();
    env.deploy("shop", "1.1.0", &["--standby"], &[]).await.ok();
    // Nobody calls it: the analysis cannot judge, but measures all.
    env.cli(&[
        "rollout",
        "shop",
        "1.1.0",
        "--steps",
        "20",
        "--interval",
        "1s",
        "--min-requests",
        "5",
        "--max-latency",
        "0.99:250",
    ])
    .await
    .ok();
    let Some(browser) = browse_service(&env, "shop").await else {
        return;
    };
    browser.wait_for_text(".rollout", "inconclusive").await;
    let checks = browser
        .wait_for_text(".checks", "0.00% (0 of 0 requests)")
        .await;
    for shown in [
        "requests",
        "at least 5",
        "error rate",
        "at most 1%",
        "latency p99",
        "at most 250ms",
    ] {
        assert!(checks.contains(shown), "`{shown}` in {checks}");
    }
    assert_eq!(
        browser.count(".checks .verdict.inconclusive").await,
        3,
        "every check is marked inconclusive: {checks}"
    );
    browser.close().await;
}

/// Registers `hub` releases that all serve v1 and need no schema; the
/// first is deployed as main.
async fn hub_with_registered_releases(env: &Env, versions: &[&str]) {
    for (i, version) in versions.iter().enumerate() {
        let folder = env.dir.path().join(format!("hub-{version}"));
        std::fs::create_dir_all(&folder).expect("release folder");
        let manifest = folder.join("switchyard.toml");
        std::fs::write(
            &manifest,
            format!(
                "name = \"hub\"\nversion = \"{version}\"\n\
                 command = [\"{}\", \"--port\", \"{{port}}\", \"--version\", \"{version}\"]\n\
                 api_versions = [\"v1\"]\n[health]\npath = \"/healthz\"\ninterval = \"200ms\"\n",
                support::HELLO
            ),
        )
        .expect("write manifest");
        let manifest = manifest.to_str().expect("utf-8 path");
        if i == 0 {
            env.cli(&["deploy", "hub", version, "--manifest", manifest])
                .await
                .ok();
        } else {
            env.cli(&["release", "add", manifest]).await.ok();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_shows_its_plan_and_goes_on_when_asked() {
    let env = Env::start().await;
    hub_with_registered_releases(&env, &["1.0.0", "1.1.0", "1.2.0"]).await;
    let started = env
        .http
        .post(format!("{}/v1/services/hub/upgrade", env.admin()))
        .json(&json!({"to": "1.2.0", "between": {"kind": "approve"}}))
        .send()
        .await
        .expect("admin API answers");
    assert_eq!(
        started.status(),
        200,
        "{}",
        started.text().await.unwrap_or_default()
    );

    let Some(browser) = browse_service(&env, "hub").await else {
        return;
    };
    let upgrade = browser.wait_for_text(".upgrade", "waiting").await;
    assert!(upgrade.contains("Upgrade to 1.2.0"), "{upgrade}");
    let plan = browser
        .wait_for_text(".upgrade .plan", "1.1.0 → 1.2.0")
        .await;
    assert!(plan.contains("1.0.0 → 1.1.0 — reversible done"), "{plan}");
    assert_eq!(env.get("/services/hub/").await.1, "1.1.0");

    browser
        .click(".upgrade button[data-action='upgrade-continue']")
        .await;
    browser
        .wait_for_text("dialog[open]", "Go on with the upgrade of hub to 1.2.0?")
        .await;
    browser.click("dialog[open] button[type='submit']").await;
    browser.wait_for_text(".upgrade h3", "done").await;
    assert_eq!(env.get("/services/hub/").await.1, "1.2.0");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_site_cannot_frame_the_dashboard() {
    let env = shop_with_two_releases().await;
    // Another origin on this machine: a page the proxy answers itself.
    let decoy = format!(
        "<iframe id=frame width=900 height=600 onload='window.frameDone = true' src='{}/ui'></iframe>",
        env.admin()
    );
    env.cli(&[
        "route",
        "add",
        "shop",
        "--name",
        "decoy",
        "--path",
        "/decoy",
        "--respond",
        "200",
        "--content-type",
        "text/html",
        "--body",
        &decoy,
    ])
    .await
    .ok();
    let Some(browser) = Browser::start(WIDTH, HEIGHT).await else {
        return;
    };
    // At the top, the page shows shop.
    browser.open(&format!("{}/ui", env.admin())).await;
    browser.wait_for_text(&row("shop", "1.0.0"), "main").await;

    // Inside the other origin's frame (to click its buttons through a
    // decoy, say), the browser refuses to show it.
    browser
        .open(&format!("{}/services/shop/decoy", env.proxy()))
        .await;
    browser
        .wait_until("window.frameDone", "the frame finished loading")
        .await;
    browser
        .client
        .enter_frame(0)
        .await
        .expect("enter the frame");
    let framed = browser
        .run("return location.href + ' ' + document.documentElement.outerHTML")
        .await;
    assert_eq!(browser.count("#main").await, 0, "framed: {framed}");
    browser
        .client
        .enter_parent_frame()
        .await
        .expect("leave the frame");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_no_token_but_its_data_does_and_each_file_carries_its_guards() {
    let env = Env::start_with_token("files-token").await;
    let admin = env.admin();
    let plain = support::http_client()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let root = plain.get(format!("{admin}/")).send().await.expect("GET /");
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()["location"], "/ui");
    for (path, media) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let answer = plain
            .get(format!("{admin}{path}"))
            .send()
            .await
            .expect(path);
        assert_eq!(answer.status(), 200, "{path} needs no token");
        let headers = answer.headers();
        let header = |name: &str| headers[name].to_str().expect("ascii").to_owned();
        assert!(header("content-type").starts_with(media), "{path}");
        assert!(
            header("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
    }
    let missing = plain
        .get(format!("{admin}/ui/nothing.js"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);

    // The data behind the page does need the token, trends included.
    for path in ["/v1/services", "/v1/services/shop/trends"] {
        let answer = plain
            .get(format!("{admin}{path}"))
            .send()
            .await
            .expect(path);
        assert_eq!(answer.status(), 401, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trends_hold_each_releases_recent_points() {
    let env = shop_with_two_releases().await;
    let url = format!("{}/v1/services/shop/trends", env.admin());
    let mut sent = 0;
    env.eventually(
        "a trend point of main with the requests sent",
        Duration::from_secs(20),
        || {
            let (env, url) = (&env, &url);
            sent += 1;
            async move {
                let (status, _, _) = env.get("/services/shop/").await;
                assert_eq!(status, 200);
                let trends: serde_json::Value = env
                    .http
                    .get(url)
                    .send()
                    .await
                    .expect("trends")
                    .json()
                    .await
                    .expect("JSON");
                trends["releases"][0]["points"]
                    .as_array()
                    .is_some_and(|points| points.iter().any(|p| p["requests"].as_u64() > Some(0)))
            }
        },
    )
    .await;
    let trends: serde_json::Value = env
        .http
        .get(&url)
        .send()
        .await
        .expect("trends")
        .json()
        .await
        .expect("JSON");
    assert_eq!(trends["every_seconds"], 5);
    assert_eq!(trends["window_seconds"], 900);
    let releases = trends["releases"].as_array().expect("releases");
    assert_eq!(releases[0]["version"], "1.0.0");
    assert_eq!(releases[0]["role"], "main");
    assert_eq!(releases[1]["version"], "1.1.0");
    let main_points = releases[0]["points"].as_array().expect("points");
    let counted: u64 = main_points
        .iter()
        .map(|p| p["requests"].as_u64().expect("requests"))
        .sum();
    assert!(
        counted > 0 && counted <= sent,
        "{counted} of {sent}: {trends:#}"
    );
    let point = main_points
        .iter()
        .find(|p| p["requests"].as_u64() > Some(0))
        .expect("a point");
    assert!(point["p99_ms"].as_f64().is_some() && point["rate_per_second"].as_f64() > Some(0.0));
    assert!(
        releases[1]["points"]
            .as_array()
            .expect("points")
            .iter()
            .all(|p| p["requests"] == 0),
        "the shadow's own address got nothing: {trends:#}"
    );
}
