//! One classic consumer group: its members and the rebalance state machine (Empty,
//! PreparingRebalance, CompletingRebalance, Stable, Dead), as Kafka's group coordinator runs it.
//!
//! Pure state: no I/O and no locks. JoinGroup and SyncGroup calls that must wait for the rest of
//! the group get a channel that is answered when the rebalance moves on; timeouts are driven by
//! `tick`, which the coordinator calls with the current time.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Kafka's names for the states (DescribeGroups, ListGroups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id is first given one and asked to join again.
    pub require_known_member_id: bool,
}

/// What JoinGroup answers.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members: (member id, instance id, metadata of the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    fn failed(error: ResponseError, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error: Some(error),
            generation: -1,
            member_id: member_id.to_string(),
            ..JoinOutcome::default()
        }
    }
}

/// What SyncGroup answers.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    fn failed(error: ResponseError) -> SyncOutcome {
        SyncOutcome {
            error: Some(error),
            ..SyncOutcome::default()
        }
    }
}

/// An answer now, or one that comes when the rebalance moves on.
pub enum Pending<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    session_deadline: Instant,
    awaiting_join: Option<oneshot::Sender<JoinOutcome>>,
    awaiting_sync: Option<oneshot::Sender<SyncOutcome>>,
}

impl Member {
    fn new(id: String, request: &JoinRequest, now: Instant) -> Member {
        Member {
            id,
            instance_id: request.instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            session_timeout: request.session_timeout,
            rebalance_timeout: request.rebalance_timeout,
            protocols: request.protocols.clone(),
            assignment: Bytes::new(),
            session_deadline: now + request.session_timeout,
            awaiting_join: None,
            awaiting_sync: None,
        }
    }

    fn update(&mut self, request: &JoinRequest, now: Instant) {
        self.client_id = request.client_id.clone();
        self.client_host = request.client_host.clone();
        self.session_timeout = request.session_timeout;
        self.rebalance_timeout = request.rebalance_timeout;
        self.protocols = request.protocols.clone();
        self.heartbeat(now);
    }

    fn heartbeat(&mut self, now: Instant) {
        self.session_deadline = now + self.session_timeout;
    }

    /// The metadata this member sent for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    fn same_protocols(&self, request: &JoinRequest) -> bool {
        self.protocols == request.protocols
    }

    /// A member waiting for the group is kept alive: its client is blocked in the call.
    fn is_waiting(&self) -> bool {
        self.awaiting_join.is_some() || self.awaiting_sync.is_some()
    }

    fn answer_join(&mut self, outcome: JoinOutcome) {
        if let Some(waiter) = self.awaiting_join.take() {
            let _ = waiter.send(outcome);
        }
    }

    fn answer_sync(&mut self, outcome: SyncOutcome) {
        if let Some(waiter) = self.awaiting_sync.take() {
            let _ = waiter.send(outcome);
        }
    }
}

/// Group-wide settings from the broker's configuration.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// Kafka's `group.initial.rebalance.delay.ms`: the first rebalance of an empty group waits
    /// this long for more members (extended by each join, up to the rebalance timeout).
    pub initial_rebalance_delay: Duration,
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    /// By member id.
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or their session ends.
    pending: BTreeMap<String, Instant>,
    /// Static members: `group.instance.id` -> member id.
    instances: BTreeMap<String, String>,
    rebalance_deadline: Option<Instant>,
    /// Set while the first rebalance of an empty group waits for more members: the latest
    /// the wait may end.
    initial_join_until: Option<Instant>,
    settings: GroupSettings,
}

impl Group {
    pub fn new(id: String, settings: GroupSettings) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            instances: BTreeMap::new(),
            rebalance_deadline: None,
            initial_join_until: None,
            settings,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    pub fn join(&mut self, request: JoinRequest, now: Instant) -> Pending<JoinOutcome> {
        if let Err(error) = self.check_protocols(&request) {
            return Pending::Now(JoinOutcome::failed(error, &request.member_id));
        }
        if request.member_id.is_empty() {
            return self.join_unknown(request, now);
        }
        self.join_known(request, now)
    }

