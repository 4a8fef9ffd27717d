//! ListOffsets: earliest, latest, the offset of the largest timestamp, and by timestamp (the
//! first offset whose record timestamp is >= the one asked, as Kafka: the first batch whose
//! max timestamp reaches it, then the first record in that batch that does).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::broker::Broker;
use crate::partition::{Partition, ReadPlan};
use crate::protocol::record_batch::split_batches;
use crate::segment::canonical::CanonicalBatch;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for requested in &request.topics {
        let topic = broker.topics.get(requested.name.0.as_str());
        let mut partitions = Vec::with_capacity(requested.partitions.len());
        for p in &requested.partitions {
            let response =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition_index))
            else {
                partitions
                    .push(response.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let response = match find(broker, partition, p.timestamp).await {
                Ok((offset, timestamp)) => response
                    .with_offset(offset)
                    .with_timestamp(timestamp)
                    .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
                Err(error) => response.with_error_code(error.code()),
            };
            partitions.push(response);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(requested.name.clone())
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// `(offset, timestamp)` for one partition; `(-1, -1)` when no record matches.
async fn find(
    broker: &Arc<Broker>,
    partition: &Arc<Partition>,
    timestamp: i64,
) -> Result<(i64, i64), ResponseError> {
    let (log_start_offset, high_watermark) = partition.offsets();
    match timestamp {
        LATEST => Ok((high_watermark, -1)),
        EARLIEST => Ok((log_start_offset, -1)),
        EARLIEST_LOCAL => Ok((partition.lock().wal_start_offset(), -1)),
        LATEST_TIERED => {
            let state = partition.lock();
            let tiered = if state.remote.is_empty() {
                -1
            } else {
                state.remote_end_offset() - 1
            };
            Ok((tiered, -1))
        }
        MAX_TIMESTAMP => match partition.locate_max_timestamp() {
            Some((max, plan)) => first_record_at_or_after(broker, plan, max).await,
            None => Ok((-1, -1)),
        },
        t if t >= 0 => match partition.locate_timestamp(t) {
            Some(plan) => first_record_at_or_after(broker, plan, t).await,
            None => Ok((-1, -1)),
        },
        _ => Err(ResponseError::InvalidRequest),
    }
}

/// Reads the batches a plan names (one WAL batch, or a block from the bucket), decodes them
/// off the executor (decompressing within a bound), and finds the first record whose
/// timestamp is >= `timestamp`.
async fn first_record_at_or_after(
    broker: &Arc<Broker>,
    plan: ReadPlan,
    timestamp: i64,
) -> Result<(i64, i64), ResponseError> {
    let bytes = broker.reader.read(&plan).await.map_err(|error| {
        tracing::warn!(%error, "ListOffsets could not read batches");
        ResponseError::KafkaStorageError
    })?;
    let found = tokio::task::spawn_blocking(move || -> Result<Option<(i64, i64)>, String> {
        for (_, batch) in split_batches(&bytes).map_err(|e| e.to_string())? {
            let batch = CanonicalBatch::from_batch(&batch).map_err(|e| e.to_string())?;
            if let Some(record) = batch.records.iter().find(|r| r.timestamp >= timestamp) {
                return Ok(Some((record.offset, record.timestamp)));
            }
        }
        Ok(None)
    })
    .await
    .map_err(|_| ResponseError::UnknownServerError)?;
    match found {
        Ok(found) => Ok(found.unwrap_or((-1, -1))),
        Err(error) => {
            tracing::warn!(%error, "ListOffsets could not decode a batch");
            Err(ResponseError::CorruptMessage)
        }
    }
}
