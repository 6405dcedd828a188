//! Moving an upload's bytes: one append streamed into a staged part, and
//! the parts put together at the object's path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use opendal::{Buffer, Operator};

use crate::body::BoxError;
use crate::content::budget;
use crate::content::transfer::{Gather, StageError, open_writer, read_stream, stage};
use crate::problem::{ErrorCode, Problem};
use crate::provider::problem as provider_problem;

use super::protocol::{ChunkAlgorithm, ChunkHasher};
use super::{NativeParts, Part, Session, part_name};
use crate::content::Target;
use crate::provider::answer;
use crate::provider::native::Multipart;
use crate::provider::remote;
use crate::provider::s3_parts;
use futures_util::future::BoxFuture;

/// How one append ended, short of a part.
#[derive(Debug)]
pub enum AppendError {
    /// The chunk would take the upload past `limit` bytes: discarded.
    TooLarge,
    /// The chunk does not match the checksum sent with it: discarded.
    ChecksumMismatch,
    /// The lease was lost while the bytes streamed: discarded.
    LeaseLost,
    /// Another writer on this node still holds the staging file.
    Busy,
    /// The body was cut and carried a checksum that bytes cut short cannot
    /// match: discarded.
    Cut(BoxError),
    /// The provider failed.
    Provider(opendal::Error),
    /// The provider takes uploads in one request and this one is too big.
    OneShotTooLarge,
    /// Parts could not be recorded while the body streamed (the lease
    /// lost, the hub unreachable): the append stopped there.
    Recording(Problem),
    /// The session's multipart upload has all the parts its provider
    /// allows.
    TooManyParts,
}

impl AppendError {
    /// The problem a client is told.
    pub fn problem(&self, scheme: &'static str) -> Problem {
        match self {
            Self::TooLarge => Problem::new(
                ErrorCode::UploadTooLarge,
                "the chunk goes past the upload's length or the size limit; it was discarded",
            ),
            Self::ChecksumMismatch => Problem::new(
                ErrorCode::ChecksumMismatch,
                "the chunk does not match its Upload-Checksum; it was discarded",
            ),
            Self::LeaseLost => Problem::new(
                ErrorCode::UploadLocked,
                "another request took this upload over; this chunk was discarded",
            ),
            Self::Busy => Problem::new(
                ErrorCode::UploadLocked,
                "another request is still writing to this upload; retry shortly",
            )
            .with_retry_after(1),
            Self::Cut(_) => Problem::new(
                ErrorCode::UploadIncomplete,
                "the chunk ended early; it carried a checksum, so it was discarded",
            ),
            Self::Provider(e) => provider_problem(e, scheme, "write"),
            Self::OneShotTooLarge => Problem::new(
                ErrorCode::UploadTooLarge,
                "the chunk is larger than this provider takes in one request",
            ),
            Self::Recording(p) => p.clone(),
            Self::TooManyParts => Problem::new(
                ErrorCode::UploadTooLarge,
                "the upload has used all the parts its provider allows (10,000 on S3): send larger chunks, or start again with the length declared",
            ),
        }
    }
}

/// What an append kept.
#[derive(Debug)]
pub struct Appended {
    /// The parts recorded while the body streamed, in order.
    pub recorded: Vec<Part>,
    /// The parts written and not yet recorded, in order (none when no byte
    /// arrived). The first part of the append may start before the
    /// committed offset: a small staged part sent again at its head, which
    /// it replaces.
    pub parts: Vec<Part>,
    /// Why the body ended early, when it did (the bytes before were kept).
    pub cut: Option<BoxError>,
}

/// Records parts of an append still streaming, keeping its lease.
pub type Checkpoint<'a> = dyn Fn(Vec<Part>) -> BoxFuture<'a, Result<(), Problem>> + Sync + 'a;

/// How often an append records what the provider already holds of it, so
/// that a node dying part way through a long request loses at most this
/// much of it (and one part in flight).
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Where an append goes and what it continues.
#[derive(Clone, Copy)]
pub struct AppendTo<'a> {
    /// The connection's provider.
    pub target: &'a Target,
    /// The session, as the lease found it.
    pub session: &'a Session,
    /// Its parts so far.
    pub parts: &'a [Part],
    /// The lease's token, which names the parts.
    pub token: &'a str,
    /// The body's length, when the request said it.
    pub body_len: Option<u64>,
    /// Whether the body's last byte is the upload's last.
    pub ends: bool,
    /// Where parts are recorded while the body still streams (every
    /// [`CHECKPOINT_EVERY`]), when they may be: not for a chunk with a
    /// checksum, which counts whole or not at all.
    pub checkpoint: Option<&'a Checkpoint<'a>>,
}

#[derive(Default)]
struct Watch {
    seen: u64,
    over: bool,
    lost: bool,
    cut: Option<BoxError>,
    hasher: Option<ChunkHasher>,
}

/// What the watch over an append's body saw, once the body is done.
struct Seen {
    over: bool,
    lost: bool,
    cut: Option<BoxError>,
    digest: Option<Vec<u8>>,
}

impl Seen {
    fn of(watch: &Mutex<Watch>) -> Self {
        let mut st = watch.lock().expect("poisoned");
        Self {
            over: st.over,
            lost: st.lost,
            cut: st.cut.take(),
            digest: st.hasher.take().map(ChunkHasher::finish),
        }
    }

