//! Reading the consumer protocol's opaque bytes (protocol type "consumer"): the topics a member
//! subscribes to (JoinGroup metadata) and the partitions assigned to it (SyncGroup assignment).
//! The broker only reads them to protect subscribed offsets and to show assignments; bytes it
//! cannot read are treated as empty, never as an error for the group.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::types::with_element_budget;
use kafka_protocol::protocol::Decodable;

use crate::limits;

pub const PROTOCOL_TYPE: &str = "consumer";

/// Highest version of the consumer protocol structures the crate reads; newer versions only add
/// fields at the end, so they are read as this one.
const VERSION_MAX: i16 = 3;

fn decode<T: Decodable>(bytes: &Bytes) -> Option<T> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if version < 0 {
        return None;
    }
    // Client bytes, like a request: their arrays get the same memory budget.
    with_element_budget(limits::DECODED_ARRAYS_BYTES_MAX, || {
        T::decode(&mut buf, version.min(VERSION_MAX)).ok()
    })
}

/// The topics in a member's subscription metadata.
pub fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    decode::<ConsumerProtocolSubscription>(metadata)
        .map(|s| s.topics.into_iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

/// The (topic, partitions) in a member's assignment.
pub fn assigned_partitions(assignment: &Bytes) -> Vec<(String, Vec<i32>)> {
    decode::<ConsumerProtocolAssignment>(assignment)
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .map(|tp| (tp.topic.0.to_string(), tp.partitions))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn with_version<T: Encodable>(message: &T, version: i16) -> Bytes {
        let mut buf = bytes::BytesMut::new();
        buf.put_i16(version);
        message.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn reads_subscriptions_and_assignments() {
        let subscription = ConsumerProtocolSubscription::default().with_topics(vec![
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        ]);
        assert_eq!(
            subscribed_topics(&with_version(&subscription, 1)),
            ["a", "b"]
        );
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(crate::api::topic_name("a"))
                .with_partitions(vec![0, 2]),
        ]);
        assert_eq!(
            assigned_partitions(&with_version(&assignment, 0)),
            vec![("a".to_string(), vec![0, 2])]
        );
        assert!(subscribed_topics(&Bytes::from_static(&[0, 1, 255])).is_empty());
        assert!(assigned_partitions(&Bytes::new()).is_empty());
    }

    #[test]
    fn a_subscription_of_millions_of_empty_names_is_not_read() {
        // 4 MiB of metadata that would decode to 70 MB of names (past the 64 MiB budget).
        let empty = StrBytes::from_static_str("");
        let subscription =
            ConsumerProtocolSubscription::default().with_topics(vec![empty; 2_200_000]);
        assert!(subscribed_topics(&with_version(&subscription, 1)).is_empty());
    }
}
