//! IncrementalAlterConfigs for topics: SET and DELETE of the topic configs this broker knows
//! (APPEND and SUBTRACT apply to list configs, which it has none of). Broker settings are static
//! (flags, environment, file) and cannot be altered at runtime.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::{blocking, str_bytes};
use crate::broker::Broker;
use crate::partition::config;

const RESOURCE_TOPIC: i8 = 2;
const SET: i8 = 0;
const DELETE: i8 = 1;

pub fn handle(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = request
        .resources
        .iter()
        .map(|resource| {
            let response = AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match alter(broker, resource, request.validate_only) {
                Ok(()) => response,
                Err((code, message)) => response
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn alter(
    broker: &Broker,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if resource.resource_type != RESOURCE_TOPIC {
        return Err((
            ResponseError::InvalidRequest.code(),
            "only topic configs can be altered; broker settings are static".into(),
        ));
    }
    let name = resource.resource_name.as_str();
    let topic = broker.topics.get(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition.code(),
            format!("topic `{name}` does not exist"),
        )
    })?;
    let mut configs = topic.configs.clone();
    for change in &resource.configs {
        let key = change.name.to_string();
        match (change.config_operation, &change.value) {
            (SET, Some(value)) => {
                config::validate(&key, value.as_str())
                    .map_err(|e| (ResponseError::InvalidConfig.code(), e.to_string()))?;
                configs.insert(key, value.to_string());
            }
            (DELETE, _) => {
                config::definition(&key).ok_or_else(|| {
                    (
                        ResponseError::InvalidConfig.code(),
                        format!("unknown topic config `{key}`"),
                    )
                })?;
                configs.remove(&key);
            }
            (operation, _) => {
                return Err((
                    ResponseError::InvalidConfig.code(),
                    format!("operation {operation} on `{key}` is not supported"),
                ));
            }
        }
    }
    if validate_only {
        return Ok(());
    }
    blocking(|| broker.topics.set_configs(name, configs))
        .map(|_| ())
        .map_err(|e| (e.code(), e.to_string()))
}