    /// Why the body stopped with `e`: past the limit, the lease lost, or
    /// cut (with a checksum, which bytes cut short cannot match).
    fn stopped(&self, e: BoxError) -> AppendError {
        if self.over {
            AppendError::TooLarge
        } else if self.lost {
            AppendError::LeaseLost
        } else {
            AppendError::Cut(e)
        }
    }

    /// Whether the chunk matches the checksum sent with it, if one was.
    fn matches(&self, checksum: &Option<(ChunkAlgorithm, Vec<u8>)>) -> bool {
        checksum
            .as_ref()
            .is_none_or(|(_, want)| self.digest.as_deref() == Some(want.as_slice()))
    }
}

#[derive(Debug)]
struct Marker(&'static str);

impl std::fmt::Display for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Marker {}

/// Streams `body` into the session's next part, at most up to the
/// upload's limit: on S3, straight into the session's multipart upload
/// (`append_native`); on a folder, into the session's staging file;
/// elsewhere into an object of its own. A body cut part way keeps what
/// arrived, unless `checksum` was sent; `lost` set (by the lease's keeper)
/// stops the append and discards it. The parts are durable at the
/// provider when this returns them.
pub async fn append<S, E>(
    to: AppendTo<'_>,
    body: S,
    checksum: Option<(ChunkAlgorithm, Vec<u8>)>,
    lost: Arc<AtomicBool>,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Appended, AppendError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<BoxError>,
{
    if let Some(p) = &to.target.pacing {
        p.wait(&to.target.connection_id).await;
    }
    let session = to.session;
    let offset = session.offset;
    let limit = session.limit().saturating_sub(offset);
    let op = &to.target.op;
    let name = part_name(&session.id, offset, to.token);
    let keep_cut = checksum.is_none();
    let watch = Arc::new(Mutex::new(Watch {
        hasher: checksum.as_ref().map(|(alg, _)| ChunkHasher::new(*alg)),
        ..Watch::default()
    }));
    let w = watch.clone();
    let body = crate::content::throttle::throttled(
        body.map(|item| item.map_err(Into::into)),
        to.target.throttle.up.clone(),
    );
    let watched =
        futures_util::stream::unfold((Box::pin(body), w, false), move |(mut body, w, done)| {
            let lost = lost.clone();
            async move {
                if done {
                    return None;
                }
                let item = body.next().await?;
                let mut st = w.lock().expect("poisoned");
                if lost.load(Ordering::Relaxed) {
                    st.lost = true;
                    drop(st);
                    return Some((
                        Err(Box::new(Marker("lease lost")) as BoxError),
                        (body, w, true),
                    ));
                }
                match item {
                    Ok(data) => {
                        st.seen += data.len() as u64;
                        if st.seen > limit {
                            st.over = true;
                            drop(st);
                            return Some((
                                Err(Box::new(Marker("over the limit")) as BoxError),
                                (body, w, true),
                            ));
                        }
                        if let Some(h) = st.hasher.as_mut() {
                            h.update(&data);
                        }
                        drop(st);
                        Some((Ok(data), (body, w, false)))
                    }
                    Err(e) if keep_cut => {
                        st.cut = Some(e);
                        None
                    }
                    Err(e) => {
                        drop(st);
                        Some((Err(e), (body, w, true)))
                    }
                }
            }
        });
    if op.info().scheme() == "fs" {
        let local = Local {
            op,
            name: &name,
            offset,
            checkpoint: to.checkpoint,
        };
        return append_local(local, watched, &watch, checksum, on_bytes).await;
    }
    if let (Some(m), Some(upload)) = (&to.target.multipart, &session.provider_upload) {
        return append_native(to, m, upload, watched, &watch, checksum, on_bytes).await;
    }
    stage_part(op, &name, offset, watched, 0, &watch, checksum, on_bytes).await
}

/// One staged part, an object of its own, written from `source`, whose
/// first `uncounted` bytes were at the provider already (sent again, not
/// counted as the client's).
#[allow(clippy::too_many_arguments)]
async fn stage_part<S>(
    op: &Operator,
    name: &str,
    offset: u64,
    source: S,
    uncounted: u64,
    watch: &Mutex<Watch>,
    checksum: Option<(ChunkAlgorithm, Vec<u8>)>,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Appended, AppendError>
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send,
{
    let unseen = std::sync::atomic::AtomicU64::new(uncounted);
    let count = |n: u64| {
        let skip = unseen.load(Ordering::Relaxed).min(n);
        unseen.fetch_sub(skip, Ordering::Relaxed);
        if n > skip {
            on_bytes(n - skip);
        }
    };
    let staged = stage(op, name, None, source, Vec::new(), &count).await;
    let seen = Seen::of(watch);
    let mut staged = match staged {
        Ok(s) => s,
        Err(StageError::Source(e)) => {
            return Err(seen.stopped(e));
        }
        Err(StageError::Provider(e)) => return Err(AppendError::Provider(e)),
        Err(StageError::TooLarge) => return Err(AppendError::OneShotTooLarge),
    };
    if !seen.matches(&checksum) {
        if let Err(e) = staged.writer.abort().await {
            tracing::warn!(error = %e, "could not discard a chunk that failed its checksum");
        }
        return Err(AppendError::ChecksumMismatch);
    }
    if staged.sums.len == 0 {
        if let Err(e) = staged.writer.abort().await {
            tracing::debug!(error = %e, "could not discard an empty part");
        }
        return Ok(Appended {
            recorded: Vec::new(),
            parts: Vec::new(),
            cut: seen.cut,
        });
    }
    staged.writer.close().await.map_err(AppendError::Provider)?;
    Ok(Appended {
        recorded: Vec::new(),
        parts: vec![Part {
            offset,
            size: staged.sums.len,
            crc64nvme: staged.sums.crc64nvme,
            name: name.to_owned(),
            native: None,
        }],
        cut: seen.cut,
    })
}

/// The first part number of each of `parts`, and the next free one. A
/// part sent into the provider's upload has its own numbers; a staged part
/// keeps as many as its copy into the upload, in parts of at most
/// `max_part` bytes, will take.
pub fn numbering(parts: &[Part], max_part: u64) -> (Vec<u32>, u32) {
    let mut next = 1u32;
    let firsts = parts
        .iter()
        .map(|p| match &p.native {
            Some(n) => {
                next = n.first + n.etags.len() as u32;
                n.first
            }
            None => {
                let first = next;
                next += copy_ranges(p.size, max_part).len() as u32;
                first
            }
        })
        .collect();
    (firsts, next)
}

/// The ranges a staged part of `size` bytes is copied into a provider's
/// upload in: one, or even shares no larger than `max_part`.
fn copy_ranges(size: u64, max_part: u64) -> Vec<std::ops::Range<u64>> {
    let n = size.div_ceil(max_part).max(1);
    let each = size.div_ceil(n);
    (0..n)
        .map(|i| (i * each)..((i + 1) * each).min(size))
        .filter(|r| !r.is_empty() || size == 0)
        .collect()
}

/// A part whose bytes are all sent, and its answer to come.
struct Flying {
    size: u64,
    crc: u64,
    answer: tokio::task::JoinHandle<Result<String, opendal::Error>>,
}

impl std::fmt::Debug for AppendTo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendTo")
            .field("session", &self.session.id)
            .field("parts", &self.parts.len())
            .field("body_len", &self.body_len)
            .field("ends", &self.ends)
            .field("checkpoint", &self.checkpoint.is_some())
            .finish_non_exhaustive()
    }
}

/// The parts of an append the provider has acknowledged and the store has
/// not yet recorded: consecutive, from `start` to `end`.
struct Run {
    start: u64,
    first: u32,
    tags: Vec<String>,
    crc: u64,
    end: u64,
}

impl Run {
    /// Waits for the answer of part `f`: kept, unless a part before it
    /// failed (the parts must be consecutive), or failed.
    async fn settle(&mut self, mut f: Flying, failed: &mut Option<opendal::Error>) {
        let answer = (&mut f.answer)
            .await
            .unwrap_or_else(|e| Err(stopped_task(e)));
        match answer {
            Ok(tag) if failed.is_none() => {
                self.tags.push(tag);
                self.crc = crc_fast::checksum_combine(
                    crc_fast::CrcAlgorithm::Crc64Nvme,
                    self.crc,
                    f.crc,
                    f.size,
                );
                self.end += f.size;
            }
            Ok(_) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }

    /// The parts kept so far as one [`Part`] of upload `id` under the
    /// lease `token`, the run starting again after them.
    fn take(&mut self, id: &str, token: &str) -> Option<Part> {
        if self.tags.is_empty() {
            return None;
        }
        let tags = std::mem::take(&mut self.tags);
        let part = Part {
            offset: self.start,
            size: self.end - self.start,
            crc64nvme: self.crc,
            name: part_name(id, self.start, token),
            native: Some(NativeParts {
                first: self.first,
                etags: tags,
            }),
        };
        self.first += part.native.as_ref().map_or(0, |n| n.etags.len() as u32);
        self.start = self.end;
        self.crc = 0;
        Some(part)
    }
}

fn stopped_task(e: tokio::task::JoinError) -> opendal::Error {
    opendal::Error::new(opendal::ErrorKind::Unexpected, "sending a part stopped").set_source(e)
}

/// An S3 session's append: the body cut into parts of the session's
/// multipart upload, each streamed in one `UploadPart` of known length.
/// A staged part too small to stand before another (under S3's 5 MiB),
/// left by the previous append, is read back (at most that much) and
/// sent again at the head of this one. The end of the body that is too
/// small to be a part, unless it is the upload's last, is staged as an
/// object for the next append to carry the same way. A body of unknown
/// length is staged whole, to be copied into the upload at completion.
/// A body cut part way keeps the parts sent before the cut.
async fn append_native<S>(
    to: AppendTo<'_>,
    m: &Arc<Multipart>,
    upload: &str,
    watched: S,
    watch: &Mutex<Watch>,
    checksum: Option<(ChunkAlgorithm, Vec<u8>)>,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Appended, AppendError>
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send,
{
    let session = to.session;
    let op = &to.target.op;
    let carried = to.parts.last().filter(|p| {
        p.native.is_none() && p.size < m.min_part() && p.offset + p.size == session.offset
    });
    let kept = &to.parts[..to.parts.len() - usize::from(carried.is_some())];
    let start = carried.map_or(session.offset, |p| p.offset);
    let head = match carried {
        Some(p) => Some(
            op.read(&p.name)
                .await
                .map_err(AppendError::Provider)?
                .to_bytes(),
        ),
        None => None,
    };
    let head_len = head.as_ref().map_or(0, |h| h.len() as u64);
    let Some(body_len) = to.body_len else {
        let name = part_name(&session.id, start, to.token);
        let source = futures_util::stream::iter(head.map(Ok)).chain(watched);
        return stage_part(
            op, &name, start, source, head_len, watch, checksum, on_bytes,
        )
        .await;
    };
    let (_, first) = numbering(kept, m.max_part());
    let mut number = first;
    let path = native_path(m, session);
    let mut source = Box::pin(futures_util::stream::iter(head.map(Ok)).chain(watched));
    let mut carry: Option<Bytes> = None;
    let mut uncounted = head_len;
    let mut run = Run {
        start,
        first,
        tags: Vec::new(),
        crc: 0,
        end: start,
    };
    let mut recorded = Vec::new();
    let mut since = std::time::Instant::now();
    // The bytes not yet given a part.
    let mut remaining = head_len + body_len;
    // Why the body stopped short of a part, if it did: an error, or none
    // when it just ended (cut, the cause kept by the watch).
    let mut stopped: Option<Option<BoxError>> = None;
    // Parts whose bytes are all sent, waiting for their answer: the next
    // part streams meanwhile, so the client's bytes never wait for the
    // provider's answer to the part before.
    let mut flying: std::collections::VecDeque<Flying> = std::collections::VecDeque::new();
    let _lease = budget::UPLOADS.lease();
    let mut failed: Option<opendal::Error> = None;
    while remaining > 0 {
        let target = s3_parts::part_target(session.length, number).min(m.max_part());
        let size = if remaining > m.max_part() || remaining >= target + m.min_part() {
            target
        } else if remaining >= m.min_part() || to.ends {
            remaining
        } else {
            break;
        };
        if number > m.max_parts() {
            return Err(AppendError::TooManyParts);
        }
        if flying.len() >= remote::PARTS_IN_FLIGHT
            && let Some(oldest) = flying.pop_front()
        {
            run.settle(oldest, &mut failed).await;
            if failed.is_none()
                && let Some(cp) = to.checkpoint
                && since.elapsed() >= CHECKPOINT_EVERY
                && let Some(part) = run.take(&session.id, to.token)
            {
                cp(vec![part.clone()])
                    .await
                    .map_err(AppendError::Recording)?;
                recorded.push(part);
                since = std::time::Instant::now();
            }
        }
        if failed.is_some() {
            break;
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let answer = {
            let (m, path, upload) = (m.clone(), path.clone(), upload.to_owned());
            answer::spawn_observed(
                async move { m.send_part(&path, &upload, number, size, body).await },
            )
        };
        let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
        // Feeds the part its bytes, gathered into buffers of the upload
        // budget's size, two of which may wait for the request: a provider
        // that reads slowly for a moment does not stall the client at
        // once, and an upload holds about as much as a plain one does.
        // Whether they all went, or why the body stopped.
        let mut gather = Gather::sized_by(&budget::UPLOADS);
        let fed: Result<bool, Option<BoxError>> = async {
            let mut left = size;
            while left > 0 {
                let chunk = match carry.take() {
                    Some(c) => c,
                    None => match source.next().await {
                        Some(Ok(c)) => c,
                        Some(Err(e)) => {
                            let _ = tx
                                .send(Err(std::io::Error::other("the body stopped")))
                                .await;
                            return Err(Some(e));
                        }
                        None => {
                            let _ = tx.send(Err(std::io::Error::other("the body ended"))).await;
                            return Err(None);
                        }
                    },
                };
                let mut now = chunk;
                if now.len() as u64 > left {
                    carry = Some(now.split_off(left as usize));
                }
                let n = now.len() as u64;
                crc.update(&now);
                let skip = uncounted.min(n);
                uncounted -= skip;
                if n > skip {
                    on_bytes(n - skip);
                }
                left -= n;
                let mut full = gather.push(&now);
                if left == 0 {
                    full.extend(gather.rest());
                }
                for buf in full {
                    if tx.send(Ok(buf)).await.is_err() {
                        // The request ended early: its answer says why.
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        }
        .await;
        let part = Flying {
            size,
            crc: crc.finalize(),
            answer,
        };
        match fed {
            Ok(true) => {
                flying.push_back(part);
                remaining -= size;
                number += 1;
            }
            Ok(false) => {
                let Flying { mut answer, .. } = part;
                let got = (&mut answer).await.unwrap_or_else(|e| Err(stopped_task(e)));
                failed.get_or_insert(got.err().unwrap_or_else(|| {
                    opendal::Error::new(opendal::ErrorKind::Unexpected, "a part ended early")
                }));
                break;
            }
            Err(why) => {
                // The part being sent is abandoned (its body failed).
                part.answer.abort();
                stopped = Some(why);
                break;
            }
        }
    }
    while let Some(f) = flying.pop_front() {
        run.settle(f, &mut failed).await;
    }
    if let Some(e) = failed {
        return Err(AppendError::Provider(e));
    }
    let at = run.end;
    let mut parts: Vec<Part> = run.take(&session.id, to.token).into_iter().collect();
    if stopped.is_none() && remaining > 0 {
        // Too little for a part: staged, for the next append to carry.
        let rest = futures_util::stream::iter(carry.take().map(Ok)).chain(source);
        let name = part_name(&session.id, at, to.token);
        let tail = stage_part(op, &name, at, rest, uncounted, watch, checksum, on_bytes).await?;
        parts.extend(tail.parts);
        return Ok(Appended {
            recorded,
            parts,
            cut: tail.cut,
        });
    }
    drop(source);
    let seen = Seen::of(watch);
    if let Some(Some(e)) = stopped {
        // Past the limit, the lease lost, or cut with a checksum: the
        // parts sent and not recorded stay so, and the next append sends
        // its own under the same numbers.
        return Err(seen.stopped(e));
    }
    if !seen.matches(&checksum) {
        return Err(AppendError::ChecksumMismatch);
    }
    Ok(Appended {
        recorded,
        parts,
        cut: seen.cut,
    })
}

/// What stopped a folder connection's append.
enum LocalStop {
    /// The body (or the watch over it) ended the stream with an error.
    Source(BoxError),
    /// The file could not be written.
    Io(std::io::Error),
    /// Another writer on this machine holds the file.
    Busy,
    /// What was written could not be recorded.
    Recording(Problem),
}

/// A folder connection's append: the bytes go straight into the session's
/// one staging file ([`super::local_staging_file`]) at their offset, under
/// an exclusive lock on the file besides the lease, and are flushed to the
/// disk before the part is returned; completion is then a rename. What
/// lies in the file past the committed offset (an append that never got
/// recorded) is cut off first.
/// Where a folder connection's append goes.
struct Local<'a, 'c> {
    op: &'a Operator,
    /// The part's name under the lease (the file is the session's one
    /// staging file beside it).
    name: &'a str,
    offset: u64,
    checkpoint: Option<&'c Checkpoint<'c>>,
}

async fn append_local<S>(
    to: Local<'_, '_>,
    watched: S,
    watch: &Mutex<Watch>,
    checksum: Option<(ChunkAlgorithm, Vec<u8>)>,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Appended, AppendError>
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send,
{
    let file_name = super::local_staging_file(to.name);
    let path = std::path::PathBuf::from(to.op.info().root()).join(&file_name);
    let mut recorded = Vec::new();
    let written = write_local(&path, &file_name, to, watched, &mut recorded, on_bytes).await;
    let seen = Seen::of(watch);
    let io = |e: std::io::Error| {
        AppendError::Provider(
            opendal::Error::new(opendal::ErrorKind::Unexpected, "writing a folder upload")
                .set_source(e),
        )
    };
    let (at, size, crc) = match written {
        Ok(w) => w,
        Err(LocalStop::Busy) => return Err(AppendError::Busy),
        Err(LocalStop::Io(e)) => return Err(io(e)),
        Err(LocalStop::Recording(p)) => return Err(AppendError::Recording(p)),
        Err(LocalStop::Source(e)) => {
            return Err(seen.stopped(e));
        }
    };
    if !seen.matches(&checksum) {
        // The bytes past the committed offset are cut off by the next
        // append.
        return Err(AppendError::ChecksumMismatch);
    }
    Ok(Appended {
        recorded,
        parts: (size > 0)
            .then_some(Part {
                offset: at,
                size,
                crc64nvme: crc,
                name: file_name,
                native: None,
            })
            .into_iter()
            .collect(),
        cut: seen.cut,
    })
}

/// Writes the body into the session's staging file at the offset, flushed
/// to the disk and recorded every [`CHECKPOINT_EVERY`] when it may be
/// (each recorded part pushed to `recorded`): where the bytes not yet
/// recorded start, their length and CRC64/NVME.
async fn write_local<S>(
    path: &std::path::Path,
    file_name: &str,
    to: Local<'_, '_>,
    body: S,
    recorded: &mut Vec<Part>,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(u64, u64, u64), LocalStop>
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send,
{
    use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
    let offset = to.offset;
    let file = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || -> Result<std::fs::File, LocalStop> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(LocalStop::Io)?;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(LocalStop::Io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(LocalStop::Busy),
                Err(std::fs::TryLockError::Error(e)) => return Err(LocalStop::Io(e)),
            }
            let len = file.metadata().map_err(LocalStop::Io)?.len();
            if len < offset {
                return Err(LocalStop::Io(std::io::Error::other(
                    "the upload's staging file lacks bytes the store counts",
                )));
            }
            file.set_len(offset).map_err(LocalStop::Io)?;
            Ok(file)
        })
        .await
        .map_err(|e| LocalStop::Io(std::io::Error::other(e)))??
    };
    let mut file = tokio::fs::File::from_std(file);
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(LocalStop::Io)?;
    let new_crc = || crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
    let mut crc = new_crc();
    let (mut start, mut size) = (offset, 0u64);
    let mut since = std::time::Instant::now();
    let mut stopped = None;
    let mut body = std::pin::pin!(body);
    // One write a buffer sized by the upload budget, as a plain upload's.
    let _lease = budget::UPLOADS.lease();
    let mut pending = Gather::sized_by(&budget::UPLOADS);
    while let Some(item) = body.next().await {
        match item {
            Ok(data) => {
                crc.update(&data);
                on_bytes(data.len() as u64);
                size += data.len() as u64;
                for full in pending.push(&data) {
                    file.write_all(&full).await.map_err(LocalStop::Io)?;
                }
                if let Some(cp) = to.checkpoint
                    && since.elapsed() >= CHECKPOINT_EVERY
                {
                    // What the file holds so far, on the disk, then recorded.
                    if let Some(rest) = pending.rest() {
                        file.write_all(&rest).await.map_err(LocalStop::Io)?;
                    }
                    file.sync_data().await.map_err(LocalStop::Io)?;
                    let part = Part {
                        offset: start,
                        size,
                        crc64nvme: std::mem::replace(&mut crc, new_crc()).finalize(),
                        name: file_name.to_owned(),
                        native: None,
                    };
                    cp(vec![part.clone()]).await.map_err(LocalStop::Recording)?;
                    (start, size) = (start + part.size, 0);
                    recorded.push(part);
                    since = std::time::Instant::now();
                }
            }
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    if let Some(rest) = pending.rest() {
        file.write_all(&rest).await.map_err(LocalStop::Io)?;
    }
    file.flush().await.map_err(LocalStop::Io)?;
    file.sync_data().await.map_err(LocalStop::Io)?;
    match stopped {
        Some(e) => Err(LocalStop::Source(e)),
        None => Ok((start, size, crc.finalize())),
    }
}

/// The CRC64/NVME of `parts` in order, from their own checksums.
pub fn combined_crc(start: u64, parts: &[Part]) -> u64 {
    parts.iter().fold(start, |crc, p| {
        crc_fast::checksum_combine(crc_fast::CrcAlgorithm::Crc64Nvme, crc, p.crc64nvme, p.size)
    })
}

/// Puts `parts` (in order, the whole upload) together at `path`: the one
/// part renamed (or copied) where the provider can, else every part read
/// in order into one write, which is atomic as any upload is. The parts
/// stay; [`discard`] removes them.
pub async fn assemble(
    op: &Operator,
    parts: &[Part],
    path: &str,
    content_type: Option<&str>,
) -> Result<(), opendal::Error> {
    let cap = op.info().capability();
    if op.info().scheme() == "fs" {
        return assemble_local(op, parts, path).await;
    }
    // The media type is ferry's metadata, served from the store: a
    // renamed or copied part needs none of its own.
    if let [only] = parts {
        if cap.rename {
            return op.rename(&only.name, path).await;
        }
        if cap.copy {
            return op.copy(&only.name, path).await.map(|_| ());
        }
    }
    let mut writer = open_writer(op, path, content_type).await?;
    let written: Result<(), opendal::Error> = async {
        if !cap.write_can_multi {
            // A provider that takes an object in one request (`memory`).
            let mut whole = Vec::new();
            for p in parts {
                whole.extend_from_slice(&op.read(&p.name).await?.to_vec());
            }
            return writer.write(whole).await;
        }
        let _lease = budget::UPLOADS.lease();
        for p in parts {
            let stream = read_stream(op, &p.name, 0..p.size).await.map_err(|e| {
                opendal::Error::new(
                    opendal::ErrorKind::Unexpected,
                    "a staged part cannot be read",
                )
                .with_context("problem", e.to_string())
            })?;
            let mut stream = std::pin::pin!(stream);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    opendal::Error::new(opendal::ErrorKind::Unexpected, "reading a staged part")
                        .set_source(e)
                })?;
                writer.write(Buffer::from(chunk)).await?;
            }
        }
        Ok(())
    }
    .await;
    match written {
        Ok(()) => writer.close().await.map(|_| ()),
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "could not discard an unfinished assembly");
            }
            Err(e)
        }
    }
}

/// Where a session's parts go at the provider: S3's multipart upload
/// makes its object at the session's path (a partial upload's at its
/// staging object); Azure's blocks belong to the session's staging blob.
pub fn native_path(m: &Multipart, session: &Session) -> String {
    match m {
        Multipart::S3(_) => super::multipart_path(session),
        Multipart::Azure(_) => super::partial_object(&session.id),
    }
}

/// Parts the provider copies (or blocks read back and sent) at once when
/// an upload is put together.
const COPIES_IN_FLIGHT: usize = 4;

/// Puts an upload's `parts` (the whole upload, in order) together at the
/// provider. On S3: the parts sent into the multipart upload `upload` as
/// they are, each staged one copied in by the provider (`UploadPartCopy`),
/// then the upload completed, which makes the object appear whole. On
/// Azure: each staged part read back into a block (only appends of unknown
/// length are staged there), the blocks committed as the session's
/// staging blob, and — but for a partial upload, whose blob waits for its
/// final upload — the blob copied to the session's path by the provider.
/// The staged objects stay; [`discard`] removes them. Copies go
/// [`COPIES_IN_FLIGHT`] at a time.
pub async fn complete_native(
    target: &Target,
    m: &Multipart,
    session: &Session,
    upload: &str,
    parts: &[Part],
) -> Result<(), opendal::Error> {
    let (firsts, _) = numbering(parts, m.max_part());
    let path = native_path(m, session);
    let mut list = Vec::new();
    // The copies the provider makes (or the blocks read back and sent),
    // several at a time: each waits on the provider, not on this node.
    let mut copies = Vec::new();
    for (p, first) in parts.iter().zip(firsts) {
        if let Some(n) = &p.native {
            list.extend(
                n.etags
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (n.first + i as u32, e.clone())),
            );
            continue;
        }
        for (j, range) in copy_ranges(p.size, m.max_part()).into_iter().enumerate() {
            copies.push((first + j as u32, p.name.as_str(), range));
        }
    }
    let path_ref = path.as_str();
    let jobs: Vec<BoxFuture<'_, Result<(u32, String), opendal::Error>>> = copies
        .into_iter()
        .map(|(number, name, range)| {
            let job: BoxFuture<'_, _> = Box::pin(async move {
                let tag = match m {
                    Multipart::S3(s3) => {
                        s3.copy_part(path_ref, upload, number, name, range).await?
                    }
                    Multipart::Azure(az) => {
                        let len = range.end - range.start;
                        let body = read_stream(&target.op, name, range)
                            .await
                            .map_err(|e| {
                                opendal::Error::new(
                                    opendal::ErrorKind::Unexpected,
                                    "a staged part cannot be read",
                                )
                                .with_context("problem", e.to_string())
                            })?
                            .map(|r| r.map_err(std::io::Error::other));
                        az.put_block(path_ref, number, len, body).await?
                    }
                };
                Ok((number, tag))
            });
            job
        })
        .collect();
    let copied: Vec<(u32, String)> = futures_util::stream::iter(jobs)
        .buffered(COPIES_IN_FLIGHT)
        .try_collect()
        .await?;
    list.extend(copied);
    list.sort_by_key(|(number, _)| *number);
    match m {
        Multipart::S3(s3) => s3.complete(&path, upload, &list).await,
        Multipart::Azure(az) => {
            let ids: Vec<String> = list.into_iter().map(|(_, id)| id).collect();
            az.put_block_list(&path, &ids, session.content_type.as_deref())
                .await?;
            if session.is_partial() {
                return Ok(());
            }
            az.copy(&path, &session.path).await
        }
    }
}

