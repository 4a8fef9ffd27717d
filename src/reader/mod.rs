//! Reads batches from either tier behind one call: the WAL for offsets still in it, object
//! blocks for older ones. Blocks come through a moka cache weighted by bytes, so a cold read
//! costs one ranged GET per cache miss (never one per batch, never a whole object), and
//! concurrent misses for the same block are fetched once.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use moka::future::Cache;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::metrics::Metrics;
use crate::partition::{Partition, ReadPlan, RemoteSegment};
use crate::protocol::record_batch::BatchHeader;
use crate::segment::object::Block;
use crate::wal::Wal;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReaderError {
    #[error("object store read of {key}: {source}")]
    ObjectStore {
        key: String,
        source: Arc<object_store::Error>,
    },
    #[error("WAL read: {0}")]
    Wal(Arc<std::io::Error>),
    #[error("block {key}@{start} is damaged: {reason}")]
    Damaged {
        key: String,
        start: u64,
        reason: String,
    },
}

mod disk_cache;

pub use disk_cache::DiskCache;

/// Object key and block start.
type BlockKey = (Arc<str>, u64);

pub struct Reader {
    wal: Arc<Wal>,
    store: Arc<dyn ObjectStore>,
    /// `None` with `--cache-memory-bytes 0`.
    blocks: Option<Cache<BlockKey, Bytes>>,
    disk: Option<DiskCache>,
    metrics: Arc<Metrics>,
}

impl Reader {
    pub fn new(
        wal: Arc<Wal>,
        store: Arc<dyn ObjectStore>,
        cache_memory_bytes: u64,
        disk: Option<DiskCache>,
        metrics: Arc<Metrics>,
    ) -> Reader {
        let blocks = (cache_memory_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(cache_memory_bytes)
                .weigher(|_: &BlockKey, value: &Bytes| {
                    u32::try_from(value.len()).unwrap_or(u32::MAX)
                })
                .build()
        });
        Reader {
            wal,
            store,
            blocks,
            disk,
            metrics,
        }
    }

    /// The batches a plan names, concatenated. For a cold plan: the whole block.
    pub async fn read(&self, plan: &ReadPlan) -> Result<Bytes, ReaderError> {
        match plan {
            ReadPlan::Hot(locations) => self.read_hot(locations.clone()).await,
            ReadPlan::Cold { segment, block } => self.read_block(segment, block).await,
        }
    }

    /// Batches from `offset` on, up to `bytes_max` (but the first batch always when
    /// `first_always`), starting in the bucket at `first` (a cold plan) and going on block after
    /// block, then into the WAL, until the limit is reached or the data ends. One fetch of a
    /// consumer that is far behind thus carries as much as it asked for, not one block.
    pub async fn read_from_bucket(
        &self,
        partition: &Partition,
        first: (Arc<RemoteSegment>, Block),
        mut offset: i64,
        bytes_max: usize,
        first_always: bool,
    ) -> Result<Bytes, ReaderError> {
        let mut parts: Vec<Bytes> = Vec::new();
        let mut left = bytes_max;
        let mut plan = ReadPlan::Cold {
            segment: first.0,
            block: first.1,
        };
        loop {
            let first_always = first_always && parts.is_empty();
            let (part, cold) = match plan {
                ReadPlan::Cold { segment, block } => {
                    // A block that cannot be read after others were ends the answer early with
                    // what was read; the consumer's next fetch asks for the rest.
                    let bytes = match self.read_block(&segment, &block).await {
                        Ok(bytes) => bytes,
                        Err(_) if !parts.is_empty() => break,
                        Err(error) => return Err(error),
                    };
                    let part =
                        batches_from(&bytes, offset, left, first_always).map_err(|reason| {
                            ReaderError::Damaged {
                                key: segment.key.to_string(),
                                start: block.start,
                                reason,
                            }
                        })?;
                    (part, true)
                }
                ReadPlan::Hot(locations) if locations.is_empty() => break,
                // A WAL read that fails after some blocks were read ends the answer early: the
                // consumer's next fetch plans again (the segment may just have been uploaded).
                ReadPlan::Hot(locations) => match self.read_hot(locations).await {
                    Ok(part) => (part, false),
                    Err(_) if !parts.is_empty() => break,
                    Err(error) => return Err(error),
                },
            };
            let Some(next) = offset_after(&part) else {
                break;
            };
            left = left.saturating_sub(part.len());
            parts.push(part);
            // The WAL plan already took everything up to the limit.
            if !cold || left == 0 {
                break;
            }
            offset = next;
            plan = partition.plan_read(offset, left, false);
        }
        Ok(concat(parts))
    }

    /// WAL batches, read off the executor.
    pub async fn read_hot(
        &self,
        locations: Vec<crate::partition::BatchLocation>,
    ) -> Result<Bytes, ReaderError> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.read(&locations))
            .await
            .map_err(|e| ReaderError::Wal(Arc::new(std::io::Error::other(e))))?
            .map_err(|e| ReaderError::Wal(Arc::new(e)))
    }

    /// One block of an object: from memory, from the disk cache, or with one ranged GET.
    /// Concurrent misses for one block wait for a single load when the memory cache is on.
    pub async fn read_block(
        &self,
        segment: &RemoteSegment,
        block: &Block,
    ) -> Result<Bytes, ReaderError> {
        self.read_range(&segment.key, block.range()).await
    }

    /// A byte range of an object, cached like a block. Callers must always ask for the same
    /// range at a given start (the cache is keyed by object and start): data blocks and
    /// search's index chunks never start at the same byte.
    pub async fn read_range(
        &self,
        object: &object_store::path::Path,
        range: Range<u64>,
    ) -> Result<Bytes, ReaderError> {
        let key: BlockKey = (object.as_ref().into(), range.start);
        let failed = |source| ReaderError::ObjectStore {
            key: object.to_string(),
            source,
        };
        let Some(blocks) = &self.blocks else {
            return self
                .load(key, object, range)
                .await
                .map_err(|e| failed(Arc::new(e)));
        };
        if let Some(cached) = blocks.get(&key).await {
            self.metrics.cache_hits.inc();
            return Ok(cached);
        }
        blocks
            .try_get_with(key.clone(), self.load(key, object, range))
            .await
            .map_err(failed)
    }

    /// A block from the disk cache, or from the bucket (then kept on disk).
    async fn load(
        &self,
        key: BlockKey,
        object: &object_store::path::Path,
        range: Range<u64>,
    ) -> Result<Bytes, object_store::Error> {
        if let Some(disk) = &self.disk {
            if let Some(bytes) = disk.get(&key).await {
                self.metrics.cache_hits.inc();
                return Ok(bytes);
            }
        }
        self.metrics.cache_misses.inc();
        let bytes = self.store.get_range(object, range).await?;
        self.metrics.object_gets.inc();
        self.metrics.bytes_fetched_remote.inc_by(bytes.len() as u64);
        if let Some(disk) = &self.disk {
            disk.put(key, bytes.clone()).await;
        }
        Ok(bytes)
    }
}

