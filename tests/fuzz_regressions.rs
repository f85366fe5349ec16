//! What a malicious client can send, as properties CI runs: arbitrary bytes as
//! the `Authorization` header, the `Cookie` header, the access and refresh
//! cookies and the `POST /auth/refresh` body; structured JWT-ish tokens
//! (random header and payload JSON, random `alg`/`kid`/`typ`, random, missing,
//! extra and huge segments, garbage or genuine signatures); oversized
//! headers; and the rule that a rejection never echoes what was presented.
//!
//! The `cargo fuzz` targets in `fuzz/` explore the same inputs for longer
//! (see `fuzz/README.md`); whatever they find is pinned down at the end of
//! this file. `PROPTEST_CASES` overrides the number of cases of every property.

use std::{
    sync::LazyLock,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::{prelude::*, test_runner::TestCaseError};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_jwt_auth::{Claims, ClientInfo, JwtAuth, SigningKey};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "app";
/// The layer's default clock leeway.
const LEEWAY_SECS: i64 = 5;
const BIG: usize = 200 * 1024;

// ---------------------------------------------------------------------------
// Harness

#[derive(Clone, Debug, Deserialize)]
struct Custom {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    level: Option<u8>,
}

/// One layer (memory store) behind a few routes, with a live session.
struct Harness {
    runtime: Runtime,
    auth: JwtAuth,
    /// Requires `iss` and `aud`.
    strict: Router,
    /// Requires neither.
    plain: Router,
    refresh_token: String,
    access_token: String,
}

fn layer(issuer_and_audience: bool) -> JwtAuth {
    let mut builder = JwtAuth::builder().signing_key(SigningKey::hs256("k1", SECRET).unwrap()).realm("test");
    if issuer_and_audience {
        builder = builder.issuer(ISSUER).audience(AUDIENCE);
    }
    builder.build().unwrap()
}

fn router(auth: &JwtAuth) -> Router {
    async fn me(claims: Claims<Custom>) -> Json<Value> {
        Json(json!({ "sub": claims.sub(), "role": claims.role, "level": claims.level }))
    }
    async fn raw(claims: Claims<Value>) -> Json<Value> {
        Json(claims.into_inner())
    }
    async fn optional(claims: Option<Claims<Custom>>) -> String {
        claims.map_or_else(|| "anonymous".to_owned(), |c| c.sub().to_owned())
    }
    let protected =
        Router::new().route("/me", get(me)).route("/raw", get(raw)).route("/write", post(me)).layer(auth.clone());
    let optional = Router::new().route("/opt", get(optional).post(optional)).layer(auth.optional());
    protected.merge(optional).merge(auth.refresh_router())
}

impl Harness {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let auth = layer(true);
        let tokens = runtime.block_on(auth.login("alice", &json!({ "role": "admin" }), ClientInfo::default())).unwrap();
        Self {
            runtime,
            strict: router(&auth),
            plain: router(&layer(false)),
            refresh_token: tokens.refresh_token().to_owned(),
            access_token: tokens.access_token().to_owned(),
            auth,
        }
    }

    fn send(&self, router: &Router, request: Request<Body>) -> Reply {
        self.runtime.block_on(async {
            let response = router.clone().oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
        })
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A 4xx that echoes nothing of `presented` (see [`assert_no_echo`]).
    fn rejected(&self, presented: &[u8], every_window: bool) -> Result<(), TestCaseError> {
        prop_assert!(self.status.is_client_error(), "status {}: {}", self.status, self.text());
        self.no_echo(presented, every_window)
    }

    /// A 2xx or a 4xx, never a 5xx; a rejection echoes nothing.
    fn handled(&self, presented: &[u8]) -> Result<(), TestCaseError> {
        prop_assert!(
            self.status.is_success() || self.status.is_client_error(),
            "status {}: {}",
            self.status,
            self.text()
        );
        if self.status.is_success() { Ok(()) } else { self.no_echo(presented, false) }
    }

    fn no_echo(&self, presented: &[u8], every_window: bool) -> Result<(), TestCaseError> {
        assert_no_echo(presented, &self.body, every_window)?;
        for value in self.headers.values() {
            assert_no_echo(presented, value.as_bytes(), every_window)?;
        }
        Ok(())
    }
}

/// No 16-byte substring of `presented` appears in `text`.
///
/// With `every_window` false only windows holding a digit are checked: the
/// crate's rejection texts are static English without digits, so arbitrary
/// input that happens to contain, say, "error_description" is not an echo,
/// while a window with a digit found in the text can only come from the input.
fn assert_no_echo(presented: &[u8], text: &[u8], every_window: bool) -> Result<(), TestCaseError> {
    const WINDOW: usize = 16;
    if presented.len() < WINDOW || text.len() < WINDOW {
        return Ok(());
    }
    for window in presented.windows(WINDOW) {
        if every_window || window.iter().any(u8::is_ascii_digit) {
            prop_assert!(
                !text.windows(WINDOW).any(|w| w == window),
                "echoed {:?} in {:?}",
                String::from_utf8_lossy(window),
                String::from_utf8_lossy(text)
            );
        }
    }
    Ok(())
}

/// Request headers as (name, raw value) pairs.
type Headers<'a> = Vec<(&'a str, &'a [u8])>;

fn request(method: &str, path: &str, headers: &[(&str, &[u8])], body: Vec<u8>) -> Option<Request<Body>> {
    let mut request = Request::builder().method(method).uri(path).body(Body::from(body)).unwrap();
    for (name, value) in headers {
        // hyper refuses such values before any layer sees them.
        let value = HeaderValue::from_bytes(value).ok()?;
        request.headers_mut().append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
    }
    Some(request)
}

fn cookie(name: &str, value: &[u8]) -> Vec<u8> {
    [name.as_bytes(), b"=", value].concat()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `PROPTEST_CASES` or `default` cases.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

static HS256: LazyLock<EncodingKey> = LazyLock::new(|| EncodingKey::from_secret(SECRET));

fn hs256(message: &str) -> String {
    jsonwebtoken::crypto::sign(message.as_bytes(), &HS256, Algorithm::HS256).unwrap()
}

// ---------------------------------------------------------------------------
// Strategies

/// Bytes biased towards what the parsers care about.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop::sample::select(b" \t=;.,\"\\-_~+/0123456789abcABC{}[]:%\x00\x7f\xff".to_vec());
    prop::collection::vec(prop_oneof![3 => any::<u8>(), 2 => interesting], 0..max)
}

/// Strings in the token alphabet (`b64token` plus dots), at least 16 long.
fn token_like() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/=-]{16,400}"
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(".{0,10}", inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object with some named members (absent when `None`) and extra ones.
fn object(members: Vec<(&'static str, Option<Value>)>, extra: Vec<(String, Value)>) -> String {
    let mut map = serde_json::Map::new();
    for (name, value) in members {
        if let Some(value) = value {
            map.insert(name.to_owned(), value);
        }
    }
    for (name, value) in extra {
        map.entry(name).or_insert(value);
    }
    Value::Object(map).to_string()
}

fn optional(value: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![1 => Just(None), 4 => value.prop_map(Some)].boxed()
}

fn header_json() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        4 => prop::sample::select(vec![
            "HS256", "HS384", "HS512", "ES256", "ES384", "RS256", "PS256", "EdDSA", "none", "None", "hs256", "",
        ])
        .prop_map(Value::from),
        1 => json_value(),
    ];
    let kid = prop_oneof![
        4 => prop::sample::select(vec!["k1", "k2", "", "K1", "k1 "]).prop_map(Value::from),
        1 => json_value(),
    ];
    let typ = prop_oneof![prop::sample::select(vec!["JWT", "at+jwt", "JWS", ""]).prop_map(Value::from), json_value()];
    let extra = prop::collection::vec(
        (prop::sample::select(vec!["jku", "x5u", "crit", "jwk", "cty", "zip"]), json_value()),
        0..3,
    )
    .prop_map(|v| v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    (optional(alg), optional(kid), optional(typ), extra)
        .prop_map(|(alg, kid, typ, extra)| object(vec![("alg", alg), ("kid", kid), ("typ", typ)], extra))
}

/// A time claim: near now, far, extreme, or not a number.
fn time_claim() -> impl Strategy<Value = Value> {
    let now = now();
    prop_oneof![
        4 => (-100_000i64..100_000).prop_map(move |d| json!(now + d)),
        1 => prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(u64::MAX - 1),
            json!(u64::MAX - 3600),
            json!(1e300),
            json!(now as f64 + 3600.5),
            json!(format!("{}", now + 3600)),
            json!(null),
        ]),
        1 => json_value(),
    ]
}

