//! SyncGroup: the leader hands in the assignment; every member waits for its part.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::groups::group::{Pending, SyncOutcome};
use crate::server::dispatch::Reply;

pub fn handle(broker: &Arc<Broker>, version: i16, request: SyncGroupRequest) -> Reply {
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        return answer(version, failed(ResponseError::InvalidGroupId));
    }
    if let Err(error) = check_protocol(broker, &group_id, &request) {
        return answer(version, failed(error));
    }
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let instance_id = request.group_instance_id.map(|id| id.to_string());
    let pending = broker.groups.sync(
        &group_id,
        &request.member_id,
        instance_id.as_deref(),
        request.generation_id,
        assignments,
    );
    match pending {
        Pending::Now(outcome) => answer(version, outcome),
        Pending::Later(waiting) => Reply::Deferred(Box::pin(async move {
            let outcome = waiting
                .await
                .unwrap_or_else(|_| failed(ResponseError::CoordinatorNotAvailable));
            ResponseKind::SyncGroup(response(version, outcome))
        })),
    }
}

/// SyncGroup v5+ names the protocol type and name the member joined with; they must be the
/// group's.
fn check_protocol(
    broker: &Broker,
    group_id: &str,
    request: &SyncGroupRequest,
) -> Result<(), ResponseError> {
    let Some(group) = broker.groups.describe(group_id) else {
        return Ok(());
    };
    let differs = |asked: &Option<kafka_protocol::protocol::StrBytes>, actual: &str| {
        asked.as_ref().is_some_and(|a| a.as_str() != actual)
    };
    if differs(&request.protocol_type, &group.protocol_type)
        || differs(&request.protocol_name, &group.protocol_name)
    {
        return Err(ResponseError::InconsistentGroupProtocol);
    }
    Ok(())
}

fn failed(error: ResponseError) -> SyncOutcome {
    SyncOutcome {
        error: Some(error),
        ..SyncOutcome::default()
    }
}

fn answer(version: i16, outcome: SyncOutcome) -> Reply {
    Reply::ready(ResponseKind::SyncGroup(response(version, outcome)))
}

fn response(version: i16, outcome: SyncOutcome) -> SyncGroupResponse {
    let response = SyncGroupResponse::default()
        .with_error_code(outcome.error.map_or(0, |e| e.code()))
        .with_assignment(outcome.assignment);
    if version < 5 {
        return response;
    }
    response
        .with_protocol_type(outcome.protocol_type.map(|t| str_bytes(&t)))
        .with_protocol_name(outcome.protocol_name.map(|n| str_bytes(&n)))
}
