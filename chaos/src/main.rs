//! `cargo run --release -p ferry-chaos -- --minutes N`: the fault campaign
//! of `ferry_tests::chaos` for N minutes; prints what it did and found,
//! and exits 1 when an invariant broke.

use std::time::Duration;

use clap::Parser;

/// Runs ferry's fault campaign against real daemons on loopback.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// How long clients work while faults come.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Clients at once.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Paths each client works on.
    #[arg(long, default_value_t = 12)]
    paths: usize,
    /// Paths every client uploads to at once (0: none).
    #[arg(long, default_value_t = 3)]
    shared: usize,
    /// Seeds every choice (operations, sizes, faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(e) = ferry_tests::hub::build_daemons() {
        eprintln!("ferry-chaos: {e}");
        return std::process::ExitCode::from(2);
    }
    let settings = ferry_tests::chaos::Settings {
        duration: Duration::from_secs(args.minutes * 60),
        clients: args.clients,
        seed: args.seed,
        paths: args.paths,
        shared: args.shared,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(ferry_tests::chaos::run(settings));
    print!("{report}");
    match report.violations.is_empty() {
        true => std::process::ExitCode::SUCCESS,
        false => std::process::ExitCode::FAILURE,
    }
}
