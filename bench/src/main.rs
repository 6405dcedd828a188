//! `ferry-bench`: measures ferry against the baselines a user would
//! otherwise use — the provider's own endpoint and nginx as a tuned reverse
//! proxy — in one run, on loopback, and prints a table (and writes JSON and
//! a chart). Every ratio is computed pair by pair within a run; every figure
//! is the median of several runs. Nothing here asserts a time.

mod client;
mod clientcp;
mod dns;
mod https;
mod index;
mod nginx;
mod report;
mod rig;
mod s3door;
mod scenarios;
mod sys;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// Benchmark ferry against direct provider access and nginx.
#[derive(Debug, Parser)]
#[command(name = "ferry-bench", version)]
struct Args {
    /// Small sizes and few runs, to check that the benchmark works (CI).
    #[arg(long)]
    quick: bool,
    /// Runs per figure (median reported). Default 5, or 3 with --quick.
    #[arg(long)]
    runs: Option<usize>,
    /// Size of the large transfer in MiB. Default 1024, or 32 with --quick.
    #[arg(long)]
    size_mib: Option<u64>,
    /// Only these scenarios (comma-separated): transfer (or download,
    /// upload), memory, sweep, control, tunnel, recovery, resumable,
    /// resumable_s3 (needs moto: ./scripts/install-test-deps.sh), s3 (needs
    /// s3s-fs: ./scripts/install-test-deps.sh --bench), limits, dns, index,
    /// client, https.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write results.json and the charts.
    #[arg(long, default_value = "target/ferry-bench")]
    out: PathBuf,
    /// Concurrent downloads in the memory run (default 256).
    #[arg(long)]
    mem_downloads: Option<usize>,
    /// Concurrent uploads in the memory run (default 64).
    #[arg(long)]
    mem_uploads: Option<usize>,
    /// Where the provider folder and the hub's state live. Default
    /// /dev/shm (memory), so that the disk does not set the pace; "tmp"
    /// for the system's temporary folder.
    #[arg(long, default_value = "/dev/shm")]
    data_in: PathBuf,
    /// Only draw the charts from an earlier run's results.json (into
    /// --out), measuring nothing.
    #[arg(long, value_name = "FILE")]
    charts_from: Option<PathBuf>,
    /// Do not build ferry-hub, ferry-spoke and ferry first (use the
    /// binaries beside this one, or FERRY_HUB_BIN / FERRY_SPOKE_BIN /
    /// FERRY_FERRY_BIN).
    #[arg(long)]
    no_build: bool,
}

/// The sizes and counts of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Whether this is the quick check.
    pub quick: bool,
    /// Runs per figure.
    pub runs: usize,
    /// The large transfer, bytes.
    pub transfer: u64,
    /// The memory run's small file; the large one is 16 times this.
    pub mem_file: u64,
    /// Concurrent downloads and uploads in the memory run.
    pub mem_downloads: usize,
    /// Concurrent uploads in the memory run.
    pub mem_uploads: usize,
    /// File size for the concurrency sweep.
    pub sweep_file: u64,
    /// Concurrency levels of the sweep.
    pub sweep: Vec<usize>,
    /// Connections of the control-request load.
    pub control_conns: usize,
    /// How long each control-request measurement lasts.
    pub control_time: Duration,
    /// Most requests per control-request measurement.
    pub control_max: usize,
    /// Bytes moved through the tunnel per bulk run.
    pub tunnel_bytes: u64,
    /// Where the provider folder lives (`None`: the temporary folder).
    pub data_in: Option<PathBuf>,
    /// How long the hub stays away in the long recovery run.
    pub outage: Duration,
}

impl Plan {
    fn new(args: &Args) -> Plan {
        const MIB: u64 = 1024 * 1024;
        let data_in = (args.data_in != Path::new("tmp") && args.data_in.is_dir())
            .then(|| args.data_in.clone());
        let plan = if args.quick {
            Plan {
                quick: true,
                runs: args.runs.unwrap_or(3),
                transfer: args.size_mib.unwrap_or(32) * MIB,
                mem_file: 64 * 1024,
                mem_downloads: 256,
                mem_uploads: 64,
                sweep_file: MIB,
                sweep: vec![1, 4, 16, 64],
                control_conns: 8,
                control_time: Duration::from_millis(500),
                control_max: 20_000,
                tunnel_bytes: 16 * MIB,
                data_in: None,
                outage: Duration::from_secs(3),
            }
        } else {
            Plan {
                quick: false,
                runs: args.runs.unwrap_or(5),
                transfer: args.size_mib.unwrap_or(1024) * MIB,
                mem_file: 4 * MIB,
                mem_downloads: 256,
                mem_uploads: 64,
                sweep_file: 16 * MIB,
                sweep: vec![1, 4, 16, 64, 256],
                control_conns: 16,
                control_time: Duration::from_secs(5),
                control_max: 2_000_000,
                tunnel_bytes: 512 * MIB,
                data_in: None,
                outage: Duration::from_secs(10),
            }
        };
        Plan {
            data_in,
            mem_downloads: args.mem_downloads.unwrap_or(plan.mem_downloads),
            mem_uploads: args.mem_uploads.unwrap_or(plan.mem_uploads),
            ..plan
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(results) = &args.charts_from {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(results)?)?;
        std::fs::create_dir_all(&args.out)?;
        for f in report::charts(&json, &args.out)? {
            println!("chart: {}", f.display());
        }
        return Ok(());
    }
    if !args.no_build {
        ferry_tests::hub::build_daemons().map_err(anyhow::Error::msg)?;
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; figures mean little (use --release)");
    }
    ferry_tests::install_crypto_provider();
    let plan = Plan::new(&args);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(sys::cpus().max(2))
        .enable_all()
        .build()?;
    let report = rt.block_on(scenarios::run(&plan, &args.only))?;
    std::fs::create_dir_all(&args.out)?;
    let json_path = args.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report.json)?)?;
    println!("{}", report.table);
    println!("results: {}", json_path.display());
    match report::charts(&report.json, &args.out) {
        Ok(files) => {
            for f in files {
                println!("chart: {}", f.display());
            }
        }
        Err(e) => eprintln!("warning: no chart: {e:#}"),
    }
    Ok(())
}
