//! The background task behind remote keys: when to fetch (start, freshness,
//! unknown `kid`, retry; always a cooldown apart), fetching, swapping keys in.

use std::{sync::Arc, time::Duration};

use http::{StatusCode, Uri};
use http_body_util::LengthLimitError;
use tokio::time::Instant;

use super::{
    FetchRecord, HeldKeys, Shared, Source,
    document::{freshness, parse_discovery, parse_jwks},
    error::FetchError,
    http::JwksRequest,
};

/// The task's own view of time.
#[derive(Default)]
struct Schedule {
    /// When the latest fetch started.
    last_attempt: Option<Instant>,
    /// When the keys held stop being fresh (a refresh is due).
    refresh_at: Option<Instant>,
    /// When the keys held are dropped if no fetch succeeds.
    usable_until: Option<Instant>,
    /// The latest fetch failed.
    failing: bool,
    /// The `jwks_uri` learned by discovery (forgotten when a fetch fails).
    jwks_uri: Option<Uri>,
}

/// Fetches until aborted (when the last `RemoteKeys` is dropped).
pub(super) async fn run(shared: Arc<Shared>) {
    let settings = &shared.settings;
    let mut schedule = Schedule::default();
    loop {
        let now = Instant::now();
        if schedule.usable_until.is_some_and(|until| now >= until) {
            drop_keys(&shared, &mut schedule);
        }
        let earliest = schedule.last_attempt.map_or(now, |at| at + settings.cooldown);
        let due = match schedule.refresh_at {
            Some(refresh_at) if !schedule.failing && !shared.unknown.refetch_wanted() => refresh_at.max(earliest),
            _ => earliest,
        };
        if due <= now {
            // Read after clearing the flag: a `kid` missed before this
            // instant is answered by this fetch, a later one asks again.
            shared.unknown.fetch_started();
            let started = Instant::now();
            schedule.last_attempt = Some(started);
            let result = fetch(&shared, &mut schedule.jwks_uri).await;
            record(&shared, &mut schedule, started, result);
            continue;
        }
        let wake_at = schedule.usable_until.map_or(due, |until| until.min(due));
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            () = shared.wake.notified() => {}
        }
    }
}

/// A successful fetch: the keys and how long they are fresh.
struct Fetched {
    keys: Vec<crate::keys::VerifyingKey>,
    fresh_for: Option<Duration>,
}

/// One fetch: the discovery document if the JWKS URL is not known yet, then the JWKS.
async fn fetch(shared: &Shared, jwks_uri: &mut Option<Uri>) -> Result<Fetched, FetchError> {
    let settings = &shared.settings;
    let uri = match (&shared.source, &*jwks_uri) {
        (Source::Jwks(uri), _) | (Source::Discovery { .. }, Some(uri)) => uri.clone(),
        (Source::Discovery { issuer, url }, None) => {
            let document = get(shared, url).await?;
            let discovered = parse_discovery(&url.to_string(), document.body())?;
            if discovered.issuer != *issuer {
                return Err(FetchError::IssuerMismatch { expected: issuer.clone(), found: discovered.issuer });
            }
            let uri = super::checked_url(&discovered.jwks_uri, settings.allow_http)
                .map_err(|why| FetchError::BadJwksUri { url: discovered.jwks_uri.clone(), why })?;
            shared.fetches.lock().unwrap_or_else(|p| p.into_inner()).jwks_uri = Some(uri.to_string());
            *jwks_uri = Some(uri.clone());
            uri
        }
    };
    let jwks = async {
        let answer = get(shared, &uri).await?;
        let keys = parse_jwks(&uri.to_string(), answer.body(), &settings.algorithms)?;
        Ok(Fetched { keys, fresh_for: freshness(answer.headers()) })
    }
    .await;
    if jwks.is_err() && matches!(shared.source, Source::Discovery { .. }) {
        // The provider may have moved its keys: ask discovery again next time.
        *jwks_uri = None;
    }
    jwks
}