/// The offset after the last whole batch in `batches`; `None` if there is none.
fn offset_after(batches: &Bytes) -> Option<i64> {
    let mut at = 0;
    let mut next = None;
    while at < batches.len() {
        let header = BatchHeader::parse_unchecked(&batches[at..]).ok()?;
        next = Some(header.last_offset().checked_add(1)?);
        at += header.total_bytes();
    }
    next
}

/// One buffer from several; no copy when there is only one.
fn concat(parts: Vec<Bytes>) -> Bytes {
    if parts.len() <= 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut all = bytes::BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for part in parts {
        all.extend_from_slice(&part);
    }
    all.freeze()
}

/// From a block's bytes (whole batches, in offset order): the contiguous run of batches that
/// starts with the one holding `offset`, within `bytes_max`, but at least one batch when
/// `first_always` (KIP-74). Zero-copy: a slice of the block.
pub fn batches_from(
    block: &Bytes,
    offset: i64,
    bytes_max: usize,
    first_always: bool,
) -> Result<Bytes, String> {
    let mut at = 0;
    let mut start = None;
    while at < block.len() {
        let header = BatchHeader::parse_unchecked(&block[at..]).map_err(|e| e.to_string())?;
        let end = at + header.total_bytes();
        if end > block.len() {
            return Err("a batch runs past the block".into());
        }
        if header.last_offset() >= offset {
            let first = *start.get_or_insert(at);
            let too_big = end - first > bytes_max;
            if too_big && !(first == at && first_always) {
                return Ok(block.slice(first..at));
            }
        }
        at = end;
    }
    Ok(start.map_or_else(Bytes::new, |first| block.slice(first..at)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn block(batches: &[(i64, i32)]) -> Bytes {
        let mut out = BytesMut::new();
        for &(base, count) in batches {
            let mut bytes = crate::protocol::record_batch::tests_support::batch(count);
            crate::protocol::record_batch::set_base_offset(&mut bytes, base);
            out.extend_from_slice(&bytes);
        }
        out.freeze()
    }

    fn offsets(bytes: &Bytes) -> Vec<i64> {
        crate::protocol::record_batch::split_batches(bytes)
            .unwrap()
            .iter()
            .map(|(h, _)| h.base_offset)
            .collect()
    }

    #[test]
    fn selects_from_the_batch_holding_the_offset_within_the_limit() {
        let data = block(&[(0, 5), (5, 5), (10, 5)]);
        let one = data.len() / 3;
        assert_eq!(
            offsets(&batches_from(&data, 7, usize::MAX, true).unwrap()),
            vec![5, 10]
        );
        assert_eq!(
            offsets(&batches_from(&data, 0, one + 1, true).unwrap()),
            vec![0]
        );
        assert_eq!(
            offsets(&batches_from(&data, 0, 1, true).unwrap()),
            vec![0],
            "first batch always"
        );
        assert!(batches_from(&data, 0, 1, false).unwrap().is_empty());
        assert!(batches_from(&data, 15, usize::MAX, true)
            .unwrap()
            .is_empty());
    }
}
