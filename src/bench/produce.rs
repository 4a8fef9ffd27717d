//! The producer side: K connections, each owning a share of the partitions, each sending
//! RecordBatches of `--batch-bytes` (or what `--linger-ms` gathered at `--rate`) with up to
//! `--in-flight` requests outstanding. A sender task encodes and writes; a receiver task reads
//! the acknowledgements in order and records their latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, Semaphore};

use super::client::{read_response, topic_name, Client, TopicLayout};
use super::report::{new_histogram, record_latency, Counters};
use super::LoadArgs;

/// Record values are slices of this many pseudo-random letters, so compression sees text-like
/// data rather than one repeated value.
pub const PAYLOAD_POOL_BYTES: usize = 1 << 20;

/// A request on the wire, waiting for its acknowledgement.
struct Pending {
    correlation_id: i32,
    sent: Instant,
    records: u64,
    bytes: u64,
}

/// What the producer tasks share.
struct Shared {
    args: LoadArgs,
    topic: String,
    counters: Arc<Counters>,
    /// Records left to send when `--records` bounds the run.
    left: Option<AtomicU64>,
    deadline: Option<Instant>,
    payload: Bytes,
    /// Stamp each record's key with its send time (microseconds since the epoch), for e2e.
    stamp_keys: bool,
}

/// Runs the producers to the end; returns their merged latency histogram.
pub async fn run(
    args: &LoadArgs,
    topic: &str,
    layout: &TopicLayout,
    counters: Arc<Counters>,
    stamp_keys: bool,
) -> anyhow::Result<Histogram<u64>> {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        args: args.clone(),
        topic: topic.to_string(),
        counters,
        left: args.records.map(AtomicU64::new),
        deadline: args.duration_s.map(|s| start + Duration::from_secs_f64(s)),
        payload: payload_pool(),
        stamp_keys,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (leader, partitions) in assignments(layout, args.producers as usize) {
        let shared = shared.clone();
        let rate = args.rate.map(|r| r / args.producers as f64);
        tasks.spawn(async move { producer(shared, leader, partitions, rate).await });
    }
    let mut merged = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        let histogram = joined.map_err(|e| anyhow!("producer task failed: {e}"))??;
        merged.add(&histogram).map_err(|e| anyhow!("{e:?}"))?;
    }
    Ok(merged)
}

/// Producer k takes partitions k, k+K, ... (or partition k mod N when there are more producers
/// than partitions), split by leader: one connection per (producer, leader).
fn assignments(layout: &TopicLayout, producers: usize) -> Vec<(String, Vec<i32>)> {
    let count = layout.leaders.len();
    let mut out = Vec::new();
    for k in 0..producers {
        let mine: Vec<usize> = if producers >= count {
            vec![k % count]
        } else {
            (k..count).step_by(producers).collect()
        };
        let mut by_leader: Vec<(String, Vec<i32>)> = Vec::new();
        for p in mine {
            let leader = &layout.leaders[p];
            match by_leader.iter_mut().find(|(l, _)| l == leader) {
                Some((_, list)) => list.push(p as i32),
                None => by_leader.push((leader.clone(), vec![p as i32])),
            }
        }
        out.extend(by_leader);
    }
    out
}

async fn producer(
    shared: Arc<Shared>,
    leader: String,
    partitions: Vec<i32>,
    rate: Option<f64>,
) -> anyhow::Result<Histogram<u64>> {
    let client = Client::connect(&leader).await?;
    let version = client.versions.produce;
    let acks = shared.args.acks.0;
    let mut frames = Framer::new(version);
    let (reader, mut writer) = client.split();
    let in_flight = Arc::new(Semaphore::new(shared.args.in_flight.max(1)));
    let (pending_tx, pending_rx) = mpsc::unbounded_channel::<Pending>();
    let receiver = (acks != 0).then(|| {
        let shared = shared.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(receive(shared, reader, version, pending_rx, in_flight))
    });

    let mut pacer = Pacer::new(&shared.args, rate);
    let mut next_partition = 0usize;
    let mut offset_in_pool = 0usize;
    while let Some(count) = pacer.next_batch(&shared).await {
        let Some(count) = claim(&shared, count) else {
            break;
        };
        let partition = partitions[next_partition % partitions.len()];
        next_partition += 1;
        let batch = encode_batch(&shared, count, &mut offset_in_pool)?;
        let request = produce_request(&shared.topic, partition, acks, batch);
        let (frame, correlation_id) = frames.frame(request)?;
        let permit = in_flight.clone().acquire_owned().await?;
        let sent = Instant::now();
        writer.write_all(&frame).await?;
        let bytes = count * shared.args.record_bytes as u64;
        if acks == 0 {
            drop(permit);
            shared.counters.add(count, bytes);
            continue;
        }
        permit.forget();
        pending_tx.send(Pending {
            correlation_id,
            sent,
            records: count,
            bytes,
        })?;
    }
    drop(pending_tx);
    let histogram = match receiver {
        Some(task) => task.await??,
        None => new_histogram(),
    };
    writer.shutdown().await.ok();
    Ok(histogram)
}

