//! The benchmark's scenarios. Each measures ferry and its baselines in the
//! same run, rotating their order from run to run so that neither always
//! goes first, and keeps every run's figures in the JSON.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use bytes::Bytes;
use ring::rand::SecureRandom as _;
use serde_json::{Value, json};

use crate::Plan;
use crate::client::{self, Target};
use crate::report::{Table, fmt, median, spread};
use crate::rig::{Rig, Via};
use crate::sys::{self, MachineSample};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What a run printed and recorded.
#[derive(Debug)]
pub struct Report {
    /// The tables, as text.
    pub table: String,
    /// Everything, for `results.json`.
    pub json: Value,
}

/// Runs `f` on each of `items`, starting with a different one in each `run`
/// so that none always goes first, and returns the results in the order of
/// `items`.
pub(crate) async fn in_rotation<T: Copy, R>(
    items: &[T],
    run: usize,
    mut f: impl AsyncFnMut(T) -> anyhow::Result<R>,
) -> anyhow::Result<Vec<R>> {
    let n = items.len();
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for k in 0..n {
        let i = (run + k) % n;
        out[i] = Some(f(items[i]).await?);
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect())
}

/// Runs the scenarios `only` names (all when empty).
pub async fn run(plan: &Plan, only: &[String]) -> anyhow::Result<Report> {
    // How busy the machine is before the benchmark adds anything.
    let load_before = sys::loadavg();
    let idle_from = MachineSample::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let background = idle_from.busy_until(&MachineSample::now());

    let mut rig = Rig::start(plan.data_in.clone()).await?;
    match measure(&mut rig, plan, only, load_before, background).await {
        Ok(r) => Ok(r),
        Err(e) => {
            let tail = |log: String| {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            };
            eprintln!(
                "---- ferry-hub log (last lines) ----\n{}\n---- ferry-spoke log (last lines) ----\n{}",
                tail(rig.hub.log()),
                tail(rig.spoke.log())
            );
            Err(e)
        }
    }
}

async fn measure(
    rig: &mut Rig,
    plan: &Plan,
    only: &[String],
    load_before: f64,
    background: f64,
) -> anyhow::Result<Report> {
    let want = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut block = vec![0u8; 1024 * 1024];
    ring::rand::SystemRandom::new()
        .fill(&mut block)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let block = Bytes::from(block);

    let mut tables = String::new();
    let mut json = json!({
        "quick": plan.quick,
        "runs": plan.runs,
        "machine": {
            "cpus": sys::cpus(),
            "loadavg_1m_before": load_before,
            "background_busy_share": background,
            "nginx": nginx_version(),
            "data_dir_base": plan.data_in.as_ref().map(|p| p.display().to_string()),
        },
    });
    let all = MachineSample::now();
    let (down, up) = (
        want("transfer") || want("download"),
        want("transfer") || want("upload"),
    );
    // Each scenario gives its table and its JSON; both are kept by name.
    let mut results: Vec<(&str, (String, Value))> = Vec::new();
    // Each scenario's files are removed once it is measured: the provider
    // folder is in memory (/dev/shm), and a full run writes tens of GiB.
    macro_rules! keep {
        ($name:expr, $result:expr $(,)?) => {{
            let result = $result;
            rig.remove_large_files();
            results.push(($name, result));
        }};
    }
    if down || up {
        let r = transfer(rig, plan, &block, down, up).await;
        keep!("transfer", r.context("transfer")?);
    }
    if want("memory") {
        keep!("memory", memory(rig, plan, &block).await.context("memory")?);
    }
    if want("sweep") {
        keep!("sweep", sweep(rig, plan, &block).await.context("sweep")?);
    }
    if want("control") {
        keep!("control", control(rig, plan).await.context("control")?);
    }
    if want("tunnel") {
        keep!("tunnel", tunnel(rig, plan, &block).await.context("tunnel")?);
    }
    if want("recovery") {
        keep!("recovery", recovery(rig, plan).await.context("recovery")?);
    }
    if want("resumable") {
        let r = resumable(rig, plan, &block).await;
        keep!("resumable", r.context("resumable")?);
    }
    let moto = ferry_tests::tools::Tool::MotoServer.find();
    if want("resumable_s3") && (moto.is_some() || !only.is_empty()) {
        let r = resumable_s3(rig, plan, &block).await;
        keep!("resumable_s3", r.context("resumable_s3")?);
    } else if want("resumable_s3") {
        // Every scenario was asked for, and this one needs a tool the
        // machine lacks: say so in the report rather than fail the rest.
        let why = "9. Resumable uploads to S3: not measured, moto is not installed; run ./scripts/install-test-deps.sh\n\n".to_owned();
        eprintln!("{why}");
        keep!("resumable_s3", (why, json!({ "measured": false })));
    }
    let s3s_fs = ferry_tests::tools::Tool::S3sFs.find();
    if want("s3") && (s3s_fs.is_some() || !only.is_empty()) {
        let r = crate::s3door::s3_door(rig, plan).await;
        keep!("s3", r.context("s3")?);
    } else if want("s3") {
        let why = "10. The S3 door: not measured, s3s-fs is not installed; run ./scripts/install-test-deps.sh --bench\n\n".to_owned();
        eprintln!("{why}");
        keep!("s3", (why, json!({ "measured": false })));
    }
    if want("limits") {
        keep!("limits", limits(rig, plan, &block).await.context("limits")?);
    }
    if want("dns") {
        keep!("dns", crate::dns::dns(plan).await.context("dns")?);
    }
    if want("https") {
        keep!(
            "https",
            crate::https::https(rig, plan, &block)
                .await
                .context("https")?,
        );
    }
    if want("index") {
        keep!(
            "index",
            crate::index::index(rig, plan).await.context("index")?,
        );
    }
    if want("client") {
        keep!(
            "client",
            crate::clientcp::client_cp(rig, plan)
                .await
                .context("client")?,
        );
    }
    for (name, (table, figures)) in results {
        tables.push_str(&table);
        json[name] = figures;
    }
    let busy = all.busy_until(&MachineSample::now());
    json["machine"]["busy_share_during_run"] = json!(busy);
    json["machine"]["loadavg_1m_after"] = json!(sys::loadavg());
    let header = format!(
        "ferry-bench{}: {} CPUs; before the run: load average {:.2}, {:.0} % busy; \
         during it {:.0} % busy (ferry, nginx and the client included); medians of {} runs",
        if plan.quick { " --quick" } else { "" },
        sys::cpus(),
        load_before,
        background * 100.0,
        busy * 100.0,
        plan.runs
    );
    Ok(Report {
        table: format!("{header}\n{tables}"),
        json,
    })
}

