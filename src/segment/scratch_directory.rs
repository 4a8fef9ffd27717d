//! The hot index's Tantivy `Directory`: Tantivy's own `MmapDirectory`, minus every fsync.
//!
//! The hot index is scratch: it is emptied at start-up and rebuilt from the WAL, and the
//! indexer reads its files back through the page cache before packing them into an object
//! (which is made durable there). Tantivy's directory fsyncs each file it writes, `meta.json`
//! and the folder at every commit (once per `--search-refresh-ms`, per WAL segment): disk
//! bandwidth taken from the WAL on a disk that binds, and journal commits that the WAL's own
//! fsyncs queue behind. Here the kernel writes the files out when it likes, or never.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, DirectoryLock, FileHandle, Lock, MmapDirectory, TerminatingWrite, WatchCallback,
    WatchHandle, WritePtr,
};
use tantivy::Directory;

/// A folder of index files that are never fsynced.
#[derive(Clone, Debug)]
pub struct ScratchDirectory {
    root: PathBuf,
    /// Reads, locks and `meta.json` watches: Tantivy's memory-mapped directory as it is.
    inner: MmapDirectory,
}

impl ScratchDirectory {
    pub fn open(root: &Path) -> tantivy::Result<ScratchDirectory> {
        Ok(ScratchDirectory {
            root: root.to_path_buf(),
            inner: MmapDirectory::open(root)?,
        })
    }
}

impl Directory for ScratchDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.inner.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.root.join(path))
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => OpenWriteError::FileAlreadyExists(path.to_owned()),
                _ => OpenWriteError::wrap_io_error(e, path.to_owned()),
            })?;
        Ok(BufWriter::new(Box::new(UnsyncedFile(file))))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    /// Readers must see the old or the new `meta.json`, never half of one: a temporary file
    /// renamed over it (atomic for readers; whether it survives a crash does not matter).
    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let target = self.root.join(path);
        let mut temporary = tempfile::NamedTempFile::new_in(&self.root)?;
        temporary.write_all(data)?;
        temporary.persist(target).map_err(|e| e.error)?;
        Ok(())
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(callback)
    }

    fn sync_directory(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A file written through the page cache only.
struct UnsyncedFile(File);

impl Write for UnsyncedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TerminatingWrite for UnsyncedFile {
    fn terminate_ref(&mut self, _: AntiCallToken) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use tantivy::schema::{Schema, STORED, TEXT};
    use tantivy::{doc, Index, IndexSettings};

    use super::*;

    #[test]
    fn an_index_in_it_commits_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = Schema::builder();
        let body = builder.add_text_field("body", TEXT | STORED);
        let schema = builder.build();
        let index = Index::create(
            ScratchDirectory::open(dir.path()).unwrap(),
            schema,
            IndexSettings::default(),
        )
        .unwrap();
        let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.add_document(doc!(body => "hello scratch")).unwrap();
        writer.commit().unwrap();
        drop(writer);

        let reopened = Index::open(ScratchDirectory::open(dir.path()).unwrap()).unwrap();
        let searcher = reopened.reader().unwrap().searcher();
        assert_eq!(searcher.num_docs(), 1);
        assert!(dir.path().join("meta.json").exists());
    }
}
