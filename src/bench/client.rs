//! A lean Kafka client for the load generator: one TCP connection, requests encoded and responses
//! decoded by `kafka-protocol`, versions negotiated with ApiVersions so that the same tool drives
//! any Kafka-compatible broker. Sequential calls for the control plane (Metadata, CreateTopics,
//! ListOffsets, Fetch); the produce path splits the connection to pipeline requests.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, FetchRequest, FetchResponse,
    ListOffsetsRequest, MetadataRequest, RequestHeader, RequestKind, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::protocol::{encode_request, read_frame};

/// The largest response frame the benchmark accepts.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// How long any control-plane call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION and TOPIC_ALREADY_EXISTS.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Kafka's special ListOffsets timestamps.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// The versions this client speaks, per api: `(key, lowest, highest)`. The highest are the last
/// versions that name topics rather than identify them by id.
const WANTED: [(ApiKey, i16, i16); 5] = [
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::CreateTopics, 2, 7),
];

/// The version of each api both sides speak.
#[derive(Debug, Clone, Copy)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub list_offsets: i16,
    pub create_topics: i16,
}

/// Where a partition's leader is.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    /// Leader address per partition index.
    pub leaders: Vec<String>,
}

pub struct Client {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    next_correlation_id: i32,
    pub versions: Versions,
}

