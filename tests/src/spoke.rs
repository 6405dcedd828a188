//! Starting and stopping a real `ferry-spoke` process, enrolled with a
//! join token from the hub's own CLI and handed its listener as a service
//! manager would ([`crate::launch`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::hub::{Hub, binary};
use crate::launch::{self, Notifications, Sockets};
use crate::process::Daemon;

/// How long a spoke gets to say it is ready (its first tunnel up).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running spoke, killed when dropped. The harness holds its listener,
/// so it keeps its port across restarts.
#[derive(Debug)]
pub struct Spoke {
    daemon: Option<Daemon>,
    sockets: Sockets,
    notify: Notifications,
    /// Its name.
    pub name: String,
    /// The address its API listens on.
    pub addr: SocketAddr,
    /// The address of its operator listener (`/metrics`).
    pub metrics_addr: SocketAddr,
    /// Its state directory and configuration.
    pub dir: tempfile::TempDir,
    config: PathBuf,
    logs: Vec<String>,
    env: Vec<(String, String)>,
    tls: bool,
}

/// How to configure a test spoke.
#[derive(Debug, Clone, Default)]
pub struct SpokeOptions {
    /// Send QUIC here instead of to the hub (a relay the test controls).
    pub quic_via: Option<SocketAddr>,
    /// Extra TOML for the `[tunnel]` section.
    pub tunnel_extra: String,
    /// Standby hubs: (QUIC, TCP) tunnel addresses.
    pub standby: Vec<(SocketAddr, SocketAddr)>,
    /// The log filter; debug for ferry's own modules unless set.
    pub log_level: Option<String>,
    /// Extra TOML for the `[api]` section.
    pub api_extra: String,
    /// Leave the tunnel's timings at ferry's defaults instead of the short
    /// ones tests use.
    pub default_timings: bool,
    /// The loopback address the API listens on (default 127.0.0.1), which
    /// is also the public address it announces for steering.
    pub listen_ip: Option<std::net::IpAddr>,
    /// TOML for the `[steering]` section.
    pub steering_extra: String,
    /// Environment variables set for the spoke process.
    pub env: Vec<(String, String)>,
    /// Serve the API over TLS with this certificate chain and key (PEM
    /// files) instead of plain HTTP.
    pub api_tls: Option<(PathBuf, PathBuf)>,
}

/// Where test spokes listen unless told otherwise.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Writes a spoke configuration pointing at `hub`.
fn write_config(dir: &std::path::Path, name: &str, hub: &Hub, opts: &SpokeOptions) -> PathBuf {
    let config = dir.join("spoke.toml");
    std::fs::write(
        &config,
        format!(
            "name = {name:?}\nstate_dir = {state:?}\n\n[api]\nlisten = \"{ip}:0\"\n{plain}shutdown_grace_secs = 5\n{api_extra}\n{tls}\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\n\
             [hub]\napi_url = \"{api}\"\ntunnel_addr = \"{tunnel}\"\ntunnel_tcp_addr = \"{tcp}\"\n\n\
             {standby}\n[tunnel]\n{timings}{extra}\n\n\
             [log]\nlevel = {level:?}\n\n[steering]\n{steering}\n",
            state = dir.join("state"),
            ip = opts.listen_ip.unwrap_or(LOOPBACK),
            steering = opts.steering_extra,
            api = hub.url(),
            tunnel = opts.quic_via.unwrap_or(hub.tunnel_addr),
            tcp = hub.tunnel_tcp_addr,
            extra = opts.tunnel_extra,
            api_extra = opts.api_extra,
            plain = if opts.api_tls.is_some() {
                ""
            } else {
                "plain_http = true\n"
            },
            tls = match &opts.api_tls {
                Some((cert, key)) => {
                    format!("\n[api.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n")
                }
                None => String::new(),
            },
            timings = if opts.default_timings {
                ""
            } else {
                "idle_timeout_secs = 5\nreconnect_initial_ms = 100\nreconnect_max_secs = 1\n"
            },
            level = opts.log_level.as_deref().unwrap_or("info,ferry_spoke=debug"),
            standby = opts
                .standby
                .iter()
                .map(|(q, t)| format!("\n[[hub.standby]]\ntunnel_addr = \"{q}\"\ntunnel_tcp_addr = \"{t}\"\n"))
                .collect::<String>(),
        ),
    )
    .unwrap();
    config
}

impl Spoke {
    /// Adds the spoke on `hub`, starts it with its join token, and waits
    /// until its tunnel is up.
    pub fn start(hub: &Hub, name: &str) -> Spoke {
        let token = hub.spoke_token(name, None);
        match Self::start_with_token(hub, name, &token) {
            Ok(s) => s,
            Err(log) => panic!("ferry-spoke {name} did not come up:\n{log}"),
        }
    }

