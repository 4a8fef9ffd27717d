//! Shared harness for the integration tests: starts the real `strata` binary on ephemeral ports
//! in a temporary data directory, and a small raw Kafka client (one TCP connection, requests
//! encoded and responses decoded by `kafka-protocol`) for tests that need the wire itself.
//!
//! Every wait here is bounded; the broker is killed when its `Strata` is dropped.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, InitProducerIdRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest, ProducerId,
    RequestHeader, RequestKind, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the broker may take to print `strata: ready`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the broker may take to exit after SIGTERM or SIGKILL.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long any single response may take (long polls in tests wait at most a few seconds).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------------
// The broker process
// ------------------------------------------------------------------------------------------

/// A running (or stopped) `strata serve` over one data directory.
pub struct Strata {
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
    /// The Kafka listener of the current run (changes on every restart: port 0).
    pub kafka: SocketAddr,
    /// The admin listener of the current run.
    pub admin: SocketAddr,
}

impl Strata {
    /// Starts a broker with default settings.
    pub fn start() -> Strata {
        Strata::start_with(&[])
    }

    /// Starts a broker with extra `strata serve` flags.
    pub fn start_with(args: &[&str]) -> Strata {
        let dir = tempfile::Builder::new()
            .prefix("strata-test-")
            // STRATA_TEST_KEEP=1 keeps the data directory and log for a post-mortem.
            .disable_cleanup(std::env::var_os("STRATA_TEST_KEEP").is_some())
            .tempdir()
            .expect("create a temporary directory");
        let mut strata = Strata {
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            kafka: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
        };
        strata.spawn();
        strata
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("strata.log")
    }

