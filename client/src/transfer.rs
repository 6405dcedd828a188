//! Downloads and uploads that survive a dropped connection or a dead
//! spoke: a download goes on by range from the bytes already written, an
//! upload (tus) from the offset the server holds, each on the next
//! endpoint when the one in use fails. A download is written beside its
//! target under a temporary name and renamed only once complete and its
//! CRC64/NVME matches the server's; an upload's session is remembered, so
//! that the same command run again resumes it.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Endpoints that failed along the way (and were left), counted by
    /// each stream that left one.
    pub failovers: usize,
    /// Streams the file moved in (ranges, or upload sessions).
    pub streams: usize,
}

fn local(what: &str, path: &Path, e: std::io::Error) -> Error {
    let said = format!("{what} {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Error::NoSpace(said),
        _ => Error::Local(said),
    }
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

/// The bytes of a download's lane asked for in one request at most, and
/// the smallest lane: a part.
const DOWNLOAD_PART: u64 = 8 << 20;

/// How often (in bytes moved) a download notes how far its lanes are,
/// for a later run to resume from (each note syncs the partial file).
const SAVE_EVERY: u64 = 8 << 20;

/// A share of a file moved on a stream of its own: bytes `start..end`,
/// of which the first `done` have moved.
#[derive(Debug)]
struct Lane {
    start: u64,
    end: u64,
    done: AtomicU64,
}

impl Lane {
    fn new(start: u64, end: u64, done: u64) -> Self {
        Self {
            start,
            end,
            done: AtomicU64::new(done),
        }
    }

    fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Splits `size` bytes into at most `streams` lanes of whole parts, as
/// even as parts allow.
fn split(size: u64, part: u64, streams: usize) -> Vec<(u64, u64)> {
    let part = part.max(1);
    let parts = size.div_ceil(part).max(1);
    let n = (streams as u64).clamp(1, parts);
    let mut lanes = Vec::new();
    let mut at = 0;
    for i in 0..n {
        let take = parts / n + u64::from(i < parts % n);
        let end = (at + take * part).min(size);
        lanes.push((at, end));
        at = end;
    }
    lanes
}

/// Notes how far each lane is.
type SaveLanes<'a> = dyn Fn(&[Lane]) + Sync + 'a;

/// Adds up the lanes for the progress shown, and calls `save` each
/// [`SAVE_EVERY`] bytes.
struct Tracker<'a> {
    lanes: &'a [Lane],
    total: u64,
    progress: &'a dyn Progress,
    save: Option<&'a SaveLanes<'a>>,
    saved_at: AtomicU64,
}

impl Tracker<'_> {
    fn done(&self) -> u64 {
        self.lanes
            .iter()
            .map(|l| l.done.load(Ordering::Relaxed))
            .sum()
    }

    fn tick(&self) {
        let done = self.done();
        self.progress.update(done, self.total);
        if let Some(save) = self.save
            && done.saturating_sub(self.saved_at.load(Ordering::Relaxed)) >= SAVE_EVERY
        {
            self.saved_at.store(done, Ordering::Relaxed);
            save(self.lanes);
        }
    }
}

/// What a partial download is of, and how far each lane of it is: kept
/// beside it, so that only the same version of the same file resumes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct PartialDownload {
    conn: String,
    path: String,
    size: u64,
    etag: Option<String>,
    /// `[start, end, done]` of each lane.
    lanes: Vec<[u64; 3]>,
}

impl PartialDownload {
    fn same_file(&self, other: &Self) -> bool {
        (&self.conn, &self.path, self.size, &self.etag)
            == (&other.conn, &other.path, other.size, &other.etag)
    }

    /// Whether its lanes cover the file, in order, and the partial file
    /// (of `have` bytes) holds what they say moved.
    fn consistent(&self, have: u64) -> bool {
        let mut at = 0;
        for &[start, end, done] in &self.lanes {
            if start != at || end < start || done > end - start || start + done > have {
                return false;
            }
            at = end;
        }
        at == self.size && !self.lanes.is_empty()
    }

    /// Notes how far `lanes` are, once what they wrote to `part` is on
    /// disk (so that after a power loss the record never claims bytes the
    /// file lost), through a temporary file renamed over the record.
    fn save(&self, about: &Path, part: &Path, lanes: &[Lane]) {
        let mut now = self.clone();
        now.lanes = lanes
            .iter()
            .map(|l| [l.start, l.end, l.done.load(Ordering::Relaxed)])
            .collect();
        let synced = std::fs::OpenOptions::new()
            .write(true)
            .open(part)
            .and_then(|f| f.sync_data());
        let Ok(text) = serde_json::to_string(&now) else {
            return;
        };
        if synced.is_ok() {
            let mut tmp = about.as_os_str().to_owned();
            tmp.push(".new");
            let tmp = PathBuf::from(tmp);
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, about);
            }
        }
    }
}

