//! CreatePartitions: grows a topic. New partitions start empty at offset 0.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{blocking, str_bytes};
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let results = request
        .topics
        .iter()
        .map(|topic| {
            let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            match grow(broker, topic, request.validate_only) {
                Ok(()) => result,
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

fn grow(
    broker: &Broker,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let node = broker.config.node_id;
    let misassigned = topic
        .assignments
        .iter()
        .flatten()
        .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node);
    if misassigned {
        return Err((
            ResponseError::InvalidReplicaAssignment.code(),
            format!("new partitions must be assigned to broker {node} alone"),
        ));
    }
    let name = topic.name.0.as_str();
    blocking(|| {
        broker
            .topics
            .add_partitions(name, topic.count, validate_only)
    })
    .map(|_| ())
    .map_err(|e| (e.code(), e.to_string()))
}
