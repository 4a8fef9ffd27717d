//! The topic registry: names and ids to partitions, kept in step with the durable metadata.
//! A `Topic` is immutable; a change (new partitions, new configs) replaces it, sharing the
//! partitions that did not change, so readers never see a half-made topic.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use kafka_protocol::error::ResponseError;
use uuid::Uuid;

use super::config::{self, ConfigError};
use super::Partition;
use crate::limits;
use crate::metadata::{log_start_key, Metadata, MetadataError, TopicRecord};

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic `{0}` already exists")]
    AlreadyExists(String),
    #[error("topic `{0}` does not exist")]
    NotFound(String),
    #[error("invalid topic name `{0}`: {1}")]
    InvalidName(String, &'static str),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("replication factor {0} is not possible on a single broker")]
    InvalidReplicationFactor(i16),
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] MetadataError),
}

impl TopicError {
    /// The Kafka error code a client understands.
    pub fn code(&self) -> i16 {
        let error = match self {
            TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
            TopicError::NotFound(_) => ResponseError::UnknownTopicOrPartition,
            TopicError::InvalidName(..) => ResponseError::InvalidTopicException,
            TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
            TopicError::Storage(_) => ResponseError::KafkaStorageError,
        };
        error.code()
    }
}

#[derive(Debug)]
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    /// Configs set explicitly; the rest are defaults.
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    /// The largest batch this topic accepts.
    pub fn max_message_bytes(&self, broker_default: i32) -> i32 {
        self.configs
            .get(config::MAX_MESSAGE_BYTES)
            .and_then(|v| v.parse().ok())
            .unwrap_or(broker_default)
    }

    fn record(&self) -> TopicRecord {
        TopicRecord {
            name: self.name.to_string(),
            id: self.id,
            partitions: self.partitions.len() as i32,
            configs: self.configs.clone(),
        }
    }
}

#[derive(Default)]
struct Maps {
    by_name: HashMap<Arc<str>, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

impl Maps {
    fn insert(&mut self, topic: Arc<Topic>) {
        self.by_id.insert(topic.id, topic.clone());
        self.by_name.insert(topic.name.clone(), topic);
    }
}

pub struct Topics {
    metadata: Arc<Metadata>,
    maps: RwLock<Maps>,
}

impl Topics {
    /// The registry as the durable metadata describes it.
    pub fn load(metadata: Arc<Metadata>) -> Topics {
        let mut maps = Maps::default();
        let log_starts = metadata.doc().log_start_offsets;
        for record in metadata.topics() {
            let name: Arc<str> = record.name.as_str().into();
            let partitions = (0..record.partitions)
                .map(|i| {
                    let partition = Arc::new(Partition::new(name.clone(), record.id, i));
                    if let Some(&start) = log_starts.get(&log_start_key(&record.id, i)) {
                        partition.lock().move_log_start(start);
                    }
                    partition
                })
                .collect();
            maps.insert(Arc::new(Topic {
                name,
                id: record.id,
                partitions,
                configs: record.configs,
            }));
        }
        Topics {
            metadata,
            maps: RwLock::new(maps),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().by_name.get(name).cloned()
    }

    pub fn get_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.read().by_id.get(id).cloned()
    }

    /// Every topic, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.read().by_name.values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// Every partition of every topic.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.read()
            .by_id
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }

