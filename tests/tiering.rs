//! Tiered storage against a real S3 server (moto), through the real binary: sealed WAL segments
//! become objects in the bucket, the WAL is trimmed only after that, consumers read the same
//! bytes from the cold tier, and a bucket that goes away loses nothing.

mod common;
#[path = "support/moto.rs"]
mod moto;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{admin_call, encode_batch, metric, Conn, Strata, TestRecord};
use futures_util::TryStreamExt;
use kafka_protocol::records::Compression;
use tokio::net::{TcpListener, TcpStream};

fn records(from: usize, n: usize) -> Vec<TestRecord> {
    (from..from + n).map(TestRecord::simple).collect()
}

/// Produces batches with every codec to partitions 0 and 1.
async fn produce_mixed(conn: &mut Conn, topic: &str, rounds: usize) {
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for round in 0..rounds {
        let batch = encode_batch(&records(round * 50, 50), codecs[round % codecs.len()], None);
        conn.produce_ok(topic, (round % 2) as i32, batch).await;
    }
}

fn wal_files(strata: &Strata) -> usize {
    std::fs::read_dir(strata.data_dir().join("wal"))
        .unwrap()
        .count()
}

async fn bucket_keys(endpoint: &str, url: &str) -> Vec<String> {
    let store = strata::object_storage::open(url, Some(endpoint))
        .await
        .unwrap();
    let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
    listed.iter().map(|m| m.location.to_string()).collect()
}