    /// A member's protocols must share one with every current member's, of the same type.
    fn check_protocols(&self, request: &JoinRequest) -> Result<(), ResponseError> {
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        if self.members.is_empty() {
            return Ok(());
        }
        // The member itself (by id, or a static member by its instance) is not compared.
        let is_self = |m: &Member| {
            m.id == request.member_id
                || (request.instance_id.is_some() && m.instance_id == request.instance_id)
        };
        let others = self
            .members
            .values()
            .filter(|m| !is_self(m))
            .collect::<Vec<_>>();
        let type_differs = self
            .protocol_type
            .as_ref()
            .is_some_and(|t| *t != request.protocol_type);
        let shared = request
            .protocols
            .iter()
            .any(|(name, _)| others.iter().all(|m| m.supports(name)));
        if type_differs || !shared {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    fn join_unknown(&mut self, request: JoinRequest, now: Instant) -> Pending<JoinOutcome> {
        if self.state == GroupState::Dead {
            return Pending::Now(JoinOutcome::failed(
                ResponseError::CoordinatorNotAvailable,
                "",
            ));
        }
        let member_id = new_member_id(request.instance_id.as_deref(), &request.client_id);
        if let Some(instance) = &request.instance_id {
            if let Some(old) = self.instances.get(instance).cloned() {
                return self.replace_static_member(&old, member_id, request, now);
            }
        } else if request.require_known_member_id {
            self.pending
                .insert(member_id.clone(), now + request.session_timeout);
            return Pending::Now(JoinOutcome::failed(
                ResponseError::MemberIdRequired,
                &member_id,
            ));
        }
        self.add_member(member_id, request, now)
    }

    fn join_known(&mut self, request: JoinRequest, now: Instant) -> Pending<JoinOutcome> {
        let member_id = request.member_id.clone();
        if self.state == GroupState::Dead {
            return Pending::Now(JoinOutcome::failed(
                ResponseError::CoordinatorNotAvailable,
                &member_id,
            ));
        }
        if self.pending.remove(&member_id).is_some() {
            return self.add_member(member_id, request, now);
        }
        if let Err(error) = self.check_member(&member_id, request.instance_id.as_deref()) {
            return Pending::Now(JoinOutcome::failed(error, &member_id));
        }
        let unchanged = self.members[&member_id].same_protocols(&request);
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.member_mut(&member_id).update(&request, now);
                self.wait_for_join(&member_id, now)
            }
            GroupState::CompletingRebalance if unchanged => {
                // The join response was lost; answer it again.
                let outcome = self.join_outcome(&member_id);
                self.member_mut(&member_id).heartbeat(now);
                Pending::Now(outcome)
            }
            GroupState::Stable if unchanged && !is_leader => {
                let outcome = self.join_outcome(&member_id);
                self.member_mut(&member_id).heartbeat(now);
                Pending::Now(outcome)
            }
            _ => {
                self.member_mut(&member_id).update(&request, now);
                self.prepare_rebalance(now);
                self.wait_for_join(&member_id, now)
            }
        }
    }

    fn add_member(
        &mut self,
        member_id: String,
        request: JoinRequest,
        now: Instant,
    ) -> Pending<JoinOutcome> {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.instance_id {
            self.instances.insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member::new(member_id.clone(), &request, now),
        );
        if self.state == GroupState::PreparingRebalance {
            self.extend_initial_join(now);
        } else {
            self.prepare_rebalance(now);
        }
        self.wait_for_join(&member_id, now)
    }

