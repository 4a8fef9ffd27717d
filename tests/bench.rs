//! `strata bench` against the real broker, with small counts: the JSON summaries must agree with
//! what the broker holds afterwards (high watermarks, records read back from either tier). A
//! smoke test of the tool, not of speed: nothing here looks at a time.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::{Conn, Strata};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `strata bench ARGS --json --quiet` against `strata`; returns the summary.
fn bench(strata: &Strata, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("bench")
        .args(args)
        .args(["--bootstrap", &strata.bootstrap(), "--json", "--quiet"])
        .output()
        .expect("run strata bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "strata bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary {stdout}: {e}"))
}

fn number(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {summary}"))
}

async fn high_watermarks(conn: &mut Conn, topic: &str, partitions: i32) -> i64 {
    let mut sum = 0;
    for partition in 0..partitions {
        sum += conn.high_watermark(topic, partition).await;
    }
    sum
}

/// A bare HTTP/1.1 call to the admin API; the whole response.
async fn http(admin: SocketAddr, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_agree_with_the_high_watermarks() {
    let strata = Strata::start();
    let produced = bench(
        &strata,
        &[
            "produce",
            "--topic",
            "bench",
            "--partitions",
            "3",
            "--producers",
            "2",
            "--records",
            "5000",
            "--record-bytes",
            "100",
            "--batch-bytes",
            "4000",
        ],
    );
    assert_eq!(number(&produced, "records"), 5000, "{produced}");
    assert_eq!(number(&produced, "bytes"), 500_000, "{produced}");
    assert_eq!(number(&produced, "errors"), 0, "{produced}");
    assert_eq!(number(&produced, "partitions"), 3, "{produced}");
    let acks = number(&produced["latency"], "count");
    assert!(
        (125..=5000).contains(&acks),
        "one latency sample per acknowledged request: {produced}"
    );

    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(high_watermarks(&mut conn, "bench", 3).await, 5000);

    let consumed = bench(&strata, &["consume", "--topic", "bench"]);
    assert_eq!(number(&consumed, "records"), 5000, "{consumed}");
    assert!(
        number(&consumed, "bytes") > 500_000,
        "batches as fetched: {consumed}"
    );

    let tail = bench(
        &strata,
        &["consume", "--topic", "bench", "--from-offset", "1000"],
    );
    let beyond: i64 = {
        let mut sum = 0;
        for partition in 0..3 {
            sum += (conn.high_watermark("bench", partition).await - 1000).max(0);
        }
        sum
    };
    assert_eq!(number(&tail, "records") as i64, beyond, "{tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_record_batches_with_compression_and_acks_1_all_arrive() {
    let strata = Strata::start();
    let produced = bench(
        &strata,
        &[
            "produce",
            "--topic",
            "small",
            "--records",
            "600",
            "--batch-bytes",
            "1",
            "--acks",
            "1",
            "--compression",
            "lz4",
            "--producers",
            "3",
        ],
    );
    assert_eq!(number(&produced, "records"), 600, "{produced}");
    assert_eq!(number(&produced["latency"], "count"), 600, "{produced}");
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(high_watermarks(&mut conn, "small", 1).await, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_reads_the_cold_tier_after_upload() {
    let strata = Strata::start();
    let produced = bench(
        &strata,
        &[
            "produce",
            "--topic",
            "cold",
            "--partitions",
            "2",
            "--records",
            "3000",
            "--batch-bytes",
            "20000",
        ],
    );
    assert_eq!(number(&produced, "records"), 3000, "{produced}");
    let response = http(strata.admin, "POST", "/v1/indexer/run").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let consumed = bench(&strata, &["consume", "--topic", "cold"]);
    assert_eq!(number(&consumed, "records"), 3000, "{consumed}");
    let metrics = http(strata.admin, "GET", "/metrics").await;
    let gets: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_object_gets_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no strata_object_gets_total in {metrics}"));
    assert!(gets > 0, "the records came from the bucket: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_consumes_every_record_it_produced() {
    let strata = Strata::start();
    let summary = bench(
        &strata,
        &[
            "e2e",
            "--topic",
            "e2e",
            "--partitions",
            "2",
            "--rate",
            "500",
            "--duration",
            "2",
        ],
    );
    assert_eq!(number(&summary, "errors"), 0, "{summary}");
    let records = number(&summary, "records");
    assert!(records > 0, "{summary}");
    assert_eq!(number(&summary["latency"], "count"), records, "{summary}");
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(high_watermarks(&mut conn, "e2e", 2).await, records as i64);
}
