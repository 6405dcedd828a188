//! `ferry-spoke`: parse the command line, load the configuration, start
//! logging, bind the listener and run the spoke until a signal arrives.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ferry_common::config;
use ferry_spoke::config::SpokeConfig;

/// The ferry spoke: ferry's API near clients, with a tunnel to the hub.
#[derive(Debug, Parser)]
#[command(name = "ferry-spoke", version)]
struct Cli {
    /// Run with this configuration file (set FERRY_JOIN_TOKEN on the first start).
    #[arg(long, value_name = "FILE", required_unless_present = "check_config")]
    config: Option<PathBuf>,
    /// Check this configuration file, print every problem, and exit
    /// (0 when it is valid, 2 when not), without binding any port.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = cli.check_config {
        return match config::load::<SpokeConfig>(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    let path = cli.config.expect("clap requires --config");
    let mut cfg = match config::load::<SpokeConfig>(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    cfg.path = Some(path.clone());
    ferry_common::telemetry::init(&cfg.log);
    ferry_common::tls::install_crypto_provider();
    match serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("ferry-spoke failed: {e:#}");
            eprintln!("ferry-spoke: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cfg: SpokeConfig) -> anyhow::Result<()> {
    ferry_common::http_server::run_daemon(cfg.api.listen, |listener, shutdown| {
        ferry_spoke::run(cfg, listener, shutdown)
    })
    .map_err(|e| anyhow::anyhow!(e))
}
