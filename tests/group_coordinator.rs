//! The group state machine through the coordinator's own API, with tokio's paused clock so
//! session timeouts and rebalance deadlines pass instantly: join, sync, heartbeat expiry,
//! leave, fencing and static membership.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use strata::groups::group::{
    GroupSettings, GroupState, JoinOutcome, JoinRequest, Pending, SyncOutcome,
};
use strata::groups::offsets::Committed;
use strata::groups::{Coordinator, GroupsError};

const SESSION: Duration = Duration::from_secs(10);
const REBALANCE: Duration = Duration::from_secs(30);
const DELAY: Duration = Duration::from_secs(3);

struct Fixture {
    coordinator: Coordinator,
    _dir: tempfile::TempDir,
}

fn coordinator() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let settings = GroupSettings {
        initial_rebalance_delay: DELAY,
    };
    let coordinator = Coordinator::open(dir.path(), settings).unwrap();
    Fixture {
        coordinator,
        _dir: dir,
    }
}

fn request(member_id: &str, instance_id: Option<&str>) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance_id.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        require_known_member_id: true,
    }
}

/// Drives the coordinator's timers while waiting for a pending answer.
async fn settle<T>(c: &Coordinator, pending: Pending<T>) -> T {
    let mut receiver = match pending {
        Pending::Now(outcome) => return outcome,
        Pending::Later(receiver) => receiver,
    };
    for _ in 0..10_000 {
        if let Ok(outcome) = receiver.try_recv() {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.tick();
    }
    panic!("no answer after 1000 s of group time");
}

/// An answer that must be there already (given at once, or sent before the call returned).
fn now<T>(pending: Pending<T>) -> T {
    match pending {
        Pending::Now(outcome) => outcome,
        Pending::Later(mut receiver) => receiver.try_recv().expect("an immediate answer"),
    }
}

/// A new member: MEMBER_ID_REQUIRED first, then a join that waits.
fn join_new(c: &Coordinator, group: &str) -> (String, Pending<JoinOutcome>) {
    let first = now(c.join(group, request("", None)));
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    let id = first.member_id.clone();
    assert!(!id.is_empty());
    (id.clone(), c.join(group, request(&id, None)))
}

fn sync(c: &Coordinator, group: &str, outcome: &JoinOutcome) -> Pending<SyncOutcome> {
    let assignments = outcome
        .members
        .iter()
        .map(|(id, _, _)| (id.clone(), Bytes::from(format!("for {id}"))))
        .collect();
    c.sync(
        group,
        &outcome.member_id,
        None,
        outcome.generation,
        assignments,
    )
}

/// Two dynamic members through join and sync: a Stable group at generation 1.
async fn stable_pair(c: &Coordinator) -> (String, String) {
    let (a, join_a) = join_new(c, "g");
    let (b, join_b) = join_new(c, "g");
    let (ja, jb) = tokio::join!(settle(c, join_a), settle(c, join_b));
    let (leader, follower) = if ja.leader == a { (ja, jb) } else { (jb, ja) };
    let follower_sync = sync(c, "g", &follower);
    now(sync(c, "g", &leader));
    settle(c, follower_sync).await;
    assert_eq!(state(c, "g"), GroupState::Stable);
    (a, b)
}

fn state(c: &Coordinator, group: &str) -> GroupState {
    c.describe(group).unwrap().state
}

#[tokio::test(start_paused = true)]
async fn two_members_join_sync_and_heartbeat() {
    let f = coordinator();
    let c = &f.coordinator;
    let (a, join_a) = join_new(c, "g");
    let (b, join_b) = join_new(c, "g");
    assert_eq!(state(c, "g"), GroupState::PreparingRebalance);
    let (ja, jb) = tokio::join!(settle(c, join_a), settle(c, join_b));
    assert_eq!((ja.error, jb.error), (None, None));
    assert_eq!(ja.generation, 1);
    assert_eq!(jb.generation, 1);
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    let (leader, follower) = if ja.leader == a { (ja, jb) } else { (jb, ja) };
    assert_eq!(leader.members.len(), 2, "the leader gets every member");
    assert!(follower.members.is_empty());
    assert_eq!(state(c, "g"), GroupState::CompletingRebalance);

    // The follower syncs first and waits for the leader's assignment.
    let follower_sync = sync(c, "g", &follower);
    let leader_sync = now(sync(c, "g", &leader));
    assert_eq!(leader_sync.error, None);
    let follower_sync = settle(c, follower_sync).await;
    assert_eq!(follower_sync.error, None);
    assert_eq!(
        follower_sync.assignment,
        Bytes::from(format!("for {}", follower.member_id))
    );
    assert_eq!(state(c, "g"), GroupState::Stable);
    assert_eq!(c.heartbeat("g", &a, None, 1), Ok(()));
    assert_eq!(c.heartbeat("g", &b, None, 1), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_silent_member_expires_and_the_rest_rebalance_without_it() {
    let f = coordinator();
    let c = &f.coordinator;
    let (a, b) = stable_pair(c).await;

    // Only `a` keeps heartbeating; `b` goes silent past its session timeout.
    let mut rebalancing = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.tick();
        if c.heartbeat("g", &a, None, 1) == Err(ResponseError::RebalanceInProgress) {
            rebalancing = true;
            break;
        }
    }
    assert!(rebalancing, "b's session expiry starts a rebalance");
    assert_eq!(
        c.heartbeat("g", &b, None, 1),
        Err(ResponseError::UnknownMemberId)
    );
    let rejoined = settle(c, c.join("g", request(&a, None))).await;
    assert_eq!(rejoined.error, None);
    assert_eq!(rejoined.generation, 2);
    assert_eq!(rejoined.leader, a);
    assert_eq!(rejoined.members.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn generations_and_members_are_fenced_with_kafkas_errors() {
    let f = coordinator();
    let c = &f.coordinator;
    let (a, join_a) = join_new(c, "g");
    let ja = settle(c, join_a).await;
    assert_eq!(ja.generation, 1);
    // CompletingRebalance: commits wait for the assignment.
    let commit = c.commit("g", &a, None, 1, vec![offset("t", 0, 5)]).await;
    assert_rejected(commit, ResponseError::RebalanceInProgress);
    now(sync(c, "g", &ja));

    assert_eq!(
        c.heartbeat("g", &a, None, 0),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        c.heartbeat("g", "nobody", None, 1),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        c.heartbeat("other", &a, None, 1),
        Err(ResponseError::UnknownMemberId)
    );
    let stale = c.commit("g", &a, None, 7, vec![offset("t", 0, 5)]).await;
    assert_rejected(stale, ResponseError::IllegalGeneration);
    // A commit from outside the group while it has members.
    let outside = c.commit("g", "", None, -1, vec![offset("t", 0, 5)]).await;
    assert_rejected(outside, ResponseError::UnknownMemberId);
    c.commit("g", &a, None, 1, vec![offset("t", 0, 5)])
        .await
        .unwrap();
    assert_eq!(c.committed("g")[&("t".to_string(), 0)].offset, 5);

    // A second member starts a rebalance: the old generation can still commit (eager
    // consumers commit before they rejoin), but SyncGroup must wait for the new one.
    let (_b, join_b) = join_new(c, "g");
    assert_eq!(state(c, "g"), GroupState::PreparingRebalance);
    assert_eq!(
        c.heartbeat("g", &a, None, 1),
        Err(ResponseError::RebalanceInProgress)
    );
    c.commit("g", &a, None, 1, vec![offset("t", 0, 6)])
        .await
        .unwrap();
    let early = now(c.sync("g", &a, None, 1, Vec::new()));
    assert_eq!(early.error, Some(ResponseError::RebalanceInProgress));
    let join_a = c.join("g", request(&a, None));
    let (ja, jb) = tokio::join!(settle(c, join_a), settle(c, join_b));
    assert_eq!((ja.generation, jb.generation), (2, 2));

    // A member with other protocols than the group's cannot join.
    let mut odd = request("", None);
    odd.protocols = vec![("roundrobin-only".into(), Bytes::new())];
    odd.require_known_member_id = false;
    let refused = now(c.join("g", odd));
    assert_eq!(
        refused.error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
}

#[tokio::test(start_paused = true)]
async fn leaving_members_rebalance_the_rest_and_the_last_empties_the_group() {
    let f = coordinator();
    let c = &f.coordinator;
    let (a, b) = stable_pair(c).await;

    let left = c.leave("g", &[(b.clone(), None), ("nobody".into(), None)]);
    assert_eq!(left, vec![Ok(()), Err(ResponseError::UnknownMemberId)]);
    assert_eq!(state(c, "g"), GroupState::PreparingRebalance);
    let rejoined = settle(c, c.join("g", request(&a, None))).await;
    assert_eq!(rejoined.generation, 2);
    assert_eq!(rejoined.members.len(), 1);
    assert_eq!(c.leave("g", &[(a.clone(), None)]), vec![Ok(())]);
    assert_eq!(state(c, "g"), GroupState::Empty);
    // An empty group takes commits from outside any group, and can be deleted.
    c.commit("g", "", None, -1, vec![offset("t", 1, 9)])
        .await
        .unwrap();
    c.delete_group("g").await.unwrap();
    assert!(c.committed("g").is_empty());
    assert!(matches!(
        c.delete_group("g").await,
        Err(GroupsError::GroupIdNotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_static_member_rejoins_without_a_rebalance_and_fences_its_old_id() {
    let f = coordinator();
    let c = &f.coordinator;
    let static_join = |member_id: &str| c.join("g", request(member_id, Some("instance-1")));
    let (a, join_a) = join_new(c, "g");
    let join_s = static_join("");
    let (ja, js) = tokio::join!(settle(c, join_a), settle(c, join_s));
    assert_eq!(js.error, None, "static members need no second join");
    let s = js.member_id.clone();
    let (leader, follower) = if ja.leader == a { (ja, js) } else { (js, ja) };
    let follower_sync = sync(c, "g", &follower);
    now(sync(c, "g", &leader));
    settle(c, follower_sync).await;
    let assignment_before = c
        .describe("g")
        .unwrap()
        .members
        .into_iter()
        .find(|m| m.instance_id.as_deref() == Some("instance-1"))
        .unwrap()
        .assignment;
    // Member ids sort "client-..." before "instance-1-...", so the dynamic member leads and
    // the static one is a follower (a leader's rejoin rebalances, by design).
    assert_eq!(leader.member_id, a);
    assert_eq!(follower.member_id, s);

    // The static member restarts: same instance id, no member id.
    let rejoined = now(static_join(""));
    assert_eq!(rejoined.error, None);
    assert_eq!(rejoined.generation, 1, "no rebalance");
    assert_ne!(rejoined.member_id, s);
    assert_eq!(state(c, "g"), GroupState::Stable);
    let synced = now(c.sync("g", &rejoined.member_id, Some("instance-1"), 1, Vec::new()));
    assert_eq!(synced.assignment, assignment_before);
    assert_eq!(
        c.heartbeat("g", &s, Some("instance-1"), 1),
        Err(ResponseError::FencedInstanceId)
    );
    // Leaving by instance id alone works, and then the old instance is unknown.
    assert_eq!(
        c.leave("g", &[(String::new(), Some("instance-1".into()))]),
        vec![Ok(())]
    );
    assert_eq!(
        c.heartbeat("g", &rejoined.member_id, Some("instance-1"), 1),
        Err(ResponseError::UnknownMemberId)
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_rebalance_waits_for_late_joiners() {
    let f = coordinator();
    let c = &f.coordinator;
    let (_a, join_a) = join_new(c, "g");
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.tick();
    // Within the initial delay: the second member makes the first generation, not the second.
    let (_b, join_b) = join_new(c, "g");
    let (ja, jb) = tokio::join!(settle(c, join_a), settle(c, join_b));
    assert_eq!((ja.generation, jb.generation), (1, 1));
    assert_eq!(c.describe("g").unwrap().members.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn offsets_survive_a_reopen_and_list_shows_commit_only_groups() {
    let dir = tempfile::tempdir().unwrap();
    let settings = GroupSettings {
        initial_rebalance_delay: DELAY,
    };
    {
        let c = Coordinator::open(dir.path(), settings).unwrap();
        c.commit("simple", "", None, -1, vec![offset("t", 0, 42)])
            .await
            .unwrap();
    }
    let c = Coordinator::open(dir.path(), settings).unwrap();
    let committed = &c.committed("simple")[&("t".to_string(), 0)];
    assert_eq!(committed.offset, 42);
    assert_eq!(committed.metadata.as_deref(), Some("meta"));
    let listed = c.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].group_id, "simple");
    assert_eq!(listed[0].state, GroupState::Empty);
}

fn offset(topic: &str, partition: i32, offset: i64) -> (String, i32, Committed) {
    let committed = Committed {
        offset,
        leader_epoch: -1,
        metadata: Some("meta".into()),
        commit_timestamp_ms: 0,
        topic_id: uuid::Uuid::nil(),
    };
    (topic.to_string(), partition, committed)
}

fn assert_rejected(result: Result<(), GroupsError>, expected: ResponseError) {
    match result {
        Err(GroupsError::Rejected(error)) => assert_eq!(error, expected),
        other => panic!("expected {expected:?}, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn offset_delete_refuses_topics_a_member_subscribes_to() {
    use bytes::BufMut;
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    let f = coordinator();
    let c = &f.coordinator;
    let mut metadata = bytes::BytesMut::new();
    metadata.put_i16(1);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("subscribed")])
        .encode(&mut metadata, 1)
        .unwrap();
    let mut join = request("", None);
    join.protocols = vec![("range".into(), metadata.freeze())];
    join.require_known_member_id = false;
    let joined = settle(c, c.join("g", join)).await;
    c.commit("g", &joined.member_id, None, 1, vec![offset("other", 0, 1)])
        .await
        .unwrap_err();
    now(sync(c, "g", &joined));
    c.commit(
        "g",
        &joined.member_id,
        None,
        1,
        vec![offset("other", 0, 1), offset("subscribed", 0, 2)],
    )
    .await
    .unwrap();
    let results = c
        .delete_offsets("g", vec![("subscribed".into(), 0), ("other".into(), 0)])
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![
            (
                "subscribed".to_string(),
                0,
                Some(ResponseError::GroupSubscribedToTopic)
            ),
            ("other".to_string(), 0, None),
        ]
    );
    let left: Vec<_> = c.committed("g").into_keys().collect();
    assert_eq!(left, vec![("subscribed".to_string(), 0)]);
}
