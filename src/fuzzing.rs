//! Entry points for fuzzing the parsers of hostile input: a client's request frames and record
//! batches, a WAL segment read back from disk, a segment object read back from the bucket.
//! Each takes arbitrary bytes, runs the broker's own code on them, and panics only when that
//! code panics or breaks a promise it makes (checked here with `assert!`). The cargo-fuzz
//! targets in `fuzz/` and the CI run in `tests/fuzz_corpus.rs` call these same functions;
//! `docs/fuzzing.md` says how to run them and what they found.
//!
//! The first byte of an input picks a mode. Even: the rest is used as it is. Odd: the rest is
//! first *repaired*: lengths are clamped to the bytes that follow and checksums recomputed, so
//! the fuzzer gets past the CRC checks to the decoders behind them. A corrupt input with valid
//! checksums is exactly what a hostile client (batch CRCs are the client's own) or a tampered
//! bucket can produce.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use kafka_protocol::messages::RequestKind;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use uuid::Uuid;

use crate::groups::consumer_protocol;
use crate::limits;
use crate::metadata::snapshot;
use crate::partition::{Partition, ReadPlan, RemoteSegment};
use crate::protocol::{self, record_batch};
use crate::reader;
use crate::segment::canonical::{CanonicalBatch, CanonicalRecord};
use crate::segment::object::{self, Footer};
use crate::server::dispatch::{self, DecodedRequest, Parsed};
use crate::wal::{self, segment};

use record_batch::{BatchHeader, HEADER_BYTES, LOG_OVERHEAD_BYTES};

/// Request frames, as a connection reads them: a stream of length-prefixed frames (mode even)
/// or one frame without its prefix (mode odd), each checked against the dispatch table and
/// decoded, and the consumer-protocol bytes of group requests read as the coordinator reads
/// them. A request that decodes must encode again and decode to the same request: the broker
/// must read what a client's encoder meant.
pub fn request_frames(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        request(Bytes::copy_from_slice(rest));
        return;
    }
    let mut input = rest;
    // Reads from memory never wait, so every read completes on its first poll.
    while let Some(Ok(Some(frame))) =
        protocol::read_frame(&mut input, limits::FRAME_BYTES_MAX).now_or_never()
    {
        request(frame);
    }
}

fn request(frame: Bytes) {
    let Ok(Parsed::Request(request)) = dispatch::parse_request(frame) else {
        return;
    };
    let DecodedRequest { header, body, .. } = *request;
    read_consumer_protocol(&body);
    let decoded = format!("{header:?} {body:?}");
    if has_tag_past_i32(&decoded) {
        return;
    }
    let Ok(encoded) = protocol::encode_request(&header, &body) else {
        return;
    };
    let again = dispatch::parse_request(encoded.slice(4..)).expect("a re-encoded request decodes");
    let Parsed::Request(again) = again else {
        panic!("a re-encoded request is no longer a request");
    };
    assert_eq!(
        format!("{:?} {:?}", again.header, again.body),
        decoded,
        "the request changed on a round trip"
    );
}

/// Whether a decoded request holds an unknown tagged field whose tag is 2^31 or more.
/// kafka-protocol keys them as negative i32s and its encoders count them but do not write them
/// (found by this target), so such a request cannot round-trip. The broker never re-encodes a
/// client's request and ignores unknown tags, so it reads them harmlessly; only this check is
/// skipped for them. In the Debug text a map's keys are sorted, so a negative key comes first.
fn has_tag_past_i32(decoded: &str) -> bool {
    decoded
        .split("unknown_tagged_fields: {")
        .skip(1)
        .any(|map| map.starts_with('-'))
}

/// The consumer protocol's bytes inside group requests, as the coordinator reads them.
fn read_consumer_protocol(body: &RequestKind) {
    match body {
        RequestKind::JoinGroup(join) => {
            for protocol in &join.protocols {
                let _ = consumer_protocol::subscribed_topics(&protocol.metadata);
            }
        }
        RequestKind::SyncGroup(sync) => {
            for assignment in &sync.assignments {
                let _ = consumer_protocol::assigned_partitions(&assignment.assignment);
            }
        }
        _ => {}
    }
}

