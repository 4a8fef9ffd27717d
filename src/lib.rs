//! Strata: a Kafka-compatible broker for one VM and one bucket. The module map follows the data
//! path: `server` accepts connections and dispatches to `api` (one file per Kafka API);
//! `protocol` is the wire; produced batches go to the `wal` and become visible in `partition`;
//! `metadata` keeps topics and producer ids durable; `search` queries every record in both
//! tiers; `groups` coordinates consumer groups and keeps their committed offsets; `admin` is
//! the HTTP API; `auth` is SASL (the listener's TLS is in `server`); `faults` injects
//! failures for the crash and fault tests; `fuzzing` holds the entry points the fuzz targets
//! and their CI run share.

pub mod admin;
pub mod api;
pub mod auth;
pub mod background;
pub mod bench;
pub mod broker;
pub mod config;
pub mod faults;
pub mod fuzzing;
pub mod groups;
pub mod indexer;
pub mod limits;
pub mod metadata;
pub mod metrics;
pub mod object_storage;
pub mod partition;
pub mod protocol;
pub mod reader;
pub mod search;
pub mod segment;
pub mod server;
pub mod wal;
