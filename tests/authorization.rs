//! Authorization on claims, in process: a conformance table of guarded and
//! unguarded routes (scopes, `scp` arrays, roles at claim paths, recent
//! login and `acr`, predicates; bearer and cookie; required and optional
//! layers), each case asserting the status, the byte-exact
//! `WWW-Authenticate` and the JSON body, run once with guard layers and
//! once with the same guards as extractors; then `auth_time` across
//! rotations and re-authentication, and stale tokens after a claims change.

use std::time::Duration;

use axum::{
    Router,
    body::{Body, to_bytes},
    routing::get,
};
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_jwt_auth::{
    ClientInfo, JwtAuth, SigningKey, define_guard,
    guard::{Guarded, Require, RequireRecentLogin, RequireRole, RequireScope},
};

const SECRET: &[u8] = b"a secret of at least thirty-two bytes!";
const LEEWAY: i64 = 5;
const MAX_AGE: i64 = 300;

fn auth() -> JwtAuth {
    JwtAuth::builder()
        .signing_key(SigningKey::hs256("k1", SECRET).unwrap())
        .realm("t")
        .leeway(Duration::from_secs(LEEWAY as u64))
        .build()
        .unwrap()
}

async fn ok() -> &'static str {
    "ok"
}

fn app(auth: &JwtAuth) -> Router {
    let fresh = Duration::from_secs(MAX_AGE as u64);
    let tenant =
        Require::new("Only members of tenant 42", |claims| claims.claim("tenant").and_then(Value::as_u64) == Some(42));
    let guarded = Router::new()
        .route("/open", get(ok))
        .route("/scope-admin", get(ok).route_layer(RequireScope::all(["admin"])))
        .route("/scope-all", get(ok).route_layer(RequireScope::all(["read", "write"])))
        .route("/scope-any", get(ok).route_layer(RequireScope::any(["read", "write"])))
        .route("/role-admin", get(ok).route_layer(RequireRole::any(["admin"])))
        .route("/role-keycloak", get(ok).route_layer(RequireRole::any(["admin"]).at("realm_access.roles")))
        .route("/fresh", get(ok).route_layer(RequireRecentLogin::within(fresh)))
        .route("/fresh-mfa", get(ok).route_layer(RequireRecentLogin::within(fresh).acr(["mfa", "hwk"])))
        .route("/tenant", get(ok).route_layer(tenant))
        .route_layer(auth.clone());
    let optional = Router::new()
        .route("/optional-admin", get(ok).route_layer(RequireScope::all(["admin"])))
        .route_layer(auth.optional());
    guarded.merge(optional)
}

define_guard!(ScopeAdmin = RequireScope::all(["admin"]));
define_guard!(ScopeAll = RequireScope::all(["read", "write"]));
define_guard!(ScopeAny = RequireScope::any(["read", "write"]));
define_guard!(RoleAdmin = RequireRole::any(["admin"]));
define_guard!(RoleKeycloak = RequireRole::any(["admin"]).at("realm_access.roles"));
define_guard!(Fresh = RequireRecentLogin::within(Duration::from_secs(MAX_AGE as u64)));
define_guard!(FreshMfa = RequireRecentLogin::within(Duration::from_secs(MAX_AGE as u64)).acr(["mfa", "hwk"]));
define_guard!(
    Tenant =
        Require::new("Only members of tenant 42", |claims| claims.claim("tenant").and_then(Value::as_u64) == Some(42))
);

/// The routes of [`app`], each guard an extractor of the handler instead.
fn extractor_app(auth: &JwtAuth) -> Router {
    async fn guarded<G>(_: Guarded<G>) -> &'static str {
        "ok"
    }
    let required = Router::new()
        .route("/open", get(ok))
        .route("/scope-admin", get(guarded::<ScopeAdmin>))
        .route("/scope-all", get(guarded::<ScopeAll>))
        .route("/scope-any", get(guarded::<ScopeAny>))
        .route("/role-admin", get(guarded::<RoleAdmin>))
        .route("/role-keycloak", get(guarded::<RoleKeycloak>))
        .route("/fresh", get(guarded::<Fresh>))
        .route("/fresh-mfa", get(guarded::<FreshMfa>))
        .route("/tenant", get(guarded::<Tenant>))
        .route_layer(auth.clone());
    let optional = Router::new().route("/optional-admin", get(guarded::<ScopeAdmin>)).route_layer(auth.optional());
    required.merge(optional)
}

/// How the case presents its token.
#[derive(Clone, Copy, Debug)]
enum Via {
    Bearer,
    Cookie,
    Nothing,
}

