//! Users of the Kafka listener over HTTP: list them (mechanisms and iterations only), set a
//! password for one SCRAM mechanism, delete one mechanism or the whole user. A password is
//! turned into a salted credential here (off the async executor) and is never stored, logged
//! or echoed.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError, ErrorBody};
use crate::auth::scram::ScramMechanism;
use crate::limits;
use crate::metadata::users::{self, Change, Users, UsersError};

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserCredential {
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    mechanism: &'static str,
    iterations: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct User {
    name: String,
    /// Every mechanism the user can log in with; PLAIN checks the password against these.
    credentials: Vec<UserCredential>,
}

/// A new password for one mechanism of a user.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    mechanism: String,
    password: String,
    /// PBKDF2 iterations, 4096 to 16384 (default 8192).
    iterations: Option<u32>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Delete only this mechanism's credential (default: the whole user).
    mechanism: Option<String>,
}

/// Every user, with its mechanisms and iterations (never a salt, key or password).
#[utoipa::path(get, path = "/v1/users", tag = "users", operation_id = "list_users",
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = Vec<User>)))]
pub async fn list(State(state): State<AdminState>) -> Result<Json<Vec<User>>, ApiError> {
    let users = state.users()?;
    let listed = users
        .list()
        .into_iter()
        .map(|(name, mechanisms)| user(name, &mechanisms))
        .collect();
    Ok(Json(listed))
}

/// Creates the user or sets its password for one mechanism; answers with the user.
#[utoipa::path(put, path = "/v1/users/{name}", tag = "users", operation_id = "set_user_password",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "User name")),
    request_body = SetPassword,
    responses((status = 200, description = "OK", body = User),
        (status = 400, description = "Bad request", body = ErrorBody)))]
pub async fn set_password(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<SetPassword>, JsonRejection>,
) -> Result<Json<User>, ApiError> {
    let users = state.users()?.clone();
    let Json(body) = body.map_err(ApiError::bad_request)?;
    let mechanism = mechanism(&body.mechanism)?;
    users::check_name(&name).map_err(ApiError::bad_request)?;
    if body.password.is_empty() {
        return Err(ApiError::bad_request("the password must not be empty"));
    }
    let iterations = body.iterations.unwrap_or(limits::SCRAM_ITERATIONS_DEFAULT);
    users::check_iterations(i64::from(iterations)).map_err(ApiError::bad_request)?;
    let stored = name.clone();
    // PBKDF2 and an fsync: off the async executor.
    let written = tokio::task::spawn_blocking(move || {
        let credential = mechanism
            .new_credential(&body.password, iterations)
            .map_err(internal)?;
        let change = Change::Upsert {
            user: stored,
            mechanism,
            credential,
        };
        users.apply(vec![change]).map_err(internal)?;
        Ok::<_, ApiError>(users)
    })
    .await
    .map_err(internal)??;
    tracing::info!(user = %name, mechanism = mechanism.name(), "set a user's credential over the admin API");
    let listed = written.list();
    Ok(Json(user(name.clone(), &listed[&name])))
}

/// Deletes a user, or one mechanism of it (`?mechanism=`).
#[utoipa::path(delete, path = "/v1/users/{name}", tag = "users", operation_id = "delete_user",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "User name"), DeleteParams),
    responses((status = 204, description = "Deleted"),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 404, description = "No such user or credential", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    params: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let users = state.users()?.clone();
    let Query(params) = params.map_err(ApiError::bad_request)?;
    let mechanisms = match params.mechanism.as_deref() {
        Some(name) => vec![mechanism(name)?],
        None => mechanisms_of(&users, &name)?,
    };
    let changes: Vec<Change> = mechanisms
        .into_iter()
        .map(|mechanism| Change::Delete {
            user: name.clone(),
            mechanism,
        })
        .collect();
    for change in &changes {
        users.check(change).map_err(|error| match error {
            UsersError::NotFound { .. } => ApiError::not_found(error),
            other => ApiError::bad_request(other),
        })?;
    }
    tokio::task::spawn_blocking(move || users.apply(changes))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    tracing::info!(user = %name, "deleted a user's credentials over the admin API");
    Ok(StatusCode::NO_CONTENT)
}

fn mechanisms_of(users: &Users, name: &str) -> Result<Vec<ScramMechanism>, ApiError> {
    let listed = users.list();
    let mechanisms = listed
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("user {name} does not exist")))?;
    Ok(mechanisms.keys().copied().collect())
}

fn mechanism(name: &str) -> Result<ScramMechanism, ApiError> {
    ScramMechanism::from_name(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown mechanism `{name}` (SCRAM-SHA-256 or SCRAM-SHA-512; PLAIN logs in with either)"
        ))
    })
}

fn user(name: String, mechanisms: &std::collections::BTreeMap<ScramMechanism, u32>) -> User {
    let credentials = mechanisms
        .iter()
        .map(|(mechanism, iterations)| UserCredential {
            mechanism: mechanism.name(),
            iterations: *iterations,
        })
        .collect();
    User { name, credentials }
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error)
}
