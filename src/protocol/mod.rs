//! The Kafka wire, without I/O policy: length-prefixed frames, request headers and bodies decoded
//! and responses encoded by `kafka-protocol` (which decides every flexible-version threshold), and
//! a zero-copy view of RecordBatch headers. Every length read from the wire is checked against a
//! bound from `limits` before anything is allocated for it.

pub mod record_batch;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::types::with_element_budget;
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::limits;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection closed in the middle of a frame")]
    TruncatedFrame,
    #[error("frame of {0} bytes is outside 4..={1}")]
    FrameSize(i64, usize),
    #[error("frame too short for a request header")]
    ShortHeader,
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("cannot decode {api:?} v{version}: {source:#}")]
    Decode {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
    #[error("cannot encode {api:?} v{version}: {source}")]
    Encode {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one length-prefixed frame. `Ok(None)` means the peer closed the connection cleanly
/// between frames (a read of 0 bytes is a departure, never a retry).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_bytes_max: usize,
) -> Result<Option<Bytes>, ProtocolError> {
    let Some(size) = read_frame_size(reader, frame_bytes_max).await? else {
        return Ok(None);
    };
    read_frame_body(reader, size).await.map(Some)
}

/// Reads a frame's length prefix and checks it against `4..=frame_bytes_max`. `Ok(None)` means
/// the peer closed the connection cleanly before the first byte.
pub async fn read_frame_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_bytes_max: usize,
) -> Result<Option<usize>, ProtocolError> {
    let mut prefix = [0u8; 4];
    let first = reader.read(&mut prefix).await?;
    if first == 0 {
        return Ok(None);
    }
    if first < 4 {
        reader
            .read_exact(&mut prefix[first..])
            .await
            .map_err(|_| ProtocolError::TruncatedFrame)?;
    }
    let size = i32::from_be_bytes(prefix);
    if size < 4 || size as usize > frame_bytes_max {
        return Err(ProtocolError::FrameSize(i64::from(size), frame_bytes_max));
    }
    Ok(Some(size as usize))
}

/// Reads the `size` bytes of a frame body (a size `read_frame_size` checked). The buffer grows
/// with the bytes that arrive, never ahead of them: a peer that claims 100 MiB and then sends
/// ten bytes holds `FRAME_READ_CHUNK_BYTES`, not 100 MiB. It doubles as it fills (so the
/// copies stay linear) and never grows past `size`.
pub async fn read_frame_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> Result<Bytes, ProtocolError> {
    let mut frame: Vec<u8> = Vec::new();
    while frame.len() < size {
        if frame.len() == frame.capacity() {
            let target = size.min((frame.len() * 2).max(limits::FRAME_READ_CHUNK_BYTES));
            frame.reserve_exact(target - frame.len());
        }
        let missing = (size - frame.len()) as u64;
        let read = (&mut *reader).take(missing).read_buf(&mut frame).await?;
        if read == 0 {
            return Err(ProtocolError::TruncatedFrame);
        }
    }
    Ok(Bytes::from(frame))
}

/// The api key and version of a request frame, read without decoding anything else, so the
/// server can check them against its dispatch table first.
pub fn peek_api(frame: &[u8]) -> Result<(i16, i16), ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::ShortHeader);
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    Ok((api_key, version))
}

/// The correlation id of a request frame (bytes 4..8 in every header version).
pub fn peek_correlation_id(frame: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = frame.get(4..8)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

/// Decodes the header and body of a request whose api key and version the caller checked.
pub fn decode_request(
    api: ApiKey,
    version: i16,
    mut frame: Bytes,
) -> Result<(RequestHeader, RequestKind), ProtocolError> {
    let decode_error = |source| ProtocolError::Decode {
        api,
        version,
        source,
    };
    // The budget bounds what the decoded arrays take in memory, whatever the frame holds.
    with_element_budget(limits::DECODED_ARRAYS_BYTES_MAX, || {
        let header = RequestHeader::decode(&mut frame, api.request_header_version(version))?;
        let body = RequestKind::decode(api, &mut frame, version)?;
        Ok((header, body))
    })
    .map_err(decode_error)
}

/// Encodes a response frame: length prefix, the response header of the api's version, the body.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, ProtocolError> {
    let encode_error = |source| ProtocolError::Encode {
        api,
        version,
        source,
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    // A fetch response can be tens of MiB: sized up front, it is written once rather than
    // copied through a chain of reallocations.
    let body_bytes = match body {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(0),
        _ => 0,
    };
    let mut frame = BytesMut::with_capacity(64 + body_bytes);
    frame.put_i32(0);
    header
        .encode(&mut frame, header_version)
        .map_err(encode_error)?;
    body.encode(&mut frame, version).map_err(encode_error)?;
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame.freeze())
}

/// Encodes a request frame (for tests and the benchmark client).
pub fn encode_request(header: &RequestHeader, body: &RequestKind) -> anyhow::Result<Bytes> {
    let api =
        ApiKey::try_from(header.request_api_key).map_err(|_| anyhow::anyhow!("unknown api key"))?;
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header.encode(
        &mut frame,
        api.request_header_version(header.request_api_version),
    )?;
    body.encode(&mut frame, header.request_api_version)?;
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame.freeze())
}

/// Decodes a response frame body (without its length prefix) for tests and the benchmark client.
pub fn decode_response(
    api: ApiKey,
    version: i16,
    mut frame: Bytes,
) -> anyhow::Result<(i32, ResponseKind)> {
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))?;
    let body = ResponseKind::decode(api, &mut frame, version)?;
    if frame.has_remaining() {
        anyhow::bail!(
            "{} bytes left after the {api:?} response",
            frame.remaining()
        );
    }
    Ok((header.correlation_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    /// Metadata v1 listing `names` topics, each named `name`.
    fn metadata_frame(names: usize, name: &str) -> Bytes {
        let topic = MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))));
        let request = MetadataRequest::default().with_topics(Some(vec![topic; names]));
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(1);
        encode_request(&header, &RequestKind::Metadata(request))
            .expect("encodes")
            .slice(4..)
    }

    #[test]
    fn a_frame_of_tiny_elements_cannot_decode_into_gigabytes() {
        // 1M empty names: 2 MiB on the wire, 72 MiB decoded (past the 64 MiB budget).
        let frame = metadata_frame(1 << 20, "");
        let error = decode_request(ApiKey::Metadata, 1, frame).unwrap_err();
        assert!(error.to_string().contains("budget"), "{error}");
        // Real names: 10,000 topics of 40 characters decode.
        let (_, body) =
            decode_request(ApiKey::Metadata, 1, metadata_frame(10_000, &"t".repeat(40)))
                .expect("a large real request decodes");
        let RequestKind::Metadata(request) = body else {
            panic!("not a metadata request");
        };
        assert_eq!(request.topics.map(|t| t.len()), Some(10_000));
    }

    #[tokio::test]
    async fn a_frame_body_is_allocated_as_it_arrives_not_as_claimed() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let claimed = 50 * 1024 * 1024;
        tokio::io::AsyncWriteExt::write_all(&mut client, &[1; 10])
            .await
            .unwrap();
        drop(client);
        let read = read_frame_body(&mut server, claimed).await;
        assert!(matches!(read, Err(ProtocolError::TruncatedFrame)));
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let writer = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut client, &body)
                .await
                .map(|_| body)
        });
        let frame = read_frame_body(&mut server, 200_000).await.unwrap();
        assert_eq!(frame, writer.await.unwrap().unwrap());
    }
}