/// Abandons what a session started at the provider: S3's multipart upload
/// (the parts it holds dropped). Azure's uncommitted blocks need nothing:
/// Azure drops them a week after the last one was sent.
pub async fn abandon(m: &Multipart, session: &Session, upload: &str) {
    if let Multipart::S3(s3) = m
        && let Err(e) = s3.abort(&super::multipart_path(session), upload).await
    {
        tracing::warn!(upload.id = %session.id, error = %e, "could not abandon an upload's multipart upload");
    }
}

/// A final upload's partial uploads put together at its path. On S3, when
/// every partial upload but the last holds a part's worth (5 MiB), a
/// multipart upload of its own is made from them by the provider, part by
/// part, and completed; otherwise, and on other providers, as
/// [`assemble`] puts parts together.
pub async fn join(
    target: &Target,
    session: &Session,
    parts: &[Part],
) -> Result<(), opendal::Error> {
    let parts: Vec<Part> = parts.iter().filter(|p| p.size > 0).cloned().collect();
    let copyable = parts.iter().all(|p| p.native.is_none())
        && parts
            .split_last()
            .is_some_and(|(_, rest)| rest.iter().all(|p| p.size >= s3_parts::MIN_PART));
    match target.multipart.as_deref() {
        Some(m @ Multipart::S3(s3)) if copyable => {
            let upload = s3
                .create(&session.path, session.content_type.as_deref())
                .await?;
            let done = complete_native(target, m, session, &upload, &parts).await;
            if done.is_err()
                && let Err(e) = s3.abort(&session.path, &upload).await
            {
                tracing::warn!(upload.id = %session.id, error = %e, "could not abandon a failed join's multipart upload");
            }
            done
        }
        _ if parts.is_empty() => target
            .op
            .write(&session.path, Vec::<u8>::new())
            .await
            .map(|_| ()),
        _ => {
            assemble(
                &target.op,
                &parts,
                &session.path,
                session.content_type.as_deref(),
            )
            .await
        }
    }
}

