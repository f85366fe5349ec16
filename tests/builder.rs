//! Builder settings whose mistakes should explain themselves, and the
//! refresh endpoint's configurable path.

use axum::{Router, body::Body};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_jwt_auth::{ClientInfo, ConfigError, JwtAuth, SigningKey};

fn key() -> SigningKey {
    SigningKey::hs256("k", &[7; 32]).unwrap()
}

fn invalid(result: Result<JwtAuth, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid(why)) => why.to_owned(),
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

#[test]
fn insecure_cookies_with_host_prefixed_names_says_to_rename_them() {
    let why = invalid(JwtAuth::builder().signing_key(key()).insecure_cookies().build());
    assert!(why.contains("insecure_cookies()") && why.contains(".cookie_names("), "{why}");
    assert!(JwtAuth::builder().signing_key(key()).insecure_cookies().cookie_names("access", "refresh").build().is_ok());
}

#[test]
fn refresh_paths_must_be_literal() {
    for path in ["auth/refresh", "/auth/{id}", "/auth/*rest", "/a b", ""] {
        let why = invalid(JwtAuth::builder().signing_key(key()).refresh_path(path).build());
        assert!(why.contains("refresh path"), "{path:?}: {why}");
    }
}

async fn post_json(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_refresh_router_serves_the_configured_path_only() {
    let auth = JwtAuth::builder().signing_key(key()).refresh_path("/api/v1/token").build().unwrap();
    let app: Router = auth.refresh_router();
    let tokens = auth.login("alice", &json!({}), ClientInfo::default()).await.unwrap();

    let (status, _) = post_json(&app, "/auth/refresh", json!({ "refresh_token": tokens.refresh_token() })).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the default path is not served any more");
    let (status, body) = post_json(&app, "/api/v1/token", json!({ "refresh_token": tokens.refresh_token() })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["refresh_token"].as_str().is_some_and(|t| t != tokens.refresh_token()), "{body}");
}
