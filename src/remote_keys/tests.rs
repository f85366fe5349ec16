//! Unit tests of the background task with an in-process client: the task's
//! lifetime and timeouts around a client that ignores them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use super::*;
use crate::keys::{SigningKey, jwks, pick_test_crypto_backend};

const CEILING: Duration = Duration::from_secs(10);

/// Serves the P-256 test key, or never answers.
struct Fake {
    calls: Arc<AtomicUsize>,
    hang: bool,
}

impl JwksHttpClient for Fake {
    fn get<'a>(&'a self, _: JwksRequest<'a>) -> BoxFuture<'a, Result<::http::Response<Vec<u8>>, BoxError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hang = self.hang;
        pick_test_crypto_backend();
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            let key = SigningKey::from_pem(Algorithm::ES256, "p", include_bytes!("../../tests/keys/p256.pem"))?;
            let body = serde_json::to_vec(&jwks([key.verifying_key()]))?;
            Ok(::http::Response::builder().header("cache-control", "max-age=0").body(body)?)
        })
    }
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < CEILING, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_task_stops_with_the_last_clone() {
    let calls = Arc::new(AtomicUsize::new(0));
    let keys = RemoteKeys::jwks_url("https://issuer.example/jwks")
        .http_client(Fake { calls: calls.clone(), hang: false })
        .cooldown(MIN_COOLDOWN)
        .refresh_bounds(Duration::ZERO, Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    keys.wait_ready(CEILING).await.unwrap();
    assert!(matches!(keys.lookup(Some("p")), KeyLookup::Found(_)));
    // Refreshing once per cooldown:
    until("a refresh", || calls.load(Ordering::SeqCst) >= 2).await;
    let shared = Arc::downgrade(&keys.handle.shared);
    let clone = keys.clone();
    drop(keys);
    assert!(shared.upgrade().is_some(), "a clone is alive");
    drop(clone);
    until("the task to end and free its state", || shared.upgrade().is_none()).await;
}

#[tokio::test]
async fn a_client_that_never_answers_is_timed_out() {
    let calls = Arc::new(AtomicUsize::new(0));
    let keys = RemoteKeys::jwks_url("https://issuer.example/jwks")
        .http_client(Fake { calls: calls.clone(), hang: true })
        .fetch_timeout(Duration::from_millis(50))
        .cooldown(MIN_COOLDOWN)
        .build()
        .unwrap();
    until("a timeout", || keys.status().last_error.is_some()).await;
    assert!(matches!(keys.status().last_error, Some(FetchError::Timeout { .. })));
    until("a retry", || calls.load(Ordering::SeqCst) >= 2).await;
    assert!(matches!(keys.lookup(Some("p")), KeyLookup::NotReady));
}

#[test]
fn urls() {
    assert!(checked_url("https://issuer.example/jwks", false).is_ok());
    assert!(checked_url("http://127.0.0.1:3000/jwks", false).is_ok());
    assert!(checked_url("http://[::1]:3000/jwks", false).is_ok());
    assert!(checked_url("http://localhost/jwks", false).is_ok());
    assert!(checked_url("http://issuer.example/jwks", false).is_err());
    assert!(checked_url("http://issuer.example/jwks", true).is_ok());
    assert!(checked_url("ftp://issuer.example/jwks", true).is_err());
    assert!(checked_url("/jwks", true).is_err());
    assert!(matches!(RemoteKeys::jwks_url("https://x/jwks").build(), Err(RemoteKeysError::NoRuntime)));
}