fn nginx_version() -> String {
    std::process::Command::new("/usr/sbin/nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default()
}

/// One timed transfer: throughput and the CPU of the processes on its path.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub(crate) mbps: f64,
    /// CPU of the middle process (spoke or proxy; the origin when direct).
    pub(crate) cpu_per_gib: f64,
    /// CPU of every server process on the path (client excluded).
    pub(crate) path_cpu_per_gib: f64,
}

/// The server processes a transfer through `via` runs on.
fn path_pids(rig: &Rig, via: Via) -> Vec<u32> {
    match via {
        Via::Direct => vec![rig.pid(Via::Direct)],
        Via::Nginx => vec![rig.pid(Via::Nginx), rig.pid(Via::Direct)],
        Via::Spoke | Via::SpokeTcp => vec![rig.pid(via), rig.pid(Via::Hub)],
        Via::Hub => vec![rig.pid(Via::Hub)],
        Via::NginxToHub => vec![rig.pid(Via::Nginx), rig.pid(Via::Hub)],
    }
}

async fn timed<F>(rig: &Rig, via: Via, bytes: u64, op: F) -> anyhow::Result<Sample>
where
    F: Future<Output = anyhow::Result<()>>,
{
    timed_on(&path_pids(rig, via), bytes, op).await
}

/// Times `op`, moving `bytes`, counting the CPU of `pids` (the first is
/// the "middle" process the tables report on its own).
pub(crate) async fn timed_on<F>(pids: &[u32], bytes: u64, op: F) -> anyhow::Result<Sample>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let cpu = |pids: &[u32]| -> Vec<f64> {
        pids.iter()
            .map(|p| sys::cpu_secs_with_children(*p))
            .collect()
    };
    let before = cpu(pids);
    let t0 = Instant::now();
    op.await?;
    let secs = t0.elapsed().as_secs_f64();
    let after = cpu(pids);
    let used: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let gib = bytes as f64 / GIB;
    Ok(Sample {
        mbps: bytes as f64 / secs / 1e6,
        cpu_per_gib: used[0] / gib,
        path_cpu_per_gib: used.iter().sum::<f64>() / gib,
    })
}

/// The SHA-256 of `size` bytes of `block` repeated, as a `Repr-Digest`.
fn repeated_digest(block: &[u8], size: u64) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        ctx.update(&block[..n]);
        left -= n as u64;
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(ctx.finish());
    format!("sha-256=:{b64}:")
}

#[derive(Debug, Default)]
pub(crate) struct Series {
    mbps: Vec<f64>,
    cpu: Vec<f64>,
    path_cpu: Vec<f64>,
    ratio: Vec<f64>,
    added_cpu: Vec<f64>,
}

impl Series {
    /// The columns of [`Series::row`].
    pub(crate) const COLUMNS: [&str; 7] = [
        "path",
        "MB/s",
        "ratio",
        "ratio min–max",
        "CPU-s/GiB",
        "path CPU-s/GiB",
        "added CPU-s/GiB",
    ];

    pub(crate) fn push(&mut self, s: Sample, base: Option<Sample>) {
        self.mbps.push(s.mbps);
        self.cpu.push(s.cpu_per_gib);
        self.path_cpu.push(s.path_cpu_per_gib);
        if let Some(b) = base {
            self.ratio.push(s.mbps / b.mbps);
            self.added_cpu.push(s.path_cpu_per_gib - b.path_cpu_per_gib);
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "mbps": median(&self.mbps),
            "ratio_to_direct": median(&self.ratio),
            "cpu_s_per_gib": median(&self.cpu),
            "path_cpu_s_per_gib": median(&self.path_cpu),
            "added_cpu_s_per_gib": median(&self.added_cpu),
            "runs": { "mbps": self.mbps, "ratio": self.ratio, "cpu_s_per_gib": self.cpu },
        })
    }

    pub(crate) fn row(&self, name: &str, base: bool) -> Vec<String> {
        vec![
            name.to_owned(),
            fmt(median(&self.mbps), 0),
            if base {
                "1.00".into()
            } else {
                fmt(median(&self.ratio), 2)
            },
            if base {
                "-".into()
            } else {
                spread(&self.ratio, 2)
            },
            fmt(median(&self.cpu), 3),
            fmt(median(&self.path_cpu), 3),
            if base {
                "-".into()
            } else {
                fmt(median(&self.added_cpu), 3)
            },
        ]
    }
}

