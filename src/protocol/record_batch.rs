//! A view of RecordBatch v2 headers (magic 2), read straight from the bytes a producer sent.
//! The produce path needs nothing more: it checks the CRC-32C, counts records from
//! `last_offset_delta`, and writes `base_offset` (bytes 0..8, outside the CRC). Records are never
//! decoded here; that belongs to the indexer.

use bytes::Bytes;

/// Bytes of a v2 batch header, up to the first record.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batch_length`'s count starts (`base_offset` and `batch_length` themselves).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Where the CRC-32C starts covering: `attributes`.
const CRC_START: usize = 21;
const MAGIC_AT: usize = 16;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: {0} bytes where at least {1} are needed")]
    Truncated(usize, usize),
    #[error("record batch length {0} is invalid")]
    InvalidLength(i32),
    #[error(
        "message format v{0} (magic {0}) is not supported; use a client that writes v2 batches"
    )]
    UnsupportedMagic(i8),
    #[error(
        "record batch CRC-32C mismatch: header says {expected:#010x}, bytes give {actual:#010x}"
    )]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch holds {count} records but last_offset_delta is {last_offset_delta}")]
    RecordCount { count: i32, last_offset_delta: i32 },
    #[error("record batch attributes {0:#06x} name an unknown compression codec")]
    UnknownCompression(i16),
    #[error("record batch offsets from {0} are outside the offsets a log can hold")]
    OffsetRange(i64),
}

