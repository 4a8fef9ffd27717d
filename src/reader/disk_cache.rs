//! The local disk tier of the block cache: blocks evicted from memory (or never held there)
//! are kept as files in `--cache-dir`, up to `--cache-disk-bytes`. A moka cache indexes the
//! files by size and deletes a file when it evicts its entry. The directory is emptied at
//! start-up (its index lives in memory), and a file that disappears under the broker (an
//! operator wiping the cache) is just a miss.

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
    /// Empties `dir` and starts a cache of at most `bytes_max` bytes there.
    pub fn open(dir: &Path, bytes_max: u64) -> std::io::Result<DiskCache> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
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
        let cache = DiskCache::open(&dir.path().join("cache"), 3000).unwrap();
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
        let files = std::fs::read_dir(dir.path().join("cache")).unwrap().count();
        assert!(
            files <= 3,
            "evicted entries lose their files ({files} left)"
        );
        std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
        assert!(cache.get(&key(9)).await.is_none(), "a wiped file is a miss");
    }
}
