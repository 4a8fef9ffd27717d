//! WAL tests against real files: random appends with reopen, torn tails, segment rolls.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use proptest::prelude::*;

use super::*;
use crate::metadata::Metadata;
use crate::partition::Topics;
use crate::protocol::record_batch::{tests_support, BatchHeader};

fn batch(records: i32, tag: u64) -> (BatchHeader, Bytes) {
    let records: Vec<_> = (0..records)
        .map(|i| {
            let key = Some(Bytes::from(format!("{tag}-{i}")));
            tests_support::record(
                i,
                1_000 + i64::from(i),
                key,
                Some(Bytes::from(vec![tag as u8; 50])),
            )
        })
        .collect();
    let bytes = Bytes::from(tests_support::encode(&records, Compression::None));
    (BatchHeader::parse(&bytes).unwrap(), bytes)
}

struct Opened {
    topics: Topics,
    wal: Wal,
}

fn options(dir: &Path, segment_bytes: u64) -> WalOptions {
    WalOptions {
        dir: dir.join("wal"),
        segment_bytes,
        segment_ms: 60_000,
        group_commit_us: 0,
        disk_bytes_max: 0,
        faults: crate::faults::Faults::disabled(),
    }
}

fn open(dir: &Path, segment_bytes: u64) -> Opened {
    let metadata = Arc::new(Metadata::open(&dir.join("meta")).unwrap());
    let topics = Topics::load(metadata);
    if topics.get("t").is_none() {
        topics.create("t", 3, BTreeMap::new(), false).unwrap();
    }
    let wal = Wal::open(
        options(dir, segment_bytes),
        &topics,
        Arc::new(Notify::new()),
    )
    .unwrap();
    Opened { topics, wal }
}

/// Everything readable from a partition: `(base_offset, batch bytes)`.
fn contents(opened: &Opened, partition: i32) -> Vec<(i64, Bytes)> {
    let topic = opened.topics.get("t").unwrap();
    let partition = topic.partition(partition).unwrap();
    let locations: Vec<_> = partition.lock().batches.iter().copied().collect();
    locations
        .iter()
        .map(|l| (l.base_offset, opened.wal.read(&[*l]).unwrap()))
        .collect()
}

async fn append(opened: &Opened, partition: i32, records: i32, tag: u64) -> i64 {
    let partition = opened
        .topics
        .get("t")
        .unwrap()
        .partition(partition)
        .unwrap()
        .clone();
    let reply = opened
        .wal
        .append(partition, vec![batch(records, tag)])
        .await;
    reply.await.unwrap().expect("append").base_offset
}