fn payload_json() -> impl Strategy<Value = String> {
    let text = || prop_oneof![4 => "[a-z0-9-]{1,20}".prop_map(Value::from), 1 => json_value()];
    let iss = prop_oneof![3 => Just(json!(ISSUER)), 1 => json_value()];
    let aud = prop_oneof![
        2 => Just(json!(AUDIENCE)),
        1 => Just(json!(["other", AUDIENCE])),
        1 => json_value(),
    ];
    let extra =
        prop::collection::vec((prop::sample::select(vec!["role", "level", "tags", "sub", "exp"]), json_value()), 0..3)
            .prop_map(|v| v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    (
        (optional(text()), optional(text()), optional(text())),
        (
            optional(time_claim()),
            optional(time_claim()),
            prop_oneof![2 => Just(None), 1 => time_claim().prop_map(Some)],
        ),
        (optional(iss), optional(aud), extra),
    )
        .prop_map(|((sub, sid, jti), (iat, exp, nbf), (iss, aud, extra))| {
            let members = vec![
                ("sub", sub),
                ("sid", sid),
                ("jti", jti),
                ("iat", iat),
                ("exp", exp),
                ("nbf", nbf),
                ("iss", iss),
                ("aud", aud),
            ];
            object(members, extra)
        })
}

/// One segment of a token: base64url of JSON, of raw bytes, or raw text.
fn segment(json: impl Strategy<Value = String> + 'static) -> impl Strategy<Value = (String, Option<String>)> {
    prop_oneof![
        6 => json.prop_map(|text| (URL_SAFE_NO_PAD.encode(&text), Some(text))),
        1 => bytes(200).prop_map(|b| (URL_SAFE_NO_PAD.encode(b), None)),
        1 => "[A-Za-z0-9_=+/-]{0,60}".prop_map(|s| (s, None)),
        // Huge: far past the 8 KiB token limit.
        1 => (1usize..40).prop_map(|k| ("A".repeat(k * 1024), None)),
    ]
}

#[derive(Clone, Debug)]
enum Shape {
    Normal,
    /// Segments dropped from the end (1 or 2 left).
    Fewer(usize),
    /// Extra segments.
    More(Vec<String>),
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        6 => Just(Shape::Normal),
        1 => (1usize..3).prop_map(Shape::Fewer),
        1 => prop::collection::vec("[A-Za-z0-9_-]{0,20}", 1..4).prop_map(Shape::More),
    ]
}

