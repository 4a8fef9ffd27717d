//! Prometheus metrics: one registry per broker, counters that the data path increments, and the
//! text exposition served at `GET /metrics`. Counters are plain atomics; incrementing one on the
//! hot path costs no lock and no allocation.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::server::admission::Refusal;
use crate::server::ServerError;

pub struct Metrics {
    registry: Registry,
    pub objects_uploaded: IntCounter,
    pub hot_indexes_packed: IntCounter,
    pub produce_paced: IntCounter,
    pub bytes_uploaded: IntCounter,
    pub upload_failures: IntCounter,
    pub object_gets: IntCounter,
    pub bytes_fetched_remote: IntCounter,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub objects_deleted: IntCounter,
    /// Fetches of a partition answered KAFKA_STORAGE_ERROR because the bucket failed.
    pub cold_read_failures: IntCounter,
    pub wal_bytes: IntGauge,
    /// Sealed WAL segments waiting for upload (set when scraped).
    pub indexer_lag_segments: IntGauge,
    pub connections: IntGauge,
    /// Connections closed at accept, by the limit they hit.
    refused_max_connections: IntCounter,
    refused_max_connections_per_ip: IntCounter,
    /// Connections closed by a timeout, by which one.
    timed_out_idle: IntCounter,
    timed_out_request_read: IntCounter,
    pub timed_out_response_write: IntCounter,
    /// Request frame bytes of Produce, response frame bytes of Fetch.
    pub produce_bytes: IntCounter,
    pub fetch_bytes: IntCounter,
    /// Per Kafka api key: requests and seconds from decode to response (looked up by index,
    /// so the request path takes no lock).
    apis: Vec<Option<(IntCounter, Histogram)>>,
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
        let by_reason = |name: &str, help: &str| {
            let counters =
                IntCounterVec::new(Opts::new(name, help).namespace("strata"), &["reason"])
                    .expect("valid metric");
            registry
                .register(Box::new(counters.clone()))
                .expect("unique metric");
            counters
        };
        let refused = by_reason(
            "connections_refused_total",
            "Connections closed at accept: over --max-connections or --max-connections-per-ip.",
        );
        let timed_out = by_reason(
            "connections_timed_out_total",
            "Connections closed by a timeout: idle, a request frame too slow to arrive, or a client that stopped reading.",
        );
        let mut metrics = Metrics {
            objects_uploaded: counter(
                "objects_uploaded_total",
                "Segment objects uploaded to object storage.",
            ),
            hot_indexes_packed: counter(
                "hot_indexes_packed_total",
                "Segment objects whose search index is the WAL segment's hot index, packed as it is instead of indexing the records again.",
            ),
            produce_paced: counter(
                "produce_paced_total",
                "Produce requests held while the hot search index or the uploads caught up with the WAL (--search-lag-bytes-max).",
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
            cold_read_failures: counter(
                "cold_read_failures_total",
                "Partitions of fetches answered KAFKA_STORAGE_ERROR because a read from object storage failed or timed out (consumers retry).",
            ),
            produce_bytes: counter("produce_bytes_total", "Bytes of Produce requests received."),
            fetch_bytes: counter("fetch_bytes_total", "Bytes of Fetch responses sent."),
            wal_bytes: gauge("wal_bytes", "Bytes of WAL on local disk."),
            indexer_lag_segments: gauge(
                "indexer_lag_segments",
                "Sealed WAL segments not yet uploaded.",
            ),
            connections: gauge("connections", "Open Kafka client connections."),
            refused_max_connections: refused.with_label_values(&["max_connections"]),
            refused_max_connections_per_ip: refused.with_label_values(&["max_connections_per_ip"]),
            timed_out_idle: timed_out.with_label_values(&["idle"]),
            timed_out_request_read: timed_out.with_label_values(&["request_read"]),
            timed_out_response_write: timed_out.with_label_values(&["response_write"]),
            apis: Vec::new(),
            registry,
        };
        for gauge in [
            &metrics.wal_bytes,
            &metrics.indexer_lag_segments,
            &metrics.connections,
        ] {
            metrics.register(Box::new(gauge.clone()));
        }
        metrics.apis = per_api(&metrics.registry);
        metrics
    }
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help).namespace("strata")).expect("valid metric")
}

/// A counter and a latency histogram for every api the broker serves.
fn per_api(registry: &Registry) -> Vec<Option<(IntCounter, Histogram)>> {
    let requests = IntCounterVec::new(
        Opts::new("requests_total", "Kafka requests, by api.").namespace("strata"),
        &["api"],
    )
    .expect("valid metric");
    let latency = HistogramVec::new(
        HistogramOpts::new(
            "request_duration_seconds",
            "Kafka requests from decode to response ready, by api.",
        )
        .namespace("strata")
        .buckets(prometheus::exponential_buckets(0.0001, 2.5, 14).expect("valid buckets")),
        &["api"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(requests.clone()))
        .expect("unique metric");
    registry
        .register(Box::new(latency.clone()))
        .expect("unique metric");
    let apis = crate::server::dispatch::APIS;
    let slots = apis
        .iter()
        .map(|a| *a as i16 as usize + 1)
        .max()
        .unwrap_or(0);
    let mut out = vec![None; slots];
    for api in apis {
        let name = format!("{api:?}");
        out[*api as i16 as usize] = Some((
            requests.with_label_values(&[&name]),
            latency.with_label_values(&[&name]),
        ));
    }
    out
}

impl Metrics {
    /// Registers a metric owned elsewhere (the WAL's fsync histogram).
    pub fn register(&self, collector: Box<dyn Collector>) {
        if let Err(error) = self.registry.register(collector) {
            tracing::warn!(%error, "metric not registered");
        }
    }

    /// Counts a connection refused at accept.
    pub fn connection_refused(&self, refusal: Refusal) {
        match refusal {
            Refusal::MaxConnections(_) => self.refused_max_connections.inc(),
            Refusal::MaxConnectionsPerIp(_) => self.refused_max_connections_per_ip.inc(),
        }
    }

    /// Counts a connection its reader closed, if a timeout closed it.
    pub fn connection_closed(&self, error: &ServerError) {
        match error {
            ServerError::Idle(_) => self.timed_out_idle.inc(),
            ServerError::RequestReadTimeout(_) => self.timed_out_request_read.inc(),
            _ => {}
        }
    }

    /// The request counter and latency histogram of an api key.
    pub fn api(&self, api_key: i16) -> Option<&(IntCounter, Histogram)> {
        self.apis.get(usize::try_from(api_key).ok()?)?.as_ref()
    }

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
        let (requests, latency) = metrics.api(0).expect("Produce is served");
        requests.inc();
        latency.observe(0.002);
        let text = metrics.render();
        assert!(
            text.contains("strata_requests_total{api=\"Produce\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strata_request_duration_seconds_count{api=\"Produce\"} 1"),
            "{text}"
        );
        assert!(metrics.api(10_000).is_none());
    }
}
