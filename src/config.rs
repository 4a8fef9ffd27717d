//! Every setting of the broker. Each one is a flag of `strata serve`, an environment variable
//! `STRATA_<FLAG_IN_CAPS>`, and a key of the optional TOML file given by `--config`, in that order
//! of precedence (flag, then environment, then file, then default).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::auth::Mechanisms;
use crate::limits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Cli(#[from] clap::Error),
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error(
        "config file {path}: unknown setting `{key}` (every setting is a `strata serve` flag)"
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: setting `{key}` must be a string, number or boolean")]
    BadValue { path: PathBuf, key: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "A Kafka-compatible broker on a local WAL and object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    #[command(args_override_self = true)]
    Serve(Box<Config>),
    /// Load-test a Kafka-compatible broker (this one or any other).
    Bench(crate::bench::BenchArgs),
}

/// The broker's settings. Field names are the flag names with `-` written as `_`.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct Config {
    /// TOML file with any of these settings (keys as the flag names, without the dashes).
    #[arg(long, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Validate the settings, print them as TOML and exit without starting the broker.
    #[arg(long, env = "STRATA_CHECK_CONFIG")]
    pub check_config: bool,

    /// Directory for the WAL, metadata and (by default) the local object store.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address the Kafka listener binds.
    #[arg(long, env = "STRATA_KAFKA_LISTEN", default_value = "127.0.0.1:9092")]
    pub kafka_listen: SocketAddr,

    /// host:port that clients are told to connect to (Metadata). Defaults to the listen address;
    /// required when the listener binds an unspecified address such as 0.0.0.0.
    #[arg(long, env = "STRATA_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,

    /// Address the admin HTTP API binds.
    #[arg(long, env = "STRATA_ADMIN_LISTEN", default_value = "127.0.0.1:9080")]
    pub admin_listen: SocketAddr,

    /// This broker's node id, as Kafka's `node.id`.
    #[arg(long, env = "STRATA_NODE_ID", default_value_t = 1)]
    pub node_id: i32,

    /// Object store URL: file:///path, s3://bucket/prefix or memory://. Default: file://<data-dir>/objects.
    #[arg(long, env = "STRATA_OBJECT_STORE")]
    pub object_store: Option<String>,

    /// S3 endpoint for MinIO or LocalStack (path-style addressing); otherwise AWS_ENDPOINT_URL.
    #[arg(long, env = "STRATA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Longest one object-store request may take (a PUT of an object or of one multipart part, a
    /// ranged GET, a LIST page, a DELETE) before it counts as failed: the indexer retries it with
    /// backoff, a fetch answers KAFKA_STORAGE_ERROR (which consumers retry).
    #[arg(long, env = "STRATA_OBJECT_STORE_TIMEOUT_MS", default_value_t = limits::OBJECT_STORE_TIMEOUT_MS_DEFAULT)]
    pub object_store_timeout_ms: u64,

    /// Memory for cached blocks of objects (cold reads); 0 for none.
    #[arg(long, env = "STRATA_CACHE_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_memory_bytes: u64,

    /// Directory for cached blocks of objects. Default: <data-dir>/cache. Emptied at start-up.
    #[arg(long, env = "STRATA_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Disk budget of the block cache; 0 keeps cold reads in memory only.
    #[arg(long, env = "STRATA_CACHE_DISK_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub cache_disk_bytes: u64,

    /// Create a topic when a client asks for metadata of a topic that does not exist.
    #[arg(long, env = "STRATA_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,

    /// Partitions of a topic created without a partition count (auto-created or -1).
    #[arg(long, env = "STRATA_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: i32,

    /// Kafka's `max.connections`: client connections open at once. A connection over the limit
    /// is closed as soon as it is accepted.
    #[arg(long, env = "STRATA_MAX_CONNECTIONS", default_value_t = limits::CONNECTIONS_MAX_DEFAULT)]
    pub max_connections: usize,

    /// Kafka's `max.connections.per.ip`: connections open at once from one client address.
    /// Default: only --max-connections applies.
    #[arg(long, env = "STRATA_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// Kafka's `connections.max.idle.ms`: a connection with no request in flight and no traffic
    /// for this long is closed.
    #[arg(long, env = "STRATA_CONNECTIONS_MAX_IDLE_MS", default_value_t = limits::CONNECTIONS_IDLE_MS_DEFAULT)]
    pub connections_max_idle_ms: u64,

    /// A request frame must arrive whole within this long of its first byte, or the connection
    /// is closed (a client trickling bytes cannot hold it open).
    #[arg(long, env = "STRATA_REQUEST_READ_TIMEOUT_MS", default_value_t = limits::REQUEST_READ_TIMEOUT_MS_DEFAULT)]
    pub request_read_timeout_ms: u64,

    /// A response write that makes no progress for this long (the client stopped reading)
    /// closes the connection.
    #[arg(long, env = "STRATA_RESPONSE_WRITE_TIMEOUT_MS", default_value_t = limits::RESPONSE_WRITE_TIMEOUT_MS_DEFAULT)]
    pub response_write_timeout_ms: u64,

    /// Kafka's `queued.max.request.bytes`: request bytes read and not yet answered, over all
    /// connections. A frame's size is reserved before its body is read and released once its
    /// response is written; past the budget, connections wait before reading more. 0: no limit.
    #[arg(long, env = "STRATA_QUEUED_MAX_REQUEST_BYTES", default_value_t = limits::QUEUED_REQUEST_BYTES_DEFAULT)]
    pub queued_max_request_bytes: u64,

    /// Largest record batch accepted, unless a topic sets `max.message.bytes`.
    #[arg(long, env = "STRATA_MESSAGE_MAX_BYTES", default_value_t = limits::MESSAGE_BYTES_DEFAULT)]
    pub message_max_bytes: i32,

    /// The active WAL segment is sealed once it holds this many bytes.
    #[arg(long, env = "STRATA_WAL_SEGMENT_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub wal_segment_bytes: u64,

    /// The active WAL segment is sealed once it is this old (and not empty).
    #[arg(long, env = "STRATA_WAL_SEGMENT_MS", default_value_t = 60_000)]
    pub wal_segment_ms: u64,

    /// Local-disk budget of the WAL: while object storage is unreachable, produce keeps working
    /// until the WAL holds this many bytes, then answers with a retriable error. 0: no limit.
    /// Beside it, the WAL keeps one trimmed segment's file for reuse (`--wal-segment-bytes`).
    #[arg(long, env = "STRATA_WAL_DISK_BYTES_MAX", default_value_t = 16 * 1024 * 1024 * 1024)]
    pub wal_disk_bytes_max: u64,

    /// Group-commit window: how long the WAL writer waits for more appends before one fsync.
    /// 0 syncs as soon as the queue is drained (appends that arrive during a sync share the next).
    #[arg(long, env = "STRATA_WAL_GROUP_COMMIT_US", default_value_t = 0)]
    pub wal_group_commit_us: u64,

    /// Kafka's `group.initial.rebalance.delay.ms`: the first rebalance of an empty consumer
    /// group waits this long for more members before it assigns partitions.
    #[arg(
        long,
        env = "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3_000
    )]
    pub group_initial_rebalance_delay_ms: u64,

    /// Bearer token every `/v1` admin call must carry (`Authorization: Bearer <token>`).
    /// Required when the admin listener binds a non-loopback address. Never printed or logged.
    #[arg(long, env = "STRATA_ADMIN_TOKEN", hide_env_values = true, value_parser = Secret::parse)]
    pub admin_token: Option<Secret>,

    /// Security protocol of the Kafka listener, in Kafka's words: PLAINTEXT, SSL (TLS),
    /// SASL_PLAINTEXT (SASL authentication, no TLS) or SASL_SSL (both).
    #[arg(
        long,
        env = "STRATA_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        ignore_case = true,
        default_value = "PLAINTEXT"
    )]
    pub kafka_security_protocol: SecurityProtocol,

    /// PEM file with the Kafka listener's TLS certificate, then any intermediate certificates
    /// (required by SSL and SASL_SSL). Read at start-up: restart to rotate.
    #[arg(long, env = "STRATA_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM file with the private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1). Its contents
    /// are never printed or logged.
    #[arg(long, env = "STRATA_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM file of CA certificates: when set, every TLS client must present a certificate
    /// signed by one of them (mutual TLS).
    #[arg(long, env = "STRATA_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// SASL mechanisms offered on a SASL listener, as Kafka's `sasl.enabled.mechanisms`
    /// (any of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    #[arg(
        long,
        env = "STRATA_SASL_ENABLED_MECHANISMS",
        default_value = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        value_parser = Mechanisms::parse
    )]
    pub sasl_enabled_mechanisms: Mechanisms,

    /// Longest time from a record's acknowledgement until search finds it while it is still in
    /// the WAL: how often the hot search index takes in new batches.
    #[arg(long, env = "STRATA_SEARCH_REFRESH_MS", default_value_t = 1000)]
    pub search_refresh_ms: u64,

    /// WAL bytes the hot search index may fall behind, or that sealed segments may hold waiting
    /// for upload (at least a segment; once an upload has succeeded, and not while uploads
    /// fail), before produce requests are held (up to half their timeout, at most 5 s) while
    /// indexing catches up: a burst this large goes in at the WAL's speed (search results lag
    /// meanwhile); produce above the indexing rate for longer slows to that rate instead of
    /// growing the WAL until `--wal-disk-bytes-max` refuses it (at most half of that budget
    /// counts). Lower it for fresher search under load, raise it for longer bursts. 0 never
    /// holds a request.
    #[arg(long, env = "STRATA_SEARCH_LAG_BYTES_MAX", default_value_t = limits::SEARCH_LAG_BYTES_DEFAULT)]
    pub search_lag_bytes_max: u64,

    /// Tests only: turns on the fault-injection points (src/faults.rs) and `/v1/faults` on the
    /// admin API. Refused with a non-loopback admin listener.
    #[arg(long, env = "STRATA_FAULT_INJECTION", hide = true)]
    pub fault_injection: bool,

    /// Tests only: faults set at start-up, a JSON object of point -> fault, as `PUT /v1/faults`
    /// takes them. Needs --fault-injection.
    #[arg(long, env = "STRATA_FAULTS", hide = true)]
    pub faults: Option<String>,

    /// Log filter, as tracing's EnvFilter (`info`, `strata=debug` ...).
    #[arg(long, env = "STRATA_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// Parses `strata serve` arguments (the full argv, program name first), merging the config
    /// file under the environment and the flags.
    pub fn load(args: Vec<OsString>) -> Result<Config, ConfigError> {
        let first = parse_serve(args.clone())?;
        let Some(path) = first.config.clone() else {
            return first.validated();
        };
        let file_args = file_arguments(&path)?;
        let mut merged = Vec::with_capacity(args.len() + file_args.len());
        // Program name and subcommand first, then the file, then the real flags: with
        // `args_override_self`, a later occurrence wins, so flags beat the file.
        merged.extend(args.iter().take(2).cloned());
        merged.extend(file_args);
        merged.extend(args.into_iter().skip(2));
        parse_serve(merged)?.validated()
    }

    /// The object store URL, with the embedded default under the data directory.
    pub fn object_store_url(&self) -> String {
        match &self.object_store {
            Some(url) => url.clone(),
            None => format!(
                "file://{}",
                absolute(&self.data_dir.join("objects")).display()
            ),
        }
    }

    /// The search lag that holds produce: `--search-lag-bytes-max`, but never more than half
    /// of the WAL's disk budget, so that a small disk paces producers before it refuses them.
    pub fn search_lag_bytes_effective(&self) -> u64 {
        if self.wal_disk_bytes_max == 0 || self.search_lag_bytes_max == 0 {
            return self.search_lag_bytes_max;
        }
        self.search_lag_bytes_max.min(self.wal_disk_bytes_max / 2)
    }

    /// The address clients are told to connect to.
    pub fn advertised(&self) -> String {
        match &self.advertised_listener {
            Some(address) => address.clone(),
            None => self.kafka_listen.to_string(),
        }
    }

    fn validated(self) -> Result<Config, ConfigError> {
        if self.advertised_listener.is_none() && self.kafka_listen.ip().is_unspecified() {
            return Err(ConfigError::Invalid(format!(
                "--kafka-listen {} binds every interface; set --advertised-listener to the host:port clients should use",
                self.kafka_listen
            )));
        }
        if let Some(address) = &self.advertised_listener {
            parse_host_port(address).map_err(ConfigError::Invalid)?;
        }
        if !(1..=limits::PARTITIONS_PER_TOPIC_MAX).contains(&self.default_partitions) {
            return Err(ConfigError::Invalid(format!(
                "--default-partitions must be between 1 and {}",
                limits::PARTITIONS_PER_TOPIC_MAX
            )));
        }
        if self.message_max_bytes <= 0 || self.message_max_bytes as usize > limits::FRAME_BYTES_MAX
        {
            return Err(ConfigError::Invalid(format!(
                "--message-max-bytes must be between 1 and {}",
                limits::FRAME_BYTES_MAX
            )));
        }
        if self.admin_token.is_none() && !self.admin_listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "--admin-listen {} is reachable from other hosts; set --admin-token (or STRATA_ADMIN_TOKEN)",
                self.admin_listen
            )));
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().is_empty())
        {
            return Err(ConfigError::Invalid(
                "--admin-token must not be empty".into(),
            ));
        }
        self.check_security()?;
        if self.search_refresh_ms == 0 {
            return Err(ConfigError::Invalid(
                "--search-refresh-ms must be at least 1".into(),
            ));
        }
        if self.object_store_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "--object-store-timeout-ms must be at least 1".into(),
            ));
        }
        self.validate_fault_injection()?;
        if self.max_connections == 0 || self.max_connections_per_ip == Some(0) {
            return Err(ConfigError::Invalid(
                "--max-connections and --max-connections-per-ip must be at least 1".into(),
            ));
        }
        let timeouts = [
            self.connections_max_idle_ms,
            self.request_read_timeout_ms,
            self.response_write_timeout_ms,
        ];
        if timeouts.contains(&0) {
            return Err(ConfigError::Invalid(
                "--connections-max-idle-ms, --request-read-timeout-ms and --response-write-timeout-ms must be at least 1".into(),
            ));
        }
        if self.wal_segment_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "--wal-segment-bytes must be at least 4096".into(),
            ));
        }
        Ok(self)
    }
}