/// A records field, as Produce splits it into batches and checks their headers, and as the
/// indexer decodes each batch into a `CanonicalBatch` (decompressing, within its bound). A
/// decoded batch must encode again and decode to the same records (nothing lost or changed).
/// Then the same bytes as a block of a segment object, as a cold fetch slices it.
pub fn record_batches(data: &[u8]) {
    let Some(records) = input(data, repair_batches) else {
        return;
    };
    let records = Bytes::from(records);
    if let Ok(batches) = record_batch::split_batches(&records) {
        let mut at = 0;
        for (header, batch) in &batches {
            assert_eq!(header.total_bytes(), batch.len());
            assert_eq!(
                &records[at..at + batch.len()],
                &batch[..],
                "batches tile the field"
            );
            at += batch.len();
            let _ = (header.last_offset(), header.last_sequence());
            canonical_round_trip(batch);
        }
        assert_eq!(at, records.len(), "every byte belongs to a batch");
    }
    let offset = BatchHeader::parse_unchecked(&records).map_or(0, |h| h.base_offset);
    if let Ok(served) = reader::batches_from(&records, offset, records.len() / 2, true) {
        assert!(served.len() <= records.len());
    }
}

fn canonical_round_trip(batch: &[u8]) {
    let Ok(decoded) = CanonicalBatch::from_batch(batch) else {
        return;
    };
    let encoded = decoded.to_batch().expect("a decoded batch encodes again");
    let again = CanonicalBatch::from_batch(&encoded).expect("a re-encoded batch decodes");
    assert_eq!(again, decoded, "decoding lost or changed something");
}

/// A WAL segment file as replay reads it: every valid entry goes into a partition's batch
/// index, and the partitions must come out consistent (offsets ascending, not overlapping,
/// the high watermark past the last batch). A torn tail is cut as replay cuts it; the cut
/// segment must then scan clean, and an entry appended after the cut must be read back.
pub fn wal_segment(data: &[u8]) {
    let Some(mut file) = input(data, repair_wal) else {
        return;
    };
    let mut partitions: BTreeMap<(Uuid, i32), Partition> = BTreeMap::new();
    let mut entries = 0;
    let end = segment::scan_reader(&file[..], file.len() as u64, 1, |entry| {
        let key = (entry.topic_id, entry.partition);
        let partition = partitions
            .entry(key)
            .or_insert_with(|| Partition::new("fuzz".into(), key.0, key.1));
        let replayed = wal::replay_entry(partition, 1, &entry);
        entries += usize::from(replayed.is_ok());
        replayed
    });
    for partition in partitions.values() {
        assert_index_consistent(partition);
    }
    let valid_length = match end {
        Err(_) => return, // not a WAL segment: the broker refuses to start and says why
        Ok(segment::ScanEnd::Clean { length }) => {
            assert_eq!(length, file.len() as u64);
            length
        }
        Ok(segment::ScanEnd::Torn {
            valid_length,
            file_length,
            ..
        }) => {
            assert!(valid_length < file_length || file_length < segment::SEGMENT_HEADER_BYTES);
            valid_length
        }
    };
    // As `wal::cut_tail` does to the file: cut at the valid length, or start over from a fresh
    // header when even the header was torn.
    file.truncate(valid_length as usize);
    if valid_length < segment::SEGMENT_HEADER_BYTES {
        file = segment::segment_header().to_vec();
    }
    // As `Wal::open` does with a segment of an older format version: new entries go to a new
    // segment.
    if file[..segment::SEGMENT_HEADER_BYTES as usize] != segment::segment_header() {
        file = segment::segment_header().to_vec();
        entries = 0;
    }
    let batch = sample_batch();
    let base_offset = 1_000;
    let mut appended = bytes::BytesMut::new();
    segment::encode_entry(&mut appended, 1, Uuid::nil(), 0, &batch, base_offset);
    file.extend_from_slice(&appended);
    let mut found = 0;
    let mut last = None;
    let end = segment::scan_reader(&file[..], file.len() as u64, 1, |entry| {
        found += 1;
        last = Some((entry.header.base_offset, entry.batch.len()));
        Ok(())
    })
    .expect("a cut segment keeps its header");
    assert_eq!(
        end,
        segment::ScanEnd::Clean {
            length: file.len() as u64
        },
        "a cut segment scans clean, with the entry appended after the cut"
    );
    assert_eq!(found, entries + 1, "the cut kept every valid entry");
    assert_eq!(last, Some((base_offset, batch.len())));
}

