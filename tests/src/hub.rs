//! Starting and stopping a real `ferry-hub` process, handed its sockets
//! as a service manager would ([`crate::launch`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::launch::{self, Notifications, Sockets};
use crate::process::Daemon;

/// How long a hub gets to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The admin token every test hub is started with (hubs refuse one
/// shorter than 32 characters).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghijklmnop";
/// The master key every test hub is started with (hex).
pub const MASTER_KEY: &str = "8f1d2c3b4a5968778695a4b3c2d1e0f000112233445566778899aabbccddeeff";

/// Builds the daemons in the profile this binary was built in, when run by
/// cargo (which sets `CARGO`).
pub fn build_daemons() -> Result<(), String> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile = exe
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--bins",
        "-p",
        "ferry-hub",
        "-p",
        "ferry-spoke",
        "-p",
        "ferry-client",
    ]);
    // What `cargo run` tells this binary about its own package is no
    // setting for the build: left in, it reaches build scripts (ring's
    // reads CARGO_MANIFEST_DIR) and makes this build differ from
    // `cargo build -p ferry-hub -p ferry-spoke -p ferry-client` typed in a shell
    // (`scripts/run-local.sh`), so that each rebuilt ring, rustls, quinn
    // and sqlx after the other.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if package_var(&name) {
            cmd.env_remove(&*name);
        }
    }
    if profile == "release" {
        cmd.arg("--release");
    }
    eprintln!("building ferry-hub, ferry-spoke and ferry ({profile})…");
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the daemons failed".to_owned());
    }
    Ok(())
}

