//! The fuzz targets' CI run. A libFuzzer build of the whole crate takes longer than CI can give
//! it, so CI runs the same entry points (`strata::fuzzing`) here: every committed corpus input
//! (`fuzz/corpus/<target>/`: the seeds below and what local fuzzing found interesting or
//! crashing), the seeds as generated now, and a few thousand random and mutated inputs per
//! target. The WAL corpus also goes through a real `Wal::open` on files. How to fuzz for real:
//! `docs/fuzzing.md`.
//!
//! `STRATA_UPDATE_CORPUS=1 cargo test --test fuzz_corpus` writes the seeds into the corpus.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use common::{
    create_topics_request, encode_batch, fetch_request, metadata_request, produce_request,
    simple_batch, str_bytes, Idempotence, TestRecord,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use proptest::prelude::*;
use strata::fuzzing;
use strata::segment::canonical::CanonicalBatch;
use strata::segment::object::{self, Block, Footer, ObjectBuilder, PartitionBlocks};
use strata::server::dispatch::{self, APIS};
use strata::wal::segment::{encode_entry, segment_header};
use uuid::Uuid;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("request_frame", fuzzing::request_frames),
    ("record_batch", fuzzing::record_batches),
    ("wal_replay", fuzzing::wal_segment),
    ("segment_object", fuzzing::segment_object),
];

/// Random and mutated inputs per target and kind: with the corpus this takes seconds.
const CASES: u32 = 1500;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every file of a target's committed corpus: `(name, bytes)`.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read a corpus file"))
        })
        .collect();
    files.sort();
    files
}

/// Runs `input` through `target`, naming the input if it panics.
fn run(target: (&str, Target), name: &str, input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| (target.1)(input))).is_err() {
        panic!("fuzz target {} panicked on {name}", target.0);
    }
}

#[test]
fn every_committed_corpus_input_passes() {
    for target in TARGETS {
        let inputs = corpus(target.0);
        assert!(!inputs.is_empty(), "fuzz/corpus/{} is empty", target.0);
        for (name, input) in &inputs {
            run(target, name, input);
        }
    }
}

#[test]
fn the_seeds_pass_and_can_be_written_to_the_corpus() {
    let update = std::env::var_os("STRATA_UPDATE_CORPUS").is_some();
    for target in TARGETS {
        let seeds = seeds(target.0);
        assert!(seeds.len() >= 4, "{}: {} seeds", target.0, seeds.len());
        for (name, input) in &seeds {
            run(target, name, input);
            if update {
                let path = corpus_dir(target.0).join(format!("seed-{name}"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, input).unwrap();
            }
        }
    }
}

/// Every WAL corpus input as the last segment of a real WAL directory: `Wal::open` replays it
/// from the file, cuts a torn tail on disk, and either opens or refuses with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wal_corpus_input_opens_or_is_refused_from_a_real_file() {
    use strata::metadata::Metadata;
    use strata::partition::Topics;
    use strata::wal::{Wal, WalOptions};

    let mut inputs = corpus("wal_replay");
    inputs.extend(seeds("wal_replay"));
    let (mut opened, mut refused) = (0, 0);
    for (name, input) in inputs {
        let Some((_, segment)) = input.split_first() else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir_all(&wal_dir).unwrap();
        std::fs::write(wal_dir.join(format!("{:020}.wal", 1)), segment).unwrap();
        let topics = Topics::load(Arc::new(Metadata::open(&dir.path().join("meta")).unwrap()));
        let options = WalOptions {
            dir: wal_dir,
            segment_bytes: 1 << 20,
            segment_ms: 60_000,
            group_commit_us: 0,
            disk_bytes_max: 0,
            faults: strata::faults::Faults::disabled(),
        };
        let notify = Arc::new(tokio::sync::Notify::new());
        match Wal::open(options, &topics, notify) {
            Ok(wal) => {
                opened += 1;
                wal.close().await;
            }
            Err(error) => {
                refused += 1;
                assert!(!error.to_string().is_empty(), "{name}");
            }
        }
    }
    assert!(opened > 0, "no WAL input opened ({refused} refused)");
}

/// Edits applied to a corpus input: `(where, byte, kind)`.
type Edit = (prop::sample::Index, u8, u8);

fn mutate(mut input: Vec<u8>, edits: Vec<Edit>) -> Vec<u8> {
    for (at, byte, kind) in edits {
        if input.is_empty() {
            input.push(byte);
            continue;
        }
        let at = at.index(input.len());
        match kind % 5 {
            0 => input[at] = byte,
            1 => input[at] ^= 1 << (byte % 8),
            2 => input.truncate(at.max(1)),
            3 => input.insert(at, byte),
            _ => {
                // A 4-byte field set to an extreme: lengths and counts are big-endian i32s.
                let value = [i32::MAX, -1, 0, i32::MIN][usize::from(byte % 4)];
                let end = (at + 4).min(input.len());
                input[at..end].copy_from_slice(&value.to_be_bytes()[..end - at]);
            }
        }
    }
    input
}

