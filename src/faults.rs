//! Fault injection: named points on the data path where a test makes the next operation fail,
//! slow down, hang or crash the process, to show that nothing acknowledged is lost and that the
//! broker recovers by itself once the disk or the bucket answers again.
//!
//! Off unless the broker runs with `--fault-injection` (a hidden, test-only flag, refused with a
//! non-loopback admin listener). Faults are then set at start-up (`--faults`, a JSON object) and
//! switched at runtime through the admin API (`PUT /v1/faults/{point}`, `DELETE /v1/faults`).
//!
//! Cost while no fault is set: one relaxed atomic load per point passed; the WAL's group commit
//! checks once for all of its points (per group commit, not per request). Each caller applies an action the way its
//! context needs: the WAL writer thread sleeps, an async task awaits, so a delay or a hang never
//! blocks the executor. Why not the `fail` crate: see "Fault injection" in docs/design.md.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits;

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("unknown fault point `{0}` (known: {known})", known = Point::names())]
    UnknownPoint(String),
    #[error("fault injection is off (start the broker with --fault-injection)")]
    Disabled,
    #[error("faults are not a JSON object of point -> fault: {0}")]
    BadSpec(serde_json::Error),
    #[error("injected fault at {point}: {source}")]
    Injected {
        point: Point,
        source: std::io::Error,
    },
}

/// A place on the data path where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Point {
    /// The WAL group commit's write. `crash` writes half of the group, then aborts: a torn tail.
    WalWrite,
    /// Every fdatasync of the WAL writer: the group's, and the one after cutting a failed write.
    WalFsync,
    /// Written, not yet synced.
    WalAfterWriteBeforeSync,
    /// Synced, not yet published or acknowledged.
    WalAfterSyncBeforeAck,
    /// The object is in the bucket; its catalog entry is not written yet.
    IndexerAfterUploadBeforeCatalog,
    /// The catalog entry is durable; the WAL segment is not trimmed yet.
    IndexerAfterCatalogBeforeTrim,
    /// Writing a catalog entry's temporary file. `crash` writes half of it, then aborts.
    CatalogMidWrite,
    /// PUT, including every step of a multipart upload but its abort.
    ObjectStorePut,
    /// GET, including ranged GETs.
    ObjectStoreGet,
    /// LIST, with or without a delimiter.
    ObjectStoreList,
    /// DELETE, per object.
    ObjectStoreDelete,
    /// HEAD.
    ObjectStoreHead,
}

const POINTS: [(Point, &str); 12] = [
    (Point::WalWrite, "wal.write"),
    (Point::WalFsync, "wal.fsync"),
    (
        Point::WalAfterWriteBeforeSync,
        "wal.after_write_before_sync",
    ),
    (Point::WalAfterSyncBeforeAck, "wal.after_sync_before_ack"),
    (
        Point::IndexerAfterUploadBeforeCatalog,
        "indexer.after_upload_before_catalog",
    ),
    (
        Point::IndexerAfterCatalogBeforeTrim,
        "indexer.after_catalog_before_trim",
    ),
    (Point::CatalogMidWrite, "catalog.mid_write"),
    (Point::ObjectStorePut, "object_store.put"),
    (Point::ObjectStoreGet, "object_store.get"),
    (Point::ObjectStoreList, "object_store.list"),
    (Point::ObjectStoreDelete, "object_store.delete"),
    (Point::ObjectStoreHead, "object_store.head"),
];

impl Point {
    pub fn name(self) -> &'static str {
        POINTS
            .iter()
            .find(|(point, _)| *point == self)
            .map_or("?", |(_, name)| name)
    }

    pub fn parse(name: &str) -> Result<Point, FaultError> {
        POINTS
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(point, _)| *point)
            .ok_or_else(|| FaultError::UnknownPoint(name.to_string()))
    }

    fn names() -> String {
        POINTS
            .iter()
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error a failing disk gives. Linux's numbers: the broker runs on Linux.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Errno {
    /// An I/O error (a failed fsync, a dying disk).
    #[default]
    Eio,
    /// No space left on the device (the disk is full).
    Enospc,
}

impl Errno {
    pub fn error(self) -> std::io::Error {
        let code = match self {
            Errno::Eio => 5,
            Errno::Enospc => 28,
        };
        std::io::Error::from_raw_os_error(code)
    }
}