/// Reads an object's footer from the bucket, lays its Tantivy index out in a directory, and
/// checks that it finds `expected` records of partition 0 (and every one of them by key text).
async fn assert_object_index_finds(endpoint: &str, url: &str, key: &str, expected: usize) {
    let store = strata::object_storage::open(url, Some(endpoint))
        .await
        .unwrap();
    let location = object_store::path::Path::from(key);
    let size = object_store::ObjectStoreExt::head(store.as_ref(), &location)
        .await
        .unwrap()
        .size;
    let footer = strata::metadata::snapshot::read_footer(store.as_ref(), &location, size)
        .await
        .unwrap();
    assert!(
        footer.index_files.iter().any(|f| f.name == "meta.json"),
        "{:?}",
        footer.index_files
    );
    let dir = tempfile::tempdir().unwrap();
    for file in &footer.index_files {
        let bytes = object_store::ObjectStoreExt::get_range(
            store.as_ref(),
            &location,
            file.start..file.end,
        )
        .await
        .unwrap();
        std::fs::write(dir.path().join(&file.name), bytes).unwrap();
    }
    let index = tantivy::Index::open_in_dir(dir.path()).unwrap();
    let searcher = index.reader().unwrap().searcher();
    let (_, fields) = strata::segment::index::schema();
    let parser = tantivy::query::QueryParser::for_index(&index, vec![fields.key]);
    let count = |q: &str| {
        searcher
            .search(&parser.parse_query(q).unwrap(), &tantivy::collector::Count)
            .unwrap()
    };
    assert_eq!(count("partition:0"), expected);
    assert_eq!(
        count("key:key"),
        2 * expected,
        "every record's key is searchable text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_move_to_the_bucket_and_read_back_identical() {
    moto::Moto::set_credentials();
    let moto = moto::Moto::start();
    moto.create_bucket("strata-tiering");
    let url = "s3://strata-tiering/cluster-a";
    let mut strata = Strata::start_with(&["--object-store", url, "--s3-endpoint", &moto.endpoint]);
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("tiered", 2).await;
    conn.keep_forever("tiered").await;
    produce_mixed(&mut conn, "tiered", 20).await;
    let hot = [
        conn.fetch_all_raw("tiered", 0, 0).await,
        conn.fetch_all_raw("tiered", 1, 0).await,
    ];

    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    let uploaded = body["uploaded"].as_array().unwrap();
    assert_eq!(uploaded.len(), 1, "{body}");
    assert_eq!(
        wal_files(&strata),
        1,
        "only the new active WAL segment is left"
    );
    let keys = bucket_keys(&moto.endpoint, url).await;
    let segments: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("v2/segments/"))
        .collect();
    assert_eq!(segments, vec![uploaded[0]["key"].as_str().unwrap()]);
    assert!(
        keys.contains(&strata::metadata::snapshot::SNAPSHOT_KEY.to_string()),
        "{keys:?}"
    );

    assert_object_index_finds(&moto.endpoint, url, segments[0], 500).await;
    assert_eq!(
        metric(strata.admin, "strata_hot_indexes_packed_total").await,
        1,
        "the object's index is the segment's hot index, not a second indexing"
    );

    let (status, tiers) = admin_call(
        strata.admin,
        "GET",
        "/v1/topics/tiered/partitions",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    for partition in tiers["partitions"].as_array().unwrap() {
        assert_eq!(
            partition["remote_end_offset"], partition["high_watermark"],
            "{tiers}"
        );
        assert_eq!(
            partition["wal_start_offset"], partition["high_watermark"],
            "{tiers}"
        );
        assert_eq!(partition["segment_count"], 1);
    }

    let cold = [
        conn.fetch_all_raw("tiered", 0, 0).await,
        conn.fetch_all_raw("tiered", 1, 0).await,
    ];
    assert_eq!(
        cold, hot,
        "the cold tier serves the very bytes the hot tier did"
    );
    assert_eq!(
        metric(strata.admin, "strata_objects_uploaded_total").await,
        1
    );
    let gets = metric(strata.admin, "strata_object_gets_total").await;
    let misses = metric(strata.admin, "strata_cache_misses_total").await;
    assert!(gets >= 1 && gets == misses, "one GET per cache miss");
    assert_eq!(conn.fetch_all_raw("tiered", 0, 0).await, hot[0]);
    let after = metric(strata.admin, "strata_object_gets_total").await;
    assert_eq!(after, gets, "a second read comes from the cache");
    assert!(metric(strata.admin, "strata_cache_hits_total").await >= 1);
    // By timestamp and from the middle of a batch, from the cold tier.
    let (offset, _) = conn
        .list_offset("tiered", 1, TestRecord::simple(175).timestamp)
        .await;
    assert_eq!(offset, 75, "record 175 is offset 75 of partition 1");

    // New data lands in the WAL; a fetch walks from the bucket into the WAL in order.
    produce_mixed(&mut conn, "tiered", 4).await;
    let both = conn.fetch_all_raw("tiered", 0, 0).await;
    assert!(both.starts_with(&hot[0]) && both.len() > hot[0].len());

    strata.restart();
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(
        conn.fetch_all_raw("tiered", 0, 0).await,
        both,
        "after a restart, from the catalog"
    );
}

/// A TCP proxy the test can switch off: off, it cuts every open connection (the S3 client keeps
/// pooled ones) and drops new ones at once.
struct Switch {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Switch {
    async fn start(target: String) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, open) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                open.lock().unwrap().push(task);
            }
        });
        Switch {
            addr,
            up,
            connections,
        }
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.connections
                .lock()
                .unwrap()
                .drain(..)
                .for_each(|task| task.abort());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_trims_nothing_and_the_backlog_uploads_when_it_returns() {
    moto::Moto::set_credentials();
    let moto = moto::Moto::start();
    moto.create_bucket("strata-outage");
    let switch = Switch::start(moto.endpoint.trim_start_matches("http://").to_string()).await;
    let endpoint = format!("http://{}", switch.addr);
    let strata = Strata::start_with(&[
        "--object-store",
        "s3://strata-outage",
        "--s3-endpoint",
        &endpoint,
        "--wal-disk-bytes-max",
        "200000",
    ]);
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("outage", 2).await;
    conn.keep_forever("outage").await;
    produce_mixed(&mut conn, "outage", 10).await;

    switch.set(false);
    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        wal_files(&strata) >= 2,
        "the sealed segment stays in the WAL"
    );
    produce_mixed(&mut conn, "outage", 10).await;

    // Produce until the WAL's disk budget is spent: then a retriable KAFKA_STORAGE_ERROR, and
    // nothing half-written.
    let high_watermark = conn.high_watermark("outage", 0).await;
    let mut refused = None;
    for round in 0..2000 {
        let answer = conn
            .produce(
                "outage",
                0,
                encode_batch(&records(round * 50, 50), Compression::None, None),
            )
            .await;
        if answer.error_code != 0 {
            refused = Some(answer.error_code);
            break;
        }
    }
    assert_eq!(
        refused,
        Some(56),
        "KAFKA_STORAGE_ERROR once the budget is spent"
    );
    assert!(
        conn.high_watermark("outage", 0).await > high_watermark,
        "produce kept working until then"
    );
    let expected = conn.fetch_all_raw("outage", 0, 0).await;

    switch.set(true);
    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["uploaded"].as_array().unwrap().is_empty(), "{body}");
    assert_eq!(wal_files(&strata), 1);
    assert_eq!(
        conn.fetch_all_raw("outage", 0, 0).await,
        expected,
        "every record, now from the bucket"
    );
    assert!(!bucket_keys(&moto.endpoint, "s3://strata-outage")
        .await
        .is_empty());
}