impl Client {
    /// Connects and negotiates versions.
    pub async fn connect(address: &str) -> anyhow::Result<Client> {
        let stream = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| anyhow!("connect to {address} timed out"))?
            .with_context(|| format!("connect to {address}"))?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let mut client = Client {
            reader,
            writer,
            next_correlation_id: 1,
            versions: Versions {
                produce: 0,
                fetch: 0,
                metadata: 0,
                list_offsets: 0,
                create_topics: 0,
            },
        };
        client.versions = client.negotiate().await?;
        Ok(client)
    }

    async fn negotiate(&mut self) -> anyhow::Result<Versions> {
        let response = self.call(0, ApiVersionsRequest::default()).await?;
        if response.error_code != 0 {
            bail!("ApiVersions failed with error {}", response.error_code);
        }
        let theirs: HashMap<i16, (i16, i16)> = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        let mut chosen = [0i16; WANTED.len()];
        for (slot, (api, lowest, highest)) in chosen.iter_mut().zip(WANTED) {
            let (their_min, their_max) = theirs
                .get(&(api as i16))
                .copied()
                .ok_or_else(|| anyhow!("the broker does not serve {api:?}"))?;
            let version = highest.min(their_max);
            if version < lowest.max(their_min) {
                bail!("no common version of {api:?}: broker speaks {their_min}..={their_max}");
            }
            *slot = version;
        }
        Ok(Versions {
            produce: chosen[0],
            fetch: chosen[1],
            metadata: chosen[2],
            list_offsets: chosen[3],
            create_topics: chosen[4],
        })
    }

    /// Encodes a request frame with the next correlation id.
    pub fn frame<R>(&mut self, version: i16, request: R) -> anyhow::Result<(Bytes, i32)>
    where
        R: Request + Into<RequestKind>,
    {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-bench")));
        Ok((encode_request(&header, &request.into())?, correlation_id))
    }

    /// Sends a request and reads its response.
    pub async fn call<R>(&mut self, version: i16, request: R) -> anyhow::Result<R::Response>
    where
        R: Request + Into<RequestKind>,
    {
        let (frame, correlation_id) = self.frame(version, request)?;
        let exchange = async {
            self.writer.write_all(&frame).await?;
            read_response::<R>(&mut self.reader, version).await
        };
        let (received, response) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no {:?} response within {CALL_TIMEOUT:?}", R::KEY))??;
        if received != correlation_id {
            bail!("response correlation id {received}, expected {correlation_id}");
        }
        Ok(response)
    }

    /// The connection's halves, for pipelining.
    pub fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (self.reader, self.writer)
    }

    /// The topic's partition leaders, creating the topic with `partitions` if it is missing.
    pub async fn ensure_topic(
        &mut self,
        topic: &str,
        partitions: Option<i32>,
    ) -> anyhow::Result<TopicLayout> {
        let mut created = false;
        for _ in 0..50 {
            match self.layout(topic).await? {
                Some(layout) => return Ok(layout),
                None if created => tokio::time::sleep(Duration::from_millis(100)).await,
                None => {
                    let Some(count) = partitions else {
                        bail!("topic {topic} does not exist");
                    };
                    self.create_topic(topic, count).await?;
                    created = true;
                }
            }
        }
        bail!("topic {topic} has no leaders after it was created")
    }

    /// Partition leaders of a topic, or `None` if it does not exist (yet).
    async fn layout(&mut self, topic: &str) -> anyhow::Result<Option<TopicLayout>> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
            ]))
            .with_allow_auto_topic_creation(false);
        let response = self.call(self.versions.metadata, request).await?;
        let brokers: HashMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let Some(found) = response.topics.first() else {
            return Ok(None);
        };
        if found.error_code == UNKNOWN_TOPIC_OR_PARTITION || found.partitions.is_empty() {
            return Ok(None);
        }
        if found.error_code != 0 {
            bail!("metadata of {topic}: error {}", found.error_code);
        }
        let mut partitions: Vec<_> = found.partitions.iter().collect();
        partitions.sort_by_key(|p| p.partition_index);
        let mut leaders = Vec::with_capacity(partitions.len());
        for (index, partition) in partitions.iter().enumerate() {
            if partition.partition_index != index as i32 || partition.leader_id.0 < 0 {
                return Ok(None);
            }
            let address = brokers
                .get(&partition.leader_id.0)
                .ok_or_else(|| anyhow!("leader {} is not a known broker", partition.leader_id.0))?;
            leaders.push(address.clone());
        }
        Ok(Some(TopicLayout { leaders }))
    }

    async fn create_topic(&mut self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]);
        let response = self.call(self.versions.create_topics, request).await?;
        for result in &response.topics {
            if result.error_code != 0 && result.error_code != TOPIC_ALREADY_EXISTS {
                bail!(
                    "create topic {topic}: error {} {:?}",
                    result.error_code,
                    result.error_message
                );
            }
        }
        Ok(())
    }

    /// ListOffsets for one partition at a Kafka timestamp (`LATEST_TIMESTAMP`, ...).
    pub async fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> anyhow::Result<i64> {
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let response = self.call(self.versions.list_offsets, request).await?;
        let answer = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| anyhow!("empty ListOffsets response"))?;
        if answer.error_code != 0 {
            bail!(
                "ListOffsets {topic}/{partition}: error {}",
                answer.error_code
            );
        }
        Ok(answer.offset)
    }

    /// One fetch of one partition.
    pub async fn fetch(&mut self, request: &FetchSpec<'_>) -> anyhow::Result<FetchResponse> {
        let fetch = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(request.max_wait_ms)
            .with_min_bytes(request.min_bytes)
            .with_max_bytes(request.max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(request.topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(request.partition)
                    .with_fetch_offset(request.offset)
                    .with_partition_max_bytes(request.partition_max_bytes)])]);
        self.call(self.versions.fetch, fetch).await
    }
}

/// The parameters of one single-partition fetch.
pub struct FetchSpec<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
}

/// Reads and decodes one response; returns its correlation id and body.
pub async fn read_response<R: Request>(
    reader: &mut OwnedReadHalf,
    version: i16,
) -> anyhow::Result<(i32, R::Response)> {
    let mut frame = read_frame(reader, RESPONSE_BYTES_MAX)
        .await?
        .ok_or_else(|| anyhow!("the broker closed the connection"))?;
    let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))?;
    let body = R::Response::decode(&mut frame, version)?;
    Ok((header.correlation_id, body))
}

pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}
