//! End to end with a real Kafka client library (rskafka): topic creation, produce with and
//! without compression, fetch, and offset lookups, comparing every field that comes back.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rskafka::chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset};

/// Bounds a whole client operation: rskafka retries some errors without a deadline.
async fn bounded<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 15 s"))
}

async fn client(strata: &Strata) -> Client {
    bounded(
        "connect",
        ClientBuilder::new(vec![strata.bootstrap()]).build(),
    )
    .await
    .expect("build an rskafka client")
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

const T0: i64 = 1_700_000_000_000;

/// Record `i` of partition `p`: keys, values and headers with the edge cases mixed in
/// (null key, null value, empty value, no headers, binary and unicode headers).
fn record(p: i32, i: usize) -> Record {
    let key = if i % 5 == 4 {
        None
    } else {
        Some(format!("p{p}-key-{i}").into_bytes())
    };
    let value = match i % 7 {
        3 => None,
        5 => Some(Vec::new()),
        _ => Some(
            format!("p{p}-value-{i}-")
                .into_bytes()
                .into_iter()
                .chain((0..(i * 13) % 300).map(|b| b as u8))
                .collect(),
        ),
    };
    let mut headers = BTreeMap::new();
    if !i.is_multiple_of(3) {
        headers.insert("seq".to_string(), i.to_string().into_bytes());
        headers.insert("bin".to_string(), vec![0, 255, i as u8]);
    }
    if i % 4 == 1 {
        headers.insert("héader-ü".to_string(), "ünïcode".as_bytes().to_vec());
    }
    Record {
        key,
        value,
        headers,
        // One second apart per record, so timestamp lookups have something to find.
        timestamp: millis(T0 + 1000 * i as i64),
    }
}

async fn fetch_everything(
    partition: &PartitionClient,
    high_watermark: i64,
) -> Vec<RecordAndOffset> {
    let mut all = Vec::new();
    let mut offset = 0;
    while offset < high_watermark {
        let (records, hw) = bounded(
            "fetch_records",
            partition.fetch_records(offset, 1..1_000_000, 1_000),
        )
        .await
        .expect("fetch_records");
        assert_eq!(hw, high_watermark, "high watermark reported by fetch");
        assert!(!records.is_empty(), "no records at {offset} below {hw}");
        offset = records.last().unwrap().offset + 1;
        all.extend(records);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rskafka_produces_and_fetches_every_field_with_every_compression() {
    let strata = Strata::start();
    let client = client(&strata).await;
    let controller = client.controller_client().unwrap();
    bounded("create_topic", controller.create_topic("e2e", 3, 1, 10_000))
        .await
        .expect("create_topic");
    let topics = bounded("list_topics", client.list_topics()).await.unwrap();
    let topic = topics.iter().find(|t| t.name == "e2e").expect("listed");
    assert_eq!(
        topic.partitions.iter().copied().collect::<Vec<_>>(),
        vec![0, 1, 2]
    );

    // Each partition gets batches of several sizes, each with its own compression.
    let compressions = [
        Compression::NoCompression,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Snappy,
        Compression::Zstd,
    ];
    let mut expected: Vec<Vec<Record>> = vec![Vec::new(); 3];
    let mut partitions = Vec::new();
    for p in 0..3 {
        let partition = bounded(
            "partition_client",
            client.partition_client("e2e", p, UnknownTopicHandling::Error),
        )
        .await
        .expect("partition_client");
        let mut next = 0usize;
        for (round, size) in [1usize, 10, 3, 25, 2, 40].into_iter().enumerate() {
            let compression = compressions[(round + p as usize) % compressions.len()];
            let batch: Vec<Record> = (next..next + size).map(|i| record(p, i)).collect();
            let offsets = bounded("produce", partition.produce(batch.clone(), compression))
                .await
                .unwrap_or_else(|e| panic!("produce {compression:?} to {p}: {e}"));
            let want: Vec<i64> = (next as i64..(next + size) as i64).collect();
            assert_eq!(offsets, want, "offsets of a {compression:?} batch on {p}");
            next += size;
            expected[p as usize].extend(batch);
        }
        partitions.push(partition);
    }

    for (p, partition) in partitions.iter().enumerate() {
        let want = &expected[p];
        let n = want.len() as i64;
        let got = fetch_everything(partition, n).await;
        assert_eq!(got.len(), want.len(), "records on partition {p}");
        for (i, (got, want)) in got.iter().zip(want).enumerate() {
            assert_eq!(got.offset, i as i64, "offsets are contiguous from 0");
            assert_eq!(&got.record, want, "record {i} on partition {p}");
        }

        // Fetching from the middle of a compressed batch starts at that offset.
        let (from_middle, _) = bounded(
            "fetch_records",
            partition.fetch_records(20, 1..1_000_000, 1_000),
        )
        .await
        .unwrap();
        assert_eq!(from_middle.first().map(|r| r.offset), Some(20));
        assert_eq!(from_middle[0].record, want[20]);

        assert_eq!(
            bounded("earliest", partition.get_offset(OffsetAt::Earliest))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            bounded("latest", partition.get_offset(OffsetAt::Latest))
                .await
                .unwrap(),
            n
        );
        // By timestamp: the first record at or after it.
        for (at, offset) in [
            (T0 - 5, 0),
            (T0, 0),
            (T0 + 1, 1),
            (T0 + 13_000, 13),
            (T0 + 13_500, 14),
            (T0 + 1000 * (n - 1), n - 1),
        ] {
            let found = bounded(
                "timestamp",
                partition.get_offset(OffsetAt::Timestamp(millis(at))),
            )
            .await
            .unwrap();
            assert_eq!(found, offset, "partition {p}: offset at T0{:+} ms", at - T0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rskafka_sees_out_of_range_and_deleted_topics() {
    let strata = Strata::start_with(&["--auto-create-topics", "false"]);
    let client = client(&strata).await;
    let controller = client.controller_client().unwrap();
    bounded(
        "create_topic",
        controller.create_topic("gone", 1, 1, 10_000),
    )
    .await
    .unwrap();
    let error = bounded(
        "create_topic",
        controller.create_topic("gone", 1, 1, 10_000),
    )
    .await
    .expect_err("creating an existing topic");
    assert!(
        format!("{error:?}").contains("TopicAlreadyExists"),
        "{error:?}"
    );
    let partition = bounded(
        "partition_client",
        client.partition_client("gone", 0, UnknownTopicHandling::Error),
    )
    .await
    .unwrap();
    let record = record(0, 1);
    bounded(
        "produce",
        partition.produce(vec![record.clone()], Compression::NoCompression),
    )
    .await
    .unwrap();
    let error = bounded(
        "fetch_records",
        partition.fetch_records(2, 1..1_000_000, 100),
    )
    .await
    .expect_err("fetch above the high watermark");
    assert!(
        format!("{error:?}").contains("OffsetOutOfRange"),
        "{error:?}"
    );

    bounded("delete_topic", controller.delete_topic("gone", 10_000))
        .await
        .unwrap();
    let topics = bounded("list_topics", client.list_topics()).await.unwrap();
    assert!(topics.iter().all(|t| t.name != "gone"), "{topics:?}");
}
