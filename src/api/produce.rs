//! Produce: reads each batch's header only (CRC-32C, magic, record count), hands the batches as
//! formed to the WAL, and answers once the WAL says they are durable. Records are never decoded
//! here and the producer's bytes are never re-encoded; only `base_offset` changes, in the WAL.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use super::str_bytes;
use crate::broker::Broker;
use crate::limits;
use crate::partition::Topic;
use crate::protocol::record_batch::{split_batches, BatchError, BatchHeader};
use crate::server::dispatch::Reply;
use crate::wal::AppendReply;

const QUEUE_FULL: &str = "the WAL's queue stayed full for the request's timeout";

/// A partition's answer still waiting for the WAL: (topic index, partition index, receiver).
type Waiting = (usize, usize, AppendReply);

pub async fn handle(broker: &Arc<Broker>, version: i16, request: ProduceRequest) -> Reply {
    let acks = request.acks;
    let timeout = Duration::from_millis(
        (request.timeout_ms.max(0) as u64).clamp(1, limits::PRODUCE_TIMEOUT_MS_MAX),
    );
    // Queueing for the WAL and waiting for durability share the request's timeout.
    let deadline = tokio::time::Instant::now() + timeout;
    pace(broker, timeout).await;
    let mut response = ProduceResponse::default();
    let mut waiting: Vec<Waiting> = Vec::new();
    let refusal = refuse_whole_request(&request);
    for (ti, topic_data) in request.topic_data.into_iter().enumerate() {
        let topic = resolve(broker, version, &topic_data);
        let mut topic_response = TopicProduceResponse::default()
            .with_name(topic_data.name.clone())
            .with_topic_id(topic_data.topic_id);
        for (pi, partition_data) in topic_data.partition_data.into_iter().enumerate() {
            let index = partition_data.index;
            let outcome = match (refusal, &topic) {
                (Some(error), _) => Err((error, None)),
                (None, None) => Err((unknown_topic(version), None)),
                (None, Some(topic)) => check(broker, topic, partition_data),
            };
            let queued = match outcome {
                Ok((partition, batches)) => {
                    tokio::time::timeout_at(deadline, broker.wal.append(partition, batches))
                        .await
                        .map_err(|_| (ResponseError::RequestTimedOut, Some(QUEUE_FULL.into())))
                }
                Err(refused) => Err(refused),
            };
            let partition_response = match queued {
                Ok(receiver) => {
                    waiting.push((ti, pi, receiver));
                    pending_response(index)
                }
                Err((error, message)) => error_response(index, error.code(), message),
            };
            topic_response.partition_responses.push(partition_response);
        }
        response.responses.push(topic_response);
    }
    if acks == 0 {
        // The appends go ahead; the client asked for no answer.
        return Reply::None;
    }
    Reply::Deferred(Box::pin(finish(response, waiting, deadline)))
}

/// Holds the request, for at most half its timeout (the rest is the WAL's) and
/// `PRODUCE_PACE_WAIT_MS_MAX`, while more WAL than the search lag budget waits for indexing:
/// not yet in the hot search index, or sealed and not yet uploaded (never less than a segment:
/// one may always wait, and the active segment never counts, or a budget smaller than a
/// segment would hold every request until the next roll). The second counts only while
/// uploads succeed: during a bucket outage the WAL takes produce up to its disk budget, as
/// before, instead of every request waiting for uploads that cannot happen.
async fn pace(broker: &Broker, timeout: Duration) {
    let lag_bytes_max = broker.config.search_lag_bytes_effective();
    if lag_bytes_max == 0 {
        return;
    }
    let upload_bytes_max = lag_bytes_max.max(broker.wal.segment_bytes());
    let behind = || {
        broker.search.hot.lag_bytes(&broker.wal) > lag_bytes_max
            || (broker.uploads_succeeding.load(Ordering::Acquire)
                && broker.wal.sealed_bytes() > upload_bytes_max)
    };
    let wait = (timeout / 2).min(Duration::from_millis(limits::PRODUCE_PACE_WAIT_MS_MAX));
    let until = tokio::time::Instant::now() + wait;
    if broker.search.hot.pace(behind, until).await {
        broker.metrics.produce_paced.inc();
    }
}

