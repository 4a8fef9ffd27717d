//! The WalIndexer: takes sealed WAL segments, oldest first, and for each one builds a V2 object
//! from the batches as the produce path formed them, uploads it, records it in the catalog,
//! attaches it to the partitions (their cold tier), and only then deletes the WAL segment.
//!
//! Invariant: a WAL segment is deleted only after its object is fully uploaded and the catalog
//! entry that points to it is durable. A failed step leaves everything in place and is retried
//! with backoff; produce keeps writing to the WAL meanwhile.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

pub mod retention;

use crate::background;
use crate::broker::Broker;
use crate::faults::Point;
use crate::limits;
use crate::metadata::catalog::CatalogEntry;
use crate::partition::{BatchLocation, RemoteSegment, Topics};
use crate::protocol::record_batch::BatchHeader;
use crate::segment::canonical::CanonicalBatch;
use crate::segment::index::{IndexBuilder, IndexFiles};
use crate::segment::object::{Footer, ObjectBuilder};

#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    #[error("reading WAL segment {id}: {source}")]
    Wal {
        id: u64,
        source: crate::wal::WalError,
    },
    #[error("building the object for WAL segment {id}: {reason}")]
    Build { id: u64, reason: String },
    #[error("uploading {key}: {source}")]
    Upload {
        key: String,
        source: object_store::Error,
    },
    #[error("reading the staged object for {key}: {source}")]
    Staged { key: String, source: std::io::Error },
    #[error("recording {key} in the catalog: {source}")]
    Catalog {
        key: String,
        source: crate::metadata::MetadataError,
    },
    #[error("retention: {0}")]
    Retention(String),
    #[error("deleting WAL segment {id}: {source}")]
    Trim { id: u64, source: std::io::Error },
    #[error(transparent)]
    Injected(#[from] crate::faults::FaultError),
}

/// Where objects and their indexes are built before upload, under the data directory. Only
/// the indexer writes here, so whatever a crash left behind is removed at start-up.
pub const STAGING_DIR: &str = "tmp";

/// What one run uploaded.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    pub wal_segment_id: u64,
    pub key: String,
    pub bytes: u64,
    pub partitions: usize,
}

/// The object key of a WAL segment's object. The data directory's incarnation keeps a broker
/// rebuilt on a new disk (whose WAL ids start again) from overwriting older objects.
pub fn object_key(incarnation: &str, wal_segment_id: u64) -> Path {
    Path::from(format!(
        "v2/segments/{incarnation}/{wal_segment_id:020}.seg"
    ))
}

