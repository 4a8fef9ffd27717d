//! The hot index: records still in the WAL, searchable within `--search-refresh-ms` of being
//! acknowledged. One Tantivy index per WAL segment, in `<data-dir>/search/hot/<segment>/`
//! (on disk, so memory stays bounded by the writer budget, not by the WAL). A background task
//! reads, every refresh interval, the batches each partition published above what it already
//! indexed, and commits. The produce path does no work for it.
//!
//! An index lives as long as its WAL segment. Once a pass that began after the segment was
//! sealed has finished, the segment's index holds every record of it and is closed ("covered");
//! the indexer then packs that very index into the segment's object instead of indexing the
//! records a second time. Once the indexer uploads the segment and deletes it, its hot index is
//! deleted too. Meanwhile the same records are in both tiers; a search
//! takes each offset from one tier only (see `search::ranges`). The directory is emptied at
//! start-up and rebuilt from the WAL.
//!
//! Indexing costs more CPU per byte than taking records in, so on a small machine produce can
//! outrun it. Past `--search-lag-bytes-max` of WAL not yet indexed, produce requests wait for
//! the index's progress (`HotIndex::pace`): the broker then takes records at the rate it can index them,
//! searches stay fresh, and the WAL does not grow without bound.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use tantivy::{
    Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Searcher, TantivyDocument,
};
use uuid::Uuid;

use crate::broker::Broker;
use crate::limits;
use crate::partition::BatchLocation;
use crate::segment::canonical::CanonicalBatch;
use crate::segment::index::{document, schema, Fields};
use crate::segment::scratch_directory::ScratchDirectory;
use crate::wal::segment::{ENTRY_HEADER_BYTES, ENTRY_PREFIX_BYTES};
use crate::wal::Wal;

use super::SearchError;

/// Readers of the hot indexes, by WAL segment; shared with searches and the indexer.
pub struct HotIndex {
    root: PathBuf,
    readers: Mutex<BTreeMap<u64, IndexReader>>,
    /// Segments below this one are covered: a pass that began after they were sealed finished,
    /// and their writers are closed. 0 after a reset.
    covered_below: AtomicU64,
    /// Asks the refresher for a pass now (the indexer is waiting for a sealed segment).
    wake: Notify,
    /// Notified at the end of every pass.
    passed: Notify,
    /// How far into the WAL's appended bytes the index has come: exact at the end of a pass
    /// (the count when it began; a failed pass counts too, it must not hold produce), and
    /// estimated from the batches indexed while a pass runs.
    indexed_mark: AtomicU64,
    /// Notified whenever `indexed_mark` moves, and when the indexer frees WAL (wakes held
    /// produce requests).
    progressed: Notify,
}

impl HotIndex {
    /// Empties `root` (what a previous run left is rebuilt from the WAL).
    pub fn open(root: PathBuf) -> std::io::Result<HotIndex> {
        match std::fs::remove_dir_all(&root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&root)?;
        Ok(HotIndex {
            root,
            readers: Mutex::new(BTreeMap::new()),
            covered_below: AtomicU64::new(0),
            wake: Notify::new(),
            passed: Notify::new(),
            indexed_mark: AtomicU64::new(0),
            progressed: Notify::new(),
        })
    }