/// Problems that refuse every partition of the request.
fn refuse_whole_request(request: &ProduceRequest) -> Option<ResponseError> {
    if !matches!(request.acks, -1..=1) {
        return Some(ResponseError::InvalidRequiredAcks);
    }
    if request.transactional_id.is_some() {
        // Transactions are not implemented; refusing is better than storing half of one.
        return Some(ResponseError::TransactionalIdAuthorizationFailed);
    }
    None
}

fn resolve(broker: &Broker, version: i16, topic_data: &TopicProduceData) -> Option<Arc<Topic>> {
    if version >= 13 {
        broker.topics.get_by_id(&topic_data.topic_id)
    } else {
        broker.topics.get(topic_data.name.0.as_str())
    }
}

fn unknown_topic(version: i16) -> ResponseError {
    if version >= 13 {
        ResponseError::UnknownTopicId
    } else {
        ResponseError::UnknownTopicOrPartition
    }
}

type Checked = (Arc<crate::partition::Partition>, Vec<(BatchHeader, Bytes)>);

/// Checks one partition's records: the partition exists, every batch is a valid v2 batch of
/// at most `max.message.bytes`, and none is transactional or a control batch.
fn check(
    broker: &Broker,
    topic: &Topic,
    data: PartitionProduceData,
) -> Result<Checked, (ResponseError, Option<String>)> {
    let partition = topic
        .partition(data.index)
        .ok_or((ResponseError::UnknownTopicOrPartition, None))?;
    let records = data.records.unwrap_or_default();
    if records.is_empty() {
        return Err((
            ResponseError::InvalidRecord,
            Some("the records field holds no batch".into()),
        ));
    }
    let batches = split_batches(&records).map_err(|e| (batch_error(&e), Some(e.to_string())))?;
    let max_bytes = topic.max_message_bytes(broker.config.message_max_bytes) as usize;
    for (header, _) in &batches {
        if header.total_bytes() > max_bytes {
            let message = format!(
                "batch of {} bytes exceeds max.message.bytes {max_bytes}",
                header.total_bytes()
            );
            return Err((ResponseError::MessageTooLarge, Some(message)));
        }
        if header.is_transactional() || header.is_control() {
            let message = "transactional and control batches are not supported".to_string();
            return Err((ResponseError::InvalidRecord, Some(message)));
        }
    }
    Ok((partition.clone(), batches))
}

fn batch_error(error: &BatchError) -> ResponseError {
    match error {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::RecordCount { .. } | BatchError::UnknownCompression(_) => {
            ResponseError::InvalidRecord
        }
        BatchError::Truncated(..)
        | BatchError::InvalidLength(_)
        | BatchError::CrcMismatch { .. }
        | BatchError::OffsetRange(_) => ResponseError::CorruptMessage,
    }
}

fn pending_response(index: i32) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
}

fn error_response(index: i32, code: i16, message: Option<String>) -> PartitionProduceResponse {
    pending_response(index)
        .with_error_code(code)
        .with_log_start_offset(-1)
        .with_error_message(message.as_deref().map(str_bytes))
}

/// Waits for every append (up to the request's timeout) and fills in the answers.
async fn finish(
    mut response: ProduceResponse,
    waiting: Vec<Waiting>,
    deadline: tokio::time::Instant,
) -> ResponseKind {
    for (ti, pi, receiver) in waiting {
        let slot = &mut response.responses[ti].partition_responses[pi];
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(Ok(appended))) => {
                slot.base_offset = appended.base_offset;
                slot.log_start_offset = appended.log_start_offset;
            }
            Ok(Ok(Err(error))) => {
                slot.error_code = error.code();
                slot.error_message = Some(str_bytes(&error.to_string()));
            }
            Ok(Err(_)) => slot.error_code = ResponseError::KafkaStorageError.code(),
            Err(_) => slot.error_code = ResponseError::RequestTimedOut.code(),
        }
    }
    ResponseKind::Produce(response)
}
