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
        match delete_object(broker, &key).await {
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

/// Deletes an object from the bucket. From a `file://` bucket the object is first moved out
/// (to the staging folder, on the same file system) and its blocks freed in steps, as the WAL
/// frees a trimmed segment: one unlink of a whole object holds the file system's journal long
/// enough to stall the WAL's fsyncs. Where it cannot be moved, the store deletes it.
async fn delete_object(broker: &Arc<Broker>, key: &Path) -> object_store::Result<()> {
    let local = broker
        .local_objects
        .as_ref()
        .and_then(|local| local.path_to_filesystem(key).ok());
    if let Some(path) = local {
        let staging = broker.config.data_dir.join(super::STAGING_DIR);
        let moved = tokio::task::spawn_blocking(move || remove_in_steps(&path, &staging)).await;
        match moved {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            _ => {}
        }
    }
    broker.object_store.delete(key).await
}

/// Moves `path` into `staging` (durably out of the bucket), frees its blocks in steps, then
/// deletes it. A crash in between leaves a file in the staging folder, which start-up empties.
fn remove_in_steps(path: &std::path::Path, staging: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(staging)?;
    let parked = staging.join(format!("deleted-{}", Uuid::new_v4().simple()));
    std::fs::rename(path, &parked)?;
    if let Some(folder) = path.parent() {
        crate::metadata::sync_dir(folder)?;
    }
    let file = std::fs::OpenOptions::new().write(true).open(&parked)?;
    let length = file.metadata()?.len();
    crate::wal::shrink_in_steps(&file, length);
    drop(file);
    std::fs::remove_file(&parked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_moved_out_of_the_bucket_then_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("bucket/v2/segments/x");
        std::fs::create_dir_all(&folder).unwrap();
        let object = folder.join("1.seg");
        let length = 2 * crate::limits::WAL_RELEASE_STEP_BYTES + 1;
        std::fs::write(&object, vec![1u8; length as usize]).unwrap();
        let staging = dir.path().join("tmp");

        remove_in_steps(&object, &staging).unwrap();
        assert!(!object.exists());
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        let again = remove_in_steps(&object, &staging).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::NotFound);
    }
}