    /// Waits, up to `wait`, until sealed `segment` is covered, asking the refresher for a pass;
    /// then the directory of its index, if it has one (a segment without a record of a live
    /// topic has none). `None` also when the refresher did not get there in time.
    pub async fn covered_index(&self, segment: u64, wait: Duration) -> Option<PathBuf> {
        let deadline = tokio::time::Instant::now() + wait;
        while self.covered_below.load(Ordering::Acquire) <= segment {
            let passed = self.passed.notified();
            tokio::pin!(passed);
            passed.as_mut().enable();
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline, passed).await.is_err() {
                return None;
            }
        }
        let dir = self.root.join(format!("{segment:020}"));
        dir.join("meta.json").exists().then_some(dir)
    }

    /// WAL bytes appended that the index has not taken in yet.
    pub fn lag_bytes(&self, wal: &Wal) -> u64 {
        wal.appended_bytes()
            .saturating_sub(self.indexed_mark.load(Ordering::Acquire))
    }

    /// While `behind()` holds, waits for the index's progress or `notify_progress` (asking for
    /// passes back to back), until `until` at the latest. True if it waited at all.
    pub async fn pace(&self, behind: impl Fn() -> bool, until: tokio::time::Instant) -> bool {
        if !behind() {
            return false;
        }
        loop {
            let progressed = self.progressed.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if !behind() {
                break;
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(until, progressed).await.is_err() {
                break;
            }
        }
        true
    }

    /// Wakes requests held by `pace` to look again (the indexer freed WAL).
    pub fn notify_progress(&self) {
        self.progressed.notify_waiters();
    }

    /// Moves `indexed_mark` up to `mark` (never down) and wakes held produce requests.
    fn advance(&self, mark: u64) {
        self.indexed_mark.fetch_max(mark, Ordering::AcqRel);
        self.progressed.notify_waiters();
    }

    /// A searcher of every hot index, as of its last refresh.
    pub fn searchers(&self) -> Vec<Searcher> {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(IndexReader::searcher)
            .collect()
    }

    fn publish(&self, segment: u64, reader: IndexReader) {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(segment, reader);
    }

    fn forget(&self, segment: u64) {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&segment);
    }
}

/// Writers open at once: the active segment's and one more.
const WRITERS_OPEN_MAX: usize = 2;

/// The background task's side: the writers and how far each partition is indexed.
struct Refresher {
    broker: Arc<Broker>,
    fields: Fields,
    /// Open writers, at most `WRITERS_OPEN_MAX` (each holds its memory budget).
    writers: BTreeMap<u64, IndexWriter>,
    /// Segments with a hot index on disk, and their readers.
    readers: BTreeMap<u64, IndexReader>,
    /// Per partition, the next offset to index.
    indexed: HashMap<(Uuid, i32), i64>,
}

/// Refreshes the hot index every `--search-refresh-ms` until shutdown.
pub async fn run(broker: Arc<Broker>) {
    let interval = Duration::from_millis(broker.config.search_refresh_ms.max(1));
    let mut refresher = Some(Refresher {
        broker: broker.clone(),
        fields: schema().1,
        writers: BTreeMap::new(),
        readers: BTreeMap::new(),
        indexed: HashMap::new(),
    });
    loop {
        let Some(mut current) = refresher.take() else {
            return;
        };
        let mark = broker.wal.appended_bytes();
        let pass = crate::background::run("strata-search", move || {
            let result = current.refresh(mark);
            (current, result)
        })
        .await;
        match pass {
            Ok((mut current, result)) => {
                if let Err(error) = result {
                    tracing::warn!(%error, "hot search index refresh failed; rebuilding it");
                    current.reset();
                }
                refresher = Some(current);
            }
            Err(error) => {
                tracing::error!(%error, "hot search index refresher stopped");
                // Nothing indexes any more: produce must not wait for it.
                broker.search.hot.advance(u64::MAX);
                broker.search.hot.passed.notify_waiters();
                return;
            }
        }
        broker.search.hot.advance(mark);
        broker.search.hot.passed.notify_waiters();
        tokio::select! {
            _ = broker.shutdown.cancelled() => {
                broker.search.hot.advance(u64::MAX);
                return;
            }
            _ = tokio::time::sleep(interval) => {}
            _ = broker.search.hot.wake.notified() => {}
        }
    }
}