    /// A static member came back under a new member id: the old id is fenced. A follower whose
    /// protocols did not change gets the current generation without a rebalance.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        request: JoinRequest,
        now: Instant,
    ) -> Pending<JoinOutcome> {
        let Some(mut member) = self.members.remove(old_id) else {
            return self.add_member(new_id, request, now);
        };
        member.answer_join(JoinOutcome::failed(ResponseError::FencedInstanceId, old_id));
        member.answer_sync(SyncOutcome::failed(ResponseError::FencedInstanceId));
        let unchanged = member.same_protocols(&request);
        member.id = new_id.clone();
        member.update(&request, now);
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &request.instance_id {
            self.instances.insert(instance.clone(), new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable if unchanged && !was_leader => {
                Pending::Now(self.join_outcome(&new_id))
            }
            GroupState::PreparingRebalance => self.wait_for_join(&new_id, now),
            _ => {
                self.prepare_rebalance(now);
                self.wait_for_join(&new_id, now)
            }
        }
    }

    fn wait_for_join(&mut self, member_id: &str, now: Instant) -> Pending<JoinOutcome> {
        let (sender, receiver) = oneshot::channel();
        self.member_mut(member_id).awaiting_join = Some(sender);
        self.maybe_complete_join(now);
        Pending::Later(receiver)
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                member.answer_sync(SyncOutcome::failed(ResponseError::RebalanceInProgress));
            }
        }
        let rebalance_timeout = self.rebalance_timeout();
        if self.state == GroupState::Empty && !self.settings.initial_rebalance_delay.is_zero() {
            let until = now + rebalance_timeout;
            self.initial_join_until = Some(until);
            self.rebalance_deadline =
                Some((now + self.settings.initial_rebalance_delay).min(until));
        } else {
            self.initial_join_until = None;
            self.rebalance_deadline = Some(now + rebalance_timeout);
        }
        tracing::debug!(group = %self.id, generation = self.generation, from = self.state.name(),
            "preparing a rebalance");
        self.state = GroupState::PreparingRebalance;
    }

    /// While the first rebalance waits for members, each new one extends the wait.
    fn extend_initial_join(&mut self, now: Instant) {
        if let Some(until) = self.initial_join_until {
            self.rebalance_deadline =
                Some((now + self.settings.initial_rebalance_delay).min(until));
        }
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Completes the join phase early once every member has rejoined (not during the initial
    /// delay, which exists to gather members that have not joined yet).
    fn maybe_complete_join(&mut self, now: Instant) {
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        if self.state == GroupState::PreparingRebalance
            && self.initial_join_until.is_none()
            && all_joined
            && self.pending.is_empty()
        {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: members that did not rejoin are removed, a protocol and a leader
    /// are chosen, and every member gets the new generation.
    fn complete_join(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.rebalance_deadline = None;
        self.initial_join_until = None;
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        tracing::debug!(group = %self.id, generation = self.generation, leader = ?self.leader,
            members = self.members.len(), "join phase complete");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let outcome = self.join_outcome(&id);
            let member = self.member_mut(&id);
            member.heartbeat(now);
            member.answer_join(outcome);
        }
    }

    /// The protocol every member supports that most members prefer (Kafka's vote), ties going
    /// to the leader's preference order.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let votes = |candidate: &String| {
            self.members
                .values()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .map(|(name, _)| name)
                        .find(|name| candidates.contains(name))
                        == Some(candidate)
                })
                .count()
        };
        let mut best: Option<(&String, usize)> = None;
        for candidate in &candidates {
            let count = votes(candidate);
            if best.is_none_or(|(_, most)| count > most) {
                best = Some((candidate, count));
            }
        }
        best.map(|(name, _)| name.clone())
    }

    fn join_outcome(&self, member_id: &str) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Pending<SyncOutcome> {
        if let Err(error) = self.check_member(member_id, instance_id) {
            return Pending::Now(SyncOutcome::failed(error));
        }
        if generation != self.generation {
            return Pending::Now(SyncOutcome::failed(ResponseError::IllegalGeneration));
        }
        self.member_mut(member_id).heartbeat(now);
        match self.state {
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                self.member_mut(member_id).awaiting_sync = Some(sender);
                if self.leader.as_deref() == Some(member_id) {
                    self.assign(assignments);
                }
                Pending::Later(receiver)
            }
            GroupState::Stable => Pending::Now(self.sync_outcome(member_id)),
            _ => Pending::Now(SyncOutcome::failed(ResponseError::RebalanceInProgress)),
        }
    }

    /// The leader's assignment: stored, the group is Stable, every waiting member is answered.
    fn assign(&mut self, assignments: Vec<(String, Bytes)>) {
        let mut assignments: BTreeMap<String, Bytes> = assignments.into_iter().collect();
        for member in self.members.values_mut() {
            member.assignment = assignments.remove(&member.id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        tracing::debug!(group = %self.id, generation = self.generation, "assignment stored");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let outcome = self.sync_outcome(&id);
            self.member_mut(&id).answer_sync(outcome);
        }
    }

    fn sync_outcome(&self, member_id: &str) -> SyncOutcome {
        SyncOutcome {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self.members[member_id].assignment.clone(),
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        self.member_mut(member_id).heartbeat(now);
        if self.state == GroupState::PreparingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// LeaveGroup for one member, by member id or (static members) by instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.pending.remove(member_id).is_some() {
            self.maybe_complete_join(now);
            return Ok(());
        }
        let member_id = match instance_id {
            Some(instance) => {
                let known = self
                    .instances
                    .get(instance)
                    .cloned()
                    .ok_or(ResponseError::UnknownMemberId)?;
                if !member_id.is_empty() && member_id != known {
                    return Err(ResponseError::FencedInstanceId);
                }
                known
            }
            None => member_id.to_string(),
        };
        if !self.members.contains_key(&member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        self.member_left(&member_id, now);
        Ok(())
    }

    /// Whether an OffsetCommit with these fields may commit (Kafka's validation for classic
    /// groups). Commits from outside the group (generation -1, no member) need an empty group.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let simple = generation < 0 && member_id.is_empty() && instance_id.is_none();
        if simple {
            return match self.state {
                GroupState::Empty => Ok(()),
                _ => Err(ResponseError::UnknownMemberId),
            };
        }
        self.check_member(member_id, instance_id)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        self.member_mut(member_id).heartbeat(now);
        Ok(())
    }

    /// Unknown members and fenced static instances.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            match self.instances.get(instance) {
                Some(known) if known != member_id => return Err(ResponseError::FencedInstanceId),
                Some(_) => {}
                None => return Err(ResponseError::UnknownMemberId),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    /// Session expiry, expired member-id reservations and the end of a join phase.
    pub fn tick(&mut self, now: Instant) {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.is_waiting() && m.session_deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.member_left(&id, now);
        }
        if self.state == GroupState::PreparingRebalance {
            if self.rebalance_deadline.is_some_and(|d| d <= now) {
                self.complete_join(now);
            } else {
                self.maybe_complete_join(now);
            }
        }
    }

    fn member_left(&mut self, member_id: &str, now: Instant) {
        self.remove_member(member_id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now);
                // With nobody left to wait for, the group is Empty at once.
                self.maybe_complete_join(now);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn remove_member(&mut self, member_id: &str) {
        let Some(mut member) = self.members.remove(member_id) else {
            return;
        };
        tracing::debug!(group = %self.id, member = %member_id, "member removed");
        member.answer_join(JoinOutcome::failed(
            ResponseError::UnknownMemberId,
            member_id,
        ));
        member.answer_sync(SyncOutcome::failed(ResponseError::UnknownMemberId));
        if let Some(instance) = &member.instance_id {
            if self.instances.get(instance).map(String::as_str) == Some(member_id) {
                self.instances.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// Deleted (DeleteGroups): every waiting member is told, nothing joins again under it.
    pub fn kill(&mut self) {
        for member in self.members.values_mut() {
            member.answer_join(JoinOutcome::failed(
                ResponseError::CoordinatorNotAvailable,
                "",
            ));
            member.answer_sync(SyncOutcome::failed(ResponseError::CoordinatorNotAvailable));
        }
        self.members.clear();
        self.state = GroupState::Dead;
    }

    fn member_mut(&mut self, member_id: &str) -> &mut Member {
        self.members
            .get_mut(member_id)
            .expect("callers check membership first")
    }
}

/// Kafka's form: the client id (or the static instance id) and a random suffix.
fn new_member_id(instance_id: Option<&str>, client_id: &str) -> String {
    let prefix = instance_id.unwrap_or(client_id);
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}
