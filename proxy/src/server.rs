//! `/healthz`, as kube-proxy serves it (`/metrics` is skiff-common's).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

/// Something that knows whether the proxy is healthy.
pub trait Health: Send + Sync + 'static {
    /// (healthy, last successful sync).
    fn check(&self) -> (bool, Option<SystemTime>);
}

/// `GET /healthz` (and `/livez`): 200 while syncs keep up, 503 when a change waits too long.
pub fn healthz_router<H: Health>(health: Arc<H>) -> Router {
    Router::new()
        .route("/healthz", get(healthz::<H>))
        .route("/livez", get(healthz::<H>))
        .with_state(health)
}

async fn healthz<H: Health>(State(health): State<Arc<H>>) -> impl IntoResponse {
    let (healthy, last) = health.check();
    let stamp = |t: SystemTime| {
        k8s_openapi::jiff::Timestamp::try_from(t)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    let body = json!({
        "lastUpdated": last.map(stamp),
        "currentTime": stamp(SystemTime::now()),
        "nodeEligible": true,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}
