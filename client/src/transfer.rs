//! Downloads and uploads that survive a dropped connection or a dead
//! spoke: a download goes on by range from the bytes already written, an
//! upload (tus) from the offset the server holds, each on the next
//! endpoint when the one in use fails. A download is written beside its
//! target under a temporary name and renamed only once complete and its
//! CRC64/NVME matches the server's; an upload's session is remembered, so
//! that the same command run again resumes it.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};

use crate::endpoints::eprintln_debug;
use crate::{Client, Error, escape, file_path};

/// How many failures a transfer survives before it gives up.
const FAILURES: usize = 8;

/// How many times an upload waits for a session another writer holds
/// (about a second each): more than a dead writer's lease lasts.
const LOCK_WAITS: usize = 30;

/// Told how far a transfer is: bytes done, bytes in all.
pub trait Progress: Send + Sync {
    /// Called as bytes arrive or leave.
    fn update(&self, done: u64, total: u64);
}

impl<F: Fn(u64, u64) + Send + Sync> Progress for F {
    fn update(&self, done: u64, total: u64) {
        self(done, total)
    }
}

/// What a finished transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// Bytes of the file.
    pub size: u64,
    /// Bytes this run moved (less than `size` when it resumed).
    pub moved: u64,
    /// Where the transfer began, when it resumed one left before.
    pub resumed_from: Option<u64>,
    /// The file's CRC64/NVME, as the API encodes it.
    pub crc64nvme: String,
    /// Endpoints that failed along the way (and were left).
    pub failovers: usize,
}

fn local(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Local(format!("{what} {}: {e}", path.display()))
}

/// The temporary name a download is written under, beside its target.
pub fn partial_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    target.with_file_name(format!(".{name}.ferry-part"))
}

/// The CRC64/NVME of a local file.
pub fn crc_of_file(path: &Path) -> Result<u64, Error> {
    let mut f = std::fs::File::open(path).map_err(|e| local("cannot read", path, e))?;
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| local("cannot read", path, e))?;
        if n == 0 {
            return Ok(digest.finalize());
        }
        digest.update(&buf[..n]);
    }
}

