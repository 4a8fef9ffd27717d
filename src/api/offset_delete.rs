//! OffsetDelete: removes a group's committed offsets for partitions none of its members
//! subscribes to.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, ResponseKind};

use super::topic_name;
use crate::broker::Broker;
use crate::server::dispatch::Reply;

pub fn handle(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> Reply {
    let broker = broker.clone();
    Reply::Deferred(Box::pin(async move {
        let partitions = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index))
            })
            .collect();
        let results = match broker
            .groups
            .delete_offsets(&request.group_id.0, partitions)
            .await
        {
            Ok(results) => results,
            Err(error) => {
                let response = OffsetDeleteResponse::default().with_error_code(error.code());
                return ResponseKind::OffsetDelete(response);
            }
        };
        let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
        for (topic, partition, error) in results {
            let answered = OffsetDeleteResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(error.map_or(0, |e| e.code()));
            match topics.last_mut() {
                Some(last) if last.name.0.as_str() == topic => last.partitions.push(answered),
                _ => topics.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(vec![answered]),
                ),
            }
        }
        ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_topics(topics))
    }))
}