impl Refresher {
    /// One pass: index what was published since the last, commit, drop what was uploaded.
    /// `mark` is the WAL's appended count as the pass began: `indexed_mark` moves towards it
    /// as batches are indexed, so held produce requests go as soon as the lag allows.
    fn refresh(&mut self, mark: u64) -> Result<(), SearchError> {
        // Read first: every batch of a segment below it was published before this pass began.
        let active = self.broker.wal.active_segment();
        let broker = self.broker.clone();
        let hot = &broker.search.hot;
        let base = hot.indexed_mark.load(Ordering::Acquire);
        let mut progress = 0u64;
        let mut touched = BTreeSet::new();
        let mut live = BTreeSet::new();
        for partition in self.broker.topics.partitions() {
            let key = (partition.topic_id, partition.index);
            live.insert(key);
            let mut from = self.indexed.get(&key).copied().unwrap_or(i64::MIN);
            // Up to what the partition holds now, which covers every batch of the segments
            // below `active`. Batches published meanwhile wait for the next pass, so a pass
            // always ends.
            let Some(end) = partition.lock().batches.back().map(|b| b.last_offset) else {
                continue;
            };
            while from <= end {
                let page = next_page(&partition.lock().batches, from, end);
                let Some(last) = page.last() else {
                    break;
                };
                from = last.last_offset + 1;
                self.index_batches(&partition.topic_id, partition.index, &page, &mut touched)?;
                progress += page.iter().map(wal_bytes).sum::<u64>();
                hot.advance(base.saturating_add(progress).min(mark));
                self.indexed.insert(key, from);
            }
        }
        self.indexed.retain(|key, _| live.contains(key));
        for segment in touched {
            self.commit(segment)?;
        }
        self.retire(active)?;
        hot.covered_below.fetch_max(active, Ordering::AcqRel);
        Ok(())
    }

    /// Forgets every hot index, to be rebuilt from the WAL by the next pass: after a failed
    /// pass, uncommitted documents and the positions reached would disagree.
    fn reset(&mut self) {
        self.broker
            .search
            .hot
            .covered_below
            .store(0, Ordering::Release);
        for (_, writer) in std::mem::take(&mut self.writers) {
            close(writer);
        }
        self.indexed.clear();
        for segment in std::mem::take(&mut self.readers).into_keys() {
            self.remove(segment);
        }
    }

    fn remove(&self, segment: u64) {
        self.broker.search.hot.forget(segment);
        let dir = self.dir(segment);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "cannot delete a hot search index");
        }
    }

    /// Indexes consecutive WAL batches of one partition.
    fn index_batches(
        &mut self,
        topic_id: &Uuid,
        partition: i32,
        locations: &[BatchLocation],
        touched: &mut BTreeSet<u64>,
    ) -> Result<(), SearchError> {
        let bytes = match self.broker.wal.read(locations) {
            Ok(bytes) => bytes,
            // Uploaded and trimmed meanwhile: the cold tier has them now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SearchError::Wal(e.to_string())),
        };
        let topic = topic_id.to_string();
        let mut at = 0;
        for location in locations {
            let end = at + location.bytes as usize;
            let batch = bytes.slice(at..end);
            at = end;
            let Ok(canonical) = CanonicalBatch::from_batch(&batch) else {
                // Stored and served, but not searchable (as in the cold tier).
                continue;
            };
            let documents: Vec<TantivyDocument> = canonical
                .records
                .iter()
                .map(|record| document(&self.fields, &topic, partition, record))
                .collect();
            let writer = self.writer(location.segment_id)?;
            for doc in documents {
                writer.add_document(doc)?;
            }
            touched.insert(location.segment_id);
        }
        Ok(())
    }

    fn writer(&mut self, segment: u64) -> Result<&mut IndexWriter, SearchError> {
        if !self.writers.contains_key(&segment) {
            if self.writers.len() >= WRITERS_OPEN_MAX {
                // Rebuilding a long WAL at start-up touches many segments in one pass.
                let oldest = *self.writers.keys().next().expect("not empty");
                self.commit(oldest)?;
                if let Some(writer) = self.writers.remove(&oldest) {
                    close(writer);
                }
            }
            let dir = self.dir(segment);
            let index = if self.readers.contains_key(&segment) {
                Index::open(ScratchDirectory::open(&dir)?)?
            } else {
                std::fs::create_dir_all(&dir).map_err(|e| SearchError::Wal(e.to_string()))?;
                let directory = ScratchDirectory::open(&dir)?;
                Index::create(directory, schema().0, IndexSettings::default())?
            };
            let writer = index.writer_with_num_threads(1, limits::SEARCH_HOT_WRITER_BYTES)?;
            if !self.readers.contains_key(&segment) {
                let reader: IndexReader = index
                    .reader_builder()
                    .reload_policy(ReloadPolicy::Manual)
                    .try_into()?;
                self.broker.search.hot.publish(segment, reader.clone());
                self.readers.insert(segment, reader);
            }
            self.writers.insert(segment, writer);
        }
        Ok(self.writers.get_mut(&segment).expect("inserted above"))
    }

    /// Makes what was added to a segment's index searchable.
    fn commit(&mut self, segment: u64) -> Result<(), SearchError> {
        if let Some(writer) = self.writers.get_mut(&segment) {
            writer.commit()?;
        }
        if let Some(reader) = self.readers.get(&segment) {
            reader.reload()?;
        }
        Ok(())
    }

    fn dir(&self, segment: u64) -> PathBuf {
        self.broker.search.hot.root.join(format!("{segment:020}"))
    }

    /// Closes the writers of sealed segments (fully indexed now) and deletes the indexes of
    /// segments no longer in the WAL.
    fn retire(&mut self, active: u64) -> Result<(), SearchError> {
        let sealed: Vec<u64> = self.writers.range(..active).map(|(s, _)| *s).collect();
        for segment in sealed {
            if let Some(writer) = self.writers.remove(&segment) {
                close(writer);
            }
        }
        let on_disk: BTreeSet<u64> = self.broker.wal.sealed_segments().into_iter().collect();
        let gone: Vec<u64> = self
            .readers
            .keys()
            .copied()
            .filter(|s| *s < active && !on_disk.contains(s))
            .collect();
        for segment in gone {
            self.readers.remove(&segment);
            self.remove(segment);
        }
        Ok(())
    }
}

