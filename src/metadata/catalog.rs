//! The catalog: which objects in the bucket hold which WAL segments' batches. One small file
//! per object in `<data-dir>/meta/catalog/`, written atomically and fsynced, so committing an
//! upload never rewrites the whole list. The indexer deletes a WAL segment only after its
//! entry here is durable.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{sync_dir, MetadataError};
use crate::faults::{self, Action, Faults, Point};
use crate::segment::object::{self, Footer};

const MAGIC: &[u8; 4] = b"SCAT";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The data directory that wrote the WAL segment (see `MetadataDoc::incarnation`).
    pub incarnation: String,
    pub wal_segment_id: u64,
    /// Object key, relative to the store's root.
    pub key: String,
    pub object_bytes: u64,
    pub footer: Footer,
}

pub struct Catalog {
    dir: PathBuf,
    /// This data directory's incarnation: `get` looks up its own WAL segments.
    incarnation: String,
    /// Injected failures of `commit` (tests).
    faults: Arc<Faults>,
}

impl Catalog {
    pub fn open(dir: &Path, incarnation: &str) -> Result<Catalog, MetadataError> {
        fs::create_dir_all(dir).map_err(|source| MetadataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Catalog {
            dir: dir.to_path_buf(),
            incarnation: incarnation.to_string(),
            faults: Faults::disabled(),
        })
    }

    /// The catalog with fault injection at `catalog.mid_write`.
    pub fn with_faults(self, faults: Arc<Faults>) -> Catalog {
        Catalog { faults, ..self }
    }

    fn path(&self, incarnation: &str, wal_segment_id: u64) -> PathBuf {
        self.dir
            .join(format!("{incarnation}-{wal_segment_id:020}.entry"))
    }

    /// Every entry, in no particular order. A damaged entry is an error: it would hide data.
    pub fn load(&self) -> Result<Vec<CatalogEntry>, MetadataError> {
        let io = |source| MetadataError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "entry"))
            .collect();
        names.sort();
        names.iter().map(|path| read_entry(path)).collect()
    }

    /// The entry of one of this data directory's WAL segments.
    pub fn get(&self, wal_segment_id: u64) -> Result<Option<CatalogEntry>, MetadataError> {
        let path = self.path(&self.incarnation, wal_segment_id);
        if !path.exists() {
            return Ok(None);
        }
        read_entry(&path).map(Some)
    }

    /// Forgets an entry whose object was deleted.
    pub fn remove(&self, entry: &CatalogEntry) -> Result<(), MetadataError> {
        let path = self.path(&entry.incarnation, entry.wal_segment_id);
        let io = |source| MetadataError::Io {
            path: path.clone(),
            source,
        };
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir).map_err(io),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// Makes an entry durable (temporary file, fsync, rename, fsync the directory).
    pub fn commit(&self, entry: &CatalogEntry) -> Result<(), MetadataError> {
        let path = self.path(&entry.incarnation, entry.wal_segment_id);
        let io = |source| MetadataError::Io {
            path: path.clone(),
            source,
        };
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        bytes.extend(
            bincode::serde::encode_to_vec(entry, object::codec()).expect("entry serializes"),
        );
        let temporary = path.with_extension("tmp");
        let mut file = File::create(&temporary).map_err(io)?;
        self.mid_write(&mut file, &bytes).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&temporary, &path).map_err(io)?;
        sync_dir(&self.dir).map_err(io)
    }
}

impl Catalog {
    /// The `catalog.mid_write` point: a crash leaves half of the temporary file behind (which
    /// no load reads, and the next commit of the entry overwrites); an error fails the commit.
    fn mid_write(&self, file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
        let Some(action) = self.faults.hit(Point::CatalogMidWrite) else {
            return Ok(());
        };
        if action == Action::Crash {
            let _ = file.write_all(&bytes[..bytes.len() / 2]);
            let _ = file.sync_all();
            faults::crash(Point::CatalogMidWrite);
        }
        self.faults.apply_blocking(Point::CatalogMidWrite, action)
    }
}

fn read_entry(path: &Path) -> Result<CatalogEntry, MetadataError> {
    let bytes = fs::read(path).map_err(|source| MetadataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: &str| MetadataError::CorruptCatalog {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    if bytes[4..8] != FORMAT_VERSION.to_be_bytes() {
        return Err(corrupt("unknown format version"));
    }
    let (entry, _): (CatalogEntry, usize) =
        bincode::serde::decode_from_slice(&bytes[8..], object::codec())
            .map_err(|e| corrupt(&e.to_string()))?;
    object::check_footer(&entry.footer, entry.object_bytes).map_err(|e| corrupt(&e.to_string()))?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_entries_load_in_order_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), "me").unwrap();
        for id in [3, 1, 2] {
            let entry = CatalogEntry {
                incarnation: "me".into(),
                wal_segment_id: id,
                key: format!("k{id}"),
                object_bytes: id * 10,
                footer: Footer {
                    partitions: vec![],
                    index_files: vec![],
                },
            };
            catalog.commit(&entry).unwrap();
        }
        let ids: Vec<u64> = catalog
            .load()
            .unwrap()
            .iter()
            .map(|e| e.wal_segment_id)
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(catalog.get(2).unwrap().unwrap().key, "k2");
        assert!(catalog.get(9).unwrap().is_none());
        std::fs::write(
            dir.path().join(format!("me-{:020}.entry", 2)),
            b"SCAT\0\0\0\x01garbage",
        )
        .unwrap();
        assert!(catalog.load().is_err());
    }
}
