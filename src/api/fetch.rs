//! Fetch: batches exactly as they were written (offsets assigned, CRCs valid), from the batch
//! index by file position. Long polling waits for `min_bytes` until `max_wait_ms`, waking as
//! soon as a group commit publishes data. Fetch sessions are declined (session id 0), so every
//! request is a full fetch, which KIP-227 allows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind};

use crate::broker::Broker;
use crate::limits;
use crate::partition::{BatchLocation, Partition, ReadPlan};

pub async fn handle(broker: Arc<Broker>, version: i16, request: FetchRequest) -> ResponseKind {
    let wait =
        Duration::from_millis((request.max_wait_ms.max(0) as u64).min(limits::FETCH_WAIT_MS_MAX));
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = (request.max_bytes.max(0) as usize).min(limits::FETCH_RESPONSE_BYTES_MAX);
    let mut replans = 0;
    loop {
        // Registered before reading, so data published between the read and the wait wakes us.
        let arrived = broker.data_arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let (response, bytes, errors) = match read_once(&broker, version, &request, max_bytes).await
        {
            // The indexer deleted a WAL segment between planning and reading: its batches are
            // in the bucket now, and planning again finds them there.
            Pass::SegmentGone(_) if replans < limits::FETCH_REPLANS_MAX => {
                replans += 1;
                continue;
            }
            Pass::SegmentGone(read) | Pass::Read(read) => read,
        };
        let expired = tokio::time::Instant::now() >= deadline;
        if bytes >= min_bytes || errors || expired || broker.shutdown.is_cancelled() {
            return ResponseKind::Fetch(response);
        }
        tokio::select! {
            _ = arrived => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = broker.shutdown.cancelled() => {}
        }
    }
}

/// One pass's answer: the response, the record bytes in it, and whether any partition has an
/// error (which answers at once, as Kafka does).
type Read = (FetchResponse, usize, bool);

enum Pass {
    Read(Read),
    /// A planned WAL segment was deleted before it was read; the answer carries the error.
    SegmentGone(Read),
}

/// One pass over the requested partitions.
async fn read_once(
    broker: &Arc<Broker>,
    version: i16,
    request: &FetchRequest,
    max_bytes: usize,
) -> Pass {
    let mut hot: Vec<(usize, usize, Vec<BatchLocation>)> = Vec::new();
    let mut responses = Vec::with_capacity(request.topics.len());
    let mut budget = max_bytes;
    let mut errors = false;
    for (ti, fetch_topic) in request.topics.iter().enumerate() {
        let topic = resolve(broker, version, fetch_topic);
        let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
        for (pi, fetch_partition) in fetch_topic.partitions.iter().enumerate() {
            let index = fetch_partition.partition;
            let Some(partition) = topic.as_ref().and_then(|t| t.partition(index)) else {
                let error = if version >= 13 {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                partitions.push(empty(index).with_error_code(error.code()));
                errors = true;
                continue;
            };
            let offset = fetch_partition.fetch_offset;
            let limit = (fetch_partition.partition_max_bytes.max(0) as usize).min(budget);
            let first_in_response = budget == max_bytes;
            let mut data = offsets(partition);
            if offset < data.log_start_offset || offset > data.high_watermark {
                partitions.push(data.with_error_code(ResponseError::OffsetOutOfRange.code()));
                errors = true;
                continue;
            }
            match partition.plan_read(offset, limit, first_in_response) {
                ReadPlan::Hot(locations) => {
                    budget =
                        budget.saturating_sub(locations.iter().map(|l| l.bytes as usize).sum());
                    if !locations.is_empty() {
                        hot.push((ti, pi, locations));
                    }
                }
                ReadPlan::Cold { segment, block } => {
                    let read = broker
                        .reader
                        .read_from_bucket(
                            partition,
                            (segment, block),
                            offset,
                            limit,
                            first_in_response,
                        )
                        .await;
                    match read {
                        Ok(records) => {
                            budget = budget.saturating_sub(records.len());
                            data.records = Some(records);
                        }
                        Err(error) => {
                            tracing::warn!(%error, topic = %partition.topic_name, partition = index, "cold read failed; answering KAFKA_STORAGE_ERROR, which the consumer retries");
                            broker.metrics.cold_read_failures.inc();
                            data.error_code = ResponseError::KafkaStorageError.code();
                            errors = true;
                        }
                    }
                }
            }
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_topic_id(fetch_topic.topic_id)
                .with_partitions(partitions),
        );
    }
    let hot_read = read_hot(broker, &hot, &mut responses).await;
    let total = responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
        .sum();
    let read = (
        FetchResponse::default().with_responses(responses),
        total,
        errors || hot_read.is_err(),
    );
    match hot_read {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Pass::SegmentGone(read),
        _ => Pass::Read(read),
    }
}

/// Reads every planned WAL batch in one blocking task and puts them in the response; on a
/// failure, marks the partitions with KAFKA_STORAGE_ERROR and returns the error.
async fn read_hot(
    broker: &Arc<Broker>,
    hot: &[(usize, usize, Vec<BatchLocation>)],
    responses: &mut [FetchableTopicResponse],
) -> std::io::Result<()> {
    if hot.is_empty() {
        return Ok(());
    }
    let wal = broker.wal.clone();
    let locations: Vec<Vec<BatchLocation>> = hot.iter().map(|(_, _, l)| l.clone()).collect();
    let read = tokio::task::spawn_blocking(move || {
        locations
            .iter()
            .map(|l| wal.read(l))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match read {
        Ok(read) => {
            for ((ti, pi, _), bytes) in hot.iter().zip(read) {
                responses[*ti].partitions[*pi].records = Some(bytes);
            }
            Ok(())
        }
        Err(error) => {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, "fetch could not read the WAL");
            }
            for (ti, pi, _) in hot {
                responses[*ti].partitions[*pi].error_code = ResponseError::KafkaStorageError.code();
            }
            Err(error)
        }
    }
}

fn resolve(
    broker: &Broker,
    version: i16,
    fetch_topic: &FetchTopic,
) -> Option<Arc<crate::partition::Topic>> {
    if version >= 13 {
        broker.topics.get_by_id(&fetch_topic.topic_id)
    } else {
        broker.topics.get(fetch_topic.topic.0.as_str())
    }
}

/// A partition's answer with its offsets filled in and no records yet.
fn offsets(partition: &Partition) -> PartitionData {
    let (log_start_offset, high_watermark) = partition.offsets();
    empty(partition.index)
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(high_watermark)
        .with_log_start_offset(log_start_offset)
}

fn empty(index: i32) -> PartitionData {
    // An empty record set, never null: librdkafka rejects a null one ("invalid MessageSetSize").
    PartitionData::default()
        .with_partition_index(index)
        .with_records(Some(Bytes::new()))
        .with_aborted_transactions(Some(Vec::new()))
}
