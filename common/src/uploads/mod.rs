//! Resumable uploads: tus 1.0 and the IETF draft "Resumable Uploads for
//! HTTP" over one session model, served by every node.
//!
//! A session lives in the hub's store: its target, its length (or none yet,
//! deferred), the committed offset and the CRC64/NVME of the bytes before
//! it, the parts staged at the provider, metadata, expiry and status. The
//! committed offset is the store's, never one process's memory, so a client
//! may continue an upload through any node.
//!
//! Each append (`PATCH`, or the body of a creating `POST`) is written by
//! the node that receives it, straight to the provider, as *parts*: on S3
//! into the session's one multipart upload (see [`write`](mod@write)), on a folder
//! into the session's one staging file, elsewhere as an object of its own
//! under `.ferry-partial/uploads/<id>/` at the connection's root. The
//! append holds the session's *lease* in the store while it streams (one
//! writer at a time across all nodes, renewed while the bytes flow), and
//! its parts count only once the provider holds them and the store has
//! recorded the new offset under that lease. A body cut part way keeps
//! the bytes that arrived (tus asks servers to; on S3, those of the parts
//! sent whole), unless the chunk carried a checksum, which bytes cut short
//! cannot match. When the last byte is in, the node that wrote it puts the
//! parts together at the target path — S3's multipart upload completed, a
//! rename for a single part where the provider has one, else one streaming
//! write of the parts in order, which is atomic as any upload is — and
//! commits the object's metadata, event and transfer with the session's
//! completion; the object's CRC64/NVME is combined from the parts'
//! checksums, not read back.
//!
//! Who keeps the sessions is an [`UploadHost`]: the hub's store, or at a
//! spoke the hub through the tunnel (each call under the grant the hub
//! issued for the session's lease).

pub mod protocol;
pub mod serve;
pub mod write;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::content::model::Commit;
use crate::content::{MetaHost, Target};
use crate::problem::Problem;

/// Where a session's parts are staged, under a connection's root.
pub const STAGING_PREFIX: &str = ".ferry-partial/uploads/";

/// How long a lease lasts unless renewed, in milliseconds. A writer
/// renews it every [`LEASE_RENEW_MS`] while its bytes flow, so a live
/// writer keeps it through a slow client, and a node that died holding it
/// (its tunnel gone at a hub that sees that at once, or the lease simply
/// run out) blocks others for at most this long.
pub const LEASE_MS: i64 = 15_000;

/// How often a writer renews its lease.
pub const LEASE_RENEW_MS: u64 = 5_000;

/// A session's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Taking bytes.
    #[default]
    Open,
    /// Every byte is in and the object is at its path.
    Complete,
    /// Its time ran out; its parts were discarded.
    Expired,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Complete => "complete",
            Self::Expired => "expired",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Self::Open,
            "complete" => Self::Complete,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// One staged part: the bytes `[offset, offset + size)` of the upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Where in the upload it starts.
    pub offset: u64,
    /// Its length in bytes.
    pub size: u64,
    /// Its CRC64/NVME.
    pub crc64nvme: u64,
    /// The object it is staged in, relative to the connection's root (for
    /// parts sent into the session's multipart upload: the name the lease
    /// allowed, though no object has it).
    pub name: String,
    /// The S3 parts it was sent as, when it went straight into the
    /// session's multipart upload; none for a part staged as an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeParts>,
}

/// The consecutive parts of a session's S3 multipart upload that one
/// append sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeParts {
    /// The first part's number.
    pub first: u32,
    /// Each part's ETag, in order.
    pub etags: Vec<String>,
}

/// The staging object of a partial upload whose bytes went into a
/// multipart upload: the upload is completed there when its last byte is
/// in, for the final upload to copy its parts from.
pub fn partial_object(upload_id: &str) -> String {
    format!("{}data", staging_dir(upload_id))
}

/// Where a session's S3 multipart upload makes its object: the session's
/// path, or a partial upload's [`partial_object`].
pub fn multipart_path(session: &Session) -> String {
    if session.is_partial() {
        partial_object(&session.id)
    } else {
        session.path.clone()
    }
}

/// The name of the part staged at `offset` under the lease `lease`: the
/// hub and the writer both derive it, so a writer cannot name another
/// object, and two writers racing never write one name.
pub fn part_name(upload_id: &str, offset: u64, lease: &str) -> String {
    let tag: String = lease
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("{STAGING_PREFIX}{upload_id}/{offset:016x}-{tag}")
}

/// A folder connection's one staging file for a session, beside the part
/// `part` names (every append of a folder upload writes into it at its
/// offset; see [`write::append`]).
pub fn local_staging_file(part: &str) -> String {
    let dir = part.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{dir}/data")
}

/// The folder of a session's parts.
pub fn staging_dir(upload_id: &str) -> String {
    format!("{STAGING_PREFIX}{upload_id}/")
}

