//! Folders: `cp -r` copies everything below a folder, `sync` only what is
//! missing or differs (and with `--delete` removes what the source lacks).
//! Files move `--transfers` at a time; one failing does not stop the
//! others, and the command then exits 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_client::{Client, Error};
use futures_util::StreamExt as _;
use serde_json::json;

use crate::{Bars, Cli, Side, TransferOpts, out_line, side};

/// What to do with the two folders.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Copy every file.
    Copy,
    /// Copy what differs; maybe delete what the source lacks.
    Sync { delete: bool, dry_run: bool },
}

/// A file on one side: its size, its CRC64/NVME where known, and when it
/// last changed (unix milliseconds) where known.
#[derive(Debug, Clone)]
struct Known {
    size: u64,
    crc: Option<u64>,
    modified: Option<i64>,
}

/// One thing to do, by path relative to the folders.
#[derive(Debug, Clone)]
enum Action {
    Upload(String, u64),
    Download(String, u64),
    DeleteRemote(String),
    DeleteLocal(String),
}

impl Action {
    fn describe(&self) -> (&'static str, &str) {
        match self {
            Self::Upload(p, _) => ("upload", p),
            Self::Download(p, _) => ("download", p),
            Self::DeleteRemote(p) | Self::DeleteLocal(p) => ("delete", p),
        }
    }

    fn size(&self) -> u64 {
        match self {
            Self::Upload(_, s) | Self::Download(_, s) => *s,
            _ => 0,
        }
    }
}

/// Every file below `root`, by path relative to it (with `/`).
fn local_files(root: &Path) -> Result<BTreeMap<String, Known>, Error> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::Local(format!("cannot read {}: {e}", dir.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::Local(format!("cannot read {}: {e}", dir.display())))?;
            let path = entry.path();
            let meta = std::fs::metadata(&path)
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // Partial downloads of an earlier run are not files of the folder.
            if name.starts_with('.') && name.contains(".ferry-part") {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .map_err(|e| Error::Local(e.to_string()))?
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            out.insert(
                rel,
                Known {
                    size: meta.len(),
                    crc: None,
                    modified: meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as i64),
                },
            );
        }
    }
    Ok(out)
}

/// Every file below remote folder `dir`, by path relative to it.
async fn remote_files(
    client: &Client,
    conn: &str,
    dir: &str,
) -> Result<BTreeMap<String, Known>, Error> {
    let dir = dir.trim_matches('/');
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out = BTreeMap::new();
    let entries = match client.walk(conn, dir, true).await {
        Ok(e) => e,
        // A target folder not made yet is empty.
        Err(Error::Api {
            status: 404, code, ..
        }) if code == "not_found" => Vec::new(),
        Err(e) => return Err(e),
    };
    for e in entries {
        if e.is_folder() {
            continue;
        }
        let rel = e.path.strip_prefix(&prefix).unwrap_or(&e.path).to_owned();
        let crc = e
            .checksums
            .and_then(|c| c.crc64nvme)
            .and_then(|c| ferry_common::checksum::decode_crc64(&c));
        out.insert(
            rel,
            Known {
                size: e.size.unwrap_or(0),
                crc,
                modified: e.modified_at,
            },
        );
    }
    Ok(out)
}

/// How far apart two times of change may be and still count as one (file
/// systems keep them to a second, or two).
const SAME_TIME_MS: i64 = 2_000;

/// Whether the local file at `local` (`ours`) differs from the remote one
/// (`theirs`): by size, else by CRC64/NVME where the server knows it, else
/// (a file written to the provider outside ferry) by time: the copy
/// differs when its source changed after it (`up`: the local file is the
/// source).
fn differs(local: &Path, ours: &Known, theirs: &Known, up: bool) -> Result<bool, Error> {
    if ours.size != theirs.size {
        return Ok(true);
    }
    match theirs.crc {
        Some(crc) => Ok(ferry_client::crc_of_file(local)? != crc),
        None => Ok(match (ours.modified, theirs.modified) {
            (Some(l), Some(r)) if up => l > r + SAME_TIME_MS,
            (Some(l), Some(r)) => r > l + SAME_TIME_MS,
            _ => false,
        }),
    }
}

