//! Structured bearer JWTs: a header and a payload built from fuzz-chosen
//! fields (or raw JSON text, or raw bytes), base64url-encoded, then a
//! signature that is garbage or genuinely made with one of the layer's keys
//! (or with a public key used as an HMAC secret), so that the JSON parsers and
//! the claim checks behind the signature check are reached as well.
//!
//! Every response must be 2xx or 4xx, a rejection must not echo the token,
//! and a second presentation (served from the verified-token cache) must get
//! the same status as the first unless `exp`/`nbf` are within seconds of now.
#![no_main]

use std::{
    fmt::Write as _,
    sync::LazyLock,
    time::{SystemTime, UNIX_EPOCH},
};

use arbitrary::Arbitrary;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use tower_jwt_auth_fuzz::{AUDIENCE, ED_PRIVATE, ED_PUBLIC, HS_SECRET, ISSUER, P256_PRIVATE, harness, request};

#[derive(Arbitrary, Debug)]
enum Val {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    Arr(Vec<Val>),
    Obj(Vec<(String, Val)>),
    /// `[[[…]]]`, this many levels (capped at 4096).
    Deep(u16),
}

impl Val {
    fn write(&self, out: &mut String, depth: usize) {
        if depth > 32 {
            out.push_str("null");
            return;
        }
        match self {
            Val::Null => out.push_str("null"),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::U64(n) => write!(out, "{n}").expect("write to String"),
            Val::I64(n) => write!(out, "{n}").expect("write to String"),
            Val::F64(f) if f.is_finite() => write!(out, "{f:e}").expect("write to String"),
            Val::F64(_) => out.push_str("1e400"),
            Val::Str(s) => out.push_str(&serde_json::to_string(s).expect("strings serialize")),
            Val::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out, depth + 1);
                }
                out.push(']');
            }
            Val::Obj(members) => write_object(out, members.iter().map(|(k, v)| (k.as_str(), Some(v))), depth),
            Val::Deep(n) => {
                let n = usize::from(*n).min(4096);
                out.push_str(&"[".repeat(n));
                out.push_str(&"]".repeat(n));
            }
        }
    }
}

/// `{"k":v,…}` keeping duplicates and order; `None` values are left out.
fn write_object<'a>(out: &mut String, members: impl Iterator<Item = (&'a str, Option<&'a Val>)>, depth: usize) {
    out.push('{');
    let mut first = true;
    for (key, value) in members {
        let Some(value) = value else { continue };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&serde_json::to_string(key).expect("strings serialize"));
        out.push(':');
        value.write(out, depth + 1);
    }
    out.push('}');
}

#[derive(Arbitrary, Debug)]
enum Alg {
    Hs256,
    Hs384,
    Es256,
    Rs256,
    EdDsa,
    None,
    LowerHs256,
    Other(Val),
}

#[derive(Arbitrary, Debug)]
enum Kid {
    K1,
    Ed,
    P256,
    Unknown,
    Other(Val),
}

/// A header or payload member. `Default` comes first, so an input that runs
/// out of bytes builds the valid token (`alg` HS256, `kid` k1, the right
/// claims): the fuzzer starts from tokens that pass and mutates one member.
#[derive(Arbitrary, Debug)]
enum Field<T> {
    Default,
    Absent,
    Set(T),
}