    /// Everything the broker wrote to stderr, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        self.kafka.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the broker log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STRATA_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--kafka-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(&self.args)
            .env("STRATA_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = command.spawn().expect("spawn the strata binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = mpsc::channel::<String>();
        // Reads stdout for as long as the process lives, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let (mut kafka, mut admin) = (None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("strata: kafka listening on ") {
                        kafka = Some(addr.trim().parse().expect("kafka address"));
                    } else if let Some(addr) = line.strip_prefix("strata: admin listening on ") {
                        admin = Some(addr.trim().parse().expect("admin address"));
                    } else if line.trim() == "strata: ready" {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill_quietly();
                    panic!(
                        "strata did not print `strata: ready` within {START_TIMEOUT:?}\n--- log ---\n{}",
                        self.log()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit();
                    panic!(
                        "strata exited before it was ready ({status:?})\n--- log ---\n{}",
                        self.log()
                    );
                }
            }
        }
        self.kafka = kafka.expect("strata printed no kafka address before `ready`");
        self.admin = admin.expect("strata printed no admin address before `ready`");
    }

    /// Starts the broker again on the same data directory (new ports).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
        self.spawn();
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        let child = self.child.as_mut().expect("the broker is running");
        child.kill().expect("SIGKILL the broker");
        self.wait_exit();
    }

    /// SIGTERM, waits (bounded) for the exit, and returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.wait_exit()
    }

    /// Whether the process is still alive (it has not exited on its own).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Asserts the broker process has not died (for tests that throw garbage at it).
    pub fn assert_alive(&mut self) {
        assert!(
            self.is_running(),
            "the broker process died\n--- log ---\n{}",
            self.log()
        );
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the broker is running");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "strata did not exit within {EXIT_TIMEOUT:?}\n--- log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        self.kill_quietly();
        if std::thread::panicking() {
            // Shown by the test runner with the failing test's output.
            eprintln!(
                "--- strata log ({}) ---\n{}",
                self.log_path().display(),
                self.log()
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// A raw Kafka connection
// ------------------------------------------------------------------------------------------

/// One TCP connection speaking the Kafka protocol, with bounded waits on every read.
pub struct Conn {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn::connected(TcpStream::connect(addr)).await
    }

    /// Connects from a chosen local address (any of 127.0.0.0/8 works on Linux), as a client on
    /// another host would.
    pub async fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> Conn {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(local, 0))
            .expect("bind the local address");
        Conn::connected(socket.connect(addr)).await
    }

    async fn connected(
        connect: impl std::future::Future<Output = std::io::Result<TcpStream>>,
    ) -> Conn {
        let stream = tokio::time::timeout(RESPONSE_TIMEOUT, connect)
            .await
            .expect("connect timed out")
            .expect("connect to the broker");
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Encodes one request frame at `version`; returns it and its correlation id.
    pub fn frame<R>(&mut self, version: i16, request: R) -> (Bytes, i32)
    where
        R: Request + Into<RequestKind>,
    {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-tests")));
        let frame =
            strata::protocol::encode_request(&header, &request.into()).expect("encode the request");
        (frame, correlation_id)
    }

    /// Sends one request without waiting for its response; returns its correlation id.
    pub async fn send<R>(&mut self, version: i16, request: R) -> i32
    where
        R: Request + Into<RequestKind>,
    {
        let (frame, correlation_id) = self.frame(version, request);
        self.send_raw(&frame).await;
        correlation_id
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(RESPONSE_TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write to the broker");
    }

    /// Reads one response frame (without its length prefix).
    pub async fn recv_frame(&mut self) -> Bytes {
        self.recv_frame_within(RESPONSE_TIMEOUT).await
    }

    pub async fn recv_frame_within(&mut self, wait: Duration) -> Bytes {
        tokio::time::timeout(
            wait,
            strata::protocol::read_frame(&mut self.stream, 256 * 1024 * 1024),
        )
        .await
        .expect("no response within the timeout")
        .expect("read a response frame")
        .expect("the broker closed the connection instead of responding")
    }

    /// Reads and decodes the next response, which must be `R`'s at `version`.
    pub async fn recv<R: Request>(&mut self, version: i16) -> (i32, R::Response) {
        let frame = self.recv_frame().await;
        decode_response::<R>(version, frame)
    }

    /// Sends a request and reads its response, checking the correlation id.
    pub async fn call<R>(&mut self, version: i16, request: R) -> R::Response
    where
        R: Request + Into<RequestKind>,
    {
        let sent = self.send(version, request).await;
        let (received, response) = self.recv::<R>(version).await;
        assert_eq!(received, sent, "correlation id of the response");
        response
    }

    /// Asserts the broker closes this connection (a read gives EOF or an error) within the
    /// timeout, without sending any response bytes first.
    pub async fn expect_closed(&mut self) {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.stream.read(&mut buf)).await {
            Err(_) => panic!("the broker kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!(
                "expected the connection to be closed, got {n} bytes: {:?}",
                &buf[..n]
            ),
        }
    }
}

/// Decodes a response frame (without length prefix) for request type `R` at `version`,
/// returning the correlation id and the body; every byte must be consumed.
pub fn decode_response<R: Request>(version: i16, mut frame: Bytes) -> (i32, R::Response) {
    let api = ApiKey::try_from(R::KEY).expect("known api key");
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .unwrap_or_else(|e| panic!("decode the {api:?} v{version} response header: {e}"));
    let body = R::Response::decode(&mut frame, version)
        .unwrap_or_else(|e| panic!("decode the {api:?} v{version} response body: {e}"));
    assert_eq!(
        frame.remaining(),
        0,
        "bytes left after the {api:?} v{version} response"
    );
    (header.correlation_id, body)
}

// ------------------------------------------------------------------------------------------
// Requests
// ------------------------------------------------------------------------------------------

pub fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

pub fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Versions used by the helpers: recent, flexible, name-based.
pub const PRODUCE_V: i16 = 9;
pub const FETCH_V: i16 = 12;
pub const METADATA_V: i16 = 12;
pub const LIST_OFFSETS_V: i16 = 7;
pub const CREATE_TOPICS_V: i16 = 7;
pub const INIT_PRODUCER_ID_V: i16 = 4;

pub fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

pub fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(16 * 1024 * 1024)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(8 * 1024 * 1024)])])
}

pub fn metadata_request(topics: &[&str], allow_auto_create: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect(),
        ))
        .with_allow_auto_topic_creation(allow_auto_create)
}

pub fn create_topics_request(
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(str_bytes(k))
                            .with_value(Some(str_bytes(v)))
                    })
                    .collect(),
            )])
}

pub fn list_offsets_request(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])])
}

pub fn init_producer_id_request() -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

impl Conn {
    /// Creates a topic and asserts success.
    pub async fn create_topic(&mut self, topic: &str, partitions: i32) -> CreateTopicsResponse {
        let response = self
            .call(
                CREATE_TOPICS_V,
                create_topics_request(topic, partitions, &[]),
            )
            .await;
        assert_eq!(response.topics.len(), 1);
        let result = &response.topics[0];
        assert_eq!(
            result.error_code, 0,
            "create topic {topic}: {:?}",
            result.error_message
        );
        assert_eq!(result.num_partitions, partitions);
        response
    }

