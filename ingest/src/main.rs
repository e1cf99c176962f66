//! `agentmeter-ingest`: parses the configuration, sets up logging, and runs
//! the worker until SIGTERM or SIGINT.

use agentmeter_ingest::config::{Config, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt().with_env_filter(filter).json().init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    match agentmeter_ingest::run(config, agentmeter_ingest::shutdown::signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "agentmeter-ingest failed");
            std::process::ExitCode::FAILURE
        }
    }
}
