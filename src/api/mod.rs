//! One file per Kafka API. Each handler turns a decoded request into a response using the
//! partitions, the WAL and the metadata; per-partition problems become per-partition Kafka
//! error codes, never a dropped connection.

pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_user_scram_credentials;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

/// Kafka's "authorized operations not requested / unknown" value.
pub const AUTHORIZED_OPERATIONS_UNKNOWN: i32 = i32::MIN;

pub fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

pub fn topic_name(text: &str) -> TopicName {
    TopicName(str_bytes(text))
}

/// Runs rare, blocking metadata work (a topic change, a producer-id block) that fsyncs a file,
/// without stalling the async executor's other tasks.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}
