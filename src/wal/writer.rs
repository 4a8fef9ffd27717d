//! The WAL writer thread: group commit. It takes every append queued while the previous fsync
//! ran (up to `WAL_GROUP_BYTES_MAX`), assigns offsets, writes them with one write and one
//! fsync, then publishes and answers them all. On a failed write or fsync it cuts the file back
//! to the last synced length and hands the offsets out again: nothing unsynced is acknowledged.
//! If the cut fails too, appends are refused until a later cut succeeds: a full disk that gets
//! space back, or a disk whose errors pass, needs no restart.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot, Notify};

use super::{
    reuse_or_create_segment, segment, tick, AppendError, AppendRequest, Appended, Command,
    SegmentFiles, WalOptions,
};
use crate::faults::{self, Action, Point};
use crate::limits;
use crate::partition::producer::{ProducerEntry, SequenceCheck};
use crate::partition::{BatchLocation, Partition};

struct Active {
    id: u64,
    file: Arc<std::fs::File>,
    /// Bytes written and synced.
    length: u64,
    opened: Instant,
}

/// State to put back if the group's write fails: per request, the partition's next offset and
/// the producer entries it touched, as they were before the request.
struct Undo {
    partition: Arc<Partition>,
    next_offset: i64,
    producers: Vec<(i64, Option<ProducerEntry>)>,
}

struct Reply {
    sender: oneshot::Sender<Result<Appended, AppendError>>,
    partition: Arc<Partition>,
    base_offset: i64,
}

#[derive(Default)]
struct Group {
    buffer: BytesMut,
    publish: Vec<(Arc<Partition>, BatchLocation)>,
    replies: Vec<Reply>,
    undo: Vec<Undo>,
}

pub(super) struct Writer {
    options: WalOptions,
    files: Arc<SegmentFiles>,
    active: Active,
    data_arrived: Arc<Notify>,
    /// Set when a failed write could not be cut off the file: nothing is appended, and the
    /// segment is not sealed, until a cut succeeds.
    poisoned: Option<String>,
    /// The last group's buffer, emptied, for the next group: a fresh multi-MiB buffer per
    /// group costs page faults and zeroing on every commit.
    spare: BytesMut,
}

impl Writer {
    pub(super) fn new(
        options: WalOptions,
        files: Arc<SegmentFiles>,
        (id, file, length): (u64, Arc<std::fs::File>, u64),
        data_arrived: Arc<Notify>,
    ) -> Writer {
        let active = Active {
            id,
            file,
            length,
            opened: Instant::now(),
        };
        Writer {
            options,
            files,
            active,
            data_arrived,
            poisoned: None,
            spare: BytesMut::new(),
        }
    }

    pub(super) fn run(
        mut self,
        mut receiver: mpsc::Receiver<Command>,
        runtime: tokio::runtime::Handle,
    ) {
        // Timers need the runtime's context; the thread waits on the queue through it.
        let _context = runtime.enter();
        loop {
            let first = match runtime.block_on(tokio::time::timeout(tick(), receiver.recv())) {
                Ok(Some(command)) => command,
                Ok(None) => return,
                Err(_) => {
                    self.roll_if_old();
                    continue;
                }
            };
            let mut group = Group {
                buffer: std::mem::take(&mut self.spare),
                ..Group::default()
            };
            let mut rolls = Vec::new();
            let mut shutdown = self.take(first, &mut group, &mut rolls);
            if self.options.group_commit_us > 0 && !shutdown {
                shutdown = self.gather_window(&mut receiver, &runtime, &mut group, &mut rolls);
            }
            while !shutdown && group.buffer.len() < limits::WAL_GROUP_BYTES_MAX {
                match receiver.try_recv() {
                    Ok(command) => shutdown = self.take(command, &mut group, &mut rolls),
                    Err(_) => break,
                }
            }
            self.commit(group);
            if !rolls.is_empty() {
                self.roll();
            } else {
                self.roll_if_full_or_old();
            }
            rolls.into_iter().for_each(|r| {
                let _ = r.send(());
            });
            if shutdown {
                return;
            }
        }
    }

    /// Waits up to the group-commit window for more appends.
    fn gather_window(
        &mut self,
        receiver: &mut mpsc::Receiver<Command>,
        runtime: &tokio::runtime::Handle,
        group: &mut Group,
        rolls: &mut Vec<oneshot::Sender<()>>,
    ) -> bool {
        let deadline =
            tokio::time::Instant::now() + Duration::from_micros(self.options.group_commit_us);
        while group.buffer.len() < limits::WAL_GROUP_BYTES_MAX {
            match runtime.block_on(tokio::time::timeout_at(deadline, receiver.recv())) {
                Ok(Some(command)) => {
                    if self.take(command, group, rolls) {
                        return true;
                    }
                }
                _ => return false,
            }
        }
        false
    }

