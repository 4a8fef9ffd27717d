//! DeleteRecords: moves a partition's log start offset forward (durably). Offsets below it can
//! no longer be fetched; objects in the bucket that hold only such offsets are deleted by the
//! indexer's next retention pass.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::blocking;
use crate::broker::Broker;

/// `offset: -1` means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub fn handle(broker: &Arc<Broker>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut moved = Vec::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for requested in &request.topics {
        let topic = broker.topics.get(requested.name.0.as_str());
        let mut partitions = Vec::with_capacity(requested.partitions.len());
        for p in &requested.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition_index))
            else {
                partitions
                    .push(result.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let mut state = partition.lock();
            let offset = if p.offset == HIGH_WATERMARK {
                state.high_watermark
            } else {
                p.offset
            };
            if offset < 0 || offset > state.high_watermark {
                partitions.push(result.with_error_code(ResponseError::OffsetOutOfRange.code()));
                continue;
            }
            if state.move_log_start(offset) {
                moved.push((partition.topic_id, partition.index, offset));
            }
            partitions.push(result.with_low_watermark(state.log_start_offset));
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(requested.name.clone())
                .with_partitions(partitions),
        );
    }
    if let Err(error) = blocking(|| broker.topics.save_log_starts(&moved)) {
        tracing::error!(%error, "cannot make moved log start offsets durable");
        for partition in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            partition.error_code = ResponseError::KafkaStorageError.code();
        }
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
