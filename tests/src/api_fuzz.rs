//! Property-based fuzzing of an HTTP API against its OpenAPI description
//! with schemathesis (from the project's test-tool environment,
//! [`crate::tools::Tool::Schemathesis`]): generated requests, schema-valid
//! and not, with every check on — no 5xx, only documented statuses,
//! content types and header fields, answers that match their schemas,
//! invalid requests refused and valid ones taken.
//!
//! The runner knows nothing of ferry's routes: it takes a spec, a base URL
//! and a credential, so the same bounded, seeded run can be pointed at any
//! door a node opens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::tools::Tool;

/// What to fuzz.
#[derive(Debug, Clone)]
pub struct FuzzTarget {
    /// The OpenAPI document.
    pub spec: PathBuf,
    /// The base URL the spec's paths are joined to (`http://127.0.0.1:port`).
    pub base_url: String,
    /// A bearer token sent with every request (`Authorization: Bearer …`).
    pub bearer: Option<String>,
    /// Operations with any of these tags are left out (such as routes that
    /// belong to another listener).
    pub exclude_tags: Vec<String>,
}

/// How far a run may go.
#[derive(Debug, Clone, Copy)]
pub struct FuzzBounds {
    /// Generated cases per operation and phase at most.
    pub max_examples: u32,
    /// The whole run's wall-clock limit; a run still going then is stopped
    /// and counts as failed.
    pub time_limit: Duration,
    /// The generator's seed: the same seed against the same server makes
    /// the same requests.
    pub seed: u64,
}

impl Default for FuzzBounds {
    /// 40 cases per operation, two minutes, a fixed seed.
    fn default() -> Self {
        Self {
            max_examples: 40,
            time_limit: Duration::from_secs(120),
            seed: 20_260_101,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct FuzzReport {
    /// Whether it finished in time with no failure, error or warning.
    pub passed: bool,
    /// schemathesis's own report (standard output and error), or why the
    /// run was stopped.
    pub output: String,
}

/// How long schemathesis waits for one answer before it counts as a
/// failure (no ferry answer takes this long on loopback).
const REQUEST_TIMEOUT_SECS: &str = "10";

/// Runs `schemathesis run` against `target` within `bounds`, from a
/// temporary folder (its example database is switched off, so nothing a
/// run learns changes the next).
pub fn run(target: &FuzzTarget, bounds: FuzzBounds) -> FuzzReport {
    let work = tempfile::tempdir().expect("a temporary directory");
    // coreutils' timeout bounds the run from outside: schemathesis's own
    // --max-time repeats fuzzing until the time is spent, which would make
    // every run as long as its limit and its length depend on the machine.
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(bounds.time_limit.as_secs().to_string())
        .arg(Tool::Schemathesis.path())
        .args(["run", "--checks", "all", "--workers", "1", "--no-color"])
        .args(["--max-examples", &bounds.max_examples.to_string()])
        .args(["--seed", &bounds.seed.to_string()])
        .args([
            "--generation-deterministic",
            "--generation-database",
            "none",
        ])
        .args(["--request-timeout", REQUEST_TIMEOUT_SECS])
        .args(["--url", &target.base_url])
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "");
    if let Some(token) = &target.bearer {
        cmd.arg("--header")
            .arg(format!("Authorization: Bearer {token}"));
    }
    for tag in &target.exclude_tags {
        cmd.args(["--exclude-tag", tag]);
    }
    cmd.arg(absolute(&target.spec));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start schemathesis through timeout: {e}"));
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    // timeout's own statuses: 124 when the limit passed, 137 after KILL.
    if matches!(out.status.code(), Some(124 | 137)) {
        output.push_str(&format!(
            "\nthe run did not finish within {:?}\n",
            bounds.time_limit
        ));
    }
    FuzzReport {
        passed: out.status.success(),
        output,
    }
}

/// `path` made absolute against the current directory.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).expect("the current directory is readable")
}
