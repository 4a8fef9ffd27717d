//! Micro-benchmarks of the data path (`cargo bench --bench hot_path`): the RecordBatch header
//! check and the WAL append on the produce path, CanonicalRecord conversion and segment packing
//! in the indexer, and the cold read path (a cached block, sliced for a fetch). Figures, not
//! assertions: docs/benchmarks.md says how to read them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use strata::bench::plain_record;
use strata::metadata::Metadata;
use strata::metrics::Metrics;
use strata::partition::{Partition, RemoteSegment, Topics};
use strata::protocol::record_batch::BatchHeader;
use strata::reader::{batches_from, Reader};
use strata::segment::canonical::CanonicalBatch;
use strata::segment::index::IndexBuilder;
use strata::segment::object::ObjectBuilder;
use strata::wal::{Wal, WalOptions};
use tokio::sync::Notify;

fn main() {
    divan::main();
}

/// One batch of `count` records of 1 KiB values (text-like, so compression has work to do).
fn batch(count: usize, compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..count as i64)
        .map(|i| {
            let value: Vec<u8> = (0..1024)
                .map(|j| b'a' + ((i as usize * 7 + j * 13) % 26) as u8)
                .collect();
            let key = Some(Bytes::from(format!("key-{i}")));
            plain_record(i, 1_700_000_000_000 + i, key, value.into())
        })
        .collect();
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buffer, records.iter(), &options).expect("encode");
    buffer.freeze()
}

/// Records per batch: one record, and 64 KiB batches.
const RECORDS: [usize; 2] = [1, 64];

#[divan::bench(args = RECORDS)]
fn record_batch_header_check(bencher: Bencher, records: usize) {
    let bytes = batch(records, Compression::None);
    bencher
        .counter(BytesCount::new(bytes.len()))
        .bench(|| BatchHeader::parse(black_box(&bytes)).expect("valid"));
}

#[divan::bench(args = ["none", "lz4", "zstd"])]
fn canonical_conversion(bencher: Bencher, codec: &str) {
    let compression = match codec {
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => Compression::None,
    };
    let bytes = batch(64, compression);
    bencher
        .counter(BytesCount::new(64 * 1024usize))
        .bench(|| CanonicalBatch::from_batch(black_box(&bytes)).expect("decodes"));
}

/// 8 MiB of 64 KiB batches packed into an object's blocks (without the Tantivy index).
#[divan::bench]
fn segment_packing(bencher: Bencher) {
    let batches = offset_batches(128);
    bencher.counter(BytesCount::new(8usize << 20)).bench(|| {
        let mut builder = ObjectBuilder::default();
        builder.start_partition(uuid::Uuid::nil(), 0);
        for (header, bytes) in &batches {
            builder.add_batch(header, bytes).expect("in order");
        }
        builder.finish().expect("in memory")
    });
}

/// `n` 64-record batches with consecutive offsets, as the WAL would hold them.
fn offset_batches(n: usize) -> Vec<(BatchHeader, Bytes)> {
    let template = batch(64, Compression::None);
    (0..n)
        .map(|i| {
            let mut bytes = BytesMut::from(&template[..]);
            strata::protocol::record_batch::set_base_offset(&mut bytes, i as i64 * 64);
            let bytes = bytes.freeze();
            (BatchHeader::parse(&bytes).expect("valid"), bytes)
        })
        .collect()
}

struct OpenWal {
    runtime: tokio::runtime::Runtime,
    wal: Arc<Wal>,
    partition: Arc<Partition>,
    _dir: tempfile::TempDir,
}

impl Drop for OpenWal {
    /// The writer thread waits on the runtime's timers: stop it before the runtime goes.
    fn drop(&mut self) {
        self.runtime.block_on(self.wal.close());
    }
}

fn open_wal() -> OpenWal {
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let metadata = Arc::new(Metadata::open(&dir.path().join("meta")).expect("metadata"));
    let topics = Topics::load(metadata);
    let topic = topics
        .create("bench", 1, BTreeMap::new(), false)
        .expect("topic");
    let options = WalOptions {
        dir: dir.path().join("wal"),
        segment_bytes: 64 << 20,
        segment_ms: 600_000,
        group_commit_us: 0,
        disk_bytes_max: 0,
        faults: strata::faults::Faults::disabled(),
    };
    let wal = runtime
        .block_on(async { Wal::open(options, &topics, Arc::new(Notify::new())) })
        .expect("open the WAL");
    OpenWal {
        runtime,
        wal: Arc::new(wal),
        partition: topic.partition(0).expect("partition 0").clone(),
        _dir: dir,
    }
}

