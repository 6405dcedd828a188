//! Builds the console (`console/`, TypeScript bundled by esbuild) into
//! `OUT_DIR/console` and writes the table the hub embeds it from
//! (`console_assets.rs`).
//!
//! The console's npm packages must be installed first (`npm ci --prefix
//! console`; `scripts/install-test-deps.sh` and `scripts/run-local.sh` do
//! it). Without them, or without `node`, the hub is built with a page at
//! `/console` that says how to build it, and cargo prints a warning.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let console = manifest.join("../console");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("console");
    // The whole folder: its sources, and node_modules when it appears.
    println!("cargo::rerun-if-changed={}", console.display());

    let built = console.join("node_modules/esbuild").is_dir()
        && Command::new("node")
            .arg(console.join("build.mjs"))
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success());
    if !built {
        println!(
            "cargo::warning=the console was not built (install its packages with `npm ci --prefix console`, which scripts/install-test-deps.sh does); /console says so"
        );
        std::fs::create_dir_all(&out).expect("OUT_DIR is writable");
        for entry in std::fs::read_dir(&out).expect("just made") {
            let _ = std::fs::remove_file(entry.expect("readable").path());
        }
        std::fs::write(out.join("index.html"), FALLBACK).expect("OUT_DIR is writable");
    }

    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("the console was built")
        .map(|e| {
            e.expect("readable")
                .file_name()
                .into_string()
                .expect("ASCII names")
        })
        .filter(|n| !n.ends_with(".gz") && !n.ends_with(".br"))
        .collect();
    names.sort();
    let mut table = String::from("pub(crate) static ASSETS: &[Asset] = &[\n");
    for name in &names {
        let path = out.join(name);
        let body = std::fs::read(&path).expect("readable");
        let variant = |ext: &str| {
            let p = out.join(format!("{name}.{ext}"));
            if p.exists() {
                format!("Some(include_bytes!({:?}))", p.display().to_string())
            } else {
                "None".to_owned()
            }
        };
        let _ = writeln!(
            table,
            "    Asset {{ name: {name:?}, body: include_bytes!({:?}), gzip: {}, br: {}, etag: \"\\\"{:016x}\\\"\" }},",
            path.display().to_string(),
            variant("gz"),
            variant("br"),
            fnv1a(&body),
        );
    }
    table.push_str("];\n");
    let _ = writeln!(table, "pub(crate) const BUILT: bool = {built};");
    write_if_changed(
        &PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"))
            .join("console_assets.rs"),
        &table,
    );
}

/// A 64-bit FNV-1a digest: an entity tag, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    std::fs::write(path, text).expect("OUT_DIR is writable");
}

const FALLBACK: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ferry console not built</title></head>
<body><main><h1>The console was not built into this hub</h1>
<p>Install the console's packages (<code>npm ci --prefix console</code>, which
<code>scripts/install-test-deps.sh</code> and <code>scripts/run-local.sh</code> do)
and build the hub again.</p></main></body></html>
";
