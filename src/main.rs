//! The `strata` command line.

use std::process::ExitCode;

use strata::config::Config;

// glibc's malloc keeps the memory of the indexer's large, short-lived buffers in per-thread
// arenas: the resident set grew by about a segment's size with every upload and never came
// back. mimalloc returns freed pages to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|command| command == "bench") {
        return strata::bench::main(args);
    }
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(strata::config::ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("strata: {error}");
            return ExitCode::from(2);
        }
    };
    if config.check_config {
        println!("{}", toml::to_string(&config).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("strata: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(strata::broker::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("strata: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
