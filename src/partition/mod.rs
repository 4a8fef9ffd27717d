//! Topics and partitions: per partition the log start offset, the high watermark, the offsets
//! the WAL writer has assigned, the index of batches still in the WAL, and producer state.
//!
//! Invariants: only the WAL writer (and WAL replay, before it starts) assigns offsets and
//! publishes batches; the high watermark is the end of durable data, so it only moves forward
//! and only after fsync; offsets are contiguous.

pub mod config;
pub mod producer;
pub mod topics;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::segment::object::{Block, IndexFile, PartitionBlocks};

use producer::Producers;

pub use topics::{Topic, TopicError, Topics};

/// Where one batch lies in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLocation {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub segment_id: u64,
    /// File position of the batch's first byte (its `base_offset`).
    pub position: u64,
    pub bytes: u32,
}

/// This partition's part of one object in the bucket.
#[derive(Debug)]
pub struct RemoteSegment {
    pub key: object_store::path::Path,
    pub object_bytes: u64,
    pub wal_segment_id: u64,
    pub blocks: PartitionBlocks,
    /// The object's Tantivy index files (shared by every partition of the object): search
    /// opens the index from these byte ranges.
    pub index_files: Arc<[IndexFile]>,
}

impl RemoteSegment {
    pub fn base_offset(&self) -> i64 {
        self.blocks.base_offset
    }

    pub fn last_offset(&self) -> i64 {
        self.blocks.last_offset
    }
}

/// Where a fetch from some offset must read.
#[derive(Debug)]
pub enum ReadPlan {
    /// Batches still in the WAL.
    Hot(Vec<BatchLocation>),
    /// A block of an object in the bucket.
    Cold {
        segment: Arc<RemoteSegment>,
        block: Block,
    },
}

#[derive(Debug, Default)]
pub struct PartitionState {
    pub log_start_offset: i64,
    /// End of durable data: the offset the next published batch starts at.
    pub high_watermark: i64,
    /// The next offset the WAL writer assigns; ahead of the high watermark while a group
    /// commit is being written.
    pub next_offset: i64,
    /// Batches in the WAL, in offset order.
    pub batches: VecDeque<BatchLocation>,
    /// Objects in the bucket holding older batches, in offset order.
    pub remote: VecDeque<Arc<RemoteSegment>>,
    /// The largest batch `max_timestamp` and the batch that holds it.
    pub max_timestamp: Option<(i64, BatchLocation)>,
    pub producers: Producers,
}

#[derive(Debug)]
pub struct Partition {
    pub topic_name: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    deleted: AtomicBool,
    state: Mutex<PartitionState>,
}

impl Partition {
    pub fn new(topic_name: Arc<str>, topic_id: Uuid, index: i32) -> Partition {
        Partition {
            topic_name,
            topic_id,
            index,
            deleted: AtomicBool::new(false),
            state: Mutex::new(PartitionState::default()),
        }
    }

    /// The partition's state. Held briefly and never across an await.
    pub fn lock(&self) -> MutexGuard<'_, PartitionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// `(log_start_offset, high_watermark)`.
    pub fn offsets(&self) -> (i64, i64) {
        let state = self.lock();
        (state.log_start_offset, state.high_watermark)
    }

    /// Batches to serve a fetch from `offset`: the batch holding `offset` and those after it,
    /// up to `bytes_max` in all, but always the first one when `first_always` (KIP-74: a
    /// consumer must make progress even past a batch larger than its limit).
    pub fn locate(&self, offset: i64, bytes_max: usize, first_always: bool) -> Vec<BatchLocation> {
        let state = self.lock();
        let start = state.batches.partition_point(|b| b.last_offset < offset);
        let mut found = Vec::new();
        let mut total = 0usize;
        for batch in state.batches.range(start..) {
            let size = batch.bytes as usize;
            if total + size > bytes_max && !(found.is_empty() && first_always) {
                break;
            }
            total += size;
            found.push(*batch);
        }
        found
    }

    /// Where to read from `offset`: the bucket for offsets below the WAL's start, the WAL
    /// otherwise.
    pub fn plan_read(&self, offset: i64, bytes_max: usize, first_always: bool) -> ReadPlan {
        let cold = {
            let state = self.lock();
            if offset < state.wal_start_offset() {
                state.locate_remote(offset)
            } else {
                None
            }
        };
        match cold {
            Some((segment, block)) => ReadPlan::Cold { segment, block },
            None => ReadPlan::Hot(self.locate(offset, bytes_max, first_always)),
        }
    }

    /// The first place (in offset order) where a record with `max_timestamp >= timestamp` can
    /// be: a block in the bucket or a batch in the WAL.
    pub fn locate_timestamp(&self, timestamp: i64) -> Option<ReadPlan> {
        let state = self.lock();
        for segment in &state.remote {
            if segment.blocks.max_timestamp < timestamp {
                continue;
            }
            if let Some(block) = segment
                .blocks
                .blocks
                .iter()
                .find(|b| b.max_timestamp >= timestamp)
            {
                return Some(ReadPlan::Cold {
                    segment: segment.clone(),
                    block: block.clone(),
                });
            }
        }
        let found = state
            .batches
            .iter()
            .find(|b| b.max_timestamp >= timestamp)
            .copied();
        found.map(|b| ReadPlan::Hot(vec![b]))
    }

