//! `strata bench`: a load generator for any Kafka-compatible broker (Strata or a peer), so one
//! tool measures them all. `produce` drives K pipelined producer connections, `consume` reads a
//! topic range (hot or cold tier), `e2e` produces at a fixed rate while consuming and reports
//! produce-to-consume latency. Progress goes to stderr once a second; the summary to stdout, as
//! text or (`--json`) one JSON object.
//!
//! It speaks Kafka through `kafka-protocol` only (Metadata for the partition leaders, then one
//! connection per producer and leader) and shares nothing with the broker but the wire code.

mod client;
mod consume;
mod produce;
mod report;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use kafka_protocol::records::Compression;

use client::{Client, TopicLayout};
use consume::{Plan, StartAt};
pub use produce::plain_record;
use report::{Counters, Progress, Summary};

/// How long e2e waits, once the producers are done, for the consumers to see every record.
const E2E_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Produce records as fast as allowed; report records/s, MB/s and produce latency.
    Produce(ProduceArgs),
    /// Consume a range of a topic; report records/s and MB/s.
    Consume(ConsumeArgs),
    /// Produce at a fixed rate while consuming; report produce-to-consume latency.
    E2e(ProduceArgs),
}

/// Options every mode has.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// A broker of the cluster, `host:port`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// The topic (created with --partitions if it does not exist).
    #[arg(long, default_value = "strata-bench")]
    pub topic: String,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The shape of the produce load.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records to produce in all (default: run for --duration).
    #[arg(long)]
    pub records: Option<u64>,
    /// Seconds to run (default 10 when --records is not given).
    #[arg(long = "duration", value_name = "SECONDS")]
    pub duration_s: Option<f64>,
    /// 0 (no answer), 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: Acks,
    /// Producer connections (each takes a share of the partitions).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub producers: u32,
    /// Bytes of record values per batch (a batch holds at least one record).
    #[arg(long, default_value_t = 65536)]
    pub batch_bytes: usize,
    /// With --rate: how long a batch waits for more records after its first.
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// Records per second in all (default: as fast as the broker acknowledges).
    #[arg(long)]
    pub rate: Option<f64>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: CompressionArg,
    /// Produce requests outstanding per connection.
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub target: Target,
    /// earliest, latest or an offset (the same for every partition).
    #[arg(long, default_value = "earliest")]
    pub from_offset: StartAt,
    /// Records to consume in all (default: up to the high watermark seen at the start).
    #[arg(long)]
    pub records: Option<u64>,
    /// Fetch max_bytes.
    #[arg(long, default_value_t = 52_428_800)]
    pub fetch_max_bytes: i32,
    /// Fetch partition_max_bytes.
    #[arg(long, default_value_t = 8_388_608)]
    pub partition_max_bytes: i32,
}

#[derive(Debug, Clone, Copy)]
pub struct Acks(pub i16);

impl std::str::FromStr for Acks {
    type Err = String;