    /// Adds one command to the group. Returns true for shutdown.
    fn take(
        &mut self,
        command: Command,
        group: &mut Group,
        rolls: &mut Vec<oneshot::Sender<()>>,
    ) -> bool {
        match command {
            Command::Append(request) => self.stage(request, group),
            Command::Roll(reply) => rolls.push(reply),
            Command::Shutdown => return true,
        }
        false
    }

    /// Assigns offsets to a request's batches and encodes them into the group's buffer, or
    /// refuses the whole request, leaving the group as it was.
    fn stage(&mut self, request: AppendRequest, group: &mut Group) {
        let AppendRequest {
            partition,
            batches,
            reply,
        } = request;
        if let Some(reason) = self.repair() {
            let _ = reply.send(Err(AppendError::Storage(reason)));
            return;
        }
        if partition.is_deleted() {
            let _ = reply.send(Err(AppendError::PartitionDeleted));
            return;
        }
        let buffer_mark = group.buffer.len();
        let publish_mark = group.publish.len();
        let mut state = partition.lock();
        let mut undo = Undo {
            partition: partition.clone(),
            next_offset: state.next_offset,
            producers: Vec::new(),
        };
        let mut first_offset = None;
        for (header, batch) in &batches {
            if header.is_idempotent() {
                match state.producers.check(header) {
                    Ok(SequenceCheck::Duplicate { base_offset }) => {
                        first_offset.get_or_insert(base_offset);
                        continue;
                    }
                    Ok(SequenceCheck::Append) => {}
                    Err(error) => {
                        undo.apply_to(&mut state);
                        drop(state);
                        group.buffer.truncate(buffer_mark);
                        group.publish.truncate(publish_mark);
                        let _ = reply.send(Err(error.into()));
                        return;
                    }
                }
                if !undo
                    .producers
                    .iter()
                    .any(|(id, _)| *id == header.producer_id)
                {
                    undo.producers.push((
                        header.producer_id,
                        state.producers.snapshot(header.producer_id),
                    ));
                }
            }
            let base_offset = state.next_offset;
            let entry_start = self.active.length + group.buffer.len() as u64;
            let batch_at = segment::encode_entry(
                &mut group.buffer,
                self.active.id,
                partition.topic_id,
                partition.index,
                batch,
                base_offset,
            );
            let location = BatchLocation {
                base_offset,
                last_offset: base_offset + i64::from(header.last_offset_delta),
                max_timestamp: header.max_timestamp,
                segment_id: self.active.id,
                position: entry_start + batch_at,
                bytes: batch.len() as u32,
            };
            if header.is_idempotent() {
                state.producers.record(header, base_offset);
            }
            state.next_offset = location.last_offset + 1;
            first_offset.get_or_insert(base_offset);
            group.publish.push((partition.clone(), location));
        }
        drop(state);
        group.undo.push(undo);
        let base_offset = first_offset.unwrap_or(-1);
        group.replies.push(Reply {
            sender: reply,
            partition,
            base_offset,
        });
    }

    /// Writes and syncs the group, then publishes and answers it; or undoes and refuses it.
    /// Keeps the group's buffer for the next.
    fn commit(&mut self, mut group: Group) {
        if !group.buffer.is_empty() {
            let timer = self.files.fsync_seconds.start_timer();
            let written = self.write_and_sync(&group.buffer);
            timer.observe_duration();
            if let Err(error) = written {
                self.fail(group, error);
                return;
            }
            self.active.length += group.buffer.len() as u64;
            self.files
                .bytes
                .fetch_add(group.buffer.len() as u64, Ordering::AcqRel);
            self.files
                .appended
                .fetch_add(group.buffer.len() as u64, Ordering::AcqRel);
        }
        group.buffer.clear();
        self.spare = std::mem::take(&mut group.buffer);
        for (partition, location) in &group.publish {
            partition.lock().publish(*location);
        }
        if !group.publish.is_empty() {
            self.data_arrived.notify_waiters();
        }
        for reply in group.replies {
            let log_start_offset = reply.partition.lock().log_start_offset;
            let _ = reply.sender.send(Ok(Appended {
                base_offset: reply.base_offset,
                log_start_offset,
            }));
        }
    }

    /// One write and one fsync of the group at the end of the active segment. While no fault is
    /// set this costs one relaxed atomic load more than the write and the sync.
    fn write_and_sync(&self, buffer: &[u8]) -> std::io::Result<()> {
        if self.options.faults.is_armed() {
            return self.write_and_sync_with_faults(buffer);
        }
        self.active.file.write_all_at(buffer, self.active.length)?;
        self.active.file.sync_data()
    }

