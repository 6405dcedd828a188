//! The spoke's configuration files, checked by the real binary: the example
//! passes `--check-config`; every file in `config/bad-spoke/` fails naming
//! the key its first line (`# expect: KEY`) names.

use std::path::{Path, PathBuf};
use std::process::Command;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn check(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-spoke"))
        .arg("--check-config")
        .arg(path)
        .output()
        .expect("ferry-spoke runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_config_is_valid() {
    let (ok, stderr) = check(&config_dir().join("spoke.example.toml"));
    assert!(ok, "{stderr}");
}

#[test]
fn every_bad_config_fails_naming_its_key() {
    let mut checked = 0;
    for entry in std::fs::read_dir(config_dir().join("bad-spoke")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let key = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("an '# expect:' line");
        let (ok, stderr) = check(&path);
        assert!(!ok, "{} was accepted", path.display());
        assert!(
            stderr.contains(&format!(": {key}: ")),
            "{}: expected key '{key}' in: {stderr}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} bad configs");
}

#[test]
fn a_spoke_without_enrolment_or_token_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spoke.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"fra1\"\nstate_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n[metrics]\nlisten = \"127.0.0.1:0\"\n[hub]\napi_url = \"http://127.0.0.1:9\"\ntunnel_addr = \"127.0.0.1:9\"\n",
            dir.path().join("state")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-spoke"))
        .arg("--config")
        .arg(&cfg)
        .env_remove("FERRY_JOIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FERRY_JOIN_TOKEN") && stderr.contains("ferry-hub spoke add fra1"),
        "{stderr}"
    );
}
