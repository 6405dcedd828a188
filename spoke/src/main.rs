//! `ferry-spoke`: parse the command line and dispatch — check a
//! configuration, or run the spoke (see [`ferry_spoke::cli`]).

use std::process::ExitCode;

use clap::Parser as _;
use ferry_common::daemon;
use ferry_spoke::cli::{self, Cli};
use ferry_spoke::config::SpokeConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = cli.check_config {
        return daemon::check_config::<SpokeConfig>(&path);
    }
    let path = cli.config.expect("clap requires --config");
    let mut cfg = match daemon::load_config::<SpokeConfig>(&path) {
        Ok(cfg) => cfg,
        Err(status) => return status,
    };
    cfg.path = Some(path);
    cli::serve(cfg)
}
