//! The V1 WAL file format. A segment is a 16-byte header (magic, format version) followed by
//! entries, and, once sealed, a seal:
//!
//! ```text
//! entry := body_length u32 | crc32c(segment_id u64 | body) u32 | body
//! body  := topic_id [16] | partition i32 | record batch (as formed: offsets assigned)
//! seal  := 0 u32 | crc32c(segment_id u64) u32
//! ```
//! All integers big-endian. Replay reads entries one at a time (never a whole segment into
//! memory) and stops at the first entry that is incomplete or fails its checksum, or at a seal.
//!
//! The segment id in the checksum is what lets a file be reused for a later segment (format
//! version 2): the entries it held before fail their checksum under the new id, so what lies
//! after the last entry written is never taken for data, and the seal says where a sealed
//! segment ends. Version 1 files (checksum of the body alone, no seal, never reused) are still
//! read.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use uuid::Uuid;

use crate::limits;
use crate::partition::BatchLocation;
use crate::protocol::record_batch::{BatchError, BatchHeader};

pub const MAGIC: &[u8; 8] = b"STRATAWL";
pub const FORMAT_VERSION: u32 = 2;
/// Segments written before files were reused: checksums without the segment id.
const FORMAT_VERSION_UNSEEDED: u32 = 1;
pub const SEGMENT_HEADER_BYTES: u64 = 16;
/// Length and checksum before the body.
pub const ENTRY_HEADER_BYTES: u64 = 8;
/// Topic id and partition before the batch.
pub const ENTRY_PREFIX_BYTES: u64 = 20;

pub fn segment_header() -> [u8; SEGMENT_HEADER_BYTES as usize] {
    versioned_header(FORMAT_VERSION)
}

fn versioned_header(version: u32) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&version.to_be_bytes());
    header
}

/// The checksum of an entry's body in segment `segment_id` (of a seal: of an empty body).
pub fn entry_checksum(segment_id: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&segment_id.to_be_bytes()), body)
}

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// Segment ids found in `dir`, ascending.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(id) = stem.parse::<u64>() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Appends one entry for `batch` to `buffer`, with `base_offset` written into the copy.
/// Returns the position of the batch's first byte relative to the entry's start.
pub fn encode_entry(
    buffer: &mut BytesMut,
    segment_id: u64,
    topic_id: Uuid,
    partition: i32,
    batch: &[u8],
    base_offset: i64,
) -> u64 {
    let body_length = (ENTRY_PREFIX_BYTES as usize + batch.len()) as u32;
    let start = buffer.len();
    buffer.reserve(ENTRY_HEADER_BYTES as usize + body_length as usize);
    buffer.put_u32(body_length);
    buffer.put_u32(0);
    buffer.put_slice(topic_id.as_bytes());
    buffer.put_i32(partition);
    let batch_start = buffer.len();
    buffer.put_slice(batch);
    crate::protocol::record_batch::set_base_offset(&mut buffer[batch_start..], base_offset);
    let body = start + ENTRY_HEADER_BYTES as usize;
    let crc = entry_checksum(segment_id, &buffer[body..]);
    buffer[start + 4..body].copy_from_slice(&crc.to_be_bytes());
    ENTRY_HEADER_BYTES + ENTRY_PREFIX_BYTES
}

/// The seal of segment `segment_id`, written after its last entry.
pub fn seal(segment_id: u64) -> [u8; ENTRY_HEADER_BYTES as usize] {
    let mut seal = [0u8; ENTRY_HEADER_BYTES as usize];
    seal[4..].copy_from_slice(&entry_checksum(segment_id, &[]).to_be_bytes());
    seal
}

/// One entry found by replay.
pub struct ReplayedEntry<'a> {
    pub topic_id: Uuid,
    pub partition: i32,
    /// File position of the batch's first byte.
    pub batch_position: u64,
    pub header: BatchHeader,
    pub batch: &'a [u8],
}

impl ReplayedEntry<'_> {
    /// Where this entry's batch lies, in segment `segment_id`.
    pub fn location(&self, segment_id: u64) -> BatchLocation {
        BatchLocation {
            base_offset: self.header.base_offset,
            last_offset: self.header.last_offset(),
            max_timestamp: self.header.max_timestamp,
            segment_id,
            position: self.batch_position,
            bytes: self.batch.len() as u32,
        }
    }
}

