//! A JWKS and OpenID discovery server for tests, on a free loopback port,
//! whose faults the test switches at runtime; it counts the requests it gets.
//!
//! Use with `#[path = "support/jwks_server.rs"] mod jwks_server;`. Routes:
//! `/jwks` (the key set, or the fault chosen) and
//! `/idp/.well-known/openid-configuration` (issuer `{base}/idp` unless
//! overridden, `jwks_uri` `{base}/jwks`). [`JwksServer::stop`] closes the
//! port and every open connection; [`JwksServer::restart`] opens it again.
#![allow(dead_code)] // each test uses a different part

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle, task::JoinSet};

/// What `/jwks` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the key set (and `Cache-Control: max-age` when set).
    Serve,
    /// This status with a short text body.
    Status(u16),
    /// The key set, but only after this long.
    Slow(Duration),
    /// 200 with an HTML page.
    Garbage,
    /// 200 with JSON that is not a JWKS.
    NotAJwks,
    /// 200 with the key set after 2 MiB of (valid JSON) whitespace.
    Huge,
}

#[derive(Debug)]
struct State {
    base: String,
    behaviour: Mutex<Behaviour>,
    jwks: Mutex<String>,
    max_age: Mutex<Option<u64>>,
    issuer: Mutex<Option<String>>,
    jwks_requests: AtomicUsize,
    discovery_requests: AtomicUsize,
}

/// The server; stopped on drop.
#[derive(Debug)]
pub struct JwksServer {
    port: u16,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl JwksServer {
    /// Serves `jwks` (a JSON document) on a free loopback port.
    pub async fn start(jwks: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            base: format!("http://127.0.0.1:{port}"),
            behaviour: Mutex::new(Behaviour::Serve),
            jwks: Mutex::new(jwks),
            max_age: Mutex::new(None),
            issuer: Mutex::new(None),
            jwks_requests: AtomicUsize::new(0),
            discovery_requests: AtomicUsize::new(0),
        });
        let accept = Some(tokio::spawn(accept(listener, state.clone())));
        Self { port, state, accept }
    }

    /// The JWKS URL.
    pub fn url(&self) -> String {
        format!("{}/jwks", self.state.base)
    }

    /// The issuer whose discovery document this server publishes.
    pub fn issuer(&self) -> String {
        format!("{}/idp", self.state.base)
    }

    /// Serves this key set from now on.
    pub fn set_jwks(&self, jwks: String) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    /// Answers `/jwks` this way from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Sends `Cache-Control: max-age=N` with the key set (`None`: no header).
    pub fn set_max_age(&self, seconds: Option<u64>) {
        *self.state.max_age.lock().unwrap() = seconds;
    }

    /// Names this issuer in the discovery document instead of the true one.
    pub fn set_discovered_issuer(&self, issuer: &str) {
        *self.state.issuer.lock().unwrap() = Some(issuer.to_owned());
    }

    /// Requests `/jwks` received so far (counted on arrival).
    pub fn jwks_requests(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// Requests for the discovery document received so far.
    pub fn discovery_requests(&self) -> usize {
        self.state.discovery_requests.load(Ordering::SeqCst)
    }

    /// Closes the port and every connection (requests in flight included).
    pub async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
    }

    /// Listens on the same port again, with the same state.
    pub async fn restart(&mut self) {
        self.stop().await;
        let start = Instant::now();
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("cannot listen on port {} again: {e}", self.port),
            }
        };
        self.accept = Some(tokio::spawn(accept(listener, self.state.clone())));
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which
/// aborts every connection task.
async fn accept(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| answer(request, state.clone()));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn answer(request: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::builder().status(status).header(header::CONTENT_TYPE, content_type);
        if status == StatusCode::OK
            && let Some(max_age) = *state.max_age.lock().unwrap()
        {
            response = response.header(header::CACHE_CONTROL, format!("public, max-age={max_age}"));
        }
        Ok(response.body(Full::new(Bytes::from(body))).unwrap())
    };
    match request.uri().path() {
        "/jwks" => {
            state.jwks_requests.fetch_add(1, Ordering::SeqCst);
            let behaviour = *state.behaviour.lock().unwrap();
            let jwks = state.jwks.lock().unwrap().clone();
            match behaviour {
                Behaviour::Serve => reply(StatusCode::OK, "application/json", jwks),
                Behaviour::Status(status) => {
                    reply(StatusCode::from_u16(status).unwrap(), "text/plain", "injected fault".into())
                }
                Behaviour::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    reply(StatusCode::OK, "application/json", jwks)
                }
                Behaviour::Garbage => {
                    reply(StatusCode::OK, "text/html", "<html><body>Bad gateway</body></html>".into())
                }
                Behaviour::NotAJwks => reply(StatusCode::OK, "application/json", r#"{"hello":"world"}"#.into()),
                Behaviour::Huge => reply(StatusCode::OK, "application/json", " ".repeat(2 << 20) + &jwks),
            }
        }
        "/idp/.well-known/openid-configuration" => {
            state.discovery_requests.fetch_add(1, Ordering::SeqCst);
            let issuer = state.issuer.lock().unwrap().clone().unwrap_or_else(|| format!("{}/idp", state.base));
            let document = serde_json::json!({
                "issuer": issuer,
                "jwks_uri": format!("{}/jwks", state.base),
                "authorization_endpoint": format!("{}/idp/authorize", state.base),
                "id_token_signing_alg_values_supported": ["EdDSA", "ES256", "RS256"],
            });
            reply(StatusCode::OK, "application/json", document.to_string())
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    }
}
