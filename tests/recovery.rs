//! Durability across restarts of the real process: SIGTERM (clean, exit 0) and SIGKILL (no
//! warning) keep every acknowledged record, byte for byte; offsets continue without a gap;
//! topic ids, producer ids and idempotence state survive; a torn WAL tail is cut.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    CreatePartitionsRequest, DeleteTopicsRequest, DescribeConfigsRequest, MetadataRequest,
};
use kafka_protocol::records::Compression;
use uuid::Uuid;

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Term,
    Kill,
}

fn stop(strata: &mut Strata, how: Stop) {
    match how {
        Stop::Term => {
            let status = strata.terminate();
            assert!(
                status.success(),
                "SIGTERM must end the broker with exit code 0, got {status:?}"
            );
        }
        Stop::Kill => strata.kill(),
    }
}

/// Everything observable about a partition's data.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    high_watermark: i64,
    raw: Vec<u8>,
}

async fn snapshot(conn: &mut Conn, topic: &str, partition: i32) -> Snapshot {
    let high_watermark = conn.high_watermark(topic, partition).await;
    let raw = conn.fetch_all_raw(topic, partition, 0).await;
    for batch in split_batches(&raw) {
        assert_crc_valid(batch);
    }
    Snapshot {
        high_watermark,
        raw,
    }
}

async fn topic_ids(conn: &mut Conn) -> BTreeMap<String, (Uuid, usize)> {
    let all = conn
        .call(METADATA_V, MetadataRequest::default().with_topics(None))
        .await;
    all.topics
        .iter()
        .map(|t| {
            assert_eq!(t.error_code, 0);
            (
                t.name.as_ref().unwrap().0.to_string(),
                (t.topic_id, t.partitions.len()),
            )
        })
        .collect()
}

/// Writes a mix of batches: sizes, compressions, a multi-batch request, an idempotent one.
async fn write_mix(conn: &mut Conn, topic: &str, partition: i32, round: usize) {
    let compressions = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for (i, compression) in compressions.into_iter().enumerate() {
        let records: Vec<TestRecord> = (0..1 + i * 4)
            .map(|j| TestRecord::simple(round * 1000 + i * 100 + j))
            .collect();
        let batch = encode_batch(&records, compression, None);
        let before = conn.high_watermark(topic, partition).await;
        assert_eq!(conn.produce_ok(topic, partition, batch).await, before);
    }
    let mut field = BytesMut::new();
    for n in [3, 1, 2] {
        field.extend_from_slice(&simple_batch(round * 1000 + 900 + n, n));
    }
    conn.produce_ok(topic, partition, field.freeze()).await;
}

