//! What a benchmark run reports: counters shared by its tasks, a progress line once a second on
//! stderr, and a summary at the end (text, or one JSON object on stdout for scripts).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to an hour, at 3 significant digits.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Counters the tasks of one run add to.
#[derive(Default)]
pub struct Counters {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    /// The first error a task met, for the summary.
    pub first_error: std::sync::Mutex<Option<String>>,
}

impl Counters {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn error(&self, records: u64, what: String) {
        self.errors.fetch_add(records.max(1), Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        first.get_or_insert(what);
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds are valid")
}

pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
    // Cannot fail: the value is clamped into the histogram's range.
    let _ = histogram.record(micros);
}

/// Prints a line per second until dropped.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(mode: &'static str, counters: Arc<Counters>, quiet: bool) -> Progress {
        let task = tokio::spawn(async move {
            if quiet {
                return;
            }
            let start = Instant::now();
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            let (mut records_before, mut bytes_before) = (0u64, 0u64);
            loop {
                ticker.tick().await;
                let records = counters.records.load(Ordering::Relaxed);
                let bytes = counters.bytes.load(Ordering::Relaxed);
                let errors = counters.errors.load(Ordering::Relaxed);
                // A closed stderr (the bench piped into `head`) ends the progress lines, not
                // the run.
                let line = writeln!(
                    std::io::stderr().lock(),
                    "{mode}: {:>5.0}s {:>10} records/s {:>9.1} MB/s  total {records} records, {errors} errors",
                    start.elapsed().as_secs_f64(),
                    records - records_before,
                    (bytes - bytes_before) as f64 / 1e6,
                );
                if line.is_err() {
                    return;
                }
                (records_before, bytes_before) = (records, bytes);
            }
        });
        Progress { task }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        })
    }
}

/// The result of one run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub topic: String,
    pub partitions: usize,
    pub records: u64,
    /// Produce: record values; consume: record batches as fetched.
    pub bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// Produce: request latency (send to acknowledgement); e2e: produce to consume.
    pub latency: Option<Latency>,
}

impl Summary {
    pub fn new(
        mode: &'static str,
        topic: &str,
        partitions: usize,
        counters: &Counters,
        elapsed: Duration,
        histogram: &Histogram<u64>,
    ) -> Summary {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let records = counters.records();
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let first_error = counters
            .first_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Summary {
            mode,
            topic: topic.to_string(),
            partitions,
            records,
            bytes,
            errors: counters.errors.load(Ordering::Relaxed),
            first_error,
            elapsed_s: seconds,
            records_per_s: records as f64 / seconds,
            mb_per_s: bytes as f64 / 1e6 / seconds,
            latency: Latency::of(histogram),
        }
    }

    /// Prints the summary. A closed stdout (`strata bench ... | head`) is not an error: nobody
    /// is reading.
    pub fn print(&self, json: bool) {
        let _ = self.write(&mut std::io::stdout().lock(), json);
    }

    fn write(&self, out: &mut impl std::io::Write, json: bool) -> std::io::Result<()> {
        if json {
            let line = serde_json::to_string(self).expect("the summary is plain data");
            return writeln!(out, "{line}");
        }
        writeln!(
            out,
            "{}: {} records, {:.1} MB in {:.2} s: {:.0} records/s, {:.1} MB/s, {} errors",
            self.mode,
            self.records,
            self.bytes as f64 / 1e6,
            self.elapsed_s,
            self.records_per_s,
            self.mb_per_s,
            self.errors
        )?;
        if let Some(l) = &self.latency {
            let what = if self.mode == "e2e" {
                "produce-to-consume latency"
            } else {
                "latency"
            };
            writeln!(
                out,
                "{}: {what} p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
                self.mode, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
            )?;
        }
        if let Some(error) = &self.first_error {
            writeln!(out, "{}: first error: {error}", self.mode)?;
        }
        Ok(())
    }
}