/// Polls the bucket until its metadata snapshot names `topic` (the broker uploads it as soon as
/// a topic changes).
async fn wait_for_snapshot_with(endpoint: &str, url: &str, topic: &str) {
    let store = strata::object_storage::open(url, Some(endpoint))
        .await
        .unwrap();
    let key = object_store::path::Path::from(strata::metadata::snapshot::SNAPSHOT_KEY);
    for _ in 0..200 {
        if let Ok(found) = object_store::ObjectStoreExt::get(store.as_ref(), &key).await {
            let text = String::from_utf8(found.bytes().await.unwrap().to_vec()).unwrap();
            if text.contains(&format!("\"{topic}\"")) {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no metadata snapshot naming {topic} appeared in the bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_an_empty_disk_recovers_everything_uploaded_from_the_bucket() {
    moto::Moto::set_credentials();
    let moto = moto::Moto::start();
    moto.create_bucket("strata-disaster");
    let url = "s3://strata-disaster/prod";
    let args = ["--object-store", url, "--s3-endpoint", &moto.endpoint];
    let mut lost = Strata::start_with(&args);
    let mut conn = Conn::connect(lost.kafka).await;
    conn.create_topic("survivor", 2).await;
    conn.keep_forever("survivor").await;
    produce_mixed(&mut conn, "survivor", 12).await;
    let (producer_id, _) = conn.init_producer_id().await;
    let (status, body) = admin_call(lost.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    let expected = [
        conn.fetch_all_raw("survivor", 0, 0).await,
        conn.fetch_all_raw("survivor", 1, 0).await,
    ];
    let high_watermark = conn.high_watermark("survivor", 0).await;
    wait_for_snapshot_with(&moto.endpoint, url, "survivor").await;
    lost.kill();
    drop(lost); // its data directory goes with it

    let fresh = Strata::start_with(&args);
    let mut conn = Conn::connect(fresh.kafka).await;
    let recovered = [
        conn.fetch_all_raw("survivor", 0, 0).await,
        conn.fetch_all_raw("survivor", 1, 0).await,
    ];
    assert_eq!(recovered, expected, "every uploaded record, byte for byte");
    assert_eq!(conn.high_watermark("survivor", 0).await, high_watermark);
    let next = conn
        .produce_ok(
            "survivor",
            0,
            encode_batch(&records(9000, 3), Compression::None, None),
        )
        .await;
    assert_eq!(
        next, high_watermark,
        "new offsets continue where the lost broker's ended"
    );
    assert!(
        conn.init_producer_id().await.0 > producer_id,
        "producer ids never repeat"
    );
}

async fn delete_records(conn: &mut Conn, topic: &str, offset: i64) -> i64 {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::DeleteRecordsRequest;
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(common::name(topic))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])]);
    let response = conn.call(2, request).await;
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0, "{response:?}");
    answer.low_watermark
}

async fn delete_topic(conn: &mut Conn, topic: &str) {
    use kafka_protocol::messages::DeleteTopicsRequest;
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topic_names(vec![common::name(topic)]);
    let response = conn.call(4, request).await;
    assert_eq!(response.responses[0].error_code, 0, "{response:?}");
}

