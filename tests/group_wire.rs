//! Every advertised version of every group API, over TCP against the real binary: a group is
//! joined, synced, heartbeated, committed to, fetched from, listed, described, left and deleted
//! at each version, and the answers are checked field by field.

mod common;

use std::ops::RangeInclusive;

use bytes::Bytes;
use common::*;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest,
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest,
};

fn group(name: &str) -> GroupId {
    GroupId(str_bytes(name))
}

async fn range(conn: &mut Conn, api: ApiKey) -> RangeInclusive<i16> {
    let advertised = conn.call(3, ApiVersionsRequest::default()).await;
    let entry = advertised
        .api_keys
        .iter()
        .find(|a| a.api_key == api as i16)
        .unwrap_or_else(|| panic!("{api:?} is not advertised"));
    entry.min_version..=entry.max_version
}

fn join_request(group_id: &str, member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(str_bytes(member_id))
        .with_protocol_type(str_bytes("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(str_bytes("range"))
            .with_metadata(Bytes::from_static(b"subscription"))])
}

/// Joins `group_id` alone at `version` (a second join when the broker asks for a known
/// member id); returns the member id and generation.
async fn join(conn: &mut Conn, version: i16, group_id: &str) -> (String, i32) {
    let mut answer = conn.call(version, join_request(group_id, "")).await;
    if answer.error_code == ResponseError::MemberIdRequired.code() {
        assert!(version >= 4, "MEMBER_ID_REQUIRED before v4");
        let member_id = answer.member_id.to_string();
        answer = conn.call(version, join_request(group_id, &member_id)).await;
    }
    assert_eq!(answer.error_code, 0, "JoinGroup v{version}: {answer:?}");
    assert_eq!(answer.leader, answer.member_id, "JoinGroup v{version}");
    assert_eq!(answer.members.len(), 1, "JoinGroup v{version}");
    assert_eq!(
        answer.members[0].metadata,
        Bytes::from_static(b"subscription")
    );
    (answer.member_id.to_string(), answer.generation_id)
}

