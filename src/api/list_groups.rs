//! ListGroups: every group, with members or only committed offsets, filtered by state (v4+)
//! and type (v5+; every group here is "classic").

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::broker::Broker;

const GROUP_TYPE: &str = "classic";

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|t| t.to_lowercase())
        .collect();
    if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE) {
        return ListGroupsResponse::default();
    }
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.name().to_lowercase()))
        .map(|g| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.group_id)))
                .with_protocol_type(str_bytes(&g.protocol_type));
            let listed = match version >= 4 {
                true => listed.with_group_state(str_bytes(g.state.name())),
                false => listed,
            };
            match version >= 5 {
                true => listed.with_group_type(str_bytes(GROUP_TYPE)),
                false => listed,
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