    /// Starts a spoke with `token`; `Err(log)` if it exits or never gets a
    /// tunnel (it says `READY=1` once its first tunnel is up).
    pub fn start_with_token(hub: &Hub, name: &str, token: &str) -> Result<Spoke, String> {
        Self::start_with(hub, name, token, &SpokeOptions::default())
    }

    /// Starts a spoke with `token` and `opts`.
    pub fn start_with(
        hub: &Hub,
        name: &str,
        token: &str,
        opts: &SpokeOptions,
    ) -> Result<Spoke, String> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = write_config(dir.path(), name, hub, opts);
        let mut sockets = Sockets::new();
        let addr = sockets.tcp("api", opts.listen_ip.unwrap_or(LOOPBACK));
        let metrics_addr = sockets.tcp("metrics", LOOPBACK);
        let mut spoke = Spoke {
            daemon: None,
            sockets,
            notify: Notifications::new(),
            name: name.to_owned(),
            addr,
            metrics_addr,
            dir,
            config,
            logs: Vec::new(),
            env: opts.env.clone(),
            tls: opts.api_tls.is_some(),
        };
        spoke.spawn(Some(token))?;
        Ok(spoke)
    }

    /// Starts the process on the spoke's listener and waits for its
    /// `READY=1`.
    fn spawn(&mut self, token: Option<&str>) -> Result<(), String> {
        let mut cmd = launch::command(&binary("ferry-spoke"), &self.sockets, &self.notify);
        cmd.arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        match token {
            Some(t) => cmd.env("FERRY_JOIN_TOKEN", t),
            None => cmd.env_remove("FERRY_JOIN_TOKEN"),
        };
        let from = self.notify.count();
        let mut daemon = Daemon::spawn(cmd);
        launch::wait_ready(&mut daemon, &self.notify, from, READY_WITHIN)?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// What the spoke told its notification socket (`READY=1`, watchdog
    /// pings, …), across restarts.
    pub fn notifications(&self) -> &Notifications {
        &self.notify
    }

    /// Its state directory (identity, report journal).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The base URL of its API.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The base URL of its operator listener, where `/metrics` is.
    pub fn metrics_url(&self) -> String {
        format!("http://{}", self.metrics_addr)
    }

    /// The running process.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the spoke is running")
    }

    /// Everything it logged, across restarts.
    pub fn log(&self) -> String {
        let mut all = self.logs.join("");
        if let Some(d) = &self.daemon {
            all.push_str(&d.log());
        }
        all
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut d = self.daemon.take()?;
        let status = d.stop();
        self.logs.push(d.full_log(Duration::from_secs(5)));
        status
    }

    /// Waits (at most `timeout`) for the process to exit on its own, as
    /// after a signal the test sent.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = self.daemon.as_mut()?.wait_exit(timeout);
        if status.is_some()
            && let Some(d) = self.daemon.take()
        {
            self.logs.push(d.full_log(Duration::from_secs(5)));
        }
        status
    }

    /// Waits (at most `limit`) until its `/readyz` answers `status`
    /// (503 once its tunnels are down, 200 once one is up); whether it did.
    pub async fn until_readyz(&self, status: u16, limit: Duration) -> bool {
        let api = crate::Api::new(self.url());
        crate::eventually(limit, async || {
            api.get("/readyz").send().await.status == status
        })
        .await
    }

    /// Kills it at once.
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
            self.logs.push(d.full_log(Duration::from_secs(5)));
        }
    }

    /// Kills it at once and closes the sockets the harness holds for it,
    /// as when its machine is gone: connections to its address are
    /// refused rather than queued for a restart that never comes.
    pub fn kill_for_good(&mut self) {
        self.kill();
        self.sockets = Sockets::new();
    }

    /// Starts it again from its state directory (no token needed).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn(None) {
            panic!("ferry-spoke {} did not come back:\n{log}", self.name);
        }
    }

    /// Kills the spoke, puts `journal` (its report journal's bytes, kept
    /// from before) back, and restarts it: as after a crash before it noted
    /// the journal's reports sent. Waits (20 s at most) until `hub` logs
    /// that a report came again; false if it did not.
    pub async fn resend_journal(&mut self, journal: &[u8], hub: &crate::Hub) -> bool {
        self.kill();
        std::fs::write(self.dir.path().join("state/reports.journal"), journal).unwrap();
        self.restart();
        crate::eventually(Duration::from_secs(20), async || {
            hub.log().contains("a report came again")
        })
        .await
    }
}

impl Drop for Spoke {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- ferry-spoke {} log ----\n{}", self.name, self.log());
        }
    }
}
