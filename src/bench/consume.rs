//! The consumer side: one connection per partition, fetching from a start offset (the earliest,
//! the latest, or a number; cold or hot tier alike) and counting records and bytes from the
//! RecordBatch headers alone. The e2e consumer also decodes records to read the send time that
//! the producer stamped into each key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::records::RecordBatchDecoder;

use super::client::{Client, FetchSpec, TopicLayout, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::report::{new_histogram, record_latency, Counters};
use crate::protocol::record_batch::{BatchHeader, HEADER_BYTES};

/// How long a fetch waits for data the consumer has not yet got.
const FETCH_MAX_WAIT_MS: i32 = 500;

/// Where a consumer starts.
#[derive(Debug, Clone, Copy)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;

    fn from_str(text: &str) -> Result<StartAt, String> {
        match text {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            number => number
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(StartAt::Offset)
                .ok_or_else(|| format!("`{text}` is not earliest, latest or an offset")),
        }
    }
}

/// What one partition's consumer does.
#[derive(Clone)]
pub struct Plan {
    pub topic: String,
    pub start: StartAt,
    /// Stop at the high watermark seen at the start (else run until `stop`).
    pub to_high_watermark: bool,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    /// Decode records and measure produce-to-consume latency from their keys.
    pub measure_keys: bool,
}

/// Runs one consumer per partition until each reaches its end, or `stop` is set.
pub async fn run(
    plan: &Plan,
    layout: &TopicLayout,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Histogram<u64>> {
    let consumers = prepare(plan, layout, counters, stop).await?;
    run_prepared(consumers).await
}

/// Connects one consumer per partition and fixes where each starts (and ends), so that a
/// producer started afterwards cannot slip records in before a `latest` start.
pub async fn prepare(
    plan: &Plan,
    layout: &TopicLayout,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<PartitionConsumer>> {
    let mut consumers = Vec::with_capacity(layout.leaders.len());
    for (partition, leader) in layout.leaders.iter().enumerate() {
        let mut client = Client::connect(leader).await?;
        let (from, end) = bounds(&mut client, plan, partition as i32).await?;
        consumers.push(PartitionConsumer {
            client,
            plan: plan.clone(),
            partition: partition as i32,
            next_offset: from,
            end,
            counters: counters.clone(),
            stop: stop.clone(),
            histogram: new_histogram(),
        });
    }
    Ok(consumers)
}

/// Runs prepared consumers to their end; returns their merged latency histogram.
pub async fn run_prepared(consumers: Vec<PartitionConsumer>) -> anyhow::Result<Histogram<u64>> {
    let mut tasks = tokio::task::JoinSet::new();
    for consumer in consumers {
        tasks.spawn(consumer.run());
    }
    let mut merged = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        let histogram = joined.map_err(|e| anyhow!("consumer task failed: {e}"))??;
        merged.add(&histogram).map_err(|e| anyhow!("{e:?}"))?;
    }
    Ok(merged)
}

/// The first offset to fetch and, when reading to the high watermark, the last one (exclusive).
async fn bounds(
    client: &mut Client,
    plan: &Plan,
    partition: i32,
) -> anyhow::Result<(i64, Option<i64>)> {
    let high_watermark = client
        .list_offset(&plan.topic, partition, LATEST_TIMESTAMP)
        .await?;
    let from = match plan.start {
        StartAt::Earliest => {
            client
                .list_offset(&plan.topic, partition, EARLIEST_TIMESTAMP)
                .await?
        }
        StartAt::Latest => high_watermark,
        StartAt::Offset(offset) => offset,
    };
    Ok((from, plan.to_high_watermark.then_some(high_watermark)))
}

pub struct PartitionConsumer {
    client: Client,
    plan: Plan,
    partition: i32,
    next_offset: i64,
    end: Option<i64>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    histogram: Histogram<u64>,
}

impl PartitionConsumer {
    async fn run(mut self) -> anyhow::Result<Histogram<u64>> {
        while !self.done() {
            let spec = FetchSpec {
                topic: &self.plan.topic,
                partition: self.partition,
                offset: self.next_offset,
                max_wait_ms: FETCH_MAX_WAIT_MS,
                min_bytes: 1,
                max_bytes: self.plan.max_bytes,
                partition_max_bytes: self.plan.partition_max_bytes,
            };
            let response = self.client.fetch(&spec).await?;
            let records = self.records_of(response)?;
            self.take(&records)?;
        }
        Ok(self.histogram)
    }

    fn done(&self) -> bool {
        if let Some(end) = self.end {
            return self.next_offset >= end;
        }
        self.stop.load(Ordering::Relaxed)
    }

    fn records_of(&self, response: FetchResponse) -> anyhow::Result<Bytes> {
        if response.error_code != 0 {
            bail!("fetch: error {}", response.error_code);
        }
        let data = response
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == self.partition)
            .ok_or_else(|| anyhow!("fetch response without partition {}", self.partition))?;
        if data.error_code != 0 {
            bail!(
                "fetch {}/{} at {}: error {}",
                self.plan.topic,
                self.partition,
                self.next_offset,
                data.error_code
            );
        }
        Ok(data.records.unwrap_or_default())
    }

    /// Counts the whole batches in a records field (a broker may cut the last one short) and
    /// moves past them.
    fn take(&mut self, records: &Bytes) -> anyhow::Result<()> {
        let mut at = 0;
        while records.len() - at >= HEADER_BYTES {
            let header = BatchHeader::parse_unchecked(&records[at..])?;
            let end = at + header.total_bytes();
            if end > records.len() {
                break;
            }
            let last = header.last_offset();
            if last >= self.next_offset && !header.is_control() {
                let batch = records.slice(at..end);
                let count = self.count(&header, batch)?;
                self.counters.add(count, header.total_bytes() as u64);
            }
            self.next_offset = self.next_offset.max(last + 1);
            at = end;
        }
        Ok(())
    }

    /// Records of the batch at or above the fetch offset; with `measure_keys`, their latency.
    fn count(&mut self, header: &BatchHeader, mut batch: Bytes) -> anyhow::Result<u64> {
        if !self.plan.measure_keys {
            let skipped = (self.next_offset - header.base_offset).max(0);
            return Ok((header.record_count() - skipped) as u64);
        }
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let set = RecordBatchDecoder::decode(&mut batch)?;
        let mut count = 0;
        for record in set.records.iter().filter(|r| r.offset >= self.next_offset) {
            count += 1;
            let Some(sent_us) = record.key.as_ref().and_then(|k| k.get(..8)) else {
                continue;
            };
            let sent_us = u64::from_be_bytes(sent_us.try_into().expect("8 bytes"));
            let latency = Duration::from_micros(now_us.saturating_sub(sent_us));
            record_latency(&mut self.histogram, latency);
        }
        Ok(count)
    }
}