/// What happens at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    /// The operation fails with this error (object-store points: a generic store error).
    Error {
        #[serde(default)]
        errno: Errno,
    },
    /// The operation waits this long, then goes on.
    Delay { ms: u64 },
    /// The operation waits until the fault is cleared (or its caller gives up: every
    /// object-store call is bounded by `--object-store-timeout-ms`).
    Hang,
    /// The process aborts at once, as in a crash.
    Crash,
}

/// A fault as set: the action, after letting the first `after` passes through unharmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fault {
    #[serde(flatten)]
    pub action: Action,
    #[serde(default)]
    pub after: u64,
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    passed: u64,
}

/// The faults of one broker. Shared by the WAL writer, the indexer, the catalog and the
/// object-store wrapper; switched by the admin API.
#[derive(Debug, Default)]
pub struct Faults {
    enabled: bool,
    /// Whether any fault is set: the one load a point costs when none is.
    armed: AtomicBool,
    table: Mutex<BTreeMap<Point, Armed>>,
    /// Multipart uploads aborted through the fault wrapper: what tests look at to see that a
    /// failed upload left no parts behind.
    uploads_aborted: AtomicU64,
}

impl Faults {
    /// Fault injection off: setting a fault is refused, every point passes.
    pub fn disabled() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// Fault injection on, with no fault set.
    pub fn enabled() -> Arc<Faults> {
        Arc::new(Faults {
            enabled: true,
            ..Faults::default()
        })
    }

    /// Fault injection on, with the faults of a `--faults` JSON object set.
    pub fn from_spec(spec: &str) -> Result<Arc<Faults>, FaultError> {
        let faults = Faults::enabled();
        let parsed: BTreeMap<String, Fault> =
            serde_json::from_str(spec).map_err(FaultError::BadSpec)?;
        for (name, fault) in parsed {
            faults.set(Point::parse(&name)?, fault)?;
        }
        Ok(faults)
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn set(&self, point: Point, fault: Fault) -> Result<(), FaultError> {
        if !self.enabled {
            return Err(FaultError::Disabled);
        }
        let mut table = self.lock();
        table.insert(point, Armed { fault, passed: 0 });
        self.armed.store(true, Ordering::Release);
        tracing::warn!(%point, ?fault, "fault injection: fault set");
        Ok(())
    }

    /// Clears one point. Returns whether a fault was set there.
    pub fn clear(&self, point: Point) -> bool {
        let mut table = self.lock();
        let removed = table.remove(&point).is_some();
        self.armed.store(!table.is_empty(), Ordering::Release);
        removed
    }

    pub fn clear_all(&self) {
        self.lock().clear();
        self.armed.store(false, Ordering::Release);
    }

    /// The faults set, by point name.
    pub fn list(&self) -> BTreeMap<&'static str, Fault> {
        self.lock()
            .iter()
            .map(|(point, armed)| (point.name(), armed.fault))
            .collect()
    }

    /// Whether any fault is set: one relaxed load, for a hot path to skip its points at once.
    #[inline]
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// The action due at `point` now, if any; counts the pass against the fault's `after`.
    #[inline]
    pub fn hit(&self, point: Point) -> Option<Action> {
        if !self.is_armed() {
            return None;
        }
        self.hit_armed(point)
    }

    fn hit_armed(&self, point: Point) -> Option<Action> {
        let mut table = self.lock();
        let armed = table.get_mut(&point)?;
        if armed.passed < armed.fault.after {
            armed.passed += 1;
            return None;
        }
        Some(armed.fault.action)
    }

    /// Passes `point` on a thread that may block (the WAL writer, the catalog): a delay sleeps, a
    /// hang blocks until the fault is cleared, a crash aborts.
    pub fn pass_blocking(&self, point: Point) -> std::io::Result<()> {
        match self.hit(point) {
            None => Ok(()),
            Some(action) => self.apply_blocking(point, action),
        }
    }

    /// Applies an action that `hit` returned, on a thread that may block.
    pub fn apply_blocking(&self, point: Point, action: Action) -> std::io::Result<()> {
        match action {
            Action::Error { errno } => Err(errno.error()),
            Action::Delay { ms } => {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(())
            }
            Action::Hang => {
                while self.is_hanging(point) {
                    std::thread::sleep(Duration::from_millis(limits::FAULT_HANG_POLL_MS));
                }
                Ok(())
            }
            Action::Crash => crash(point),
        }
    }