/// A token and its payload JSON text (when it has one).
fn jwt(genuine_signature: bool) -> impl Strategy<Value = (String, Option<String>)> {
    let signature = prop_oneof![
        bytes(300).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        Just(String::new()),
        // An HS256 signature of some other message: right shape, wrong value.
        "[a-z]{0,8}".prop_map(|m| hs256(&m)),
    ];
    (segment(header_json()), segment(payload_json()), signature, shape()).prop_map(
        move |((header, _), (payload, payload_text), signature, shape)| {
            let message = format!("{header}.{payload}");
            let signature = if genuine_signature { hs256(&message) } else { signature };
            let token = match shape {
                Shape::Normal => format!("{message}.{signature}"),
                Shape::Fewer(1) => header,
                Shape::Fewer(_) => message,
                Shape::More(extra) => format!("{message}.{signature}.{}", extra.join(".")),
            };
            (token, payload_text)
        },
    )
}

/// Whether `exp` or `nbf` are within seconds of now (so the status may change
/// between two presentations of the token).
fn near_boundary(payload: Option<&str>) -> bool {
    let Some(value) = payload.and_then(|p| serde_json::from_str::<Value>(p).ok()) else { return true };
    let now = now() as f64;
    ["exp", "nbf"]
        .iter()
        .filter_map(|claim| value.get(claim).and_then(Value::as_f64))
        .any(|t| (t - now).abs() <= (LEEWAY_SECS + 3) as f64)
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(cases(256))]

    /// Arbitrary `Authorization` values, bare or after `Bearer `: a 4xx, on a
    /// safe and on an unsafe method, and through the optional layer too
    /// (which passes bad credentials through as anonymous, except malformed
    /// headers, which stay a 400).
    #[test]
    fn authorization_header_values_are_4xx(value in bytes(700), prefixed in any::<bool>()) {
        let h = Harness::new();
        let value = if prefixed { [b"Bearer ".as_slice(), &value].concat() } else { value };
        for (method, path) in [("GET", "/me"), ("POST", "/write")] {
            let Some(request) = request(method, path, &[("authorization", &value)], vec![]) else { return Ok(()) };
            h.send(&h.strict, request).rejected(&value, false)?;
        }
        let request = request("GET", "/opt", &[("authorization", &value)], vec![]).unwrap();
        h.send(&h.plain, request).handled(&value)?;
    }

    /// Arbitrary `Cookie` headers, and arbitrary values of the access cookie,
    /// the refresh cookie (transparent refresh) or both: a 4xx, with or
    /// without cross-site headers on unsafe methods.
    #[test]
    fn cookie_values_are_4xx(
        value in bytes(700),
        which in 0u8..4,
        post in any::<bool>(),
        cross_site in prop::option::of(prop_oneof![
            Just(("sec-fetch-site", b"cross-site".to_vec())),
            Just(("origin", b"https://evil.example".to_vec())),
            bytes(40).prop_map(|b| ("origin", b)),
        ]),
    ) {
        let h = Harness::new();
        let cookies = match which {
            0 => value.clone(),
            1 => cookie("__Host-access", &value),
            2 => cookie("__Host-refresh", &value),
            _ => [cookie("__Host-access", &value), b"; ".to_vec(), cookie("__Host-refresh", &value)].concat(),
        };
        let mut headers: Vec<(&str, &[u8])> = vec![("cookie", &cookies), ("host", b"app.example")];
        if let Some((name, value)) = &cross_site {
            headers.push((name, value));
        }
        let (method, path) = if post { ("POST", "/write") } else { ("GET", "/me") };
        let Some(request) = request(method, path, &headers, vec![]) else { return Ok(()) };
        h.send(&h.strict, request).rejected(&value, false)?;
    }

    /// Arbitrary `POST /auth/refresh` bodies (as JSON, as a form, with no
    /// content type), refresh tokens in a JSON body and in the refresh cookie:
    /// a 4xx.
    #[test]
    fn refresh_endpoint_inputs_are_4xx(value in bytes(1500), token in ".{0,1100}", how in 0u8..6) {
        let h = Harness::new();
        let json_body = serde_json::to_vec(&json!({ "refresh_token": token })).unwrap();
        let form_body = [b"grant_type=refresh_token&refresh_token=".as_slice(), token.as_bytes()].concat();
        let refresh_cookie = cookie("__Host-refresh", &value);
        let (headers, body, presented): (Headers<'_>, Vec<u8>, &[u8]) = match how {
            0 => (vec![("content-type", b"application/json")], value.clone(), &value),
            1 => (vec![("content-type", b"application/x-www-form-urlencoded")], value.clone(), &value),
            2 => (vec![], value.clone(), &value),
            3 => (vec![("content-type", b"application/json")], json_body, token.as_bytes()),
            4 => (vec![("content-type", b"application/x-www-form-urlencoded")], form_body, token.as_bytes()),
            _ => (vec![("cookie", &refresh_cookie)], vec![], &value),
        };
        let Some(request) = request("POST", "/auth/refresh", &headers, body) else { return Ok(()) };
        h.send(&h.strict, request).rejected(presented, false)?;
    }

    /// A genuine refresh token with one part replaced, or with bytes added:
    /// a 4xx (the HMAC tag covers every part), in the body and as a cookie.
    #[test]
    fn tampered_refresh_tokens_are_4xx(
        part in 0usize..4,
        replacement in "[A-Za-z0-9_.-]{0,40}",
        append in any::<bool>(),
        as_cookie in any::<bool>(),
    ) {
        let h = Harness::new();
        let mut parts: Vec<String> = h.refresh_token.split('.').map(str::to_owned).collect();
        if append { parts[part].push_str(&replacement) } else { parts[part] = replacement };
        let token = parts.join(".");
        prop_assume!(token != h.refresh_token);
        let request = if as_cookie {
            request("POST", "/auth/refresh", &[("cookie", &cookie("__Host-refresh", token.as_bytes()))], vec![])
        } else {
            let body = serde_json::to_vec(&json!({ "refresh_token": token })).unwrap();
            request("POST", "/auth/refresh", &[("content-type", b"application/json")], body)
        };
        let reply = h.send(&h.strict, request.unwrap());
        reply.rejected(token.as_bytes(), true)?;
        prop_assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }

    /// JWT-ish tokens with random header and payload JSON (random `alg`,
    /// `kid`, `typ`, claims of every type), random, missing, extra and huge
    /// segments, and signatures that are not genuine: always a 4xx, whether
    /// presented as a bearer token or as the access cookie.
    #[test]
    fn jwt_shaped_tokens_without_a_genuine_signature_are_4xx(
        (token, _) in jwt(false),
        as_cookie in any::<bool>(),
        strict in any::<bool>(),
    ) {
        let h = Harness::new();
        let value = if as_cookie { cookie("__Host-access", token.as_bytes()) } else { format!("Bearer {token}").into_bytes() };
        let name = if as_cookie { "cookie" } else { "authorization" };
        let router = if strict { &h.strict } else { &h.plain };
        let request = request("GET", "/me", &[(name, &value)], vec![]).unwrap();
        h.send(router, request).rejected(token.as_bytes(), false)?;
    }

    /// The same tokens genuinely signed with the layer's key, so the claim
    /// checks and the claims decoders behind the signature are reached: never
    /// a 5xx, and a second presentation (a cache hit) answers the same.
    #[test]
    fn genuinely_signed_random_claims_are_never_5xx(
        (token, payload) in jwt(true),
        path in prop::sample::select(vec!["/me", "/raw", "/opt"]),
        strict in any::<bool>(),
    ) {
        let h = Harness::new();
        let router = if strict { &h.strict } else { &h.plain };
        let value = format!("Bearer {token}");
        let send = || h.send(router, request("GET", path, &[("authorization", value.as_bytes())], vec![]).unwrap());
        let (first, second) = (send(), send());
        first.handled(token.as_bytes())?;
        second.handled(token.as_bytes())?;
        if !near_boundary(payload.as_deref()) {
            prop_assert_eq!(first.status, second.status, "{} then {}", first.text(), second.text());
        }
    }

    /// Token-shaped strings presented everywhere: the rejection's body
    /// (`error_description` included) and headers (`WWW-Authenticate`
    /// included) hold no 16-character substring of them.
    #[test]
    fn rejections_never_echo_token_like_input(token in token_like()) {
        let h = Harness::new();
        let bearer = format!("Bearer {token}");
        let json_body = serde_json::to_vec(&json!({ "refresh_token": token })).unwrap();
        let attempts = [
            (&h.strict, request("GET", "/me", &[("authorization", bearer.as_bytes())], vec![])),
            (&h.strict, request("GET", "/me", &[("cookie", &cookie("__Host-access", token.as_bytes()))], vec![])),
            (&h.strict, request("GET", "/me", &[("cookie", &cookie("__Host-refresh", token.as_bytes()))], vec![])),
            (&h.strict, request("POST", "/auth/refresh", &[("content-type", b"application/json")], json_body)),
            (&h.strict, request("POST", "/auth/refresh", &[("cookie", &cookie("__Host-refresh", token.as_bytes()))], vec![])),
        ];
        for (router, request) in attempts {
            let Some(request) = request else { continue };
            h.send(router, request).rejected(token.as_bytes(), true)?;
        }
    }
}

