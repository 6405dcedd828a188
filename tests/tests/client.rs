//! The `ferry` command against a hub and two spokes, one of them further
//! away (behind a delay proxy): it picks the nearer spoke by probing and
//! reports what it measured to the hub; copies up and down go through
//! that spoke (the hub carries no bytes) and arrive whole; when the
//! nearer spoke's connection breaks mid-download or mid-upload the copy
//! goes on through the other from where it was; bad input gets clear
//! errors and the documented exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ferry_tests::delay_proxy::DelayProxy;
use ferry_tests::dns::until_eligible;
use ferry_tests::fault_proxy::FaultProxy;
use ferry_tests::hub::{ADMIN_TOKEN, binary};
use ferry_tests::scenarios::{Tenant, tenant};
use ferry_tests::{Api, Hub, Spoke, SpokeOptions, metric};
use serde_json::{Value, json};

/// Runs `ferry ARGS` as the tenant, against the hub, with a home of its
/// own (no profile, no upload sessions of other tests).
async fn ferry(hub: &Hub, key: &str, home: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(binary("ferry"));
    cmd.args(args)
        .env_clear()
        .env("HOME", home)
        .env("FERRY_URL", hub.url())
        .env("FERRY_API_KEY", key)
        .env("FERRY_DEBUG", "1");
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("ferry finished within 2 minutes")
        .expect("ferry runs")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "ferry failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn sha256_of(path: &Path) -> Vec<u8> {
    ferry_tests::sha256(&std::fs::read(path).unwrap())
}

fn random_file(dir: &Path, name: &str, size: usize) -> PathBuf {
    let path = dir.join(name);
    let mut data = Vec::with_capacity(size + 8);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(&path, data).unwrap();
    path
}

/// A hub, spoke `near` (reached through `near_proxy`, which adds nothing
/// until told to fail) and spoke `far` (30 ms further, through a delay
/// proxy); both announce their proxy as where clients reach them.
struct Net {
    hub: Hub,
    near: Spoke,
    far: Spoke,
    near_proxy: FaultProxy,
    _far_proxy: DelayProxy,
    t: Tenant,
    home: tempfile::TempDir,
}

async fn network() -> Net {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let at = |l: &tokio::net::TcpListener| {
        format!("public_url = \"http://{}\"", l.local_addr().unwrap())
    };
    // A spoke announcing `l` (its proxy, started below) as its address.
    let spoke_at = |name: &str, l: &tokio::net::TcpListener| {
        let opts = SpokeOptions {
            steering_extra: at(l),
            ..SpokeOptions::default()
        };
        Spoke::start_with(&hub, name, &hub.spoke_token(name, None), &opts)
            .unwrap_or_else(|log| panic!("{log}"))
    };
    let near_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let far_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let near = spoke_at("near", &near_l);
    let far = spoke_at("far", &far_l);
    let near_proxy = FaultProxy::start_on(near_l, near.addr);
    let far_proxy = DelayProxy::start_on(
        far_l,
        far.addr,
        Duration::from_millis(30),
        "127.0.0.1".parse().unwrap(),
    );
    until_eligible(&hub, &["near", "far"]).await;
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    Net {
        hub,
        near,
        far,
        near_proxy,
        _far_proxy: far_proxy,
        t,
        home: tempfile::tempdir().unwrap(),
    }
}

/// What the hub's steering map holds for this machine's network.
async fn steering_view(hub: &Hub) -> Value {
    Api::new(hub.url())
        .as_token(ADMIN_TOKEN)
        .get("/v1/steering?client=127.0.0.1")
        .send()
        .await
        .expect(200)
        .json()
}

async fn bytes(url: &str, direction: &str, spoke: bool) -> f64 {
    let name = if spoke {
        "ferry_spoke_content_bytes_total"
    } else {
        "ferry_content_bytes_total"
    };
    metric(url, name, &[("direction", direction)]).await
}

