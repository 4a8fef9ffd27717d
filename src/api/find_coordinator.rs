//! FindCoordinator, single key (v0-3) and batched (v4+): this broker coordinates every group.
//! Transaction coordinators are refused: transactions are not implemented.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::broker::Broker;

/// FindCoordinator's `key_type` for consumer groups.
const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| coordinator(broker, key, request.key_type))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let found = coordinator(broker, request.key, request.key_type);
    let response = FindCoordinatorResponse::default()
        .with_error_code(found.error_code)
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port);
    if version >= 1 {
        return response.with_error_message(found.error_message);
    }
    response
}

fn coordinator(broker: &Broker, key: StrBytes, key_type: i8) -> Coordinator {
    let found = Coordinator::default().with_key(key);
    if key_type != KEY_TYPE_GROUP {
        return found
            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            .with_error_message(Some(str_bytes("transactions are not supported")))
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    let (host, port) = &broker.advertised;
    found
        .with_node_id(BrokerId(broker.config.node_id))
        .with_host(str_bytes(host))
        .with_port(*port)
}