fn mutated_inputs(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, i)| i).collect();
    inputs.extend(seeds(target).into_iter().map(|(_, i)| i));
    let edits = prop::collection::vec(any::<Edit>(), 1..8);
    (prop::sample::select(inputs), edits).prop_map(|(input, edits)| mutate(input, edits))
}

proptest! {
    // A failing input is printed, minimised; it belongs in the corpus as a file (not in a
    // proptest-regressions file next to this one).
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_inputs_pass(target in 0..TARGETS.len(), input in prop::collection::vec(any::<u8>(), 0..2048)) {
        (TARGETS[target].1)(&input);
    }

    #[test]
    fn mutated_request_frames_pass(input in mutated_inputs("request_frame")) {
        fuzzing::request_frames(&input);
    }

    #[test]
    fn mutated_record_batches_pass(input in mutated_inputs("record_batch")) {
        fuzzing::record_batches(&input);
    }

    #[test]
    fn mutated_wal_segments_pass(input in mutated_inputs("wal_replay")) {
        fuzzing::wal_segment(&input);
    }

    #[test]
    fn mutated_segment_objects_pass(input in mutated_inputs("segment_object")) {
        fuzzing::segment_object(&input);
    }
}

// ------------------------------------------------------------------------------------------
// Seeds: valid examples of each format, so mutation starts from the real thing. The first byte
// is the mode (`strata::fuzzing`): 0 as is, 1 repaired.
// ------------------------------------------------------------------------------------------

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let raw = match target {
        "request_frame" => request_seeds(),
        "record_batch" => batch_seeds(),
        "wal_replay" => wal_seeds(),
        "segment_object" => object_seeds(),
        other => panic!("no seeds for {other}"),
    };
    raw.into_iter()
        .flat_map(|(name, bytes)| {
            let with_mode = |mode: u8| [&[mode][..], &bytes].concat();
            [
                (name.clone(), with_mode(0)),
                (format!("{name}-repaired"), with_mode(1)),
            ]
        })
        .collect()
}

fn request_frame(api: ApiKey, version: i16, body: RequestKind) -> Option<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    strata::protocol::encode_request(&header, &body).ok()
}

/// A request of every served api at every served version: empty ones, and ones with content
/// for the apis whose bodies carry the most structure.
fn request_seeds() -> Vec<(String, Bytes)> {
    let mut seeds = Vec::new();
    for &api in APIS {
        let range = dispatch::versions(api).expect("a served api");
        for version in range.min..=range.max {
            for (kind, body) in requests(api) {
                if let Some(frame) = request_frame(api, version, body) {
                    seeds.push((format!("{api:?}-v{version}-{kind}"), frame));
                }
            }
        }
    }
    seeds
}

/// Requests that cannot be encoded at some version are left out by `request_frame`.
fn requests(api: ApiKey) -> Vec<(&'static str, RequestKind)> {
    let topic_id = Uuid::from_u128(0x5eed);
    let full: Option<RequestKind> = match api {
        ApiKey::Produce => {
            let mut request = produce_request("t", 0, simple_batch(0, 3), -1);
            request.topic_data[0].topic_id = topic_id;
            Some(request.into())
        }
        ApiKey::Fetch => {
            let mut request = fetch_request("t", 0, 5, 100, 1);
            request.topics[0].topic_id = topic_id;
            Some(request.into())
        }
        ApiKey::Metadata => Some(metadata_request(&["a", "b"], true).into()),
        ApiKey::CreateTopics => {
            Some(create_topics_request("t", 3, &[("retention.ms", "-1")]).into())
        }
        ApiKey::JoinGroup => Some(
            JoinGroupRequest::default()
                .with_group_id(GroupId(str_bytes("g")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(30_000)
                .with_protocol_type(str_bytes("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(str_bytes("range"))
                    .with_metadata(Bytes::from_static(
                        b"\x00\x01\x00\x00\x00\x01\x00\x01t",
                    ))])
                .into(),
        ),
        ApiKey::SyncGroup => Some(
            SyncGroupRequest::default()
                .with_group_id(GroupId(str_bytes("g")))
                .with_generation_id(1)
                .with_member_id(str_bytes("m"))
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(str_bytes("m"))
                    .with_assignment(Bytes::from_static(b"\x00\x01"))])
                .into(),
        ),
        ApiKey::OffsetCommit => Some(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(str_bytes("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(str_bytes("t")))
                    .with_topic_id(topic_id)
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(42)
                        .with_committed_metadata(Some(str_bytes("meta")))])])
                .into(),
        ),
        _ => None,
    };
    let mut requests = vec![("empty", empty_request(api))];
    requests.extend(full.map(|body| ("full", body)));
    requests
}

