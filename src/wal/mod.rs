//! The V1 write-ahead log: every produced batch, as formed (offsets assigned), framed with its
//! partition and a checksum, in one broker-wide log so that one fsync covers every partition.
//!
//! Data path: api/produce hands batches to `Wal::append`; the writer thread assigns offsets,
//! writes a whole group of appends, fsyncs once, and only then publishes the batches (high
//! watermark) and answers. Fetch reads batches back by file position (`Wal::read`).
//!
//! Invariants: one writer thread owns the active file; nothing is acknowledged or visible before
//! its fsync; a failed write is cut off the file and its offsets are handed out again (a failed
//! cut stops appends until a later cut succeeds, and never lets the segment be sealed); replay
//! verifies every entry and cuts a torn tail before anything new is appended.
//!
//! A trimmed segment's file is kept as the spare (one at most) and becomes the next segment:
//! writing over blocks a file already has lets each fsync flush the data alone, where
//! appending to a growing file also commits the file system's journal (the file's new size and
//! blocks) every time, about twice the flush time. Entries' checksums include the segment id
//! (`segment`), so what the file held before is never read as the new segment's.

pub mod segment;
mod writer;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::limits;
use crate::metadata::sync_dir;
use crate::partition::producer::SequenceError;
use crate::partition::{BatchLocation, Partition, Topics};
use crate::protocol::record_batch::BatchHeader;
use segment::{ScanEnd, SEGMENT_HEADER_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Segment(#[from] segment::SegmentError),
    #[error("WAL segment {path} is corrupt at byte {position} ({reason}) but is not the last segment; \
             it was fully synced before the next one began, so this is disk corruption. Move it aside to start.")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
}

/// Why an append was not made durable. Each maps to the Kafka error code a producer retries on
/// (or gives up on, for fencing).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("the WAL cannot write: {0}")]
    Storage(String),
    #[error("the partition was deleted")]
    PartitionDeleted,
    #[error("the WAL holds its budget of {0} bytes (--wal-disk-bytes-max) until uploads to object storage free space")]
    DiskBudget(u64),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
}

impl AppendError {
    pub fn code(&self) -> i16 {
        let error = match self {
            AppendError::Storage(_) | AppendError::DiskBudget(_) => {
                ResponseError::KafkaStorageError
            }
            AppendError::PartitionDeleted => ResponseError::UnknownTopicOrPartition,
            AppendError::Sequence(SequenceError::OutOfOrder { .. }) => {
                ResponseError::OutOfOrderSequenceNumber
            }
            AppendError::Sequence(SequenceError::FencedEpoch { .. }) => {
                ResponseError::InvalidProducerEpoch
            }
        };
        error.code()
    }
}

/// A successful append: where the first batch landed (its original place for a retried
/// duplicate) and the partition's log start offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

pub type AppendReply = oneshot::Receiver<Result<Appended, AppendError>>;

pub struct AppendRequest {
    pub partition: Arc<Partition>,
    pub batches: Vec<(BatchHeader, Bytes)>,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

enum Command {
    Append(AppendRequest),
    /// Seal the active segment now if it holds anything.
    Roll(oneshot::Sender<()>),
    Shutdown,
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub group_commit_us: u64,
    /// Appends are refused (retriably) once the WAL holds this many bytes; 0 for no limit.
    pub disk_bytes_max: u64,
    /// Injected disk failures and crash points (tests; off by default).
    pub faults: Arc<crate::faults::Faults>,
}

/// Open segment files, shared by the writer (which appends to the last) and readers.
pub struct SegmentFiles {
    files: RwLock<BTreeMap<u64, Arc<File>>>,
    /// The valid length of every sealed segment (a reused file is longer).
    sealed_lengths: Mutex<BTreeMap<u64, u64>>,
    /// The sum of `sealed_lengths`, read by every produce request (`api::produce::pace`)
    /// without taking the lock.
    sealed_bytes: AtomicU64,
    /// A trimmed segment's file, waiting to become the next segment.
    spare: Mutex<Spare>,
    spare_path: PathBuf,
    /// The segment the writer appends to; every lower id is sealed.
    active: AtomicU64,
    /// Bytes of every segment on disk.
    bytes: AtomicU64,
    /// Bytes appended since the WAL was opened (never goes down).
    appended: AtomicU64,
    /// Notified when a segment is sealed (wakes the indexer).
    sealed: Notify,
    /// Seconds each group commit's write and fsync took (the broker registers it).
    fsync_seconds: prometheus::Histogram,
    /// Group commits whose write or fsync failed (their producers got KAFKA_STORAGE_ERROR).
    write_failures: prometheus::IntCounter,
    /// Segments started in a trimmed segment's file.
    reused: prometheus::IntCounter,
}

impl SegmentFiles {
    fn get(&self, id: u64) -> Option<Arc<File>> {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn insert(&self, id: u64, file: Arc<File>) {
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, file);
    }

