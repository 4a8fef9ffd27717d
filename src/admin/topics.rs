//! Topics over HTTP. Every change goes through the Kafka API handlers (CreateTopics,
//! DeleteTopics, IncrementalAlterConfigs, DescribeConfigs in `src/api/`), built from the JSON
//! body, so validation, defaults and durability are the same whichever door a change comes
//! through; the Kafka error code becomes the HTTP status.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
};
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError, ErrorBody};
use crate::api::{self, str_bytes, topic_name};
use crate::broker::Broker;
use crate::partition::Topic;

/// Kafka's resource type for topics (DescribeConfigs, IncrementalAlterConfigs).
const RESOURCE_TOPIC: i8 = 2;
const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;
/// Versions of the Kafka requests built here (any the handlers accept).
const CREATE_TOPICS_VERSION: i16 = 7;
const DELETE_TOPICS_VERSION: i16 = 5;
const DESCRIBE_CONFIGS_VERSION: i16 = 4;

#[derive(Serialize, utoipa::ToSchema)]
pub struct TopicSummary {
    name: String,
    topic_id: String,
    partitions: usize,
    /// Configs set on the topic (the rest are defaults).
    configs: BTreeMap<String, String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TopicDetail {
    name: String,
    topic_id: String,
    /// Every topic config, explicit or default.
    configs: BTreeMap<String, ConfigValue>,
    partitions: Vec<PartitionInfo>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConfigValue {
    value: Option<String>,
    /// `topic` (set on the topic) or `default`.
    source: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PartitionInfo {
    partition: i32,
    log_start_offset: i64,
    high_watermark: i64,
    /// First offset still in the WAL (the high watermark when the WAL holds none).
    wal_start_offset: i64,
    /// Offsets below this are in the bucket.
    remote_end_offset: i64,
    segment_count: usize,
    segment_bytes: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TopicPartitions {
    topic: String,
    partitions: Vec<PartitionInfo>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    name: String,
    /// Default: the broker's `--default-partitions`.
    partitions: Option<i32>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
    /// Check everything, create nothing.
    #[serde(default)]
    validate_only: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlterConfigs {
    /// Configs to set.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Configs to return to their defaults.
    #[serde(default)]
    delete: Vec<String>,
    #[serde(default)]
    validate_only: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted {
    deleted: String,
    topic_id: String,
}

/// Every topic.
#[utoipa::path(get, path = "/v1/topics", tag = "topics", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = Vec<TopicSummary>), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub async fn list(State(state): State<AdminState>) -> Result<Json<Vec<TopicSummary>>, ApiError> {
    let broker = state.broker()?;
    let mut topics: Vec<TopicSummary> = broker.topics.list().iter().map(|t| summary(t)).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(topics))
}

/// Creates a topic (CreateTopics).
#[utoipa::path(post, path = "/v1/topics", tag = "topics", security(("bearer" = [])),
    request_body = CreateTopic,
    responses((status = 201, description = "Created", body = TopicSummary), (status = 200, description = "validate_only: valid", body = TopicSummary),
        (status = 400, description = "Bad request", body = ErrorBody), (status = 409, description = "Already exists", body = ErrorBody)))]
pub async fn create(
    State(state): State<AdminState>,
    body: Result<Json<CreateTopic>, JsonRejection>,
) -> Result<(StatusCode, Json<TopicSummary>), ApiError> {
    let broker = state.broker()?;
    let Json(body) = body.map_err(ApiError::bad_request)?;
    let topic = CreatableTopic::default()
        .with_name(topic_name(&body.name))
        .with_num_partitions(body.partitions.unwrap_or(-1))
        .with_replication_factor(-1)
        .with_configs(
            body.configs
                .iter()
                .map(|(name, value)| {
                    CreatableTopicConfig::default()
                        .with_name(str_bytes(name))
                        .with_value(Some(str_bytes(value)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_validate_only(body.validate_only);
    let response = api::create_topics::handle(broker, CREATE_TOPICS_VERSION, request);
    let result = response
        .topics
        .first()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no result"))?;
    kafka_result(result.error_code, result.error_message.as_deref())?;
    if body.validate_only {
        return Ok((
            StatusCode::OK,
            Json(TopicSummary {
                name: body.name,
                topic_id: String::new(),
                partitions: result.num_partitions.max(0) as usize,
                configs: body.configs,
            }),
        ));
    }
    let topic = existing(broker, &body.name)?;
    tracing::info!(topic = %body.name, "created topic over the admin API");
    Ok((StatusCode::CREATED, Json(summary(&topic))))
}

/// One topic: its configs (explicit and default) and partitions.
#[utoipa::path(get, path = "/v1/topics/{topic}", tag = "topics", security(("bearer" = [])),
    params(("topic" = String, Path)),
    responses((status = 200, description = "OK", body = TopicDetail), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn describe(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<TopicDetail>, ApiError> {
    let broker = state.broker()?;
    let topic = existing(broker, &name)?;
    Ok(Json(TopicDetail {
        name: topic.name.to_string(),
        topic_id: topic.id.to_string(),
        configs: configs(broker, &name)?,
        partitions: partition_infos(&topic),
    }))
}

/// Deletes a topic and its data in every tier (DeleteTopics).
#[utoipa::path(delete, path = "/v1/topics/{topic}", tag = "topics", security(("bearer" = [])),
    params(("topic" = String, Path)),
    responses((status = 200, description = "OK", body = Deleted), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let broker = state.broker()?;
    let request = DeleteTopicsRequest::default().with_topic_names(vec![topic_name(&name)]);
    let response = api::delete_topics::handle(broker, DELETE_TOPICS_VERSION, request);
    let result = response
        .responses
        .first()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no result"))?;
    kafka_result(result.error_code, result.error_message.as_deref())?;
    Ok(Json(Deleted {
        deleted: name,
        topic_id: result.topic_id.to_string(),
    }))
}

/// Sets configs or returns them to their defaults (IncrementalAlterConfigs); answers with
/// every config as it is now.
#[utoipa::path(patch, path = "/v1/topics/{topic}/configs", tag = "topics", security(("bearer" = [])),
    params(("topic" = String, Path)), request_body = AlterConfigs,
    responses((status = 200, description = "OK", body = BTreeMap<String, ConfigValue>), (status = 400, description = "Bad request", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn alter_configs(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<AlterConfigs>, JsonRejection>,
) -> Result<Json<BTreeMap<String, ConfigValue>>, ApiError> {
    let broker = state.broker()?;
    let Json(body) = body.map_err(ApiError::bad_request)?;
    let set = body.set.iter().map(|(key, value)| {
        AlterableConfig::default()
            .with_name(str_bytes(key))
            .with_config_operation(OPERATION_SET)
            .with_value(Some(str_bytes(value)))
    });
    let delete = body.delete.iter().map(|key| {
        AlterableConfig::default()
            .with_name(str_bytes(key))
            .with_config_operation(OPERATION_DELETE)
    });
    let resource = AlterConfigsResource::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(str_bytes(&name))
        .with_configs(set.chain(delete).collect());
    let request = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![resource])
        .with_validate_only(body.validate_only);
    let response = api::incremental_alter_configs::handle(broker, request);
    let result = response
        .responses
        .first()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no result"))?;
    kafka_result(result.error_code, result.error_message.as_deref())?;
    Ok(Json(configs(broker, &name)?))
}

/// Each partition's offsets and tier boundaries.
#[utoipa::path(get, path = "/v1/topics/{topic}/partitions", tag = "topics", security(("bearer" = [])),
    params(("topic" = String, Path)),
    responses((status = 200, description = "OK", body = TopicPartitions), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn partitions(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<TopicPartitions>, ApiError> {
    let broker = state.broker()?;
    let topic = existing(broker, &name)?;
    Ok(Json(TopicPartitions {
        topic: topic.name.to_string(),
        partitions: partition_infos(&topic),
    }))
}

fn existing(broker: &Broker, name: &str) -> Result<Arc<Topic>, ApiError> {
    broker
        .topics
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("topic `{name}` does not exist")))
}

fn summary(topic: &Topic) -> TopicSummary {
    TopicSummary {
        name: topic.name.to_string(),
        topic_id: topic.id.to_string(),
        partitions: topic.partitions.len(),
        configs: topic.configs.clone(),
    }
}

fn partition_infos(topic: &Topic) -> Vec<PartitionInfo> {
    topic
        .partitions
        .iter()
        .map(|p| {
            let state = p.lock();
            PartitionInfo {
                partition: p.index,
                log_start_offset: state.log_start_offset,
                high_watermark: state.high_watermark,
                wal_start_offset: state.wal_start_offset(),
                remote_end_offset: state.remote_end_offset(),
                segment_count: state.remote.len(),
                segment_bytes: state.remote.iter().map(|s| s.blocks.bytes()).sum(),
            }
        })
        .collect()
}

/// Every config of a topic, as DescribeConfigs reports it.
fn configs(broker: &Arc<Broker>, name: &str) -> Result<BTreeMap<String, ConfigValue>, ApiError> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(name))
            .with_configuration_keys(None)]);
    let response = api::describe_configs::handle(broker, DESCRIBE_CONFIGS_VERSION, request);
    let result = response
        .results
        .first()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no result"))?;
    kafka_result(result.error_code, result.error_message.as_deref())?;
    Ok(result
        .configs
        .iter()
        .map(|c| {
            let source = if c.config_source == api::create_topics::SOURCE_TOPIC {
                "topic"
            } else {
                "default"
            };
            let value = c.value.as_ref().map(|v| v.to_string());
            (c.name.to_string(), ConfigValue { value, source })
        })
        .collect())
}

/// A Kafka error code as an HTTP error: unknown things are 404, conflicts 409, requests the
/// handler refused 400, anything else 500.
fn kafka_result(code: i16, message: Option<&str>) -> Result<(), ApiError> {
    if code == 0 {
        return Ok(());
    }
    let error = ResponseError::try_from_code(code);
    let message = match (message, error) {
        (Some(m), _) => m.to_string(),
        (None, Some(e)) => e.to_string(),
        (None, None) => format!("Kafka error code {code}"),
    };
    let status = match error {
        Some(ResponseError::UnknownTopicOrPartition | ResponseError::UnknownTopicId) => {
            StatusCode::NOT_FOUND
        }
        Some(ResponseError::TopicAlreadyExists) => StatusCode::CONFLICT,
        Some(
            ResponseError::InvalidTopicException
            | ResponseError::InvalidPartitions
            | ResponseError::InvalidReplicationFactor
            | ResponseError::InvalidReplicaAssignment
            | ResponseError::InvalidConfig
            | ResponseError::InvalidRequest
            | ResponseError::PolicyViolation
            | ResponseError::TopicDeletionDisabled,
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Err(ApiError::new(status, message))
}
