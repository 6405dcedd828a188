//! Moving content: what ferry knows of an object, streaming bytes into a
//! provider while checksumming them, and streaming them out with a record of
//! how the transfer ended.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::body::{Body, BoxError};
use crate::checksum::{Checksums, DigestAlgorithm, StreamChecksums};
use crate::problem::{ErrorCode, Problem};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use http_body_util::StreamBody;
use opendal::{Buffer, Operator, Writer};

use std::sync::Arc;

use super::MetaHost;
use super::budget;
use super::model::{Direction, ObjectMeta, Transfer, TransferStatus};
use crate::provider::problem as provider_problem;

/// Reads from local file systems in flight at once, across all downloads.
/// Each holds a buffer and a blocking thread; beyond a few dozen, more
/// only add memory and threads.
static LOCAL_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);

/// An object as ferry sees it now: the provider's stat joined with the
/// metadata ferry recorded, when that metadata still describes the object.
#[derive(Debug, Clone)]
pub struct ObjectView {
    /// Size in bytes.
    pub size: u64,
    /// The entity tag to serve, quoted.
    pub etag: String,
    /// The provider's modification time.
    pub modified: Option<opendal::raw::Timestamp>,
    /// Metadata recorded by ferry, if it matches the object.
    pub meta: Option<ObjectMeta>,
    /// The [`ObjectMeta::generation`] of ferry's record of the path, even
    /// one that no longer matches the object; 0 without one.
    pub generation: i64,
}

impl ObjectView {
    /// The CRC64/NVME, when ferry knows it.
    pub fn crc64nvme(&self) -> Option<u64> {
        self.meta.as_ref().map(|m| m.crc64nvme)
    }

    /// The provider's modification time in unix milliseconds.
    pub fn modified_ms(&self) -> Option<i64> {
        self.modified.map(|t| t.into_inner().as_millisecond())
    }
}

/// The entity tag of content with this checksum and size.
pub fn etag_for(crc64nvme: u64, size: u64) -> String {
    format!("\"{crc64nvme:016x}-{size:x}\"")
}

/// Whether what ferry recorded of an object still describes it, given
/// the provider's size and modification time now: content changed behind
/// ferry's back makes the record stale.
pub fn still_describes(m: &ObjectMeta, size: u64, modified_ms: Option<i64>) -> bool {
    m.size as u64 == size
        && (m.provider_modified_ms.is_none()
            || modified_ms.is_none()
            || m.provider_modified_ms == modified_ms)
}

/// The entity tag ferry serves for an object: ferry's own when its record
/// still describes the object, else the provider's (quoted), else one made
/// of the modification time and size.
pub fn served_etag(
    meta: Option<&ObjectMeta>,
    provider_etag: Option<&str>,
    modified_ns: Option<i64>,
    size: u64,
) -> String {
    match (meta, provider_etag) {
        (Some(m), _) => m.etag.clone(),
        (None, Some(tag)) if tag.starts_with('"') || tag.starts_with("W/") => tag.to_owned(),
        (None, Some(tag)) => format!("\"{tag}\""),
        (None, None) => {
            let ns = modified_ns.unwrap_or(0);
            format!("\"m{ns:x}-{size:x}\"")
        }
    }
}

/// Looks an object up. `Ok(None)` when nothing is there; a folder is
/// `NotAFile`.
pub async fn current(
    host: &dyn MetaHost,
    op: &Operator,
    connection_id: &str,
    path: &str,
) -> Result<Option<ObjectView>, Problem> {
    let stat = match op.stat(path).await {
        Ok(s) => s,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(provider_problem(&e, op.info().scheme(), "stat")),
    };
    if stat.is_dir() {
        return Err(Problem::new(
            ErrorCode::NotAFile,
            format!("'{path}' is a folder"),
        ));
    }
    let size = stat.content_length();
    let modified = stat.last_modified();
    let modified_ms = modified.map(|t| t.into_inner().as_millisecond());
    let recorded = host.lookup(connection_id, path).await?;
    let generation = recorded.as_ref().map_or(0, |m| m.generation);
    let meta = recorded.filter(|m| still_describes(m, size, modified_ms));
    let etag = served_etag(
        meta.as_ref(),
        stat.etag(),
        modified.map(|t| t.into_inner().as_nanosecond() as i64),
        size,
    );
    Ok(Some(ObjectView {
        size,
        etag,
        modified,
        meta,
        generation,
    }))
}

