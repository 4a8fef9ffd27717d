//! DeleteGroups: removes groups without members, with their committed offsets.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, ResponseKind};

use crate::broker::Broker;
use crate::server::dispatch::Reply;

pub fn handle(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> Reply {
    let broker = broker.clone();
    Reply::Deferred(Box::pin(async move {
        let mut results = Vec::with_capacity(request.groups_names.len());
        for group_id in request.groups_names {
            let code = match broker.groups.delete_group(&group_id.0).await {
                Ok(()) => 0,
                Err(error) => error.code(),
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(code),
            );
        }
        ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
    }))
}
