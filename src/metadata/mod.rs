//! Durable broker metadata on local disk: the cluster id, topics with their ids, partition counts
//! and configs, and the producer-id reservation. One JSON document, replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory), so a crash leaves the old or the new
//! document, never a mix. Changes are rare (topic admin, one write per block of producer ids).
//! The catalog of uploaded objects lives beside it (`catalog`); the SCRAM credentials of the
//! Kafka listener's users are part of the document (`users`).

pub mod catalog;
pub mod snapshot;
pub mod users;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits;

const FILE_NAME: &str = "metadata.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("catalog entry {path} is corrupt: {reason}")]
    CorruptCatalog { path: PathBuf, reason: String },
    #[error("metadata file {path} has format version {found}; this broker reads version {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetadataDoc {
    pub format_version: u32,
    pub cluster_id: String,
    /// Producer ids below this may have been handed out; the next start begins here.
    pub producer_id_reserved_until: i64,
    pub topics: Vec<TopicRecord>,
    /// Unique to this data directory: object keys carry it, so a broker rebuilt from the bucket
    /// on a new disk never overwrites the objects of the one before.
    #[serde(default = "new_incarnation")]
    pub incarnation: String,
    /// Log start offsets moved by retention or DeleteRecords, by `log_start_key`.
    #[serde(default)]
    pub log_start_offsets: BTreeMap<String, i64>,
    /// SCRAM credentials by user and mechanism (salted and hashed only; see `users`).
    #[serde(default)]
    pub users: BTreeMap<String, users::UserCredentials>,
}

/// The key of a partition in `MetadataDoc::log_start_offsets`.
pub fn log_start_key(topic_id: &Uuid, partition: i32) -> String {
    format!("{topic_id}/{partition}")
}

struct ProducerIds {
    next: i64,
    reserved_until: i64,
}

pub struct Metadata {
    dir: PathBuf,
    doc: Mutex<MetadataDoc>,
    /// Counts changes, so the bucket snapshot is uploaded only when something changed.
    changes: AtomicU64,
    /// Notified after every change (wakes the snapshot upload).
    changed: tokio::sync::Notify,
    producer_ids: Mutex<ProducerIds>,
}

impl Metadata {
    /// Opens the metadata in `dir`, creating a new cluster id on first start.
    pub fn open(dir: &Path) -> Result<Metadata, MetadataError> {
        let io = |source| MetadataError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(FILE_NAME);
        let doc = match fs::read(&path) {
            Ok(bytes) => {
                let doc: MetadataDoc =
                    serde_json::from_slice(&bytes).map_err(|source| MetadataError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                if doc.format_version != FORMAT_VERSION {
                    return Err(MetadataError::Version {
                        path,
                        found: doc.format_version,
                    });
                }
                doc
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetadataDoc {
                format_version: FORMAT_VERSION,
                cluster_id: new_cluster_id(),
                producer_id_reserved_until: 0,
                topics: Vec::new(),
                incarnation: new_incarnation(),
                log_start_offsets: BTreeMap::new(),
                users: BTreeMap::new(),
            },
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        let producer_ids = ProducerIds {
            next: doc.producer_id_reserved_until,
            reserved_until: doc.producer_id_reserved_until,
        };
        let metadata = Metadata {
            dir: dir.to_path_buf(),
            doc: Mutex::new(doc),
            changes: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            producer_ids: Mutex::new(producer_ids),
        };
        metadata.update(|_| ())?;
        Ok(metadata)
    }

    /// Whether `dir` holds a broker's metadata (a data directory that was in use).
    pub fn exists(dir: &Path) -> bool {
        dir.join(FILE_NAME).exists()
    }

    /// Writes `doc` as the metadata of a new data directory (restoring from a snapshot).
    pub fn create(dir: &Path, doc: &MetadataDoc) -> Result<(), MetadataError> {
        fs::create_dir_all(dir).map_err(|source| MetadataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        write_doc(dir, doc)
    }

    /// A copy of the document, for the bucket snapshot.
    pub fn doc(&self) -> MetadataDoc {
        self.lock_doc().clone()
    }

    /// How many changes have been made since this process opened the metadata.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Resolves after the next change.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    pub fn cluster_id(&self) -> String {
        self.lock_doc().cluster_id.clone()
    }

    pub fn incarnation(&self) -> String {
        self.lock_doc().incarnation.clone()
    }

    pub fn topics(&self) -> Vec<TopicRecord> {
        self.lock_doc().topics.clone()
    }

    /// Applies `change` and makes the result durable before returning. On failure the
    /// in-memory document is left as it was.
    pub fn update<F: FnOnce(&mut MetadataDoc)>(&self, change: F) -> Result<(), MetadataError> {
        let mut doc = self.lock_doc();
        let mut next = doc.clone();
        change(&mut next);
        write_doc(&self.dir, &next)?;
        *doc = next;
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Hands out a producer id that was never handed out before, not even before a restart:
    /// ids are reserved in durable blocks, and a restart starts after the last reserved block.
    pub fn next_producer_id(&self) -> Result<i64, MetadataError> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.next >= ids.reserved_until {
            let reserved_until = ids.next + limits::PRODUCER_ID_BLOCK;
            self.update(|doc| doc.producer_id_reserved_until = reserved_until)?;
            ids.reserved_until = reserved_until;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    fn lock_doc(&self) -> std::sync::MutexGuard<'_, MetadataDoc> {
        self.doc.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Replaces the metadata file atomically: temporary file, fsync, rename, fsync the directory.
fn write_doc(dir: &Path, doc: &MetadataDoc) -> Result<(), MetadataError> {
    let path = dir.join(FILE_NAME);
    let temporary = dir.join(format!("{FILE_NAME}.tmp"));
    let io = |source| MetadataError::Io {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(doc).expect("metadata serializes");
    // Owner-only: the document holds the users' SCRAM keys (hashed, but still a target for
    // an offline password guess).
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&temporary, &path).map_err(io)?;
    sync_dir(dir).map_err(io)
}

/// Makes a directory's entries (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn new_incarnation() -> String {
    Uuid::new_v4().simple().to_string()
}

fn new_cluster_id() -> String {
    // Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 characters);
    // the UUID's simple form is as unique and as printable.
    Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let metadata = Metadata::open(dir.path()).unwrap();
            for _ in 0..5 {
                assert!(seen.insert(metadata.next_producer_id().unwrap()));
            }
        }
    }

    #[test]
    fn cluster_id_and_topics_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let metadata = Metadata::open(dir.path()).unwrap();
        let cluster_id = metadata.cluster_id();
        let record = TopicRecord {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs: BTreeMap::new(),
        };
        metadata
            .update(|doc| doc.topics.push(record.clone()))
            .unwrap();
        drop(metadata);
        let metadata = Metadata::open(dir.path()).unwrap();
        assert_eq!(metadata.cluster_id(), cluster_id);
        assert_eq!(metadata.topics(), vec![record]);
    }
}
