//! Search over every record of a topic, in both tiers. A query (Tantivy's language) runs on the
//! index of every object that can hold a match (pruned by partition, offsets and timestamps
//! from the footers) and on the hot index of the WAL; each offset is taken from exactly one
//! tier, hits are merged into one global top N (by score or by offset), and each hit's record
//! is read back as produced, through the same reads Fetch uses.
//!
//! Invariants: every search is bounded (`limits::SEARCH_HITS_MAX` hits, one candidate list of
//! at most that many per index); Tantivy work, which blocks, runs off the async executor; a
//! query Tantivy cannot parse is the user's error, with Tantivy's message.

mod directory;
pub mod hot;
pub mod query;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::Query;
use tantivy::{DocAddress, Index, Order, ReloadPolicy, Searcher};

use crate::broker::Broker;
use crate::limits;
use crate::partition::{Partition, ReadPlan, Topic};
use crate::reader::batches_from;
use crate::segment::canonical::{CanonicalBatch, CanonicalRecord};
use crate::segment::index::readable;
use crate::segment::object::IndexFile;

use directory::ObjectDirectory;
use hot::HotIndex;
use query::PartitionRange;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("reading records: {0}")]
    Read(#[from] crate::reader::ReaderError),
    #[error("opening the index of {key}: {reason}")]
    Open { key: String, reason: String },
    #[error("hot index: {0}")]
    Wal(String),
    #[error("search task failed: {0}")]
    Task(String),
}

/// Hit order: best score first, or lowest offset first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchOrder {
    #[default]
    Score,
    Offset,
}

/// A search: the query in Tantivy's language and optional bounds (all inclusive).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchRequest {
    /// Topic to search.
    pub topic: String,
    /// Query: terms, "phrases", AND/OR/NOT, `key:`, `value:`, `value.<json field>:`,
    /// `header.<name>:`. Default fields: key and value.
    pub q: String,
    pub partition: Option<i32>,
    /// Record timestamps from (inclusive, ms since the epoch).
    pub from_ts: Option<i64>,
    /// Record timestamps up to (inclusive).
    pub to_ts: Option<i64>,
    pub from_offset: Option<i64>,
    /// Offsets up to (inclusive).
    pub to_offset: Option<i64>,
    /// Hits to return: default 10, at most 1000; 0 only counts.
    pub limit: Option<usize>,
    pub order: Option<SearchOrder>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub topic: String,
    /// Records that match, in both tiers (not only those returned).
    pub total: u64,
    pub hits: Vec<Hit>,
    /// Indexes searched: objects in the bucket, then WAL segments.
    pub objects_searched: usize,
    pub hot_indexes_searched: usize,
    pub took_ms: u64,
}

/// A record that matched, as it was produced. Keys and values that are not UTF-8 are base64.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<String>,
    pub key_base64: bool,
    pub value: Option<String>,
    pub value_base64: bool,
    pub headers: Vec<HitHeader>,
    /// BM25 score (with `order=score`).
    pub score: Option<f32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HitHeader {
    pub key: String,
    pub value: Option<String>,
    pub value_base64: bool,
}

/// The broker's search state: the hot index and the opened indexes of objects.
pub struct Search {
    pub hot: HotIndex,
    /// Objects are immutable: an index opened once serves every later search.
    cold: Cache<Arc<str>, Searcher>,
}

impl Search {
    pub fn open(data_dir: &std::path::Path) -> std::io::Result<Search> {
        Ok(Search {
            hot: HotIndex::open(data_dir.join("search").join("hot"))?,
            cold: Cache::builder()
                .max_capacity(limits::SEARCH_OPEN_INDEXES_MAX)
                .build(),
        })
    }
}

/// A match before its record is read.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    score: Option<f32>,
    partition: i32,
    offset: i64,
}

/// What one partition contributes: its offsets in each tier, and its objects.
struct Plan {
    cold: Vec<PartitionRange>,
    hot: Vec<PartitionRange>,
    objects: BTreeMap<String, Arc<[IndexFile]>>,
}