struct Case {
    name: &'static str,
    path: &'static str,
    via: Via,
    /// Custom claims of the token.
    claims: Value,
    /// Seconds from now of `auth_time` (`None`: absent).
    auth_time: Option<i64>,
    expires_in: i64,
    typ: Option<&'static str>,
    status: StatusCode,
    /// The whole `WWW-Authenticate` value, `""` for none.
    challenge: &'static str,
    /// `error` of the JSON body, `None` for a 200.
    error: Option<&'static str>,
}

const fn case(name: &'static str, path: &'static str) -> Case {
    Case {
        name,
        path,
        via: Via::Bearer,
        claims: Value::Null,
        auth_time: Some(0),
        expires_in: 900,
        typ: Some("at+jwt"),
        status: StatusCode::OK,
        challenge: "",
        error: None,
    }
}

impl Case {
    fn claims(mut self, claims: Value) -> Self {
        self.claims = claims;
        self
    }
    fn via(mut self, via: Via) -> Self {
        self.via = via;
        self
    }
    fn auth_time(mut self, offset: Option<i64>) -> Self {
        self.auth_time = offset;
        self
    }
    fn refused(mut self, status: StatusCode, challenge: &'static str, error: &'static str) -> Self {
        (self.status, self.challenge, self.error) = (status, challenge, Some(error));
        self
    }
}

const SCOPE_ADMIN: &str = r#"Bearer realm="t", error="insufficient_scope", scope="admin", error_description="The access token does not grant the scope this resource requires""#;
const SCOPE_RW: &str = r#"Bearer realm="t", error="insufficient_scope", scope="read write", error_description="The access token does not grant the scope this resource requires""#;
const ROLE: &str = r#"Bearer realm="t", error="insufficient_scope", error_description="The user does not have a role this resource requires""#;
const STALE_LOGIN: &str = r#"Bearer realm="t", error="insufficient_user_authentication", error_description="The user must authenticate again: the last login is too old", max_age=300"#;
const NO_AUTH_TIME: &str = r#"Bearer realm="t", error="insufficient_user_authentication", error_description="The access token does not say when the user authenticated", max_age=300"#;
const WEAK_ACR: &str = r#"Bearer realm="t", error="insufficient_user_authentication", error_description="The user must authenticate with a stronger method", acr_values="mfa hwk", max_age=300"#;
const STALE_ACR: &str = r#"Bearer realm="t", error="insufficient_user_authentication", error_description="The user must authenticate again: the last login is too old", acr_values="mfa hwk", max_age=300"#;
const LOGIN: &str = r#"Bearer realm="t""#;
const EXPIRED: &str = r#"Bearer realm="t", error="invalid_token", error_description="The access token expired""#;