/// A folder connection's upload put in place: its staging file cut to the
/// upload's length and renamed; a final upload's partial uploads' files
/// joined by the kernel (`copy_file_range`, which `std::io::copy` uses
/// between files) into a file beside the first, flushed to the disk, then
/// renamed. The bytes never come up into this process.
async fn assemble_local(op: &Operator, parts: &[Part], path: &str) -> Result<(), opendal::Error> {
    let root = std::path::PathBuf::from(op.info().root());
    // Each staging file with the bytes it holds, in order.
    let mut files: Vec<(std::path::PathBuf, u64)> = Vec::new();
    for p in parts {
        match files.last_mut() {
            Some((name, n)) if *name == root.join(&p.name) => *n += p.size,
            _ => files.push((root.join(&p.name), p.size)),
        }
    }
    let target = root.join(path);
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match files.as_slice() {
            [] => Ok(()),
            [(only, n)] => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(only)?
                    .set_len(*n)?;
                std::fs::rename(only, &target)
            }
            [(first, _), ..] => {
                let joined = first.with_extension("joined");
                let written = (|| {
                    let mut out = std::fs::File::create(&joined)?;
                    for (file, n) in &files {
                        let mut from = std::io::Read::take(std::fs::File::open(file)?, *n);
                        std::io::copy(&mut from, &mut out)?;
                    }
                    out.sync_all()?;
                    std::fs::rename(&joined, &target)
                })();
                if written.is_err() {
                    let _ = std::fs::remove_file(&joined);
                }
                written
            }
        }
    })
    .await
    .map_err(|e| {
        opendal::Error::new(opendal::ErrorKind::Unexpected, "joining parts").set_source(e)
    })?
    .map_err(|e| {
        opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "putting a folder upload in place",
        )
        .set_source(e)
    })
}

