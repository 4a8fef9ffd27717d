//! DescribeConfigs for topics (every known config, explicit or default) and for this broker
//! (its settings, under Kafka's names).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::create_topics::{SOURCE_DEFAULT, SOURCE_TOPIC};
use super::str_bytes;
use crate::broker::Broker;
use crate::partition::config::{self, ConfigType};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_STATIC_BROKER: i8 = 4;

/// One config as reported.
struct Entry {
    name: String,
    value: String,
    source: i8,
    read_only: bool,
    config_type: ConfigType,
    documentation: &'static str,
}

pub fn handle(
    broker: &Arc<Broker>,
    _version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            describe(
                broker,
                resource,
                request.include_synonyms,
                request.include_documentation,
            )
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe(
    broker: &Broker,
    resource: &DescribeConfigsResource,
    synonyms: bool,
    documentation: bool,
) -> DescribeConfigsResult {
    let result = DescribeConfigsResult::default()
        .with_resource_type(resource.resource_type)
        .with_resource_name(resource.resource_name.clone());
    let name = resource.resource_name.as_str();
    let entries = match resource.resource_type {
        RESOURCE_TOPIC => match topic_entries(broker, name) {
            Some(entries) => entries,
            None => {
                return result
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_error_message(Some(str_bytes(&format!("topic `{name}` does not exist"))))
            }
        },
        RESOURCE_BROKER if name.is_empty() || name == broker.config.node_id.to_string() => {
            broker_entries(broker)
        }
        RESOURCE_BROKER => {
            return result
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(&format!(
                    "this is broker {}",
                    broker.config.node_id
                ))))
        }
        other => {
            return result
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(&format!(
                    "resource type {other} is not supported"
                ))))
        }
    };
    let wanted = |name: &str| {
        resource
            .configuration_keys
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
    };
    let configs = entries
        .into_iter()
        .filter(|e| wanted(&e.name))
        .map(|e| render(e, synonyms, documentation))
        .collect();
    result.with_configs(configs)
}

fn render(entry: Entry, synonyms: bool, documentation: bool) -> DescribeConfigsResourceResult {
    let synonym_list = if synonyms {
        vec![DescribeConfigsSynonym::default()
            .with_name(str_bytes(&entry.name))
            .with_value(Some(str_bytes(&entry.value)))
            .with_source(entry.source)]
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(&entry.name))
        .with_value(Some(str_bytes(&entry.value)))
        .with_read_only(entry.read_only)
        .with_config_source(entry.source)
        .with_synonyms(synonym_list)
        .with_config_type(entry.config_type as i8)
        .with_documentation(documentation.then(|| str_bytes(entry.documentation)))
}

fn topic_entries(broker: &Broker, name: &str) -> Option<Vec<Entry>> {
    let topic = broker.topics.get(name)?;
    let entries = config::TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let explicit = topic.configs.get(def.name);
            Entry {
                name: def.name.to_string(),
                value: explicit.cloned().unwrap_or_else(|| {
                    config::default_value(def.name, broker.config.message_max_bytes)
                }),
                source: if explicit.is_some() {
                    SOURCE_TOPIC
                } else {
                    SOURCE_DEFAULT
                },
                read_only: false,
                config_type: def.config_type,
                documentation: def.documentation,
            }
        })
        .collect();
    Some(entries)
}

fn broker_entries(broker: &Broker) -> Vec<Entry> {
    let config = &broker.config;
    let entry = |name: &str, value: String, config_type, documentation| Entry {
        name: name.to_string(),
        value,
        source: SOURCE_STATIC_BROKER,
        read_only: true,
        config_type,
        documentation,
    };
    vec![
        entry(
            "node.id",
            config.node_id.to_string(),
            ConfigType::Int,
            "This broker's id (--node-id).",
        ),
        entry(
            "broker.id",
            config.node_id.to_string(),
            ConfigType::Int,
            "Same as node.id.",
        ),
        entry(
            "advertised.listeners",
            format!("PLAINTEXT://{}", config.advertised()),
            ConfigType::String,
            "--advertised-listener.",
        ),
        entry(
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "--auto-create-topics.",
        ),
        entry(
            "num.partitions",
            config.default_partitions.to_string(),
            ConfigType::Int,
            "--default-partitions.",
        ),
        entry(
            "message.max.bytes",
            config.message_max_bytes.to_string(),
            ConfigType::Int,
            "--message-max-bytes.",
        ),
        entry(
            "default.replication.factor",
            "1".into(),
            ConfigType::Int,
            "A single broker: always 1.",
        ),
        entry(
            "min.insync.replicas",
            "1".into(),
            ConfigType::Int,
            "A single broker: always 1.",
        ),
        entry(
            "log.retention.ms",
            config::default_value(config::RETENTION_MS, 0),
            ConfigType::Long,
            "Default retention.ms of topics.",
        ),
        entry(
            "log.retention.bytes",
            config::default_value(config::RETENTION_BYTES, 0),
            ConfigType::Long,
            "Default retention.bytes of topics.",
        ),
    ]
}