/// Reads acknowledgements in request order.
async fn receive(
    shared: Arc<Shared>,
    mut reader: OwnedReadHalf,
    version: i16,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    in_flight: Arc<Semaphore>,
) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = new_histogram();
    while let Some(request) = pending.recv().await {
        let (correlation_id, response) =
            read_response::<ProduceRequest>(&mut reader, version).await?;
        let latency = request.sent.elapsed();
        in_flight.add_permits(1);
        if correlation_id != request.correlation_id {
            return Err(anyhow!(
                "produce response {correlation_id} for request {}",
                request.correlation_id
            ));
        }
        match partition_error(&response) {
            None => {
                record_latency(&mut histogram, latency);
                shared.counters.add(request.records, request.bytes);
            }
            Some(error) => shared.counters.error(request.records, error),
        }
    }
    Ok(histogram)
}

fn partition_error(response: &ProduceResponse) -> Option<String> {
    let answers = response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses);
    for answer in answers {
        if answer.error_code != 0 {
            return Some(format!(
                "produce to partition {}: error {} {:?}",
                answer.index, answer.error_code, answer.error_message
            ));
        }
    }
    None
}

/// Takes up to `want` records from the run's budget; `None` when the run is over.
fn claim(shared: &Shared, want: u64) -> Option<u64> {
    if shared.deadline.is_some_and(|d| Instant::now() >= d) {
        return None;
    }
    let Some(left) = &shared.left else {
        return Some(want);
    };
    let before = left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
            (l > 0).then(|| l.saturating_sub(want))
        })
        .ok()?;
    Some(want.min(before))
}

/// Decides when a batch closes and how many records it holds.
struct Pacer {
    records_per_batch: u64,
    linger: Duration,
    /// `(start, records per second, records scheduled so far)` when `--rate` is set.
    rate: Option<(Instant, f64, u64)>,
}

impl Pacer {
    fn new(args: &LoadArgs, rate: Option<f64>) -> Pacer {
        Pacer {
            records_per_batch: (args.batch_bytes / args.record_bytes.max(1)).max(1) as u64,
            linger: Duration::from_millis(args.linger_ms),
            rate: rate.map(|r| (Instant::now(), r.max(1e-3), 0)),
        }
    }

    /// Waits until the next batch is due; returns its record count. Without `--rate`, batches
    /// are always full and due at once. With it, record i is due at start + i/rate, and a batch
    /// closes when it is full or `--linger-ms` after its first record was due.
    async fn next_batch(&mut self, shared: &Shared) -> Option<u64> {
        let Some((start, rate, scheduled)) = &mut self.rate else {
            return Some(self.records_per_batch);
        };
        let due_at = |i: u64| *start + Duration::from_secs_f64(i as f64 / *rate);
        let first_due = due_at(*scheduled);
        let full_at = due_at(*scheduled + self.records_per_batch - 1);
        let close = full_at.min(first_due + self.linger);
        if shared.deadline.is_some_and(|d| close >= d) {
            return None;
        }
        tokio::time::sleep_until(close.into()).await;
        let due_now = (start.elapsed().as_secs_f64() * *rate) as u64 + 1;
        let count = due_now
            .saturating_sub(*scheduled)
            .clamp(1, self.records_per_batch);
        *scheduled += count;
        Some(count)
    }
}

/// Encodes request frames for one connection.
struct Framer {
    version: i16,
    next_correlation_id: i32,
}

impl Framer {
    fn new(version: i16) -> Framer {
        Framer {
            version,
            next_correlation_id: 1,
        }
    }

