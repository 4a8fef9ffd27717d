//! Consumer groups over HTTP: every group with its state, and one group's members, their
//! assignments, committed offsets and lag per partition.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use super::{AdminState, ApiError, ErrorBody};
use crate::api::offset_fetch::current_offsets;
use crate::broker::Broker;
use crate::groups::consumer_protocol;

#[derive(Serialize, utoipa::ToSchema)]
pub struct GroupSummary {
    group_id: String,
    state: &'static str,
    protocol_type: String,
}

/// Every consumer group: with members, or with committed offsets only.
#[utoipa::path(get, path = "/v1/groups", tag = "groups", operation_id = "list_groups",
    responses((status = 200, description = "OK", body = [GroupSummary])),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AdminState>) -> Result<Json<Vec<GroupSummary>>, ApiError> {
    let broker = state.broker()?;
    let groups = broker
        .groups
        .list()
        .into_iter()
        .map(|g| GroupSummary {
            group_id: g.group_id,
            state: g.state.name(),
            protocol_type: g.protocol_type,
        })
        .collect();
    Ok(Json(groups))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AssignedPartitions {
    topic: String,
    partitions: Vec<i32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    /// Read from the consumer protocol; empty for other protocol types.
    assignment: Vec<AssignedPartitions>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PartitionOffset {
    topic: String,
    partition: i32,
    committed_offset: i64,
    metadata: Option<String>,
    /// The partition's high watermark.
    log_end_offset: i64,
    /// Records between the committed offset and the high watermark.
    lag: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GroupDetail {
    group_id: String,
    state: &'static str,
    generation_id: i32,
    protocol_type: String,
    protocol: String,
    leader: Option<String>,
    members: Vec<Member>,
    offsets: Vec<PartitionOffset>,
}

/// One group: state, members with their assignments, committed offsets and lag.
#[utoipa::path(get, path = "/v1/groups/{group}", tag = "groups", operation_id = "describe_group",
    params(("group" = String, Path, description = "Group id")),
    responses((status = 200, description = "OK", body = GroupDetail),
        (status = 404, description = "No such group", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn describe(
    State(state): State<AdminState>,
    Path(group_id): Path<String>,
) -> Result<Json<GroupDetail>, ApiError> {
    let broker = state.broker()?;
    let group = broker
        .groups
        .describe(&group_id)
        .ok_or_else(|| ApiError::not_found(format!("group {group_id} does not exist")))?;
    let reads_consumer_protocol = group.protocol_type == consumer_protocol::PROTOCOL_TYPE;
    let members = group
        .members
        .into_iter()
        .map(|m| Member {
            assignment: match reads_consumer_protocol {
                true => assignment(&m.assignment),
                false => Vec::new(),
            },
            member_id: m.member_id,
            group_instance_id: m.instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
        })
        .collect();
    Ok(Json(GroupDetail {
        offsets: offsets(broker, &group_id),
        group_id: group.group_id,
        state: group.state.name(),
        generation_id: group.generation,
        protocol_type: group.protocol_type,
        protocol: group.protocol_name,
        leader: group.leader,
        members,
    }))
}

fn assignment(bytes: &bytes::Bytes) -> Vec<AssignedPartitions> {
    consumer_protocol::assigned_partitions(bytes)
        .into_iter()
        .map(|(topic, partitions)| AssignedPartitions { topic, partitions })
        .collect()
}

fn offsets(broker: &Broker, group_id: &str) -> Vec<PartitionOffset> {
    current_offsets(broker, broker.groups.committed(group_id))
        .into_iter()
        .map(|((topic, partition), committed)| {
            let log_end_offset = broker
                .topics
                .get(&topic)
                .and_then(|t| t.partition(partition).map(|p| p.offsets().1))
                .unwrap_or(0);
            PartitionOffset {
                lag: (log_end_offset - committed.offset).max(0),
                committed_offset: committed.offset,
                metadata: committed.metadata,
                log_end_offset,
                topic,
                partition,
            }
        })
        .collect()
}
