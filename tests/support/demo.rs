//! The demo server (`examples/demo.rs`) as a real process on a free port,
//! and a small HTTP client that handles the auth cookies by hand (a cookie
//! jar would not replay `Secure` cookies over plain HTTP).

use std::{
    env,
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode, header::HeaderMap};

use serde_json::Value;

/// How long the demo may take to print its `listening on` line.
const START_CEILING: Duration = Duration::from_secs(30);

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}

/// `target/<profile>/examples/<name>`, built once per test binary with
/// `cargo build -p tower-jwt-auth --example <name>` (a no-op when it is fresh). The profile and
/// target directory are those of this test binary
/// (`target/<profile>/deps/<test>-…`), so `CARGO_TARGET_DIR` and
/// `--release` are followed.
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(name.to_owned())
        .or_insert_with(|| build_example(name))
        .clone()
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The demo's binary.
pub fn demo_binary() -> PathBuf {
    example_binary("demo")
}

fn build_example(name: &str) -> Result<PathBuf, String> {
    let exe = env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test binary location {}", exe.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => return Err(format!("unexpected profile directory {}", profile_dir.display())),
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        // `-p`: the tests of workspace members (browser-tests) build it too.
        .args(["build", "-p", "tower-jwt-auth", "--example", name, "--profile", &profile])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run `cargo build --example {name}`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build --example {name} --profile {profile}` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let binary = profile_dir.join("examples").join(name);
    if !binary.is_file() {
        return Err(format!("`cargo build --example {name}` left no binary at {}", binary.display()));
    }
    Ok(binary)
}

/// The demo server as a child process on `127.0.0.1:port`, killed on drop.
/// Its output (logs) is kept and printed if the test panics.
pub struct Demo {
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Child,
    output: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl Demo {
    /// Starts the demo (embedded store, a fixed `JWT_SECRET`, unless `vars`
    /// say otherwise) and waits for its `listening on http://127.0.0.1:PORT`
    /// line. Blocks for at most a few seconds.
    pub fn start(vars: &[(&str, &str)]) -> Demo {
        Demo::start_example("demo", vars)
    }

    /// Starts another example the same way (`api`); a `PORT` in `vars` is
    /// used as given, else a free one is picked.
    pub fn start_example(name: &str, vars: &[(&str, &str)]) -> Demo {
        let binary = example_binary(name);
        let fixed = vars.iter().find(|(k, _)| *k == "PORT").and_then(|(_, v)| v.parse().ok());
        let mut last_error = String::new();
        // A free port may be taken between probing and binding: retry.
        for _ in 0..3 {
            match Demo::try_start(&binary, vars, fixed.unwrap_or_else(free_port)) {
                Ok(demo) => return demo,
                Err(error) => last_error = error,
            }
            if fixed.is_some() {
                break;
            }
        }
        panic!("`{name}` did not start: {last_error}");
    }

    fn try_start(binary: &Path, vars: &[(&str, &str)], port: u16) -> Result<Demo, String> {
        let mut command = Command::new(binary);
        command
            .env_remove("REDIS_URL")
            .env("PORT", port.to_string())
            .env("JWT_SECRET", "demo-tests-secret")
            .env("RUST_LOG", "info,tower_jwt_auth=debug")
            .env("NO_COLOR", "1")
            .envs(vars.iter().copied().filter(|(k, _)| *k != "PORT"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let output = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines_rx) = mpsc::channel();
        drain(child.stdout.take().expect("piped stdout"), output.clone(), Some(lines_tx));
        drain(child.stderr.take().expect("piped stderr"), output.clone(), None);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let expected = format!("listening on {base}");
        let deadline = Instant::now() + START_CEILING;
        let mut demo = Demo { port, base, child, output, client };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) if line.contains(&expected) => return Ok(demo),
                Ok(_) => {}
                Err(_) => {
                    let status = demo.child.try_wait().ok().flatten();
                    let log = demo.log();
                    demo.stop();
                    return Err(format!("no `{expected}` line (exit status {status:?}); output:\n{log}"));
                }
            }
        }
    }

    /// `http://localhost:PORT`: the origin a browser should use (a secure
    /// context for Chromium, so `Secure` `__Host-` cookies are kept over
    /// plain HTTP).
    pub fn origin(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// What the demo printed so far.
    pub fn log(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a request; `cookies` become one `Cookie` header.
    pub async fn send(&self, method: Method, path: &str, auth: &Auth, body: Option<Value>) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        match auth {
            Auth::None => {}
            Auth::Bearer(token) => request = request.bearer_auth(token),
            Auth::Cookies(jar) => request = request.header("cookie", jar.header()),
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the demo answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.send(Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: &Auth, body: Option<Value>) -> Reply {
        self.send(Method::POST, path, auth, body).await
    }

    /// Logs in in cookie mode and returns the cookies set.
    pub async fn login_cookies(&self, user: &str) -> Jar {
        let reply = self.post("/login", &Auth::None, Some(credentials(user, "cookie"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let mut jar = Jar::default();
        jar.update(&reply);
        assert!(jar.access.is_some() && jar.refresh.is_some(), "login sets both cookies");
        jar
    }

    /// Logs in in token mode and returns `(access_token, refresh_token)`.
    pub async fn login_tokens(&self, user: &str) -> (String, String) {
        let reply = self.post("/login", &Auth::None, Some(credentials(user, "token"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        (reply.str("access_token"), reply.str("refresh_token"))
    }
}

pub fn credentials(user: &str, mode: &str) -> Value {
    serde_json::json!({ "username": user, "password": format!("{user}-pw"), "mode": mode })
}

/// How a request authenticates.
pub enum Auth {
    None,
    Bearer(String),
    Cookies(Jar),
}

/// The two auth cookies as a browser would keep them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Jar {
    pub access: Option<String>,
    pub refresh: Option<String>,
}

impl Jar {
    pub fn header(&self) -> String {
        let mut parts = Vec::new();
        if let Some(access) = &self.access {
            parts.push(format!("__Host-access={access}"));
        }
        if let Some(refresh) = &self.refresh {
            parts.push(format!("__Host-refresh={refresh}"));
        }
        parts.join("; ")
    }

    /// Applies a response's `Set-Cookie` headers (an empty value or
    /// `Max-Age=0` removes the cookie).
    pub fn update(&mut self, reply: &Reply) {
        for (name, value, removed) in reply.set_cookies() {
            let slot = match name.as_str() {
                "__Host-access" => &mut self.access,
                "__Host-refresh" => &mut self.refresh,
                other => panic!("unexpected cookie {other}"),
            };
            *slot = if removed { None } else { Some(value) };
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_else(|| panic!("no string {field} in {:?}", self.body)).to_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    /// `(name, value, removed)` for each `Set-Cookie`.
    pub fn set_cookies(&self) -> Vec<(String, String, bool)> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| {
                let text = v.to_str().unwrap();
                let (pair, _) = text.split_once(';').unwrap_or((text, ""));
                let (name, value) = pair.split_once('=').unwrap();
                (name.to_owned(), value.to_owned(), value.is_empty() || text.contains("Max-Age=0"))
            })
            .collect()
    }

    /// Asserts an RFC 6750 rejection: status, header and JSON body.
    pub fn assert_rejected(&self, status: StatusCode, code: Option<&str>) {
        assert_eq!(self.status, status, "{:?}", self.body);
        let www = self.header("www-authenticate");
        assert!(www.starts_with("Bearer"), "WWW-Authenticate: {www:?}");
        match code {
            Some(code) => {
                assert!(www.contains(&format!("error=\"{code}\"")), "{www}");
                assert_eq!(self.body["error"], code, "{:?}", self.body);
            }
            None => assert!(!www.contains("error="), "{www}"),
        }
        assert!(self.body["error"].is_string() && self.body["error_description"].is_string(), "{:?}", self.body);
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("---- demo output (port {}) ----\n{}", self.port, self.log());
        }
    }
}

/// Copies `reader` into `output` line by line on a thread (so the child never
/// blocks on a full pipe), also sending each line to `lines` if given.
fn drain(reader: impl Read + Send + 'static, output: Arc<Mutex<String>>, lines: Option<mpsc::Sender<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut output) = output.lock() {
                output.push_str(&line);
                output.push('\n');
            }
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    });
}
