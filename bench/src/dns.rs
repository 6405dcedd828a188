//! Scenario 7: the hub's steering DNS against NSD serving a static zone of
//! the same names, both driven by dnsperf in the same run, and the time a
//! killed spoke takes to leave the answers.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_tests::process::Daemon;
use ferry_tests::scenarios::tenant;
use ferry_tests::{Api, Hub, HubOptions, Spoke, SpokeOptions};
use serde_json::{Value, json};

use crate::Plan;
use crate::report::{Table, fmt, median, spread};

const ZONE: &str = "ferry.bench";
/// The client network the reports are made from, and the ECS dnsperf sends.
const CLIENT_NET: &str = "127.0.10.1";
/// ECS option 8 for 127.0.10.0/24: family 1, source 24, scope 0, 3 octets.
const ECS_OPTION: &str = "8:000118007f000a";

/// dnsperf's clients, as the figures were measured.
const CLIENTS: &str = "8";

/// What dnsperf is pointed at in one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Nsd,
    FerryEcs,
    FerrySource,
}

pub async fn dns(plan: &Plan) -> anyhow::Result<(String, Value)> {
    for tool in ["dnsperf", "nsd"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            bail!(
                "{tool} is not installed (Debian's package; scripts/install-test-deps.sh installs it)"
            );
        }
    }
    let work = tempfile::tempdir()?;
    let hub = Hub::start_with(HubOptions {
        extra_toml: format!(
            "[dns]\nlisten = \"127.0.0.1:0\"\nzone = \"{ZONE}\"\n\n[dns.rate_limit]\nresponses_per_sec = 0\n"
        ),
        log_level: Some("warn,ferry_hub=info".into()),
        default_timings: true,
        ..HubOptions::default()
    });
    let server = hub.dns_addr.context("the hub runs DNS")?;
    let mut fra1 = spoke_on(&hub, "fra1", "127.0.0.2")?;
    let _ams1 = spoke_on(&hub, "ams1", "127.0.0.3")?;
    // Measurements for the ECS network and for dnsperf's own address:
    // fra1 near, ams1 far.
    let t = tenant(&hub.url(), "bench", &hub.data_dir).await;
    for source in [CLIENT_NET, "127.0.0.1"] {
        let client = Api::from_source(hub.url(), source.parse()?).as_token(&t.key);
        wait_until(Duration::from_secs(20), async || {
            let r = client
                .post("/v1/steering/reports")
                .json(&json!({ "samples": [
                    { "spoke": "fra1", "rtt_ms": 5.0 }, { "spoke": "ams1", "rtt_ms": 60.0 }
                ]}))
                .send()
                .await;
            r.status == 202 && r.json()["accepted"] == 2
        })
        .await
        .context("the spokes never became eligible")?;
    }
    let nsd = Nsd::start(work.path())?;

    let secs = if plan.quick { 1 } else { 5 };
    let targets = [Target::Nsd, Target::FerryEcs, Target::FerrySource];
    let queries = work.path().join("queries.txt");
    std::fs::write(&queries, format!("api.{ZONE} A\n").repeat(1000))?;
    let mut qps: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    // The server's CPU (user and system, its threads and children) per
    // query answered, in microseconds.
    let mut cpu_us: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let hub_pid = hub.daemon().pid().context("the hub runs")?;
    let nsd_pid = nsd.daemon.pid().context("NSD runs")?;
    for run in 0..plan.runs {
        for k in 0..targets.len() {
            let i = (run + k) % targets.len();
            let (addr, ecs, pid) = match targets[i] {
                Target::Nsd => (nsd.addr, true, nsd_pid),
                Target::FerryEcs => (server, true, hub_pid),
                Target::FerrySource => (server, false, hub_pid),
            };
            let before = crate::sys::cpu_secs_of_tree(pid);
            let (rate, answered) = dnsperf(addr, &queries, secs, ecs)?;
            let used = crate::sys::cpu_secs_of_tree(pid) - before;
            qps[i].push(rate);
            cpu_us[i].push(used * 1e6 / answered.max(1.0));
        }
    }
    let cpu = |i: usize| fmt(median(&cpu_us[i]), 2);
    let [nsd_qps, ecs_qps, source_qps] = [0, 1, 2].map(|i| median(&qps[i]));
    // Each run's ferry figures against that run's NSD.
    let to_nsd =
        |i: usize| -> Vec<f64> { qps[i].iter().zip(&qps[0]).map(|(f, n)| f / n).collect() };
    let (ecs_ratio, source_ratio) = (to_nsd(1), to_nsd(2));

    // A killed spoke: how long until DNS stops answering it.
    let mut out_after = Vec::new();
    for _ in 0..plan.runs.min(3) {
        let fra1_ip: IpAddr = "127.0.0.2".parse()?;
        let ams1_ip: IpAddr = "127.0.0.3".parse()?;
        wait_until(Duration::from_secs(20), async || {
            api_answer(server).await == [fra1_ip]
        })
        .await
        .context("fra1 was never answered")?;
        fra1.kill();
        let killed = Instant::now();
        wait_until(Duration::from_secs(30), async || {
            api_answer(server).await == [ams1_ip]
        })
        .await
        .context("a killed fra1 was still answered after 30 s")?;
        out_after.push(killed.elapsed().as_secs_f64());
        fra1.restart();
    }
    let worst = out_after.iter().copied().fold(0.0, f64::max);

    let mut t = Table::new(
        format!(
            "7. Steering DNS: dnsperf -c {CLIENTS}, {secs} s per run, queries for api.{ZONE} A; NSD serves a static zone of the same names"
        ),
        &[
            "server",
            "queries/s",
            "vs NSD, run by run",
            "min–max",
            "server CPU µs/query",
        ],
    );
    t.row(vec![
        "NSD 4 (static zone)".into(),
        fmt(nsd_qps, 0),
        "1.00".into(),
        spread(&qps[0], 0),
        cpu(0),
    ]);
    t.row(vec![
        "ferry hub, ECS, steering lookup".into(),
        fmt(ecs_qps, 0),
        fmt(median(&ecs_ratio), 2),
        spread(&ecs_ratio, 2),
        cpu(1),
    ]);
    t.row(vec![
        "ferry hub, by source address".into(),
        fmt(source_qps, 0),
        fmt(median(&source_ratio), 2),
        spread(&source_ratio, 2),
        cpu(2),
    ]);
    t.row(vec![
        "killed spoke out of the answers, s".into(),
        format!("{} (worst {})", fmt(median(&out_after), 2), fmt(worst, 2)),
        "goal ≤ 3".into(),
        String::new(),
        String::new(),
    ]);
    let json = json!({
        "nsd_qps": nsd_qps,
        "ferry_ecs_qps": ecs_qps,
        "ferry_source_qps": source_qps,
        "ecs_vs_nsd": median(&ecs_ratio),
        "source_vs_nsd": median(&source_ratio),
        "runs_qps": { "nsd": qps[0], "ferry_ecs": qps[1], "ferry_source": qps[2] },
        "runs_server_cpu_us_per_query": { "nsd": cpu_us[0], "ferry_ecs": cpu_us[1], "ferry_source": cpu_us[2] },
        "killed_spoke_out_s": median(&out_after),
        "killed_spoke_out_worst_s": worst,
        "runs_killed_spoke_out_s": out_after,
        "nsd": nsd_version(),
    });
    Ok((t.render(), json))
}

