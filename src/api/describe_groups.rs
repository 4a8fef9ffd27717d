//! DescribeGroups: state, protocol and members with their metadata and assignments. An
//! unknown group is "Dead" (and GROUP_ID_NOT_FOUND from v6, as Kafka answers).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};

use super::{str_bytes, AUTHORIZED_OPERATIONS_UNKNOWN};
use crate::broker::Broker;
use crate::groups::group::GroupState;

/// DescribeGroups v6 is the first that reports an unknown group as an error.
const GROUP_ID_NOT_FOUND_VERSION: i16 = 6;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| describe(broker, version, group_id))
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

fn describe(broker: &Broker, version: i16, group_id: GroupId) -> DescribedGroup {
    let described = DescribedGroup::default()
        .with_group_id(group_id.clone())
        .with_authorized_operations(AUTHORIZED_OPERATIONS_UNKNOWN);
    let Some(group) = broker.groups.describe(&group_id.0) else {
        let described = described.with_group_state(str_bytes(GroupState::Dead.name()));
        if version >= GROUP_ID_NOT_FOUND_VERSION {
            return described
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(str_bytes("group not found")));
        }
        return described;
    };
    let members = group
        .members
        .into_iter()
        .map(|m| {
            DescribedGroupMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(
                    m.instance_id
                        .filter(|_| version >= 4)
                        .map(|i| str_bytes(&i)),
                )
                .with_client_id(str_bytes(&m.client_id))
                .with_client_host(str_bytes(&m.client_host))
                .with_member_metadata(m.metadata)
                .with_member_assignment(m.assignment)
        })
        .collect();
    described
        .with_group_state(str_bytes(group.state.name()))
        .with_protocol_type(str_bytes(&group.protocol_type))
        .with_protocol_data(str_bytes(&group.protocol_name))
        .with_members(members)
}
