//! What both daemon binaries do around their library's `run`: check or
//! load the configuration (exit 2 with every problem), turn an admin
//! command's outcome into an exit status, and serve — take the sockets a
//! service manager passed (first, while the process has one thread),
//! start logging, open every listener (bound from the configuration or
//! taken from those passed), and run on a multi-threaded runtime until
//! SIGTERM or SIGINT, draining on the first.
//!
//! Exit statuses: 0 after a clean stop; 1 when starting or running
//! failed in a way a restart may cure (a port taken, a task that
//! panicked); 2 when the configuration, the command line or the sockets
//! passed must change first (systemd's units do not retry 2).

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Validate};
use crate::sockets::{SocketError, SocketSource};
use crate::telemetry::LogConfig;

/// The exit status for a configuration, command line or set of passed
/// sockets that must change before the daemon can start.
pub const EXIT_MISCONFIGURED: u8 = 2;

/// `--check-config FILE`: prints `FILE: ok` (status 0) or every problem
/// (status 2).
pub fn check_config<T: DeserializeOwned + Validate>(path: &Path) -> ExitCode {
    match config::load::<T>(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_MISCONFIGURED)
        }
    }
}

/// Loads the configuration at `path`; on a problem, prints every one and
/// gives the status to exit with (2).
pub fn load_config<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ExitCode> {
    config::load::<T>(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_MISCONFIGURED)
    })
}

/// The exit status of an admin command: 0, or 1 with `program: error`
/// (the error's whole chain) on standard error.
pub fn exit_status<E: Display>(program: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a daemon: the passed sockets are taken, logging starts (`log`),
/// `open` gets the listeners from a [`SocketSource`] (every passed socket
/// must be taken; `known` names those the daemon knows and what configures
/// each, for the message when one is not), and `run` serves on them until
/// the shutdown token it is given fires and its drain ends.
pub fn serve<L, F, Fut, E>(
    program: &str,
    log: &LogConfig,
    known: &[(&str, &str)],
    open: impl FnOnce(&mut SocketSource) -> Result<L, SocketError>,
    run: F,
) -> ExitCode
where
    F: FnOnce(L, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    // Before logging or anything else starts a thread: LISTEN_* can only
    // be cleared from the environment while this is the only one.
    let taken = SocketSource::from_environment();
    crate::telemetry::init(log);
    crate::tls::install_crypto_provider();
    let mut sockets = match taken {
        Ok((sockets, left_in_environment)) => {
            if left_in_environment {
                tracing::warn!("LISTEN_* stay in the environment: other threads were running");
            }
            sockets
        }
        Err(e) => return failed(program, SocketError::from(e)),
    };
    if !sockets.passed_names().is_empty() {
        tracing::info!(
            names = %sockets.passed_names().join(","),
            "using the sockets the service manager passed"
        );
    }
    let listeners = match open(&mut sockets) {
        Ok(l) => l,
        Err(e) => return failed(program, e),
    };
    if let Err(e) = sockets.finish(known) {
        return failed(program, e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return reported(program, format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::http_server::wait_for_signals(shutdown.clone()));
        run(listeners, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => reported(program, format!("{e:#}")),
    }
}

/// Reports a socket that cannot be had, with the status it calls for.
fn failed(program: &str, e: SocketError) -> ExitCode {
    let code = if e.needs_a_change() {
        ExitCode::from(EXIT_MISCONFIGURED)
    } else {
        ExitCode::FAILURE
    };
    reported(program, e.to_string());
    code
}

/// Logs and prints why the daemon stops, and gives status 1.
fn reported(program: &str, error: String) -> ExitCode {
    tracing::error!("{program} failed: {error}");
    eprintln!("{program}: {error}");
    ExitCode::FAILURE
}