#[tokio::test]
async fn ferry_copies_through_the_nearer_spoke_and_checks_what_arrived() {
    let n = network().await;
    let (hub, key, home) = (&n.hub, n.t.key.as_str(), n.home.path());
    let work = tempfile::tempdir().unwrap();
    let size = 300 << 20;
    let src = random_file(work.path(), "big.bin", size);
    let hub_before = (
        bytes(&hub.metrics_url(), "upload", false).await,
        bytes(&hub.metrics_url(), "download", false).await,
    );

    // The spokes, probed: near is in use and measured faster.
    let out = ferry(hub, key, home, &["spokes", "--json"]).await;
    let spokes = json_lines(ok(&out));
    let find = |name: &str| spokes.iter().find(|s| s["spoke"] == name).unwrap().clone();
    assert_eq!(find("near")["in_use"], true, "{spokes:?}");
    assert!(
        find("far")["rtt_ms"].as_f64().unwrap() > find("near")["rtt_ms"].as_f64().unwrap() + 20.0,
        "{spokes:?}"
    );
    // What it measured reached the hub's steering map for its network.
    let view = steering_view(hub).await;
    let probed: Vec<&str> = view["prefixes"][0]["spokes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["samples"]["probe"].as_u64().unwrap_or(0) > 0)
        .map(|s| s["spoke"].as_str().unwrap())
        .collect();
    assert!(
        probed.contains(&"near") && probed.contains(&"far"),
        "{view}"
    );
    assert_eq!(view["prefixes"][0]["spokes"][0]["spoke"], "near", "{view}");

    // Up, through near; the hub carries nothing.
    let out = ferry(
        hub,
        key,
        home,
        &["cp", "--json", src.to_str().unwrap(), "local:up/big.bin"],
    )
    .await;
    let up = json_lines(ok(&out));
    assert_eq!(up[0]["via"], "near", "{up:?}");
    assert_eq!(up[0]["size"], size as u64);
    assert_eq!(up[0]["failovers"], 0);
    assert_eq!(
        bytes(&n.near.metrics_url(), "upload", true).await,
        size as f64
    );

    // Down, into a folder; the same bytes, no temporary file left.
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = ferry(
        hub,
        key,
        home,
        &[
            "cp",
            "--json",
            "local:up/big.bin",
            &format!("{}/", out_dir.display()),
        ],
    )
    .await;
    let down = json_lines(ok(&out));
    assert_eq!(down[0]["via"], "near");
    assert_eq!(down[0]["crc64nvme"], up[0]["crc64nvme"]);
    assert_eq!(sha256_of(&out_dir.join("big.bin")), sha256_of(&src));
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (
            bytes(&hub.metrics_url(), "upload", false).await,
            bytes(&hub.metrics_url(), "download", false).await
        ),
        hub_before,
        "the hub carried content bytes"
    );

    // An empty file.
    let empty = work.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    ok(&ferry(
        hub,
        key,
        home,
        &["cp", empty.to_str().unwrap(), "local:empty.txt"],
    )
    .await);
    let out = ferry(hub, key, home, &["stat", "--json", "local:empty.txt"]).await;
    assert_eq!(json_lines(ok(&out))[0]["size"], 0);

    // ls, stat, cat, stdin, rm.
    let out = ferry(hub, key, home, &["ls", "--json", "-r", "local:"]).await;
    let listed: Vec<String> = json_lines(ok(&out))
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(listed.contains(&"up/big.bin".to_owned()), "{listed:?}");
    let out = ferry(hub, key, home, &["stat", "--json", "local:up/big.bin"]).await;
    assert_eq!(json_lines(ok(&out))[0]["size"], size as u64);
    let mut cmd = tokio::process::Command::new(binary("ferry"));
    cmd.args(["cp", "-", "local:notes/hello.txt"])
        .env_clear()
        .env("HOME", home)
        .env("FERRY_URL", hub.url())
        .env("FERRY_API_KEY", key)
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello from stdin\n").await.unwrap();
    }
    assert!(child.wait().await.unwrap().success());
    let out = ferry(hub, key, home, &["cat", "local:notes/hello.txt"]).await;
    assert_eq!(ok(&out).stdout, b"hello from stdin\n");
    ok(&ferry(hub, key, home, &["rm", "local:notes/hello.txt"]).await);
    let out = ferry(hub, key, home, &["stat", "local:notes/hello.txt"]).await;
    assert_eq!(out.status.code(), Some(1));
    // A folder goes with `-r`, all it holds with it.
    ok(&ferry(hub, key, home, &["mkdir", "local:old/inner"]).await);
    let out = ferry(hub, key, home, &["--json", "rm", "-r", "local:old"]).await;
    assert!(String::from_utf8_lossy(&ok(&out).stdout).contains("\"deleted_files\":0"));
    let out = ferry(hub, key, home, &["ls", "local:old"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // A profile written by `ferry config set` (the key from the
    // environment, never the command line), shown without its key, used
    // with nothing else set.
    let cfg_home = tempfile::tempdir().unwrap();
    let bare = |args: &[&str], with_key: bool| {
        let mut cmd = std::process::Command::new(binary("ferry"));
        cmd.args(args).env_clear().env("HOME", cfg_home.path());
        if with_key {
            cmd.env("FERRY_API_KEY", key);
        }
        cmd.output().unwrap()
    };
    ok(&bare(
        &["--profile", "work", "config", "set", "--url", &hub.url()],
        true,
    ));
    let file = cfg_home.path().join(".config/ferry/config.toml");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = bare(&["config", "show", "--json"], false);
    let shown = json_lines(ok(&out));
    assert_eq!(shown[0]["profile"], "work");
    assert_eq!(shown[0]["url"], hub.url());
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(key),
        "the key is shown"
    );
    let out = bare(&["--profile", "work", "ls", "local:up"], false);
    assert_eq!(String::from_utf8_lossy(&ok(&out).stdout), "up/big.bin\n");
    let out = bare(&["ls", "local:up"], false);
    assert_eq!(out.status.code(), Some(2), "no default profile, no URL");

    // Bad input: clear words, documented exit codes, nothing left behind.
    let out = ferry(hub, "fry_not-a-key", home, &["ls", "local:"]).await;
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("unknown or revoked") && said.contains("401"),
        "{said}"
    );
    assert!(
        !said.contains("fry_not-a-key"),
        "the key is never printed: {said}"
    );
    let out = ferry(hub, key, home, &["--profile", "nope", "ls", "local:"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile 'nope'"));
    let out = ferry(
        hub,
        key,
        home,
        &["cp", "local:nothing/here.bin", out_dir.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no file at"));
    let out = ferry(hub, key, home, &["cp", "/nonexistent/file", "local:x.bin"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/file"));
    let out = ferry(hub, key, home, &["cp", "a", "b"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = ferry(hub, key, home, &["frobnicate"]).await;
    assert_eq!(out.status.code(), Some(2));
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[tokio::test]
async fn a_copy_goes_on_through_the_other_spoke_when_the_nearer_one_breaks() {
    let n = network().await;
    let (hub, key, home) = (&n.hub, n.t.key.as_str(), n.home.path());
    let work = tempfile::tempdir().unwrap();
    let size: usize = 48 << 20;
    let src = random_file(work.path(), "big.bin", size);

    // Mid-upload: near takes two parts, then fails the third; the upload
    // goes on through far from the offset the server holds.
    let up = upload_past_a_failing_near(&n, &src, "big.bin", 1).await;
    assert_eq!(up["failovers"], 1, "{up}");

    // Mid-download: near's answer is cut after 10 MiB; the rest comes from
    // far, by range, not again from the start.
    n.near_proxy.cut_next_response_after(10 << 20);
    let target = work.path().join("back.bin");
    let far_before = bytes(&n.far.metrics_url(), "download", true).await;
    let out = ferry(hub, key, home, &down_args(&target)).await;
    let down = json_lines(ok(&out));
    assert_eq!(down[0]["failovers"], 1, "{down:?}");
    assert_eq!(down[0]["moved"], size as u64);
    assert_eq!(sha256_of(&target), sha256_of(&src));
    let far_sent = bytes(&n.far.metrics_url(), "download", true).await - far_before;
    // (Of the 10 MiB near sent, the last pieces may be lost with the
    // connection; most arrived, and only the rest came from far.)
    assert!(
        far_sent > 0.0 && far_sent <= (size - (8 << 20)) as f64,
        "far sent {far_sent} bytes: the download started over"
    );

    // A download interrupted and run again resumes from what was written,
    // if the partial file is of the same version of the same file.
    let etag = Api::new(hub.url())
        .as_token(key)
        .head("/v1/connections/local/files/big.bin")
        .send()
        .await
        .expect(200)
        .header("etag")
        .unwrap();
    let target = work.path().join("again.bin");
    let partial = ferry_client_partial(&target);
    let about = |etag: &str| {
        serde_json::json!({ "conn": "local", "path": "big.bin", "size": size, "etag": etag,
                            "lanes": [[0, size, 5 << 20]] })
        .to_string()
    };
    let mut about_path = partial.clone().into_os_string();
    about_path.push(".json");
    let about_path = PathBuf::from(about_path);
    for (said, resumes) in [("\"another-version\"", false), (etag.as_str(), true)] {
        std::fs::write(&partial, &std::fs::read(&src).unwrap()[..(5 << 20)]).unwrap();
        std::fs::write(&about_path, about(said)).unwrap();
        let out = ferry(hub, key, home, &down_args(&target)).await;
        let again = json_lines(ok(&out));
        if resumes {
            assert_eq!(again[0]["resumed_from"], 5u64 << 20, "{again:?}");
            assert_eq!(again[0]["moved"], (size - (5 << 20)) as u64);
        } else {
            assert_eq!(again[0]["resumed_from"], Value::Null, "{again:?}");
            assert_eq!(again[0]["moved"], size as u64);
        }
        assert_eq!(sha256_of(&target), sha256_of(&src));
        assert!(!partial.exists() && !about_path.exists());
        std::fs::remove_file(&target).unwrap();
    }

    // near killed in the middle of a download (its answers slowed so that
    // there is a middle): the rest comes from far, by range.
    let mut near = n.near;
    n.near_proxy.throttle_responses(Duration::from_millis(2));
    let target = work.path().join("killed.bin");
    let partial = ferry_client_partial(&target);
    let far_before = bytes(&n.far.metrics_url(), "download", true).await;
    let child = ferry_child(hub, key, home, &down_args(&target));
    let midway = ferry_tests::eventually(Duration::from_secs(60), async || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() >= 4 << 20)
    })
    .await;
    assert!(midway, "the download did not get under way");
    let had = std::fs::metadata(&partial).unwrap().len();
    near.kill_for_good();
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let down = json_lines(ok(&out));
    assert_eq!(down[0]["failovers"], 1, "{down:?}");
    assert_eq!(sha256_of(&target), sha256_of(&src));
    let far_sent = bytes(&n.far.metrics_url(), "download", true).await - far_before;
    assert!(
        far_sent > 0.0 && far_sent <= (size as u64 - had) as f64,
        "far sent {far_sent} bytes; {had} had arrived through near"
    );
}

/// Uploads `src` (48 MiB) as `name` in `streams` sessions of 8 MiB parts
/// while near fails every `PATCH` after its first two: far takes exactly
/// what near did not commit (nothing is sent twice) and the stored file
/// is the same. Returns the command's line.
async fn upload_past_a_failing_near(n: &Net, src: &Path, name: &str, streams: u8) -> Value {
    let part = 8 << 20;
    let size = std::fs::metadata(src).unwrap().len() as usize;
    n.near_proxy.fail_after(http::Method::PATCH, 2, 1000);
    let streams = streams.to_string();
    let to = format!("local:{name}");
    let out = ferry(
        &n.hub,
        &n.t.key,
        n.home.path(),
        &[
            "cp",
            "--json",
            "--part-size",
            "8MiB",
            "--upload-streams",
            &streams,
            src.to_str().unwrap(),
            &to,
        ],
    )
    .await;
    let up = json_lines(ok(&out)).remove(0);
    assert_eq!(
        bytes(&n.near.metrics_url(), "upload", true).await,
        (2 * part) as f64,
        "{up}"
    );
    let far_up = bytes(&n.far.metrics_url(), "upload", true).await;
    assert_eq!(
        far_up,
        (size - 2 * part) as f64,
        "far took {far_up} bytes of {size}"
    );
    let stored = Api::new(n.hub.url())
        .as_token(&n.t.key)
        .get(&format!("/v1/connections/local/files/{name}"))
        .send()
        .await
        .expect(200);
    assert_eq!(
        ferry_tests::sha256(&stored.body),
        ferry_tests::sha256(&std::fs::read(src).unwrap())
    );
    up
}

/// `ferry cp --json --streams 1 local:big.bin TARGET`: one stream, so
/// that what each spoke sends can be told exactly.
fn down_args(target: &Path) -> [&str; 6] {
    [
        "cp",
        "--json",
        "--streams",
        "1",
        "local:big.bin",
        target.to_str().unwrap(),
    ]
}

/// The temporary name `ferry` downloads `target` under.
fn ferry_client_partial(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap().to_string_lossy();
    target.with_file_name(format!(".{name}.ferry-part"))
}

/// Runs `ferry ARGS` in the background, as [`ferry`] does.
fn ferry_child(hub: &Hub, key: &str, home: &Path, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(binary("ferry"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("FERRY_URL", hub.url())
        .env("FERRY_API_KEY", key)
        .env("FERRY_DEBUG", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sends `SIGINT` to a running command, as Ctrl-C does.
fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().expect("still running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits (up to 30 s) until spoke `s` has taken at least `n` bytes of
/// uploads.
async fn until_uploaded(s: &Spoke, n: usize) {
    let taken = ferry_tests::eventually(Duration::from_secs(30), async || {
        bytes(&s.metrics_url(), "upload", true).await >= n as f64
    })
    .await;
    assert!(taken, "{} did not take {n} bytes", s.name);
}

#[tokio::test]
async fn an_upload_survives_its_spoke_killed_and_the_command_interrupted() {
    let mut n = network().await;
    let (key, home) = (n.t.key.clone(), n.home.path().to_owned());
    let work = tempfile::tempdir().unwrap();
    let size: usize = 48 << 20;
    let part = 8 << 20;
    let src = random_file(work.path(), "big.bin", size);
    let want = sha256_of(&src);
    // Each part waits a while at near, so the test can act between parts.
    n.near_proxy
        .delay_method(http::Method::PATCH, Duration::from_millis(300));

    let src_s = src.to_str().unwrap();
    let up = |to: &'static str| {
        [
            "cp",
            "--json",
            "--part-size",
            "8MiB",
            "--upload-streams",
            "1",
            src_s,
            to,
        ]
    };
    // Ctrl-C once near has two parts: the command stops; run again, it
    // resumes the same session from what the server holds.
    let mut child = ferry_child(&n.hub, &key, &home, &up("local:a.bin"));
    until_uploaded(&n.near, 2 * part).await;
    interrupt(&child);
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(130), "interrupted, it says so");
    let out = ferry(&n.hub, &key, &home, &up("local:a.bin")).await;
    let again = json_lines(ok(&out));
    let from = again[0]["resumed_from"].as_u64().expect("it resumed");
    // (Two parts' bytes had reached near: the first, at least, recorded.)
    assert!(from >= part as u64, "{again:?}");
    assert_eq!(again[0]["moved"], (size as u64) - from);
    let api = Api::new(n.hub.url()).as_token(&key);
    let stored = api
        .get("/v1/connections/local/files/a.bin")
        .send()
        .await
        .expect(200);
    assert_eq!(ferry_tests::sha256(&stored.body), want);

    // near killed while the upload is under way (the part it was about
    // to take held at its proxy): the rest goes through
    // far, from the offset the server holds.
    let before_far = bytes(&n.far.metrics_url(), "upload", true).await;
    // The interrupted run's last request (one part at most, held at the
    // proxy) may still bring near bytes after this reading: wait for one
    // part more than two, so that this run surely gave near two parts.
    let near_before = bytes(&n.near.metrics_url(), "upload", true).await;
    let child = ferry_child(&n.hub, &key, &home, &up("local:b.bin"));
    until_uploaded(&n.near, near_before as usize + 3 * part).await;
    // Gone, as when its machine is: connections to it are refused.
    n.near.kill_for_good();
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let up = json_lines(ok(&out));
    assert_eq!(up[0]["failovers"], 1, "{up:?}");
    let far_took = bytes(&n.far.metrics_url(), "upload", true).await - before_far;
    // near had taken two parts' bytes when it died, so it had recorded
    // the first at least (the second starts after the first's answer):
    // no more than one part is sent again.
    assert!(
        far_took > 0.0 && far_took <= (size - part) as f64,
        "far took {far_took} bytes: more than one part sent again"
    );
    let stored = api
        .get("/v1/connections/local/files/b.bin")
        .send()
        .await
        .expect(200);
    assert_eq!(ferry_tests::sha256(&stored.body), want);
}

/// The lanes of a partial download, as its record beside it says: how
/// many bytes they hold in all.
fn recorded(partial: &Path) -> u64 {
    let mut about = partial.as_os_str().to_owned();
    about.push(".json");
    std::fs::read_to_string(PathBuf::from(about))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| {
            v["lanes"]
                .as_array()
                .map(|l| l.iter().map(|x| x[2].as_u64().unwrap_or(0)).sum())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn one_file_moves_in_parallel_streams_that_fail_over_and_resume_each_on_its_own() {
    let n = network().await;
    let (hub, key, home) = (&n.hub, n.t.key.as_str(), n.home.path());
    let work = tempfile::tempdir().unwrap();
    let size: usize = 48 << 20;
    let src = random_file(work.path(), "big.bin", size);
    let want = sha256_of(&src);

    // Up in four sessions at once (six parts: 2 + 2 + 1 + 1), joined at
    // the end, while near fails every part after its first two: each
    // stream goes on through far from what its session holds.
    let up = upload_past_a_failing_near(&n, &src, "par.bin", 4).await;
    assert_eq!(up["streams"], 4, "{up}");
    assert!(up["failovers"].as_u64().unwrap() >= 1, "{up}");
    let api = Api::new(hub.url()).as_token(key);
    // The partial sessions are no object of their own.
    let listing = api
        .get("/v1/connections/local/list/")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(ferry_tests::entry_names(&listing), ["par.bin"], "{listing}");

    // Down in four ranges at once: every byte once, from near.
    async fn sent(s: &Spoke) -> f64 {
        bytes(&s.metrics_url(), "download", true).await
    }
    let (near_before, far_before) = (sent(&n.near).await, sent(&n.far).await);
    let target = work.path().join("par.bin");
    let par_down = |target: &Path| {
        [
            "cp".to_owned(),
            "--json".into(),
            "--streams".into(),
            "4".into(),
            "local:par.bin".into(),
            target.to_str().unwrap().to_owned(),
        ]
    };
    let args = par_down(&target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let down = json_lines(ok(&ferry(hub, key, home, &args).await));
    assert_eq!(down[0]["streams"], 4, "{down:?}");
    assert_eq!(down[0]["moved"], size as u64);
    assert_eq!(sha256_of(&target), want);
    assert_eq!(sent(&n.near).await - near_before, size as f64);
    assert_eq!(sent(&n.far).await - far_before, 0.0);

    // Ctrl-C in the middle of a download in four ranges (near's answers
    // slowed): the command notes how far each range got; run again, it
    // asks only for the rest of each, and the file is whole.
    n.near_proxy.throttle_responses(Duration::from_millis(2));
    let target = work.path().join("again.bin");
    let partial = ferry_client_partial(&target);
    let args = par_down(&target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = ferry_child(hub, key, home, &args);
    let midway = ferry_tests::eventually(Duration::from_secs(60), async || {
        recorded(&partial) >= 8 << 20
    })
    .await;
    assert!(midway, "the download did not get under way");
    interrupt(&child);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert!(!target.exists());
    let had = recorded(&partial);
    assert!(had >= 8 << 20 && had < size as u64, "{had}");
    n.near_proxy.throttle_responses(Duration::ZERO);
    let again = json_lines(ok(&ferry(hub, key, home, &args).await));
    assert_eq!(again[0]["resumed_from"], had, "{again:?}");
    assert_eq!(again[0]["moved"], size as u64 - had);
    assert_eq!(sha256_of(&target), want);
    assert!(!partial.exists());
}

#[tokio::test]
async fn remote_copies_go_within_a_connection_or_through_the_client_under_a_bandwidth_limit() {
    let n = network().await;
    let (hub, key, home) = (&n.hub, n.t.key.as_str(), n.home.path());
    let api = Api::new(hub.url()).as_token(key);
    let work = tempfile::tempdir().unwrap();
    let size: usize = 3 << 20;
    let src = random_file(work.path(), "small.bin", size);
    let want = sha256_of(&src);
    ok(&ferry(
        hub,
        key,
        home,
        &["cp", src.to_str().unwrap(), "local:a/small.bin"],
    )
    .await);

    // Within a connection: the copy API, no byte through the client.
    let out = ferry(
        hub,
        key,
        home,
        &["cp", "--json", "local:a/small.bin", "local:b/"],
    )
    .await;
    assert_eq!(json_lines(ok(&out))[0]["op"], "copy");
    let copied = api
        .get("/v1/connections/local/files/b/small.bin")
        .send()
        .await
        .expect(200);
    assert_eq!(ferry_tests::sha256(&copied.body), want);

    // Between two connections: down and up again, both within one budget
    // of 2 MiB/s, so 6 MiB cannot take less than about 3 s. (A lower
    // bound only: a busy machine is slower, never faster.)
    api.post("/v1/connections")
        .json(&json!({ "name": "other", "provider": "fs",
                        "config": { "root": hub.data_dir.join("alpha-other") } }))
        .send()
        .await
        .expect(201);
    let began = std::time::Instant::now();
    let out = ferry(
        hub,
        key,
        home,
        &[
            "cp",
            "--json",
            "--bwlimit",
            "2MiB",
            "local:a/small.bin",
            "other:c/small.bin",
        ],
    )
    .await;
    let took = began.elapsed();
    let up = json_lines(ok(&out));
    assert_eq!(up[0]["op"], "upload", "{up:?}");
    assert!(took >= Duration::from_millis(2_800), "{took:?}");
    let there = api
        .get("/v1/connections/other/files/c/small.bin")
        .send()
        .await
        .expect(200);
    assert_eq!(ferry_tests::sha256(&there.body), want);
    // A copy within a connection whose source is missing says so.
    let out = ferry(hub, key, home, &["cp", "local:nothing.bin", "local:b/"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not_found"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_download_to_a_full_disk_fails_clearly_and_leaves_nothing() {
    let n = network().await;
    let (hub, key, home) = (&n.hub, n.t.key.as_str(), n.home.path());
    let work = tempfile::tempdir().unwrap();
    let src = random_file(work.path(), "big.bin", 24 << 20);
    ok(&ferry(
        hub,
        key,
        home,
        &["cp", src.to_str().unwrap(), "local:big.bin"],
    )
    .await);

    // The command runs in a mount namespace of its own where the target
    // folder is an 8 MiB tmpfs; the script then lists what is left there.
    let disk = work.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let script = r#"mount -t tmpfs -o size=8m ferry-test "$1" || exit 99
"$2" cp --json local:big.bin "$1/out.bin"
echo "exit=$?"
ls -A "$1""#;
    let out = tokio::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&disk)
        .arg(binary("ferry"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("FERRY_URL", hub.url())
        .env("FERRY_API_KEY", key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let mut lines = stdout.lines();
    let said: Value = serde_json::from_str(lines.next().unwrap_or("")).unwrap();
    assert!(
        said["error"]
            .as_str()
            .unwrap()
            .contains("No space left on device")
            && said["error"].as_str().unwrap().contains("nothing was kept"),
        "{said}"
    );
    assert_eq!(lines.next(), Some("exit=1"), "{stdout}\n{stderr}");
    // Neither the target nor the partial file nor its record is left.
    assert_eq!(lines.next(), None, "left on the disk: {stdout}");
    assert!(stderr.contains("ferry: cannot write"), "{stderr}");
}

#[tokio::test]
async fn a_long_lived_client_probes_again_and_follows_the_nearer_spoke() {
    let n = network().await;
    let hub_url = url::Url::parse(&n.hub.url()).unwrap();
    let client = ferry_client::Client::new(hub_url.clone(), n.t.key.clone())
        .unwrap()
        .with_reprobe_after(Duration::from_millis(300));
    let work = tempfile::tempdir().unwrap();
    let src = random_file(work.path(), "a.bin", 1 << 20);
    client.choose_endpoint().await.unwrap();
    assert_eq!(client.current().name, "near");
    let quiet = |_: u64, _: u64| {};
    client
        .upload(&src, "local", "a.bin", 8 << 20, &quiet)
        .await
        .unwrap();
    assert_eq!(
        bytes(&n.near.metrics_url(), "upload", true).await,
        (1 << 20) as f64
    );

    // near becomes slow to answer (150 ms; far is about 60): once the
    // order is older than the interval, the client probes again (as each
    // transfer begins) and goes to far; the hub hears the new samples.
    n.near_proxy
        .delay_method(http::Method::GET, Duration::from_millis(150));
    let samples = async || {
        steering_view(&n.hub).await["prefixes"][0]["spokes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["samples"]["probe"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let reported = samples().await;
    assert!(client.endpoints().len() == 3 && client.current().name == "near");
    // (Within the interval nothing is probed.)
    assert!(!client.refresh_endpoints().await);
    let waited = ferry_tests::eventually(Duration::from_secs(5), async || {
        client.refresh_endpoints().await
    })
    .await;
    assert!(waited, "it did not probe again");
    assert_eq!(client.current().name, "far", "{:?}", client.endpoints());
    assert!(samples().await > reported);
    let target = work.path().join("back.bin");
    let far_before = bytes(&n.far.metrics_url(), "download", true).await;
    client
        .download("local", "a.bin", &target, &quiet)
        .await
        .unwrap();
    assert_eq!(sha256_of(&target), sha256_of(&src));
    assert_eq!(
        bytes(&n.far.metrics_url(), "download", true).await - far_before,
        (1 << 20) as f64
    );
    // A client given its endpoint never probes, however old its order.
    let given = ferry_client::Client::new(hub_url, n.t.key.clone())
        .unwrap()
        .with_endpoint(url::Url::parse(&n.hub.url()).unwrap())
        .with_reprobe_after(Duration::ZERO);
    assert!(given.choose_endpoint().await.unwrap().is_empty());
    assert!(!given.refresh_endpoints().await);
    assert_eq!(given.current().name, "given");
}

/// The names and contents below `root`, by relative path.
fn tree_of(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[tokio::test]
async fn folders_copy_and_sync_both_ways_and_the_feed_shows_them() {
    let n = network().await;
    let (hub, key, home) = (&n.hub, n.t.key.as_str(), n.home.path());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    const FILES: usize = 1000;
    for i in 0..FILES {
        let dir = src.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i:04}.txt")),
            format!("file {i}\n").repeat(i % 7 + 1),
        )
        .unwrap();
    }
    let hub_up = bytes(&hub.metrics_url(), "upload", false).await;

    // Up, all of it, 8 at a time, through near.
    let src_s = src.to_str().unwrap();
    let out = ferry(
        hub,
        key,
        home,
        &[
            "cp",
            "-r",
            "--json",
            "--transfers",
            "8",
            src_s,
            "local:tree",
        ],
    )
    .await;
    let up = json_lines(ok(&out));
    assert_eq!(up.len(), FILES);
    assert!(
        up.iter().all(|l| l["op"] == "upload" && l["via"] == "near"),
        "{:?}",
        up[0]
    );
    assert_eq!(
        bytes(&hub.metrics_url(), "upload", false).await,
        hub_up,
        "the hub carried bytes"
    );

    // Down into an empty folder: the same tree.
    let back = work.path().join("back");
    let out = ferry(
        hub,
        key,
        home,
        &["cp", "-r", "--json", "local:tree", back.to_str().unwrap()],
    )
    .await;
    assert_eq!(json_lines(ok(&out)).len(), FILES);
    assert_eq!(tree_of(&back), tree_of(&src));

    // sync: nothing to do twice over; a change, an addition and, with
    // --delete, a removal are carried; --dry-run changes nothing.
    let out = ferry(hub, key, home, &["sync", "--json", src_s, "local:tree"]).await;
    assert!(
        json_lines(ok(&out)).is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(src.join("d1/f0001.txt"), b"changed, same size?\n").unwrap();
    std::fs::write(
        src.join("d3/f0003.txt"),
        b"file 3\nfile 3\nfile 3\nfile 4\n",
    )
    .unwrap();
    std::fs::write(src.join("new.txt"), b"new\n").unwrap();
    std::fs::remove_file(src.join("d2/f0002.txt")).unwrap();
    let out = ferry(
        hub,
        key,
        home,
        &[
            "sync",
            "--json",
            "--delete",
            "--dry-run",
            src_s,
            "local:tree",
        ],
    )
    .await;
    let planned: Vec<(String, String)> = json_lines(ok(&out))
        .iter()
        .map(|l| {
            (
                l["op"].as_str().unwrap().to_owned(),
                l["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut planned_sorted = planned.clone();
    planned_sorted.sort();
    assert_eq!(
        planned_sorted,
        [
            ("delete", "d2/f0002.txt"),
            ("upload", "d1/f0001.txt"),
            ("upload", "d3/f0003.txt"),
            ("upload", "new.txt"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // (d3/f0003.txt kept its size: the CRC64/NVME tells it apart.)
    let api = Api::new(hub.url()).as_token(key);
    api.get("/v1/connections/local/files/tree/d2/f0002.txt")
        .send()
        .await
        .expect(200);
    let sync_up = ["sync", "--json", "--delete", src_s, "local:tree"];
    let out = ferry(hub, key, home, &sync_up).await;
    assert_eq!(json_lines(ok(&out)).len(), 4);
    api.get("/v1/connections/local/files/tree/d2/f0002.txt")
        .send()
        .await
        .expect_problem(404, "not_found");
    let out = ferry(hub, key, home, &sync_up).await;
    assert!(json_lines(ok(&out)).is_empty());
    // And down: back matches src again, a stray local file deleted.
    std::fs::write(back.join("stray.txt"), b"x").unwrap();
    let out = ferry(
        hub,
        key,
        home,
        &[
            "sync",
            "--json",
            "--delete",
            "local:tree",
            back.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(json_lines(ok(&out)).len(), 5);
    assert_eq!(tree_of(&back), tree_of(&src));

    // check: the same on both sides, then one file changed locally.
    ok(&ferry(hub, key, home, &["check", src_s, "local:tree"]).await);
    std::fs::write(
        src.join("d5/f0005.txt"),
        b"file 5\nfile 5\nfile 5\nfile 5\nfile 5\nfile X\n",
    )
    .unwrap();
    let out = ferry(hub, key, home, &["check", "--json", "local:tree", src_s]).await;
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    let verdicts: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("verdict").is_some())
        .collect();
    assert_eq!(verdicts.len(), 1, "{lines:?}");
    // (With --json the failure is the last line too.)
    assert!(
        lines.last().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("1 of 1000")
    );
    assert_eq!(verdicts[0]["path"], "d5/f0005.txt");
    assert_eq!(verdicts[0]["verdict"], "differs");

    // A file changed in the provider, outside ferry, at the same size: the
    // server knows no checksum of it, so sync goes by time; the remote one
    // is newer and comes down. A downloaded file keeps the server's time,
    // so nothing then moves either way.
    let api = Api::new(hub.url()).as_token(key);
    let outside = "/v1/connections/local/files/tree/d6/f0006.txt";
    let before = api.head(outside).send().await.expect(200);
    let theirs = hub.data_dir.join("alpha/tree/d6/f0006.txt");
    let same_size = std::fs::read(&theirs)
        .unwrap()
        .iter()
        .map(|b| b ^ 1)
        .collect::<Vec<u8>>();
    std::fs::write(&theirs, &same_size).unwrap();
    // (Later than the copy's time by more than the two seconds that count
    // as the same, without waiting them out.)
    std::fs::File::options()
        .write(true)
        .open(&theirs)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    // Seen by the provider's change detection: the listing (the index)
    // has the new entity tag, and no checksum.
    let seen = ferry_tests::eventually(Duration::from_secs(30), async || {
        let now = api.head(outside).send().await;
        let listing = api
            .get("/v1/connections/local/list/tree/d6")
            .send()
            .await
            .json();
        let entry = listing["entries"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == "f0006.txt").cloned());
        now.header("etag") != before.header("etag")
            && entry.is_some_and(|e| {
                e["etag"].as_str() == now.header("etag").as_deref()
                    && e["checksums"]["crc64nvme"].is_null()
            })
    })
    .await;
    assert!(seen, "the change did not reach the listing");
    let back_s = back.to_str().unwrap();
    let out = ferry(hub, key, home, &["sync", "--json", "local:tree", back_s]).await;
    let moved = json_lines(ok(&out));
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0]["path"], "d6/f0006.txt");
    assert_eq!(std::fs::read(back.join("d6/f0006.txt")).unwrap(), same_size);
    for (from, to) in [("local:tree", back_s), (back_s, "local:tree")] {
        let out = ferry(hub, key, home, &["sync", "--json", from, to]).await;
        assert!(
            json_lines(ok(&out)).is_empty(),
            "{from} → {to} moved something"
        );
    }

    // mkdir, mv, and the feed: what was done is there, oldest first.
    ok(&ferry(hub, key, home, &["mkdir", "local:archive/2026"]).await);
    ok(&ferry(
        hub,
        key,
        home,
        &["mv", "local:tree/new.txt", "local:archive/2026/new.txt"],
    )
    .await);
    let out = ferry(hub, key, home, &["stat", "local:archive/2026/new.txt"]).await;
    ok(&out);
    let out = ferry(hub, key, home, &["events", "--json"]).await;
    let events = json_lines(ok(&out));
    assert!(events.len() > FILES, "{}", events.len());
    let last = events.last().unwrap();
    assert_eq!(last["type"], "moved", "{last}");
    assert_eq!(last["path"], "archive/2026/new.txt");
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}
