//! A fetch that starts in the bucket fills its limit across blocks and objects, and goes on
//! into the WAL: a consumer far behind gets as much per fetch as it asks for.

mod common;

use common::{encode_batch, Conn, Strata, TestRecord};
use kafka_protocol::records::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn run_indexer(strata: &Strata) {
    let admin = strata.admin;
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "POST /v1/indexer/run HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// Produces `batches` batches of 40 records with ~2.5 KB values (about 100 KB each).
async fn produce(conn: &mut Conn, from: usize, batches: usize) {
    for b in 0..batches {
        let records: Vec<TestRecord> = (0..40)
            .map(|i| {
                let mut record = TestRecord::simple(from + b * 40 + i);
                record.value = Some(vec![b'a' + (i % 26) as u8; 2500]);
                record
            })
            .collect();
        conn.produce_ok("far", 0, encode_batch(&records, Compression::None, None))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fetch_reads_across_blocks_objects_and_into_the_wal() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    conn.create_topic("far", 1).await;
    conn.keep_forever("far").await;
    // Two objects of ~2.5 MiB each (several ~1 MiB blocks), then batches left in the WAL.
    produce(&mut conn, 0, 25).await;
    run_indexer(&strata).await;
    produce(&mut conn, 1000, 25).await;
    run_indexer(&strata).await;
    produce(&mut conn, 2000, 10).await;
    let high_watermark = conn.high_watermark("far", 0).await;
    assert_eq!(high_watermark, 60 * 40);

    let everything = conn.fetch_all_raw("far", 0, 0).await;
    let one = conn.fetch("far", 0, 0, 0, 0).await;
    assert_eq!(one.error_code, 0);
    let records = one.records.expect("records");
    assert!(
        everything.len() < 8 * 1024 * 1024,
        "all of it fits in one fetch's partition limit"
    );
    assert_eq!(
        records.len(),
        everything.len(),
        "one fetch from offset 0 carries every batch up to the high watermark"
    );
    assert_eq!(&records[..], &everything[..]);

    // From the middle of the second object, with a limit of ~1.5 blocks: at most the limit
    // (whole batches), more than one block's worth.
    let mut request = common::fetch_request("far", 0, 1100, 0, 0);
    request.topics[0].partitions[0].partition_max_bytes = 1_600_000;
    let response = conn.call(common::FETCH_V, request).await;
    let middle = common::single_fetch_partition(response, "far", 0)
        .records
        .expect("records");
    assert!(middle.len() <= 1_600_000, "{}", middle.len());
    assert!(middle.len() > 1_100_000, "{}", middle.len());
}