    /// Creates a topic and makes it durable. `validate_only` checks without creating.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_name(name)?;
        validate_partition_count(partitions)?;
        config::validate_all(&configs)?;
        let mut maps = self.write();
        if maps.by_name.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        let name: Arc<str> = name.into();
        let id = Uuid::new_v4();
        let partitions = (0..partitions)
            .map(|i| Arc::new(Partition::new(name.clone(), id, i)))
            .collect();
        let topic = Arc::new(Topic {
            name,
            id,
            partitions,
            configs,
        });
        if validate_only {
            return Ok(topic);
        }
        let record = topic.record();
        self.metadata.update(|doc| doc.topics.push(record))?;
        maps.insert(topic.clone());
        Ok(topic)
    }

    /// Deletes a topic: it disappears from metadata at once, its partitions refuse appends,
    /// and WAL replay skips its entries from then on.
    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let mut maps = self.write();
        let topic = maps
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound(name.to_string()))?;
        let prefix = format!("{}/", topic.id);
        self.metadata.update(|doc| {
            doc.topics.retain(|t| t.id != topic.id);
            doc.log_start_offsets
                .retain(|key, _| !key.starts_with(&prefix));
        })?;
        maps.by_name.remove(name);
        maps.by_id.remove(&topic.id);
        topic.partitions.iter().for_each(|p| p.mark_deleted());
        Ok(topic)
    }

    /// Makes moved log start offsets durable: `(topic id, partition, log start offset)`.
    pub fn save_log_starts(&self, moved: &[(Uuid, i32, i64)]) -> Result<(), TopicError> {
        if moved.is_empty() {
            return Ok(());
        }
        self.metadata.update(|doc| {
            for (topic_id, partition, start) in moved {
                doc.log_start_offsets
                    .insert(log_start_key(topic_id, *partition), *start);
            }
        })?;
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        let mut maps = self.write();
        let topic = maps
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound(name.to_string()))?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic `{name}` has {current} partitions; the new count {count} must be larger"
            )));
        }
        validate_partition_count(count)?;
        let mut partitions = topic.partitions.clone();
        partitions.extend(
            (current..count).map(|i| Arc::new(Partition::new(topic.name.clone(), topic.id, i))),
        );
        let grown = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            configs: topic.configs.clone(),
        });
        if validate_only {
            return Ok(grown);
        }
        let record = grown.record();
        self.metadata.update(|doc| replace_record(doc, record))?;
        maps.insert(grown.clone());
        Ok(grown)
    }

    /// Replaces a topic's explicit configs.
    pub fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        config::validate_all(&configs)?;
        let mut maps = self.write();
        let topic = maps
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound(name.to_string()))?;
        let changed = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            configs,
        });
        let record = changed.record();
        self.metadata.update(|doc| replace_record(doc, record))?;
        maps.insert(changed.clone());
        Ok(changed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn replace_record(doc: &mut crate::metadata::MetadataDoc, record: TopicRecord) {
    if let Some(existing) = doc.topics.iter_mut().find(|t| t.id == record.id) {
        *existing = record;
    }
}

/// Kafka's rules: 1 to 249 characters from `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let invalid = |why| Err(TopicError::InvalidName(name.to_string(), why));
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > limits::TOPIC_NAME_BYTES_MAX {
        return invalid("it is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

fn validate_partition_count(count: i32) -> Result<(), TopicError> {
    if !(1..=limits::PARTITIONS_PER_TOPIC_MAX).contains(&count) {
        return Err(TopicError::InvalidPartitions(format!(
            "partition count {count} is outside 1..={}",
            limits::PARTITIONS_PER_TOPIC_MAX
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> (tempfile::TempDir, Topics) {
        let dir = tempfile::tempdir().unwrap();
        let metadata = Arc::new(Metadata::open(dir.path()).unwrap());
        (dir, Topics::load(metadata))
    }

    #[test]
    fn create_grow_delete_and_reload() {
        let (dir, topics) = topics();
        let created = topics.create("orders", 2, BTreeMap::new(), false).unwrap();
        assert!(matches!(
            topics.create("orders", 2, BTreeMap::new(), false),
            Err(TopicError::AlreadyExists(_))
        ));
        topics.add_partitions("orders", 5, false).unwrap();
        topics.create("gone", 1, BTreeMap::new(), false).unwrap();
        topics.delete("gone").unwrap();
        drop(topics);
        let reloaded = Topics::load(Arc::new(Metadata::open(dir.path()).unwrap()));
        let orders = reloaded.get("orders").unwrap();
        assert_eq!(orders.id, created.id, "topic ids are stable");
        assert_eq!(orders.partitions.len(), 5);
        assert!(reloaded.get("gone").is_none());
    }

    #[test]
    fn validate_only_creates_nothing() {
        let (_dir, topics) = topics();
        topics.create("dry", 1, BTreeMap::new(), true).unwrap();
        assert!(topics.get("dry").is_none());
    }

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_name("a.b_c-D9").is_ok());
        for bad in ["", ".", "..", "has space", "slash/", &"x".repeat(250)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partition_counts_and_configs_are_checked() {
        let (_dir, topics) = topics();
        assert_eq!(
            topics
                .create("t", 0, BTreeMap::new(), false)
                .unwrap_err()
                .code(),
            37
        );
        let configs = BTreeMap::from([("retention.ms".to_string(), "nope".to_string())]);
        assert_eq!(
            topics.create("t", 1, configs, false).unwrap_err().code(),
            40
        );
        topics.create("t", 3, BTreeMap::new(), false).unwrap();
        assert_eq!(topics.add_partitions("t", 2, false).unwrap_err().code(), 37);
    }
}
