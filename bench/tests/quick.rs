//! The benchmark must keep working: run `ferry-bench --quick` with tiny
//! sizes against the debug binaries and check that every scenario produced
//! its figures and the charts were drawn. No figure is judged here — speed
//! is read from the full run's table, never asserted in a test.

use std::process::Command;

use serde_json::Value;

fn positive(v: &Value, what: &str) {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is missing: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} is {x}");
}

#[test]
fn the_quick_benchmark_runs_every_scenario() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(["--quick", "--no-build", "--runs", "1", "--size-mib", "4"])
        .args(["--data-in", "tmp"])
        .args(["--mem-downloads", "32", "--mem-uploads", "8"])
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("ferry-bench runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "ferry-bench failed:\n{stdout}\n{stderr}"
    );
    for heading in [
        "Scenario 1",
        "2. Spoke memory",
        "3. Concurrent",
        "4. Control",
        "5. Tunnel",
        "6. Recovery",
        "7. Steering DNS",
        "11. Control requests from the metadata index",
        "14. HTTPS at the front",
    ] {
        assert!(
            stdout.contains(heading),
            "no table '{heading}' in:\n{stdout}"
        );
    }

    let json: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    for via in ["direct", "spoke", "nginx"] {
        positive(
            &json["transfer"]["download"][via]["mbps"],
            &format!("download {via}"),
        );
        positive(
            &json["transfer"]["upload"][via]["mbps"],
            &format!("upload {via}"),
        );
    }
    positive(
        &json["transfer"]["upload"]["spoke_sha256"]["mbps"],
        "upload with SHA-256",
    );
    let sizes = json["memory"]["sizes"].as_array().expect("memory sizes");
    assert_eq!(sizes.len(), 2);
    assert_eq!(
        sizes[1]["file_bytes"].as_u64().unwrap(),
        16 * sizes[0]["file_bytes"].as_u64().unwrap()
    );
    for s in sizes {
        positive(&s["peak_rss_bytes"], "peak RSS");
    }
    let rows = json["index"]["rows"].as_array().expect("index rows");
    assert_eq!(rows.len(), 7);
    for r in rows {
        positive(&r["rps"], &format!("{} via {}", r["request"], r["via"]));
    }
    let points = json["sweep"]["points"].as_array().expect("sweep points");
    assert!(points.len() >= 3);
    for p in points {
        positive(&p["spoke_mbps"], "sweep spoke");
        positive(&p["nginx_mbps"], "sweep nginx");
    }
    for via in ["hub", "spoke", "nginx-to-hub"] {
        positive(&json["control"][via]["rps"], &format!("control {via}"));
        positive(
            &json["control"][via]["p99_ms"],
            &format!("control p99 {via}"),
        );
    }
    for t in ["hub", "quic", "tcp"] {
        positive(&json["tunnel"][t]["mbps"], &format!("tunnel {t}"));
    }
    positive(&json["recovery"]["tunnel_back_after_listen_s"], "recovery");
    positive(
        &json["recovery"]["after_outage_tunnel_back_s"],
        "recovery after an outage",
    );
    for figure in [
        "nsd_qps",
        "ferry_ecs_qps",
        "ferry_source_qps",
        "killed_spoke_out_s",
    ] {
        positive(&json["dns"][figure], &format!("dns {figure}"));
    }
    for way in ["download", "upload"] {
        for path in ["origin", "spoke", "nginx"] {
            positive(
                &json["https"][way][path]["mbps"],
                &format!("https {way} {path}"),
            );
        }
    }
    positive(&json["machine"]["cpus"], "cpus");

    for chart in ["throughput.png", "spoke-rss.png"] {
        let png = std::fs::read(out.path().join(chart)).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{chart} is not a PNG"
        );
    }
}
