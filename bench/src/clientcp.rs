//! Scenario 12: the `ferry` command against curl. A large file up and
//! down through the same spoke (named with `--endpoint`, so both take the
//! same path): curl sends it in one `PUT` and fetches it in one `GET`;
//! `ferry cp` uploads through the resumable protocol (64 MiB parts) and
//! downloads into a temporary name, checking the CRC64/NVME of the whole
//! file before renaming it — work curl does not do, in the time measured —
//! once in one stream and once in four (ranges down, upload sessions
//! joined at the end up). Beside them, the tools a user has for S3
//! through the same spoke's S3 door: Debian's `aws s3 cp` and rclone,
//! each with its own defaults (multipart uploads with parts in parallel).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use crate::Plan;
use crate::rig::{Rig, Via};
use crate::scenarios::{Series, in_rotation, push_up_down, timed_on, up_down_table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Curl,
    FerryOne,
    Ferry,
    Aws,
    Rclone,
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    // The status and both outputs: a tool may fail saying nothing on
    // stderr (the AWS CLI with --only-show-errors once did).
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

pub async fn client_cp(rig: &Rig, plan: &Plan) -> anyhow::Result<(String, Value)> {
    let ferry = ferry_tests::hub::binary("ferry");
    let size = plan.transfer;
    let work = tempfile::tempdir()?;
    let file = work.path().join("up.bin");
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
    }
    let spoke = format!("http://{}", rig.addr(Via::Spoke));
    let key = rig.tenant.key.clone();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home)?;
    let down = work.path().join("down.bin");
    let pids = [rig.pid(Via::Spoke), rig.pid(Via::Hub)];
    let curl = |args: &[&str]| {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--fail",
            "-H",
            &format!("Authorization: Bearer {key}"),
        ])
        .args(args);
        c
    };
    let ferry_cmd = |args: &[&str]| {
        let mut c = Command::new(&ferry);
        c.args(["--quiet", "--endpoint", &spoke])
            .args(args)
            .env_clear()
            .env("HOME", &home)
            .env("FERRY_URL", &spoke)
            .env("FERRY_API_KEY", &key);
        c
    };
    let (s3_id, s3_secret) = crate::s3door::s3_key(rig, "local").await?;
    let aws = |args: &[&str]| {
        let mut c = ferry_tests::tools::aws_cli(
            Path::new("/usr/bin/aws"),
            &spoke,
            &home,
            &s3_id,
            &s3_secret,
        );
        c.args(["s3", "cp", "--only-show-errors"]).args(args);
        c
    };
    let rclone = |args: &[&str]| {
        let mut c = Command::new("rclone");
        // (--ignore-times: copy even when the target has the size and
        // time, as after the previous run.)
        c.arg("copyto")
            .args(args)
            .args(["--config", "/dev/null", "--retries", "1", "--ignore-times"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("RCLONE_CONFIG_FERRY_TYPE", "s3")
            .env("RCLONE_CONFIG_FERRY_PROVIDER", "Other")
            .env("RCLONE_CONFIG_FERRY_ENDPOINT", &spoke)
            .env("RCLONE_CONFIG_FERRY_REGION", "us-east-1")
            .env("RCLONE_CONFIG_FERRY_FORCE_PATH_STYLE", "true")
            // The bucket is the connection: there is nothing to create.
            .env("RCLONE_CONFIG_FERRY_NO_CHECK_BUCKET", "true")
            .env("RCLONE_CONFIG_FERRY_ACCESS_KEY_ID", &s3_id)
            .env("RCLONE_CONFIG_FERRY_SECRET_ACCESS_KEY", &s3_secret);
        c
    };
    let file_s = file.to_str().context("a UTF-8 path")?.to_owned();
    let down_s = down.to_str().context("a UTF-8 path")?.to_owned();
    let mut up: [Series; 5] = Default::default();
    let mut dn: [Series; 5] = Default::default();
    let tools = [
        Tool::Curl,
        Tool::FerryOne,
        Tool::Ferry,
        Tool::Aws,
        Tool::Rclone,
    ];
    for r in 0..plan.runs {
        let got = in_rotation(&tools, r, async |tool| {
            let (name, streams) = match tool {
                Tool::Curl => ("cl/curl.bin", "1"),
                Tool::FerryOne => ("cl/ferry1.bin", "1"),
                Tool::Ferry => ("cl/ferry.bin", "4"),
                Tool::Aws => ("cl/aws.bin", "1"),
                Tool::Rclone => ("cl/rclone.bin", "1"),
            };
            let s3_url = format!("s3://local/{name}");
            let rclone_path = format!("ferry:local/{name}");
            let url = format!("{spoke}/v1/connections/local/files/{name}");
            let put = timed_on(&pids, size, async {
                match tool {
                    Tool::Curl => run(
                        curl(&["-X", "PUT", "-o", "/dev/null", "-T", &file_s, &url]),
                        "curl",
                    ),
                    Tool::FerryOne | Tool::Ferry => run(
                        ferry_cmd(&[
                            "cp",
                            "--part-size",
                            "64MiB",
                            "--upload-streams",
                            streams,
                            &file_s,
                            &format!("local:{name}"),
                        ]),
                        "ferry cp up",
                    ),
                    Tool::Aws => run(aws(&[&file_s, &s3_url]), "aws s3 cp up"),
                    Tool::Rclone => run(rclone(&[&file_s, &rclone_path]), "rclone up"),
                }
            })
            .await?;
            let _ = std::fs::remove_file(&down);
            let get = timed_on(&pids, size, async {
                match tool {
                    Tool::Curl => run(curl(&["-o", &down_s, &url]), "curl")?,
                    Tool::FerryOne | Tool::Ferry => run(
                        ferry_cmd(&[
                            "cp",
                            "--streams",
                            streams,
                            &format!("local:{name}"),
                            &down_s,
                        ]),
                        "ferry cp down",
                    )?,
                    Tool::Aws => run(aws(&[&s3_url, &down_s]), "aws s3 cp down")?,
                    Tool::Rclone => run(rclone(&[&rclone_path, &down_s]), "rclone down")?,
                }
                let got = std::fs::metadata(Path::new(&down))?.len();
                ensure!(got == size, "downloaded {got} of {size} bytes");
                Ok(())
            })
            .await?;
            Ok((put, get))
        })
        .await?;
        push_up_down(&mut up, &mut dn, &got);
        eprintln!("client: run {} of {} done", r + 1, plan.runs);
    }
    let t = up_down_table(
        format!(
            "12. The ferry command against curl: {} MiB through one spoke, up then down (MB/s; ratio to curl; CPU-s per GiB of the spoke; path: spoke and hub)",
            size / 1048576
        ),
        &[
            "curl, one request",
            "ferry cp, one stream",
            "ferry cp, four streams",
            "aws s3 cp (S3 door)",
            "rclone (S3 door)",
        ],
        &up,
        &dn,
    );
    let figures = json!({
        "bytes": size,
        "upload": { "curl": up[0].json(), "ferry_one_stream": up[1].json(), "ferry": up[2].json(),
                    "aws": up[3].json(), "rclone": up[4].json() },
        "download": { "curl": dn[0].json(), "ferry_one_stream": dn[1].json(), "ferry": dn[2].json(),
                      "aws": dn[3].json(), "rclone": dn[4].json() },
    });
    Ok((t.render(), figures))
}