fn cases() -> Vec<Case> {
    use StatusCode as S;
    let forbidden = S::FORBIDDEN;
    let unauthorized = S::UNAUTHORIZED;
    vec![
        // Authentication comes first, and is never a 403.
        case("no credentials", "/scope-admin").via(Via::Nothing).refused(unauthorized, LOGIN, "login_required"),
        Case { expires_in: -60, ..case("expired", "/scope-admin") }.refused(unauthorized, EXPIRED, "invalid_token"),
        Case { typ: Some("JWT"), ..case("an ID token is no access token", "/open") }.refused(
            unauthorized,
            r#"Bearer realm="t", error="invalid_token", error_description="The token is not an access token""#,
            "invalid_token",
        ),
        Case { typ: None, ..case("no typ", "/open") }.refused(
            unauthorized,
            r#"Bearer realm="t", error="invalid_token", error_description="The token is not an access token""#,
            "invalid_token",
        ),
        case("optional layer, guest on a guarded route: 401", "/optional-admin").via(Via::Nothing).refused(
            unauthorized,
            LOGIN,
            "login_required",
        ),
        // Scopes: whole words of `scope`, or `scp` as an array or a string.
        case("scope granted", "/scope-admin").claims(json!({ "scope": "admin" })),
        case("scope among others", "/scope-admin").claims(json!({ "scope": "profile admin email" })),
        case("scope substring trap", "/scope-admin").claims(json!({ "scope": "administrator" })).refused(
            forbidden,
            SCOPE_ADMIN,
            "insufficient_scope",
        ),
        case("scope prefix and suffix traps", "/scope-admin")
            .claims(json!({ "scope": "xadmin admin2 ad min" }))
            .refused(forbidden, SCOPE_ADMIN, "insufficient_scope"),
        case("scp array", "/scope-admin").claims(json!({ "scp": ["profile", "admin"] })),
        case("scp array substring trap", "/scope-admin").claims(json!({ "scp": ["administrator"] })).refused(
            forbidden,
            SCOPE_ADMIN,
            "insufficient_scope",
        ),
        case("scp string", "/scope-admin").claims(json!({ "scp": "read admin" })),
        case("no scope claim", "/scope-admin").refused(forbidden, SCOPE_ADMIN, "insufficient_scope"),
        case("scope of the wrong type", "/scope-admin").claims(json!({ "scope": 7 })).refused(
            forbidden,
            SCOPE_ADMIN,
            "insufficient_scope",
        ),
        case("all of two: both", "/scope-all").claims(json!({ "scope": "write read" })),
        case("all of two: one", "/scope-all").claims(json!({ "scope": "read" })).refused(
            forbidden,
            SCOPE_RW,
            "insufficient_scope",
        ),
        case("any of two: one", "/scope-any").claims(json!({ "scope": "write" })),
        case("any of two: neither", "/scope-any").claims(json!({ "scope": "readwrite" })).refused(
            forbidden,
            SCOPE_RW,
            "insufficient_scope",
        ),
        case("optional layer, insufficient scope: 403", "/optional-admin")
            .claims(json!({ "scope": "profile" }))
            .refused(forbidden, SCOPE_ADMIN, "insufficient_scope"),
        case("cookie session, insufficient scope: 403", "/scope-admin")
            .via(Via::Cookie)
            .claims(json!({ "scope": "profile" }))
            .refused(forbidden, SCOPE_ADMIN, "insufficient_scope"),
        case("cookie session, scope granted", "/scope-admin").via(Via::Cookie).claims(json!({ "scope": "admin" })),
        // Roles at a claim path.
        case("role string", "/role-admin").claims(json!({ "role": "admin" })),
        case("role array", "/role-admin").claims(json!({ "role": ["user", "admin"] })),
        case("other role", "/role-admin").claims(json!({ "role": "user" })).refused(
            forbidden,
            ROLE,
            "insufficient_scope",
        ),
        case("role substring trap", "/role-admin").claims(json!({ "role": "administrator" })).refused(
            forbidden,
            ROLE,
            "insufficient_scope",
        ),
        case("no role claim", "/role-admin").refused(forbidden, ROLE, "insufficient_scope"),
        case("keycloak path", "/role-keycloak").claims(json!({ "realm_access": { "roles": ["offline", "admin"] } })),
        case("keycloak path missing", "/role-keycloak").claims(json!({ "role": "admin" })).refused(
            forbidden,
            ROLE,
            "insufficient_scope",
        ),
        case("keycloak path of the wrong shape", "/role-keycloak").claims(json!({ "realm_access": "admin" })).refused(
            forbidden,
            ROLE,
            "insufficient_scope",
        ),
        // Recent login: elapsed ≤ max_age + leeway passes. Edges at one
        // second from it (the clock ticks between minting and checking; the
        // exact edges are unit-tested on a fixed clock).
        case("fresh login", "/fresh"),
        case("inside max_age", "/fresh").auth_time(Some(-MAX_AGE + 1)),
        case("past max_age, inside the leeway", "/fresh").auth_time(Some(-MAX_AGE - LEEWAY + 1)),
        case("past max_age and leeway", "/fresh").auth_time(Some(-MAX_AGE - LEEWAY - 2)).refused(
            unauthorized,
            STALE_LOGIN,
            "insufficient_user_authentication",
        ),
        case("no auth_time", "/fresh").auth_time(None).refused(
            unauthorized,
            NO_AUTH_TIME,
            "insufficient_user_authentication",
        ),
        case("cookie session, stale login", "/fresh").via(Via::Cookie).auth_time(Some(-3600)).refused(
            unauthorized,
            STALE_LOGIN,
            "insufficient_user_authentication",
        ),
        case("acr accepted", "/fresh-mfa").claims(json!({ "acr": "hwk" })),
        case("acr mismatch", "/fresh-mfa").claims(json!({ "acr": "pwd" })).refused(
            unauthorized,
            WEAK_ACR,
            "insufficient_user_authentication",
        ),
        case("acr missing", "/fresh-mfa").refused(unauthorized, WEAK_ACR, "insufficient_user_authentication"),
        case("acr right but login stale", "/fresh-mfa").claims(json!({ "acr": "mfa" })).auth_time(Some(-3600)).refused(
            unauthorized,
            STALE_ACR,
            "insufficient_user_authentication",
        ),
        // Any predicate.
        case("predicate holds", "/tenant").claims(json!({ "tenant": 42 })),
        case("predicate fails", "/tenant").claims(json!({ "tenant": 43 })).refused(
            forbidden,
            r#"Bearer realm="t", error="insufficient_scope", error_description="Only members of tenant 42""#,
            "insufficient_scope",
        ),
    ]
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, String, Value) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).map_or("", |v| v.to_str().unwrap()).to_owned();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (status, challenge, body)
}