fn empty_request(api: ApiKey) -> RequestKind {
    match api {
        ApiKey::Produce => ProduceRequest::default().into(),
        ApiKey::Fetch => FetchRequest::default().into(),
        ApiKey::ListOffsets => ListOffsetsRequest::default().into(),
        ApiKey::Metadata => MetadataRequest::default().into(),
        ApiKey::ApiVersions => ApiVersionsRequest::default().into(),
        ApiKey::CreateTopics => CreateTopicsRequest::default().into(),
        ApiKey::DeleteTopics => DeleteTopicsRequest::default().into(),
        ApiKey::InitProducerId => InitProducerIdRequest::default().into(),
        ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::default().into(),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default().into(),
        ApiKey::CreatePartitions => CreatePartitionsRequest::default().into(),
        ApiKey::DescribeCluster => DescribeClusterRequest::default().into(),
        ApiKey::DeleteRecords => DeleteRecordsRequest::default().into(),
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default().into(),
        ApiKey::FindCoordinator => FindCoordinatorRequest::default().into(),
        ApiKey::JoinGroup => JoinGroupRequest::default().into(),
        ApiKey::SyncGroup => SyncGroupRequest::default().into(),
        ApiKey::Heartbeat => HeartbeatRequest::default().into(),
        ApiKey::LeaveGroup => LeaveGroupRequest::default().into(),
        ApiKey::OffsetCommit => OffsetCommitRequest::default().into(),
        ApiKey::OffsetFetch => OffsetFetchRequest::default().into(),
        ApiKey::ListGroups => ListGroupsRequest::default().into(),
        ApiKey::DescribeGroups => DescribeGroupsRequest::default().into(),
        ApiKey::DeleteGroups => DeleteGroupsRequest::default().into(),
        ApiKey::OffsetDelete => OffsetDeleteRequest::default().into(),
        ApiKey::SaslHandshake => SaslHandshakeRequest::default().into(),
        ApiKey::SaslAuthenticate => SaslAuthenticateRequest::default().into(),
        ApiKey::DescribeUserScramCredentials => {
            DescribeUserScramCredentialsRequest::default().into()
        }
        ApiKey::AlterUserScramCredentials => AlterUserScramCredentialsRequest::default().into(),
        other => panic!("{other:?} is served but has no seed here"),
    }
}

