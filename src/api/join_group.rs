//! JoinGroup: a member joins (or rejoins) a classic group and waits until the rebalance has
//! gathered the group; the leader gets every member's metadata to assign partitions from.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, ResponseKind};

use super::str_bytes;
use crate::broker::Broker;
use crate::groups::group::{JoinOutcome, JoinRequest, Pending};
use crate::limits;
use crate::server::dispatch::Reply;

/// JoinGroup v4 is the first at which a new member is given an id and asked to join again.
const REQUIRE_KNOWN_MEMBER_ID_VERSION: i16 = 4;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: JoinGroupRequest,
    client_id: String,
    client_host: String,
) -> Reply {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let session_timeout_ms = request.session_timeout_ms;
    if group_id.is_empty() {
        return answer(version, failed(ResponseError::InvalidGroupId, member_id));
    }
    let session_range = limits::GROUP_SESSION_TIMEOUT_MIN_MS..=limits::GROUP_SESSION_TIMEOUT_MAX_MS;
    if !session_range.contains(&session_timeout_ms) {
        return answer(
            version,
            failed(ResponseError::InvalidSessionTimeout, member_id),
        );
    }
    // v0 has no rebalance timeout: the session timeout is used for both, as Kafka does.
    let rebalance_timeout_ms = match request.rebalance_timeout_ms {
        ms if version >= 1 && ms > 0 => ms,
        _ => session_timeout_ms,
    };
    let join = JoinRequest {
        member_id,
        instance_id: request.group_instance_id.map(|id| id.to_string()),
        client_id,
        client_host,
        session_timeout: millis(session_timeout_ms),
        rebalance_timeout: millis(rebalance_timeout_ms),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= REQUIRE_KNOWN_MEMBER_ID_VERSION,
    };
    match broker.groups.join(&group_id, join) {
        Pending::Now(outcome) => answer(version, outcome),
        Pending::Later(waiting) => Reply::Deferred(Box::pin(async move {
            let outcome = waiting
                .await
                .unwrap_or_else(|_| failed(ResponseError::CoordinatorNotAvailable, String::new()));
            ResponseKind::JoinGroup(response(version, outcome))
        })),
    }
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn failed(error: ResponseError, member_id: String) -> JoinOutcome {
    JoinOutcome {
        error: Some(error),
        generation: -1,
        member_id,
        ..JoinOutcome::default()
    }
}

fn answer(version: i16, outcome: JoinOutcome) -> Reply {
    Reply::ready(ResponseKind::JoinGroup(response(version, outcome)))
}

fn response(version: i16, outcome: JoinOutcome) -> JoinGroupResponse {
    let members = outcome
        .members
        .into_iter()
        .map(|(member_id, instance_id, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&member_id))
                .with_group_instance_id(instance_id.filter(|_| version >= 5).map(|i| str_bytes(&i)))
                .with_metadata(metadata)
        })
        .collect();
    // Before v7 the protocol name is not nullable.
    let protocol_name = match outcome.protocol_name {
        None if version >= 7 => None,
        name => Some(str_bytes(&name.unwrap_or_default())),
    };
    JoinGroupResponse::default()
        .with_error_code(outcome.error.map_or(0, |e| e.code()))
        .with_generation_id(outcome.generation)
        .with_protocol_type(outcome.protocol_type.map(|t| str_bytes(&t)))
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&outcome.leader))
        .with_member_id(str_bytes(&outcome.member_id))
        .with_members(members)
}
