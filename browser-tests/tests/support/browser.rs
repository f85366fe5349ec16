//! Harness for the browser tests: a real `chromedriver` and a headless
//! Chromium session driven over WebDriver with `fantoccini` (the demo
//! process comes from [`super::demo`]). Everything is started per test on
//! free loopback ports and killed on drop, so tests are hermetic and may run
//! in parallel.
#![allow(dead_code)] // not every test uses every helper

use std::{
    collections::BTreeMap,
    env,
    future::Future,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::demo::free_port;

/// Names Chromium goes by on PATH: Debian, Fedora and Arch, Ubuntu's snap,
/// then Google Chrome (any Chromium-based browser chromedriver can drive).
const CHROMIUM_NAMES: &[&str] = &["chromium", "chromium-browser", "google-chrome-stable", "google-chrome", "chrome"];
/// Where browsers live off PATH (macOS applications).
const CHROMIUM_PLACES: &[&str] = &[
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
];
/// Names chromedriver goes by on PATH (`chromium.chromedriver`: Ubuntu's snap).
const CHROMEDRIVER_NAMES: &[&str] = &["chromedriver", "chromium.chromedriver"];
const INSTALL_HINT: &str = "the browser tests need Chromium and chromedriver: run `./test` \
     (it installs them as root on Debian), or install them yourself: \
     `apt-get install -y chromium chromium-driver` (Debian, Ubuntu), \
     `dnf install -y chromium chromedriver` (Fedora), \
     `brew install --cask chromium chromedriver` (macOS); \
     or point `CHROMIUM` and `CHROMEDRIVER` at the two binaries";

/// The browser: `$CHROMIUM` when set, else the first of [`CHROMIUM_NAMES`]
/// on PATH, else a [`CHROMIUM_PLACES`] entry. Panics (never skips) with the
/// install instructions when there is none.
pub fn chromium() -> PathBuf {
    find("CHROMIUM", CHROMIUM_NAMES, CHROMIUM_PLACES)
}

/// The WebDriver server: `$CHROMEDRIVER`, else [`CHROMEDRIVER_NAMES`] on PATH.
pub fn chromedriver() -> PathBuf {
    find("CHROMEDRIVER", CHROMEDRIVER_NAMES, &[])
}

fn find(variable: &str, names: &[&str], places: &[&str]) -> PathBuf {
    if let Some(path) = env::var_os(variable).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(is_executable(&path), "${variable} = {} is not an executable file; {INSTALL_HINT}", path.display());
        return path;
    }
    let on_path = env::var_os("PATH")
        .map(|dirs| env::split_paths(&dirs).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)));
    on_path
        .chain(places.iter().map(PathBuf::from))
        .find(|path| is_executable(path))
        .unwrap_or_else(|| panic!("none of {names:?} is on PATH and ${variable} is not set; {INSTALL_HINT}"))
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Ceiling of every wait for the page (an element's result, a navigation).
pub const PAGE_CEILING: Duration = Duration::from_secs(10);
/// Ceiling of process start-ups (demo, chromedriver, browser session).
const START_CEILING: Duration = Duration::from_secs(30);

/// Unix time in seconds, the clock the demo's `iat`/`exp` use.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// Polls `probe` every 50 ms until it yields `Some`, panicking with `what`
/// after `ceiling`.
pub async fn wait_until<T, F, Fut>(what: &str, ceiling: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + ceiling;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {ceiling:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- the browser

/// `chromedriver` plus one headless Chromium session with a fresh profile.
/// Dropping it kills chromedriver's whole process group (Chromium included).
pub struct Browser {
    pub client: Client,
    chromedriver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port, waits for its `/status` to say
    /// ready, and opens a headless Chromium session. Panics (never skips)
    /// when Chromium or chromedriver is not installed.
    pub async fn start() -> Browser {
        let (chromium, chromedriver) = (chromium(), chromedriver());
        let profile = tempfile::Builder::new().prefix("browser-test-profile-").tempdir().expect("temporary profile");
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, so that drop can kill Chromium too.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}; {INSTALL_HINT}", chromedriver.display()));
            match Self::connect(port, &chromium, profile.path()).await {
                Ok(client) => return Browser { client, chromedriver: driver, _profile: profile },
                Err(error) => {
                    last_error = error;
                    kill_group(&mut driver);
                }
            }
        }
        panic!("could not open a Chromium session: {last_error}");
    }

    async fn connect(port: u16, chromium: &Path, profile: &Path) -> Result<Client, String> {
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("HTTP client");
        let deadline = Instant::now() + START_CEILING;
        loop {
            let ready = match http.get(format!("{url}/status")).send().await {
                Ok(response) => response.json::<Value>().await.ok().is_some_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("chromedriver on port {port} not ready after {START_CEILING:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--window-size=1200,900",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium.to_string_lossy(), "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let mut builder = ClientBuilder::rustls().map_err(|e| format!("TLS roots: {e}"))?;
        let connect = builder.capabilities(capabilities).connect(&url);
        match tokio::time::timeout(START_CEILING, connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(format!("new WebDriver session: {error}")),
            Err(_) => Err(format!("new WebDriver session: no answer after {START_CEILING:?}")),
        }
    }

    // ---- navigation and scripts

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Runs a synchronous script (its `return` value comes back).
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an asynchronous script: it ends by calling `arguments[0](value)`.
    pub async fn js_async(&self, script: &str) -> Value {
        self.client.execute_async(script, vec![]).await.unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
    }

    pub async fn current_url(&self) -> String {
        self.client.current_url().await.expect("current URL").to_string()
    }

    // ---- elements

    pub async fn click(&self, css: &str) {
        let element = self.client.wait().at_most(PAGE_CEILING).for_element(Locator::Css(css)).await;
        element
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no element {css}: {e}"));
        element.text().await.unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no element {css}: {e}"));
        element.attr(name).await.unwrap_or_else(|e| panic!("attribute {name} of {css}: {e}"))
    }

    /// Replaces the text of an input.
    pub async fn fill(&self, css: &str, value: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no element {css}: {e}"));
        element.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
        element.send_keys(value).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// `data-seq` of the demo page's result element `#id`: bumped on every result.
    pub async fn seq(&self, id: &str) -> u64 {
        self.attr(&format!("#{id}"), "data-seq").await.and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// Clicks `button` and waits (up to [`PAGE_CEILING`]) for the page to show a
    /// new result in `#output`; answers its HTTP status (`data-status`) and text.
    pub async fn click_for_result(&self, button: &str, output: &str) -> (u16, String) {
        let before = self.seq(output).await;
        self.click(button).await;
        wait_until(&format!("a new result in #{output} after clicking {button}"), PAGE_CEILING, || async {
            (self.seq(output).await > before).then_some(())
        })
        .await;
        let status = self.attr(&format!("#{output}"), "data-status").await.and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, self.text(&format!("#{output}")).await)
    }

    // ---- cookies

    /// The browser's cookie jar for the current page's URL, read over
    /// WebDriver: unlike `document.cookie`, it includes HttpOnly cookies.
    pub async fn cookies(&self) -> Vec<JarCookie> {
        let cookies = self.client.get_all_cookies().await.expect("get all cookies");
        cookies
            .iter()
            .map(|c| JarCookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                path: c.path().map(str::to_owned),
                domain: c.domain().map(str::to_owned),
                same_site: c.same_site().map(|s| s.to_string()),
            })
            .collect()
    }

    /// Name → value of the jar's cookies (see [`Browser::cookies`]).
    pub async fn cookie_values(&self) -> BTreeMap<String, String> {
        self.cookies().await.into_iter().map(|c| (c.name, c.value)).collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.chromedriver);
    }
}

/// Kills the process group led by `child` (chromedriver and the Chromium it
/// started), then reaps `child`.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A cookie as the browser stores it.
#[derive(Clone, Debug)]
pub struct JarCookie {
    pub name: String,
    pub value: String,
    pub http_only: bool,
    pub secure: bool,
    pub path: Option<String>,
    pub domain: Option<String>,
    pub same_site: Option<String>,
}