/// Whether `name` is one of the variables `cargo run` sets to describe
/// the package it runs (not a setting of cargo's, such as
/// `CARGO_TARGET_DIR` or `CARGO_PROFILE_*`).
fn package_var(name: &str) -> bool {
    name == "OUT_DIR"
        || name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

/// Where a binary of this workspace was built: beside the running
/// executable (or beside its `deps/` folder, where test executables live),
/// unless `FERRY_<NAME>_BIN` names it.
pub fn binary(name: &str) -> PathBuf {
    let var = format!(
        "FERRY_{}_BIN",
        name.trim_start_matches("ferry-").to_uppercase()
    );
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the process knows its own path");
    let mut dir = exe.parent().expect("an executable is in a folder");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("deps/ is in a profile folder");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace` (or set {var})",
        path.display()
    );
    path
}

/// How to configure a test hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Extra TOML appended to the `[api]` section.
    pub api_extra: String,
    /// Serve TLS with this (cert, key) PEM pair instead of plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Whether the admin token is set.
    pub admin_token: bool,
    /// Whether the hub takes spokes (has a `[tunnel]` section).
    pub tunnel: bool,
    /// Extra TOML appended to the `[tunnel]` section.
    pub tunnel_extra: String,
    /// The log filter; debug for ferry's own modules unless set.
    pub log_level: Option<String>,
    /// Leave the tunnel's timings at ferry's defaults instead of the short
    /// ones tests use.
    pub default_timings: bool,
    /// Make the hub's temporary folder (state and provider data) here
    /// instead of the system's temporary folder.
    pub dir_in: Option<PathBuf>,
    /// Further TOML sections (such as `[dns]` or `[steering]`) appended to
    /// the configuration.
    pub extra_toml: String,
    /// The folder `fs` connections may use, instead of one of its own
    /// (hubs sharing a store share it too).
    pub data_dir: Option<PathBuf>,
    /// Environment variables set for the hub process.
    pub env: Vec<(String, String)>,
    /// Log one JSON object a line (`[log] format = "json"`).
    pub log_json: bool,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            api_extra: String::new(),
            tls: None,
            admin_token: true,
            tunnel: true,
            tunnel_extra: String::new(),
            log_level: None,
            default_timings: false,
            dir_in: None,
            extra_toml: String::new(),
            data_dir: None,
            env: Vec::new(),
            log_json: false,
        }
    }
}

/// A new temporary folder, under `opts.dir_in` when set.
fn temp_dir(opts: &HubOptions) -> tempfile::TempDir {
    match &opts.dir_in {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory")
}

/// A running hub, killed when dropped. The harness holds its sockets, so
/// it keeps its ports across restarts.
#[derive(Debug)]
pub struct Hub {
    daemon: Option<Daemon>,
    sockets: Sockets,
    notify: Notifications,
    /// The address its API listens on.
    pub addr: SocketAddr,
    /// The address of its tunnel endpoint (UDP); port 0 when it takes no
    /// spokes.
    pub tunnel_addr: SocketAddr,
    /// The address of its TLS-over-TCP tunnel listener.
    pub tunnel_tcp_addr: SocketAddr,
    /// The address of its DNS server (UDP and TCP), when `[dns]` is set
    /// (in `extra_toml`).
    pub dns_addr: Option<SocketAddr>,
    /// The address of its operator listener (`/metrics`).
    pub metrics_addr: SocketAddr,
    /// Its temporary state, config and provider folders.
    pub dir: tempfile::TempDir,
    /// The folder `fs` connections may use.
    pub data_dir: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    opts: HubOptions,
    logs: Vec<String>,
    /// The master key it is started with (hex).
    pub master_key: String,
}

impl Hub {
    /// Starts a hub with default options.
    pub fn start() -> Hub {
        Self::start_with(HubOptions::default())
    }

    /// Starts a hub with `opts`.
    pub fn start_with(opts: HubOptions) -> Hub {
        let dir = temp_dir(&opts);
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let config = dir.path().join("hub.toml");
        let tls = match &opts.tls {
            Some((c, k)) => format!(
                "[api.tls]\ncert_file = {c:?}\nkey_file = {k:?}\nreload_interval_secs = 1\n"
            ),
            None => String::new(),
        };
        let plain = if opts.tls.is_some() { "false" } else { "true" };
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\n\n[api]\nlisten = \"127.0.0.1:0\"\nplain_http = {plain}\nshutdown_grace_secs = 5\n{extra}\n{tls}\n\
                 [metrics]\nlisten = \"127.0.0.1:0\"\n\n{tunnel}\n\
                 [providers.fs]\nallowed_roots = [{data:?}]\n\n[providers.memory]\nenabled = true\n\n[log]\nlevel = {level:?}\n{format}\n{sections}\n",
                state = dir.path().join("state"),
                data = data_dir,
                extra = opts.api_extra,
                tunnel = if opts.tunnel {
                    format!(
                        "[tunnel]\nlisten = \"127.0.0.1:0\"\n{timings}{tunnel_extra}\n",
                        timings = if opts.default_timings {
                            ""
                        } else {
                            "heartbeat_interval_secs = 1\nidle_timeout_secs = 5\n"
                        },
                        tunnel_extra = opts.tunnel_extra,
                    )
                } else {
                    String::new()
                },
                level = opts.log_level.as_deref().unwrap_or("info,ferry_hub=debug"),
                format = if opts.log_json { "format = \"json\"\n" } else { "" },
                sections = opts.extra_toml,
            ),
        )
        .unwrap();
        Self::spawned(dir, data_dir, config, opts)
    }

    /// Starts a hub from a written configuration, on sockets of its own.
    fn spawned(
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        config: PathBuf,
        opts: HubOptions,
    ) -> Hub {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut sockets = Sockets::new();
        let addr = sockets.tcp("api", loopback);
        // As in a deployment without tunnel.tcp_listen: TCP on QUIC's port.
        let tunnel_addr = if opts.tunnel {
            sockets.udp_and_tcp("tunnel", "tunnel-tcp", loopback)
        } else {
            SocketAddr::new(loopback, 0)
        };
        let dns_addr = opts
            .extra_toml
            .contains("[dns]")
            .then(|| sockets.udp_and_tcp("dns", "dns-tcp", loopback));
        let metrics_addr = sockets.tcp("metrics", loopback);
        let mut hub = Hub {
            daemon: None,
            sockets,
            notify: Notifications::new(),
            addr,
            tunnel_addr,
            tunnel_tcp_addr: tunnel_addr,
            dns_addr,
            metrics_addr,
            master_key: MASTER_KEY.to_owned(),
            dir,
            data_dir,
            config,
            opts,
            logs: Vec::new(),
        };
        hub.spawn();
        hub
    }

    /// Starts the process on the hub's sockets and waits for its
    /// `READY=1`.
    fn spawn(&mut self) {
        let mut cmd = launch::command(&binary("ferry-hub"), &self.sockets, &self.notify);
        cmd.arg("--config")
            .arg(&self.config)
            .env("FERRY_MASTER_KEY", &self.master_key)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        if self.opts.admin_token {
            cmd.env("FERRY_ADMIN_TOKEN", ADMIN_TOKEN);
        } else {
            cmd.env_remove("FERRY_ADMIN_TOKEN");
        }
        let from = self.notify.count();
        let mut daemon = Daemon::spawn(cmd);
        if let Err(log) = launch::wait_ready(&mut daemon, &self.notify, from, READY_WITHIN) {
            panic!("ferry-hub did not become ready:\n{log}");
        }
        self.daemon = Some(daemon);
    }

    /// What the hub told its notification socket (`READY=1`, watchdog
    /// pings, …), across restarts.
    pub fn notifications(&self) -> &Notifications {
        &self.notify
    }

    /// Everything the hub has logged, across restarts.
    pub fn log(&self) -> String {
        let mut all = self.logs.join("");
        if let Some(d) = &self.daemon {
            all.push_str(&d.log());
        }
        all
    }

    /// The running process.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the hub is running")
    }

    /// The base URL of its API.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The base URL of its operator listener, where `/metrics` is.
    pub fn metrics_url(&self) -> String {
        format!("http://{}", self.metrics_addr)
    }

    /// Starts a second hub on this one's state directory (the same
    /// database and CA, as hubs sharing metadata do), on its own ports.
    pub fn start_beside(&self) -> Hub {
        let dir = temp_dir(&self.opts);
        let config = dir.path().join("hub.toml");
        std::fs::copy(&self.config, &config).unwrap();
        Self::spawned(dir, self.data_dir.clone(), config, self.opts.clone())
    }

    /// Makes a join token with `ferry-hub spoke add` (the operator's way),
    /// for a spoke that may announce any loopback address.
    pub fn spoke_token(&self, name: &str, ttl_secs: Option<u64>) -> String {
        let mut cmd = Command::new(binary("ferry-hub"));
        cmd.args(["--config"])
            .arg(&self.config)
            .args(["spoke", "add", name])
            .args(["--public-addr", "127.0.0.0/8", "--public-addr", "::1/128"]);
        if let Some(t) = ttl_secs {
            cmd.args(["--ttl-secs", &t.to_string()]);
        }
        let out = cmd.output().expect("ferry-hub spoke add runs");
        assert!(
            out.status.success(),
            "spoke add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Runs `ferry-hub ARGS…` on this hub's configuration, with its master
    /// key, and returns (success, stdout, stderr).
    pub fn command(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary("ferry-hub"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("FERRY_MASTER_KEY", &self.master_key)
            .output()
            .expect("ferry-hub runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `ferry-hub spoke ARGS…` and returns (success, stdout, stderr).
    pub fn spoke_command(&self, args: &[&str]) -> (bool, String, String) {
        let mut all = vec!["spoke"];
        all.extend_from_slice(args);
        self.command(&all)
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut daemon = self.daemon.take()?;
        let status = daemon.stop();
        self.logs.push(daemon.full_log(Duration::from_secs(5)));
        status
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill();
            self.logs.push(daemon.full_log(Duration::from_secs(5)));
        }
    }

    /// Starts the hub again on the same state and the same sockets, as an
    /// operator's restart under socket activation would (after `kill`, or
    /// stopping it first).
    pub fn restart_on_same_ports(&mut self) {
        self.restart();
    }

    /// Starts the hub again on the same state (after `stop` or `kill`, or
    /// stopping it first). It keeps its sockets, so its ports too.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- ferry-hub log ----\n{}", self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_run_package_s_variables_are_left_out_of_the_daemons_build() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION",
            "OUT_DIR",
        ] {
            assert!(package_var(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_PROFILE_RELEASE_LTO",
            "PATH",
        ] {
            assert!(!package_var(name), "{name}");
        }
    }
}