/// The version of `path` a change would replace
/// ([`crate::content::model::Intent::replaces`]), given what [`current`]
/// found: the generation of ferry's record, which may remain where the
/// provider holds nothing (the file was removed behind ferry's back).
pub async fn replaced(
    host: &dyn MetaHost,
    connection_id: &str,
    path: &str,
    view: Option<&ObjectView>,
) -> Result<i64, Problem> {
    Ok(match view {
        Some(v) => v.generation,
        None => host
            .lookup(connection_id, path)
            .await?
            .map_or(0, |m| m.generation),
    })
}

/// Why staging content failed.
#[derive(Debug)]
pub enum StageError {
    /// The source stream failed (the client went away, or a provider read).
    Source(BoxError),
    /// The provider refused a write.
    Provider(opendal::Error),
    /// The body is larger than a provider that takes uploads in one
    /// request (`memory`) is given: [`ONE_SHOT_MAX_BYTES`].
    TooLarge,
}

/// The largest upload to a provider that takes an object in one request
/// (`memory`, whose files live in the hub's memory anyway): such an upload
/// is held in memory until it is complete, so it is bounded. WebDAV
/// uploads stream ([`crate::provider::webdav_upload`]).
pub const ONE_SHOT_MAX_BYTES: usize = 1024 * 1024 * 1024;

/// Content written to the provider but not yet committed: closing the
/// writer makes it visible, aborting discards it.
pub struct Staged {
    /// The open writer.
    pub writer: Writer,
    /// What streamed through it.
    pub sums: Checksums,
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("sums", &self.sums)
            .finish_non_exhaustive()
    }
}

/// Incoming slices copied into buffers, each handed out when it is full:
/// the slices would otherwise keep the connection's (larger) read buffers
/// alive until written, and one contiguous write is one system call.
///
/// A buffer is allocated when its first byte arrives, at the size of that
/// moment: under a budget, an upload that started alone (1 MiB buffers)
/// takes smaller ones as others join, rather than holding its first size
/// to the end. (Sizes fixed at the start held 20 of the 34 MiB a spoke's
/// heap had in use under 64 uploads at once.)
#[derive(Debug)]
pub struct Gather {
    pending: BytesMut,
    /// The size of the buffer being filled (0: none started).
    target: usize,
    size: GatherSize,
}

#[derive(Debug)]
enum GatherSize {
    Fixed(usize),
    Budget(&'static budget::Budget),
}

impl Gather {
    /// Buffers of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            target: 0,
            size: GatherSize::Fixed(size.max(1)),
        }
    }

    /// Buffers of the size `budget` gives each when it is started (the
    /// caller holds a lease of it meanwhile).
    pub fn sized_by(budget: &'static budget::Budget) -> Self {
        Self {
            pending: BytesMut::new(),
            target: 0,
            size: GatherSize::Budget(budget),
        }
    }

    /// Bytes held, not yet handed out.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no byte is held.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Copies `data` in: the buffers it filled, in order.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Bytes> {
        let mut full = Vec::new();
        while !data.is_empty() {
            if self.target == 0 {
                self.target = match self.size {
                    GatherSize::Fixed(n) => n,
                    GatherSize::Budget(b) => b.chunk(),
                };
                self.pending
                    .reserve(self.target.saturating_sub(self.pending.len()));
            }
            let n = self
                .target
                .saturating_sub(self.pending.len())
                .min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() >= self.target {
                full.push(std::mem::take(&mut self.pending).freeze());
                self.target = 0;
            }
        }
        full
    }

    /// Keeps `data` whole, however large the buffer grows (for a provider
    /// that takes an object in one request).
    pub fn keep(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// What is held, if anything.
    pub fn rest(&mut self) -> Option<Bytes> {
        self.target = 0;
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending).freeze())
    }
}

