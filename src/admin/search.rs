//! `GET /v1/search` (query string) and `POST /v1/search` (JSON body): the same search.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::{AdminState, ApiError, ErrorBody};
use crate::search::{self, SearchError, SearchRequest, SearchResponse};

/// Searches a topic's records in both tiers (Tantivy's query language).
#[utoipa::path(get, path = "/v1/search", tag = "search", security(("bearer" = [])),
    params(SearchRequest),
    responses((status = 200, description = "OK", body = SearchResponse),
        (status = 400, description = "malformed query or bounds", body = ErrorBody),
        (status = 404, description = "no such topic or partition", body = ErrorBody)))]
pub async fn search_get(
    State(state): State<AdminState>,
    request: Result<Query<SearchRequest>, QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Query(request) = request.map_err(ApiError::bad_request)?;
    run(&state, request).await
}

/// The same search, with the request as a JSON body.
#[utoipa::path(post, path = "/v1/search", tag = "search", security(("bearer" = [])),
    request_body = SearchRequest,
    responses((status = 200, description = "OK", body = SearchResponse),
        (status = 400, description = "malformed query or bounds", body = ErrorBody),
        (status = 404, description = "no such topic or partition", body = ErrorBody)))]
pub async fn search_post(
    State(state): State<AdminState>,
    request: Result<Json<SearchRequest>, JsonRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Json(request) = request.map_err(ApiError::bad_request)?;
    run(&state, request).await
}

async fn run(state: &AdminState, request: SearchRequest) -> Result<Json<SearchResponse>, ApiError> {
    let broker = state.broker()?;
    search::search(broker, request)
        .await
        .map(Json)
        .map_err(|error| {
            let status = match &error {
                SearchError::BadRequest(_) => StatusCode::BAD_REQUEST,
                SearchError::NotFound(_) => StatusCode::NOT_FOUND,
                SearchError::Read(_) | SearchError::Open { .. } => StatusCode::BAD_GATEWAY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if status.is_server_error() {
                tracing::warn!(%error, "search failed");
            }
            ApiError::new(status, error)
        })
}
