//! The operator's HTTP endpoints: /metrics on one address, /healthz and /readyz on another
//! (so a NetworkPolicy can open metrics to Prometheus without exposing probes, and back).
//! Secure metrics (the default of the binary and the chart): HTTPS, and only for bearer
//! tokens allowed `get` on /metrics (`auth`). The probes stay plain and open: the kubelet
//! calls them without credentials, and they tell nothing but "ok".

pub mod auth;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::guard::context::Context;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], ctx.metrics.encode())
}

/// The process is alive and its runtime answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Caches synced (a warm standby can take over at once) and, on the leader, the first
/// audit done.
async fn readyz(State(ctx): State<Arc<Context>>) -> (StatusCode, &'static str) {
    if ctx.ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced or first audit not done",
        )
    }
}

pub fn metrics_router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

/// /metrics only for bearer tokens the apiserver allows `get` on it.
pub fn secure_metrics_router(ctx: Arc<Context>, auth: Arc<auth::MetricsAuth>) -> Router {
    metrics_router(ctx).route_layer(axum::middleware::from_fn_with_state(auth, auth::require))
}

pub fn health_router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ctx)
}

/// Serve a router until the process ends.
pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "serving HTTP");
    axum::serve(listener, router).await
}

/// Serve a router over HTTPS until the process ends.
pub async fn serve_tls(
    addr: SocketAddr,
    router: Router,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
) -> std::io::Result<()> {
    let listener = tls::TlsListener::bind(addr, config).await?;
    let address = axum::serve::Listener::local_addr(&listener)?;
    tracing::info!(%address, "serving HTTPS");
    axum::serve(listener, router).await
}