/// How a segment's scan ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte up to `length` belonged to a valid entry, and a seal or the end of the file
    /// came next.
    Clean { length: u64 },
    /// Bytes from `valid_length` on are not a valid entry: a torn or corrupt tail.
    Torn {
        valid_length: u64,
        file_length: u64,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("WAL segment {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("WAL segment {path} is not a Strata V1 WAL segment (bad magic or version)")]
    BadHeader { path: PathBuf },
}

/// Reads every entry of a segment in order, calling `visit` for each valid one, and reports
/// where the valid part ends. An entry `visit` refuses (with its reason) ends the valid part
/// like a bad checksum. Memory use is one entry, bounded by `WAL_ENTRY_BYTES_MAX`.
pub fn scan<F>(path: &Path, segment_id: u64, visit: F) -> Result<ScanEnd, SegmentError>
where
    F: FnMut(ReplayedEntry<'_>) -> Result<(), String>,
{
    let io = |source| SegmentError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let file_length = file.metadata().map_err(io)?.len();
    let reader = BufReader::with_capacity(1 << 20, file);
    scan_reader(reader, file_length, segment_id, visit).map_err(|error| match error {
        ScanError::Io(source) => io(source),
        ScanError::BadHeader => SegmentError::BadHeader {
            path: path.to_path_buf(),
        },
    })
}

/// Why a scan could not start or go on (a torn tail is not an error: see `ScanEnd`).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not a Strata V1 WAL segment (bad magic or version)")]
    BadHeader,
}

/// `scan` over any reader of a segment's `file_length` bytes (the fuzz targets give it memory).
/// Every length read from the segment is checked against the bytes that remain and against
/// `WAL_ENTRY_BYTES_MAX` before a buffer is sized for it.
pub fn scan_reader<R, F>(
    mut reader: R,
    file_length: u64,
    segment_id: u64,
    mut visit: F,
) -> Result<ScanEnd, ScanError>
where
    R: Read,
    F: FnMut(ReplayedEntry<'_>) -> Result<(), String>,
{
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    if file_length < SEGMENT_HEADER_BYTES {
        return Ok(ScanEnd::Torn {
            valid_length: 0,
            file_length,
            reason: "segment header incomplete".into(),
        });
    }
    reader.read_exact(&mut header)?;
    let seeded = if header == segment_header() {
        true
    } else if header == versioned_header(FORMAT_VERSION_UNSEEDED) {
        false
    } else {
        return Err(ScanError::BadHeader);
    };
    let checksum = |body: &[u8]| match seeded {
        true => entry_checksum(segment_id, body),
        false => crc32c::crc32c(body),
    };
    let mut position = SEGMENT_HEADER_BYTES;
    let mut body = Vec::new();
    loop {
        let remaining = file_length - position;
        if remaining == 0 {
            return Ok(ScanEnd::Clean { length: position });
        }
        let torn = |reason: String| {
            Ok(ScanEnd::Torn {
                valid_length: position,
                file_length,
                reason,
            })
        };
        if remaining < ENTRY_HEADER_BYTES {
            return torn(format!("{remaining} bytes where an entry header needs 8"));
        }
        let mut entry_header = [0u8; ENTRY_HEADER_BYTES as usize];
        reader.read_exact(&mut entry_header)?;
        let body_length = u32::from_be_bytes(entry_header[..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_be_bytes(entry_header[4..].try_into().expect("4 bytes"));
        if seeded && entry_header == seal(segment_id) {
            return Ok(ScanEnd::Clean { length: position });
        }
        if body_length < ENTRY_PREFIX_BYTES || body_length as usize > limits::WAL_ENTRY_BYTES_MAX {
            return torn(format!("entry length {body_length} is impossible"));
        }
        if body_length > remaining - ENTRY_HEADER_BYTES {
            return torn(format!(
                "entry of {body_length} bytes but only {} remain",
                remaining - ENTRY_HEADER_BYTES
            ));
        }
        body.resize(body_length as usize, 0);
        reader.read_exact(&mut body)?;
        if checksum(&body) != crc {
            return torn("entry checksum mismatch".into());
        }
        let batch = &body[ENTRY_PREFIX_BYTES as usize..];
        let header = match parse_stored_batch(batch) {
            Ok(header) => header,
            Err(e) => return torn(format!("entry holds an invalid batch: {e}")),
        };
        let topic_id = Uuid::from_slice(&body[..16]).expect("16 bytes");
        let partition = i32::from_be_bytes(body[16..20].try_into().expect("4 bytes"));
        let entry = ReplayedEntry {
            topic_id,
            partition,
            batch_position: position + ENTRY_HEADER_BYTES + ENTRY_PREFIX_BYTES,
            header,
            batch,
        };
        if let Err(reason) = visit(entry) {
            return torn(format!("entry refused: {reason}"));
        }
        position += ENTRY_HEADER_BYTES + body_length;
    }
}

fn parse_stored_batch(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_bytes() != batch.len() {
        return Err(BatchError::InvalidLength(header.batch_length));
    }
    // The broker assigned these offsets, from 0 and far below i64::MAX (`last + 1` is the next
    // offset everywhere downstream).
    if header.base_offset < 0 || header.last_offset() == i64::MAX {
        return Err(BatchError::OffsetRange(header.base_offset));
    }
    Ok(header)
}