/// A writer of a new object at `path`, as every upload opens one: with its
/// media type where the provider keeps one, and in parts where the
/// provider takes parts (they go out while the bytes arrive; nothing is
/// visible until the writer is closed, and abort discards them).
pub async fn open_writer(
    op: &Operator,
    path: &str,
    content_type: Option<&str>,
) -> Result<Writer, opendal::Error> {
    let mut opts = op.writer_with(path);
    if let Some(ct) = content_type
        && op.info().capability().write_with_content_type
    {
        opts = opts.content_type(ct);
    }
    if crate::provider::uploads_in_parts(op) {
        opts = opts
            .chunk(crate::provider::remote::PART_BYTES)
            .concurrent(crate::provider::remote::PARTS_IN_FLIGHT);
    }
    opts.await
}

/// Streams `source` into a new writer at `path`, computing checksums
/// (with the extra `digests`) on the way. Nothing is visible at `path` until
/// the caller closes the returned writer; on error the writer is aborted.
pub async fn stage<S, E>(
    op: &Operator,
    path: &str,
    content_type: Option<&str>,
    source: S,
    digests: Vec<DigestAlgorithm>,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Staged, StageError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<BoxError>,
{
    // A provider that takes an object in one request gets it whole, at
    // the end: its writer refuses a second write.
    let one_shot = !op.info().capability().write_can_multi;
    let mut writer = open_writer(op, path, content_type)
        .await
        .map_err(StageError::Provider)?;
    // Counted in the budget until the end: the buffers are sized by it.
    let _lease = budget::UPLOADS.lease();
    // The CRC in line (it runs at memory speed); SHA-256 and SHA-512, when
    // asked for, on another thread meanwhile.
    let mut sums = StreamChecksums::new([]);
    let aside = crate::checksum::DigestsAside::start(digests);
    // Incoming slices are copied into one buffer per provider write: the
    // slices would otherwise keep the connection's (larger) read buffers
    // alive until written, and one contiguous write is one system call.
    let mut pending = Gather::sized_by(&budget::UPLOADS);
    let mut source = std::pin::pin!(source);
    let result: Result<(), StageError> = async {
        while let Some(item) = source.next().await {
            let data = item.map_err(|e| StageError::Source(e.into()))?;
            if data.is_empty() {
                continue;
            }
            sums.update(&data);
            on_bytes(data.len() as u64);
            if one_shot {
                if pending.len() + data.len() > ONE_SHOT_MAX_BYTES {
                    return Err(StageError::TooLarge);
                }
                pending.keep(&data);
                if let Some(aside) = &aside {
                    aside.feed(data).await;
                }
                continue;
            }
            // The gathered buffers go to the hashing thread (a reference,
            // not a copy) as they go to the provider.
            for full in pending.push(&data) {
                if let Some(aside) = &aside {
                    aside.feed(full.clone()).await;
                }
                writer
                    .write(Buffer::from(full))
                    .await
                    .map_err(StageError::Provider)?;
            }
        }
        if let Some(rest) = pending.rest() {
            if let Some(aside) = &aside {
                aside.feed(rest.clone()).await;
            }
            writer
                .write(Buffer::from(rest))
                .await
                .map_err(StageError::Provider)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            let mut sums = sums.finish();
            if let Some(aside) = aside {
                sums.digests = aside.finish().await;
            }
            Ok(Staged { writer, sums })
        }
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "could not discard a partial upload");
            }
            Err(e)
        }
    }
}

/// The checksums (CRC64/NVME and `digests`) of the first `size` bytes of
/// the object at `path`, read back whole; `what` names the reading in the
/// problem a failed read becomes.
pub async fn checksums_of(
    op: &Operator,
    path: &str,
    size: u64,
    digests: Vec<DigestAlgorithm>,
    what: &str,
) -> Result<Checksums, Problem> {
    let mut stream = std::pin::pin!(read_stream(op, path, 0..size).await?);
    let mut sums = StreamChecksums::new(digests);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::warn!(error = %e, path, "{what} failed");
            Problem::new(ErrorCode::ProviderUnavailable, format!("{what} failed"))
                .with_retry_after(1)
        })?;
        sums.update(&chunk);
    }
    Ok(sums.finish())
}