/// Removes what every session of a connection staged (the connection is
/// being deleted); best effort.
pub async fn discard_all(op: &Operator) {
    if let Err(e) = op.delete_with(super::STAGING_PREFIX).recursive(true).await
        && e.kind() != opendal::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, "could not remove a deleted connection's staged uploads");
    }
}

/// Removes what a session staged (best effort: a leftover is removed by
/// the next sweep of the session, or stays hidden in `.ferry-partial`).
pub async fn discard(op: &Operator, upload_id: &str) {
    let dir = super::staging_dir(upload_id);
    if let Err(e) = op.delete_with(&dir).recursive(true).await
        && e.kind() != opendal::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, upload.id = %upload_id, "could not remove an upload's staged parts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_combined_crc_is_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cuts = [0usize, 1, 4096, 65_537, 100_000];
        let parts: Vec<Part> = cuts
            .windows(2)
            .map(|w| Part {
                offset: w[0] as u64,
                size: (w[1] - w[0]) as u64,
                crc64nvme: crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, &data[w[0]..w[1]]),
                name: String::new(),
                native: None,
            })
            .collect();
        assert_eq!(
            combined_crc(0, &parts),
            crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, &data)
        );
    }

    fn memory_target() -> Target {
        Target {
            account_id: "acc".into(),
            connection_id: "con".into(),
            op: Operator::new(opendal::services::Memory::default()).unwrap(),
            multipart: None,
            throttle: Default::default(),
            pacing: None,
        }
    }

    fn open_session(length: u64) -> Session {
        Session {
            id: "upl_1".into(),
            length: Some(length),
            max_size: 1 << 40,
            ..Session::default()
        }
    }

    fn to<'a>(target: &'a Target, session: &'a Session, token: &'a str) -> AppendTo<'a> {
        AppendTo {
            target,
            session,
            parts: &[],
            token,
            body_len: None,
            ends: false,
            checkpoint: None,
        }
    }

    #[tokio::test]
    async fn an_append_keeps_a_cut_body_and_discards_a_bad_checksum() {
        let target = memory_target();
        let op = target.op.clone();
        let session = open_session(100);
        let lost = Arc::new(AtomicBool::new(false));
        let body = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"hello ")),
            Err(std::io::Error::other("cut")),
        ]);
        let got = append(
            to(&target, &session, "t1"),
            body,
            None,
            lost.clone(),
            &|_| {},
        )
        .await
        .unwrap();
        assert_eq!(got.parts.len(), 1);
        assert_eq!(got.parts[0].size, 6);
        assert!(got.cut.is_some());
        let name = part_name("upl_1", 0, "t1");
        assert_eq!(op.read(&name).await.unwrap().to_vec(), b"hello ");

        let body = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
            b"hello world",
        ))]);
        let wrong = Some((ChunkAlgorithm::Sha256, vec![0u8; 32]));
        let err = append(
            to(&target, &session, "t2"),
            body,
            wrong,
            lost.clone(),
            &|_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, AppendError::ChecksumMismatch));
        assert!(!op.exists(&part_name("upl_1", 0, "t2")).await.unwrap());

        let body = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
            b"hello world",
        ))]);
        let short = open_session(5);
        let err = append(to(&target, &short, "t3"), body, None, lost, &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::TooLarge));
    }

    #[test]
    fn staged_parts_keep_the_numbers_their_copies_take() {
        let staged = |offset, size| Part {
            offset,
            size,
            crc64nvme: 0,
            name: String::new(),
            native: None,
        };
        let sent = |offset, size, first, n: usize| Part {
            native: Some(NativeParts {
                first,
                etags: vec![String::from("e"); n],
            }),
            ..staged(offset, size)
        };
        let big = s3_parts::MAX_PART * 2 + 1;
        let parts = [
            sent(0, 16 << 20, 1, 2),
            staged(16 << 20, big),
            sent((16 << 20) + big, 8 << 20, 6, 1),
        ];
        // The big staged part takes three numbers (3, 4, 5).
        assert_eq!(numbering(&parts, s3_parts::MAX_PART), (vec![1, 3, 6], 7));
        let ranges = copy_ranges(big, s3_parts::MAX_PART);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges.last().unwrap().end, big);
        assert!(ranges.iter().all(|r| r.end - r.start <= s3_parts::MAX_PART));
        assert_eq!(copy_ranges(10, s3_parts::MAX_PART), vec![0..10]);
    }
}
