//! Resumable uploads through a spoke: the spoke streams each append to the
//! provider itself and asks the hub only to create sessions, to lease
//! them, and to record what it wrote (see [`crate::uploads`]).

use serde::{Deserialize, Serialize};

use super::Grant;
use crate::content::model::Commit;
use crate::uploads::{Lease, NewUpload, Part};

/// `upload_create`: a new session for the client whose `Authorization`
/// comes with the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadCreateRequest {
    /// The connection's name or id, as the client wrote it in the URL.
    pub connection: String,
    /// What the client asked for.
    pub upload: NewUpload,
}

/// `upload_begin`: the lease to append at `offset` of the client's session
/// `id` (setting a deferred `length`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadBeginRequest {
    /// The session.
    pub id: String,
    /// Where the client's bytes start.
    pub offset: u64,
    /// The upload's length, when the client gives it now.
    pub length: Option<u64>,
}

/// The hub's answer to an [`UploadBeginRequest`]: the lease, and a grant
/// for the session's object that every later call names. Without a lease
/// (`grant.direct` false) the spoke cannot reach the provider and sends the
/// client's request to the hub instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadBegun {
    /// The lease, when the spoke is to write.
    pub lease: Option<Lease>,
    /// The grant for the session's object, bound to the session and lease.
    pub grant: Grant,
}

/// `upload_renew` and `upload_release`: keep or give up a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadLeaseRequest {
    /// The session.
    pub id: String,
    /// The lease's token.
    pub lease: String,
}

/// `upload_append`: record the parts written under the lease (and, with the
/// last, the object's commit), then release the lease. The answer is the
/// session as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadAppendRequest {
    /// The session.
    pub id: String,
    /// The lease's token.
    pub lease: String,
    /// The parts written, in order; none for an append that brought no
    /// byte.
    pub parts: Vec<Part>,
    /// With the last part: the object's metadata, event and transfer.
    pub complete: Option<Commit>,
    /// More parts of the same append follow: keep the lease (renewed)
    /// rather than release it. Never with `complete`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep: bool,
}