    fn from_str(text: &str) -> Result<Acks, String> {
        match text {
            "0" => Ok(Acks(0)),
            "1" => Ok(Acks(1)),
            "all" | "-1" => Ok(Acks(-1)),
            _ => Err(format!("acks `{text}` is not 0, 1 or all")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CompressionArg(pub Compression);

impl std::str::FromStr for CompressionArg {
    type Err = String;

    fn from_str(text: &str) -> Result<CompressionArg, String> {
        let compression = match text {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => {
                return Err(format!(
                    "compression `{text}` is not one of none, gzip, snappy, lz4, zstd"
                ))
            }
        };
        Ok(CompressionArg(compression))
    }
}

/// Runs `strata bench ...` from the full argv (program name first).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let bench = match crate::config::parse_bench(args) {
        Ok(bench) => bench,
        Err(crate::config::ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("strata bench: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("strata bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(bench.mode)) {
        Ok(summary) if summary.errors == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("strata bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mode: Mode) -> anyhow::Result<Summary> {
    let summary = match mode {
        Mode::Produce(args) => produce(args).await?,
        Mode::Consume(args) => consume(args).await?,
        Mode::E2e(args) => e2e(args).await?,
    };
    Ok(summary)
}

/// Checks the load's numbers and bounds the run by time when no record count is given.
fn bounded(mut load: LoadArgs) -> anyhow::Result<LoadArgs> {
    if load.record_bytes > produce::PAYLOAD_POOL_BYTES {
        anyhow::bail!(
            "--record-bytes must be at most {}",
            produce::PAYLOAD_POOL_BYTES
        );
    }
    if load.duration_s.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
        anyhow::bail!("--duration must be a positive number of seconds");
    }
    if load.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        anyhow::bail!("--rate must be a positive number of records per second");
    }
    if load.records.is_none() && load.duration_s.is_none() {
        load.duration_s = Some(10.0);
    }
    Ok(load)
}

async fn produce(args: ProduceArgs) -> anyhow::Result<Summary> {
    let load = bounded(args.load)?;
    let target = args.target;
    let layout = layout_of(&target, Some(load.partitions)).await?;
    let counters = Arc::new(Counters::default());
    let progress = Progress::start("produce", counters.clone(), target.quiet);
    let start = Instant::now();
    let histogram = produce::run(&load, &target.topic, &layout, counters.clone(), false).await?;
    let elapsed = start.elapsed();
    drop(progress);
    Ok(finish(
        "produce", &target, &layout, &counters, elapsed, &histogram,
    ))
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<Summary> {
    let target = args.target;
    let layout = layout_of(&target, None).await?;
    let plan = Plan {
        topic: target.topic.clone(),
        start: args.from_offset,
        to_high_watermark: args.records.is_none(),
        max_bytes: args.fetch_max_bytes,
        partition_max_bytes: args.partition_max_bytes,
        measure_keys: false,
    };
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = args
        .records
        .map(|wanted| tokio::spawn(stop_at(counters.clone(), stop.clone(), wanted)));
    let progress = Progress::start("consume", counters.clone(), target.quiet);
    let start = Instant::now();
    let histogram = consume::run(&plan, &layout, counters.clone(), stop).await?;
    let elapsed = start.elapsed();
    drop(progress);
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    Ok(finish(
        "consume", &target, &layout, &counters, elapsed, &histogram,
    ))
}

async fn layout_of(target: &Target, partitions: Option<i32>) -> anyhow::Result<TopicLayout> {
    let mut client = Client::connect(&target.bootstrap).await?;
    client.ensure_topic(&target.topic, partitions).await
}

/// Builds the summary and prints it.
fn finish(
    mode: &'static str,
    target: &Target,
    layout: &TopicLayout,
    counters: &Counters,
    elapsed: Duration,
    histogram: &hdrhistogram::Histogram<u64>,
) -> Summary {
    let partitions = layout.leaders.len();
    let summary = Summary::new(
        mode,
        &target.topic,
        partitions,
        counters,
        elapsed,
        histogram,
    );
    summary.print(target.json);
    summary
}

/// Sets `stop` once the consumers have counted `wanted` records.
async fn stop_at(counters: Arc<Counters>, stop: Arc<AtomicBool>, wanted: u64) {
    while counters.records() < wanted {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

async fn e2e(args: ProduceArgs) -> anyhow::Result<Summary> {
    let mut load = bounded(args.load)?;
    load.rate = load.rate.or(Some(10_000.0));
    let target = args.target;
    let layout = layout_of(&target, Some(load.partitions)).await?;
    let plan = Plan {
        topic: target.topic.clone(),
        start: StartAt::Latest,
        to_high_watermark: false,
        max_bytes: 52_428_800,
        partition_max_bytes: 8_388_608,
        measure_keys: true,
    };
    let produced = Arc::new(Counters::default());
    let consumed = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let prepared = consume::prepare(&plan, &layout, consumed.clone(), stop.clone()).await?;
    let consumers = tokio::spawn(consume::run_prepared(prepared));
    let progress = Progress::start("e2e", consumed.clone(), target.quiet);
    let start = Instant::now();
    produce::run(&load, &target.topic, &layout, produced.clone(), true).await?;
    let drained = tokio::time::timeout(
        E2E_DRAIN_TIMEOUT,
        stop_at(consumed.clone(), stop.clone(), produced.records()),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let elapsed = start.elapsed();
    let histogram = consumers.await??;
    drop(progress);
    if drained.is_err() {
        consumed.error(
            produced.records().saturating_sub(consumed.records()),
            format!(
                "consumers saw {} of {} records",
                consumed.records(),
                produced.records()
            ),
        );
    }
    let errors = produced.errors.load(std::sync::atomic::Ordering::Relaxed);
    if errors > 0 {
        let first = produced.first_error.lock().ok().and_then(|f| f.clone());
        consumed.error(errors, first.unwrap_or_default());
    }
    Ok(finish(
        "e2e", &target, &layout, &consumed, elapsed, &histogram,
    ))
}
