//! The V2 segment object: the batches of one sealed WAL segment, grouped by partition into
//! blocks, as formed (offsets assigned), and a footer that says where every partition's
//! blocks lie. Self-describing (magic, version, checksums): a bucket can be read without any
//! local state, and a reader needs one ranged read of the tail to open an object.
//!
//! ```text
//! object  := header | block* | footer | trailer
//! header  := "STRATASG" | version u32 | reserved u32
//! footer  := bincode(Footer)
//! trailer := footer_length u32 | crc32c(footer) u32 | version u32 | "STRATASG"
//! ```

use std::io::{Read, Write};
use std::ops::Range;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits;
use crate::partition::producer::Producers;
use crate::protocol::record_batch::BatchHeader;
use crate::segment::index::IndexFiles;

pub const MAGIC: &[u8; 8] = b"STRATASG";
pub const FORMAT_VERSION: u32 = 3;
const HEADER_BYTES: usize = 16;
pub const TRAILER_BYTES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("not a Strata segment object: {0}")]
    NotASegment(&'static str),
    #[error(
        "segment object format version {0} is not readable by this broker (reads {FORMAT_VERSION})"
    )]
    Version(u32),
    #[error("segment footer is corrupt: {0}")]
    CorruptFooter(String),
    #[error("writing the object: {0}")]
    Io(#[from] std::io::Error),
    #[error("batch for {topic_id}/{partition} at offset {offset} is out of order")]
    OutOfOrder {
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    },
}

/// One block: consecutive batches of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub start: u64,
    pub end: u64,
}

impl Block {
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }
}

/// A partition's part of the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionBlocks {
    pub topic_id: Uuid,
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub blocks: Vec<Block>,
    /// Idempotent-producer state of this partition's batches in the object, so a broker that
    /// restarts after the WAL was trimmed still recognises retried batches.
    pub producers: Producers,
}

impl PartitionBlocks {
    /// The block holding `offset`, or the first one after it.
    pub fn block_for(&self, offset: i64) -> Option<&Block> {
        let at = self.blocks.partition_point(|b| b.last_offset < offset);
        self.blocks.get(at)
    }

    pub fn bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.end - b.start).sum()
    }
}

/// One file of the object's Tantivy index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub partitions: Vec<PartitionBlocks>,
    /// The Tantivy index over every record in the object.
    pub index_files: Vec<IndexFile>,
}

impl Footer {
    pub fn partition(&self, topic_id: &Uuid, partition: i32) -> Option<&PartitionBlocks> {
        self.partitions
            .iter()
            .find(|p| p.topic_id == *topic_id && p.partition == partition)
    }
}

/// Builds an object into a sink (a file for uploads, a `Vec` in tests), so memory stays bounded
/// by a block whatever the segment's size. Batches are added per partition in offset order;
/// partitions may be added in any order, each one's batches contiguously.
pub struct ObjectBuilder<W: Write = Vec<u8>> {
    sink: W,
    /// Bytes written so far: where the next byte goes.
    position: u64,
    partitions: Vec<PartitionBlocks>,
    open: Option<Block>,
    index_files: Vec<IndexFile>,
}

impl Default for ObjectBuilder<Vec<u8>> {
    /// An object built in memory (tests and benchmarks).
    fn default() -> Self {
        ObjectBuilder::new(Vec::with_capacity(limits::SEGMENT_BLOCK_BYTES))
            .expect("writing to a Vec cannot fail")
    }
}