/// What replay promises about a partition's index whatever the WAL held.
fn assert_index_consistent(partition: &Partition) {
    let state = partition.lock();
    let mut next = state.log_start_offset;
    for batch in &state.batches {
        assert!(
            batch.base_offset >= next && batch.last_offset >= batch.base_offset,
            "batch {}..={} after offset {next}",
            batch.base_offset,
            batch.last_offset
        );
        next = batch.last_offset + 1;
    }
    assert!(state.high_watermark >= next);
}

/// A segment object as the broker opens one from the bucket: the footer from its tail (one
/// ranged GET, a second if the footer is larger), which must keep every range inside the
/// object and every offset range in order; each block sliced as a cold fetch slices it; the
/// partitions attached as at start-up and read as Fetch and ListOffsets plan their reads.
pub fn segment_object(data: &[u8]) {
    let Some(bytes) = input(data, repair_object) else {
        return;
    };
    let object = Bytes::from(bytes);
    let size = object.len() as u64;
    let parsed = object::parse_footer(&object, size);
    let opened = open_object(object.clone());
    assert_eq!(
        parsed.as_ref().ok(),
        opened.as_ref().ok(),
        "the footer read from the whole object and from the bucket differ"
    );
    let Ok(footer) = opened else {
        return;
    };
    assert_footer_consistent(&footer, size);
    for blocks in &footer.partitions {
        for block in &blocks.blocks {
            let bytes = object.slice(block.start as usize..block.end as usize);
            let _ = reader::batches_from(&bytes, block.base_offset, usize::MAX, true);
        }
    }
    attach_and_plan(&footer, size);
}

fn open_object(object: Bytes) -> Result<Footer, snapshot::SnapshotError> {
    let store = InMemory::new();
    let key = ObjectPath::from("v2/segments/fuzz/00000000000000000001.seg");
    let size = object.len() as u64;
    block_on(async {
        store
            .put(&key, PutPayload::from(object))
            .await
            .expect("an in-memory put");
        snapshot::read_footer(&store as &dyn ObjectStore, &key, size).await
    })
}

/// What `parse_footer` promises: every range inside the object's data, offsets in order.
fn assert_footer_consistent(footer: &Footer, object_bytes: u64) {
    let ranges = footer
        .partitions
        .iter()
        .flat_map(|p| p.blocks.iter().map(|b| (b.start, b.end)))
        .chain(footer.index_files.iter().map(|f| (f.start, f.end)));
    for (start, end) in ranges {
        assert!(start <= end && end <= object_bytes, "range {start}..{end}");
    }
    for blocks in &footer.partitions {
        assert!(0 <= blocks.base_offset && blocks.base_offset <= blocks.last_offset);
        assert!(blocks.last_offset < i64::MAX);
        let mut next = blocks.base_offset;
        for block in &blocks.blocks {
            assert!(next <= block.base_offset && block.base_offset <= block.last_offset);
            assert!(block.last_offset <= blocks.last_offset);
            next = block.last_offset + 1;
        }
    }
}

fn attach_and_plan(footer: &Footer, object_bytes: u64) {
    let index_files: Arc<[_]> = footer.index_files.clone().into();
    for blocks in &footer.partitions {
        let partition = Partition::new("fuzz".into(), blocks.topic_id, blocks.partition);
        let segment = Arc::new(RemoteSegment {
            key: ObjectPath::from("fuzz"),
            object_bytes,
            wal_segment_id: 1,
            blocks: blocks.clone(),
            index_files: index_files.clone(),
        });
        {
            let mut state = partition.lock();
            state.attach_remote(segment);
            state.restore_producers_from_remote();
            let _ = state.remote_end_offset();
        }
        for offset in [blocks.base_offset, blocks.last_offset, 0, -1] {
            if let ReadPlan::Cold { block, .. } = partition.plan_read(offset, usize::MAX, true) {
                assert!(block.end <= object_bytes);
            }
        }
        let _ = partition.locate_timestamp(blocks.max_timestamp);
        let _ = partition.locate_max_timestamp();
    }
}