    /// Produces one records field to one partition and returns the partition's answer.
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
    ) -> PartitionProduceResponse {
        let response = self
            .call(PRODUCE_V, produce_request(topic, partition, records, -1))
            .await;
        assert_eq!(
            response.responses.len(),
            1,
            "topics in the produce response"
        );
        let topic_response = &response.responses[0];
        assert_eq!(topic_response.name.0.as_str(), topic);
        assert_eq!(topic_response.partition_responses.len(), 1);
        let answer = topic_response.partition_responses[0].clone();
        assert_eq!(answer.index, partition);
        answer
    }

    /// Sets one topic config with IncrementalAlterConfigs, asserting success.
    pub async fn set_topic_config(&mut self, topic: &str, config: &str, value: &str) {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::IncrementalAlterConfigsRequest;
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str_bytes(topic))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(str_bytes(config))
                    .with_config_operation(0)
                    .with_value(Some(str_bytes(value)))]),
        ]);
        let response = self.call(1, request).await;
        assert_eq!(response.responses[0].error_code, 0, "{response:?}");
    }

    /// Turns retention off for a topic. Test records carry 2023 timestamps, which the default
    /// retention.ms (7 days) expires as soon as they are uploaded to the bucket.
    pub async fn keep_forever(&mut self, topic: &str) {
        self.set_topic_config(topic, "retention.ms", "-1").await;
    }

    /// Produces and asserts success; returns the base offset.
    pub async fn produce_ok(&mut self, topic: &str, partition: i32, records: Bytes) -> i64 {
        let answer = self.produce(topic, partition, records).await;
        assert_eq!(
            answer.error_code, 0,
            "produce to {topic}/{partition}: {:?}",
            answer.error_message
        );
        answer.base_offset
    }

    /// One fetch of one partition; returns that partition's data.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
    ) -> PartitionData {
        let response = self
            .call(
                FETCH_V,
                fetch_request(topic, partition, offset, max_wait_ms, min_bytes),
            )
            .await;
        single_fetch_partition(response, topic, partition)
    }

    /// Every byte of records of a partition from `offset` to its high watermark.
    pub async fn fetch_all_raw(&mut self, topic: &str, partition: i32, offset: i64) -> Vec<u8> {
        let mut all = Vec::new();
        let mut next = offset;
        for _ in 0..10_000 {
            let data = self.fetch(topic, partition, next, 0, 0).await;
            assert_eq!(data.error_code, 0, "fetch {topic}/{partition} at {next}");
            let records = data.records.expect("records are never null");
            if records.is_empty() {
                assert_eq!(
                    next, data.high_watermark,
                    "no data before the high watermark"
                );
                return all;
            }
            let batches = split_batches(&records);
            let last = batches.last().unwrap();
            next = batch_base_offset(last) + i64::from(batch_last_offset_delta(last)) + 1;
            all.extend_from_slice(&records);
            if next >= data.high_watermark {
                return all;
            }
        }
        panic!("fetch_all_raw did not reach the high watermark");
    }

    /// `(offset, timestamp)` from ListOffsets, asserting no error.
    pub async fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> (i64, i64) {
        let answer = self.list_offset_answer(topic, partition, timestamp).await;
        assert_eq!(
            answer.error_code, 0,
            "ListOffsets {topic}/{partition} at {timestamp}"
        );
        (answer.offset, answer.timestamp)
    }

    pub async fn list_offset_answer(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> ListOffsetsPartitionResponse {
        let response = self
            .call(
                LIST_OFFSETS_V,
                list_offsets_request(topic, partition, timestamp),
            )
            .await;
        assert_eq!(response.topics.len(), 1);
        assert_eq!(response.topics[0].partitions.len(), 1);
        response.topics[0].partitions[0].clone()
    }

    /// The high watermark, by ListOffsets LATEST.
    pub async fn high_watermark(&mut self, topic: &str, partition: i32) -> i64 {
        self.list_offset(topic, partition, -1).await.0
    }

    pub async fn metadata(&mut self, topics: &[&str], allow_auto_create: bool) -> MetadataResponse {
        self.call(METADATA_V, metadata_request(topics, allow_auto_create))
            .await
    }

    /// A new producer id and epoch.
    pub async fn init_producer_id(&mut self) -> (i64, i16) {
        let response = self
            .call(INIT_PRODUCER_ID_V, init_producer_id_request())
            .await;
        assert_eq!(response.error_code, 0, "InitProducerId");
        (response.producer_id.0, response.producer_epoch)
    }
}

pub fn single_fetch_partition(
    response: kafka_protocol::messages::FetchResponse,
    topic: &str,
    partition: i32,
) -> PartitionData {
    assert_eq!(response.error_code, 0, "fetch top-level error");
    assert_eq!(response.responses.len(), 1, "topics in the fetch response");
    let topic_response = &response.responses[0];
    assert_eq!(topic_response.topic.0.as_str(), topic);
    assert_eq!(topic_response.partitions.len(), 1);
    let data = topic_response.partitions[0].clone();
    assert_eq!(data.partition_index, partition);
    data
}

