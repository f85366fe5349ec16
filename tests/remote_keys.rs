//! Remote keys against a real HTTP server that injects faults: cold start,
//! waiting with a deadline, `kid` floods (fetches counted), outages (5xx,
//! slow, garbage, huge, closed port), rotation, discovery, lookups that
//! never wait.

#[path = "support/jwks_server.rs"]
mod jwks_server;

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

use jwks_server::{Behaviour, JwksServer};
use serde_json::{Value, json};
use tower_jwt_auth::{
    Algorithm, JwtAuth, SigningKey,
    remote_keys::{FetchError, KeyLookup, RemoteKeys, RemoteKeysBuilder, RemoteKeysError},
};

/// Generous ceiling for any condition to become true.
const CEILING: Duration = Duration::from_secs(15);
const COOLDOWN: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(500);

struct KeySet {
    kids: Vec<&'static str>,
    jwks: String,
}

/// Key set A: Ed25519 and P-256; key set B: RSA and P-384.
static A: LazyLock<KeySet> =
    LazyLock::new(|| key_set(&[(Algorithm::EdDSA, "a-ed", "ed25519.pem"), (Algorithm::ES256, "a-p256", "p256.pem")]));
static B: LazyLock<KeySet> =
    LazyLock::new(|| key_set(&[(Algorithm::RS256, "b-rsa", "rsa.pem"), (Algorithm::ES384, "b-p384", "p384.pem")]));

