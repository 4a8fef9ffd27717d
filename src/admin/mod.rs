//! The admin HTTP API (axum). For now the health endpoints that tests and orchestrators need:
//! `GET /health/live` (the process answers) and `GET /health/ready` (the Kafka listener accepts
//! connections). Errors are a status code with `{"error": "..."}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

#[derive(Clone)]
pub struct AdminState {
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
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
