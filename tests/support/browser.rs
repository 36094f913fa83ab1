//! A real browser for the dashboard's tests: Debian's `chromium`, headless,
//! driven over WebDriver by `chromedriver` through `fantoccini`. Each
//! [`Browser`] starts its own chromedriver on a port of its own, in a
//! process group of its own with the browser it starts, and kills that
//! group by its PID when dropped, pass or fail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a wait for the page may take before the test fails.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

/// Names the browser maps to 127.0.0.1 (as a rebinding attacker's DNS would).
pub const FOREIGN_HOST: &str = "attacker.example";

/// Where the tests write their screenshots: under the build's target
/// folder, or, with `SWITCHYARD_UPDATE_SCREENSHOTS=1`, over the ones the
/// dashboard guide (docs/dashboard.md) shows.
fn screenshots() -> PathBuf {
    if std::env::var_os("SWITCHYARD_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

/// The browser and its driver; a test that needs them fails without them.
pub struct Programs {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Finds chromium and chromedriver. Without them the test fails saying
/// how to get them, unless the run skips `chromium` (see
/// [`super::component`]): then this is `None` and the test returns.
pub fn find_browser() -> Option<Programs> {
    let probe = match (on_path("chromium"), on_path("chromedriver")) {
        (Some(chromium), Some(chromedriver)) => {
            return Some(Programs {
                chromium,
                chromedriver,
            });
        }
        (chromium, chromedriver) => Err(format!(
            "{} not on PATH; Debian's packages are chromium and chromium-driver",
            match (chromium, chromedriver) {
                (None, None) => "chromium and chromedriver are",
                (None, Some(_)) => "chromium is",
                _ => "chromedriver is",
            }
        )),
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a dashboard test");
    super::component::available(test, "chromium", probe);
    None
}

/// A headless chromium behind its own chromedriver.
pub struct Browser {
    pub client: Client,
    _driver: Guard,
    /// The browser's profile, removed once the browser is gone.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session with a
    /// headless chromium of `width`×`height` that resolves
    /// [`FOREIGN_HOST`] to 127.0.0.1.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let programs = find_browser()?;
        let mut driver = Command::new(&programs.chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let port = driver_port(&mut driver).await;
        let profile = tempfile::tempdir().expect("browser profile dir");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": programs.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-proxy-server",
                    "--disable-extensions",
                    "--lang=en-US",
                    "--force-prefers-reduced-motion",
                    format!("--window-size={width},{height}"),
                    format!("--host-resolver-rules=MAP {FOREIGN_HOST} 127.0.0.1"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("capabilities are an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("chromedriver on port {port} opened no browser: {e}"));
        Some(Browser {
            client,
            _profile: profile,
            _driver: Guard(driver),
        })
    }

    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The first element matching `css`, once there is one.
    pub async fn wait_for(&self, css: &str) -> Element {
        let found = self
            .client
            .wait()
            .at_most(PAGE_WAIT)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!("no `{css}` on the page: {e}\n{}", self.body().await),
        }
    }

    /// Waits until the element matching `css` shows text containing
    /// `needle`; returns its whole text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        self.wait_for_text_that(css, &format!("`{needle}`"), |text| text.contains(needle))
            .await
    }

    /// Waits until the element matching `css` shows text that passes
    /// `check` (`what` says what is awaited); returns that text.
    pub async fn wait_for_text_that(
        &self,
        css: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + PAGE_WAIT;
        let mut last = String::from("(nothing matched)");
        loop {
            match self.text_of(css).await {
                Ok(Some(text)) if check(&text) => return text,
                Ok(Some(text)) => last = text,
                Ok(None) => {}
                Err(e) => panic!("reading `{css}`: {e}"),
            }
            if Instant::now() > deadline {
                panic!("`{css}` never showed {what}; it showed:\n{last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the script `condition` (an expression) is true in the page.
    pub async fn wait_until(&self, condition: &str, what: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        let script = format!("return Boolean({condition});");
        while self.run(&script).await != serde_json::Value::Bool(true) {
            if Instant::now() > deadline {
                panic!("never {what}; the page shows:\n{}", self.body().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until nothing matches `css`.
    pub async fn wait_until_gone(&self, css: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        while self.count(css).await > 0 {
            if Instant::now() > deadline {
                panic!("`{css}` is still on the page");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the first element matching `css`, on one line.
    async fn text_of(&self, css: &str) -> Result<Option<String>, CmdError> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.map(|text| Some(one_line(&text))),
            Err(CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::NoSuchElement =>
            {
                Ok(None)
            }
            // The element was replaced between finding and reading it.
            Err(CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|all| all.len())
            .unwrap_or_else(|e| panic!("find `{css}`: {e}"))
    }

    /// The text the page shows now.
    pub async fn body(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    /// Runs a script in the page; returns what it returns.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Clicks the element matching `css` once it is there.
    pub async fn click(&self, css: &str) {
        self.wait_for(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    /// Sends keys to whatever has focus (`\u{e00c}` is Escape, `\u{e004}` Tab).
    pub async fn press(&self, keys: &str) {
        let focused = self
            .client
            .active_element()
            .await
            .expect("a focused element");
        focused
            .send_keys(keys)
            .await
            .unwrap_or_else(|e| panic!("press {keys:?}: {e}"));
    }

    /// Writes the whole page, as tall as it is, to the screenshots folder
    /// (see [`screenshots`]).
    pub async fn screenshot(&self, name: &str) {
        let number = |v: serde_json::Value| v.as_u64().expect("a number");
        let full = number(
            self.run("return document.documentElement.scrollHeight")
                .await,
        );
        let shown = number(self.run("return window.innerHeight").await);
        let (width, height) = self.client.get_window_size().await.expect("window size");
        let taller = height + full.saturating_sub(shown);
        self.client
            .set_window_size(width as u32, taller as u32)
            .await
            .expect("make the window as tall as the page");
        let png = self.client.screenshot().await.expect("screenshot");
        let folder = screenshots();
        std::fs::create_dir_all(&folder).expect("screenshots folder");
        let path = folder.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.client
            .set_window_size(width as u32, height as u32)
            .await
            .expect("give the window its size back");
    }

    /// Ends the browser session; the driver's group is killed after it.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.close()).await;
    }
}

/// `text` with every run of white space made one space, as it reads.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads chromedriver's "started successfully on port N".
async fn driver_port(driver: &mut Child) -> u16 {
    let stdout = driver.stdout.take().expect("chromedriver stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("chromedriver did not say its port within {PAGE_WAIT:?}"))
            .expect("read chromedriver's output")
            .unwrap_or_else(|| panic!("chromedriver exited before saying its port"));
        if let Some(port) = line
            .split("started successfully on port ")
            .nth(1)
            .and_then(|rest| rest.trim_end_matches('.').trim().parse().ok())
        {
            // Keep draining, so chromedriver never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return port;
        }
    }
}

/// Kills chromedriver's process group (chromedriver and the browser it
/// started) by chromedriver's PID.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.0.try_wait();
    }
}