/// Appends of one 64 KiB batch each, `concurrent` at a time, every one waited for until its
/// fsync: with 1, the cost of an fsync; with more, what group commit makes of it.
#[divan::bench(args = [1, 16], max_time = 3)]
fn wal_append(bencher: Bencher, concurrent: usize) {
    let open = open_wal();
    let (header, bytes) = offset_batches(1).remove(0);
    bencher
        .counter(BytesCount::new(bytes.len() * concurrent))
        .bench(|| {
            open.runtime.block_on(async {
                let mut replies = Vec::with_capacity(concurrent);
                for _ in 0..concurrent {
                    let batches = vec![(header, bytes.clone())];
                    replies.push(open.wal.append(open.partition.clone(), batches).await);
                }
                for reply in replies {
                    reply.await.expect("answered").expect("durable");
                }
            })
        });
}

/// A fetch's cold read: the block from the memory cache (hit), sliced to the batches from an
/// offset in its middle.
#[divan::bench]
fn cold_read_cached_block(bencher: Bencher) {
    let open = open_wal();
    let (object, footer) = {
        let mut builder = ObjectBuilder::default();
        builder.start_partition(uuid::Uuid::nil(), 0);
        for (header, bytes) in offset_batches(64) {
            builder.add_batch(&header, &bytes).expect("in order");
        }
        builder.finish().expect("in memory")
    };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let key = ObjectPath::from("bench.seg");
    let object_bytes = object.len() as u64;
    open.runtime
        .block_on(store.put(&key, object.into()))
        .expect("put");
    let blocks = footer.partitions[0].clone();
    let block = blocks.blocks[0].clone();
    let segment = RemoteSegment {
        key,
        object_bytes,
        wal_segment_id: 1,
        blocks,
        index_files: footer.index_files.clone().into(),
    };
    let reader = Reader::new(
        open.wal.clone(),
        store,
        64 << 20,
        None,
        Arc::new(Metrics::default()),
    );
    let middle = (block.base_offset + block.last_offset) / 2;
    bencher
        .counter(BytesCount::new((block.end - block.start) as usize / 2))
        .bench(|| {
            open.runtime.block_on(async {
                let bytes = reader.read_block(&segment, &block).await.expect("read");
                batches_from(&bytes, middle, 8 << 20, true).expect("slice")
            })
        });
}

/// One 64-record batch of JSON log lines of about 1 KiB (words a search would look for).
fn log_line_batch() -> CanonicalBatch {
    let words = [
        "disk", "fetch", "commit", "timeout", "retry", "group", "offset", "bucket",
    ];
    let records: Vec<Record> = (0..64i64)
        .map(|i| {
            let mut message = String::new();
            let mut n = i as usize;
            while message.len() < 900 {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                message.push_str(words[(n >> 33) % words.len()]);
                message.push_str(&format!("{} ", (n >> 40) % 10_000));
            }
            let value = format!(
                r#"{{"level":"{}","service":"svc-{}","message":"{message}"}}"#,
                ["info", "warn", "error"][i as usize % 3],
                i % 7
            );
            plain_record(i, 1_700_000_000_000 + i, None, value.into())
        })
        .collect();
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buffer, records.iter(), &options).expect("encode");
    CanonicalBatch::from_batch(&buffer).expect("decodes")
}

/// Tantivy indexing of 4 MiB of records (64 batches of 64), committed: the search index's
/// cost per record, for values that are one long word (what `strata bench` sends) and for
/// JSON log lines.
#[divan::bench(args = ["letters", "log lines"], sample_count = 10)]
fn record_indexing(bencher: Bencher, values: &str) {
    let batch = match values {
        "letters" => CanonicalBatch::from_batch(&batch(64, Compression::None)).expect("decodes"),
        _ => log_line_batch(),
    };
    let parent = tempfile::tempdir().expect("temporary directory");
    let topic_id = uuid::Uuid::nil();
    bencher
        .counter(divan::counter::ItemsCount::new(64 * 64usize))
        .bench(|| {
            let mut builder = IndexBuilder::new(parent.path()).expect("index");
            for _ in 0..64 {
                builder.add_batch(&topic_id, 0, &batch).expect("indexed");
            }
            builder.finish().expect("committed")
        });
}
