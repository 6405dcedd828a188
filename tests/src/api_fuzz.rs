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
    /// Statuses an operation (by `operationId`) answers well-formed
    /// requests with by design, beyond 2xx, 3xx, 401, 403, 404, 409 and 429:
    /// a failed precondition, a range outside the file, a policy refusal
    /// that no schema can know of. Elsewhere such an answer to a
    /// schema-valid request is a finding.
    pub refusals_by_design: Vec<(String, Vec<u16>)>,
    /// Statuses an operation (by `operationId`) answers schema-invalid
    /// requests with by design, beyond 400, 401, 403, 404, 405, 406, 409,
    /// 415, 422, 428, 429 and 5xx: a protocol whose own rules answer a
    /// request it cannot take with another status (tus's `412` for a
    /// version it does not speak). Elsewhere such an answer is a finding.
    pub invalid_refusals_by_design: Vec<(String, Vec<u16>)>,
    /// Request media types sent as raw bytes, for which schemathesis has
    /// no serializer of its own (such as tus's
    /// `application/offset+octet-stream`): without one, an operation that
    /// takes only such bodies cannot be generated at all.
    pub binary_media_types: Vec<String>,
    /// Parameters given fixed values instead of generated ones, for the
    /// operations whose `operationId` matches a regular expression: where
    /// a generated value would almost never name something that exists.
    pub fixed_parameters: Vec<FixedParameters>,
    /// Generate ASCII text only (`--generation-codec ascii`), where a known
    /// defect with other characters would drown everything else found.
    pub ascii_only: bool,
    /// Checks left out of `--checks all`, where a known defect outside the
    /// spec would fail every run.
    pub skipped_checks: Vec<String>,
}

/// Parameter values fixed for some operations.
#[derive(Debug, Clone)]
pub struct FixedParameters {
    /// A regular expression over `operationId`s.
    pub operations: String,
    /// Parameter names and their values.
    pub values: Vec<(String, String)>,
}

/// How far a run may go.
#[derive(Debug, Clone, Copy)]
pub struct FuzzBounds {
    /// Generated cases per operation and phase in one pass.
    pub max_examples: u32,
    /// schemathesis's own budget for the run (`--max-time`): it finishes
    /// its passes, then repeats fuzzing with new cases until the budget is
    /// spent, and reports. The run is killed, and fails, if it is still
    /// going [`KILL_AFTER`] later.
    pub max_time: Duration,
    /// The generator's seed: the same seed against the same server makes
    /// the same requests (how many fuzzing passes fit the budget depends
    /// on the machine's speed).
    pub seed: u64,
}

impl Default for FuzzBounds {
    /// 25 cases per operation and pass, 90 seconds, a fixed seed.
    fn default() -> Self {
        Self {
            max_examples: 25,
            max_time: Duration::from_secs(90),
            seed: 20_260_101,
        }
    }
}

/// How long past its budget a run may go before it is killed.
pub const KILL_AFTER: Duration = Duration::from_secs(60);

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
    let config = work.path().join("schemathesis.toml");
    std::fs::write(&config, config_toml(target)).expect("the run's configuration is written");
    // Hooks of the run's own (never the caller's environment's): the
    // binary media types, aliased to schemathesis's octet-stream encoder.
    let hooks = work.path().join("hooks.py");
    std::fs::write(&hooks, hooks_py(target)).expect("the run's hooks are written");
    // coreutils' timeout stops a run that overshoots its own budget.
    let limit = bounds.max_time + KILL_AFTER;
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(limit.as_secs().to_string())
        .arg(Tool::Schemathesis.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", "--checks", "all", "--workers", "1", "--no-color"])
        // Stateful testing passes values between operations through the
        // links it infers, and judges them by rules of its own: a path
        // parameter holding `/` counts as invalid, a DELETE that revokes
        // (the resource stays, marked) as a failed deletion. Its findings
        // here were those assumptions, not the spec's, so it is left out.
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &bounds.max_examples.to_string()])
        .args(["--seed", &bounds.seed.to_string()])
        .args(["--max-time", &bounds.max_time.as_secs().to_string()])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", REQUEST_TIMEOUT_SECS])
        .args(["--url", &target.base_url])
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", &hooks);
    if let Some(token) = &target.bearer {
        cmd.arg("--header")
            .arg(format!("Authorization: Bearer {token}"));
    }
    if !target.skipped_checks.is_empty() {
        cmd.args(["--exclude-checks", &target.skipped_checks.join(",")]);
    }
    if target.ascii_only {
        cmd.args(["--generation-codec", "ascii"]);
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
        output.push_str(&format!("\nthe run did not finish within {limit:?}\n"));
    }
    FuzzReport {
        passed: out.status.success(),
        output,
    }
}

/// The statuses schemathesis takes as acceptance of a schema-valid request
/// (its own default), to which [`FuzzTarget::refusals_by_design`] adds.
const ACCEPTING: &[&str] = &["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"];

/// The statuses schemathesis takes as refusal of a schema-invalid request
/// (its own default), to which [`FuzzTarget::invalid_refusals_by_design`]
/// adds.
const REFUSING: &[&str] = &[
    "400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx",
];

/// The run's hooks module: the binary media types' serializer.
fn hooks_py(target: &FuzzTarget) -> String {
    let mut py = String::from("import schemathesis\n");
    if !target.binary_media_types.is_empty() {
        let types: Vec<String> = target
            .binary_media_types
            .iter()
            .map(|t| format!("{t:?}"))
            .collect();
        py.push_str(&format!(
            "schemathesis.serializer.alias([{}], \"application/octet-stream\")\n",
            types.join(", ")
        ));
    }
    py
}

/// The run's configuration file: per-operation acceptance and fixed
/// parameters.
fn config_toml(target: &FuzzTarget) -> String {
    let mut toml = String::new();
    // Per operation, the statuses a check takes besides its usual ones.
    let mut expect = |check: &str, usual: &[&str], by_operation: &[(String, Vec<u16>)]| {
        for (operation, statuses) in by_operation {
            let statuses: Vec<String> = usual
                .iter()
                .map(|s| format!("{s:?}"))
                .chain(statuses.iter().map(|s| format!("\"{s}\"")))
                .collect();
            toml.push_str(&format!(
                "[[operations]]\ninclude-operation-id = {operation:?}\n\
                 checks.{check}.expected-statuses = [{}]\n\n",
                statuses.join(", ")
            ));
        }
    };
    expect(
        "positive_data_acceptance",
        ACCEPTING,
        &target.refusals_by_design,
    );
    expect(
        "negative_data_rejection",
        REFUSING,
        &target.invalid_refusals_by_design,
    );
    for fixed in &target.fixed_parameters {
        toml.push_str(&format!(
            "[[operations]]\ninclude-operation-id-regex = {:?}\n[operations.parameters]\n",
            fixed.operations
        ));
        for (name, value) in &fixed.values {
            toml.push_str(&format!("{name:?} = {value:?}\n"));
        }
        toml.push('\n');
    }
    toml
}

/// `path` made absolute against the current directory.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).expect("the current directory is readable")
}
