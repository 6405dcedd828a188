//! Scenario 10: the S3 door. Debian's AWS CLI copies a large file up and
//! down with s3s-fs (an S3 server in Rust over a folder: fast enough not
//! to be the bottleneck, unlike moto) three ways: to s3s-fs directly, to
//! the spoke's S3 door in front of an S3 connection to that s3s-fs, and
//! — for ferry's own path through the same spoke — with ferry's API
//! (the benchmark's client, a single stream).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::client::{self, Target};
use crate::report::median_spread;
use crate::rig::{Rig, Via};
use crate::scenarios::{Series, in_rotation, push_up_down, timed_on, up_down_table};

const AWS: &str = "/usr/bin/aws";
const ACCESS_KEY: &str = "benchaccesskey";
const SECRET_KEY: &str = "benchsecretkeybenchsecretkey";

/// s3s-fs, killed when dropped.
struct S3sFs {
    child: Child,
    addr: SocketAddr,
    _root: tempfile::TempDir,
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3sFs {
    fn start(data_in: Option<&Path>) -> anyhow::Result<Self> {
        let binary = ferry_tests::tools::Tool::S3sFs
            .find()
            .context("s3s-fs is not installed: run ./scripts/install-test-deps.sh --bench")?;
        let root = match data_in {
            Some(d) => tempfile::tempdir_in(d)?,
            None => tempfile::tempdir()?,
        };
        std::fs::create_dir_all(root.path().join("bench"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start s3s-fs")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            ensure!(Instant::now() < until, "s3s-fs did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            addr,
            _root: root,
        })
    }
}

/// The AWS CLI, unmodified, against `endpoint` with the key `id`/`secret`.
struct Cli<'a> {
    endpoint: String,
    id: &'a str,
    secret: &'a str,
    home: &'a Path,
}