fn segment_keys(keys: &[String]) -> Vec<&String> {
    keys.iter()
        .filter(|k| k.starts_with("v2/segments/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_delete_records_and_delete_topics_remove_data_from_both_tiers() {
    moto::Moto::set_credentials();
    let moto = moto::Moto::start();
    moto.create_bucket("strata-retention");
    let url = "s3://strata-retention";
    let mut strata = Strata::start_with(&["--object-store", url, "--s3-endpoint", &moto.endpoint]);
    let mut conn = Conn::connect(strata.kafka).await;
    for topic in ["keep", "expire"] {
        conn.create_topic(topic, 1).await;
        conn.keep_forever(topic).await;
        for round in 0..4 {
            conn.produce_ok(
                topic,
                0,
                encode_batch(&records(round * 25, 25), Compression::Lz4, None),
            )
            .await;
        }
    }
    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        segment_keys(&bucket_keys(&moto.endpoint, url).await).len(),
        1,
        "one object holds both topics"
    );

    // DeleteRecords: offsets below 30 are gone, durably.
    assert_eq!(delete_records(&mut conn, "keep", 30).await, 30);
    assert_eq!(
        conn.fetch("keep", 0, 10, 0, 0).await.error_code,
        1,
        "OFFSET_OUT_OF_RANGE below the log start"
    );
    assert_eq!(conn.list_offset("keep", 0, -2).await.0, 30);

    // retention.ms=0 expires everything of "expire" in the bucket; "keep" still needs the object.
    conn.set_topic_config("expire", "retention.ms", "0").await;
    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        conn.list_offset("expire", 0, -2).await.0,
        100,
        "the log start moved past the expired object"
    );
    assert_eq!(conn.fetch("expire", 0, 0, 0, 0).await.error_code, 1);
    assert_eq!(
        segment_keys(&bucket_keys(&moto.endpoint, url).await).len(),
        1,
        "still referenced by `keep`"
    );

    strata.restart();
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(
        conn.list_offset("keep", 0, -2).await.0,
        30,
        "DeleteRecords survives a restart"
    );
    assert_eq!(
        conn.list_offset("expire", 0, -2).await.0,
        100,
        "retention survives a restart"
    );
    let kept = conn.fetch_all_raw("keep", 0, 30).await;
    assert!(!kept.is_empty());

    // Deleting the last topic that needs the object deletes it from the bucket.
    delete_topic(&mut conn, "keep").await;
    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retention"]["objects_deleted"], 1, "{body}");
    assert!(
        segment_keys(&bucket_keys(&moto.endpoint, url).await).is_empty(),
        "no data left in the bucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_reads_use_the_disk_cache_and_survive_it_being_wiped() {
    moto::Moto::set_credentials();
    let moto = moto::Moto::start();
    moto.create_bucket("strata-disk-cache");
    // No memory cache: every cache hit is a disk hit.
    let strata = Strata::start_with(&[
        "--object-store",
        "s3://strata-disk-cache",
        "--s3-endpoint",
        &moto.endpoint,
        "--cache-memory-bytes",
        "0",
    ]);
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("cached", 2).await;
    conn.keep_forever("cached").await;
    produce_mixed(&mut conn, "cached", 10).await;
    let hot = conn.fetch_all_raw("cached", 0, 0).await;
    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(conn.fetch_all_raw("cached", 0, 0).await, hot);
    let gets = metric(strata.admin, "strata_object_gets_total").await;
    assert!(gets >= 1);
    let cache_dir = strata.data_dir().join("cache");
    assert!(
        std::fs::read_dir(&cache_dir).unwrap().count() >= 1,
        "blocks are kept on disk"
    );
    assert_eq!(conn.fetch_all_raw("cached", 0, 0).await, hot);
    assert_eq!(
        metric(strata.admin, "strata_object_gets_total").await,
        gets,
        "served from the disk cache"
    );

    for entry in std::fs::read_dir(&cache_dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_eq!(
        conn.fetch_all_raw("cached", 0, 0).await,
        hot,
        "a wiped cache is refetched"
    );
    assert!(metric(strata.admin, "strata_object_gets_total").await > gets);
}

/// Whatever the indexer was building when the broker died (an object and its index staged
/// under `<data-dir>/tmp`) is removed at start-up, and the segment is built and uploaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_built_object_left_by_a_crash_is_removed_and_built_again() {
    let mut strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("staged", 2).await;
    conn.keep_forever("staged").await;
    produce_mixed(&mut conn, "staged", 3).await;
    let hot = conn.fetch_all_raw("staged", 1, 0).await;
    drop(conn);
    strata.kill();
    let staging = strata.data_dir().join("tmp");
    std::fs::create_dir_all(staging.join(".tmpIndex")).unwrap();
    std::fs::write(staging.join(".tmpIndex/meta.json"), b"{").unwrap();
    std::fs::write(staging.join(".tmpObject"), b"STRATASG half an object").unwrap();

    strata.restart();
    assert!(
        !staging.exists(),
        "the staging directory survived a restart"
    );
    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["uploaded"].as_array().unwrap().is_empty(), "{body}");
    let staged: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
    assert!(staged.is_empty(), "an upload left {staged:?} behind");
    let (_, tiers) = admin_call(
        strata.admin,
        "GET",
        "/v1/topics/staged/partitions",
        None,
        None,
    )
    .await;
    let partition = &tiers["partitions"][1];
    assert_eq!(
        partition["remote_end_offset"], partition["high_watermark"],
        "{tiers}"
    );
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(conn.fetch_all_raw("staged", 1, 0).await, hot);
}

/// Every `.seg` file under `dir`, recursively.
fn seg_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(seg_files(&path));
        } else if path.extension().is_some_and(|e| e == "seg") {
            found.push(path);
        }
    }
    found
}

/// The default `file://` bucket: an object no topic needs any more is deleted (moved out of the
/// bucket and freed in steps), and nothing of it is left in the bucket or the staging folder.
#[tokio::test]
async fn a_local_bucket_deletes_objects_nobody_needs() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("gone", 2).await;
    conn.keep_forever("gone").await; // the test records' timestamps are from 1970
    produce_mixed(&mut conn, "gone", 4).await;
    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    let objects = strata.data_dir().join("objects");
    assert_eq!(
        seg_files(&objects).len(),
        1,
        "uploaded into the local bucket"
    );

    delete_topic(&mut conn, "gone").await;
    let (status, body) = admin_call(strata.admin, "POST", "/v1/indexer/run", None, None).await;
    assert_eq!(status, 200, "{body}");
    // The background indexer may have deleted it first: what counts is that it is gone.
    assert!(seg_files(&objects).is_empty(), "the object is gone");
    assert_eq!(
        metric(strata.admin, "strata_objects_deleted_total").await,
        1
    );
    let staging = strata.data_dir().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "nothing parked in the staging folder: {left:?}"
    );
}
