//! CreateTopics: topics with a partition count (or the broker default), replication factor 1
//! (this is one broker), and validated configs. `validate_only` checks without creating.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{blocking, str_bytes};
use crate::broker::Broker;
use crate::partition::config;
use crate::partition::{Topic, TopicError};

/// DescribeConfigs/CreateTopics config sources.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DEFAULT: i8 = 5;

pub fn handle(
    broker: &Arc<Broker>,
    _version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicated: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.as_str()))
        .map(|t| t.name.0.to_string())
        .collect();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            if duplicated.contains(name) {
                return failure(
                    topic,
                    ResponseError::InvalidRequest.code(),
                    "topic named more than once in the request".into(),
                );
            }
            match create(broker, topic, request.validate_only) {
                Ok(created) => success(broker, topic, &created),
                Err((code, message)) => failure(topic, code, message),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn create(
    broker: &Broker,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<Arc<Topic>, (i16, String)> {
    let node = broker.config.node_id;
    let mut partitions = topic.num_partitions;
    if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest.code(),
                "give either assignments or a partition count and replication factor".into(),
            ));
        }
        if topic
            .assignments
            .iter()
            .any(|a| a.broker_ids.iter().map(|b| b.0).collect::<Vec<_>>() != vec![node])
        {
            return Err((
                ResponseError::InvalidReplicaAssignment.code(),
                format!("every partition must be assigned to broker {node} alone"),
            ));
        }
        partitions = topic.assignments.len() as i32;
    }
    if partitions == -1 {
        partitions = broker.config.default_partitions;
    }
    if !matches!(topic.replication_factor, -1 | 1) {
        let error = TopicError::InvalidReplicationFactor(topic.replication_factor);
        return Err((error.code(), error.to_string()));
    }
    let configs: BTreeMap<String, String> = topic
        .configs
        .iter()
        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
        .collect();
    let name = topic.name.0.as_str();
    blocking(|| {
        broker
            .topics
            .create(name, partitions, configs, validate_only)
    })
    .map_err(|e| (e.code(), e.to_string()))
}

fn success(broker: &Broker, requested: &CreatableTopic, topic: &Topic) -> CreatableTopicResult {
    let configs = config::TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let explicit = topic.configs.get(def.name);
            let value = explicit.cloned().unwrap_or_else(|| {
                config::default_value(def.name, broker.config.message_max_bytes)
            });
            CreatableTopicConfigs::default()
                .with_name(str_bytes(def.name))
                .with_value(Some(str_bytes(&value)))
                .with_config_source(if explicit.is_some() {
                    SOURCE_TOPIC
                } else {
                    SOURCE_DEFAULT
                })
        })
        .collect();
    CreatableTopicResult::default()
        .with_name(requested.name.clone())
        .with_topic_id(topic.id)
        .with_num_partitions(topic.partitions.len() as i32)
        .with_replication_factor(1)
        .with_configs(Some(configs))
}

fn failure(requested: &CreatableTopic, code: i16, message: String) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(requested.name.clone())
        .with_error_code(code)
        .with_error_message(Some(str_bytes(&message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}