/// An upload session as the nodes see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its id (`upl_…`, unguessable).
    pub id: String,
    /// The account it belongs to.
    pub account_id: String,
    /// The connection it writes to.
    pub connection_id: String,
    /// The object's path once complete.
    pub path: String,
    /// Its length, once known.
    pub length: Option<u64>,
    /// The committed offset: bytes the provider holds and the store counts.
    pub offset: u64,
    /// CRC64/NVME of the bytes before `offset`.
    pub crc64nvme: u64,
    /// The `Upload-Metadata` the client gave (tus's form), empty if none.
    pub metadata: String,
    /// The media type the object gets.
    pub content_type: Option<String>,
    /// Open, complete or expired.
    pub status: Status,
    /// When it expires, unix milliseconds.
    pub expires_at: i64,
    /// The largest upload the hub takes (`Tus-Max-Size`, the draft's
    /// `Upload-Limit`): not stored, the hub's setting when it answered.
    #[serde(default)]
    pub max_size: u64,
    /// tus concatenation: `partial`, or `final;<id> <id>…` (the partial
    /// uploads it joins, in order); none for a plain upload.
    #[serde(default)]
    pub concat: Option<String>,
    /// The S3 multipart upload its bytes go into (the hub starts one with
    /// the session on an S3 connection, at [`multipart_path`]); none
    /// where each append is staged as an object of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_upload: Option<String>,
}

/// The `concat` of a partial upload.
pub const CONCAT_PARTIAL: &str = "partial";

impl Session {
    /// Whether this is a partial upload, made to be joined by a final one.
    pub fn is_partial(&self) -> bool {
        self.concat.as_deref() == Some(CONCAT_PARTIAL)
    }

    /// The partial uploads a final upload joins, in order.
    pub fn joins(&self) -> Option<Vec<&str>> {
        self.concat
            .as_deref()?
            .strip_prefix("final;")
            .map(|ids| ids.split(' ').filter(|i| !i.is_empty()).collect())
    }

    /// The most bytes the upload may reach: its length, or the largest
    /// upload while the length is deferred.
    pub fn limit(&self) -> u64 {
        self.length.unwrap_or(self.max_size).min(self.max_size)
    }
}

/// What a client asks for when it creates an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUpload {
    /// The object's path, decoded and checked.
    pub path: String,
    /// Its length, unless deferred.
    pub length: Option<u64>,
    /// `Upload-Metadata`, normalised.
    pub metadata: String,
    /// The media type the object gets.
    pub content_type: Option<String>,
    /// tus concatenation, as [`Session::concat`].
    #[serde(default)]
    pub concat: Option<String>,
    /// The S3 multipart upload a partial upload is a part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_part: Option<S3PartOf>,
}

/// The S3 multipart upload a part (a partial upload) belongs to, and its
/// number. Set by the S3 door on the request it makes (an extension, which
/// no client can send), recorded with the session, so that the upload's
/// parts can be listed, and checked when it is completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3PartOf {
    /// The multipart upload's id.
    pub upload: String,
    /// The part's number, 1 to 10,000.
    pub number: u32,
}

/// A lease on a session: the right to append at `session.offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The session as the store held it when the lease was taken.
    pub session: Session,
    /// The lease's token; every later call of the writer names it.
    pub token: String,
    /// The parts committed so far, in order.
    pub parts: Vec<Part>,
}

/// What ends an append: more to come, or the upload's completion with the
/// object's metadata, event and transfer.
#[derive(Debug, Clone)]
pub enum Ending {
    /// Record the part; the upload stays open.
    More,
    /// Record the part and the completion, with this commit, in one go.
    Complete(Box<Commit>),
}

/// How a node reaches the sessions: the hub's store, or the hub through a
/// spoke's tunnel. One host serves one client request (its credentials
/// are the host's).
pub trait UploadHost: Send + Sync {
    /// Creates a session in `connection` (a name or id, as the client gave it).
    fn create<'a>(
        &'a self,
        connection: &'a str,
        new: NewUpload,
    ) -> BoxFuture<'a, Result<Session, Problem>>;
    /// Takes the lease to append at `offset` (setting a deferred
    /// `length`): the lease and where the bytes go. `Ok(None)`: this node
    /// cannot reach the provider; the request goes to the hub.
    fn begin<'a>(
        &'a self,
        id: &'a str,
        offset: u64,
        length: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<(Lease, Target)>, Problem>>;
    /// Keeps the lease; an error means it is lost.
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), Problem>>;
    /// Records `parts` (none for an empty append) under the lease and
    /// releases it: the session as it is now.
    fn append<'a>(
        &'a self,
        lease: &'a Lease,
        parts: Vec<Part>,
        ending: Ending,
    ) -> BoxFuture<'a, Result<Session, Problem>>;
    /// Records `parts` of an append still streaming, keeping the lease
    /// (renewed): what the provider holds of it counts even if this node
    /// dies before the append ends.
    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        parts: Vec<Part>,
    ) -> BoxFuture<'a, Result<(), Problem>>;
    /// Gives the lease up without recording anything.
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()>;
    /// The content path's metadata host for the session's object (locks,
    /// metrics, the transfer log's node).
    fn meta(&self) -> std::sync::Arc<dyn MetaHost>;
}