pub async fn search(
    broker: &Arc<Broker>,
    request: SearchRequest,
) -> Result<SearchResponse, SearchError> {
    let started = Instant::now();
    let limit = request.limit.unwrap_or(limits::SEARCH_HITS_DEFAULT);
    if limit > limits::SEARCH_HITS_MAX {
        return Err(SearchError::BadRequest(format!(
            "limit {limit} is above the maximum of {}",
            limits::SEARCH_HITS_MAX
        )));
    }
    let user_query = query::parse(&request.q).map_err(SearchError::BadRequest)?;
    let topic = broker.topics.get(&request.topic).ok_or_else(|| {
        SearchError::NotFound(format!("topic `{}` does not exist", request.topic))
    })?;
    let partitions = selected(&topic, request.partition)?;
    let plan = plan(&partitions, &request);
    let mut cold = Vec::with_capacity(plan.objects.len());
    for (key, files) in &plan.objects {
        cold.push(open(broker, key, files).await?);
    }
    let hot = broker.search.hot.searchers();
    let counts = (cold.len(), hot.len());
    let order = request.order.unwrap_or_default();
    let timestamps = (request.from_ts, request.to_ts);
    let topic_id = topic.id;
    let (total, candidates) = tokio::task::spawn_blocking(move || {
        let cold_query = query::filtered(&*user_query, &topic_id, &plan.cold, timestamps);
        let hot_query = query::filtered(&*user_query, &topic_id, &plan.hot, timestamps);
        let mut total = 0;
        let mut candidates = Vec::new();
        let runs = cold
            .iter()
            .map(|s| (s, &plan.cold, &cold_query))
            .chain(hot.iter().map(|s| (s, &plan.hot, &hot_query)));
        for (searcher, ranges, query) in runs {
            if ranges.is_empty() {
                continue;
            }
            let (count, found) =
                run(searcher, query.as_ref(), limit, order).map_err(|e| match e {
                    // A query Tantivy parses but cannot run (a range over a JSON value field).
                    SearchError::Tantivy(tantivy::TantivyError::InvalidArgument(message)) => {
                        SearchError::BadRequest(message)
                    }
                    other => other,
                })?;
            total += count as u64;
            candidates.extend(found);
        }
        Ok::<_, SearchError>((total, best(candidates, limit, order)))
    })
    .await
    .map_err(|e| SearchError::Task(e.to_string()))??;
    let hits = read_hits(broker, &topic, &partitions, candidates).await?;
    Ok(SearchResponse {
        topic: topic.name.to_string(),
        total,
        hits,
        objects_searched: counts.0,
        hot_indexes_searched: counts.1,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

fn selected(topic: &Topic, partition: Option<i32>) -> Result<Vec<Arc<Partition>>, SearchError> {
    match partition {
        None => Ok(topic.partitions.to_vec()),
        Some(index) => topic
            .partition(index)
            .map(|p| vec![p.clone()])
            .ok_or_else(|| {
                SearchError::NotFound(format!("topic `{}` has no partition {index}", topic.name))
            }),
    }
}

/// Per partition, which offsets each tier answers for: the bucket below its end, the WAL from
/// there to the high watermark, both from the log start and within the request's offsets.
/// An object uploaded but not yet trimmed from the WAL is in both tiers; this split counts
/// each of its records once.
fn plan(partitions: &[Arc<Partition>], request: &SearchRequest) -> Plan {
    let mut plan = Plan {
        cold: Vec::new(),
        hot: Vec::new(),
        objects: BTreeMap::new(),
    };
    let from = request.from_offset.unwrap_or(0);
    let to = request.to_offset.map_or(i64::MAX, |o| o.saturating_add(1));
    for partition in partitions {
        let state = partition.lock();
        let remote_end = state.remote_end_offset();
        let cold = (state.log_start_offset.max(from), remote_end.min(to));
        let hot = (
            state.log_start_offset.max(remote_end).max(from),
            state.high_watermark.min(to),
        );
        if cold.0 < cold.1 {
            plan.cold.push(range(partition.index, cold));
            for segment in &state.remote {
                let overlaps = segment.last_offset() >= cold.0 && segment.base_offset() < cold.1;
                let recent_enough = request
                    .from_ts
                    .is_none_or(|ts| segment.blocks.max_timestamp >= ts);
                if overlaps && recent_enough {
                    plan.objects
                        .insert(segment.key.to_string(), segment.index_files.clone());
                }
            }
        }
        if hot.0 < hot.1 {
            plan.hot.push(range(partition.index, hot));
        }
    }
    plan
}

fn range(partition: i32, (start, end): (i64, i64)) -> PartitionRange {
    PartitionRange {
        partition,
        start,
        end,
    }
}

/// The searcher of an object's index, opened once and cached.
async fn open(
    broker: &Arc<Broker>,
    key: &str,
    files: &Arc<[IndexFile]>,
) -> Result<Searcher, SearchError> {
    let failed = |reason: String| SearchError::Open {
        key: key.to_string(),
        reason,
    };
    let directory = ObjectDirectory::new(key.into(), files, broker.reader.clone());
    let opening = async move {
        tokio::task::spawn_blocking(move || {
            let index = Index::open(directory).map_err(|e| e.to_string())?;
            if !readable(&index.schema()) {
                // Never search an index whose fields mean something else: it would match
                // the wrong records or nothing, silently.
                return Err("its index schema is not this broker's".to_string());
            }
            let reader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()
                .map_err(|e: tantivy::TantivyError| e.to_string())?;
            Ok(tantivy::IndexReader::searcher(&reader))
        })
        .await
        .map_err(|e| e.to_string())?
    };
    broker
        .search
        .cold
        .try_get_with(key.into(), opening)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// The matches of one index: how many, and the best `limit` of them.
fn run(
    searcher: &Searcher,
    query: &dyn Query,
    limit: usize,
    order: SearchOrder,
) -> Result<(usize, Vec<Candidate>), SearchError> {
    // TopDocs panics on a limit of 0: only count then.
    if limit == 0 {
        return Ok((searcher.search(query, &Count)?, Vec::new()));
    }
    let top = TopDocs::with_limit(limit);
    let (count, found): (usize, Vec<(Option<f32>, DocAddress)>) = match order {
        SearchOrder::Score => {
            let (docs, count) = searcher.search(query, &(top.order_by_score(), Count))?;
            (count, docs.into_iter().map(|(s, a)| (Some(s), a)).collect())
        }
        SearchOrder::Offset => {
            let by_offset = top.order_by_fast_field::<i64>("offset", Order::Asc);
            let (docs, count) = searcher.search(query, &(by_offset, Count))?;
            (count, docs.into_iter().map(|(_, a)| (None, a)).collect())
        }
    };
    let candidates = found
        .into_iter()
        .map(|(score, address)| locate(searcher, score, address))
        .collect::<Result<_, _>>()?;
    Ok((count, candidates))
}

fn locate(
    searcher: &Searcher,
    score: Option<f32>,
    address: DocAddress,
) -> Result<Candidate, SearchError> {
    let fast = searcher.segment_reader(address.segment_ord).fast_fields();
    let value = |name: &str| -> Result<i64, SearchError> {
        fast.i64(name)?.first(address.doc_id).ok_or_else(|| {
            SearchError::Tantivy(tantivy::TantivyError::InternalError(format!(
                "a document without `{name}`"
            )))
        })
    };
    Ok(Candidate {
        score,
        partition: i32::try_from(value("partition")?).unwrap_or(-1),
        offset: value("offset")?,
    })
}

/// The global top `limit` of every index's candidates.
fn best(mut candidates: Vec<Candidate>, limit: usize, order: SearchOrder) -> Vec<Candidate> {
    match order {
        SearchOrder::Score => candidates.sort_by(|a, b| {
            b.score
                .unwrap_or(0.0)
                .total_cmp(&a.score.unwrap_or(0.0))
                .then((a.offset, a.partition).cmp(&(b.offset, b.partition)))
        }),
        SearchOrder::Offset => candidates.sort_by_key(|c| (c.offset, c.partition)),
    }
    candidates.truncate(limit);
    candidates
}

/// Reads each hit's record (Fetch's reads: the WAL or a cached block), decoding each batch
/// once. A record that retention removed meanwhile is left out.
async fn read_hits(
    broker: &Arc<Broker>,
    topic: &Topic,
    partitions: &[Arc<Partition>],
    candidates: Vec<Candidate>,
) -> Result<Vec<Hit>, SearchError> {
    let mut batches: HashMap<(i32, i64), Arc<CanonicalBatch>> = HashMap::new();
    let mut hits = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let Some(partition) = partitions.iter().find(|p| p.index == candidate.partition) else {
            continue;
        };
        let cached = batches
            .iter()
            .find(|((p, base), b)| {
                *p == candidate.partition
                    && *base <= candidate.offset
                    && candidate.offset <= b.base_offset + i64::from(b.last_offset_delta)
            })
            .map(|(_, b)| b.clone());
        let batch = match cached {
            Some(batch) => Some(batch),
            None => read_batch(broker, partition, candidate.offset).await?,
        };
        let Some(batch) = batch else { continue };
        batches.insert((candidate.partition, batch.base_offset), batch.clone());
        if let Some(record) = batch.records.iter().find(|r| r.offset == candidate.offset) {
            hits.push(hit(topic, candidate, record));
        }
    }
    Ok(hits)
}

/// The batch holding `offset`, from whichever tier holds it now.
async fn read_batch(
    broker: &Arc<Broker>,
    partition: &Partition,
    offset: i64,
) -> Result<Option<Arc<CanonicalBatch>>, SearchError> {
    // Twice at most: the indexer may move the offset from the WAL to the bucket in between.
    for _ in 0..2 {
        let plan = partition.plan_read(offset, 1, true);
        let bytes = match broker.reader.read(&plan).await {
            Ok(bytes) => bytes,
            Err(crate::reader::ReaderError::Wal(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let bytes = match plan {
            ReadPlan::Hot(_) => bytes,
            ReadPlan::Cold { .. } => batches_from(&bytes, offset, 1, true)
                .map_err(|reason| SearchError::Wal(format!("damaged block: {reason}")))?,
        };
        return Ok(first_batch(&bytes, offset));
    }
    Ok(None)
}

fn first_batch(bytes: &Bytes, offset: i64) -> Option<Arc<CanonicalBatch>> {
    let batch = CanonicalBatch::from_batch(bytes).ok()?;
    let last = batch.base_offset + i64::from(batch.last_offset_delta);
    (batch.base_offset <= offset && offset <= last).then(|| Arc::new(batch))
}

fn hit(topic: &Topic, candidate: Candidate, record: &CanonicalRecord) -> Hit {
    let (key, key_base64) = text(record.key.as_ref());
    let (value, value_base64) = text(record.value.as_ref());
    Hit {
        topic: topic.name.to_string(),
        partition: candidate.partition,
        offset: record.offset,
        timestamp: record.timestamp,
        key,
        key_base64,
        value,
        value_base64,
        headers: record
            .headers
            .iter()
            .map(|h| {
                let (value, value_base64) = text(h.value.as_ref());
                HitHeader {
                    key: String::from_utf8_lossy(&h.key).into_owned(),
                    value,
                    value_base64,
                }
            })
            .collect(),
        score: candidate.score,
    }
}

/// UTF-8 text as is, anything else as base64 (and says so).
fn text(bytes: Option<&Bytes>) -> (Option<String>, bool) {
    let Some(bytes) = bytes else {
        return (None, false);
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_string()), false),
        Err(_) => (
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            true,
        ),
    }
}
