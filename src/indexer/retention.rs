//! Retention and deletion in the bucket. Each pass moves log start offsets forward as the
//! topics' `retention.ms` and `retention.bytes` say (whole objects at a time, oldest first),
//! makes them durable, then deletes every object that no live partition references any more:
//! those past retention, below a DeleteRecords offset, or holding only deleted topics.
//!
//! Order: the log start offsets are durable before an object is deleted, and an object is
//! deleted before its catalog entry, so a crash in between leaves an entry whose object no
//! live partition wants, which the next pass removes.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::ObjectStoreExt;
use uuid::Uuid;

use super::IndexerError;
use crate::broker::Broker;
use crate::partition::config;
use crate::partition::{PartitionState, Topic};

/// What one pass did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Swept {
    pub partitions_moved: usize,
    pub objects_deleted: usize,
}

pub async fn enforce(broker: &Arc<Broker>) -> Result<Swept, IndexerError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut moved: Vec<(Uuid, i32, i64)> = Vec::new();
    for topic in broker.topics.list() {
        let (retention_ms, retention_bytes) = limits_of(broker, &topic);
        for partition in &topic.partitions {
            let mut state = partition.lock();
            let start = retained_start(&state, now_ms, retention_ms, retention_bytes);
            if state.move_log_start(start) {
                moved.push((topic.id, partition.index, start));
            }
        }
    }
    let saver = broker.clone();
    let to_save = moved.clone();
    tokio::task::spawn_blocking(move || saver.topics.save_log_starts(&to_save))
        .await
        .map_err(|e| IndexerError::Build {
            id: 0,
            reason: e.to_string(),
        })?
        .map_err(|e| IndexerError::Retention(e.to_string()))?;
    // Objects lose their last reference only through a metadata change (a log start moved, a
    // topic deleted), so the catalog is only walked when the metadata changed since last time.
    let changes = broker.metadata.changes();
    let objects_deleted = if broker.swept_at_changes.swap(changes, Ordering::AcqRel) == changes {
        0
    } else {
        delete_unreferenced(broker)
            .await
            .inspect_err(|_| broker.swept_at_changes.store(u64::MAX, Ordering::Release))?
    };
    Ok(Swept {
        partitions_moved: moved.len(),
        objects_deleted,
    })
}

fn limits_of(broker: &Broker, topic: &Topic) -> (i64, i64) {
    let read = |name: &str| -> i64 {
        topic
            .configs
            .get(name)
            .cloned()
            .unwrap_or_else(|| config::default_value(name, broker.config.message_max_bytes))
            .parse()
            .unwrap_or(-1)
    };
    (read(config::RETENTION_MS), read(config::RETENTION_BYTES))
}

/// The log start offset retention allows: past every remote segment whose newest record is
/// older than `retention_ms`, and past the oldest remote segments while the partition holds
/// more than `retention_bytes`. Data still in the WAL is never dropped here.
fn retained_start(
    state: &PartitionState,
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
) -> i64 {
    let mut start = state.log_start_offset;
    if retention_ms >= 0 {
        for segment in state
            .remote
            .iter()
            .take_while(|s| s.blocks.max_timestamp < now_ms - retention_ms)
        {
            start = start.max(segment.last_offset() + 1);
        }
    }
    if retention_bytes >= 0 {
        let wal_bytes: u64 = state.batches.iter().map(|b| u64::from(b.bytes)).sum();
        let mut total = wal_bytes + state.remote.iter().map(|s| s.blocks.bytes()).sum::<u64>();
        for segment in &state.remote {
            if total <= retention_bytes as u64 {
                break;
            }
            total -= segment.blocks.bytes();
            start = start.max(segment.last_offset() + 1);
        }
    }
    start
}

/// Deletes the objects no live partition references, then their catalog entries.
async fn delete_unreferenced(broker: &Arc<Broker>) -> Result<usize, IndexerError> {
    let referenced: HashSet<Path> = broker
        .topics
        .partitions()
        .iter()
        .flat_map(|p| {
            p.lock()
                .remote
                .iter()
                .map(|s| s.key.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    let catalog_broker = broker.clone();
    let entries = tokio::task::spawn_blocking(move || catalog_broker.catalog.load())
        .await
        .map_err(|e| IndexerError::Retention(e.to_string()))?
        .map_err(|e| IndexerError::Retention(e.to_string()))?;
    let mut deleted = 0;
    for entry in entries {
        let key = Path::from(entry.key.as_str());
        if referenced.contains(&key) {
            continue;
        }
        match broker.object_store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(IndexerError::Upload {
                    key: entry.key.clone(),
                    source,
                })
            }
        }
        broker
            .catalog
            .remove(&entry)
            .map_err(|e| IndexerError::Retention(e.to_string()))?;
        tracing::info!(key = %entry.key, "deleted an object no partition needs any more");
        deleted += 1;
        broker.metrics.objects_deleted.inc();
    }
    Ok(deleted)
}