impl Config {
    /// TLS files go with a TLS protocol, and a TLS protocol needs its certificate and key.
    fn check_security(&self) -> Result<(), ConfigError> {
        let protocol = self.kafka_security_protocol;
        if protocol.tls() {
            if self.tls_cert_file.is_none() || self.tls_key_file.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "--kafka-security-protocol {} needs --tls-cert-file and --tls-key-file",
                    protocol.name()
                )));
            }
            return Ok(());
        }
        let tls_files = [
            ("--tls-cert-file", &self.tls_cert_file),
            ("--tls-key-file", &self.tls_key_file),
            ("--tls-client-ca-file", &self.tls_client_ca_file),
        ];
        if let Some((flag, _)) = tls_files.iter().find(|(_, file)| file.is_some()) {
            return Err(ConfigError::Invalid(format!(
                "{flag} is set but --kafka-security-protocol {} uses no TLS (use SSL or SASL_SSL)",
                protocol.name()
            )));
        }
        Ok(())
    }

    /// Fault injection is for tests on one machine: never reachable from elsewhere, and faults
    /// need the switch.
    fn validate_fault_injection(&self) -> Result<(), ConfigError> {
        if self.faults.is_some() && !self.fault_injection {
            return Err(ConfigError::Invalid(
                "--faults needs --fault-injection".into(),
            ));
        }
        if self.fault_injection && !self.admin_listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "--fault-injection is for tests: it needs a loopback --admin-listen, not {}",
                self.admin_listen
            )));
        }
        self.faults().map(|_| ())
    }

    /// The broker's fault registry: off unless `--fault-injection`.
    pub fn faults(&self) -> Result<std::sync::Arc<crate::faults::Faults>, ConfigError> {
        use crate::faults::Faults;
        if !self.fault_injection {
            return Ok(Faults::disabled());
        }
        match &self.faults {
            None => Ok(Faults::enabled()),
            Some(spec) => {
                Faults::from_spec(spec).map_err(|e| ConfigError::Invalid(format!("--faults: {e}")))
            }
        }
    }
}