/// The input after its mode byte, repaired by `repair` when the mode is odd.
fn input(data: &[u8], repair: fn(&mut [u8])) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    let mut input = rest.to_vec();
    if mode & 1 == 1 {
        repair(&mut input);
    }
    Some(input)
}

/// Runs a future of in-memory work to completion on this thread.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// A valid one-record batch.
fn sample_batch() -> Bytes {
    let batch = CanonicalBatch {
        base_offset: 0,
        partition_leader_epoch: 0,
        attributes: 0,
        last_offset_delta: 0,
        base_timestamp: 1_700_000_000_000,
        max_timestamp: 1_700_000_000_000,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records: vec![CanonicalRecord {
            attributes: 0,
            offset: 0,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
        }],
    };
    batch.to_batch().expect("a plain batch encodes")
}

/// Makes each batch in `bytes` well-framed: its length clamped to the bytes that follow, magic
/// 2, the record count matching `last_offset_delta`, and a correct CRC-32C.
fn repair_batches(bytes: &mut [u8]) {
    let mut at = 0;
    while bytes.len() - at >= HEADER_BYTES {
        let batch = &mut bytes[at..];
        let claimed = i32::from_be_bytes(batch[8..12].try_into().expect("4 bytes"));
        let floor = (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
        let length = (claimed.max(floor) as usize).min(batch.len() - LOG_OVERHEAD_BYTES);
        let end = LOG_OVERHEAD_BYTES + length;
        batch[8..12].copy_from_slice(&(length as i32).to_be_bytes());
        batch[16] = 2;
        let last_offset_delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes"));
        batch[57..61].copy_from_slice(&last_offset_delta.wrapping_add(1).to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..end]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        at += end;
    }
}

/// Makes a WAL segment well-framed: a valid header, each entry's length clamped to the bytes
/// that follow, its batch filling its body and repaired, and a correct entry checksum.
fn repair_wal(file: &mut [u8]) {
    let header = segment::segment_header();
    if file.len() < header.len() {
        return;
    }
    file[..header.len()].copy_from_slice(&header);
    let entry_header = segment::ENTRY_HEADER_BYTES as usize;
    let prefix = segment::ENTRY_PREFIX_BYTES as usize;
    let mut at = header.len();
    while file.len() - at >= entry_header + prefix {
        let claimed = u32::from_be_bytes(file[at..at + 4].try_into().expect("4 bytes")) as usize;
        let length = claimed.max(prefix).min(file.len() - at - entry_header);
        file[at..at + 4].copy_from_slice(&(length as u32).to_be_bytes());
        let body = &mut file[at + entry_header..at + entry_header + length];
        let batch = &mut body[prefix..];
        if batch.len() >= HEADER_BYTES {
            let batch_length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
            batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
            repair_batches(batch);
        }
        let crc = segment::entry_checksum(1, body);
        file[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        at += entry_header + length;
    }
}

/// Makes an object's trailer valid: magic, version, the footer length clamped to the bytes
/// before the trailer, and the footer's checksum.
fn repair_object(bytes: &mut [u8]) {
    let Some(trailer_at) = bytes.len().checked_sub(object::TRAILER_BYTES) else {
        return;
    };
    let (body, trailer) = bytes.split_at_mut(trailer_at);
    let claimed = u32::from_be_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
    let length = claimed.min(body.len());
    let footer = &body[body.len() - length..];
    trailer[..4].copy_from_slice(&(length as u32).to_be_bytes());
    trailer[4..8].copy_from_slice(&crc32c::crc32c(footer).to_be_bytes());
    trailer[8..12].copy_from_slice(&object::FORMAT_VERSION.to_be_bytes());
    trailer[12..].copy_from_slice(object::MAGIC);
}