impl Client {
    /// Downloads file `path` of `conn` to `target`, resuming a download
    /// of the same file left under the temporary name.
    pub async fn download(
        &self,
        conn: &str,
        path: &str,
        target: &Path,
        progress: &dyn Progress,
    ) -> Result<Transferred, Error> {
        let stat = self.stat(conn, path).await?.ok_or_else(|| Error::Api {
            status: 404,
            code: "not_found".into(),
            detail: format!("no file at '{conn}:{path}'"),
        })?;
        let part = partial_name(target);
        // What the partial file is of: only the same version of the same
        // file is resumed.
        let about = partial_about(&part);
        let this = serde_json::json!({
            "conn": conn, "path": path, "size": stat.size, "etag": stat.etag,
        })
        .to_string();
        let same = std::fs::read_to_string(&about).is_ok_and(|t| t == this);
        let mut have = match std::fs::metadata(&part) {
            Ok(m) if same && m.len() <= stat.size => m.len(),
            _ => 0,
        };
        std::fs::write(&about, &this).map_err(|e| local("cannot write", &about, e))?;
        let resumed_from = (have > 0).then_some(have);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(false)
            .write(true)
            .truncate(have == 0)
            .open(&part)
            .map_err(|e| local("cannot write", &part, e))?;
        file.seek(std::io::SeekFrom::Start(have))
            .map_err(|e| local("cannot write", &part, e))?;
        // The CRC64/NVME is computed as the bytes arrive (the prefix an
        // earlier run left is read once), not by reading the file again.
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
        if have > 0 {
            let mut prefix = std::fs::File::open(&part)
                .map_err(|e| local("cannot read", &part, e))?
                .take(have);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = prefix
                    .read(&mut buf)
                    .map_err(|e| local("cannot read", &part, e))?;
                if n == 0 {
                    break;
                }
                digest.update(&buf[..n]);
            }
        }
        let started_at = have;
        let mut failovers = 0;
        let mut failures = 0;
        while have < stat.size {
            progress.update(have, stat.size);
            let etag = stat.etag.clone();
            let resp = self
                .send(Method::GET, &file_path(conn, path), |r| {
                    let r = r.header(reqwest::header::RANGE, format!("bytes={have}-"));
                    match &etag {
                        Some(e) => r.header(reqwest::header::IF_MATCH, e),
                        None => r,
                    }
                })
                .await?;
            let answered_by = resp.url().clone();
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if range_start(&resp) == Some(have) => {}
                StatusCode::PARTIAL_CONTENT => {
                    return Err(Error::Transport(format!(
                        "{answered_by} answered another range than bytes={have}-"
                    )));
                }
                StatusCode::OK if have == 0 => {}
                StatusCode::PRECONDITION_FAILED => {
                    let _ = std::fs::remove_file(&part);
                    let _ = std::fs::remove_file(&about);
                    return Err(Error::Checksum(format!(
                        "'{conn}:{path}' changed while it was downloaded; run the command again"
                    )));
                }
                _ => return Err(Error::from_response(resp).await),
            }
            let mut body = resp.bytes_stream();
            let mut broke = None;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(b) => {
                        file.write_all(&b)
                            .map_err(|e| local("cannot write", &part, e))?;
                        digest.update(&b);
                        have += b.len() as u64;
                        progress.update(have, stat.size);
                    }
                    Err(e) => {
                        broke = Some(crate::error_chain(&e));
                        break;
                    }
                }
            }
            if have < stat.size {
                failures += 1;
                let why = broke.unwrap_or_else(|| "the answer ended early".into());
                eprintln_debug(&format!(
                    "download from {answered_by} broke at {have}: {why}"
                ));
                if failures >= FAILURES {
                    return Err(Error::Transport(format!(
                        "the download broke {failures} times; the last: {why}; run the command again to resume"
                    )));
                }
                if self.demote(&answered_by) {
                    failovers += 1;
                }
            }
        }
        file.sync_all()
            .map_err(|e| local("cannot write", &part, e))?;
        drop(file);
        progress.update(have, stat.size);
        let crc = digest.finalize();
        let ours = ferry_common::checksum::encode_crc64(crc);
        if let Some(theirs) = &stat.crc64nvme
            && ferry_common::checksum::decode_crc64(theirs) != Some(crc)
        {
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&about);
            return Err(Error::Checksum(format!(
                "'{conn}:{path}' arrived with CRC64/NVME {ours}, the server has {theirs}; nothing was kept"
            )));
        }
        std::fs::rename(&part, target).map_err(|e| local("cannot write", target, e))?;
        let _ = std::fs::remove_file(&about);
        Ok(Transferred {
            size: stat.size,
            moved: have - started_at,
            resumed_from,
            crc64nvme: ours,
            failovers,
        })
    }

    /// Uploads local file `source` to `path` of `conn` through the
    /// resumable protocol, `part_size` bytes a request, resuming a session
    /// that an earlier run of the same upload left.
    pub async fn upload(
        &self,
        source: &Path,
        conn: &str,
        path: &str,
        part_size: u64,
        progress: &dyn Progress,
    ) -> Result<Transferred, Error> {
        let meta = std::fs::metadata(source).map_err(|e| local("cannot read", source, e))?;
        if !meta.is_file() {
            return Err(Error::Local(format!("{} is not a file", source.display())));
        }
        let size = meta.len();
        let crc = crc_of_file(source)?;
        if size <= part_size {
            return self
                .put_small(source, conn, path, size, crc, progress)
                .await;
        }
        let resume_file = resume_record(&self.hub, conn, path, size, crc);
        let mut location = resume_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| s.starts_with("/v1/uploads/"));
        let mut offset = 0;
        let mut resumed_from = None;
        if let Some(loc) = &location {
            match self.upload_offset(loc).await {
                Ok(Some(o)) if o <= size => {
                    offset = o;
                    resumed_from = Some(o);
                }
                _ => location = None,
            }
        }
        let location = match location {
            Some(l) => l,
            None => {
                let q = format!(
                    "/v1/connections/{}/uploads?path={}",
                    escape(conn),
                    percent_encoding::utf8_percent_encode(
                        path.trim_start_matches('/'),
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                let resp = self
                    .ok(Method::POST, &q, |r| {
                        r.header("tus-resumable", "1.0.0")
                            .header("upload-length", size.to_string())
                    })
                    .await?;
                let loc = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Error::Transport("the upload was made without a Location".into())
                    })?;
                if let Some(f) = &resume_file {
                    if let Some(dir) = f.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ = std::fs::write(f, &loc);
                }
                loc
            }
        };
        let started_at = offset;
        let mut failovers = 0;
        let mut failures = 0;
        let mut waits = 0;
        let mut file = std::fs::File::open(source).map_err(|e| local("cannot read", source, e))?;
        // (An empty file is complete once made: nothing to append.)
        while offset < size {
            progress.update(offset, size);
            let len = part_size.min(size - offset);
            let mut buf = vec![0u8; len as usize];
            file.seek(std::io::SeekFrom::Start(offset))
                .map_err(|e| local("cannot read", source, e))?;
            file.read_exact(&mut buf)
                .map_err(|e| local("cannot read", source, e))?;
            let endpoint = self.current().base;
            let url = endpoint
                .join(location.trim_start_matches('/'))
                .map_err(|e| Error::Usage(e.to_string()))?;
            let sent = self
                .http
                .patch(url)
                .bearer_auth(&self.key)
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-offset", offset.to_string())
                .body(buf)
                .send()
                .await;
            let mut wait = None;
            // Whether the endpoint is at fault (else the session is: locked
            // by a writer that has not let go yet, or at another offset).
            let mut endpoint_failed = true;
            let why = match sent {
                Ok(resp) if resp.status() == StatusCode::NO_CONTENT => {
                    let now = header_u64(&resp, "upload-offset").unwrap_or(offset + len);
                    if now > offset {
                        offset = now;
                        continue;
                    }
                    format!("{} took the part but holds no more than before", resp.url())
                }
                Ok(resp)
                    if resp.status() == StatusCode::LOCKED
                        || resp.status() == StatusCode::CONFLICT =>
                {
                    endpoint_failed = false;
                    wait = crate::retry_after(&resp);
                    format!("answered {}", resp.status())
                }
                Ok(resp) if resp.status().is_client_error() => {
                    return Err(Error::from_response(resp).await);
                }
                Ok(resp) => {
                    wait = crate::retry_after(&resp);
                    format!("answered {}", resp.status())
                }
                Err(e) => crate::error_chain(&e),
            };
            eprintln_debug(&format!(
                "upload through {endpoint} failed at {offset}: {why}"
            ));
            if endpoint_failed {
                failures += 1;
                if failures >= FAILURES {
                    return Err(Error::Transport(format!(
                        "the upload failed {failures} times; the last: {why}; run the command again to resume"
                    )));
                }
                if self.demote(&endpoint) {
                    failovers += 1;
                }
                tokio::time::sleep(wait.unwrap_or_else(|| crate::backoff(failures - 1))).await;
            } else {
                // A lease a dead writer held runs out within 15 s.
                waits += 1;
                if waits > LOCK_WAITS {
                    return Err(Error::Transport(format!(
                        "the upload stayed locked by another writer ({why}); run the command again to resume"
                    )));
                }
                tokio::time::sleep(wait.unwrap_or(std::time::Duration::from_secs(1))).await;
            }
            // Where the server is now: any node knows.
            offset = match self.upload_offset(&location).await? {
                Some(o) => o,
                None => {
                    return Err(Error::Transport(
                        "the upload session is gone; run the command again".into(),
                    ));
                }
            };
        }
        progress.update(size, size);
        if let Some(f) = &resume_file {
            let _ = std::fs::remove_file(f);
        }
        // End to end: the server's checksum of what it stored.
        let ours = ferry_common::checksum::encode_crc64(crc);
        if let Some(stat) = self.stat(conn, path).await?
            && let Some(theirs) = stat.crc64nvme
            && ferry_common::checksum::decode_crc64(&theirs) != Some(crc)
        {
            return Err(Error::Checksum(format!(
                "'{conn}:{path}' was stored with CRC64/NVME {theirs}, the local file has {ours}"
            )));
        }
        Ok(Transferred {
            size,
            moved: size - started_at,
            resumed_from,
            crc64nvme: ours,
            failovers,
        })
    }

    /// Uploads a file of at most one part in one `PUT` (retried whole on
    /// another endpoint when one fails), checking the CRC64/NVME the server
    /// computed against the local file's.
    async fn put_small(
        &self,
        source: &Path,
        conn: &str,
        path: &str,
        size: u64,
        crc: u64,
        progress: &dyn Progress,
    ) -> Result<Transferred, Error> {
        let data =
            bytes::Bytes::from(std::fs::read(source).map_err(|e| local("cannot read", source, e))?);
        if data.len() as u64 != size {
            return Err(Error::Local(format!(
                "{} changed while it was read",
                source.display()
            )));
        }
        progress.update(0, size);
        let resp = self
            .ok(Method::PUT, &file_path(conn, path), |r| {
                r.body(data.clone())
            })
            .await?;
        let stored: crate::Entry = crate::read_json(resp, "the upload's answer").await?;
        let ours = ferry_common::checksum::encode_crc64(crc);
        if let Some(theirs) = stored.checksums.and_then(|c| c.crc64nvme)
            && ferry_common::checksum::decode_crc64(&theirs) != Some(crc)
        {
            return Err(Error::Checksum(format!(
                "'{conn}:{path}' was stored with CRC64/NVME {theirs}, the local file has {ours}"
            )));
        }
        progress.update(size, size);
        Ok(Transferred {
            size,
            moved: size,
            resumed_from: None,
            crc64nvme: ours,
            failovers: 0,
        })
    }

    /// The offset the server holds for upload `location`; `None` when
    /// the session is gone.
    async fn upload_offset(&self, location: &str) -> Result<Option<u64>, Error> {
        let resp = self
            .send(Method::HEAD, location, |r| {
                r.header("tus-resumable", "1.0.0")
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(header_u64(&resp, "upload-offset")),
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            _ => Err(Error::from_response(resp).await),
        }
    }
}

/// Where a partial download says what it is of.
fn partial_about(part: &Path) -> PathBuf {
    let mut name = part.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// The first byte a `206` answer holds (`Content-Range: bytes A-B/N`).
fn range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    v.strip_prefix("bytes ")?.split('-').next()?.parse().ok()
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// Where an unfinished upload's session is remembered: the user's cache
/// folder, one file per (network, connection, path, size, checksum), so
/// that only the same content resumes the same session.
fn resume_record(hub: &url::Url, conn: &str, path: &str, size: u64, crc: u64) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let key = format!("{hub}\n{conn}\n{path}\n{size}\n{crc}");
    let id = ferry_common::checksum::crc64nvme(key.as_bytes());
    Some(
        base.join("ferry")
            .join("uploads")
            .join(format!("{id:016x}")),
    )
}
