//! The admin HTTP API (axum): `GET /health/live` (the process answers), `GET /health/ready` (the
//! Kafka listener accepts connections), `POST /v1/indexer/run` (seal the active WAL segment and
//! upload everything sealed, now) and `GET /v1/topics/{topic}/partitions` (each partition's tier
//! boundaries). Errors are a status code with `{"error": "..."}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::Path as UrlPath;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::broker::Broker;
use crate::indexer;

#[derive(Clone)]
pub struct AdminState {
    pub ready: Arc<AtomicBool>,
    /// `None` only in tests of the health routes.
    pub broker: Option<Arc<Broker>>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/indexer/run", post(run_indexer))
        .route("/v1/topics/{topic}/partitions", get(partitions))
        .fallback(not_found)
        .with_state(state)
}

async fn live() -> impl IntoResponse {
    Json(json!({"status": "live"}))
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "not ready"})),
        )
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

fn not_running() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running")
}

/// Prometheus text exposition.
async fn metrics(State(state): State<AdminState>) -> Response {
    let Some(broker) = state.broker else {
        return not_running();
    };
    broker
        .metrics
        .wal_bytes
        .set(i64::try_from(broker.wal.disk_bytes()).unwrap_or(i64::MAX));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        broker.metrics.render(),
    )
        .into_response()
}

/// Seals the active WAL segment, then uploads every sealed segment and answers with what it
/// uploaded.
async fn run_indexer(State(state): State<AdminState>) -> Response {
    let Some(broker) = state.broker else {
        return not_running();
    };
    match indexer::seal_and_run(&broker).await {
        Ok(run) => Json(run).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

async fn partitions(State(state): State<AdminState>, UrlPath(topic): UrlPath<String>) -> Response {
    let Some(broker) = state.broker else {
        return not_running();
    };
    let Some(topic) = broker.topics.get(&topic) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("topic `{topic}` does not exist"),
        );
    };
    let partitions: Vec<_> = topic
        .partitions
        .iter()
        .map(|p| {
            let state = p.lock();
            json!({
                "partition": p.index,
                "log_start_offset": state.log_start_offset,
                "high_watermark": state.high_watermark,
                "wal_start_offset": state.wal_start_offset(),
                "remote_end_offset": state.remote_end_offset(),
                "segment_count": state.remote.len(),
                "segment_bytes": state.remote.iter().map(|s| s.blocks.bytes()).sum::<u64>(),
            })
        })
        .collect();
    Json(json!({ "topic": topic.name.as_ref(), "partitions": partitions })).into_response()
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such route"})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn ready_follows_the_flag_and_unknown_routes_are_json_404() {
        let state = AdminState {
            ready: Arc::new(AtomicBool::new(false)),
            broker: None,
        };
        let app = router(state.clone());
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        assert_eq!(
            app.clone()
                .oneshot(get("/health/ready"))
                .await
                .unwrap()
                .status(),
            503
        );
        state.ready.store(true, Ordering::Release);
        assert_eq!(
            app.clone()
                .oneshot(get("/health/ready"))
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            app.clone()
                .oneshot(get("/health/live"))
                .await
                .unwrap()
                .status(),
            200
        );
        let missing = app.oneshot(get("/nope")).await.unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.headers()["content-type"], "application/json");
    }
}