    /// Makes `id` the active segment: every one before it is sealed.
    fn activate(&self, id: u64) {
        self.active.store(id, Ordering::Release);
        self.sealed.notify_waiters();
    }

    fn set_sealed_length(&self, id: u64, length: u64) {
        let mut lengths = self
            .sealed_lengths
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let replaced = lengths.insert(id, length).unwrap_or(0);
        self.sealed_bytes.fetch_add(length, Ordering::AcqRel);
        self.sealed_bytes.fetch_sub(replaced, Ordering::AcqRel);
    }

    fn take_sealed_length(&self, id: u64) -> Option<u64> {
        let mut lengths = self
            .sealed_lengths
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let length = lengths.remove(&id)?;
        self.sealed_bytes.fetch_sub(length, Ordering::AcqRel);
        Some(length)
    }

    /// Moves the file at `path` to the spare's place if there is none: true if it did. The
    /// file becomes usable once `offer_spare` hands it over.
    fn claim_spare(&self, path: &Path) -> bool {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*spare, Spare::Empty) {
            return false;
        }
        match std::fs::rename(path, &self.spare_path) {
            Ok(()) => {
                *spare = Spare::Claimed;
                true
            }
            Err(_) => false,
        }
    }

    /// Hands a claimed spare over once no read holds it any more (a read must never see its
    /// bytes change); past `WAL_RELEASE_WAIT_MS` it is deleted instead. Blocking.
    fn offer_spare(&self, file: Arc<File>) {
        let deadline = Instant::now() + Duration::from_millis(limits::WAL_RELEASE_WAIT_MS);
        let mut file = file;
        let owned = loop {
            match Arc::try_unwrap(file) {
                Ok(owned) => break Some(owned),
                Err(_) if Instant::now() >= deadline => break None,
                Err(shared) => file = shared,
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        *spare = match owned {
            Some(owned) => Spare::Ready(owned),
            None => {
                let _ = std::fs::remove_file(&self.spare_path);
                Spare::Empty
            }
        };
    }

    /// The spare, renamed to `path`, if one is ready.
    fn take_spare(&self, path: &Path) -> Option<File> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*spare, Spare::Ready(_)) {
            return None;
        }
        std::fs::rename(&self.spare_path, path).ok()?;
        match std::mem::replace(&mut *spare, Spare::Empty) {
            Spare::Ready(file) => Some(file),
            _ => None,
        }
    }
}

/// The state of the spare file.
enum Spare {
    Empty,
    /// Renamed to the spare's place; reads may still hold it.
    Claimed,
    Ready(File),
}

