//! The admin HTTP API (axum), JSON in and out; errors are a status code with
//! `{"error": "..."}`. Health and `/metrics` are open; every `/v1` route needs
//! `Authorization: Bearer <token>` when `--admin-token` is set.
//!
//! Routes are registered only through `utoipa_axum::routes!`, so the OpenAPI document served
//! at `/v1/openapi.json` is generated from the very handlers the router runs: a route cannot be
//! served without being documented. One file per area: `cluster.rs` (health, metrics, cluster,
//! segments, the indexer), `topics.rs` (the same code paths as the Kafka topic APIs),
//! `search.rs`, `groups.rs`, `users.rs` (the Kafka listener's SASL users) and `faults.rs` (only
//! with `--fault-injection`). To add routes: a handler with `#[utoipa::path]`, one `.routes(routes!(..))`
//! line in `v1_routes`.

mod cluster;
mod faults;
mod groups;
mod search;
mod topics;
mod users;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::broker::Broker;
use crate::limits;
use crate::metadata::users::Users;

#[derive(Clone)]
pub struct AdminState {
    pub ready: Arc<AtomicBool>,
    /// `None` only in tests of the routes.
    pub broker: Option<Arc<Broker>>,
    /// The Kafka listener's users (the broker's; tests of the routes bring their own).
    pub users: Option<Users>,
    /// `--admin-token`: every `/v1` call must carry it.
    pub token: Option<Arc<str>>,
    /// The broker's injected faults: `/v1/faults` is routed only when fault injection is on.
    pub faults: Option<Arc<crate::faults::Faults>>,
}

impl AdminState {
    fn broker(&self) -> Result<&Arc<Broker>, ApiError> {
        self.broker.as_ref().ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running")
        })
    }

    fn users(&self) -> Result<&Users, ApiError> {
        self.users.as_ref().ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running")
        })
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// An error answer: a status code and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
        ApiError {
            status,
            message: message.to_string(),
        }
    }

    pub fn bad_request(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strata admin API",
        description = "Topics, health, metrics, what is in the bucket, and search over every record."
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Routes that need the token (when one is set).
fn v1_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(cluster::cluster))
        .routes(routes!(cluster::segments))
        .routes(routes!(cluster::run_indexer))
        .routes(routes!(topics::list, topics::create))
        .routes(routes!(topics::describe, topics::delete))
        .routes(routes!(topics::alter_configs))
        .routes(routes!(topics::partitions))
        .routes(routes!(search::search_get, search::search_post))
        .routes(routes!(groups::list))
        .routes(routes!(groups::describe))
        .routes(routes!(users::list))
        .routes(routes!(users::set_password, users::delete))
}

/// Routes anyone who reaches the listener may call.
fn open_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(cluster::live))
        .routes(routes!(cluster::ready))
        .routes(routes!(cluster::metrics))
}

/// Routes of a broker started with `--fault-injection` (tests only).
fn fault_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(faults::list, faults::clear_all))
        .routes(routes!(faults::set, faults::clear))
}

/// The router and the OpenAPI document of its routes.
pub fn router_and_openapi(state: AdminState) -> (Router, OpenApiDoc) {
    let mut v1 = v1_routes();
    if state.faults.as_ref().is_some_and(|f| f.is_enabled()) {
        v1 = v1.merge(fault_routes());
    }
    let v1 = v1.route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(open_routes())
        .merge(v1)
        .split_for_parts();
    let router = router
        .fallback(not_found)
        .layer(Extension(Arc::new(openapi.clone())))
        .layer(DefaultBodyLimit::max(limits::ADMIN_BODY_BYTES_MAX))
        .with_state(state);
    (router, openapi)
}

pub fn router(state: AdminState) -> Router {
    router_and_openapi(state).0
}

/// Without a token configured, everything passes (the listener is then loopback-only: the
/// configuration refuses anything else). With one, the request must carry it.
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token (Authorization: Bearer <token>)",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// This API's OpenAPI 3 document, generated from the handlers.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "cluster",
    security(("bearer" = [])),
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json"))
)]
async fn openapi_json(Extension(openapi): Extension<Arc<OpenApiDoc>>) -> Response {
    Json(openapi.as_ref().clone()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

#[cfg(test)]
mod tests;