/// Drops a writer once its merges are done, so that nothing writes to its index afterwards
/// (the indexer may be copying its files).
fn close(writer: IndexWriter) {
    if let Err(error) = writer.wait_merging_threads() {
        tracing::warn!(%error, "a hot search index merge failed");
    }
}

/// The WAL bytes a batch took: the batch and its entry's framing.
fn wal_bytes(location: &BatchLocation) -> u64 {
    u64::from(location.bytes) + ENTRY_HEADER_BYTES + ENTRY_PREFIX_BYTES
}

/// The batches from offset `from` up to the one ending at `end`, at most
/// `SEARCH_HOT_READ_BYTES` of them (at least one): copied out a page at a time, so the
/// partition's lock, which produce takes too, is held for a page, and the copy stays small
/// however far the index lags (a 4 GiB lag of 1-record batches is millions of them).
fn next_page(batches: &VecDeque<BatchLocation>, from: i64, end: i64) -> Vec<BatchLocation> {
    let at = batches.partition_point(|b| b.base_offset < from);
    let mut page = Vec::new();
    let mut bytes = 0usize;
    for batch in batches.range(at..).take_while(|b| b.last_offset <= end) {
        if !page.is_empty() && bytes + batch.bytes as usize > limits::SEARCH_HOT_READ_BYTES {
            break;
        }
        bytes += batch.bytes as usize;
        page.push(*batch);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches of `records` records of 1 KiB each, from offset 0.
    fn batches(count: i64, records: i64) -> VecDeque<BatchLocation> {
        (0..count)
            .map(|i| BatchLocation {
                base_offset: i * records,
                last_offset: i * records + records - 1,
                max_timestamp: 0,
                segment_id: 1,
                position: (i * records * 1024) as u64,
                bytes: (records * 1024) as u32,
            })
            .collect()
    }

    #[test]
    fn pages_are_bounded_and_cover_exactly_from_to_end() {
        let all = batches(20_000, 1);
        let per_page = limits::SEARCH_HOT_READ_BYTES / 1024;
        let end = 15_000;
        let mut from = 3;
        let mut seen = Vec::new();
        loop {
            let page = next_page(&all, from, end);
            let Some(last) = page.last() else { break };
            assert!(page.len() <= per_page, "{} batches in a page", page.len());
            from = last.last_offset + 1;
            seen.extend(page.iter().map(|b| b.base_offset));
        }
        assert_eq!(seen, (3..=15_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_larger_than_a_page_is_a_page_of_its_own() {
        let records = (limits::SEARCH_HOT_READ_BYTES / 1024) as i64 * 2;
        let all = batches(3, records);
        let page = next_page(&all, records, i64::MAX);
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].base_offset, records);
        // Nothing past `end`, even when it falls inside a batch.
        assert!(next_page(&all, 0, records - 2).is_empty());
    }
}