async fn sync(conn: &mut Conn, version: i16, group_id: &str, member: &(String, i32)) -> Bytes {
    let mut request = SyncGroupRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(member.1)
        .with_member_id(str_bytes(&member.0))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(str_bytes(&member.0))
            .with_assignment(Bytes::from_static(b"assignment"))]);
    if version >= 5 {
        request = request
            .with_protocol_type(Some(str_bytes("consumer")))
            .with_protocol_name(Some(str_bytes("range")));
    }
    let answer = conn.call(version, request).await;
    assert_eq!(answer.error_code, 0, "SyncGroup v{version}: {answer:?}");
    answer.assignment
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_api_at_every_advertised_version() {
    let strata = Strata::start_with(&["--group-initial-rebalance-delay-ms", "0"]);
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("t", 2).await;

    for version in range(&mut conn, ApiKey::FindCoordinator).await {
        let request = FindCoordinatorRequest::default();
        let request = match version >= 4 {
            true => request.with_coordinator_keys(vec![str_bytes("a"), str_bytes("b")]),
            false => request.with_key(str_bytes("a")),
        };
        let answer = conn.call(version, request).await;
        let ports: Vec<i32> = match version >= 4 {
            true => answer.coordinators.iter().map(|c| c.port).collect(),
            false => vec![answer.port],
        };
        let expected = vec![i32::from(strata.kafka.port()); if version >= 4 { 2 } else { 1 }];
        assert_eq!(ports, expected, "FindCoordinator v{version}: {answer:?}");
    }

    let mut members = Vec::new();
    for version in range(&mut conn, ApiKey::JoinGroup).await {
        let group_id = format!("join-v{version}");
        let member = join(&mut conn, version, &group_id).await;
        assert_eq!(member.1, 1);
        members.push((group_id, member));
    }
    let (group_id, member) = members.last().cloned().unwrap();
    let syncs = range(&mut conn, ApiKey::SyncGroup).await;
    for version in syncs {
        let assignment = sync(&mut conn, version, &group_id, &member).await;
        assert_eq!(
            assignment,
            Bytes::from_static(b"assignment"),
            "SyncGroup v{version}"
        );
    }
    for version in range(&mut conn, ApiKey::Heartbeat).await {
        let request = HeartbeatRequest::default()
            .with_group_id(group(&group_id))
            .with_generation_id(member.1)
            .with_member_id(str_bytes(&member.0));
        let answer = conn.call(version, request.clone()).await;
        assert_eq!(answer.error_code, 0, "Heartbeat v{version}");
        let stale = conn.call(version, request.with_generation_id(0)).await;
        assert_eq!(
            stale.error_code,
            ResponseError::IllegalGeneration.code(),
            "Heartbeat v{version}"
        );
    }

    for version in range(&mut conn, ApiKey::OffsetCommit).await {
        let offset = 100 + i64::from(version);
        let request = OffsetCommitRequest::default()
            .with_group_id(group(&group_id))
            .with_generation_id_or_member_epoch(member.1)
            .with_member_id(str_bytes(&member.0))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)
                        .with_committed_metadata(Some(str_bytes("m"))),
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(9)
                        .with_committed_offset(offset),
                ])]);
        let answer = conn.call(version, request).await;
        let codes: Vec<i16> = answer.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(codes, [0, unknown], "OffsetCommit v{version}");
    }
    let last_commit = 100 + i64::from(*range(&mut conn, ApiKey::OffsetCommit).await.end());

    for version in range(&mut conn, ApiKey::OffsetFetch).await {
        let (offset, metadata) = if version >= 8 {
            let request =
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(group(&group_id))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(name("t"))
                        .with_partition_indexes(vec![0, 1])]))]);
            let answer = conn.call(version, request).await;
            let partitions = &answer.groups[0].topics[0].partitions;
            assert_eq!(partitions[1].committed_offset, -1, "OffsetFetch v{version}");
            (
                partitions[0].committed_offset,
                partitions[0].metadata.clone(),
            )
        } else {
            let request = OffsetFetchRequest::default()
                .with_group_id(group(&group_id))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(name("t"))
                    .with_partition_indexes(vec![0, 1])]));
            let answer = conn.call(version, request).await;
            let partitions = &answer.topics[0].partitions;
            assert_eq!(partitions[1].committed_offset, -1, "OffsetFetch v{version}");
            (
                partitions[0].committed_offset,
                partitions[0].metadata.clone(),
            )
        };
        assert_eq!(offset, last_commit, "OffsetFetch v{version}");
        assert_eq!(metadata.as_deref(), Some("m"), "OffsetFetch v{version}");
    }

    for version in range(&mut conn, ApiKey::ListGroups).await {
        let mut request = ListGroupsRequest::default();
        if version >= 4 {
            request = request.with_states_filter(vec![str_bytes("Stable")]);
        }
        let answer = conn.call(version, request).await;
        let listed: Vec<String> = answer
            .groups
            .iter()
            .map(|g| g.group_id.to_string())
            .collect();
        assert!(
            listed.contains(&group_id),
            "ListGroups v{version}: {listed:?}"
        );
        if version >= 4 {
            assert!(answer
                .groups
                .iter()
                .all(|g| g.group_state.as_str() == "Stable"));
        }
    }
    for version in range(&mut conn, ApiKey::DescribeGroups).await {
        let request = DescribeGroupsRequest::default()
            .with_groups(vec![group(&group_id), group("no-such-group")]);
        let answer = conn.call(version, request).await;
        let described = &answer.groups[0];
        assert_eq!(
            described.group_state.as_str(),
            "Stable",
            "DescribeGroups v{version}"
        );
        assert_eq!(described.protocol_data.as_str(), "range");
        assert_eq!(
            described.members[0].member_assignment,
            Bytes::from_static(b"assignment")
        );
        assert_eq!(answer.groups[1].group_state.as_str(), "Dead");
    }

    // Leave one group per LeaveGroup version; each is then Empty.
    let leaves = range(&mut conn, ApiKey::LeaveGroup).await;
    for (version, (group_id, member)) in leaves.zip(members.iter()) {
        let request = LeaveGroupRequest::default().with_group_id(group(group_id));
        let request = match version >= 3 {
            true => request.with_members(vec![
                MemberIdentity::default().with_member_id(str_bytes(&member.0))
            ]),
            false => request.with_member_id(str_bytes(&member.0)),
        };
        let answer = conn.call(version, request).await;
        let code = match version >= 3 {
            true => answer.members[0].error_code,
            false => answer.error_code,
        };
        assert_eq!(code, 0, "LeaveGroup v{version}: {answer:?}");
        let described = conn
            .call(
                0,
                DescribeGroupsRequest::default().with_groups(vec![group(group_id)]),
            )
            .await;
        let state = described.groups[0].group_state.to_string();
        assert!(
            ["Empty", "Dead"].contains(&state.as_str()),
            "after LeaveGroup v{version}: {state}"
        );
    }

    // OffsetDelete: the member's metadata is no readable consumer subscription, so it protects
    // no topic and the offset goes (tests/group_coordinator.rs has a subscribed topic refused).
    let request = OffsetDeleteRequest::default()
        .with_group_id(group(&group_id))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(name("t"))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let answer = conn.call(0, request).await;
    assert_eq!(answer.error_code, 0, "OffsetDelete: {answer:?}");
    assert_eq!(answer.topics[0].partitions[0].error_code, 0);

    // DeleteGroups: a group with members is refused, then each version deletes an empty one.
    let refused = conn
        .call(
            0,
            DeleteGroupsRequest::default().with_groups_names(vec![group(&group_id)]),
        )
        .await;
    assert_eq!(
        refused.results[0].error_code,
        ResponseError::NonEmptyGroup.code()
    );
    for version in range(&mut conn, ApiKey::DeleteGroups).await {
        let doomed = format!("delete-v{version}");
        let request = OffsetCommitRequest::default()
            .with_group_id(group(&doomed))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(1)])]);
        let committed = conn.call(8, request).await;
        assert_eq!(committed.topics[0].partitions[0].error_code, 0);
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group(&doomed)]);
        let answer = conn.call(version, request.clone()).await;
        assert_eq!(answer.results[0].error_code, 0, "DeleteGroups v{version}");
        let again = conn.call(version, request).await;
        assert_eq!(
            again.results[0].error_code,
            ResponseError::GroupIdNotFound.code(),
            "DeleteGroups v{version}"
        );
    }
}
