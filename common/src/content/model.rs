//! What the content path records: object metadata, transfers, events, and
//! the change that commits them together. Shared by the hub (which stores
//! them) and spokes (which send them to the hub), so they serialise.

use serde::{Deserialize, Serialize};

/// What ferry knows about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The connection holding it.
    pub connection_id: String,
    /// Its path in the connection.
    pub path: String,
    /// Size in bytes.
    pub size: i64,
    /// CRC64/NVME of the content.
    pub crc64nvme: u64,
    /// SHA-256 of the content, when it was computed.
    pub sha256: Option<Vec<u8>>,
    /// The media type given at upload.
    pub content_type: Option<String>,
    /// The entity tag ferry serves for it, quoted.
    pub etag: String,
    /// The provider's modification time when this row was written.
    pub provider_modified_ms: Option<i64>,
    /// When this row was written, unix milliseconds.
    pub updated_at: i64,
    /// Header fields kept with the object and sent with it, names in
    /// lower case: S3's user metadata (`x-amz-meta-*`) and
    /// representation fields (`content-encoding`, `content-disposition`,
    /// `content-language`, `cache-control`, `expires`), as given when it
    /// was written through the S3 door ([`KeptHeaders`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Which version of the object this record is: set by the store each
    /// time a change of content is recorded (never the same twice for one
    /// path, deletions and new uploads included), and named by the next
    /// change as the one it replaces ([`Intent::replaces`]). Ignored in a
    /// change to commit; 0 in none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The header fields a write keeps with its object
/// ([`ObjectMeta::headers`]): a request extension the S3 door sets, which
/// no client can send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptHeaders(pub Vec<(String, String)>);

/// Which way a transfer's bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client to provider.
    Upload,
    /// Provider to client.
    Download,
}

impl Direction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
        }
    }
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    /// Every byte moved (and, for uploads, was verified and committed).
    Complete,
    /// The client or provider went away part way.
    Aborted,
    /// The content failed verification and was discarded.
    Rejected,
}

impl TransferStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Aborted => "aborted",
            Self::Rejected => "rejected",
        }
    }
}

/// One entry of the transfer log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The account that moved the bytes.
    pub account_id: String,
    /// The connection.
    pub connection_id: String,
    /// The object's path.
    pub path: String,
    /// Upload or download.
    pub direction: Direction,
    /// How it ended.
    pub status: TransferStatus,
    /// Bytes moved.
    pub bytes: i64,
    /// CRC64/NVME of a complete transfer.
    pub crc64nvme: Option<u64>,
    /// Which node carried the bytes: `hub` or a spoke's name.
    pub via: String,
    /// Start, unix milliseconds.
    pub started_at: i64,
    /// Duration in milliseconds.
    pub duration_ms: i64,
}

impl Transfer {
    /// A transfer starting now through `via`, logged as aborted until it ends.
    pub fn start(
        account_id: &str,
        connection_id: &str,
        path: &str,
        direction: Direction,
        via: &str,
    ) -> Self {
        Self {
            account_id: account_id.to_owned(),
            connection_id: connection_id.to_owned(),
            path: path.to_owned(),
            direction,
            status: TransferStatus::Aborted,
            bytes: 0,
            crc64nvme: None,
            via: via.to_owned(),
            started_at: now_ms(),
            duration_ms: 0,
        }
    }
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A file or folder appeared.
    Created,
    /// A file's content was replaced.
    Updated,
    /// A file was deleted.
    Deleted,
    /// A file was moved (`from` says where from).
    Moved,
    /// A file was copied (`from` says where from).
    Copied,
}

impl EventKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Moved => "moved",
            Self::Copied => "copied",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => Self::Created,
            "updated" => Self::Updated,
            "deleted" => Self::Deleted,
            "moved" => Self::Moved,
            "copied" => Self::Copied,
            _ => return None,
        })
    }
}

/// An event to add to an account's feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The account whose feed it joins.
    pub account_id: String,
    /// The connection it happened in.
    pub connection_id: String,
    /// What happened.
    pub kind: EventKind,
    /// The path it happened to (the destination of a move or copy).
    pub path: String,
    /// The source of a move or copy.
    pub from_path: Option<String>,
    /// The file's size, when known.
    pub size: Option<i64>,
    /// When, unix milliseconds.
    pub at: i64,
    /// Who made the change. Never sent between nodes: what a spoke
    /// reports is ferry's by definition, and only the hub's own scans
    /// record changes found at the provider.
    #[serde(skip)]
    pub origin: Origin,
}

/// Who made a change in the activity feed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// ferry: through its API, its S3 door or a spoke.
    #[default]
    Ferry,
    /// Something else, writing to the provider directly; found by the
    /// hub's scans and notifications.
    Provider,
}

impl Origin {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ferry => "ferry",
            Self::Provider => "provider",
        }
    }
}

/// A change to commit at once: object metadata, its event and its transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Rows to remove first: (connection id, path).
    pub remove: Vec<(String, String)>,
    /// A row to insert or replace.
    pub upsert: Option<ObjectMeta>,
    /// The event to add to the feed.
    pub event: Option<EventRecord>,
    /// The transfer to log.
    pub transfer: Option<Transfer>,
    /// A folder made: (connection id, path), for the index. Never sent
    /// between nodes (spokes make no folders).
    #[serde(skip)]
    pub folder: Option<(String, String)>,
    /// The intent this change settles ([`Intent`]): recorded by the hub,
    /// for its own changes or a spoke's (whose report then names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
}

/// A change ferry is about to make at a provider, recorded by the hub
/// before it is made: if the change is made and its record is lost (the
/// store's primary went away, the hub stopped), the hub finds the intent
/// and settles it by what the provider holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The connection.
    pub connection_id: String,
    /// The path changed.
    pub path: String,
    /// What the provider holds at `path` once the change is made: the
    /// content's size and CRC64/NVME, or `None` for nothing.
    pub expect: Option<(u64, u64)>,
    /// A path that holds nothing once the change is made (a move's
    /// source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also_absent: Option<String>,
    /// The version of `path` the change replaces: the
    /// [`ObjectMeta::generation`] of ferry's record of it when the change
    /// began, 0 when there was none. The intent is refused (and the change
    /// not made) when the record has changed since, or while another
    /// change to `path` is under way: one writer wins, the other is told.
    #[serde(default)]
    pub replaces: i64,
    /// A path the change reads (a copy's or move's source) and the version
    /// of it that was read: the intent is refused when that record has
    /// changed since or a change to it is under way, and while the intent
    /// is unsettled no change to it is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<(String, i64)>,
    /// Whether the request had conditions (`If-Match`, `If-None-Match`):
    /// a version recorded since it began then fails them (`412`) rather
    /// than conflicting (`409`).
    #[serde(default)]
    pub conditional: bool,
    /// What to record then.
    pub change: Commit,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