fn spoke_on(hub: &Hub, name: &str, ip: &str) -> anyhow::Result<Spoke> {
    let token = hub.spoke_token(name, None);
    let opts = SpokeOptions {
        listen_ip: Some(ip.parse()?),
        default_timings: true,
        log_level: Some("warn,ferry_spoke=info".into()),
        ..SpokeOptions::default()
    };
    Spoke::start_with(hub, name, &token, &opts)
        .map_err(|log| anyhow::anyhow!("{name} did not start:\n{log}"))
}

/// Polls `check` every 10 ms until it holds; false after `limit`.
async fn wait_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("not within {limit:?}")
}

async fn api_answer(server: SocketAddr) -> Vec<IpAddr> {
    let m = ferry_tests::dns::ask(
        server,
        false,
        &format!("api.{ZONE}."),
        hickory_proto::rr::RecordType::A,
        None,
    )
    .await;
    ferry_tests::dns::addresses(&m)
}

/// Runs dnsperf against `server` for `secs` and returns its queries per
/// second; fails if it lost more than one query in a thousand.
/// Runs dnsperf against `server`: its queries per second and the queries
/// it got answers to.
fn dnsperf(server: SocketAddr, queries: &Path, secs: u64, ecs: bool) -> anyhow::Result<(f64, f64)> {
    let mut cmd = Command::new("dnsperf");
    cmd.args([
        "-s",
        &server.ip().to_string(),
        "-p",
        &server.port().to_string(),
    ])
    .arg("-d")
    .arg(queries)
    .args(["-c", CLIENTS, "-l", &secs.to_string()]);
    if ecs {
        cmd.args(["-E", ECS_OPTION]);
    }
    let out = cmd.output().context("dnsperf runs")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))?
            .split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let (Some(qps), Some(sent), Some(lost), Some(completed)) = (
        field("Queries per second"),
        field("Queries sent"),
        field("Queries lost"),
        field("Queries completed"),
    ) else {
        bail!(
            "dnsperf printed no figures:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if lost > sent / 1000.0 {
        bail!("dnsperf lost {lost} of {sent} queries to {server}:\n{text}");
    }
    Ok((qps, completed))
}

