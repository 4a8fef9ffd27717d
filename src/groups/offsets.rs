//! Committed offsets, durable before OffsetCommit is answered.
//!
//! Every change is an entry appended to `<meta>/offsets.log` by one writer thread, which takes
//! every change that queued while the previous fsync ran and writes them with one write and one
//! fdatasync (group commit, as the WAL does). Only then are the changes applied to the map that
//! OffsetFetch reads, so nothing is visible before it is durable. When the log grows past
//! `OFFSETS_LOG_COMPACT_BYTES` the thread rewrites it as one entry per group.
//!
//! ```text
//! entry := body_length u32 | crc32c(body) u32 | body (JSON of a `Change`)
//! ```
//! Integers are big-endian. Replay stops at the first incomplete or corrupt entry and cuts it:
//! a torn tail was never acknowledged.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

use crate::limits;
use crate::metadata::sync_dir;

const FILE_NAME: &str = "offsets.log";
const ENTRY_HEADER_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("offsets log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the offsets writer has stopped")]
    WriterGone,
    #[error("the offsets snapshot is unreadable: {0}")]
    CorruptSnapshot(serde_json::Error),
}

/// One committed offset, as OffsetCommit gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
    /// The topic's id when committed: offsets of a deleted topic do not apply to a new topic
    /// of the same name.
    pub topic_id: Uuid,
}

/// A group's committed offsets by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

/// One durable change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Change {
    Commit {
        group: String,
        offsets: Vec<(String, i32, Committed)>,
    },
    DeleteGroup {
        group: String,
    },
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
}

type AllOffsets = BTreeMap<String, GroupOffsets>;

fn apply(all: &mut AllOffsets, change: Change) {
    match change {
        Change::Commit { group, offsets } => {
            let committed = all.entry(group).or_default();
            for (topic, partition, offset) in offsets {
                committed.insert((topic, partition), offset);
            }
        }
        Change::DeleteGroup { group } => {
            all.remove(&group);
        }
        Change::DeleteOffsets { group, partitions } => {
            if let Some(committed) = all.get_mut(&group) {
                for key in partitions {
                    committed.remove(&key);
                }
                if committed.is_empty() {
                    all.remove(&group);
                }
            }
        }
    }
}

/// The whole state as changes, one per group (compaction and the bucket snapshot).
fn as_changes(all: &AllOffsets) -> Vec<Change> {
    all.iter()
        .map(|(group, offsets)| Change::Commit {
            group: group.clone(),
            offsets: offsets
                .iter()
                .map(|((topic, partition), c)| (topic.clone(), *partition, c.clone()))
                .collect(),
        })
        .collect()
}

struct Job {
    change: Change,
    done: oneshot::Sender<Result<(), String>>,
}

pub struct OffsetStore {
    committed: Arc<Mutex<AllOffsets>>,
    jobs: Mutex<mpsc::Sender<Job>>,
    changes: Arc<AtomicU64>,
    changed: Arc<Notify>,
}

impl OffsetStore {
    /// Replays `<dir>/offsets.log` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<OffsetStore, OffsetsError> {
        let path = dir.join(FILE_NAME);
        let io = |source| OffsetsError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let (all, good_bytes) = replay(&path).map_err(io)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        if file.metadata().map_err(io)?.len() > good_bytes {
            tracing::warn!(path = %path.display(), good_bytes, "cutting a torn offsets log tail");
            file.set_len(good_bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let committed = Arc::new(Mutex::new(all));
        let changes = Arc::new(AtomicU64::new(0));
        let changed = Arc::new(Notify::new());
        let (sender, receiver) = mpsc::channel();
        let writer = Writer {
            path: path.clone(),
            dir: dir.to_path_buf(),
            file,
            file_bytes: good_bytes,
            compact_floor_bytes: limits::OFFSETS_LOG_COMPACT_BYTES,
            compact_at_bytes: limits::OFFSETS_LOG_COMPACT_BYTES,
            committed: committed.clone(),
            changes: changes.clone(),
            changed: changed.clone(),
        };
        std::thread::Builder::new()
            .name("strata-offsets".into())
            .spawn(move || writer.run(receiver))
            .map_err(io)?;
        Ok(OffsetStore {
            committed,
            jobs: Mutex::new(sender),
            changes,
            changed,
        })
    }

    /// Makes `change` durable, then visible.
    pub async fn apply(&self, change: Change) -> Result<(), OffsetsError> {
        let (done, result) = oneshot::channel();
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Job { change, done })
            .map_err(|_| OffsetsError::WriterGone)?;
        match result.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(OffsetsError::Io {
                path: PathBuf::from(FILE_NAME),
                source: std::io::Error::other(message),
            }),
            Err(_) => Err(OffsetsError::WriterGone),
        }
    }

    /// A group's committed offsets.
    pub fn group(&self, group: &str) -> GroupOffsets {
        self.lock().get(group).cloned().unwrap_or_default()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.lock().contains_key(group)
    }

    /// How many changes were made durable since start (the bucket snapshot watches it).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Resolves after the next durable change.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Every committed offset, as JSON, for the bucket snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let changes = as_changes(&self.lock());
        serde_json::to_vec(&changes).expect("offsets serialize")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AllOffsets> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes a new data directory's offsets log from a bucket snapshot (disaster recovery).
