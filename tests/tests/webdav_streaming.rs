//! WebDAV uploads stream through the hub: a large upload keeps the hub's
//! memory near its upload budget (measured in the hub's own
//! `/proc/<pid>/status`), arrives whole and right, and an upload cut part
//! way leaves nothing under its name and nothing in the staging folder.

use bytes::Bytes;
use ferry_tests::providers::StorageServer;
use ferry_tests::scenarios::remote_tenant;
use ferry_tests::{Hub, HubOptions, pattern};
use http_body_util::BodyExt as _;

const MIB: usize = 1 << 20;
/// The upload: large enough that holding it whole would show.
const SIZE: usize = 256 * MIB;
/// How much the hub's peak memory may grow over what it used before the
/// upload: generous, and well under `SIZE`.
const GROWTH_BOUND_BYTES: u64 = 96 * MIB as u64;

/// A line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
fn proc_status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Files (not folders) under `dir`, as paths relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn webdav_uploads_stream_within_the_memory_budget_and_cut_ones_leave_nothing() {
    let server = StorageServer::webdav("ferry", "secret");
    let hub = Hub::start_with(HubOptions {
        extra_toml: "[providers.remote]\nallow_private_endpoints = true\n".into(),
        ..HubOptions::default()
    });
    let t = remote_tenant(
        &hub.url(),
        "alpha",
        "webdav",
        server.config("tenant-a", None),
    )
    .await;
    let pid = hub.daemon().pid().expect("the hub runs");
    let rss_before = proc_status_bytes(pid, "VmRSS");

    // 256 MiB made on the fly, 1 MiB at a time, hashed as it goes.
    let (req, tx) = t.api.put(&t.file("big/stream.bin")).body_channel(SIZE);
    let feeder = tokio::spawn(async move {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for i in 0..SIZE / MIB {
            let piece = Bytes::from(pattern(MIB, i as u64 + 1));
            ctx.update(&piece);
            tx.send(piece).await.expect("the hub reads the upload");
        }
        ctx.finish().as_ref().to_vec()
    });
    let put = req.send().await.expect(201);
    let digest = feeder.await.unwrap();
    let peak = proc_status_bytes(pid, "VmHWM");
    eprintln!(
        "hub memory: {} MiB resident before the upload, peak {} MiB after {} MiB streamed",
        rss_before / MIB as u64,
        peak / MIB as u64,
        SIZE / MIB
    );
    assert!(
        peak < rss_before + GROWTH_BOUND_BYTES,
        "the hub's peak memory grew by {} MiB for a {} MiB upload",
        (peak.saturating_sub(rss_before)) / MIB as u64,
        SIZE / MIB
    );

    // Whole and right: on the server, and read back through the hub.
    let on_disk = server.dir().join("tenant-a/big/stream.bin");
    assert_eq!(std::fs::metadata(&on_disk).unwrap().len(), SIZE as u64);
    let resp = t
        .api
        .get(&t.file("big/stream.bin"))
        .send_raw()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-ferry-checksum-crc64nvme"],
        put.header("x-ferry-checksum-crc64nvme").unwrap().as_str()
    );
    let mut body = resp.into_body();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            n += data.len();
            ctx.update(&data);
        }
    }
    assert_eq!((n, ctx.finish().as_ref().to_vec()), (SIZE, digest));

    // An upload cut part way: nothing under its name, nothing staged.
    let (req, tx) = t.api.put(&t.file("big/cut.bin")).body_channel(64 * MIB);
    let feeder = tokio::spawn(async move {
        for i in 0..8 {
            let _ = tx.send(Bytes::from(pattern(MIB, i))).await;
        }
        // Dropping the sender ends the body 56 MiB short.
    });
    // The client sees the request fail, or the hub's 400: either way the
    // hub has finished with it once the answer (or the error) is here.
    let cut = req.send_raw().await;
    feeder.await.unwrap();
    if let Ok(resp) = &cut {
        assert!(resp.status().is_client_error(), "{:?}", resp.status());
    }
    // The hub says so once it has dropped the upload.
    hub.daemon()
        .wait_for(
            "upload ended before its body was complete",
            std::time::Duration::from_secs(30),
        )
        .expect("the hub notices the cut upload");
    t.api
        .get(&t.file("big/cut.bin"))
        .send()
        .await
        .expect_problem(404, "not_found");
    assert!(!server.dir().join("tenant-a/big/cut.bin").exists());
    let staged = files_under(&server.dir().join("tenant-a/.ferry-partial"));
    assert!(staged.is_empty(), "left in the staging folder: {staged:?}");
    assert_eq!(
        files_under(&server.dir().join("tenant-a")),
        ["big/stream.bin"]
    );
}
