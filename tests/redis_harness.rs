//! Self-tests of the Redis fault harnesses in `tests/support/redis_server.rs`:
//! TLS servers and clusters, a failover that loses a write, live resharding,
//! and the bulk sorted-set loader. Durations are printed, never asserted.

mod support;

use std::{process::Output, time::Instant};

use support::redis_server::{
    ClientAuth, RedisCluster, RedisServer, TlsFiles, bulk, failover::Failover, require_binary,
};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_tls_server_answers_the_harness_and_redis_cli_over_tls_only() {
    let started = Instant::now();
    let server = RedisServer::start_tls();
    eprintln!("TLS server started in {:?}", started.elapsed());
    assert!(server.url().starts_with("rediss://127.0.0.1:"), "{}", server.url());
    assert_eq!(server.cmd(&["SET", "k", "v"]).as_deref(), Ok("OK"));
    assert_eq!(server.cmd(&["GET", "k"]).as_deref(), Ok("v"));
    assert!(server.cmd(&["NOSUCHCOMMAND"]).is_err_and(|e| e.starts_with("ERR")));

    let cli = server.cli().args(["GET", "k"]).output().expect("running redis-cli");
    assert_eq!(stdout(&cli), "v");

    // Plain RESP on the TLS port gets no Redis reply.
    assert!(support::redis_server::command(server.port(), &["PING"]).is_err());
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    require_binary("redis-cli");
    let files = TlsFiles::generate();
    let server = RedisServer::start_tls_with(files.clone(), ClientAuth::Required);
    // The harness presents the client certificate.
    assert_eq!(server.cmd(&["PING"]).as_deref(), Ok("PONG"));
    let with_cert = server.cli().arg("PING").output().expect("running redis-cli");
    assert_eq!(stdout(&with_cert), "PONG");

    let without = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string(), "--tls", "--cacert"])
        .arg(files.ca_path())
        .arg("PING")
        .output()
        .expect("running redis-cli");
    assert_ne!(stdout(&without), "PONG", "stderr: {}", String::from_utf8_lossy(&without.stderr));
}

#[test]
fn a_tls_cluster_forms_and_moves_a_slot_over_tls() {
    let started = Instant::now();
    let cluster = RedisCluster::start_tls();
    eprintln!("TLS cluster started in {:?}", started.elapsed());
    assert!(cluster.urls().iter().all(|u| u.starts_with("rediss://")));
    let key = b"{tls-reshard}:k";
    let node = cluster.node_for_key(key);
    assert_eq!(node.cmd(&["SET", "{tls-reshard}:k", "v"]).as_deref(), Ok("OK"));

    // MIGRATE between the nodes runs over TLS too.
    let slot = cluster.slot_of(key);
    let to = (cluster.owner_of_slot(slot) + 1) % 3;
    cluster.migrate_slot(slot, to);
    assert_eq!(cluster.owner_of_slot(slot), to);
    assert_eq!(cluster.nodes()[to].cmd(&["GET", "{tls-reshard}:k"]).as_deref(), Ok("v"));
    let cli = cluster.nodes()[(to + 1) % 3].cli().args(["-c", "GET", "{tls-reshard}:k"]).output().expect("redis-cli");
    assert_eq!(stdout(&cli), "v");
}

