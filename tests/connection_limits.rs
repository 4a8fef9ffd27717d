//! The connection limits over the real binary: the broker-wide and per-address connection
//! limits, the idle timeout, a frame that trickles in (slowloris), a client that never reads
//! its responses, and frames that claim 100 MiB and never arrive. Each shows the offender is
//! closed (or costs nothing) while other clients keep being served.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::ApiVersionsRequest;
use kafka_protocol::records::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn assert_serves(conn: &mut Conn) {
    let response = conn.call(3, ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);
}

/// Whether the broker answers an ApiVersions on `conn` (false: it closed the connection).
async fn answers(conn: &mut Conn) -> bool {
    conn.send(3, ApiVersionsRequest::default()).await;
    let read = strata::protocol::read_frame(&mut conn.stream, 1 << 20);
    match tokio::time::timeout(RESPONSE_TIMEOUT, read).await {
        Ok(Ok(Some(_))) => true,
        Ok(_) => false,
        Err(_) => panic!("no answer and no close within {RESPONSE_TIMEOUT:?}"),
    }
}

/// Polls a metric until it reaches `at_least` (bounded).
async fn wait_for_metric(strata: &Strata, name: &str, at_least: u64) {
    for _ in 0..300 {
        if metric(strata.admin, name).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {at_least}");
}

const REFUSED: &str = "strata_connections_refused_total{reason=\"max_connections\"}";
const REFUSED_PER_IP: &str = "strata_connections_refused_total{reason=\"max_connections_per_ip\"}";
const OPEN: &str = "strata_connections";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_is_closed_and_a_freed_slot_is_usable() {
    let strata = Strata::start_with(&["--max-connections", "3"]);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut conn = Conn::connect(strata.kafka).await;
        assert_serves(&mut conn).await;
        open.push(conn);
    }
    let mut refused = Conn::connect(strata.kafka).await;
    refused.expect_closed().await;
    assert_eq!(metric(strata.admin, REFUSED).await, 1);
    for conn in &mut open {
        assert_serves(conn).await;
    }

    drop(open.pop());
    // The slot comes back once the closed connection's task has ended.
    wait_until_open(&strata, 2).await;
    let mut again = Conn::connect(strata.kafka).await;
    assert!(answers(&mut again).await, "the freed slot was not usable");
    assert_serves(&mut open[0]).await;
}