/// A stream of an object's bytes (or one range of them).
///
/// A local file is read a chunk at a time, each read sized by the download
/// budget when it starts (large for a lone download, smaller as more run
/// at once): on this thread when the bytes are in memory
/// ([`crate::cached_read`]), else on the blocking pool, taking a slot
/// among [`LOCAL_READS`] while it runs. A
/// network provider streams the whole range in one request (OpenDAL would
/// make one request per chunk), its body arriving in the HTTP client's own
/// pieces. One read is in flight per download: measured on loopback,
/// reading ahead cost more CPU than it saved time.
pub async fn read_stream(
    op: &Operator,
    path: &str,
    range: std::ops::Range<u64>,
) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<>, Problem> {
    if op.info().scheme() == "fs" {
        return Ok(read_local(op, path, range).await?.left_stream());
    }
    let lease = budget::DOWNLOADS.lease();
    let reader = op
        .reader_with(path)
        .await
        .map_err(|e| provider_problem(&e, op.info().scheme(), "read"))?;
    let inner = reader
        .into_bytes_stream(range)
        .await
        .map_err(|e| provider_problem(&e, op.info().scheme(), "read"))?;
    Ok(futures_util::stream::unfold(
        (Box::pin(inner), lease),
        move |(mut inner, lease)| async move {
            let item = inner.next().await?;
            Some((item, (inner, lease)))
        },
    )
    .right_stream())
}

/// Ranges of a local file up to this size are read whole in one task on
/// the blocking pool, opening included: a trip to that pool per step cost
/// more than the reading (measured: three fewer thread switches per
/// request).
const SMALL_LOCAL_READ: u64 = 64 * 1024;

/// Bytes a download reads on its own thread ([`crate::cached_read`]) before
/// its task gives way to the others. Without it a download whose client
/// keeps up never waits: measured under 256 downloads and 64 uploads at
/// once, tasks queued behind such downloads waited seconds, long enough
/// for the tunnel to miss three heartbeats.
const INLINE_BYTES_PER_TURN: usize = 256 * 1024;