#[test]
fn a_plain_cluster_starts() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("plain cluster started in {:?}", started.elapsed());
    assert!(cluster.nodes().iter().all(|n| n.cmd(&["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))));
}

#[test]
fn a_failover_after_a_partition_loses_the_last_write() {
    let started = Instant::now();
    let mut redis = Failover::start();
    eprintln!("primary + replica in sync in {:?}", started.elapsed());

    assert_eq!(redis.cmd(&["SET", "before", "1"]).as_deref(), Ok("OK"));
    redis.wait_in_sync();
    assert_eq!(redis.replica().cmd(&["GET", "before"]).as_deref(), Ok("1"));

    // A client connection open through the stable address before the failover.
    let mut open = redis.front_connection();
    redis.partition_replica();
    // Acknowledged by the primary, never replicated.
    assert_eq!(redis.cmd(&["SET", "after", "2"]).as_deref(), Ok("OK"));
    assert_eq!(redis.primary().cmd(&["GET", "after"]).as_deref(), Ok("2"));

    redis.fail_over();
    assert_eq!(redis.cmd(&["GET", "before"]).as_deref(), Ok("1"));
    assert_eq!(redis.cmd(&["GET", "after"]).as_deref(), Ok(""), "the write after the partition survived");
    assert!(redis.cmd(&["INFO", "replication"]).is_ok_and(|i| i.contains("role:master")));
    // The new primary takes writes; the old connection was dropped.
    assert_eq!(redis.cmd(&["SET", "later", "3"]).as_deref(), Ok("OK"));
    assert!(open.cmd(&["PING"]).is_err(), "a connection made before the failover still works");
}

#[test]
fn a_tls_failover_loses_the_last_write_too() {
    let mut redis = Failover::start_tls();
    assert!(redis.url().starts_with("rediss://"));
    assert_eq!(redis.cmd(&["SET", "before", "1"]).as_deref(), Ok("OK"));
    redis.wait_in_sync();
    redis.partition_replica();
    assert_eq!(redis.cmd(&["SET", "after", "2"]).as_deref(), Ok("OK"));
    redis.fail_over();
    assert_eq!(redis.cmd(&["GET", "before"]).as_deref(), Ok("1"));
    assert_eq!(redis.cmd(&["GET", "after"]).as_deref(), Ok(""));
}

#[test]
fn a_key_stays_readable_through_redis_cli_while_its_slot_moves() {
    let cluster = RedisCluster::start();
    let keys: Vec<String> = (0..50).map(|i| format!("{{reshard}}:{i}")).collect();
    let node = cluster.node_for_key(keys[0].as_bytes());
    for key in &keys {
        assert_eq!(node.cmd(&["SET", key, key]).as_deref(), Ok("OK"));
    }
    let get = |key: &str| {
        let entry = &cluster.nodes()[0];
        stdout(&entry.cli().args(["-c", "GET", key]).output().expect("running redis-cli"))
    };
    let slot = cluster.slot_of(keys[0].as_bytes());
    let from = cluster.owner_of_slot(slot);
    let to = (from + 1) % 3;
    assert_eq!(get(&keys[0]), keys[0]);

    let migration = cluster.begin_migration(slot, to);
    migration.move_these(&[keys[0].as_bytes()]);
    assert_eq!(migration.move_keys(20), 20);
    assert_eq!(migration.keys_left(), 29);
    // Half-moved: the source answers -ASK for moved keys, serves the others.
    let asked = cluster.nodes()[from].cmd(&["GET", &keys[0]]);
    assert!(asked.as_ref().is_err_and(|e| e.starts_with("ASK ")), "{asked:?}");
    for key in &keys {
        assert_eq!(get(key), *key, "during the migration");
    }
    migration.finish();

    assert_eq!(cluster.owner_of_slot(slot), to);
    for key in &keys {
        assert_eq!(get(key), *key, "after the migration");
    }
    let moved = cluster.nodes()[from].cmd(&["GET", &keys[0]]);
    assert!(moved.as_ref().is_err_and(|e| e.starts_with("MOVED ")), "{moved:?}");
}

#[test]
fn a_million_revocations_load_over_one_connection() {
    const N: usize = 1_000_000;
    let server = RedisServer::start();
    let until = 1_900_000_000_000;
    let started = Instant::now();
    let added = bulk::zadd_bulk(&server, b"tjwt:revoked", bulk::revocation_members(N, "s:", until, 7))
        .expect("loading the revocations");
    let took = started.elapsed();
    eprintln!("{N} ZADD members loaded in {took:?}");
    assert_eq!(added, N as u64);
    assert_eq!(server.cmd(&["ZCARD", "tjwt:revoked"]).as_deref(), Ok("1000000"));
    let first = server.cmd(&["ZRANGE", "tjwt:revoked", "0", "0"]).expect("ZRANGE");
    assert!(first.starts_with("s:") && first.len() == 18, "{first:?}");
}