    /// Where the record with the largest timestamp is, and that timestamp.
    pub fn locate_max_timestamp(&self) -> Option<(i64, ReadPlan)> {
        let state = self.lock();
        let hot = state
            .max_timestamp
            .map(|(ts, b)| (ts, ReadPlan::Hot(vec![b])));
        let cold = state
            .remote
            .iter()
            .flat_map(|s| s.blocks.blocks.iter().map(move |b| (s, b)))
            .max_by_key(|(_, b)| b.max_timestamp)
            .map(|(s, b)| {
                (
                    b.max_timestamp,
                    ReadPlan::Cold {
                        segment: s.clone(),
                        block: b.clone(),
                    },
                )
            });
        match (hot, cold) {
            (Some(hot), Some(cold)) if cold.0 > hot.0 => Some(cold),
            (Some(hot), _) => Some(hot),
            (None, cold) => cold,
        }
    }
}

impl PartitionState {
    /// The first offset still in the WAL (the high watermark when the WAL holds nothing).
    pub fn wal_start_offset(&self) -> i64 {
        self.batches
            .front()
            .map_or(self.high_watermark, |b| b.base_offset)
    }

    /// Offsets below this are in the bucket.
    pub fn remote_end_offset(&self) -> i64 {
        self.remote
            .back()
            .map_or(self.log_start_offset, |s| s.last_offset() + 1)
    }

    /// Moves the log start offset forward (never back): offsets below it are gone. Remote
    /// segments wholly below it are detached (the indexer deletes objects nobody references).
    pub fn move_log_start(&mut self, offset: i64) -> bool {
        if offset <= self.log_start_offset {
            return false;
        }
        self.log_start_offset = offset;
        self.high_watermark = self.high_watermark.max(offset);
        self.next_offset = self.next_offset.max(offset);
        self.remote.retain(|s| s.last_offset() >= offset);
        true
    }

    /// Records an object in the bucket that holds this partition's batches. At start-up this
    /// comes before WAL replay, so the high watermark covers what was uploaded.
    pub fn attach_remote(&mut self, segment: Arc<RemoteSegment>) {
        if self.remote.iter().any(|s| s.key == segment.key)
            || segment.last_offset() < self.log_start_offset
        {
            return;
        }
        let at = self
            .remote
            .partition_point(|s| s.base_offset() < segment.base_offset());
        let end = segment.last_offset() + 1;
        if self.remote.is_empty() && self.batches.is_empty() && self.high_watermark == 0 {
            self.log_start_offset = self.log_start_offset.max(segment.base_offset());
        }
        self.remote.insert(at, segment);
        if end > self.high_watermark {
            self.high_watermark = end;
            self.next_offset = self.next_offset.max(end);
        }
    }

    /// Rebuilds idempotent-producer state from the remote segments, in offset order. At
    /// start-up, after every object is attached and before WAL replay.
    pub fn restore_producers_from_remote(&mut self) {
        for segment in &self.remote {
            self.producers.merge_later(&segment.blocks.producers);
        }
    }

    /// Forgets the WAL batches of a segment that has been uploaded and recorded.
    pub fn trim_wal_segment(&mut self, segment_id: u64) {
        self.batches.retain(|b| b.segment_id != segment_id);
        if let Some((_, batch)) = self.max_timestamp {
            if batch.segment_id == segment_id {
                self.max_timestamp = self
                    .batches
                    .iter()
                    .max_by_key(|b| b.max_timestamp)
                    .map(|b| (b.max_timestamp, *b));
            }
        }
    }

    /// The remote block holding `offset` (or the first one after it).
    fn locate_remote(&self, offset: i64) -> Option<(Arc<RemoteSegment>, Block)> {
        let at = self.remote.partition_point(|s| s.last_offset() < offset);
        let segment = self.remote.get(at)?;
        let block = segment.blocks.block_for(offset)?.clone();
        Some((segment.clone(), block))
    }

    /// Makes a durable batch visible: indexes it and moves the high watermark past it.
    pub fn publish(&mut self, batch: BatchLocation) {
        if batch.last_offset < self.high_watermark {
            return;
        }
        self.high_watermark = batch.last_offset + 1;
        self.next_offset = self.next_offset.max(self.high_watermark);
        if self
            .max_timestamp
            .is_none_or(|(ts, _)| batch.max_timestamp > ts)
        {
            self.max_timestamp = Some((batch.max_timestamp, batch));
        }
        self.batches.push_back(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base_offset: i64, count: i64, bytes: u32) -> BatchLocation {
        BatchLocation {
            base_offset,
            last_offset: base_offset + count - 1,
            max_timestamp: base_offset * 10,
            segment_id: 1,
            position: base_offset as u64 * 100,
            bytes,
        }
    }

    fn partition_with(batches: &[BatchLocation]) -> Partition {
        let partition = Partition::new("t".into(), Uuid::nil(), 0);
        let mut state = partition.lock();
        for b in batches {
            state.publish(*b);
        }
        drop(state);
        partition
    }

    #[test]
    fn locate_finds_the_batch_holding_the_offset_and_respects_the_byte_limit() {
        let partition = partition_with(&[batch(0, 5, 100), batch(5, 5, 100), batch(10, 5, 100)]);
        let found = partition.locate(7, 250, true);
        assert_eq!(
            found.iter().map(|b| b.base_offset).collect::<Vec<_>>(),
            vec![5, 10]
        );
        assert_eq!(partition.locate(7, 150, true).len(), 1);
        assert_eq!(
            partition.locate(7, 50, true).len(),
            1,
            "first batch always served"
        );
        assert_eq!(partition.locate(7, 50, false).len(), 0);
        assert!(partition.locate(15, 1000, true).is_empty());
        assert_eq!(partition.offsets(), (0, 15));
    }

    #[test]
    fn high_watermark_never_moves_backwards() {
        let partition = partition_with(&[batch(0, 5, 100), batch(5, 5, 100)]);
        partition.lock().publish(batch(0, 5, 100));
        assert_eq!(partition.offsets().1, 10);
        assert_eq!(partition.lock().batches.len(), 2);
    }
}