async fn wait_until_open(strata: &Strata, connections: u64) {
    for _ in 0..300 {
        if metric(strata.admin, OPEN).await == connections {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the broker never got down to {connections} open connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_limit_counts_each_client_address_apart() {
    let strata = Strata::start_with(&["--max-connections-per-ip", "2"]);
    let here: IpAddr = "127.0.0.1".parse().unwrap();
    let elsewhere: IpAddr = "127.0.0.2".parse().unwrap();
    let mut first = Conn::connect_from(strata.kafka, here).await;
    let mut second = Conn::connect_from(strata.kafka, here).await;
    assert_serves(&mut first).await;
    assert_serves(&mut second).await;
    let mut third = Conn::connect_from(strata.kafka, here).await;
    third.expect_closed().await;
    assert_eq!(metric(strata.admin, REFUSED_PER_IP).await, 1);
    let mut other_host = Conn::connect_from(strata.kafka, elsewhere).await;
    assert_serves(&mut other_host).await;
    assert_serves(&mut first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_but_not_while_its_request_is_pending() {
    let strata = Strata::start_with(&["--connections-max-idle-ms", "1500"]);
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("idle", 1).await;
    // A long poll outlasting the idle timeout: the client is waiting for the broker, which is
    // not idleness, so the answer comes.
    let data = conn.fetch("idle", 0, 0, 3_000, 1).await;
    assert_eq!(data.error_code, 0);
    // A client that keeps talking stays.
    for _ in 0..15 {
        assert_serves(&mut conn).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then nothing: closed.
    conn.expect_closed().await;
    assert_eq!(
        metric(
            strata.admin,
            "strata_connections_timed_out_total{reason=\"idle\"}"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_trickles_in_is_cut_off_while_others_are_served() {
    let strata = Strata::start_with(&["--request-read-timeout-ms", "1500"]);
    let mut other = Conn::connect(strata.kafka).await;
    let mut slow = Conn::connect(strata.kafka).await;
    // A frame of 10,000 bytes, sent one byte every 200 ms: it never completes, and the
    // connection is never quiet either.
    let mut frame = 10_000i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1]);
    frame.resize(200, 0);
    let mut closed = false;
    for byte in frame {
        if slow.stream.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(200), slow.stream.read(&mut buf));
        if let Ok(result) = read.await {
            assert!(!matches!(result, Ok(n) if n > 0), "the broker answered");
            closed = true;
            break;
        }
        assert_serves(&mut other).await;
    }
    assert!(closed, "the broker kept reading a frame for 40 s");
    assert_eq!(
        metric(
            strata.admin,
            "strata_connections_timed_out_total{reason=\"request_read\"}"
        )
        .await,
        1
    );
    assert_serves(&mut other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_and_holds_no_memory() {
    let mut strata = Strata::start_with(&["--response-write-timeout-ms", "2000"]);
    let mut producer = Conn::connect(strata.kafka).await;
    producer.create_topic("unread", 1).await;
    let records: Vec<TestRecord> = (0..8)
        .map(|i| TestRecord {
            key: None,
            value: Some(vec![b'a' + i as u8; 100_000]),
            headers: vec![],
            timestamp: 1_700_000_000_000,
        })
        .collect();
    for _ in 0..4 {
        let batch = encode_batch(&records, Compression::None, None);
        producer.produce_ok("unread", 0, batch).await;
    }
    let rss_before = process_kib(strata.pid(), "VmRSS");

    // 64 pipelined fetches of ~3.2 MiB each, never read: ~200 MiB of responses if the broker
    // built them all, and a socket that fills after the first.
    let mut deaf = Conn::connect(strata.kafka).await;
    for _ in 0..64 {
        deaf.send(FETCH_V, fetch_request("unread", 0, 0, 0, 0))
            .await;
    }
    for _ in 0..5 {
        let data = producer.fetch("unread", 0, 0, 0, 0).await;
        assert_eq!(data.error_code, 0);
    }
    wait_for_metric(
        &strata,
        "strata_connections_timed_out_total{reason=\"response_write\"}",
        1,
    )
    .await;
    wait_until_open(&strata, 1).await;
    let rss_after = process_kib(strata.pid(), "VmRSS");
    assert!(
        rss_after < rss_before + 100 * 1024,
        "resident set grew from {rss_before} KiB to {rss_after} KiB"
    );
    // What the broker sent before it gave up, then the close.
    let mut sink = Vec::new();
    let drained = tokio::time::timeout(RESPONSE_TIMEOUT, deaf.stream.read_to_end(&mut sink)).await;
    assert!(drained.is_ok(), "the connection was not closed");
    strata.assert_alive();
    assert_eq!(producer.fetch("unread", 0, 0, 0, 0).await.error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_claiming_100_mib_that_never_arrive_take_no_memory() {
    let strata = Strata::start();
    let mut survivor = Conn::connect(strata.kafka).await;
    assert_serves(&mut survivor).await;
    let pid = strata.pid();
    let (size_before, rss_before) = (process_kib(pid, "VmSize"), process_kib(pid, "VmRSS"));

    const CLAIMERS: u64 = 40;
    let claim = strata::limits::FRAME_BYTES_MAX as i32;
    let mut claimers = Vec::new();
    for _ in 0..CLAIMERS {
        let mut conn = Conn::connect(strata.kafka).await;
        let mut start = claim.to_be_bytes().to_vec();
        start.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1, 0, 0]);
        conn.send_raw(&start).await;
        claimers.push(conn);
    }
    wait_until_open(&strata, CLAIMERS + 1).await;
    // A buffer of the claimed size would be 40 x 100 MiB of address space (calloc'd pages
    // count in VmSize at once, in VmRSS only when written); 1 GiB leaves room for allocator
    // arenas. Sampled for two seconds: the claimers' tasks read their prefixes within
    // milliseconds of connecting, so an allocation of the claim would show at once.
    for _ in 0..20 {
        let (size, rss) = (process_kib(pid, "VmSize"), process_kib(pid, "VmRSS"));
        assert!(
            size < size_before + 1024 * 1024,
            "address space grew from {size_before} KiB to {size} KiB"
        );
        assert!(
            rss < rss_before + 64 * 1024,
            "resident set grew from {rss_before} KiB to {rss} KiB"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_serves(&mut survivor).await;
    drop(claimers);
    assert_serves(&mut survivor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_larger_than_max_message_bytes_is_refused_with_message_too_large() {
    const MESSAGE_TOO_LARGE: i16 = 10;
    let strata = Strata::start_with(&["--message-max-bytes", "5000"]);
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("large", 1).await;
    let small = simple_batch(0, 2);
    let large = encode_batch(
        &[TestRecord {
            key: None,
            value: Some(vec![7; 6000]),
            headers: vec![],
            timestamp: 1_700_000_000_000,
        }],
        Compression::None,
        None,
    );
    // One records field holding a valid batch and one too large: nothing of it is stored.
    let field = Bytes::from([small.as_ref(), large.as_ref()].concat());
    let answer = conn.produce("large", 0, field).await;
    assert_eq!(answer.error_code, MESSAGE_TOO_LARGE, "{answer:?}");
    assert_eq!(conn.high_watermark("large", 0).await, 0);
    assert_eq!(conn.produce_ok("large", 0, small).await, 0);
}
