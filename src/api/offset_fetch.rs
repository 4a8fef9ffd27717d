//! OffsetFetch: a group's committed offsets, for some partitions or all (null topics), for one
//! group (v1-7) or several (v8+). A partition without a committed offset answers -1.

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::groups::offsets::{Committed, GroupOffsets};

/// A topic's partitions with their committed offsets, if any.
type TopicAnswer = (String, Vec<(i32, Option<Committed>)>);

/// OffsetFetch v8 is the first that asks for several groups.
const BATCHED_VERSION: i16 = 8;

/// (topic, partitions) asked for; `None` asks for every committed offset.
type Wanted = Option<Vec<(String, Vec<i32>)>>;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= BATCHED_VERSION {
        let groups = request
            .groups
            .into_iter()
            .map(|g| group(broker, g))
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = fetch(broker, &request.group_id.0, wanted)
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let (offset, epoch, metadata) = fields(committed);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(metadata)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

fn group(broker: &Broker, request: OffsetFetchRequestGroup) -> OffsetFetchResponseGroup {
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = fetch(broker, &request.group_id.0, wanted)
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let (offset, epoch, metadata) = fields(committed);
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(metadata)
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponseGroup::default()
        .with_group_id(request.group_id)
        .with_topics(topics)
}

fn fields(committed: Option<Committed>) -> (i64, i32, Option<kafka_protocol::protocol::StrBytes>) {
    match committed {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            Some(str_bytes(c.metadata.as_deref().unwrap_or(""))),
        ),
        None => (-1, -1, Some(str_bytes(""))),
    }
}

/// The committed offsets asked for, by topic. Offsets committed for a topic that has since
/// been deleted (or deleted and created again) are not answered.
fn fetch(broker: &Broker, group_id: &str, wanted: Wanted) -> Vec<TopicAnswer> {
    let committed = current_offsets(broker, broker.groups.committed(group_id));
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|p| (p, committed.get(&(topic.clone(), p)).cloned()))
                    .collect();
                (topic, found)
            })
            .collect(),
        None => {
            let mut by_topic: Vec<TopicAnswer> = Vec::new();
            for ((topic, partition), c) in committed {
                match by_topic.last_mut() {
                    Some((last, partitions)) if *last == topic => {
                        partitions.push((partition, Some(c)))
                    }
                    _ => by_topic.push((topic, vec![(partition, Some(c))])),
                }
            }
            by_topic
        }
    }
}

/// Drops offsets whose topic no longer exists under the id they were committed for.
pub fn current_offsets(broker: &Broker, committed: GroupOffsets) -> GroupOffsets {
    committed
        .into_iter()
        .filter(|((topic, _), c)| broker.topics.get(topic).is_some_and(|t| t.id == c.topic_id))
        .collect()
}