async fn restart_keeps_everything(first: Stop, second: Stop, extra_args: &[&str]) {
    let mut strata = Strata::start_with(extra_args);
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("r3", 3).await;
    conn.create_topic("r1", 1).await;
    // Small WAL segments are uploaded (and would expire) while the test runs.
    conn.keep_forever("r3").await;
    conn.keep_forever("r1").await;
    let partitions = [("r3", 0), ("r3", 1), ("r3", 2), ("r1", 0)];
    for (round, (topic, partition)) in partitions.iter().enumerate() {
        write_mix(&mut conn, topic, *partition, round).await;
    }
    let (producer_id, _) = conn.init_producer_id().await;
    let idempotent = encode_batch(
        &[TestRecord::simple(1), TestRecord::simple(2)],
        Compression::Lz4,
        Some(Idempotence {
            producer_id,
            producer_epoch: 0,
            base_sequence: 0,
        }),
    );
    let idempotent_offset = conn.produce_ok("r1", 0, idempotent.clone()).await;

    let mut before = Vec::new();
    for (topic, partition) in partitions {
        before.push(snapshot(&mut conn, topic, partition).await);
    }
    let ids = topic_ids(&mut conn).await;
    let by_time = conn.list_offset("r3", 1, 1_700_000_000_000 + 1_205).await;
    drop(conn);

    for (run, how) in [first, second].into_iter().enumerate() {
        stop(&mut strata, how);
        strata.restart();
        let mut conn = Conn::connect(strata.kafka).await;
        assert_eq!(
            topic_ids(&mut conn).await,
            ids,
            "topics after {how:?} #{run}"
        );
        for ((topic, partition), expected) in partitions.iter().zip(&before) {
            let after = snapshot(&mut conn, topic, *partition).await;
            assert_eq!(
                after.high_watermark, expected.high_watermark,
                "{topic}/{partition}: high watermark after {how:?} #{run}"
            );
            assert!(
                after.raw.starts_with(&expected.raw),
                "{topic}/{partition}: stored bytes changed after {how:?} #{run}"
            );
        }
        assert_eq!(
            conn.list_offset("r3", 1, 1_700_000_000_000 + 1_205).await,
            by_time,
            "ListOffsets by timestamp after {how:?} #{run}"
        );
        // The idempotent batch is still known: its retry is not written again.
        assert_eq!(
            conn.produce_ok("r1", 0, idempotent.clone()).await,
            idempotent_offset,
            "retried idempotent batch after {how:?} #{run}"
        );
        // New data continues right after the old, on every partition.
        for ((topic, partition), expected) in partitions.iter().zip(before.iter_mut()) {
            let batch = simple_batch(5000 + run * 10, 3);
            let base = conn.produce_ok(topic, *partition, batch.clone()).await;
            assert_eq!(
                base, expected.high_watermark,
                "{topic}/{partition}: first offset after {how:?} #{run}"
            );
            let mut stored = batch.to_vec();
            stored[..8].copy_from_slice(&base.to_be_bytes());
            expected.raw.extend_from_slice(&stored);
            expected.high_watermark += 3;
            assert_eq!(snapshot(&mut conn, topic, *partition).await, *expected);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_then_sigkill_restarts_keep_every_byte_and_offsets_continue() {
    restart_keeps_everything(Stop::Term, Stop::Kill, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_over_many_small_wal_segments_keep_everything() {
    restart_keeps_everything(Stop::Kill, Stop::Kill, &["--wal-segment-bytes", "4096"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_pending_long_poll_exits_zero_promptly() {
    let mut strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("poll", 1).await;
    conn.produce_ok("poll", 0, simple_batch(0, 2)).await;
    // A long poll that would wait 20 s, and an idle second connection.
    conn.send(FETCH_V, fetch_request("poll", 0, 2, 20_000, 1))
        .await;
    let _idle = Conn::connect(strata.kafka).await;
    // Let the broker read the fetch and park it (had it not yet, the test would be weaker,
    // not wrong: there is no signal for "parked" to wait on).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    stop(&mut strata, Stop::Term);
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "SIGTERM took {took:?}: a pending long poll held up shutdown"
    );
    strata.restart();
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(conn.high_watermark("poll", 0).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_batch_survives_a_sigkill_under_load() {
    let mut strata = Strata::start();
    let mut setup = Conn::connect(strata.kafka).await;
    setup.create_topic("load", 3).await;
    drop(setup);

    // Three producers, one per partition, each pipelining up to 8 produces; every batch the
    // broker acknowledged is remembered with its offset.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(i32, i64, Bytes)>();
    let mut producers = Vec::new();
    for partition in 0..3 {
        let addr = strata.kafka;
        let acked = acked_tx.clone();
        producers.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await;
            let mut in_flight = std::collections::VecDeque::new();
            for i in 0..5000usize {
                let batch = simple_batch(i * 4, 1 + i % 4);
                let (frame, id) =
                    conn.frame(PRODUCE_V, produce_request("load", partition, batch.clone(), -1));
                use tokio::io::AsyncWriteExt;
                let write = conn.stream.write_all(&frame);
                match tokio::time::timeout(Duration::from_secs(10), write).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
                in_flight.push_back((id, batch));
                while in_flight.len() >= 8 || (i == 4999 && !in_flight.is_empty()) {
                    let (id, batch) = in_flight.pop_front().unwrap();
                    let frame = match tokio::time::timeout(
                        Duration::from_secs(10),
                        strata::protocol::read_frame(&mut conn.stream, 1 << 26),
                    )
                    .await
                    {
                        Ok(Ok(Some(frame))) => frame,
                        _ => return,
                    };
                    let (got, response) =
                        decode_response::<kafka_protocol::messages::ProduceRequest>(
                            PRODUCE_V, frame,
                        );
                    assert_eq!(got, id);
                    let answer = &response.responses[0].partition_responses[0];
                    assert_eq!(answer.error_code, 0);
                    if acked.send((partition, answer.base_offset, batch)).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    drop(acked_tx);

    // Kill the broker once enough has been acknowledged, while produces are in flight.
    let mut acked: Vec<(i32, i64, Bytes)> = Vec::new();
    while acked.len() < 600 {
        match tokio::time::timeout(Duration::from_secs(15), acked_rx.recv()).await {
            Ok(Some(ack)) => acked.push(ack),
            Ok(None) => break,
            Err(_) => panic!("no produce acknowledged within 15 s"),
        }
    }
    strata.kill();
    for producer in producers {
        tokio::time::timeout(Duration::from_secs(30), producer)
            .await
            .expect("a producer task hung after the kill")
            .expect("a producer task panicked");
    }
    while let Ok(ack) = acked_rx.try_recv() {
        acked.push(ack);
    }
    assert!(acked.len() >= 600);

    strata.restart();
    let mut conn = Conn::connect(strata.kafka).await;
    for partition in 0..3 {
        let raw = conn.fetch_all_raw("load", partition, 0).await;
        let stored: BTreeMap<i64, &[u8]> = split_batches(&raw)
            .into_iter()
            .map(|b| (batch_base_offset(b), b))
            .collect();
        // Offsets are contiguous from 0.
        let mut next = 0;
        for (base, batch) in &stored {
            assert_eq!(*base, next, "partition {partition}: a gap in the offsets");
            assert_crc_valid(batch);
            next += i64::from(batch_last_offset_delta(batch)) + 1;
        }
        for (p, base, batch) in acked.iter().filter(|(p, _, _)| *p == partition) {
            let found = stored.get(base).unwrap_or_else(|| {
                panic!("partition {p}: the batch acknowledged at offset {base} is gone")
            });
            assert_eq!(
                &found[8..],
                &batch[8..],
                "partition {p}: the batch at {base} changed"
            );
        }
        // And the partition takes new data after the recovered end.
        let base = conn.produce_ok("load", partition, simple_batch(0, 1)).await;
        assert_eq!(base, next, "partition {partition}: offset after recovery");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_are_never_reused_and_idempotence_survives_restarts() {
    let mut strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("idem", 1).await;

    let mut ids = BTreeSet::new();
    let mut take_ids = |conn_ids: Vec<i64>| {
        for id in conn_ids {
            assert!(id >= 0);
            assert!(ids.insert(id), "producer id {id} handed out twice");
        }
    };
    let (producer, epoch) = conn.init_producer_id().await;
    let mut fresh = vec![producer];
    for _ in 0..3 {
        fresh.push(conn.init_producer_id().await.0);
    }
    take_ids(fresh);

    let batch = |sequence: i32, count: usize| {
        let records: Vec<TestRecord> = (0..count)
            .map(|i| TestRecord::simple(sequence as usize + i))
            .collect();
        encode_batch(
            &records,
            Compression::Zstd,
            Some(Idempotence {
                producer_id: producer,
                producer_epoch: epoch,
                base_sequence: sequence,
            }),
        )
    };
    let b0 = batch(0, 5);
    let b1 = batch(5, 4);
    assert_eq!(conn.produce_ok("idem", 0, b0.clone()).await, 0);
    assert_eq!(conn.produce_ok("idem", 0, b1.clone()).await, 5);
    drop(conn);

    // Before the first restart: sequences 0..9 at offsets 0..9; each run adds one record.
    for (run, how) in [Stop::Kill, Stop::Term, Stop::Kill].into_iter().enumerate() {
        let next_sequence = 9 + run as i32;
        let high_watermark = 9 + run as i64;
        stop(&mut strata, how);
        strata.restart();
        let mut conn = Conn::connect(strata.kafka).await;
        let mut fresh = Vec::new();
        for _ in 0..3 {
            fresh.push(conn.init_producer_id().await.0);
        }
        take_ids(fresh);
        // Retries of the batches written before the restart: same offsets, nothing written.
        assert_eq!(
            conn.produce_ok("idem", 0, b1.clone()).await,
            5,
            "retry of the last batch after {how:?}"
        );
        assert_eq!(
            conn.produce_ok("idem", 0, b0.clone()).await,
            0,
            "retry of an earlier batch after {how:?}"
        );
        assert_eq!(conn.high_watermark("idem", 0).await, high_watermark);
        // A gap is still refused; the next sequence goes in.
        let answer = conn.produce("idem", 0, batch(next_sequence + 1, 1)).await;
        assert_eq!(
            answer.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER,
            "gap after {how:?}"
        );
        assert_eq!(
            conn.produce_ok("idem", 0, batch(next_sequence, 1)).await,
            high_watermark
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_metadata_survives_restarts_and_deleted_topics_stay_deleted() {
    let mut strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("kept", 2).await;
    let created = conn
        .call(
            CREATE_TOPICS_V,
            create_topics_request("configured", 1, &[("retention.ms", "1234567")]),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);
    let grown = conn
        .call(
            3,
            CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name("kept"))
                    .with_count(5)
                    .with_assignments(None)]),
        )
        .await;
    assert_eq!(grown.results[0].error_code, 0);
    conn.produce_ok("kept", 4, simple_batch(0, 3)).await;

    // A deleted topic with data, and a new topic of the same name afterwards.
    conn.create_topic("reborn", 1).await;
    conn.produce_ok("reborn", 0, simple_batch(0, 7)).await;
    conn.create_topic("gone", 1).await;
    conn.produce_ok("gone", 0, simple_batch(0, 2)).await;
    for topic in ["reborn", "gone"] {
        let deleted = conn
            .call(
                6,
                DeleteTopicsRequest::default()
                    .with_timeout_ms(10_000)
                    .with_topics(vec![
                        DeleteTopicState::default().with_name(Some(name(topic)))
                    ]),
            )
            .await;
        assert_eq!(deleted.responses[0].error_code, 0);
    }
    conn.create_topic("reborn", 1).await;
    conn.produce_ok("reborn", 0, simple_batch(100, 1)).await;
    let ids = topic_ids(&mut conn).await;
    assert_eq!(
        ids.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["configured", "kept", "reborn"]
    );
    drop(conn);

    for how in [Stop::Term, Stop::Kill] {
        stop(&mut strata, how);
        strata.restart();
        let mut conn = Conn::connect(strata.kafka).await;
        assert_eq!(topic_ids(&mut conn).await, ids, "topics after {how:?}");
        assert_eq!(conn.high_watermark("kept", 4).await, 3);
        let gone = conn.metadata(&["gone"], false).await;
        assert_eq!(gone.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
        // The old topic's data does not come back under the new topic of the same name.
        assert_eq!(conn.high_watermark("reborn", 0).await, 1, "after {how:?}");
        let records = decode_records(&Bytes::from(conn.fetch_all_raw("reborn", 0, 0).await));
        assert_eq!(records, vec![(0, TestRecord::simple(100))]);
        let described = conn
            .call(
                4,
                DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(str_bytes("configured"))
                        .with_configuration_keys(Some(vec![str_bytes("retention.ms")])),
                ]),
            )
            .await;
        let configs = &described.results[0].configs;
        assert_eq!(configs.len(), 1);
        assert_eq!(
            configs[0].value.as_deref(),
            Some("1234567"),
            "after {how:?}"
        );
    }
}

/// The newest WAL segment file.
fn last_wal_segment(strata: &Strata) -> PathBuf {
    let dir = strata.data_dir().join("wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a WAL segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_wal_tail_is_cut_and_appends_continue_after_the_cut() {
    let mut strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("torn", 1).await;
    let batches: Vec<Bytes> = (0..3).map(|i| simple_batch(i * 10, 4)).collect();
    for (i, batch) in batches.iter().enumerate() {
        assert_eq!(
            conn.produce_ok("torn", 0, batch.clone()).await,
            4 * i as i64
        );
    }
    let complete = snapshot(&mut conn, "torn", 0).await;
    drop(conn);

    // Garbage after the last entry, as a crash in the middle of an append leaves it.
    strata.kill();
    let segment = last_wal_segment(&strata);
    let mut bytes = std::fs::read(&segment).unwrap();
    let clean_length = bytes.len();
    // An entry header promising 256 bytes, then fewer than that, longer than the next entry:
    // appends that went after the garbage instead of replacing it would be lost on replay.
    bytes.extend_from_slice(&[0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef]);
    bytes.extend((0..200u32).map(|i| (i * 7 + 3) as u8));
    std::fs::write(&segment, &bytes).unwrap();
    strata.restart();
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(
        snapshot(&mut conn, "torn", 0).await,
        complete,
        "after garbage"
    );
    let next = simple_batch(500, 2);
    assert_eq!(conn.produce_ok("torn", 0, next.clone()).await, 12);
    drop(conn);
    stop(&mut strata, Stop::Term);
    strata.restart();
    let mut conn = Conn::connect(strata.kafka).await;
    let after = snapshot(&mut conn, "torn", 0).await;
    assert_eq!(
        after.high_watermark, 14,
        "appends after the cut tail survive"
    );
    assert!(after.raw.starts_with(&complete.raw));
    assert_eq!(&after.raw[complete.raw.len() + 8..], &next[8..]);
    drop(conn);

    // The last entry itself torn: that batch (never acknowledged, in a real crash) is
    // dropped, everything before it stays, and its offsets are reused.
    strata.kill();
    let segment = last_wal_segment(&strata);
    let bytes = std::fs::read(&segment).unwrap();
    assert!(bytes.len() > clean_length);
    std::fs::write(&segment, &bytes[..bytes.len() - 5]).unwrap();
    strata.restart();
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(
        snapshot(&mut conn, "torn", 0).await,
        complete,
        "after a torn last entry"
    );
    let again = simple_batch(600, 1);
    assert_eq!(conn.produce_ok("torn", 0, again.clone()).await, 12);
    drop(conn);
    stop(&mut strata, Stop::Kill);
    strata.restart();
    let mut conn = Conn::connect(strata.kafka).await;
    let after = snapshot(&mut conn, "torn", 0).await;
    assert_eq!(after.high_watermark, 13);
    assert_eq!(&after.raw[complete.raw.len() + 8..], &again[8..]);
}