/// The Kafka listener's security protocol, as Kafka's `security.protocol` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

/// Splits `host:port`, refusing a missing or zero port.
pub fn parse_host_port(address: &str) -> Result<(String, i32), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("advertised listener `{address}` is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("advertised listener `{address}` has no valid port"))?;
    if host.is_empty() || port == 0 {
        return Err(format!(
            "advertised listener `{address}` needs a host and a non-zero port"
        ));
    }
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        i32::from(port),
    ))
}

/// A setting that must never be printed or logged: its `Debug` and its serialized form (what
/// `--check-config` prints) say only that it is set.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    fn parse(text: &str) -> Result<Secret, String> {
        Ok(Secret(text.to_string()))
    }

    /// The value, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str("<redacted>")
    }
}

fn parse_serve(args: Vec<OsString>) -> Result<Config, ConfigError> {
    match Cli::try_parse_from(args)?.command {
        Command::Serve(config) => Ok(*config),
        Command::Bench(_) => Err(ConfigError::Invalid("`strata bench` runs no broker".into())),
    }
}

/// Parses `strata bench ...` (the full argv, program name first).
pub fn parse_bench(args: Vec<OsString>) -> Result<crate::bench::BenchArgs, ConfigError> {
    match Cli::try_parse_from(args)?.command {
        Command::Bench(bench) => Ok(bench),
        Command::Serve(_) => Err(ConfigError::Invalid("not a `strata bench` command".into())),
    }
}

