//! One conformance suite for every object store the broker can be pointed at: memory, a local
//! folder, and S3 over HTTP (a moto server) with real request signing.

#[path = "support/moto.rs"]
mod moto;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use strata::object_storage;

async fn conformance(store: Arc<dyn ObjectStore>) {
    let key = Path::from("v1/segments/00000000000000000001.seg");
    let body = Bytes::from(
        (0..200_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    store
        .put(&key, PutPayload::from(body.clone()))
        .await
        .unwrap();

    assert_eq!(store.get(&key).await.unwrap().bytes().await.unwrap(), body);
    assert_eq!(
        store.get_range(&key, 1000..1100).await.unwrap(),
        body.slice(1000..1100)
    );
    assert_eq!(store.head(&key).await.unwrap().size, body.len() as u64);

    let listed: Vec<_> = store
        .list(Some(&Path::from("v1")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| m.location.clone())
            .collect::<Vec<_>>(),
        vec![key.clone()]
    );

    // Catalog commits rely on create-if-absent.
    let create = object_store::PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let second = store
        .put_opts(&key, PutPayload::from_static(b"x"), create)
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "{second:?}"
    );

    store.delete(&key).await.unwrap();
    assert!(matches!(
        store.get(&key).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(object_storage::open("memory://", None).await.unwrap()).await;
}

#[tokio::test]
async fn local_folder_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/objects", dir.path().display());
    conformance(object_storage::open(&url, None).await.unwrap()).await;
    assert!(dir.path().join("objects").is_dir(), "the folder is created");
}

#[tokio::test]
async fn s3_store_conforms_and_a_missing_bucket_is_a_clear_error() {
    moto::Moto::set_credentials();
    let moto = moto::Moto::start();
    moto.create_bucket("strata-conformance");
    let store = object_storage::open("s3://strata-conformance/some/prefix", Some(&moto.endpoint))
        .await
        .unwrap();
    conformance(store).await;

    let error = object_storage::open("s3://no-such-bucket", Some(&moto.endpoint))
        .await
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("bucket does not exist"),
        "{error}"
    );
}
