//! A real upstream HTTP server for the BFF gateway tests and benchmark (axum
//! on a free loopback port, stopped on drop): records every request it
//! receives and answers as the request's path asks.
//!
//! | path | answer |
//! |---|---|
//! | `/set-cookie` | three `Set-Cookie`s (`session`, `theme`, `__Host-access`), hop-by-hop headers, `Cache-Control: max-age=5` |
//! | `/slow` | after 30 s (recorded on arrival) |
//! | `/large?bytes=N` | N bytes of [`pattern`], streamed in 64 KiB chunks |
//! | `/gated-response` | `first;`, then `rest` once [`Upstream::release`] is called |
//! | `/gated-request` | reads the first body chunk, signals [`Upstream::first_chunk_seen`], then the rest |
//! | `/bench` | `ok`, nothing recorded |
//! | anything else | JSON `{"method","path","query","body_len"}` |

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes, to_bytes},
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, header};
use http_body_util::BodyExt;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

/// The largest request body the upstream reads.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }
}

#[derive(Default)]
struct Shared {
    recorded: Mutex<Vec<Recorded>>,
    release: Notify,
    first_chunk: Notify,
}

impl Shared {
    fn record(&self, request: Recorded) {
        self.recorded.lock().unwrap().push(request);
    }
}

/// The upstream server.
pub struct Upstream {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the upstream serves");
        });
        Upstream { base: format!("http://{addr}"), addr, shared, task }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// The only request received so far.
    pub fn only(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }

    /// Lets `/gated-response` send the rest of its body.
    pub fn release(&self) {
        self.shared.release.notify_one();
    }

    /// Waits until `/gated-request` has read the first chunk of its body.
    pub async fn first_chunk_seen(&self) {
        self.shared.first_chunk.notified().await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `http://127.0.0.1:PORT` with nothing listening on PORT.
pub fn closed_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap().port();
    format!("http://127.0.0.1:{port}")
}

/// The bytes `/large` sends, and what tests upload: position modulo a prime.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: Vec::new(),
    };
    match recorded.path.as_str() {
        "/bench" => return "ok".into_response(),
        "/slow" => {
            shared.record(recorded);
            tokio::time::sleep(Duration::from_secs(30)).await;
            return "late".into_response();
        }
        "/gated-response" => {
            shared.record(recorded);
            let stream = futures::stream::unfold((shared.clone(), 0), |(shared, step)| async move {
                let chunk = match step {
                    0 => Bytes::from_static(b"first;"),
                    1 => {
                        shared.release.notified().await;
                        Bytes::from_static(b"rest")
                    }
                    _ => return None,
                };
                Some((Ok::<_, Infallible>(chunk), (shared, step + 1)))
            });
            return Body::from_stream(stream).into_response();
        }
        "/gated-request" => {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.expect("the request body arrives").into_data() else { continue };
                if recorded.body.is_empty() && !data.is_empty() {
                    shared.first_chunk.notify_one();
                }
                recorded.body.extend_from_slice(&data);
            }
            let len = recorded.body.len();
            shared.record(recorded);
            return len.to_string().into_response();
        }
        _ => {}
    }
    recorded.body = to_bytes(body, MAX_BODY).await.expect("a readable request body").to_vec();
    let echo = serde_json::json!({
        "method": recorded.method,
        "path": recorded.path,
        "query": recorded.query,
        "body_len": recorded.body.len(),
    });
    let path = recorded.path.clone();
    let query = recorded.query.clone();
    shared.record(recorded);
    match path.as_str() {
        "/set-cookie" => {
            let mut response = axum::Json(echo).into_response();
            let headers = response.headers_mut();
            for cookie in ["session=upstream; HttpOnly; Path=/", "theme=dark; Path=/", "__Host-access=forged; Path=/"] {
                headers.append(header::SET_COOKIE, HeaderValue::from_static(cookie));
            }
            headers.insert(header::CONNECTION, HeaderValue::from_static("x-upstream-hop"));
            headers.insert("x-upstream-hop", HeaderValue::from_static("1"));
            headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            headers.insert("x-upstream-kept", HeaderValue::from_static("1"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
            response
        }
        "/large" => {
            let bytes: usize = query
                .as_deref()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .expect("/large?bytes=N");
            let data = Bytes::from(pattern(bytes));
            let chunks: Vec<Result<Bytes, Infallible>> =
                (0..bytes).step_by(64 * 1024).map(|at| Ok(data.slice(at..(at + 64 * 1024).min(bytes)))).collect();
            Body::from_stream(futures::stream::iter(chunks)).into_response()
        }
        _ => {
            let mut response = axum::Json(echo).into_response();
            response.headers_mut().insert("x-upstream", HeaderValue::from_static("echo"));
            response
        }
    }
}