/// Turns the TOML file into `--flag=value` arguments, skipping settings the environment sets.
fn file_arguments(path: &PathBuf) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
        path: path.clone(),
        source,
    })?;
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("the serve subcommand is defined above");
    let mut arguments = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let Some(argument) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()))
        else {
            return Err(ConfigError::UnknownKey {
                path: path.clone(),
                key,
            });
        };
        let from_env = argument
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some());
        if from_env || flag == "config" {
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) if flag == "check-config" => {
                if b {
                    arguments.push(OsString::from("--check-config"));
                }
                continue;
            }
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::BadValue {
                    path: path.clone(),
                    key,
                })
            }
        };
        arguments.push(OsString::from(format!("--{flag}={text}")));
    }
    Ok(arguments)
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(extra: &[&str]) -> Vec<OsString> {
        ["strata", "serve"]
            .iter()
            .chain(extra)
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::load(argv(&[])).unwrap();
        assert_eq!(config.kafka_listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9080");
        assert_eq!(config.node_id, 1);
        assert!(config.auto_create_topics);
        assert_eq!(config.advertised(), "127.0.0.1:9092");
        assert!(config.object_store_url().starts_with("file:///"));
        assert!(config.object_store_url().ends_with("/data/objects"));
    }

    #[test]
    fn the_search_lag_that_holds_produce_is_at_most_half_the_wal_disk_budget() {
        let lag = |args: &[&str]| {
            Config::load(argv(args))
                .unwrap()
                .search_lag_bytes_effective()
        };
        assert_eq!(lag(&[]), limits::SEARCH_LAG_BYTES_DEFAULT);
        assert_eq!(lag(&["--wal-disk-bytes-max", "1000"]), 500);
        assert_eq!(
            lag(&["--wal-disk-bytes-max", "0"]),
            limits::SEARCH_LAG_BYTES_DEFAULT
        );
        assert_eq!(
            lag(&[
                "--wal-disk-bytes-max",
                "1000",
                "--search-lag-bytes-max",
                "0"
            ]),
            0
        );
    }

    #[test]
    fn unspecified_bind_without_advertised_listener_is_refused() {
        let error = Config::load(argv(&["--kafka-listen", "0.0.0.0:9092"])).unwrap_err();
        assert!(
            error.to_string().contains("--advertised-listener"),
            "{error}"
        );
        let config = Config::load(argv(&[
            "--kafka-listen",
            "0.0.0.0:9092",
            "--advertised-listener",
            "broker.example:9092",
        ]))
        .unwrap();
        assert_eq!(config.advertised(), "broker.example:9092");
    }

    #[test]
    fn file_settings_lose_to_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            "node_id = 7\ndefault-partitions = 3\nauto_create_topics = false\n",
        )
        .unwrap();
        let config = Config::load(argv(&[
            "--config",
            path.to_str().unwrap(),
            "--node-id",
            "9",
        ]))
        .unwrap();
        assert_eq!(config.node_id, 9);
        assert_eq!(config.default_partitions, 3);
        assert!(!config.auto_create_topics);
    }

    #[test]
    fn a_reachable_admin_listener_needs_a_token_and_the_token_is_never_printed() {
        let error = Config::load(argv(&["--admin-listen", "0.0.0.0:9080"])).unwrap_err();
        assert!(error.to_string().contains("--admin-token"), "{error}");
        let config = Config::load(argv(&[
            "--admin-listen",
            "0.0.0.0:9080",
            "--admin-token",
            "s3cret-value",
        ]))
        .unwrap();
        assert_eq!(
            config.admin_token.as_ref().map(Secret::expose),
            Some("s3cret-value")
        );
        let printed = toml::to_string(&config).unwrap();
        assert!(!printed.contains("s3cret-value"), "{printed}");
        assert!(!format!("{config:?}").contains("s3cret-value"));
        assert!(
            printed.contains("admin_token = \"<redacted>\""),
            "{printed}"
        );
        assert_eq!(config.search_refresh_ms, 1000);
    }

    #[test]
    fn tls_protocols_need_their_files_and_plaintext_refuses_them() {
        let config = Config::load(argv(&[])).unwrap();
        assert_eq!(config.kafka_security_protocol, SecurityProtocol::Plaintext);
        assert_eq!(
            config.sasl_enabled_mechanisms.to_string(),
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
        );
        for protocol in ["SSL", "SASL_SSL", "sasl_ssl"] {
            let error = Config::load(argv(&["--kafka-security-protocol", protocol])).unwrap_err();
            assert!(error.to_string().contains("--tls-cert-file"), "{error}");
        }
        let error = Config::load(argv(&["--tls-key-file", "/k.pem"])).unwrap_err();
        assert!(error.to_string().contains("uses no TLS"), "{error}");
        let config = Config::load(argv(&[
            "--kafka-security-protocol",
            "SASL_SSL",
            "--tls-cert-file",
            "/c.pem",
            "--tls-key-file",
            "/k.pem",
            "--sasl-enabled-mechanisms",
            "SCRAM-SHA-512",
        ]))
        .unwrap();
        assert!(config.kafka_security_protocol.tls() && config.kafka_security_protocol.sasl());
        let printed = toml::to_string(&config).unwrap();
        assert!(
            printed.contains("kafka_security_protocol = \"SASL_SSL\""),
            "{printed}"
        );
        assert!(
            printed.contains("sasl_enabled_mechanisms = \"SCRAM-SHA-512\""),
            "{printed}"
        );
        let error = Config::load(argv(&["--sasl-enabled-mechanisms", "GSSAPI"])).unwrap_err();
        assert!(error.to_string().contains("GSSAPI"), "{error}");
    }

    #[test]
    fn fault_injection_is_loopback_only_and_faults_need_it() {
        let error = Config::load(argv(&[
            "--fault-injection",
            "--admin-listen",
            "0.0.0.0:9080",
            "--admin-token",
            "t",
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("loopback"), "{error}");
        let error = Config::load(argv(&["--faults", "{}"])).unwrap_err();
        assert!(error.to_string().contains("--fault-injection"), "{error}");
        let config = Config::load(argv(&[])).unwrap();
        assert!(!config.faults().unwrap().is_enabled());
        let config = Config::load(argv(&[
            "--fault-injection",
            "--faults",
            r#"{"wal.fsync":{"action":"error"}}"#,
        ]))
        .unwrap();
        let faults = config.faults().unwrap();
        assert!(faults.is_enabled());
        assert_eq!(faults.list().len(), 1);
        let error = Config::load(argv(&["--fault-injection", "--faults", "nonsense"])).unwrap_err();
        assert!(error.to_string().contains("--faults"), "{error}");
    }

    #[test]
    fn unknown_file_setting_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(&path, "kafka_port = 1\n").unwrap();
        let error = Config::load(argv(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(matches!(error, ConfigError::UnknownKey { .. }), "{error}");
    }
}