/// Reads `range` of a local file as OpenDAL's `fs` service would (the same
/// root, the same path under it, links followed alike), in chunks the
/// download budget sizes one by one, into buffers of exactly that size.
/// (Through OpenDAL the chunk size was fixed when a download started — the
/// first of a burst of downloads kept 256 KiB chunks to the end — and each
/// buffer was zero-filled before the read.) A file that shrank meanwhile
/// gives what is there, so the download ends short as it would have.
async fn read_local(
    op: &Operator,
    path: &str,
    range: std::ops::Range<u64>,
) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<>, Problem> {
    use std::io::Seek as _;
    use std::path::Component;
    let scheme = op.info().scheme();
    // Only plain names below the root, as OpenDAL's own join allows (ferry's
    // paths are checked long before; this keeps a later caller honest).
    let relative = std::path::Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        let e = opendal::Error::new(opendal::ErrorKind::NotFound, "not a path below the root");
        return Err(provider_problem(&e, scheme, "read"));
    }
    let file = std::path::Path::new(&op.info().root()).join(relative);
    let len = range.end.saturating_sub(range.start);
    let small = len <= SMALL_LOCAL_READ;
    let lease = budget::DOWNLOADS.lease();
    let first = if small { len } else { lease.chunk() as u64 };
    let permit = LOCAL_READS.acquire().await.expect("never closed");
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut f = std::fs::File::open(&file)?;
        if range.start > 0 {
            f.seek(std::io::SeekFrom::Start(range.start))?;
        }
        let chunk = read_chunk(&mut f, first)?;
        let inline = crate::cached_read::mode(&f);
        Ok((f, chunk, inline))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    drop(permit);
    let (f, chunk, inline) = opened.map_err(|e| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => opendal::ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => opendal::ErrorKind::PermissionDenied,
            std::io::ErrorKind::IsADirectory => opendal::ErrorKind::IsADirectory,
            _ => opendal::ErrorKind::Unexpected,
        };
        let e = opendal::Error::new(kind, "read failed").set_source(e);
        provider_problem(&e, scheme, "read")
    })?;
    // Whether the file may hold more: a short read means it ended.
    let more = chunk.len() as u64 == first && first < len;
    let left = len - chunk.len() as u64;
    let first = futures_util::stream::iter((!chunk.is_empty()).then_some(Ok(chunk)));
    if !more {
        return Ok(first.left_stream());
    }
    struct Rest {
        file: std::fs::File,
        left: u64,
        lease: budget::Lease,
        inline: crate::cached_read::Inline,
        /// Bytes read on this thread since the task last gave way.
        unyielded: usize,
    }
    let rest = futures_util::stream::unfold(
        Some(Rest {
            file: f,
            left,
            lease,
            inline,
            unyielded: 0,
        }),
        |state| async move {
            let Rest {
                mut file,
                left,
                lease,
                mut inline,
                mut unyielded,
            } = state?;
            // A read made here never waits, so a fast client could keep the
            // task running while others (the tunnel's heartbeats among
            // them) wait their turn: it gives way every so many bytes.
            if unyielded >= INLINE_BYTES_PER_TURN {
                unyielded = 0;
                tokio::task::yield_now().await;
            }
            let want = (lease.chunk() as u64).min(left);
            // Bytes already in memory are read here; the rest on the
            // blocking pool, where a short read means the end of the file.
            let (file, chunk, may_hold_more) =
                match crate::cached_read::try_read(&file, want as usize, &mut inline) {
                    Some(Ok(chunk)) => {
                        unyielded += chunk.len();
                        (file, chunk, true)
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => {
                        let permit = LOCAL_READS.acquire().await.expect("never closed");
                        let read = tokio::task::spawn_blocking(move || {
                            let chunk = read_chunk(&mut file, want);
                            (file, chunk)
                        })
                        .await;
                        drop(permit);
                        match read {
                            Ok((file, Ok(chunk))) => {
                                let full = chunk.len() as u64 == want;
                                (file, chunk, full)
                            }
                            Ok((_, Err(e))) => return Some((Err(e), None)),
                            Err(e) => return Some((Err(std::io::Error::other(e)), None)),
                        }
                    }
                };
            if chunk.is_empty() {
                return None;
            }
            let left = left - chunk.len() as u64;
            let next = (may_hold_more && left > 0).then_some(Rest {
                file,
                left,
                lease,
                inline,
                unyielded,
            });
            Some((Ok(chunk), next))
        },
    );
    Ok(first.chain(rest).right_stream())
}

/// Up to `want` bytes from where `f` stands, into a buffer of that size
/// (not zero-filled first); fewer only at the end of the file.
fn read_chunk(f: &mut std::fs::File, want: u64) -> std::io::Result<Bytes> {
    use std::io::Read as _;
    let mut buf = Vec::with_capacity(want as usize);
    f.by_ref().take(want).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// Records how a download ended when its body finishes or is dropped.
struct DownloadLog {
    _active: super::Active,
    host: Arc<dyn MetaHost>,
    transfer: Transfer,
    expected: u64,
    provider: &'static str,
    started: Instant,
}

impl Drop for DownloadLog {
    fn drop(&mut self) {
        let mut t = self.transfer.clone();
        t.status = if t.bytes as u64 == self.expected {
            TransferStatus::Complete
        } else {
            TransferStatus::Aborted
        };
        t.duration_ms = self.started.elapsed().as_millis() as i64;
        self.host.transfer_ended(&t);
        let log = self.host.log_transfer(t);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(log);
        }
    }
}

struct LoggedStream<S> {
    inner: S,
    log: DownloadLog,
    held: Arc<Held>,
}

/// Chunks of one download handed to the HTTP library and not yet written
/// to the socket, at most. The library queues body chunks up to its buffer
/// limit (sized for reading uploads); this keeps a download's memory at
/// the two chunks the download budget counts on, whatever that limit.
const HELD_CHUNKS: usize = 2;