impl<T> Field<T> {
    fn value(&self, default: impl FnOnce() -> Option<Val>, set: impl FnOnce(&T) -> Val) -> Option<Val> {
        match self {
            Field::Default => default(),
            Field::Absent => None,
            Field::Set(value) => Some(set(value)),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct HeaderSpec {
    alg: Field<Alg>,
    kid: Field<Kid>,
    typ: Field<Val>,
    extra: Vec<(String, Val)>,
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// Seconds from now.
    Now(i32),
    Abs(u64),
    /// One of [`EDGES`].
    Edge(u8),
    Val(Val),
}

/// Boundary values for times: integer limits, the leeway next to them, and
/// where doubles stop being exact.
const EDGES: [u64; 11] = [
    0,
    1,
    u32::MAX as u64,
    1 << 53,
    (1 << 53) + 1,
    i64::MAX as u64,
    i64::MAX as u64 + 1,
    u64::MAX - 6,
    u64::MAX - 5,
    u64::MAX - 1,
    u64::MAX,
];

#[derive(Arbitrary, Debug)]
enum Expected {
    Right,
    /// The right one among others (for `aud` arrays).
    Among(Vec<Val>),
    Val(Val),
}

/// A string claim: usually a plain string, so the claim checks behind the
/// registered claims' types are reached often.
#[derive(Arbitrary, Debug)]
enum Text {
    Plain(String),
    Val(Val),
}

impl Text {
    fn value(&self) -> Val {
        match self {
            Text::Plain(s) => Val::Str(s.clone()),
            Text::Val(v) => clone_val(v),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct PayloadSpec {
    sub: Field<Text>,
    sid: Field<Text>,
    jti: Field<Text>,
    iat: Field<Time>,
    exp: Field<Time>,
    /// Absent by default.
    nbf: Field<Time>,
    iss: Field<Expected>,
    aud: Field<Expected>,
    /// The custom claims the handlers read; absent by default.
    role: Field<Val>,
    level: Field<Val>,
    tags: Field<Val>,
    extra: Vec<(String, Val)>,
}

#[derive(Arbitrary, Debug)]
enum Segment<T> {
    Spec(T),
    /// JSON text (possibly invalid), base64url-encoded.
    Json(String),
    /// Raw bytes, base64url-encoded.
    Bytes(Vec<u8>),
    /// Put in the token as is (not encoded).
    Verbatim(String),
}

#[derive(Arbitrary, Debug)]
enum Sig {
    Hs256,
    Ed,
    P256,
    /// HS256 keyed with the Ed25519 public key PEM (algorithm confusion).
    HmacWithPublicKey,
    /// A genuine HS256 signature with one byte changed.
    FlippedHs256(u16, u8),
    Raw(Vec<u8>),
    Verbatim(String),
}

#[derive(Arbitrary, Debug)]
enum Shape {
    Normal,
    ExtraSegment(String),
    NoSignature,
    Padded,
}

#[derive(Arbitrary, Debug)]
enum Target {
    Bearer,
    Cookie,
    NoIssuerOrAudience,
    Optional,
    RawClaims,
    NoClaims,
}

#[derive(Arbitrary, Debug)]
struct Input {
    header: Segment<HeaderSpec>,
    payload: Segment<PayloadSpec>,
    signature: Sig,
    shape: Shape,
    target: Target,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn time_value(time: &Time) -> Val {
    match time {
        Time::Now(offset) => Val::I64(now() as i64 + i64::from(*offset)),
        Time::Abs(n) => Val::U64(*n),
        Time::Edge(i) => Val::U64(EDGES[usize::from(*i) % EDGES.len()]),
        Time::Val(v) => clone_val(v),
    }
}

fn clone_val(v: &Val) -> Val {
    match v {
        Val::Null => Val::Null,
        Val::Bool(b) => Val::Bool(*b),
        Val::U64(n) => Val::U64(*n),
        Val::I64(n) => Val::I64(*n),
        Val::F64(f) => Val::F64(*f),
        Val::Str(s) => Val::Str(s.clone()),
        Val::Arr(items) => Val::Arr(items.iter().map(clone_val).collect()),
        Val::Obj(members) => Val::Obj(members.iter().map(|(k, v)| (k.clone(), clone_val(v))).collect()),
        Val::Deep(n) => Val::Deep(*n),
    }
}

fn expected(e: &Expected, right: &str) -> Val {
    match e {
        Expected::Right => Val::Str(right.to_owned()),
        Expected::Among(others) => {
            let mut all: Vec<Val> = others.iter().map(clone_val).collect();
            all.push(Val::Str(right.to_owned()));
            Val::Arr(all)
        }
        Expected::Val(v) => clone_val(v),
    }
}

fn header_json(spec: &HeaderSpec) -> String {
    let text = |s: &str| Some(Val::Str(s.to_owned()));
    let alg = spec.alg.value(
        || text("HS256"),
        |alg| match alg {
            Alg::Hs256 => Val::Str("HS256".into()),
            Alg::Hs384 => Val::Str("HS384".into()),
            Alg::Es256 => Val::Str("ES256".into()),
            Alg::Rs256 => Val::Str("RS256".into()),
            Alg::EdDsa => Val::Str("EdDSA".into()),
            Alg::None => Val::Str("none".into()),
            Alg::LowerHs256 => Val::Str("hs256".into()),
            Alg::Other(v) => clone_val(v),
        },
    );
    let kid = spec.kid.value(
        || text("k1"),
        |kid| match kid {
            Kid::K1 => Val::Str("k1".into()),
            Kid::Ed => Val::Str("ed".into()),
            Kid::P256 => Val::Str("p256".into()),
            Kid::Unknown => Val::Str("nope".into()),
            Kid::Other(v) => clone_val(v),
        },
    );
    let typ = spec.typ.value(|| text("JWT"), clone_val);
    let mut out = String::new();
    let fixed = [("alg", alg.as_ref()), ("kid", kid.as_ref()), ("typ", typ.as_ref())];
    write_object(&mut out, fixed.into_iter().chain(spec.extra.iter().map(|(k, v)| (k.as_str(), Some(v)))), 0);
    out
}

fn payload_json(spec: &PayloadSpec) -> String {
    let text = |s: &str| Some(Val::Str(s.to_owned()));
    let at = |offset: i64| Some(Val::I64(now() as i64 + offset));
    let sub = spec.sub.value(|| text("alice"), Text::value);
    let sid = spec.sid.value(|| text("s-1"), Text::value);
    let jti = spec.jti.value(|| text("j-1"), Text::value);
    let iat = spec.iat.value(|| at(0), time_value);
    let exp = spec.exp.value(|| at(3600), time_value);
    let nbf = spec.nbf.value(|| None, time_value);
    let iss = spec.iss.value(|| text(ISSUER), |e| expected(e, ISSUER));
    let aud = spec.aud.value(|| text(AUDIENCE), |e| expected(e, AUDIENCE));
    let role = spec.role.value(|| None, clone_val);
    let level = spec.level.value(|| None, clone_val);
    let tags = spec.tags.value(|| None, clone_val);
    let fixed = [
        ("sub", sub.as_ref()),
        ("sid", sid.as_ref()),
        ("jti", jti.as_ref()),
        ("iat", iat.as_ref()),
        ("exp", exp.as_ref()),
        ("nbf", nbf.as_ref()),
        ("iss", iss.as_ref()),
        ("aud", aud.as_ref()),
        ("role", role.as_ref()),
        ("level", level.as_ref()),
        ("tags", tags.as_ref()),
    ];
    let mut out = String::new();
    write_object(&mut out, fixed.into_iter().chain(spec.extra.iter().map(|(k, v)| (k.as_str(), Some(v)))), 0);
    out
}

/// The segment as it appears in the token, and its JSON text when it has one.
fn segment<T>(segment: &Segment<T>, json: impl Fn(&T) -> String) -> (String, Option<String>) {
    match segment {
        Segment::Spec(spec) => {
            let text = json(spec);
            (URL_SAFE_NO_PAD.encode(&text), Some(text))
        }
        Segment::Json(text) => (URL_SAFE_NO_PAD.encode(text), Some(text.clone())),
        Segment::Bytes(bytes) => (URL_SAFE_NO_PAD.encode(bytes), None),
        Segment::Verbatim(text) => (text.clone(), None),
    }
}

struct Keys {
    hs256: EncodingKey,
    ed: EncodingKey,
    p256: EncodingKey,
    confused: EncodingKey,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    hs256: EncodingKey::from_secret(HS_SECRET),
    ed: EncodingKey::from_ed_pem(ED_PRIVATE).expect("Ed25519 PEM"),
    p256: EncodingKey::from_ec_pem(P256_PRIVATE).expect("P-256 PEM"),
    confused: EncodingKey::from_secret(ED_PUBLIC),
});

fn sign(message: &str, sig: &Sig) -> String {
    let keys = &*KEYS;
    let signed = |key, alg| jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("the fuzz keys sign");
    match sig {
        Sig::Hs256 => signed(&keys.hs256, Algorithm::HS256),
        Sig::Ed => signed(&keys.ed, Algorithm::EdDSA),
        Sig::P256 => signed(&keys.p256, Algorithm::ES256),
        Sig::HmacWithPublicKey => signed(&keys.confused, Algorithm::HS256),
        Sig::FlippedHs256(at, xor) => {
            let mut raw = URL_SAFE_NO_PAD.decode(signed(&keys.hs256, Algorithm::HS256)).expect("base64url");
            let at = usize::from(*at) % raw.len();
            raw[at] ^= xor.max(&1);
            URL_SAFE_NO_PAD.encode(raw)
        }
        Sig::Raw(bytes) => URL_SAFE_NO_PAD.encode(bytes),
        Sig::Verbatim(text) => text.clone(),
    }
}

/// Whether `exp` or `nbf` sit so close to now that the status may change
/// between two presentations.
fn near_boundary(payload: Option<&str>) -> bool {
    let Some(value) = payload.and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()) else {
        return true;
    };
    let now = now() as f64;
    ["exp", "nbf"]
        .iter()
        .filter_map(|claim| value.get(claim).and_then(serde_json::Value::as_f64))
        .any(|t| (t - now).abs() <= (tower_jwt_auth_fuzz::LEEWAY_SECS + 3) as f64)
}

fuzz_target!(|input: Input| {
    let h = harness();
    let (header, _) = segment(&input.header, header_json);
    let (payload, payload_text) = segment(&input.payload, payload_json);
    let message = format!("{header}.{payload}");
    let signature = sign(&message, &input.signature);
    let token = match &input.shape {
        Shape::Normal => format!("{message}.{signature}"),
        Shape::ExtraSegment(extra) => format!("{message}.{signature}.{extra}"),
        Shape::NoSignature => format!("{message}."),
        Shape::Padded => format!("{message}.{signature}=="),
    };
    let bearer = [b"Bearer ".as_slice(), token.as_bytes()].concat();
    let cookie = [b"__Host-access=".as_slice(), token.as_bytes()].concat();
    let (router, method, path, headers): (_, _, _, Vec<(&'static str, &[u8])>) = match input.target {
        Target::Bearer => (&h.strict, "GET", "/me", vec![("authorization", &bearer)]),
        Target::Cookie => (&h.strict, "GET", "/me", vec![("cookie", &cookie)]),
        Target::NoIssuerOrAudience => (&h.plain, "GET", "/me", vec![("authorization", &bearer)]),
        Target::Optional => (&h.plain, "GET", "/opt", vec![("authorization", &bearer)]),
        Target::RawClaims => (&h.plain, "GET", "/raw", vec![("authorization", &bearer)]),
        Target::NoClaims => (&h.plain, "GET", "/any", vec![("authorization", &bearer)]),
    };
    let first = h.send(router, request(method, path, &headers, vec![]));
    first.check(token.as_bytes());
    let second = h.send(router, request(method, path, &headers, vec![]));
    second.check(token.as_bytes());
    if !near_boundary(payload_text.as_deref()) {
        assert_eq!(
            first.status,
            second.status,
            "a cached token answered differently: {:?} then {:?}",
            String::from_utf8_lossy(&first.body),
            String::from_utf8_lossy(&second.body)
        );
    }
});