impl Cli<'_> {
    fn cp(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let out = ferry_tests::tools::aws_cli(
            Path::new(AWS),
            &self.endpoint,
            self.home,
            self.id,
            self.secret,
        )
        .args(["s3", "cp", "--only-show-errors"])
        .args([from, to])
        .output()
        .context("cannot run the AWS CLI (Debian's awscli package)")?;
        if !out.status.success() {
            bail!(
                "aws s3 cp {from} {to}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// An S3 key of the benchmark's tenant for connection `conn`: its id and
/// secret.
pub(crate) async fn s3_key(rig: &Rig, conn: &str) -> anyhow::Result<(String, String)> {
    let key = rig
        .tenant
        .api
        .post("/v1/s3-keys")
        .json(&json!({ "connections": [conn] }))
        .send()
        .await;
    ensure!(
        key.status == http::StatusCode::CREATED,
        "cannot make an S3 key"
    );
    let key = key.json();
    let field = |name: &str| {
        key[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {name} in the new S3 key"))
    };
    Ok((field("access_key_id")?, field("secret_access_key")?))
}

/// The four ways, in the table's order.
#[derive(Clone, Copy)]
enum Way {
    Direct,
    Door,
    Api,
    /// The benchmark's client with s3s-fs directly, by presigned URLs:
    /// the same client as `Api`, without the spoke.
    Client,
}

/// Scenario 10: `aws s3 cp` of `plan.transfer` bytes up and down, directly
/// with s3s-fs and through the spoke's S3 door in front of it, and ferry's
/// own `PUT` and `GET` through the same spoke, in rotation.
pub async fn s3_door(rig: &mut Rig, plan: &crate::Plan) -> anyhow::Result<(String, Value)> {
    ensure!(
        Path::new(AWS).exists(),
        "Debian's AWS CLI is missing: run ./scripts/install-test-deps.sh"
    );
    let server = S3sFs::start(plan.data_in.as_deref())?;
    let created = rig
        .tenant
        .api
        .post("/v1/connections")
        .json(&json!({
            "name": "s3door",
            "provider": "s3",
            "config": {
                "bucket": "bench",
                "endpoint": format!("http://{}", server.addr),
                "region": "us-east-1",
                "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY,
            },
        }))
        .send()
        .await;
    ensure!(
        created.status == http::StatusCode::CREATED,
        "cannot create the S3 connection to s3s-fs: {} {}",
        created.status,
        String::from_utf8_lossy(&created.body)
    );
    let (id, secret) = s3_key(rig, "s3door").await?;

    let size = plan.transfer;
    let work = match plan.data_in.as_deref() {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let file = work.path().join("up.bin");
    let block = write_file(&file, size)?;
    let down: PathBuf = work.path().join("down.bin");
    let home = work.path().join("home");
    std::fs::create_dir_all(&home)?;
    let direct = Cli {
        endpoint: format!("http://{}", server.addr),
        id: ACCESS_KEY,
        secret: SECRET_KEY,
        home: &home,
    };
    let door = Cli {
        endpoint: format!("http://{}", rig.addr(Via::Spoke)),
        id: &id,
        secret: &secret,
        home: &home,
    };
    let (spoke, hub) = (rig.pid(Via::Spoke), rig.pid(Via::Hub));
    let s3s_pid = server.child.id();
    let file_str = file.to_str().context("a UTF-8 path")?.to_owned();
    let down_str = down.to_str().context("a UTF-8 path")?.to_owned();
    let api_target = Target {
        addr: rig.addr(Via::Spoke),
        path: "/v1/connections/s3door/files/bench/api.bin".into(),
        token: Some(rig.tenant.key.clone()),
    };

    let mut up: [Series; 4] = Default::default();
    let mut dn: [Series; 4] = Default::default();
    // ferry's API through the spoke against the same client with s3s-fs
    // directly, run by run: the spoke in front of object storage.
    let (mut api_up, mut api_down) = (Vec::new(), Vec::new());
    let ways = [Way::Direct, Way::Door, Way::Api, Way::Client];
    let endpoint = format!("http://{}", server.addr);
    for run in 0..plan.runs {
        // Signed afresh each run (they are good for 5 minutes).
        let presigned = |method: &str| Target {
            addr: server.addr,
            path: ferry_tests::scenarios::presigned(
                &endpoint,
                ACCESS_KEY,
                SECRET_KEY,
                method,
                "bench",
                "client.bin",
            ),
            token: None,
        };
        let (client_put, client_get) = (presigned("put_object"), presigned("get_object"));
        let got = in_rotation(&ways, run, async |way| {
            if let Way::Client = way {
                let put = timed_on(&[s3s_pid], size, async {
                    client::upload(&client_put, size, block.clone(), &[])
                        .await
                        .map(drop)
                })
                .await?;
                let get = timed_on(&[s3s_pid], size, async {
                    let n = client::download(&client_get).await?;
                    ensure!(n == size, "downloaded {n} of {size} bytes");
                    Ok(())
                })
                .await?;
                return Ok((put, get));
            }
            let (pids, cli, object) = match way {
                Way::Direct => (vec![s3s_pid], Some(&direct), "s3://bench/direct.bin"),
                Way::Door => (
                    vec![spoke, hub, s3s_pid],
                    Some(&door),
                    "s3://s3door/door.bin",
                ),
                Way::Api | Way::Client => (vec![spoke, hub, s3s_pid], None, ""),
            };
            let put = timed_on(&pids, size, async {
                match cli {
                    Some(cli) => cli.cp(&file_str, object),
                    None => client::upload(&api_target, size, block.clone(), &[])
                        .await
                        .map(drop),
                }
            })
            .await?;
            let _ = std::fs::remove_file(&down);
            let get = timed_on(&pids, size, async {
                match cli {
                    Some(cli) => {
                        cli.cp(object, &down_str)?;
                        let got = std::fs::metadata(&down)?.len();
                        ensure!(got == size, "downloaded {got} of {size} bytes");
                        Ok(())
                    }
                    None => {
                        let n = client::download(&api_target).await?;
                        ensure!(n == size, "downloaded {n} of {size} bytes");
                        Ok(())
                    }
                }
            })
            .await?;
            Ok((put, get))
        })
        .await?;
        push_up_down(&mut up, &mut dn, &got);
        api_up.push(got[2].0.mbps / got[3].0.mbps);
        api_down.push(got[2].1.mbps / got[3].1.mbps);
        eprintln!("s3: run {} of {} done", run + 1, plan.runs);
    }

    let names = [
        "aws s3 cp, s3s-fs directly",
        "aws s3 cp, the spoke's S3 door",
        "ferry's API, the same spoke",
        "the same client, s3s-fs directly",
    ];
    let t = up_down_table(
        format!(
            "10. The S3 door: {} MiB with s3s-fs, up then down (MB/s; ratio to the AWS CLI with s3s-fs directly; CPU-s per GiB of s3s-fs (directly) or the spoke; path: spoke, hub and s3s-fs)",
            size / 1048576
        ),
        &names,
        &up,
        &dn,
    );
    let figures = json!({
        "bytes": size,
        "server": "s3s-fs 0.14.1",
        "upload": { "direct": up[0].json(), "door": up[1].json(), "api": up[2].json(), "client": up[3].json() },
        "download": { "direct": dn[0].json(), "door": dn[1].json(), "api": dn[2].json(), "client": dn[3].json() },
        "api_vs_client": { "upload": api_up, "download": api_down },
    });
    let text = format!(
        "{}ferry's API through the spoke ÷ the same client with s3s-fs directly, run by run: up {}, down {}\n",
        t.render(),
        median_spread(&api_up),
        median_spread(&api_down),
    );
    Ok((text, figures))
}

/// Writes `size` random bytes to `path` (a 1 MiB block repeated); the block.
fn write_file(path: &Path, size: u64) -> anyhow::Result<Bytes> {
    use ring::rand::SecureRandom as _;
    use std::io::Write as _;
    let mut block = vec![0u8; 1 << 20];
    ring::rand::SystemRandom::new()
        .fill(&mut block)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(Bytes::from(block))
}