/// Scenario: the large transfer through the spoke for an account with
/// every quota and limit configured but far from reached, against the
/// same for an account with none, pair by pair in alternating order: what
/// the quota checks and the shared bandwidth buckets cost.
async fn limits(rig: &Rig, plan: &Plan, block: &Bytes) -> anyhow::Result<(String, Value)> {
    let size = plan.transfer;
    let limited =
        ferry_tests::scenarios::tenant(&rig.hub.url(), "limited", &rig.hub.data_dir).await;
    let huge = 1i64 << 60;
    limited
        .admin
        .req(
            http::Method::PUT,
            &format!("/v1/accounts/{}/limits", limited.account_id),
        )
        .json(&json!({
            "stored_bytes": huge, "egress_bytes_per_month": huge,
            "requests_per_second": 1_000_000,
            "upload_bytes_per_second": huge, "download_bytes_per_second": huge,
        }))
        .send()
        .await
        .expect(200);
    let target = |key: &str| Target {
        addr: rig.addr(Via::Spoke),
        path: "/v1/connections/local/files/bench/limits.bin".into(),
        token: Some(key.to_owned()),
    };
    let targets = [target(&rig.tenant.key), target(&limited.key)];
    for t in &targets {
        rig.seed(t.clone(), size, block).await?;
    }
    // One untimed round each way first: the first transfers of a series
    // are slower (caches, connections, grants).
    for t in &targets {
        client::download(t).await?;
        client::upload(t, size, block.clone(), &[]).await?;
    }
    let (mut down, mut up): ([Series; 2], [Series; 2]) = Default::default();
    for run in 0..plan.runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut d = [Sample::default(); 2];
        let mut u = [Sample::default(); 2];
        for i in order {
            d[i] = timed(rig, Via::Spoke, size, async {
                let n = client::download(&targets[i]).await?;
                ensure!(n == size, "sent {n} of {size} bytes");
                Ok(())
            })
            .await?;
        }
        for i in order {
            u[i] = timed(rig, Via::Spoke, size, async {
                client::upload(&targets[i], size, block.clone(), &[]).await?;
                Ok(())
            })
            .await?;
        }
        down[0].push(d[0], None);
        down[1].push(d[1], Some(d[0]));
        up[0].push(u[0], None);
        up[1].push(u[1], Some(u[0]));
        eprintln!("limits: run {} of {} done", run + 1, plan.runs);
    }
    let t = up_down_table(
        format!(
            "Limits configured, not reached: {} MiB through the spoke (MB/s; ratio to the account without limits, pair by pair)",
            size / 1048576
        ),
        &["no limits", "limits"],
        &up,
        &down,
    );
    let json = json!({
        "bytes": size,
        "download": { "none": down[0].json(), "limited": down[1].json() },
        "upload": { "none": up[0].json(), "limited": up[1].json() },
    });
    Ok((t.render(), json))
}

/// A table of up and down series, one row per way, `names[i]` for the
/// i-th (the first is the baseline), and the per-run rows folded in.
pub(crate) fn up_down_table(title: String, names: &[&str], up: &[Series], dn: &[Series]) -> Table {
    let mut t = Table::new(title, &Series::COLUMNS);
    for (dir, series) in [("up", up), ("down", dn)] {
        for (i, s) in series.iter().enumerate() {
            t.row(s.row(&format!("{dir}: {}", names[i]), i == 0));
        }
    }
    t
}

/// Adds one run's (upload, download) samples of each way, the first
/// way's being the baseline of the others.
pub(crate) fn push_up_down(up: &mut [Series], dn: &mut [Series], got: &[(Sample, Sample)]) {
    for (i, (put, get)) in got.iter().enumerate() {
        up[i].push(*put, (i > 0).then_some(got[0].0));
        dn[i].push(*get, (i > 0).then_some(got[0].1));
    }
}

/// Scenario 1: A large download and upload: direct, through a spoke, through nginx.
async fn transfer(
    rig: &Rig,
    plan: &Plan,
    block: &Bytes,
    do_down: bool,
    do_up: bool,
) -> anyhow::Result<(String, Value)> {
    let size = plan.transfer;
    rig.seed(rig.file(Via::Hub, "bench/big.bin"), size, block)
        .await?;
    let digest = repeated_digest(block, size);
    let vias = [Via::Direct, Via::Spoke, Via::Nginx];
    let mut down: [Series; 3] = Default::default();
    let mut up: [Series; 3] = Default::default();
    let mut up_sha = Series::default();
    for run in 0..plan.runs {
        if do_down {
            download_run(rig, &vias, run, size, &mut down).await?;
        }
        if do_up {
            upload_run(rig, &vias, run, size, block, &digest, &mut up, &mut up_sha).await?;
        }
        eprintln!("transfer: run {} of {} done", run + 1, plan.runs);
    }
    let mut t = Table::new(
        format!(
            "Scenario 1: {} MiB transfer (MB/s; ratio to direct, pair by pair; CPU-s per GiB of the middle process, of every server process on the path, and that less the direct path's)",
            size / 1048576
        ),
        &Series::COLUMNS,
    );
    let names = ["direct (nginx origin)", "spoke", "nginx proxy"];
    let mut json = json!({ "bytes": size });
    if do_down {
        for (i, s) in down.iter().enumerate() {
            t.row(s.row(&format!("download {}", names[i]), i == 0));
        }
        json["download"] =
            json!({ "direct": down[0].json(), "spoke": down[1].json(), "nginx": down[2].json() });
    }
    if do_up {
        for (i, s) in up.iter().enumerate() {
            t.row(s.row(&format!("upload {}", names[i]), i == 0));
        }
        t.row(up_sha.row("upload spoke + SHA-256 Repr-Digest", false));
        json["upload"] = json!({ "direct": up[0].json(), "spoke": up[1].json(), "nginx": up[2].json(), "spoke_sha256": up_sha.json() });
    }
    Ok((t.render(), json))
}

