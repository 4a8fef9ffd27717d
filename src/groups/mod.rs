//! The group coordinator: every consumer group on this broker, its membership and rebalances
//! (`group`), and the committed offsets (`offsets`), durable before OffsetCommit is answered.
//!
//! This broker is the coordinator of every group. Membership lives in memory, as clients expect
//! to rejoin after a coordinator restart; committed offsets live on disk and in the bucket
//! snapshot. One lock guards all groups; it is never held across an await, so a JoinGroup that
//! waits for the rest of its group waits on a channel, not on the lock.

pub mod consumer_protocol;
pub mod group;
pub mod offsets;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::limits;
use group::{Group, GroupSettings, GroupState, JoinOutcome, JoinRequest, Pending, SyncOutcome};
use offsets::{Change, Committed, GroupOffsets, OffsetStore, OffsetsError};

/// Why a group call failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error("group {0} does not exist")]
    GroupIdNotFound(String),
    #[error("group {0} has members")]
    NonEmptyGroup(String),
    #[error("{0}")]
    Rejected(ResponseError),
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
}

impl GroupsError {
    pub fn code(&self) -> i16 {
        let error = match self {
            GroupsError::GroupIdNotFound(_) => ResponseError::GroupIdNotFound,
            GroupsError::NonEmptyGroup(_) => ResponseError::NonEmptyGroup,
            GroupsError::Rejected(error) => *error,
            // Clients retry this one; the commit was not made.
            GroupsError::Offsets(_) => ResponseError::CoordinatorNotAvailable,
        };
        error.code()
    }
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: Option<String>,
    pub members: Vec<MemberDescription>,
}

pub struct Coordinator {
    groups: Mutex<BTreeMap<String, Group>>,
    pub offsets: OffsetStore,
    settings: GroupSettings,
}

impl Coordinator {
    pub fn open(meta_dir: &Path, settings: GroupSettings) -> Result<Coordinator, GroupsError> {
        Ok(Coordinator {
            groups: Mutex::new(BTreeMap::new()),
            offsets: OffsetStore::open(meta_dir)?,
            settings,
        })
    }

