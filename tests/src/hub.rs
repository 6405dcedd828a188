//! Starting and stopping a real `ferry-hub` process.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin token every test hub is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The master key every test hub is started with (hex).
pub const MASTER_KEY: &str = "8f1d2c3b4a5968778695a4b3c2d1e0f000112233445566778899aabbccddeeff";

/// Where a binary of this workspace was built: beside the test executable's
/// `deps/` folder, unless `FERRY_<NAME>_BIN` names it.
pub fn binary(name: &str) -> PathBuf {
    let var = format!(
        "FERRY_{}_BIN",
        name.trim_start_matches("ferry-").to_uppercase()
    );
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
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
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            api_extra: String::new(),
            tls: None,
            admin_token: true,
        }
    }
}

/// A running hub, killed when dropped.
#[derive(Debug)]
pub struct Hub {
    child: Option<Child>,
    /// The address its API listens on.
    pub addr: SocketAddr,
    /// Its temporary state, config and provider folders.
    pub dir: tempfile::TempDir,
    /// The folder `fs` connections may use.
    pub data_dir: PathBuf,
    config: PathBuf,
    log: Arc<Mutex<String>>,
    opts: HubOptions,
}

impl Hub {
    /// Starts a hub with default options.
    pub fn start() -> Hub {
        Self::start_with(HubOptions::default())
    }

    /// Starts a hub with `opts`.
    pub fn start_with(opts: HubOptions) -> Hub {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data_dir = dir.path().join("data");
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
                 [providers.fs]\nallowed_roots = [{data:?}]\n\n[providers.memory]\nenabled = true\n\n[log]\nlevel = \"info,ferry_hub=debug\"\n",
                state = dir.path().join("state"),
                data = data_dir,
                extra = opts.api_extra,
            ),
        )
        .unwrap();
        let mut hub = Hub {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            data_dir,
            config,
            log: Arc::new(Mutex::new(String::new())),
            opts,
        };
        hub.spawn();
        hub
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(binary("ferry-hub"));
        cmd.arg("--config")
            .arg(&self.config)
            .env("FERRY_MASTER_KEY", MASTER_KEY)
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.opts.admin_token {
            cmd.env("FERRY_ADMIN_TOKEN", ADMIN_TOKEN);
        } else {
            cmd.env_remove("FERRY_ADMIN_TOKEN");
        }
        let mut child = cmd.spawn().expect("ferry-hub starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("HTTP API listening")
                    && let Some(addr) = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                {
                    let _ = tx.send(addr.to_owned());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("ferry-hub did not start listening:\n{}", self.log());
            }
        };
        self.addr = addr.parse().expect("the logged address parses");
        self.child = Some(child);
    }

    /// Everything the hub has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
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

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the hub gracefully and starts it again on the same state; the
    /// port may change.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- ferry-hub log ----\n{}", self.log());
        }
    }
}
