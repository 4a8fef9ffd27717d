//! An `ObjectStore` around the real one that bounds every request by `--object-store-timeout-ms`:
//! each call, each multipart part, each LIST page or DELETE answer, and the body of a GET. A
//! request past the bound fails like any other store error, so the indexer retries it with
//! backoff and a fetch answers KAFKA_STORAGE_ERROR; nothing waits on a stuck bucket, a stalled
//! local disk or a hanging injected fault forever. The S3 client's own timeouts cover only its
//! HTTP requests.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Future, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

#[derive(Debug)]
pub struct TimeoutStore {
    inner: Arc<dyn ObjectStore>,
    limit: Duration,
}

impl TimeoutStore {
    pub fn new(inner: Arc<dyn ObjectStore>, limit: Duration) -> TimeoutStore {
        TimeoutStore { inner, limit }
    }
}

impl std::fmt::Display for TimeoutStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TimeoutStore({})", self.inner)
    }
}

fn timed_out(what: &str, limit: Duration) -> object_store::Error {
    object_store::Error::Generic {
        store: "timeout",
        source: format!(
            "{what} did not answer within {} ms (--object-store-timeout-ms)",
            limit.as_millis()
        )
        .into(),
    }
}

/// Runs one request within the limit.
async fn bounded<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, request).await {
        Ok(answer) => answer,
        Err(_) => Err(timed_out(&what(), limit)),
    }
}

/// A stream whose every item must come within the limit; the first late one ends it with an
/// error.
fn bounded_stream<T: Send + 'static>(
    limit: Duration,
    what: String,
    stream: BoxStream<'static, Result<T>>,
) -> BoxStream<'static, Result<T>> {
    futures_util::stream::unfold(Some(stream), move |state| {
        let what = what.clone();
        async move {
            let mut stream = state?;
            match tokio::time::timeout(limit, stream.next()).await {
                Ok(Some(item)) => Some((item, Some(stream))),
                Ok(None) => None,
                Err(_) => Some((Err(timed_out(&what, limit)), None)),
            }
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for TimeoutStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let request = self.inner.put_opts(location, payload, opts);
        bounded(self.limit, || format!("PUT {location}"), request).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let request = self.inner.put_multipart_opts(location, opts);
        let inner = bounded(self.limit, || format!("multipart PUT {location}"), request).await?;
        Ok(Box::new(TimeoutUpload {
            inner,
            limit: self.limit,
            location: location.to_string(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let what = || format!("GET {location}");
        let request = self.inner.get_opts(location, options);
        let result = bounded(self.limit, what, request).await?;
        let payload = match result.payload {
            GetResultPayload::Stream(body) => {
                GetResultPayload::Stream(bounded_stream(self.limit, what(), body))
            }
            // A local file is read in one blocking call when the caller collects it; read it
            // here, within the limit, so a stalled disk cannot hold the caller.
            file @ GetResultPayload::File(..) => {
                let whole = GetResult {
                    payload: file,
                    meta: result.meta.clone(),
                    range: result.range.clone(),
                    attributes: result.attributes.clone(),
                    extensions: result.extensions.clone(),
                };
                let bytes = bounded(self.limit, what, whole.bytes()).await?;
                GetResultPayload::Stream(futures_util::stream::once(async { Ok(bytes) }).boxed())
            }
        };
        Ok(GetResult { payload, ..result })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let request = self.inner.get_ranges(location, ranges);
        bounded(self.limit, || format!("GET {location}"), request).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let deleted = self.inner.delete_stream(locations);
        bounded_stream(self.limit, "DELETE".into(), deleted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let what = format!("LIST {}", prefix.map_or("/", |p| p.as_ref()));
        bounded_stream(self.limit, what, self.inner.list(prefix))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let request = self.inner.list_with_delimiter(prefix);
        let what = || format!("LIST {}", prefix.map_or("/", |p| p.as_ref()));
        bounded(self.limit, what, request).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let request = self.inner.copy_opts(from, to, options);
        bounded(self.limit, || format!("COPY {from} {to}"), request).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let request = self.inner.rename_opts(from, to, options);
        bounded(self.limit, || format!("RENAME {from} {to}"), request).await
    }
}

#[derive(Debug)]
struct TimeoutUpload {
    inner: Box<dyn MultipartUpload>,
    limit: Duration,
    location: String,
}

#[async_trait]
impl MultipartUpload for TimeoutUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let limit = self.limit;
        let location = self.location.clone();
        Box::pin(bounded(limit, move || format!("part of {location}"), part))
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let limit = self.limit;
        let location = self.location.clone();
        let request = self.inner.complete();
        bounded(limit, || format!("completing {location}"), request).await
    }

    async fn abort(&mut self) -> Result<()> {
        let limit = self.limit;
        let location = self.location.clone();
        let request = self.inner.abort();
        bounded(limit, || format!("aborting {location}"), request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{Action, Fault, Faults, Point};
    use crate::object_storage::faults::FaultStore;
    use futures_util::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    const LIMIT: Duration = Duration::from_secs(2);

    fn hanging(point: Point) -> TimeoutStore {
        let faults = Faults::enabled();
        faults
            .set(
                point,
                Fault {
                    action: Action::Hang,
                    after: 0,
                },
            )
            .unwrap();
        let faulty = FaultStore::new(Arc::new(InMemory::new()), faults);
        TimeoutStore::new(Arc::new(faulty), LIMIT)
    }

    fn assert_timed_out<T: std::fmt::Debug>(answer: Result<T>) {
        let error = answer.unwrap_err().to_string();
        assert!(error.contains("did not answer within 2000 ms"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn every_kind_of_call_ends_at_the_limit() {
        let key = Path::from("k");
        let put = hanging(Point::ObjectStorePut);
        assert_timed_out(put.put(&key, PutPayload::from_static(b"v")).await);
        assert_timed_out(put.put_multipart(&key).await);
        let get = hanging(Point::ObjectStoreGet);
        assert_timed_out(get.get_range(&key, 0..1).await);
        assert_timed_out(get.get(&key).await);
        let head = hanging(Point::ObjectStoreHead);
        assert_timed_out(head.head(&key).await);
        let list = hanging(Point::ObjectStoreList);
        assert_timed_out(list.list(None).try_collect::<Vec<_>>().await);
        assert_timed_out(list.list_with_delimiter(None).await);
        let delete = hanging(Point::ObjectStoreDelete);
        assert_timed_out(delete.delete(&key).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_part_ends_at_the_limit() {
        let faults = Faults::enabled();
        let faulty = FaultStore::new(Arc::new(InMemory::new()), faults.clone());
        let store = TimeoutStore::new(Arc::new(faulty), LIMIT);
        let mut upload = store.put_multipart(&Path::from("big")).await.unwrap();
        faults
            .set(
                Point::ObjectStorePut,
                Fault {
                    action: Action::Hang,
                    after: 0,
                },
            )
            .unwrap();
        assert_timed_out(upload.put_part(PutPayload::from_static(b"part")).await);
        upload.abort().await.unwrap();
    }

    #[tokio::test]
    async fn answers_within_the_limit_pass_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let store = TimeoutStore::new(Arc::new(local), LIMIT);
        let key = Path::from("a/b");
        store
            .put(&key, PutPayload::from_static(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(store.get_range(&key, 2..5).await.unwrap(), "234");
        assert_eq!(
            store.get(&key).await.unwrap().bytes().await.unwrap(),
            "0123456789"
        );
        assert_eq!(
            store
                .list(None)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len(),
            1
        );
        store.delete(&key).await.unwrap();
        assert!(matches!(
            store.head(&key).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }
}
