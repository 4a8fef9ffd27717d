//! Prometheus metrics: one registry per broker, counters that the data path increments, and the
//! text exposition served at `GET /metrics`. Counters are plain atomics; incrementing one on the
//! hot path costs no lock and no allocation.

use prometheus::{Encoder, IntCounter, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub objects_uploaded: IntCounter,
    pub bytes_uploaded: IntCounter,
    pub upload_failures: IntCounter,
    pub object_gets: IntCounter,
    pub bytes_fetched_remote: IntCounter,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub objects_deleted: IntCounter,
    pub wal_bytes: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::with_opts(Opts::new(name, help).namespace("strata"))
                .expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
            counter
        };
        let metrics = Metrics {
            objects_uploaded: counter(
                "objects_uploaded_total",
                "Segment objects uploaded to object storage.",
            ),
            bytes_uploaded: counter(
                "object_bytes_uploaded_total",
                "Bytes of segment objects uploaded.",
            ),
            upload_failures: counter(
                "upload_failures_total",
                "Indexer steps (upload, catalog, trim) that failed and will be retried.",
            ),
            object_gets: counter(
                "object_gets_total",
                "Ranged GETs sent to object storage for cold reads.",
            ),
            bytes_fetched_remote: counter(
                "object_bytes_fetched_total",
                "Bytes read from object storage for cold reads.",
            ),
            cache_hits: counter(
                "cache_hits_total",
                "Cold reads answered from the block cache.",
            ),
            cache_misses: counter(
                "cache_misses_total",
                "Cold reads that had to fetch a block.",
            ),
            objects_deleted: counter(
                "objects_deleted_total",
                "Objects deleted by retention or topic deletion.",
            ),
            wal_bytes: IntGauge::with_opts(
                Opts::new("wal_bytes", "Bytes of WAL on local disk.").namespace("strata"),
            )
            .expect("valid metric"),
            registry,
        };
        metrics
            .registry
            .register(Box::new(metrics.wal_bytes.clone()))
            .expect("unique metric");
        metrics
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.objects_uploaded.inc();
        metrics.bytes_uploaded.inc_by(42);
        let text = metrics.render();
        assert!(text.contains("strata_objects_uploaded_total 1"), "{text}");
        assert!(
            text.contains("strata_object_bytes_uploaded_total 42"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE strata_cache_hits_total counter"),
            "{text}"
        );
    }
}
