//! Every file in `config/` is checked by the real binary: the example must
//! pass `--check-config`, and each file in `config/bad/` must fail naming
//! the keys its first line (`# expect: KEY[, KEY…]` or `# expect-line: N`)
//! names.

use std::path::{Path, PathBuf};
use std::process::Command;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn check(path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-hub"))
        .arg("--check-config")
        .arg(path)
        .output()
        .expect("ferry-hub runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_config_is_valid() {
    let path = config_dir().join("hub.example.toml");
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
    let cfg: ferry_hub::config::HubConfig = ferry_common::config::load(&path).unwrap();
    assert_eq!(cfg.api.max_connections, 10_000);
    assert_eq!(
        cfg.providers.fs.allowed_roots,
        vec![PathBuf::from("/srv/ferry")]
    );
}

#[test]
fn the_region_example_config_is_valid() {
    let path = config_dir().join("hub-region.example.toml");
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
    let cfg: ferry_hub::config::HubConfig = ferry_common::config::load(&path).unwrap();
    assert_eq!(cfg.store.backend, ferry_hub::config::StoreBackend::Postgres);
    assert!(cfg.store.replica_url.is_some());
    assert!(cfg.tunnel.unwrap().public_addr.is_some());
}

#[test]
fn every_bad_config_fails_naming_its_key() {
    let dir = config_dir().join("bad");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "{} was accepted", path.display());
        let file = path.display().to_string();
        assert!(
            stderr.starts_with(&file),
            "{}: error does not name the file: {stderr}",
            path.display()
        );
        if let Some(keys) = first.strip_prefix("# expect: ") {
            // Every key named, when there are several: each is reported.
            for key in keys.split(", ") {
                assert!(
                    stderr.contains(&format!(": {key}: ")),
                    "{}: expected key '{key}' in: {stderr}",
                    path.display()
                );
            }
        } else if let Some(line) = first.strip_prefix("# expect-line: ") {
            assert!(
                stderr.contains(&format!("{file}:{line}: ")),
                "{}: expected line {line} in: {stderr}",
                path.display()
            );
        } else {
            panic!("{} lacks an '# expect:' first line", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} bad configs");
}

#[test]
fn a_missing_file_is_reported_not_panicked() {
    let (ok, _, stderr) = check(Path::new("/nonexistent/hub.toml"));
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/hub.toml: cannot read the file"),
        "{stderr}"
    );
}