pub struct Wal {
    dir: PathBuf,
    disk_bytes_max: u64,
    segment_bytes: u64,
    sender: mpsc::Sender<Command>,
    files: Arc<SegmentFiles>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Wal {
    /// Opens the WAL in `options.dir`: replays every segment into `topics` (batch index,
    /// high watermarks, producer state), cuts a torn tail, and starts the writer thread.
    /// Must be called within a tokio runtime.
    pub fn open(
        options: WalOptions,
        topics: &Topics,
        data_arrived: Arc<Notify>,
    ) -> Result<Wal, WalError> {
        let dir = options.dir.clone();
        let disk_bytes_max = options.disk_bytes_max;
        let segment_bytes = options.segment_bytes;
        let io = |source| WalError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&options.dir).map_err(io)?;
        let ids = segment::list_segments(&options.dir).map_err(io)?;
        let spare_path = options.dir.join(SPARE_FILE_NAME);
        let spare = open_spare(&spare_path, !ids.is_empty()).map_err(io)?;
        let files = Arc::new(SegmentFiles {
            files: RwLock::new(BTreeMap::new()),
            sealed_lengths: Mutex::new(BTreeMap::new()),
            sealed_bytes: AtomicU64::new(0),
            spare: Mutex::new(spare),
            spare_path,
            active: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            sealed: Notify::new(),
            fsync_seconds: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "strata_wal_fsync_seconds",
                    "Write and fsync of one WAL group commit.",
                )
                .buckets(prometheus::exponential_buckets(0.00005, 2.0, 16).expect("valid buckets")),
            )
            .expect("valid metric"),
            write_failures: prometheus::IntCounter::new(
                "strata_wal_write_failures_total",
                "WAL group commits whose write or fsync failed; their appends were refused with KAFKA_STORAGE_ERROR.",
            )
            .expect("valid metric"),
            reused: prometheus::IntCounter::new(
                "strata_wal_segments_reused_total",
                "WAL segments started in the file of a trimmed one (written over, not appended to).",
            )
            .expect("valid metric"),
        });
        let mut active = None;
        for (n, &id) in ids.iter().enumerate() {
            let is_last = n + 1 == ids.len();
            let length = replay_segment(&options.dir, id, is_last, topics)?;
            files.bytes.fetch_add(length, Ordering::AcqRel);
            let file =
                Arc::new(open_segment(&segment::segment_path(&options.dir, id)).map_err(io)?);
            files.insert(id, file.clone());
            if is_last {
                active = Some((id, file, length));
            } else {
                files.set_sealed_length(id, length);
            }
        }
        let active = match active {
            Some((id, file, length)) if is_current_format(&file) => (id, file, length),
            // Written by an older version: new entries go to a new segment after it.
            Some((id, _, length)) => {
                files.set_sealed_length(id, length);
                start_segment(&files, &options.dir, id + 1).map_err(io)?
            }
            None => start_segment(&files, &options.dir, 1).map_err(io)?,
        };
        files.activate(active.0);
        let (sender, receiver) = mpsc::channel(limits::WAL_QUEUE_DEPTH);
        let writer = writer::Writer::new(options, files.clone(), active, data_arrived);
        let runtime = tokio::runtime::Handle::current();
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(receiver, runtime))
            .map_err(io)?;
        Ok(Wal {
            dir,
            disk_bytes_max,
            segment_bytes,
            sender,
            files,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Queues batches for one partition. The returned receiver answers once they are durable
    /// (or refused). Queuing waits while the writer's queue is full (backpressure), and the
    /// order of calls is the order of offsets.
    pub async fn append(
        &self,
        partition: Arc<Partition>,
        batches: Vec<(BatchHeader, Bytes)>,
    ) -> AppendReply {
        let (reply, receiver) = oneshot::channel();
        if self.over_budget() {
            let _ = reply.send(Err(AppendError::DiskBudget(self.disk_bytes_max)));
            return receiver;
        }
        let request = AppendRequest {
            partition,
            batches,
            reply,
        };
        if let Err(mpsc::error::SendError(Command::Append(request))) =
            self.sender.send(Command::Append(request)).await
        {
            let _ = request
                .reply
                .send(Err(AppendError::Storage("the WAL is shut down".into())));
        }
        receiver
    }

    /// Seals the active segment if it holds any entry, and waits until it is sealed.
    pub async fn roll(&self) {
        let (reply, receiver) = oneshot::channel();
        if self.sender.send(Command::Roll(reply)).await.is_ok() {
            let _ = receiver.await;
        }
    }

    /// Reads the given batches back, concatenated, exactly as they were written.
    /// Blocking file I/O: call from `spawn_blocking`.
    pub fn read(&self, locations: &[BatchLocation]) -> std::io::Result<Bytes> {
        let total: usize = locations.iter().map(|l| l.bytes as usize).sum();
        let mut buffer = BytesMut::zeroed(total);
        let mut at = 0;
        for location in locations {
            let file = self.files.get(location.segment_id).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("WAL segment {} is gone", location.segment_id),
                )
            })?;
            let end = at + location.bytes as usize;
            file.read_exact_at(&mut buffer[at..end], location.position)?;
            at = end;
        }
        Ok(buffer.freeze())
    }

    /// The segment the writer appends to; every lower id still on disk is sealed.
    pub fn active_segment(&self) -> u64 {
        self.files.active.load(Ordering::Acquire)
    }

    /// The latency histogram of group commits (write + fsync).
    pub fn fsync_histogram(&self) -> prometheus::Histogram {
        self.files.fsync_seconds.clone()
    }

    /// The count of group commits whose write or fsync failed.
    pub fn write_failures_counter(&self) -> prometheus::IntCounter {
        self.files.write_failures.clone()
    }

    /// The count of segments started in a trimmed segment's file.
    pub fn reused_counter(&self) -> prometheus::IntCounter {
        self.files.reused.clone()
    }

    /// Sealed segments (every one but the active), oldest first.
    pub fn sealed_segments(&self) -> Vec<u64> {
        let active = self.files.active.load(Ordering::Acquire);
        let files = self.files.files.read().unwrap_or_else(|p| p.into_inner());
        files.keys().copied().filter(|id| *id < active).collect()
    }

    /// Waits until the writer seals another segment.
    pub fn segment_sealed(&self) -> tokio::sync::futures::Notified<'_> {
        self.files.sealed.notified()
    }

    /// Reads every entry of a sealed segment in order. Blocking: call from `spawn_blocking`.
    pub fn scan_sealed<F: FnMut(segment::ReplayedEntry<'_>)>(
        &self,
        id: u64,
        mut visit: F,
    ) -> Result<(), WalError> {
        let path = segment::segment_path(&self.dir, id);
        let end = segment::scan(&path, id, |entry| {
            visit(entry);
            Ok(())
        })?;
        expect_clean(path, end).map(|_| ())
    }

    /// Deletes a sealed segment whose batches are safely elsewhere, keeping its file as the
    /// spare if there is none yet. Readers that already hold its file keep reading it; new
    /// reads no longer find it. Blocking.
    pub fn remove_segment(&self, id: u64) -> std::io::Result<()> {
        if id >= self.files.active.load(Ordering::Acquire) {
            return Err(std::io::Error::other(format!(
                "WAL segment {id} is not sealed"
            )));
        }
        let path = segment::segment_path(&self.dir, id);
        let file_length = std::fs::metadata(&path)?.len();
        let file = self
            .files
            .files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let reuse = file
            .as_deref()
            .is_some_and(|f| self.reusable(f, file_length))
            && self.files.claim_spare(&path);
        if !reuse {
            std::fs::remove_file(&path)?;
        }
        let length = self.files.take_sealed_length(id).unwrap_or(file_length);
        self.files.bytes.fetch_sub(length, Ordering::AcqRel);
        let synced = sync_dir(&self.dir);
        match file {
            Some(file) if reuse => self.files.offer_spare(file),
            Some(file) => release_gradually(file, file_length),
            None => {}
        }
        synced
    }

    /// Whether a trimmed segment's file is worth keeping as the spare: as long as a segment
    /// (a segment sealed early by time is not), and of the current format (a version 1 file's
    /// entries would pass their checksums under any id).
    fn reusable(&self, file: &File, file_length: u64) -> bool {
        file_length >= self.segment_bytes && is_current_format(file)
    }

    /// Whether the WAL has reached its disk budget (the bucket is not keeping up or not
    /// reachable): appends are refused with a retriable error until uploads free space.
    pub fn over_budget(&self) -> bool {
        self.disk_bytes_max > 0 && self.disk_bytes() >= self.disk_bytes_max
    }

    /// Bytes of the sealed segments on disk: what waits for upload.
    pub fn sealed_bytes(&self) -> u64 {
        self.files.sealed_bytes.load(Ordering::Acquire)
    }

    /// The size at which the active segment is sealed.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Bytes of WAL on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.files.bytes.load(Ordering::Acquire)
    }

    /// Bytes appended since the WAL was opened.
    pub fn appended_bytes(&self) -> u64 {
        self.files.appended.load(Ordering::Acquire)
    }

    /// Stops the writer after everything queued before this call is written and synced.
    pub async fn close(&self) {
        let _ = self.sender.send(Command::Shutdown).await;
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// Replays one segment into the partitions. Returns the length of its valid part; a torn tail of
/// the last segment is cut off the file (a crash mid-write), anywhere else it is an error.
fn replay_segment(dir: &Path, id: u64, is_last: bool, topics: &Topics) -> Result<u64, WalError> {
    let path = segment::segment_path(dir, id);
    let end = segment::scan(&path, id, |entry| {
        let topic = topics.get_by_id(&entry.topic_id);
        match topic.as_ref().and_then(|t| t.partition(entry.partition)) {
            Some(partition) => replay_entry(partition, id, &entry),
            None => Ok(()),
        }
    })?;
    match end {
        ScanEnd::Torn {
            valid_length,
            file_length,
            reason,
        } if is_last => {
            tracing::warn!(segment = %path.display(), valid_length, file_length, %reason,
                "WAL replay: cutting the tail after the last valid entry (a write a crash cut short, \
                 or what a reused file held before)");
            cut_tail(&path, valid_length).map_err(|source| WalError::Io {
                path: path.clone(),
                source,
            })
        }
        end => expect_clean(path, end),
    }
}

/// Applies one replayed entry of segment `segment_id` to its partition: the batch index, the
/// high watermark and idempotent-producer state. A batch below the high watermark (already in
/// the bucket) is skipped. A batch that straddles it cannot come from this broker's writer
/// (offsets are assigned in order, whole batches at a time): it is refused, as corruption.
pub fn replay_entry(
    partition: &Partition,
    segment_id: u64,
    entry: &segment::ReplayedEntry<'_>,
) -> Result<(), String> {
    let location = entry.location(segment_id);
    let mut state = partition.lock();
    if location.last_offset < state.high_watermark {
        tracing::debug!(topic = %partition.topic_name, partition = entry.partition, offset = location.base_offset,
            "WAL replay: skipping a batch below the high watermark");
        return Ok(());
    }
    if location.base_offset < state.high_watermark {
        return Err(format!(
            "batch {}..={} of partition {} overlaps offsets before {}",
            location.base_offset, location.last_offset, entry.partition, state.high_watermark
        ));
    }
    if entry.header.is_idempotent() {
        state.producers.record(&entry.header, location.base_offset);
    }
    state.publish(location);
    Ok(())
}

/// The valid length of a segment that must have been scanned clean: a sealed segment was
/// fully synced before the next one began, so a torn end there is disk corruption.
fn expect_clean(path: PathBuf, end: ScanEnd) -> Result<u64, WalError> {
    match end {
        ScanEnd::Clean { length } => Ok(length),
        ScanEnd::Torn {
            valid_length,
            reason,
            ..
        } => Err(WalError::Corrupt {
            path,
            position: valid_length,
            reason,
        }),
    }
}

/// Truncates a segment to its valid part (re-writing the header if even that was torn) and
/// syncs, so later appends continue after the cut, not after the garbage.
fn cut_tail(path: &Path, valid_length: u64) -> std::io::Result<u64> {
    let file = OpenOptions::new().write(true).open(path)?;
    if valid_length < SEGMENT_HEADER_BYTES {
        file.set_len(0)?;
        file.write_all_at(&segment::segment_header(), 0)?;
        file.sync_all()?;
        return Ok(SEGMENT_HEADER_BYTES);
    }
    file.set_len(valid_length)?;
    file.sync_all()?;
    Ok(valid_length)
}

fn open_segment(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Frees the blocks of a deleted segment's file (its name is gone already) in steps, so the WAL's
/// fsyncs are not held behind one long release. Only once no read holds the file: no new read
/// can take it (it is out of the table), and a read never sees it shrink. A failed step only
/// means the rest is freed when the file closes.
fn release_gradually(file: Arc<File>, length: u64) {
    let deadline = Instant::now() + Duration::from_millis(limits::WAL_RELEASE_WAIT_MS);
    while Arc::strong_count(&file) > 1 {
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    shrink_in_steps(&file, length);
}

/// Shortens a file of `length` bytes that nobody reads any more to its first step, a step at a
/// time with a pause between, so that freeing its blocks never holds the file system's journal
/// (and the WAL's fsyncs) for long. Blocking. A failed step leaves the rest to be freed when
/// the file is deleted and closed.
pub fn shrink_in_steps(file: &File, length: u64) {
    let mut left = length;
    while left > limits::WAL_RELEASE_STEP_BYTES {
        left -= limits::WAL_RELEASE_STEP_BYTES;
        if file.set_len(left).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(limits::WAL_RELEASE_PAUSE_MS));
    }
}

/// The spare file's name in the WAL directory (not a segment's: replay passes it by).
const SPARE_FILE_NAME: &str = "spare.wal-reuse";

/// Whether a segment's header is this version's (entries appended to it use its checksums).
fn is_current_format(file: &File) -> bool {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, 0).is_ok() && header == segment::segment_header()
}

/// Creates segment `id` as the first active segment of this run.
fn start_segment(
    files: &SegmentFiles,
    dir: &Path,
    id: u64,
) -> std::io::Result<(u64, Arc<File>, u64)> {
    let file = Arc::new(create_segment(dir, id)?);
    files.insert(id, file.clone());
    files
        .bytes
        .fetch_add(SEGMENT_HEADER_BYTES, Ordering::AcqRel);
    Ok((id, file, SEGMENT_HEADER_BYTES))
}

/// The spare a previous run left, if any. Without a segment on disk the ids start again at 1,
/// and entries the spare holds could pass their checksums under a new id: it is deleted.
fn open_spare(path: &Path, segments_exist: bool) -> std::io::Result<Spare> {
    let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    if !segments_exist {
        return match std::fs::remove_file(path) {
            Err(e) if !not_found(&e) => Err(e),
            _ => Ok(Spare::Empty),
        };
    }
    match open_segment(path) {
        Ok(file) => Ok(Spare::Ready(file)),
        Err(e) if not_found(&e) => Ok(Spare::Empty),
        Err(e) => Err(e),
    }
}

/// Makes the spare segment `id`, or, without a spare, creates the file.
fn reuse_or_create_segment(files: &SegmentFiles, dir: &Path, id: u64) -> std::io::Result<File> {
    let path = segment::segment_path(dir, id);
    match files.take_spare(&path) {
        Some(file) => {
            files.reused.inc();
            ready_segment(file, &path, dir)
        }
        None => create_segment(dir, id),
    }
}

/// Creates a new segment with its header, durable (file and directory entry) before use.
fn create_segment(dir: &Path, id: u64) -> std::io::Result<File> {
    let path = segment::segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    ready_segment(file, &path, dir)
}

/// Writes a segment's header and makes it durable, file and directory entry, before use.
fn ready_segment(file: File, path: &Path, dir: &Path) -> std::io::Result<File> {
    let ready = file
        .write_all_at(&segment::segment_header(), 0)
        .and_then(|_| file.sync_all())
        .and_then(|_| sync_dir(dir));
    if let Err(error) = ready {
        // A full disk fails the header's write: with the file left behind, every later roll
        // would fail on `create_new`, the active segment could never be sealed and uploaded,
        // and the WAL would stay full for ever.
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(error);
    }
    Ok(file)
}

fn tick() -> Duration {
    Duration::from_millis(limits::WAL_TICK_MS)
}

#[cfg(test)]
mod tests;
