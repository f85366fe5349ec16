//! The demo on Redis, where only Redis can tell: revocation reaching another
//! instance, Redis going away and coming back, and what the keyspace holds.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::{
    demo::{Auth, Demo, Jar, credentials},
    redis_server::RedisServer,
};

fn demo_on(redis: &RedisServer, extra: &[(&str, &str)]) -> Demo {
    let url = redis.url();
    let mut env = vec![("REDIS_URL", url.as_str())];
    env.extend_from_slice(extra);
    Demo::start(&env)
}

/// Polls `check` every 2 ms until it holds; fails past `ceiling`. Returns
/// how long it took.
async fn eventually<F: std::future::Future<Output = bool>>(
    ceiling: Duration,
    mut check: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < ceiling, "not within {ceiling:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_another_instance_at_once() {
    let redis = RedisServer::start();
    let (a, b) = (demo_on(&redis, &[]), demo_on(&redis, &[]));
    for round in 0..5 {
        let (access, _) = a.login_tokens("alice").await;
        // B verifies A's token (shared secret) and caches it as valid.
        assert_eq!(b.get("/me", &Auth::Bearer(access.clone())).await.status, StatusCode::OK);
        assert_eq!(a.post("/logout", &Auth::Bearer(access.clone()), None).await.status, StatusCode::NO_CONTENT);
        // The bound is 100 ms; poll with a generous ceiling so a
        // loaded CI machine cannot make this flaky, and report the figure.
        let took = eventually(Duration::from_secs(2), || {
            let auth = Auth::Bearer(access.clone());
            let b = &b;
            async move { b.get("/me", &auth).await.status == StatusCode::UNAUTHORIZED }
        })
        .await;
        eprintln!("round {round}: revocation visible on the other instance after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_503_for_store_work_and_service_for_valid_tokens() {
    let mut redis = RedisServer::start();
    let demo = demo_on(&redis, &[]);
    let (access, refresh) = demo.login_tokens("alice").await;
    let jar = demo.login_cookies("bob").await;

    redis.stop();
    assert_eq!(
        demo.get("/me", &Auth::Bearer(access.clone())).await.status,
        StatusCode::OK,
        "valid tokens keep working"
    );

    let started = Instant::now();
    let login = demo.post("/login", &Auth::None, Some(credentials("alice", "token"))).await;
    assert!(started.elapsed() < Duration::from_secs(2), "answered in {:?}", started.elapsed());
    assert_eq!(login.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", login.body);
    assert!(!login.header("retry-after").is_empty());
    assert!(login.body["error"].is_string());

    let refreshed = demo.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": refresh }))).await;
    assert_eq!(refreshed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!refreshed.header("retry-after").is_empty());

    // A cookie session needing a refresh: 503, and the cookies are left alone.
    let stale = Jar { access: None, refresh: jar.refresh.clone() };
    let started = Instant::now();
    let reply = demo.get("/me", &Auth::Cookies(stale.clone())).await;
    assert!(started.elapsed() < Duration::from_secs(2), "answered in {:?}", started.elapsed());
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!reply.header("retry-after").is_empty());
    assert!(reply.set_cookies().is_empty(), "cookies untouched: {:?}", reply.set_cookies());

    // Redis returns (empty: persistence is off) and the demo recovers by itself.
    redis.restart();
    let took = eventually(Duration::from_secs(10), || async {
        demo.post("/login", &Auth::None, Some(credentials("alice", "token"))).await.status == StatusCode::OK
    })
    .await;
    eprintln!("recovered {took:?} after Redis came back");
    let (fresh, _) = demo.login_tokens("bob").await;
    assert_eq!(demo.get("/me", &Auth::Bearer(fresh)).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyspace_holds_no_token_and_every_key_expires() {
    let redis = RedisServer::start();
    let demo = demo_on(&redis, &[]);
    let mut secrets = Vec::new();
    for user in ["alice", "bob", "alice"] {
        let (access, refresh) = demo.login_tokens(user).await;
        let rotated = demo.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": refresh }))).await;
        secrets.extend([access, refresh, rotated.str("access_token"), rotated.str("refresh_token")]);
        let logged_out = demo.login_tokens(user).await;
        demo.post("/logout", &Auth::Bearer(logged_out.0), None).await;
    }
    // Every token, and every token's signature or tag alone.
    let needles: Vec<String> = secrets
        .iter()
        .flat_map(|t| [t.clone(), t.rsplit('.').next().unwrap().to_owned()])
        .filter(|n| n.len() >= 16)
        .collect();

    let keys = redis.cmd(&["KEYS", "*"]).unwrap();
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(!keys.is_empty());
    for key in &keys {
        let ttl: i64 = redis.cmd(&["PTTL", key]).unwrap().trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
        let dump = match redis.cmd(&["TYPE", key]).unwrap().trim() {
            "hash" => redis.cmd(&["HGETALL", key]).unwrap(),
            "zset" => redis.cmd(&["ZRANGE", key, "0", "-1", "WITHSCORES"]).unwrap(),
            "string" => redis.cmd(&["GET", key]).unwrap(),
            other => panic!("unexpected type {other} for {key}"),
        };
        for needle in &needles {
            assert!(!dump.contains(needle.as_str()) && !key.contains(needle.as_str()), "{key} holds a token");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_refreshes_rotate_once() {
    let redis = RedisServer::start();
    let demo = demo_on(&redis, &[]);
    // Warm up: the first use of a script on a fresh server loads it (a
    // NOSCRIPT reply, then EVAL), which is not what this test counts.
    let (_, warm_up) = demo.login_tokens("bob").await;
    demo.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": warm_up }))).await;
    let jar = demo.login_cookies("alice").await;
    let stale = Jar { access: None, refresh: jar.refresh.clone() };
    let calls = |stats: String| -> u64 {
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = calls(redis.cmd(&["INFO", "commandstats"]).unwrap());
    let auth = Auth::Cookies(stale);
    let replies = futures::future::join_all((0..50).map(|_| demo.get("/me", &auth))).await;
    let after = calls(redis.cmd(&["INFO", "commandstats"]).unwrap());

    let mut successors = std::collections::HashSet::new();
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        let mut tab = jar.clone();
        tab.update(reply);
        successors.insert(tab.refresh.unwrap());
    }
    assert_eq!(successors.len(), 1);
    let successor = successors.into_iter().next().unwrap();
    assert_eq!(successor.split('.').nth(2), Some("1"), "exactly one rotation: the successor is generation 1");
    eprintln!("50 parallel refreshes cost {} script calls on Redis", after - before);
    assert_eq!(after - before, 1, "single-flight: one store call for all racers");
}