    pub fn join(&self, group_id: &str, request: JoinRequest) -> Pending<JoinOutcome> {
        let mut groups = self.lock();
        if !request.member_id.is_empty() && !groups.contains_key(group_id) {
            return Pending::Now(JoinOutcome {
                error: Some(ResponseError::UnknownMemberId),
                generation: -1,
                member_id: request.member_id,
                ..JoinOutcome::default()
            });
        }
        let settings = self.settings;
        let member_id = request.member_id.clone();
        let pending = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id.to_string(), settings))
            .join(request, Instant::now());
        if let Pending::Now(JoinOutcome {
            error: Some(error), ..
        }) = &pending
        {
            rejected("JoinGroup", group_id, &member_id, -1, error);
        }
        pending
    }

    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Pending<SyncOutcome> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Pending::Now(SyncOutcome {
                error: Some(ResponseError::UnknownMemberId),
                ..SyncOutcome::default()
            });
        };
        let pending = group.sync(
            member_id,
            instance_id,
            generation,
            assignments,
            Instant::now(),
        );
        if let Pending::Now(SyncOutcome {
            error: Some(error), ..
        }) = &pending
        {
            rejected("SyncGroup", group_id, member_id, generation, error);
        }
        pending
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let mut groups = self.lock();
        let result = match groups.get_mut(group_id) {
            Some(group) => group.heartbeat(member_id, instance_id, generation, Instant::now()),
            None => Err(ResponseError::UnknownMemberId),
        };
        if let Err(error) = result {
            rejected("Heartbeat", group_id, member_id, generation, &error);
        }
        result
    }

    /// LeaveGroup: one result per (member id, instance id).
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<(), ResponseError>> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return vec![Err(ResponseError::UnknownMemberId); members.len()];
        };
        let now = Instant::now();
        members
            .iter()
            .map(|(member_id, instance_id)| group.leave(member_id, instance_id.as_deref(), now))
            .collect()
    }

    /// OffsetCommit: checks the member and generation, then makes the offsets durable.
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: Vec<(String, i32, Committed)>,
    ) -> Result<(), GroupsError> {
        self.check_commit(group_id, member_id, instance_id, generation)?;
        if offsets.is_empty() {
            return Ok(());
        }
        let change = Change::Commit {
            group: group_id.to_string(),
            offsets,
        };
        self.offsets.apply(change).await?;
        Ok(())
    }

    fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupsError> {
        let mut groups = self.lock();
        let now = Instant::now();
        let result = match groups.get_mut(group_id) {
            Some(group) => group
                .check_commit(member_id, instance_id, generation, now)
                .map_err(GroupsError::Rejected),
            // A group nobody joined: only commits from outside any group (simple consumers,
            // admin tools) create it.
            None if generation < 0 && member_id.is_empty() => Ok(()),
            None => Err(GroupsError::GroupIdNotFound(group_id.to_string())),
        };
        if let Err(error) = &result {
            rejected("OffsetCommit", group_id, member_id, generation, error);
        }
        result
    }

    /// A group's committed offsets.
    pub fn committed(&self, group_id: &str) -> GroupOffsets {
        self.offsets.group(group_id)
    }

    /// Every group: those with members and those that only have committed offsets.
    pub fn list(&self) -> Vec<GroupListing> {
        let mut listed: BTreeMap<String, GroupListing> = self
            .offsets
            .groups()
            .into_iter()
            .map(|group_id| {
                let listing = GroupListing {
                    group_id: group_id.clone(),
                    protocol_type: String::new(),
                    state: GroupState::Empty,
                };
                (group_id, listing)
            })
            .collect();
        for group in self.lock().values() {
            listed.insert(
                group.id.clone(),
                GroupListing {
                    group_id: group.id.clone(),
                    protocol_type: group.protocol_type.clone().unwrap_or_default(),
                    state: group.state,
                },
            );
        }
        listed.into_values().collect()
    }

    /// A group's state and members, or `None` if the broker knows nothing of it.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return self
                .offsets
                .has_group(group_id)
                .then(|| empty_description(group_id));
        };
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let members = group
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect();
        Some(GroupDescription {
            group_id: group.id.clone(),
            state: group.state,
            generation: group.generation,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol,
            leader: group.leader.clone(),
            members,
        })
    }

    /// DeleteGroups: only a group without members; its committed offsets go with it.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), GroupsError> {
        {
            let mut groups = self.lock();
            let known = groups.contains_key(group_id) || self.offsets.has_group(group_id);
            if !known {
                return Err(GroupsError::GroupIdNotFound(group_id.to_string()));
            }
            if let Some(group) = groups.get_mut(group_id) {
                if !group.members.is_empty() {
                    return Err(GroupsError::NonEmptyGroup(group_id.to_string()));
                }
                group.kill();
                groups.remove(group_id);
            }
        }
        let change = Change::DeleteGroup {
            group: group_id.to_string(),
        };
        self.offsets.apply(change).await?;
        Ok(())
    }

    /// OffsetDelete: the partitions whose offsets may go (not subscribed to by a member) are
    /// deleted; the others get GROUP_SUBSCRIBED_TO_TOPIC.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, Option<ResponseError>)>, GroupsError> {
        let subscribed = self.subscribed_topics(group_id)?;
        let mut results = Vec::with_capacity(partitions.len());
        let mut deleted = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.contains(&topic) {
                results.push((
                    topic,
                    partition,
                    Some(ResponseError::GroupSubscribedToTopic),
                ));
            } else {
                deleted.push((topic.clone(), partition));
                results.push((topic, partition, None));
            }
        }
        if !deleted.is_empty() {
            let change = Change::DeleteOffsets {
                group: group_id.to_string(),
                partitions: deleted,
            };
            self.offsets.apply(change).await?;
        }
        Ok(results)
    }

    /// Topics the group's members subscribe to; a non-consumer group with members protects all.
    fn subscribed_topics(&self, group_id: &str) -> Result<Vec<String>, GroupsError> {
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            if self.offsets.has_group(group_id) {
                return Ok(Vec::new());
            }
            return Err(GroupsError::GroupIdNotFound(group_id.to_string()));
        };
        if group.members.is_empty() {
            return Ok(Vec::new());
        }
        if group.protocol_type.as_deref() != Some(consumer_protocol::PROTOCOL_TYPE) {
            return Err(GroupsError::NonEmptyGroup(group_id.to_string()));
        }
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let mut topics: Vec<String> = group
            .members
            .values()
            .flat_map(|m| consumer_protocol::subscribed_topics(&m.metadata(&protocol)))
            .collect();
        topics.sort();
        topics.dedup();
        Ok(topics)
    }

    /// Drives session timeouts and rebalance deadlines until shutdown.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(Duration::from_millis(limits::GROUP_TICK_MS));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => self.tick(),
            }
        }
    }

    /// One pass over every group's timers; groups left empty are forgotten (their committed
    /// offsets stay, and keep them listed).
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.lock();
        for group in groups.values_mut() {
            group.tick(now);
        }
        groups.retain(|_, group| !(group.state == GroupState::Empty && group.is_empty()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Rejections are routine in a rebalance (clients retry or rejoin), so they are debug lines:
/// `STRATA_LOG=info,strata::groups=debug` shows a group's whole conversation.
fn rejected(
    call: &str,
    group_id: &str,
    member_id: &str,
    generation: i32,
    error: &dyn std::fmt::Debug,
) {
    tracing::debug!(group = %group_id, member = %member_id, generation, ?error, "{call} rejected");
}

fn empty_description(group_id: &str) -> GroupDescription {
    GroupDescription {
        group_id: group_id.to_string(),
        state: GroupState::Empty,
        generation: 0,
        protocol_type: String::new(),
        protocol_name: String::new(),
        leader: None,
        members: Vec::new(),
    }
}