fn join(dir: &str, rel: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        rel.to_owned()
    } else {
        format!("{dir}/{rel}")
    }
}

/// Copies or syncs folder `src` to `dst`.
pub(crate) async fn run(
    cli: &Cli,
    client: &Client,
    src: &str,
    dst: &str,
    mode: Mode,
    opts: &TransferOpts,
) -> Result<(), Error> {
    let (copy_all, delete, dry_run) = match mode {
        Mode::Copy => (true, false, false),
        Mode::Sync { delete, dry_run } => (false, delete, dry_run),
    };
    let (local_root, conn, dir, up) = match (side(src), side(dst)) {
        (Side::Local(l), Side::Remote { conn, path }) => (l, conn, path, true),
        (Side::Remote { conn, path }, Side::Local(l)) => (l, conn, path, false),
        _ => {
            return Err(Error::Usage(
                "one folder must be local and the other remote (CONNECTION:PATH)".into(),
            ));
        }
    };
    if up && !local_root.is_dir() {
        return Err(Error::Local(format!(
            "{} is not a folder",
            local_root.display()
        )));
    }
    let remote = remote_files(client, &conn, &dir).await?;
    if !up && remote.is_empty() && client.stat(&conn, &dir).await?.is_some() {
        return Err(Error::Usage(format!("{src} is a file: copy it without -r")));
    }
    let local = if local_root.is_dir() {
        local_files(&local_root)?
    } else {
        BTreeMap::new()
    };
    // What the source has and the target lacks or has otherwise; then,
    // with --delete, what only the target has.
    let (from, to) = if up {
        (&local, &remote)
    } else {
        (&remote, &local)
    };
    let mut actions = Vec::new();
    for (rel, have) in from {
        let changed = match to.get(rel) {
            None => true,
            Some(there) => {
                let (ours, theirs) = if up { (have, there) } else { (there, have) };
                copy_all || differs(&local_root.join(rel), ours, theirs, up)?
            }
        };
        if changed {
            actions.push(if up {
                Action::Upload(rel.clone(), have.size)
            } else {
                Action::Download(rel.clone(), have.size)
            });
        }
    }
    if delete {
        for rel in to.keys().filter(|r| !from.contains_key(*r)) {
            actions.push(if up {
                Action::DeleteRemote(rel.clone())
            } else {
                Action::DeleteLocal(rel.clone())
            });
        }
    }
    let total: u64 = actions.iter().map(Action::size).sum();
    // One bar for the whole, and one for each file under way.
    let bars = Bars::new(cli);
    let bar = bars.bar(&format!("{} files", actions.len()));
    ferry_client::Progress::update(&bar, 0, total);
    let done = AtomicU64::new(0);
    let via = client.current().name;
    let results = futures_util::stream::iter(actions.iter().cloned())
        .map(|action| {
            let (local_root, conn, dir, done, bar, bars) =
                (&local_root, &conn, &dir, &done, &bar, &bars);
            async move {
                let file_bar = bars.bar(action.describe().1);
                ferry_client::Progress::update(&file_bar, 0, action.size());
                // What this file added to the whole so far.
                let counted = AtomicU64::new(0);
                let progress = |d: u64, t: u64| {
                    ferry_client::Progress::update(&file_bar, d, t);
                    let before = counted.swap(d, Ordering::Relaxed);
                    let n = done.fetch_add(d.saturating_sub(before), Ordering::Relaxed)
                        + d.saturating_sub(before);
                    ferry_client::Progress::update(bar, n, total);
                };
                let outcome = if dry_run {
                    Ok(())
                } else {
                    act(
                        client,
                        &action,
                        local_root,
                        conn,
                        dir,
                        opts.part_size,
                        &progress,
                    )
                    .await
                };
                file_bar.done();
                // The whole counts the file once, however it ended.
                let rest = action
                    .size()
                    .saturating_sub(counted.load(Ordering::Relaxed));
                let n = done.fetch_add(rest, Ordering::Relaxed) + rest;
                ferry_client::Progress::update(bar, n, total);
                (action, outcome)
            }
        })
        .buffer_unordered(usize::from(opts.transfers))
        .collect::<Vec<_>>()
        .await;
    bar.done();
    let mut failed = 0;
    for (action, outcome) in &results {
        let (op, rel) = action.describe();
        let shown_op = if dry_run {
            format!("would {op}")
        } else {
            op.to_owned()
        };
        match outcome {
            Ok(()) => {
                if cli.json {
                    out_line(&json!({ "op": op, "path": rel, "size": action.size(), "dry_run": dry_run, "via": via }).to_string())?;
                } else if !cli.quiet || dry_run {
                    out_line(&format!("{shown_op:<15} {rel}"))?;
                }
            }
            Err(e) => {
                failed += 1;
                if cli.json {
                    out_line(
                        &json!({ "op": op, "path": rel, "error": e.to_string(), "code": e.code() })
                            .to_string(),
                    )?;
                }
                eprintln!("ferry: {op} {rel}: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(Error::Transport(format!(
            "{failed} of {} failed; run the command again to finish",
            results.len()
        )));
    }
    Ok(())
}

