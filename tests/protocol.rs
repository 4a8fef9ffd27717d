//! The Kafka wire, spoken by hand over TCP: request order, version negotiation, what closes a
//! connection (and only that connection), Fetch edge cases and long polling, Produce error
//! codes, idempotent producers, and the topic admin APIs.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest, SaslAuthenticateRequest,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreatePartitionsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, FetchRequest, MetadataRequest, SaslHandshakeRequest,
};
use kafka_protocol::messages::{DeleteRecordsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::records::Compression;
use strata::server::dispatch::APIS;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_VERSION: i16 = 35;
const ILLEGAL_SASL_STATE: i16 = 34;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

/// A request frame built by hand: length prefix, api key, version, correlation id, a
/// non-flexible client id (header v1), then `body`.
fn raw_frame(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    frame.put_i16(api_key);
    frame.put_i16(version);
    frame.put_i32(correlation_id);
    frame.put_i16(4);
    frame.put_slice(b"test");
    frame.put_slice(body);
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame.to_vec()
}

/// The (api key, min, max) triples this crate's dispatch table serves.
fn expected_api_versions() -> BTreeSet<(i16, i16, i16)> {
    APIS.iter()
        .map(|&api| {
            let versions = strata::server::dispatch::versions(api)
                .unwrap_or_else(|| panic!("{api:?} is in APIS but has no versions"));
            assert!(versions.min <= versions.max, "{api:?}: {versions:?}");
            (api as i16, versions.min, versions.max)
        })
        .collect()
}

fn advertised_api_versions(response: &ApiVersionsResponse) -> BTreeSet<(i16, i16, i16)> {
    let set: BTreeSet<_> = response
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    assert_eq!(set.len(), response.api_keys.len(), "an api listed twice");
    set
}

/// Produces a small batch and reads it back on `conn`, proving the broker still serves.
async fn assert_serves(conn: &mut Conn, topic: &str) {
    let before = conn.high_watermark(topic, 0).await;
    let batch = simple_batch(0, 2);
    let base = conn.produce_ok(topic, 0, batch.clone()).await;
    assert_eq!(base, before, "base offset of a new batch");
    let data = conn.fetch(topic, 0, base, 0, 0).await;
    assert_eq!(data.error_code, 0);
    assert_eq!(data.high_watermark, before + 2);
    let records = data.records.unwrap();
    assert_eq!(&records[8..], &batch[8..], "fetched batch differs");
}

// ------------------------------------------------------------------------------------------
// Request order and version negotiation
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_come_back_in_request_order_even_when_later_ones_finish_first() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("order", 1).await;

    // A long poll on an empty partition first, then two requests that are answered at once.
    let (fetch, fetch_id) = conn.frame(FETCH_V, fetch_request("order", 0, 0, 500, 1));
    let (versions, versions_id) = conn.frame(3, ApiVersionsRequest::default());
    let (metadata, metadata_id) = conn.frame(METADATA_V, metadata_request(&["order"], false));
    let mut all = fetch.to_vec();
    all.extend_from_slice(&versions);
    all.extend_from_slice(&metadata);
    let sent = Instant::now();
    conn.send_raw(&all).await;

    let first = conn.recv_frame().await;
    let waited = sent.elapsed();
    let (id, fetched) = decode_response::<FetchRequest>(FETCH_V, first);
    assert_eq!(
        id, fetch_id,
        "the first response must answer the first request"
    );
    assert!(
        waited >= Duration::from_millis(400),
        "the fetch answered after {waited:?}, before its max_wait of 500 ms with no data"
    );
    let data = single_fetch_partition(fetched, "order", 0);
    assert_eq!(data.error_code, 0);
    assert_eq!(data.records.as_deref(), Some(&b""[..]));

    let (id, api_versions) = conn.recv::<ApiVersionsRequest>(3).await;
    assert_eq!(
        id, versions_id,
        "the second response must answer the second request"
    );
    assert_eq!(api_versions.error_code, 0);
    let (id, metadata) = conn.recv::<MetadataRequest>(METADATA_V).await;
    assert_eq!(
        id, metadata_id,
        "the third response must answer the third request"
    );
    assert_eq!(metadata.topics.len(), 1);
    assert_eq!(metadata.topics[0].error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_requests_are_answered_in_order() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("pipeline", 1).await;
    // Produces (deferred until durable) interleaved with instant requests.
    let mut expected = Vec::new();
    let mut bytes = Vec::new();
    for i in 0..20 {
        let (frame, id) = if i % 2 == 0 {
            let batch = simple_batch(i, 3);
            let (frame, id) = conn.frame(PRODUCE_V, produce_request("pipeline", 0, batch, -1));
            (frame, (id, ApiKey::Produce))
        } else {
            let (frame, id) = conn.frame(3, ApiVersionsRequest::default());
            (frame, (id, ApiKey::ApiVersions))
        };
        bytes.extend_from_slice(&frame);
        expected.push(id);
    }
    conn.send_raw(&bytes).await;
    let mut next_base = 0;
    for (id, api) in expected {
        let frame = conn.recv_frame().await;
        match api {
            ApiKey::Produce => {
                let (got, response) =
                    decode_response::<kafka_protocol::messages::ProduceRequest>(PRODUCE_V, frame);
                assert_eq!(got, id);
                let answer = &response.responses[0].partition_responses[0];
                assert_eq!(answer.error_code, 0);
                assert_eq!(
                    answer.base_offset, next_base,
                    "produces take effect in order"
                );
                next_base += 3;
            }
            _ => {
                let (got, response) = decode_response::<ApiVersionsRequest>(3, frame);
                assert_eq!(got, id);
                assert_eq!(response.error_code, 0);
            }
        }
    }
    assert_eq!(conn.high_watermark("pipeline", 0).await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_lists_exactly_the_dispatch_table_at_every_version() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    let expected = expected_api_versions();
    assert_eq!(expected.len(), APIS.len());
    for version in 0..=4 {
        let response = conn.call(version, ApiVersionsRequest::default()).await;
        assert_eq!(response.error_code, 0, "ApiVersions v{version}");
        assert_eq!(
            advertised_api_versions(&response),
            expected,
            "ApiVersions v{version} must list exactly strata::server::dispatch::APIS"
        );
    }
    // Nothing outside the table is advertised (CreateAcls is a real Kafka API not served here).
    let response = conn.call(3, ApiVersionsRequest::default()).await;
    assert!(!response
        .api_keys
        .iter()
        .any(|a| a.api_key == ApiKey::CreateAcls as i16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_at_an_unknown_version_answers_v0_with_unsupported_version() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    // As a newer client would send it: header v2 (client id, then an empty tagged-field
    // section) and a flexible body the broker cannot know.
    let mut body = vec![0u8]; // header tagged fields
    body.extend_from_slice(&[5, b'j', b'a', b'v', b'a', 2, b'9', 0]);
    let frame = raw_frame(ApiKey::ApiVersions as i16, 99, 4242, &body);
    conn.send_raw(&frame).await;
    let response = conn.recv_frame().await;
    let (id, response) = decode_response::<ApiVersionsRequest>(0, response);
    assert_eq!(id, 4242);
    assert_eq!(response.error_code, UNSUPPORTED_VERSION);
    assert_eq!(advertised_api_versions(&response), expected_api_versions());
    // The connection stays usable: the client now asks at a version it shares.
    let response = conn.call(3, ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_requests_close_only_their_connection() {
    let strata = Strata::start();
    let mut survivor = Conn::connect(strata.kafka).await;
    survivor.create_topic("survivor", 1).await;

    let sasl_handshake = {
        let mut conn = Conn::connect(strata.kafka).await;
        let request = SaslHandshakeRequest::default().with_mechanism(str_bytes("PLAIN"));
        conn.frame(0, request).0.to_vec()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Metadata v99",
            raw_frame(ApiKey::Metadata as i16, 99, 1, &[0, 0, 0, 0]),
        ),
        (
            "Produce v2 (below the served range)",
            raw_frame(ApiKey::Produce as i16, 2, 1, &[0; 16]),
        ),
        ("api key 9999", raw_frame(9999, 0, 1, &[0; 16])),
        ("api key -1", raw_frame(-1, 0, 1, &[])),
        (
            "SaslHandshake v0 (raw SASL tokens follow it: not served)",
            sasl_handshake,
        ),
    ];
    for (what, frame) in cases {
        let mut conn = Conn::connect(strata.kafka).await;
        conn.send_raw(&frame).await;
        conn.expect_closed().await;
        let mut strata_alive = Conn::connect(strata.kafka).await;
        let response = strata_alive.call(3, ApiVersionsRequest::default()).await;
        assert_eq!(response.error_code, 0, "after {what}");
        assert_serves(&mut survivor, "survivor").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_that_connection_and_costs_no_cpu_afterwards() {
    let mut strata = Strata::start();
    let mut survivor = Conn::connect(strata.kafka).await;
    survivor.create_topic("garbage", 1).await;

    // Frames the broker must refuse as soon as it reads the length or the header.
    let mut cases: Vec<(String, Vec<u8>, bool)> = vec![
        (
            "length 0x7fffffff".into(),
            vec![0x7f, 0xff, 0xff, 0xff],
            false,
        ),
        ("length -1".into(), vec![0xff, 0xff, 0xff, 0xff], false),
        (
            "length i32::MIN".into(),
            i32::MIN.to_be_bytes().to_vec(),
            false,
        ),
        ("length 0".into(), vec![0, 0, 0, 0], false),
        ("length 3".into(), vec![0, 0, 0, 3, 0, 18, 0], false),
        (
            "header shorter than 8 bytes".into(),
            vec![0, 0, 0, 6, 0, 18, 0, 3, 0, 0],
            false,
        ),
        (
            "Metadata v12 with a body cut short".into(),
            raw_frame(ApiKey::Metadata as i16, 12, 7, &[0, 0x10]),
            false,
        ),
        (
            "Produce v3 with an array length of 2^31-1".into(),
            raw_frame(
                ApiKey::Produce as i16,
                3,
                7,
                &[0xff, 0xff, 0, 1, 0, 0, 0x27, 0x10, 0x7f, 0xff, 0xff, 0xff],
            ),
            false,
        ),
        // Truncated: the length promises more than is sent, then the client leaves.
        (
            "truncated frame then close".into(),
            {
                let mut frame = vec![0, 0, 0, 100];
                frame.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1, 0, 0]);
                frame
            },
            true,
        ),
        ("two bytes then close".into(), vec![0, 0], true),
    ];
    // Random bytes (fixed seeds), then the client leaves.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for case in 0..16 {
        let len = 1 + (case * 37) % 300;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        cases.push((format!("random bytes #{case}"), bytes, true));
    }

    for (what, bytes, then_close) in &cases {
        let mut conn = Conn::connect(strata.kafka).await;
        conn.send_raw(bytes).await;
        if *then_close {
            use tokio::io::AsyncWriteExt;
            conn.stream.shutdown().await.unwrap();
            // A random frame may happen to be a valid request: drain whatever comes until EOF.
            let mut sink = Vec::new();
            let read = tokio::time::timeout(
                RESPONSE_TIMEOUT,
                tokio::io::AsyncReadExt::read_to_end(&mut conn.stream, &mut sink),
            )
            .await;
            assert!(read.is_ok(), "{what}: the broker kept the connection open");
        } else {
            conn.expect_closed().await;
        }
        strata.assert_alive();
    }
    assert_serves(&mut survivor, "garbage").await;

    // Nothing spins on a departed peer: idle CPU stays near zero.
    let cpu_before = cpu_ticks(strata.pid());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let used = cpu_ticks(strata.pid()) - cpu_before;
    assert!(
        used < 30,
        "the idle broker used {used} clock ticks of CPU in 1 s after the garbage"
    );
    strata.assert_alive();
    assert_serves(&mut survivor, "garbage").await;
}

/// utime + stime of a process, in clock ticks (usually 1/100 s).
fn cpu_ticks(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after_name` starts at field 3.
    fields[11].parse::<i64>().unwrap() + fields[12].parse::<i64>().unwrap()
}

// ------------------------------------------------------------------------------------------
// Fetch
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_out_of_range_above_the_high_watermark_and_below_zero() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("range", 1).await;
    conn.produce_ok("range", 0, simple_batch(0, 5)).await;

    for offset in [6, 7, 1000, i64::MAX, -1, -2, -100, i64::MIN] {
        let data = conn.fetch("range", 0, offset, 0, 0).await;
        assert_eq!(
            data.error_code, OFFSET_OUT_OF_RANGE,
            "fetch at {offset} with the high watermark at 5"
        );
        assert_eq!(data.high_watermark, 5, "high watermark with the error");
        assert_eq!(data.log_start_offset, 0);
    }
    // At the high watermark itself: no error, nothing to read.
    let data = conn.fetch("range", 0, 5, 0, 0).await;
    assert_eq!(data.error_code, 0);
    assert_eq!(data.records.as_deref(), Some(&b""[..]));
    // Inside a batch: the whole batch, which holds the offset.
    let data = conn.fetch("range", 0, 3, 0, 0).await;
    assert_eq!(data.error_code, 0);
    let records = decode_records(&data.records.unwrap());
    let offsets: Vec<i64> = records.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    // An out-of-range fetch answers at once, even when it asks to wait.
    let sent = Instant::now();
    let data = conn.fetch("range", 0, 10, 5000, 1).await;
    assert_eq!(data.error_code, OFFSET_OUT_OF_RANGE);
    assert!(sent.elapsed() < Duration::from_millis(4000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_partition_fetches_as_empty_records_never_null_at_every_version() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("empty", 2).await;
    let metadata = conn.metadata(&["empty"], false).await;
    let topic_id = metadata.topics[0].topic_id;
    assert!(!topic_id.is_nil());

    let fetch = ApiKey::Fetch.valid_versions();
    for version in fetch.min..=fetch.max {
        let mut topic = FetchTopic::default().with_partitions(vec![
            FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1 << 20),
            FetchPartition::default()
                .with_partition(1)
                .with_partition_max_bytes(1 << 20),
        ]);
        if version >= 13 {
            topic = topic.with_topic_id(topic_id);
        } else {
            topic = topic.with_topic(name("empty"));
        }
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![topic]);
        let response = conn.call(version, request).await;
        assert_eq!(response.error_code, 0, "Fetch v{version}");
        assert_eq!(response.responses.len(), 1);
        let partitions = &response.responses[0].partitions;
        assert_eq!(partitions.len(), 2, "Fetch v{version}");
        for (i, data) in partitions.iter().enumerate() {
            assert_eq!(data.partition_index, i as i32);
            assert_eq!(data.error_code, 0, "Fetch v{version} partition {i}");
            assert_eq!(data.high_watermark, 0);
            assert_eq!(
                data.records.as_deref(),
                Some(&b""[..]),
                "Fetch v{version}: an empty partition's records must be empty, not null"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_waits_for_data_and_returns_the_produced_batch() {
    let strata = Strata::start();
    let mut consumer = Conn::connect(strata.kafka).await;
    let mut producer = Conn::connect(strata.kafka).await;
    consumer.create_topic("poll", 1).await;

    // Without data, the poll lasts its max_wait.
    let sent = Instant::now();
    let data = consumer.fetch("poll", 0, 0, 300, 1).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "an empty long poll returned after {:?}, before its max_wait",
        sent.elapsed()
    );
    assert_eq!(data.records.as_deref(), Some(&b""[..]));

    // With data arriving meanwhile, it returns with the data, well before its max_wait.
    let sent = Instant::now();
    let fetch_id = consumer
        .send(FETCH_V, fetch_request("poll", 0, 0, 5000, 1))
        .await;
    // Give the fetch time to park (if it has not, it still must return the data).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let batch = simple_batch(0, 4);
    assert_eq!(producer.produce_ok("poll", 0, batch.clone()).await, 0);
    let frame = consumer.recv_frame_within(Duration::from_secs(10)).await;
    let waited = sent.elapsed();
    let (id, response) = decode_response::<FetchRequest>(FETCH_V, frame);
    assert_eq!(id, fetch_id);
    let data = single_fetch_partition(response, "poll", 0);
    assert_eq!(data.error_code, 0);
    assert_eq!(data.high_watermark, 4);
    let records = data.records.unwrap();
    assert_eq!(
        &records[8..],
        &batch[8..],
        "the long poll returned other bytes"
    );
    assert!(
        waited < Duration::from_millis(4500),
        "the long poll returned after {waited:?}, not when the data arrived"
    );
}

// ------------------------------------------------------------------------------------------
// Produce errors
// ------------------------------------------------------------------------------------------

/// A message-format v1 message set (magic 1) with one message, CRC-32 over magic..end.
fn magic_one_message_set() -> Bytes {
    let mut message = BytesMut::new();
    message.put_i8(1); // magic
    message.put_i8(0); // attributes
    message.put_i64(1_700_000_000_000); // timestamp
    message.put_i32(-1); // null key
    message.put_i32(5);
    message.put_slice(b"hello");
    let crc = crc32_ieee(&message);
    let mut set = BytesMut::new();
    set.put_i64(0); // offset
    set.put_i32(4 + message.len() as i32); // message size
    set.put_u32(crc);
    set.put_slice(&message);
    set.freeze()
}

fn crc32_ieee(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_have_kafka_codes_and_store_nothing() {
    let strata = Strata::start_with(&[
        "--auto-create-topics",
        "false",
        "--message-max-bytes",
        "2048",
    ]);
    let mut conn = Conn::connect(strata.kafka).await;

    // Unknown topic, and Metadata does not create it.
    let answer = conn.produce("nope", 0, simple_batch(0, 1)).await;
    assert_eq!(
        answer.error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "unknown topic"
    );
    let metadata = conn.metadata(&["nope"], true).await;
    assert_eq!(metadata.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let all = conn
        .call(METADATA_V, MetadataRequest::default().with_topics(None))
        .await;
    assert!(
        all.topics.is_empty(),
        "auto-create is off: {:?}",
        all.topics
    );

    conn.create_topic("errors", 1).await;
    // Unknown partition.
    let answer = conn.produce("errors", 1, simple_batch(0, 1)).await;
    assert_eq!(answer.error_code, UNKNOWN_TOPIC_OR_PARTITION, "partition 1");
    let answer = conn.produce("errors", -1, simple_batch(0, 1)).await;
    assert_eq!(
        answer.error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "partition -1"
    );

    assert_eq!(conn.produce_ok("errors", 0, simple_batch(0, 3)).await, 0);

    // A flipped bit after the CRC field.
    let good = simple_batch(3, 3);
    for at in [21, 30, 61, good.len() - 1] {
        let mut corrupt = good.to_vec();
        corrupt[at] ^= 0x40;
        let answer = conn.produce("errors", 0, Bytes::from(corrupt)).await;
        assert_eq!(
            answer.error_code, CORRUPT_MESSAGE,
            "bit flipped at byte {at}"
        );
        assert_eq!(conn.high_watermark("errors", 0).await, 3);
    }
    // A bad CRC in the second batch of a request refuses the whole request.
    let mut two = good.to_vec();
    let mut bad = simple_batch(6, 2).to_vec();
    bad[40] ^= 1;
    two.extend_from_slice(&bad);
    let answer = conn.produce("errors", 0, Bytes::from(two)).await;
    assert_eq!(answer.error_code, CORRUPT_MESSAGE, "corrupt second batch");
    // A batch whose length runs past the end of the records field.
    let answer = conn
        .produce("errors", 0, good.slice(..good.len() - 10))
        .await;
    assert_eq!(answer.error_code, CORRUPT_MESSAGE, "truncated batch");
    assert_eq!(conn.high_watermark("errors", 0).await, 3);

    // Larger than --message-max-bytes (2048).
    let big = encode_batch(
        &[TestRecord {
            key: None,
            value: Some(vec![b'x'; 3000]),
            headers: vec![],
            timestamp: 1,
        }],
        Compression::None,
        None,
    );
    assert!(big.len() > 2048);
    let answer = conn.produce("errors", 0, big.clone()).await;
    assert_eq!(answer.error_code, MESSAGE_TOO_LARGE);
    assert_eq!(conn.high_watermark("errors", 0).await, 3);

    // A topic's max.message.bytes overrides the broker's.
    let created = conn
        .call(
            CREATE_TOPICS_V,
            create_topics_request("big", 1, &[("max.message.bytes", "8192")]),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);
    assert_eq!(conn.produce_ok("big", 0, big).await, 0);

    // acks=5.
    let response = conn
        .call(
            PRODUCE_V,
            produce_request("errors", 0, simple_batch(3, 1), 5),
        )
        .await;
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, INVALID_REQUIRED_ACKS);

    // Message format v1.
    let answer = conn.produce("errors", 0, magic_one_message_set()).await;
    assert_eq!(answer.error_code, UNSUPPORTED_FOR_MESSAGE_FORMAT);

    assert_eq!(conn.high_watermark("errors", 0).await, 3);
    // And the partition still takes good data, right after the last good offset.
    assert_eq!(conn.produce_ok("errors", 0, good.clone()).await, 3);
    let raw = conn.fetch_all_raw("errors", 0, 0).await;
    let batches = split_batches(&raw);
    assert_eq!(batches.len(), 2);
    assert_eq!(&batches[1][8..], &good[8..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_gets_no_response_but_the_data_is_stored() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("acks0", 1).await;
    conn.send(
        PRODUCE_V,
        produce_request("acks0", 0, simple_batch(0, 2), 0),
    )
    .await;
    // The next response on the connection is the ApiVersions one, not a produce answer.
    let response = conn.call(3, ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let data = conn.fetch("acks0", 0, 0, 1000, 1).await;
        if data.high_watermark == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the acks=0 batch never showed up"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Idempotent producers
// ------------------------------------------------------------------------------------------

fn idempotent_batch(producer_id: i64, epoch: i16, base_sequence: i32, count: usize) -> Bytes {
    let records: Vec<TestRecord> = (0..count)
        .map(|i| TestRecord::simple(base_sequence as usize + i))
        .collect();
    encode_batch(
        &records,
        Compression::None,
        Some(Idempotence {
            producer_id,
            producer_epoch: epoch,
            base_sequence,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_are_written_once_and_gaps_are_refused() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("idem", 1).await;

    let (a, epoch_a) = conn.init_producer_id().await;
    let (b, epoch_b) = conn.init_producer_id().await;
    assert!(a >= 0 && b >= 0);
    assert_ne!(a, b, "two InitProducerId calls gave the same id");
    assert_eq!((epoch_a, epoch_b), (0, 0));

    let first = idempotent_batch(a, 0, 0, 5);
    assert_eq!(conn.produce_ok("idem", 0, first.clone()).await, 0);
    assert_eq!(
        conn.produce_ok("idem", 0, first.clone()).await,
        0,
        "a retried batch answers with its original offset"
    );
    assert_eq!(
        conn.high_watermark("idem", 0).await,
        5,
        "retry stored twice"
    );

    let second = idempotent_batch(a, 0, 5, 3);
    assert_eq!(conn.produce_ok("idem", 0, second.clone()).await, 5);
    // Another producer interleaves; its own sequence starts at 0.
    assert_eq!(
        conn.produce_ok("idem", 0, idempotent_batch(b, 0, 0, 2))
            .await,
        8
    );
    // Retries of either earlier batch of producer a are still recognised.
    assert_eq!(conn.produce_ok("idem", 0, second.clone()).await, 5);
    assert_eq!(conn.produce_ok("idem", 0, first.clone()).await, 0);
    assert_eq!(conn.high_watermark("idem", 0).await, 10);

    // A gap in the sequence.
    let answer = conn.produce("idem", 0, idempotent_batch(a, 0, 20, 1)).await;
    assert_eq!(
        answer.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER,
        "gap 8 -> 20"
    );
    // Overlapping but not identical to a written batch.
    let answer = conn.produce("idem", 0, idempotent_batch(a, 0, 6, 1)).await;
    assert_eq!(
        answer.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER,
        "sequence 6 rewritten"
    );
    assert_eq!(conn.high_watermark("idem", 0).await, 10);
    // The next sequence still goes in.
    assert_eq!(
        conn.produce_ok("idem", 0, idempotent_batch(a, 0, 8, 1))
            .await,
        10
    );

    // The fetched data holds each batch once, in order.
    let raw = conn.fetch_all_raw("idem", 0, 0).await;
    let bases: Vec<i64> = split_batches(&raw)
        .iter()
        .map(|b| batch_base_offset(b))
        .collect();
    assert_eq!(bases, vec![0, 5, 8, 10]);
}

// ------------------------------------------------------------------------------------------
// Metadata and topic administration
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_advertises_the_listener_address() {
    let strata = Strata::start_with(&["--default-partitions", "2"]);
    let mut conn = Conn::connect(strata.kafka).await;
    for version in [0, 1, 4, 9, 12] {
        let metadata = conn.call(version, metadata_request(&["auto"], true)).await;
        assert_eq!(metadata.brokers.len(), 1, "Metadata v{version}");
        let broker = &metadata.brokers[0];
        assert_eq!(broker.node_id.0, 1);
        assert_eq!(broker.host.as_str(), strata.kafka.ip().to_string());
        assert_eq!(broker.port, i32::from(strata.kafka.port()));
        // Auto-created (allowed by the broker and the request) with --default-partitions.
        let topic = &metadata.topics[0];
        assert_eq!(topic.error_code, 0, "Metadata v{version}");
        assert_eq!(topic.partitions.len(), 2);
        for p in &topic.partitions {
            assert_eq!(p.leader_id.0, 1);
            assert_eq!(p.error_code, 0);
        }
    }
    // A client that opts out of auto-creation gets an error and no topic.
    let metadata = conn.metadata(&["not-created"], false).await;
    assert_eq!(metadata.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let all = conn
        .call(METADATA_V, MetadataRequest::default().with_topics(None))
        .await;
    let names: Vec<&str> = all
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().0.as_str())
        .collect();
    assert_eq!(names, vec!["auto"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_advertises_the_advertised_listener_when_set() {
    let strata = Strata::start_with(&["--advertised-listener", "broker.example:19092"]);
    let mut conn = Conn::connect(strata.kafka).await;
    let metadata = conn.metadata(&[], false).await;
    assert_eq!(metadata.brokers.len(), 1);
    assert_eq!(metadata.brokers[0].host.as_str(), "broker.example");
    assert_eq!(metadata.brokers[0].port, 19092);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_deleted_grown_and_described() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;

    let created = conn
        .call(
            CREATE_TOPICS_V,
            create_topics_request("admin", 2, &[("retention.ms", "3600000")]),
        )
        .await;
    let result = &created.topics[0];
    assert_eq!(result.error_code, 0);
    assert_eq!(result.num_partitions, 2);
    assert!(!result.topic_id.is_nil());
    let metadata = conn.metadata(&["admin"], false).await;
    assert_eq!(metadata.topics[0].topic_id, result.topic_id);
    assert_eq!(metadata.topics[0].partitions.len(), 2);

    // Again: already exists, and nothing changes.
    let again = conn
        .call(CREATE_TOPICS_V, create_topics_request("admin", 5, &[]))
        .await;
    assert_eq!(again.topics[0].error_code, TOPIC_ALREADY_EXISTS);
    let metadata = conn.metadata(&["admin"], false).await;
    assert_eq!(metadata.topics[0].partitions.len(), 2);

    // DescribeConfigs: the explicit setting and the defaults.
    let described = conn
        .call(
            4,
            DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(str_bytes("admin"))
                    .with_configuration_keys(None),
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(str_bytes("missing"))
                    .with_configuration_keys(None),
            ]),
        )
        .await;
    assert_eq!(described.results.len(), 2);
    let admin = &described.results[0];
    assert_eq!(admin.error_code, 0);
    let config = |key: &str| {
        admin
            .configs
            .iter()
            .find(|c| c.name.as_str() == key)
            .unwrap_or_else(|| panic!("DescribeConfigs lacks {key}"))
    };
    assert_eq!(config("retention.ms").value.as_deref(), Some("3600000"));
    assert_eq!(config("retention.ms").config_source, 1, "set on the topic");
    assert_eq!(config("retention.bytes").value.as_deref(), Some("-1"));
    assert_eq!(config("retention.bytes").config_source, 5, "default");
    assert_eq!(config("cleanup.policy").value.as_deref(), Some("delete"));
    assert_eq!(
        config("max.message.bytes").value.as_deref(),
        Some(strata::limits::MESSAGE_BYTES_DEFAULT.to_string().as_str())
    );
    assert_eq!(described.results[1].error_code, UNKNOWN_TOPIC_OR_PARTITION);

    // CreatePartitions grows the topic; the new partition takes data from offset 0.
    let grown = conn
        .call(
            3,
            CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name("admin"))
                    .with_count(4)
                    .with_assignments(None)]),
        )
        .await;
    assert_eq!(grown.results[0].error_code, 0, "{:?}", grown.results[0]);
    let metadata = conn.metadata(&["admin"], false).await;
    let indexes: Vec<i32> = metadata.topics[0]
        .partitions
        .iter()
        .map(|p| p.partition_index)
        .collect();
    assert_eq!(indexes, vec![0, 1, 2, 3]);
    assert_eq!(conn.produce_ok("admin", 3, simple_batch(0, 2)).await, 0);
    // Shrinking is refused.
    let shrunk = conn
        .call(
            3,
            CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name("admin"))
                    .with_count(3)
                    .with_assignments(None)]),
        )
        .await;
    assert_eq!(shrunk.results[0].error_code, INVALID_PARTITIONS);

    // DeleteTopics, then the topic is unknown everywhere.
    conn.produce_ok("admin", 0, simple_batch(0, 5)).await;
    let deleted = conn
        .call(
            6,
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    DeleteTopicState::default().with_name(Some(name("admin")))
                ]),
        )
        .await;
    assert_eq!(deleted.responses.len(), 1);
    assert_eq!(deleted.responses[0].error_code, 0);
    let metadata = conn.metadata(&["admin"], false).await;
    assert_eq!(metadata.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let data = conn.fetch("admin", 0, 0, 0, 0).await;
    assert_eq!(data.error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let answer = conn.produce("admin", 0, simple_batch(0, 1)).await;
    assert_eq!(answer.error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let deleted_again = conn
        .call(
            6,
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    DeleteTopicState::default().with_name(Some(name("admin")))
                ]),
        )
        .await;
    assert_eq!(
        deleted_again.responses[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );

    // The same name again is a new, empty topic with a new id.
    let recreated = conn.create_topic("admin", 1).await;
    assert_ne!(recreated.topics[0].topic_id, result.topic_id);
    assert_eq!(conn.high_watermark("admin", 0).await, 0);
    let data = conn.fetch("admin", 0, 0, 0, 0).await;
    assert_eq!(data.error_code, 0);
    assert_eq!(data.records.as_deref(), Some(&b""[..]));
}

// ------------------------------------------------------------------------------------------
// ListOffsets
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_timestamp() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("times", 1).await;
    let record = |i: usize, timestamp: i64| TestRecord {
        timestamp,
        ..TestRecord::simple(i)
    };
    let t = 1_700_000_000_000i64;
    // Offsets 0..3 at t, t+10, t+20; offsets 3..6 at t+30, t+100 (the max), t+40.
    let first = encode_batch(
        &[record(0, t), record(1, t + 10), record(2, t + 20)],
        Compression::None,
        None,
    );
    let second = encode_batch(
        &[record(3, t + 30), record(4, t + 100), record(5, t + 40)],
        Compression::Lz4,
        None,
    );
    conn.produce_ok("times", 0, first).await;
    conn.produce_ok("times", 0, second).await;

    assert_eq!(conn.list_offset("times", 0, -2).await.0, 0, "EARLIEST");
    assert_eq!(conn.list_offset("times", 0, -1).await.0, 6, "LATEST");
    assert_eq!(
        conn.list_offset("times", 0, -3).await,
        (4, t + 100),
        "MAX_TIMESTAMP"
    );
    for (query, expected) in [
        (0, (0, t)),
        (t, (0, t)),
        (t + 1, (1, t + 10)),
        (t + 20, (2, t + 20)),
        (t + 21, (3, t + 30)),
        (t + 31, (4, t + 100)),
        (t + 100, (4, t + 100)),
        (t + 101, (-1, -1)),
    ] {
        assert_eq!(
            conn.list_offset("times", 0, query).await,
            expected,
            "ListOffsets at t{:+}",
            query - t
        );
    }
    let answer = conn.list_offset_answer("nope", 0, -1).await;
    assert_eq!(answer.error_code, UNKNOWN_TOPIC_OR_PARTITION);
}

// ------------------------------------------------------------------------------------------
// Batches as formed
// ------------------------------------------------------------------------------------------

#[test]
fn crc32c_helper_matches_the_standard_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_come_back_byte_identical_with_broker_assigned_offsets() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("bytes", 1).await;

    let mut sent: Vec<Bytes> = Vec::new();
    let mut next = 0i64;
    for (n, compression) in [
        (1, Compression::None),
        (7, Compression::Gzip),
        (13, Compression::Snappy),
        (5, Compression::Lz4),
        (9, Compression::Zstd),
    ] {
        let records: Vec<TestRecord> = (0..n).map(|i| TestRecord::simple(i * 3)).collect();
        let batch = encode_batch(&records, compression, None);
        // The client's base_offset is ignored: the broker assigns offsets.
        let mut claimed = batch.to_vec();
        claimed[..8].copy_from_slice(&12_345i64.to_be_bytes());
        let base = conn.produce_ok("bytes", 0, Bytes::from(claimed)).await;
        assert_eq!(base, next, "{compression:?}: base offset");
        next += n as i64;
        sent.push(batch);
    }
    // Three batches in one records field.
    let mut field = BytesMut::new();
    for (i, n) in [2usize, 4, 1].into_iter().enumerate() {
        let records: Vec<TestRecord> = (0..n)
            .map(|j| TestRecord::simple(100 + i * 10 + j))
            .collect();
        let batch = encode_batch(&records, Compression::None, None);
        field.extend_from_slice(&batch);
        sent.push(batch);
    }
    let base = conn.produce_ok("bytes", 0, field.freeze()).await;
    assert_eq!(base, next, "the first of several batches in one request");
    next += 7;
    assert_eq!(conn.high_watermark("bytes", 0).await, next);

    let raw = conn.fetch_all_raw("bytes", 0, 0).await;
    let stored = split_batches(&raw);
    assert_eq!(stored.len(), sent.len(), "batches stored");
    let mut expected_base = 0i64;
    for (stored, sent) in stored.iter().zip(&sent) {
        assert_eq!(batch_base_offset(stored), expected_base, "base offset");
        assert_eq!(
            &stored[8..],
            &sent[8..],
            "the batch at {expected_base} was changed beyond its base offset"
        );
        assert_crc_valid(stored);
        expected_base += i64::from(batch_last_offset_delta(stored)) + 1;
    }
    // And every record decodes with contiguous offsets.
    let offsets: Vec<i64> = decode_records(&Bytes::from(raw))
        .iter()
        .map(|(o, _)| *o)
        .collect();
    assert_eq!(offsets, (0..next).collect::<Vec<_>>());
}

// ------------------------------------------------------------------------------------------
// Every advertised version really works
// ------------------------------------------------------------------------------------------

/// Sends one frame on `conn` and returns the response frame, or `None` if the broker closed
/// the connection instead.
async fn answer_or_close(mut conn: Conn, frame: &[u8]) -> Option<Bytes> {
    conn.send_raw(frame).await;
    let read = strata::protocol::read_frame(&mut conn.stream, 1 << 28);
    match tokio::time::timeout(RESPONSE_TIMEOUT, read).await {
        Ok(Ok(Some(frame))) => Some(frame),
        Ok(_) => None,
        Err(_) => panic!("no response and no close within {RESPONSE_TIMEOUT:?}"),
    }
}

/// Every version of every API the broker advertises gets a decodable, successful answer to a
/// meaningful request (a client negotiates the highest shared version, and fails if the broker
/// advertised one it cannot serve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_of_every_api_answers() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        CreateTopicsRequest, DescribeClusterRequest, InitProducerIdRequest,
        OffsetForLeaderEpochRequest, ProduceRequest,
    };
    use kafka_protocol::protocol::Message;

    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    let created = conn.create_topic("sweep", 1).await;
    let topic_id = created.topics[0].topic_id;
    conn.create_topic("sweep-grow", 1).await;
    let advertised = conn.call(3, ApiVersionsRequest::default()).await;
    assert_eq!(advertised.error_code, 0);
    let range = |api: ApiKey| {
        let entry = advertised
            .api_keys
            .iter()
            .find(|a| a.api_key == api as i16)
            .unwrap_or_else(|| panic!("{api:?} is not advertised"));
        entry.min_version..=entry.max_version
    };
    let mut failures = Vec::new();
    let mut check = |api: ApiKey, version: i16, ok: bool, detail: String| {
        if !ok {
            failures.push(format!("{api:?} v{version}: {detail}"));
        }
    };

    // Each request goes on a fresh connection, so one failing version (which closes its
    // connection) does not hide the others.
    macro_rules! call {
        ($version:expr, $request:expr) => {{
            let mut conn = Conn::connect(strata.kafka).await;
            let (frame, id) = conn.frame($version, $request);
            answer_or_close(conn, &frame).await.map(|frame| (id, frame))
        }};
    }
    fn answered<R: kafka_protocol::protocol::Request>(
        version: i16,
        got: Option<(i32, Bytes)>,
    ) -> Result<R::Response, String> {
        let (sent_id, frame) = got.ok_or("the broker closed the connection")?;
        let (id, response) = decode_response::<R>(version, frame);
        if id != sent_id {
            return Err(format!("correlation id {id}, sent {sent_id}"));
        }
        Ok(response)
    }

    let mut high_watermark = 0i64;
    for version in range(ApiKey::Produce) {
        let mut topic =
            TopicProduceData::default().with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(simple_batch(0, 2)))]);
        topic = if version >= 13 {
            topic.with_topic_id(topic_id)
        } else {
            topic.with_name(name("sweep"))
        };
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![topic]);
        let got = call!(version, request);
        match answered::<ProduceRequest>(version, got) {
            Ok(r) => {
                let answer = &r.responses[0].partition_responses[0];
                let ok = answer.error_code == 0 && answer.base_offset == high_watermark;
                check(ApiKey::Produce, version, ok, format!("{answer:?}"));
                if answer.error_code == 0 {
                    high_watermark += 2;
                }
            }
            Err(e) => check(ApiKey::Produce, version, false, e),
        }
    }

    for version in range(ApiKey::Fetch) {
        let mut request = fetch_request("sweep", 0, 0, 0, 0);
        if version >= 13 {
            request.topics[0].topic = Default::default();
            request.topics[0].topic_id = topic_id;
        }
        if version < 7 {
            request.session_epoch = -1;
        }
        let got = call!(version, request);
        match answered::<FetchRequest>(version, got) {
            Ok(r) => {
                let data = &r.responses[0].partitions[0];
                let records = data.records.clone().unwrap_or_default();
                let ok = data.error_code == 0
                    && data.high_watermark == high_watermark
                    && !records.is_empty()
                    && batch_base_offset(&records) == 0;
                check(
                    ApiKey::Fetch,
                    version,
                    ok,
                    format!("error {}", data.error_code),
                );
            }
            Err(e) => check(ApiKey::Fetch, version, false, e),
        }
    }

    for version in range(ApiKey::ListOffsets) {
        for (timestamp, expected) in [(-1, high_watermark), (-2, 0), (0, 0)] {
            let got = call!(version, list_offsets_request("sweep", 0, timestamp));
            match answered::<kafka_protocol::messages::ListOffsetsRequest>(version, got) {
                Ok(r) => {
                    let answer = &r.topics[0].partitions[0];
                    let ok = answer.error_code == 0 && answer.offset == expected;
                    check(
                        ApiKey::ListOffsets,
                        version,
                        ok,
                        format!("at {timestamp}: {answer:?}"),
                    );
                }
                Err(e) => check(
                    ApiKey::ListOffsets,
                    version,
                    false,
                    format!("at {timestamp}: {e}"),
                ),
            }
        }
    }

    for version in range(ApiKey::Metadata) {
        let got = call!(version, metadata_request(&["sweep"], version < 4));
        match answered::<MetadataRequest>(version, got) {
            Ok(r) => {
                let ok = r.brokers.len() == 1
                    && r.brokers[0].port == i32::from(strata.kafka.port())
                    && r.topics.iter().any(|t| {
                        t.name.as_ref().map(|n| n.0.as_str()) == Some("sweep")
                            && t.error_code == 0
                            && t.partitions.len() == 1
                    });
                check(ApiKey::Metadata, version, ok, format!("{r:?}"));
            }
            Err(e) => check(ApiKey::Metadata, version, false, e),
        }
    }

    for version in range(ApiKey::CreateTopics) {
        let topic = format!("sweep-created-v{version}");
        let request: CreateTopicsRequest = create_topics_request(&topic, 2, &[]);
        let got = call!(version, request);
        match answered::<CreateTopicsRequest>(version, got) {
            Ok(r) => {
                let ok = r.topics.len() == 1 && r.topics[0].error_code == 0;
                check(ApiKey::CreateTopics, version, ok, format!("{r:?}"));
            }
            Err(e) => check(ApiKey::CreateTopics, version, false, e),
        }
    }
    for version in range(ApiKey::DeleteTopics) {
        let topic = format!("sweep-deleted-v{version}");
        conn.create_topic(&topic, 1).await;
        let request = if version >= 6 {
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    DeleteTopicState::default().with_name(Some(name(&topic)))
                ])
        } else {
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topic_names(vec![name(&topic)])
        };
        let got = call!(version, request);
        match answered::<DeleteTopicsRequest>(version, got) {
            Ok(r) => {
                let ok = r.responses.len() == 1 && r.responses[0].error_code == 0;
                check(ApiKey::DeleteTopics, version, ok, format!("{topic}: {r:?}"));
            }
            Err(e) => check(ApiKey::DeleteTopics, version, false, e),
        }
    }

    let mut producer_ids = BTreeSet::new();
    for version in range(ApiKey::InitProducerId) {
        let got = if version <= InitProducerIdRequest::VERSIONS.max {
            call!(version, init_producer_id_request())
        } else {
            // kafka-protocol cannot encode this version: build it from the newest one it can,
            // adding the fields that version added (v6: enable_2pc, keep_prepared_txn).
            assert_eq!(
                version, 6,
                "InitProducerId v{version} is not known to this test"
            );
            let mut conn = Conn::connect(strata.kafka).await;
            let (frame, id) = conn.frame(5, init_producer_id_request());
            let mut frame = frame.to_vec();
            frame[6..8].copy_from_slice(&6i16.to_be_bytes());
            let tags = frame.pop().unwrap();
            frame.extend_from_slice(&[0, 0, tags]);
            let size = (frame.len() - 4) as i32;
            frame[..4].copy_from_slice(&size.to_be_bytes());
            answer_or_close(conn, &frame).await.map(|frame| (id, frame))
        };
        match answered::<InitProducerIdRequest>(version, got) {
            Ok(r) => {
                let ok = r.error_code == 0 && producer_ids.insert(r.producer_id.0);
                check(ApiKey::InitProducerId, version, ok, format!("{r:?}"));
            }
            Err(e) => check(ApiKey::InitProducerId, version, false, e),
        }
    }

    for version in range(ApiKey::OffsetForLeaderEpoch) {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(name("sweep"))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(if version >= 2 { 0 } else { -1 })
                    .with_leader_epoch(0)])]);
        let got = call!(version, request);
        match answered::<OffsetForLeaderEpochRequest>(version, got) {
            Ok(r) => {
                let answer = &r.topics[0].partitions[0];
                let ok = answer.error_code == 0 && answer.end_offset == high_watermark;
                check(
                    ApiKey::OffsetForLeaderEpoch,
                    version,
                    ok,
                    format!("{answer:?}"),
                );
            }
            Err(e) => check(ApiKey::OffsetForLeaderEpoch, version, false, e),
        }
    }

    for version in range(ApiKey::DescribeConfigs) {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str_bytes("sweep"))
                .with_configuration_keys(None),
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(str_bytes("1"))
                .with_configuration_keys(None),
        ]);
        let got = call!(version, request);
        match answered::<DescribeConfigsRequest>(version, got) {
            Ok(r) => {
                let ok = r.results.len() == 2
                    && r.results.iter().all(|res| res.error_code == 0)
                    && r.results[0].configs.iter().any(|c| {
                        c.name.as_str() == "retention.ms" && c.value.as_deref() == Some("604800000")
                    });
                check(ApiKey::DescribeConfigs, version, ok, format!("{r:?}"));
            }
            Err(e) => check(ApiKey::DescribeConfigs, version, false, e),
        }
    }

    let mut partitions = 1;
    for version in range(ApiKey::CreatePartitions) {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name("sweep-grow"))
                .with_count(partitions + 1)
                .with_assignments(None)]);
        let got = call!(version, request);
        match answered::<CreatePartitionsRequest>(version, got) {
            Ok(r) => {
                let ok = r.results.len() == 1 && r.results[0].error_code == 0;
                check(ApiKey::CreatePartitions, version, ok, format!("{r:?}"));
                if ok {
                    partitions += 1;
                }
            }
            Err(e) => check(ApiKey::CreatePartitions, version, false, e),
        }
    }

    for version in range(ApiKey::DescribeCluster) {
        let request = DescribeClusterRequest::default();
        let got = call!(version, request);
        match answered::<DescribeClusterRequest>(version, got) {
            Ok(r) => {
                let ok = r.error_code == 0
                    && r.brokers.len() == 1
                    && r.brokers[0].port == i32::from(strata.kafka.port())
                    && r.controller_id.0 == 1;
                check(ApiKey::DescribeCluster, version, ok, format!("{r:?}"));
            }
            Err(e) => check(ApiKey::DescribeCluster, version, false, e),
        }
    }

    // "sweep" holds data from the produce sweep; each version moves its log start by one.
    let mut low_watermark = 0;
    for version in range(ApiKey::DeleteRecords) {
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(name("sweep"))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(low_watermark + 1)])]);
        let got = call!(version, request);
        match answered::<DeleteRecordsRequest>(version, got) {
            Ok(r) => {
                let answer = &r.topics[0].partitions[0];
                let ok = answer.error_code == 0 && answer.low_watermark == low_watermark + 1;
                check(ApiKey::DeleteRecords, version, ok, format!("{r:?}"));
                low_watermark += 1;
            }
            Err(e) => check(ApiKey::DeleteRecords, version, false, e),
        }
    }

    for version in range(ApiKey::IncrementalAlterConfigs) {
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str_bytes("sweep"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(str_bytes("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(str_bytes(
                        &(86_400_000 + i64::from(version)).to_string(),
                    )))]),
        ]);
        let got = call!(version, request);
        match answered::<IncrementalAlterConfigsRequest>(version, got) {
            Ok(r) => {
                let ok = r.responses.len() == 1 && r.responses[0].error_code == 0;
                check(
                    ApiKey::IncrementalAlterConfigs,
                    version,
                    ok,
                    format!("{r:?}"),
                );
            }
            Err(e) => check(ApiKey::IncrementalAlterConfigs, version, false, e),
        }
    }

    // SASL on this PLAINTEXT listener: the handshake APIs are answered ILLEGAL_SASL_STATE,
    // as Kafka answers them on a listener without SASL (tests/sasl.rs logs in on a SASL one).
    for version in range(ApiKey::SaslHandshake) {
        let request = SaslHandshakeRequest::default().with_mechanism(str_bytes("PLAIN"));
        let got = call!(version, request);
        match answered::<SaslHandshakeRequest>(version, got) {
            Ok(r) => {
                let ok = r.error_code == ILLEGAL_SASL_STATE && !r.mechanisms.is_empty();
                check(ApiKey::SaslHandshake, version, ok, format!("{r:?}"));
            }
            Err(e) => check(ApiKey::SaslHandshake, version, false, e),
        }
    }
    for version in range(ApiKey::SaslAuthenticate) {
        let request =
            SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0a\0b"));
        let got = call!(version, request);
        match answered::<SaslAuthenticateRequest>(version, got) {
            Ok(r) => {
                let ok = r.error_code == ILLEGAL_SASL_STATE;
                check(ApiKey::SaslAuthenticate, version, ok, format!("{r:?}"));
            }
            Err(e) => check(ApiKey::SaslAuthenticate, version, false, e),
        }
    }
    for version in range(ApiKey::AlterUserScramCredentials) {
        let user = format!("sweep-user-v{version}");
        let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            ScramCredentialUpsertion::default()
                .with_name(str_bytes(&user))
                .with_mechanism(2)
                .with_iterations(4096)
                .with_salt(Bytes::from_static(b"salt"))
                .with_salted_password(Bytes::from(vec![7u8; 64])),
        ]);
        let got = call!(version, request);
        match answered::<AlterUserScramCredentialsRequest>(version, got) {
            Ok(r) => {
                let ok = r.results.len() == 1 && r.results[0].error_code == 0;
                check(
                    ApiKey::AlterUserScramCredentials,
                    version,
                    ok,
                    format!("{r:?}"),
                );
            }
            Err(e) => check(ApiKey::AlterUserScramCredentials, version, false, e),
        }
    }
    for version in range(ApiKey::DescribeUserScramCredentials) {
        let request = DescribeUserScramCredentialsRequest::default().with_users(None);
        let got = call!(version, request);
        match answered::<DescribeUserScramCredentialsRequest>(version, got) {
            Ok(r) => {
                let ok = r.error_code == 0
                    && r.results.iter().any(|u| {
                        u.user.as_str() == "sweep-user-v0"
                            && u.credential_infos.len() == 1
                            && u.credential_infos[0].iterations == 4096
                    });
                check(
                    ApiKey::DescribeUserScramCredentials,
                    version,
                    ok,
                    format!("{r:?}"),
                );
            }
            Err(e) => check(ApiKey::DescribeUserScramCredentials, version, false, e),
        }
    }

    // ApiVersions is covered by its own tests, the 11 group APIs by tests/group_wire.rs;
    // every other served API was swept above.
    assert_eq!(
        APIS.len(),
        18 + 11,
        "a new API in the dispatch table needs a sweep here"
    );
    drop(conn);
    assert!(
        failures.is_empty(),
        "{} advertised versions failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
