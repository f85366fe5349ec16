//! `METRICS_PORT`: the crate's metrics (and nothing else) in Prometheus text
//! at `http://127.0.0.1:METRICS_PORT/metrics`, served by the demo itself.

use std::time::Duration;

use axum::{Router, http::header, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_jwt_auth::metrics::{PROPAGATION_BUCKETS, REVOCATION_PROPAGATION, STORE_CALL_BUCKETS, STORE_CALL_DURATION};

/// Installs the Prometheus recorder: call it before building the `JwtAuth`,
/// which registers its series with the recorder installed at that time.
pub fn install() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(STORE_CALL_DURATION.into()), STORE_CALL_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(REVOCATION_PROPAGATION.into()), PROPAGATION_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    // Histograms are drained into their buckets on upkeep.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Serves `GET /metrics` on `127.0.0.1:port`.
pub async fn serve(handle: PrometheusHandle, port: u16) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!(address = %listener.local_addr()?, "metrics at /metrics");
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(())
}
