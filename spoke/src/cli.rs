//! The `ferry-spoke` command line, and [`serve`], which runs the spoke
//! on its listener (bound from the configuration or passed by the service
//! manager as `api`). `main.rs` only parses and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::Listeners;
use crate::config::SpokeConfig;

/// The ferry spoke: ferry's API near clients, with a tunnel to the hub.
#[derive(Debug, clap::Parser)]
#[command(name = "ferry-spoke", version)]
pub struct Cli {
    /// Run with this configuration file (set FERRY_JOIN_TOKEN on the first start).
    #[arg(long, value_name = "FILE", required_unless_present = "check_config")]
    pub config: Option<PathBuf>,
    /// Check this configuration file, print every problem, and exit
    /// (0 when it is valid, 2 when not), without binding any port.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
}

/// Runs the spoke until a signal: its listener bound from `cfg` or taken
/// from the service manager, then [`crate::run`].
pub fn serve(cfg: SpokeConfig) -> ExitCode {
    let log = cfg.log.clone();
    ferry_common::daemon::serve(
        "ferry-spoke",
        &log,
        &Listeners::NAMES,
        move |sockets| Listeners::open(&cfg, sockets).map(|listeners| (cfg, listeners)),
        |(cfg, listeners), shutdown| crate::run(cfg, listeners, shutdown),
    )
}
