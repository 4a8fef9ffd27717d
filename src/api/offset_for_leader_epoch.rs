//! OffsetForLeaderEpoch: consumers validate their position after a leader change with it. This
//! broker is the only leader there has ever been, at epoch 0, so epoch 0 ends at the high
//! watermark.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .iter()
        .map(|requested| {
            let topic = broker.topics.get(requested.topic.0.as_str());
            let partitions = requested
                .partitions
                .iter()
                .map(|p| {
                    let result = EpochEndOffset::default().with_partition(p.partition);
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition))
                    else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    if p.current_leader_epoch > 0 {
                        return result.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                    }
                    if p.leader_epoch < 0 {
                        return result.with_leader_epoch(-1).with_end_offset(-1);
                    }
                    result
                        .with_leader_epoch(0)
                        .with_end_offset(partition.offsets().1)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(requested.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
