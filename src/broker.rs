//! Wires the parts together and owns the broker's life: open metadata and the WAL (replaying
//! it), bind the listeners, serve until SIGTERM or Ctrl-C, then stop accepting, let in-flight
//! requests finish, and close the WAL after its last sync.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::config::{parse_host_port, Config};
use crate::faults::Faults;
use crate::groups::group::GroupSettings;
use crate::groups::Coordinator;
use crate::indexer;
use crate::limits;
use crate::metadata::catalog::Catalog;
use crate::metadata::users::Users;
use crate::metadata::{snapshot, Metadata};
use crate::metrics::Metrics;
use crate::object_storage;
use crate::partition::Topics;
use crate::reader::{DiskCache, Reader};
use crate::search::{self, Search};
use crate::server;
use crate::wal::{Wal, WalOptions};

/// Everything a request handler can reach.
pub struct Broker {
    pub config: Config,
    /// The host and port clients are told to use.
    pub advertised: (String, i32),
    pub cluster_id: String,
    pub metadata: Arc<Metadata>,
    /// The Kafka listener's users (SCRAM credentials, in the metadata).
    pub users: Users,
    pub topics: Topics,
    pub wal: Arc<Wal>,
    /// Reads batches from either tier.
    pub reader: Arc<Reader>,
    /// The hot search index and the opened indexes of objects.
    pub search: Search,
    /// Objects uploaded and recorded, by WAL segment.
    pub catalog: Catalog,
    /// Unique to this data directory; part of every object key.
    pub incarnation: String,
    pub metrics: Arc<Metrics>,
    /// Consumer groups and their committed offsets.
    pub groups: Arc<Coordinator>,
    /// The metadata change count at the last sweep for unreferenced objects.
    pub swept_at_changes: std::sync::atomic::AtomicU64,
    /// One indexer run at a time (background or asked for over HTTP).
    pub indexer_lock: tokio::sync::Mutex<()>,
    /// Whether the indexer's last step on a segment succeeded (false until one has): only then
    /// does a WAL waiting for uploads hold produce (`api::produce::pace`).
    pub uploads_succeeding: AtomicBool,
    /// Where sealed WAL segments go (tiered storage).
    pub object_store: Arc<dyn ObjectStore>,
    /// The folder behind a `file://` object store on the data directory's file system, where
    /// staged objects are renamed into place.
    pub local_objects: Option<LocalFileSystem>,
    /// Notified after every group commit that published data (wakes long-polling fetches).
    pub data_arrived: Arc<Notify>,
    /// Injected faults (tests, `--fault-injection`); every point passes when off.
    pub faults: Arc<Faults>,
    pub shutdown: CancellationToken,
    pub started: Instant,
}