impl<W: Write> ObjectBuilder<W> {
    /// Starts an object in `sink`, with its header.
    pub fn new(sink: W) -> Result<ObjectBuilder<W>, ObjectError> {
        let mut builder = ObjectBuilder {
            sink,
            position: 0,
            partitions: Vec::new(),
            open: None,
            index_files: Vec::new(),
        };
        let mut header = [0u8; HEADER_BYTES];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        builder.write(&header)?;
        Ok(builder)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ObjectError> {
        self.sink.write_all(bytes)?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Starts the next partition; its batches follow with `add_batch`.
    pub fn start_partition(&mut self, topic_id: Uuid, partition: i32) {
        self.close_block();
        self.partitions.push(PartitionBlocks {
            topic_id,
            partition,
            base_offset: -1,
            last_offset: -1,
            max_timestamp: -1,
            blocks: Vec::new(),
            producers: Producers::default(),
        });
    }

    /// Adds one batch (whole, offsets assigned) to the current partition.
    pub fn add_batch(&mut self, header: &BatchHeader, batch: &[u8]) -> Result<(), ObjectError> {
        let current = self
            .partitions
            .last_mut()
            .expect("start_partition comes first");
        if current.last_offset >= header.base_offset {
            return Err(ObjectError::OutOfOrder {
                topic_id: current.topic_id,
                partition: current.partition,
                offset: header.base_offset,
            });
        }
        if current.base_offset < 0 {
            current.base_offset = header.base_offset;
        }
        current.last_offset = header.last_offset();
        current.max_timestamp = current.max_timestamp.max(header.max_timestamp);
        if header.is_idempotent() {
            current.producers.record(header, header.base_offset);
        }
        let start = self.position;
        self.write(batch)?;
        let end = self.position;
        let block = self.open.get_or_insert(Block {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
            start,
            end,
        });
        block.last_offset = header.last_offset();
        block.max_timestamp = block.max_timestamp.max(header.max_timestamp);
        block.end = end;
        if (block.end - block.start) as usize >= limits::SEGMENT_BLOCK_BYTES {
            self.close_block();
        }
        Ok(())
    }

    fn close_block(&mut self) {
        if let Some(block) = self.open.take() {
            self.partitions
                .last_mut()
                .expect("a block belongs to a partition")
                .blocks
                .push(block);
        }
    }

    /// Adds the index files after the data blocks (after the last batch), copied from `files`.
    pub fn add_index_files(&mut self, files: &IndexFiles) -> Result<(), ObjectError> {
        for name in files.names() {
            self.add_index_file(name, &mut files.open(name)?)?;
        }
        Ok(())
    }

    /// Adds one index file, copied from `file`, after the data blocks (after the last batch).
    pub fn add_index_file(&mut self, name: &str, file: &mut impl Read) -> Result<(), ObjectError> {
        self.close_block();
        let start = self.position;
        self.position += std::io::copy(file, &mut self.sink)?;
        self.index_files.push(IndexFile {
            name: name.to_string(),
            start,
            end: self.position,
        });
        Ok(())
    }

    /// Writes the footer and trailer; gives back the sink (flushed) and the footer.
    pub fn finish(mut self) -> Result<(W, Footer), ObjectError> {
        self.close_block();
        self.partitions.retain(|p| !p.blocks.is_empty());
        let footer = Footer {
            partitions: std::mem::take(&mut self.partitions),
            index_files: std::mem::take(&mut self.index_files),
        };
        let encoded = bincode::serde::encode_to_vec(&footer, codec()).expect("footer serializes");
        self.write(&encoded)?;
        let mut trailer = [0u8; TRAILER_BYTES];
        trailer[..4].copy_from_slice(&(encoded.len() as u32).to_be_bytes());
        trailer[4..8].copy_from_slice(&crc32c::crc32c(&encoded).to_be_bytes());
        trailer[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        trailer[12..].copy_from_slice(MAGIC);
        self.write(&trailer)?;
        self.sink.flush()?;
        Ok((self.sink, footer))
    }
}

/// What the trailer says: how many bytes before it the footer starts.
pub fn footer_length(trailer: &[u8]) -> Result<usize, ObjectError> {
    if trailer.len() < TRAILER_BYTES {
        return Err(ObjectError::NotASegment("shorter than a trailer"));
    }
    let trailer = &trailer[trailer.len() - TRAILER_BYTES..];
    if &trailer[12..] != MAGIC {
        return Err(ObjectError::NotASegment("bad trailing magic"));
    }
    let version = u32::from_be_bytes(trailer[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(ObjectError::Version(version));
    }
    let length = u32::from_be_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
    if length > limits::SEGMENT_FOOTER_BYTES_MAX {
        return Err(ObjectError::CorruptFooter(format!(
            "footer of {length} bytes"
        )));
    }
    Ok(length)
}

/// Reads the footer from the object's last bytes (`tail` must end where the object ends and
/// hold at least the footer and trailer; `footer_length` says how much that is).
pub fn parse_footer(tail: &[u8], object_bytes: u64) -> Result<Footer, ObjectError> {
    let length = footer_length(tail)?;
    if tail.len() < length + TRAILER_BYTES {
        return Err(ObjectError::CorruptFooter(
            "tail shorter than the footer".into(),
        ));
    }
    let trailer = &tail[tail.len() - TRAILER_BYTES..];
    let encoded = &tail[tail.len() - TRAILER_BYTES - length..tail.len() - TRAILER_BYTES];
    let crc = u32::from_be_bytes(trailer[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(encoded) != crc {
        return Err(ObjectError::CorruptFooter("checksum mismatch".into()));
    }
    let (footer, _): (Footer, usize) = bincode::serde::decode_from_slice(encoded, codec())
        .map_err(|e| ObjectError::CorruptFooter(e.to_string()))?;
    let data_end = object_bytes.saturating_sub((length + TRAILER_BYTES) as u64);
    check_footer(&footer, data_end)?;
    Ok(footer)
}

/// bincode as footers (and catalog entries, which hold one) are written and read: every length
/// it reads is capped, so a damaged or hostile footer cannot ask for more memory than a whole
/// footer may take (without the cap, a string length of 2^40 is a 1 TiB allocation).
pub fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ limits::SEGMENT_FOOTER_BYTES_MAX }>()
}

/// What a reader relies on, whoever wrote the footer: every byte range lies inside the data
/// (between the header and `data_end`), and each partition's offsets are a non-negative range
/// whose blocks follow each other in order inside it. A checksum only says the footer is the
/// one written; this says it is one the broker could have written.
pub fn check_footer(footer: &Footer, data_end: u64) -> Result<(), ObjectError> {
    let corrupt = |reason: &str| ObjectError::CorruptFooter(reason.into());
    let in_data =
        |start: u64, end: u64| start >= HEADER_BYTES as u64 && start <= end && end <= data_end;
    if !footer.index_files.iter().all(|f| in_data(f.start, f.end)) {
        return Err(corrupt("an index file lies outside the data"));
    }
    for partition in &footer.partitions {
        if !partition
            .blocks
            .iter()
            .all(|b| in_data(b.start, b.end) && b.start < b.end)
        {
            return Err(corrupt("a block lies outside the data"));
        }
        check_offsets(partition).map_err(corrupt)?;
    }
    Ok(())
}

fn check_offsets(partition: &PartitionBlocks) -> Result<(), &'static str> {
    let (base, last) = (partition.base_offset, partition.last_offset);
    // `last + 1` is the next offset everywhere downstream, so i64::MAX cannot be a last offset.
    if base < 0 || base > last || last == i64::MAX || partition.blocks.is_empty() {
        return Err("a partition's offset range is impossible");
    }
    let mut next = base;
    for block in &partition.blocks {
        if block.base_offset < next
            || block.base_offset > block.last_offset
            || block.last_offset > last
        {
            return Err("a partition's blocks are out of order");
        }
        next = block.last_offset + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{set_base_offset, tests_support};
    use bytes::Bytes;

    fn batch(base_offset: i64, records: i32, bytes_per_record: usize) -> (BatchHeader, Bytes) {
        let records: Vec<_> = (0..records)
            .map(|i| {
                let value = Some(Bytes::from(vec![7u8; bytes_per_record]));
                tests_support::record(i, 10 * base_offset + i64::from(i), None, value)
            })
            .collect();
        let mut bytes = tests_support::encode(&records, kafka_protocol::records::Compression::None);
        set_base_offset(&mut bytes, base_offset);
        (BatchHeader::parse(&bytes).unwrap(), Bytes::from(bytes))
    }

    #[test]
    fn every_batch_is_found_through_the_footer_read_from_the_tail() {
        let topic = Uuid::new_v4();
        let mut builder = ObjectBuilder::default();
        let mut expected = Vec::new();
        for partition in [2, 0] {
            builder.start_partition(topic, partition);
            for n in 0..40 {
                let (header, bytes) = batch(n * 10, 10, 5000);
                builder.add_batch(&header, &bytes).unwrap();
                expected.push((partition, n * 10, bytes));
            }
        }
        let (object, built) = builder.finish().unwrap();
        let tail = &object[object.len() - limits::SEGMENT_TAIL_READ_BYTES.min(object.len())..];
        let footer = parse_footer(tail, object.len() as u64).unwrap();
        assert_eq!(footer, built);
        let p2 = footer.partition(&topic, 2).unwrap();
        assert!(p2.blocks.len() > 1, "blocks close at the target size");
        assert_eq!((p2.base_offset, p2.last_offset), (0, 399));
        for (partition, offset, bytes) in expected {
            let blocks = footer.partition(&topic, partition).unwrap();
            let block = blocks.block_for(offset + 3).unwrap();
            let data = &object[block.start as usize..block.end as usize];
            let found = crate::protocol::record_batch::split_batches(&Bytes::copy_from_slice(data))
                .unwrap();
            assert!(
                found
                    .iter()
                    .any(|(h, b)| h.base_offset == offset && *b == bytes),
                "offset {offset}"
            );
        }
        assert!(footer
            .partition(&topic, 2)
            .unwrap()
            .block_for(400)
            .is_none());
    }

    #[test]
    fn damaged_objects_are_refused() {
        let mut builder = ObjectBuilder::default();
        builder.start_partition(Uuid::nil(), 0);
        let (header, bytes) = batch(0, 1, 10);
        builder.add_batch(&header, &bytes).unwrap();
        let (object, _) = builder.finish().unwrap();
        let size = object.len() as u64;
        for at in 0..object.len() - 16 {
            let mut copy = object.to_vec();
            copy[object.len() - 1 - at] ^= 0x10;
            if object.len() - 1 - at < HEADER_BYTES + bytes.len() {
                continue;
            }
            assert!(
                parse_footer(&copy, size).is_err(),
                "flip {at} bytes from the end went unnoticed"
            );
        }
        assert!(parse_footer(&object[object.len() - 10..], size).is_err());
    }

    #[test]
    fn out_of_order_batches_are_refused() {
        let mut builder = ObjectBuilder::default();
        builder.start_partition(Uuid::nil(), 0);
        let (header, bytes) = batch(5, 1, 10);
        builder.add_batch(&header, &bytes).unwrap();
        assert!(builder.add_batch(&header, &bytes).is_err());
    }
}
