//! Debian's Prometheus and promtool, run by the tests: a server scraping
//! daemons on loopback, queried over its HTTP API, and `promtool` checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::announced_port;
use crate::process::Daemon;

/// Runs `promtool ARGS…`, feeding it `stdin`; (success, stdout, stderr).
pub fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A Prometheus server scraping `targets` (by job) every second.
pub struct Prometheus {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    /// Its HTTP API's base URL.
    pub url: String,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("url", &self.url)
            .finish()
    }
}

impl Prometheus {
    /// Starts one with a configuration scraping each `(job, [host:port…])`,
    /// and the rule files given.
    pub fn start(jobs: &[(&str, Vec<String>)], rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, targets) in jobs {
            let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ));
        }
        if !rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for f in rule_files {
                config.push_str(&format!("  - {}\n", f.display()));
            }
        }
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0");
        let daemon = Daemon::spawn(cmd);
        // It binds port 0, logs `msg="Listening on" address=127.0.0.1:PORT`,
        // and says when it is ready (its storage open, `/-/ready` 200).
        let limit = Duration::from_secs(30);
        let port = announced_port(&daemon, "msg=\"Listening on\"", limit).unwrap_or_else(|| {
            panic!("prometheus did not say where it listens:\n{}", daemon.log())
        });
        assert!(
            daemon
                .wait_for("Server is ready to receive web requests", limit)
                .is_some(),
            "prometheus did not become ready:\n{}",
            daemon.log()
        );
        let url = format!("http://127.0.0.1:{port}");
        Prometheus {
            _dir: dir,
            daemon,
            url,
        }
    }

    /// The result of an instant query: each series' labels and value.
    pub async fn query(&self, expr: &str) -> Vec<(serde_json::Value, f64)> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url,
            percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC)
        );
        let resp = crate::Api::new(&self.url)
            .get(url.strip_prefix(&self.url).unwrap())
            .send()
            .await;
        assert_eq!(resp.status, 200, "{expr}: {:?}", resp.body);
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// The repository's `config/prometheus/` folder.
pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/prometheus")
}
