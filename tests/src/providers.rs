//! Real storage servers for the provider tests, started on loopback by the
//! tests themselves: moto's S3 server (PyPI), Azurite's blob server (npm)
//! and rclone's WebDAV server (Debian). `scripts/install-test-deps.sh`
//! installs all three, the first two in the project's own environments
//! ([`crate::tools`]). Each binds port 0 and the harness reads the port it
//! got from the line where it says so.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::announced_port;
use crate::process::Daemon;
use crate::tools::Tool;

/// Azurite's fixed development account and key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's fixed development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A storage server under test, stopped when dropped.
#[derive(Debug)]
pub struct StorageServer {
    /// Which one.
    pub kind: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data, removed with it.
    _dir: tempfile::TempDir,
    daemon: Daemon,
}

impl StorageServer {
    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The folder it keeps its data in.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Everything it logged.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// moto's S3 server, with the bucket `bucket`.
    pub fn s3(bucket: &str) -> StorageServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(Tool::MotoServer.path());
        cmd.args(["-H", "127.0.0.1", "-p", "0"]);
        // werkzeug: ` * Running on http://127.0.0.1:PORT`.
        let server = Self::started("s3", dir, cmd, "Running on");
        // moto accepts unsigned requests: make the bucket with a bare PUT.
        let status = http_status("PUT", &format!("{}/{bucket}", server.url()), &[]);
        assert_eq!(status, 200, "cannot create the bucket:\n{}", server.log());
        server
    }

    /// Azurite's blob server, with the container `container`.
    pub fn azblob(container: &str) -> StorageServer {
        let dir = tempfile::tempdir().unwrap();
        // Azurite announces its address on standard output: send that to
        // the standard error the harness reads.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec \"$0\" \"$@\" 1>&2"])
            .arg(Tool::AzuriteBlob.path())
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
            .arg("--location")
            .arg(dir.path())
            .args(["--silent", "--skipApiVersionCheck", "--loose"]);
        // `Azurite Blob service successfully listens on http://127.0.0.1:PORT`.
        let server = Self::started("azblob", dir, cmd, "successfully listens on");
        let status = azure_create_container(&server.url(), container);
        assert_eq!(
            status,
            201,
            "cannot create the container:\n{}",
            server.log()
        );
        server
    }

    /// fake-gcs-server (the GCS emulator, JSON and XML APIs, objects in a
    /// folder), with the bucket `bucket`. It takes no credentials.
    pub fn gcs(bucket: &str) -> StorageServer {
        let dir = tempfile::tempdir().unwrap();
        // It cannot tell which port 0 gave it: pick a free one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec \"$0\" \"$@\" 1>&2"])
            .arg(Tool::FakeGcsServer.path())
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
            ])
            .args([
                "-external-url",
                &url,
                "-backend",
                "filesystem",
                "-filesystem-root",
            ])
            .arg(dir.path().join("objects"))
            .args(["-log-level", "info"]);
        // `server started at http://127.0.0.1:PORT`.
        let server = Self::started("gcs", dir, cmd, "server started at");
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "content-type: application/json"])
            .args(["--data", &format!("{{\"name\":\"{bucket}\"}}")])
            .arg(format!("{url}/storage/v1/b?project=ferry"))
            .output()
            .expect("curl runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "cannot create the bucket:\n{}",
            server.log()
        );
        server
    }

    /// rclone's WebDAV server on a folder, with basic authentication.
    pub fn webdav(user: &str, password: &str) -> StorageServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("rclone");
        cmd.args(["serve", "webdav"])
            .arg(dir.path())
            .args(["--addr", "127.0.0.1:0"])
            .args(["--user", user, "--pass", password])
            .args(["--config", "/dev/null", "--log-level", "NOTICE"]);
        // `NOTICE: …: WebDav Server started on http://127.0.0.1:PORT/`.
        Self::started("webdav", dir, cmd, "Server started on")
    }

    /// Starts `cmd`, which binds port 0 on 127.0.0.1, and waits for the
    /// line with `announcement` that names the port it got.
    fn started(
        kind: &'static str,
        dir: tempfile::TempDir,
        cmd: Command,
        announcement: &str,
    ) -> StorageServer {
        let daemon = Daemon::spawn(cmd);
        let port =
            announced_port(&daemon, announcement, Duration::from_secs(60)).unwrap_or_else(|| {
                panic!(
                    "the {kind} server did not say where it listens:\n{}",
                    daemon.log()
                )
            });
        StorageServer {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
            daemon,
        }
    }

    /// A connection configuration for this server; `endpoint` replaces the
    /// server's own URL (a fault proxy in front of it).
    pub fn config(&self, place: &str, endpoint: Option<&str>) -> Value {
        self.config_at(place, "/", endpoint)
    }

    /// The same, with the connection's files under `root` in `place`.
    pub fn config_at(&self, place: &str, root: &str, endpoint: Option<&str>) -> Value {
        let endpoint = endpoint.map_or_else(|| self.url(), str::to_owned);
        match self.kind {
            "s3" => json!({
                "bucket": place, "endpoint": endpoint, "region": "us-east-1", "root": root,
                "access_key_id": "ferrytest", "secret_access_key": "ferrytestsecret",
            }),
            "gcs" => json!({
                "bucket": place, "endpoint": endpoint, "anonymous": true, "root": root,
            }),
            "azblob" => json!({
                "container": place, "account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
                "endpoint": format!("{endpoint}/{AZURITE_ACCOUNT}"), "root": root,
            }),
            _ => json!({
                "endpoint": endpoint, "username": "ferry", "password": "secret",
                "root": format!("/{place}{root}"),
            }),
        }
    }
}