/// Runs in the background until shutdown: indexes every sealed segment, retrying failures with
/// growing, jittered waits.
pub async fn run(broker: Arc<Broker>) {
    let mut backoff = Duration::from_millis(limits::INDEXER_BACKOFF_MIN_MS);
    loop {
        let sealed = broker.wal.segment_sealed();
        tokio::pin!(sealed);
        sealed.as_mut().enable();
        let wait = match run_once(&broker).await {
            Ok(_) => {
                backoff = Duration::from_millis(limits::INDEXER_BACKOFF_MIN_MS);
                Duration::from_millis(limits::INDEXER_POLL_MS)
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "indexer step failed; the WAL keeps the data");
                let wait = jitter(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(limits::INDEXER_BACKOFF_MAX_MS));
                wait
            }
        };
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = &mut sealed => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What one indexer run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Run {
    pub uploaded: Vec<Uploaded>,
    pub retention: retention::Swept,
}

/// Indexes every sealed segment now, oldest first (stopping at the first failure), then
/// applies retention.
pub async fn run_once(broker: &Arc<Broker>) -> Result<Run, IndexerError> {
    let _one_at_a_time = broker.indexer_lock.lock().await;
    let uploaded = index_sealed(broker).await?;
    let retention = retention::enforce(broker).await?;
    Ok(Run {
        uploaded,
        retention,
    })
}

/// Seals the active WAL segment, then does what `run_once` does, reporting what this call
/// uploaded (the background run cannot take the freshly sealed segment in between).
pub async fn seal_and_run(broker: &Arc<Broker>) -> Result<Run, IndexerError> {
    let _one_at_a_time = broker.indexer_lock.lock().await;
    broker.wal.roll().await;
    let uploaded = index_sealed(broker).await?;
    let retention = retention::enforce(broker).await?;
    Ok(Run {
        uploaded,
        retention,
    })
}

async fn index_sealed(broker: &Arc<Broker>) -> Result<Vec<Uploaded>, IndexerError> {
    let mut uploaded = Vec::new();
    for id in broker.wal.sealed_segments() {
        let done = index_segment(broker, id).await.inspect_err(|_| {
            broker.metrics.upload_failures.inc();
            broker.uploads_succeeding.store(false, Ordering::Release);
        })?;
        broker.uploads_succeeding.store(true, Ordering::Release);
        // Produce requests held for the WAL's backlog look again.
        broker.search.hot.notify_progress();
        uploaded.extend(done);
    }
    Ok(uploaded)
}

async fn index_segment(broker: &Arc<Broker>, id: u64) -> Result<Option<Uploaded>, IndexerError> {
    let key = object_key(&broker.incarnation, id);
    let committed = broker
        .catalog
        .get(id)
        .map_err(|source| IndexerError::Catalog {
            key: key.to_string(),
            source,
        })?;
    if let Some(entry) = committed {
        // Uploaded and recorded before a restart; only the trim was left to do.
        attach(&broker.topics, &entry);
        trim(broker, id, &entry.footer).await?;
        return Ok(None);
    }
    // The hot search index of the segment, once it holds every record, is the object's index:
    // waiting for it costs less than indexing every record a second time.
    let wait = Duration::from_millis(limits::INDEXER_HOT_INDEX_WAIT_MS);
    let hot = broker.search.hot.covered_index(id, wait).await;
    let staged = build(broker, id, hot).await?;
    if staged.footer.partitions.is_empty() {
        // Only batches of deleted topics: nothing to keep.
        trim(broker, id, &staged.footer).await?;
        return Ok(None);
    }
    put_object(broker, &key, &staged).await?;
    broker
        .faults
        .pass(Point::IndexerAfterUploadBeforeCatalog)
        .await?;
    let Staged { bytes, footer, .. } = staged;
    let entry = CatalogEntry {
        incarnation: broker.incarnation.clone(),
        wal_segment_id: id,
        key: key.to_string(),
        object_bytes: bytes,
        footer,
    };
    let catalog_entry = entry.clone();
    let broker_for_commit = broker.clone();
    tokio::task::spawn_blocking(move || broker_for_commit.catalog.commit(&catalog_entry))
        .await
        .map_err(|e| IndexerError::Build {
            id,
            reason: e.to_string(),
        })?
        .map_err(|source| IndexerError::Catalog {
            key: key.to_string(),
            source,
        })?;
    broker
        .faults
        .pass(Point::IndexerAfterCatalogBeforeTrim)
        .await?;
    attach(&broker.topics, &entry);
    trim(broker, id, &entry.footer).await?;
    broker.metrics.objects_uploaded.inc();
    broker.metrics.bytes_uploaded.inc_by(bytes);
    tracing::info!(wal_segment = id, %key, bytes, partitions = entry.footer.partitions.len(), "segment uploaded");
    Ok(Some(Uploaded {
        wal_segment_id: id,
        key: key.to_string(),
        bytes,
        partitions: entry.footer.partitions.len(),
    }))
}

/// A sealed segment's object, staged in a temporary file until it is uploaded.
struct Staged {
    file: tempfile::NamedTempFile,
    bytes: u64,
    footer: Footer,
}

/// Packs a sealed segment's live batches into an object, per partition in offset order, in a
/// temporary file. Memory is bounded by a batch and the index writer's budget, not by the
/// segment: the batches are read back from the WAL one at a time, in partition order.
async fn build(
    broker: &Arc<Broker>,
    id: u64,
    hot: Option<PathBuf>,
) -> Result<Staged, IndexerError> {
    let broker = broker.clone();
    background::run("strata-indexer", move || build_blocking(&broker, id, hot))
        .await
        .map_err(|e| IndexerError::Build {
            id,
            reason: e.to_string(),
        })?
}

/// Where an object's search index comes from.
enum ObjectIndex {
    /// The segment's covered hot index, in this directory.
    Hot(PathBuf),
    /// Built here, from the records.
    Built(Box<IndexBuilder>),
}

/// With `hot`, the directory of the segment's covered hot index, that index is packed into the
/// object as it is; otherwise the records are indexed here.
fn build_blocking(broker: &Broker, id: u64, hot: Option<PathBuf>) -> Result<Staged, IndexerError> {
    let failed = |reason: String| IndexerError::Build { id, reason };
    let partitions = locate_batches(broker, id)?;
    let staging = broker.config.data_dir.join(STAGING_DIR);
    std::fs::create_dir_all(&staging).map_err(|e| failed(e.to_string()))?;
    let file = tempfile::NamedTempFile::new_in(&staging).map_err(|e| failed(e.to_string()))?;
    let sink = std::io::BufWriter::with_capacity(
        limits::SEGMENT_BLOCK_BYTES,
        Trickle::new(file.as_file(), broker.local_objects.is_some()),
    );
    let mut builder = ObjectBuilder::new(sink).map_err(|e| failed(e.to_string()))?;
    let mut index = match hot {
        Some(dir) => ObjectIndex::Hot(dir),
        None => ObjectIndex::Built(Box::new(
            IndexBuilder::new(&staging).map_err(|e| failed(e.to_string()))?,
        )),
    };
    for ((topic_id, partition), locations) in partitions {
        builder.start_partition(topic_id, partition);
        for location in locations {
            let batch = broker
                .wal
                .read(std::slice::from_ref(&location))
                .map_err(|e| failed(format!("reading a batch back: {e}")))?;
            let header = BatchHeader::parse(&batch).map_err(|e| failed(e.to_string()))?;
            builder
                .add_batch(&header, &batch)
                .map_err(|e| failed(e.to_string()))?;
            if let ObjectIndex::Built(index) = &mut index {
                index_batch(index, &topic_id, partition, &header, &batch)
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
    }
    let packed_hot = matches!(index, ObjectIndex::Hot(_));
    let files = match index {
        ObjectIndex::Built(index) => index.finish(),
        ObjectIndex::Hot(dir) => IndexFiles::committed(&dir),
    };
    builder
        .add_index_files(&files.map_err(|e| failed(e.to_string()))?)
        .map_err(|e| failed(e.to_string()))?;
    if packed_hot {
        broker.metrics.hot_indexes_packed.inc();
    }
    let (_, footer) = builder.finish().map_err(|e| failed(e.to_string()))?;
    let bytes = file
        .as_file()
        .metadata()
        .map_err(|e| failed(e.to_string()))?
        .len();
    Ok(Staged {
        file,
        bytes,
        footer,
    })
}

/// A staged object's file that asks the kernel to write its pages out every
/// `STAGING_WRITEBACK_BYTES`, and waits for each step to reach the disk before starting the one
/// after next. Left to itself the kernel writes a whole object out in one burst, and every WAL
/// fsync meanwhile waits behind it (a disk flush covers everything written); with at most two
/// steps in flight, a WAL fsync waits behind a few MiB at most, and the indexer writes no faster
/// than the disk takes it. Only for an object that stays on this disk (a `file://` bucket): one
/// that is uploaded and deleted need never reach the disk at all.
struct Trickle<'a> {
    file: &'a std::fs::File,
    /// Whether to write out in steps at all.
    stepping: bool,
    written: u64,
    /// Where the last step started writing out (`None` before the first).
    last_step: Option<u64>,
    started: u64,
}

impl<'a> Trickle<'a> {
    fn new(file: &'a std::fs::File, stepping: bool) -> Trickle<'a> {
        Trickle {
            file,
            stepping,
            written: 0,
            last_step: None,
            started: 0,
        }
    }

    /// Starts writeback of what was written since the last call, then waits for the previous
    /// step's pages. A failure only means the kernel writes the pages later, as it would anyway
    /// (the object is fsynced before it counts).
    fn step(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.file.as_raw_fd();
            let length = (self.written - self.started) as libc::off64_t;
            // SAFETY: plain integers; the descriptor is open for as long as `self.file`.
            unsafe {
                libc::sync_file_range(
                    fd,
                    self.started as libc::off64_t,
                    length,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
                if let Some(previous) = self.last_step {
                    libc::sync_file_range(
                        fd,
                        previous as libc::off64_t,
                        (self.started - previous) as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
            }
        }
        self.last_step = Some(self.started);
        self.started = self.written;
    }
}

impl std::io::Write for Trickle<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        self.written += written as u64;
        if self.stepping && self.written - self.started >= limits::STAGING_WRITEBACK_BYTES {
            self.step();
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where each live partition's batches lie in a sealed segment, in offset order (one scan,
/// which also checks every entry).
fn locate_batches(
    broker: &Broker,
    id: u64,
) -> Result<BTreeMap<(Uuid, i32), Vec<BatchLocation>>, IndexerError> {
    let mut partitions: BTreeMap<(Uuid, i32), Vec<BatchLocation>> = BTreeMap::new();
    broker
        .wal
        .scan_sealed(id, |entry| {
            let live = broker
                .topics
                .get_by_id(&entry.topic_id)
                .is_some_and(|t| t.partition(entry.partition).is_some());
            if !live {
                return;
            }
            partitions
                .entry((entry.topic_id, entry.partition))
                .or_default()
                .push(entry.location(id));
        })
        .map_err(|source| IndexerError::Wal { id, source })?;
    Ok(partitions)
}

/// Decodes a batch as formed into `CanonicalBatch` and indexes its records. A batch whose
/// records cannot be decoded (it passed its CRC, so the producer wrote it that way) is stored
/// and served all the same, only left out of the index: it must never stop uploads.
fn index_batch(
    index: &mut IndexBuilder,
    topic_id: &Uuid,
    partition: i32,
    header: &BatchHeader,
    batch: &[u8],
) -> Result<(), crate::segment::index::IndexError> {
    match CanonicalBatch::from_batch(batch) {
        Ok(canonical) => index.add_batch(topic_id, partition, &canonical),
        Err(error) => {
            tracing::warn!(%topic_id, partition, offset = header.base_offset, %error, "batch stored but not indexed");
            Ok(())
        }
    }
}

/// Puts a staged object in the bucket. A `file://` bucket on the staging file's file system gets
/// the staged file itself, renamed into place: the object is not written a second time.
async fn put_object(broker: &Arc<Broker>, key: &Path, staged: &Staged) -> Result<(), IndexerError> {
    let Some(local) = &broker.local_objects else {
        return upload(broker.object_store.as_ref(), key, staged).await;
    };
    let target = local
        .path_to_filesystem(key)
        .map_err(|source| IndexerError::Upload {
            key: key.to_string(),
            source,
        })?;
    let staged_file = staged.file.as_file().try_clone();
    let staged_path = staged.file.path().to_path_buf();
    let moved =
        tokio::task::spawn_blocking(move || rename_into_place(staged_file?, &staged_path, &target))
            .await
            .map_err(std::io::Error::other)
            .flatten();
    match moved {
        Ok(true) => Ok(()),
        Ok(false) => upload(broker.object_store.as_ref(), key, staged).await,
        Err(source) => Err(IndexerError::Staged {
            key: key.to_string(),
            source,
        }),
    }
}

/// Renames a staged object to `target` durably: the data, then the rename, are on disk before
/// the catalog records the object (object_store's own local PUT does not fsync). False when
/// `target` is on another file system, which only an upload (a copy) can reach.
fn rename_into_place(
    staged: std::fs::File,
    staged_path: &std::path::Path,
    target: &std::path::Path,
) -> std::io::Result<bool> {
    staged.sync_all()?;
    let folder = target
        .parent()
        .ok_or_else(|| std::io::Error::other("an object key names no folder"))?;
    std::fs::create_dir_all(folder)?;
    match std::fs::rename(staged_path, target) {
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => return Ok(false),
        result => result?,
    }
    // The object's folder and its parent: both may have been created just now.
    for dir in folder.ancestors().take(2) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

/// Uploads a staged object: one PUT below `MULTIPART_THRESHOLD_BYTES`, otherwise parts read
/// from the file as they go out (at most two in flight), so memory stays bounded by the part
/// size. A multipart upload that fails is aborted, so no orphan parts are left to pay for (the
/// whole upload is retried later under the same key).
async fn upload(store: &dyn ObjectStore, key: &Path, staged: &Staged) -> Result<(), IndexerError> {
    let failed = |source| IndexerError::Upload {
        key: key.to_string(),
        source,
    };
    let unreadable = |source| IndexerError::Staged {
        key: key.to_string(),
        source,
    };
    let mut file = tokio::fs::File::from_std(staged.file.reopen().map_err(unreadable)?);
    if staged.bytes < limits::MULTIPART_THRESHOLD_BYTES as u64 {
        let mut object = Vec::with_capacity(staged.bytes as usize);
        file.read_to_end(&mut object).await.map_err(unreadable)?;
        store
            .put(key, PutPayload::from(object))
            .await
            .map_err(failed)?;
        return Ok(());
    }
    let upload = store.put_multipart(key).await.map_err(failed)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, limits::MULTIPART_PART_BYTES);
    if let Err(error) = write_parts(&mut writer, &mut file, key).await {
        if let Err(abort_error) = writer.abort().await {
            tracing::warn!(%key, %abort_error, "cannot abort a failed multipart upload; the bucket's lifecycle rule must clean its parts");
        }
        return Err(error);
    }
    // `finish` aborts the upload itself when a part or the completion fails.
    writer.finish().await.map_err(failed)?;
    Ok(())
}

async fn write_parts(
    writer: &mut WriteMultipart,
    file: &mut tokio::fs::File,
    key: &Path,
) -> Result<(), IndexerError> {
    loop {
        let mut part = Vec::with_capacity(limits::MULTIPART_PART_BYTES);
        (&mut *file)
            .take(limits::MULTIPART_PART_BYTES as u64)
            .read_to_end(&mut part)
            .await
            .map_err(|source| IndexerError::Staged {
                key: key.to_string(),
                source,
            })?;
        if part.is_empty() {
            return Ok(());
        }
        writer
            .wait_for_capacity(2)
            .await
            .map_err(|source| IndexerError::Upload {
                key: key.to_string(),
                source,
            })?;
        writer.put(Bytes::from(part));
    }
}

/// Makes an object the cold tier of the partitions it holds.
pub fn attach(topics: &Topics, entry: &CatalogEntry) {
    let index_files: Arc<[_]> = entry.footer.index_files.clone().into();
    for blocks in &entry.footer.partitions {
        let Some(topic) = topics.get_by_id(&blocks.topic_id) else {
            continue;
        };
        let Some(partition) = topic.partition(blocks.partition) else {
            continue;
        };
        let segment = Arc::new(RemoteSegment {
            key: Path::from(entry.key.as_str()),
            object_bytes: entry.object_bytes,
            wal_segment_id: entry.wal_segment_id,
            blocks: blocks.clone(),
            index_files: index_files.clone(),
        });
        partition.lock().attach_remote(segment);
    }
}

/// Drops the segment's batches from the partitions' WAL index, then deletes its file.
async fn trim(broker: &Arc<Broker>, id: u64, footer: &Footer) -> Result<(), IndexerError> {
    for blocks in &footer.partitions {
        if let Some(partition) = broker
            .topics
            .get_by_id(&blocks.topic_id)
            .and_then(|t| t.partition(blocks.partition).cloned())
        {
            partition.lock().trim_wal_segment(id);
        }
    }
    let wal = broker.wal.clone();
    tokio::task::spawn_blocking(move || wal.remove_segment(id))
        .await
        .map_err(|e| IndexerError::Trim {
            id,
            source: std::io::Error::other(e),
        })?
        .map_err(|source| IndexerError::Trim { id, source })
}

/// "Equal jitter": a random wait between half the backoff and all of it, so retries of brokers
/// that failed together (a bucket outage) do not line up, and a retry never comes sooner than
/// half the backoff.
fn jitter(wait: Duration) -> Duration {
    jitter_with(wait, fastrand::f64())
}

/// `unit` in [0, 1).
fn jitter_with(wait: Duration, unit: f64) -> Duration {
    wait / 2 + (wait / 2).mul_f64(unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{Action, Errno, Fault, Faults};
    use crate::object_storage::faults::FaultStore;
    use object_store::local::LocalFileSystem;

    #[test]
    fn retries_wait_between_half_the_backoff_and_all_of_it_at_random() {
        let wait = Duration::from_millis(800);
        assert_eq!(jitter_with(wait, 0.0), Duration::from_millis(400));
        assert!(jitter_with(wait, 0.999_999) <= wait);
        let waits: std::collections::BTreeSet<Duration> = (0..50).map(|_| jitter(wait)).collect();
        assert!(waits.iter().all(|w| *w >= wait / 2 && *w <= wait));
        assert!(waits.len() > 1, "the jitter varies");
    }

    /// A multipart upload whose first part fails is aborted, and leaves nothing in the bucket:
    /// no object and no staged parts (the local store stages parts in files beside the object).
    #[tokio::test]
    async fn a_failed_multipart_upload_is_aborted() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::enabled();
        let local = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let store = FaultStore::new(local, faults.clone());
        let fail_first_part = Fault {
            action: Action::Error { errno: Errno::Eio },
            after: 1,
        };
        faults.set(Point::ObjectStorePut, fail_first_part).unwrap();
        let object = Bytes::from(vec![7u8; limits::MULTIPART_THRESHOLD_BYTES + 1]);
        let staged = staged(&object);
        let key = Path::from("v2/segments/x/00000000000000000001.seg");
        let error = upload(&store, &key, &staged).await.unwrap_err();
        assert!(matches!(error, IndexerError::Upload { .. }), "{error}");
        assert_eq!(faults.uploads_aborted(), 1);
        let left: Vec<_> = walk(dir.path());
        assert!(
            left.is_empty(),
            "files left after a failed upload: {left:?}"
        );

        faults.clear_all();
        upload(&store, &key, &staged).await.unwrap();
        assert_eq!(
            store.get(&key).await.unwrap().bytes().await.unwrap(),
            object
        );
    }

    /// A `file://` bucket gets the staged file itself, under the key's folders (made as
    /// needed), replacing a copy an earlier attempt left; the store reads it back as written.
    #[tokio::test]
    async fn a_staged_object_is_renamed_into_a_local_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let key = Path::from("v2/segments/x/00000000000000000001.seg");
        let target = local.path_to_filesystem(&key).unwrap();
        for object in [&b"an earlier attempt"[..], &b"the object"[..]] {
            let staged = staged_in(dir.path(), object);
            let file = staged.file.as_file().try_clone().unwrap();
            assert!(rename_into_place(file, staged.file.path(), &target).unwrap());
            assert!(!staged.file.path().exists(), "moved, not copied");
        }
        let read = local.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&read[..], b"the object");
    }

    /// Across file systems a rename cannot work: the caller is told to upload instead. Needs
    /// a second file system (`/dev/shm`, a tmpfs on Linux); says so where there is none.
    #[test]
    fn a_local_bucket_on_another_file_system_is_not_renamed_into() {
        use std::os::unix::fs::MetadataExt;
        let staging = tempfile::tempdir().unwrap();
        let Ok(bucket) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("no /dev/shm: skipped");
            return;
        };
        let device = |p: &std::path::Path| std::fs::metadata(p).unwrap().dev();
        if device(staging.path()) == device(bucket.path()) {
            eprintln!("/dev/shm is on the staging file system here: skipped");
            return;
        }
        let staged = staged_in(staging.path(), b"object");
        let file = staged.file.as_file().try_clone().unwrap();
        let target = bucket.path().join("v2/object.seg");
        assert!(!rename_into_place(file, staged.file.path(), &target).unwrap());
        assert!(staged.file.path().exists(), "left for the upload");
    }

    /// The staged object passes through the writeback trickle unchanged.
    #[test]
    fn the_trickle_writes_every_byte_in_order() {
        use std::io::{Read, Seek, Write};
        let file = tempfile::tempfile().unwrap();
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1_000_003).collect();
        let mut trickle = Trickle::new(&file, true);
        for _ in 0..10 {
            trickle.write_all(&chunk).unwrap();
        }
        assert_eq!(trickle.written, 10 * chunk.len() as u64);
        assert!(trickle.started > 0, "writeback was started on the way");
        let mut back = Vec::new();
        (&file).seek(std::io::SeekFrom::Start(0)).unwrap();
        (&file).read_to_end(&mut back).unwrap();
        assert_eq!(back, chunk.repeat(10));
    }

    fn staged_in(dir: &std::path::Path, object: &[u8]) -> Staged {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new_in(dir).unwrap();
        file.write_all(object).unwrap();
        Staged {
            file,
            bytes: object.len() as u64,
            footer: Footer {
                partitions: Vec::new(),
                index_files: Vec::new(),
            },
        }
    }

    /// `object` as the indexer stages it, in a temporary file.
    fn staged(object: &[u8]) -> Staged {
        staged_in(&std::env::temp_dir(), object)
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
