//! OffsetCommit: a group member (or a consumer outside any group) stores its position. The
//! answer is sent only once the offsets are durable.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, ResponseKind};

use crate::broker::Broker;
use crate::groups::offsets::Committed;
use crate::groups::GroupsError;
use crate::limits;
use crate::server::dispatch::Reply;

/// From v9 an unknown group is GROUP_ID_NOT_FOUND; before, ILLEGAL_GENERATION.
const GROUP_ID_NOT_FOUND_VERSION: i16 = 9;

/// Each partition of the request with its error, if it has one of its own.
type Checked = Vec<(OffsetCommitRequestTopic, Vec<Option<ResponseError>>)>;

pub fn handle(broker: &Arc<Broker>, version: i16, request: OffsetCommitRequest) -> Reply {
    let group_id = request.group_id.0.to_string();
    let checked = check_partitions(broker, request.topics);
    if group_id.is_empty() {
        let response = response(checked, Some(ResponseError::InvalidGroupId.code()));
        return Reply::ready(ResponseKind::OffsetCommit(response));
    }
    let broker = broker.clone();
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.map(|id| id.to_string());
    let generation = request.generation_id_or_member_epoch;
    Reply::Deferred(Box::pin(async move {
        let offsets = to_commit(&broker, &checked);
        let commit = broker.groups.commit(
            &group_id,
            &member_id,
            instance_id.as_deref(),
            generation,
            offsets,
        );
        // A disk that stops answering must not hold the request forever; the commit may still
        // become durable, and a client retries a timed-out commit anyway.
        let Ok(result) = tokio::time::timeout(commit_timeout(), commit).await else {
            let timed_out = Some(ResponseError::RequestTimedOut.code());
            return ResponseKind::OffsetCommit(response(checked, timed_out));
        };
        let group_error = match result {
            Ok(()) => None,
            Err(GroupsError::GroupIdNotFound(_)) if version < GROUP_ID_NOT_FOUND_VERSION => {
                Some(ResponseError::IllegalGeneration.code())
            }
            Err(error) => {
                if let GroupsError::Offsets(cause) = &error {
                    tracing::error!(group = %group_id, error = %cause, "cannot commit offsets");
                }
                Some(error.code())
            }
        };
        ResponseKind::OffsetCommit(response(checked, group_error))
    }))
}

fn commit_timeout() -> Duration {
    Duration::from_millis(limits::OFFSET_COMMIT_TIMEOUT_MS)
}

/// Partitions of unknown topics and oversized metadata get their own errors.
fn check_partitions(broker: &Broker, topics: Vec<OffsetCommitRequestTopic>) -> Checked {
    topics
        .into_iter()
        .map(|topic| {
            let known = broker.topics.get(&topic.name.0);
            let errors = topic
                .partitions
                .iter()
                .map(|p| {
                    let exists = known
                        .as_ref()
                        .is_some_and(|t| t.partition(p.partition_index).is_some());
                    let metadata_bytes = p.committed_metadata.as_ref().map_or(0, |m| m.len());
                    if !exists {
                        Some(ResponseError::UnknownTopicOrPartition)
                    } else if metadata_bytes > limits::OFFSET_METADATA_BYTES_MAX {
                        Some(ResponseError::OffsetMetadataTooLarge)
                    } else {
                        None
                    }
                })
                .collect();
            (topic, errors)
        })
        .collect()
}

fn to_commit(broker: &Broker, checked: &Checked) -> Vec<(String, i32, Committed)> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut offsets = Vec::new();
    for (topic, errors) in checked {
        let Some(known) = broker.topics.get(&topic.name.0) else {
            continue;
        };
        for (partition, error) in topic.partitions.iter().zip(errors) {
            if error.is_some() {
                continue;
            }
            let committed = Committed {
                offset: partition.committed_offset,
                leader_epoch: partition.committed_leader_epoch,
                metadata: partition.committed_metadata.as_ref().map(|m| m.to_string()),
                commit_timestamp_ms: now_ms,
                topic_id: known.id,
            };
            offsets.push((
                topic.name.0.to_string(),
                partition.partition_index,
                committed,
            ));
        }
    }
    offsets
}

fn response(checked: Checked, group_error: Option<i16>) -> OffsetCommitResponse {
    let topics = checked
        .into_iter()
        .map(|(topic, errors)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(errors)
                .map(|(p, error)| {
                    let code = error.map(|e| e.code()).or(group_error).unwrap_or(0);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