    fn frame(&mut self, request: ProduceRequest) -> anyhow::Result<(Bytes, i32)> {
        use kafka_protocol::messages::RequestHeader;
        use kafka_protocol::protocol::StrBytes;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(kafka_protocol::messages::ApiKey::Produce as i16)
            .with_request_api_version(self.version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-bench")));
        let frame = crate::protocol::encode_request(&header, &request.into())?;
        Ok((frame, correlation_id))
    }
}

fn produce_request(topic: &str, partition: i32, acks: i16, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])])
}

/// One RecordBatch of `count` records (not idempotent: producer id -1, base sequence -1).
fn encode_batch(shared: &Shared, count: u64, at: &mut usize) -> anyhow::Result<Bytes> {
    let size = shared.args.record_bytes;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let timestamp_ms = now.as_millis() as i64;
    let key = shared
        .stamp_keys
        .then(|| Bytes::copy_from_slice(&(now.as_micros() as u64).to_be_bytes()));
    let records: Vec<Record> = (0..count as i64)
        .map(|i| {
            if *at + size > shared.payload.len() {
                *at = 0;
            }
            let value = shared
                .payload
                .slice(*at..*at + size.min(shared.payload.len()));
            *at += 61;
            plain_record(i, timestamp_ms, key.clone(), value)
        })
        .collect();
    let mut buffer = BytesMut::with_capacity(count as usize * (size + 32) + 128);
    let options = RecordEncodeOptions {
        version: 2,
        compression: shared.args.compression.0,
    };
    RecordBatchEncoder::encode(&mut buffer, records.iter(), &options)?;
    Ok(buffer.freeze())
}

/// The `offset`-th record of a plain (not idempotent) batch: producer id -1, base sequence -1.
pub fn plain_record(offset: i64, timestamp: i64, key: Option<Bytes>, value: Bytes) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // One below the offset: the encoder keeps one batch while offset - sequence is
        // constant, and the batch's base sequence is -1 (no idempotence).
        sequence: offset as i32 - 1,
        timestamp,
        key,
        value: Some(value),
        headers: Default::default(),
    }
}

/// Pseudo-random lowercase letters (an xorshift generator: reproducible, no dependency).
fn payload_pool() -> Bytes {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..PAYLOAD_POOL_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::BatchHeader;

    fn layout(leaders: &[&str]) -> TopicLayout {
        TopicLayout {
            leaders: leaders.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn producers_share_the_partitions_and_connect_to_each_leader() {
        let four = layout(&["a", "b", "a", "b"]);
        assert_eq!(
            assignments(&four, 2),
            vec![("a".to_string(), vec![0, 2]), ("b".to_string(), vec![1, 3]),]
        );
        let mixed = assignments(&four, 1);
        assert_eq!(
            mixed,
            vec![("a".to_string(), vec![0, 2]), ("b".to_string(), vec![1, 3])]
        );
        // More producers than partitions: they double up.
        let one = layout(&["a"]);
        assert_eq!(assignments(&one, 3).len(), 3);
        assert!(assignments(&one, 3).iter().all(|(_, p)| p == &vec![0]));
    }

    #[test]
    fn an_encoded_batch_holds_every_record_and_no_sequence() {
        let shared = Shared {
            args: LoadArgs {
                partitions: 1,
                record_bytes: 100,
                records: Some(10),
                duration_s: None,
                acks: super::super::Acks(-1),
                producers: 1,
                batch_bytes: 1000,
                linger_ms: 0,
                rate: None,
                compression: super::super::CompressionArg(
                    kafka_protocol::records::Compression::None,
                ),
                in_flight: 1,
            },
            topic: "t".into(),
            counters: Arc::new(Counters::default()),
            left: Some(AtomicU64::new(25)),
            deadline: None,
            payload: payload_pool(),
            stamp_keys: true,
        };
        let mut at = 0;
        let batch = encode_batch(&shared, 10, &mut at).unwrap();
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.record_count(), 10);
        assert_eq!(header.producer_id, -1);
        assert_eq!(header.base_sequence, -1);
        // The budget hands out what is left, then nothing.
        assert_eq!(claim(&shared, 10), Some(10));
        assert_eq!(claim(&shared, 10), Some(10));
        assert_eq!(claim(&shared, 10), Some(5));
        assert_eq!(claim(&shared, 10), None);
    }
}