/// A download's chunks handed on and not yet sent.
#[derive(Debug, Default)]
struct Held {
    out: std::sync::atomic::AtomicUsize,
    sent: futures_util::task::AtomicWaker,
}

/// A chunk as handed to the HTTP library: dropped once it is written.
struct HeldChunk {
    data: Bytes,
    held: Arc<Held>,
}

impl AsRef<[u8]> for HeldChunk {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for HeldChunk {
    fn drop(&mut self) {
        self.held
            .out
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.held.sent.wake();
    }
}

impl<S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin> Stream for LoggedStream<S> {
    type Item = Result<http_body::Frame<Bytes>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use std::sync::atomic::Ordering;
        if self.held.out.load(Ordering::Acquire) >= HELD_CHUNKS {
            self.held.sent.register(cx.waker());
            // A chunk sent since the first look wakes nobody: look again.
            if self.held.out.load(Ordering::Acquire) >= HELD_CHUNKS {
                return Poll::Pending;
            }
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(data))) => {
                self.log.transfer.bytes += data.len() as i64;
                self.log.host.count_bytes(
                    Direction::Download,
                    self.log.provider,
                    data.len() as u64,
                );
                self.held.out.fetch_add(1, Ordering::AcqRel);
                let data = Bytes::from_owner(HeldChunk {
                    data,
                    held: self.held.clone(),
                });
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, path = %self.log.transfer.path, "download failed part way");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What a download is, for its log entry.
#[derive(Debug)]
pub struct DownloadInfo<'a> {
    /// The caller's account.
    pub account_id: &'a str,
    /// The connection.
    pub connection_id: &'a str,
    /// The object.
    pub path: &'a str,
    /// Bytes the response promises.
    pub expected: u64,
    /// The provider's scheme, for metrics.
    pub provider: &'static str,
}

