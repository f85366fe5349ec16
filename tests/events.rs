//! The security-event hook (`JwtAuthBuilder::on_event`): every event once,
//! in order, off the request path; a hook that panics or blocks changes no
//! response.

use std::{
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Body,
    http::StatusCode,
    routing::{get, post},
};
use http::{Request, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower_jwt_auth::{
    AuthError, Claims, ClientInfo, JwtAuth, JwtAuthBuilder, LoggedOut, RevocationCause, SecurityEvent, Session,
    SigningKey,
};

mod support;

use support::in_process::{bearer, send};

#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    name: String,
}

async fn me(claims: Claims<Profile>) -> Json<Value> {
    Json(json!({ "sub": claims.sub() }))
}

async fn logout(session: Session) -> Result<LoggedOut, AuthError> {
    session.logout().await
}

fn app(auth: &JwtAuth) -> Router {
    let protected = Router::new().route("/me", get(me)).route("/logout", post(logout)).route_layer(auth.clone());
    Router::new().merge(protected).merge(auth.refresh_router())
}

fn builder() -> JwtAuthBuilder {
    JwtAuth::builder()
        .signing_key(SigningKey::hs256("k", &[3; 32]).unwrap())
        .grace(Duration::ZERO)
        .max_sessions_per_user(2)
}

fn refresh_request(token: &str) -> Request<Body> {
    Request::post("/auth/refresh")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "refresh_token": token }).to_string()))
        .unwrap()
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// Statuses and body shapes (keys and error codes, not random tokens).
type Answers = Vec<(StatusCode, Value)>;

fn shape(body: &Value) -> Value {
    match body {
        Value::Object(map) => {
            Value::Array(map.iter().map(|(k, v)| if k == "error" { json!([k, v]) } else { json!(k) }).collect())
        }
        other => other.clone(),
    }
}

/// Login, request, refresh, theft, logout, cap eviction, bump; `logins`
/// extra logins at the end (to flood a slow hook). Returns what every step
/// answered, and the sessions involved.
async fn scenario(auth: JwtAuth, logins: usize) -> (Answers, Vec<String>) {
    let app = app(&auth);
    let mut answers = Answers::new();
    let mut sids = Vec::new();
    let login = |user: &'static str| {
        let auth = auth.clone();
        async move { auth.login(user, &Profile { name: user.into() }, ClientInfo::default()).await.unwrap() }
    };
    let first = login("alice").await;
    sids.push(first.session_id().to_owned());
    let (status, body) = send(&app, bearer("GET", "/me", first.access_token())).await;
    answers.push((status, shape(&body)));
    let (status, body) = send(&app, refresh_request(first.refresh_token())).await;
    answers.push((status, shape(&body)));
    let rotated_at = now_ms();
    let ceiling = Instant::now() + Duration::from_secs(5);
    while now_ms() <= rotated_at + 1 && Instant::now() < ceiling {
        tokio::task::yield_now().await;
    }
    let (status, body) = send(&app, refresh_request(first.refresh_token())).await;
    answers.push((status, shape(&body)));

    let second = login("alice").await;
    sids.push(second.session_id().to_owned());
    let (status, body) = send(&app, bearer("POST", "/logout", second.access_token())).await;
    answers.push((status, shape(&body)));

    for _ in 0..3 {
        sids.push(login("bob").await.session_id().to_owned());
    }
    auth.invalidate_access_tokens("bob").await.unwrap();
    for _ in 0..logins {
        let tokens = login("carol").await;
        let (status, body) = send(&app, bearer("GET", "/me", tokens.access_token())).await;
        answers.push((status, shape(&body)));
    }
    (answers, sids)
}

fn run<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// Polls `events` until it holds `n`, within a generous ceiling.
fn wait_for(events: &Mutex<Vec<SecurityEvent>>, n: usize) -> Vec<SecurityEvent> {
    let ceiling = Instant::now() + Duration::from_secs(10);
    while events.lock().unwrap().len() < n && Instant::now() < ceiling {
        std::thread::sleep(Duration::from_millis(5));
    }
    events.lock().unwrap().clone()
}

