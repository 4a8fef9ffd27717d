//! The object store, built from a URL: `file:///path` (the embedded default, under the data
//! dir), `s3://bucket/prefix` (AWS S3, MinIO, LocalStack) and `memory://` (tests). S3
//! credentials and region come from the standard AWS chain (environment, profile, SSO, web
//! identity, instance role) through `aws-config`; an endpoint override (`--s3-endpoint` or
//! `AWS_ENDPOINT_URL`) switches to path-style addressing for MinIO and LocalStack.
//!
//! `open` also proves the store usable (one LIST), so a missing bucket or refused credentials
//! stop the broker at start-up with a clear message instead of failing uploads later.
//!
//! Every store is wrapped: `timeout.rs` bounds each request, and with `--fault-injection`
//! `faults.rs` (inside the bound) injects failures for tests.

mod credentials;
pub mod faults;
pub mod timeout;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum ObjectStorageError {
    #[error("object store URL `{0}` is not file:///path, s3://bucket[/prefix] or memory://")]
    BadUrl(String),
    #[error("cannot create the local object store directory {path}: {source}")]
    LocalDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no AWS credentials found (environment, profile, SSO, web identity or instance role)")]
    NoCredentials,
    #[error("cannot configure the object store {url}: {source}")]
    Build {
        url: String,
        source: object_store::Error,
    },
    #[error("object store {url} is not usable: {reason}")]
    Unusable { url: String, reason: String },
}

/// Where objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
    Memory,
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, ObjectStorageError> {
        let bad = || ObjectStorageError::BadUrl(url.to_string());
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Location::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.len() < 3 {
                return Err(bad());
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if url == "memory://" || url == "memory:///" {
            return Ok(Location::Memory);
        }
        Err(bad())
    }
}

/// Builds the store for `url` and checks that it answers, with the default request bound and
/// no fault injection. `endpoint` overrides the S3 endpoint (otherwise `AWS_ENDPOINT_URL_S3` /
/// `AWS_ENDPOINT_URL`, as the AWS SDKs read them).
pub async fn open(
    url: &str,
    endpoint: Option<&str>,
) -> Result<Arc<dyn ObjectStore>, ObjectStorageError> {
    let timeout = Duration::from_millis(crate::limits::OBJECT_STORE_TIMEOUT_MS_DEFAULT);
    open_with(url, endpoint, timeout, crate::faults::Faults::disabled()).await
}

/// Builds the store for `url`, every request bounded by `timeout`, with `faults` injected when
/// fault injection is on, and checks that it answers (through both wrappers, so an injected
/// LIST failure stops the start-up as a real one would).
pub async fn open_with(
    url: &str,
    endpoint: Option<&str>,
    timeout: Duration,
    faults: Arc<crate::faults::Faults>,
) -> Result<Arc<dyn ObjectStore>, ObjectStorageError> {
    let mut store = build(url, endpoint).await?;
    if faults.is_enabled() {
        store = Arc::new(faults::FaultStore::new(store, faults));
    }
    let store: Arc<dyn ObjectStore> = Arc::new(timeout::TimeoutStore::new(store, timeout));
    probe(url, store.as_ref()).await?;
    Ok(store)
}

/// The local folder of a `file://` URL as `object_store` lays it out, when it is on the same
/// file system as `data_dir`: the indexer then renames a staged object into place instead of
/// copying it, and objects are deleted in steps (both write and free blocks on the WAL's disk).
/// None for other stores, for a folder on another file system (an object there is uploaded and
/// deleted like any bucket's, and never touches this disk), and when faults are injected (they
/// act on requests, which a rename would bypass).
pub fn local_folder(
    url: &str,
    data_dir: &std::path::Path,
    faults: &crate::faults::Faults,
) -> Option<LocalFileSystem> {
    use std::os::unix::fs::MetadataExt;
    if faults.is_enabled() {
        return None;
    }
    let Ok(Location::File(path)) = Location::parse(url) else {
        return None;
    };
    let device = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.dev()).ok();
    if device(&path)? != device(data_dir)? {
        return None;
    }
    LocalFileSystem::new_with_prefix(path).ok()
}