/// Runs its closure when dropped, unless disarmed.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnDrop<F> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// What one lane of a download did.
struct LaneDone {
    crc: u64,
    moved: u64,
    failovers: usize,
}

impl Client {
    /// Downloads file `path` of `conn` to `target`, in up to
    /// [`Client::with_streams`] ranges at once, resuming a download of the
    /// same file left under the temporary name.
    pub async fn download(
        &self,
        conn: &str,
        path: &str,
        target: &Path,
        progress: &dyn Progress,
    ) -> Result<Transferred, Error> {
        self.refresh_endpoints().await;
        let stat = self.stat(conn, path).await?.ok_or_else(|| Error::Api {
            status: 404,
            code: "not_found".into(),
            detail: format!("no file at '{conn}:{path}'"),
        })?;
        let part = partial_name(target);
        let about = partial_about(&part);
        let fresh = PartialDownload {
            conn: conn.to_owned(),
            path: path.to_owned(),
            size: stat.size,
            etag: stat.etag.clone(),
            lanes: split(stat.size, DOWNLOAD_PART, self.streams)
                .into_iter()
                .map(|(a, b)| [a, b, 0])
                .collect(),
        };
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let earlier = std::fs::read_to_string(&about)
            .ok()
            .and_then(|t| serde_json::from_str::<PartialDownload>(&t).ok())
            .filter(|p| p.same_file(&fresh) && p.consistent(have));
        let resuming = earlier.is_some();
        let record = earlier.unwrap_or(fresh);
        std::fs::write(&about, serde_json::to_string(&record).unwrap_or_default())
            .map_err(|e| local("cannot write", &about, e))?;
        // Made (or emptied) here; each lane opens it for itself.
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(!resuming)
            .open(&part)
            .map_err(|e| local("cannot write", &part, e))?;
        let lanes: Vec<Lane> = record
            .lanes
            .iter()
            .map(|&[a, b, done]| Lane::new(a, b, done))
            .collect();
        let already: u64 = lanes.iter().map(|l| l.done.load(Ordering::Relaxed)).sum();
        let resumed_from = (already > 0).then_some(already);
        let save = |l: &[Lane]| record.save(&about, &part, l);
        let tracker = Tracker {
            lanes: &lanes,
            total: stat.size,
            progress,
            save: Some(&save),
            saved_at: AtomicU64::new(already),
        };
        tracker.tick();
        // Stopped half-way (an error, or the caller giving up: Ctrl-C),
        // it notes what every lane holds, for the next run.
        let guard = OnDrop(Some(|| save(&lanes)));
        let run = futures_util::future::try_join_all(
            lanes
                .iter()
                .map(|lane| self.fetch_lane(conn, path, &stat, &part, lane, &tracker)),
        )
        .await;
        let done = match run {
            Ok(done) => done,
            Err(e) => {
                // A file that changed cannot be resumed; on a full disk
                // the partial file takes the space the user now lacks.
                if matches!(e, Error::Checksum(_) | Error::NoSpace(_)) {
                    guard.disarm();
                    let _ = std::fs::remove_file(&part);
                    let _ = std::fs::remove_file(&about);
                }
                return Err(match e {
                    Error::NoSpace(why) => Error::NoSpace(format!("{why}; nothing was kept")),
                    e => e,
                });
            }
        };
        guard.disarm();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&part)
            .map_err(|e| local("cannot write", &part, e))?;
        // The file keeps the server's time of change, as `sync` compares
        // times where no checksum is known.
        if let Some(when) = stat
            .modified
            .as_deref()
            .and_then(|m| httpdate::parse_http_date(m).ok())
        {
            file.set_modified(when)
                .map_err(|e| local("cannot write", &part, e))?;
        }
        file.sync_all()
            .map_err(|e| local("cannot write", &part, e))?;
        drop(file);
        let crc = combine(lanes.iter().zip(&done).map(|(l, d)| (d.crc, l.len())));
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
            moved: done.iter().map(|d| d.moved).sum(),
            resumed_from,
            crc64nvme: ours,
            failovers: done.iter().map(|d| d.failovers).sum(),
            streams: lanes.len(),
        })
    }

    /// Fetches what `lane` of the file still lacks into `part`, by range,
    /// moving to the next endpoint when one fails; returns the CRC64/NVME
    /// of the whole lane.
    async fn fetch_lane(
        &self,
        conn: &str,
        path: &str,
        stat: &crate::Stat,
        part: &Path,
        lane: &Lane,
        tracker: &Tracker<'_>,
    ) -> Result<LaneDone, Error> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(part)
            .map_err(|e| local("cannot write", part, e))?;
        let mut have = lane.done.load(Ordering::Relaxed);
        // The CRC64/NVME is computed as the bytes arrive; what an earlier
        // run left is read once.
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
        if have > 0 {
            let mut prefix =
                std::fs::File::open(part).map_err(|e| local("cannot read", part, e))?;
            prefix
                .seek(std::io::SeekFrom::Start(lane.start))
                .map_err(|e| local("cannot read", part, e))?;
            let mut prefix = prefix.take(have);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = prefix
                    .read(&mut buf)
                    .map_err(|e| local("cannot read", part, e))?;
                if n == 0 {
                    break;
                }
                digest.update(&buf[..n]);
            }
        }
        file.seek(std::io::SeekFrom::Start(lane.start + have))
            .map_err(|e| local("cannot write", part, e))?;
        let started_at = have;
        let mut failovers = 0;
        let mut failures = 0;
        while have < lane.len() {
            let from = lane.start + have;
            let range = format!("bytes={from}-{}", lane.end - 1);
            let resp = self
                .send(Method::GET, &file_path(conn, path), |r| {
                    let r = r.header(reqwest::header::RANGE, &range);
                    match &stat.etag {
                        Some(e) => r.header(reqwest::header::IF_MATCH, e),
                        None => r,
                    }
                })
                .await?;
            let answered_by = resp.url().clone();
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if range_start(&resp) == Some(from) => {}
                StatusCode::PARTIAL_CONTENT => {
                    return Err(Error::Transport(format!(
                        "{answered_by} answered another range than {range}"
                    )));
                }
                // The whole file, for the one lane that is the whole file.
                StatusCode::OK if from == 0 && lane.end == stat.size => {}
                StatusCode::PRECONDITION_FAILED => {
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
                        if b.len() as u64 > lane.len() - have {
                            return Err(Error::Transport(format!(
                                "{answered_by} sent more than {range}"
                            )));
                        }
                        if let Some(l) = &self.limiter {
                            l.take(b.len()).await;
                        }
                        file.write_all(&b)
                            .map_err(|e| local("cannot write", part, e))?;
                        digest.update(&b);
                        have += b.len() as u64;
                        lane.done.store(have, Ordering::Relaxed);
                        tracker.tick();
                    }
                    Err(e) => {
                        broke = Some(crate::error_chain(&e));
                        break;
                    }
                }
            }
            if have < lane.len() {
                failures += 1;
                let why = broke.unwrap_or_else(|| "the answer ended early".into());
                eprintln_debug(&format!(
                    "download from {answered_by} broke at {}: {why}",
                    lane.start + have
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
        Ok(LaneDone {
            crc: digest.finalize(),
            moved: have - started_at,
            failovers,
        })
    }

    /// Uploads local file `source` to `path` of `conn` through the
    /// resumable protocol, `part_size` bytes a request: in one session, or
    /// for a file of several parts in up to [`Client::with_upload_streams`]
    /// sessions at once, joined at the end (tus concatenation). Resumes
    /// the sessions an earlier run of the same upload left.
    pub async fn upload(
        &self,
        source: &Path,
        conn: &str,
        path: &str,
        part_size: u64,
        progress: &dyn Progress,
    ) -> Result<Transferred, Error> {
        self.refresh_endpoints().await;
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
        let plan = split(size, part_size, self.upload_streams);
        let resume_file = resume_record(&self.hub, conn, path, size, crc);
        let remembered: Vec<String> = resume_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        // The sessions an earlier run made, if they are all still there.
        let mut sessions = None;
        if remembered.len() == plan.len()
            && remembered.iter().all(|l| l.starts_with("/v1/uploads/"))
        {
            let mut offsets = Vec::new();
            for (loc, &(a, b)) in remembered.iter().zip(&plan) {
                match self.upload_offset(loc).await {
                    Ok(Some(o)) if o <= b - a => offsets.push(o),
                    _ => break,
                }
            }
            if offsets.len() == plan.len() {
                sessions = Some((remembered, offsets));
            }
        }
        let (locations, offsets) = match sessions {
            Some(s) => s,
            None => {
                let mut locations = Vec::new();
                for &(a, b) in &plan {
                    let partial = plan.len() > 1;
                    locations.push(self.create_session(conn, path, b - a, partial).await?);
                }
                if let Some(f) = &resume_file {
                    if let Some(dir) = f.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ =
                        std::fs::write(f, serde_json::to_string(&locations).unwrap_or_default());
                }
                let zeros = vec![0; locations.len()];
                (locations, zeros)
            }
        };
        let lanes: Vec<Lane> = plan
            .iter()
            .zip(&offsets)
            .map(|(&(a, b), &o)| Lane::new(a, b, o))
            .collect();
        let already: u64 = offsets.iter().sum();
        let tracker = Tracker {
            lanes: &lanes,
            total: size,
            progress,
            save: None,
            saved_at: AtomicU64::new(0),
        };
        tracker.tick();
        let done = futures_util::future::try_join_all(
            lanes
                .iter()
                .zip(&locations)
                .map(|(lane, loc)| self.append_lane(source, loc, lane, part_size, &tracker)),
        )
        .await?;
        if locations.len() > 1 {
            let concat = format!("final;{}", locations.join(" "));
            self.ok(Method::POST, &uploads_path(conn, path), |r| {
                r.header("tus-resumable", "1.0.0")
                    .header("upload-concat", &concat)
            })
            .await?;
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
            moved: size - already,
            resumed_from: (already > 0).then_some(already),
            crc64nvme: ours,
            failovers: done.iter().sum(),
            streams: lanes.len(),
        })
    }

    /// Makes an upload session of `length` bytes for `path` of `conn` (a
    /// partial one, to be joined later, when `partial`); returns its
    /// location.
    async fn create_session(
        &self,
        conn: &str,
        path: &str,
        length: u64,
        partial: bool,
    ) -> Result<String, Error> {
        let resp = self
            .ok(Method::POST, &uploads_path(conn, path), |r| {
                let r = r
                    .header("tus-resumable", "1.0.0")
                    .header("upload-length", length.to_string());
                if partial {
                    r.header("upload-concat", "partial")
                } else {
                    r
                }
            })
            .await?;
        resp.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::Transport("the upload was made without a Location".into()))
    }

    /// Appends what `lane` of `source` the session at `location` still
    /// lacks, a part a request, moving to the next endpoint when one fails
    /// and waiting while another writer holds the session; returns how many
    /// endpoints it left.
    async fn append_lane(
        &self,
        source: &Path,
        location: &str,
        lane: &Lane,
        part_size: u64,
        tracker: &Tracker<'_>,
    ) -> Result<usize, Error> {
        let mut failovers = 0;
        let mut failures = 0;
        let mut waits = 0;
        let mut file = std::fs::File::open(source).map_err(|e| local("cannot read", source, e))?;
        let mut offset = lane.done.load(Ordering::Relaxed);
        // (An empty lane is complete once made: nothing to append.)
        while offset < lane.len() {
            lane.done.store(offset, Ordering::Relaxed);
            tracker.tick();
            let len = part_size.min(lane.len() - offset);
            let mut buf = vec![0u8; len as usize];
            file.seek(std::io::SeekFrom::Start(lane.start + offset))
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
                .body(self.body(buf.into()))
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
                "upload through {endpoint} failed at {}: {why}",
                lane.start + offset
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
            offset = match self.upload_offset(location).await? {
                Some(o) => o,
                None => {
                    return Err(Error::Transport(
                        "the upload session is gone; run the command again".into(),
                    ));
                }
            };
        }
        lane.done.store(offset, Ordering::Relaxed);
        tracker.tick();
        Ok(failovers)
    }

    /// A request body of `data`: as it is, or under `--bwlimit` in pieces
    /// that each wait for their share of the budget.
    fn body(&self, data: bytes::Bytes) -> reqwest::Body {
        let Some(limiter) = self.limiter.clone() else {
            return data.into();
        };
        const PIECE: usize = 64 << 10;
        let pieces: Vec<bytes::Bytes> = (0..data.len())
            .step_by(PIECE)
            .map(|i| data.slice(i..(i + PIECE).min(data.len())))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces).then(move |p| {
            let limiter = limiter.clone();
            async move {
                limiter.take(p.len()).await;
                Ok::<_, std::io::Error>(p)
            }
        }))
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
                r.body(self.body(data.clone()))
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
            streams: 1,
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

/// The CRC64/NVME of pieces laid end to end, from each piece's and its
/// length.
fn combine(pieces: impl Iterator<Item = (u64, u64)>) -> u64 {
    let mut crc = None;
    for (piece, len) in pieces {
        crc = Some(match crc {
            None => piece,
            Some(c) => crc_fast::checksum_combine(crc_fast::CrcAlgorithm::Crc64Nvme, c, piece, len),
        });
    }
    crc.unwrap_or_else(|| crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme).finalize())
}

/// Where upload sessions for `path` of `conn` are made.
fn uploads_path(conn: &str, path: &str) -> String {
    format!(
        "/v1/connections/{}/uploads?path={}",
        escape(conn),
        percent_encoding::utf8_percent_encode(
            path.trim_start_matches('/'),
            percent_encoding::NON_ALPHANUMERIC
        )
    )
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
