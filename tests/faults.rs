//! Object-store faults injected into the real binary (`--fault-injection`, switched at runtime
//! through `/v1/faults`) in front of the in-memory store (`--object-store memory://`): the
//! indexer's path (a failed or hanging upload trims nothing, produce goes on, the upload
//! succeeds once the store answers) and the reader's (a failed or hanging cold read answers
//! KAFKA_STORAGE_ERROR for that partition only, caches nothing, and reads again once the store
//! answers). The Python suite (tests/e2e/test_faults.py) does the same with real clients, and
//! the WAL's faults.

mod common;

use std::net::SocketAddr;

use common::{admin_call, simple_batch, Conn, Strata, FETCH_V};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::FetchRequest;

const KAFKA_STORAGE_ERROR: i16 = 56;

async fn set_fault(admin: SocketAddr, point: &str, fault: &str) {
    let fault: serde_json::Value = serde_json::from_str(fault).unwrap();
    let path = format!("/v1/faults/{point}");
    let (status, body) = admin_call(admin, "PUT", &path, None, Some(&fault)).await;
    assert_eq!(status, 200, "{body}");
}

async fn clear_faults(admin: SocketAddr) {
    let (status, body) = admin_call(admin, "DELETE", "/v1/faults", None, None).await;
    assert_eq!(status, 200, "{body}");
}

/// `(remote_end_offset, high_watermark)` of a partition, from the admin API.
async fn tiers(admin: SocketAddr, topic: &str, partition: usize) -> (i64, i64) {
    let (status, body) = admin_call(
        admin,
        "GET",
        &format!("/v1/topics/{topic}/partitions"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let info = &body["partitions"][partition];
    (
        info["remote_end_offset"].as_i64().unwrap(),
        info["high_watermark"].as_i64().unwrap(),
    )
}

/// One Fetch of partitions 0 and 1 from offset 0.
async fn fetch_both(conn: &mut Conn, topic: &str) -> Vec<PartitionData> {
    let partitions = (0..2)
        .map(|p| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(0)
                .with_partition_max_bytes(8 * 1024 * 1024)
        })
        .collect();
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(16 * 1024 * 1024)
        .with_topics(vec![FetchTopic::default()
            .with_topic(common::name(topic))
            .with_partitions(partitions)]);
    let response = conn.call(FETCH_V, request).await;
    response.responses[0].partitions.clone()
}

#[tokio::test]
async fn uploads_and_cold_reads_ride_out_a_failing_or_hanging_store() {
    let strata = Strata::start_with(&[
        "--object-store",
        "memory://",
        "--fault-injection",
        "--object-store-timeout-ms",
        "1000",
    ]);
    let admin = strata.admin;
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("t", 2).await;
    conn.keep_forever("t").await;
    conn.produce_ok("t", 0, simple_batch(0, 100)).await;
    let hot_bytes = conn.fetch_all_raw("t", 0, 0).await;

    // The fault goes from one action to the next without being cleared in between: the
    // background indexer retries failed uploads, and would upload as soon as the store answers.
    for fault in [r#"{"action":"error"}"#, r#"{"action":"hang"}"#] {
        set_fault(admin, "object_store.put", fault).await;
        let (status, body) = admin_call(admin, "POST", "/v1/indexer/run", None, None).await;
        assert_eq!(status, 502, "{fault}: {body}");
        assert_eq!(tiers(admin, "t", 0).await.0, 0, "{fault}: nothing trimmed");
        assert_eq!(
            conn.fetch_all_raw("t", 0, 0).await,
            hot_bytes,
            "still served from the WAL"
        );
    }
    // Read while nothing can be uploaded, so every byte comes from the WAL and no block of the
    // partition is in the read cache when the GETs fail below.
    conn.produce_ok("t", 0, simple_batch(100, 50)).await;
    let hot_bytes = conn.fetch_all_raw("t", 0, 0).await;
    clear_faults(admin).await;
    let (status, body) = admin_call(admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        tiers(admin, "t", 0).await,
        (150, 150),
        "all of partition 0 is in the bucket"
    );
    conn.produce_ok("t", 1, simple_batch(0, 10)).await;

    for fault in [r#"{"action":"error"}"#, r#"{"action":"hang"}"#] {
        set_fault(admin, "object_store.get", fault).await;
        let answer = fetch_both(&mut conn, "t").await;
        assert_eq!(
            answer[0].error_code, KAFKA_STORAGE_ERROR,
            "{fault}: the cold partition"
        );
        assert!(answer[0].records.as_ref().is_none_or(|r| r.is_empty()));
        assert_eq!(
            answer[1].error_code, 0,
            "{fault}: the hot partition is served"
        );
        assert!(!answer[1].records.as_ref().unwrap().is_empty());
        clear_faults(admin).await;
    }
    // Nothing of the failed reads was cached: the same bytes as before the upload.
    assert_eq!(conn.fetch_all_raw("t", 0, 0).await, hot_bytes);
}