pub fn restore(dir: &Path, snapshot: &[u8]) -> Result<(), OffsetsError> {
    let changes: Vec<Change> =
        serde_json::from_slice(snapshot).map_err(OffsetsError::CorruptSnapshot)?;
    let path = dir.join(FILE_NAME);
    write_fresh(dir, &path, &changes).map_err(|source| OffsetsError::Io { path, source })?;
    Ok(())
}

/// Reads every good entry; returns the state and the length of the good prefix.
fn replay(path: &Path) -> std::io::Result<(AllOffsets, u64)> {
    let mut all = AllOffsets::new();
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((all, 0)),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut good_bytes = 0u64;
    while let Some((change, bytes)) = read_entry(&mut reader)? {
        apply(&mut all, change);
        good_bytes += bytes;
    }
    Ok((all, good_bytes))
}

/// The next entry, or `None` at the end or at a torn or corrupt entry.
fn read_entry(reader: &mut impl Read) -> std::io::Result<Option<(Change, u64)>> {
    let mut header = [0u8; ENTRY_HEADER_BYTES];
    if !read_full(reader, &mut header)? {
        return Ok(None);
    }
    let length = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    if length > limits::OFFSETS_ENTRY_BYTES_MAX {
        return Ok(None);
    }
    let mut body = vec![0u8; length];
    if !read_full(reader, &mut body)? || crc32c::crc32c(&body) != crc {
        return Ok(None);
    }
    match serde_json::from_slice(&body) {
        Ok(change) => Ok(Some((change, (ENTRY_HEADER_BYTES + length) as u64))),
        Err(_) => Ok(None),
    }
}

/// Fills `buffer`; false if the input ended first.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buffer) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn encode_entry(buffer: &mut Vec<u8>, change: &Change) {
    let body = serde_json::to_vec(change).expect("offset changes serialize");
    buffer.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buffer.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    buffer.extend_from_slice(&body);
}

/// Replaces the log at `path` with `changes`: temporary file, fsync, rename, fsync the directory.
fn write_fresh(dir: &Path, path: &Path, changes: &[Change]) -> std::io::Result<u64> {
    fs::create_dir_all(dir)?;
    let mut buffer = Vec::new();
    for change in changes {
        encode_entry(&mut buffer, change);
    }
    let temporary = dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(&buffer)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    sync_dir(dir)?;
    Ok(buffer.len() as u64)
}

struct Writer {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    file_bytes: u64,
    /// The log is compacted when it passes `compact_at_bytes`, which never drops below this.
    compact_floor_bytes: u64,
    compact_at_bytes: u64,
    committed: Arc<Mutex<AllOffsets>>,
    changes: Arc<AtomicU64>,
    changed: Arc<Notify>,
}

