//! `ferry-hub`: parse the command line and dispatch — check a
//! configuration, run an admin command, or run the hub (see
//! [`ferry_hub::cli`]).

use std::process::ExitCode;

use clap::Parser as _;
use ferry_common::daemon;
use ferry_hub::cli::{self, Cli};
use ferry_hub::config::HubConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = cli.check_config {
        return daemon::check_config::<HubConfig>(&path);
    }
    let Some(path) = cli.config else {
        eprintln!("ferry-hub: --config FILE is required (or --check-config FILE); see --help");
        return ExitCode::from(daemon::EXIT_MISCONFIGURED);
    };
    let mut cfg = match daemon::load_config::<HubConfig>(&path) {
        Ok(cfg) => cfg,
        Err(status) => return status,
    };
    cfg.path = Some(path);
    match cli.command {
        Some(command) => cli::admin(&cfg, command),
        None => cli::serve(cfg),
    }
}