#[test]
fn every_event_reaches_the_hook_once_in_order() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let auth =
        builder().on_event(move |event: &SecurityEvent| sink.lock().unwrap().push(event.clone())).build().unwrap();
    let (_, sids) = run(async {
        let sids = scenario(auth.clone(), 0).await.1;
        // A last event: delivery is in order, so once it arrives every
        // earlier one has (and any duplicate would have).
        auth.invalidate_access_tokens("sentinel").await.unwrap();
        ((), sids)
    });
    let alice = |s: &str| s.to_owned();
    let bob = |i: usize| sids[2 + i].clone();
    let user = |u: &str| u.to_owned();
    let expected = vec![
        SecurityEvent::Login { user_id: user("alice"), session_id: alice(&sids[0]) },
        SecurityEvent::Refresh { user_id: user("alice"), session_id: alice(&sids[0]) },
        SecurityEvent::ReuseDetected { user_id: user("alice"), session_id: alice(&sids[0]) },
        SecurityEvent::Login { user_id: user("alice"), session_id: alice(&sids[1]) },
        SecurityEvent::SessionRevoked {
            user_id: user("alice"),
            session_id: alice(&sids[1]),
            cause: RevocationCause::Logout,
        },
        SecurityEvent::Login { user_id: user("bob"), session_id: bob(0) },
        SecurityEvent::Login { user_id: user("bob"), session_id: bob(1) },
        SecurityEvent::SessionEvicted { user_id: user("bob"), session_id: bob(0) },
        SecurityEvent::Login { user_id: user("bob"), session_id: bob(2) },
        SecurityEvent::TokensInvalidated { user_id: user("bob") },
        SecurityEvent::TokensInvalidated { user_id: user("sentinel") },
    ];
    let got = wait_for(&events, expected.len());
    assert_eq!(got, expected);
    assert_eq!(got[2].revocation_cause(), Some(RevocationCause::Theft));
    assert_eq!(got[7].revocation_cause(), Some(RevocationCause::Cap));
    assert_eq!(got[9].session_id(), None);
}

#[test]
fn a_hook_that_panics_or_blocks_changes_no_response() {
    // Enough logins to overflow the hook's queue (1024 events) while it blocks.
    const LOGINS: usize = 1200;
    // The hook's panics are expected: keep them out of the test output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some("tower-jwt-auth-events") {
            default_hook(info);
        }
    }));
    let (plain, _) = run(scenario(builder().build().unwrap(), LOGINS));

    let delivered = Arc::new(Mutex::new(Vec::new()));
    let sink = delivered.clone();
    let panicking = builder()
        .on_event(|event: &SecurityEvent| panic!("a hook bug while handling {event:?}"))
        // Registered after the panicking one: it still gets every event.
        .on_event(move |event: &SecurityEvent| sink.lock().unwrap().push(event.clone()))
        .build()
        .unwrap();
    let (with_panics, _) = run(scenario(panicking, LOGINS));
    assert_eq!(with_panics, plain, "a panicking hook changes no response");
    // Each of carol's logins past the cap of two also evicts her oldest session.
    let events = 10 + LOGINS + (LOGINS - 2);
    assert_eq!(wait_for(&delivered, events).len(), events, "the next hook still gets every event");

    let (release, blocked) = mpsc::channel::<()>();
    let blocked = Mutex::new(blocked);
    let blocking = builder()
        .on_event(move |_: &SecurityEvent| {
            // Blocks until the test ends (an SMTP server that never answers).
            let _ = blocked.lock().unwrap().recv();
        })
        .build()
        .unwrap();
    let (with_block, _) = run(scenario(blocking, LOGINS));
    assert_eq!(with_block, plain, "a blocked hook changes no response, and blocks no request");
    drop(release);
}
