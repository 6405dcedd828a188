//! The local network (`run-local.sh` builds the hub, the spoke and the
//! client), the tests (the whole workspace with dev-dependencies) and the
//! benchmark (`ferry-bench`, then the hub and spoke) must resolve every shared
//! dependency with the same features, or switching between them rebuilds
//! tokio, rustls, quinn, sqlx and OpenDAL. `workspace-hack/` pins the
//! union; this test asks cargo for each build's feature sets and names
//! any dependency that still differs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// `name version` → features, for a build of `packages` (`None`: the whole
/// workspace with dev-dependencies).
fn feature_sets(packages: Option<&[&str]>) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["tree", "--offline", "--target", "all", "--prefix", "none"])
        .args(["--format", "{p} [{f}]"]);
    match packages {
        None => {
            cmd.args(["--workspace", "--edges", "normal,dev,build"]);
        }
        Some(list) => {
            cmd.args(["--edges", "normal,build"]);
            for p in list {
                cmd.args(["--package", p]);
            }
        }
    }
    let out = cmd.output().expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((head, features)) = line.rsplit_once(" [") else {
            continue;
        };
        let mut words = head.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        // Local packages (with a path) and host-only copies are not shared.
        if head.contains('(') {
            continue;
        }
        let features = features.trim_end_matches(']');
        sets.entry(format!("{name} {version}")).or_default().extend(
            features
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned),
        );
    }
    sets
}

#[test]
fn every_build_resolves_shared_dependencies_alike() {
    let all = feature_sets(None);
    let builds: [(&str, &[&str]); 3] = [
        (
            "run-local.sh and the benchmark's own build",
            &["ferry-hub", "ferry-spoke", "ferry-client"],
        ),
        ("the benchmark", &["ferry-bench"]),
        (
            "the test script's first build",
            &[
                "ferry-common",
                "ferry-hub",
                "ferry-spoke",
                "ferry-client",
                "ferry-tests",
                "ferry-bench",
            ],
        ),
    ];
    let mut differ = Vec::new();
    for (what, packages) in builds {
        for (package, features) in feature_sets(Some(packages)) {
            let union = &all[&package];
            let missing: Vec<_> = union.difference(&features).collect();
            if !missing.is_empty() {
                differ.push(format!("{what}: {package} lacks {missing:?}"));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "add these to workspace-hack/Cargo.toml with the features of the whole workspace:\n{}",
        differ.join("\n")
    );
}