    /// Passes `point` in an async task: a delay or a hang awaits, a crash aborts.
    pub async fn pass(&self, point: Point) -> Result<(), FaultError> {
        let Some(action) = self.hit(point) else {
            return Ok(());
        };
        match action {
            Action::Error { errno } => Err(FaultError::Injected {
                point,
                source: errno.error(),
            }),
            Action::Delay { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
            Action::Hang => {
                while self.is_hanging(point) {
                    tokio::time::sleep(Duration::from_millis(limits::FAULT_HANG_POLL_MS)).await;
                }
                Ok(())
            }
            Action::Crash => crash(point),
        }
    }

    pub fn count_upload_aborted(&self) {
        self.uploads_aborted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn uploads_aborted(&self) -> u64 {
        self.uploads_aborted.load(Ordering::Relaxed)
    }

    fn is_hanging(&self, point: Point) -> bool {
        self.lock()
            .get(&point)
            .is_some_and(|armed| armed.fault.action == Action::Hang)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Point, Armed>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ends the process the way a crash would: no shutdown, no final sync, no destructors.
pub fn crash(point: Point) -> ! {
    eprintln!("strata: fault injection: crashing at {point}");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(json: &str) -> Fault {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn faults_parse_from_the_json_the_admin_api_takes() {
        assert_eq!(
            fault(r#"{"action":"error","errno":"ENOSPC"}"#),
            Fault {
                action: Action::Error {
                    errno: Errno::Enospc
                },
                after: 0
            }
        );
        assert_eq!(
            fault(r#"{"action":"error"}"#).action,
            Action::Error { errno: Errno::Eio }
        );
        assert_eq!(
            fault(r#"{"action":"delay","ms":250,"after":3}"#),
            Fault {
                action: Action::Delay { ms: 250 },
                after: 3
            }
        );
        assert_eq!(fault(r#"{"action":"hang"}"#).action, Action::Hang);
        assert_eq!(fault(r#"{"action":"crash"}"#).action, Action::Crash);
        for bad in [
            r#"{"action":"explode"}"#,
            r#"{"action":"delay"}"#,
            r#"{"action":"error","errno":"EPERM"}"#,
            r#"{}"#,
        ] {
            assert!(serde_json::from_str::<Fault>(bad).is_err(), "{bad}");
        }
        for (point, name) in POINTS {
            assert_eq!(Point::parse(name).unwrap(), point);
            assert_eq!(point.name(), name);
        }
        assert!(matches!(
            Point::parse("wal.nope"),
            Err(FaultError::UnknownPoint(_))
        ));
    }

    #[test]
    fn a_disabled_registry_refuses_faults_and_every_point_passes() {
        let faults = Faults::disabled();
        let error = faults
            .set(Point::WalFsync, fault(r#"{"action":"error"}"#))
            .unwrap_err();
        assert!(matches!(error, FaultError::Disabled));
        assert!(faults.hit(Point::WalFsync).is_none());
        assert!(faults.pass_blocking(Point::WalFsync).is_ok());
    }

    #[test]
    fn a_fault_fires_after_its_free_passes_until_cleared() {
        let faults =
            Faults::from_spec(r#"{"wal.write":{"action":"error","errno":"ENOSPC","after":2}}"#)
                .unwrap();
        assert!(faults.pass_blocking(Point::WalWrite).is_ok());
        assert!(faults.pass_blocking(Point::WalWrite).is_ok());
        let error = faults.pass_blocking(Point::WalWrite).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28));
        assert!(faults.pass_blocking(Point::WalWrite).is_err());
        assert!(
            faults.pass_blocking(Point::WalFsync).is_ok(),
            "other points pass"
        );
        assert_eq!(faults.list().len(), 1);
        assert!(faults.clear(Point::WalWrite));
        assert!(!faults.clear(Point::WalWrite));
        assert!(faults.pass_blocking(Point::WalWrite).is_ok());
        assert!(!faults.armed.load(Ordering::Relaxed));
    }

    #[test]
    fn a_bad_spec_names_the_problem() {
        assert!(matches!(
            Faults::from_spec("wal.write=error"),
            Err(FaultError::BadSpec(_))
        ));
        assert!(matches!(
            Faults::from_spec(r#"{"disk.melt":{"action":"crash"}}"#),
            Err(FaultError::UnknownPoint(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hang_lasts_until_the_fault_is_cleared() {
        let faults = Faults::enabled();
        faults
            .set(Point::ObjectStoreGet, fault(r#"{"action":"hang"}"#))
            .unwrap();
        let waiter = {
            let faults = faults.clone();
            tokio::spawn(async move { faults.pass(Point::ObjectStoreGet).await })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished(), "a hang ends only when cleared");
        faults.clear_all();
        let passed = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the hang ends once cleared")
            .unwrap();
        assert!(passed.is_ok());
    }
}