// ---------------------------------------------------------------------------
// Fixed cases: sizes and realistic tokens

/// A 200 KB `Authorization` header or cookie is refused with a 4xx, unread
/// past the size limit: in the token alphabet (401, too large) and not (400).
#[test]
fn a_200_kb_credential_is_4xx() {
    let h = Harness::new();
    let huge = "A".repeat(BIG);
    let huge_jwt = format!("{huge}.{huge}.{huge}");
    for (value, status) in [
        (format!("Bearer {huge}"), StatusCode::UNAUTHORIZED),
        (format!("Bearer {huge_jwt}"), StatusCode::UNAUTHORIZED),
        (format!("Bearer {}", "a b".repeat(BIG / 3)), StatusCode::BAD_REQUEST),
        // Another scheme is no credential at all.
        (format!("Basic {huge}"), StatusCode::UNAUTHORIZED),
    ] {
        let reply = h.send(&h.strict, request("GET", "/me", &[("authorization", value.as_bytes())], vec![]).unwrap());
        assert_eq!(reply.status, status, "{}", reply.text());
    }
    let cookies = [
        cookie("__Host-access", huge.as_bytes()),
        cookie("__Host-refresh", huge.as_bytes()),
        [cookie("__Host-access", huge.as_bytes()), b"; ".to_vec(), cookie("__Host-refresh", huge.as_bytes())].concat(),
        // Many small cookies.
        (0..10_000).map(|i| format!("c{i}=v{i}")).collect::<Vec<_>>().join("; ").into_bytes(),
    ];
    for value in &cookies {
        for (method, path) in [("GET", "/me"), ("POST", "/write")] {
            let reply = h.send(&h.strict, request(method, path, &[("cookie", value)], vec![]).unwrap());
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {}", reply.text());
        }
        let reply = h.send(&h.strict, request("POST", "/auth/refresh", &[("cookie", value)], vec![]).unwrap());
        assert!(reply.status.is_client_error(), "{}", reply.text());
    }
}