/// NSD on loopback, serving the same names from a zone file; stopped with
/// SIGTERM when dropped, so that its child processes go too.
struct Nsd {
    addr: SocketAddr,
    daemon: Daemon,
}

impl Drop for Nsd {
    fn drop(&mut self) {
        self.daemon.stop();
    }
}

impl Nsd {
    /// Starts NSD on a port free for UDP and TCP both (it binds both); a
    /// start that loses the port to another program meanwhile is tried
    /// again on another, three times at most.
    fn start(dir: &Path) -> anyhow::Result<Nsd> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_once(dir) {
                Ok(nsd) => return Ok(nsd),
                Err(e) if tries < 3 && format!("{e:#}").contains("Address already in use") => {
                    eprintln!("NSD lost its port to another program; trying another");
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_once(dir: &Path) -> anyhow::Result<Nsd> {
        // A port free for UDP whose TCP twin is free too.
        let port = loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let port = udp.local_addr()?.port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        std::fs::write(
            dir.join("zone"),
            format!(
                "$ORIGIN {ZONE}.\n$TTL 20\n@ IN SOA hub.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 20\n\
                 @ IN NS hub.{ZONE}.\nhub IN A 127.0.0.1\napi IN A 127.0.0.2\nfra1 IN A 127.0.0.2\nams1 IN A 127.0.0.3\n"
            ),
        )?;
        let d = dir.display();
        // One server process, as ferry answers UDP on one thread; no rate
        // limit (Debian's NSD limits each /24 to 200 answers a second).
        std::fs::write(
            dir.join("nsd.conf"),
            format!(
                "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n\
                 \x20 zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n\
                 \x20 zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n\
                 remote-control:\n  control-enable: no\nzone:\n  name: {ZONE}\n  zonefile: zone\n"
            ),
        )?;
        let mut cmd = Command::new("nsd");
        cmd.arg("-d").arg("-c").arg(dir.join("nsd.conf"));
        let daemon = Daemon::spawn(cmd);
        let started = Instant::now();
        loop {
            let probe = Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &port.to_string(),
                    &format!("api.{ZONE}"),
                    "+short",
                    "+time=1",
                    "+tries=1",
                ])
                .output();
            if probe.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "127.0.0.2") {
                break;
            }
            let log = daemon.log();
            if log.contains("Address already in use") || started.elapsed() > Duration::from_secs(20)
            {
                bail!(
                    "NSD did not answer:\n{log}{}",
                    std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Nsd { addr, daemon })
    }
}

fn nsd_version() -> String {
    Command::new("nsd")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}
