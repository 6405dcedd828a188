//! The `ferry-hub` command line: its clap definitions, and one module per
//! family of admin commands ([`spoke`], [`rekey`], [`migrate`]), which work
//! on the hub's database directly and start nothing. [`serve`] runs the hub
//! itself. `main.rs` only parses and dispatches.

pub mod migrate;
pub mod rekey;
pub mod spoke;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::HubConfig;
use crate::listeners::Listeners;

/// The ferry hub: the HTTP API, the metadata store, the tunnel endpoint.
#[derive(Debug, clap::Parser)]
#[command(name = "ferry-hub", version)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Check this configuration file, print every problem, and exit
    /// (0 when it is valid, 2 when not), without binding any port.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
    /// An admin command; without one, the hub runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The admin commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Manage spokes (works on the hub's database; the hub may be running).
    Spoke {
        /// What to do.
        #[command(subcommand)]
        action: spoke::SpokeAction,
    },
    /// Re-encrypt every connection's configuration under a new master key,
    /// in one transaction. Stop the hubs first, then start them with the
    /// new key.
    Rekey {
        /// The file holding the new key (32 bytes, base64 or hex).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Copy a SQLite hub's metadata (accounts, keys, connections, files,
    /// events, spokes and the tunnel CA) into the PostgreSQL store of this
    /// configuration, which must be empty. Stop the SQLite hub first; use
    /// the same master key.
    MigrateStore {
        /// The SQLite hub's configuration file (for its database and its
        /// tunnel CA).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
}

/// Runs `command` on the hub of `cfg` and gives the exit status (1 with
/// the reason on standard error when it fails).
pub fn admin(cfg: &HubConfig, command: Command) -> ExitCode {
    let result = match command {
        Command::Spoke { action } => spoke::run(cfg, action),
        Command::Rekey { new_key_file } => rekey::run(cfg, &new_key_file),
        Command::MigrateStore { from } => migrate::run(cfg, &from),
    };
    ferry_common::daemon::exit_status("ferry-hub", result)
}

/// Runs the hub until a signal: its sockets bound from `cfg` or taken
/// from the service manager, then [`crate::run`].
pub fn serve(cfg: HubConfig) -> ExitCode {
    // A token unfit to guard the hub stops it before any port is bound.
    if let Err(e) = crate::admin_token::AdminToken::from_env() {
        eprintln!("ferry-hub: {e}");
        return ExitCode::from(ferry_common::daemon::EXIT_MISCONFIGURED);
    }
    let log = cfg.log.clone();
    ferry_common::daemon::serve(
        "ferry-hub",
        &log,
        &Listeners::NAMES,
        move |sockets| Listeners::open(&cfg, sockets).map(|listeners| (cfg, listeners)),
        |(cfg, listeners), shutdown| crate::run(cfg, listeners, shutdown),
    )
}

/// A tokio runtime on this thread, for an admin command's database work.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
