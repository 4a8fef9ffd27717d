//! Record-batch compression codecs, as Kafka frames them: gzip, snappy (xerial framing as the
//! Java client writes it, or raw blocks), LZ4 frames and zstd. Decompression is bounded: a batch
//! whose records would expand past a limit is refused instead of filling memory.

use std::io::{Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("compression codec {0} is unknown")]
    Unknown(i16),
    #[error("records expand past {0} bytes")]
    TooLarge(usize),
    #[error("corrupt {codec} data: {reason}")]
    Corrupt { codec: &'static str, reason: String },
}

pub const NONE: i16 = 0;
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// The header the Java client's snappy-java stream writes (xerial framing).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// Decompresses a records section, refusing to produce more than `limit` bytes.
pub fn decompress(codec: i16, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        NONE => bounded_copy(data, limit),
        GZIP => read_bounded("gzip", flate2::read::GzDecoder::new(data), limit),
        SNAPPY => snappy_decompress(data, limit),
        LZ4 => {
            let decoder = lz4::Decoder::new(data).map_err(|e| corrupt("lz4", e))?;
            read_bounded("lz4", decoder, limit)
        }
        ZSTD => {
            let decoder = zstd::stream::read::Decoder::new(data).map_err(|e| corrupt("zstd", e))?;
            read_bounded("zstd", decoder, limit)
        }
        other => Err(CodecError::Unknown(other)),
    }
}

/// Compresses a records section with `codec`, framed as Kafka clients expect it.
pub fn compress(codec: i16, data: &[u8]) -> Result<Vec<u8>, CodecError> {
    match codec {
        NONE => Ok(data.to_vec()),
        GZIP => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).map_err(|e| corrupt("gzip", e))?;
            encoder.finish().map_err(|e| corrupt("gzip", e))
        }
        SNAPPY => snappy_compress(data),
        LZ4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .build(Vec::new())
                .map_err(|e| corrupt("lz4", e))?;
            encoder.write_all(data).map_err(|e| corrupt("lz4", e))?;
            let (out, result) = encoder.finish();
            result.map_err(|e| corrupt("lz4", e))?;
            Ok(out)
        }
        ZSTD => zstd::bulk::compress(data, 3).map_err(|e| corrupt("zstd", e)),
        other => Err(CodecError::Unknown(other)),
    }
}

fn corrupt(codec: &'static str, error: impl std::fmt::Display) -> CodecError {
    CodecError::Corrupt {
        codec,
        reason: error.to_string(),
    }
}

fn bounded_copy(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    if data.len() > limit {
        return Err(CodecError::TooLarge(limit));
    }
    Ok(data.to_vec())
}

fn read_bounded(
    codec: &'static str,
    reader: impl Read,
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(CodecError::TooLarge(limit));
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    if !data.starts_with(XERIAL_MAGIC) {
        return snappy_block(data, limit);
    }
    let mut rest = data
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| corrupt("snappy", "xerial header truncated"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_at_checked(4)
            .ok_or_else(|| corrupt("snappy", "block length truncated"))?;
        let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
        let (block, tail) = tail
            .split_at_checked(length)
            .ok_or_else(|| corrupt("snappy", "block truncated"))?;
        out.extend_from_slice(&snappy_block(block, limit - out.len())?);
        rest = tail;
    }
    Ok(out)
}

fn snappy_block(block: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let length = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
    if length > limit {
        return Err(CodecError::TooLarge(limit));
    }
    snap::raw::Decoder::new()
        .decompress_vec(block)
        .map_err(|e| corrupt("snappy", e))
}

fn snappy_compress(data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + data.len() / 2);
    out.extend_from_slice(XERIAL_MAGIC);
    // xerial stream version 1, minimum compatible version 1.
    out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    let mut encoder = snap::raw::Encoder::new();
    for chunk in data.chunks(XERIAL_BLOCK_BYTES) {
        let block = encoder
            .compress_vec(chunk)
            .map_err(|e| corrupt("snappy", e))?;
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let compressed = compress(codec, &data).unwrap();
            assert_eq!(
                decompress(codec, &compressed, data.len()).unwrap(),
                data,
                "codec {codec}"
            );
        }
    }

    #[test]
    fn a_compression_bomb_is_refused() {
        let zeros = vec![0u8; 10_000_000];
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            let compressed = compress(codec, &zeros).unwrap();
            assert!(compressed.len() < 1_000_000);
            assert!(
                matches!(
                    decompress(codec, &compressed, 1_000_000),
                    Err(CodecError::TooLarge(_))
                ),
                "codec {codec}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            assert!(
                decompress(codec, b"\x82SNAPPY\x00garbage-garbage-garbage", 1 << 20).is_err(),
                "codec {codec}"
            );
            assert!(
                decompress(codec, &[0xff; 64], 1 << 20).is_err(),
                "codec {codec}"
            );
        }
        assert!(matches!(
            decompress(9, b"", 10),
            Err(CodecError::Unknown(9))
        ));
    }

    #[test]
    fn raw_snappy_without_xerial_framing_is_read() {
        let block = snap::raw::Encoder::new()
            .compress_vec(b"hello raw snappy")
            .unwrap();
        assert_eq!(
            decompress(SNAPPY, &block, 100).unwrap(),
            b"hello raw snappy"
        );
    }
}
