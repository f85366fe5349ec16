//! The demo server (`examples/demo.rs`) as a real process on a free port,
//! and a small HTTP client that handles the auth cookies by hand (the
//! `Secure` cookies would not be replayed over plain HTTP by a cookie jar).

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;

/// How long the demo may take to print its `listening on` line.
const START_CEILING: Duration = Duration::from_secs(30);

/// A running demo, killed on drop.
pub struct Demo {
    child: Child,
    pub port: u16,
    pub base: String,
    client: reqwest::Client,
}

/// The demo binary next to this test binary (`cargo test` builds examples).
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let demo = profile_dir.join("examples").join("demo");
    assert!(
        demo.exists(),
        "{} is missing: run `cargo build --example demo` (plain `cargo test` builds it)",
        demo.display()
    );
    demo
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

impl Demo {
    /// Starts the demo with these environment variables and waits for its
    /// `listening on http://127.0.0.1:PORT` line.
    pub fn start(env: &[(&str, String)]) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(binary())
                .env("PORT", port.to_string())
                .env("RUST_LOG", "warn,tower_jwt_auth=info")
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn the demo");
            let stdout = child.stdout.take().unwrap();
            let (lines, received) = mpsc::channel();
            std::thread::spawn(move || {
                // Keep draining after the first line, so the demo's log
                // writes never hit a closed pipe.
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = lines.send(line);
                }
            });
            let expected = format!("listening on http://127.0.0.1:{port}");
            let deadline = std::time::Instant::now() + START_CEILING;
            let ready = loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match received.recv_timeout(left) {
                    Ok(line) if line == expected => break Ok(()),
                    Ok(_) => continue,
                    Err(error) => break Err(error),
                }
            };
            match ready {
                Ok(()) => {
                    let client = reqwest::Client::builder()
                        .redirect(reqwest::redirect::Policy::none())
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    return Self { child, port, base: format!("http://127.0.0.1:{port}"), client };
                }
                other => {
                    last = format!("{other:?}");
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("the demo did not start: {last}");
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

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