// ------------------------------------------------------------------------------------------
// Record batches
// ------------------------------------------------------------------------------------------

/// A record as the tests describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: i64,
}

impl TestRecord {
    pub fn simple(i: usize) -> TestRecord {
        TestRecord {
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(format!("value-{i}-{}", "x".repeat(i % 37)).into_bytes()),
            headers: vec![("h".to_string(), Some(vec![i as u8, 0, 255]))],
            timestamp: 1_700_000_000_000 + i as i64,
        }
    }
}

/// Producer fields of a batch; `None` for a plain (non-idempotent) batch.
#[derive(Debug, Clone, Copy)]
pub struct Idempotence {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Encodes one v2 batch with `RecordBatchEncoder`.
pub fn encode_batch(
    records: &[TestRecord],
    compression: Compression,
    idempotence: Option<Idempotence>,
) -> Bytes {
    let encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: idempotence.map_or(-1, |p| p.producer_id),
            producer_epoch: idempotence.map_or(-1, |p| p.producer_epoch),
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch when `offset - sequence` changes, so a plain batch
            // counts up from -1 too (its base_sequence stays -1).
            sequence: idempotence.map_or(-1, |p| p.base_sequence) + i as i32,
            timestamp: r.timestamp,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (str_bytes(k), v.clone().map(Bytes::from)))
                .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &encoded,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode a record batch");
    let batch = buf.freeze();
    assert_eq!(
        split_batches(&batch).len(),
        1,
        "the encoder made exactly one batch"
    );
    batch
}

/// `n` simple records starting at index `from`, in one uncompressed batch.
pub fn simple_batch(from: usize, n: usize) -> Bytes {
    let records: Vec<TestRecord> = (from..from + n).map(TestRecord::simple).collect();
    encode_batch(&records, Compression::None, None)
}

/// Decodes every record of a records field: `(offset, record)`.
pub fn decode_records(records: &Bytes) -> Vec<(i64, TestRecord)> {
    let mut buf = records.clone();
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf)
        .expect("decode the fetched records");
    sets.into_iter()
        .flat_map(|set| set.records)
        .map(|r| {
            (
                r.offset,
                TestRecord {
                    key: r.key.map(|b| b.to_vec()),
                    value: r.value.map(|b| b.to_vec()),
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.map(|b| b.to_vec())))
                        .collect(),
                    timestamp: r.timestamp,
                },
            )
        })
        .collect()
}

/// Splits a records field into its batches by `batch_length`, checking the framing.
pub fn split_batches(records: &[u8]) -> Vec<&[u8]> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < records.len() {
        assert!(
            records.len() - at >= 61,
            "a truncated batch header at byte {at}"
        );
        let length = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap());
        assert!(length >= 49, "batch length {length} at byte {at}");
        let end = at + 12 + length as usize;
        assert!(end <= records.len(), "a truncated batch at byte {at}");
        batches.push(&records[at..end]);
        at = end;
    }
    batches
}

pub fn batch_base_offset(batch: &[u8]) -> i64 {
    i64::from_be_bytes(batch[0..8].try_into().unwrap())
}

pub fn batch_last_offset_delta(batch: &[u8]) -> i32 {
    i32::from_be_bytes(batch[23..27].try_into().unwrap())
}

pub fn batch_crc(batch: &[u8]) -> u32 {
    u32::from_be_bytes(batch[17..21].try_into().unwrap())
}

/// CRC-32C (Castagnoli), computed bit by bit here so the tests do not share the broker's
/// CRC implementation.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// Asserts a stored batch's CRC-32C (over `attributes..end`) is valid.
pub fn assert_crc_valid(batch: &[u8]) {
    assert_eq!(
        batch_crc(batch),
        crc32c(&batch[21..]),
        "CRC-32C of the batch at offset {}",
        batch_base_offset(batch)
    );
}

/// A metric's value from the Prometheus text at `GET /metrics`; `name` includes any labels
/// (`strata_connections_refused_total{reason="max_connections"}`).
pub async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let prefix = format!("{name} ");
    let line = response
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {response}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmSize` ...).
pub fn process_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A bare HTTP/1.1 call to the admin API with an optional JSON body and bearer token:
/// `(status, JSON body)`.
pub async fn admin_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body.map_or_else(String::new, |b| b.to_string());
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(admin).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let status = text[9..12].parse().unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, serde_json::from_str(&json).unwrap_or_default())
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}