/// The batch as the WAL stores it: the producer's bytes with `base_offset` assigned.
fn stored(records: i32, tag: u64, base_offset: i64) -> Bytes {
    let mut bytes = batch(records, tag).1.to_vec();
    crate::protocol::record_batch::set_base_offset(&mut bytes, base_offset);
    Bytes::from(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random appends to three partitions, reopening the WAL at random points, with segments
    /// small enough to roll often: every acknowledged batch comes back, byte for byte, at
    /// contiguous offsets, and appends after a reopen continue where the log ended.
    #[test]
    fn random_appends_survive_reopen(ops in prop::collection::vec((0..3i32, 1..20i32, prop::bool::weighted(0.1)), 1..60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        runtime.block_on(async {
            let mut opened = open(dir.path(), 2048);
            let mut expected: Vec<Vec<(i64, Bytes)>> = vec![Vec::new(); 3];
            for (n, (partition, records, reopen)) in ops.into_iter().enumerate() {
                let base = append(&opened, partition, records, n as u64).await;
                let next = expected[partition as usize].last().map_or(0, |(b, bytes)| {
                    b + i64::from(BatchHeader::parse(bytes).unwrap().last_offset_delta) + 1
                });
                assert_eq!(base, next, "offsets are contiguous");
                expected[partition as usize].push((base, stored(records, n as u64, base)));
                if reopen {
                    opened.wal.close().await;
                    opened = open(dir.path(), 2048);
                }
            }
            opened.wal.close().await;
            let reopened = open(dir.path(), 2048);
            for partition in 0..3 {
                assert_eq!(contents(&reopened, partition), expected[partition as usize]);
                let hw = reopened.topics.get("t").unwrap().partition(partition).unwrap().offsets().1;
                let end = expected[partition as usize].last().map_or(0, |(b, bytes)| {
                    b + i64::from(BatchHeader::parse(bytes).unwrap().last_offset_delta) + 1
                });
                assert_eq!(hw, end);
            }
            reopened.wal.close().await;
        });
        let segments = segment::list_segments(&dir.path().join("wal")).unwrap();
        prop_assert!(!segments.is_empty());
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    let wal = dir.join("wal");
    let id = *segment::list_segments(&wal).unwrap().last().unwrap();
    segment::segment_path(&wal, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_torn_tail_is_cut_and_appends_continue_after_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path(), 1 << 20);
    for n in 0..5 {
        append(&opened, 0, 3, n).await;
    }
    opened.wal.close().await;
    let path = last_segment(dir.path());
    let full = std::fs::metadata(&path).unwrap().len();
    // Cut the last entry in half, as a crash in the middle of a write would.
    let entry =
        segment::ENTRY_HEADER_BYTES + segment::ENTRY_PREFIX_BYTES + batch(3, 4).1.len() as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full - entry / 2)
        .unwrap();

    let opened = open(dir.path(), 1 << 20);
    let offsets: Vec<i64> = contents(&opened, 0).iter().map(|(b, _)| *b).collect();
    assert_eq!(offsets, vec![0, 3, 6, 9], "the torn fifth batch is gone");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        full - entry,
        "the file was cut at the last whole entry"
    );
    assert_eq!(
        append(&opened, 0, 3, 99).await,
        12,
        "the next append reuses the torn batch's offsets"
    );
    opened.wal.close().await;

    let opened = open(dir.path(), 1 << 20);
    let found = contents(&opened, 0);
    assert_eq!(found.len(), 5);
    assert_eq!(found[4], (12, stored(3, 99, 12)));
    opened.wal.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn garbage_after_the_last_entry_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path(), 1 << 20);
    append(&opened, 1, 2, 1).await;
    opened.wal.close().await;
    let path = last_segment(dir.path());
    let valid = std::fs::metadata(&path).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, &[0xff; 100]).unwrap();
    drop(file);
    let opened = open(dir.path(), 1 << 20);
    assert_eq!(contents(&opened, 1).len(), 1);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), valid);
    opened.wal.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn corruption_in_a_sealed_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path(), 4096);
    for n in 0..40 {
        append(&opened, 2, 5, n).await;
    }
    opened.wal.close().await;
    let wal = dir.path().join("wal");
    let first = segment::segment_path(&wal, segment::list_segments(&wal).unwrap()[0]);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[200] ^= 0x40;
    std::fs::write(&first, bytes).unwrap();
    let metadata = Arc::new(Metadata::open(&dir.path().join("meta")).unwrap());
    let topics = Topics::load(metadata);
    let error = Wal::open(options(dir.path(), 4096), &topics, Arc::new(Notify::new()))
        .err()
        .unwrap();
    assert!(matches!(error, WalError::Corrupt { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn entries_of_a_deleted_topic_are_skipped_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path(), 1 << 20);
    append(&opened, 0, 2, 1).await;
    opened.topics.delete("t").unwrap();
    opened
        .topics
        .create("t", 3, BTreeMap::new(), false)
        .unwrap();
    append(&opened, 0, 4, 2).await;
    opened.wal.close().await;
    let opened = open(dir.path(), 1 << 20);
    let found = contents(&opened, 0);
    assert_eq!(
        found,
        vec![(0, stored(4, 2, 0))],
        "only the new topic's batch, at offset 0"
    );
    opened.wal.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn appends_are_refused_once_the_disk_budget_is_spent_and_resume_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = Arc::new(Metadata::open(&dir.path().join("meta")).unwrap());
    let topics = Topics::load(metadata);
    topics.create("t", 1, BTreeMap::new(), false).unwrap();
    let mut options = options(dir.path(), 1 << 20);
    options.disk_bytes_max = 4096;
    let wal = Wal::open(options, &topics, Arc::new(Notify::new())).unwrap();
    let partition = topics.get("t").unwrap().partition(0).unwrap().clone();
    let mut refused = None;
    for n in 0..100 {
        let reply = wal
            .append(partition.clone(), vec![batch(5, n)])
            .await
            .await
            .unwrap();
        if let Err(error) = reply {
            refused = Some((n, error));
            break;
        }
    }
    let (n, error) = refused.expect("the budget is enforced");
    assert!(matches!(error, AppendError::DiskBudget(4096)), "{error}");
    assert!(n > 3, "appends went through until the budget was spent");
    assert!(wal.disk_bytes() >= 4096);
    assert_eq!(
        wal.sealed_bytes(),
        0,
        "the active segment waits for no upload"
    );
    let high_watermark = partition.offsets().1;
    wal.roll().await;
    assert!(wal.sealed_bytes() >= 4096, "sealed: {}", wal.sealed_bytes());
    let sealed = wal.sealed_segments();
    tokio::task::spawn_blocking({
        let sealed = sealed.clone();
        let wal_dir = dir.path().join("wal");
        move || {
            sealed.iter().for_each(|id| {
                std::fs::metadata(segment::segment_path(&wal_dir, *id))
                    .map(|_| ())
                    .unwrap()
            })
        }
    })
    .await
    .unwrap();
    for id in sealed {
        wal.remove_segment(id).unwrap();
    }
    assert!(wal.disk_bytes() < 4096);
    assert_eq!(wal.sealed_bytes(), 0);
    assert!(wal
        .append(partition.clone(), vec![batch(5, 200)])
        .await
        .await
        .unwrap()
        .is_ok());
    assert_eq!(
        partition.offsets().1,
        high_watermark + 5,
        "refused appends took no offsets"
    );
    wal.close().await;
}

/// A failed fsync whose cut cannot be synced either (the fault covers every sync): appends are
/// refused with KAFKA_STORAGE_ERROR and take no offsets, the segment is not sealed meanwhile,
/// and once syncs work again appends resume at the next offset. A full disk (ENOSPC on write,
/// half the group on disk) is cut off and the next append goes through. After a reopen, the
/// log holds exactly what was acknowledged.
#[tokio::test]
async fn disk_faults_refuse_appends_until_they_clear() {
    use crate::faults::{Action, Errno, Fault, Faults, Point};
    let dir = tempfile::tempdir().unwrap();
    let metadata = Arc::new(Metadata::open(&dir.path().join("meta")).unwrap());
    let topics = Topics::load(metadata);
    topics.create("t", 1, BTreeMap::new(), false).unwrap();
    let faults = Faults::enabled();
    let mut options = options(dir.path(), 1 << 20);
    options.faults = faults.clone();
    let wal = Wal::open(options, &topics, Arc::new(Notify::new())).unwrap();
    let partition = topics.get("t").unwrap().partition(0).unwrap().clone();
    let append = |n: u64| {
        let wal = &wal;
        let partition = partition.clone();
        async move {
            wal.append(partition, vec![batch(5, n)])
                .await
                .await
                .unwrap()
        }
    };
    assert_eq!(append(0).await.unwrap().base_offset, 0);

    let fail = |errno| Fault {
        action: Action::Error { errno },
        after: 0,
    };
    faults.set(Point::WalFsync, fail(Errno::Eio)).unwrap();
    for n in 1..4 {
        let error = append(n).await.unwrap_err();
        assert!(matches!(error, AppendError::Storage(_)), "{error}");
        assert_eq!(error.code(), 56, "KAFKA_STORAGE_ERROR");
    }
    assert_eq!(partition.offsets().1, 5, "nothing was published");
    wal.roll().await;
    assert!(
        wal.sealed_segments().is_empty(),
        "no sealing while a cut is pending"
    );
    faults.clear_all();
    assert_eq!(
        append(4).await.unwrap().base_offset,
        5,
        "offsets handed out again"
    );

    faults.set(Point::WalWrite, fail(Errno::Enospc)).unwrap();
    let error = append(5).await.unwrap_err();
    assert!(error.to_string().contains("No space left"), "{error}");
    faults.clear_all();
    assert_eq!(append(6).await.unwrap().base_offset, 10);
    wal.close().await;

    let reopened = open(dir.path(), 1 << 20);
    assert_eq!(
        contents(&reopened, 0),
        vec![
            (0, stored(5, 0, 0)),
            (5, stored(5, 4, 5)),
            (10, stored(5, 6, 10))
        ]
    );
    reopened.wal.close().await;
}

#[test]
fn entries_with_offsets_the_writer_cannot_assign_end_the_valid_part() {
    for base_offset in [-5, i64::MAX - 1] {
        let mut file = bytes::BytesMut::from(&segment::segment_header()[..]);
        segment::encode_entry(&mut file, 1, uuid::Uuid::nil(), 0, &batch(2, 1).1, 0);
        let valid_length = file.len() as u64;
        segment::encode_entry(
            &mut file,
            1,
            uuid::Uuid::nil(),
            0,
            &batch(2, 2).1,
            base_offset,
        );
        let end = segment::scan_reader(&file[..], file.len() as u64, 1, |_| Ok(())).unwrap();
        let segment::ScanEnd::Torn {
            valid_length: cut,
            reason,
            ..
        } = end
        else {
            panic!("base offset {base_offset} was accepted");
        };
        assert_eq!(cut, valid_length);
        assert!(reason.contains("offsets"), "{reason}");
    }
}

/// Counts the file system blocks a file still holds.
fn blocks_of(file: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    file.metadata().unwrap().blocks()
}

#[test]
fn a_deleted_segment_is_freed_in_steps_once_no_read_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let length = 3 * limits::WAL_RELEASE_STEP_BYTES + 5;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.write_all_at(&vec![7u8; length as usize], 0).unwrap();
    let file = Arc::new(file);
    std::fs::remove_file(&path).unwrap();

    // A read still holds the file: it keeps every byte until the wait runs out.
    let reader = file.clone();
    release_gradually(file.clone(), length);
    assert_eq!(reader.metadata().unwrap().len(), length);
    let mut last = [0u8; 1];
    reader.read_exact_at(&mut last, length - 1).unwrap();
    assert_eq!(last, [7]);

    // Once the read is done, the blocks go, step by step, down to the last step's worth.
    drop(reader);
    let observer = file.try_clone().unwrap(); // the same file, not a holder of the Arc
    let before = blocks_of(&observer);
    release_gradually(file, length);
    assert!(observer.metadata().unwrap().len() <= limits::WAL_RELEASE_STEP_BYTES);
    assert!(blocks_of(&observer) < before / 2, "the blocks were freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn trimmed_segment_files_are_reused_and_what_they_held_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    let spare = wal_dir.join(SPARE_FILE_NAME);
    let length_of = |id| {
        std::fs::metadata(segment::segment_path(&wal_dir, id))
            .unwrap()
            .len()
    };
    let opened = open(dir.path(), 4096);
    for n in 0..4 {
        append(&opened, 0, 20, n).await;
    }
    opened.wal.roll().await;
    assert_eq!(opened.wal.sealed_segments(), vec![1]);
    let old_length = length_of(1);
    assert!(old_length >= 4096);
    opened.wal.remove_segment(1).unwrap();
    assert!(spare.exists(), "a full segment's file is kept");

    let b = append(&opened, 0, 2, 10).await;
    opened.wal.roll().await;
    assert!(!spare.exists());
    assert_eq!(length_of(3), old_length, "segment 3 is segment 1's file");
    assert_eq!(opened.wal.reused_counter().get(), 1);
    let c = append(&opened, 0, 2, 11).await;
    // Sealed: its seal, then what segment 1 held.
    opened.wal.roll().await;
    let d = append(&opened, 0, 2, 12).await;
    let bytes = opened.wal.disk_bytes();
    opened.wal.close().await;

    let reopened = open(dir.path(), 4096);
    let expected = vec![
        (b, stored(2, 10, b)),
        (c, stored(2, 11, c)),
        (d, stored(2, 12, d)),
    ];
    assert_eq!(contents(&reopened, 0), expected);
    assert_eq!(
        reopened.wal.disk_bytes(),
        bytes,
        "valid bytes, not file lengths"
    );

    // Segment 2 is too short to keep; segment 3 becomes the active segment 5, with segment 3's
    // and segment 1's entries after its header until written over.
    reopened.wal.remove_segment(2).unwrap();
    reopened.wal.remove_segment(3).unwrap();
    reopened.wal.roll().await;
    assert_eq!(length_of(5), old_length);
    let e = append(&reopened, 0, 2, 13).await;
    assert_eq!(e, d + 2);
    reopened.wal.close().await;

    let last = open(dir.path(), 4096);
    assert_eq!(
        contents(&last, 0),
        vec![(d, stored(2, 12, d)), (e, stored(2, 13, e))]
    );
    assert!(length_of(5) < old_length, "what followed was cut on replay");
    let f = append(&last, 0, 2, 14).await;
    assert_eq!(f, e + 2);
    last.wal.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_format_version_1_segment_is_replayed_and_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    std::fs::create_dir_all(&wal_dir).unwrap();
    let topic_id = {
        let opened = open(dir.path(), 1 << 20);
        let id = opened.topics.get("t").unwrap().id;
        opened.wal.close().await;
        std::fs::remove_dir_all(&wal_dir).unwrap();
        std::fs::create_dir_all(&wal_dir).unwrap();
        id
    };
    // Version 1: the checksum covers the body alone.
    let mut file = BytesMut::from(&segment::MAGIC[..]);
    file.extend_from_slice(&1u32.to_be_bytes());
    file.extend_from_slice(&[0; 4]);
    for (tag, base_offset) in [(1, 0), (2, 3)] {
        let start = file.len();
        segment::encode_entry(&mut file, 1, topic_id, 0, &batch(3, tag).1, base_offset);
        let crc = crc32c::crc32c(&file[start + 8..]);
        file[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    }
    std::fs::write(segment::segment_path(&wal_dir, 1), &file).unwrap();

    let opened = open(dir.path(), 1 << 20);
    assert_eq!(
        contents(&opened, 0),
        vec![(0, stored(3, 1, 0)), (3, stored(3, 2, 3))]
    );
    // Appends go to a new segment of the current version, not to the old one.
    assert_eq!(append(&opened, 0, 3, 3).await, 6);
    assert_eq!(opened.wal.sealed_segments(), vec![1]);
    opened.wal.close().await;
    // Segments this short count as full: only its version keeps segment 1 from being reused.
    let opened = open(dir.path(), 64);
    assert_eq!(
        contents(&opened, 0),
        vec![
            (0, stored(3, 1, 0)),
            (3, stored(3, 2, 3)),
            (6, stored(3, 3, 6))
        ]
    );
    opened.wal.remove_segment(1).unwrap();
    assert!(!wal_dir.join(SPARE_FILE_NAME).exists());
    opened.wal.close().await;
}

#[test]
fn an_entry_written_for_another_segment_ends_the_valid_part() {
    let mut file = BytesMut::from(&segment::segment_header()[..]);
    segment::encode_entry(&mut file, 7, uuid::Uuid::nil(), 0, &batch(2, 1).1, 0);
    let first = file.len() as u64;
    segment::encode_entry(&mut file, 6, uuid::Uuid::nil(), 0, &batch(2, 2).1, 2);
    let end = segment::scan_reader(&file[..], file.len() as u64, 7, |_| Ok(())).unwrap();
    assert!(
        matches!(end, ScanEnd::Torn { valid_length, ref reason, .. } if valid_length == first && reason.contains("checksum")),
        "{end:?}"
    );
    // A seal ends a segment clean, whatever follows it.
    let mut sealed = BytesMut::from(&file[..first as usize]);
    sealed.extend_from_slice(&segment::seal(7));
    sealed.extend_from_slice(&file[first as usize..]);
    let end = segment::scan_reader(&sealed[..], sealed.len() as u64, 7, |_| Ok(())).unwrap();
    assert_eq!(end, ScanEnd::Clean { length: first });
    // Another segment's seal does not.
    let end = segment::scan_reader(&sealed[..], sealed.len() as u64, 8, |_| Ok(())).unwrap();
    assert!(matches!(end, ScanEnd::Torn { .. }), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_spare_without_any_segment_is_deleted_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    std::fs::create_dir_all(&wal_dir).unwrap();
    // Entries of a segment 1 from before the WAL was emptied by hand: under the new segment 1
    // they would pass their checksums.
    let mut file = BytesMut::from(&segment::segment_header()[..]);
    segment::encode_entry(&mut file, 1, uuid::Uuid::nil(), 0, &batch(2, 1).1, 0);
    file.resize(8192, 0);
    std::fs::write(wal_dir.join(SPARE_FILE_NAME), &file).unwrap();
    let opened = open(dir.path(), 4096);
    assert!(!wal_dir.join(SPARE_FILE_NAME).exists());
    assert_eq!(
        std::fs::metadata(segment::segment_path(&wal_dir, 1))
            .unwrap()
            .len(),
        segment::SEGMENT_HEADER_BYTES
    );
    opened.wal.close().await;
}
