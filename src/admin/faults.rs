//! `/v1/faults`: switches the injected faults of `crate::faults` at runtime. Served only by a
//! broker started with `--fault-injection` (the routes are absent from the router, and from its
//! OpenAPI document, otherwise).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;

use super::{AdminState, ApiError, ErrorBody};
use crate::faults::{Fault, FaultError, Faults, Point};

/// The faults set, by point.
type Listing = BTreeMap<&'static str, Fault>;

fn faults(state: &AdminState) -> Result<&Arc<Faults>, ApiError> {
    state
        .faults
        .as_ref()
        .filter(|f| f.is_enabled())
        .ok_or_else(|| ApiError::not_found(FaultError::Disabled))
}

fn point(name: &str) -> Result<Point, ApiError> {
    Point::parse(name).map_err(ApiError::not_found)
}

/// The faults set now.
#[utoipa::path(get, path = "/v1/faults", tag = "faults", operation_id = "list_faults", security(("bearer" = [])),
    responses((status = 200, description = "Faults by point", body = BTreeMap<String, Fault>)))]
pub async fn list(State(state): State<AdminState>) -> Result<Json<Listing>, ApiError> {
    Ok(Json(faults(&state)?.list()))
}

/// Sets the fault of one point, replacing any fault there. Actions: `error` (optional `errno`:
/// `EIO` or `ENOSPC`), `delay` (`ms`), `hang`, `crash`; `after` lets that many passes through
/// first.
#[utoipa::path(put, path = "/v1/faults/{point}", tag = "faults", operation_id = "set_fault", security(("bearer" = [])),
    params(("point" = String, Path, description = "e.g. wal.fsync, object_store.get")),
    request_body = Fault,
    responses((status = 200, description = "Faults by point", body = BTreeMap<String, Fault>),
        (status = 400, description = "Bad fault", body = ErrorBody), (status = 404, description = "Unknown point", body = ErrorBody)))]
pub async fn set(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<Fault>, JsonRejection>,
) -> Result<Json<Listing>, ApiError> {
    let faults = faults(&state)?;
    let point = point(&name)?;
    let Json(fault) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    faults.set(point, fault).map_err(ApiError::bad_request)?;
    Ok(Json(faults.list()))
}

/// Clears the fault of one point.
#[utoipa::path(delete, path = "/v1/faults/{point}", tag = "faults", operation_id = "clear_fault", security(("bearer" = [])),
    params(("point" = String, Path)),
    responses((status = 200, description = "Faults by point", body = BTreeMap<String, Fault>),
        (status = 404, description = "Unknown point", body = ErrorBody)))]
pub async fn clear(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Listing>, ApiError> {
    let faults = faults(&state)?;
    faults.clear(point(&name)?);
    Ok(Json(faults.list()))
}

/// Clears every fault.
#[utoipa::path(delete, path = "/v1/faults", tag = "faults", operation_id = "clear_faults", security(("bearer" = [])),
    responses((status = 200, description = "No faults", body = BTreeMap<String, Fault>)))]
pub async fn clear_all(State(state): State<AdminState>) -> Result<Json<Listing>, ApiError> {
    let faults = faults(&state)?;
    faults.clear_all();
    Ok(Json(faults.list()))
}
