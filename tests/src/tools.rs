//! The test tools that come from PyPI and npm — moto's S3 server,
//! fake-gcs-server, Azurite,
//! checkov, schemathesis, tuspy, tus-js-client, the Standard Webhooks
//! library, and a Python with python-hcl2 — found in the environments of
//! the project's own that `scripts/install-test-deps.sh` makes under the
//! cargo target folder (`test-tools/`), never on `PATH`: a tool the user
//! installed for something else is neither used nor disturbed. Debian's
//! tools (rclone, Prometheus, PostgreSQL, dig…) stay on `PATH`.

use std::path::{Path, PathBuf};

/// A tool the tests run from the project's environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// moto's S3 server (`moto_server`), from `tests/tools/requirements.txt`.
    MotoServer,
    /// fake-gcs-server, the GCS emulator, as its wheel in the same
    /// environment bundles it.
    FakeGcsServer,
    /// The Python of the same environment, which has python-hcl2.
    Python,
    /// checkov, from `tests/tools/checkov-requirements.txt` (an environment
    /// of its own: it brings a fork of hcl2 under the same module name).
    Checkov,
    /// schemathesis's command line, from
    /// `tests/tools/schemathesis-requirements.txt` (an environment of its
    /// own, so its pins move apart from moto's).
    Schemathesis,
    /// Azurite's blob server (`azurite-blob`), from
    /// `tests/tools/package-lock.json`.
    AzuriteBlob,
    /// The Python that has tuspy, from `tests/tools/tus-requirements.txt`.
    TusPython,
    /// tus-js-client's package folder, from `tests/tools/package-lock.json`
    /// (its parent goes into `NODE_PATH`).
    TusJsClient,
    /// playwright-core's package folder, from `tests/tools/package-lock.json`
    /// (its parent goes into `NODE_PATH`); it drives Debian's chromium.
    PlaywrightCore,
    /// PyPI's AWS CLI (v1), from `tests/tools/awscli-requirements.txt`.
    AwsCliV1,
    /// The Python that has the Standard Webhooks library, from
    /// `tests/tools/webhooks-requirements.txt`.
    WebhooksPython,
    /// s3s-fs, an S3 server in Rust over a folder, for the benchmark
    /// (`scripts/install-test-deps.sh --bench`).
    S3sFs,
}

impl Tool {
    /// Where the tool is, relative to the `test-tools/` folder.
    fn relative_path(self) -> &'static str {
        match self {
            Tool::MotoServer => "venv/bin/moto_server",
            Tool::FakeGcsServer => "venv/bin/fake-gcs-server",
            Tool::Python => "venv/bin/python3",
            Tool::Checkov => "checkov-venv/bin/checkov",
            Tool::Schemathesis => "schemathesis-venv/bin/schemathesis",
            Tool::AzuriteBlob => "npm/node_modules/.bin/azurite-blob",
            Tool::TusPython => "tus-venv/bin/python3",
            Tool::TusJsClient => "npm/node_modules/tus-js-client",
            Tool::PlaywrightCore => "npm/node_modules/playwright-core",
            Tool::S3sFs => "s3s-fs/bin/s3s-fs",
            Tool::AwsCliV1 => "awscli-venv/bin/aws",
            Tool::WebhooksPython => "webhooks-venv/bin/python3",
        }
    }

    /// The tool's path, if it is installed.
    pub fn find(self) -> Option<PathBuf> {
        Some(tools_dir().join(self.relative_path())).filter(|p| p.exists())
    }

    /// The tool's path; panics, naming the install script, when it is not
    /// installed.
    pub fn path(self) -> PathBuf {
        let path = tools_dir().join(self.relative_path());
        assert!(
            path.exists(),
            "{} is not installed; run scripts/install-test-deps.sh (it installs the test tools under the cargo target folder)",
            path.display()
        );
        path
    }
}

/// Runs `script` with the project's Python (the one with boto3) and
/// `args`; its standard output, trimmed. Panics, with its standard error,
/// if it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(Tool::Python.path())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The `test-tools/` folder of the cargo target folder this test
/// executable was built into (which is where the install script puts it,
/// honouring `CARGO_TARGET_DIR` alike).
/// A folder for a test's artefacts (screenshots, say) in the cargo target
/// folder: `<target>/<name>/`, kept after the run.
pub fn artefacts_dir(name: &str) -> PathBuf {
    tools_dir()
        .parent()
        .expect("test-tools is inside the target folder")
        .join(name)
}

fn tools_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the process knows its own path");
    target_dir_of(&exe)
        .unwrap_or_else(|| {
            panic!(
                "{} is not inside a cargo target folder (no CACHEDIR.TAG above it)",
                exe.display()
            )
        })
        .join("test-tools")
}

/// The nearest folder above `exe` that cargo marks as its target folder
/// (`target/debug/deps/…` and `target/<triple>/debug/deps/…` alike).
fn target_dir_of(exe: &Path) -> Option<&Path> {
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
}

/// The AWS CLI at `aws` (Debian's v2 or PyPI's v1) for `endpoint`, with
/// the key `key_id`/`secret` and region `us-east-1`, in a clean
/// environment whose home is `home`: nothing of the user's own
/// configuration (profiles, `AWS_CA_BUNDLE`, a pyenv shim on `PATH`)
/// reaches it. The caller adds the arguments.
pub fn aws_cli(
    aws: &Path,
    endpoint: &str,
    home: &Path,
    key_id: &str,
    secret: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(aws);
    cmd.arg("--endpoint-url")
        .arg(endpoint)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_folder_is_found_above_deps_with_or_without_a_triple() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("target");
        for deps in ["debug/deps", "x86_64-unknown-linux-gnu/debug/deps"] {
            std::fs::create_dir_all(target.join(deps)).unwrap();
        }
        std::fs::write(
            target.join("CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55",
        )
        .unwrap();
        for exe in [
            "debug/deps/providers-0123",
            "x86_64-unknown-linux-gnu/debug/deps/providers-0123",
        ] {
            assert_eq!(target_dir_of(&target.join(exe)), Some(target.as_path()));
        }
        assert_eq!(target_dir_of(&root.path().join("elsewhere/bin")), None);
    }
}