/// The fixed-size header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Reads and checks the header at the start of `bytes`, which must hold the whole batch.
    /// Checks: complete, magic 2, a known codec, records count matching `last_offset_delta`,
    /// and the CRC-32C over `attributes..end`.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let header = Self::parse_unchecked(bytes)?;
        let total = header.total_bytes();
        if bytes.len() < total {
            return Err(BatchError::Truncated(bytes.len(), total));
        }
        let actual = crc32c::crc32c(&bytes[CRC_START..total]);
        if actual != header.crc {
            return Err(BatchError::CrcMismatch {
                expected: header.crc,
                actual,
            });
        }
        Ok(header)
    }

    /// Reads the header fields and checks what can be checked without the CRC.
    pub fn parse_unchecked(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < MAGIC_AT + 1 {
            return Err(BatchError::Truncated(bytes.len(), HEADER_BYTES));
        }
        let magic = bytes[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if bytes.len() < HEADER_BYTES {
            return Err(BatchError::Truncated(bytes.len(), HEADER_BYTES));
        }
        let header = BatchHeader {
            base_offset: i64_at(bytes, 0),
            batch_length: i32_at(bytes, 8),
            partition_leader_epoch: i32_at(bytes, 12),
            magic,
            crc: i32_at(bytes, 17) as u32,
            attributes: i16_at(bytes, 21),
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            records_count: i32_at(bytes, 57),
        };
        if (header.batch_length as i64) < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 {
            return Err(BatchError::InvalidLength(header.batch_length));
        }
        if header.attributes & COMPRESSION_MASK > 4 {
            return Err(BatchError::UnknownCompression(header.attributes));
        }
        if header.records_count <= 0
            || header.last_offset_delta < 0
            || header.last_offset_delta as i64 + 1 != header.records_count as i64
        {
            return Err(BatchError::RecordCount {
                count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        Ok(header)
    }

    /// Bytes of the whole batch, header included.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length as usize
    }

    /// `base_offset + last_offset_delta`. Saturating: a producer's `base_offset` can be any
    /// value (the broker ignores it and writes its own).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Records in the batch, as `last_offset_delta + 1` (no decompression needed).
    pub fn record_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// The sequence number of the last record, wrapping at `i32::MAX` as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        wrapping_sequence(self.base_sequence, self.last_offset_delta)
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Adds `delta` to a producer sequence number, wrapping past `i32::MAX` to 0 as Kafka does.
pub fn wrapping_sequence(sequence: i32, delta: i32) -> i32 {
    let next = i64::from(sequence) + i64::from(delta);
    if next > i64::from(i32::MAX) {
        (next - i64::from(i32::MAX) - 1) as i32
    } else {
        next as i32
    }
}

/// Writes `base_offset` into a batch (bytes 0..8, outside the CRC, so the CRC stays valid).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Splits a records field into its batches, checking each one. A produce request's records
/// field may hold several batches; every one of them is returned.
pub fn split_batches(records: &Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < LOG_OVERHEAD_BYTES {
            return Err(BatchError::Truncated(rest.len(), LOG_OVERHEAD_BYTES));
        }
        let header = BatchHeader::parse(rest)?;
        let end = at + header.total_bytes();
        batches.push((header, records.slice(at..end)));
        at = end;
    }
    Ok(batches)
}

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(eight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{Compression, Record};

    pub fn encoded_batch(count: i32, compression: Compression) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                producer_id: 42,
                producer_epoch: 1,
                sequence: 7 + i,
                ..tests_support::record(
                    i,
                    1_700_000_000_000 + i64::from(i),
                    Some(Bytes::from(format!("key-{i}"))),
                    Some(Bytes::from(vec![b'v'; 100])),
                )
            })
            .collect();
        Bytes::from(tests_support::encode(&records, compression))
    }

    #[test]
    fn header_fields_match_what_the_encoder_wrote() {
        let batch = encoded_batch(10, Compression::None);
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.total_bytes(), batch.len());
        assert_eq!(header.record_count(), 10);
        assert_eq!(header.producer_id, 42);
        assert_eq!(header.producer_epoch, 1);
        assert_eq!(header.base_sequence, 7);
        assert_eq!(header.last_sequence(), 16);
        assert_eq!(header.base_timestamp, 1_700_000_000_000);
        assert_eq!(header.max_timestamp, 1_700_000_000_009);
        assert!(!header.is_transactional());
    }

    #[test]
    fn compressed_batches_are_counted_without_decompressing() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encoded_batch(25, compression);
            let header = BatchHeader::parse(&batch).unwrap();
            assert_eq!(header.record_count(), 25, "{compression:?}");
            assert_eq!(header.compression(), compression as i16);
        }
    }

    #[test]
    fn base_offset_is_outside_the_crc() {
        let batch = encoded_batch(3, Compression::None);
        let mut copy = batch.to_vec();
        set_base_offset(&mut copy, 123_456);
        let header = BatchHeader::parse(&copy).unwrap();
        assert_eq!(header.base_offset, 123_456);
        assert_eq!(header.last_offset(), 123_458);
    }

    #[test]
    fn any_flipped_bit_after_the_crc_field_is_caught() {
        let batch = encoded_batch(3, Compression::None);
        for at in CRC_START..batch.len() {
            let mut copy = batch.to_vec();
            copy[at] ^= 0x01;
            assert!(
                BatchHeader::parse(&copy).is_err(),
                "flip at byte {at} went unnoticed"
            );
        }
    }

    #[test]
    fn truncated_and_old_formats_are_refused() {
        let batch = encoded_batch(3, Compression::None);
        for len in 0..batch.len() {
            assert!(
                BatchHeader::parse(&batch[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
        let mut old = batch.to_vec();
        old[MAGIC_AT] = 1;
        assert_eq!(
            BatchHeader::parse(&old),
            Err(BatchError::UnsupportedMagic(1))
        );
    }

    #[test]
    fn every_batch_of_a_records_field_is_split_out() {
        let mut blob = BytesMut::new();
        for count in [1, 5, 2] {
            blob.extend_from_slice(&encoded_batch(count, Compression::Lz4));
        }
        let batches = split_batches(&blob.freeze()).unwrap();
        let counts: Vec<i64> = batches.iter().map(|(h, _)| h.record_count()).collect();
        assert_eq!(counts, vec![1, 5, 2]);
    }

    #[test]
    fn a_producers_base_offset_never_overflows_the_last_offset() {
        let mut batch = encoded_batch(3, Compression::None).to_vec();
        set_base_offset(&mut batch, i64::MAX - 1);
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.last_offset(), i64::MAX);
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(wrapping_sequence(i32::MAX, 1), 0);
        assert_eq!(wrapping_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(wrapping_sequence(5, 0), 5);
    }
}

/// Record batches for tests, built with kafka-protocol's encoder (an independent
/// implementation of the format).
#[cfg(test)]
pub mod tests_support {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::*;

    /// A plain record at offset delta `i`. Sequences count up with `i`: the encoder starts a
    /// new batch whenever `offset - sequence` changes.
    pub fn record(i: i32, timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: i,
            timestamp,
            key,
            value,
            headers: Default::default(),
        }
    }

    /// One batch holding `records`.
    pub fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, records, &options).expect("encodes");
        let header = super::BatchHeader::parse(&buf).expect("a valid batch");
        assert_eq!(header.total_bytes(), buf.len(), "one batch");
        buf.to_vec()
    }

    /// A valid uncompressed batch of `count` small records at base offset 0.
    pub fn batch(count: i32) -> Vec<u8> {
        let records: Vec<Record> = (0..count)
            .map(|i| {
                record(
                    i,
                    1_000 + i64::from(i),
                    Some(Bytes::from(format!("k{i}"))),
                    Some(Bytes::from(vec![b'v'; 20])),
                )
            })
            .collect();
        encode(&records, Compression::None)
    }
}