    /// The same, passing the fault-injection points on the way.
    fn write_and_sync_with_faults(&self, buffer: &[u8]) -> std::io::Result<()> {
        let faults = &self.options.faults;
        if let Some(action) = faults.hit(Point::WalWrite) {
            if matches!(action, Action::Error { .. } | Action::Crash) {
                // Half the group reaches the file, as when a disk fills up or the power goes
                // mid-write.
                let half = &buffer[..buffer.len() / 2];
                let _ = self.active.file.write_all_at(half, self.active.length);
            }
            if action == Action::Crash {
                faults::crash(Point::WalWrite);
            }
            faults.apply_blocking(Point::WalWrite, action)?;
        }
        self.active.file.write_all_at(buffer, self.active.length)?;
        faults.pass_blocking(Point::WalAfterWriteBeforeSync)?;
        self.sync()?;
        faults.pass_blocking(Point::WalAfterSyncBeforeAck)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.options.faults.pass_blocking(Point::WalFsync)?;
        self.active.file.sync_data()
    }

    /// Cuts the active segment back to its last synced length, and syncs that.
    fn cut(&self) -> std::io::Result<()> {
        self.active.file.set_len(self.active.length)?;
        self.sync()
    }

    /// While appends are refused, tries the cut again: once it holds, appends resume. Returns
    /// why appends are still refused.
    fn repair(&mut self) -> Option<String> {
        self.poisoned.as_ref()?;
        match self.cut() {
            Ok(()) => {
                tracing::warn!(
                    segment = self.active.id,
                    "WAL cut a failed write off at last; appending again"
                );
                self.poisoned = None;
                None
            }
            Err(error) => {
                let reason = format!("WAL unusable after a failed write: {error}");
                self.poisoned = Some(reason.clone());
                Some(reason)
            }
        }
    }

    fn fail(&mut self, group: Group, error: std::io::Error) {
        tracing::error!(%error, segment = self.active.id, "WAL write failed; refusing the group and cutting it off");
        self.files.write_failures.inc();
        // The failed bytes may be partly on disk (and after a failed fsync the page cache can
        // no longer be trusted): cut the file back to the last synced length and sync that.
        if let Err(cut_error) = self.cut() {
            tracing::error!(%cut_error, "WAL cannot cut a failed write; refusing appends until a cut succeeds");
            self.poisoned = Some(format!("WAL unusable after a failed write: {cut_error}"));
        }
        for undo in group.undo.iter().rev() {
            undo.apply_to(&mut undo.partition.lock());
        }
        let reason = error.to_string();
        for reply in group.replies {
            let _ = reply.sender.send(Err(AppendError::Storage(reason.clone())));
        }
    }

    fn roll_if_full_or_old(&mut self) {
        if self.active.length >= self.options.segment_bytes {
            self.roll();
        } else {
            self.roll_if_old();
        }
    }

    fn roll_if_old(&mut self) {
        if self.active.opened.elapsed() >= Duration::from_millis(self.options.segment_ms) {
            self.roll();
        }
    }

    /// Seals the active segment (already synced) and starts the next, if it holds anything.
    /// Never while a failed write is not cut off: a sealed segment must end clean.
    fn roll(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if self.active.length <= segment::SEGMENT_HEADER_BYTES {
            self.active.opened = Instant::now();
            return;
        }
        // Until the next segment exists, the seal is only the end of the active one: the
        // next group writes over it.
        if let Err(error) = self.seal() {
            tracing::error!(%error, segment = self.active.id, "cannot seal the WAL segment; appending to it");
            self.active.opened = Instant::now();
            return;
        }
        let id = self.active.id + 1;
        match reuse_or_create_segment(&self.files, &self.options.dir, id) {
            Ok(file) => {
                self.files
                    .set_sealed_length(self.active.id, self.active.length);
                let file = Arc::new(file);
                self.files.insert(id, file.clone());
                self.files
                    .bytes
                    .fetch_add(segment::SEGMENT_HEADER_BYTES, Ordering::AcqRel);
                self.active = Active {
                    id,
                    file,
                    length: segment::SEGMENT_HEADER_BYTES,
                    opened: Instant::now(),
                };
                self.files.activate(id);
            }
            Err(error) => {
                tracing::error!(%error, "cannot start a new WAL segment; appending to the current one");
                self.active.opened = Instant::now();
            }
        }
    }

    /// Writes and syncs the seal after the active segment's last entry.
    fn seal(&self) -> std::io::Result<()> {
        let seal = segment::seal(self.active.id);
        self.active.file.write_all_at(&seal, self.active.length)?;
        self.active.file.sync_data()
    }
}

impl Undo {
    fn apply_to(&self, state: &mut crate::partition::PartitionState) {
        state.next_offset = self.next_offset;
        for (producer_id, entry) in self.producers.iter().rev() {
            state.producers.restore(*producer_id, entry.clone());
        }
    }
}
