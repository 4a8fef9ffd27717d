//! DescribeCluster: this single broker, which is also the controller.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, AUTHORIZED_OPERATIONS_UNKNOWN};
use crate::broker::Broker;

/// Kafka's endpoint type for brokers (2 is controllers, which this broker does not list apart).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn handle(broker: &Arc<Broker>, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(&broker.cluster_id))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_UNKNOWN);
    if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes(
                "only broker endpoints (type 1) are described",
            )));
    }
    let (host, port) = &broker.advertised;
    let me = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.config.node_id))
        .with_host(str_bytes(host))
        .with_port(*port);
    response.with_brokers(vec![me])
}
