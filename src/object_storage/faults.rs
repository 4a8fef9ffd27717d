//! An `ObjectStore` around the real one that injects the faults of `crate::faults` per kind of
//! operation: PUT (and every step of a multipart upload but its abort), GET (and ranged GETs),
//! HEAD, LIST and DELETE. A fault makes the call fail, wait, or hang until it is cleared; the
//! timeout wrapper outside it (`timeout.rs`) bounds a hang as it bounds a stuck request.
//! Installed only with `--fault-injection`.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

use crate::faults::{Faults, Point};

#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Arc<Faults>) -> FaultStore {
        FaultStore { inner, faults }
    }
}

impl std::fmt::Display for FaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

/// Passes a point, turning an injected failure into a store error.
async fn pass(faults: &Faults, point: Point) -> Result<()> {
    faults
        .pass(point)
        .await
        .map_err(|error| object_store::Error::Generic {
            store: "fault injection",
            source: Box::new(error),
        })
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        pass(&self.faults, Point::ObjectStorePut).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        pass(&self.faults, Point::ObjectStorePut).await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultUpload {
            inner,
            faults: self.faults.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let point = if options.head {
            Point::ObjectStoreHead
        } else {
            Point::ObjectStoreGet
        };
        pass(&self.faults, point).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        pass(&self.faults, Point::ObjectStoreGet).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let faults = self.faults.clone();
        let checked = locations.then(move |location| {
            let faults = faults.clone();
            async move {
                let location = location?;
                pass(&faults, Point::ObjectStoreDelete).await?;
                Ok(location)
            }
        });
        self.inner.delete_stream(checked.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let listing = self.inner.list(prefix);
        let faults = self.faults.clone();
        futures_util::stream::once(async move {
            match pass(&faults, Point::ObjectStoreList).await {
                Ok(()) => listing,
                Err(error) => futures_util::stream::once(async move { Err(error) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        pass(&self.faults, Point::ObjectStoreList).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        pass(&self.faults, Point::ObjectStorePut).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        pass(&self.faults, Point::ObjectStorePut).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

/// A multipart upload whose parts and completion pass the PUT point. Its abort never fails by
/// injection: it is the clean-up under test.
#[derive(Debug)]
struct FaultUpload {
    inner: Box<dyn MultipartUpload>,
    faults: Arc<Faults>,
}

#[async_trait]
impl MultipartUpload for FaultUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let faults = self.faults.clone();
        let part = self.inner.put_part(data);
        Box::pin(async move {
            pass(&faults, Point::ObjectStorePut).await?;
            part.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        pass(&self.faults, Point::ObjectStorePut).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.faults.count_upload_aborted();
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{Action, Errno, Fault};
    use futures_util::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;
    use std::time::Duration;

    fn store() -> (FaultStore, Arc<Faults>) {
        let faults = Faults::enabled();
        (
            FaultStore::new(Arc::new(InMemory::new()), faults.clone()),
            faults,
        )
    }

    fn set(faults: &Faults, point: Point, action: Action) {
        faults.set(point, Fault { action, after: 0 }).unwrap();
    }

    const FAIL: Action = Action::Error { errno: Errno::Eio };

    #[tokio::test]
    async fn each_kind_of_operation_fails_alone_and_recovers_when_cleared() {
        let (store, faults) = store();
        let key = Path::from("a/b");
        store
            .put(&key, PutPayload::from_static(b"12345"))
            .await
            .unwrap();

        set(&faults, Point::ObjectStoreGet, FAIL);
        assert!(store.get_range(&key, 0..2).await.is_err());
        assert!(store.get(&key).await.is_err());
        assert!(store.head(&key).await.is_ok(), "HEAD is its own kind");
        faults.clear_all();
        assert_eq!(store.get_range(&key, 1..3).await.unwrap(), "23");

        set(&faults, Point::ObjectStoreHead, FAIL);
        assert!(store.head(&key).await.is_err());
        assert!(store.get(&key).await.is_ok());
        faults.clear_all();

        set(&faults, Point::ObjectStoreList, FAIL);
        assert!(store.list(None).try_collect::<Vec<_>>().await.is_err());
        assert!(store.list_with_delimiter(None).await.is_err());
        faults.clear_all();
        assert_eq!(
            store
                .list(None)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len(),
            1
        );

        set(&faults, Point::ObjectStorePut, FAIL);
        assert!(store
            .put(&key, PutPayload::from_static(b"x"))
            .await
            .is_err());
        assert_eq!(
            store.get(&key).await.unwrap().bytes().await.unwrap(),
            "12345"
        );
        faults.clear_all();

        set(&faults, Point::ObjectStoreDelete, FAIL);
        assert!(store.delete(&key).await.is_err());
        assert!(
            store.head(&key).await.is_ok(),
            "a failed delete deletes nothing"
        );
        faults.clear_all();
        store.delete(&key).await.unwrap();
        assert!(store.head(&key).await.is_err());
    }

    #[tokio::test]
    async fn a_multipart_part_can_fail_after_the_upload_started() {
        let (store, faults) = store();
        faults
            .set(
                Point::ObjectStorePut,
                Fault {
                    action: FAIL,
                    after: 1,
                },
            )
            .unwrap();
        let mut upload = store.put_multipart(&Path::from("big")).await.unwrap();
        assert!(upload
            .put_part(PutPayload::from_static(b"part"))
            .await
            .is_err());
        upload.abort().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_slows_the_call_and_a_hang_holds_it() {
        let (store, faults) = store();
        let key = Path::from("k");
        set(&faults, Point::ObjectStorePut, Action::Delay { ms: 5_000 });
        let started = tokio::time::Instant::now();
        store
            .put(&key, PutPayload::from_static(b"v"))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(5));
        set(&faults, Point::ObjectStoreGet, Action::Hang);
        let held = tokio::time::timeout(Duration::from_secs(600), store.get(&key)).await;
        assert!(
            held.is_err(),
            "a hang holds the call until its caller gives up"
        );
    }
}
