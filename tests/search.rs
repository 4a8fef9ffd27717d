//! Search through the real binary with its objects in a real S3 server (moto): the cold tier is
//! searched through ranged, cached GETs (never the whole object), hits are the records as
//! produced, and every `/v1` call needs the token. And produce waits for the hot index, and for
//! uploads, once either falls behind by `--search-lag-bytes-max`.

mod common;
#[path = "support/moto.rs"]
mod moto;

use common::{admin_call, encode_batch, metric, Conn, Strata, TestRecord};
use kafka_protocol::records::Compression;
use serde_json::json;

const TOKEN: &str = "integration-token";
const RECORDS: usize = 8_000;
const LEVELS: [&str; 4] = ["error", "warn", "info", "debug"];

fn record(i: usize) -> TestRecord {
    let value = json!({"level": LEVELS[i % 4], "n": i, "pad": "p".repeat(500)});
    TestRecord {
        key: Some(format!("k{i}").into_bytes()),
        value: Some(value.to_string().into_bytes()),
        headers: vec![("bin".to_string(), Some(vec![0xff, i as u8]))],
        timestamp: 1_700_000_000_000 + i as i64,
    }
}

/// Creates `topic` (one partition, kept forever) and produces `RECORDS` records to it, 500 to
/// a request.
async fn produce_records(kafka: std::net::SocketAddr, topic: &str) {
    let mut conn = Conn::connect(kafka).await;
    conn.create_topic(topic, 1).await;
    conn.keep_forever(topic).await;
    for from in (0..RECORDS).step_by(500) {
        let records: Vec<_> = (from..from + 500).map(record).collect();
        conn.produce_ok(topic, 0, encode_batch(&records, Compression::None, None))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cold_tier_on_s3_is_searched_with_ranged_cached_reads() {
    moto::Moto::set_credentials();
    let moto = moto::Moto::start();
    moto.create_bucket("strata-search");
    let strata = Strata::start_with(&[
        "--object-store",
        "s3://strata-search/c",
        "--s3-endpoint",
        &moto.endpoint,
        "--admin-token",
        TOKEN,
        "--cache-disk-bytes",
        "0",
    ]);
    produce_records(strata.kafka, "searched").await;
    let admin = strata.admin;
    let (status, run) = admin_call(admin, "POST", "/v1/indexer/run", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{run}");
    let object_bytes = run["uploaded"][0]["bytes"].as_u64().unwrap();

    let search = json!({"topic": "searched", "q": "value.level:warn AND value.n:4001", "limit": 5});
    let (status, body) = admin_call(admin, "POST", "/v1/search", Some(TOKEN), Some(&search)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1, "{body}");
    let hit = &body["hits"][0];
    assert_eq!(hit["offset"], 4001);
    assert_eq!(hit["key"], "k4001");
    let value: serde_json::Value = serde_json::from_str(hit["value"].as_str().unwrap()).unwrap();
    assert_eq!(value["n"], 4001);
    assert_eq!(hit["headers"][0]["value_base64"], true);
    assert_eq!(hit["headers"][0]["value"], "/6E=", "0xff 0xa1 in base64");
    let fetched = metric(admin, "strata_object_bytes_fetched_total").await;
    assert!(
        fetched < object_bytes / 2,
        "a search read {fetched} of the object's {object_bytes} bytes"
    );

    let gets = metric(admin, "strata_object_gets_total").await;
    let (_, again) = admin_call(admin, "POST", "/v1/search", Some(TOKEN), Some(&search)).await;
    assert_eq!(again["hits"], body["hits"]);
    assert_eq!(metric(admin, "strata_object_gets_total").await, gets);

    let path = "/v1/search?topic=searched&q=value.level:error&limit=0";
    let (_, count) = admin_call(admin, "GET", path, Some(TOKEN), None).await;
    assert_eq!(count["total"], RECORDS / 4);
    let (status, _) = admin_call(admin, "GET", path, None, None).await;
    assert_eq!(status, 401);
}

/// With a hot index refreshed only every minute and a lag budget of 64 KiB, every produce past
/// the first finds the index behind and waits until a pass has indexed the batch before it.
/// That pass may still be running when the produce goes; the pass before it is committed. So
/// the third batch from the end is searchable the moment the last is acknowledged, not a
/// minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_waits_while_the_hot_index_is_behind() {
    let strata = Strata::start_with(&[
        "--search-refresh-ms",
        "60000",
        "--search-lag-bytes-max",
        "65536",
    ]);
    produce_records(strata.kafka, "paced").await;
    let paced = metric(strata.admin, "strata_produce_paced_total").await;
    assert!(paced >= 1, "no produce request waited for the hot index");
    let before_last = RECORDS - 1001;
    let path = format!("/v1/search?topic=paced&q=value.n:{before_last}");
    let (status, body) = admin_call(strata.admin, "GET", &path, None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1, "{body}");
    assert_eq!(body["hits"][0]["offset"], before_last);
}

/// Produce waits for uploads as well, once they succeed: with every upload slowed by 100 ms,
/// 64 KiB segments and a lag budget of 256 KiB, the WAL stays near the budget while 4 MB go
/// in, where it would otherwise hold most of them. (While uploads fail it does not wait: the
/// outage tests in tiering.rs and tests/e2e produce up to the WAL's disk budget.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_waits_while_the_wal_waits_for_uploads() {
    const BUDGET: u64 = 256 * 1024;
    let strata = Strata::start_with(&[
        "--wal-segment-bytes",
        "65536",
        "--search-lag-bytes-max",
        &BUDGET.to_string(),
        "--search-refresh-ms",
        "20",
        "--fault-injection",
        "--faults",
        r#"{"indexer.after_upload_before_catalog":{"action":"delay","ms":100}}"#,
    ]);
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("backlog", 1).await;
    conn.keep_forever("backlog").await;
    // Until an upload has succeeded, nothing waits for uploads: the WAL may run ahead.
    let mut wal_bytes_max = 0;
    let mut uploading = false;
    for from in (0..RECORDS).step_by(25) {
        let records: Vec<_> = (from..from + 25).map(record).collect();
        conn.produce_ok(
            "backlog",
            0,
            encode_batch(&records, Compression::None, None),
        )
        .await;
        let wal_bytes = metric(strata.admin, "strata_wal_bytes").await;
        if uploading {
            wal_bytes_max = wal_bytes_max.max(wal_bytes);
        } else {
            uploading = metric(strata.admin, "strata_objects_uploaded_total").await > 0;
        }
    }
    let uploaded = metric(strata.admin, "strata_objects_uploaded_total").await;
    assert!(uploaded >= 10, "{uploaded} objects uploaded");
    assert!(metric(strata.admin, "strata_produce_paced_total").await >= 1);
    // The budget of sealed segments, plus one sealed after the check, the active segment and a
    // request.
    assert!(
        wal_bytes_max <= BUDGET + 160 * 1024,
        "the WAL reached {wal_bytes_max} bytes with a budget of {BUDGET}"
    );
}

/// The active segment never holds produce, however small the budget: with the default 128 MiB
/// segments and a 1 MiB budget (half a 2 MiB WAL disk budget), 1.5 MB go in after an upload
/// without requests held (the hot index, refreshed every 20 ms, mostly stays within it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_is_not_held_for_the_active_segment() {
    let strata = Strata::start_with(&[
        "--wal-disk-bytes-max",
        "2097152",
        "--search-refresh-ms",
        "20",
    ]);
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("active", 1).await;
    conn.keep_forever("active").await;
    let first: Vec<_> = (0..25).map(record).collect();
    conn.produce_ok("active", 0, encode_batch(&first, Compression::None, None))
        .await;
    let (status, run) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["uploaded"].as_array().map(Vec::len), Some(1), "{run}");
    for from in (25..2_800).step_by(25) {
        let records: Vec<_> = (from..from + 25).map(record).collect();
        conn.produce_ok("active", 0, encode_batch(&records, Compression::None, None))
            .await;
    }
    assert!(metric(strata.admin, "strata_wal_bytes").await > 1_048_576);
    // Past 1 MiB in the active segment, every one of the ~40 requests left would be held if it
    // counted; a pass of the hot index that runs long may hold one or two.
    let paced = metric(strata.admin, "strata_produce_paced_total").await;
    assert!(paced <= 5, "{paced} produce requests held");
}