async fn build(
    url: &str,
    endpoint: Option<&str>,
) -> Result<Arc<dyn ObjectStore>, ObjectStorageError> {
    let store: Arc<dyn ObjectStore> = match Location::parse(url)? {
        Location::Memory => Arc::new(InMemory::new()),
        Location::File(path) => {
            std::fs::create_dir_all(&path).map_err(|source| ObjectStorageError::LocalDir {
                path: path.clone(),
                source,
            })?;
            let local = LocalFileSystem::new_with_prefix(&path).map_err(|source| {
                ObjectStorageError::Build {
                    url: url.to_string(),
                    source,
                }
            })?;
            // An object is committed to the catalog, and its WAL trimmed, once its PUT returns:
            // for a folder that must mean the file and its name are on disk.
            Arc::new(local.with_fsync(true))
        }
        Location::S3 { bucket, prefix } => s3(url, &bucket, &prefix, endpoint).await?,
    };
    Ok(store)
}

async fn s3(
    url: &str,
    bucket: &str,
    prefix: &str,
    endpoint: Option<&str>,
) -> Result<Arc<dyn ObjectStore>, ObjectStorageError> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let provider = sdk
        .credentials_provider()
        .ok_or(ObjectStorageError::NoCredentials)?;
    let region = sdk
        .region()
        .map_or_else(|| "us-east-1".to_string(), |r| r.to_string());
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_credentials(Arc::new(credentials::SdkCredentials::new(provider)))
        .with_retry(retry_config())
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(60)),
        );
    let endpoint = endpoint
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .or_else(|| sdk.endpoint_url().map(str::to_string));
    if let Some(endpoint) = endpoint {
        // MinIO and LocalStack serve buckets under the path, often over plain HTTP.
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .with_endpoint(endpoint);
    }
    let s3 = builder
        .build()
        .map_err(|source| ObjectStorageError::Build {
            url: url.to_string(),
            source,
        })?;
    if prefix.is_empty() {
        return Ok(Arc::new(s3));
    }
    Ok(Arc::new(PrefixStore::new(s3, Path::from(prefix))))
}

/// A few quick retries per request: the indexer retries whole steps with its own backoff, and a
/// cold read that fails is retried by the consumer, so long in-request retry loops only delay
/// the error.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
    }
}

/// One LIST under the root: fails fast on a missing bucket, refused credentials or a wrong
/// endpoint.
async fn probe(url: &str, store: &dyn ObjectStore) -> Result<(), ObjectStorageError> {
    let unusable = |reason: String| ObjectStorageError::Unusable {
        url: url.to_string(),
        reason,
    };
    let listed = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.list_with_delimiter(None),
    )
    .await;
    match listed {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(unusable(describe(&error))),
        Err(_) => Err(unusable("no answer within 30 s".into())),
    }
}

fn describe(error: &object_store::Error) -> String {
    let text = error.to_string();
    if text.contains("NoSuchBucket") {
        return format!("the bucket does not exist ({text})");
    }
    if text.contains("403")
        || text.contains("AccessDenied")
        || text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
    {
        return format!("the credentials were refused ({text})");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            Location::parse("file:///var/x").unwrap(),
            Location::File("/var/x".into())
        );
        assert_eq!(
            Location::parse("s3://bucket/a/b/").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse("s3://bucket").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "".into()
            }
        );
        assert_eq!(Location::parse("memory://").unwrap(), Location::Memory);
        for bad in [
            "file://relative",
            "s3://",
            "s3://ab",
            "gs://x/y",
            "/plain/path",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_folder_is_used_as_local_only_on_the_data_dirs_file_system() {
        let data_dir = tempfile::tempdir().unwrap();
        let objects = data_dir.path().join("objects");
        std::fs::create_dir_all(&objects).unwrap();
        let url = format!("file://{}", objects.display());
        let faults = crate::faults::Faults::disabled();
        assert!(local_folder(&url, data_dir.path(), &faults).is_some());
        // procfs is its own file system on every Linux machine.
        assert!(local_folder("file:///proc", data_dir.path(), &faults).is_none());
        assert!(local_folder("memory://", data_dir.path(), &faults).is_none());
        let injecting = crate::faults::Faults::enabled();
        assert!(local_folder(&url, data_dir.path(), &injecting).is_none());
    }
}
