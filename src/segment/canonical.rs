//! `CanonicalBatch` and `CanonicalRecord`: a record batch as the produce path formed it, decoded
//! without loss (every header, duplicates and non-UTF-8 keys included), in a form serde and
//! bincode can store. The indexer builds them from WAL batches; the reader turns them back into
//! batches with valid CRCs, so a consumer gets the records that were produced.
//!
//! Kafka's v2 record layout, inside the (possibly compressed) records section:
//! `length varint | attributes i8 | timestamp_delta varlong | offset_delta varint |
//!  key_length varint | key | value_length varint | value | header_count varint | headers`,
//! each header `key_length varint | key | value_length varint | value` (-1 length = null).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use crate::limits;
use crate::protocol::record_batch::{BatchError, BatchHeader, HEADER_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("record {index} of the batch at offset {base_offset}: {reason}")]
    Record {
        base_offset: i64,
        index: usize,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeader {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalRecord {
    pub attributes: i8,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// A batch's header fields and its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalBatch {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<CanonicalRecord>,
}

impl CanonicalBatch {
    /// Decodes one whole v2 batch (CRC checked, records decompressed within a bound).
    pub fn from_batch(batch: &[u8]) -> Result<CanonicalBatch, CanonicalError> {
        let header = BatchHeader::parse(batch)?;
        let section = &batch[HEADER_BYTES..header.total_bytes()];
        let data = codec::decompress(
            header.compression(),
            section,
            limits::DECOMPRESSED_BATCH_BYTES_MAX,
        )?;
        let records = decode_records(&header, &data)?;
        Ok(CanonicalBatch {
            base_offset: header.base_offset,
            partition_leader_epoch: header.partition_leader_epoch,
            attributes: header.attributes,
            last_offset_delta: header.last_offset_delta,
            base_timestamp: header.base_timestamp,
            max_timestamp: header.max_timestamp,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            records,
        })
    }

    /// Encodes the batch again: the same header fields and records, compressed with the same
    /// codec, with a freshly computed CRC-32C.
    pub fn to_batch(&self) -> Result<Bytes, CanonicalError> {
        let mut plain = Vec::new();
        for record in &self.records {
            encode_record(self, record, &mut plain);
        }
        let compressed = codec::compress(self.attributes & 0x07, &plain)?;
        let mut batch = BytesMut::with_capacity(HEADER_BYTES + compressed.len());
        batch.put_i64(self.base_offset);
        batch.put_i32((HEADER_BYTES - 12 + compressed.len()) as i32);
        batch.put_i32(self.partition_leader_epoch);
        batch.put_i8(2);
        batch.put_u32(0);
        batch.put_i16(self.attributes);
        batch.put_i32(self.last_offset_delta);
        batch.put_i64(self.base_timestamp);
        batch.put_i64(self.max_timestamp);
        batch.put_i64(self.producer_id);
        batch.put_i16(self.producer_epoch);
        batch.put_i32(self.base_sequence);
        batch.put_i32(self.records.len() as i32);
        batch.put_slice(&compressed);
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(batch.freeze())
    }
}

fn decode_records(
    header: &BatchHeader,
    data: &[u8],
) -> Result<Vec<CanonicalRecord>, CanonicalError> {
    let mut input = data;
    // Every record takes at least 7 bytes, so the count cannot ask for more than the data holds.
    let count = (header.records_count.max(0) as usize).min(data.len() / 7 + 1);
    let mut records = Vec::with_capacity(count);
    for index in 0..header.records_count.max(0) as usize {
        let fail = |reason| CanonicalError::Record {
            base_offset: header.base_offset,
            index,
            reason,
        };
        let length = read_length(&mut input)
            .ok_or(fail("bad record length"))?
            .ok_or(fail("null record"))?;
        let (mut body, rest) = input
            .split_at_checked(length)
            .ok_or(fail("record runs past the batch"))?;
        input = rest;
        let record = decode_record(header, &mut body).ok_or(fail("malformed record"))?;
        if !body.is_empty() {
            return Err(fail("bytes left over after the record"));
        }
        records.push(record);
    }
    if !input.is_empty() {
        return Err(CanonicalError::Record {
            base_offset: header.base_offset,
            index: records.len(),
            reason: "bytes left over after the last record",
        });
    }
    Ok(records)
}

fn decode_record(header: &BatchHeader, body: &mut &[u8]) -> Option<CanonicalRecord> {
    let (&attributes, rest) = body.split_first()?;
    *body = rest;
    let timestamp_delta = read_varint(body)?;
    let offset_delta = i32::try_from(read_varint(body)?).ok()?;
    let key = read_bytes(body)?;
    let value = read_bytes(body)?;
    let header_count = usize::try_from(read_varint(body)?).ok()?;
    let mut headers = Vec::with_capacity(header_count.min(body.len() / 2 + 1));
    for _ in 0..header_count {
        let key = read_bytes(body)??;
        let value = read_bytes(body)?;
        headers.push(RecordHeader { key, value });
    }
    Some(CanonicalRecord {
        attributes: attributes as i8,
        offset: header.base_offset.checked_add(i64::from(offset_delta))?,
        timestamp: header.base_timestamp.checked_add(timestamp_delta)?,
        key,
        value,
        headers,
    })
}

fn encode_record(batch: &CanonicalBatch, record: &CanonicalRecord, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(32);
    body.push(record.attributes as u8);
    write_varint(&mut body, record.timestamp - batch.base_timestamp);
    write_varint(&mut body, record.offset - batch.base_offset);
    write_bytes(&mut body, record.key.as_deref());
    write_bytes(&mut body, record.value.as_deref());
    write_varint(&mut body, record.headers.len() as i64);
    for header in &record.headers {
        write_bytes(&mut body, Some(&header.key));
        write_bytes(&mut body, header.value.as_deref());
    }
    write_varint(out, body.len() as i64);
    out.extend_from_slice(&body);
}

/// A zigzag varint, as Kafka's records use them (at most 10 bytes).
fn read_varint(input: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// A varint length: `Some(None)` for -1 (null), `None` for anything invalid.
fn read_length(input: &mut &[u8]) -> Option<Option<usize>> {
    match read_varint(input)? {
        -1 => Some(None),
        n if n >= 0 && (n as u64) <= input.len() as u64 => Some(Some(n as usize)),
        _ => None,
    }
}

/// Length-prefixed bytes: `Some(None)` for null.
fn read_bytes(input: &mut &[u8]) -> Option<Option<Bytes>> {
    let Some(length) = read_length(input)? else {
        return Some(None);
    };
    let (bytes, rest) = input.split_at(length);
    *input = rest;
    Some(Some(Bytes::copy_from_slice(bytes)))
}

fn write_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varint(out, -1),
        Some(bytes) => {
            write_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };
    use proptest::prelude::*;

    fn compression(codec: i16) -> Compression {
        match codec {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        }
    }

    type Generated = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
        i64,
    );

    fn records() -> impl Strategy<Value = Vec<Generated>> {
        let bytes = prop::option::of(prop::collection::vec(any::<u8>(), 0..64));
        let headers = prop::collection::vec(
            (
                "[a-z]{1,4}",
                prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            ),
            0..4,
        );
        prop::collection::vec((bytes.clone(), bytes, headers, 0..1_000_000i64), 1..40)
    }

    /// The crate's encoder builds the batch (an independent implementation of the format).
    fn crate_batch(generated: &[Generated], codec: i16, base_offset: i64) -> Bytes {
        let records: Vec<Record> = generated
            .iter()
            .enumerate()
            .map(|(i, (key, value, headers, ts))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 17,
                producer_epoch: 2,
                timestamp_type: TimestampType::Creation,
                offset: base_offset + i as i64,
                sequence: 100 + i as i32,
                timestamp: 1_700_000_000_000 + ts,
                key: key.clone().map(Bytes::from),
                value: value.clone().map(Bytes::from),
                headers: headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: compression(codec),
            },
        )
        .unwrap();
        buf.freeze()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any batch -> CanonicalBatch holds exactly the records the crate's decoder sees, and
        /// CanonicalBatch -> batch is a valid batch whose records are the same again.
        #[test]
        fn batch_to_canonical_and_back(generated in records(), codec in 0i16..5, base_offset in 0i64..1_000_000_000) {
            let batch = crate_batch(&generated, codec, base_offset);
            let canonical = CanonicalBatch::from_batch(&batch).unwrap();
            let expected = RecordBatchDecoder::decode(&mut batch.clone()).unwrap().records;
            prop_assert_eq!(canonical.records.len(), expected.len());
            for (ours, theirs) in canonical.records.iter().zip(&expected) {
                prop_assert_eq!(ours.offset, theirs.offset);
                prop_assert_eq!(ours.timestamp, theirs.timestamp);
                prop_assert_eq!(&ours.key, &theirs.key);
                prop_assert_eq!(&ours.value, &theirs.value);
                let headers: Vec<(Bytes, Option<Bytes>)> = theirs.headers.iter().map(|(k, v)| (k.clone().into_bytes(), v.clone())).collect();
                let ours_headers: Vec<(Bytes, Option<Bytes>)> = ours.headers.iter().map(|h| (h.key.clone(), h.value.clone())).collect();
                prop_assert_eq!(ours_headers, headers);
            }
            prop_assert_eq!(canonical.producer_id, 17);
            prop_assert_eq!(canonical.base_sequence, 100);

            let again = canonical.to_batch().unwrap();
            let header = BatchHeader::parse(&again).unwrap();
            prop_assert_eq!(header.total_bytes(), again.len());
            prop_assert_eq!(header.compression(), codec);
            prop_assert_eq!(CanonicalBatch::from_batch(&again).unwrap(), canonical.clone());
            let stored = bincode::serde::encode_to_vec(&canonical, bincode::config::standard()).unwrap();
            let (back, _): (CanonicalBatch, usize) = bincode::serde::decode_from_slice(&stored, bincode::config::standard()).unwrap();
            prop_assert_eq!(back, canonical);
        }
    }

    #[test]
    fn duplicate_and_non_utf8_header_keys_survive() {
        let batch = crate_batch(
            &[(Some(b"k".to_vec()), Some(b"v".to_vec()), vec![], 0)],
            0,
            5,
        );
        let mut canonical = CanonicalBatch::from_batch(&batch).unwrap();
        canonical.records[0].headers = vec![
            RecordHeader {
                key: Bytes::from_static(b"trace"),
                value: Some(Bytes::from_static(b"a")),
            },
            RecordHeader {
                key: Bytes::from_static(b"trace"),
                value: Some(Bytes::from_static(b"b")),
            },
            RecordHeader {
                key: Bytes::from_static(b"\xff\xfe"),
                value: None,
            },
        ];
        let again = CanonicalBatch::from_batch(&canonical.to_batch().unwrap()).unwrap();
        assert_eq!(again, canonical);
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let batch = crate_batch(
            &[(Some(b"key".to_vec()), Some(b"value".to_vec()), vec![], 0)],
            0,
            0,
        );
        for cut in HEADER_BYTES..batch.len() {
            // Shorten the records section but keep the header consistent, CRC included.
            let mut bytes = batch[..cut].to_vec();
            bytes[8..12].copy_from_slice(&((cut - 12) as i32).to_be_bytes());
            let crc = crc32c::crc32c(&bytes[21..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(CanonicalBatch::from_batch(&bytes).is_err(), "cut at {cut}");
        }
    }
}