/// Turns a read stream into a response body that counts the bytes sent and
/// logs the transfer when it ends.
pub fn download_body<S>(host: Arc<dyn MetaHost>, stream: S, info: DownloadInfo<'_>) -> Body
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    let transfer = Transfer::start(
        info.account_id,
        info.connection_id,
        info.path,
        Direction::Download,
        host.via(),
    );
    let log = DownloadLog {
        _active: super::Active::start(host.clone()),
        host,
        transfer,
        expected: info.expected,
        provider: info.provider,
        started: Instant::now(),
    };
    http_body_util::BodyExt::boxed_unsync(StreamBody::new(LoggedStream {
        inner: stream,
        log,
        held: Arc::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that records nothing.
    struct Quiet {
        locks: crate::content::locks::PathLocks,
        metrics: crate::content::metrics::ContentMetrics,
    }

    impl MetaHost for Quiet {
        fn lookup<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> futures_util::future::BoxFuture<
            'a,
            Result<Option<crate::content::model::ObjectMeta>, Problem>,
        > {
            Box::pin(async { Ok(None) })
        }
        fn commit(
            &self,
            _: crate::content::model::Commit,
        ) -> futures_util::future::BoxFuture<'_, Result<(), Problem>> {
            Box::pin(async { Ok(()) })
        }
        fn log_transfer(&self, _: Transfer) -> futures_util::future::BoxFuture<'static, ()> {
            Box::pin(async {})
        }
        fn node(&self) -> crate::content::Node<'_> {
            crate::content::Node {
                locks: &self.locks,
                metrics: &self.metrics,
            }
        }
        fn via(&self) -> &str {
            "test"
        }
    }

    #[tokio::test]
    async fn a_download_hands_on_two_chunks_until_one_is_sent() {
        use futures_util::FutureExt as _;
        use http_body_util::BodyExt as _;
        let host = Arc::new(Quiet {
            locks: Default::default(),
            metrics: crate::content::metrics::ContentMetrics::register(
                &mut prometheus_client::registry::Registry::default(),
            ),
        });
        let chunks = futures_util::stream::iter((0..4u8).map(|i| Ok(Bytes::from(vec![i; 8]))));
        let mut body = download_body(
            host,
            chunks,
            DownloadInfo {
                account_id: "acc",
                connection_id: "con",
                path: "a",
                expected: 32,
                provider: "fs",
            },
        );
        let mut next = async || {
            body.frame()
                .await
                .expect("a frame")
                .expect("no error")
                .into_data()
                .expect("data")
        };
        let first = next().await;
        let second = next().await;
        assert_eq!((first[0], second[0]), (0, 1));
        // Both still held by the library: no third until one is sent, and
        // the one waiting for it is woken when it is.
        assert!(body.frame().now_or_never().is_none());
        let waiting = tokio::spawn(async move {
            let third = body.frame().await.unwrap().unwrap().into_data().unwrap();
            (body, third)
        });
        tokio::task::yield_now().await;
        drop(first);
        let (mut body, third) = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken once a chunk was sent")
            .unwrap();
        assert_eq!(third[0], 2);
        drop((second, third));
        let mut rest = Vec::new();
        while let Some(frame) = body.frame().await {
            rest.push(frame.unwrap().into_data().unwrap()[0]);
        }
        assert_eq!(rest, [3]);
    }

    /// A download from memory (tmpfs: read on the task's own thread, never
    /// waiting) still lets other tasks run as it goes.
    #[test]
    fn a_download_read_from_memory_gives_way_to_other_tasks() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let size = 8usize << 20;
        std::fs::write(dir.path().join("big.bin"), vec![7u8; size]).unwrap();
        let op =
            Operator::new(opendal::services::Fs::default().root(&dir.path().to_string_lossy()))
                .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let turns = Arc::new(AtomicUsize::new(0));
            let counted = turns.clone();
            tokio::spawn(async move {
                loop {
                    counted.fetch_add(1, Relaxed);
                    tokio::task::yield_now().await;
                }
            });
            let stream = read_stream(&op, "big.bin", 0..size as u64).await.unwrap();
            let mut stream = std::pin::pin!(stream);
            // The first chunk is read on the blocking pool (the other task
            // runs meanwhile); the rest here.
            let first = stream.next().await.unwrap().unwrap().len();
            let before = turns.load(Relaxed);
            let mut got = first;
            while let Some(chunk) = stream.next().await {
                got += chunk.unwrap().len();
            }
            assert_eq!(got, size);
            // A turn at least per INLINE_BYTES_PER_TURN read (none if the
            // download does not give way).
            let turns = turns.load(Relaxed) - before;
            let due = (size - first) / INLINE_BYTES_PER_TURN;
            assert!(turns + 1 >= due, "{turns} turns, {due} due");
        });
    }

    #[test]
    fn gathered_buffers_are_full_and_keep_the_order() {
        let mut g = Gather::new(4);
        assert!(g.push(b"ab").is_empty());
        let full = g.push(b"cdefghij");
        assert_eq!(
            full,
            vec![Bytes::from_static(b"abcd"), Bytes::from_static(b"efgh")]
        );
        assert_eq!(g.len(), 2);
        assert_eq!(g.rest(), Some(Bytes::from_static(b"ij")));
        assert!(g.is_empty() && g.rest().is_none());
        g.keep(b"0123456789");
        assert_eq!(g.rest().map(|b| b.len()), Some(10));
    }

    #[test]
    fn each_gathered_buffer_takes_the_budgets_size_when_it_starts() {
        static B: budget::Budget = budget::Budget::new(64, 4, 64);
        let alone = B.lease();
        let mut g = Gather::sized_by(&B);
        assert!(g.push(&[1; 10]).is_empty(), "alone: 64-byte buffers");
        let others: Vec<_> = (0..15).map(|_| B.lease()).collect();
        // The buffer started keeps its size; the next ones are 64/16 = 4.
        let full = g.push(&[2; 60]);
        let sizes: Vec<usize> = full.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [64, 4]);
        assert_eq!(g.len(), 2);
        drop(others);
        let full = g.push(&[3; 60]);
        assert_eq!(full.iter().map(Bytes::len).collect::<Vec<_>>(), [4]);
        assert_eq!(g.len(), 58, "alone again: a 64-byte buffer started");
        let all: Vec<u8> = full.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(all, [2, 2, 3, 3]);
        drop(alone);
    }
}
