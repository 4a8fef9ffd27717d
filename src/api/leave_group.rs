//! LeaveGroup: one member (v0-2) or several, by member id or static instance id (v3+).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::str_bytes;
use crate::broker::Broker;

/// LeaveGroup v3 is the first that names several members.
const BATCHED_VERSION: i16 = 3;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        return LeaveGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    if version < BATCHED_VERSION {
        let leaving = [(request.member_id.to_string(), None)];
        let result = broker.groups.leave(&group_id, &leaving).remove(0);
        return LeaveGroupResponse::default().with_error_code(result.err().map_or(0, |e| e.code()));
    }
    let leaving: Vec<(String, Option<String>)> = request
        .members
        .iter()
        .map(|m| {
            let instance_id = m.group_instance_id.as_ref().map(|id| id.to_string());
            (m.member_id.to_string(), instance_id)
        })
        .collect();
    let results = broker.groups.leave(&group_id, &leaving);
    let members = leaving
        .into_iter()
        .zip(results)
        .map(|((member_id, instance_id), result)| {
            MemberResponse::default()
                .with_member_id(str_bytes(&member_id))
                .with_group_instance_id(instance_id.map(|id| str_bytes(&id)))
                .with_error_code(result.err().map_or(0, |e| e.code()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
