//! The metadata snapshot in the bucket, and restoring a broker that lost its disk.
//!
//! The broker uploads its metadata document (cluster id, topics, configs, producer-id
//! reservation) at start-up, within `METADATA_SNAPSHOT_MS` of every change, and at shutdown;
//! the committed consumer offsets go beside it (`offsets.json`) on the same schedule.
//! A broker started on an empty data directory against a bucket that holds a snapshot takes
//! the topics from it and rebuilds its catalog from the objects themselves (each footer says
//! which partitions and offsets it holds), so it serves every uploaded record again.

use std::path::Path;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::catalog::{Catalog, CatalogEntry};
use super::{Metadata, MetadataDoc, MetadataError};
use crate::groups::offsets;
use crate::limits;
use crate::segment::object;

pub const SNAPSHOT_KEY: &str = "v2/metadata/snapshot.json";
/// Committed consumer offsets, uploaded beside the metadata document.
pub const OFFSETS_KEY: &str = "v2/metadata/offsets.json";
const SEGMENTS_PREFIX: &str = "v2/segments";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("the metadata snapshot in the bucket is unreadable: {0}")]
    Corrupt(serde_json::Error),
    #[error("object {key} is not a readable segment: {source}")]
    Object {
        key: String,
        source: object::ObjectError,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Offsets(#[from] crate::groups::offsets::OffsetsError),
}

/// Uploads the metadata document.
pub async fn upload(store: &dyn ObjectStore, doc: &MetadataDoc) -> Result<(), SnapshotError> {
    let bytes = serde_json::to_vec_pretty(doc).expect("metadata serializes");
    store
        .put(&ObjectPath::from(SNAPSHOT_KEY), PutPayload::from(bytes))
        .await?;
    Ok(())
}

/// Uploads the committed offsets (`OffsetStore::snapshot`).
pub async fn upload_offsets(
    store: &dyn ObjectStore,
    snapshot: Vec<u8>,
) -> Result<(), SnapshotError> {
    store
        .put(&ObjectPath::from(OFFSETS_KEY), PutPayload::from(snapshot))
        .await?;
    Ok(())
}

/// What a restore brought back.
#[derive(Debug)]
pub struct Restored {
    pub topics: usize,
    pub objects: usize,
}

/// Restores `meta_dir` from the bucket if `meta_dir` holds no metadata and the bucket holds a
/// snapshot. The catalog is written first and the metadata file last, so an interrupted
/// restore runs again on the next start.
pub async fn restore_if_empty(
    meta_dir: &Path,
    store: &dyn ObjectStore,
) -> Result<Option<Restored>, SnapshotError> {
    if Metadata::exists(meta_dir) {
        return Ok(None);
    }
    let bytes = match store.get(&ObjectPath::from(SNAPSHOT_KEY)).await {
        Ok(found) => found.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let mut doc: MetadataDoc = serde_json::from_slice(&bytes).map_err(SnapshotError::Corrupt)?;
    // A new data directory: its own incarnation, and producer ids past anything the lost
    // broker could have handed out.
    doc.incarnation = super::new_incarnation();
    doc.producer_id_reserved_until += limits::PRODUCER_ID_RESTORE_MARGIN;
    let catalog = Catalog::open(&meta_dir.join("catalog"), &doc.incarnation)?;
    let objects = rebuild_catalog(store, &catalog).await?;
    match store.get(&ObjectPath::from(OFFSETS_KEY)).await {
        Ok(found) => offsets::restore(meta_dir, &found.bytes().await?)?,
        Err(object_store::Error::NotFound { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    Metadata::create(meta_dir, &doc)?;
    Ok(Some(Restored {
        topics: doc.topics.len(),
        objects,
    }))
}

/// One catalog entry per segment object in the bucket, from each object's footer.
async fn rebuild_catalog(
    store: &dyn ObjectStore,
    catalog: &Catalog,
) -> Result<usize, SnapshotError> {
    let listed: Vec<_> = store
        .list(Some(&ObjectPath::from(SEGMENTS_PREFIX)))
        .try_collect()
        .await?;
    for meta in &listed {
        let key = meta.location.to_string();
        let footer = read_footer(store, &meta.location, meta.size).await?;
        let (incarnation, wal_segment_id) =
            parse_key(&key).ok_or_else(|| SnapshotError::Object {
                key: key.clone(),
                source: object::ObjectError::NotASegment("unexpected key"),
            })?;
        catalog.commit(&CatalogEntry {
            incarnation,
            wal_segment_id,
            key,
            object_bytes: meta.size,
            footer,
        })?;
    }
    Ok(listed.len())
}

/// Reads an object's footer with one ranged GET of its tail (two if the footer is larger).
pub async fn read_footer(
    store: &dyn ObjectStore,
    key: &ObjectPath,
    size: u64,
) -> Result<object::Footer, SnapshotError> {
    let fail = |source| SnapshotError::Object {
        key: key.to_string(),
        source,
    };
    let tail_bytes = (limits::SEGMENT_TAIL_READ_BYTES as u64).min(size);
    let mut tail: Bytes = store.get_range(key, size - tail_bytes..size).await?;
    let needed = (object::footer_length(&tail).map_err(fail)? + object::TRAILER_BYTES) as u64;
    if needed > tail.len() as u64 {
        let start = size
            .checked_sub(needed)
            .ok_or(fail(object::ObjectError::NotASegment(
                "footer larger than the object",
            )))?;
        tail = store.get_range(key, start..size).await?;
    }
    object::parse_footer(&tail, size).map_err(fail)
}

/// `v2/segments/<incarnation>/<wal segment id>.seg` -> its parts.
fn parse_key(key: &str) -> Option<(String, u64)> {
    let rest = key.strip_prefix("v2/segments/")?;
    let (incarnation, file) = rest.split_once('/')?;
    let id = file.strip_suffix(".seg")?.parse().ok()?;
    Some((incarnation.to_string(), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_parse() {
        assert_eq!(
            parse_key("v2/segments/abc/00000000000000000042.seg"),
            Some(("abc".into(), 42))
        );
        assert_eq!(parse_key("v2/segments/abc/x.seg"), None);
        assert_eq!(parse_key("v2/metadata/snapshot.json"), None);
    }
}
