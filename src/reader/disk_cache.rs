//! The local disk tier of the block cache: blocks evicted from memory (or never held there)
//! are kept as files in `--cache-dir`, up to `--cache-disk-bytes`. A moka cache indexes the
//! files by size and deletes a file when it evicts its entry. Block files left by a previous
//! run are removed at start-up (the index lives in memory); nothing else in the directory is
//! touched. A file that disappears under the broker (an operator wiping the cache) is a miss.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use moka::future::Cache;
use moka::notification::RemovalCause;

use super::BlockKey;

pub struct DiskCache {
    dir: PathBuf,
    files: Cache<BlockKey, u32>,
}

impl DiskCache {
    /// Starts a cache of at most `bytes_max` bytes in `dir`, removing the block files a
    /// previous run left there (and nothing else: the directory may be shared).
    pub fn open(dir: &Path, bytes_max: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let named_like_ours = path.to_string_lossy().contains('@');
            let ours =
                named_like_ours && path.extension().is_some_and(|e| e == "block" || e == "tmp");
            if ours && path.is_file() {
                std::fs::remove_file(&path)?;
            }
        }
        let evict_from = dir.to_path_buf();
        let files = Cache::builder()
            .max_capacity(bytes_max)
            .weigher(|_: &BlockKey, size: &u32| *size)
            .eviction_listener(move |key: Arc<BlockKey>, _, cause| {
                if cause != RemovalCause::Replaced {
                    let _ = std::fs::remove_file(file_path(&evict_from, &key));
                }
            })
            .build();
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// The block, if a file holds it.
    pub async fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.files.get(key).await?;
        let path = file_path(&self.dir, key);
        match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
            Ok(Ok(bytes)) => Some(Bytes::from(bytes)),
            _ => {
                self.files.invalidate(key).await;
                None
            }
        }
    }

    /// Keeps a block as a file (written aside, then renamed into place). Best effort: a block
    /// that cannot be written is simply not cached.
    pub async fn put(&self, key: BlockKey, bytes: Bytes) {
        let path = file_path(&self.dir, &key);
        let size = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let written = tokio::task::spawn_blocking(move || {
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, &bytes)?;
            std::fs::rename(&temporary, &path)
        })
        .await;
        if matches!(written, Ok(Ok(()))) {
            self.files.insert(key, size).await;
        }
    }
}

fn file_path(dir: &Path, (key, start): &BlockKey) -> PathBuf {
    dir.join(format!("{}@{start}.block", key.replace('/', "_")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_round_trip_evict_past_the_budget_and_survive_a_wipe_as_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        std::fs::create_dir_all(&cache_dir).unwrap();
        std::fs::write(cache_dir.join("keep.me"), b"not ours").unwrap();
        std::fs::write(cache_dir.join("old@0.block"), b"a previous run's").unwrap();
        let cache = DiskCache::open(&cache_dir, 3000).unwrap();
        assert!(
            cache_dir.join("keep.me").exists(),
            "only block files are removed"
        );
        assert!(!cache_dir.join("old@0.block").exists());
        let key = |n: u64| -> BlockKey { ("v2/segments/x/1.seg".into(), n * 1000) };
        cache.put(key(0), Bytes::from(vec![1u8; 1000])).await;
        assert_eq!(
            cache.get(&key(0)).await.unwrap(),
            Bytes::from(vec![1u8; 1000])
        );
        for n in 1..10 {
            cache.put(key(n), Bytes::from(vec![n as u8; 1000])).await;
        }
        cache.files.run_pending_tasks().await;
        let files = std::fs::read_dir(&cache_dir).unwrap().count() - 1;
        assert!(
            files <= 3,
            "evicted entries lose their files ({files} left)"
        );
        std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
        assert!(cache.get(&key(9)).await.is_none(), "a wiped file is a miss");
    }
}