#[tokio::test]
async fn conformance_table() {
    let auth = auth();
    for (form, app) in [("layer", app(&auth)), ("extractor", extractor_app(&auth))] {
        check_cases(&auth, form, app).await;
    }
}

async fn check_cases(auth: &JwtAuth, form: &str, app: Router) {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for case in cases {
        let mut token = auth.test_token("alice").expires_in(case.expires_in).auth_time_in(case.auth_time).typ(case.typ);
        if !case.claims.is_null() {
            token = token.claims(&case.claims);
        }
        let token = token.sign();
        let mut request = Request::get(case.path);
        request = match case.via {
            Via::Bearer => request.header(header::AUTHORIZATION, format!("Bearer {token}")),
            Via::Cookie => request.header(header::COOKIE, format!("__Host-access={token}")),
            Via::Nothing => request,
        };
        let (status, challenge, body) = send(app.clone(), request.body(Body::empty()).unwrap()).await;
        let name = format!("{form}: {}", case.name);
        assert_eq!(status, case.status, "{name}: {body}");
        assert_eq!(challenge, case.challenge, "{name}");
        match case.error {
            None => assert_eq!(body, "ok", "{name}"),
            Some(error) => {
                assert_eq!(body["error"], error, "{name}: {body}");
                let description = body["error_description"].as_str().unwrap_or_default();
                assert!(
                    !description.is_empty() && challenge.contains(description) || !challenge.contains("error="),
                    "{name}"
                );
            }
        }
    }
}

/// A revoked session's token and a stale one (claims changed) on a guarded
/// route: the layer's 401, before the guard.
#[tokio::test]
async fn revoked_and_stale_tokens_are_401_before_any_guard() {
    let auth = auth();
    let app = app(&auth);
    let admin = json!({ "scope": "admin" });
    let tokens = auth.login("carol", &admin, ClientInfo::default()).await.unwrap();
    let bearer = |token: &str| {
        Request::get("/scope-admin")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(app.clone(), bearer(tokens.access_token())).await.0, StatusCode::OK);
    auth.invalidate_access_tokens("carol").await.unwrap();
    let (status, challenge, body) = send(app.clone(), bearer(tokens.access_token())).await;
    assert_eq!(
        (status, challenge.as_str(), &body["error"]),
        (StatusCode::UNAUTHORIZED, EXPIRED, &json!("invalid_token"))
    );
    // The refresh after the change is not itself stale, even within the same second.
    let refreshed = auth.refresh(tokens.refresh_token()).await.unwrap();
    assert_eq!(send(app.clone(), bearer(refreshed.access_token())).await.0, StatusCode::OK);
    auth.revoke_session("carol", refreshed.session_id()).await.unwrap();
    let (status, challenge, _) = send(app, bearer(refreshed.access_token())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, r#"Bearer realm="t", error="invalid_token", error_description="The session was revoked""#);
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `auth_time` belongs to the session: 100 rotations keep it; a
/// re-authentication renews it in the same session.
#[tokio::test]
async fn auth_time_survives_100_rotations_and_reauthentication_renews_it() {
    let auth =
        JwtAuth::builder().signing_key(SigningKey::hs256("k1", SECRET).unwrap()).grace(Duration::ZERO).build().unwrap();
    let login = auth.login("dave", &json!({}), ClientInfo::default()).await.unwrap();
    let first = claims_of(login.access_token());
    let (sid, auth_time) = (first["sid"].clone(), first["auth_time"].as_u64().expect("auth_time at login"));
    let mut tokens = login;
    for i in 0..100 {
        tokens = auth.refresh(tokens.refresh_token()).await.unwrap_or_else(|e| panic!("rotation {i}: {e}"));
        let claims = claims_of(tokens.access_token());
        assert_eq!((&claims["sid"], claims["auth_time"].as_u64()), (&sid, Some(auth_time)), "rotation {i}");
    }
    // Wait for the next second, so a renewed auth_time is visibly later.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while claims_of(auth.test_token("x").sign().as_str())["iat"].as_u64().unwrap() <= auth_time {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = auth.reauthenticate("dave", sid.as_str().unwrap()).await.unwrap();
    let claims = claims_of(fresh.access_token());
    assert_eq!(claims["sid"], sid, "same session");
    assert!(claims["auth_time"].as_u64().unwrap() > auth_time, "renewed: {claims}");
    let after = auth.refresh(fresh.refresh_token()).await.unwrap();
    assert_eq!(claims_of(after.access_token())["auth_time"], claims["auth_time"], "kept by the next refresh");
}