/// `POST /auth/refresh` refuses a 200 KB body (4 KiB are read at most) and a
/// refresh token over 1 KiB, whatever it is.
#[test]
fn a_200_kb_refresh_request_is_400() {
    let h = Harness::new();
    let huge = "A".repeat(BIG);
    let bodies = [
        (b"application/json".as_slice(), serde_json::to_vec(&json!({ "refresh_token": huge })).unwrap()),
        (b"application/x-www-form-urlencoded", format!("refresh_token={huge}").into_bytes()),
        (b"application/json", serde_json::to_vec(&json!({ "refresh_token": "A".repeat(2000) })).unwrap()),
        (b"text/plain", vec![b'{'; BIG]),
    ];
    for (content_type, body) in bodies {
        let request = request("POST", "/auth/refresh", &[("content-type", content_type)], body).unwrap();
        let reply = h.send(&h.strict, request);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    }
}

/// Realistic tokens that are refused (expired, wrong audience, other key,
/// tampered, revoked, a rotated-away refresh token): the rejection holds no
/// 16-character substring of them, in the body or any header.
#[test]
fn rejections_never_echo_realistic_tokens() {
    let h = Harness::new();
    let other = SigningKey::hs256("k1", b"another secret of at least 32 bytes!").unwrap();
    let mut access_tokens = vec![
        h.auth.test_token("alice").expires_in(-3600).sign(),
        h.auth.test_token("alice").audience(Some("other")).sign(),
        h.auth.test_token("alice").issuer(None).sign(),
        h.auth.test_token("alice").not_before_in(3600).sign(),
        h.auth.test_token("alice").signed_with(&other).sign(),
        format!("{}x", h.access_token),
    ];
    // Rotate once, then revoke the session: both refresh tokens and the
    // access token of the session are now refused, as are forged variants.
    let rotated = h.runtime.block_on(h.auth.refresh(&h.refresh_token)).unwrap();
    let mut refresh_tokens = vec![format!("{}A", rotated.refresh_token()), h.refresh_token.replace('.', "..")];
    h.runtime.block_on(h.auth.revoke_session("alice", rotated.session_id())).unwrap();
    access_tokens.push(rotated.access_token().to_owned());
    refresh_tokens.push(rotated.refresh_token().to_owned());
    refresh_tokens.push(h.refresh_token.clone());

    for token in &access_tokens {
        let bearer = format!("Bearer {token}");
        for headers in
            [vec![("authorization", bearer.as_bytes())], vec![("cookie", &*cookie("__Host-access", token.as_bytes()))]]
        {
            let reply = h.send(&h.strict, request("GET", "/me", &headers, vec![]).unwrap());
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
            reply.no_echo(token.as_bytes(), true).unwrap();
        }
    }
    for token in &refresh_tokens {
        let body = serde_json::to_vec(&json!({ "refresh_token": token })).unwrap();
        let attempts = [
            (StatusCode::BAD_REQUEST, request("POST", "/auth/refresh", &[("content-type", b"application/json")], body)),
            (
                StatusCode::BAD_REQUEST,
                request("POST", "/auth/refresh", &[("cookie", &cookie("__Host-refresh", token.as_bytes()))], vec![]),
            ),
            (
                StatusCode::UNAUTHORIZED,
                request("GET", "/me", &[("cookie", &cookie("__Host-refresh", token.as_bytes()))], vec![]),
            ),
        ];
        for (status, request) in attempts {
            let reply = h.send(&h.strict, request.unwrap());
            assert_eq!(reply.status, status, "{}", reply.text());
            reply.no_echo(token.as_bytes(), true).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// Regressions found by fuzzing and review

/// A genuinely signed token whose `exp` is within the leeway of `u64::MAX`
/// (only a holder of a trusted key can make one, e.g. a third party whose
/// JWK was added with `verifying_key`): the cached path's `exp + leeway` in
/// `Verifier::check_times` overflowed, a panic in debug builds and, in
/// release builds, a wrapped sum that called the second (cached)
/// presentation "expired". Found by the `bearer_jwt` fuzz target (an overflow panic after
/// about 13 000 executions), after review had pointed at the sum.
#[test]
fn exp_at_u64_max_neither_panics_nor_flips_on_a_cache_hit() {
    let h = Harness::new();
    for exp in [u64::MAX, u64::MAX - 1, u64::MAX - LEEWAY_SECS as u64] {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k1","typ":"at+jwt"}"#);
        let claims =
            json!({ "sub": "alice", "sid": "s", "jti": "j", "iat": now(), "exp": exp, "iss": ISSUER, "aud": AUDIENCE });
        let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let bearer = format!("Bearer {message}.{}", hs256(&message));
        let send =
            || h.send(&h.strict, request("GET", "/me", &[("authorization", bearer.as_bytes())], vec![]).unwrap());
        let (first, second) = (send(), send());
        assert_eq!(first.status, StatusCode::OK, "{}", first.text());
        assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    }
}

/// Custom claims whose last member (in serialization order) is an object:
/// the claims splicing in `token::sign` trimmed every trailing `}` and made
/// invalid JSON, so `login` failed with a 500 `Misconfigured`. Found by
/// review while writing the structured-claims properties.
#[test]
fn custom_claims_ending_in_an_object_can_log_in() {
    let h = Harness::new();
    for claims in [json!({ "profile": { "team": "a" } }), json!({ "a": 1, "z": { "y": {} } }), json!({ "z": {} })] {
        let tokens = h.runtime.block_on(h.auth.login("bob", &claims, ClientInfo::default()));
        let tokens = tokens.unwrap_or_else(|e| panic!("login with {claims} failed: {e:?}"));
        let request = request(
            "GET",
            "/raw",
            &[("authorization", format!("Bearer {}", tokens.access_token()).as_bytes())],
            vec![],
        );
        let reply = h.send(&h.strict, request.unwrap());
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
}

/// A `Cookie` header that also carries another cookie with a non-ASCII byte
/// (which browsers send, and which a sibling subdomain can plant with
/// `Domain=` on the parent domain): the auth cookies in it must still be
/// found. The cookie parser skipped every `Cookie` header that is not visible
/// ASCII, so such a planted cookie logged the user out. Found by review of
/// the cookie parser while writing the `Cookie` properties.
#[test]
fn a_non_ascii_cookie_does_not_hide_the_auth_cookies() {
    let h = Harness::new();
    let value = [b"planted=caf\xc3\xa9; __Host-access=".as_slice(), h.access_token.as_bytes()].concat();
    let reply = h.send(&h.strict, request("GET", "/me", &[("cookie", &value)], vec![]).unwrap());
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}
