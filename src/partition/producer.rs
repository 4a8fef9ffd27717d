//! Idempotent-producer state of one partition: per producer id, its epoch and the sequence
//! ranges of its last few batches, so a retried batch is recognised and answered with the
//! offset it was first written at, and a gap is refused. Rebuilt from the WAL on replay.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::limits;
use crate::protocol::record_batch::{wrapping_sequence, BatchHeader};

/// What a batch from an idempotent producer means for this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data, next in sequence: append it.
    Append,
    /// A retry of a batch already written at this base offset: answer success, write nothing.
    Duplicate { base_offset: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id}: sequence {got} does not follow {last}")]
    OutOfOrder {
        producer_id: i64,
        got: i32,
        last: i32,
    },
    #[error("producer {producer_id}: epoch {got} is older than the current epoch {current}")]
    FencedEpoch {
        producer_id: i64,
        got: i16,
        current: i16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct WrittenBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<WrittenBatch>,
}

/// A written batch with its producer's epoch.
struct BatchHeaderLite {
    epoch: i16,
    batch: WrittenBatch,
}

/// Producer id -> its state in one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producers {
    entries: HashMap<i64, ProducerEntry>,
}

impl Producers {
    /// Decides what to do with an idempotent batch, as Kafka does: same epoch and the next
    /// sequence appends; a sequence range already written is a duplicate; a newer epoch must
    /// start again at 0; an older epoch is fenced. A producer this partition has never seen
    /// (or whose state was trimmed away) may start at any sequence.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        let Some(entry) = self.entries.get(&header.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::FencedEpoch {
                producer_id: header.producer_id,
                got: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            if header.base_sequence == 0 {
                return Ok(SequenceCheck::Append);
            }
            return Err(SequenceError::OutOfOrder {
                producer_id: header.producer_id,
                got: header.base_sequence,
                last: -1,
            });
        }
        let last_sequence = header.last_sequence();
        if let Some(written) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: written.base_offset,
            });
        }
        let last = entry.batches.back().map_or(-1, |b| b.last_sequence);
        if header.base_sequence == wrapping_sequence(last, 1) {
            return Ok(SequenceCheck::Append);
        }
        Err(SequenceError::OutOfOrder {
            producer_id: header.producer_id,
            got: header.base_sequence,
            last,
        })
    }

    /// Records a batch that was appended at `base_offset`.
    pub fn record(&mut self, header: &BatchHeader, base_offset: i64) {
        let batch = WrittenBatch {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset,
        };
        self.record_written(
            header.producer_id,
            BatchHeaderLite {
                epoch: header.producer_epoch,
                batch,
            },
        );
    }

    /// Folds in the state of a later stretch of the log (an uploaded object's batches), as if
    /// its batches were recorded now. Used at start-up, in log order, before WAL replay.
    pub fn merge_later(&mut self, later: &Producers) {
        for (producer_id, entry) in &later.entries {
            for batch in &entry.batches {
                let header = BatchHeaderLite {
                    epoch: entry.epoch,
                    batch: *batch,
                };
                self.record_written(*producer_id, header);
            }
        }
    }

    fn record_written(&mut self, producer_id: i64, written: BatchHeaderLite) {
        let entry = self
            .entries
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: written.epoch,
                batches: VecDeque::new(),
            });
        if written.epoch != entry.epoch {
            entry.epoch = written.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == limits::PRODUCER_BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(written.batch);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state of one producer, to put back if the write that recorded it fails.
    pub fn snapshot(&self, producer_id: i64) -> Option<ProducerEntry> {
        self.entries.get(&producer_id).cloned()
    }

    pub fn restore(&mut self, producer_id: i64, entry: Option<ProducerEntry>) {
        match entry {
            Some(entry) => self.entries.insert(producer_id, entry),
            None => self.entries.remove(&producer_id),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: count,
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut producers = Producers::default();
        let first = header(7, 0, 0, 10);
        assert_eq!(producers.check(&first), Ok(SequenceCheck::Append));
        producers.record(&first, 100);
        let second = header(7, 0, 10, 5);
        assert_eq!(producers.check(&second), Ok(SequenceCheck::Append));
        producers.record(&second, 110);
        assert_eq!(
            producers.check(&first),
            Ok(SequenceCheck::Duplicate { base_offset: 100 })
        );
        assert_eq!(
            producers.check(&second),
            Ok(SequenceCheck::Duplicate { base_offset: 110 })
        );
    }

    #[test]
    fn a_gap_is_out_of_order() {
        let mut producers = Producers::default();
        producers.record(&header(7, 0, 0, 10), 0);
        assert!(matches!(
            producers.check(&header(7, 0, 11, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut producers = Producers::default();
        producers.record(&header(7, 3, 0, 10), 0);
        assert!(matches!(
            producers.check(&header(7, 2, 10, 1)),
            Err(SequenceError::FencedEpoch { .. })
        ));
        assert_eq!(
            producers.check(&header(7, 4, 0, 1)),
            Ok(SequenceCheck::Append)
        );
        assert!(producers.check(&header(7, 4, 5, 1)).is_err());
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut producers = Producers::default();
        for i in 0..7 {
            producers.record(&header(1, 0, i, 1), i64::from(i));
        }
        assert!(producers.check(&header(1, 0, 0, 1)).is_err());
        assert_eq!(
            producers.check(&header(1, 0, 2, 1)),
            Ok(SequenceCheck::Duplicate { base_offset: 2 })
        );
    }

    #[test]
    fn merging_stretches_in_order_equals_recording_everything() {
        let headers: Vec<BatchHeader> = (0..9)
            .map(|i| {
                header(
                    3,
                    if i < 6 { 0 } else { 1 },
                    if i < 6 { i } else { i - 6 },
                    1,
                )
            })
            .collect();
        let mut all = Producers::default();
        headers
            .iter()
            .enumerate()
            .for_each(|(i, h)| all.record(h, i as i64));
        let mut merged = Producers::default();
        for stretch in [0..4, 4..7, 7..9] {
            let mut part = Producers::default();
            stretch.for_each(|i| part.record(&headers[i], i as i64));
            merged.merge_later(&part);
        }
        assert_eq!(merged, all);
    }

    #[test]
    fn restore_undoes_a_record() {
        let mut producers = Producers::default();
        let before = producers.snapshot(9);
        producers.record(&header(9, 0, 0, 1), 0);
        producers.restore(9, before);
        assert_eq!(producers.snapshot(9), None);
    }
}
