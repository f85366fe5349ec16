//! The "Metrics" section of `examples/README.md` against `examples/demo`
//! running as a real process: with `METRICS_PORT`, `GET /metrics` answers
//! Prometheus text with the contract's counters under their exact names,
//! each moved exactly once per event, none labelled with anything
//! user-specific.

mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::demo::{Auth, Demo, free_port};

/// `name{label=value,…}` (labels sorted, unquoted) → value, of every sample.
async fn scrape(port: u16) -> (String, BTreeMap<String, f64>) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.expect("the metrics endpoint");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line}"));
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let mut labels: Vec<String> =
                    labels.trim_end_matches('}').split(',').map(|pair| pair.replace('"', "")).collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        samples.insert(key, value.parse().unwrap_or_else(|_| panic!("a number: {line}")));
    }
    (text, samples)
}

/// What changed between two scrapes.
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, prefix: &str) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(key, _)| key.starts_with(prefix))
        .map(|(key, value)| (key.clone(), value - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, moved)| *moved != 0.0)
        .collect()
}

fn map(entries: &[(&str, f64)]) -> BTreeMap<String, f64> {
    entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

const CONTRACT: &[&str] = &[
    "tower_jwt_auth_refresh_total{outcome=rotated}",
    "tower_jwt_auth_refresh_total{outcome=replayed}",
    "tower_jwt_auth_refresh_total{outcome=reuse_revoked}",
    "tower_jwt_auth_refresh_total{outcome=not_found}",
    "tower_jwt_auth_refresh_total{outcome=unavailable}",
    "tower_jwt_auth_sessions_revoked_total{cause=logout}",
    "tower_jwt_auth_sessions_revoked_total{cause=logout_all}",
    "tower_jwt_auth_sessions_revoked_total{cause=revoke}",
    "tower_jwt_auth_sessions_revoked_total{cause=cap}",
    "tower_jwt_auth_sessions_revoked_total{cause=theft}",
    "tower_jwt_auth_requests_total{result=authenticated}",
];

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

#[tokio::test]
async fn the_demo_exports_the_contract_counters_once_per_event() {
    let metrics_port = free_port();
    let port = metrics_port.to_string();
    // No grace window: a reuse is theft at once. Two sessions per user.
    let demo = Demo::start(&[("METRICS_PORT", &port), ("GRACE_SECS", "0"), ("MAX_SESSIONS", "2")]);
    let (text, start) = scrape(metrics_port).await;
    for series in CONTRACT {
        assert_eq!(start.get(*series), Some(&0.0), "{series} is exported from the start:\n{text}");
    }
    assert!(
        start.keys().any(|k| k.starts_with("tower_jwt_auth_requests_total{") && k.contains("result=rejected")),
        "{text}"
    );

    // Requests: one authenticated, one rejected.
    let (access, refresh) = demo.login_tokens("alice").await;
    assert_eq!(demo.get("/me", &Auth::Bearer(access.clone())).await.status, StatusCode::OK);
    assert_eq!(demo.get("/me", &Auth::None).await.status, StatusCode::UNAUTHORIZED);
    let (_, after) = scrape(metrics_port).await;
    let requests = delta(&start, &after, "tower_jwt_auth_requests_total");
    assert_eq!(requests["tower_jwt_auth_requests_total{result=authenticated}"], 1.0, "{requests:?}");
    let rejected: f64 = requests.iter().filter(|(k, _)| k.contains("result=rejected")).map(|(_, v)| v).sum();
    assert_eq!(rejected, 1.0, "{requests:?}");

    // A rotation, then the old token again outside the (empty) grace window: theft;
    // then the stolen session's newest token: not found.
    let before = after;
    let rotated = demo.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": refresh }))).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let rotated_at = unix_ms();
    let ceiling = Instant::now() + Duration::from_secs(5);
    while unix_ms() <= rotated_at + 1 && Instant::now() < ceiling {
        tokio::task::yield_now().await;
    }
    let theft = demo.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": refresh }))).await;
    assert_eq!(theft.body["error"], "invalid_grant");
    let newest = rotated.str("refresh_token");
    let gone = demo.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": newest }))).await;
    assert_eq!(gone.body["error"], "invalid_grant");
    let (_, after) = scrape(metrics_port).await;
    assert_eq!(
        delta(&before, &after, "tower_jwt_auth_refresh_total"),
        map(&[
            ("tower_jwt_auth_refresh_total{outcome=rotated}", 1.0),
            ("tower_jwt_auth_refresh_total{outcome=reuse_revoked}", 1.0),
            ("tower_jwt_auth_refresh_total{outcome=not_found}", 1.0),
        ])
    );
    assert_eq!(
        delta(&before, &after, "tower_jwt_auth_sessions_revoked_total"),
        map(&[("tower_jwt_auth_sessions_revoked_total{cause=theft}", 1.0)])
    );

    // Logout, logout-all (two sessions), a revoke by id, a cap eviction.
    let before = after;
    let (access, _) = demo.login_tokens("alice").await;
    assert_eq!(demo.post("/logout", &Auth::Bearer(access), None).await.status, StatusCode::NO_CONTENT);
    let (access, _) = demo.login_tokens("alice").await;
    demo.login_tokens("alice").await;
    assert_eq!(demo.post("/logout-all", &Auth::Bearer(access), None).await.status, StatusCode::NO_CONTENT);
    let (access, _) = demo.login_tokens("bob").await;
    let (other, _) = demo.login_tokens("bob").await;
    let sid = demo.get("/me", &Auth::Bearer(other)).await.str("sid");
    let revoked = demo.send(Method::DELETE, &format!("/sessions/{sid}"), &Auth::Bearer(access.clone()), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    for _ in 0..2 {
        demo.login_tokens("bob").await; // the second one is bob's third session: the oldest goes
    }
    let (text, after) = scrape(metrics_port).await;
    assert_eq!(
        delta(&before, &after, "tower_jwt_auth_sessions_revoked_total"),
        map(&[
            ("tower_jwt_auth_sessions_revoked_total{cause=logout}", 1.0),
            ("tower_jwt_auth_sessions_revoked_total{cause=logout_all}", 2.0),
            ("tower_jwt_auth_sessions_revoked_total{cause=revoke}", 1.0),
            ("tower_jwt_auth_sessions_revoked_total{cause=cap}", 1.0),
        ])
    );

    // Nothing user-specific in a label, and no series appeared.
    for user_specific in ["alice", "bob", sid.as_str()] {
        assert!(!text.contains(user_specific), "{user_specific} in the metrics:\n{text}");
    }
    let new: Vec<&String> = after.keys().filter(|k| !start.contains_key(*k)).collect();
    assert!(new.iter().all(|k| k.contains("_bucket{") || k.ends_with("_sum") || k.ends_with("_count")), "{new:?}");
}