fn records(n: usize) -> Vec<TestRecord> {
    (0..n)
        .map(|i| TestRecord {
            key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
            value: (i % 4 != 1)
                .then(|| format!("{{\"n\":{i},\"v\":\"{}\"}}", "x".repeat(i)).into_bytes()),
            headers: vec![("h".into(), Some(vec![i as u8])), ("null".into(), None)],
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

/// Batches of every codec (raw snappy from kafka-protocol's encoder, xerial snappy from
/// Strata's own), idempotent ones, and a records field of several batches.
fn batch_seeds() -> Vec<(String, Bytes)> {
    let codecs = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    let mut seeds: Vec<(String, Bytes)> = codecs
        .iter()
        .map(|(name, codec)| {
            (
                format!("batch-{name}"),
                encode_batch(&records(6), *codec, None),
            )
        })
        .collect();
    let idempotent = Idempotence {
        producer_id: 9,
        producer_epoch: 2,
        base_sequence: 40,
    };
    seeds.push((
        "batch-idempotent".into(),
        encode_batch(&records(3), Compression::None, Some(idempotent)),
    ));
    let snappy = encode_batch(&records(5), Compression::Snappy, None);
    let mut xerial = CanonicalBatch::from_batch(&snappy).unwrap();
    xerial.base_offset = 0;
    seeds.push(("batch-xerial-snappy".into(), xerial.to_batch().unwrap()));
    let mut field = BytesMut::new();
    for n in [1, 4, 2] {
        field.extend_from_slice(&encode_batch(&records(n), Compression::Lz4, None));
    }
    seeds.push(("field-three-batches".into(), field.freeze()));
    seeds
}

/// Segments of entries for two partitions, one with a torn tail.
fn wal_seeds() -> Vec<(String, Bytes)> {
    let topic = Uuid::from_u128(0x5eed);
    let mut segment = BytesMut::from(&segment_header()[..]);
    let mut next = BTreeMap::from([(0, 0i64), (1, 0i64)]);
    for (i, (partition, codec)) in [
        (0, Compression::None),
        (1, Compression::Zstd),
        (0, Compression::Gzip),
    ]
    .into_iter()
    .enumerate()
    {
        let batch = encode_batch(&records(2 + i), codec, None);
        let offset = next[&partition];
        encode_entry(&mut segment, 1, topic, partition, &batch, offset);
        *next.get_mut(&partition).unwrap() += 2 + i as i64;
    }
    let whole = segment.clone().freeze();
    let torn = whole.slice(..whole.len() - 9);
    let empty = Bytes::copy_from_slice(&segment_header());
    // Found by the fuzzers: checksums intact, but the second batch of partition 0 starts inside
    // the first (0..=2 then 1..=3). Replay took it into the index; now it is a torn tail.
    let mut overlapping = BytesMut::from(&segment_header()[..]);
    encode_entry(
        &mut overlapping,
        1,
        topic,
        0,
        &encode_batch(&records(3), Compression::None, None),
        0,
    );
    encode_entry(
        &mut overlapping,
        1,
        topic,
        0,
        &encode_batch(&records(3), Compression::None, None),
        1,
    );
    vec![
        ("segment-three-entries".into(), whole),
        ("segment-torn-tail".into(), torn),
        ("segment-empty".into(), empty),
        ("regress-overlapping-offsets".into(), overlapping.freeze()),
    ]
}

/// An object of `data` (after the header) and a footer given as its bincode bytes, with a
/// valid trailer: what a tampered bucket can serve.
fn object_with_footer(data: &[u8], footer: &[u8]) -> Bytes {
    let mut object = BytesMut::from(&b"STRATASG\0\0\0\x03\0\0\0\0"[..]);
    object.extend_from_slice(data);
    object.extend_from_slice(footer);
    object.extend_from_slice(&(footer.len() as u32).to_be_bytes());
    object.extend_from_slice(&crc32c::crc32c(footer).to_be_bytes());
    object.extend_from_slice(&3u32.to_be_bytes());
    object.extend_from_slice(b"STRATASG");
    object.freeze()
}

/// Objects of two partitions, with index files, as the indexer builds them.
fn object_seeds() -> Vec<(String, Bytes)> {
    let topic = Uuid::from_u128(0x5eed);
    let mut builder = ObjectBuilder::default();
    for partition in [1, 0] {
        builder.start_partition(topic, partition);
        let mut offset = 0;
        for n in [3, 1, 2] {
            let mut batch = encode_batch(&records(n), Compression::None, None).to_vec();
            strata::protocol::record_batch::set_base_offset(&mut batch, offset);
            let header = strata::protocol::record_batch::BatchHeader::parse(&batch).unwrap();
            builder.add_batch(&header, &batch).unwrap();
            offset += n as i64;
        }
    }
    builder
        .add_index_file("meta.json", &mut &b"{}"[..])
        .unwrap();
    builder
        .add_index_file("segment.idx", &mut &[7u8; 32][..])
        .unwrap();
    let object = Bytes::from(builder.finish().unwrap().0);
    let mut empty = ObjectBuilder::default();
    empty.start_partition(topic, 0);
    let empty = Bytes::from(empty.finish().unwrap().0);
    // Found by the fuzzers: a footer whose index file name claims 2^40 bytes. bincode
    // allocated the claim before reading it, and the broker aborted.
    let mut huge_name = vec![0u8, 1, 0xfd];
    huge_name.extend_from_slice(&(1u64 << 40).to_le_bytes());
    huge_name.extend_from_slice(&[16, 16]);
    // Found by the fuzzers: a footer with valid checksums whose blocks run backwards.
    let backwards = Footer {
        partitions: vec![PartitionBlocks {
            topic_id: topic,
            partition: 0,
            base_offset: 0,
            last_offset: 9,
            max_timestamp: 0,
            blocks: vec![block(5, 9, 16, 20), block(0, 4, 20, 24)],
            producers: Default::default(),
        }],
        index_files: vec![],
    };
    let backwards = bincode::serde::encode_to_vec(&backwards, object::codec()).unwrap();
    vec![
        (
            "regress-footer-string-2-40".into(),
            object_with_footer(&[], &huge_name),
        ),
        (
            "regress-footer-blocks-backwards".into(),
            object_with_footer(&[0; 8], &backwards),
        ),
        ("object-two-partitions".into(), object.clone()),
        (
            "object-tail-only".into(),
            object.slice(object.len().saturating_sub(400)..),
        ),
        ("object-empty".into(), empty),
    ]
}

fn block(base_offset: i64, last_offset: i64, start: u64, end: u64) -> Block {
    Block {
        base_offset,
        last_offset,
        max_timestamp: 0,
        start,
        end,
    }
}