/// Sends one request with a blocking client and returns the status (0 when
/// it could not be sent).
fn http_status(method: &str, url: &str, headers: &[(&str, String)]) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(url);
    let out = cmd.output().expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The `Authorization` value of an Azurite request whose string to sign
/// is `string_to_sign`, signed with the development account's shared key.
fn azure_authorization(string_to_sign: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap();
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        string_to_sign.as_bytes(),
    );
    let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    format!("SharedKey {AZURITE_ACCOUNT}:{signature}")
}

/// Creates a container in Azurite.
fn azure_create_container(base: &str, container: &str) -> u16 {
    let date = httpdate_now();
    let version = "2021-08-06";
    let string_to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    http_status(
        "PUT",
        &format!("{base}/{AZURITE_ACCOUNT}/{container}?restype=container"),
        &[
            ("x-ms-date", date),
            ("x-ms-version", version.to_owned()),
            ("Authorization", azure_authorization(&string_to_sign)),
            ("Content-Length", "0".to_owned()),
        ],
    )
}

impl StorageServer {
    /// Writes `data` to the blob `name` of Azurite's `container`
    /// directly (not through ferry), as another application would;
    /// the status Azurite answered.
    pub fn azure_put_blob(&self, container: &str, name: &str, data: &[u8]) -> u16 {
        let date = httpdate_now();
        let version = "2021-08-06";
        let len = data.len();
        let string_to_sign = format!(
            "PUT\n\n\n{len}\n\napplication/octet-stream\n\n\n\n\n\n\nx-ms-blob-type:BlockBlob\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}/{name}"
        );
        let body = self.dir().join("blob-body");
        std::fs::write(&body, data).unwrap();
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args(["-H", "content-type: application/octet-stream"])
            .args(["-H", "x-ms-blob-type: BlockBlob"])
            .args(["-H", &format!("x-ms-date: {date}")])
            .args(["-H", &format!("x-ms-version: {version}")])
            .args([
                "-H",
                &format!("authorization: {}", azure_authorization(&string_to_sign)),
            ])
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .arg(format!(
                "{}/{AZURITE_ACCOUNT}/{container}/{name}",
                self.url()
            ))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Deletes the blob `name` of Azurite's `container` directly.
    pub fn azure_delete_blob(&self, container: &str, name: &str) -> u16 {
        let date = httpdate_now();
        let version = "2021-08-06";
        let string_to_sign = format!(
            "DELETE\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}/{name}"
        );
        http_status(
            "DELETE",
            &format!("{}/{AZURITE_ACCOUNT}/{container}/{name}", self.url()),
            &[
                ("x-ms-date", date),
                ("x-ms-version", version.to_owned()),
                ("Authorization", azure_authorization(&string_to_sign)),
            ],
        )
    }
}

/// The current time as an HTTP date (`Tue, 01 Dec 2026 10:00:00 GMT`).
fn httpdate_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%a, %d %b %Y %H:%M:%S GMT"])
        .env("LC_ALL", "C")
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
