//! Health, metrics, the cluster's description, the objects in the bucket, and the indexer.

use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError, ErrorBody};
use crate::indexer;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Status {
    status: &'static str,
}

/// The process answers.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "OK", body = Status)))]
pub async fn live() -> Json<Status> {
    Json(Status { status: "live" })
}

/// The Kafka listener accepts connections.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "OK", body = Status), (status = 503, description = "Not ready", body = ErrorBody)))]
pub async fn ready(State(state): State<AdminState>) -> Result<Json<Status>, ApiError> {
    if state.ready.load(Ordering::Acquire) {
        Ok(Json(Status { status: "ready" }))
    } else {
        Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not ready"))
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let broker = state.broker()?;
    let metrics = &broker.metrics;
    metrics
        .wal_bytes
        .set(i64::try_from(broker.wal.disk_bytes()).unwrap_or(i64::MAX));
    metrics
        .indexer_lag_segments
        .set(broker.wal.sealed_segments().len() as i64);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Cluster {
    cluster_id: String,
    node_id: i32,
    version: &'static str,
    /// The address Kafka clients are told to use, and the one bound.
    kafka_advertised: String,
    kafka_listen: String,
    admin_listen: String,
    object_store: String,
    uptime_ms: u64,
    topics: usize,
}

/// This broker: ids, listeners, version, object store, uptime.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = Cluster), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub async fn cluster(State(state): State<AdminState>) -> Result<Json<Cluster>, ApiError> {
    let broker = state.broker()?;
    let config = &broker.config;
    Ok(Json(Cluster {
        cluster_id: broker.cluster_id.clone(),
        node_id: config.node_id,
        version: env!("CARGO_PKG_VERSION"),
        kafka_advertised: format!("{}:{}", broker.advertised.0, broker.advertised.1),
        kafka_listen: config.kafka_listen.to_string(),
        admin_listen: config.admin_listen.to_string(),
        object_store: config.object_store_url(),
        uptime_ms: broker.started.elapsed().as_millis() as u64,
        topics: broker.topics.list().len(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SegmentsQuery {
    topic: String,
    partition: Option<i32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Segment {
    partition: i32,
    key: String,
    wal_segment_id: u64,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    /// Bytes of this partition's blocks in the object.
    bytes: u64,
    blocks: usize,
    object_bytes: u64,
}

/// The objects in the bucket holding a topic's (or one partition's) records, oldest first.
#[utoipa::path(get, path = "/v1/segments", tag = "cluster", security(("bearer" = [])),
    params(SegmentsQuery),
    responses((status = 200, description = "OK", body = Vec<Segment>), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn segments(
    State(state): State<AdminState>,
    query: Result<Query<SegmentsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Segment>>, ApiError> {
    let broker = state.broker()?;
    let Query(query) = query.map_err(ApiError::bad_request)?;
    let topic = broker
        .topics
        .get(&query.topic)
        .ok_or_else(|| ApiError::not_found(format!("topic `{}` does not exist", query.topic)))?;
    let mut out = Vec::new();
    for partition in topic.partitions.iter() {
        if query.partition.is_some_and(|p| p != partition.index) {
            continue;
        }
        let state = partition.lock();
        out.extend(state.remote.iter().map(|s| Segment {
            partition: partition.index,
            key: s.key.to_string(),
            wal_segment_id: s.wal_segment_id,
            base_offset: s.base_offset(),
            last_offset: s.last_offset(),
            max_timestamp: s.blocks.max_timestamp,
            bytes: s.blocks.bytes(),
            blocks: s.blocks.blocks.len(),
            object_bytes: s.object_bytes,
        }));
    }
    if let Some(p) = query.partition {
        if topic.partition(p).is_none() {
            return Err(ApiError::not_found(format!(
                "topic `{}` has no partition {p}",
                query.topic
            )));
        }
    }
    Ok(Json(out))
}

/// Seals the active WAL segment, uploads every sealed one and applies retention, now.
#[utoipa::path(post, path = "/v1/indexer/run", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, description = "What the run uploaded and expired"),
        (status = 502, description = "Object storage failed", body = ErrorBody)))]
pub async fn run_indexer(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let broker = state.broker()?;
    match indexer::seal_and_run(broker).await {
        Ok(run) => Ok(Json(run).into_response()),
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e)),
    }
}