async fn act(
    client: &Client,
    action: &Action,
    local_root: &Path,
    conn: &str,
    dir: &str,
    part_size: u64,
    progress: &dyn ferry_client::Progress,
) -> Result<(), Error> {
    match action {
        Action::Upload(rel, _) => client
            .upload(
                &local_root.join(rel),
                conn,
                &join(dir, rel),
                part_size,
                progress,
            )
            .await
            .map(drop),
        Action::Download(rel, _) => {
            let target: PathBuf = local_root.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::Local(format!("cannot write {}: {e}", parent.display())))?;
            }
            client
                .download(conn, &join(dir, rel), &target, progress)
                .await
                .map(drop)
        }
        Action::DeleteRemote(rel) => client.delete(conn, &join(dir, rel)).await,
        Action::DeleteLocal(rel) => std::fs::remove_file(local_root.join(rel))
            .map_err(|e| Error::Local(format!("cannot delete {rel}: {e}"))),
    }
}

/// `ferry check`: compares folder `a` with folder `b` (one local, one
/// remote) and changes nothing. Each file is `same` (size and, where the
/// server knows it, CRC64/NVME), `differs`, `only-local`, `only-remote`,
/// or `unverified` (same size, no CRC64/NVME at the server). Prints every
/// file but the same ones; fails (exit 1) when any is not the same.
pub(crate) async fn check(cli: &Cli, client: &Client, a: &str, b: &str) -> Result<(), Error> {
    let (local_root, conn, dir) = match (side(a), side(b)) {
        (Side::Local(l), Side::Remote { conn, path })
        | (Side::Remote { conn, path }, Side::Local(l)) => (l, conn, path),
        _ => {
            return Err(Error::Usage(
                "one folder must be local and the other remote (CONNECTION:PATH)".into(),
            ));
        }
    };
    if !local_root.is_dir() {
        return Err(Error::Local(format!(
            "{} is not a folder",
            local_root.display()
        )));
    }
    let local = local_files(&local_root)?;
    let remote = remote_files(client, &conn, &dir).await?;
    let mut report: Vec<(&str, &String)> = Vec::new();
    for (rel, k) in &local {
        let verdict = match remote.get(rel) {
            None => "only-local",
            Some(theirs) if theirs.size != k.size => "differs",
            Some(Known { crc: None, .. }) => "unverified",
            Some(theirs) => {
                if differs(&local_root.join(rel), k, theirs, true)? {
                    "differs"
                } else {
                    "same"
                }
            }
        };
        report.push((verdict, rel));
    }
    for rel in remote.keys().filter(|r| !local.contains_key(*r)) {
        report.push(("only-remote", rel));
    }
    report.sort_by(|x, y| x.1.cmp(y.1));
    let mut off = 0;
    for (verdict, rel) in &report {
        if *verdict == "same" {
            continue;
        }
        off += 1;
        if cli.json {
            out_line(&json!({ "path": rel, "verdict": verdict }).to_string())?;
        } else {
            out_line(&format!("{verdict:<12} {rel}"))?;
        }
    }
    if !cli.quiet && !cli.json {
        eprintln!(
            "ferry: {} files compared, {} the same, {off} not",
            report.len(),
            report.len() - off
        );
    }
    if off > 0 {
        return Err(Error::Checksum(format!(
            "{off} of {} files are not the same on both sides",
            report.len()
        )));
    }
    Ok(())
}