/// Runs the broker until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // First: a missing, unreadable or mismatched certificate or key stops the start at once.
    let tls = tls_acceptor(&config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    // Held until the process exits: a second broker on this directory would be a second WAL
    // writer on the same files.
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    // Objects the indexer was building when the broker stopped (their WAL segments are still
    // here and will be indexed again), and objects it was deleting from a local bucket.
    let staging = config.data_dir.join(indexer::STAGING_DIR);
    if let Err(error) = std::fs::remove_dir_all(&staging) {
        if error.kind() != std::io::ErrorKind::NotFound {
            return Err(error).with_context(|| format!("cannot empty {}", staging.display()));
        }
    }
    let faults = config.faults()?;
    if faults.is_enabled() {
        tracing::warn!("fault injection is on (--fault-injection): this broker is for tests");
    }
    let object_store_url = config.object_store_url();
    let object_store = object_storage::open_with(
        &object_store_url,
        config.s3_endpoint.as_deref(),
        Duration::from_millis(config.object_store_timeout_ms),
        faults.clone(),
    )
    .await?;
    tracing::info!(url = %object_store_url, "object store reachable");
    let local_objects = object_storage::local_folder(&object_store_url, &config.data_dir, &faults);
    let meta_dir = config.data_dir.join("meta");
    let restored = snapshot::restore_if_empty(&meta_dir, object_store.as_ref())
        .await
        .context("cannot restore the empty data directory from the bucket (nothing was written; the next start tries again)")?;
    if let Some(restored) = restored {
        tracing::info!(
            topics = restored.topics,
            objects = restored.objects,
            "restored an empty data directory from the bucket"
        );
    }
    let metadata = Arc::new(Metadata::open(&meta_dir)?);
    let topics = Topics::load(metadata.clone());
    let group_settings = GroupSettings {
        initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
    };
    let groups = Arc::new(Coordinator::open(&meta_dir, group_settings)?);
    let catalog = Catalog::open(&meta_dir.join("catalog"), &metadata.incarnation())?
        .with_faults(faults.clone());
    // Before WAL replay: the high watermark and producer state must cover what was uploaded.
    for entry in catalog.load()? {
        indexer::attach(&topics, &entry);
    }
    for partition in topics.partitions() {
        partition.lock().restore_producers_from_remote();
    }
    let data_arrived = Arc::new(Notify::new());
    let wal_options = WalOptions {
        dir: config.data_dir.join("wal"),
        segment_bytes: config.wal_segment_bytes,
        segment_ms: config.wal_segment_ms,
        group_commit_us: config.wal_group_commit_us,
        disk_bytes_max: config.wal_disk_bytes_max,
        faults: faults.clone(),
    };
    let wal = Arc::new(Wal::open(wal_options, &topics, data_arrived.clone())?);
    let metrics = Arc::new(Metrics::default());
    metrics.register(Box::new(wal.fsync_histogram()));
    metrics.register(Box::new(wal.write_failures_counter()));
    metrics.register(Box::new(wal.reused_counter()));
    let cache_dir = config
        .cache_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("cache"));
    let disk_cache = match config.cache_disk_bytes {
        0 => None,
        bytes => Some(DiskCache::open(&cache_dir, bytes).with_context(|| {
            format!("cannot prepare the cache directory {}", cache_dir.display())
        })?),
    };
    let reader = Arc::new(Reader::new(
        wal.clone(),
        object_store.clone(),
        config.cache_memory_bytes,
        disk_cache,
        metrics.clone(),
    ));

    let search = Search::open(&config.data_dir).with_context(|| {
        format!(
            "cannot prepare the search directory under {}",
            config.data_dir.display()
        )
    })?;

    let kafka = TcpListener::bind(config.kafka_listen)
        .await
        .with_context(|| format!("cannot bind the Kafka listener on {}", config.kafka_listen))?;
    let kafka_addr = kafka.local_addr()?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot bind the admin listener on {}", config.admin_listen))?;
    let admin_addr = admin.local_addr()?;
    let advertised = advertised(&config, kafka_addr)?;

    let shutdown = CancellationToken::new();
    let broker = Arc::new(Broker {
        cluster_id: metadata.cluster_id(),
        incarnation: metadata.incarnation(),
        reader,
        search,
        metrics,
        groups,
        catalog,
        indexer_lock: tokio::sync::Mutex::new(()),
        uploads_succeeding: AtomicBool::new(false),
        swept_at_changes: std::sync::atomic::AtomicU64::new(u64::MAX),
        users: Users::new(metadata.clone()),
        config,
        advertised,
        metadata,
        topics,
        wal,
        object_store,
        local_objects,
        data_arrived,
        faults,
        shutdown: shutdown.clone(),
        started: Instant::now(),
    });
    let tracker = TaskTracker::new();
    let ready = Arc::new(AtomicBool::new(false));
    let admin_app = admin::router(admin::AdminState {
        ready: ready.clone(),
        broker: Some(broker.clone()),
        users: Some(broker.users.clone()),
        token: broker
            .config
            .admin_token
            .as_ref()
            .map(|t| Arc::from(t.expose())),
        faults: Some(broker.faults.clone()),
    });
    tracker.spawn(indexer::run(broker.clone()));
    tracker.spawn(snapshot_metadata(broker.clone()));
    tracker.spawn(snapshot_offsets(broker.clone()));
    tracker.spawn(broker.groups.clone().run_timers(shutdown.clone()));
    tracker.spawn(search::hot::run(broker.clone()));
    let admin_shutdown = shutdown.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(admin, admin_app)
            .with_graceful_shutdown(async move { admin_shutdown.cancelled().await })
            .await
    });
    let server_task = tokio::spawn(server::serve(
        kafka,
        tls,
        broker.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    ready.store(true, Ordering::Release);
    announce(kafka_addr, admin_addr);

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    ready.store(false, Ordering::Release);
    shutdown.cancel();
    let _ = server_task.await;
    tracker.close();
    if tokio::time::timeout(
        Duration::from_millis(limits::SHUTDOWN_GRACE_MS),
        tracker.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!("some connections did not finish within the grace period");
    }
    broker.wal.close().await;
    if let Err(error) = snapshot::upload(broker.object_store.as_ref(), &broker.metadata.doc()).await
    {
        tracing::warn!(%error, "cannot upload the final metadata snapshot");
    }
    let offsets = broker.groups.offsets.snapshot();
    if let Err(error) = snapshot::upload_offsets(broker.object_store.as_ref(), offsets).await {
        tracing::warn!(%error, "cannot upload the final committed-offsets snapshot");
    }
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// The Kafka listener's TLS acceptor on SSL and SASL_SSL listeners, from the PEM files (the
/// configuration made sure both are named).
fn tls_acceptor(config: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    if !config.kafka_security_protocol.tls() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
        anyhow::bail!("--tls-cert-file and --tls-key-file are required for TLS");
    };
    let acceptor = server::tls::acceptor(cert, key, config.tls_client_ca_file.as_deref())?;
    Ok(Some(acceptor))
}

/// Takes an exclusive lock on `<data-dir>/strata.lock`, or explains who holds it.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("strata.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data directory {} is in use by another strata process (it holds {})",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Keeps the metadata snapshot in the bucket current: at start, then whenever it changed.
async fn snapshot_metadata(broker: Arc<Broker>) {
    let mut uploaded = None;
    loop {
        let changed = broker.metadata.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let changes = broker.metadata.changes();
        if uploaded != Some(changes) {
            match snapshot::upload(broker.object_store.as_ref(), &broker.metadata.doc()).await {
                Ok(()) => uploaded = Some(changes),
                Err(error) => {
                    tracing::warn!(%error, "cannot upload the metadata snapshot; will retry")
                }
            }
        }
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = &mut changed => {}
            _ = tokio::time::sleep(Duration::from_millis(limits::METADATA_SNAPSHOT_MS)) => {}
        }
    }
}