impl Writer {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            while group.len() < limits::OFFSETS_GROUP_COMMIT_MAX {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit(group);
            if self.file_bytes > self.compact_at_bytes {
                self.compact();
            }
        }
    }

    fn commit(&mut self, jobs: Vec<Job>) {
        let mut buffer = Vec::new();
        for job in &jobs {
            encode_entry(&mut buffer, &job.change);
        }
        if let Err(error) = self.write(&buffer) {
            tracing::error!(path = %self.path.display(), %error, "cannot write committed offsets");
            for job in jobs {
                let _ = job.done.send(Err(error.to_string()));
            }
            return;
        }
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            apply(&mut committed, job.change);
            answers.push(job.done);
        }
        drop(committed);
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        for done in answers {
            let _ = done.send(Ok(()));
        }
    }

    /// Appends and syncs; on failure cuts the file back so a later entry never follows garbage.
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<()> {
        let result = self
            .file
            .write_all(buffer)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = result {
            let _ = self
                .file
                .set_len(self.file_bytes)
                .and_then(|()| self.file.sync_all());
            return Err(error);
        }
        self.file_bytes += buffer.len() as u64;
        Ok(())
    }

    fn compact(&mut self) {
        let changes = as_changes(&self.committed.lock().unwrap_or_else(|p| p.into_inner()));
        let reopened = write_fresh(&self.dir, &self.path, &changes).and_then(|bytes| {
            let file = OpenOptions::new().append(true).open(&self.path)?;
            Ok((file, bytes))
        });
        match reopened {
            Ok((file, bytes)) => {
                self.file = file;
                self.file_bytes = bytes;
                // A large live state compacts again only after it doubles.
                self.compact_at_bytes = self.compact_floor_bytes.max(bytes * 2);
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "cannot compact the offsets log");
                self.compact_at_bytes = self.file_bytes * 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64) -> Committed {
        Committed {
            offset,
            leader_epoch: -1,
            metadata: Some("m".into()),
            commit_timestamp_ms: 1,
            topic_id: Uuid::nil(),
        }
    }

    fn commit(group: &str, partition: i32, offset: i64) -> Change {
        Change::Commit {
            group: group.into(),
            offsets: vec![("t".into(), partition, committed(offset))],
        }
    }

    #[tokio::test]
    async fn commits_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        store.apply(commit("g", 0, 5)).await.unwrap();
        store.apply(commit("g", 1, 7)).await.unwrap();
        store.apply(commit("h", 0, 1)).await.unwrap();
        store
            .apply(Change::DeleteGroup { group: "h".into() })
            .await
            .unwrap();
        drop(store);
        let path = dir.path().join(FILE_NAME);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0, 0, 0, 40, 1, 2, 3]).unwrap();
        drop(file);
        let store = OffsetStore::open(dir.path()).unwrap();
        let g = store.group("g");
        assert_eq!(g[&("t".to_string(), 0)].offset, 5);
        assert_eq!(g[&("t".to_string(), 1)].offset, 7);
        assert_eq!(store.groups(), vec!["g".to_string()]);
        store.apply(commit("g", 0, 9)).await.unwrap();
        drop(store);
        let store = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(store.group("g")[&("t".to_string(), 0)].offset, 9);
    }

    #[tokio::test]
    async fn snapshot_restores_into_a_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        store.apply(commit("g", 3, 42)).await.unwrap();
        let snapshot = store.snapshot();
        let fresh = tempfile::tempdir().unwrap();
        restore(fresh.path(), &snapshot).unwrap();
        let restored = OffsetStore::open(fresh.path()).unwrap();
        assert_eq!(restored.group("g"), store.group("g"));
    }

    #[test]
    fn compaction_keeps_the_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (sender, receiver) = mpsc::channel();
        let committed = Arc::new(Mutex::new(AllOffsets::new()));
        let writer = Writer {
            path: path.clone(),
            dir: dir.path().to_path_buf(),
            file: OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap(),
            file_bytes: 0,
            compact_floor_bytes: 1024,
            compact_at_bytes: 1024,
            committed: committed.clone(),
            changes: Arc::default(),
            changed: Arc::default(),
        };
        let mut answers = Vec::new();
        for offset in 0..200 {
            let (done, answer) = oneshot::channel();
            sender
                .send(Job {
                    change: commit("g", (offset % 3) as i32, offset),
                    done,
                })
                .unwrap();
            answers.push(answer);
        }
        drop(sender);
        writer.run(receiver);
        assert!(fs::metadata(&path).unwrap().len() < 2048);
        let (replayed, _) = replay(&path).unwrap();
        assert_eq!(replayed, *committed.lock().unwrap());
        assert_eq!(replayed["g"][&("t".to_string(), 2)].offset, 197);
    }
}
