//! Metadata: the broker (at its advertised address) and the topics asked for, creating missing
//! ones when the client allows it and the broker is configured to.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::{blocking, str_bytes, topic_name, AUTHORIZED_OPERATIONS_UNKNOWN};
use crate::broker::Broker;
use crate::partition::{Topic, TopicError};

pub fn handle(broker: &Arc<Broker>, version: i16, request: MetadataRequest) -> MetadataResponse {
    // Before v4 a client could not opt out of auto-creation.
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    let topics = match request.topics {
        None => all_topics(broker),
        Some(list) if list.is_empty() && version == 0 => all_topics(broker),
        Some(list) => list
            .iter()
            .map(|t| lookup(broker, t, allow_auto_create))
            .collect(),
    };
    let (host, port) = &broker.advertised;
    let me = MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.config.node_id))
        .with_host(str_bytes(host))
        .with_port(*port);
    MetadataResponse::default()
        .with_brokers(vec![me])
        .with_cluster_id(Some(str_bytes(&broker.cluster_id)))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_UNKNOWN)
        .with_topics(topics)
}

fn all_topics(broker: &Broker) -> Vec<MetadataResponseTopic> {
    broker
        .topics
        .list()
        .iter()
        .map(|t| describe(broker, t))
        .collect()
}

fn lookup(
    broker: &Broker,
    requested: &MetadataRequestTopic,
    allow_auto_create: bool,
) -> MetadataResponseTopic {
    let Some(name) = &requested.name else {
        return match broker.topics.get_by_id(&requested.topic_id) {
            Some(topic) => describe(broker, &topic),
            None => MetadataResponseTopic::default()
                .with_topic_id(requested.topic_id)
                .with_error_code(ResponseError::UnknownTopicId.code()),
        };
    };
    let name = name.0.as_str();
    if let Some(topic) = broker.topics.get(name) {
        return describe(broker, &topic);
    }
    let error = |code: i16| {
        MetadataResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(code)
    };
    if !(allow_auto_create && broker.config.auto_create_topics) {
        return error(ResponseError::UnknownTopicOrPartition.code());
    }
    let partitions = broker.config.default_partitions;
    match blocking(|| {
        broker
            .topics
            .create(name, partitions, BTreeMap::new(), false)
    }) {
        Ok(topic) => {
            tracing::info!(topic = name, partitions, "auto-created topic");
            describe(broker, &topic)
        }
        Err(TopicError::AlreadyExists(_)) => match broker.topics.get(name) {
            Some(topic) => describe(broker, &topic),
            None => error(ResponseError::UnknownTopicOrPartition.code()),
        },
        Err(e) => error(e.code()),
    }
}

fn describe(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_UNKNOWN)
}