/// One GET within the fetch timeout and size limit; only a 200 is a success.
async fn get(shared: &Shared, uri: &Uri) -> Result<http::Response<Vec<u8>>, FetchError> {
    let settings = &shared.settings;
    let url = || uri.to_string();
    let request = JwksRequest { uri, timeout: settings.fetch_timeout, max_body_bytes: settings.max_body_bytes };
    let answer = match tokio::time::timeout(settings.fetch_timeout, shared.client.get(request)).await {
        Err(_) => return Err(FetchError::Timeout { url: url(), timeout: settings.fetch_timeout }),
        Ok(Err(error)) if is_length_limit(&*error) => {
            return Err(FetchError::TooLarge { url: url(), max_bytes: settings.max_body_bytes });
        }
        Ok(Err(error)) => return Err(FetchError::Transport { url: url(), message: error_chain(&*error) }),
        Ok(Ok(answer)) => answer,
    };
    if answer.status() != StatusCode::OK {
        return Err(FetchError::Status { url: url(), status: answer.status().as_u16() });
    }
    if answer.body().len() > settings.max_body_bytes {
        return Err(FetchError::TooLarge { url: url(), max_bytes: settings.max_body_bytes });
    }
    Ok(answer)
}

fn is_length_limit(mut error: &(dyn std::error::Error + 'static)) -> bool {
    loop {
        if error.is::<LengthLimitError>() {
            return true;
        }
        match error.source() {
            Some(source) => error = source,
            None => return false,
        }
    }
}

/// An error and its sources, `: `-separated (hyper's top-level message alone
/// says little).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Applies a fetch's result: new keys swapped in, or the failure recorded.
fn record(shared: &Shared, schedule: &mut Schedule, started: Instant, result: Result<Fetched, FetchError>) {
    let settings = &shared.settings;
    let mut fetches = shared.fetches.lock().unwrap_or_else(|p| p.into_inner());
    fetches.attempts += 1;
    match result {
        Ok(Fetched { keys, fresh_for }) => {
            let now = Instant::now();
            let fresh_for = fresh_for
                .unwrap_or(settings.default_refresh)
                .clamp(settings.min_refresh, settings.max_refresh.max(settings.min_refresh));
            let held = HeldKeys::new(keys);
            let changed = {
                let old = shared.keys.load();
                old.by_kid.len() != held.by_kid.len() || held.by_kid.keys().any(|kid| !old.by_kid.contains_key(kid))
            };
            if changed {
                let mut kids: Vec<&str> = held.by_kid.keys().map(|kid| &**kid).collect();
                kids.sort_unstable();
                tracing::info!(?kids, "remote keys updated");
            }
            shared.unknown.fetched(started, |kid| held.by_kid.contains_key(kid), settings.unknown_kid_ttl);
            shared.keys.store(Arc::new(held));
            shared.ready.send_if_modified(|ready| !std::mem::replace(ready, true));
            schedule.failing = false;
            schedule.refresh_at = Some(now + fresh_for);
            schedule.usable_until = Some(now + fresh_for + settings.max_stale);
            fetches.fetched_at = Some(now);
            fetches.usable_until = schedule.usable_until;
            fetches.consecutive_failures = 0;
            let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            crate::metrics::jwks_fetched(Some(unix.as_secs_f64()));
        }
        Err(error) => {
            crate::metrics::jwks_fetched(None);
            schedule.failing = true;
            fetches.failures += 1;
            fetches.consecutive_failures += 1;
            // At most one line per cooldown.
            tracing::warn!(
                %error,
                failures = fetches.consecutive_failures,
                keys_held = shared.keys.load().by_kid.len(),
                "fetching remote keys failed; the keys held are kept",
            );
            fetches.last_error = Some(error);
        }
    }
}

/// The keys outlived `max_stale` without a successful fetch: lookups answer
/// `NotReady` until one succeeds.
fn drop_keys(shared: &Shared, schedule: &mut Schedule) {
    tracing::error!(
        max_stale = ?shared.settings.max_stale,
        "remote keys dropped: no fetch succeeded for longer than max_stale after they went stale"
    );
    shared.keys.store(Arc::new(HeldKeys::default()));
    shared.ready.send_replace(false);
    crate::metrics::jwks_dropped();
    schedule.usable_until = None;
    schedule.refresh_at = None;
    let mut fetches = shared.fetches.lock().unwrap_or_else(|p| p.into_inner());
    *fetches = FetchRecord { fetched_at: None, usable_until: None, ..fetches.clone() };
}