fn key_set(keys: &[(Algorithm, &'static str, &str)]) -> KeySet {
    // With both crypto backends compiled in, building a JwtAuth picks one
    // before the PEMs are read.
    let _ = JwtAuth::builder().signing_key(SigningKey::hs256("x", &[7; 32]).unwrap()).build();
    let signing: Vec<SigningKey> = keys
        .iter()
        .map(|(alg, kid, file)| {
            let pem = std::fs::read(format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            SigningKey::from_pem(*alg, *kid, &pem).unwrap()
        })
        .collect();
    let mut auth = JwtAuth::builder().signing_key(signing[0].clone());
    for key in &signing[1..] {
        auth = auth.verifying_key(key.verifying_key().clone());
    }
    let jwks = serde_json::to_string(&auth.build().unwrap().jwks()).unwrap();
    let mut kids: Vec<&str> = keys.iter().map(|(_, kid, _)| *kid).collect();
    kids.sort_unstable(); // as `status().kids`
    KeySet { kids, jwks }
}

/// Fast settings for tests; no refresh unless a test asks for one.
fn fast(builder: RemoteKeysBuilder) -> RemoteKeysBuilder {
    builder.cooldown(COOLDOWN).fetch_timeout(TIMEOUT).refresh_bounds(
        Duration::from_secs(3600),
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    )
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < CEILING, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn found(keys: &RemoteKeys, kid: &str) -> bool {
    matches!(keys.lookup(Some(kid)), KeyLookup::Found(key) if key.kid() == kid)
}

fn random_kid(i: usize) -> String {
    format!("flood-{i}-{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

#[tokio::test]
async fn cold_start_answers_not_ready_then_finds_keys() {
    let server = JwksServer::start(A.jwks.clone()).await;
    server.set_behaviour(Behaviour::Status(503));
    let keys = fast(RemoteKeys::jwks_url(server.url())).build().unwrap();
    assert!(!keys.is_ready());
    assert!(matches!(keys.lookup(Some("a-ed")), KeyLookup::NotReady));
    assert!(matches!(keys.lookup(None), KeyLookup::NotReady));
    assert_eq!(keys.retry_after(), Duration::from_secs(1), "the cooldown, rounded up to a second");
    // It retries once per cooldown while it holds nothing:
    until("two failed fetches", || server.jwks_requests() >= 2).await;
    assert!(matches!(keys.lookup(Some("a-ed")), KeyLookup::NotReady));
    assert!(matches!(keys.status().last_error, Some(FetchError::Status { status: 503, .. })));
    server.set_behaviour(Behaviour::Serve);
    until("keys", || found(&keys, "a-ed")).await;
    assert!(keys.is_ready());
    assert!(found(&keys, "a-p256"));
    let status = keys.status();
    assert_eq!(status.kids, ["a-ed", "a-p256"]);
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(keys.issuer(), None);
}

#[tokio::test]
async fn wait_ready_succeeds_or_times_out() {
    let server = JwksServer::start(A.jwks.clone()).await;
    let keys = fast(RemoteKeys::jwks_url(server.url())).build().unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    assert!(found(&keys, "a-ed"));

    let down = JwksServer::start(A.jwks.clone()).await;
    down.set_behaviour(Behaviour::Status(500));
    let keys = fast(RemoteKeys::jwks_url(down.url())).build().unwrap();
    until("a failed fetch", || keys.status().last_error.is_some()).await;
    let error = keys.wait_ready(Duration::from_millis(200)).await.unwrap_err();
    assert!(
        matches!(&error, RemoteKeysError::NotReady { last_error: Some(FetchError::Status { status: 500, .. }), .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("500"), "{error}");
    // A later wait succeeds once the server recovers.
    down.set_behaviour(Behaviour::Serve);
    keys.wait_ready(CEILING).await.unwrap();
}

#[tokio::test]
async fn a_kid_flood_is_refused_at_once_and_costs_one_fetch_per_cooldown() {
    let server = JwksServer::start(A.jwks.clone()).await;
    let keys = fast(RemoteKeys::jwks_url(server.url())).build().unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    let started = Instant::now();
    assert_eq!(server.jwks_requests(), 1);

    let flood: Vec<String> = (0..1000).map(random_kid).collect();
    for kid in &flood {
        assert!(matches!(keys.lookup(Some(kid)), KeyLookup::Unknown));
    }
    until("the refetch the flood asked for", || server.jwks_requests() >= 2).await;
    // Settled when no fetch has happened for two cooldowns.
    let mut seen = server.jwks_requests();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < COOLDOWN * 2 {
        assert!(started.elapsed() < CEILING, "fetches never stop");
        tokio::time::sleep(COOLDOWN / 10).await;
        if server.jwks_requests() != seen {
            seen = server.jwks_requests();
            quiet_since = Instant::now();
        }
    }
    // The same kids again, over three cooldowns: negatively cached, no fetch.
    let settled = server.jwks_requests();
    let replay_start = Instant::now();
    while replay_start.elapsed() < COOLDOWN * 3 {
        for kid in &flood {
            assert!(matches!(keys.lookup(Some(kid)), KeyLookup::Unknown));
        }
        assert!(found(&keys, "a-ed"));
        tokio::time::sleep(COOLDOWN / 10).await;
    }
    assert_eq!(server.jwks_requests(), settled, "kids proved absent cause no fetch");
    // New random kids, continuously for five cooldowns: at most one fetch per cooldown.
    let before = server.jwks_requests();
    let flood_start = Instant::now();
    let mut i = 0;
    while flood_start.elapsed() < COOLDOWN * 5 {
        for _ in 0..100 {
            i += 1;
            assert!(matches!(keys.lookup(Some(&random_kid(i))), KeyLookup::Unknown));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fetches = server.jwks_requests() - before;
    let cooldowns = flood_start.elapsed().as_secs_f64() / COOLDOWN.as_secs_f64();
    assert!(fetches >= 1, "a new kid asks for a fetch");
    assert!(fetches as f64 <= cooldowns.ceil() + 1.0, "{fetches} fetches in {cooldowns:.1} cooldowns");
    // Over the whole test, fetches were at least a cooldown apart.
    let total = server.jwks_requests();
    assert!(total as f64 <= started.elapsed().as_secs_f64() / COOLDOWN.as_secs_f64() + 2.0, "{total}");
    assert!(found(&keys, "a-ed"));
}

#[tokio::test]
async fn keys_survive_every_kind_of_outage() {
    let mut server = JwksServer::start(A.jwks.clone()).await;
    // Refresh due every cooldown, so each cooldown tries and fails.
    let keys = RemoteKeys::jwks_url(server.url())
        .cooldown(COOLDOWN)
        .fetch_timeout(TIMEOUT)
        .max_body_bytes(64 * 1024)
        .refresh_bounds(Duration::ZERO, Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    keys.wait_ready(CEILING).await.unwrap();

    type Expected = fn(&FetchError) -> bool;
    let faults: [(Behaviour, Expected); 5] = [
        (Behaviour::Status(500), |e| matches!(e, FetchError::Status { status: 500, .. })),
        (Behaviour::Slow(TIMEOUT * 4), |e| matches!(e, FetchError::Timeout { .. })),
        (Behaviour::Garbage, |e| matches!(e, FetchError::Malformed { .. })),
        (Behaviour::NotAJwks, |e| matches!(e, FetchError::Malformed { .. })),
        (Behaviour::Huge, |e| matches!(e, FetchError::TooLarge { .. })),
    ];
    for (behaviour, expected) in faults {
        server.set_behaviour(behaviour);
        let failures = keys.status().failed_fetches;
        until(&format!("three failures under {behaviour:?}"), || {
            assert!(found(&keys, "a-ed") && found(&keys, "a-p256"), "the keys held keep working");
            keys.status().failed_fetches >= failures + 3
        })
        .await;
        let error = keys.status().last_error.unwrap();
        assert!(expected(&error), "{behaviour:?}: {error:?}");
        assert!(matches!(keys.lookup(Some("b-rsa")), KeyLookup::Unknown), "unknown, not unavailable");
        server.set_behaviour(Behaviour::Serve);
        until("recovery", || keys.status().consecutive_failures == 0).await;
    }

    server.stop().await;
    let failures = keys.status().failed_fetches;
    until("three failures on a closed port", || {
        assert!(found(&keys, "a-ed"), "the keys held keep working");
        keys.status().failed_fetches >= failures + 3
    })
    .await;
    assert!(matches!(keys.status().last_error, Some(FetchError::Transport { .. })), "{:?}", keys.status().last_error);
    let status = keys.status();
    assert!(status.usable_for.unwrap() > Duration::from_secs(3600), "default max_stale of at least an hour");
    server.set_jwks(B.jwks.clone());
    server.restart().await;
    until("the new key set after the port opens again", || found(&keys, "b-rsa")).await;
    assert!(matches!(keys.lookup(Some("a-ed")), KeyLookup::Unknown), "only a successful fetch replaces keys");
}

#[tokio::test]
async fn keys_are_dropped_after_max_stale_and_come_back() {
    let server = JwksServer::start(A.jwks.clone()).await;
    let keys = RemoteKeys::jwks_url(server.url())
        .cooldown(COOLDOWN)
        .fetch_timeout(TIMEOUT)
        .refresh_bounds(COOLDOWN, COOLDOWN, COOLDOWN)
        .max_stale(COOLDOWN * 3)
        .build()
        .unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    server.set_behaviour(Behaviour::Status(502));
    until("the keys to be dropped", || matches!(keys.lookup(Some("a-ed")), KeyLookup::NotReady)).await;
    assert!(!keys.is_ready());
    assert!(keys.status().consecutive_failures >= 2);
    server.set_behaviour(Behaviour::Serve);
    keys.wait_ready(CEILING).await.unwrap();
    assert!(found(&keys, "a-ed"));
}

#[tokio::test]
async fn a_rotation_is_picked_up_by_the_first_unknown_kid() {
    let server = JwksServer::start(A.jwks.clone()).await;
    let keys = fast(RemoteKeys::jwks_url(server.url())).build().unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    server.set_jwks(B.jwks.clone());
    assert!(matches!(keys.lookup(Some("b-rsa")), KeyLookup::Unknown), "refused at once");
    until("the rotated key", || found(&keys, "b-rsa")).await;
    assert_eq!(server.jwks_requests(), 2, "one fetch for the unknown kid");
    assert!(found(&keys, "b-p384"));
    assert!(matches!(keys.lookup(Some("a-ed")), KeyLookup::Unknown), "retired keys go");
    assert_eq!(keys.status().kids, B.kids);
}

#[tokio::test]
async fn a_rotation_is_picked_up_when_max_age_runs_out() {
    let server = JwksServer::start(A.jwks.clone()).await;
    server.set_max_age(Some(1));
    // Default freshness an hour: only `max-age=1` makes it refetch.
    let keys = fast(RemoteKeys::jwks_url(server.url()))
        .refresh_bounds(Duration::ZERO, Duration::from_secs(3600), Duration::from_secs(3600))
        .build()
        .unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    server.set_jwks(B.jwks.clone());
    until("the refresh to bring key set B", || keys.status().kids == B.kids).await;
    assert!(found(&keys, "b-rsa"));

    // A max-age above the upper bound is cut to it.
    let server = JwksServer::start(A.jwks.clone()).await;
    server.set_max_age(Some(86_400));
    let keys = fast(RemoteKeys::jwks_url(server.url()))
        .refresh_bounds(Duration::ZERO, COOLDOWN, Duration::from_secs(3600))
        .build()
        .unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    until("refreshes within the bound", || server.jwks_requests() >= 3).await;
}

#[tokio::test]
async fn symmetric_and_unusable_keys_are_never_used() {
    let mut document: Value = serde_json::from_str(&A.jwks).unwrap();
    let keys_array = document["keys"].as_array_mut().unwrap();
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQ";
    keys_array.push(json!({"kty": "oct", "kid": "oct-rs", "alg": "RS256", "k": secret}));
    keys_array.push(json!({"kty": "oct", "kid": "oct-hs", "alg": "HS256", "k": secret}));
    keys_array.push(json!({"kty": "oct", "kid": "oct-none", "k": secret}));
    let mut enc = keys_array[1].clone();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    keys_array.push(enc);
    keys_array.push(json!({"kty": "Quantum", "kid": "q", "alg": "ES256"}));
    let server = JwksServer::start(document.to_string()).await;
    let keys = fast(RemoteKeys::jwks_url(server.url())).build().unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    assert_eq!(keys.status().kids, A.kids);
    for kid in ["oct-rs", "oct-hs", "oct-none", "enc", "q"] {
        assert!(matches!(keys.lookup(Some(kid)), KeyLookup::Unknown), "{kid}");
    }

    // A document of secrets only is a failed fetch.
    let only_secrets = json!({"keys": [{"kty": "oct", "kid": "oct-rs", "alg": "RS256", "k": secret}]});
    let server = JwksServer::start(only_secrets.to_string()).await;
    let keys = fast(RemoteKeys::jwks_url(server.url())).build().unwrap();
    until("a failed fetch", || keys.status().last_error.is_some()).await;
    assert!(matches!(keys.status().last_error, Some(FetchError::NoUsableKey { skipped: 1, .. })));
    assert!(matches!(keys.lookup(Some("oct-rs")), KeyLookup::NotReady));
}

#[tokio::test]
async fn a_token_without_kid_gets_the_only_key() {
    let mut document: Value = serde_json::from_str(&A.jwks).unwrap();
    document["keys"].as_array_mut().unwrap().truncate(1);
    let server = JwksServer::start(document.to_string()).await;
    let keys = fast(RemoteKeys::jwks_url(server.url())).build().unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    assert!(matches!(keys.lookup(None), KeyLookup::Found(key) if key.kid() == "a-ed"));
    server.set_jwks(A.jwks.clone());
    assert!(matches!(keys.lookup(Some("a-p256")), KeyLookup::Unknown));
    until("the second key", || found(&keys, "a-p256")).await;
    assert!(matches!(keys.lookup(None), KeyLookup::Unknown), "two keys: ambiguous");
}

#[tokio::test]
async fn discovery_finds_the_jwks_uri() {
    let server = JwksServer::start(A.jwks.clone()).await;
    let keys = fast(RemoteKeys::discovery(server.issuer())).build().unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    assert!(found(&keys, "a-ed"));
    assert_eq!(keys.issuer(), Some(server.issuer()));
    assert_eq!(keys.status().jwks_uri, Some(server.url()));
    assert_eq!(server.discovery_requests(), 1);
    // A trailing slash is not doubled in the discovery URL, but the issuer
    // must match exactly (OIDC Discovery §4.3).
    let keys = fast(RemoteKeys::discovery(format!("{}/", server.issuer()))).build().unwrap();
    until("a fetch", || keys.status().fetches >= 1).await;
    assert_eq!(server.discovery_requests(), 2);
    assert!(matches!(keys.status().last_error, Some(FetchError::IssuerMismatch { .. })));
}

#[tokio::test]
async fn discovery_refuses_another_issuer() {
    let server = JwksServer::start(A.jwks.clone()).await;
    server.set_discovered_issuer("https://attacker.example");
    let keys = fast(RemoteKeys::discovery(server.issuer())).build().unwrap();
    until("a failed fetch", || keys.status().last_error.is_some()).await;
    assert!(
        matches!(&keys.status().last_error, Some(FetchError::IssuerMismatch { found, .. }) if found == "https://attacker.example")
    );
    assert!(keys.wait_ready(COOLDOWN).await.is_err());
    assert!(matches!(keys.lookup(Some("a-ed")), KeyLookup::NotReady));
    assert_eq!(server.jwks_requests(), 0, "the JWKS of a mismatched issuer is never fetched");
}

#[tokio::test]
async fn plain_http_is_refused_except_to_loopback() {
    let error = RemoteKeys::jwks_url("http://idp.example/jwks").build().unwrap_err();
    assert!(matches!(error, RemoteKeysError::InvalidUrl { .. }), "{error:?}");
    assert!(RemoteKeys::jwks_url("http://idp.example/jwks").allow_http(true).build().is_ok());
    assert!(RemoteKeys::discovery("http://idp.example").build().is_err());
    assert!(RemoteKeys::jwks_url("not a url").build().is_err());
}

#[tokio::test]
async fn lookups_never_wait_for_a_stalled_server() {
    // Cold: the first fetch is stalled; lookups answer NotReady meanwhile.
    let server = JwksServer::start(A.jwks.clone()).await;
    server.set_behaviour(Behaviour::Slow(Duration::from_secs(5)));
    let keys = fast(RemoteKeys::jwks_url(server.url())).fetch_timeout(Duration::from_secs(10)).build().unwrap();
    until("the fetch to reach the server", || server.jwks_requests() == 1).await;
    for i in 0..1000 {
        assert!(matches!(keys.lookup(Some(&random_kid(i))), KeyLookup::NotReady));
    }
    assert_eq!(keys.status().fetches, 0, "all answered while the fetch was in flight");
    assert!(!keys.is_ready());

    // Warm: keys held, a refetch stalled on the server.
    let server = JwksServer::start(A.jwks.clone()).await;
    let keys = fast(RemoteKeys::jwks_url(server.url())).fetch_timeout(Duration::from_secs(10)).build().unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    server.set_behaviour(Behaviour::Slow(Duration::from_secs(5)));
    assert!(matches!(keys.lookup(Some("rotated")), KeyLookup::Unknown));
    until("the refetch to reach the server", || server.jwks_requests() == 2).await;
    for i in 0..1000 {
        assert!(found(&keys, "a-ed"));
        assert!(matches!(keys.lookup(Some(&random_kid(i))), KeyLookup::Unknown));
    }
    assert_eq!(keys.status().fetches, 1, "all answered while the refetch was in flight");
}

/// Not an assertion: prints the cost of a lookup (run with `--release --nocapture`).
#[tokio::test]
async fn lookup_cost() {
    let server = JwksServer::start(A.jwks.clone()).await;
    let keys = fast(RemoteKeys::jwks_url(server.url())).build().unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    const N: u32 = 1_000_000;
    let start = Instant::now();
    for _ in 0..N {
        std::hint::black_box(keys.lookup(Some(std::hint::black_box("a-p256"))));
    }
    let found = start.elapsed() / N;
    let unknown_kid = "never-published";
    let start = Instant::now();
    for _ in 0..N {
        std::hint::black_box(keys.lookup(Some(std::hint::black_box(unknown_kid))));
    }
    let unknown = start.elapsed() / N;
    let kids: Vec<String> = (0..10_000).map(|i| format!("flood-{i}")).collect();
    let start = Instant::now();
    for kid in &kids {
        std::hint::black_box(keys.lookup(Some(kid)));
    }
    let flood = start.elapsed() / kids.len() as u32;
    println!("lookup: found {found:?}, the same unknown kid again {unknown:?}, 10,000 new unknown kids {flood:?} each");
}
