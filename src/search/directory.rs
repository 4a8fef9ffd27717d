//! A read-only Tantivy `Directory` over the index files packed into a segment object. Each
//! file is a byte range of the object (the footer's `index_files`); reads go through the
//! Reader's caches in fixed chunks, so opening and searching an index costs a few ranged GETs
//! the first time and none after, never a whole-object download.
//!
//! Tantivy reads synchronously: every call here blocks on the async Reader, so an index opened
//! over this directory must only be used from blocking threads (`spawn_blocking`).

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    DirectoryLock, FileHandle, Lock, OwnedBytes, WatchCallback, WatchHandle, WritePtr,
};
use tantivy::{Directory, HasLen};
use tokio::runtime::Handle;

use crate::limits;
use crate::reader::Reader;
use crate::segment::object::IndexFile;

/// The index files of one object.
#[derive(Clone)]
pub struct ObjectDirectory {
    inner: Arc<Inner>,
}

struct Inner {
    object: ObjectPath,
    files: HashMap<PathBuf, Range<u64>>,
    /// Where the index files begin and end in the object: chunks are aligned to the start.
    region: Range<u64>,
    reader: Arc<Reader>,
    runtime: Handle,
}

impl std::fmt::Debug for ObjectDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectDirectory({})", self.inner.object)
    }
}

impl ObjectDirectory {
    /// A directory over `files` of `object`. Call from inside the runtime (it keeps a handle).
    pub fn new(object: ObjectPath, files: &[IndexFile], reader: Arc<Reader>) -> ObjectDirectory {
        let start = files.iter().map(|f| f.start).min().unwrap_or(0);
        let end = files.iter().map(|f| f.end).max().unwrap_or(0);
        ObjectDirectory {
            inner: Arc::new(Inner {
                object,
                files: files
                    .iter()
                    .map(|f| (PathBuf::from(&f.name), f.start..f.end))
                    .collect(),
                region: start..end,
                reader,
                runtime: Handle::current(),
            }),
        }
    }

    fn file(&self, path: &Path) -> Result<Range<u64>, OpenReadError> {
        self.inner
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| OpenReadError::FileDoesNotExist(path.to_path_buf()))
    }
}

impl Inner {
    /// Bytes `range` of the object (inside the index region), chunk by chunk.
    fn read(&self, range: Range<u64>) -> io::Result<Vec<u8>> {
        let chunk = limits::SEARCH_INDEX_CHUNK_BYTES;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut at = range.start;
        while at < range.end {
            let chunk_start = self.region.start + (at - self.region.start) / chunk * chunk;
            let chunk_end = (chunk_start + chunk).min(self.region.end);
            let bytes = self
                .runtime
                .block_on(self.reader.read_range(&self.object, chunk_start..chunk_end))
                .map_err(io::Error::other)?;
            let from = (at - chunk_start) as usize;
            let to = (range.end.min(chunk_end) - chunk_start) as usize;
            if to > bytes.len() || from > to {
                return Err(io::Error::other(format!(
                    "index chunk {chunk_start} of {} is short",
                    self.object
                )));
            }
            out.extend_from_slice(&bytes[from..to]);
            at = chunk_start + to as u64;
        }
        Ok(out)
    }
}

/// One index file: a range of the object.
#[derive(Debug)]
struct ObjectFile {
    directory: ObjectDirectory,
    range: Range<u64>,
}

impl HasLen for ObjectFile {
    fn len(&self) -> usize {
        (self.range.end - self.range.start) as usize
    }
}

impl FileHandle for ObjectFile {
    fn read_bytes(&self, range: Range<usize>) -> io::Result<OwnedBytes> {
        if range.start > range.end || range.end > self.len() {
            return Err(io::Error::other("read past the end of an index file"));
        }
        let start = self.range.start + range.start as u64;
        let end = self.range.start + range.end as u64;
        Ok(OwnedBytes::new(self.directory.inner.read(start..end)?))
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "a segment object's index is read-only",
    )
}

impl Directory for ObjectDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        Ok(Arc::new(ObjectFile {
            directory: self.clone(),
            range: self.file(path)?,
        }))
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        Err(DeleteError::IoError {
            io_error: Arc::new(read_only()),
            filepath: path.to_path_buf(),
        })
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        Ok(self.inner.files.contains_key(path))
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        Err(OpenWriteError::wrap_io_error(
            read_only(),
            path.to_path_buf(),
        ))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        let range = self.file(path)?;
        self.inner
            .read(range)
            .map_err(|e| OpenReadError::wrap_io_error(e, path.to_path_buf()))
    }

    fn atomic_write(&self, _path: &Path, _data: &[u8]) -> io::Result<()> {
        Err(read_only())
    }

    fn acquire_lock(&self, _lock: &Lock) -> Result<DirectoryLock, LockError> {
        // Nothing here is ever written: readers need no lock against a writer.
        Ok(DirectoryLock::from(Box::new(())))
    }

    fn sync_directory(&self) -> io::Result<()> {
        Ok(())
    }

    fn watch(&self, _callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        // Objects never change: nothing to watch.
        Ok(WatchHandle::empty())
    }
}
