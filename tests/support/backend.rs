//! The demo as a process on each session store: embedded, one Redis node,
//! a three-node Redis Cluster; and clock helpers for contract tests.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    demo::Demo,
    redis_server::{RedisCluster, RedisServer},
};

/// Where the demo keeps its sessions.
#[derive(Clone, Copy)]
pub enum Backend {
    Memory,
    Redis,
    Cluster,
}

/// A demo and the Redis it talks to (dropped after the demo).
pub struct Env {
    pub demo: Demo,
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
}

impl std::ops::Deref for Env {
    type Target = Demo;
    fn deref(&self) -> &Demo {
        &self.demo
    }
}

impl Backend {
    pub fn start(self, settings: &[(&str, &str)]) -> Env {
        let mut env: Vec<(&str, String)> = Vec::new();
        env.extend(settings.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let (redis, cluster) = match self {
            Backend::Memory => (None, None),
            Backend::Redis => {
                let redis = RedisServer::start();
                env.push(("REDIS_URL", redis.url()));
                (Some(redis), None)
            }
            Backend::Cluster => {
                let cluster = RedisCluster::start();
                env.push(("REDIS_URL", cluster.urls().join(",")));
                (None, Some(cluster))
            }
        };
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Env { demo: Demo::start(&env), redis, cluster }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Waits (polling the clock, with a ceiling) until Unix time `t` has passed.
pub async fn wait_until_after(t: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while unix_now() <= t {
        assert!(Instant::now() < deadline, "the clock did not reach {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs contract cases (async fns taking a [`Backend`]) once per backend:
/// `contract!([memory => Memory, redis => Redis] [case_a, case_b]);` makes
/// `memory::case_a`, `redis::case_a`, …
#[allow(unused_macros)] // only the contract test files run cases per backend
macro_rules! contract {
    ([$($backend:ident => $variant:ident),+ $(,)?] $cases:tt) => {
        $( $crate::support::backend::contract!(@one $backend $variant $cases); )+
    };
    (@one $backend:ident $variant:ident [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case(super::Backend::$variant).await
            })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use contract;