async fn download_run(
    rig: &Rig,
    vias: &[Via; 3],
    run: usize,
    size: u64,
    down: &mut [Series; 3],
) -> anyhow::Result<()> {
    let got = in_rotation(vias, run, async |via| {
        timed_download(rig, via, &rig.file(via, "bench/big.bin"), size).await
    })
    .await?;
    for (i, s) in got.iter().enumerate() {
        down[i].push(*s, (i > 0).then_some(got[0]));
    }
    Ok(())
}

/// Downloads `target` through `via`, timed, and checks every byte came.
async fn timed_download(rig: &Rig, via: Via, target: &Target, size: u64) -> anyhow::Result<Sample> {
    timed(rig, via, size, async {
        let n = client::download(target).await?;
        anyhow::ensure!(n == size, "{} sent {n} of {size} bytes", via.name());
        Ok(())
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn upload_run(
    rig: &Rig,
    vias: &[Via; 3],
    run: usize,
    size: u64,
    block: &Bytes,
    digest: &str,
    up: &mut [Series; 3],
    up_sha: &mut Series,
) -> anyhow::Result<()> {
    // Steps 0 to 2 are the three paths; step 3 is the spoke with SHA-256.
    let got = in_rotation(&[0usize, 1, 2, 3], run, async |step| {
        let via = if step == 3 { Via::Spoke } else { vias[step] };
        let target = rig.file(via, &format!("bench/up-{}-{step}.bin", via.name()));
        let headers = if step == 3 {
            vec![("repr-digest", digest.to_owned())]
        } else {
            Vec::new()
        };
        timed(rig, via, size, async {
            client::upload(&target, size, block.clone(), &headers).await?;
            Ok(())
        })
        .await
    })
    .await?;
    for i in 0..3 {
        up[i].push(got[i], (i > 0).then_some(got[0]));
    }
    up_sha.push(got[3], Some(got[0]));
    Ok(())
}

/// Runs `downloads` downloads of `file` and `uploads` uploads of `size`
/// bytes at once through `via`; returns the seconds taken.
async fn burst(
    rig: &Rig,
    via: Via,
    file: &str,
    downloads: usize,
    uploads: usize,
    size: u64,
    block: &Bytes,
) -> anyhow::Result<f64> {
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for _ in 0..downloads {
        let target = rig.file(via, file);
        tasks.spawn(async move {
            let n = client::download(&target).await?;
            anyhow::ensure!(n == size, "a download got {n} of {size} bytes");
            Ok(())
        });
    }
    for i in 0..uploads {
        let target = rig.file(via, &format!("bench/burst/{i}.bin"));
        let block = block.slice(..block.len().min(size as usize).max(1));
        tasks.spawn(async move {
            client::upload(&target, size, block, &[]).await?;
            Ok(())
        });
    }
    let limit = Duration::from_secs(600);
    while let Some(done) = tokio::time::timeout(limit, tasks.join_next())
        .await
        .context("a burst took over 10 minutes")?
    {
        done??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Scenario 2: The spoke's peak memory with many transfers at once, at two file
/// sizes 16 times apart.
async fn memory(rig: &mut Rig, plan: &Plan, block: &Bytes) -> anyhow::Result<(String, Value)> {
    let idle = sys::rss(fresh_spoke(rig));
    let mut t = Table::new(
        format!(
            "2. Spoke memory: {} downloads and {} uploads at once (peak RSS, the largest of {} runs)",
            plan.mem_downloads,
            plan.mem_uploads,
            plan.runs.min(3)
        ),
        &[
            "file size",
            "peak RSS MiB",
            "heap in use MiB",
            "heap kept free MiB",
            "transfers then",
            "MB/s moved",
            "seconds",
        ],
    );
    let mut rows = Vec::new();
    for size in [plan.mem_file, plan.mem_file * 16] {
        let file = format!("bench/mem-{size}.bin");
        rig.seed(rig.file(Via::Hub, &file), size, block).await?;
        let mut peaks = Vec::new();
        let mut secs = Vec::new();
        let mut heaps = Vec::new();
        for _ in 0..plan.runs.min(3) {
            // A fresh process: the heap keeps what earlier scenarios used.
            let pid = fresh_spoke(rig);
            let watch = HeapWatch::start(rig.spoke.metrics_url());
            let s = burst(
                rig,
                Via::Spoke,
                &file,
                plan.mem_downloads,
                plan.mem_uploads,
                size,
                block,
            )
            .await?;
            peaks.push(sys::peak_rss(pid) as f64);
            secs.push(s);
            heaps.push(watch.stop().await);
        }
        let peak = peaks.iter().copied().fold(0.0, f64::max);
        // The run with the most heap in use, and what was kept free then.
        let heap = heaps.iter().flatten().copied().max_by_key(|h| h.in_use);
        let moved = (plan.mem_downloads + plan.mem_uploads) as f64 * size as f64;
        let s = median(&secs);
        let mib = |b: u64| fmt(b as f64 / 1048576.0, 1);
        t.row(vec![
            human_size(size),
            fmt(peak / 1048576.0, 1),
            heap.map_or("–".into(), |h| mib(h.in_use)),
            heap.map_or("–".into(), |h| mib(h.free)),
            heap.map_or("–".into(), |h| h.transfers.to_string()),
            fmt(moved / s / 1e6, 0),
            fmt(s, 2),
        ]);
        let heaps: Vec<Value> = heaps
            .iter()
            .map(|h| h.map_or(Value::Null, |h| json!({ "in_use_bytes": h.in_use, "free_bytes": h.free, "active_transfers": h.transfers })))
            .collect();
        rows.push(json!({ "file_bytes": size, "peak_rss_bytes": peak, "seconds": s, "runs_peak_rss_bytes": peaks, "runs_heap_at_most_in_use": heaps }));
        eprintln!("memory: {} done", human_size(size));
    }
    let json = json!({
        "downloads": plan.mem_downloads,
        "uploads": plan.mem_uploads,
        "idle_rss_bytes": idle,
        "sizes": rows,
    });
    Ok((
        format!(
            "{}(idle RSS before: {:.1} MiB)\n",
            t.render(),
            idle as f64 / 1048576.0
        ),
        json,
    ))
}

/// The spoke's heap figures (`heap_in_use_bytes`, `heap_free_bytes` from
/// its `/metrics`) at the sample with the most in use.
#[derive(Debug, Clone, Copy)]
struct HeapSample {
    in_use: u64,
    free: u64,
    /// `active_transfers` at that sample.
    transfers: u64,
}

/// Samples the spoke's heap every 100 ms, from start to stop, so that the
/// memory scenario tells the heap's live bytes from what it keeps free.
struct HeapWatch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Option<HeapSample>>,
}

impl HeapWatch {
    fn start(metrics_url: String) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let addr = metrics_url.strip_prefix("http://")?.parse().ok()?;
            let mut most: Option<HeapSample> = None;
            // Bounded: a burst is cut at 10 minutes.
            for _ in 0..6000 {
                if let Ok(text) = client::get_text(addr, "/metrics").await {
                    let gauge = |name: &str| {
                        text.lines()
                            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                            .and_then(|v| v.trim().parse::<f64>().ok())
                            .map(|v| v as u64)
                    };
                    if let (Some(in_use), Some(free), Some(transfers)) = (
                        gauge("ferry_spoke_heap_in_use_bytes"),
                        gauge("ferry_spoke_heap_free_bytes"),
                        gauge("ferry_spoke_active_transfers"),
                    ) && most.is_none_or(|m| in_use > m.in_use)
                    {
                        most = Some(HeapSample {
                            in_use,
                            free,
                            transfers,
                        });
                    }
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            most
        });
        HeapWatch { stop, task }
    }

    async fn stop(self) -> Option<HeapSample> {
        let _ = self.stop.send(());
        self.task.await.ok().flatten()
    }
}

/// Restarts the QUIC spoke (its tunnel up again) and returns its new pid,
/// so that a memory reading starts from a fresh heap.
fn fresh_spoke(rig: &mut Rig) -> u32 {
    rig.spoke.restart();
    let pid = rig.pid(Via::Spoke);
    sys::reset_peak_rss(pid);
    pid
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

/// Scenario 3: Aggregate download throughput and spoke memory against concurrency.
async fn sweep(rig: &mut Rig, plan: &Plan, block: &Bytes) -> anyhow::Result<(String, Value)> {
    let size = plan.sweep_file;
    let file = "bench/sweep.bin";
    rig.seed(rig.file(Via::Hub, file), size, block).await?;
    let runs = plan.runs.min(3);
    let mut t = Table::new(
        format!(
            "3. Concurrent downloads of a {}: aggregate MB/s and spoke peak RSS (medians of {runs})",
            human_size(size)
        ),
        &[
            "concurrency",
            "spoke MB/s",
            "nginx MB/s",
            "spoke/nginx",
            "min–max",
            "spoke peak RSS MiB",
        ],
    );
    let mut points = Vec::new();
    for &c in &plan.sweep {
        let (mut spoke, mut nginx, mut rss, mut ratio) = (vec![], vec![], vec![], vec![]);
        let pid = fresh_spoke(rig);
        for run in 0..runs {
            let got = in_rotation(&[Via::Spoke, Via::Nginx], run, async |via| {
                let secs = burst(rig, via, file, c, 0, size, block).await?;
                Ok((c as u64 * size) as f64 / secs / 1e6)
            })
            .await?;
            rss.push(sys::peak_rss(pid) as f64);
            spoke.push(got[0]);
            nginx.push(got[1]);
            ratio.push(got[0] / got[1]);
        }
        t.row(vec![
            c.to_string(),
            fmt(median(&spoke), 0),
            fmt(median(&nginx), 0),
            fmt(median(&ratio), 2),
            spread(&ratio, 2),
            fmt(median(&rss) / 1048576.0, 1),
        ]);
        points.push(json!({
            "concurrency": c,
            "spoke_mbps": median(&spoke),
            "nginx_mbps": median(&nginx),
            "spoke_to_nginx": median(&ratio),
            "spoke_peak_rss_bytes": median(&rss),
        }));
    }
    Ok((t.render(), json!({ "file_bytes": size, "points": points })))
}

/// Scenario 4: Small authenticated listings: the hub directly, through a spoke's
/// tunnel, and through nginx to the hub.
async fn control(rig: &Rig, plan: &Plan) -> anyhow::Result<(String, Value)> {
    let small = Bytes::from(vec![b'x'; 1024]);
    for i in 0..10 {
        rig.seed(rig.file(Via::Hub, &format!("ctl/f{i}.txt")), 1024, &small)
            .await?;
    }
    let vias = [Via::Hub, Via::Spoke, Via::NginxToHub];
    let mut rps: [Vec<f64>; 3] = Default::default();
    let mut p50: [Vec<f64>; 3] = Default::default();
    let mut p99: [Vec<f64>; 3] = Default::default();
    let mut ratio: [Vec<f64>; 3] = Default::default();
    let mut added: [Vec<f64>; 3] = Default::default();
    let mut answered: [usize; 3] = [0; 3];
    for run in 0..plan.runs {
        let got = in_rotation(&vias, run, async |via| {
            client::closed_loop(
                &rig.listing(via),
                plan.control_conns,
                plan.control_time,
                plan.control_max,
            )
            .await
            .with_context(|| format!("control requests via {}", via.name()))
        })
        .await?;
        let base = got[0];
        for (i, r) in got.iter().enumerate() {
            rps[i].push(r.rps);
            p50[i].push(r.p50_ms);
            p99[i].push(r.p99_ms);
            ratio[i].push(r.rps / base.rps);
            added[i].push(r.p99_ms - base.p99_ms);
            answered[i] += r.requests;
        }
    }
    let mut t = Table::new(
        format!(
            "4. Control requests: GET a 10-entry listing, {} connections, closed loop, {:.1} s per run",
            plan.control_conns,
            plan.control_time.as_secs_f64()
        ),
        &[
            "path",
            "req/s",
            "ratio",
            "ratio min–max",
            "p50 ms",
            "p99 ms",
            "p99 added ms",
            "p99 added min–max",
        ],
    );
    let names = ["hub directly", "spoke (QUIC tunnel)", "nginx proxy to hub"];
    let mut json =
        json!({ "connections": plan.control_conns, "seconds": plan.control_time.as_secs_f64() });
    for i in 0..3 {
        t.row(vec![
            names[i].into(),
            fmt(median(&rps[i]), 0),
            fmt(median(&ratio[i]), 2),
            spread(&ratio[i], 2),
            fmt(median(&p50[i]), 2),
            fmt(median(&p99[i]), 2),
            fmt(median(&added[i]), 2),
            spread(&added[i], 2),
        ]);
        json[vias[i].name()] = json!({
            "rps": median(&rps[i]),
            "ratio_to_hub": median(&ratio[i]),
            "p50_ms": median(&p50[i]),
            "p99_ms": median(&p99[i]),
            "p99_added_ms": median(&added[i]),
            "runs_rps": rps[i],
            "requests": answered[i],
        });
    }
    Ok((t.render(), json))
}

/// Scenario 5: Bulk bytes through the tunnel itself: a download from the hub's
/// memory provider, which a spoke cannot reach directly, over QUIC and over
/// the TCP fallback.
async fn tunnel(rig: &Rig, plan: &Plan, block: &Bytes) -> anyhow::Result<(String, Value)> {
    let size = plan.tunnel_bytes;
    rig.seed(rig.mem_file(Via::Hub, "bulk.bin"), size, block)
        .await?;
    let vias = [Via::Hub, Via::Spoke, Via::SpokeTcp];
    let mut series: [Series; 3] = Default::default();
    let mut quic_to_tcp = Vec::new();
    for run in 0..plan.runs {
        let got = in_rotation(&vias, run, async |via| {
            timed_download(rig, via, &rig.mem_file(via, "bulk.bin"), size).await
        })
        .await?;
        for (i, s) in got.iter().enumerate() {
            series[i].push(*s, (i > 0).then_some(got[0]));
        }
        quic_to_tcp.push(got[1].mbps / got[2].mbps);
    }
    let mut t = Table::new(
        format!(
            "5. Tunnel bulk: {} MiB from the hub's memory provider (ratio to the hub directly; CPU of the spoke, and of spoke + hub)",
            size / 1048576
        ),
        &Series::COLUMNS,
    );
    t.row(series[0].row("hub directly", true));
    t.row(series[1].row("spoke, tunnel on QUIC", false));
    t.row(series[2].row("spoke, tunnel on TLS over TCP", false));
    let text = format!(
        "{}QUIC / TCP throughput: {} ({} over {} runs)\n",
        t.render(),
        fmt(median(&quic_to_tcp), 2),
        spread(&quic_to_tcp, 2),
        quic_to_tcp.len()
    );
    let json = json!({
        "bytes": size,
        "hub": series[0].json(),
        "quic": series[1].json(),
        "tcp": series[2].json(),
        "quic_to_tcp": median(&quic_to_tcp),
        "runs_quic_to_tcp": quic_to_tcp,
    });
    Ok((text, json))
}

/// Scenario 6: How long after a restarted hub listens again the spoke's
/// tunnel is back (the spoke runs with ferry's default reconnection
/// settings): after a quick restart, and after the hub was away long enough
/// for the spoke's backoff to reach its cap.
async fn recovery(rig: &mut Rig, plan: &Plan) -> anyhow::Result<(String, Value)> {
    let mut quick = Vec::new();
    for _ in 0..plan.runs {
        quick.push(restart_and_wait(rig, Duration::ZERO).await?);
    }
    let mut long = Vec::new();
    for _ in 0..plan.runs.min(3) {
        long.push(restart_and_wait(rig, plan.outage).await?);
    }
    let mut t = Table::new(
        "6. Recovery: the hub stopped (SIGTERM) and started again on the same ports",
        &["figure", "median s", "worst s"],
    );
    let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let firsts = |v: &[(f64, f64)]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    let seconds = |v: &[(f64, f64)]| v.iter().map(|b| b.1).collect::<Vec<_>>();
    t.row(vec![
        "hub restart (stop to listening)".into(),
        fmt(median(&seconds(&quick)), 3),
        fmt(worst(&seconds(&quick)), 3),
    ]);
    t.row(vec![
        "tunnel back after the hub listens".into(),
        fmt(median(&firsts(&quick)), 3),
        fmt(worst(&firsts(&quick)), 3),
    ]);
    t.row(vec![
        format!("  same, hub away {:.0} s first", plan.outage.as_secs_f64()),
        fmt(median(&firsts(&long)), 3),
        fmt(worst(&firsts(&long)), 3),
    ]);
    let json = json!({
        "tunnel_back_after_listen_s": median(&firsts(&quick)),
        "tunnel_back_worst_s": worst(&firsts(&quick)),
        "hub_restart_s": median(&seconds(&quick)),
        "runs_tunnel_back_s": firsts(&quick),
        "outage_s": plan.outage.as_secs_f64(),
        "after_outage_tunnel_back_s": median(&firsts(&long)),
        "after_outage_worst_s": worst(&firsts(&long)),
    });
    Ok((t.render(), json))
}

/// Scenario 8: resumable uploads. A tus upload of the transfer size
/// through the spoke in 64 MiB and in 8 MiB chunks (one connection, one
/// PATCH after another, as tus clients send them) against a plain PUT
/// through the same spoke; then, a spoke killed (SIGKILL) while it holds
/// an upload's lease, and the time until another node takes the next
/// chunk of that upload.
async fn resumable(rig: &mut Rig, plan: &Plan, block: &Bytes) -> anyhow::Result<(String, Value)> {
    let size = plan.transfer;
    let key = rig.tenant.key.clone();
    let series = tus_against_put(rig, plan, block, "local", size, "resumable").await?;
    let mut moves = Vec::new();
    for run in 0..plan.runs.min(3) {
        moves.push(move_on_after_a_kill(rig, &key, run, block).await?);
        fresh_spoke(rig);
    }
    let mut t = Table::new(
        format!(
            "8. Resumable uploads, {} MiB through the spoke (MB/s; ratio to the plain PUT, pair by pair; CPU-s per GiB)",
            size / 1048576
        ),
        &Series::COLUMNS,
    );
    let names = ["plain PUT", "tus, 64 MiB chunks", "tus, 8 MiB chunks"];
    for (i, s) in series.iter().enumerate() {
        t.row(s.row(names[i], i == 0));
    }
    let worst = moves.iter().copied().fold(0.0, f64::max);
    t.row(vec![
        "a killed spoke's upload taken by another node (s, median / worst)".into(),
        fmt(median(&moves), 3),
        fmt(worst, 3),
        String::new(),
        String::new(),
        String::new(),
    ]);
    let json = json!({
        "bytes": size,
        "put": series[0].json(),
        "tus_64mib": series[1].json(),
        "tus_8mib": series[2].json(),
        "kill_to_next_node_s": median(&moves),
        "kill_to_next_node_worst_s": worst,
        "runs_kill_to_next_node_s": moves,
    });
    Ok((t.render(), json))
}

/// `size` bytes through the spoke into `connection`, `plan.runs` times in
/// rotation: a plain `PUT`, then tus uploads in 64 MiB and in 8 MiB chunks
/// (one connection, one `PATCH` after another, as tus clients send them),
/// each pair by pair against the `PUT`.
async fn tus_against_put(
    rig: &Rig,
    plan: &Plan,
    block: &Bytes,
    connection: &str,
    size: u64,
    label: &str,
) -> anyhow::Result<[Series; 3]> {
    let key = &rig.tenant.key;
    let mut series: [Series; 3] = Default::default();
    for run in 0..plan.runs {
        let got = in_rotation(&[0usize, 1, 2], run, async |step| {
            let addr = rig.addr(Via::Spoke);
            // One name per path, written again each run: the provider
            // keeps its files in memory, and a file per run would fill it.
            let name = format!("bench/tus-{step}.bin");
            timed(rig, Via::Spoke, size, async {
                if step == 0 {
                    let target = Target {
                        addr,
                        path: format!("/v1/connections/{connection}/files/{name}"),
                        token: Some(key.clone()),
                    };
                    client::upload(&target, size, block.clone(), &[]).await?;
                } else {
                    let chunk = if step == 1 { 64 << 20 } else { 8 << 20 };
                    let url = client::tus_create(addr, key, connection, &name, size).await?;
                    client::tus_patch(addr, key, &url, 0, size, chunk, block).await?;
                }
                Ok(())
            })
            .await
        })
        .await?;
        for (i, s) in series.iter_mut().enumerate() {
            s.push(got[i], (i > 0).then_some(got[0]));
        }
        eprintln!("{label}: run {} of {} done", run + 1, plan.runs);
    }
    Ok(series)
}

/// Scenario 9: resumable uploads to S3. moto's S3 behind a proxy that
/// holds each request `delay` before passing it on (none, then 20 ms, as a
/// provider farther away); through the spoke, a plain `PUT` (OpenDAL's
/// multipart writer, two parts in flight) against a tus upload in 64 MiB
/// and 8 MiB chunks (its bytes straight into the session's multipart
/// upload, the next part streaming while the one before waits for its
/// answer). moto is a Python server on the same cores: the figures compare
/// ferry's two paths to one S3, not ferry with S3.
async fn resumable_s3(
    rig: &mut Rig,
    plan: &Plan,
    block: &Bytes,
) -> anyhow::Result<(String, Value)> {
    let moto = ferry_tests::tools::Tool::MotoServer.path();
    ensure!(
        moto.exists(),
        "moto is not installed ({}): run ./scripts/install-test-deps.sh first",
        moto.display()
    );
    // moto holds its objects in memory: a quarter of a GiB at most.
    let size = plan.transfer.min(256 << 20);
    let server = ferry_tests::providers::StorageServer::s3("bench");
    let proxy = ferry_tests::fault_proxy::FaultProxy::start(server.addr).await;
    let created = rig
        .tenant
        .api
        .post("/v1/connections")
        .json(&json!({
            "name": "s3",
            "provider": "s3",
            "config": server.config("bench", Some(&proxy.url())),
        }))
        .send()
        .await;
    ensure!(
        created.status == http::StatusCode::CREATED,
        "cannot create the S3 connection: {}",
        created.status
    );
    let names = ["plain PUT", "tus, 64 MiB chunks", "tus, 8 MiB chunks"];
    let mut t = Table::new(
        format!(
            "9. Resumable uploads to S3 (moto), {} MiB through the spoke (MB/s; ratio to the plain PUT, pair by pair; CPU-s per GiB)",
            size / 1048576
        ),
        &Series::COLUMNS,
    );
    let mut figures = serde_json::Map::new();
    for delay_ms in [0u64, 20] {
        proxy.delay(Duration::from_millis(delay_ms));
        let label = format!("resumable_s3, {delay_ms} ms");
        let series = tus_against_put(rig, plan, block, "s3", size, &label).await?;
        for (i, s) in series.iter().enumerate() {
            t.row(s.row(&format!("{}, {delay_ms} ms", names[i]), i == 0));
        }
        figures.insert(
            format!("delay_{delay_ms}ms"),
            json!({
                "put": series[0].json(),
                "tus_64mib": series[1].json(),
                "tus_8mib": series[2].json(),
            }),
        );
    }
    figures.insert("bytes".into(), json!(size));
    Ok((t.render(), Value::Object(figures)))
}

/// Starts a 64 MiB upload through the spoke, kills the spoke while a PATCH
/// streams, and returns the seconds from the kill until the TCP spoke
/// (another node) has taken a chunk at the offset the store holds.
async fn move_on_after_a_kill(
    rig: &mut Rig,
    key: &str,
    run: usize,
    block: &Bytes,
) -> anyhow::Result<f64> {
    let (a, b) = (rig.addr(Via::Spoke), rig.addr(Via::SpokeTcp));
    let mib = 1 << 20;
    let url = client::tus_create(
        a,
        key,
        "local",
        &format!("bench/tus-kill-{run}.bin"),
        64 * mib,
    )
    .await?;
    client::tus_patch(a, key, &url, 0, 16 * mib, 16 * mib, block).await?;
    // A PATCH that is still streaming when the spoke dies: 8 MiB of its
    // 48 sent, the rest held back. The spoke counts an append's bytes once
    // it holds the lease and writes them: the kill waits for that.
    let spoke_metrics = rig.spoke.metrics_url();
    let uploaded = async || {
        ferry_tests::metric(
            &spoke_metrics,
            "ferry_spoke_content_bytes_total",
            &[("direction", "upload")],
        )
        .await
    };
    let before = uploaded().await;
    let (feed, streaming) = client::tus_patch_fed(a, key, &url, 16 * mib, 48 * mib).await?;
    for _ in 0..8 {
        feed.send(block.clone()).await.ok();
    }
    let writing = ferry_tests::eventually(Duration::from_secs(30), async || {
        uploaded().await >= before + (8 * mib) as f64
    })
    .await;
    anyhow::ensure!(
        writing,
        "the spoke never wrote the held PATCH's first 8 MiB"
    );
    rig.spoke.kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(60);
    loop {
        let tried = match client::tus_offset(b, key, &url).await {
            Ok(at) if at >= 32 * mib => bail!("the upload moved past the kill ({at} bytes)"),
            Ok(at) => client::tus_patch(b, key, &url, at, mib, mib, block).await,
            Err(e) => Err(e),
        };
        match tried {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                bail!("no other node took the upload within 60 s of the kill (last: {e:#})")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let took = killed.elapsed().as_secs_f64();
    drop(feed);
    streaming.abort();
    Ok(took)
}

/// Stops the hub, waits `away`, starts it on the same ports, and returns
/// (seconds until the spoke's tunnel is back after the hub listens, seconds
/// from stop to listening less `away`).
async fn restart_and_wait(rig: &mut Rig, away: Duration) -> anyhow::Result<(f64, f64)> {
    let before = rig.spoke.daemon().count("tunnel up");
    let stop = Instant::now();
    rig.hub.stop();
    tokio::time::sleep(away).await;
    rig.hub.restart_on_same_ports();
    let listening = Instant::now();
    let deadline = listening + Duration::from_secs(120);
    while rig.spoke.daemon().count("tunnel up") <= before {
        if Instant::now() > deadline {
            bail!("the spoke's tunnel did not return within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((
        listening.elapsed().as_secs_f64(),
        (listening - stop).saturating_sub(away).as_secs_f64(),
    ))
}