/// Keeps the committed-offsets snapshot in the bucket current, at most one upload per
/// `METADATA_SNAPSHOT_MS` however often consumers commit.
async fn snapshot_offsets(broker: Arc<Broker>) {
    let offsets = &broker.groups.offsets;
    let mut uploaded = None;
    loop {
        let changed = offsets.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let changes = offsets.changes();
        if uploaded != Some(changes) {
            match snapshot::upload_offsets(broker.object_store.as_ref(), offsets.snapshot()).await {
                Ok(()) => uploaded = Some(changes),
                Err(error) => {
                    tracing::warn!(%error, "cannot upload the committed-offsets snapshot; will retry")
                }
            }
        }
        let pause = tokio::time::sleep(Duration::from_millis(limits::METADATA_SNAPSHOT_MS));
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = pause => {}
        }
        if uploaded == Some(offsets.changes()) {
            tokio::select! {
                _ = broker.shutdown.cancelled() => return,
                _ = &mut changed => {}
            }
        }
    }
}

fn advertised(config: &Config, bound: SocketAddr) -> anyhow::Result<(String, i32)> {
    match &config.advertised_listener {
        Some(address) => parse_host_port(address).map_err(anyhow::Error::msg),
        None => Ok((bound.ip().to_string(), i32::from(bound.port()))),
    }
}

/// Machine-readable start-up lines on stdout: tests and scripts read the bound ports here.
fn announce(kafka: SocketAddr, admin: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "strata: kafka listening on {kafka}");
    let _ = writeln!(out, "strata: admin listening on {admin}");
    let _ = writeln!(out, "strata: ready");
    let _ = out.flush();
    tracing::info!(%kafka, %admin, "ready");
}

async fn wait_for_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the broker");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
