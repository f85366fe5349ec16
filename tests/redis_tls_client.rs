//! redis-rs over TLS (rustls) against the harness's TLS servers: a private CA
//! and client certificates through `TlsCertificates`, for one node
//! (`Client::build_with_tls`) and for a Cluster (`ClusterClientBuilder::certs`).
//!
//! redis-rs builds its rustls `ClientConfig` with `ClientConfig::builder()`,
//! i.e. on the process-level `CryptoProvider`: it is installed here once
//! (aws-lc-rs), as an application would at start-up.

mod support;

use redis::{AsyncCommands, ClientTlsConfig, TlsCertificates, cluster::ClusterClientBuilder};
use support::redis_server::{ClientAuth, RedisCluster, RedisServer, TlsFiles};

/// Installs aws-lc-rs as the process-level rustls provider unless one is
/// installed already (another test, or the application, chose first).
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread is fine: a provider is installed.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

fn certificates(files: &TlsFiles, client_cert: bool) -> TlsCertificates {
    TlsCertificates {
        client_tls: client_cert
            .then(|| ClientTlsConfig { client_cert: files.client_cert_pem(), client_key: files.client_key_pem() }),
        root_cert: Some(files.ca_pem()),
    }
}

#[tokio::test]
async fn redis_rs_talks_to_a_tls_server_trusting_a_private_ca() {
    install_crypto_provider();
    let server = RedisServer::start_tls();
    let files = server.tls().expect("a TLS server");
    let client = redis::Client::build_with_tls(server.url(), certificates(files, false)).expect("a TLS client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("a TLS connection");
    let () = conn.set("tls-key", "over tls").await.expect("SET");
    let value: String = conn.get("tls-key").await.expect("GET");
    assert_eq!(value, "over tls");
}

#[tokio::test]
async fn redis_rs_refuses_a_server_its_ca_did_not_sign() {
    install_crypto_provider();
    let server = RedisServer::start_tls();
    let other = TlsFiles::generate();
    let client = redis::Client::build_with_tls(server.url(), certificates(&other, false)).expect("a TLS client");
    let err = client.get_multiplexed_async_connection().await.expect_err("a server signed by another CA");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn redis_rs_presents_a_client_certificate_for_mutual_tls() {
    install_crypto_provider();
    let files = TlsFiles::generate();
    let server = RedisServer::start_tls_with(files.clone(), ClientAuth::Required);

    let client = redis::Client::build_with_tls(server.url(), certificates(&files, true)).expect("a TLS client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("a mutual-TLS connection");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.expect("PING");
    assert_eq!(pong, "PONG");

    // Without a client certificate the server ends the handshake (TLS 1.3:
    // the client learns it at its first read, so the connection attempt or
    // the first command fails).
    let anonymous = redis::Client::build_with_tls(server.url(), certificates(&files, false)).expect("a TLS client");
    let refused = match anonymous.get_multiplexed_async_connection().await {
        Err(_) => true,
        Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");
}

#[tokio::test]
async fn the_cluster_client_follows_a_tls_cluster() {
    install_crypto_provider();
    let files = TlsFiles::generate();
    let cluster = RedisCluster::start_tls_with(files.clone(), ClientAuth::Required);
    let client = ClusterClientBuilder::new(cluster.urls())
        .certs(certificates(&files, true))
        .build()
        .expect("a TLS cluster client");
    let mut conn = client.get_async_connection().await.expect("a TLS cluster connection");
    // Keys on all three masters.
    for i in 0..30 {
        let () = conn.set(format!("k{i}"), i).await.expect("SET");
    }
    for i in 0..30 {
        let value: i32 = conn.get(format!("k{i}")).await.expect("GET");
        assert_eq!(value, i);
    }
    let per_node: Vec<usize> =
        cluster.nodes().iter().map(|n| n.cmd(&["DBSIZE"]).expect("DBSIZE").parse().expect("a count")).collect();
    assert!(per_node.iter().all(|&n| n > 0), "keys per node: {per_node:?}");
}
